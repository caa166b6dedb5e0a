"""Blade geometry for cutting: what a cut is made against, in world coordinates.

A `Blade` is the surface a blade sweeps during one snip, as triangles [m] in world coordinates,
plus the blade's length direction (the cut length is measured along it). `scissors_blade` builds
the surface swept by a pair of scissor jaws closing; `quad_blade` a planar quad for scripts and
tests. The Numba kernels here answer the two geometric questions a cut asks of a blade: where a
mesh edge crosses it (`edge_hits`) and how far a point is from it (`point_distances`).

Topology changes themselves (moving nodes, splitting the mesh) live in `sim.tissue_topology`;
the method and its measurements are in docs/cutting.md. Units: m, rad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from sim.instruments import InstrumentSpec

#: Hits closer than this fraction of an edge to one of its ends count as that end (it already lies
#: on the blade): no node is moved for them.
END_TOL = 1e-9
#: [m] the swept surface reaches this far beyond the jaw tips: tissue the closing tips pressed
#: ahead of them (the contact stage keeps tissue out of the jaws' capsules, so a thin gauze under
#: the tips sags up to ~2 mm below them) is caught between the blades, as in real scissors,
#: instead of slipping under them (the pattern cut's snips cut 5 of 28 times without it).
TIP_REACH = 3.0e-3


@dataclass(frozen=True)
class Blade:
    """The surface one snip sweeps.

    Attributes:
        triangles: (k, 3, 3) [m], world coordinates, C-contiguous float64.
        direction: (3,) unit vector along the blade (hinge -> tip); cut lengths are measured along it.
    """

    triangles: np.ndarray
    direction: np.ndarray

    def __post_init__(self):
        tris = np.ascontiguousarray(self.triangles, dtype=np.float64)
        if tris.ndim != 3 or tris.shape[1:] != (3, 3) or tris.shape[0] == 0:
            raise ValueError(f"blade triangles must have shape (k, 3, 3), got {tris.shape}")
        if not np.isfinite(tris).all():
            raise ValueError("blade triangles must be finite")
        d = np.asarray(self.direction, dtype=np.float64).reshape(3)
        norm = float(np.linalg.norm(d))
        if not norm > 0:
            raise ValueError("blade direction must be non-zero")
        object.__setattr__(self, "triangles", tris)
        object.__setattr__(self, "direction", d / norm)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box (lo (3,), hi (3,)) [m] of the blade surface."""
        flat = self.triangles.reshape(-1, 3)
        return flat.min(axis=0), flat.max(axis=0)

    def distances(self, points: np.ndarray) -> np.ndarray:
        """Distance [m] of each point (p, 3) to the blade surface, shape (p,)."""
        pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        out = np.empty(pts.shape[0])
        point_distances(pts, self.triangles, out)
        return out

    def area(self) -> float:
        """Area of the blade surface [m^2]."""
        t = self.triangles
        return 0.5 * float(np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


def quad_blade(p0, p1, p2, p3, direction=None) -> Blade:
    """A planar (or gently twisted) quad p0-p1-p2-p3 [m] as a two-triangle Blade; direction
    defaults to p0 -> p1."""
    p = np.array([p0, p1, p2, p3], dtype=np.float64)
    d = p[1] - p[0] if direction is None else direction
    return Blade(np.array([[p[0], p[1], p[2]], [p[0], p[2], p[3]]]), d)


def quat_matrix(q) -> np.ndarray:
    """Rotation matrix (3, 3) of a quaternion (x, y, z, w) (PyBullet's order)."""
    x, y, z, w = (float(c) for c in q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def scissors_spokes(spec: InstrumentSpec, open_angle: float, spokes: int) -> np.ndarray:
    """The fan the jaws sweep closing from total opening `open_angle` [rad], as `spokes` jaw
    centre lines in the shaft frame (tip at the origin, shaft along +z): (spokes, 3, 3) [m], each
    hinge, bend, tip (+ TIP_REACH), at angles evenly spaced between -open/2 and +open/2.

    The jaws hinge about the shaft frame's x axis one jaw length above the tip and open in its
    y-z plane (sim.instruments); each jaw's distal 40 % is bent toward +x by `spec.jaw_curve`, so
    the fan's outer band is a ruled, curved surface, reaching TIP_REACH beyond the tips.
    """
    a = float(np.clip(open_angle, 0.0, spec.jaw_open_max))
    phi = np.linspace(-0.5 * a, 0.5 * a, spokes) if a > 0 else np.linspace(-1e-3, 1e-3, spokes)
    jl = spec.jaw_length
    l1, l2, c = 0.6 * jl, 0.4 * jl + TIP_REACH, spec.jaw_curve
    hinge = np.broadcast_to(np.array([0.0, 0.0, jl]), (spokes, 3))
    s, co = np.sin(phi), np.cos(phi)
    bend = hinge + l1 * np.stack([np.zeros_like(phi), s, -co], axis=1)
    tip = bend + l2 * np.stack([np.full_like(phi, np.sin(c)), np.cos(c) * s, -np.cos(c) * co], axis=1)
    return np.stack([hinge, bend, tip], axis=1)


def scissors_local(spec: InstrumentSpec, open_angle: float, *, step: float = 0.1) -> np.ndarray:
    """The swept jaw surface in the shaft frame (tip at the origin, shaft along +z), (k, 3, 3) [m]:
    the fan of `scissors_spokes` as triangles; `step` [rad]: the largest angle between spokes."""
    a = float(np.clip(open_angle, 0.0, spec.jaw_open_max))
    fan = scissors_spokes(spec, open_angle, max(2, int(math.ceil(a / step)) + 1))
    hinge, bend, tip = fan[0, 0], fan[:, 1], fan[:, 2]
    tris = []
    for k in range(len(fan) - 1):
        tris.append((hinge, bend[k], bend[k + 1]))
        tris.append((bend[k], tip[k], tip[k + 1]))
        tris.append((bend[k], tip[k + 1], bend[k + 1]))
    return np.array(tris)


def scissors_blade(shaft_pose, spec: InstrumentSpec, open_angle: float) -> Blade:
    """The world surface swept by scissor jaws closing from `open_angle` [rad] (see
    `scissors_local`); shaft_pose (7,): the shaft link's position [m] (the tool tip) and
    quaternion (x, y, z, w)."""
    pose = np.asarray(shaft_pose, dtype=np.float64)
    rot = quat_matrix(pose[3:7])
    local = scissors_local(spec, open_angle)
    world = local @ rot.T + pose[:3]
    return Blade(world, -rot[:, 2])


# -- kernels ---------------------------------------------------------------------------------------


@nb.njit(nogil=True, cache=True)
def _segment_triangle(ax, ay, az, bx, by, bz, t0, t1, t2):
    """Parameter s in [0, 1] where segment a-b meets triangle (t0, t1, t2), or -1 (Möller-Trumbore,
    both faces, edges of the triangle included with a relative tolerance)."""
    dx, dy, dz = bx - ax, by - ay, bz - az
    e1x, e1y, e1z = t1[0] - t0[0], t1[1] - t0[1], t1[2] - t0[2]
    e2x, e2y, e2z = t2[0] - t0[0], t2[1] - t0[1], t2[2] - t0[2]
    px = dy * e2z - dz * e2y
    py = dz * e2x - dx * e2z
    pz = dx * e2y - dy * e2x
    det = e1x * px + e1y * py + e1z * pz
    scale = math.sqrt((dx * dx + dy * dy + dz * dz) * (e1x * e1x + e1y * e1y + e1z * e1z)
                      * (e2x * e2x + e2y * e2y + e2z * e2z))
    if abs(det) <= 1e-12 * scale:
        return -1.0  # parallel (a segment lying in the blade plane does not cross it)
    inv = 1.0 / det
    sx, sy, sz = ax - t0[0], ay - t0[1], az - t0[2]
    u = (sx * px + sy * py + sz * pz) * inv
    if u < -1e-9 or u > 1.0 + 1e-9:
        return -1.0
    qx = sy * e1z - sz * e1y
    qy = sz * e1x - sx * e1z
    qz = sx * e1y - sy * e1x
    v = (dx * qx + dy * qy + dz * qz) * inv
    if v < -1e-9 or u + v > 1.0 + 1e-9:
        return -1.0
    s = (e2x * qx + e2y * qy + e2z * qz) * inv
    if s < 0.0 or s > 1.0:
        return -1.0
    return s


@nb.njit(nogil=True, cache=True)
def edge_hits(x, edges, tris, out):
    """For each edge (a, b) of `edges` (e, 2) over node positions x (n, 3) [m], the parameter
    s in [0, 1] of its first crossing of the blade triangles tris (k, 3, 3) (point = x_a + s (x_b -
    x_a)), or -1 where it does not cross; into out (e,)."""
    for i in range(edges.shape[0]):
        a = edges[i, 0]
        b = edges[i, 1]
        best = -1.0
        for k in range(tris.shape[0]):
            s = _segment_triangle(x[a, 0], x[a, 1], x[a, 2], x[b, 0], x[b, 1], x[b, 2],
                                  tris[k, 0], tris[k, 1], tris[k, 2])
            if s >= 0.0 and (best < 0.0 or abs(s - 0.5) < abs(best - 0.5)):
                best = s
        out[i] = best


@nb.njit(nogil=True, cache=True)
def point_distances(pts, tris, out):
    """Distance [m] of each point pts (p, 3) to the nearest of the triangles tris (k, 3, 3)."""
    for i in range(pts.shape[0]):
        px, py, pz = pts[i, 0], pts[i, 1], pts[i, 2]
        best = np.inf
        for k in range(tris.shape[0]):
            ax, ay, az = tris[k, 0, 0], tris[k, 0, 1], tris[k, 0, 2]
            abx, aby, abz = tris[k, 1, 0] - ax, tris[k, 1, 1] - ay, tris[k, 1, 2] - az
            acx, acy, acz = tris[k, 2, 0] - ax, tris[k, 2, 1] - ay, tris[k, 2, 2] - az
            apx, apy, apz = px - ax, py - ay, pz - az
            d1 = abx * apx + aby * apy + abz * apz
            d2 = acx * apx + acy * apy + acz * apz
            d3 = abx * (apx - abx) + aby * (apy - aby) + abz * (apz - abz)
            d4 = acx * (apx - abx) + acy * (apy - aby) + acz * (apz - abz)
            d5 = abx * (apx - acx) + aby * (apy - acy) + abz * (apz - acz)
            d6 = acx * (apx - acx) + acy * (apy - acy) + acz * (apz - acz)
            # Ericson 5.1.5: barycentric (v, w) of the closest point a + v ab + w ac.
            if d1 <= 0.0 and d2 <= 0.0:
                v, w = 0.0, 0.0
            elif d3 >= 0.0 and d4 <= d3:
                v, w = 1.0, 0.0
            elif d1 * d4 - d3 * d2 <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
                v, w = d1 / (d1 - d3), 0.0
            elif d6 >= 0.0 and d5 <= d6:
                v, w = 0.0, 1.0
            elif d5 * d2 - d1 * d6 <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
                v, w = 0.0, d2 / (d2 - d6)
            elif d3 * d6 - d5 * d4 <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
                w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
                v = 1.0 - w
            else:
                den = 1.0 / ((d3 * d6 - d5 * d4) + (d5 * d2 - d1 * d6) + (d1 * d4 - d3 * d2))
                v = (d5 * d2 - d1 * d6) * den
                w = (d1 * d4 - d3 * d2) * den
            qx = apx - v * abx - w * acx
            qy = apy - v * aby - w * acy
            qz = apz - v * abz - w * acz
            d = qx * qx + qy * qy + qz * qz
            if d < best:
                best = d
        out[i] = math.sqrt(best)
