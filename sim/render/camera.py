"""The laparoscope camera: a rigid scope through its own port, 0 deg or 30 deg optics.

The scope shaft always passes through the port (the fulcrum), like the instruments: its pose is
(yaw, pitch) of the shaft direction about the port, the insertion depth and the roll about the shaft.
The optics look along the shaft (0 deg) or tilted by `view_angle` from it toward the image's up
direction at roll 0 (30 deg scope: turning the roll sweeps the view around the shaft, as surgeons do
with the light cable). The scene light sits at the scope tip and points along the view direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.render.geometry import look_at, perspective, rot_axis

WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass
class LaparoscopeCamera:
    """Scope pose and optics.

    Attributes:
        port: scope port (3,) [m]. yaw, pitch: shaft direction (pointing into the body) [rad];
        pitch is below horizontal. insert: tip depth below the port along the shaft [m].
        roll: rotation about the shaft [rad]. view_angle: optics angle from the shaft [rad].
        fov_y: vertical field of view [rad] (~70 deg for common HD scopes). near, far: clip planes [m].
    """

    port: np.ndarray
    yaw: float = np.pi / 2
    pitch: float = np.pi / 3
    insert: float = 0.14
    roll: float = 0.0
    view_angle: float = 0.0
    fov_y: float = np.radians(70.0)
    near: float = 0.005
    far: float = 1.5

    @classmethod
    def aimed_at(cls, port: np.ndarray, target: np.ndarray, *, distance: float = 0.15,
                 view_angle: float = 0.0, **kwargs) -> LaparoscopeCamera:
        """A scope whose shaft points from the port at target, tip `distance` [m] short of it."""
        port = np.asarray(port, dtype=float)
        d = np.asarray(target, dtype=float) - port
        length = np.linalg.norm(d)
        yaw = float(np.arctan2(d[1], d[0]))
        pitch = float(np.arcsin(-d[2] / length))
        return cls(port=port, yaw=yaw, pitch=pitch, insert=max(0.02, length - distance),
                   view_angle=view_angle, **kwargs)

    def shaft_dir(self) -> np.ndarray:
        """Unit direction from the port into the body along the shaft."""
        cp = np.cos(self.pitch)
        return np.array([cp * np.cos(self.yaw), cp * np.sin(self.yaw), -np.sin(self.pitch)])

    def eye(self) -> np.ndarray:
        """Scope tip (camera centre and light position) [m]."""
        return np.asarray(self.port, float) + self.insert * self.shaft_dir()

    def frame(self) -> tuple[np.ndarray, np.ndarray]:
        """(view direction, image up) unit vectors in world."""
        f = self.shaft_dir()
        up = WORLD_UP - f * (WORLD_UP @ f)
        if np.linalg.norm(up) < 1e-6:  # looking straight down: up is the shaft's yaw direction
            up = np.array([np.cos(self.yaw), np.sin(self.yaw), 0.0])
        up /= np.linalg.norm(up)
        roll = rot_axis(f, self.roll)[:3, :3]
        up = roll @ up
        if self.view_angle != 0.0:
            # Tilt the optics toward the image's up; the image keeps its orientation on the scope.
            side = np.cross(f, up)
            tilt = rot_axis(side, self.view_angle)[:3, :3]
            f, up = tilt @ f, tilt @ up
        return f, up

    def view(self) -> np.ndarray:
        """World -> camera matrix."""
        f, up = self.frame()
        eye = self.eye()
        return look_at(eye, eye + f, up)

    def projection(self, aspect: float) -> np.ndarray:
        return perspective(self.fov_y, aspect, self.near, self.far)

    def pivot(self, d_yaw: float = 0.0, d_pitch: float = 0.0, d_insert: float = 0.0,
              d_roll: float = 0.0) -> None:
        """Move the scope about its port (keys/mouse); pitch and insertion are clamped."""
        self.yaw += d_yaw
        self.pitch = float(np.clip(self.pitch + d_pitch, np.radians(10.0), np.radians(89.0)))
        self.insert = float(np.clip(self.insert + d_insert, 0.02, 0.30))
        self.roll += d_roll


def default_camera(description: dict, *, view_angle: float | None = None) -> LaparoscopeCamera:
    """The scope of a scene description, aimed at the tissue centre (or the pegboard, or the floor
    origin), with the description's optics unless view_angle [rad] is given."""
    scope = description["scope"]
    rest = np.asarray(description.get("tissue_rest", np.zeros((0, 3))))
    if len(rest):
        lo, hi = rest.min(axis=0), rest.max(axis=0)
        target = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
    elif description.get("pegboard") is not None:
        pb = description["pegboard"]
        target = np.array([pb["centre"][0], pb["centre"][1], pb["size"][2]])
    else:
        target = np.zeros(3)
    angle = scope.get("view_angle", 0.0) if view_angle is None else view_angle
    return LaparoscopeCamera.aimed_at(scope["port"], target, view_angle=angle)
