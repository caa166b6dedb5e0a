"""`trocar bench render --display window|xr`: the window's and the headset's frame timing.

window: a real GLFW window on this display ($DISPLAY; Mesa's llvmpipe on Xvfb here) draws
pre-recorded snapshots of the scene (tools moving; shadows on unless --no-shadows) through the
same `Renderer.draw_laparoscope` the session window uses, HUD included, vsync off, glFinish before
each swap so a frame's time is the whole frame. Figures: fps, frame time median / p99 [ms], and
missed frames: frames longer than the target period (1 / --target-fps) counted as how many
periods they overran.

xr: a live `trocar run` session (scene, emulated device, servo at 1 kHz) shown in the headset for
--seconds, against the same session headless: the headset display's report (frame interval
median / p99, the runtime's display period, missed frames, render time per stereo frame) and the
servo's period p99 with the headset on and off, and their ratio (target within 10 %). The headset
runs where `trocar run --display xr` puts it (this host's OpenXR runtime, else the Monado root).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np


def _snapshots(scene_name: str, tets: int | None, n: int):
    from sim.render.offscreen import build_named_scene
    from sim.render.script import ToolScript, run_until, scripted_session

    scene = build_named_scene(scene_name, **({"tissue_tets": tets} if tets else {}))
    try:
        description = scene.describe()
        script, step = ToolScript(scene), scripted_session(scene)
        snaps = []
        for k in range(n):
            run_until(step, script, 0.3 + 0.6 * k / n)
            snaps.append(step.snapshot())
    finally:
        scene.close()
    return description, snaps


def bench_window(args) -> dict:
    """Frame timing of the session window's drawing (see the module docstring)."""
    from sim.render.window import DesktopWindow

    description, snaps = _snapshots(args.scene, args.tets, args.snapshots)
    win = DesktopWindow(description, width=args.width, height=args.height, title="trocar bench",
                        vsync=False)
    from sim.render.gl_renderer import GL

    try:
        win.renderer.shadows = not args.no_shadows
        renderer_name = GL.glGetString(GL.GL_RENDERER).decode(errors="replace")
        glfw = win.glfw
        times = []
        t_end = time.perf_counter() + args.seconds
        k = 0
        while time.perf_counter() < t_end or k < 5:
            t0 = time.perf_counter()
            glfw.poll_events()
            w, h = win.fb_size
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
            win.renderer.draw_laparoscope(snaps[k % len(snaps)], win.camera, w, h,
                                          overlay={"fps": win.fps, "selected": 0})
            GL.glFinish()
            glfw.swap_buffers(win.window)
            dt = time.perf_counter() - t0
            win.fps = 1.0 / dt
            if k >= 3:  # after the shaders' first use (llvmpipe compiles them then)
                times.append(dt * 1e3)
            k += 1
    finally:
        win.close()
    t = np.array(times)
    period = 1e3 / args.target_fps
    return {"bench": "render", "display": "window", "renderer": renderer_name, "scene": args.scene,
            "width": args.width, "height": args.height, "shadows": not args.no_shadows, "frames": len(t),
            "fps": round(1e3 / float(np.mean(t)), 2), "frame_ms_median": round(float(np.median(t)), 3),
            "frame_ms_p99": round(float(np.percentile(t, 99)), 3), "target_fps": args.target_fps,
            "missed_frames": int(np.maximum(np.ceil(t / period) - 1, 0).sum()),
            "frames_over_target": int((t > period).sum()), "load_avg": round(os.getloadavg()[0], 2)}


def _session(scene: str, display: str, seconds: float, tets: int | None, report_path: str | None) -> dict:
    from sim.runtime.config import RunConfig
    from sim.runtime.realtime import run_realtime

    old = os.environ.get("TROCAR_XR_REPORT")
    if report_path:
        os.environ["TROCAR_XR_REPORT"] = report_path
    try:
        with tempfile.TemporaryDirectory(prefix="trocar-bench-xr-") as tmp:
            cfg = RunConfig(scene=scene, overrides={"tissue_tets": tets} if tets else {}, device="emu",
                            display=display, seconds=seconds, record=os.path.join(tmp, "s.trec"),
                            rate_mode="realtime")
            summary = run_realtime(cfg, log=lambda line: None)
    finally:
        if old is None:
            os.environ.pop("TROCAR_XR_REPORT", None)
        else:
            os.environ["TROCAR_XR_REPORT"] = old
    return summary.get("report") or {}


def bench_xr(args) -> dict:
    """The headset's frame timing in a live session, and the servo with the headset on vs off."""
    from sim.render.xr import headset_available

    where = headset_available()
    with tempfile.TemporaryDirectory(prefix="trocar-bench-xr-") as tmp:
        path = os.path.join(tmp, "xr.json")
        on = _session(args.scene, "xr", args.seconds, args.tets, path)
        xr = json.load(open(path)) if os.path.exists(path) else {"errors": ["no headset report"]}
    off = _session(args.scene, "headless", args.seconds, args.tets, None)
    keys = ("runtime", "system", "eye_size", "frames", "focused_frames", "frame_interval_ms_median",
            "frame_interval_ms_p99", "display_period_ms", "missed_frames", "render_ms_median",
            "render_ms_p99", "snapshots_new", "snapshot_age_ms_median", "errors")
    p99_on, p99_off = on.get("period_p99_us"), off.get("period_p99_us")
    return {"bench": "render", "display": "xr", "where": where, "scene": args.scene, "seconds": args.seconds,
            **{k: xr.get(k) for k in keys},
            "servo_period_p99_us_xr": p99_on, "servo_period_p99_us_headless": p99_off,
            "servo_p99_ratio": round(p99_on / p99_off, 3) if p99_on and p99_off else None,
            "servo_overrun_fraction_xr": on.get("overrun_fraction"),
            "servo_overrun_fraction_headless": off.get("overrun_fraction"),
            "load_avg": round(os.getloadavg()[0], 2)}
