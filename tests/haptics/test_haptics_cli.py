"""`trocar device ...` and `trocar bench device*` as a user runs them (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys

TROCAR = [sys.executable, "-m", "sim.cli"]


def trocar(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TROCAR, *args], capture_output=True, text=True, timeout=timeout)


def test_bench_device_prints_one_json_object_with_the_link_figures():
    r = trocar("bench", "device", "--seconds", "1", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for key in ("state_rate_hz", "rtt_p50_us", "rtt_p99_us", "rtt_max_us", "frames_lost",
                "crc_errors", "device_force_frames_lost"):
        assert key in d
    assert d["states"] > 100 and d["crc_errors"] == 0
    assert 0 < d["rtt_p50_us"] <= d["rtt_p99_us"] <= d["rtt_max_us"]


def test_bench_device_fuzz_reports_no_exceptions_and_no_unexplained_loss():
    r = trocar("bench", "device-fuzz", "--frames", "20000", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["exceptions"] == 0 and d["intact_lost_unexplained"] == 0 and d["ok"] is True


def test_monitor_on_a_missing_port_prints_one_error_line_and_exits_2():
    r = trocar("device", "monitor", "/dev/trocar-missing")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trocar: error: cannot open /dev/trocar-missing")


def test_emulate_with_a_bad_option_value_prints_one_error_line_and_exits_2():
    r = trocar("device", "emulate", "--drop-bytes", "1.5")
    assert r.returncode == 2
    assert r.stderr.strip() == "trocar: error: --drop-bytes must be a probability in [0, 1]"


def test_list_and_monitor_show_an_emulated_device(emulator):
    link, _ = emulator("--serial", "LIST-7", "--hand", "still", "--hand-at", "0.012,0,0")
    r = trocar("device", "list", "--port", link, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    row = next(x for x in rows if x["port"] == link)
    assert row["trocar"] and row["serial"] == "LIST-7" and row["max_force_n"] == 5.0
    r = trocar("device", "monitor", link, "--seconds", "1.6", "--plain")
    assert r.returncode == 0, r.stderr
    assert "running" in r.stdout and "+12.00" in r.stdout  # x position in mm
