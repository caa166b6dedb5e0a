"""Procedural tetrahedral meshes: block (tissue pad) and the organ shapes built on the same grid.

Every generator returns a validated `TetMesh` with positively oriented tets. Sizes are in metres.
"""

from __future__ import annotations

import itertools

import numpy as np

from sim.mesh import TetMesh, tet_volumes, validate

# Freudenthal (Kuhn) split of the unit cube into 6 tets along the 000-111 diagonal: one tet per
# axis order. Using the same diagonal in every cell makes neighbouring cells share face diagonals,
# so the mesh is conforming.
_KUHN = np.array(
    [[0, 1 << a, (1 << a) | (1 << b), 7] for a, b, _ in itertools.permutations(range(3))],
    dtype=np.int64,
)


def grid_tets(shape: tuple[int, int, int]) -> np.ndarray:
    """Tets of an (nx, ny, nz)-cell structured grid, node index = i + (nx+1)*(j + (ny+1)*k).

    Returns shape (6*nx*ny*nz, 4), int64, orientation not yet fixed.
    """
    nx, ny, nz = shape
    i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    base = (i + (nx + 1) * (j + (ny + 1) * k)).reshape(-1)
    corner = np.array(
        [(c & 1) + (nx + 1) * (((c >> 1) & 1) + (ny + 1) * ((c >> 2) & 1)) for c in range(8)]
    )
    return (base[:, None, None] + corner[_KUHN][None, :, :]).reshape(-1, 4)


def orient(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Swap two nodes of every negatively oriented tet; returns int32 (m, 4)."""
    tets = np.array(tets, dtype=np.int32)
    neg = tet_volumes(points, tets) < 0
    tets[neg, 2], tets[neg, 3] = tets[neg, 3].copy(), tets[neg, 2].copy()
    return tets


def block(size=(0.10, 0.06, 0.02), cells=(19, 11, 4), *, origin=(0.0, 0.0, 0.0)) -> TetMesh:
    """A box of `size` [m] split into `cells` hexahedra, 6 tets each; min corner at `origin` [m]."""
    nx, ny, nz = (int(c) for c in cells)
    if min(nx, ny, nz) < 1:
        raise ValueError(f"block needs at least one cell per axis, got {cells}")
    axes = [np.linspace(o, o + s, n + 1) for o, s, n in zip(origin, size, (nx, ny, nz), strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    # Node index i + (nx+1)*(j + (ny+1)*k): x fastest.
    points = np.stack([x, y, z], axis=-1).transpose(2, 1, 0, 3).reshape(-1, 3)
    return validate(TetMesh(points, orient(points, grid_tets((nx, ny, nz)))), source="block")


def block_cells_for(tet_target: int, size=(0.10, 0.06, 0.02)) -> tuple[int, int, int]:
    """Cell counts of a near-cubic-cell grid on `size` whose tet count is closest to `tet_target`."""
    best = None
    for h in np.geomspace(min(size) / 40, min(size), 2000):
        cells = tuple(max(1, int(round(s / h))) for s in size)
        err = abs(6 * cells[0] * cells[1] * cells[2] - tet_target)
        if best is None or err < best[0]:
            best = (err, cells)
    return best[1]
