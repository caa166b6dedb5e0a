"""Shared set-up for tissue tests: small bodies and converged reference solutions (SciPy)."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sim import fem
from sim.mesh_generators import block
from sim.tissue import TissueMaterial, TissueModel, TissueModelBuilder, step

DT = 1e-3


def pad_model(cells=(12, 7, 2), material=None, dt=DT) -> TissueModel:
    """The issue's 0.10 x 0.06 x 0.02 m tissue pad, bottom face fixed."""
    b = TissueModelBuilder(block((0.10, 0.06, 0.02), cells), material or TissueMaterial())
    return b.fix_below(0.0).finalize(dt=dt)


def cantilever_model(material, cells=(10, 2, 2), length=0.1, side=0.01,
                     gravity=True) -> TissueModel:
    """A beam along +x, clamped at x = 0, hanging under gravity (or weightless)."""
    b = TissueModelBuilder(block((length, side, side), cells), material)
    if not gravity:
        b.gravity[:] = 0.0
    return b.fix_nodes(b.mesh.points[:, 0] <= 1e-9).finalize(dt=DT)


def settle(model, state, steps, control=None):
    for _ in range(steps):
        step(model, state, control, None, DT)
    return state


def linear_static(model: TissueModel, load: np.ndarray) -> np.ndarray:
    """Linear FEM displacement [m], (n, 3), under node loads [N] (n, 3): K u = f on free DOFs."""
    free = np.repeat(~model.fixed, 3)
    k = sp.csc_matrix(model.stiffness()[free][:, free])
    u = np.zeros(3 * model.node_count)
    u[free] = spla.spsolve(k, load.reshape(-1)[free])
    return u.reshape(-1, 3)


def gravity_load(model: TissueModel, g=(0.0, 0.0, -9.81)) -> np.ndarray:
    """Node weights [N], (n, 3), under gravitational acceleration g [m/s^2]."""
    return model.mass[:, None] * np.asarray(g)[None, :]


def nonlinear_static(model: TissueModel, load: np.ndarray, increments: int = 4) -> np.ndarray:
    """Converged co-rotational static displacement [m], (n, 3), under node loads [N].

    Newton's method on the NumPy reference force with the full tangent built column by column by
    central differences (dense: meant for small meshes), SciPy's dense solver, backtracking on
    the potential energy, and the load applied in increments. Converged to 1e-10 of the load.
    """
    free = np.flatnonzero(np.repeat(~model.fixed, 3))
    rest, tets, dm_inv, vol = model.rest, model.tets, model.dm_inv, model.volume
    size = np.ptp(rest, axis=0).max()

    def force(x):
        return fem.corotated_forces_reference(x, tets, dm_inv, vol, model.mu, model.lam)

    def potential(x, load_now):
        return fem.corotated_energy_reference(x, tets, dm_inv, vol, model.mu, model.lam) - float(
            np.sum(load_now * (x - rest)))

    groups = _distance2_colouring(model)
    touched = _node_adjacency(model)

    def tangent(x):
        # Nodes of one colour share no element neighbourhood, so one pair of force evaluations
        # per colour and axis gives all their tangent columns without overlap.
        eps = 1e-7 * size
        jac = np.zeros((3 * model.node_count, 3 * model.node_count))
        for nodes in groups:
            for axis in range(3):
                dx = np.zeros((model.node_count, 3))
                dx[nodes, axis] = eps
                df = -((force(x + dx) - force(x - dx)) / (2 * eps))
                for node in nodes:
                    rows = touched[node]
                    jac[(3 * rows[:, None] + np.arange(3)).reshape(-1), 3 * node + axis] = df[
                        rows].reshape(-1)
        return jac[np.ix_(free, free)]

    x = rest.copy()
    for i in range(1, increments + 1):
        target = (i / increments) * load
        for _ in range(40):
            r = (force(x) + target).reshape(-1)[free]
            if np.abs(r).max() < 1e-10 * np.abs(load).max():
                break
            step_ = np.zeros(3 * model.node_count)
            step_[free] = scipy.linalg.solve(tangent(x), r, assume_a="sym")
            step_ = step_.reshape(-1, 3)
            # Backtracking on the potential energy (elastic - work of the load): far from the
            # solution a full Newton step over-stretches a bending beam.
            pot0 = potential(x, target)
            alpha = 1.0
            while alpha > 1e-4 and potential(x + alpha * step_, target) > pot0:
                alpha *= 0.5
            x = x + alpha * step_
        else:
            raise RuntimeError("Newton reference did not converge")
    return x - rest


def _node_adjacency(model):
    """For each node, the nodes that share a tet with it (itself included)."""
    n = model.node_count
    t = model.tets
    rows = np.repeat(t, 4, axis=1).reshape(-1)
    cols = np.tile(t, (1, 4)).reshape(-1)
    adj = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    return [adj.indices[adj.indptr[i]:adj.indptr[i + 1]] for i in range(n)]


def _distance2_colouring(model):
    """Greedy colouring of nodes so that same-coloured nodes are more than 2 edges apart."""
    near = _node_adjacency(model)
    colour = np.full(model.node_count, -1)
    for i in range(model.node_count):
        ring2 = np.unique(np.concatenate([near[j] for j in near[i]]))
        used = set(colour[ring2][colour[ring2] >= 0].tolist())
        c = 0
        while c in used:
            c += 1
        colour[i] = c
    return [np.flatnonzero(colour == c) for c in range(colour.max() + 1)]
