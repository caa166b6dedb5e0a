"""Trocar ports: the fulcrum (remote centre of motion) geometry and target projection.

Owns the pure kinematics of an instrument pivoting about a port: the gimbal angles <-> shaft direction
map, the tool-tip position and its Jacobian, and the projection of a commanded tool-tip target onto
the set of poses the port allows. Everything is NumPy float64, no PyBullet; `sim.instruments` builds
the bodies whose joints realise exactly these coordinates, so the fulcrum holds by construction.

Coordinates (world frame, z up, metres and radians). A port sits on the box-trainer top and its inward
axis is world -z. The instrument has 4 DOF about the port:

    a  [rad]  rotation about world x at the port ("pitch"),
    b  [rad]  rotation about the rotated y axis ("yaw"),
    s  [m]    insertion depth: distance from the port to the tool tip along the shaft,
    r  [rad]  roll about the shaft axis (does not move the tip; the tip lies on the axis).

Shaft direction (port -> tip): u = Rx(a) Ry(b) (0, 0, -1) = (-sin b, sin a cos b, -cos a cos b).
The chain is x-then-y so its singularity (b = +-90 deg, shaft horizontal) lies outside every port cone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The inward axis of every port (box-trainer top): world -z.
PORT_AXIS = np.array([0.0, 0.0, -1.0])


@dataclass(frozen=True)
class Port:
    """A trocar port: a fixed point the shaft must pass through.

    Attributes:
        position: fulcrum point in world [m], shape (3,).
        max_angle: half-angle of the cone of allowed shaft directions about world -z [rad]
            (60 deg by default: a box trainer lets the shaft swing about that far).
    """

    position: tuple[float, float, float]
    max_angle: float = float(np.radians(60.0))

    def point(self) -> np.ndarray:
        """The fulcrum point [m], shape (3,), float64."""
        return np.asarray(self.position, dtype=np.float64)


def shaft_direction(a: float, b: float) -> np.ndarray:
    """Unit shaft direction (port -> tip) for gimbal angles a, b [rad]; shape (3,)."""
    sa, ca, sb, cb = np.sin(a), np.cos(a), np.sin(b), np.cos(b)
    return np.array([-sb, sa * cb, -ca * cb])


def gimbal_angles(u: np.ndarray) -> tuple[float, float]:
    """Inverse of `shaft_direction`: (a, b) [rad] for a unit direction u (3,) pointing below the port."""
    u = np.asarray(u, dtype=np.float64)
    b = float(np.arctan2(-u[0], np.hypot(u[1], u[2])))
    a = float(np.arctan2(u[1], -u[2]))
    return a, b


def tip_position(port: np.ndarray, a: float, b: float, s: float) -> np.ndarray:
    """Tool-tip position [m], shape (3,): port + s * u(a, b)."""
    return np.asarray(port, dtype=np.float64) + s * shaft_direction(a, b)


def tip_jacobian(a: float, b: float, s: float) -> np.ndarray:
    """d(tip)/d(a, b, s), shape (3, 3); columns in [m/rad], [m/rad], [-]. Roll does not move the tip."""
    sa, ca, sb, cb = np.sin(a), np.cos(a), np.sin(b), np.cos(b)
    return np.array(
        [
            [0.0, -s * cb, -sb],
            [s * ca * cb, -s * sa * sb, sa * cb],
            [s * sa * cb, s * ca * sb, -ca * cb],
        ]
    )


def clamp_to_cone(u: np.ndarray, max_angle: float) -> np.ndarray:
    """The unit direction closest to u inside the cone of half-angle max_angle [rad] about world -z.

    u: direction, shape (3,), need not be unit length. A direction outside the cone is rotated toward
    -z in the plane spanned by u and -z (the closest point on the unit sphere). A direction with no
    horizontal part pointing up (degenerate) maps to -z itself.
    """
    u = np.asarray(u, dtype=np.float64)
    n = np.linalg.norm(u)
    if n == 0.0:
        return PORT_AXIS.copy()
    u = u / n
    cos_angle = -u[2]
    if cos_angle >= np.cos(max_angle):
        return u
    horizontal = np.array([u[0], u[1], 0.0])
    h = np.linalg.norm(horizontal)
    if h == 0.0:
        return PORT_AXIS.copy()
    return np.sin(max_angle) * horizontal / h + np.cos(max_angle) * PORT_AXIS


def project_pose_target(
    port: np.ndarray,
    tip: np.ndarray,
    axis: np.ndarray | None,
    *,
    max_angle: float,
    min_depth: float,
    max_depth: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Project a commanded tool pose onto the poses the port allows.

    The reachable tips are port + s * u with u in the port cone and s in [min_depth, max_depth]. The
    commanded shaft direction `axis` (clamped into the cone) fixes the line through the port; the tip
    goes to the closest point of that line segment to the commanded tip. Without an axis (a 3-DOF
    position command) the line is the one through the port and the commanded tip, so any tip below the
    port inside the cone and depth range is obeyed exactly.

    Args:
        port: fulcrum [m], shape (3,).
        tip: commanded tool-tip position [m], shape (3,).
        axis: commanded shaft direction (toward the tip), shape (3,), or None.
        max_angle: cone half-angle [rad]; min_depth, max_depth: insertion range [m].

    Returns:
        (tip_projected [m] (3,), u unit shaft direction (3,), s depth [m]).
    """
    port = np.asarray(port, dtype=np.float64)
    tip = np.asarray(tip, dtype=np.float64)
    d = tip - port
    u = clamp_to_cone(d if axis is None else np.asarray(axis, dtype=np.float64), max_angle)
    s = float(np.clip(d @ u, min_depth, max_depth))
    return port + s * u, u, s


def project_tip_target(
    port: np.ndarray, tip: np.ndarray, *, max_angle: float, min_depth: float, max_depth: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """`project_pose_target` for a position-only command (the line through the port and the tip)."""
    return project_pose_target(
        port, tip, None, max_angle=max_angle, min_depth=min_depth, max_depth=max_depth
    )


def distance_to_line(point: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> float:
    """Distance [m] from point (3,) to the infinite line origin + t * direction (direction any length)."""
    direction = np.asarray(direction, dtype=np.float64)
    direction = direction / np.linalg.norm(direction)
    d = np.asarray(point, dtype=np.float64) - np.asarray(origin, dtype=np.float64)
    return float(np.linalg.norm(d - (d @ direction) * direction))
