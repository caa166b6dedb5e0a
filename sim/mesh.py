"""Tetrahedral meshes: the container, validation and surface extraction.

A `TetMesh` is plain arrays: node positions [m], shape (n, 3), float64, and tetrahedra, shape (m, 4),
int32 node indices, each positively oriented (det[x1-x0, x2-x0, x3-x0] > 0). Generators live in
`sim.mesh_generators`, file I/O (meshio) in `sim.mesh_io`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class MeshError(ValueError):
    """A mesh that cannot be simulated. The message names the problem (and the file, when there is one)."""


@dataclass(frozen=True)
class TetMesh:
    """A tetrahedral mesh.

    Attributes:
        points: node rest positions [m], shape (n, 3), float64.
        tets: node indices of each tetrahedron, shape (m, 4), int32, positively oriented.
    """

    points: np.ndarray
    tets: np.ndarray

    @property
    def node_count(self) -> int:
        return int(self.points.shape[0])

    @property
    def tet_count(self) -> int:
        return int(self.tets.shape[0])

    def surface_triangles(self) -> np.ndarray:
        """Boundary triangles, shape (k, 3), int32, counter-clockwise seen from outside."""
        return surface_triangles(self.tets)

    def volumes(self) -> np.ndarray:
        """Signed volume of each tetrahedron [m^3], shape (m,)."""
        return tet_volumes(self.points, self.tets)


def tet_volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Signed tetrahedron volumes [m^3], shape (m,); positive for positive orientation."""
    p = points[tets]
    d = p[:, 1:, :] - p[:, :1, :]
    return np.linalg.det(d.transpose(0, 2, 1)) / 6.0


# Faces of tet (0,1,2,3) ordered so that their normals point away from the opposite vertex
# when the tet is positively oriented.
_TET_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]], dtype=np.int64)


def surface_triangles(tets: np.ndarray) -> np.ndarray:
    """Triangles that belong to exactly one tetrahedron, outward oriented, shape (k, 3), int32."""
    tets = np.asarray(tets, dtype=np.int64)
    faces = tets[:, _TET_FACES].reshape(-1, 3)
    key = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = counts[inverse.reshape(-1)] == 1
    return faces[boundary].astype(np.int32)


def validate(mesh: TetMesh, *, source: str = "mesh") -> TetMesh:
    """Check a mesh is simulatable; raise `MeshError` with one line naming `source` and the problem.

    Checks: non-empty, finite coordinates, indices in range, no unused nodes, no degenerate or
    inverted tetrahedra (|volume| must exceed 1e-9 of the mean edge length cubed).
    """
    pts = np.asarray(mesh.points)
    tets = np.asarray(mesh.tets)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise MeshError(f"{source}: no nodes (points must have shape (n, 3), got {pts.shape})")
    if tets.ndim != 2 or tets.shape[1] != 4 or tets.shape[0] == 0:
        raise MeshError(f"{source}: no tetrahedra (cells must have shape (m, 4), got {tets.shape})")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise MeshError(f"{source}: {int(bad.sum())} node(s) have NaN/inf coordinates "
                        f"(first: node {int(np.argmax(bad))})")
    if tets.min() < 0 or tets.max() >= pts.shape[0]:
        raise MeshError(f"{source}: tetrahedron index out of range [0, {pts.shape[0] - 1}]")
    if (np.sort(tets, axis=1)[:, 1:] == np.sort(tets, axis=1)[:, :-1]).any():
        e = int(np.argmax((np.sort(tets, axis=1)[:, 1:] == np.sort(tets, axis=1)[:, :-1]).any(1)))
        raise MeshError(f"{source}: tetrahedron {e} repeats a node")
    used = np.zeros(pts.shape[0], dtype=bool)
    used[tets.reshape(-1)] = True
    if not used.all():
        raise MeshError(f"{source}: {int((~used).sum())} unused node(s) not in any tetrahedron "
                        f"(first: node {int(np.argmax(~used))})")
    vol = tet_volumes(pts, tets)
    p = pts[tets]
    edge = np.linalg.norm(p[:, [1, 2, 3, 2, 3, 3]] - p[:, [0, 0, 0, 1, 1, 2]], axis=2).mean()
    tiny = 1e-9 * edge**3
    degenerate = np.abs(vol) <= tiny
    if degenerate.any():
        raise MeshError(f"{source}: {int(degenerate.sum())} degenerate (zero-volume) tetrahedra "
                        f"(first: tet {int(np.argmax(degenerate))})")
    inverted = vol < 0
    if inverted.any():
        raise MeshError(f"{source}: {int(inverted.sum())} inverted tetrahedra (negative volume, "
                        f"first: tet {int(np.argmax(inverted))})")
    return TetMesh(np.ascontiguousarray(pts, dtype=np.float64),
                   np.ascontiguousarray(tets, dtype=np.int32))


#: A mesh file rests on the floor: nodes in the bottom tenth of its height are clamped (what
#: `trocar demo --mesh` simulates and `trocar mesh check` checks). A single pinned node would carry
#: the whole weight and crush the elements around it.
FLOOR_FRACTION = 0.1
FLOOR_TOL = 1e-9  # [m] absolute tolerance of the floor band (TissueModelBuilder.fix_below's)


def floor_clamped(points: np.ndarray) -> np.ndarray:
    """Nodes resting on the floor: z within the bottom FLOOR_FRACTION of the height, shape (n,)."""
    z = np.asarray(points)[:, 2]
    return z <= z.min() + FLOOR_FRACTION * np.ptp(z) + FLOOR_TOL


def check_on_floor(mesh: TetMesh, *, source: str = "mesh") -> np.ndarray:
    """Check the solver can run `mesh` resting on the floor; returns the clamped mask (n,).

    Raises `MeshError` (one line) when every node is clamped (nothing to simulate) or when a
    part of the mesh has no clamped node (a floating element: it would fall without bound and
    the solver stops it as diverged). Parts are node-connected sets of tetrahedra.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    fixed = floor_clamped(mesh.points)
    n = mesh.node_count
    if fixed.all():
        h = float(np.ptp(mesh.points[:, 2]))
        raise MeshError(f"{source}: every node lies on the floor (height {h:.3g} m; the bottom "
                        f"{FLOOR_FRACTION:g} of it is clamped): nothing left to simulate")
    tets = np.asarray(mesh.tets, dtype=np.int64)
    rows = np.repeat(tets[:, 0], 3)
    cols = tets[:, 1:].reshape(-1)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    count, label = connected_components(graph, directed=False)
    if count > 1:
        anchored = np.zeros(count, dtype=bool)
        anchored[label[fixed]] = True
        floating = ~anchored[label[tets[:, 0]]]
        if floating.any():
            raise MeshError(f"{source}: {int(floating.sum())} tetrahedra are not connected to the "
                            f"part resting on the floor (first: tet {int(np.argmax(floating))}); "
                            "they would fall freely")
    return fixed
