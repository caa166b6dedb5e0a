"""Headless frames: `trocar render` and `trocar bench render` (EGL surfaceless, FBO readback).

`HeadlessView` owns an EGL context, a `Renderer` and a framebuffer; `render(snapshot, camera)`
returns the frame as uint8 (height, width, 3). The session is stepped in lockstep (the one
`sim.runtime.step.SessionStep`) under `script.ToolScript`, so the same command writes the same
frames.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from sim.errors import UserError
from sim.render.egl import EGLContext, prefer_egl_platform


class HeadlessView:
    """EGL context + renderer + framebuffer of width x height pixels. `close()` frees them."""

    def __init__(self, description: dict, width: int, height: int):
        prefer_egl_platform()
        self.ctx = EGLContext()
        try:
            from sim.render.gl_objects import Framebuffer
            from sim.render.gl_renderer import Renderer

            self.renderer = Renderer(description)
            self.fb = Framebuffer(width, height)
        except Exception:
            self.ctx.close()
            raise
        self.width, self.height = width, height

    def render(self, snapshot: dict, camera, *, hud: bool = True) -> np.ndarray:
        self.ctx.make_current()  # another view in this process may have made its own current
        self.fb.bind()
        self.renderer.draw_laparoscope(snapshot, camera, self.width, self.height, hud=hud)
        return self.fb.read_rgb()

    def depth(self) -> np.ndarray:
        """The last rendered frame's window depth in [0, 1], float32 (height, width), top row first."""
        self.ctx.make_current()
        return self.fb.read_depth()

    def close(self) -> None:
        self.ctx.make_current()
        self.renderer.release()
        self.fb.release()
        self.ctx.close()

    def __enter__(self) -> HeadlessView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save_png(img: np.ndarray, path: str | os.PathLike) -> None:
    from PIL import Image

    Image.fromarray(img).save(path, format="PNG")


def _check_writable_file(path: str) -> Path:
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UserError(f"{path} is a directory; --out takes a .png file name")
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"cannot write {path}: permission denied")
    return p


def _prepare_dir(path: str) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    if not os.access(p, os.W_OK):
        raise UserError(f"cannot write into {path}: permission denied")
    return p


def build_named_scene(name: str, **overrides):
    from sim.scene import build_scene
    from sim.scene_build import SCENES

    if name not in SCENES:
        raise UserError(f"unknown scene {name!r}; built-in scenes: {', '.join(SCENES)}")
    return build_scene(name, **overrides)


def render_frames(args) -> int:
    """`trocar render`: one PNG (--out) or N frames (--frames N --out-dir DIR, optional --video)."""
    from sim.camera import default_camera
    from sim.render.script import ToolScript, run_until, scripted_session

    if args.width < 16 or args.height < 16 or args.width > 8192 or args.height > 8192:
        raise UserError("--width/--height must be between 16 and 8192 pixels")
    if args.frames < 1:
        raise UserError("--frames must be >= 1")
    if args.fps <= 0:
        raise UserError("--fps must be > 0")
    if args.at < 0:
        raise UserError("--at must be >= 0")
    writer = None
    if args.frames > 1 or args.out_dir:
        if not args.out_dir:
            raise UserError("--frames N needs --out-dir DIR")
        out_dir = _prepare_dir(args.out_dir)
        out = None
    else:
        out = _check_writable_file(args.out or "frame.png")
    if args.video:
        _check_writable_file(args.video)
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise UserError("--video needs imageio and imageio-ffmpeg "
                            "(pip install imageio imageio-ffmpeg)") from None
    replay = getattr(args, "replay", None)
    if replay:
        from sim.render.replay_frames import ReplayedSession

        source = ReplayedSession(replay)
        scene, step, advance = source.scene, source.step, source.advance
    else:
        overrides = {"tissue_tets": args.tets} if args.tets else {}
        scene = build_named_scene(args.scene, **overrides)
        scene.scope.view_angle = float(np.radians(args.scope))
        script = ToolScript(scene)
        step = scripted_session(scene)

        def advance(t_end: float) -> None:
            run_until(step, script, t_end)
    try:
        description = scene.describe()
        camera = default_camera(description)
        with HeadlessView(description, args.width, args.height) as view:
            if args.video:
                writer = imageio.get_writer(args.video, fps=args.fps)
            for k in range(args.frames):
                advance(args.at + k / args.fps)
                img = view.render(step.snapshot(), camera, hud=not args.no_hud)
                if out is not None:
                    save_png(img, out)
                    print(out)
                else:
                    path = out_dir / f"frame_{k:05d}.png"
                    save_png(img, path)
                if writer is not None:
                    writer.append_data(img)
            if out is None:
                print(f"{args.frames} frames in {out_dir}")
    finally:
        if writer is not None:
            writer.close()
        scene.close()
    if args.video:
        print(args.video)
    return 0


def bench_render(args) -> int:
    """`trocar bench render`: headless frame time (EGL, this machine's GL) while the scene moves."""
    from sim.camera import default_camera
    from sim.render.script import ToolScript, run_until, scripted_session

    scene = build_named_scene(args.scene, **({"tissue_tets": args.tets} if args.tets else {}))
    try:
        description = scene.describe()
        camera = default_camera(description)
        script = ToolScript(scene)
        step = scripted_session(scene)
        # Pre-record snapshots so the timing is the renderer's, not the physics'.
        snaps = []
        for k in range(args.snapshots):
            run_until(step, script, 0.3 + 0.6 * k / args.snapshots)
            snaps.append(step.snapshot())
        with HeadlessView(description, args.width, args.height) as view:
            renderer_name = view.ctx.renderer_name()
            view.renderer.shadows = not getattr(args, "no_shadows", False)
            for snap in snaps[:3]:
                view.render(snap, camera)  # warm-up (shader JIT)
            times, tissue = [], []
            t_end = time.perf_counter() + args.seconds
            k = 0
            while time.perf_counter() < t_end or k < 5:
                t0 = time.perf_counter()
                view.render(snaps[k % len(snaps)], camera)  # includes readback: a finished frame
                times.append((time.perf_counter() - t0) * 1e3)
                tissue.append(view.renderer.tissue_ms)
                k += 1
    finally:
        scene.close()
    t = np.array(times)
    result = {"bench": "render", "backend": "egl-surfaceless", "renderer": renderer_name,
              "scene": args.scene, "tets": args.tets or "default", "width": args.width,
              "height": args.height, "frames": len(t),
              "fps": round(1e3 / float(np.mean(t)), 2), "frame_ms_median": round(float(np.median(t)), 3),
              "frame_ms_p99": round(float(np.percentile(t, 99)), 3),
              "tissue_upload_ms_median": round(float(np.median(tissue)), 3),
              "shadows": view.renderer.shadows, "target_fps": getattr(args, "target_fps", 30.0),
              "missed_frames": int(np.maximum(np.ceil(t / (1e3 / getattr(args, "target_fps", 30.0))) - 1,
                                              0).sum()), "load_avg": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))
    if not args.json:
        print(f"{result['fps']} fps, median {result['frame_ms_median']} ms, p99 {result['frame_ms_p99']} ms "
              f"({renderer_name})")
    return 0
