"""Procedural tetrahedral meshes: block, sheet (gauze pad), ellipsoid (liver lobe), tube (duct).

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
    axes = [np.linspace(o, o + s, n + 1)
            for o, s, n in zip(origin, size, (nx, ny, nz), strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    # Node index i + (nx+1)*(j + (ny+1)*k): x fastest.
    points = np.stack([x, y, z], axis=-1).transpose(2, 1, 0, 3).reshape(-1, 3)
    return validate(TetMesh(points, orient(points, grid_tets((nx, ny, nz)))), source="block")


def block_cells_for(tet_target: int, size=(0.10, 0.06, 0.02)) -> tuple[int, int, int]:
    """Cell counts of a near-cubic grid on `size` [m] whose tet count is closest to `tet_target`."""
    best = None
    for h in np.geomspace(min(size) / 40, min(size), 2000):
        cells = tuple(max(1, int(round(s / h))) for s in size)
        err = abs(6 * cells[0] * cells[1] * cells[2] - tet_target)
        if best is None or err < best[0]:
            best = (err, cells)
    return best[1]


def _octant_grid_tets(shape: tuple[int, int, int]) -> np.ndarray:
    """Like `grid_tets`, but each cell's Kuhn diagonal points away from the grid centre.

    A shared face's diagonal only depends on the flips of the two axes spanning it, so flipping
    per axis index keeps the mesh conforming. Mapped onto a curved boundary, every tet then keeps
    the cell's innermost node, which lies off the surface: no flat tets of four surface nodes.
    Returns shape (6*nx*ny*nz, 4), int64, orientation not yet fixed.
    """
    nx, ny, nz = shape
    i, j, k = (a.reshape(-1) for a in np.meshgrid(
        np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"))
    base = i + (nx + 1) * (j + (ny + 1) * k)
    # Bit a of `flip` set: reverse axis a in this cell (it lies in the lower half of the grid).
    flip = sum((2 * idx < n - 1).astype(np.int64) << a
               for a, (idx, n) in enumerate(zip((i, j, k), shape, strict=True)))
    c = _KUHN[None, :, :] ^ flip[:, None, None]
    corner = (c & 1) + (nx + 1) * (((c >> 1) & 1) + (ny + 1) * ((c >> 2) & 1))
    return (base[:, None, None] + corner).reshape(-1, 4)


def _cube_to_ball(q: np.ndarray) -> np.ndarray:
    """Map points of the cube [-1, 1]^3, shape (n, 3), onto the unit ball, shape (n, 3).

    Each max-norm shell s = |q|_inf is blended from a cube (weight 0) to a sphere of radius s
    (weight 1) with weight sqrt(s): the surface is exactly spherical while the core stays close
    to the grid, which keeps the corner cells from flattening.
    """
    s = np.abs(q).max(axis=1)
    on_shell = q / np.where(s > 0, s, 1.0)[:, None]
    stretch = 1.0 / np.where(s > 0, np.linalg.norm(on_shell, axis=1), 1.0)
    w = np.sqrt(s)
    return q * ((1.0 - w) + w * stretch)[:, None]


def ellipsoid(radii=(0.08, 0.05, 0.03), cells=(16, 10, 6), *, center=(0.0, 0.0, 0.0)) -> TetMesh:
    """A liver-lobe-sized solid ellipsoid, semi-axes `radii` [m] along x, y, z, about `center` [m].

    A structured grid of `cells` (nx, ny, nz) hexahedra over the bounding box is mapped onto the
    ellipsoid; the default gives ~1 cm cells, 5760 tets, volume ~1.6 % under 4/3 pi abc (the
    surface is inscribed). Minimum dihedral angle stays near 20 degrees.
    """
    cells = tuple(int(c) for c in cells)
    if min(cells) < 1 or min(radii) <= 0:
        raise ValueError(f"ellipsoid needs positive radii and cells, got {radii}, {cells}")
    axes = [np.linspace(-1.0, 1.0, n + 1) for n in cells]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    q = np.stack([x, y, z], axis=-1).transpose(2, 1, 0, 3).reshape(-1, 3)
    points = _cube_to_ball(q) * np.asarray(radii, dtype=float) + np.asarray(center, dtype=float)
    return validate(TetMesh(points, orient(points, _octant_grid_tets(cells))), source="ellipsoid")


def sheet(size=(0.10, 0.10, 0.003), cells=(40, 40, 2), *, origin=(0.0, 0.0, 0.0)) -> TetMesh:
    """A thin gauze / tissue pad of `size` [m] (3 mm thick by default), min corner at `origin` [m].

    Default `cells` give 2.5 mm x 2.5 mm x 1.5 mm hexahedra, 19200 tets; two layers through the
    thickness so a cut can separate faces without the pad falling apart into single tets.
    """
    return block(size, cells, origin=origin)


def tube(length=0.03, outer_radius=0.0015, inner_radius=0.0008, cells=(16, 2, 48)) -> TetMesh:
    """A hollow cylinder (cystic duct / vessel) along +x from x=0, axis at y=z=0; sizes [m].

    `cells` = (circumferential, radial, axial). The (theta, r, x) index grid is Kuhn-split like
    `block` and wrapped in theta, which stays conforming because every face perpendicular to
    theta has the same diagonal. Cross-section is a regular polygon annulus, so the volume is
    n/2 sin(2 pi/n) (R^2 - r^2) L, ~2.5 % under pi (R^2 - r^2) L for n = 16.
    """
    nt, nr, nx = (int(c) for c in cells)
    if nt < 3 or min(nr, nx) < 1:
        raise ValueError(f"tube needs >= 3 circumferential and >= 1 other cells, got {cells}")
    if not 0 < inner_radius < outer_radius or length <= 0:
        raise ValueError(f"tube needs 0 < inner_radius < outer_radius and length > 0, got "
                         f"{inner_radius}, {outer_radius}, {length}")
    theta, r, x = np.meshgrid(np.arange(nt) * (2 * np.pi / nt),
                              np.linspace(inner_radius, outer_radius, nr + 1),
                              np.linspace(0.0, length, nx + 1), indexing="ij")
    # Node index i + nt*(j + (nr+1)*k): theta fastest.
    points = np.stack([x, r * np.cos(theta), r * np.sin(theta)], axis=-1)
    points = points.transpose(2, 1, 0, 3).reshape(-1, 3)
    grid = grid_tets((nt, nr, nx))  # nodes at theta index nt duplicate index 0
    rest, i = np.divmod(grid, nt + 1)
    tets = i % nt + nt * rest
    return validate(TetMesh(points, orient(points, tets)), source="tube")
