"""`trocar device calibrate --auto` and `trocar device check` against emulators with injected
miscalibration: the wizard must recover what was injected, and the profile must make the device
report true positions and apply true forces.

On the emulator the two fixtures of a calibration are two emulator processes of the same device
(same serial, same injected errors): one whose hand plays the reference jig procedure (position
step), one whose hand is the reference spring of 200 N/m (force and latency step).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EMU_FIFO, host_fifo

from haptics import calibration as C
from haptics import protocol as P
from haptics.emulated_device import EmulatedDevice
from haptics.profile import CalibratedDevice, load_profile, make_profile, save_profile

TROCAR = [sys.executable, "-m", "sim.cli"]
CPM = 1e5  # emulator counts per metre


def trocar(env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TROCAR, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _errors(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"offset": rng.integers(-3000, 3000, 3), "gain": np.round(rng.uniform(-0.05, 0.05, 3), 4),
            "sign": rng.choice([-1, 1], 3), "force": np.round(rng.uniform(-0.1, 0.1, 3), 4),
            "latency_ms": int(rng.integers(0, 6))}


def _emu_args(serial: str, e: dict) -> list[str]:
    def csv(v):
        return ",".join(str(x) for x in v)
    # "--opt=value": a value starting with "-" would otherwise read as an option
    return [*EMU_FIFO, "--serial", serial, f"--encoder-offset={csv(e['offset'])}",
            f"--gain-error={csv(e['gain'])}", f"--axis-sign={csv(e['sign'])}",
            f"--force-constant-error={csv(e['force'])}",
            "--latency-ms", str(e["latency_ms"])]


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return e


@pytest.fixture
def jig(tmp_path):
    path = tmp_path / "jig.txt"
    C.write_jig_script(str(path), np.array([0.08, 0.08, 0.08]))
    return f"script:{path}"


def _calibrate(env, emulator, jig, serial, e) -> dict:
    link, _ = emulator(*_emu_args(serial, e), "--hand", jig)
    r = trocar(env, "device", "calibrate", link, "--auto", "--steps", "position")
    assert r.returncode == 0, r.stdout + r.stderr
    link, _ = emulator(*_emu_args(serial, e), "--hand", "spring")
    report = Path(env["XDG_CONFIG_HOME"]).parent / f"{serial}.html"
    r = trocar(env, "device", "calibrate", link, "--auto", "--steps", "force", "--report", str(report))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "profile written" in r.stdout
    page = report.read_text()  # the page a lab files: both sessions' results, per jig hole
    assert f"Calibration of {serial}" in page and "residual_mm" in page and "one_way_ms" in page
    assert "<h2>jig points</h2>" in page
    return load_profile(Path(env["XDG_CONFIG_HOME"]) / "trocar" / "devices" / f"{serial}.json")


@pytest.mark.parametrize("seed", [1, 2])
def test_auto_calibration_recovers_injected_errors_and_the_device_then_reads_true(
        seed, env, emulator, jig, monkeypatch):
    e = _errors(seed)
    serial = f"EMU-S{seed}"
    prof = _calibrate(env, emulator, jig, serial, e)
    pos, force, lat = prof["position"], prof["force"], prof["latency"]
    assert pos["sign"] == [float(s) for s in e["sign"]]
    gain_err = np.abs((1 + np.array(pos["gain_error"])) / (1 + e["gain"]) - 1)
    assert np.all(gain_err < 0.01), gain_err  # issue: gains within 1 %
    off_err_mm = np.abs(np.array(pos["offset_counts"]) - e["offset"]) / CPM * 1e3
    assert np.all(off_err_mm < 0.5), off_err_mm  # issue: offsets within 0.5 mm
    f_err = np.abs(np.array(force["gain"]) / (1 + e["force"]) - 1)
    assert np.all(f_err < 0.02), f_err  # issue: force constant within 2 %
    assert abs(lat["one_way_ms"] - e["latency_ms"]) < 0.2  # issue: latency within 0.2 ms

    # The profile makes the device report the true handle position ...
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    true = np.array([0.021, -0.013, 0.034])
    dev = CalibratedDevice(EmulatedDevice(*_emu_args(serial, e), "--hand", "still",
                                          f"--hand-at={','.join(map(str, true))}",
                                          state_timeout_s=0.2))
    try:
        dev.open()
        assert dev.calibrated, dev.profile_error
        t_end = time.monotonic() + 1.0
        with host_fifo():
            while time.monotonic() < t_end:
                s = dev.read()
                dev.write_force((0.0, 0.0, 0.0))
                dev.wait(0.002)
        assert np.max(np.abs(s.position - true)) < 0.5e-3, s.position
    finally:
        dev.close()
    # ... and apply the true force: 2 N against the 200 N/m hand moves it 10 mm.
    dev = CalibratedDevice(EmulatedDevice(*_emu_args(serial, e), "--hand", "spring",
                                          state_timeout_s=0.2, ramp_s=0.05))
    try:
        dev.open()
        rest = None
        t0 = time.monotonic()
        with host_fifo():
            while time.monotonic() < t0 + 1.2:
                s = dev.read()
                if rest is None and time.monotonic() > t0 + 0.3:
                    rest = s.position.copy()
                dev.write_force((0.0, 2.0, 0.0) if rest is not None else (0.0, 0.0, 0.0))
                dev.wait(0.002)
        felt = 200.0 * (s.position - rest)
        assert abs(felt[1] - 2.0) < 0.04 and abs(felt[0]) < 0.01, felt
    finally:
        dev.close()


def _true_profile(env, serial: str, e: dict) -> None:
    """Store the profile a perfect calibration of errors `e` would write (keeps the test short)."""
    info = P.Info((1, 0), (1, 0, 0), serial, (1e5, 1e5, 1e5), 2000.0, 5.0, 2.0, 2000.0,
                  (0.08, 0.08, 0.08), 50, 1000)
    slope = e["sign"] * (1 + e["gain"]) * CPM
    z = [0.0, 0.0, 0.0]
    pos = {"slope_counts_per_m": slope, "offset_counts": e["offset"].astype(float),
           "sign": e["sign"].astype(float), "gain_error": e["gain"], "offset_mm": e["offset"] / CPM * 1e3,
           "residual_mm": z, "max_residual_mm": z, "points": 9}
    force = {"gain": 1 + e["force"], "residual_n": z}
    save_profile(make_profile(info, {"position": pos, "force": force,
                                     "latency": {"one_way_ms": float(e["latency_ms"])}}),
                 Path(env["XDG_CONFIG_HOME"]) / "trocar" / "devices" / f"{serial}.json")


def test_check_says_a_stored_profile_holds_and_spots_a_changed_motor(env, emulator):
    e = _errors(3)
    serial = "EMU-CHK"
    _true_profile(env, serial, e)
    link, _ = emulator(*_emu_args(serial, e), "--hand", "spring")
    t0 = time.monotonic()
    r = trocar(env, "device", "check", link, "--steps", "force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 60 and "holds" in r.stdout.splitlines()[-1]
    worn = dict(e, force=e["force"] - 0.1)  # the motor lost 10 % of its force constant
    link, _ = emulator(*_emu_args(serial, worn), "--hand", "spring")
    r = trocar(env, "device", "check", link, "--steps", "force")
    assert r.returncode == 1
    assert "force: gain" in r.stdout and "DOES NOT HOLD" in r.stdout


def test_check_of_the_position_calibration_on_the_jig_says_it_holds(env, emulator, jig):
    e = _errors(4)
    _true_profile(env, "EMU-POS", e)
    link, _ = emulator(*_emu_args("EMU-POS", e), "--hand", jig)
    r = trocar(env, "device", "check", link, "--steps", "position")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "position: jig points read within 0.0" in r.stdout  # well inside the 0.5 mm limit


def test_check_with_a_hand_edited_profile_prints_one_error_line_and_exits_2(env, emulator, tmp_path):
    path = tmp_path / "config" / "trocar" / "devices" / "EMU-ED.json"
    info = P.Info((1, 0), (1, 0, 0), "EMU-ED", (1e5, 1e5, 1e5), 2000.0, 5.0, 2.0, 2000.0,
                  (0.08, 0.08, 0.08), 50, 1000)
    pos = {k: [1.0, 1.0, 1.0] for k in ("sign", "gain_error", "offset_mm", "residual_mm",
                                          "max_residual_mm", "offset_counts")}
    pos["slope_counts_per_m"] = [1e5, 1e5, 1e5]
    save_profile(make_profile(info, {"position": pos}), path)
    path.write_text(path.read_text().replace('"EMU-ED"', '"EMU-XX"', 1))
    link, _ = emulator("--serial", "EMU-ED", "--hand", "spring")
    r = trocar(env, "device", "check", link)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trocar: error: profile ")
    assert "field 'serial'" in lines[0]


def test_calibrate_with_an_unknown_step_prints_one_error_line_and_exits_2(env):
    r = trocar(env, "device", "calibrate", "/dev/null", "--steps", "gravitas")
    assert r.returncode == 2
    assert r.stderr.strip() == ("trocar: error: unknown --steps gravitas: choose from "
                                "position,gravity,force,stability")
