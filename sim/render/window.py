"""The desktop window (GLFW): the laparoscope view, resizable, vsync, keyboard/mouse input.

The window is a display of a session, never its clock: in a session (`trocar run --display window`,
`trocar render --display window`) it draws the newest snapshot through the session's scope and
writes the person's keys and mouse into the session's input mailbox (`sim.runtime.keyboard`); the
servo moves the tools (`--device keyboard`) and the scope from them. Without a session (tests that
replay snapshots) the scope keys move the window's own camera. Keys (docs/rendering.md):

    1 / 2          select the left / right instrument
    W S A D        move its tip away / toward / left / right (~5 cm/s)
    Q E            move its tip down / up
    Space          open / close its jaws
    Shift (held)   fine steps: keys and mouse move a quarter as far
    arrows         pivot the scope about its port (pan, tilt)
    PgUp PgDn      insert / withdraw the scope
    Z X            roll the scope;  V  switch 0 / 30 deg optics;  H  HUD on/off
    R              reset the view (the scope back to its start pose)
    Esc            close
    mouse          left-drag: move the tip in the floor plane; wheel: up/down; right-drag: pivot the scope

The HUD shows the selected instrument (highlighted label), each instrument's jaw state (OPEN /
CLOSED) and the window's frames per second (top right).

Closing (Esc or the window's close button) ends the loop; GL objects and the window are released
before glfwTerminate. `DesktopWindow()` raises `WindowUnavailable` with one line when there is no
display or no GL 3.3 core context.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Callable

import numpy as np

from sim.camera import LaparoscopeCamera, default_camera


class WindowUnavailable(RuntimeError):
    """No display (or no GL 3.3 core context) for a window."""


def _held(glfw, window, key) -> bool:
    return glfw.get_key(window, key) == glfw.PRESS


class DesktopWindow:
    """A GLFW window with a current GL 3.3 core context and a `Renderer`."""

    def __init__(self, description: dict, *, width: int = 1280, height: int = 720, title: str = "trocar",
                 vsync: bool = True, visible: bool = True, camera: LaparoscopeCamera | None = None,
                 inputs=None, explorer=None):
        try:
            import glfw
        except Exception as exc:
            raise WindowUnavailable(f"glfw not importable: {exc}") from exc
        self.glfw = glfw
        glfw.ERROR_REPORTING = "ignore"  # a missing display is reported once, as WindowUnavailable
        if not glfw.init():
            raise WindowUnavailable("no display (GLFW could not initialise: is DISPLAY set?)")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, glfw.TRUE)
        glfw.window_hint(glfw.VISIBLE, glfw.TRUE if visible else glfw.FALSE)
        self.window = glfw.create_window(width, height, title, None, None)
        if not self.window:
            glfw.terminate()
            raise WindowUnavailable("cannot open a window with a GL 3.3 core context")
        glfw.make_context_current(self.window)
        glfw.swap_interval(1 if vsync else 0)
        from sim.render.gl_renderer import Renderer

        self.renderer = Renderer(description)
        self.description = description
        self.camera = camera or default_camera(description)
        self.inputs = inputs  # sim.runtime.keyboard.InputState of the session, or None
        self._key_names = {}
        if inputs is not None:
            from sim.runtime.keyboard import KEYS

            for name in KEYS:
                code = getattr(glfw, "KEY_" + name.upper(), None)
                if code is not None:
                    self._key_names[code] = name
        self._title = title
        self._hud_text = ""
        self.hud = True
        self.fb_size = tuple(glfw.get_framebuffer_size(self.window))
        self.resizes: list[tuple[int, int]] = []
        glfw.set_framebuffer_size_callback(self.window, self._on_resize)
        glfw.set_key_callback(self.window, self._on_key)
        glfw.set_scroll_callback(self.window, self._on_scroll)
        self._mouse: tuple[float, float] | None = None
        self._home = self.camera.params().copy()
        self.explorer = explorer  # a sim.render.explorer.Explorer: draw the anatomy explorer view
        self.fps = 0.0  # frames per second shown (exponential average over ~1 s)

    # -- input -------------------------------------------------------------------------------------

    def _on_resize(self, _window, width: int, height: int) -> None:
        self.fb_size = (width, height)
        self.resizes.append((width, height))

    def _on_key(self, window, key, _scancode, action, _mods) -> None:
        glfw = self.glfw
        if self.inputs is not None and key in self._key_names and action in (glfw.PRESS, glfw.RELEASE):
            self.inputs.key(self._key_names[key], action == glfw.PRESS)
            # Now, not at the next frame: a slow frame must not shorten a key hold the servo sees.
            self.inputs.publish()
        if action != glfw.PRESS:
            return
        if self.explorer is not None:
            from sim.render.explorer import key_name

            name = key_name(glfw, key)
            if name is not None:
                self.explorer.press(name)
        if key == glfw.KEY_ESCAPE:
            glfw.set_window_should_close(window, True)
        elif key == glfw.KEY_H:
            self.hud = not self.hud
        elif key == glfw.KEY_V and self.inputs is None:
            self.camera.view_angle = 0.0 if self.camera.view_angle else np.radians(30.0)
        elif key == glfw.KEY_R and self.inputs is None:
            self.camera.set_params(self._home)

    def _on_scroll(self, _window, _dx, dy) -> None:
        if self.inputs is not None:
            self.inputs.scroll(dy)

    def _poll_session_mouse(self) -> None:
        """Mouse drags into the session's input mailbox, then publish this frame's input."""
        glfw, w = self.glfw, self.window
        x, y = glfw.get_cursor_pos(w)
        left = glfw.get_mouse_button(w, glfw.MOUSE_BUTTON_LEFT) == glfw.PRESS
        right = glfw.get_mouse_button(w, glfw.MOUSE_BUTTON_RIGHT) == glfw.PRESS
        if self._mouse is not None and (left or right):
            self.inputs.drag(x - self._mouse[0], y - self._mouse[1], right=right)
        self._mouse = (x, y)
        self.inputs.publish()

    def _show_hud_text(self, snap: dict) -> None:
        """The procedure's instruction and progress (snapshot `hud`) in the window title."""
        if "hud" not in snap:
            return
        from sim.hud_state import decode_hud

        hud = decode_hud(snap["hud"])
        parts = [str(hud[k]) for k in ("instruction",) if hud.get(k)]
        if hud.get("time_s") is not None and hud.get("target_time_s"):
            parts.append(f"{hud['time_s']:.0f}/{hud['target_time_s']:.0f} s")
        parts += [f"! {w}" for w in hud.get("warnings") or []]
        text = " | ".join(parts)
        if text != self._hud_text:
            self._hud_text = text
            self.glfw.set_window_title(self.window, f"{self._title} - {text}" if text else self._title)

    def _poll_scope_keys(self, dt: float) -> None:
        """Without a session: the scope keys and right-drag move this window's camera."""
        from sim.runtime.keyboard import SCOPE_DRAG_RAD_PER_PX, SCOPE_INSERT_SPEED, SCOPE_SPEED

        glfw, w = self.glfw, self.window
        cam = self.camera
        k = SCOPE_SPEED * dt
        cam.pivot(d_yaw=k * (_held(glfw, w, glfw.KEY_LEFT) - _held(glfw, w, glfw.KEY_RIGHT)),
                  d_pitch=k * (_held(glfw, w, glfw.KEY_DOWN) - _held(glfw, w, glfw.KEY_UP)),
                  d_insert=SCOPE_INSERT_SPEED * dt * (_held(glfw, w, glfw.KEY_PAGE_UP)
                                                      - _held(glfw, w, glfw.KEY_PAGE_DOWN)),
                  d_roll=k * (_held(glfw, w, glfw.KEY_X) - _held(glfw, w, glfw.KEY_Z)))
        x, y = glfw.get_cursor_pos(w)
        right = glfw.get_mouse_button(w, glfw.MOUSE_BUTTON_RIGHT) == glfw.PRESS
        if self._mouse is not None and right:
            d = SCOPE_DRAG_RAD_PER_PX
            cam.pivot(d_yaw=-d * (x - self._mouse[0]), d_pitch=d * (y - self._mouse[1]))
        self._mouse = (x, y)

    # -- loop --------------------------------------------------------------------------------------

    def run(self, get_snapshot: Callable[[], dict | None], *, frames: int | None = None,
            should_stop: Callable[[], bool] | None = None,
            on_frame: Callable[[int], None] | None = None) -> int:
        """Render until closed, `frames` frames were shown, or should_stop(). Returns frames shown.
        get_snapshot may return None (nothing new): the last snapshot is drawn again."""
        glfw = self.glfw
        from sim.render.gl_renderer import GL

        shown = 0
        snap = None
        last = time.perf_counter()
        # A frame-rate cap: vsync does not pace a virtual X server, and Mesa's software rasteriser
        # would otherwise take a whole core (on 2 CPUs, one the haptic servo's) for frames nobody
        # sees faster. 60 fps on a GPU, 30 on llvmpipe.
        software = b"llvmpipe" in (GL.glGetString(GL.GL_RENDERER) or b"")
        period = 1.0 / (30.0 if software else 60.0)
        next_frame = time.perf_counter()
        t_prev = next_frame
        while not glfw.window_should_close(self.window):
            wait = next_frame - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            next_frame = max(next_frame + period, time.perf_counter() - period)
            glfw.poll_events()
            now = time.perf_counter()
            if self.inputs is not None:
                self._poll_session_mouse()  # the session's servo moves tools and scope
            elif self.explorer is None:
                self._poll_scope_keys(min(now - last, 0.1))
            if self.explorer is not None:
                self.explorer.hold(min(now - last, 0.1), left=_held(glfw, self.window, glfw.KEY_LEFT),
                                   right=_held(glfw, self.window, glfw.KEY_RIGHT),
                                   up=_held(glfw, self.window, glfw.KEY_UP),
                                   down=_held(glfw, self.window, glfw.KEY_DOWN),
                                   walk_in=_held(glfw, self.window, glfw.KEY_PAGE_UP),
                                   walk_out=_held(glfw, self.window, glfw.KEY_PAGE_DOWN))
            last = now
            if should_stop is not None and should_stop():
                break
            new = get_snapshot()
            snap = new if new is not None else snap
            w, h = self.fb_size
            if snap is None or w == 0 or h == 0:  # nothing yet, or minimised
                time.sleep(0.01)
                continue
            if new is not None:
                from sim.render.process import follow_scope

                follow_scope(self.camera, snap)
                self._show_hud_text(snap)
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
            frame_s = max(now - t_prev, 1e-6)
            t_prev = now
            rate = 1.0 / frame_s
            self.fps = rate if self.fps == 0.0 else self.fps + (rate - self.fps) * min(1.0, frame_s)
            overlay = {"fps": self.fps,
                       "selected": int(self.inputs.data["selected"][0]) if self.inputs is not None else None}
            if self.explorer is not None:
                from sim.render.explorer import draw_window

                draw_window(self.renderer, snap, self.explorer, w, h, overlay=overlay if self.hud else None)
            else:
                self.renderer.draw_laparoscope(snap, self.camera, w, h, hud=self.hud, overlay=overlay)
            if on_frame is not None:
                on_frame(shown)
            glfw.swap_buffers(self.window)
            shown += 1
            if frames is not None and shown >= frames:
                break
        return shown

    def screenshot(self) -> np.ndarray:
        from sim.render.gl_objects import read_default_framebuffer

        return read_default_framebuffer(*self.fb_size)

    def close(self) -> None:
        if self.window is not None:
            self.glfw.make_context_current(self.window)
            self.renderer.release()
            self.glfw.destroy_window(self.window)
            self.window = None
            self.glfw.terminate()

    def __enter__(self) -> DesktopWindow:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_display_session(args, display: str, device: str) -> int:
    """`trocar render --display window|xr`: a real `trocar run` session (the servo process steps
    the scene; this display only reads its snapshots) with `device` driving the tools."""
    from sim.errors import UserError
    from sim.runtime.config import RunConfig
    from sim.runtime.realtime import run_realtime, summarize

    overrides = {"tissue_tets": args.tets} if args.tets else {}
    if args.scope:
        overrides["scope_angle"] = float(np.radians(args.scope))
    cfg = RunConfig(scene=args.scene, overrides=overrides, device=device, display=display,
                    seconds=args.seconds if args.seconds > 0 else None)
    text, code = summarize(run_realtime(cfg))
    if code == 2:
        raise UserError(text)
    print(text, flush=True)
    return code


def run_window_live(args) -> int:
    """`trocar render --display window`: a session with both instruments on the keyboard and mouse
    (1 / 2 pick the instrument) shown in the window."""
    import os

    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise WindowUnavailable("no display (DISPLAY is not set)")
    return run_display_session(args, "window", "keyboard,keyboard")


def main(argv: list[str] | None = None) -> int:
    """Replay recorded snapshots in a window; for the Xvfb test: N frames, a resize, a screenshot."""
    p = argparse.ArgumentParser(prog="python -m sim.render.window")
    p.add_argument("--replay", required=True, help="pickle of {'description', 'snapshots'}")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--size", default="640x480")
    p.add_argument("--resize", help="WxH to resize to halfway")
    p.add_argument("--screenshot", help="save the last frame here (.npy)")
    p.add_argument("--report", required=True)
    args = p.parse_args(argv)
    with open(args.replay, "rb") as fh:
        data = pickle.load(fh)
    snaps = data["snapshots"]
    w, h = (int(v) for v in args.size.split("x"))
    state = {"i": 0, "shot": None}
    try:
        win = DesktopWindow(data["description"], width=w, height=h, title="trocar test")
    except WindowUnavailable as exc:
        print(f"window: {exc}", file=sys.stderr)
        return 3
    initial = win.fb_size
    with win:
        def get_snapshot() -> dict:
            snap = snaps[state["i"] % len(snaps)]
            state["i"] += 1
            return snap

        def on_frame(k: int) -> None:
            if args.resize and k == args.frames // 2:
                rw, rh = (int(v) for v in args.resize.split("x"))
                win.glfw.set_window_size(win.window, rw, rh)
            if k == args.frames - 1:
                state["shot"] = win.screenshot()

        t0 = time.perf_counter()
        shown = win.run(get_snapshot, frames=args.frames, on_frame=on_frame)
        wall = time.perf_counter() - t0
        final = win.fb_size
        resizes = list(win.resizes)
    if args.screenshot and state["shot"] is not None:
        np.save(args.screenshot, state["shot"])
    report = {"frames": shown, "initial_size": list(initial), "final_size": list(final),
              "resizes": [list(r) for r in resizes], "wall_s": round(wall, 3), "closed": True}
    with open(args.report, "w") as fh:
        json.dump(report, fh)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
