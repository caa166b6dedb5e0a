"""`trocar demo` (the `make run` job) as a user runs it."""

import re
import subprocess
import sys


def trocar(*args):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_demo_reports_sag_close_to_linear_fem_and_the_step_time():
    res = trocar("demo", "--tets", "1000", "--seconds", "0.5", "--load", "0.5")
    assert res.returncode == 0, res.stderr
    m = re.search(r"with 0.5 N on top; linear FEM ([\d.]+) mm \(([+-][\d.]+) %\)", res.stdout)
    assert m, res.stdout
    assert float(m.group(1)) > 0.1 and abs(float(m.group(2))) < 5.0
    assert re.search(r"step time: median \d+ us, p99 \d+ us", res.stdout)


def test_demo_on_a_bad_mesh_file_is_one_error_line(tmp_path):
    bad = tmp_path / "organ.vtu"
    bad.write_text("not a mesh")
    res = trocar("demo", "--mesh", str(bad))
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trocar: error:") and "organ.vtu" in lines[0]


def test_demo_runs_a_generated_organ_mesh(tmp_path):
    path = tmp_path / "lobe.vtu"
    assert trocar("mesh", "generate", "ellipsoid", "--out", str(path)).returncode == 0
    res = trocar("demo", "--mesh", str(path), "--seconds", "0.2", "--load", "0.1")
    assert res.returncode == 0, res.stderr
    assert "settled:" in res.stdout and "inverted elements 0" in res.stdout
