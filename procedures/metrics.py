"""Motion and force metrics: pure functions over Trace arrays (no scene, no PyBullet).

Every function documents its formula and unit; docs/procedures.md collects them. Positions are tool
tips [m] sampled every dt [s]; speeds are taken from positions smoothed over SMOOTH_S, so the
1 kHz physics jitter and a hand's tremor (6-12 Hz) do not count as movements.
"""

from __future__ import annotations

import numpy as np

from procedures.view import in_view

#: [s] moving-average window for speeds: longer than one period of physiological tremor (>= 6 Hz),
#: which it attenuates ~10x, shorter than a deliberate move (>= 0.15 s).
SMOOTH_S = 0.15
MOVE_ON = 0.02  # [m/s] smoothed tip speed above which a movement starts
MOVE_OFF = 0.01  # [m/s] ... and below which it ends (hysteresis); also the idle threshold
FORCE_LIMIT = 1.5  # [N] force above which time is counted (time_force_over)


def path_length(p: np.ndarray) -> float:
    """Path length [m] = sum_i |p[i+1] - p[i]| over positions p (N, 3) [m]."""
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0


def angular_path(q: np.ndarray) -> float:
    """Angular path [rad] = sum_i angle(q[i] -> q[i+1]) = sum 2 acos(|q[i] . q[i+1]|) over unit
    quaternions q (N, 4) (x, y, z, w): the total rotation of the instrument."""
    if len(q) < 2:
        return 0.0
    dots = np.abs(np.einsum("ij,ij->i", q[:-1], q[1:]))
    return float((2.0 * np.arccos(np.clip(dots, 0.0, 1.0))).sum())


def smoothed_speed(p: np.ndarray, dt: float, window_s: float = SMOOTH_S) -> np.ndarray:
    """Tip speed [m/s], shape (N,): |d/dt| of positions (N, 3) smoothed by a centred moving average
    of window_s [s] (edges use the available samples)."""
    n = len(p)
    if n < 2:
        return np.zeros(n)
    w = max(1, int(round(window_s / dt)))
    lo = np.clip(np.arange(n) - w // 2, 0, n)
    hi = np.clip(np.arange(n) - w // 2 + w, 0, n)
    csum = np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p, axis=0)])
    sm = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    v = np.gradient(sm, dt, axis=0)
    return np.linalg.norm(v, axis=1)


def movement_segments(speed: np.ndarray, on: float = MOVE_ON, off: float = MOVE_OFF) -> list[tuple[int, int]]:
    """Movements as [start, end) sample ranges: speed rises above `on` [m/s] and the movement lasts
    until speed falls below `off` (hysteresis); each movement is widened to the neighbouring samples
    where speed was last/first below `off`."""
    segs = []
    moving = False
    start = 0
    for i, s in enumerate(speed):
        if not moving and s > on:
            moving = True
            j = i
            while j > 0 and speed[j - 1] >= off:
                j -= 1
            start = max(0, j - 1)
        elif moving and s < off:
            moving = False
            segs.append((start, i + 1))
    if moving:
        segs.append((start, len(speed)))
    return segs


def count_movements(speed: np.ndarray, on: float = MOVE_ON, off: float = MOVE_OFF) -> int:
    """Number of movements [-]: upward crossings of `on` [m/s] with hysteresis down to `off`."""
    return len(movement_segments(speed, on, off))


def dimensionless_jerk(p: np.ndarray, dt: float) -> float:
    """Dimensionless jerk [-] = (T^5 / L^2) * integral |d^3 p / dt^3|^2 dt, T = duration [s],
    L = path length [m]; jerk from third differences. A minimum-jerk point-to-point move gives 720."""
    if len(p) < 5:
        return float("nan")
    length = path_length(p)
    if length <= 0.0:
        return float("nan")
    jerk = np.diff(p, n=3, axis=0) / dt**3
    duration = (len(p) - 1) * dt
    return float(duration**5 / length**2 * np.einsum("ij,ij->", jerk, jerk) * dt)


def log_dimensionless_jerk(p: np.ndarray, dt: float) -> float:
    """ln(dimensionless jerk) [-]; lower = smoother (minimum-jerk move: ln 720 = 6.58)."""
    return float(np.log(dimensionless_jerk(p, dt)))


def mean_movement_ldlj(p: np.ndarray, dt: float, speed: np.ndarray | None = None) -> float:
    """Mean log dimensionless jerk over the movements of one hand (positions (N, 3)); NaN if none."""
    speed = smoothed_speed(p, dt) if speed is None else speed
    vals = [log_dimensionless_jerk(p[a:b], dt) for a, b in movement_segments(speed) if b - a > 20]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def idle_time(speeds: np.ndarray, dt: float, threshold: float = MOVE_OFF) -> float:
    """Idle time [s], summed over hands: for each hand the time its smoothed speed is below
    threshold [m/s]; speeds shape (n_hands, N). (A hand waiting while the other works is idle.)"""
    return float(np.count_nonzero(speeds < threshold) * dt)


def bimanual_dexterity(speeds: np.ndarray, threshold: float = MOVE_OFF) -> float:
    """Bimanual dexterity [-] in 0..1: time both hands move / time at least one moves (speeds
    (2, N) [m/s], moving = above threshold)."""
    moving = speeds > threshold
    anyone = np.count_nonzero(moving.any(axis=0))
    return float(np.count_nonzero(moving.all(axis=0)) / anyone) if anyone else 0.0


def economy_of_motion(p: np.ndarray, keypoints: list[int]) -> float:
    """Economy of motion [-] in 0..1: ideal path / actual path of one hand, the ideal path being the
    straight segments between the positions at `keypoints` (sample indices: start, each grasp and
    release, end)."""
    actual = path_length(p)
    if actual <= 0.0:
        return 1.0
    ks = sorted(set(int(k) for k in keypoints if 0 <= k < len(p)))
    return float(min(1.0, path_length(p[ks]) / actual))


def force_magnitudes(force: np.ndarray) -> np.ndarray:
    """|F| [N] per tick and hand, shape (N, n_hands), from forces (N, n_hands, 3)."""
    return np.linalg.norm(force, axis=2)


def time_above(values: np.ndarray, threshold: float, dt: float) -> float:
    """Time [s] during which any column of values (N, k) exceeds threshold."""
    return float(np.count_nonzero((values > threshold).any(axis=1)) * dt)


def time_out_of_view(tips: np.ndarray, scope_pose: np.ndarray, dt: float, **view) -> float:
    """Time [s] during which any tool tip (N, n_tools, 3) lies outside the scope frustum (scope_pose
    (N, 7) per tick). Consecutive equal scope poses are tested in one batch."""
    n, k = tips.shape[:2]
    out = np.zeros(n, bool)
    change = np.r_[0, np.flatnonzero(np.any(np.diff(scope_pose, axis=0) != 0, axis=1)) + 1, n]
    for a, b in zip(change[:-1], change[1:], strict=True):
        inside = in_view(tips[a:b].reshape(-1, 3), scope_pose[a], **view).reshape(b - a, k)
        out[a:b] = ~inside.all(axis=1)
    return float(np.count_nonzero(out) * dt)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d [-] = (mean(b) - mean(a)) / pooled SD, pooled SD = sqrt((var_a + var_b) / 2) with
    sample variances (ddof 1); +-inf when both groups are constant and differ, 0 when equal."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(b.mean() - a.mean())
    va = a.var(ddof=1) if len(a) > 1 else 0.0
    vb = b.var(ddof=1) if len(b) > 1 else 0.0
    sd = float(np.sqrt((va + vb) / 2))
    if sd == 0.0:
        return 0.0 if diff == 0.0 else float(np.copysign(np.inf, diff))
    return diff / sd
