"""Shared fixtures for the render tests: real EGL (Mesa llvmpipe), real Xvfb, real Monado.

Parts that need system packages (scripts/setup-render-deps.sh, run by `make test`) skip with the
reason when those are missing, except under CI=true, where a missing part fails the test.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess

# Before anything imports OpenGL: the in-process tests draw through EGL (no X server).
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import pytest  # noqa: E402
from render_helpers import skip_or_fail  # noqa: E402


@pytest.fixture(scope="session")
def egl():
    """Skip (or fail under CI) when no headless EGL context can be made here."""
    from sim.render.egl import EGLContext, HeadlessUnavailable

    try:
        ctx = EGLContext()
    except HeadlessUnavailable as exc:
        skip_or_fail(f"no headless EGL: {exc}")
    ctx.close()
    return True


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
    """The default scene driven by the tool script: its description and snapshots from 0.3 s
    (tools on their way in) to 0.8 s, and the pickle the window/XR subprocesses replay."""
    from sim.render.script import ToolScript, run_until, scripted_session
    from sim.scene import build_scene

    scene = build_scene("default")
    try:
        script = ToolScript(scene)
        step = scripted_session(scene)
        snaps = []
        for k in range(11):
            run_until(step, script, 0.3 + 0.05 * k)
            snaps.append(step.snapshot())
        data = {"description": scene.describe(), "snapshots": snaps}
    finally:
        scene.close()
    path = tmp_path_factory.mktemp("replay") / "replay.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    data["path"] = path
    return data


@pytest.fixture
def xvfb():
    """A private Xvfb server for one test (display number picked by Xvfb); stopped by PID."""
    if shutil.which("Xvfb") is None:
        skip_or_fail("Xvfb not installed (scripts/setup-render-deps.sh)")
    r, w = os.pipe()
    cmd = ["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"]
    proc = subprocess.Popen(cmd, pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as fh:
            number = fh.readline().strip()
        if not number:
            pytest.fail("Xvfb did not report a display number")
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
