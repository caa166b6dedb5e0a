"""The window as a display of a `trocar run` session: real key presses (XTest on Xvfb) reach the
servo through the input mailbox and move the instrument; the servo, not the window, steps the scene.
The scripted input run: the tool glides into view, D moves it at the key speed, Shift + D at a
quarter of it (fine steps), the left arrow pans the scope and R resets the view."""

from __future__ import annotations

import ctypes.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from render_helpers import REPO

from sim.runtime.keyboard import FINE, KEY_SPEED, READY
from sim.runtime.recording import read_recording

READY = np.asarray(READY)


def _ticks(path):
    try:
        return read_recording(path).ticks
    except OSError:
        return None


def test_keys_in_the_session_window_move_the_tool_in_the_servo(xvfb, tmp_path):
    if ctypes.util.find_library("Xtst") is None:
        pytest.skip("libXtst not installed")
    from xtest import XTest

    rec = str(tmp_path / "s.trec")
    env = {**os.environ, "DISPLAY": xvfb}
    err = open(tmp_path / "err", "w")  # noqa: SIM115 - closed below
    p = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--device", "keyboard", "--display",
                          "window", "--tets", "0", "--rate-mode", "realtime", "--seconds", "120",
                          "--record", rec, "--no-fifo"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                         stderr=err, start_new_session=True)
    x = XTest(xvfb)
    try:
        # Tap Space (jaws open) until the servo has seen it: then the window is up and has the keys.
        opened = False
        t_end = time.monotonic() + 150
        while time.monotonic() < t_end and p.poll() is None and not opened:
            x.move(300, 300)
            x.key("space", True)
            time.sleep(0.05)
            x.key("space", False)
            time.sleep(1.0)
            t = _ticks(rec)
            opened = t is not None and len(t) > 0 and t["dev_grip"][-1, 0] > 0.5
        assert opened, (tmp_path / "err").read_text()
        # The start glide has put the handle at READY (the tool in view); then D held: the tip moves
        # right. Held until the servo has moved the handle 2 cm: the window passes keys on as it
        # polls them, once per frame (~30 per second with Mesa's software rasteriser, but seconds
        # apart on a loaded 2-core CI machine).
        _wait(p, rec, lambda t: np.abs(t["dev_pos"][-1, 0] - READY).max() < 1e-9)
        before = _ticks(rec)
        n0, x_dev0, tip0 = len(before), before["dev_pos"][-1, 0, 0], before["tool_pose"][-1, 0, 0]
        x.key("d", True)
        _wait(p, rec, lambda t: t["dev_pos"][-1, 0, 0] - x_dev0 > 0.02)
        x.key("d", False)
        time.sleep(1.0)
        # Shift + D: fine steps, a quarter of the speed.
        n1, x1 = len(_ticks(rec)), _ticks(rec)["dev_pos"][-1, 0, 0]
        x.key("Shift_L", True)
        x.key("d", True)
        _wait(p, rec, lambda t: t["dev_pos"][-1, 0, 0] - x1 > 0.006)
        x.key("d", False)
        x.key("Shift_L", False)
        time.sleep(1.0)
        # Left arrow pans the scope; R puts it back where it started.
        n2 = len(_ticks(rec))
        x.key("Left", True)
        _wait(p, rec, lambda t: np.abs(t["scope"][-1] - t["scope"][0]).max() > 0.05)
        x.key("Left", False)
        time.sleep(0.5)
        x.key("r", True)
        time.sleep(0.05)
        x.key("r", False)
        _wait(p, rec, lambda t: np.abs(t["scope"][-1] - t["scope"][0]).max() < 1e-12)
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(60) == 0, (tmp_path / "err").read_text()
    finally:
        x.close()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        err.close()
    t = read_recording(rec).ticks
    moved = t["dev_pos"][n1 - 1, 0, 0] - x_dev0
    assert moved > 0.02, (tmp_path / "err").read_text()
    assert np.all(np.abs(t["dev_pos"][n0:, 0, 1:] - READY[1:]) < 1e-12)  # only D was held: only x moved
    assert t["tool_pose"][n1 - 1, 0, 0] - tip0 > 0.02  # the tool followed, scaled by the workspace map
    # The handle's speed while D was held, and with Shift: KEY_SPEED and FINE * KEY_SPEED [m/s].
    for a, b, want in ((n0, n1, KEY_SPEED), (n1, n2, FINE * KEY_SPEED)):
        x_, t_ = t["dev_pos"][a:b, 0, 0], t["t"][a:b]
        moving = np.flatnonzero(np.diff(x_) > 0)
        rate = (x_[moving[-1] + 1] - x_[moving[0]]) / (t_[moving[-1] + 1] - t_[moving[0]])
        assert abs(rate / want - 1) < 0.15, (rate, want)
    assert np.abs(t["scope"][n2:] - t["scope"][0]).max(axis=1).max() > 0.05  # the arrow panned the scope
    assert np.abs(t["scope"][-1] - t["scope"][0]).max() < 1e-12  # R: back to the start view


def _wait(p, rec, done, timeout=120.0) -> None:
    """Poll the recording until done(ticks) (or the session ended, or timeout [s])."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and p.poll() is None:
        t = _ticks(rec)
        if t is not None and len(t) and done(t):
            return
        time.sleep(0.3)
    raise AssertionError("the session did not get there in time")


def test_a_policy_session_opens_the_window_when_there_is_a_display(xvfb, tmp_path):
    """`trocar run PROCEDURE --policy NAME` (what `make run` runs) shows itself in a window when a
    display exists: the render process reads the session's snapshot mailbox."""
    rec = tmp_path / "p.trec"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", "peg_transfer", "--policy", "expert",
                           "--seconds", "2", "--record", str(rec)], cwd=REPO,
                          env={**os.environ, "DISPLAY": xvfb}, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-2000:]  # 1: unfinished
    assert "display: window" in proc.stdout, proc.stdout[-2000:]
    assert "no window" not in proc.stderr and "renderer failed" not in proc.stderr, proc.stderr[-2000:]
    assert read_recording(str(rec)).ticks["tick"][-1] >= 1900
