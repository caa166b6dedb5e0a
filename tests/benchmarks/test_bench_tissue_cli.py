"""`trocar bench tissue` as a user runs it: JSON lines with the fields the issue asks for."""

import json
import subprocess
import sys

import meshio
import numpy as np


def trocar(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_bench_tissue_prints_one_json_object_per_engine_and_exports_the_mesh(tmp_path):
    out = tmp_path / "mesh_{tets}.vtu"
    res = trocar("bench", "tissue", "--tets", "200", "--steps", "20", "--repeats", "2",
                 "--settle", "0.3", "--export-mesh", str(out), "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    for key in ("engine", "tets", "nodes", "median_us", "p99_us", "sag_mm", "sag_ref_mm",
                "sag_err", "stable"):
        assert key in row
    assert row["engine"] == "trocar" and row["stable"] is True
    assert 0 < row["median_us"] <= row["p99_us"]
    assert len(row["run_medians_us"]) == 2
    # Gravity pulls the pad down by about a tenth of a millimetre; the solver agrees with FEM.
    assert 0.01 < row["sag_ref_mm"] < 1.0
    assert abs(row["sag_err"]) < 0.05
    exported = meshio.read(tmp_path / "mesh_200.vtu")
    assert exported.points.shape[0] == row["nodes"]
    assert sum(len(c.data) for c in exported.cells if c.type == "tetra") == row["tets"]
    assert np.isclose(np.ptp(exported.points[:, 2]), 0.02)


def test_bench_tissue_refuses_bad_sizes_with_one_line():
    res = trocar("bench", "tissue", "--tets", "3", "--json")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("trocar: error:") and "--tets" in res.stderr


def test_bench_tissue_with_a_point_load_reports_the_solver_work_and_matches_nonlinear_fem():
    res = trocar("bench", "tissue", "--tets", "200", "--steps", "20", "--repeats", "1",
                 "--settle", "0.5", "--load", "0.5", "--json")
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.splitlines()[0])
    assert row["load_n"] == 0.5 and row["elasticity"] == "neohookean" and row["stable"] is True
    assert row["evals_per_step"] >= 1 and row["transient_evals_per_step"] >= 1
    assert row["transient_median_us"] > 0
    # The settled top face under the point load is the converged nonlinear static FEM's.
    assert abs(row["sag_err"]) < 0.02
    # And the settled state is an equilibrium: forces balance to a fraction of a mN, and Newton's
    # method started there moves no node by a micrometre.
    assert row["residual_n"] < 1e-3 and row["local_ref_move_mm"] < 1e-3
    assert abs(row["sag_local_err"]) < 1e-3
