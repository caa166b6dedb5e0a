"""Static equilibria of the tissue step against converged FEM references computed here with SciPy."""

import numpy as np
from tissue_helpers import (
    cantilever_model,
    gravity_load,
    linear_static,
    pad_model,
    settle,
)

from sim.tissue import TissueControl, make_state
from sim.tissue_model import TissueMaterial
from sim.tissue_reference import static_equilibrium


def top_face(model):
    return model.rest[:, 2] >= model.rest[:, 2].max() - 1e-9


def test_pad_sag_under_gravity_and_load_matches_linear_fem():
    # Small load (0.1 N spread over the top, ~0.2 mm sag): the linear regime, where converged
    # linear FEM on the same mesh is the right answer.
    model = pad_model(material=TissueMaterial(damping=0.01, mass_damping=20.0))
    top = top_face(model)
    load = np.zeros((model.node_count, 3))
    load[top, 2] = -0.1 / top.sum()
    ref = linear_static(model, gravity_load(model) + load)
    state = settle(model, make_state(model), 1500, TissueControl(load))
    sag = -(state.x[top, 2] - model.rest[top, 2]).mean()
    sag_ref = -ref[top, 2].mean()
    assert sag_ref > 1e-4  # the test measures a real deflection (> 0.1 mm)
    assert abs(sag / sag_ref - 1) < 0.05, (sag, sag_ref)
    # Not just the mean: every node sits where linear FEM puts it, within 5 % of the peak sag.
    assert np.abs((state.x - model.rest) - ref).max() < 0.05 * np.abs(ref).max()


def test_hanging_beam_bends_past_30_degrees_like_the_nonlinear_static_solution():
    # A 10 x 1 x 1 cm beam, E = 60 kPa, clamped at one end, sagging under its own weight: the tip
    # turns by more than 30 degrees, where linear FEM is visibly wrong (no shortening, too much
    # drop). Mass damping only speeds up settling; it does not move the equilibrium.
    model = cantilever_model(TissueMaterial(young=60e3, poisson=0.45, damping=0.01,
                                            mass_damping=30.0))
    load = gravity_load(model)
    ref = static_equilibrium(model, increments=2) - model.rest
    lin = linear_static(model, load)
    state = settle(model, make_state(model), 2500)
    tip = model.rest[:, 0] >= model.rest[:, 0].max() - 1e-9
    u_tip = (state.x - model.rest)[tip].mean(axis=0)
    ref_tip = ref[tip].mean(axis=0)
    lin_tip = lin[tip].mean(axis=0)
    # Tip slope over the last cell (1 cm) of the beam.
    near = np.isclose(model.rest[:, 0], model.rest[:, 0].max() - 0.01)
    slope = (state.x[tip].mean(0) - state.x[near].mean(0))
    angle = np.degrees(np.arctan2(-slope[2], slope[0]))
    assert angle > 30, angle
    assert np.linalg.norm(lin_tip - ref_tip) > 0.10 * np.linalg.norm(ref_tip)  # linear is wrong
    assert np.linalg.norm(u_tip - ref_tip) < 0.05 * np.linalg.norm(ref_tip), (u_tip, ref_tip)
    assert state.inverted == 0
