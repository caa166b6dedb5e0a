"""What a scene is made of: the built-in scenes' configurations (`SceneConfig`, `scene_config`,
`SCENES`), their ports and pad material, the tissue body a configuration builds (`make_body`) and
where its laparoscope starts (`start_scope`). `sim.scene.build_scene(name)` builds a `Scene` from
these; the tick itself is `sim.scene`'s.

Scenes (`build_scene(name)`):
- ``default``: the tissue pad (0.10 x 0.06 x 0.02 m, ~5k tets) on the trainer floor, centred at the
  origin, an atraumatic grasper through the left port and curved scissors through the right one.
- ``peg_transfer``: the FLS peg board (12 pegs, six rings) and two graspers, tool 0 through the
  left port (left hand), tool 1 through the right one (no tissue).
- ``pattern_cut``: the FLS pattern-cut gauze (10 x 10 cm, rim clamped in its frame 3 cm above the
  floor, `sim.tissue_bodies.GauzeBody`), a grasper through the left port (tool 0, traction) and
  the curved scissors through the right one (tool 1).
- ``cholecystectomy``: the hepatobiliary anatomy of `body=sim.organs.AnatomyBody(seed)` (gallbladder,
  cystic duct, common duct, cystic artery as one tissue model with per-organ materials,
  `sim.organs`; liver and right hepatic artery rigid, drawn only), a grasper through the left
  lateral port (tool 0, left hand: the infundibulum), a clip applier through the right
  epigastric port (tool 1, right hand) and scissors through a right lateral port (tool 2), the 30
  deg scope through the umbilical port aimed at Calot's triangle.
The peg board is not in ``default``: its ring-on-peg compound collisions alone cost ~0.5 ms per tick
in PyBullet (docs/instruments.md), which would leave nothing of the 1 ms budget for the tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim import instruments as inst
from sim.anatomy import Anatomy
from sim.camera import LaparoscopeCamera, aim_target
from sim.mesh_generators import block, block_cells_for
from sim.ports import Port
from sim.tissue_model import TissueMaterial, TissueModel, TissueModelBuilder
from sim.tool_scene import DEFAULT_STIFFNESS, ToolSetup

#: The box trainer's tissue pad: silicone-like, E = 30 kPa (soft organs are 5-30 kPa), physical
#: dynamics (no stabilization). Co-rotational: with stable neo-Hookean a node wedged between a
#: grasper's two jaw tips can end a tick inside one of them (the contact stage's two sweeps do not
#: settle it; docs/tissue-solver.md, "Limits").
TRAINER_PAD = TissueMaterial(young=30e3, poisson=0.45, density=1000.0, damping=0.01,
                             elasticity="corotated")

#: Trainer-top ports used by the built-in scenes [m] (the trainer top is 0.25 m above the floor).
LEFT_PORT = Port((-0.07, -0.11, 0.25))
RIGHT_PORT = Port((0.07, -0.11, 0.25))
SCOPE_PORT = Port((0.0, -0.15, 0.25))
#: Cholecystectomy ports [m]: left lateral (grasper), right epigastric (clip applier), right lateral
#: (scissors), umbilical (scope).
CHOLE_LEFT_PORT = Port((-0.09, -0.09, 0.25))
CHOLE_RIGHT_PORT = Port((0.06, -0.12, 0.25))
CHOLE_RIGHT2_PORT = Port((0.10, -0.06, 0.25))
CHOLE_SCOPE_PORT = Port((-0.008, -0.07, 0.25))
#: Peg transfer ports: one grasper per hand, either side of the scope (tool 0 = left hand).
PEG_LEFT_PORT = Port((-0.075, -0.11, 0.25))
PEG_RIGHT_PORT = Port((0.075, -0.11, 0.25))


@dataclass(frozen=True)
class SceneConfig:
    """What is in a scene.

    Attributes:
        name: scene name (recorded in sessions).
        tools: instruments and their ports.
        tissue_tets: target tet count of the tissue pad; 0 for no tissue.
        tissue_size: pad size (x, y, z) [m]; tissue_centre: pad centre on the floor (x, y) [m].
        material: tissue material.
        pegboard: add the FLS peg-transfer board.
        stiffness: coupling stiffness [N/m].
        scope_port: where the laparoscope enters (`Scene.scope` pivots about it).
        scope_angle: the scope's optics angle [rad] (0 or 30 deg).
        dt: fixed step [s].
        body: a tissue body spec from `sim.tissue_bodies` (strip, tube, gauze) instead of the pad
            (tissue_size, tissue_centre, material are then the body's own; tissue_tets must be > 0).
    """

    name: str = "default"
    tools: tuple[ToolSetup, ...] = (ToolSetup(inst.GRASPER, LEFT_PORT, depth=0.2),
                                    ToolSetup(inst.SCISSORS, RIGHT_PORT, depth=0.2))
    tissue_tets: int = 5000
    tissue_size: tuple[float, float, float] = (0.10, 0.06, 0.02)
    tissue_centre: tuple[float, float] = (0.0, 0.0)
    material: TissueMaterial = field(default_factory=lambda: TRAINER_PAD)
    pegboard: bool = False
    stiffness: float = DEFAULT_STIFFNESS
    scope_port: Port = SCOPE_PORT
    scope_angle: float = 0.0
    dt: float = 1e-3
    body: object | None = None


def scene_config(name: str = "default", **overrides) -> SceneConfig:
    """A built-in scene's configuration, with field overrides (e.g. tissue_tets=1000)."""
    if name == "default":
        cfg = SceneConfig()
    elif name == "peg_transfer":
        cfg = SceneConfig(name="peg_transfer", tissue_tets=0, pegboard=True,
                          tools=(ToolSetup(inst.GRASPER, PEG_LEFT_PORT, depth=0.2),
                                 ToolSetup(inst.GRASPER, PEG_RIGHT_PORT, depth=0.2)))
    elif name == "pattern_cut":
        from sim.tissue_bodies import GauzeBody

        cfg = SceneConfig(name="pattern_cut", tissue_tets=1, body=GauzeBody(),
                          tools=(ToolSetup(inst.GRASPER, PEG_LEFT_PORT, depth=0.2),
                                 ToolSetup(inst.SCISSORS, PEG_RIGHT_PORT, depth=0.2)))
    elif name == "cholecystectomy":
        from sim.organs import AnatomyBody

        cfg = SceneConfig(name="cholecystectomy", tissue_tets=1, body=AnatomyBody(seed=0),
                          scope_port=CHOLE_SCOPE_PORT, scope_angle=float(np.radians(30.0)),
                          tools=(ToolSetup(inst.GRASPER, CHOLE_LEFT_PORT, depth=0.2),
                                 ToolSetup(inst.CLIP_APPLIER, CHOLE_RIGHT_PORT, depth=0.2),
                                 ToolSetup(inst.SCISSORS, CHOLE_RIGHT2_PORT, depth=0.2)))
    else:
        raise ValueError(f"unknown scene {name!r}; built-in scenes: {', '.join(SCENES)}")
    return SceneConfig(**{**cfg.__dict__, **overrides})


SCENES = ("default", "peg_transfer", "pattern_cut", "cholecystectomy")


def make_tissue(cfg: SceneConfig) -> TissueModel:
    """The scene's tissue pad: a block on the floor, bottom tenth clamped (it rests on the floor)."""
    return make_body(cfg)[0]


def make_body(cfg: SceneConfig):
    """(TissueModel, sim.tissue_bodies.BodyInfo) of the scene's tissue: cfg.body's, or the pad."""
    from sim.tissue_bodies import BodyInfo

    if cfg.body is not None:
        return cfg.body.build(cfg.dt)
    return _pad(cfg), BodyInfo(name="pad")


def _pad(cfg: SceneConfig) -> TissueModel:
    size = cfg.tissue_size
    origin = (cfg.tissue_centre[0] - size[0] / 2, cfg.tissue_centre[1] - size[1] / 2, 0.0)
    mesh = block(size, block_cells_for(cfg.tissue_tets, size), origin=origin)
    return (TissueModelBuilder(mesh, cfg.material).fix_below(0.1 * size[2] + 1e-9)
            .finalize(dt=cfg.dt))


def start_scope(cfg: SceneConfig, anatomy: Anatomy | None, tissue: TissueModel | None,
                pegboard) -> LaparoscopeCamera:
    """The scope of a scene built from cfg at its start pose: through its port, aimed at the work
    area (Calot's triangle of `anatomy`, else the tissue's rest shape and `pegboard`, the
    `sim.tool_scene.ToolScene.pegboard` or None)."""
    if anatomy is not None:  # the work area: Calot's triangle, centred in the image
        port, calot = cfg.scope_port.point(), anatomy.landmarks["calot"]
        # Tip ~8 cm from the target: the triangle and both instruments' jaws in the image.
        insert = float(np.clip(np.linalg.norm(calot - port) - 0.08, 0.02, 0.30))
        cam = LaparoscopeCamera(port=port, view_angle=float(cfg.scope_angle), insert=insert)
        d = calot - port
        cam.yaw = float(np.arctan2(d[1], d[0]))
        best = np.inf
        for pitch in np.radians(np.linspace(10.0, 89.0, 317)):  # optics on the target
            cam.pitch = float(pitch)
            v = cam.view()
            off = abs((v[1, :3] @ calot + v[1, 3]) / (v[2, :3] @ calot + v[2, 3]))
            if off < best:
                best, keep = off, cam.pitch
        cam.pitch = keep
        return cam
    around: dict = {"tissue_rest": tissue.rest if tissue is not None else np.zeros((0, 3))}
    if pegboard is not None:
        spec = pegboard.spec
        around["pegboard"] = {"centre": spec.centre, "size": spec.size}
    return LaparoscopeCamera.aimed_at(cfg.scope_port.point(), aim_target(around),
                                      view_angle=float(cfg.scope_angle))
