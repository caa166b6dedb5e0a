"""Procedural hepatobiliary anatomy for the cholecystectomy: one conforming tet mesh of the soft
organs (gallbladder, cystic duct, common hepatic + common bile duct, cystic artery) with a body
label per element, plus the rigid parts as surfaces (liver, right hepatic artery).

This module owns the parameters, the layout of the centrelines, the boundary conditions, the rigid
parts and the assembled `Anatomy`; the meshing (gmsh/OpenCASCADE solids, their fallbacks, the disk
cache) is `sim.anatomy_mesh`. Each seed draws the anatomical variation (`AnatomyParams.sample`):
gallbladder size, cystic duct length and the angle at which it joins the common duct, where the
cystic artery leaves the right hepatic artery and where it reaches the gallbladder. Sizes,
stiffnesses and their sources: docs/anatomy.md.

World frame (the trainer's: z up, floor at z = 0), seen from the camera port in front (-y):
the liver lies at the back (+y) with its edge near y = 0; the gallbladder lies on it with the fundus
up (+y) and the neck at the front; the cystic duct runs from the neck medially (+x) and down to the
common duct, which runs along y in front of the liver; the cystic artery rises from the right
hepatic artery (behind the common hepatic duct) to the gallbladder neck, through Calot's triangle.

Units: m, Pa.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

# The body labels are defined with the mesh that carries them; users import them from here.
from sim.anatomy_mesh import (
    BODIES,
    COMMON_BILE_DUCT,
    CYSTIC_ARTERY,
    CYSTIC_DUCT,  # noqa: F401 - re-exported
    GALLBLADDER,
    bezier,
    mesh_cached,
)
from sim.mesh import MeshError, TetMesh, validate
from sim.mesh_generators import orient

#: Organ colours (linear RGB in [0, 1]) for the renderers: soft bodies in `BODIES` order, then the
#: rigid parts by name. Gallbladder green-blue through its serosa, ducts bile-tinted pale yellow,
#: arteries red, liver dark red-brown.
BODY_COLOURS = np.array([
    [0.36, 0.52, 0.32],
    [0.86, 0.80, 0.55],
    [0.80, 0.76, 0.52],
    [0.75, 0.18, 0.16],
])
RIGID_COLOURS = {"liver": (0.30, 0.07, 0.05), "right_hepatic_artery": (0.70, 0.16, 0.14)}


@dataclass(frozen=True)
class AnatomyParams:
    """The parameters one anatomy is generated from (lengths [m], angles [deg]).

    Attributes:
        gb_length: gallbladder length, neck to fundus tip. gb_radius: its largest radius (body).
        neck_radius: radius at the neck (infundibulum end, where the cystic duct leaves).
        gb_x: lateral position of the gallbladder axis.
        cd_length: straight distance neck -> junction with the common duct.
        cd_radius: cystic duct outer radius.
        cd_azimuth: direction of the junction from the neck in the floor plane, measured from -y
            toward +x (medial) [deg].
        cd_angle: angle between the cystic duct and the common duct at the junction [deg].
        cbd_radius: common hepatic / common bile duct outer radius. cbd_z: its axis height.
        ca_radius: cystic artery radius.
        ca_origin: where the cystic artery leaves the right hepatic artery, lateral offset from the
            common duct's axis (-x) [m].
        ca_insert: where it reaches the gallbladder, as a fraction of gb_length from the neck.
        rha_y: the right hepatic artery's position along y, relative to the neck.
        h_gb, h_duct: mesh sizes on the gallbladder and on the thin structures [m].
    """

    gb_length: float = 0.080
    gb_radius: float = 0.015
    neck_radius: float = 0.005
    gb_x: float = -0.022
    cd_length: float = 0.030
    cd_radius: float = 0.0015
    cd_azimuth: float = 55.0
    cd_angle: float = 35.0
    cbd_radius: float = 0.003
    cbd_z: float = 0.008
    ca_radius: float = 0.001
    ca_origin: float = 0.005
    ca_insert: float = 0.08
    rha_y: float = 0.010
    h_gb: float = 0.009
    h_duct: float = 0.0025

    @staticmethod
    def sample(seed: int, draw: int = 0, **fixed) -> AnatomyParams:
        """Draw `draw` of `seed`'s stream: uniform within normal adult ranges (docs/anatomy.md);
        keyword arguments fix fields (e.g. mesh sizes)."""
        rng = np.random.default_rng(np.random.SeedSequence([0x5EED, int(seed), int(draw)]))
        draw = {
            "gb_length": rng.uniform(0.070, 0.090),
            "gb_radius": rng.uniform(0.013, 0.016),
            "neck_radius": rng.uniform(0.0045, 0.0055),
            "cd_length": rng.uniform(0.022, 0.036),
            "cd_radius": rng.uniform(0.0013, 0.0017),
            "cd_azimuth": rng.uniform(45.0, 65.0),
            "cd_angle": rng.uniform(25.0, 50.0),
            "cbd_radius": rng.uniform(0.0027, 0.0033),
            "ca_radius": rng.uniform(0.0008, 0.0011),
            "ca_origin": rng.uniform(0.004, 0.007),
            "ca_insert": rng.uniform(0.05, 0.10),
            "rha_y": rng.uniform(0.007, 0.013),
        }
        draw.update(fixed)
        return AnatomyParams(**draw)


@dataclass(frozen=True)
class Structure:
    """A tubular structure's centreline: points (k, 3) [m] from its start (gallbladder side for the
    cystic duct and artery, liver hilum for the common duct) and radius [m]."""

    name: str
    points: np.ndarray
    radius: float

    def arclength(self) -> np.ndarray:
        """Arc length at each centreline point [m], shape (k,)."""
        return np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(self.points, axis=0), axis=1))]

    def project(self, p: np.ndarray) -> tuple[float, float, np.ndarray]:
        """Closest centreline point to p (3,) [m]: (arc length s [m], distance [m], unit tangent)."""
        a, b = self.points[:-1], self.points[1:]
        ab = b - a
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.einsum("ij,ij->i", ab, ab), 0.0, 1.0)
        c = a + t[:, None] * ab
        d = np.linalg.norm(c - p, axis=1)
        k = int(np.argmin(d))
        seg = np.linalg.norm(ab, axis=1)
        return (float(self.arclength()[k] + t[k] * seg[k]), float(d[k]), ab[k] / seg[k])

    def at(self, s: float) -> np.ndarray:
        """Centreline point at arc length s [m] (clamped to the ends), (3,)."""
        arc = self.arclength()
        return np.array([np.interp(s, arc, self.points[:, i]) for i in range(3)])


@dataclass(frozen=True)
class Anatomy:
    """One generated anatomy.

    Attributes:
        params: what it was generated from. mesh: the soft organs' conforming tet mesh.
        body: per element body label (m,) int8, index into `BODIES`.
        node_body: per node label (n,) int8: the lowest-indexed body among its elements (a node
            shared by the gallbladder and the cystic duct is the gallbladder's).
        fixed: nodes held in place (n,) bool: the gallbladder's bed on the liver and its fundus
            (held up by the assistant's grasper), the common duct's ends and its back (it lies on
            the hepatoduodenal ligament), the cystic artery's origin on the right hepatic artery.
        structures: centrelines of the cystic duct, cystic artery and common duct, by body name.
        safe_zones: per clip target ('cystic_duct', 'cystic_artery'): (s_lo, s_hi) arc-length
            interval [m] of the centreline where clips belong.
        rigid: rigid parts, name -> (points (k, 3) [m], triangles (t, 3) int32), outward surfaces.
        landmarks: named points [m]: 'neck', 'fundus', 'infundibulum' (the grasp point for lateral
            retraction), 'calot' (the centre of Calot's triangle), 'junction' (cystic-common duct).
    """

    params: AnatomyParams
    mesh: TetMesh
    body: np.ndarray
    node_body: np.ndarray
    fixed: np.ndarray
    structures: dict[str, Structure]
    safe_zones: dict[str, tuple[float, float]]
    rigid: dict[str, tuple[np.ndarray, np.ndarray]]
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)

    def node_colours(self) -> np.ndarray:
        """Per node RGB (n, 3) from `BODY_COLOURS`."""
        return BODY_COLOURS[self.node_body]

    def classify(self, p: np.ndarray, margin: float = 0.0015) -> tuple[str, float, float]:
        """Which tubular structure p (3,) [m] is on: (name or '', arc length [m], distance from the
        surface [m]); '' when no structure's surface is within margin [m]."""
        best = ("", 0.0, np.inf)
        for name, st in self.structures.items():
            s, d, _ = st.project(np.asarray(p, dtype=float))
            gap = d - st.radius
            if gap < best[2]:
                best = (name, s, gap)
        return best if best[2] <= margin else ("", best[1], best[2])


# -- geometry --------------------------------------------------------------------------------------

def _liver(p: AnatomyParams) -> tuple[np.ndarray, np.ndarray]:
    """Liver centre and semi-axes [m]: a flattened ellipsoid behind the neck, edge near y = 0."""
    return np.array([p.gb_x + 0.015, 0.068, 0.0]), np.array([0.105, 0.072, 0.040])


def liver_height(p: AnatomyParams, x: float, y: float) -> float:
    """Height of the liver's upper (visible) surface at (x, y) [m]; 0 off the liver."""
    c, r = _liver(p)
    u = 1.0 - ((x - c[0]) / r[0]) ** 2 - ((y - c[1]) / r[1]) ** 2
    return float(c[2] + r[2] * np.sqrt(u)) if u > 0 else 0.0


def _gb_axis(p: AnatomyParams, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Gallbladder axis points (n, 3) [m], neck first, and radii (n,) [m] of the pear that
    `sim.anatomy_mesh` builds: a cone from the neck widening into an ellipsoid (the body and fundus)
    whose semi-axis along the axis is 0.36 gb_length. The axis climbs the liver's slope so that
    about a quarter of the body's section lies sunk into the liver bed."""
    neck = np.array([p.gb_x, 0.004, 0.0])
    neck[2] = max(liver_height(p, neck[0], neck[1]), 0.004) + 0.6 * p.neck_radius
    far = neck + np.array([-0.004, p.gb_length, 0.0])
    y_body = neck[1] + 0.64 * p.gb_length
    far[2] = liver_height(p, p.gb_x, y_body) + 0.5 * p.gb_radius + 0.012
    t = np.linspace(0.0, 1.0, n)
    a = 0.36 * p.gb_length
    s = t * p.gb_length  # distance from the neck along the axis
    ell = p.gb_radius * np.sqrt(np.clip(1.0 - ((s - (p.gb_length - a)) / a) ** 2, 0.0, 1.0))
    cone = p.neck_radius + (0.75 * p.gb_radius - p.neck_radius) * np.clip(s / (p.gb_length - a), 0, 1)
    cone[s > p.gb_length - a] = 0.0
    return neck + t[:, None] * (far - neck), np.maximum(ell, cone)






def _spline(points: np.ndarray, n: int = 40) -> np.ndarray:
    """Catmull-Rom polyline through points (k, 3), n samples [m] (the centreline we measure on;
    gmsh's B-spline through the same points stays within a fraction of a radius of it)."""
    pts = np.asarray(points, dtype=float)
    ext = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    out = []
    segs = len(pts) - 1
    for k in range(n):
        u = k / (n - 1) * segs
        i = min(int(u), segs - 1)
        s = u - i
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s * s
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * s ** 3))
    return np.array(out)


#: [m] how far the right hepatic artery climbs, lateral of the common duct, toward the liver
#: hilum: the cystic artery leaves it near the level of the cystic duct and crosses Calot's
#: triangle roughly parallel to it (generator 3; generator 2's artery left it under the common
#: duct and rose ~20 mm, 55-85 deg steep in its safe zone, which no clip from above can square).
RHA_RISE = 0.016


def _layout(p: AnatomyParams) -> dict:
    """Centreline control points of every structure [m] (before meshing)."""
    axis, radii = _gb_axis(p)
    neck = axis[0]
    ax0 = (axis[1] - axis[0]) / np.linalg.norm(axis[1] - axis[0])
    az = np.radians(p.cd_azimuth)
    horiz = np.array([np.sin(az), -np.cos(az), 0.0])
    junction = neck + p.cd_length * horiz
    junction[2] = p.cbd_z
    # The common duct runs along y through the junction; the cystic duct enters it from above-lateral
    # at cd_angle to its axis, coming from the caudal side's opposite (it joins pointing down, -y).
    ang = np.radians(p.cd_angle)
    approach = np.array([-np.sin(ang), np.cos(ang), 0.0])  # from the junction back toward the duct
    # Cubic Bezier control points: the duct leaves the neck along the gallbladder's axis and enters
    # the common duct along `approach`; the inner ends sink into both (conforming union).
    start = neck + 0.005 * ax0
    end = junction + np.array([0.0, 0.0, 0.2 * p.cbd_radius])
    cd = np.array([start, neck - 0.4 * p.cd_length * ax0,
                   end + 0.45 * p.cd_length * approach + np.array([0.0, 0.0, 0.003]), end])
    cbd_top = np.array([junction[0] - 0.002, neck[1] + 0.018, p.cbd_z + 0.002])
    cbd = np.array([cbd_top, junction + np.array([0.0, 0.012, 0.0]),
                    junction + np.array([0.0, -0.008, 0.0]), junction + np.array([0.002, -0.022, -0.001])])
    rha_z = p.cbd_z - p.cbd_radius - 0.0025
    rha_y = neck[1] + p.rha_y
    rha = np.array([[junction[0] + 0.020, rha_y - 0.004, rha_z],
                    [junction[0], rha_y, rha_z],
                    [junction[0] - 0.008, rha_y + 0.006, rha_z + RHA_RISE],
                    [p.gb_x + 0.002, rha_y + 0.012,
                     max(liver_height(p, p.gb_x, rha_y + 0.012), rha_z + 0.004) - 0.002]])
    rha_line = _spline(rha, 30)
    # Cystic artery origin: on the RHA, lateral of the common duct.
    ox = junction[0] - p.cbd_radius - p.ca_origin
    k = int(np.argmin(np.abs(rha_line[:, 0] - ox)))
    origin = rha_line[k]
    k_ins = p.ca_insert * (len(axis) - 1)
    i_ins = int(k_ins)
    ins_axis = axis[i_ins] + (k_ins - i_ins) * (axis[i_ins + 1] - axis[i_ins])
    r_ins = np.interp(k_ins, np.arange(len(radii)), radii)
    medial = np.array([1.0, 0.0, 0.0])
    ins_surface = ins_axis + r_ins * 0.6 * medial + np.array([0.0, 0.0, -0.6 * r_ins])
    sunk = ins_surface - 0.35 * r_ins * medial  # into the gallbladder wall
    reach = float(np.linalg.norm(sunk - origin))
    # It leaves the RHA upward, then crosses the triangle toward the neck (its free length in
    # front of the camera, rising ~10 deg).
    # ... bowing cranially (+y, away from the cystic duct) as it does (a longer free length).
    lift = np.array([0.0, 0.5 * reach, 0.1 * reach])
    ca = np.array([origin, origin + 0.35 * (sunk - origin) + lift,
                   sunk + 0.35 * reach * medial + lift, sunk])
    return {"axis": axis, "radii": radii, "cd": cd, "cbd": cbd, "ca": ca, "rha": rha_line,
            "junction": junction}


def _fixed_nodes(p: AnatomyParams, lay: dict, pts: np.ndarray, node_body: np.ndarray) -> np.ndarray:
    """Nodes held in place (see `Anatomy.fixed`)."""
    c, r = _liver(p)
    inside = np.sum(((pts - c) / r) ** 2, axis=1)
    axis = lay["axis"]
    gb_len = np.linalg.norm(axis[-1] - axis[0])
    t = (pts - axis[0]) @ ((axis[-1] - axis[0]) / gb_len) / gb_len
    gb = node_body == GALLBLADDER
    # The bed: the part of the gallbladder sunk into the liver, over its body (not the neck).
    bed = gb & (inside <= 1.02) & (t > 0.35)
    fundus = gb & (t > 0.93)  # the fundus tip, held up by the assistant
    cbd = lay["cbd"]
    along = (pts - cbd[0]) @ ((cbd[-1] - cbd[0]) / np.linalg.norm(cbd[-1] - cbd[0]))
    length = np.linalg.norm(cbd[-1] - cbd[0])
    duct = node_body == COMMON_BILE_DUCT
    ends = duct & ((along < 0.006) | (along > length - 0.006))
    back = duct & (pts[:, 2] < p.cbd_z - 0.3 * p.cbd_radius)
    origin = (node_body == CYSTIC_ARTERY) & (np.linalg.norm(pts - lay["ca"][0], axis=1)
                                             < p.ca_radius + 0.0015)
    return bed | fundus | ends | back | origin


def _rigid(p: AnatomyParams, lay: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Liver (upper half of its ellipsoid, a lat-long grid) and right hepatic artery (a tube)."""
    c, r = _liver(p)
    nu, nv = 36, 12
    u = np.linspace(0, 2 * np.pi, nu, endpoint=False)
    v = np.linspace(0, 0.5 * np.pi, nv + 1)[:-1]  # from the pole down to the equator
    uu, vv = np.meshgrid(u, v, indexing="ij")
    ring = np.stack([np.sin(vv) * np.cos(uu), np.sin(vv) * np.sin(uu), np.cos(vv)], axis=-1)
    pts = np.vstack([[0.0, 0.0, 1.0], ring[:, 1:].transpose(1, 0, 2).reshape(-1, 3),
                     np.stack([np.cos(u), np.sin(u), np.zeros(nu)], axis=1)]) * r + c
    tris = [[0, 1 + (i + 1) % nu, 1 + i] for i in range(nu)]
    for k in range(nv - 1):  # rows 1.. nv-1 of the grid then the equator
        a0, b0 = 1 + k * nu, 1 + (k + 1) * nu
        for i in range(nu):
            j = (i + 1) % nu
            tris += [[a0 + i, a0 + j, b0 + j], [a0 + i, b0 + j, b0 + i]]
    liver = (pts, np.array(tris, dtype=np.int32))
    return {"liver": liver, "right_hepatic_artery": tube_surface(lay["rha"], 0.0016)}


def tube_surface(line: np.ndarray, radius: float, sides: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A closed-sided tube surface around a polyline (k, 3) [m]: (points, triangles int32)."""
    line = np.asarray(line, dtype=float)
    tang = np.gradient(line, axis=0)
    tang /= np.linalg.norm(tang, axis=1)[:, None]
    ref = np.array([0.0, 0.0, 1.0])
    n1 = np.cross(tang, ref)
    n1 /= np.linalg.norm(n1, axis=1)[:, None]
    n2 = np.cross(tang, n1)
    a = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    pts = (line[:, None, :] + radius * (np.cos(a)[None, :, None] * n1[:, None, :]
                                        + np.sin(a)[None, :, None] * n2[:, None, :])).reshape(-1, 3)
    tris = []
    for k in range(len(line) - 1):
        for i in range(sides):
            j = (i + 1) % sides
            a0, a1, b0, b1 = k * sides + i, k * sides + j, (k + 1) * sides + i, (k + 1) * sides + j
            tris += [[a0, b0, b1], [a0, b1, a1]]
    return pts, np.array(tris, dtype=np.int32)


def _outside(line: np.ndarray, lay: dict, p: AnatomyParams) -> np.ndarray:
    """The part of a centreline (k, 3) [m] outside the gallbladder and the common duct's lumen
    axis tube (the points between the first and last outside point)."""
    axis, radii = lay["axis"], lay["radii"]
    u = axis[-1] - axis[0]
    length = float(np.linalg.norm(u))
    u /= length
    s = np.clip((line - axis[0]) @ u, 0.0, length)
    r = np.interp(s, np.linalg.norm(axis - axis[0], axis=1), radii)
    d_gb = np.linalg.norm(line - axis[0] - s[:, None] * u, axis=1) - r
    cbd = bezier(lay["cbd"], 80)
    d_cbd = np.min(np.linalg.norm(line[:, None, :] - cbd[None], axis=2), axis=1) - p.cbd_radius
    out = np.flatnonzero((d_gb > 0) & (d_cbd > 0))
    return line[out[0]:out[-1] + 1] if len(out) >= 2 else line


#: Draws tried per seed: a seed whose draw gmsh cannot mesh takes the next draw of its own stream.
MAX_DRAWS = 6


def anatomy_for_seed(seed: int, **fixed) -> Anatomy:
    """The anatomy of a session seed: `AnatomyParams.sample` draws (seed, 0), (seed, 1), ... until
    one meshes (deterministic: the same seed always gives the same anatomy)."""
    last = None
    for k in range(MAX_DRAWS):
        try:
            return build_anatomy(AnatomyParams.sample(seed, draw=k, **fixed))
        except MeshError as exc:
            last = exc
    raise MeshError(f"anatomy: no draw of seed {seed} could be meshed ({last})")


@functools.lru_cache(maxsize=8)
def build_anatomy(params: AnatomyParams | None = None) -> Anatomy:
    """Generate the anatomy for `params` (default: `AnatomyParams()`); ~2 s (gmsh) the first
    time, then read from the disk cache. Raises sim.mesh.MeshError if it cannot be meshed."""
    p = params or AnatomyParams()
    lay = _layout(p)
    pts, tets, body = mesh_cached(p, lay)
    mesh = validate(TetMesh(pts, orient(pts, tets)), source="anatomy")
    node_body = np.full(len(pts), len(BODIES), dtype=np.int8)
    for b in range(len(BODIES) - 1, -1, -1):
        node_body[np.unique(mesh.tets[body == b])] = b
    fixed = _fixed_nodes(p, lay, pts, node_body)
    # Centrelines of the free lengths (outside the organs they sink into), gallbladder side first.
    cd_line = _outside(bezier(lay["cd"], 60), lay, p)
    ca_line = _outside(bezier(lay["ca"], 60)[::-1], lay, p)
    structures = {
        "cystic_duct": Structure("cystic_duct", cd_line, p.cd_radius),
        "cystic_artery": Structure("cystic_artery", ca_line, p.ca_radius),
        "common_bile_duct": Structure("common_bile_duct", bezier(lay["cbd"], 40), p.cbd_radius),
    }
    zones = {}
    for name, st in (("cystic_duct", structures["cystic_duct"]),
                     ("cystic_artery", structures["cystic_artery"])):
        total = float(st.arclength()[-1])
        # The middle of the free length: away from the gallbladder wall and from the common duct
        # (or the artery's origin), where three clips and a cut fit.
        zones[name] = (0.2 * total, 0.8 * total)
    axis = lay["axis"]
    landmarks = {
        "neck": axis[0].copy(),
        "fundus": axis[-1].copy(),
        "infundibulum": axis[1].copy(),
        "junction": lay["junction"].copy(),
        "calot": (structures["cystic_duct"].at(0.5 * structures["cystic_duct"].arclength()[-1])
                  + structures["cystic_artery"].at(0.5 * structures["cystic_artery"].arclength()[-1])
                  ) / 2,
    }
    return Anatomy(params=p, mesh=mesh, body=body, node_body=node_body, fixed=fixed,
                   structures=structures, safe_zones=zones, rigid=_rigid(p, lay), landmarks=landmarks)
