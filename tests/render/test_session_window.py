"""The window as a display of a `trocar run` session: real key presses (XTest on Xvfb) reach the
servo through the input mailbox and move the instrument; the servo, not the window, steps the scene."""

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

from sim.runtime.recording import read_recording


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
        before = _ticks(rec)
        x_dev0, tip0 = before["dev_pos"][-1, 0, 0], before["tool_pose"][-1, 0, 0]
        # D held: the tool's tip moves right. Held until the servo has moved the handle 2 cm: the
        # window passes keys on as it polls them, once per frame (~30 per second with Mesa's software
        # rasteriser, but seconds apart on a loaded 2-core CI machine).
        x.key("d", True)
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and p.poll() is None:
            time.sleep(0.5)
            t = _ticks(rec)
            if t["dev_pos"][-1, 0, 0] - x_dev0 > 0.02:
                break
        x.key("d", False)
        time.sleep(2.0)
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(60) == 0, (tmp_path / "err").read_text()
    finally:
        x.close()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        err.close()
    t = read_recording(rec).ticks
    moved = t["dev_pos"][-1, 0, 0] - x_dev0
    assert moved > 0.02, (tmp_path / "err").read_text()
    assert np.all(np.abs(t["dev_pos"][:, 0, 1:]) < 1e-12)  # only D was held: only x moved
    assert t["tool_pose"][-1, 0, 0] - tip0 > 0.02  # the tool followed, scaled by the workspace map
