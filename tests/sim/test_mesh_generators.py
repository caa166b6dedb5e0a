"""Procedural meshes: analytic volumes, closed outward surfaces, conformity and element quality."""

from __future__ import annotations

import numpy as np
import pytest

from sim.mesh import TetMesh
from sim.mesh_generators import block, ellipsoid, sheet, tube

GENERATORS = {"block": block, "ellipsoid": ellipsoid, "sheet": sheet, "tube": tube}


def min_dihedral_deg(mesh: TetMesh) -> float:
    """Smallest interior dihedral angle over all tets [degrees]."""
    p = mesh.points[mesh.tets]
    faces = [(1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1)]
    n = np.stack([np.cross(p[:, b] - p[:, a], p[:, c] - p[:, a]) for a, b, c in faces], axis=1)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    cos = [np.einsum("ij,ij->i", n[:, i], n[:, j]) for i in range(4) for j in range(i + 1, 4)]
    return float(np.degrees(np.pi - np.arccos(np.clip(np.stack(cos), -1, 1))).min())


def surface_edges(tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges of `tris`, shape (e, 2), and how many triangles use each."""
    e = np.sort(tris[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def enclosed_volume(points: np.ndarray, tris: np.ndarray) -> float:
    """Divergence-theorem volume of a closed triangle surface [m^3]; positive if outward."""
    a, b, c = (points[tris[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def default_mesh(request) -> tuple[str, TetMesh]:
    return request.param, GENERATORS[request.param]()


def test_positive_orientation_and_dtypes(default_mesh):
    _, mesh = default_mesh
    assert mesh.points.dtype == np.float64 and mesh.tets.dtype == np.int32
    assert (mesh.volumes() > 0).all()


def test_surface_is_closed_manifold_with_expected_topology(default_mesh):
    name, mesh = default_mesh
    tris = mesh.surface_triangles()
    edges, counts = surface_edges(tris)
    assert (counts == 2).all()  # watertight: every surface edge borders exactly two triangles
    # Euler characteristic V - E + F: 2 for a ball, 0 for the torus-shaped boundary of a tube.
    chi = len(np.unique(tris)) - len(edges) + len(tris)
    assert chi == (0 if name == "tube" else 2)


def test_surface_normals_point_outward(default_mesh):
    _, mesh = default_mesh
    total = mesh.volumes().sum()
    assert enclosed_volume(mesh.points, mesh.surface_triangles()) == pytest.approx(total, rel=1e-9)


def test_no_sliver_tets(default_mesh):
    _, mesh = default_mesh
    assert min_dihedral_deg(mesh) > 15.0


def test_ellipsoid_volume_converges_to_analytic_from_below():
    radii = (0.08, 0.05, 0.03)
    exact = 4.0 / 3.0 * np.pi * np.prod(radii)
    coarse = ellipsoid(radii, cells=(16, 10, 6)).volumes().sum()
    fine = ellipsoid(radii, cells=(32, 20, 12)).volumes().sum()
    # Inscribed surface: the shortfall is O(h^2), ~1.6 % at ~1 cm cells, ~1/4 of that at half h.
    assert 0 < exact - coarse < 0.03 * exact
    assert 0 < exact - fine < 0.35 * (exact - coarse)


def test_ellipsoid_surface_nodes_lie_on_ellipsoid_and_mesh_is_conforming():
    radii, center, cells = (0.07, 0.04, 0.025), (0.01, -0.02, 0.1), (14, 8, 5)
    mesh = ellipsoid(radii, cells, center=center)
    tris = mesh.surface_triangles()
    q = (mesh.points[np.unique(tris)] - center) / radii
    np.testing.assert_allclose(np.einsum("ij,ij->i", q, q), 1.0, rtol=1e-12)
    # A non-conforming split would leave interior faces unmatched and inflate this count.
    nx, ny, nz = cells
    assert len(tris) == 4 * (nx * ny + ny * nz + nz * nx)
    assert min_dihedral_deg(mesh) > 15.0


def test_tube_volume_matches_polygonal_annulus_and_circle():
    length, ro, ri, cells = 0.03, 0.0015, 0.0008, (16, 2, 48)
    mesh = tube(length, ro, ri, cells)
    n = cells[0]
    polygon = 0.5 * n * np.sin(2 * np.pi / n) * (ro**2 - ri**2) * length
    circle = np.pi * (ro**2 - ri**2) * length
    vol = mesh.volumes().sum()
    assert vol == pytest.approx(polygon, rel=1e-12)
    # Chord error of an inscribed n-gon: 1 - sin(x)/x ~ x^2/6 with x = 2 pi / n.
    assert 0 < 1 - vol / circle < 1.05 * (2 * np.pi / n) ** 2 / 6


def test_tube_geometry_and_theta_seam_is_closed():
    length, ro, ri, (nt, nr, nx) = 0.03, 0.0015, 0.0008, (12, 3, 20)
    mesh = tube(length, ro, ri, (nt, nr, nx))
    r = np.hypot(mesh.points[:, 1], mesh.points[:, 2])
    assert r.min() == pytest.approx(ri) and r.max() == pytest.approx(ro)
    assert mesh.points[:, 0].min() == 0.0 and mesh.points[:, 0].max() == pytest.approx(length)
    assert mesh.node_count == nt * (nr + 1) * (nx + 1)  # no duplicated seam nodes
    # Inner + outer walls and two end rings; an open seam would add faces at theta = 0.
    assert len(mesh.surface_triangles()) == 4 * nt * nx + 4 * nt * nr


def test_sheet_is_thin_box_with_exact_volume():
    size = (0.10, 0.10, 0.003)
    mesh = sheet(size, cells=(20, 20, 2), origin=(0.0, 0.0, 0.05))
    assert mesh.volumes().sum() == pytest.approx(np.prod(size), rel=1e-12)
    np.testing.assert_allclose(mesh.points.min(axis=0), (0.0, 0.0, 0.05))
    np.testing.assert_allclose(mesh.points.max(axis=0), (0.10, 0.10, 0.053))
    assert mesh.tet_count == 6 * 20 * 20 * 2


@pytest.mark.parametrize("cells", [(1, 1, 1), (2, 2, 2), (5, 3, 3), (7, 4, 1)])
def test_ellipsoid_small_and_odd_grids_are_valid(cells):
    mesh = ellipsoid(cells=cells)
    assert (mesh.volumes() > 0).all()
    assert (surface_edges(mesh.surface_triangles())[1] == 2).all()


@pytest.mark.parametrize("call", [
    lambda: ellipsoid(cells=(0, 2, 2)),
    lambda: ellipsoid(radii=(0.08, 0.0, 0.03)),
    lambda: tube(cells=(2, 1, 4)),
    lambda: tube(inner_radius=0.002),
    lambda: tube(length=0.0),
    lambda: sheet(cells=(4, 4, 0)),
])
def test_bad_generator_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
