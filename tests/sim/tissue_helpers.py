"""Shared set-up for tissue tests: small bodies and converged reference solutions (SciPy)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sim.mesh_generators import block
from sim.tissue import step
from sim.tissue_model import TissueMaterial, TissueModel, TissueModelBuilder

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
