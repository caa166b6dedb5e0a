"""The headset display of a live session, as its own process: `python -m sim.render.xr_client`.

    python -m sim.render.xr_client --session session.pkl --report report.json [--stop-file F]

session.pkl holds {"mailbox", "layout", "description", "inputs", "explore"} of a running `trocar run`
session (explore: None, or the anatomy explorer's options: `sim.render.explorer`):
the servo's snapshot mailbox and input mailbox (shared memory) names, the mailbox layout and the
scene description. It reads the newest snapshot every frame (never blocking the servo), writes the
controllers into the input mailbox (`sim.render.xr_controllers`), renders until the stop file
appears (or --frames focused frames), then writes a JSON report (`sim.render.xr.XrReport`).

It needs only NumPy, PyOpenGL, glfw and pyopenxr, so it runs where the OpenXR runtime runs: inside
the Monado root (`sim.render.xr_root`, scripts/xr-run.sh, with the host's /dev/shm), while the servo
runs on the host with pybullet and Numba.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from sim.render.xr import XrSession, XrUnavailable, centre_tissue_fraction


def live_reader(name: str, layout: dict) -> tuple[Callable[[], dict | None], Callable[[], None]]:
    """(get_snapshot, close) for the session's snapshot mailbox: get_snapshot returns the newest
    consistent snapshot, or None when nothing new (or the writer was mid-write)."""
    from sim.runtime.mailbox import SnapshotMailbox

    box = SnapshotMailbox.attach(name, layout)
    bufs = {"cur": box.empty(), "scratch": box.empty(), "seq": None}

    def get_snapshot() -> dict | None:
        seq = box.read_into(bufs["scratch"])
        if seq is None or seq == bufs["seq"]:
            return None
        bufs["cur"], bufs["scratch"], bufs["seq"] = bufs["scratch"], bufs["cur"], seq
        return bufs["cur"]

    return get_snapshot, box.close


def main(argv: list[str] | None = None) -> int:
    """The headset display of a live session (see the module docstring); writes a JSON report."""
    p = argparse.ArgumentParser(prog="python -m sim.render.xr_client")
    p.add_argument("--session", required=True,
                   help="pickle of {'mailbox', 'layout', 'description', 'inputs'} of the running session")
    p.add_argument("--report", required=True, help="JSON report path")
    p.add_argument("--stop-file", help="end the XR session when this file exists")
    p.add_argument("--frames", type=int, help="end after this many frames while FOCUSED")
    p.add_argument("--readback-at", type=int, help="read back the left eye at this focused frame")
    p.add_argument("--image", help="save the read-back eye image here (.npy)")
    p.add_argument("--timeout", type=float, default=3600.0)
    args = p.parse_args(argv)
    with open(args.session, "rb") as fh:
        sess = pickle.load(fh)
    get_snapshot, close = live_reader(sess["mailbox"], sess["layout"])
    controllers = None
    inputs_box = None
    from sim.render.xr_controllers import XrControllers

    if sess.get("inputs"):
        from sim.runtime.keyboard import input_layout
        from sim.runtime.mailbox import SnapshotMailbox

        inputs_box = SnapshotMailbox.attach(sess["inputs"], input_layout())
    controllers = XrControllers(inputs_box)
    stop_file = args.stop_file

    def should_stop() -> bool:
        return stop_file is not None and os.path.exists(stop_file)

    try:
        report, image = XrSession(sess["description"], get_snapshot, controllers=controllers,
                                  explore=sess.get("explore")).run(
            frames=args.frames, should_stop=should_stop, readback_at=args.readback_at,
            timeout_s=args.timeout)
    except XrUnavailable as exc:
        print(f"xr: OpenXR unavailable: {exc}", file=sys.stderr)
        with open(args.report, "w") as fh:
            json.dump({"unavailable": str(exc)}, fh)
        return 3
    finally:
        close()
        if inputs_box is not None:
            inputs_box.close()
    if image is not None:
        report.readback_centre_tissue_fraction = round(centre_tissue_fraction(image), 4)
        if args.image:
            np.save(args.image, image)
    with open(args.report, "w") as fh:
        json.dump(asdict(report), fh, indent=1)
    print(json.dumps(asdict(report)), flush=True)
    return 0 if report.clean_exit and not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
