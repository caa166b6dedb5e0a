"""Converged references for the tissue solver, in NumPy/SciPy: static equilibrium (Newton's method
on the slow reference forces of `sim.fem`, either elastic law) and linear modal frequencies.

The tests and `trocar bench tissue --accuracy` compare the time stepper with these; nothing here
runs in the haptic loop. The tangent is assembled from element tangents taken by central
differences of each element's own corner forces (12 coordinates per element, all elements at once),
so it is exact to ~1e-7 relative for both laws without a hand-derived Hessian.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sim import fem


def _corner_forces(elasticity: str, xe: np.ndarray, dm_inv, vol, mu, lam) -> np.ndarray:
    """Each element's own corner forces [N], (m, 4, 3), at element corner positions xe (m, 4, 3)."""
    m = xe.shape[0]
    tets = np.arange(4 * m).reshape(m, 4)
    return fem.elastic_forces_reference(elasticity, xe.reshape(-1, 3), tets, dm_inv, vol, mu,
                                        lam).reshape(m, 4, 3)


def tangent_stiffness(model, x: np.ndarray) -> sp.csr_matrix:
    """Tangent stiffness -df/dx [N/m], (3n, 3n), of the model's elastic law at positions x (n, 3)."""
    law = model.material.elasticity
    xe = x[model.tets]
    m = xe.shape[0]
    eps = 1e-7 * float(np.ptp(model.rest, axis=0).max())
    ke = np.zeros((m, 12, 12))
    for col in range(12):
        a, c = divmod(col, 3)
        xp_, xm_ = xe.copy(), xe.copy()
        xp_[:, a, c] += eps
        xm_[:, a, c] -= eps
        df = (_corner_forces(law, xp_, model.dm_inv, model.volume, model.mu, model.lam)
              - _corner_forces(law, xm_, model.dm_inv, model.volume, model.mu, model.lam))
        ke[:, :, col] = -df.reshape(m, 12) / (2 * eps)
    ke = 0.5 * (ke + ke.transpose(0, 2, 1))
    dof = (3 * model.tets[:, :, None] + np.arange(3)).reshape(m, 12)
    rows = np.repeat(dof, 12, axis=1).reshape(-1)
    cols = np.tile(dof, (1, 12)).reshape(-1)
    n3 = 3 * model.node_count
    return sp.csr_matrix((ke.reshape(-1), (rows, cols)), shape=(n3, n3))


def static_equilibrium(model, load: np.ndarray | None = None, *, x_fixed: np.ndarray | None = None,
                       increments: int = 4, tol: float = 1e-9, max_iter: int = 60,
                       start: np.ndarray | None = None) -> np.ndarray:
    """Converged nonlinear static positions [m], (n, 3), under gravity plus node loads [N] (n, 3),
    with the fixed nodes where x_fixed (n, 3) puts them (default: at rest; a grasp that lifts
    some nodes is modelled as fixed nodes moved). Prescribed moves are applied in the same
    increments as the load.

    Newton's method with the load in `increments` equal steps, backtracking on the potential
    energy (elastic minus the work of the loads); a step that is not a descent direction (the
    tangent is indefinite past a buckling or inversion) falls back to the gradient scaled by the
    rest stiffness. Converged when the largest free-node force residual is below tol times the
    largest node load. RuntimeError if it does not converge.

    start (n, 3) [m]: free-node positions to start from instead of rest (with increments=1: the
    equilibrium nearest a state, e.g. the time stepper's settled one, where a load admits several).
    """
    law = model.material.elasticity
    free = np.flatnonzero(np.repeat(~model.fixed, 3))
    total = model.mass[:, None] * model.gravity
    if load is not None:
        total = total + load
    scale = max(float(np.abs(total).max()), 1e-30)
    k_rest = sp.csc_matrix(model.stiffness()[free][:, free])
    rest_solve = spla.factorized(k_rest)

    def force(x, f_ext):
        return fem.elastic_forces_reference(law, x, model.tets, model.dm_inv, model.volume,
                                            model.mu, model.lam) + f_ext

    def potential(x, f_ext):
        return fem.elastic_energy_reference(law, x, model.tets, model.dm_inv, model.volume,
                                            model.mu, model.lam) - float(np.sum(f_ext * (x - model.rest)))

    x = model.rest.copy()
    if start is not None:
        x[~model.fixed] = start[~model.fixed]
    move = np.zeros_like(x) if x_fixed is None else np.where(model.fixed[:, None],
                                                             x_fixed - model.rest, 0.0)
    for i in range(1, increments + 1):
        f_ext = (i / increments) * total
        if x_fixed is not None:
            x[model.fixed] = model.rest[model.fixed] + (i / increments) * move[model.fixed]
        for _ in range(max_iter):
            r = force(x, f_ext).reshape(-1)[free]
            if np.abs(r).max() < tol * scale:
                break
            k = sp.csc_matrix(tangent_stiffness(model, x)[free][:, free])
            try:
                d = spla.spsolve(k, r)
            except RuntimeError:
                d = np.full(r.shape, np.nan)
            if not (np.all(np.isfinite(d)) and d @ r > 0):
                d = rest_solve(r)
            step = np.zeros(3 * model.node_count)
            step[free] = d
            step = step.reshape(-1, 3)
            alpha = 1.0
            # Near the solution the energy change is below its rounding: full Newton steps.
            if np.abs(r).max() > 1e-5 * scale:
                pot0 = potential(x, f_ext)
                while (alpha > 1e-6
                       and potential(x + alpha * step, f_ext) > pot0 - 1e-4 * alpha * (d @ r)):
                    alpha *= 0.5
            x = x + alpha * step
        else:
            raise RuntimeError("static reference did not converge")
    return x


def residual(model, x: np.ndarray, load: np.ndarray | None = None) -> float:
    """Largest free-node force residual [N] at positions x (n, 3): elastic forces, weights and
    node loads [N] (n, 3), which sum to zero at an equilibrium."""
    f = fem.elastic_forces_reference(model.material.elasticity, x, model.tets, model.dm_inv,
                                     model.volume, model.mu, model.lam)
    f = f + model.mass[:, None] * model.gravity + (0.0 if load is None else load)
    return float(np.abs(f[~model.fixed]).max())


def first_mode(model) -> tuple[float, np.ndarray]:
    """Lowest natural frequency [Hz] of small vibrations about rest with the lumped masses
    (K u = w^2 M u on the free nodes), and its mode shape (n, 3), mass-normalised."""
    free = np.repeat(~model.fixed, 3)
    k = sp.csc_matrix(model.stiffness()[free][:, free])
    m = sp.diags(np.repeat(model.mass, 3)[free])
    w2, vec = spla.eigsh(k, k=1, M=m, sigma=0, which="LM")
    shape = np.zeros(3 * model.node_count)
    shape[free] = vec[:, 0]
    return float(np.sqrt(w2[0]) / (2 * np.pi)), shape.reshape(-1, 3)


def ringing_frequency(model, step_fn, shape: np.ndarray, seconds: float, dt: float,
                      amplitude: float = 1e-4) -> float:
    """Frequency [Hz] at which a model rings when released from rest + a mode shape scaled to
    `amplitude` [m] at its largest node, measured on the modal coordinate's upward zero crossings
    (`step_fn(state)` advances one step of dt [s]). NaN if fewer than three crossings."""
    from sim.tissue import make_state

    x0 = model.rest + shape * (amplitude / np.abs(shape).max())
    state = make_state(model, x0)
    weight = model.mass[:, None] * shape
    trace = np.empty(int(round(seconds / dt)))
    for k in range(trace.size):
        step_fn(state)
        trace[k] = np.sum(weight * (state.x - model.rest))
    z = trace - trace[trace.size // 2:].mean()
    up = np.flatnonzero((z[:-1] < 0) & (z[1:] >= 0))
    if up.size < 3:
        return float("nan")
    t = (up + (-z[up] / (z[up + 1] - z[up]))) * dt
    return float((len(t) - 1) / (t[-1] - t[0]))
