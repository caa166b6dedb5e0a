"""What the tissue step does with bad states and bad settings: clear errors, reported recovery."""

import numpy as np
import pytest
from tissue_helpers import DT, pad_model, settle

from sim.tissue import TissueDivergedError, make_state, step
from sim.tissue_model import TissueMaterial, TissueModelBuilder


def test_nan_in_the_state_raises_a_clear_error():
    model = pad_model()
    state = make_state(model)
    state.x[int(np.flatnonzero(~model.fixed)[5])] = np.nan
    with pytest.raises(TissueDivergedError, match="NaN"):
        step(model, state, None, None, DT)


def test_runaway_speed_is_reported_as_blow_up():
    model = pad_model()
    state = make_state(model)
    state.v[~model.fixed] = 100.0  # m/s: nothing in surgery moves tissue like this
    with pytest.raises(TissueDivergedError, match="exceeds"):
        step(model, state, None, None, DT)


def test_forty_percent_compression_released_neither_inverts_nor_explodes():
    model = pad_model()
    state = make_state(model, model.rest * np.array([1.0, 1.0, 0.6]))
    inverted = []
    for _ in range(800):
        step(model, state, None, None, DT)
        inverted.append(state.inverted)
    assert max(inverted) == 0
    top = model.rest[:, 2] >= model.rest[:, 2].max() - 1e-9
    # Back up to the gravity sag (~0.1 mm), not stuck in the 8 mm squeeze.
    assert np.abs(state.x[top, 2] - model.rest[top, 2]).max() < 1e-3


def test_inverted_elements_recover_and_are_reported():
    model = pad_model()
    state = make_state(model)
    top = np.flatnonzero(model.rest[:, 2] >= model.rest[:, 2].max() - 1e-9)
    node = top[len(top) // 2]
    state.x[node, 2] = 0.0085  # pushed 11.5 mm down, through the layer of elements below it
    step(model, state, None, None, DT)
    assert state.inverted > 0
    settle(model, state, 1000)
    assert state.inverted == 0
    assert abs(state.x[node, 2] - model.rest[node, 2]) < 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"young": -1.0}, "Young"),
        ({"poisson": 0.5}, "Poisson"),
        ({"density": 0.0}, "density"),
        ({"damping": -0.1}, "damping"),
    ],
)
def test_bad_material_is_refused_with_the_parameter_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TissueMaterial(**kwargs)


def test_a_bad_time_step_is_refused():
    model = pad_model()
    with pytest.raises(ValueError, match="time step"):
        step(model, make_state(model), None, None, 0.0)


def test_fixing_every_node_is_refused():
    from sim.mesh_generators import block

    b = TissueModelBuilder(block((0.01, 0.01, 0.01), (1, 1, 1)))
    with pytest.raises(ValueError, match="every node is fixed"):
        b.fix_nodes(np.ones(b.mesh.node_count, bool)).finalize(dt=DT)
