"""`trocar render` and `trocar bench render` (registered by sim.cli)."""

from __future__ import annotations

import argparse
import sys


def _cmd_render(args: argparse.Namespace) -> int:
    display = args.display
    if display == "xr":
        from sim.render.xr import XrUnavailable, run_xr_live

        try:
            return run_xr_live(args)
        except XrUnavailable as exc:
            print(f"trocar: OpenXR unavailable ({exc}); falling back to the desktop window", file=sys.stderr)
            display = "window"
    if display == "window":
        from sim.render.window import WindowUnavailable, run_window_live

        try:
            return run_window_live(args)
        except WindowUnavailable as exc:
            target = args.out_dir or args.out or "frame.png"
            print(f"trocar: no window ({exc}); rendering headless to {target}", file=sys.stderr)
    from sim.render.egl import HeadlessUnavailable
    from sim.render.offscreen import render_frames

    try:
        return render_frames(args)
    except HeadlessUnavailable as exc:
        from sim.errors import UserError

        raise UserError(f"cannot render headless: {exc}") from None


def _cmd_explore(args: argparse.Namespace) -> int:
    """`trocar explore SCENE`: a live session shown in the anatomy explorer (window or headset)."""
    from sim.errors import UserError
    from sim.render.explorer import LAYER_KEYS, MAX_SCALE, MIN_SCALE, display_string
    from sim.runtime.config import RunConfig
    from sim.runtime.devices import parse_devices
    from sim.runtime.realtime import run_realtime, summarize

    if not MIN_SCALE <= args.scale <= MAX_SCALE:
        raise UserError(f"--scale must be in [{MIN_SCALE:g}, {MAX_SCALE:g}]")
    hide = tuple(h for h in (args.hide or "").split(",") if h)
    bad = [h for h in hide if h not in LAYER_KEYS.values()]
    if bad:
        raise UserError(f"--hide: unknown layer {bad[0]!r}; layers: {', '.join(LAYER_KEYS.values())}")
    if args.seconds is not None and args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    device = args.device or ("xr,xr" if args.display == "xr" else "keyboard,keyboard")
    parse_devices(device)
    from sim.scene_build import SCENES

    if args.scene not in SCENES:
        raise UserError(f"unknown scene {args.scene!r}; built-in scenes: {', '.join(SCENES)}")
    display = display_string("xr-explore" if args.display == "xr" else "explore", scale=args.scale,
                             clip=args.clip, hide=hide or ("walls",))
    overrides = {"tissue_tets": args.tets} if args.tets else {}
    cfg = RunConfig(scene=args.scene, overrides=overrides, device=device, display=display,
                    seconds=args.seconds, record=args.record)
    text, code = summarize(run_realtime(cfg))
    if code == 2:
        raise UserError(text)
    print(text, flush=True)
    return code


def _cmd_bench_render(args: argparse.Namespace) -> int:
    import json

    from sim.errors import UserError

    if args.display == "headless":
        from sim.render.offscreen import bench_render

        return bench_render(args)
    if args.display == "window":
        import os

        from sim.render.window import WindowUnavailable

        if not os.environ.get("DISPLAY"):
            raise UserError("bench render --display window needs a display (DISPLAY is not set)")
        from benchmarks.render_displays import bench_window

        try:
            result = bench_window(args)
        except WindowUnavailable as exc:
            raise UserError(f"bench render --display window: {exc}") from None
    else:
        from benchmarks.render_displays import bench_xr
        from sim.render.xr import XrUnavailable

        try:
            result = bench_xr(args)
        except XrUnavailable as exc:
            raise UserError(f"bench render --display xr: OpenXR unavailable ({exc})") from None
    print(json.dumps(result), flush=True)
    return 0


def register(sub, bsub) -> None:
    r = sub.add_parser("render",
                       help="render the laparoscope view: PNG frames (headless EGL), a window or OpenXR")
    r.add_argument("scene", nargs="?", default="default", help="scene name (default, peg_transfer)")
    r.add_argument("--out", help="PNG file for a single frame (default frame.png)")
    r.add_argument("--frames", type=int, default=1, help="number of frames (needs --out-dir when > 1)")
    r.add_argument("--out-dir", help="directory for frame_00000.png ...")
    r.add_argument("--video", help="also write a video (needs imageio-ffmpeg), e.g. out.mp4")
    r.add_argument("--width", type=int, default=960, help="frame width [px] (default 960)")
    r.add_argument("--height", type=int, default=540, help="frame height [px] (default 540)")
    r.add_argument("--scope", type=float, choices=[0.0, 30.0], default=0.0, help="scope angle [deg]: 0 or 30")
    r.add_argument("--fps", type=float, default=30.0, help="frames per simulated second (default 30)")
    r.add_argument("--at", type=float, default=0.9,
                   help="simulated time of the first frame [s] (default 0.9: tools over the tissue)")
    r.add_argument("--tets", type=int, help="tissue tet count override (smaller = faster)")
    r.add_argument("--no-hud", action="store_true", help="no HUD overlay")
    r.add_argument("--replay", metavar="FILE",
                   help="render a recorded session (.trec) instead of the scripted scene: --at is the "
                        "time in the recording [s]; the scene, scope and procedure HUD are the recording's")
    r.add_argument("--display", choices=["headless", "window", "xr"], default="headless",
                   help="headless PNGs (default), a desktop window (keyboard/mouse drive the tools) or "
                        "OpenXR; falls back xr -> window -> headless")
    r.add_argument("--seconds", type=float, default=0.0,
                   help="window/xr: close after this many seconds (0 = until closed)")
    r.set_defaults(func=_cmd_render)

    e = sub.add_parser("explore", help="anatomy explorer: walk round, scale (life size to room size), "
                                       "cut open and hide layers of a live scene; window or headset")
    e.add_argument("scene", nargs="?", default="default", help="scene name (default, peg_transfer)")
    e.add_argument("--display", choices=["window", "xr"], default="window",
                   help="window (keys: docs/rendering.md) or headset (falls back to the window)")
    e.add_argument("--device", help="instruments' devices (default keyboard,keyboard; xr,xr in the headset)")
    e.add_argument("--scale", type=float, default=1.0, help="start scale, 1 (life size) to 20 (room size)")
    e.add_argument("--clip", action="store_true", help="start with the clipping plane on")
    e.add_argument("--hide", help="layers hidden at start, comma separated (default walls): tissue, "
                                  "instruments, objects, trainer, walls")
    e.add_argument("--tets", type=int, help="tissue tet count override")
    e.add_argument("--seconds", type=float, help="stop after this long (default: until closed / Ctrl-C)")
    e.add_argument("--record", help="session recording path")
    e.set_defaults(func=_cmd_explore)

    b = bsub.add_parser("render", help="frame time of the headless (EGL), window or headset path: fps, "
                                       "median, p99, missed frames (xr: and the servo p99 with it on/off)")
    b.add_argument("scene", nargs="?", default="default")
    b.add_argument("--display", choices=["headless", "window", "xr"], default="headless",
                   help="headless EGL frames (default), the session window (needs DISPLAY) or a live "
                        "session in the headset against the same session headless")
    b.add_argument("--width", type=int, default=960)
    b.add_argument("--height", type=int, default=540)
    b.add_argument("--no-shadows", action="store_true", help="without the shadow pass")
    b.add_argument("--target-fps", type=float, default=30.0,
                   help="frames over 1/target count as missed (default 30)")
    b.add_argument("--seconds", type=float, default=10.0, help="timed wall-clock seconds (default 10)")
    b.add_argument("--snapshots", type=int, default=20, help="distinct scene states cycled (default 20)")
    b.add_argument("--tets", type=int, help="tissue tet count override")
    b.add_argument("--json", action="store_true", help="JSON line only")
    b.set_defaults(func=_cmd_bench_render)
