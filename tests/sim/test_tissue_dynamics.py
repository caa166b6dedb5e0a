"""Dynamics of the tissue step: modal frequency, energy, momentum, determinism."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from tissue_helpers import DT, cantilever_model, gravity_load, linear_static, pad_model, settle

from sim import fem
from sim.mesh_generators import block
from sim.tissue import TissueControl, kinetic_energy, make_state, step
from sim.tissue_model import TissueMaterial, TissueModelBuilder

UNDAMPED = TissueMaterial(young=3e6, poisson=0.45, damping=0.0, mass_damping=0.0)


def test_first_mode_frequency_matches_linear_fem_modal_analysis():
    # Undamped, weightless beam released from its static deflection under its weight: it rings
    # at its first bending mode.
    model = cantilever_model(UNDAMPED, gravity=False)
    free = np.repeat(~model.fixed, 3)
    k = sp.csc_matrix(model.stiffness()[free][:, free])
    m = sp.diags(np.repeat(model.mass, 3)[free])
    w2 = spla.eigsh(k, k=1, M=m, sigma=0, which="LM", return_eigenvectors=False)
    f_ref = np.sqrt(w2[0]) / (2 * np.pi)

    state = make_state(model, model.rest + linear_static(model, gravity_load(model)))
    tip = model.rest[:, 0] >= model.rest[:, 0].max() - 1e-9
    trace = []
    for _ in range(int(0.6 / DT)):
        step(model, state, None, None, DT)
        trace.append(state.x[tip, 2].mean() - model.rest[tip, 2].mean())
    z = np.array(trace)
    up = np.flatnonzero((z[:-1] < 0) & (z[1:] >= 0))
    # Interpolated upward zero crossings -> mean period over all complete cycles.
    t = (up + (-z[up] / (z[up + 1] - z[up]))) * DT
    assert len(t) >= 4, "beam did not oscillate"
    f_sim = (len(t) - 1) / (t[-1] - t[0])
    assert abs(f_sim / f_ref - 1) < 0.10, (f_sim, f_ref)


def total_energy(model, state):
    elastic = fem.corotated_energy_reference(state.x, model.tets, model.dm_inv, model.volume,
                                             model.mu, model.lam)
    potential = -float(np.sum(model.mass[:, None] * model.gravity * state.x))
    return kinetic_energy(model, state) + elastic + potential


def test_energy_never_grows_over_ten_seconds_with_damping_on():
    model = pad_model()
    rng = np.random.default_rng(7)
    state = make_state(model)
    state.v[~model.fixed] = rng.normal(scale=0.05, size=(int((~model.fixed).sum()), 3))
    energies = [total_energy(model, state)]
    for _ in range(200):
        settle(model, state, 50)
        energies.append(total_energy(model, state))
    e = np.array(energies)
    scale = e[0] - e.min()
    # The step is solved to a velocity tolerance, so at rest the energy may wander by the kinetic
    # energy of that tolerance, never more.
    noise = 0.5 * model.mass.sum() * model.newton_tol**2
    assert noise < 1e-5 * scale
    assert np.all(np.diff(e) <= noise), np.diff(e).max()
    assert e[-1] < e[0] - 0.9 * scale  # and it really dissipates


def free_body():
    """A weightless, unconstrained 4 x 3 x 2 cm block."""
    b = TissueModelBuilder(block((0.04, 0.03, 0.02), (4, 3, 2)))
    b.gravity[:] = 0.0
    return b.finalize(dt=DT)


def test_free_body_at_rest_does_not_drift():
    model = free_body()
    state = settle(model, make_state(model), 1000)
    assert np.abs(state.x - model.rest).max() < 1e-12


def test_free_body_translates_rigidly_and_conserves_momentum():
    model = free_body()
    state = make_state(model)
    v0 = np.array([0.1, -0.05, 0.02])
    state.v[:] = v0
    p0 = (model.mass[:, None] * state.v).sum(axis=0)
    settle(model, state, 500)
    p1 = (model.mass[:, None] * state.v).sum(axis=0)
    assert np.abs(p1 - p0).max() < 1e-12 * np.abs(p0).max()
    assert np.abs(state.x - (model.rest + v0 * 500 * DT)).max() < 1e-9


def run_loaded(model, steps=300):
    state = make_state(model)
    load = np.zeros((model.node_count, 3))
    load[model.rest[:, 2] >= model.rest[:, 2].max() - 1e-9] = (0.01, 0.0, -0.02)
    settle(model, state, steps, TissueControl(load))
    return state


def test_two_runs_are_bit_identical():
    a = run_loaded(pad_model())
    b = run_loaded(pad_model())
    assert np.array_equal(a.x, b.x) and np.array_equal(a.v, b.v)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_thread_count_does_not_change_the_result():
    model = pad_model()
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = run_loaded(model)
        numba.set_num_threads(2)
        b = run_loaded(model)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.v, b.v)
