"""Tissue bodies a scene can hold besides the default pad: a strip (tearing), a tube (duct, vessel:
clips, bleeding) and a gauze sheet in its frame (the FLS pattern cut), each built from parameters.

A `*Body` spec (frozen, in `SceneConfig.body`) builds the `TissueModel` and a `BodyInfo`: what the
clip, damage and bleeding stages (`sim.tissue_injury`) need to know about the body's shape
(tube axis coordinates, lumen nodes), its tear threshold and whether it is a vessel.

Units: m, N, Pa, mL/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim import mesh_generators as gen
from sim.damage import tear_material
from sim.mesh import TetMesh, validate
from sim.tissue_model import TissueMaterial, TissueModel, TissueModelBuilder

#: A duct / vessel wall (soft-organ moduli are a few to tens of kPa; a vessel wall is stiffer).
VESSEL_WALL = TissueMaterial(young=100e3, poisson=0.45, density=1050.0, damping=0.01, elasticity="corotated")
#: A strip of connective tissue for the tearing check: stiff enough to stay straight under gravity.
STRIP_TISSUE = TissueMaterial(young=300e3, poisson=0.45, density=1050.0, damping=0.01, elasticity="corotated")
#: Cotton gauze held taut in a frame, as a thin solid sheet (in-plane stiffness of a loose weave).
#: Stable neo-Hookean: a 2 mm sheet one element thick is turned inside out by a blade tip pressing a
#: node through it; neo-Hookean's energy rises under inversion and pushes it back out within
#: ~0.1 s, where corotated elements stayed inverted (12-25 of them in the expert's attempt) and
#: kept every later step at its 6-iteration cap (docs/cutting.md, "Blades do not crush").
GAUZE = TissueMaterial(young=200e3, poisson=0.3, density=300.0, damping=0.005, elasticity="neohookean")


@dataclass(eq=False)
class BodyInfo:
    """What the injury stages know about a tissue body (arrays over the model's nodes/elements).

    name: body tag; tear_stress: per element [Pa] (None: the body never tears); tear_force: the
    configured tear force of the whole section [N] (None if no tearing); damage_radius: non-local
    averaging radius [m]; vessel: cutting or tearing it bleeds; bleed_rate: flow out of one open
    end [mL/s]; axial: rest coordinate along the tube axis [m], (n,) (None: not a tube);
    sector: circumferential index of each node (n,) int, n_sectors; inner: lumen-wall nodes (n,)
    bool; r_in, r_out: lumen and outer radius [m]; origin, axis: the tube axis at rest [m], unit;
    vessel_elements: (m,) bool, the elements of the vessel when the body holds other organs too
    (None: every element; `sim.organs`); bite_tear_force: (m,) [N], a grasper's bite on an
    element's nodes tears out when the jaws pull on it this hard (`sim.damage.BiteTear`; None:
    bites never tear, only the continuum criterion does); start_x: where the body's nodes start
    [m], (n, 3) (None: at rest; organs start hanging under gravity, and their step matrix follows
    their configuration: `sim.organs.hanging`).
    """

    name: str
    tear_stress: np.ndarray | None = None
    tear_force: float | None = None
    damage_radius: float = 0.0
    vessel: bool = False
    bleed_rate: float = 0.0
    axial: np.ndarray | None = None
    sector: np.ndarray | None = None
    n_sectors: int = 0
    inner: np.ndarray | None = None
    r_in: float = 0.0
    r_out: float = 0.0
    origin: np.ndarray | None = None
    axis: np.ndarray | None = None
    vessel_elements: np.ndarray | None = None
    bite_tear_force: np.ndarray | None = None
    start_x: np.ndarray | None = None


def _translated(mesh: TetMesh, offset) -> TetMesh:
    return validate(TetMesh(mesh.points + np.asarray(offset, float), mesh.tets))


@dataclass(frozen=True)
class StripBody:
    """A rectangular strip standing on its edge: length along +x, thickness along y, width (its
    height) along z [m], centred on (cx, cy) at mid-height z [m]; a grasper from above takes its
    upper edge between its jaws. The end at low x is clamped, and with `clamp_both` the high end
    too (a pull by moving clamped nodes). Tears at the force of `tear` (`TEAR_MATERIALS`)."""

    length: float = 0.03
    thickness: float = 0.003
    width: float = 0.01
    cells: tuple[int, int, int] = (15, 2, 5)
    centre: tuple[float, float] = (0.0, 0.0)
    z: float = 0.03
    tear: str = "fragile"
    clamp_both: bool = False
    material: TissueMaterial = STRIP_TISSUE

    def build(self, dt: float | None) -> tuple[TissueModel, BodyInfo]:
        origin = (self.centre[0] - self.length / 2, self.centre[1] - self.thickness / 2,
                  self.z - self.width / 2)
        mesh = gen.block((self.length, self.thickness, self.width), self.cells, origin=origin)
        x = mesh.points[:, 0]
        fixed = x <= origin[0] + 1e-9
        if self.clamp_both:
            fixed |= x >= origin[0] + self.length - 1e-9
        model = TissueModelBuilder(mesh, self.material).fix_nodes(fixed).finalize(dt=dt)
        mat = tear_material(self.tear)
        info = BodyInfo(name="strip", tear_force=mat.tear_force,
                        tear_stress=np.full(model.tet_count, mat.tear_stress(self.width * self.thickness)),
                        damage_radius=0.6 * self.width)
        return model, info


@dataclass(frozen=True)
class TubeBody:
    """A straight tube (duct, artery) along +x from `start` [m], outer/inner radius [m]; both ends
    clamped (it is attached to the organs it joins). `vessel`: it bleeds when opened, at
    `bleed_rate` [mL/s] per open end. Tears at the force of `tear`."""

    length: float = 0.03
    outer_radius: float = 0.0015
    inner_radius: float = 0.0008
    cells: tuple[int, int, int] = (12, 1, 30)
    start: tuple[float, float, float] = (-0.015, 0.0, 0.02)
    tear: str = "duct"
    vessel: bool = False
    bleed_rate: float = 0.5
    material: TissueMaterial = VESSEL_WALL

    def build(self, dt: float | None) -> tuple[TissueModel, BodyInfo]:
        nt, nr, _ = self.cells
        mesh = gen.tube(self.length, self.outer_radius, self.inner_radius, self.cells)
        mesh = _translated(mesh, self.start)
        axial = mesh.points[:, 0] - self.start[0]
        fixed = (axial <= 1e-9) | (axial >= self.length - 1e-9)
        model = TissueModelBuilder(mesh, self.material).fix_nodes(fixed).finalize(dt=dt)
        idx = np.arange(mesh.node_count)
        mat = tear_material(self.tear)
        section = np.pi * (self.outer_radius ** 2 - self.inner_radius ** 2)
        info = BodyInfo(name="vessel" if self.vessel else "duct", tear_force=mat.tear_force,
                        tear_stress=np.full(model.tet_count, mat.tear_stress(section)),
                        damage_radius=1.2 * self.outer_radius, vessel=self.vessel,
                        bleed_rate=self.bleed_rate if self.vessel else 0.0, axial=axial,
                        sector=idx % nt, n_sectors=nt, inner=(idx // nt) % (nr + 1) == 0,
                        r_in=self.inner_radius, r_out=self.outer_radius,
                        origin=np.asarray(self.start, float), axis=np.array([1.0, 0.0, 0.0]))
        return model, info


@dataclass(frozen=True)
class GauzeBody:
    """The FLS pattern-cut gauze: a square sheet (size [m], thickness [m]) centred on (cx, cy) at
    height z [m] (its frame), the outer `rim` [m] of it clamped in the frame."""

    size: float = 0.10
    thickness: float = 0.002
    cells: tuple[int, int, int] = (20, 20, 1)
    centre: tuple[float, float] = (0.0, 0.0)
    z: float = 0.03
    rim: float = 0.002
    material: TissueMaterial = GAUZE

    def build(self, dt: float | None) -> tuple[TissueModel, BodyInfo]:
        half = self.size / 2
        origin = (self.centre[0] - half, self.centre[1] - half, self.z - self.thickness)
        mesh = gen.sheet((self.size, self.size, self.thickness), self.cells, origin=origin)
        p = mesh.points
        inner = half - self.rim - 1e-9
        fixed = (np.abs(p[:, 0] - self.centre[0]) >= inner) | (np.abs(p[:, 1] - self.centre[1]) >= inner)
        model = TissueModelBuilder(mesh, self.material).fix_nodes(fixed).finalize(dt=dt)
        # Gauze does not tear under a grasper (TEAR_MATERIALS['gauze']): no damage stage, no cost.
        return model, BodyInfo(name="gauze")
