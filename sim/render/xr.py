"""OpenXR: the trainer on a table in front of the user and a virtual monitor with the scope view.

pyopenxr with XR_KHR_opengl_enable on an X11/GLX context from a hidden GLFW window (the GL context
the renderer draws with). The session follows the OpenXR state machine:
IDLE -> READY (xrBeginSession) -> SYNCHRONIZED -> VISIBLE -> FOCUSED; on STOPPING xrEndSession;
EXITING or LOSS_PENDING end the loop. The frame loop is paced by xrWaitFrame; each frame renders
the laparoscope view into an offscreen texture (the monitor), then each eye (views from
xrLocateViews) into its own swapchain.

Placement (OpenXR LOCAL space: y up, -z forward, origin at the head's starting pose): the trainer
floor 0.45 m below the eyes and 0.55 m ahead, the surgeon's side (sim -y) toward the user; the
monitor, 0.96 x 0.54 m, straight ahead just below eye height 0.8 m away, as in an operating room.

`xrGetOpenGLGraphicsRequirementsKHR` is fetched with xr.get_instance_proc_addr: pyopenxr
1.1.6501's `xr.ext.KHR.opengl_enable` import fails on Linux.

Controllers (`sim.render.xr_controllers`): an action set whose poses, triggers and recentre
buttons go to the servo through the session's input mailbox (`--device xr,xr`), and whose vibration
follows the instruments' force.

The live display process of a session is `sim.render.xr_client` (started inside the Monado root
by `sim.render.xr_root`).
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sim.render import geometry as geo


class XrUnavailable(RuntimeError):
    """No OpenXR runtime, no headset, or no usable GL context for it (one clear line)."""


#: Sim world (z up, surgeon at -y) -> OpenXR LOCAL (y up, -z forward): x -> x, y -> -z, z -> y.
SIM_TO_XR = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
TABLE = geo.translate(0.0, -0.45, -0.55) @ SIM_TO_XR
MONITOR = geo.translate(0.0, -0.05, -0.8) @ geo.scale(0.96, 0.54, 1.0)
MONITOR_PX = (640, 360)
MAX_EYE_WIDTH = 960  # eyes are rendered at most this wide (llvmpipe); the runtime scales


@dataclass
class XrReport:
    """What a session did: states in order, frames submitted (and while FOCUSED), XR errors, the
    readback check, the frame pacing from wall-clock intervals between xrWaitFrame returns (missed
    frames: display periods with no frame of ours; the display period is the shortest
    predicted_display_period the runtime gave, its nominal rate),
    the time to render both eyes and the monitor, how many new snapshots were shown and how old
    they were (from the servo's publish time, `pub_ns`), and the controllers' counters."""

    runtime: str = ""
    system: str = ""
    states: list[str] = field(default_factory=list)
    frames: int = 0
    focused_frames: int = 0
    rendered_views: int = 0
    errors: list[str] = field(default_factory=list)
    eye_size: list[int] = field(default_factory=list)
    swapchain_format: int = 0
    readback_centre_tissue_fraction: float = -1.0
    frame_interval_ms_median: float = 0.0
    frame_interval_ms_p99: float = 0.0
    display_period_ms: float = 0.0
    missed_frames: int = 0
    render_ms_median: float = 0.0
    render_ms_p99: float = 0.0
    snapshots_new: int = 0
    snapshot_age_ms_median: float = -1.0
    controllers: dict = field(default_factory=dict)
    wall_s: float = 0.0
    clean_exit: bool = False


def _xr():
    try:
        import xr
    except Exception as exc:  # the loader ships with pyopenxr; missing GL/X libs show up here
        raise XrUnavailable(f"pyopenxr not importable: {exc}") from exc
    return xr


def _state_name(xr, state) -> str:
    return xr.SessionState(state).name


class XrSession:
    """One OpenXR GL session with per-eye swapchains. Use `run()`; it cleans up on every path."""

    def __init__(self, description: dict, get_snapshot: Callable[[], dict | None], *,
                 log: Callable[[str], None] | None = None, controllers=None, explore: dict | None = None):
        self.description = description
        self.controllers = controllers  # an XrControllers, or None
        self.explorer = None  # the anatomy explorer (sim.render.explorer) instead of table + monitor
        if explore is not None:
            from sim.render.explorer import Explorer

            self.explorer = Explorer.for_scene(description, **explore)
        self.get_snapshot = get_snapshot
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.report = XrReport()
        self.xr = _xr()
        self.instance = None
        self.session = None
        self.space = None
        self.swapchains: list = []
        self.window = None
        self._glfw = None
        self.state = None
        self.running = False
        self.exit_requested = False
        self.done = False
        self._last_snapshot: dict | None = None

    # -- setup -------------------------------------------------------------------------------------

    def _create_instance(self) -> None:
        xr = self.xr
        probe_runtime()
        try:
            self.instance = xr.create_instance(xr.InstanceCreateInfo(
                application_info=xr.ApplicationInfo(application_name="trocar", application_version=1,
                                                    engine_name="trocar", engine_version=1,
                                                    api_version=xr.Version(1, 0, 0)),
                enabled_extension_names=[xr.KHR_OPENGL_ENABLE_EXTENSION_NAME]))
        except Exception as exc:
            raise XrUnavailable(f"no OpenXR runtime ({type(exc).__name__}: {exc})") from exc
        if self.controllers is not None:
            self.controllers.create(xr, self.instance)
        props = xr.get_instance_properties(self.instance)
        self.report.runtime = props.runtime_name.decode() if isinstance(props.runtime_name, bytes) \
            else str(props.runtime_name)
        try:
            self.system = xr.get_system(self.instance, xr.SystemGetInfo(
                form_factor=xr.FormFactor.HEAD_MOUNTED_DISPLAY))
        except Exception as exc:
            raise XrUnavailable(f"no headset ({type(exc).__name__})") from exc
        sp = xr.get_system_properties(self.instance, self.system)
        name = sp.system_name
        self.report.system = name.decode() if isinstance(name, bytes) else str(name)

    def _gl_requirements(self) -> tuple[int, int]:
        xr = self.xr
        pfn = ctypes.cast(xr.get_instance_proc_addr(self.instance, "xrGetOpenGLGraphicsRequirementsKHR"),
                          xr.PFN_xrGetOpenGLGraphicsRequirementsKHR)
        req = xr.GraphicsRequirementsOpenGLKHR()
        result = xr.check_result(xr.Result(pfn(self.instance, self.system, ctypes.byref(req))))
        if result.is_exception():
            raise result
        v = int(req.min_api_version_supported)
        need = ((v >> 48) & 0xFFFF, (v >> 32) & 0xFFFF)
        return max(need, (3, 3))

    def _create_gl(self, major: int, minor: int) -> None:
        try:
            import glfw
        except Exception as exc:
            raise XrUnavailable(f"glfw not importable: {exc}") from exc
        self._glfw = glfw
        glfw.ERROR_REPORTING = "ignore"
        if not glfw.init():
            raise XrUnavailable("no X display for the OpenXR GL context (GLFW init failed)")
        glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, major)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, minor)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.DOUBLEBUFFER, glfw.FALSE)
        self.window = glfw.create_window(64, 64, "trocar xr", None, None)
        if not self.window:
            raise XrUnavailable(f"cannot create a GL {major}.{minor} core context for OpenXR")
        glfw.make_context_current(self.window)
        glfw.swap_interval(0)

    def _create_session(self) -> None:
        xr = self.xr
        from OpenGL import GLX

        binding = xr.GraphicsBindingOpenGLXlibKHR(x_display=GLX.glXGetCurrentDisplay(),
                                                  glx_drawable=GLX.glXGetCurrentDrawable(),
                                                  glx_context=GLX.glXGetCurrentContext())
        self._binding = binding
        ptr = ctypes.cast(ctypes.pointer(binding), ctypes.c_void_p)
        self.session = xr.create_session(self.instance, xr.SessionCreateInfo(system_id=self.system, next=ptr))
        self.space = xr.create_reference_space(self.session, xr.ReferenceSpaceCreateInfo(
            reference_space_type=xr.ReferenceSpaceType.LOCAL))
        if self.controllers is not None:
            self.controllers.attach(self.session, self.space)

    def _create_swapchains(self) -> None:
        xr = self.xr
        from OpenGL import GL

        from sim.render.gl_objects import Framebuffer
        from sim.render.gl_renderer import Renderer

        formats = list(xr.enumerate_swapchain_formats(self.session))
        # The shader writes gamma-encoded colour itself, so prefer a plain 8-bit format.
        for fmt in (GL.GL_RGBA8, GL.GL_SRGB8_ALPHA8, GL.GL_RGB10_A2, GL.GL_RGBA16F):
            if int(fmt) in formats:
                self.format = int(fmt)
                break
        else:
            raise RuntimeError(f"no usable swapchain format among {formats}")
        self.report.swapchain_format = self.format
        views = xr.enumerate_view_configuration_views(self.instance, self.system,
                                                      xr.ViewConfigurationType.PRIMARY_STEREO)
        for v in views:
            w, h = v.recommended_image_rect_width, v.recommended_image_rect_height
            if w > MAX_EYE_WIDTH:
                w, h = MAX_EYE_WIDTH, int(round(h * MAX_EYE_WIDTH / w))
            sc = xr.create_swapchain(self.session, xr.SwapchainCreateInfo(
                usage_flags=xr.SwapchainUsageFlags.COLOR_ATTACHMENT_BIT | xr.SwapchainUsageFlags.SAMPLED_BIT,
                format=self.format, sample_count=1, width=w, height=h, face_count=1, array_size=1,
                mip_count=1))
            images = xr.enumerate_swapchain_images(sc, xr.SwapchainImageOpenGLKHR)
            fbs = [Framebuffer(w, h, texture=int(img.image)) for img in images]
            self.swapchains.append((sc, w, h, fbs))
        self.report.eye_size = [self.swapchains[0][1], self.swapchains[0][2]]
        self.renderer = Renderer(self.description)
        self.monitor = Framebuffer(*MONITOR_PX)
        from sim.camera import default_camera

        self.camera = default_camera(self.description)

    # -- events ------------------------------------------------------------------------------------

    def _poll_events(self) -> None:
        xr = self.xr
        while True:
            try:
                buf = xr.poll_event(self.instance)
            except xr.EventUnavailable:
                return
            kind = xr.StructureType(buf.type)
            if kind == xr.StructureType.EVENT_DATA_INSTANCE_LOSS_PENDING:
                self.report.states.append("INSTANCE_LOSS_PENDING")
                self.done = True
            elif kind == xr.StructureType.EVENT_DATA_SESSION_STATE_CHANGED:
                ev = ctypes.cast(ctypes.byref(buf), ctypes.POINTER(xr.EventDataSessionStateChanged)).contents
                self.state = xr.SessionState(ev.state)
                self.report.states.append(self.state.name)
                self.log(f"xr: session state {self.state.name}")
                if self.state == xr.SessionState.READY:
                    xr.begin_session(self.session, xr.SessionBeginInfo(
                        primary_view_configuration_type=xr.ViewConfigurationType.PRIMARY_STEREO))
                    self.running = True
                elif self.state == xr.SessionState.STOPPING:
                    xr.end_session(self.session)
                    self.running = False
                elif self.state in (xr.SessionState.EXITING, xr.SessionState.LOSS_PENDING):
                    self.done = True

    # -- frames ------------------------------------------------------------------------------------

    def _snapshot(self) -> dict | None:
        snap = self.get_snapshot()
        if snap is not None:
            self._last_snapshot = snap
            self.report.snapshots_new += 1
            if "pub_ns" in snap:
                pub = int(np.asarray(snap["pub_ns"]).ravel()[0])
                self._ages_ms.append((time.perf_counter_ns() - pub) / 1e6)
        return self._last_snapshot

    def _frame(self, readback: bool) -> np.ndarray | None:
        xr = self.xr
        from OpenGL import GL

        frame_state = xr.wait_frame(self.session, xr.FrameWaitInfo())
        self._frame_times.append(time.perf_counter())
        period = int(frame_state.predicted_display_period)
        if period > 0 and (self._period_ns == 0 or period < self._period_ns):
            self._period_ns = period  # the nominal rate (Monado widens the prediction for a late app)
        xr.begin_frame(self.session, xr.FrameBeginInfo())
        t_render = time.perf_counter()
        layers = []
        image = None
        snap = self._snapshot()
        if self.controllers is not None:
            focused = self.state == xr.SessionState.FOCUSED
            self.controllers.update(frame_state.predicted_display_time, snap, focused)
            if self.explorer is not None and focused:
                self.controllers.explore(self.explorer, self._period_ns / 1e9)
        if frame_state.should_render and snap is not None:
            view_state, views = xr.locate_views(self.session, xr.ViewLocateInfo(
                view_configuration_type=xr.ViewConfigurationType.PRIMARY_STEREO,
                display_time=frame_state.predicted_display_time, space=self.space))
            flags = view_state.view_state_flags
            if (flags & xr.VIEW_STATE_POSITION_VALID_BIT) and (flags & xr.VIEW_STATE_ORIENTATION_VALID_BIT):
                from sim.render.gl_renderer import LIGHT_OFFSET
                from sim.render.process import follow_scope

                follow_scope(self.camera, snap)
                if self.explorer is None:
                    self.monitor.bind()
                    self.renderer.draw_laparoscope(snap, self.camera, *MONITOR_PX)
                proj_views = (xr.CompositionLayerProjectionView * len(views))()
                f, up = self.camera.frame()
                # The room is lit by the scope's light, as on the monitor: one shadow map for both.
                light = self.camera.eye() + LIGHT_OFFSET * up
                for i, view in enumerate(views):
                    sc, w, h, fbs = self.swapchains[i]
                    idx = xr.acquire_swapchain_image(sc, xr.SwapchainImageAcquireInfo())
                    xr.wait_swapchain_image(sc, xr.SwapchainImageWaitInfo(timeout=xr.INFINITE_DURATION))
                    fb = fbs[idx]
                    fb.bind()
                    p, o = view.pose.position, view.pose.orientation
                    eye = geo.pose_matrix(np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w]))
                    v = np.linalg.inv(eye)
                    fov = view.fov
                    proj = geo.frustum_from_tangents(np.tan(fov.angle_left), np.tan(fov.angle_right),
                                                     np.tan(fov.angle_down), np.tan(fov.angle_up), 0.02, 20.0)
                    if self.explorer is not None:
                        from sim.render.explorer import draw

                        draw(self.renderer, snap, self.explorer, v, proj, world=self.explorer.xr_world(),
                             same_frame=i > 0)
                    else:
                        self.renderer.draw_scene(snap, v, proj, world=TABLE, light_pos=light, light_dir=f,
                                                 walls=False, room=0.5, same_frame=True)
                        self.renderer.draw_textured_quad(proj @ v @ MONITOR, self.monitor.texture)
                    if readback and i == 0:
                        image = fb.read_rgb()
                    GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
                    GL.glFlush()
                    xr.release_swapchain_image(sc, xr.SwapchainImageReleaseInfo())
                    pv = proj_views[i]
                    pv.type = xr.StructureType.COMPOSITION_LAYER_PROJECTION_VIEW
                    pv.pose, pv.fov = view.pose, view.fov
                    pv.sub_image.swapchain = sc
                    pv.sub_image.image_rect.offset.x = 0
                    pv.sub_image.image_rect.offset.y = 0
                    pv.sub_image.image_rect.extent.width = w
                    pv.sub_image.image_rect.extent.height = h
                    pv.sub_image.image_array_index = 0
                    self.report.rendered_views += 1
                layer = xr.CompositionLayerProjection(space=self.space, views=proj_views)
                layers.append(ctypes.byref(layer))
        if layers:
            self._render_ms.append((time.perf_counter() - t_render) * 1e3)
        xr.end_frame(self.session, xr.FrameEndInfo(display_time=frame_state.predicted_display_time,
                                                   environment_blend_mode=xr.EnvironmentBlendMode.OPAQUE,
                                                   layers=layers))
        self.report.frames += 1
        if self.state == xr.SessionState.FOCUSED:
            self.report.focused_frames += 1
        return image

    def run(self, *, frames: int | None = None, should_stop: Callable[[], bool] | None = None,
            readback_at: int | None = None, timeout_s: float = 600.0) -> tuple[XrReport, np.ndarray | None]:
        """Run the session until `frames` frames were submitted while FOCUSED, or should_stop(),
        then request exit and follow STOPPING -> xrEndSession -> EXITING. Returns the report and
        the left eye image read back at focused frame `readback_at` (None if not asked).

        Raises XrUnavailable before a session exists; XR errors after that are recorded in the
        report (and end the session)."""
        xr = self.xr
        t0 = time.perf_counter()
        self._frame_times: list[float] = []
        self._render_ms: list[float] = []
        self._ages_ms: list[float] = []
        self._period_ns = 0
        image = None
        try:
            self._create_instance()
            major, minor = self._gl_requirements()
            self._create_gl(major, minor)
            try:
                self._create_session()
            except Exception as exc:
                raise XrUnavailable(
                    f"cannot create an OpenXR GL session ({type(exc).__name__}: {exc})") from exc
            self._create_swapchains()
            deadline = t0 + timeout_s
            while not self.done:
                self._poll_events()
                if self.done:
                    break
                if time.perf_counter() > deadline:
                    self.report.errors.append(
                        f"timeout after {timeout_s} s in state {self.report.states[-1:]}")
                    break
                want_exit = ((frames is not None and self.report.focused_frames >= frames)
                             or (should_stop is not None and should_stop()))
                if want_exit and not self.exit_requested and self.running:
                    self.exit_requested = True
                    xr.request_exit_session(self.session)
                if self.running:
                    rb = (readback_at is not None and image is None and self.state == xr.SessionState.FOCUSED
                          and self.report.focused_frames >= readback_at)
                    img = self._frame(rb)
                    if img is not None:
                        image = img
                else:
                    time.sleep(0.02)
            self.report.clean_exit = (not self.report.errors and self.exit_requested
                                      and "STOPPING" in self.report.states
                                      and self.report.states[-1] == "EXITING")
        except XrUnavailable:
            raise
        except Exception as exc:
            self.report.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self._teardown()
        iv = np.diff(self._frame_times) * 1e3
        if len(iv):
            self.report.frame_interval_ms_median = round(float(np.median(iv)), 2)
            self.report.frame_interval_ms_p99 = round(float(np.percentile(iv, 99)), 2)
            if self._period_ns > 0:
                period = self._period_ns / 1e6
                self.report.display_period_ms = round(period, 3)
                self.report.missed_frames = int(np.maximum(np.round(iv / period) - 1, 0).sum())
        if self._render_ms:
            self.report.render_ms_median = round(float(np.median(self._render_ms)), 2)
            self.report.render_ms_p99 = round(float(np.percentile(self._render_ms, 99)), 2)
        if self._ages_ms:
            self.report.snapshot_age_ms_median = round(float(np.median(self._ages_ms)), 2)
        if self.controllers is not None:
            self.report.controllers = self.controllers.report()
        self.report.wall_s = round(time.perf_counter() - t0, 2)
        return self.report, image

    def _teardown(self) -> None:
        xr = self.xr
        try:
            if self.window is not None and self.session is not None:
                self._glfw.make_context_current(self.window)
                for _sc, _w, _h, fbs in self.swapchains:
                    for fb in fbs:
                        fb.release()
                if hasattr(self, "renderer"):
                    self.renderer.release()
                    self.monitor.release()
            for sc, *_ in self.swapchains:
                xr.destroy_swapchain(sc)
            if self.controllers is not None and self.session is not None:
                self.controllers.destroy()
            if self.space is not None:
                xr.destroy_space(self.space)
            if self.session is not None:
                xr.destroy_session(self.session)
            if self.instance is not None:
                xr.destroy_instance(self.instance)
        except Exception as exc:
            self.report.errors.append(f"teardown: {type(exc).__name__}: {exc}")
        finally:
            self.swapchains, self.space, self.session, self.instance = [], None, None, None
            if self._glfw is not None:
                if self.window is not None:
                    self._glfw.destroy_window(self.window)
                    self.window = None
                self._glfw.terminate()


def centre_tissue_fraction(img: np.ndarray, *, box: float = 0.3) -> float:
    """Fraction of tissue-coloured pixels (red-dominant) in the central box (fraction of each side)."""
    h, w = img.shape[:2]
    y0, y1 = int(h * (0.5 - box / 2)), int(h * (0.5 + box / 2))
    x0, x1 = int(w * (0.5 - box / 2)), int(w * (0.5 + box / 2))
    c = img[y0:y1, x0:x1].astype(int)
    return float(is_tissue_colour(c).mean())


def is_tissue_colour(rgb: np.ndarray) -> np.ndarray:
    """Mask of pixels in the tissue's colour range (bright, red well above green and blue)."""
    rgb = rgb.astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 110) & (r > g + 50) & (r > b + 50)


def run_xr_live(args) -> int:
    """`trocar render --display xr`: a `trocar run` session (the servo process steps the scene,
    scripted hands play the tool script through the device path) shown in the headset; the render
    process only reads snapshots."""
    from sim.render.window import run_display_session

    headset_available()  # fail fast (XrUnavailable) before starting the session
    return run_display_session(args, "xr", "script,script")


def headset_available() -> str:
    """Where a session's headset display will run: "host" (this host's OpenXR runtime) or "root"
    (the Monado root, `sim.render.xr_root`; not when XR_RUNTIME_JSON names a runtime). Raises
    XrUnavailable with both reasons when neither can."""
    import os

    try:
        probe_runtime()
        return "host"
    except XrUnavailable as exc:
        host = str(exc)
    if os.environ.get("XR_RUNTIME_JSON"):
        raise XrUnavailable(host)
    from sim.render.xr_root import unavailable_reason

    root = unavailable_reason()
    if root:
        raise XrUnavailable(f"{host}; Monado root: {root}")
    return "root"


def probe_runtime() -> None:
    """Raise XrUnavailable (one line) unless pyopenxr imports and an OpenXR runtime with
    XR_KHR_opengl_enable answers (no instance is created)."""
    import os

    xr = _xr()
    if not os.environ.get("XR_RUNTIME_JSON") and not any(
            os.path.isfile(os.path.join(d, "openxr", "1", "active_runtime.json"))
            for d in [os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"),
                      *(os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")]):
        raise XrUnavailable("no OpenXR runtime (no active_runtime.json, XR_RUNTIME_JSON unset)")
    try:
        exts = [e.extension_name.decode() if isinstance(e.extension_name, bytes) else e.extension_name
                for e in xr.enumerate_instance_extension_properties()]
    except Exception as exc:
        raise XrUnavailable(f"no OpenXR runtime ({type(exc).__name__}: {exc})") from exc
    if xr.KHR_OPENGL_ENABLE_EXTENSION_NAME not in exts:
        raise XrUnavailable("the OpenXR runtime has no XR_KHR_opengl_enable")
