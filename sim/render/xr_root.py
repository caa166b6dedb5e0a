"""The headset display run inside the Monado root: the host side (find the root, start, stop).

Monado's client library needs a newer glibc than this host's (docs/rendering.md, "OpenXR"), so
when the host has no OpenXR runtime of its own, the session's headset display
(`sim.render.xr_client`) runs inside the Debian trixie root built by scripts/xr-root.sh, through
scripts/xr-run.sh (fresh mount and PID namespaces, Xvfb on a free display, monado-service with
the simulated HMD and controllers). The servo stays on the host: the display only reads the
snapshot mailbox and writes the input mailbox, which live in the host's /dev/shm, bind-mounted
into the root. The project tree is bind-mounted read-only at /trocar, so the root runs this
checkout's code with its own light dependencies (NumPy, PyOpenGL, glfw, pyopenxr).

Where the root is: $TROCAR_XR_ROOT (the directory given to xr-root.sh, or its `root`), else
`.xr-root/root` in the project. Needs root (namespaces, chroot): `make render-deps` builds it.
When $TROCAR_XR_REPORT names a file, the display's JSON report (`sim.render.xr.XrReport`) is
copied there when the session ends (tests and `trocar bench render --display xr` read it); when
$TROCAR_XR_IMAGE names a .png, the left eye at focused frame 15 is saved there (screenshots).
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
STAMP = ".trocar-xr-root"
CLIENT_PYTHON = "/opt/trocar-venv/bin/python"
STOP_GRACE_S = 20.0  # the client's STOPPING -> xrEndSession -> EXITING and teardown


def find_root() -> Path | None:
    """The Monado root (a directory holding the xr-root.sh stamp), or None."""
    env = os.environ.get("TROCAR_XR_ROOT")
    candidates = [Path(env), Path(env) / "root"] if env else []
    candidates.append(PROJECT / ".xr-root" / "root")
    for c in candidates:
        if (c / STAMP).is_file():
            return c
    return None


def unavailable_reason() -> str | None:
    """Why the root cannot run the headset display here (one line), or None when it can."""
    if os.geteuid() != 0:
        return "the Monado root needs root (namespaces, chroot)"
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if find_root() is None:
        return "no Monado root (make render-deps builds .xr-root; or set TROCAR_XR_ROOT)"
    return None


def run_in_root(session: dict, should_stop: Callable[[], bool], *, log: Callable[[str], None],
                frames: int | None = None, extra_args: tuple = ()) -> dict:
    """Run the headset display of `session` ({"mailbox", "layout", "description", "inputs"}) in
    the Monado root until should_stop() (then the client gets its stop file and ends its XR session
    cleanly) or the client ends by itself. Returns the client's JSON report ({"errors": [...]} with
    the reason when it wrote none)."""
    import json
    import signal

    reason = unavailable_reason()
    if reason:
        return {"unavailable": reason}
    root = find_root()
    data = Path(tempfile.mkdtemp(prefix="trocar-xr-"))

    def on_term(signum, frame):  # terminated by the supervisor: still stop the root and clean up
        raise SystemExit(1)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with open(data / "session.pkl", "wb") as fh:
            pickle.dump(session, fh)
        cmd = [str(PROJECT / "scripts" / "xr-run.sh"), str(root), str(data), CLIENT_PYTHON, "-m",
               "sim.render.xr_client", "--session", "/xrdata/session.pkl", "--report", "/xrdata/report.json",
               "--stop-file", "/xrdata/stop", *extra_args]
        if frames is not None:
            cmd += ["--frames", str(frames)]
        image = os.environ.get("TROCAR_XR_IMAGE")
        if image:
            cmd += ["--readback-at", "15", "--image", "/xrdata/eye.npy"]
        with open(data / "client.log", "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log(f"headset display in the Monado root ({root}), pid {proc.pid}")
            try:
                while proc.poll() is None and not should_stop():
                    time.sleep(0.05)
                (data / "stop").touch()
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.terminate()  # xr-run.sh's namespace then kills everything in the root
                    proc.wait(5)
            finally:
                if proc.poll() is None:
                    (data / "stop").touch()
                    proc.terminate()  # xr-run.sh: its PID namespace takes Monado, Xvfb and the client
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        report_path = data / "report.json"
        if report_path.is_file():
            report = json.loads(report_path.read_text())
        else:
            tail = (data / "client.log").read_text(errors="replace")[-800:].strip().replace("\n", " | ")
            report = {"errors": [f"the headset display wrote no report (exit {proc.returncode}): {tail}"]}
        for name in ("monado.log", "client.log"):
            if (data / name).is_file():
                report.setdefault("logs", {})[name] = (data / name).read_text(errors="replace")[-3000:]
        display = data / "display"
        if display.is_file():
            report["x_display"] = display.read_text().strip()
        if image and (data / "eye.npy").is_file():
            import numpy as np

            from sim.render.offscreen import save_png

            save_png(np.load(data / "eye.npy"), image)
        target = os.environ.get("TROCAR_XR_REPORT")
        if target:
            with open(target, "w") as fh:
                json.dump(report, fh, indent=1)
        return report
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(data, ignore_errors=True)
