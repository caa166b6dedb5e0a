"""Pure NumPy geometry for the renderer: poses, camera matrices, primitive meshes, normals.

All matrices are 4x4 float64, column-vector convention (p' = M @ p), converted to float32 and
transposed only at the GL boundary. Meshes are (vertices (n, 3), normals (n, 3), indices (k, 3)).
"""

from __future__ import annotations

import numpy as np

from sim.camera import look_at, perspective, rot_axis  # noqa: F401 - part of this module's API


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) from a quaternion (x, y, z, w) (normalised here)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def pose_matrix(pose: np.ndarray) -> np.ndarray:
    """4x4 transform from a pose row (x, y, z, qx, qy, qz, qw)."""
    m = np.eye(4)
    m[:3, :3] = quat_to_mat(pose[3:7])
    m[:3, 3] = pose[:3]
    return m


def translate(x: float, y: float, z: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def scale(x: float, y: float, z: float) -> np.ndarray:
    return np.diag([x, y, z, 1.0])








def frustum_from_tangents(left: float, right: float, down: float, up: float, near: float,
                          far: float) -> np.ndarray:
    """Asymmetric projection from the tangents of the four half-angles (OpenXR's XrFovf gives the
    angles: left and down negative)."""
    w, h = right - left, up - down
    m = np.zeros((4, 4))
    m[0, 0], m[0, 2] = 2 / w, (right + left) / w
    m[1, 1], m[1, 2] = 2 / h, (up + down) / h
    m[2, 2], m[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
    m[3, 2] = -1.0
    return m


def project(view_proj: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised device coordinates (n, 3) of world points (n, 3), and whether each is in front
    of the camera (w > 0)."""
    p = np.c_[np.asarray(points, float), np.ones(len(points))] @ view_proj.T
    w = p[:, 3:4]
    front = w[:, 0] > 1e-9
    return p[:, :3] / np.where(np.abs(w) < 1e-12, 1e-12, w), front


def vertex_normals(x: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (n, 3) of a triangle surface over all n nodes of x.

    Vectorised: face normals by cross product, summed onto vertices with bincount (one pass per
    component), so no per-vertex Python. Nodes on no triangle get (0, 0, 1).
    """
    a, b, c = x[triangles[:, 0]], x[triangles[:, 1]], x[triangles[:, 2]]
    fn = np.cross(b - a, c - a)  # length = 2 * area: the area weighting
    n = len(x)
    idx = triangles.ravel()
    out = np.empty((n, 3))
    for k in range(3):
        out[:, k] = np.bincount(idx, weights=np.repeat(fn[:, k], 3), minlength=n)
    length = np.linalg.norm(out, axis=1)
    empty = length < 1e-30
    out[empty] = (0.0, 0.0, 1.0)
    length[empty] = 1.0
    return out / length[:, None]


def vertex_normals_reference(x: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Slow per-triangle loop, the reference `vertex_normals` is tested against."""
    out = np.zeros((len(x), 3))
    for t in triangles:
        fn = np.cross(x[t[1]] - x[t[0]], x[t[2]] - x[t[0]])
        for v in t:
            out[v] += fn
    for i in range(len(x)):
        length = np.linalg.norm(out[i])
        out[i] = out[i] / length if length > 1e-30 else (0.0, 0.0, 1.0)
    return out


# -- primitive meshes ---------------------------------------------------------------------------------


def box_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit cube [-0.5, 0.5]^3 with flat normals (24 vertices, 12 triangles)."""
    verts, norms, tris = [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1.0
            v = np.cross(n, u)
            base = len(verts)
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                verts.append(0.5 * n + 0.5 * du * u + 0.5 * dv * v)
                norms.append(n)
            tris += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return np.array(verts), np.array(norms), np.array(tris, dtype=np.int32)


def cylinder_mesh(segments: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-radius cylinder along z from 0 to 1, smooth sides, flat caps."""
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.c_[np.cos(phi), np.sin(phi), np.zeros(segments)]
    side_v = np.r_[ring, ring + (0, 0, 1)]
    side_n = np.r_[ring, ring]
    i = np.arange(segments)
    j = (i + 1) % segments
    side_t = np.r_[np.c_[i, j, j + segments], np.c_[i, j + segments, i + segments]]
    verts, norms, tris = [side_v], [side_n], [side_t]
    base = 2 * segments
    for z, nz in ((0.0, -1.0), (1.0, 1.0)):
        cap = np.r_[[[0.0, 0.0, z]], ring + (0, 0, z)]
        verts.append(cap)
        norms.append(np.tile((0.0, 0.0, nz), (segments + 1, 1)))
        fan = np.c_[np.zeros(segments, int), i + 1, j + 1] + base
        tris.append(fan if nz > 0 else fan[:, [0, 2, 1]])
        base += segments + 1
    return np.concatenate(verts), np.concatenate(norms), np.concatenate(tris).astype(np.int32)


def torus_mesh(radius: float, tube: float, segments: int = 32,
               sides: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Torus in the xy plane: centreline radius and tube radius [m]."""
    u = np.linspace(0, 2 * np.pi, segments, endpoint=False)[:, None]
    v = np.linspace(0, 2 * np.pi, sides, endpoint=False)[None, :]
    n = np.stack([np.cos(u) * np.cos(v), np.sin(u) * np.cos(v),
                  np.broadcast_to(np.sin(v), (segments, sides))], axis=-1)
    centre = np.stack([radius * np.cos(u), radius * np.sin(u), np.zeros_like(u)], axis=-1)
    verts = (centre + tube * n).reshape(-1, 3)
    a = np.arange(segments)[:, None]
    b = np.arange(sides)[None, :]
    i00 = a * sides + b
    i10 = ((a + 1) % segments) * sides + b
    i01 = a * sides + (b + 1) % sides
    i11 = ((a + 1) % segments) * sides + (b + 1) % sides
    tris = np.r_[np.c_[i00.ravel(), i10.ravel(), i11.ravel()], np.c_[i00.ravel(), i11.ravel(), i01.ravel()]]
    return verts, n.reshape(-1, 3), tris.astype(np.int32)


def quad_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit square in the xy plane ([-0.5, 0.5]^2), normal +z (texture coordinates = xy + 0.5)."""
    v = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], dtype=float)
    return v, np.tile((0.0, 0.0, 1.0), (4, 1)), np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)


def jaw_box_transforms(tool: dict) -> list[np.ndarray]:
    """Per jaw (A then B), the box transforms in the jaw link frame (unit cube -> jaw part).

    Mirrors sim.instruments._jaw_boxes: a straight jaw is one box (w x t x l) centred at
    (0, +-(gap/2 + t/2), -l/2); a curved jaw is a proximal 60 % box and a distal 40 % box turned
    by the curve about y.
    """
    t, w, length = tool["jaw_thickness"], tool["jaw_width"], tool["jaw_length"]
    c = tool["jaw_curve"]
    out = []
    for side in (+1.0, -1.0):
        y = side * (tool["jaw_gap"] / 2 + t / 2)
        if c == 0.0:
            out.append([translate(0.0, y, -length / 2) @ scale(w, t, length)])
            continue
        l1, l2 = 0.6 * length, 0.4 * length
        centre = (np.sin(c) * l2 / 2, y, -l1 - np.cos(c) * l2 / 2)
        out.append([translate(0.0, y, -l1 / 2) @ scale(w, t, l1),
                    translate(*centre) @ rot_axis((0, 1, 0), -c) @ scale(w, t, l2)])
    return out


def merge_parts(parts: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One mesh of several placed, differently coloured parts (a static batch: one draw call
    instead of one per part, which is what a software rasteriser pays for most).

    parts: (verts (n, 3), normals (n, 3), tris (k, 3), model (4, 4), colour (3,),
    (shininess, specular, sheen)). Returns world verts (N, 3), unit normals (N, 3), tris (K, 3)
    int32 and per-vertex material (N, 6): colour then (shininess, specular, sheen)."""
    verts, norms, tris, mats, base = [], [], [], [], 0
    for v, n, t, model, colour, finish in parts:
        v, n = np.asarray(v, float), np.asarray(n, float)
        verts.append(v @ model[:3, :3].T + model[:3, 3])
        nm = np.linalg.inv(model[:3, :3]).T  # normals transform by the inverse transpose
        n = n @ nm.T
        norms.append(n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12))
        tris.append(np.asarray(t, np.int64) + base)
        mats.append(np.tile(np.r_[np.asarray(colour, float), np.asarray(finish, float)], (len(v), 1)))
        base += len(v)
    return (np.concatenate(verts), np.concatenate(norms), np.concatenate(tris).astype(np.int32),
            np.concatenate(mats))
