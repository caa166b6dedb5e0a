"""`Renderer`: the OpenGL 3.3 core renderer shared by the window, the headless path and OpenXR.

Needs a current GL 3.3 core context (from `egl`, `window` or `xr`). It draws in the simulation's
world frame (z up, metres); callers pass a view and projection (and, for OpenXR, a `world` transform
placing the trainer in the room). Per frame, the tissue surface is re-uploaded from the snapshot
with vertex normals from `geometry.vertex_normals` (vectorised NumPy); everything else is a few
static meshes drawn with per-object transforms from the snapshot's link and body poses.

The frame is a list of `Item`s (mesh, model matrix, material, layer, casts shadow): the static
trainer, the tissue, the instruments and the graspable bodies, then whatever each function in
`Renderer.item_sources` returns for the snapshot. To show something new (cut surfaces, clips,
blood): make a `Mesh` once (`Renderer.mesh(verts, normals, tris, dynamic=...)`; `Mesh.update` for
changing vertices) and append a source `f(snapshot) -> list[Item]`; it is then lit, shadowed,
clipped and hidden by layer like the rest. Two passes: the shadow map from the scope's light
(`sim.render.shadow`, items with casts=True), then the lit pass (`sim.render.shaders`).

Shading: Blinn-Phong with a tight specular lobe plus a broad sheen (the wet look of serosa), lit by a
spot light at the scope's light fibres (the scope tip, `LIGHT_OFFSET` up the image from the lens)
with distance falloff, shadowed by whatever stands between it and the surface, a little ambient,
and (for the outside views in OpenXR) a dim room light. The anatomy explorer uses `clip_plane`
(cut the scene open) and `hidden` (layers not drawn).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from OpenGL import GL

# The per-draw calls go through the raw bindings: the wrappers' argument handling was most of the
# Python time of a frame (and see `sim.render.gl_objects` on PyOpenGL's platform after pyopenxr).
from OpenGL.raw.GL.VERSION.GL_2_0 import glUniformMatrix3fv as _uniform_matrix3
from OpenGL.raw.GL.VERSION.GL_2_0 import glUniformMatrix4fv as _uniform_matrix4
from OpenGL.raw.GL.VERSION.GL_2_0 import glVertexAttrib3f as _vertex_attrib3

from sim.camera import LaparoscopeCamera
from sim.render import geometry as geo
from sim.render import shaders
from sim.render.gl_objects import COLOUR, MATERIAL, Mesh, vertex_attrib_pointer
from sim.render.hud import hud_quads, hud_state
from sim.render.shadow import BIAS, ShadowMap, light_view_proj

#: Base colours (linear RGB). The tissue colour is what the tests look for.
TISSUE_RGB = (0.62, 0.16, 0.14)
FLOOR_RGB = (0.10, 0.16, 0.12)
WALL_RGB = (0.07, 0.08, 0.09)
SHAFT_RGB = (0.05, 0.05, 0.055)
JAW_RGB = (0.55, 0.56, 0.58)
BOARD_RGB = (0.60, 0.62, 0.64)
PEG_RGB = (0.85, 0.85, 0.80)
RING_RGB = (0.85, 0.55, 0.05)
BLOOD_RGB = (0.42, 0.02, 0.03)
CLIP_RGB = (0.70, 0.70, 0.75)
CLEAR_RGB = (0.02, 0.02, 0.025)

#: Distance from the scope's lens to its light fibres, up the image [m] (a 10 mm scope's rim is 5 mm
#: from its centre; 12 mm keeps the instruments' shadows visible from the lens, the depth cue
#: trainees learn to read).
LIGHT_OFFSET = 0.012
LAYERS = ("trainer", "walls", "tissue", "instruments", "objects")


class Item(NamedTuple):
    """One thing to draw: mesh, model matrix (4, 4) in the sim world, material, layer (LAYERS or a
    new name), and whether it casts a shadow. A mesh with per-vertex materials (a merged batch)
    ignores the item's colour, shininess, specular and sheen."""

    mesh: Mesh
    model: np.ndarray
    colour: tuple
    shininess: float
    specular: float
    sheen: float
    layer: str
    casts: bool = True


def _normal_matrix(m: np.ndarray) -> np.ndarray:
    return np.linalg.inv(m[:3, :3]).T


class Renderer:
    """Draws scene snapshots. Construct with a scene description (`Scene.describe()`) while a GL
    3.3 core context is current; all methods need that context current.

    Settings (change between frames): shadows (bool); clip_plane (4,) world plane a x + b y + c z + d,
    fragments with negative distance are not drawn (None: no clipping); hidden: layer names not
    drawn; item_sources: functions snapshot -> list[Item], drawn after the built-in items."""

    def __init__(self, description: dict, *, shadows: bool = True):
        self.description = description
        self.mesh_prog = shaders.compile_program(shaders.MESH_VS, shaders.MESH_FS)
        self.depth_prog = shaders.compile_program(shaders.DEPTH_VS, shaders.DEPTH_FS)
        self.hud_prog = shaders.compile_program(shaders.HUD_VS, shaders.HUD_FS)
        self.tex_prog = shaders.compile_program(shaders.TEX_VS, shaders.TEX_FS)
        self._loc = {name: GL.glGetUniformLocation(self.mesh_prog, name) for name in (
            "u_model", "u_view_proj", "u_normal_mat", "u_eye", "u_light_pos", "u_light_dir", "u_light_range",
            "u_light_power", "u_ambient",
            "u_room_dir", "u_room", "u_clip", "u_shadows", "u_light_vp", "u_shadow_map", "u_shadow_bias")}
        self._dloc = {name: GL.glGetUniformLocation(self.depth_prog, name)
                      for name in ("u_model", "u_view_proj", "u_clip")}
        box, cylinder = geo.box_mesh(), geo.cylinder_mesh()
        self.box, self.cylinder = Mesh(*box), Mesh(*cylinder)
        # CPU copies of the primitive meshes by their GL mesh's id, for merging (`_merged`).
        self._shapes = {id(self.box): box, id(self.cylinder): cylinder}
        self.quad = Mesh(*geo.quad_mesh())
        self._meshes: list[Mesh] = []
        self.tris = np.asarray(description["tissue_triangles"], dtype=np.int32).reshape(-1, 3)
        rest = np.asarray(description["tissue_rest"], dtype=np.float64).reshape(-1, 3)
        self.tissue = (Mesh(rest, geo.vertex_normals(rest, self.tris), self.tris, dynamic=True)
                       if len(self.tris) else None)
        self.organs = self._organ_parts(rest)
        self.tori: dict[tuple[float, float], Mesh] = {}
        for body in description.get("bodies", []):
            if body["kind"] == "ring":
                key = (float(body["radius"]), float(body["tube"]))
                if key not in self.tori:
                    self.tori[key] = Mesh(*geo.torus_mesh(*key))
        self.jaw_boxes = [geo.jaw_box_transforms(t) if min(t.get("jaw_length", 0), t.get("jaw_width", 0)) > 0
                          else [[], []] for t in description["tools"]]
        self._static = self._static_items()
        self.hud_vao = GL.glGenVertexArrays(1)
        self.hud_vbo = GL.glGenBuffers(1)
        GL.glBindVertexArray(self.hud_vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.hud_vbo)
        GL.glEnableVertexAttribArray(0)
        vertex_attrib_pointer(0, 2, GL.GL_FLOAT, GL.GL_FALSE, 24, ctypes.c_void_p(0))
        GL.glEnableVertexAttribArray(1)
        vertex_attrib_pointer(1, 4, GL.GL_FLOAT, GL.GL_FALSE, 24, ctypes.c_void_p(8))
        GL.glBindVertexArray(0)
        self.shadows = shadows
        self.shadow_map = ShadowMap()
        self.clip_plane: np.ndarray | None = None
        self.hidden: set[str] = set()
        self.item_sources: list[Callable[[dict], list[Item]]] = [self._injury_items]
        self.tissue_ms = 0.0  # last tissue upload time (normals + buffer) [ms], for the benchmark
        self.shadow_ms = 0.0  # last shadow pass time (CPU side: issuing it) [ms]
        self._shadowed: tuple | None = None  # (light, clip, hidden) the shadow map was drawn with

    def mesh(self, verts: np.ndarray, normals: np.ndarray, tris: np.ndarray, *,
             dynamic: bool = False, material: np.ndarray | None = None) -> Mesh:
        """A new mesh owned (and released) by this renderer, for an `item_sources` function
        (material: per-vertex (n, 6), `Mesh`)."""
        m = Mesh(verts, normals, tris, dynamic=dynamic, material=material)
        self._meshes.append(m)
        return m

    # -- scene items -------------------------------------------------------------------------------

    def _organ_parts(self, rest: np.ndarray) -> list[tuple[Mesh, tuple]]:
        """Organ scenes (describe()'s tissue_node_body): one tissue mesh per organ, each drawn
        in its colour; [] for single-colour tissue."""
        node_label = self.description.get("tissue_node_body")
        if node_label is None or self.tissue is None:
            return []
        node_label = np.asarray(node_label).reshape(-1)
        # A triangle's organ: the lowest label among its corners that existed at the start (nodes
        # a cut added later have none of their own).
        big = np.iinfo(np.int32).max
        corner = np.where(self.tris < len(node_label),
                          node_label[np.minimum(self.tris, len(node_label) - 1)], big)
        label = corner.min(axis=1)
        label[label == big] = 0
        colours = np.asarray(self.description["tissue_body_colours"], float)
        normals = geo.vertex_normals(rest, self.tris)
        return [(Mesh(rest, normals, self.tris[label == b], dynamic=True), tuple(colours[b]))
                for b in np.unique(label)]

    def _rigid_organ_items(self) -> list[Item]:
        """Static items for describe()'s rigid_meshes (liver, ...), wet like the tissue."""
        items = []
        for part in self.description.get("rigid_meshes", []):
            pts = np.asarray(part["points"], float)
            tris = np.asarray(part["triangles"], np.int32)
            items.append(Item(self.mesh(pts, geo.vertex_normals(pts, tris), tris), np.eye(4),
                              tuple(np.asarray(part["colour"], float)), 90.0, 0.55, 0.08, "tissue"))
        return items

    def _static_items(self) -> list[Item]:
        """The unmoving parts: floor, walls, pegboard and pegs, rigid organs."""
        d = self.description
        half = float(d.get("floor_half_extent", 0.25))
        top = float(d.get("trainer_top", 0.25))
        items = [Item(self.box, geo.translate(0, 0, -0.005) @ geo.scale(2 * half, 2 * half, 0.01),
                      FLOOR_RGB, 20.0, 0.05, 0.0, "trainer", False)]
        t = 0.01
        for sx, sy, cx, cy in ((2 * half, t, 0, half), (2 * half, t, 0, -half),
                               (t, 2 * half, half, 0), (t, 2 * half, -half, 0)):
            items.append(Item(self.box, geo.translate(cx, cy, top / 2) @ geo.scale(sx, sy, top),
                              WALL_RGB, 10.0, 0.02, 0.0, "walls", False))
        pb = d.get("pegboard")
        if pb is not None:
            c, s = np.asarray(pb["centre"], float), np.asarray(pb["size"], float)
            items.append(Item(self.box, geo.translate(c[0], c[1], s[2] / 2) @ geo.scale(*s),
                              BOARD_RGB, 30.0, 0.1, 0.0, "trainer", False))  # a receiver
            r, h = float(pb["peg_radius"]), float(pb["peg_height"])
            for peg in np.asarray(pb["pegs"], float).reshape(-1, 3):
                items.append(Item(self.cylinder, geo.translate(*peg) @ geo.scale(r, r, h),
                                  PEG_RGB, 40.0, 0.2, 0.0, "trainer"))
        return self._merged(items) + self._rigid_organ_items()

    def _merged(self, items: list[Item]) -> list[Item]:
        """Static items of the primitive meshes (box, cylinder) merged into one mesh per (layer,
        casts): one draw for the trainer's floor and board, one for all the pegs. (Merging the
        moving instruments and rings every frame as well saved nothing: llvmpipe's cost of a draw
        is its triangles, not the call.)"""
        groups: dict[tuple, list] = {}
        for it in items:
            groups.setdefault((it.layer, it.casts), []).append(
                (*self._shapes[id(it.mesh)], it.model, it.colour, (it.shininess, it.specular, it.sheen)))
        out = []
        for (layer, casts), parts in groups.items():
            verts, normals, tris, material = geo.merge_parts(parts)
            out.append(Item(self.mesh(verts, normals, tris, material=material), np.eye(4), (0.0, 0.0, 0.0),
                            0.0, 0.0, 0.0, layer, casts))
        return out

    def _dynamic_items(self, snap: dict, same_frame: bool = False) -> list[Item]:
        items = []
        if self.tissue is not None and len(snap["tissue_x"]) and "tissue" not in self.hidden:
            if not same_frame:
                self.upload_tissue(self._live_tissue(snap))
            for mesh, colour in self.organs or [(self.tissue, TISSUE_RGB)]:
                items.append(Item(mesh, np.eye(4), colour, 90.0, 0.55, 0.08, "tissue"))
        links = np.asarray(snap["tool_links"], float).reshape(-1, 3, 7)
        for i, tool in enumerate(self.description["tools"]):
            if i >= len(links):
                break
            shaft = geo.pose_matrix(links[i, 0])
            r, jl, sl = tool["shaft_radius"], tool["jaw_length"], tool["shaft_length"]
            items.append(Item(self.cylinder, shaft @ geo.translate(0, 0, jl) @ geo.scale(r, r, sl),
                              SHAFT_RGB, 60.0, 0.5, 0.05, "instruments"))
            for k, boxes in enumerate(self.jaw_boxes[i]):
                jaw = geo.pose_matrix(links[i, 1 + k])
                for box in boxes:
                    items.append(Item(self.box, jaw @ box, JAW_RGB, 80.0, 0.9, 0.1, "instruments"))
        bodies = np.asarray(snap.get("bodies", np.zeros((0, 7))), float).reshape(-1, 7)
        for body, pose in zip(self.description.get("bodies", []), bodies, strict=False):
            m = geo.pose_matrix(pose)
            if body["kind"] == "ring":
                items.append(Item(self.tori[(float(body["radius"]), float(body["tube"]))], m,
                                  RING_RGB, 30.0, 0.3, 0.05, "objects"))
            else:  # clip: a V of two 9 mm legs, apex at the pose (sim.rigid_world.add_clip)
                for side in (1.0, -1.0):
                    ang = side * 0.15
                    leg = (m @ geo.translate(0, np.sin(ang) * 4.5e-3, np.cos(ang) * 4.5e-3)
                           @ geo.rot_axis((1, 0, 0), -ang) @ geo.scale(1e-3, 1e-3, 9e-3))
                    items.append(Item(self.box, leg, CLIP_RGB, 80.0, 0.9, 0.1, "objects"))
        return items

    def _injury_items(self, snap: dict) -> list[Item]:
        """Clips on tissue (a box per `clips` row that is on: clip_size, across the jaw plane x
        closing direction x along the jaws; layer "objects") and blood (`blood`: row 0 the pool, a
        flat disc; the others falling drops; layer "tissue") from the snapshot (sim.clips,
        sim.bleeding); none in older layouts. The renderer's first `item_sources` entry."""
        items = []
        size = np.asarray(self.description.get("clip_size", (4e-3, 1e-3, 9e-3)), float)
        for row in np.asarray(snap.get("clips", np.zeros((0, 8))), float).reshape(-1, 8):
            if row[7] > 0.0:
                items.append(Item(self.box, geo.pose_matrix(row[:7]) @ geo.scale(*size), CLIP_RGB,
                                  80.0, 0.9, 0.1, "objects"))
        blood = np.asarray(snap.get("blood", np.zeros((0, 4))), float).reshape(-1, 4)
        for k, (x, y, z, r) in enumerate(blood):
            if r > 0.0:
                h, z0 = (1e-3, z) if k == 0 else (2 * r, z - r)  # the pool is a 1 mm film
                items.append(Item(self.cylinder, geo.translate(x, y, z0) @ geo.scale(r, r, h),
                                  BLOOD_RGB, 120.0, 0.8, 0.0, "tissue"))
        return items

    def items(self, snap: dict, *, walls: bool = True, same_frame: bool = False) -> list[Item]:
        """Everything to draw for `snap` (uploads the tissue unless same_frame: it is uploaded),
        less the hidden layers."""
        out = self._static + self._dynamic_items(snap, same_frame)
        for source in self.item_sources:
            out += source(snap)
        hidden = self.hidden if walls else self.hidden | {"walls"}
        return [it for it in out if it.layer not in hidden] if hidden else out

    # -- drawing -----------------------------------------------------------------------------------

    def _live_tissue(self, snap: dict) -> np.ndarray:
        """The snapshot's live tissue nodes; after a cut or tear (snapshot version 3: a new
        `tissue_topo` version) the tissue mesh is rebuilt from the live surface `tissue_tris`,
        which includes the new cut faces (docs/cutting.md)."""
        x = np.asarray(snap["tissue_x"], float)
        topo = snap.get("tissue_topo")
        if topo is None:
            return x
        version, n, k = (int(v) for v in np.asarray(topo)[:3])
        x = x[:n]
        if version != getattr(self, "_topo_version", 0):
            self._topo_version = version
            self.tris = np.asarray(snap["tissue_tris"], dtype=np.int64)[:k].astype(np.int32)
            self.tissue.release()
            self.tissue = Mesh(x, geo.vertex_normals(x, self.tris), self.tris, dynamic=True)
            for mesh, _ in self.organs:
                mesh.release()
            self.organs = self._organ_parts(x)
        return x

    def upload_tissue(self, x: np.ndarray) -> None:
        if self.tissue is None or len(x) != self.tissue.n_verts:
            return
        t0 = time.perf_counter()
        normals = geo.vertex_normals(x, self.tris)
        for mesh, _ in self.organs or [(self.tissue, None)]:
            mesh.update(x, normals)
        self.tissue_ms = (time.perf_counter() - t0) * 1e3

    def _clip(self) -> tuple[float, float, float, float]:
        return (0.0, 0.0, 0.0, 1.0) if self.clip_plane is None else tuple(float(v) for v in self.clip_plane)

    def _shadow_pass(self, items: list[Item], light_vp: np.ndarray, same_frame: bool) -> None:
        """Render the shadow map, unless it already holds this frame's casters seen from this
        light (same_frame: the headset's monitor and both eyes share one, the scope's light)."""
        key = (light_vp.tobytes(), self._clip(), frozenset(self.hidden))
        if same_frame and key == self._shadowed:
            return
        self._shadowed = key
        t0 = time.perf_counter()
        saved = self.shadow_map.begin()
        GL.glUseProgram(self.depth_prog)
        GL.glUniformMatrix4fv(self._dloc["u_view_proj"], 1, GL.GL_TRUE, light_vp.astype(np.float32))
        GL.glUniform4f(self._dloc["u_clip"], *self._clip())
        for it in items:
            if it.casts:
                _uniform_matrix4(self._dloc["u_model"], 1, GL.GL_TRUE, it.model.astype(np.float32))
                it.mesh.draw()
        self.shadow_map.end(saved)
        self.shadow_ms = (time.perf_counter() - t0) * 1e3

    def draw_scene(self, snap: dict, view: np.ndarray, proj: np.ndarray, *, light_pos: np.ndarray,
                   light_dir: np.ndarray, world: np.ndarray | None = None, walls: bool = True,
                   room: float = 0.0, clear: bool = True, shadows: bool | None = None,
                   same_frame: bool = False) -> None:
        """Draw the scene into the bound framebuffer (viewport set by the caller).

        view, proj: camera matrices; world: sim world -> camera's world (OpenXR's room placement);
        light_pos, light_dir: scope light in sim world [m]; walls: draw the trainer walls (off for
        outside views); room: strength of a dim overhead room light; shadows: None = self.shadows;
        same_frame: `snap` was drawn by the previous call (another view of the same frame: the
        headset's monitor and eyes): keep its tissue upload and, for the same light, its shadow map.
        """
        world = np.eye(4) if world is None else world
        vp = proj @ view @ world
        eye = np.linalg.inv(view @ world)[:3, 3]
        light_dir = np.asarray(light_dir, float) / np.linalg.norm(light_dir)
        items = self.items(snap, walls=walls, same_frame=same_frame)
        shadows = self.shadows if shadows is None else shadows
        light_vp = light_view_proj(light_pos, light_dir)
        GL.glDisable(GL.GL_BLEND)
        GL.glDisable(GL.GL_CULL_FACE)
        GL.glEnable(GL.GL_CLIP_DISTANCE0)
        if shadows:
            self._shadow_pass(items, light_vp, same_frame)
        if clear:
            GL.glClearColor(*CLEAR_RGB, 1.0)
            GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glUseProgram(self.mesh_prog)
        loc = self._loc
        GL.glUniformMatrix4fv(loc["u_view_proj"], 1, GL.GL_TRUE, vp.astype(np.float32))
        GL.glUniform3f(loc["u_eye"], *eye)
        GL.glUniform3f(loc["u_light_pos"], *light_pos)
        GL.glUniform3f(loc["u_light_dir"], *light_dir)
        GL.glUniform1f(loc["u_light_range"], 0.18)
        GL.glUniform1f(loc["u_light_power"], 2.2)
        GL.glUniform1f(loc["u_ambient"], 0.06)
        GL.glUniform3f(loc["u_room_dir"], 0.3, -0.4, 0.866)
        GL.glUniform1f(loc["u_room"], room)
        GL.glUniform4f(loc["u_clip"], *self._clip())
        GL.glUniform1i(loc["u_shadows"], 1 if shadows else 0)
        GL.glUniformMatrix4fv(loc["u_light_vp"], 1, GL.GL_TRUE, light_vp.astype(np.float32))
        GL.glUniform1f(loc["u_shadow_bias"], BIAS)
        GL.glActiveTexture(GL.GL_TEXTURE1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.shadow_map.texture)
        GL.glUniform1i(loc["u_shadow_map"], 1)
        # Nearest first, roughly (the instruments and objects, the tissue, then the trainer from the
        # pegs down to the floor): the depth test then rejects hidden fragments before shading,
        # which is most of a software-rendered frame.
        for it in items[::-1]:
            self._draw_item(it)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindVertexArray(0)
        GL.glDisable(GL.GL_CLIP_DISTANCE0)

    def _draw_item(self, it: Item) -> None:
        loc = self._loc
        _uniform_matrix4(loc["u_model"], 1, GL.GL_TRUE, it.model.astype(np.float32))
        _uniform_matrix3(loc["u_normal_mat"], 1, GL.GL_TRUE, _normal_matrix(it.model).astype(np.float32))
        if not it.mesh.has_material:
            _vertex_attrib3(COLOUR, *it.colour)
            _vertex_attrib3(MATERIAL, it.shininess, it.specular, it.sheen)
        it.mesh.draw()

    def draw_hud(self, quads: list[tuple], width: int, height: int) -> None:
        """Draw 2D quads (pixels, origin bottom-left) over the bound framebuffer."""
        if not quads:
            return
        q = np.asarray(quads, dtype=np.float32)
        x0, y0, x1, y1, col = q[:, 0], q[:, 1], q[:, 2], q[:, 3], q[:, 4:8]
        corners = np.stack([np.c_[x0, y0], np.c_[x1, y0], np.c_[x1, y1],
                            np.c_[x0, y0], np.c_[x1, y1], np.c_[x0, y1]], axis=1)  # (n, 6, 2)
        data = np.concatenate([corners, np.repeat(col[:, None, :], 6, axis=1)], axis=2).astype(np.float32)
        GL.glDisable(GL.GL_DEPTH_TEST)
        GL.glEnable(GL.GL_BLEND)
        GL.glBlendFunc(GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA)
        GL.glUseProgram(self.hud_prog)
        GL.glUniform2f(GL.glGetUniformLocation(self.hud_prog, "u_size"), float(width), float(height))
        GL.glBindVertexArray(self.hud_vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.hud_vbo)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, data.nbytes, data, GL.GL_STREAM_DRAW)
        GL.glDrawArrays(GL.GL_TRIANGLES, 0, data.shape[0] * 6)
        GL.glBindVertexArray(0)
        GL.glDisable(GL.GL_BLEND)
        GL.glEnable(GL.GL_DEPTH_TEST)

    def draw_laparoscope(self, snap: dict, camera: LaparoscopeCamera, width: int, height: int, *,
                         hud: bool = True, overlay: dict | None = None) -> None:
        """The laparoscope view (scene + HUD) into the bound framebuffer of width x height pixels.
        overlay: what the display adds to the HUD (`sim.render.hud.hud_quads`: selected, fps)."""
        GL.glViewport(0, 0, width, height)
        view, proj = camera.view(), camera.projection(width / max(height, 1))
        f, up = camera.frame()
        self.draw_scene(snap, view, proj, light_pos=camera.eye() + LIGHT_OFFSET * up, light_dir=f)
        if hud:
            state = hud_state(snap, proj @ view, float(self.description.get("dt", 1e-3)),
                              tools=self.description["tools"], **(overlay or {}))
            self.draw_hud(hud_quads(state, width, height), width, height)

    def draw_textured_quad(self, mvp: np.ndarray, texture: int) -> None:
        """A unit quad (xy in [-0.5, 0.5], facing +z) showing a texture, unlit (a monitor screen)."""
        GL.glUseProgram(self.tex_prog)
        GL.glUniformMatrix4fv(GL.glGetUniformLocation(self.tex_prog, "u_mvp"), 1, GL.GL_TRUE,
                              mvp.astype(np.float32))
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, texture)
        GL.glUniform1i(GL.glGetUniformLocation(self.tex_prog, "u_tex"), 0)
        self.quad.draw()
        GL.glBindVertexArray(0)

    def release(self) -> None:
        for mesh in [self.box, self.cylinder, self.quad, *self.tori.values(), *self._meshes,
                     *(m for m, _ in self.organs)]:
            mesh.release()
        if self.tissue is not None:
            self.tissue.release()
        self.shadow_map.release()
        GL.glDeleteBuffers(1, [self.hud_vbo])
        GL.glDeleteVertexArrays(1, [self.hud_vao])
        for prog in (self.mesh_prog, self.depth_prog, self.hud_prog, self.tex_prog):
            GL.glDeleteProgram(prog)
