"""GL objects the renderer draws with: `Mesh` (a VAO of positions, normals and optional per-vertex
materials) and `Framebuffer` (an offscreen colour texture + depth, or an OpenXR swapchain image),
and the read-back of the window's back buffer.

Vertex layout (float32, interleaved): location 0 position [m], 1 normal, and, for a mesh built with
per-vertex `material`, 2 colour (linear RGB) and 3 (shininess, specular, sheen). A mesh without
them is drawn with the generic attribute values the caller sets (`glVertexAttrib3f`) for the whole
draw: one material per draw without a uniform per field. All need a current GL 3.3 core context.
"""

from __future__ import annotations

import ctypes

import numpy as np
from OpenGL import GL

# Vertex data always lives in buffer objects, so the raw binding is enough: PyOpenGL's wrapper would
# keep the (offset) "array" alive per context and ask its platform for the current context, which
# fails when an EGL context is drawn through after pyopenxr forced PyOpenGL's GLX platform (the
# xr -> window -> headless fallback in one process).
from OpenGL.raw.GL.VERSION.GL_1_1 import glDrawElements as _draw_elements
from OpenGL.raw.GL.VERSION.GL_2_0 import glVertexAttribPointer as vertex_attrib_pointer
from OpenGL.raw.GL.VERSION.GL_3_0 import glBindVertexArray as _bind_vertex_array

#: Attribute locations of the mesh shaders (`sim.render.shaders`).
POSITION, NORMAL, COLOUR, MATERIAL = 0, 1, 2, 3


class Mesh:
    """A VAO with interleaved position + normal (+ colour + material) (float32) and an index buffer.

    verts, normals: (n, 3); tris: (k, 3) vertex indices; material: None or (n, 6) per-vertex
    colour (linear RGB) and (shininess, specular, sheen) (a merged batch of differently coloured
    parts: `sim.render.geometry.merge_parts`); dynamic: vertices change often (`update`)."""

    def __init__(self, verts: np.ndarray, normals: np.ndarray, tris: np.ndarray, *, dynamic: bool = False,
                 material: np.ndarray | None = None):
        self.vao = GL.glGenVertexArrays(1)
        self.vbo, self.ebo = GL.glGenBuffers(2)
        self.count = int(tris.size)
        self.n_verts = len(verts)
        self.has_material = material is not None
        GL.glBindVertexArray(self.vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        cols = [verts, normals] + ([material] if self.has_material else [])
        data = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, data.nbytes, data,
                        GL.GL_STREAM_DRAW if dynamic else GL.GL_STATIC_DRAW)
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self.ebo)
        idx = np.ascontiguousarray(tris, dtype=np.uint32)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, idx.nbytes, idx, GL.GL_STATIC_DRAW)
        stride = data.shape[1] * 4
        for loc in (POSITION, NORMAL, COLOUR, MATERIAL)[:data.shape[1] // 3]:
            GL.glEnableVertexAttribArray(loc)
            vertex_attrib_pointer(loc, 3, GL.GL_FLOAT, GL.GL_FALSE, stride, ctypes.c_void_p(12 * loc))
        GL.glBindVertexArray(0)

    def update(self, verts: np.ndarray, normals: np.ndarray) -> None:
        """New positions and normals (n, 3) for a mesh without per-vertex materials."""
        data = np.empty((len(verts), 6), dtype=np.float32)
        data[:, :3], data[:, 3:] = verts, normals
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        # Orphan then fill: the driver need not wait for last frame's draw to finish with it.
        GL.glBufferData(GL.GL_ARRAY_BUFFER, data.nbytes, None, GL.GL_STREAM_DRAW)
        GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, data.nbytes, data)

    def draw(self) -> None:
        _bind_vertex_array(self.vao)
        _draw_elements(GL.GL_TRIANGLES, self.count, GL.GL_UNSIGNED_INT, None)

    def release(self) -> None:
        GL.glDeleteBuffers(2, [self.vbo, self.ebo])
        GL.glDeleteVertexArrays(1, [self.vao])


class Framebuffer:
    """An offscreen colour texture (RGBA8) + depth renderbuffer, or a wrapper around an external
    colour texture (an OpenXR swapchain image)."""

    def __init__(self, width: int, height: int, *, texture: int | None = None):
        self.width, self.height = width, height
        self.fbo = GL.glGenFramebuffers(1)
        self.owns_texture = texture is None
        if texture is None:
            texture = GL.glGenTextures(1)
            GL.glBindTexture(GL.GL_TEXTURE_2D, texture)
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, width, height, 0, GL.GL_RGBA,
                            GL.GL_UNSIGNED_BYTE, None)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR)
        self.texture = texture
        self.depth = GL.glGenRenderbuffers(1)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.depth)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT24, width, height)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferTexture2D(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_TEXTURE_2D, texture, 0)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER,
                                     self.depth)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"framebuffer incomplete: 0x{int(status):x}")

    def bind(self) -> None:
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glViewport(0, 0, self.width, self.height)

    def read_rgb(self) -> np.ndarray:
        """The colour attachment as uint8 (height, width, 3), top row first."""
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        data = GL.glReadPixels(0, 0, self.width, self.height, GL.GL_RGB, GL.GL_UNSIGNED_BYTE)
        img = np.frombuffer(data, dtype=np.uint8).reshape(self.height, self.width, 3)
        return img[::-1].copy()

    def read_depth(self) -> np.ndarray:
        """The depth attachment as window depth in [0, 1] (float32, (height, width)), top row first
        (1 = the far plane: nothing drawn there)."""
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        data = GL.glReadPixels(0, 0, self.width, self.height, GL.GL_DEPTH_COMPONENT, GL.GL_FLOAT)
        img = np.frombuffer(data, dtype=np.float32).reshape(self.height, self.width)
        return img[::-1].copy()

    def release(self) -> None:
        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteRenderbuffers(1, [self.depth])
        if self.owns_texture:
            GL.glDeleteTextures(1, [self.texture])


def read_default_framebuffer(width: int, height: int) -> np.ndarray:
    """The window's back buffer as uint8 (height, width, 3), top row first."""
    GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
    GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
    GL.glReadBuffer(GL.GL_BACK)
    data = GL.glReadPixels(0, 0, width, height, GL.GL_RGB, GL.GL_UNSIGNED_BYTE)
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)[::-1].copy()
