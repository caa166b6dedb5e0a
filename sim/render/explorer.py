"""The anatomy explorer (`trocar explore SCENE`): step around the scene's organs, scale them from
life size to room size, cut them open with a clipping plane, hide layers; the instruments (keys in
the window, VR controllers in the headset) grab and deform the tissue of the live session.

`Explorer` is the view's state and its controls, pure NumPy; the window (`sim.render.window`, mode
"explore") and the headset (`sim.render.xr`, explore=True) draw the session's snapshots through it
with `Renderer.draw_scene` (`clip_plane`, `hidden`; the scope light stays the scene's light, plus
the room light). Frames: the organs' centre `centre` [m] (sim world: the tissue's, else the
pegboard's, else the origin) is the pivot. Window: an orbit camera at `distance` [m] (yaw, pitch)
from the centre, with the scene scaled by `scale` about it. Headset: the scene is placed with its
centre `XR_CENTRE` in front of the user (OpenXR LOCAL) and scaled by `scale`: 1 = life size on
the table, `MAX_SCALE` = the 10 cm tissue pad as wide as a room (2 m); the user walks round it.

Clipping plane: normal `clip_normal` (world, default: towards the viewer's side, -y), through the
centre moved by `clip_offset` [m] along the normal; fragments on the far side are cut away.

Keys (window; docs/rendering.md):
    arrows         orbit (yaw, pitch)          PgUp PgDn   walk in / out (distance)
    + -            scale up / down (x1.25)     C           clipping plane on / off
    [ ]            cut deeper / back off       5 6 7 8 9   hide / show tissue, instruments,
    R              reset the view                          objects, trainer, walls (hidden at start)
The instruments keep the session keys (1/2, W S A D Q E, Space; Shift: fine). In the headset the
controllers' thumbsticks scale, cut and cycle the hidden layer (`sim.render.xr_controllers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.camera import look_at, perspective
from sim.render import geometry as geo
from sim.render.xr import SIM_TO_XR

MIN_SCALE, MAX_SCALE = 1.0, 20.0
SCALE_STEP = 1.25
ORBIT_SPEED = 1.2  # [rad/s] while an arrow is held
WALK_SPEED = 0.5  # distance change per second, relative
CLIP_STEP = 0.005  # [m] per [ or ] press, in scene (life-size) metres
LAYER_KEYS = {"5": "tissue", "6": "instruments", "7": "objects", "8": "trainer", "9": "walls"}
#: Where the organs' centre sits in the headset (OpenXR LOCAL) [m]: a table ahead of the user.
XR_CENTRE = np.array([0.0, -0.35, -0.7])


def organ_centre(description: dict) -> np.ndarray:
    """The pivot of the explorer [m]: the tissue's bounding-box centre, else the pegboard's."""
    rest = np.asarray(description.get("tissue_rest", np.zeros((0, 3))), float).reshape(-1, 3)
    if len(rest):
        return 0.5 * (rest.min(axis=0) + rest.max(axis=0))
    pb = description.get("pegboard")
    if pb is not None:
        return np.array([pb["centre"][0], pb["centre"][1], 0.5 * pb["size"][2] + 0.02])
    return np.zeros(3)


@dataclass
class Explorer:
    """The explorer view's state (see the module docstring)."""

    centre: np.ndarray
    yaw: float = np.radians(-90.0)  # camera on the surgeon's side (-y), looking +y
    pitch: float = np.radians(35.0)  # above, looking down
    distance: float = 0.35  # [m]
    scale: float = 1.0
    clip: bool = False
    clip_offset: float = 0.0  # [m], scene metres along the normal from the centre
    clip_normal: np.ndarray = field(default_factory=lambda: np.array([0.0, -1.0, 0.0]))
    hidden: set = field(default_factory=lambda: {"walls"})  # the trainer's walls hide the organs

    @classmethod
    def for_scene(cls, description: dict, **kw) -> Explorer:
        return cls(centre=organ_centre(description), **kw)

    def reset(self) -> None:
        fresh = Explorer(self.centre)
        self.__dict__.update({k: v for k, v in fresh.__dict__.items()})

    # -- controls ------------------------------------------------------------------------------------

    def press(self, key: str) -> None:
        """One key press (names as `sim.runtime.keyboard.KEYS` / glfw: 'equal', 'minus', 'c', ...)."""
        if key in ("equal", "kp_add", "+"):
            self.scale = min(MAX_SCALE, self.scale * SCALE_STEP)
        elif key in ("minus", "kp_subtract", "-"):
            self.scale = max(MIN_SCALE, self.scale / SCALE_STEP)
        elif key == "c":
            self.clip = not self.clip
        elif key == "left_bracket":
            self.clip_offset -= CLIP_STEP
        elif key == "right_bracket":
            self.clip_offset += CLIP_STEP
        elif key in LAYER_KEYS:
            self.hidden ^= {LAYER_KEYS[key]}
        elif key == "r":
            self.reset()

    def hold(self, dt: float, *, left=False, right=False, up=False, down=False, walk_in=False,
             walk_out=False) -> None:
        """Held keys for dt [s]: orbit and walk."""
        self.yaw += ORBIT_SPEED * dt * (int(right) - int(left))
        self.pitch = float(np.clip(self.pitch + ORBIT_SPEED * dt * (int(up) - int(down)),
                                   np.radians(-80.0), np.radians(85.0)))
        self.distance *= float(np.exp(WALK_SPEED * dt * (int(walk_out) - int(walk_in))))
        self.distance = float(np.clip(self.distance, 0.05, 5.0))

    # -- what the renderer needs ---------------------------------------------------------------------

    def clip_plane(self) -> np.ndarray | None:
        """The clipping plane (a, b, c, d) in the sim world, or None."""
        if not self.clip:
            return None
        n = self.clip_normal / np.linalg.norm(self.clip_normal)
        point = self.centre + self.clip_offset * n
        return np.r_[-n, n @ point]  # keep the side away from the normal: cut towards the viewer

    def scene_transform(self) -> np.ndarray:
        """Sim world -> the scaled world the camera looks at (scaled about the centre)."""
        c = self.centre
        return geo.translate(*c) @ geo.scale(self.scale, self.scale, self.scale) @ geo.translate(*-c)

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        """(view, eye [m]) of the window's orbit camera (in the scaled world)."""
        d = np.array([np.cos(self.pitch) * np.cos(self.yaw), np.cos(self.pitch) * np.sin(self.yaw),
                      np.sin(self.pitch)])
        eye = self.centre + self.distance * d
        return look_at(eye, self.centre, np.array([0.0, 0.0, 1.0])), eye

    def projection(self, aspect: float) -> np.ndarray:
        return perspective(np.radians(50.0), aspect, 0.01, 50.0)

    def xr_world(self) -> np.ndarray:
        """Sim world -> OpenXR LOCAL for the headset: the centre at XR_CENTRE, scaled."""
        return geo.translate(*XR_CENTRE) @ SIM_TO_XR @ geo.scale(self.scale, self.scale, self.scale) \
            @ geo.translate(*-self.centre)

    def light(self) -> tuple[np.ndarray, np.ndarray]:
        """(position, direction) of the light in the sim world: above the organs, a little toward
        the viewer's side, pointing at the centre (a surgical lamp)."""
        pos = self.centre + np.array([0.05, -0.1, 0.25])
        return pos, self.centre - pos


def draw(renderer, snap: dict, explorer: Explorer, view: np.ndarray, proj: np.ndarray, *,
         world: np.ndarray, same_frame: bool = False) -> None:
    """Draw `snap` for the explorer: its clipping plane and hidden layers, the lamp, the room light
    (same_frame: `Renderer.draw_scene`'s, for the second eye)."""
    renderer.clip_plane = explorer.clip_plane()
    renderer.hidden = set(explorer.hidden)
    pos, direction = explorer.light()
    try:
        renderer.draw_scene(snap, view, proj, world=world, light_pos=pos, light_dir=direction,
                            walls="walls" not in explorer.hidden, room=0.5, same_frame=same_frame)
    finally:
        renderer.clip_plane = None
        renderer.hidden = set()



def draw_window(renderer, snap: dict, explorer: Explorer, width: int, height: int, *,
                overlay: dict | None = None) -> None:
    """The explorer's window frame into the bound framebuffer: the orbit view, and (overlay given)
    the HUD's instrument labels, force bars and fps."""
    from OpenGL import GL

    from sim.render.hud import hud_quads, hud_state

    GL.glViewport(0, 0, width, height)
    view, _ = explorer.view()
    proj = explorer.projection(width / max(height, 1))
    draw(renderer, snap, explorer, view, proj, world=explorer.scene_transform())
    if overlay is not None:
        state = hud_state(snap, proj @ view @ explorer.scene_transform(),
                          float(renderer.description.get("dt", 1e-3)), tools=renderer.description["tools"],
                          **overlay)
        renderer.draw_hud(hud_quads(state, width, height), width, height)


def key_name(glfw, key: int) -> str | None:
    """The explorer's name for a GLFW key code, or None if it is not one of its keys."""
    names = {"EQUAL": "equal", "KP_ADD": "kp_add", "MINUS": "minus", "KP_SUBTRACT": "kp_subtract",
             "C": "c", "LEFT_BRACKET": "left_bracket", "RIGHT_BRACKET": "right_bracket", "R": "r",
             **{k: k for k in LAYER_KEYS}}
    for attr, name in names.items():
        if key == getattr(glfw, "KEY_" + attr, None):
            return name
    return None


def display_string(base: str, *, scale: float = 1.0, clip: bool = False, hide: tuple = ()) -> str:
    """The session's display for the explorer ('explore' window or 'xr-explore' headset) with its
    start options, as one picklable string the render process parses (`split_display`)."""
    return f"{base}?scale={scale:g}&clip={int(clip)}&hide={'+'.join(hide)}"


def split_display(display: str) -> tuple[str, dict | None]:
    """(base display, Explorer options or None) from a display string."""
    base, sep, query = display.partition("?")
    if base not in ("explore", "xr-explore"):
        return base, None
    opts: dict = {}
    for part in query.split("&") if sep else ():
        k, _, v = part.partition("=")
        if k == "scale":
            opts["scale"] = float(np.clip(float(v), MIN_SCALE, MAX_SCALE))
        elif k == "clip":
            opts["clip"] = v == "1"
        elif k == "hide" and v:
            opts["hidden"] = set(v.split("+"))
    return base, opts
