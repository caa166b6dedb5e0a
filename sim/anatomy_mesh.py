"""Meshing of the procedural hepatobiliary anatomy (`sim.anatomy`): gmsh/OpenCASCADE solids, the
conforming tet mesh with a body label per element, the fallbacks when gmsh fails, and the disk
cache of finished meshes. Owns the soft bodies' label vocabulary (`BODIES`, re-exported by
`sim.anatomy`, where users import it from), the cubic Bezier centrelines the pipes are swept along,
and `GENERATOR_VERSION`, the cache key's version.

The gallbladder is a pear along its axis in the liver bed (an ellipsoid fused with a cone from the
neck); ducts and the artery are pipes swept along cubic Bezier curves whose ends sink into the
organ they join; `occ.fragment` makes the union conforming (shared nodes where organs meet: the ducts are
connected by construction), then gmsh meshes it with a coarse size on the gallbladder and a fine one
on the thin structures. Input: an `AnatomyParams` and its layout (`sim.anatomy`'s control points);
output: (points (n, 3) [m], tets (m, 4), body label per tet (m,) int8).

Units: m.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from sim.mesh import MeshError

if TYPE_CHECKING:  # a type only: sim.anatomy imports this module
    from sim.anatomy import AnatomyParams


#: Soft bodies of the tissue model, in label order (`sim.anatomy.Anatomy.body`).
BODIES = ("gallbladder", "cystic_duct", "common_bile_duct", "cystic_artery")
GALLBLADDER, CYSTIC_DUCT, COMMON_BILE_DUCT, CYSTIC_ARTERY = range(4)

#: Bump when the generator changes (here or in `sim.anatomy`'s layout): cached meshes of older
#: versions are not reused.
GENERATOR_VERSION = 3


def _rotation_x_to(u: np.ndarray) -> tuple[np.ndarray, float]:
    """Axis and angle [rad] of the rotation taking +x onto the unit vector u."""
    x = np.array([1.0, 0.0, 0.0])
    ax = np.cross(x, u)
    s = np.linalg.norm(ax)
    if s < 1e-12:
        return np.array([0.0, 0.0, 1.0]), (0.0 if u[0] > 0 else np.pi)
    return ax / s, float(np.arctan2(s, float(x @ u)))


def bezier(ctrl: np.ndarray, n: int = 40) -> np.ndarray:
    """n points [m] of the cubic Bezier curve with control points ctrl (4, 3) (what gmsh sweeps)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    c = np.asarray(ctrl, dtype=float)
    return ((1 - t) ** 3 * c[0] + 3 * (1 - t) ** 2 * t * c[1] + 3 * (1 - t) * t * t * c[2]
            + t ** 3 * c[3])


def _pipe(occ, points: np.ndarray, radius: float, trihedron: str = "DiscreteTrihedron"):
    """A solid pipe of radius [m] along the cubic Bezier curve of control points (4, 3) [m];
    returns its volume dimtags."""
    tags = [occ.addPoint(*map(float, q)) for q in points]
    wire = occ.addWire([occ.addBezier(tags)])
    d = points[1] - points[0]
    d = d / np.linalg.norm(d)
    circ = occ.addCircle(*map(float, points[0]), radius, zAxis=tuple(map(float, d)))
    disk = occ.addPlaneSurface([occ.addCurveLoop([circ])])
    vol = occ.addPipe([(2, disk)], wire, trihedron)
    occ.remove([(1, wire)], recursive=True)
    occ.remove([(2, disk)], recursive=True)
    return vol


def _gallbladder(occ, p: AnatomyParams, axis: np.ndarray):
    """The pear along `sim.anatomy`'s gallbladder axis: an ellipsoid fused with a cone; returns its
    volume dimtags."""
    neck, far = axis[0], axis[-1]
    length = float(np.linalg.norm(far - neck))
    u = (far - neck) / length
    a = 0.36 * p.gb_length
    centre = neck + (length - a) * u
    ell = occ.addSphere(0.0, 0.0, 0.0, 1.0)
    occ.dilate([(3, ell)], 0.0, 0.0, 0.0, a, p.gb_radius, 0.85 * p.gb_radius)
    rot_axis, angle = _rotation_x_to(u)
    occ.rotate([(3, ell)], 0.0, 0.0, 0.0, *map(float, rot_axis), angle)
    occ.translate([(3, ell)], *map(float, centre))
    cone = occ.addCone(*map(float, neck), *map(float, centre - neck), p.neck_radius,
                       0.75 * p.gb_radius)
    out, _ = occ.fuse([(3, ell)], [(3, cone)])
    return [d for d in out if d[0] == 3]


#: gmsh surface algorithms tried in turn (Delaunay, MeshAdapt): on some seeds one of them leaves
#: overlapping facets where a pipe meets an organ (gmsh then raises) and the frontal default
#: (6) was seen to loop forever on a pipe surface, so it is not used.
SURFACE_ALGORITHMS = (5, 1)
#: How OpenCASCADE orients the pipes' sections along their splines, tried in turn: on some seeds
#: one of them sweeps a self-intersecting solid that the fragment drops.
PIPE_TRIHEDRA = ("DiscreteTrihedron",)
#: Mesh-size factors tried in turn after every algorithm failed.
SIZE_RETRIES = (1.0, 0.9)


def _missing_volume(p: AnatomyParams, lay: dict, pts: np.ndarray, tets: np.ndarray,
                    body: np.ndarray) -> str:
    """The first tubular body whose meshed volume is under half of pi r^2 x (its centreline length
    outside the organs it sinks into), or ''."""
    from sim.mesh import tet_volumes

    vol = np.abs(tet_volumes(pts, tets))
    for b, key, r, sunk in ((CYSTIC_DUCT, "cd", p.cd_radius, 0.006 + p.cbd_radius),
                            (CYSTIC_ARTERY, "ca", p.ca_radius, 0.6 * p.gb_radius),
                            (COMMON_BILE_DUCT, "cbd", p.cbd_radius, 0.0)):
        line = bezier(lay[key])
        length = float(np.sum(np.linalg.norm(np.diff(line, axis=0), axis=1))) - sunk
        if vol[body == b].sum() < 0.5 * np.pi * r * r * max(length, 0.0):
            return BODIES[b]
    return ""


#: [s] a gmsh attempt taking longer is abandoned (a normal one takes 1-4 s on the 2-core VM).
MESH_TIMEOUT_S = 40.0


def _mesh_child(conn, p, lay, kwargs) -> None:
    try:
        conn.send(_mesh(p, lay, **kwargs))
    except Exception as exc:  # gmsh raises plain Exception with its last error
        conn.send(f"gmsh: {exc}")
    finally:
        conn.close()


def _mesh_guarded(p: AnatomyParams, lay: dict, **kwargs):
    """`_mesh` in a forked child process, so that a gmsh attempt that never ends (seen with some
    surface algorithms on some seeds) can be stopped: the result, or a message (str)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_mesh_child, args=(send, p, lay, kwargs), daemon=True)
    child.start()
    send.close()
    try:
        if recv.poll(MESH_TIMEOUT_S):
            return recv.recv()
        return f"gmsh did not finish in {MESH_TIMEOUT_S:g} s ({kwargs})"
    except EOFError:
        return f"gmsh crashed ({kwargs})"
    finally:
        recv.close()
        if child.is_alive():
            child.kill()
        child.join()


def _mesh_retrying(p: AnatomyParams, lay: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_mesh` with the fallbacks above; raises MeshError naming the params if all fail."""
    last = None
    for scale in SIZE_RETRIES:
        for tri in PIPE_TRIHEDRA:
            for alg in SURFACE_ALGORITHMS:
                out = _mesh_guarded(p, lay, algorithm=alg, size_scale=scale, trihedron=tri)
                if isinstance(out, str):
                    last = out
                    continue
                short = _missing_volume(p, lay, *out)
                if not short:
                    return out
                last = f"{short} has less than half its expected volume"
    raise MeshError(f"anatomy: gmsh could not mesh {p}: {last}")


def _mesh(p: AnatomyParams, lay: dict, *, algorithm: int = 5, size_scale: float = 1.0,
          trihedron: str = "DiscreteTrihedron") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gmsh: (points (n, 3) [m], tets (m, 4), body label per tet (m,)); `algorithm` is gmsh's 2D
    algorithm, size_scale multiplies the mesh sizes."""
    import gmsh

    gmsh.initialize(readConfigFiles=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)  # deterministic
        gmsh.model.add("anatomy")
        occ = gmsh.model.occ
        gb = _gallbladder(occ, p, lay["axis"])
        cd = _pipe(occ, lay["cd"], p.cd_radius, trihedron)
        cbd = _pipe(occ, lay["cbd"], p.cbd_radius, trihedron)
        ca = _pipe(occ, lay["ca"], p.ca_radius, trihedron)
        groups = [gb, cd, cbd, ca]  # BODIES order = priority for shared pieces
        flat = [d for g in groups for d in g]
        owner = [b for b, g in enumerate(groups) for _ in g]
        _, pieces_of = occ.fragment(flat, [])
        occ.synchronize()
        label: dict[int, int] = {}
        for b, pieces in zip(owner, pieces_of, strict=True):
            for dim, tag in pieces:
                if dim == 3:
                    label[tag] = min(label.get(tag, b), b)
        for tag, b in label.items():
            size = size_scale * {GALLBLADDER: p.h_gb, COMMON_BILE_DUCT: 1.5 * p.h_duct}.get(b, p.h_duct)
            pts = gmsh.model.getBoundary([(3, tag)], combined=False, recursive=True)
            gmsh.model.mesh.setSize(pts, size)
        for name, value in (("Mesh.MeshSizeFromCurvature", 0), ("Mesh.MeshSizeExtendFromBoundary", 1),
                            ("Mesh.MeshSizeMax", p.h_gb), ("Mesh.MeshSizeMin", 0.5 * p.h_duct),
                            ("Mesh.Algorithm3D", 1), ("Mesh.Algorithm", algorithm), ("Mesh.Optimize", 1),
                            ("Mesh.OptimizeNetgen", 1),
                            ("Mesh.RandomSeed", 1)):
            gmsh.option.setNumber(name, value)
        gmsh.model.mesh.generate(3)
        node_tags, coords, _ = gmsh.model.mesh.getNodes()
        tets, body = [], []
        for tag, b in sorted(label.items()):
            types, _, conn = gmsh.model.mesh.getElements(3, tag)
            for t, c in zip(types, conn, strict=True):
                if t == 4:  # 4-node tetrahedron
                    c = np.asarray(c, dtype=np.int64).reshape(-1, 4)
                    tets.append(c)
                    body.append(np.full(len(c), b, dtype=np.int8))
    finally:
        gmsh.finalize()
    tets = np.vstack(tets)
    index = np.full(int(node_tags.max()) + 1, -1, dtype=np.int64)
    index[node_tags.astype(np.int64)] = np.arange(len(node_tags))
    pts = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    tets = index[tets]
    used = np.unique(tets)  # drop nodes of geometry points that no tet uses
    remap = np.full(len(pts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return pts[used], remap[tets], np.concatenate(body)


def _cache_path(p: AnatomyParams):
    """Where the mesh of p is cached on disk (per user; a mesh is ~100 kB)."""
    import hashlib
    from pathlib import Path

    key = hashlib.sha256(f"{GENERATOR_VERSION}:{p!r}".encode()).hexdigest()[:24]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trocar" / "anatomy"
    return root / f"{key}.npz"


def mesh_cached(p: AnatomyParams, lay: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_mesh_retrying`, through the disk cache (gmsh takes seconds; a scene reset must not)."""
    path = _cache_path(p)
    try:
        with np.load(path) as f:
            return f["points"], f["tets"], f["body"]
    except (OSError, KeyError, ValueError):
        pass
    pts, tets, body = _mesh_retrying(p, lay)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, points=pts, tets=tets, body=body)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only home still works, just slower
    return pts, tets, body
