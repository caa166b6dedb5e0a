"""Headless OpenGL: an EGL context on Mesa's surfaceless platform (llvmpipe without a GPU).

No window system and no X server: the context has no surface, so everything is drawn into a
`gl_renderer.Framebuffer` and read back. The EGL calls go through ctypes on libEGL.so.1 (GLVND)
so they do not depend on PyOpenGL's platform; PyOpenGL's GL calls then reach the current context
through GLVND's shared dispatch. `EGLContext()` raises `HeadlessUnavailable` with one clear line
when EGL, the surfaceless platform or a 3.3 core context is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
EGL_DEFAULT_DISPLAY = 0
EGL_NONE = 0x3038
EGL_SURFACE_TYPE = 0x3033
EGL_RENDERABLE_TYPE = 0x3040
EGL_OPENGL_BIT = 0x0008
EGL_RED_SIZE, EGL_GREEN_SIZE, EGL_BLUE_SIZE, EGL_DEPTH_SIZE = 0x3024, 0x3023, 0x3022, 0x3025
EGL_OPENGL_API = 0x30A2
EGL_CONTEXT_MAJOR_VERSION = 0x3098
EGL_CONTEXT_MINOR_VERSION = 0x30FB
EGL_CONTEXT_OPENGL_PROFILE_MASK = 0x30FD
EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT = 0x1


class HeadlessUnavailable(RuntimeError):
    """No headless GL here (message says what is missing and how to install it)."""


def prefer_egl_platform() -> None:
    """Ask PyOpenGL for its EGL platform; only effective before OpenGL is first imported."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("EGL") or "libEGL.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise HeadlessUnavailable("libEGL not found (install libegl1 and libegl-mesa0: "
                                  "scripts/setup-render-deps.sh)") from exc
    vp = ctypes.c_void_p
    lib.eglGetPlatformDisplay.restype = vp
    lib.eglGetPlatformDisplay.argtypes = [ctypes.c_uint, vp, vp]
    lib.eglInitialize.argtypes = [vp, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    lib.eglChooseConfig.argtypes = [vp, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(vp), ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_int)]
    lib.eglBindAPI.argtypes = [ctypes.c_uint]
    lib.eglCreateContext.restype = vp
    lib.eglCreateContext.argtypes = [vp, vp, vp, ctypes.POINTER(ctypes.c_int)]
    lib.eglMakeCurrent.argtypes = [vp, vp, vp, vp]
    lib.eglDestroyContext.argtypes = [vp, vp]
    lib.eglTerminate.argtypes = [vp]
    lib.eglGetError.restype = ctypes.c_int
    lib.eglGetCurrentContext.restype = vp
    return lib


#: Open contexts per EGL display. Mesa hands every caller the same surfaceless display, and
#: eglTerminate would pull it from under every other context of the process (several environments
#: or views in one process): the display is terminated when its last context closes.
_DISPLAY_USERS: dict[int, int] = {}


def _attribs(*values: int) -> ctypes.Array:
    return (ctypes.c_int * (len(values) + 1))(*values, EGL_NONE)


class EGLContext:
    """A current GL 3.3 core context on the surfaceless EGL platform; `close()` releases it."""

    def __init__(self) -> None:
        lib = self._egl = _lib()
        self.display = lib.eglGetPlatformDisplay(EGL_PLATFORM_SURFACELESS_MESA, None, None)
        major, minor = ctypes.c_int(), ctypes.c_int()
        if not self.display or not lib.eglInitialize(self.display, ctypes.byref(major), ctypes.byref(minor)):
            raise HeadlessUnavailable(
                f"EGL surfaceless platform unavailable (EGL error 0x{lib.eglGetError():x}; install "
                "libegl-mesa0 and libgl1-mesa-dri: scripts/setup-render-deps.sh)")
        self.version = (major.value, minor.value)
        _DISPLAY_USERS[self.display] = _DISPLAY_USERS.get(self.display, 0) + 1
        self._counted = True
        config = ctypes.c_void_p()
        n = ctypes.c_int()
        attribs = _attribs(EGL_SURFACE_TYPE, 0, EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT, EGL_RED_SIZE, 8,
                           EGL_GREEN_SIZE, 8, EGL_BLUE_SIZE, 8, EGL_DEPTH_SIZE, 24)
        ok = lib.eglChooseConfig(self.display, attribs, ctypes.byref(config), 1, ctypes.byref(n))
        if not ok or n.value < 1:
            self._terminate()
            raise HeadlessUnavailable("EGL: no OpenGL config on the surfaceless platform")
        lib.eglBindAPI(EGL_OPENGL_API)
        ctx_attribs = _attribs(EGL_CONTEXT_MAJOR_VERSION, 3, EGL_CONTEXT_MINOR_VERSION, 3,
                               EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT)
        self.context = lib.eglCreateContext(self.display, config, None, ctx_attribs)
        if not self.context:
            self._terminate()
            raise HeadlessUnavailable(f"EGL: cannot create a GL 3.3 core context (0x{lib.eglGetError():x})")
        if not lib.eglMakeCurrent(self.display, None, None, self.context):
            self.close()
            raise HeadlessUnavailable("EGL: cannot make a surfaceless context current")

    def make_current(self) -> None:
        """Make this context current if it is not (several contexts in one process: one per view)."""
        if self._egl.eglGetCurrentContext() == self.context:
            return
        if not self._egl.eglMakeCurrent(self.display, None, None, self.context):
            raise HeadlessUnavailable(
                f"EGL: cannot make the context current (0x{self._egl.eglGetError():x})")

    def renderer_name(self) -> str:
        from OpenGL import GL

        return GL.glGetString(GL.GL_RENDERER).decode(errors="replace")

    def _terminate(self) -> None:
        if self.display:
            users = _DISPLAY_USERS.get(self.display, 0) - (1 if getattr(self, "_counted", False) else 0)
            self._counted = False
            if users > 0:
                _DISPLAY_USERS[self.display] = users
            else:
                _DISPLAY_USERS.pop(self.display, None)
                self._egl.eglTerminate(self.display)
            self.display = None

    def close(self) -> None:
        if getattr(self, "context", None):
            self._egl.eglMakeCurrent(self.display, None, None, None)
            self._egl.eglDestroyContext(self.display, self.context)
            self.context = None
        self._terminate()

    def __enter__(self) -> EGLContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
