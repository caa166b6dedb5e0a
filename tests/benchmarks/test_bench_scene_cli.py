"""`trocar bench scene` through the real CLI: JSON rows with every part, bad options refused."""

import json
import subprocess
import sys


def trocar(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_bench_scene_prints_whole_tick_and_parts_with_tools_in_contact():
    out = trocar("bench", "scene", "--tets", "2000", "--seconds", "0.3", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    row, summary = rows[0], rows[-1]
    assert row["bench"] == "scene" and row["ticks"] == 300 and row["tools"] == 2
    for part in ("pybullet", "contact", "tissue"):
        assert 0 < row[f"{part}_median_us"] <= row[f"{part}_p99_us"]
    assert row["median_us"] <= row["p99_us"] <= row["max_us"]
    # The script presses both tools into the pad: contacts and a tissue force exist.
    assert row["contacts_mean"] > 0
    assert max(row["tool_force_N"]) > 0
    assert summary["bench"] == "scene_summary" and summary["target_p99_us"] == 900.0


def test_bench_scene_refuses_bad_options_in_one_line():
    out = trocar("bench", "scene", "--tools", "0")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "trocar: error:" in out.stderr


def test_bench_reset_prints_the_in_place_reset_time_against_a_new_build():
    p = subprocess.run([sys.executable, "-m", "sim.cli", "bench", "reset", "--scenes", "peg_transfer",
                        "--repeats", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout.strip().splitlines()[-1])
    assert row["bench"] == "reset" and row["scene"] == "peg_transfer" and row["repeats"] == 2
    assert 0 < row["reset_ms_median"] < row["build_ms"]
