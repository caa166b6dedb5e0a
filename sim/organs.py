"""Several soft organs as one tissue model: per-element materials and body labels
(docs/anatomy.md, "Several organs in one scene").

`organ_tissue(anatomy, dt)` turns a `sim.anatomy.Anatomy` into a `TissueModel` whose per-element
Lamé parameters come from each organ's material (`ORGAN_MATERIALS`), with the anatomy's fixed
nodes held, and factors its step matrix (with those per-element parameters) before returning.
Density, damping and the elastic law are shared by every organ (`SHARED`).

Units: Pa, kg/m^3, s.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sim import fem
from sim.anatomy import BODIES, Anatomy
from sim.tissue import TissueMaterial, TissueModel, TissueModelBuilder

#: What every organ of the model shares: soft-tissue density (1040-1060 kg/m^3), the scene pad's
#: stiffness-proportional damping, and the stable neo-Hookean law (graspers pinch the ducts:
#: strong local compression, docs/tissue-solver.md). Its `young` is the gallbladder's.
SHARED = TissueMaterial(young=10e3, poisson=0.45, density=1050.0, damping=0.01,
                        elasticity="neohookean")

#: (Young's modulus [Pa], Poisson's ratio) per organ, in `sim.anatomy.BODIES` order; sources and
#: the reasoning behind the "our choice" values in docs/anatomy.md.
ORGAN_MATERIALS = {
    "gallbladder": (10e3, 0.45),
    "cystic_duct": (40e3, 0.45),
    "common_bile_duct": (40e3, 0.45),
    "cystic_artery": (60e3, 0.45),
}


def element_lame(body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element (mu, lam) [Pa], each (m,), from the body labels (m,)."""
    table = np.array([fem.lame(*ORGAN_MATERIALS[name]) for name in BODIES])  # (B, 2)
    return table[body, 0].copy(), table[body, 1].copy()


def organ_tissue(anatomy: Anatomy, dt: float | None = 1e-3, *,
                 shared: TissueMaterial = SHARED) -> TissueModel:
    """The anatomy's soft organs as one TissueModel (fixed nodes held, per-element materials);
    with dt [s] given, its step matrix is factored now (not in the loop)."""
    model = (TissueModelBuilder(anatomy.mesh, shared).fix_nodes(anatomy.fixed)
             .finalize(dt=None))
    mu, lam = element_lame(anatomy.body)
    model = dataclasses.replace(model, mu=mu, lam=lam, _systems={})
    if dt is not None:
        model.system(dt)
    return model
