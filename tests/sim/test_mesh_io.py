"""Mesh files: bit-exact round trips, one-line errors for every bad file, and `trocar mesh`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import meshio
import numpy as np
import pytest

from sim.cli import main
from sim.mesh import MeshError
from sim.mesh_generators import block, ellipsoid, tube
from sim.mesh_io import load_mesh, save_mesh

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small():
    """A 2x2x2-cell block: 27 nodes, 48 tets."""
    return block(size=(0.02, 0.02, 0.01), cells=(2, 2, 2))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real CLI in a fresh interpreter; `-m` from the repo root imports this checkout."""
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("ext", ["vtu", "vtk", "msh"])
@pytest.mark.parametrize("make", [ellipsoid, lambda: tube(cells=(8, 1, 6))], ids=["ellip", "tube"])
def test_round_trip_is_bit_equal_and_quiet(tmp_path, capfd, ext, make):
    mesh = make()
    path = tmp_path / f"m.{ext}"
    save_mesh(path, mesh)
    back = load_mesh(path)
    assert back.points.dtype == np.float64 and back.tets.dtype == np.int32
    assert np.array_equal(back.points, mesh.points)
    assert np.array_equal(back.tets, mesh.tets)
    assert capfd.readouterr() == ("", "")  # meshio warnings must not leak on success
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_gmsh_boundary_cells_are_ignored_and_their_orphan_nodes_dropped(tmp_path, small):
    # Orphan geometry points at the front and back, so the tets must be renumbered.
    pts = np.vstack([[[1.0, 1.0, 1.0]], small.points, [[2.0, 2.0, 2.0]]])
    tris = small.surface_triangles() + 1
    cells = [("vertex", np.array([[0], [len(pts) - 1]])), ("line", tris[:4, :2]),
             ("triangle", tris), ("tetra", small.tets + 1)]
    tags = [np.ones(len(c), dtype=int) for _, c in cells]
    path = tmp_path / "gmsh_mixed.msh"
    meshio.write(path, meshio.Mesh(pts, cells, cell_data={"gmsh:physical": tags,
                                                          "gmsh:geometrical": tags}),
                 file_format="gmsh22")
    back = load_mesh(path)
    assert np.array_equal(back.points, small.points)
    assert np.array_equal(back.tets, small.tets)


def _write(path: Path, points, cells) -> None:
    meshio.write(path, meshio.Mesh(np.asarray(points, dtype=float), cells))


def _bad_file(case: str, tmp_path: Path, small) -> Path:
    """Write the bad mesh `case` to a real file in `tmp_path`; return its path."""
    p, t = small.points, small.tets
    if case == "missing":
        return tmp_path / "missing.vtu"
    if case == "garbage":
        path = tmp_path / "garbage.vtu"
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "garbage_msh":
        path = tmp_path / "garbage.msh"
        path.write_bytes(b"\x00\xff\x13 not a gmsh file" * 20)
    elif case == "unknown_format":
        path = tmp_path / "mesh.xyz"
        path.write_text("1 2 3\n")
    elif case == "zero_bytes":
        path = tmp_path / "zero.vtk"
        path.touch()
    elif case == "empty":
        path = tmp_path / "empty.msh"
        meshio.write(path, meshio.Mesh(np.zeros((0, 3)), []), file_format="gmsh22")
    elif case == "triangles_only":
        path = tmp_path / "tri.vtu"
        _write(path, p, [("triangle", small.surface_triangles())])
    elif case == "hexahedra":
        path = tmp_path / "hex.vtk"
        _write(path, p, [("hexahedron", np.array([[0, 1, 4, 3, 9, 10, 13, 12]]))])
    elif case == "hex_and_tets":
        path = tmp_path / "hex_tet.vtu"
        _write(path, p, [("hexahedron", np.array([[0, 1, 4, 3, 9, 10, 13, 12]])), ("tetra", t)])
    elif case == "degenerate":
        path = tmp_path / "degenerate.vtu"
        n = len(p)
        flat = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.02, 0.0, 0.0]])  # collinear
        _write(path, np.vstack([p, flat]), [("tetra", np.vstack([t, [[n, n + 1, n + 2, 13]]]))])
    elif case == "inverted":
        path = tmp_path / "inverted.vtk"
        bad = t.copy()
        bad[7] = bad[7, [0, 1, 3, 2]]
        _write(path, p, [("tetra", bad)])
    elif case == "unused_node":
        path = tmp_path / "unused.vtu"
        _write(path, np.vstack([p, [[0.5, 0.5, 0.5]]]), [("tetra", t)])
    elif case == "nan":
        path = tmp_path / "nan.vtu"
        q = p.copy()
        q[5, 1] = np.nan
        _write(path, q, [("tetra", t)])
    else:
        raise AssertionError(case)
    return path


# case -> a word the message must contain (case-insensitive) to name the problem.
BAD = {
    "missing": "not found",
    "garbage": "unreadable",
    "garbage_msh": "unreadable",
    "unknown_format": "unknown mesh format",
    "zero_bytes": "empty",
    "empty": "empty",
    "triangles_only": "triangle",
    "hexahedra": "hexahedron",
    "hex_and_tets": "hexahedron",
    "degenerate": "degenerate",
    "inverted": "inverted",
    "unused_node": "unused",
    "nan": "nan",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_raises_one_line_mesh_error(tmp_path, capfd, small, case):
    path = _bad_file(case, tmp_path, small)
    capfd.readouterr()  # drop what meshio printed while writing the bad file
    with pytest.raises(MeshError) as err:
        load_mesh(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert BAD[case] in msg.lower()
    if case in ("triangles_only", "hexahedra"):
        assert "no tetrahedra" in msg
    assert capfd.readouterr() == ("", "")  # meshio's own prints are captured, not leaked


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_check_bad_file_exits_2_with_one_error_line(tmp_path, small, case):
    path = _bad_file(case, tmp_path, small)
    res = run_cli("mesh", "check", str(path))
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("trocar: error:")
    assert path.name in lines[0] and BAD[case] in lines[0].lower()


def test_cli_check_prints_counts_volume_and_bounds(tmp_path, capsys):
    path = tmp_path / "block.vtu"
    save_mesh(path, block())
    assert main(["mesh", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{path}: 1200 nodes, 5016 tets, 1316 surface triangles, "
                          "volume 1.200e-04 m^3, bounding box [0, 0.1] x [0, 0.06] x [0, 0.02] m")


@pytest.mark.parametrize("kind", ["block", "ellipsoid", "sheet", "tube"])
def test_cli_generate_writes_default_mesh(tmp_path, capsys, kind):
    from sim import mesh_generators

    path = tmp_path / f"{kind}.msh"
    assert main(["mesh", "generate", kind, "--out", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"wrote {path}: {kind}, ")
    expected = getattr(mesh_generators, kind)()
    assert np.array_equal(load_mesh(path).tets, expected.tets)


def test_cli_generate_subprocess_round_trip(tmp_path):
    path = tmp_path / "duct.vtu"
    res = run_cli("mesh", "generate", "tube", "--out", str(path))
    assert res.returncode == 0 and res.stderr == ""
    res = run_cli("mesh", "check", str(path))
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.startswith(f"{path}: 2352 nodes, 9216 tets, 3200 surface triangles")


@pytest.mark.parametrize("name", ["mesh.stl", "no_such_dir/mesh.vtu"])
def test_save_errors_are_mesh_errors_and_write_nothing(tmp_path, small, name):
    path = tmp_path / name
    with pytest.raises(MeshError, match="cannot write"):
        save_mesh(path, small)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_invalid_mesh(tmp_path, small):
    bad = type(small)(small.points, small.tets[:, [0, 1, 3, 2]])
    with pytest.raises(MeshError, match="inverted"):
        save_mesh(tmp_path / "bad.vtu", bad)
    assert list(tmp_path.iterdir()) == []
