"""The GLFW window under a real Xvfb server (started per test, stopped by PID)."""

import json
import os
import subprocess
import sys

import numpy as np
from render_helpers import REPO, run_cli, tissue_mask


def test_window_opens_renders_resizes_and_closes_cleanly(xvfb, recorded, tmp_path):
    env = {**os.environ, "DISPLAY": xvfb}
    env.pop("PYOPENGL_PLATFORM", None)  # the window draws through GLX
    report, shot = tmp_path / "report.json", tmp_path / "shot.npy"
    proc = subprocess.run([sys.executable, "-m", "sim.render.window", "--replay", str(recorded["path"]),
                           "--frames", "24", "--size", "480x360", "--resize", "320x240",
                           "--screenshot", str(shot), "--report", str(report)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    r = json.loads(report.read_text())
    assert r["frames"] == 24
    assert r["initial_size"] == [480, 360]
    assert r["final_size"] == [320, 240] and [320, 240] in r["resizes"]
    assert r["closed"]
    img = np.load(shot)
    assert img.shape == (240, 320, 3)  # the screenshot after the resize, from the back buffer
    assert 0.05 < tissue_mask(img).mean() < 0.6


def test_window_without_a_display_falls_back_to_headless_with_one_message(egl, tmp_path):
    out = tmp_path / "fallback.png"
    proc = run_cli("render", "--display", "window", "--out", str(out), "--width", "160", "--height", "120",
                   "--tets", "1000", "--at", "0", env={"DISPLAY": None, "WAYLAND_DISPLAY": None})
    assert proc.returncode == 0, proc.stderr
    assert "no window" in proc.stderr and "Traceback" not in proc.stderr
    assert out.stat().st_size > 0
