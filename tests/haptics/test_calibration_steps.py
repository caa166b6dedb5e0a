"""Calibration steps 6 (gravity) and 7 (stability), the plotted report, the load-cell entry and
profile auto-load, against emulators with injected errors in real pty processes.

One `calibrate --auto` session runs every step on one emulator (the wizard switches its hand:
jig script, free, reference spring, gripping hand). What it must find is computed here from the
emulator's parameters, independently of the emulator's code: the holding force from the
arm-weight model, and the virtual wall's stiffness limit from the eigenvalues of the sampled
loop (handle + hand mass, damping, hand stiffness, zero-order hold, loop delay).
"""

from __future__ import annotations

import base64
import math
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EMU_FIFO, host_fifo

from haptics import calibration as C
from haptics import protocol as P
from haptics.device import NullDevice
from haptics.emulated_device import EmulatedDevice
from haptics.emulator import EMU_SET_HAND
from haptics.emulator_config import HANDS
from haptics.profile import (
    UNCALIBRATED_MAX_FORCE,
    CalibratedDevice,
    load_profile,
    make_profile,
    open_with_profile,
    save_profile,
)

TROCAR = [sys.executable, "-m", "sim.cli"]
CPM = 1e5  # emulator counts per metre
T = 1e-3  # device tick [s]
SERIAL = "EMU-ALL"
# Injected errors and the emulator's physics for the one-session calibration.
ERR = {"offset": (1234, -567, 89), "gain": (0.03, -0.02, 0.01), "sign": (1, -1, 1),
       "force": (0.05, -0.08, 0.02)}
LATENCY_TICKS = 1  # sensing and actuation delay, each [ticks]
SYNC_TICKS = 6  # the emulator applies a FORCE 6 ticks after the STATE it answers
# ... and holds a tick up to 100 ms for the FORCE due in it: a loaded test machine delays the
# host (or the emulator) by more than the 5 ms the sync window absorbs, and the stability step
# would then measure again or refuse, by the luck of the machine's load (issue 11, item 9).
SYNC_WAIT_MS = 100
HANDLE_MASS, DEVICE_DAMPING = 0.1, 5.0  # [kg], [N s/m]
GRIP_MASS, GRIP_DAMPING, GRIP_STIFFNESS = 0.1, 3.0, 200.0  # [kg], [N s/m], [N/m]
GRAVITY_MASS, ARM_MASS = 0.05, 0.3  # [kg]
SHOULDER = (0.0, -0.15, -0.10)  # [m]
TILT = (0.03, -0.02)  # [rad] about x, then y
WALL_DAMPING = 1.0  # the wizard's wall damping [N s/m] (calibration_stability.WALL_DAMPING)
SUBSTEPS = 10  # the emulator's mechanics sub-steps per tick


def _csv(v) -> str:
    return ",".join(str(x) for x in v)


def _emu_args(serial: str = SERIAL, *, gravity: bool = True) -> list[str]:
    args = [*EMU_FIFO, "--serial", serial, f"--encoder-offset={_csv(ERR['offset'])}",
            f"--gain-error={_csv(ERR['gain'])}", f"--axis-sign={_csv(ERR['sign'])}",
            f"--force-constant-error={_csv(ERR['force'])}", "--latency-ms", str(LATENCY_TICKS),
            "--sync-ticks", str(SYNC_TICKS), "--sync-wait-ms", str(SYNC_WAIT_MS),
            "--handle-mass", str(HANDLE_MASS),
            "--device-damping", str(DEVICE_DAMPING), "--grip-mass", str(GRIP_MASS),
            "--grip-damping", str(GRIP_DAMPING), "--grip-stiffness", str(GRIP_STIFFNESS)]
    if gravity:
        args += ["--gravity-mass", str(GRAVITY_MASS), "--arm-mass", str(ARM_MASS),
                 f"--arm-shoulder={_csv(SHOULDER)}", f"--tilt={_csv(TILT)}"]
    return args


def holding_force(p: np.ndarray) -> np.ndarray:
    """What holds the handle still at p [m], shape (N, 3) -> [N]: the handle's weight plus half
    the arm's (a uniform rod pivoting at SHOULDER) perpendicular to the arm."""
    tx, ty = TILT
    d = np.array([-math.sin(ty), math.cos(ty) * math.sin(tx), -math.cos(ty) * math.cos(tx)])
    u = np.asarray(p, dtype=float) - np.array(SHOULDER)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    perp = d - (u @ d)[:, None] * u
    return -9.81 * (GRAVITY_MASS * d + 0.5 * ARM_MASS * perp)


def wall_stiffness_limit(mass: float, damping: float, hand_stiffness: float,
                         wall_damping: float, delay_ticks: int) -> float:
    """Largest stable K [N/m] of a wall F = -K x - B (x_n - x_{n-1}) / T sampled every tick T and
    acting delay_ticks later, held for a tick (ZOH) on a mass [kg] with damping [N s/m] and a hand
    spring [N/m]; the mass integrated like the emulator (SUBSTEPS semi-implicit Euler steps).
    Bisection on the spectral radius of the one-tick map."""
    h = T / SUBSTEPS
    step = np.eye(2)  # (v, p) -> (v, p) over a tick, and the response to a held force
    resp = np.zeros(2)
    for _ in range(SUBSTEPS):
        a = np.array([[1 - h * damping / mass, -h * hand_stiffness / mass],
                      [h * (1 - h * damping / mass), 1 - h * h * hand_stiffness / mass]])
        step, resp = a @ step, a @ resp + np.array([h / mass, h * h / mass])
    n = 2 + delay_ticks  # state: v_{k-1}, p_{k-1}, p_{k-2}, ..., p_{k-1-delay}

    def radius(k: float) -> float:
        m = np.zeros((n, n))
        f = np.zeros(n)
        f[delay_ticks] = -k - wall_damping / T
        f[delay_ticks + 1] = wall_damping / T
        m[0, :2], m[1, :2] = step[0], step[1]
        m[0] += resp[0] * f
        m[1] += resp[1] * f
        for j in range(2, n):
            m[j, j - 1] = 1.0
        return float(np.max(np.abs(np.linalg.eigvals(m))))

    lo, hi = 0.0, 1e5
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if radius(mid) < 1.0 else (lo, mid)
    return lo


def trocar(env, *args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*TROCAR, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, **kw)


def _start_emulator(tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen, str]:
    link = str(tmp / name)
    p = subprocess.Popen([sys.executable, "-m", "haptics.emulator", "--link", link,
                          "--exit-with-parent", *args], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    ready, _, _ = select.select([p.stdout], [], [], 20.0)
    assert ready and p.stdout.readline().strip(), "emulator printed no pty path in 20 s"
    return p, link


def _stop(p: subprocess.Popen) -> None:
    p.terminate()
    p.wait(10)
    p.stdout.close()


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One `calibrate --auto --report` session over every step; (profile, stdout, report, env)."""
    tmp = tmp_path_factory.mktemp("onesession")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "config"))
    jig = tmp / "jig.txt"
    C.write_jig_script(str(jig), np.array([0.08, 0.08, 0.08]))
    p, link = _start_emulator(tmp, "dev", *_emu_args(), "--hand", f"script:{jig}")
    try:
        report = tmp / "report.html"
        t0 = time.monotonic()
        r = trocar(env, "device", "calibrate", link, "--auto", "--report", str(report))
        elapsed = time.monotonic() - t0
    finally:
        _stop(p)
    assert r.returncode == 0, r.stdout + r.stderr
    prof = load_profile(tmp / "config" / "trocar" / "devices" / f"{SERIAL}.json")
    return {"profile": prof, "stdout": r.stdout, "report": report, "env": env,
            "elapsed": elapsed}


def test_one_auto_session_runs_every_step_and_recovers_the_injected_errors(session):
    prof, out = session["profile"], session["stdout"]
    for step in ("position", "gravity", "force", "stability"):
        assert f"step {step}:" in out
    assert out.count(": pass") >= 6 and "FAIL" not in out
    pos, force, lat = prof["position"], prof["force"], prof["latency"]
    assert pos["sign"] == [float(s) for s in ERR["sign"]]
    assert np.all(np.abs((1 + np.array(pos["gain_error"])) / (1 + np.array(ERR["gain"])) - 1)
                  < 0.01)  # gains within 1 %
    assert np.all(np.abs(np.array(pos["offset_counts"]) - ERR["offset"]) / CPM * 1e3 < 0.5)  # mm
    # force constant within 2 %, measured with the handle's weight compensated
    assert np.all(np.abs(np.array(force["gain"]) / (1 + np.array(ERR["force"])) - 1) < 0.02)
    # Dead time from the STATE echoing a force step to motion: sensing + actuation + the sync
    # ticks after the tick the FORCE arrived in, 2L + S - 1 for a prompt host; a host late
    # inside the sync window shortens it by its lateness, so one tick of slack here (the exact
    # 0.2 ms check without sync ticks is in test_calibration_auto).
    assert abs(lat["dead_time_ms"] - (2 * LATENCY_TICKS + SYNC_TICKS - 1)) <= 1.0


def test_gravity_model_matches_the_arm_weight_holding_force_over_the_workspace(session):
    g = session["profile"]["gravity"]
    rng = np.random.default_rng(7)
    poses = rng.uniform(-0.04, 0.04, (200, 3))  # the measured grid spans +-40 mm
    model = C.gravity_force(np.array(g["coefficients"]), poses)
    err = np.abs(model - holding_force(poses))
    # 0.06 N (4 % of the 1.6 N weight): the quadratic model's own error for this arm over the
    # grid (<= 0.03 N) plus the hold's measurement noise (about 0.01 N per pose on a loaded
    # host, <= 0.03 N in the prediction)
    assert err.max() < 0.06, err.max(axis=0)
    weight = holding_force(np.zeros((1, 3)))[0]
    assert np.allclose(C.gravity_force(np.array(g["coefficients"]), np.zeros(3)), weight,
                       atol=0.03)
    assert np.all(np.array(g["residual_n"]) < 0.04)


def test_stability_sweep_finds_the_wall_limit_that_follows_from_the_emulators_physics(session):
    s = session["profile"]["stability"]
    delay = 2 * LATENCY_TICKS + SYNC_TICKS  # position sensed -> force acting [ticks]
    limit = wall_stiffness_limit(HANDLE_MASS + GRIP_MASS, DEVICE_DAMPING + GRIP_DAMPING,
                                 GRIP_STIFFNESS, WALL_DAMPING, delay)
    assert 1000 < limit < 2000  # the scenario is the one we mean (about 1250 N/m)
    found = s["max_stiffness_n_per_m"]
    assert abs(found / limit - 1) < 0.10, (found, limit)  # issue: within 10 %
    assert found < s["first_unstable_n_per_m"] <= found * 1.1
    assert f"max stable stiffness {found:.0f} N/m" in session["stdout"]


def test_report_embeds_the_plots_a_lab_files(session):
    page = session["report"].read_text()
    for title in ("workspace coverage", "residuals", "force fit", "gravity", "stability sweep",
                  "latency"):
        assert f'<img alt="{title}" src="data:image/png;base64,' in page, title
    first = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<h2>jig points</h2>" in page and "max_stiffness_n_per_m" in page


def test_profile_auto_load_compensates_gravity_and_reports_the_measured_stiffness(
        session, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", session["env"]["XDG_CONFIG_HOME"])
    start = np.array([0.01, 0.02, 0.0])
    seconds = 0.5

    def let_go(dev) -> np.ndarray:
        """The hand holds the handle at `start` until the device runs (soft start done), then
        lets go; the simulation commands zero force. Returns the drift after `seconds` [m]."""
        t0 = time.monotonic()
        p0 = None
        with host_fifo():
            while time.monotonic() < t0 + 0.3 + seconds:
                s = dev.read()
                if p0 is None and time.monotonic() > t0 + 0.3:
                    p0 = s.position.copy()
                    dev.device.command(EMU_SET_HAND, HANDS.index("free"))
                dev.write_force((0.0, 0.0, 0.0))
                dev.wait(0.002)
        return s.position - p0

    args = ["--hand", "still", f"--hand-at={_csv(start)}"]
    dev = open_with_profile(EmulatedDevice(*_emu_args(), *args, state_timeout_s=0.2, ramp_s=0.02))
    try:
        assert isinstance(dev, CalibratedDevice) and dev.calibrated, dev.profile_error
        assert dev.spec.max_stiffness == session["profile"]["stability"]["max_stiffness_n_per_m"]
        drift = let_go(dev)
        # A free handle drifts at (force error) / damping: the 0.05 N gravity tolerance allows
        # 0.05 / 5 m/s x 0.5 s = 5 mm; uncompensated, 1.6 N drops it to the stop (40+ mm).
        assert np.max(np.abs(drift)) < 0.05 / DEVICE_DAMPING * seconds, drift
    finally:
        dev.close()
    # Another device (no profile): uncalibrated-but-safe, and nothing holds its handle up.
    dev = open_with_profile(EmulatedDevice(*_emu_args("EMU-NONE"), *args, state_timeout_s=0.2,
                                           ramp_s=0.02))
    try:
        assert isinstance(dev, CalibratedDevice) and not dev.calibrated
        assert dev.spec.max_force == UNCALIBRATED_MAX_FORCE
        assert let_go(dev)[2] < -0.04  # 1.6 N / 5 N s/m = 0.3 m/s: at the stop within 0.3 s
    finally:
        dev.close()
    null = NullDevice()
    assert open_with_profile(null) is null


def _position_profile(env, serial: str) -> None:
    """The profile a perfect position calibration of ERR would write."""
    info = P.Info((1, 0), (1, 0, 0), serial, (1e5, 1e5, 1e5), 2000.0, 5.0, 2.0, 2000.0,
                  (0.08, 0.08, 0.08), 50, 1000)
    sign, gain = np.array(ERR["sign"], float), np.array(ERR["gain"])
    z = [0.0, 0.0, 0.0]
    pos = {"slope_counts_per_m": sign * (1 + gain) * CPM, "offset_counts": np.array(ERR["offset"],
                                                                                   float),
           "sign": sign, "gain_error": gain, "offset_mm": np.array(ERR["offset"]) / CPM * 1e3,
           "residual_mm": z, "max_residual_mm": z, "points": 9}
    save_profile(make_profile(info, {"position": pos}),
                 Path(env["XDG_CONFIG_HOME"]) / "trocar" / "devices" / f"{serial}.json")


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))


def test_force_step_by_hand_takes_typed_load_cell_readings(env, emulator):
    _position_profile(env, "EMU-LC")
    link, _ = emulator(*_emu_args("EMU-LC", gravity=False), "--hand", "spring")
    # The load cell shows (1 + error) x 2 N; the person types it, then Enter accepts the step.
    typed = "".join(f"{2.0 * (1 + e):.3f}\n" for e in ERR["force"]) + "\n"
    r = trocar(env, "device", "calibrate", link, "--steps", "force", input=typed, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reading along +x [N]:" in r.stdout and "reading along +z [N]:" in r.stdout
    prof = load_profile(Path(env["XDG_CONFIG_HOME"]) / "trocar" / "devices" / "EMU-LC.json")
    assert np.allclose(prof["force"]["gain"], 1 + np.array(ERR["force"]), atol=1e-3)
    assert prof["force"]["reference"] == "load cell"


def test_force_step_by_hand_without_stdin_prints_one_error_line(env, emulator):
    _position_profile(env, "EMU-LC2")
    link, _ = emulator(*_emu_args("EMU-LC2", gravity=False), "--hand", "spring")
    r = trocar(env, "device", "calibrate", link, "--steps", "force", stdin=subprocess.DEVNULL,
               timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trocar: error: no answer on stdin"), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    prof = load_profile(Path(env["XDG_CONFIG_HOME"]) / "trocar" / "devices" / "EMU-LC2.json")
    assert "force" not in prof  # nothing written


def test_gravity_fit_recovers_a_quadratic_load_and_the_decay_ratio_tells_growth():
    rng = np.random.default_rng(3)
    coef = rng.normal(0, 1, (3, 10))
    poses = C.gravity_grid(np.array([0.08, 0.08, 0.08]))
    assert len(poses) == 27 and np.max(np.abs(poses)) == pytest.approx(0.04)
    fit, resid = C.fit_gravity(poses, C.gravity_force(coef, poses))
    assert np.allclose(fit, coef, atol=1e-6) and np.all(resid < 1e-9)
    t = np.arange(340) * T
    for sigma, stable in ((-3.0, True), (3.0, False)):
        r, amp = C.decay_ratio(1e-4 * np.exp(sigma * t) * np.sin(2 * np.pi * 14 * t) + 0.001)
        assert (r < 1.0) == stable and r == pytest.approx(np.exp(sigma * 0.17), rel=0.1)
