"""The laparoscope's field of view as a pure function of its pose (for metrics over a Trace).

Live, a procedure asks the scene (`scene.scope.in_view`); a Trace holds only the scope pose per
tick, so the metric "time out of view" needs the same frustum test without a scene: this one, with
the scope's default optics (`sim.camera.LaparoscopeCamera`: 70 deg vertical, 16:9, near 5 mm).

Pose convention: eye position [m] and quaternion (x, y, z, w) of the camera frame, whose local -z is
the view direction and local +y the image up (OpenGL camera).
"""

from __future__ import annotations

import numpy as np

from sim.camera import HD_ASPECT, LaparoscopeCamera

FOV_Y = float(LaparoscopeCamera.fov_y)  # [rad] the scope's default optics
ASPECT = HD_ASPECT
NEAR, FAR = float(LaparoscopeCamera.near), float(LaparoscopeCamera.far)  # [m]


def quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix (3, 3)."""
    w = np.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2
    y = np.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2
    z = np.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2
    x = np.copysign(x, r[2, 1] - r[1, 2])
    y = np.copysign(y, r[0, 2] - r[2, 0])
    z = np.copysign(z, r[1, 0] - r[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a unit quaternion (x, y, z, w)."""
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def look_pose(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera pose (7,) at eye [m] looking at target [m], image up toward world +z."""
    f = np.asarray(target, float) - np.asarray(eye, float)
    f /= np.linalg.norm(f)
    up = np.array([0.0, 0.0, 1.0]) - f * f[2]
    up /= np.linalg.norm(up)
    s = np.cross(f, up)
    return np.r_[np.asarray(eye, float), quat_from_matrix(np.c_[s, up, -f])]


class Frustum:
    """The view frustum of one scope pose (7,), precomputed for repeated tests."""

    def __init__(
        self,
        scope_pose: np.ndarray,
        *,
        fov_y: float = FOV_Y,
        aspect: float = ASPECT,
        near: float = NEAR,
        far: float = FAR,
    ) -> None:
        self.eye = np.asarray(scope_pose[:3], float).copy()
        self.rot = matrix_from_quat(np.asarray(scope_pose[3:7], float))
        self.ty = float(np.tan(fov_y / 2))
        self.tx = self.ty * aspect
        self.near, self.far = near, far

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each world point (k, 3) [m] is inside; bool (k,)."""
        local = (np.asarray(points, float).reshape(-1, 3) - self.eye) @ self.rot  # camera coordinates
        depth = -local[:, 2]
        return (
            (depth > self.near)
            & (depth < self.far)
            & (np.abs(local[:, 1]) <= self.ty * depth)
            & (np.abs(local[:, 0]) <= self.tx * depth)
        )


def in_view(points: np.ndarray, scope_pose: np.ndarray, **optics) -> np.ndarray:
    """Whether each world point (k, 3) [m] lies inside the frustum of scope_pose (7,); bool (k,).
    optics: fov_y [rad], aspect, near, far [m] (defaults: the renderer's scope)."""
    return Frustum(scope_pose, **optics).contains(points)
