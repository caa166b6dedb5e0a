"""The shadow map: depth of the shadow casters seen from the scope's light, for `shaders.MESH_FS`.

The light is a spot at the scope tip (offset to the fibre bundle, `LIGHT_OFFSET` in gl_renderer)
looking along the view; its shadow map is a perspective depth texture (`SIZE` square, 24-bit,
hardware depth compare with linear filtering) over a `FOV_DEG` cone (the spot's bright part, where
the instruments' shadows matter; outside it the fragment counts as lit). Rendered once per frame
before the main pass, with a polygon offset against shadow acne; the caller's framebuffer and
viewport are restored afterwards.
"""

from __future__ import annotations

import numpy as np
from OpenGL import GL

from sim.camera import look_at, perspective

SIZE = 512  # shadow map side [texels]: ~0.5 mm per texel at 15 cm from the light
FOV_DEG = 100.0  # shadow frustum full angle [deg]
NEAR, FAR = 0.01, 1.0  # shadow frustum depth range [m]
BIAS = 0.0004  # compare bias in light window depth (about 1 mm at 0.15 m from the light)


def light_view_proj(light_pos: np.ndarray, light_dir: np.ndarray) -> np.ndarray:
    """World -> light clip space for a spot at light_pos [m] looking along light_dir."""
    d = np.asarray(light_dir, float) / np.linalg.norm(light_dir)
    up = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    pos = np.asarray(light_pos, float)
    return perspective(np.radians(FOV_DEG), 1.0, NEAR, FAR) @ look_at(pos, pos + d, up)


class ShadowMap:
    """A depth texture + framebuffer (needs a current GL context)."""

    def __init__(self, size: int = SIZE):
        self.size = size
        self.texture = GL.glGenTextures(1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_DEPTH_COMPONENT24, size, size, 0, GL.GL_DEPTH_COMPONENT,
                        GL.GL_FLOAT, None)
        for param, value in ((GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR),
                             (GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR),
                             (GL.GL_TEXTURE_WRAP_S, GL.GL_CLAMP_TO_EDGE),
                             (GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE),
                             (GL.GL_TEXTURE_COMPARE_MODE, GL.GL_COMPARE_REF_TO_TEXTURE),
                             (GL.GL_TEXTURE_COMPARE_FUNC, GL.GL_LEQUAL)):
            GL.glTexParameteri(GL.GL_TEXTURE_2D, param, value)
        self.fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferTexture2D(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_TEXTURE_2D,
                                  self.texture, 0)
        GL.glDrawBuffer(GL.GL_NONE)
        GL.glReadBuffer(GL.GL_NONE)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"shadow framebuffer incomplete: 0x{int(status):x}")

    def begin(self) -> tuple[int, np.ndarray]:
        """Bind the shadow framebuffer and clear it; returns what `end` restores."""
        prev_fbo = int(GL.glGetIntegerv(GL.GL_FRAMEBUFFER_BINDING))
        prev_vp = np.array(GL.glGetIntegerv(GL.GL_VIEWPORT)).ravel()
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glViewport(0, 0, self.size, self.size)
        GL.glClear(GL.GL_DEPTH_BUFFER_BIT)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glEnable(GL.GL_POLYGON_OFFSET_FILL)
        GL.glPolygonOffset(1.5, 3.0)
        return prev_fbo, prev_vp

    def end(self, saved: tuple[int, np.ndarray]) -> None:
        GL.glDisable(GL.GL_POLYGON_OFFSET_FILL)
        fbo, vp = saved
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, fbo)
        GL.glViewport(int(vp[0]), int(vp[1]), int(vp[2]), int(vp[3]))

    def release(self) -> None:
        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteTextures(1, [self.texture])
