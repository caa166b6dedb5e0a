"""The runtime's render process: read the newest snapshot, draw it at display rate, never block.

`render_main` is the process entry point for sim.runtime: it attaches to the seqlock snapshot
mailbox (shared memory, written by the servo/physics process) and hands `render_loop` a
non-blocking `get_snapshot`. `render_loop` holds the display logic and is what tests drive with
snapshots from a Scene directly. Displays fall back xr -> window -> headless, each fallback one
line on stderr. Reading the mailbox is a copy out of shared memory with a sequence check: the
servo never waits for the renderer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

FALLBACK = {"xr": ("xr", "window", "headless"), "window": ("window", "headless"), "headless": ("headless",),
            "xr-explore": ("xr-explore", "explore", "headless"), "explore": ("explore", "headless")}
HEADLESS_HZ = 30.0


def _log(msg: str) -> None:
    print(f"trocar render: {msg}", file=sys.stderr, flush=True)


def _headless(description: dict, get_snapshot, should_stop, *, width: int = 640, height: int = 360,
              on_frame: Callable[[np.ndarray], None] | None = None, frames: int | None = None) -> int:
    from sim.camera import default_camera
    from sim.render.offscreen import HeadlessView

    camera = default_camera(description)
    shown = 0
    snap = None
    with HeadlessView(description, width, height) as view:
        period = 1.0 / HEADLESS_HZ
        next_t = time.perf_counter()
        while not should_stop() and (frames is None or shown < frames):
            new = get_snapshot()
            snap = new if new is not None else snap
            if snap is not None:
                follow_scope(camera, snap)
                img = view.render(snap, camera)
                shown += 1
                if on_frame is not None:
                    on_frame(img)
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))
    return shown


def follow_scope(camera, snap: dict) -> None:
    """Draw through the session's scope: the snapshot's `scope` params (the scene owns the scope)."""
    params = snap.get("scope")
    if params is not None and np.any(params):
        camera.set_params(params)


def render_loop(description: dict, get_snapshot: Callable[[], dict | None], display: str,
                should_stop: Callable[[], bool], *, frames: int | None = None,
                on_headless_frame: Callable[[np.ndarray], None] | None = None, inputs=None,
                explore: dict | None = None) -> str:
    """Render snapshots on `display` ("window" | "xr" | "headless", or the anatomy explorer's
    "explore" (window) | "xr-explore"), falling back when it is not available, until should_stop()
    (or `frames` frames). Returns the display actually used. inputs: a
    `sim.runtime.keyboard.InputState` the window writes the person's keys and mouse to; explore:
    the explorer's start options (`sim.render.explorer.split_display`)."""
    if display not in FALLBACK:
        raise ValueError(f"display must be one of {', '.join(FALLBACK)}, not {display!r}")
    for d in FALLBACK[display]:
        if d == "xr-explore":
            continue  # only through `headset` (render_main): it needs the session's mailboxes
        if d == "xr":
            from sim.render.xr import XrSession, XrUnavailable

            try:
                report, _ = XrSession(description, get_snapshot, log=_log).run(
                    frames=frames, should_stop=should_stop)
                if report.errors:
                    _log(f"OpenXR session ended with errors: {'; '.join(report.errors)}")
                return d
            except XrUnavailable as exc:
                _log(f"OpenXR unavailable ({exc}); falling back to the window")
        elif d in ("window", "explore"):
            from sim.render.window import DesktopWindow, WindowUnavailable

            explorer = None
            if d == "explore":
                from sim.render.explorer import Explorer

                explorer = Explorer.for_scene(description, **(explore or {}))
            try:
                with DesktopWindow(description, inputs=inputs, explorer=explorer,
                                   title="trocar explore" if explorer else "trocar") as win:
                    win.run(get_snapshot, frames=frames, should_stop=should_stop)
                return d
            except WindowUnavailable as exc:
                _log(f"no window ({exc}); falling back to headless rendering")
        else:
            _headless(description, get_snapshot, should_stop, on_frame=on_headless_frame, frames=frames)
            return d
    raise AssertionError("unreachable")


def headset(session: dict, get_snapshot, should_stop, input_state=None) -> bool:
    """The session in the headset: on this host's OpenXR runtime if it has one, else in the Monado
    root (`sim.render.xr_root`). Returns False (after one line saying why) when neither can run."""
    import os

    from sim.render.xr import XrSession, XrUnavailable
    from sim.render.xr_controllers import XrControllers

    box = input_state.box if input_state is not None else None
    try:
        report, _ = XrSession(session["description"], get_snapshot, log=_log, controllers=XrControllers(box),
                              explore=session.get("explore")).run(should_stop=should_stop)
        if report.errors:
            _log(f"OpenXR session ended with errors: {'; '.join(report.errors)}")
        return True
    except XrUnavailable as exc:
        host_reason = str(exc)
    if os.environ.get("XR_RUNTIME_JSON"):  # a runtime was named: that one or none
        _log(f"OpenXR unavailable ({host_reason}); falling back to the window")
        return False
    from sim.render.xr_root import run_in_root

    report = run_in_root(session, should_stop, log=_log)
    if "unavailable" in report:
        _log(f"OpenXR unavailable (host: {host_reason}; Monado root: {report['unavailable']}); "
             "falling back to the window")
        return False
    _log(xr_summary(report))
    return True


def xr_summary(report: dict) -> str:
    """One line on how a headset session went (its `XrReport` as a dict)."""
    if report.get("errors"):
        return f"headset: errors: {'; '.join(report['errors'])}"
    return (f"headset: {report.get('system', '?')} on {report.get('runtime', '?')}: "
            f"{report.get('frames', 0)} frames, interval median {report.get('frame_interval_ms_median')} "
            f"ms p99 {report.get('frame_interval_ms_p99')} ms (display period "
            f"{report.get('display_period_ms')} ms), {report.get('missed_frames')} missed")


def _buffers(layout: dict) -> dict[str, np.ndarray]:
    """Arrays to read snapshots into, from the mailbox layout (key -> shape, or key -> dict with
    shape and dtype, or key -> (shape, dtype))."""
    out = {}
    for key, spec in layout.items():
        dtype = np.float64
        if isinstance(spec, dict):
            shape, dtype = spec["shape"], spec.get("dtype", np.float64)
        elif (isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], (tuple, list))):
            shape, dtype = spec
        else:
            shape = spec
        out[key] = np.zeros(tuple(shape), dtype=dtype)
    return out


def render_main(mailbox_name: str, layout: dict, description: dict, display: str, stop_event, *,
                inputs: str | None = None) -> None:
    """Render process entry point: attach to the snapshot mailbox and render at display rate until
    stop_event (anything with is_set(): the session's SharedStop) is set. inputs: the session's
    input mailbox name (the window writes keys and mouse there, the headset its controllers).
    display "xr": the host's OpenXR runtime, else the Monado root (`headset`), else the window."""
    from sim.runtime.mailbox import SnapshotMailbox

    mailbox = SnapshotMailbox.attach(mailbox_name, layout)
    input_state = None
    if inputs is not None:
        from sim.runtime.keyboard import InputState, input_layout

        input_state = InputState(SnapshotMailbox.attach(inputs, input_layout()))
    # Read into a scratch set and swap on success: a failed (torn) read never reaches the screen.
    bufs = {"cur": mailbox.empty(), "scratch": mailbox.empty(), "seq": None}

    def get_snapshot() -> dict | None:
        seq = mailbox.read_into(bufs["scratch"])
        if seq is None or seq == bufs["seq"]:
            return None  # the writer was mid-write, or nothing new: draw the last one again
        bufs["cur"], bufs["scratch"], bufs["seq"] = bufs["scratch"], bufs["cur"], seq
        return bufs["cur"]

    from sim.render.explorer import split_display

    try:
        display, explore = split_display(display)
        wanted = display
        if display in ("xr", "xr-explore"):
            session = {"mailbox": mailbox_name, "layout": layout, "description": description,
                       "inputs": inputs, "explore": explore}
            if headset(session, get_snapshot, stop_event.is_set, input_state):
                return
            display = "window" if display == "xr" else "explore"
        used = render_loop(description, get_snapshot, display, stop_event.is_set, inputs=input_state,
                           explore=explore)
        if used != wanted:
            _log(f"rendered on {used} instead of {wanted}")
    finally:
        close = getattr(mailbox, "close", None)
        if close is not None:
            close()
        if input_state is not None:
            input_state.box.close()
