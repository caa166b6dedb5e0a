"""OpenXR: the no-runtime fallback on this machine, and a real session against Monado.

The Monado test runs the client (`python -m sim.render.xr`) inside the Debian trixie root built by
scripts/xr-root.sh (Monado needs trixie's glibc), through scripts/xr-run.sh: fresh mount and PID
namespaces, Xvfb, monado-service with the null compositor and the simulated HMD. The client
replays snapshots recorded from the real default scene here. Needs root; under CI=true it must run.
"""

import json
import os
import shutil
import subprocess

import numpy as np
from render_helpers import REPO, run_cli, skip_or_fail

XR_ROOT_DIR = REPO / ".xr-root"
STATES_IN_ORDER = ["IDLE", "READY", "SYNCHRONIZED", "VISIBLE", "FOCUSED", "STOPPING", "EXITING"]


def test_no_openxr_runtime_gives_one_message_and_falls_back(egl, tmp_path):
    out = tmp_path / "frame.png"
    proc = run_cli("render", "--display", "xr", "--out", str(out), "--width", "160", "--height", "120",
                   "--tets", "1000", "--at", "0",
                   env={"XR_RUNTIME_JSON": str(tmp_path / "no_runtime.json"), "DISPLAY": None,
                        "WAYLAND_DISPLAY": None})
    assert proc.returncode == 0, proc.stderr
    assert "OpenXR unavailable" in proc.stderr and "no window" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.stat().st_size > 0


def _xr_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the Monado test needs root (mmdebstrap --mode=root, chroot, namespaces)"
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/setup-render-deps.sh)"
    return None


def _in_order(seen: list[str], expected: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == e for s in it) for e in expected)


def test_openxr_session_against_real_monado(recorded, tmp_path):
    reason = _xr_skip_reason()
    if reason:
        skip_or_fail(reason)
    build = subprocess.run([str(REPO / "scripts" / "xr-root.sh"), str(XR_ROOT_DIR)], capture_output=True,
                           text=True, timeout=1200)
    if build.returncode != 0:
        skip_or_fail("cannot build the trixie root (scripts/xr-root.sh): "
                     + (build.stdout + build.stderr)[-1500:])
    data = tmp_path / "xrdata"
    data.mkdir()
    shutil.copy(recorded["path"], data / "replay.pkl")
    proc = subprocess.run(
        [str(REPO / "scripts" / "xr-run.sh"), str(XR_ROOT_DIR / "root"), str(data),
         "/opt/trocar-venv/bin/python", "-m", "sim.render.xr", "--replay", "/xrdata/replay.pkl",
         "--frames", "110", "--readback-at", "100", "--report", "/xrdata/report.json",
         "--image", "/xrdata/eye.npy", "--timeout", "400"],
        capture_output=True, text=True, timeout=600)
    monado_log = (data / "monado.log").read_text(errors="replace") if (data / "monado.log").exists() else ""
    detail = (f"rc={proc.returncode}\nstderr tail:\n{proc.stderr[-3000:]}\n"
              f"monado log tail:\n{monado_log[-2000:]}")
    assert (data / "report.json").exists(), detail
    report = json.loads((data / "report.json").read_text())
    assert "unavailable" not in report, detail
    assert report["errors"] == [], detail
    assert "Monado" in report["runtime"] and "Simulated" in report["system"]
    assert _in_order(report["states"], STATES_IN_ORDER), report["states"]
    assert report["states"][-1] == "EXITING"
    assert report["focused_frames"] >= 100 and report["rendered_views"] >= 2 * 100
    assert report["clean_exit"], detail
    assert proc.returncode == 0, detail
    # The left eye's swapchain image, read back at focused frame 100: the scene, not the clear colour.
    eye = np.load(data / "eye.npy")
    assert eye.shape[:2] == (report["eye_size"][1], report["eye_size"][0])
    assert report["readback_centre_tissue_fraction"] > 0.03
    assert eye.reshape(-1, 3).std(axis=0).max() > 10
