"""Several soft organs as one tissue model: per-element materials and body labels
(docs/anatomy.md, "Several organs in one scene").

`AnatomyBody(seed)` is the scene's tissue body spec (`SceneConfig.body`, like the bodies of
`sim.tissue_bodies`): it builds the model and the `BodyInfo` the clip, damage and bleeding stages
read (tear stress per organ; the cystic artery is the vessel that bleeds when opened).

`organ_tissue(anatomy, dt)` turns a `sim.anatomy.Anatomy` into a `TissueModel` whose per-element
Lamé parameters come from each organ's material (`ORGAN_MATERIALS`), with the anatomy's fixed
nodes held, and factors its step matrix (with those per-element parameters) before returning.
Density, damping and the elastic law are shared by every organ (`SHARED`).

`hanging(model, dt)` lets the organs sag to rest under gravity before a session (the scene starts
there, `BodyInfo.start_x`) and leaves the model's step matrix assembled at that configuration: the
ducts hang with their elements turned up to ~20 deg, where the rest matrix fed a limit cycle in
the one-pass step (docs/tissue-solver.md, "A step matrix at the organs' configuration").

Units: Pa, kg/m^3, s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sim import fem
from sim.anatomy import BODIES, CYSTIC_ARTERY, Anatomy, anatomy_for_seed
from sim.damage import tear_material
from sim.tissue import make_state, step
from sim.tissue_model import TissueMaterial, TissueModel, TissueModelBuilder, TissueSystem
from sim.tissue_solver import node_frames

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


#: Settling before a session: simulated seconds per round, rounds (the step matrix is reassembled
#: at the configuration after each), and the node speed [m/s] that ends it early once the last
#: round's matrix is in (the organs at rest to well under a millimetre a second).
HANG_ROUND_S = 0.4
HANG_ROUNDS = 3
HANG_REST_SPEED = 1e-4


def hanging(model: TissueModel, dt: float) -> np.ndarray:
    """Let `model` sag under gravity from its rest shape and return where it comes to rest [m],
    (n, 3); `model`'s step matrix for dt [s] is then the one assembled at that configuration
    (`TissueSystem.build(at=...)`: element stiffnesses turned by their rotations there, the node
    frames there). Each round steps HANG_ROUND_S with the last round's matrix, then reassembles it
    where the organs are. ~0.3 s of compute for the cholecystectomy's ~1.4k elements."""
    state = make_state(model)
    frames = np.zeros((model.node_count, 4))
    for r in range(HANG_ROUNDS):
        for _ in range(int(round(HANG_ROUND_S / dt))):
            step(model, state, None, None, dt)
            if r == HANG_ROUNDS - 1 and float(np.abs(state.v).max()) < HANG_REST_SPEED:
                break
        node_frames(model.node_ptr, model.node_inc, model.node_rep, state.q, state.weight, frames)
        model.use_system(TissueSystem.build(model, dt, at=(np.array(state.q), frames.copy(), None)))
    return state.x.copy()


#: Tear material per organ (`sim.damage.TEAR_MATERIALS`: forces from Rodrigues et al. 2012).
ORGAN_TEAR = {"gallbladder": "gallbladder", "cystic_duct": "duct", "common_bile_duct": "duct",
              "cystic_artery": "artery"}
#: Blood flow out of one open end of the divided cystic artery [mL/s] (our choice, the same as
#: `sim.tissue_bodies`' vessels).
CYSTIC_ARTERY_BLEED = 0.5
#: Circumferential sectors of the artery (a clip seals it if it holds all of them): 4, as its
#: 1 mm radius meshed at 2.5 mm has 3-5 nodes round a section (with 8 no clip ever sealed it).
N_SECTORS = 4


@dataclass(frozen=True)
class AnatomyBody:
    """The cholecystectomy's organs as a scene tissue body (`SceneConfig.body`); `seed` picks the
    anatomy (`sim.anatomy.anatomy_for_seed`)."""

    seed: int = 0

    @property
    def anatomy(self) -> Anatomy:
        return anatomy_for_seed(self.seed)

    def build(self, dt: float | None):
        """(TissueModel, sim.tissue_bodies.BodyInfo); with dt [s], the organs hang at rest
        (`hanging`: `BodyInfo.start_x`, the step matrix assembled there)."""
        a = self.anatomy
        model = organ_tissue(a, dt)
        info = organ_body_info(a, model)
        if dt is not None:
            info = dataclasses.replace(info, start_x=hanging(model, dt))
        return model, info


def _section_area(a: Anatomy, name: str) -> float:
    """Nominal cross-section [m^2] of an organ for its tear stress. The gallbladder is pulled by
    its infundibulum, so the section that carries a pull is the neck's, not the body's (with the
    body's the 4 N threshold became a 57 % strain and a 0.3 N lateral retraction tore it)."""
    p = a.params
    r = {"gallbladder": p.neck_radius, "cystic_duct": p.cd_radius, "common_bile_duct": p.cbd_radius,
         "cystic_artery": p.ca_radius}[name]
    return float(np.pi * r * r)


def organ_body_info(a: Anatomy, model: TissueModel):
    """The injury stages' view of the organs: per element tear stress [Pa] (each organ's tear
    force over its section), and the cystic artery as the vessel: its nodes' arc length along the
    artery (axial [m]; NaN elsewhere, so clips elsewhere never seal it) and sector around it."""
    from sim.tissue_bodies import BodyInfo

    tear = np.array([tear_material(ORGAN_TEAR[n]).tear_stress(_section_area(a, n)) for n in BODIES])
    bite = np.array([tear_material(ORGAN_TEAR[n]).tear_force for n in BODIES])
    artery = a.structures["cystic_artery"]
    chord = artery.points[-1] - artery.points[0]
    pts = model.rest
    on = a.node_body == CYSTIC_ARTERY
    axial = np.full(len(pts), np.nan)
    sector = np.full(len(pts), -1, dtype=np.int64)
    for i in np.flatnonzero(on):
        s, _, t = artery.project(pts[i])
        axial[i] = s
        radial = pts[i] - artery.at(s)
        radial -= t * (radial @ t)
        e1 = np.cross(t, [0.0, 0.0, 1.0])
        e1 /= np.linalg.norm(e1)
        ang = np.arctan2(radial @ np.cross(t, e1), radial @ e1)
        sector[i] = int((ang + np.pi) / (2 * np.pi) * N_SECTORS) % N_SECTORS
    return BodyInfo(name="hepatobiliary", tear_stress=tear[a.body],
                    tear_force=tear_material(ORGAN_TEAR["gallbladder"]).tear_force,
                    damage_radius=0.004, vessel=True,
                    bleed_rate=CYSTIC_ARTERY_BLEED, axial=axial, sector=sector, n_sectors=N_SECTORS,
                    r_out=a.params.ca_radius, vessel_elements=a.body == CYSTIC_ARTERY,
                    origin=artery.points[0].copy(), axis=chord / np.linalg.norm(chord),
                    bite_tear_force=bite[a.body])
