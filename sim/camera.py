"""The laparoscope camera: a rigid scope through its own port, 0 deg or 30 deg optics.

The scope shaft always passes through the port (the fulcrum), like the instruments: its pose is
(yaw, pitch) of the shaft direction about the port, the insertion depth and the roll about the shaft.
The optics look along the shaft (0 deg) or tilted by `view_angle` from it toward the image's up
direction at roll 0 (30 deg scope: turning the roll sweeps the view around the shaft, as surgeons do
with the light cable). The scene light sits at the scope tip and points along the view direction.

The scope is a scene member (`sim.scene.Scene.scope`, its parameters are part of the scene state
and of every snapshot) and the renderer draws through the same object, so `in_view` is exactly the
frustum on screen (for the scope's image aspect, 16:9 HD by default). This module is pure NumPy and
imports nothing from sim.render, so the scene can own a camera without importing the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORLD_UP = np.array([0.0, 0.0, 1.0])
HD_ASPECT = 16.0 / 9.0  # the scope image's width / height
PARAMS = ("yaw", "pitch", "insert", "roll", "view_angle", "fov_y")  # params() order


def rot_axis(axis: np.ndarray, angle: float) -> np.ndarray:
    """4x4 rotation by angle [rad] about a unit axis (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    return m


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """View matrix (world -> camera; camera looks down -z, +y up) for an eye looking at target."""
    f = np.asarray(target, float) - np.asarray(eye, float)
    f /= np.linalg.norm(f)
    s = np.cross(f, up)
    s /= np.linalg.norm(s)
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ np.asarray(eye, float)
    return m


def perspective(fov_y: float, aspect: float, near: float, far: float) -> np.ndarray:
    """OpenGL projection for a vertical field of view fov_y [rad] and aspect = width / height."""
    f = 1.0 / np.tan(fov_y / 2)
    m = np.zeros((4, 4))
    m[0, 0], m[1, 1] = f / aspect, f
    m[2, 2], m[2, 3] = (far + near) / (near - far), 2 * far * near / (near - far)
    m[3, 2] = -1.0
    return m


@dataclass
class LaparoscopeCamera:
    """Scope pose and optics.

    Attributes:
        port: scope port (3,) [m]. yaw, pitch: shaft direction (pointing into the body) [rad];
        pitch is below horizontal. insert: tip depth below the port along the shaft [m].
        roll: rotation about the shaft [rad]. view_angle: optics angle from the shaft [rad].
        fov_y: vertical field of view [rad] (~70 deg for common HD scopes). near, far: clip planes [m].
        aspect: image width / height used by `in_view` (the renderer uses its viewport's).
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
    aspect: float = HD_ASPECT
    # `pose` of the last (port, yaw, pitch, insert, roll, view_angle) it was computed for: the
    # recording asks every tick, and the scope rarely moves (~70 us of NumPy a tick here).
    _pose_memo: tuple = field(default=(None, None), init=False, repr=False, compare=False)

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

    @property
    def angle(self) -> float:
        """Optics angle from the shaft [rad] (0 or 30 deg)."""
        return self.view_angle

    @property
    def pose(self) -> np.ndarray:
        """Camera pose (7,): the scope tip [m] and the camera frame's quaternion (x, y, z, w), the
        frame's axes being (image right, image up, -view direction) as in OpenGL."""
        key = (*(float(v) for v in self.port), self.yaw, self.pitch, self.insert, self.roll, self.view_angle)
        if key != self._pose_memo[0]:
            f, up = self.frame()
            m = np.column_stack([np.cross(f, up), up, -f])
            self._pose_memo = (key, np.r_[self.eye(), mat_to_quat(m)])
        return self._pose_memo[1].copy()

    def params(self, out: np.ndarray | None = None) -> np.ndarray:
        """The movable pose and optics as (6,) in `PARAMS` order [rad, rad, m, rad, rad, rad]."""
        out = np.empty(len(PARAMS)) if out is None else out
        out[:] = (self.yaw, self.pitch, self.insert, self.roll, self.view_angle, self.fov_y)
        return out

    def set_params(self, p: np.ndarray) -> None:
        """Set the pose and optics from `params()` output."""
        self.yaw, self.pitch, self.insert, self.roll, self.view_angle, self.fov_y = (float(v) for v in p)

    def in_view(self, points: np.ndarray, aspect: float | None = None) -> np.ndarray:
        """Which world points (k, 3) [m] are inside the view frustum (image and near..far): (k,) bool."""
        pts = np.asarray(points, dtype=float).reshape(-1, 3)
        vp = self.projection(self.aspect if aspect is None else aspect) @ self.view()
        clip = pts @ vp[:, :3].T + vp[:, 3]
        w = clip[:, 3]
        lim = np.abs(w)
        return ((w > 1e-12) & (np.abs(clip[:, 0]) <= lim) & (np.abs(clip[:, 1]) <= lim)
                & (np.abs(clip[:, 2]) <= lim))

    def pivot(self, d_yaw: float = 0.0, d_pitch: float = 0.0, d_insert: float = 0.0,
              d_roll: float = 0.0) -> None:
        """Move the scope about its port (keys/mouse); pitch and insertion are clamped."""
        self.yaw += d_yaw
        self.pitch = float(np.clip(self.pitch + d_pitch, np.radians(10.0), np.radians(89.0)))
        self.insert = float(np.clip(self.insert + d_insert, 0.02, 0.30))
        self.roll += d_roll


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) of a rotation matrix (3, 3) (Shepperd's method, w >= 0)."""
    t = m[0, 0] + m[1, 1] + m[2, 2]
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.zeros(4)
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    return q if q[3] >= 0 else -q


def aim_target(description: dict) -> np.ndarray:
    """Where a scene's scope looks at start [m]: the tissue top centre, the pegboard top centre, or
    the floor origin."""
    rest = np.asarray(description.get("tissue_rest", np.zeros((0, 3))))
    if len(rest):
        lo, hi = rest.min(axis=0), rest.max(axis=0)
        return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
    if description.get("pegboard") is not None:
        pb = description["pegboard"]
        return np.array([pb["centre"][0], pb["centre"][1], pb["size"][2]])
    return np.zeros(3)


def default_camera(description: dict, *, view_angle: float | None = None) -> LaparoscopeCamera:
    """The scope of a scene description: the scene's own scope (`params`, see Scene.describe) if
    given, else aimed at `aim_target`; with the description's optics unless view_angle [rad] is
    given."""
    scope = description["scope"]
    angle = scope.get("view_angle", 0.0) if view_angle is None else view_angle
    if scope.get("params") is not None:
        cam = LaparoscopeCamera(port=np.asarray(scope["port"], dtype=float))
        cam.set_params(scope["params"])
        cam.view_angle = float(angle)
        return cam
    return LaparoscopeCamera.aimed_at(scope["port"], aim_target(description), view_angle=angle)
