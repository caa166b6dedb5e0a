"""Device calibration math: pure functions over arrays, no I/O.

Owns the fits the calibration wizard (haptics/calibrate_cli.py) runs on recorded samples, the
mapping a fitted calibration applies to raw encoder counts and to force commands, and the
reference jig trajectory (the documented jig points and workspace sweep, also written as an
emulator hand script so `--auto` can be proved against injected errors).

Encoder model per axis a (what the emulator's miscalibration knobs inject, and what a real
encoder with a wrong zero, a wrong transmission ratio and a reversed wire does):
``counts_a = slope_a * p_a + offset_a`` with ``slope_a = sign_a * (1 + gain_error_a) * cpm_a``,
p_a the true position [m], cpm_a the nominal counts per metre from INFO.
Force model per axis: ``F_true_a = force_gain_a * F_commanded_a``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The reference jig [m]: holes in a plate the handle tip is put into, in this order. A 3-D spread
# (origin + the 8 corners of a 80 mm cube) so each axis is fitted from three distinct levels.
JIG_POINTS = np.array(
    [[0.0, 0.0, 0.0]]
    + [[sx * 0.04, sy * 0.04, sz * 0.04] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)])

# Jig script timing [s] (for the emulator's script hand; a person is slower and that is fine:
# the wizard is driven by the buttons, not by time).
_LEAD_IN = 2.5  # a host started with the emulator catches the first cycle
_SWEEP_LEG = 0.15  # home -> +end, and -end -> home; +end -> -end takes twice as long
_SWEEP_HOLD = 0.05  # rest at each end so a host that drops frames still sees the extreme
_JIG_MOVE = 0.10
_JIG_SETTLE = 0.04  # still, button up: longer than any sensing latency we want to measure
_JIG_PRESS = 0.09  # still, button 1 down: the wizard records these samples
BUTTON_JIG = 1  # button 1: "the handle is in the jig hole, record"
BUTTON_SWEEP = 2  # button 2: "sweep in progress" (held for the whole sweep)


@dataclass
class AxisFit:
    """Per-axis linear encoder fit, each shape (3,).

    slope: fitted counts per metre, signed [counts/m]; offset_counts: counts at p = 0;
    sign: +1/-1; gain_error: |slope| / nominal - 1 (relative); offset_mm: offset_counts expressed
    in millimetres of nominal travel [mm]; residual_mm: RMS residual of the fit [mm];
    max_residual_mm [mm]; points: samples used.
    """

    slope: np.ndarray
    offset_counts: np.ndarray
    sign: np.ndarray
    gain_error: np.ndarray
    offset_mm: np.ndarray
    residual_mm: np.ndarray
    max_residual_mm: np.ndarray
    points: int


def fit_encoder(counts: np.ndarray, true_pos: np.ndarray, counts_per_m: np.ndarray) -> AxisFit:
    """Least-squares fit of counts = slope * p + offset per axis.

    counts: raw encoder counts, shape (N, 3); true_pos: jig positions [m], shape (N, 3);
    counts_per_m: nominal resolution from INFO, shape (3,). Needs at least two distinct
    positions per axis (ValueError otherwise).
    """
    c = np.asarray(counts, dtype=float).reshape(-1, 3)
    p = np.asarray(true_pos, dtype=float).reshape(-1, 3)
    cpm = np.asarray(counts_per_m, dtype=float).reshape(3)
    if len(c) != len(p):
        raise ValueError(f"{len(c)} count rows but {len(p)} positions")
    slope, offset, rms, worst = np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3)
    for a in range(3):
        if np.ptp(p[:, a]) <= 0.0:
            raise ValueError(f"axis {'xyz'[a]}: the jig points do not move along this axis")
        A = np.column_stack([p[:, a], np.ones(len(p))])
        (s, o), *_ = np.linalg.lstsq(A, c[:, a], rcond=None)
        if abs(s) < 1e-3 * cpm[a]:
            raise ValueError(f"axis {'xyz'[a]}: the encoder does not follow the jig points")
        slope[a], offset[a] = s, o
        r = (c[:, a] - (s * p[:, a] + o)) / abs(s) * 1e3  # [mm]
        rms[a] = float(np.sqrt(np.mean(r * r)))
        worst[a] = float(np.max(np.abs(r)))
    return AxisFit(slope=slope, offset_counts=offset, sign=np.where(slope < 0, -1.0, 1.0),
                   gain_error=np.abs(slope) / cpm - 1.0, offset_mm=offset / cpm * 1e3,
                   residual_mm=rms, max_residual_mm=worst, points=len(p))


@dataclass
class SweepFit:
    """Workspace sweep result, each shape (3,).

    min_counts/max_counts: extremes seen; offset_counts: their midpoint; gain_error: span over the
    nominal span of the workspace (2 * half extent * cpm), minus 1; sign: +1 if the + end (the one
    the user is told to visit first) read larger counts.
    """

    min_counts: np.ndarray
    max_counts: np.ndarray
    offset_counts: np.ndarray
    gain_error: np.ndarray
    sign: np.ndarray


def fit_sweep(counts: np.ndarray, axis_first_extreme: np.ndarray, workspace: np.ndarray,
              counts_per_m: np.ndarray) -> SweepFit:
    """Per-axis range, midpoint, scale and sign from a sweep to the mechanical stops.

    counts: all raw samples of the sweep, shape (N, 3); axis_first_extreme: for each axis, the
    counts at the first end visited (the + end, as instructed), shape (3,); workspace: half extents
    [m], shape (3,); counts_per_m: nominal, shape (3,).
    """
    c = np.asarray(counts, dtype=float).reshape(-1, 3)
    lo, hi = c.min(axis=0), c.max(axis=0)
    mid = 0.5 * (lo + hi)
    span = 2.0 * np.asarray(workspace, dtype=float) * np.asarray(counts_per_m, dtype=float)
    sign = np.where(np.asarray(axis_first_extreme, dtype=float) >= mid, 1.0, -1.0)
    return SweepFit(min_counts=lo, max_counts=hi, offset_counts=mid, gain_error=(hi - lo) / span - 1,
                    sign=sign)


def fit_force_gain(commanded: np.ndarray, displacement: np.ndarray,
                   stiffness: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis force gain from static pushes against a reference spring.

    commanded: force commanded along each push [N], shape (N, 3); displacement: calibrated
    handle displacement each push caused [m], shape (N, 3); stiffness: the reference spring [N/m].
    The true force is stiffness * displacement; fits true = gain * commanded through the origin
    on the pushes that command that axis. Returns (gain, rms residual [N]), each shape (3,).
    """
    f = np.asarray(commanded, dtype=float).reshape(-1, 3)
    t = stiffness * np.asarray(displacement, dtype=float).reshape(-1, 3)
    gain, resid = np.full(3, np.nan), np.full(3, np.nan)
    for a in range(3):
        m = np.abs(f[:, a]) > 1e-9
        if not m.any():
            continue
        fa, ta = f[m, a], t[m, a]
        gain[a] = float(fa @ ta / (fa @ fa))
        resid[a] = float(np.sqrt(np.mean((ta - gain[a] * fa) ** 2)))
    return gain, resid


def motion_onset(seq: np.ndarray, counts: np.ndarray, step_index: int, *,
                 threshold: float = 2.0, baseline: int = 20) -> int | None:
    """Ticks from a force step to the first sensed motion, or None if not measurable.

    seq: STATE sequence numbers (one per device tick), shape (N,); counts: raw counts of the pushed
    axis, shape (N,); step_index: index of the first STATE echoing the step's FORCE (the tick
    the device first applied it). The `baseline` samples before it must be contiguous and still
    (the handle at rest), and the samples after it contiguous until motion exceeds `threshold`
    counts; otherwise the trial is unusable (frames lost, handle not settled) and None is returned.
    """
    seq = np.asarray(seq, dtype=np.int64)
    c = np.asarray(counts, dtype=float)
    if step_index < baseline or step_index >= len(c):
        return None
    pre = c[step_index - baseline:step_index]
    if np.ptp(pre) > 0.5 * threshold or np.any(np.diff(seq[step_index - baseline:step_index + 1]) != 1):
        return None
    ref = float(np.median(pre))
    for i in range(step_index, len(c)):
        if i > step_index and seq[i] - seq[i - 1] != 1:
            return None
        if abs(c[i] - ref) >= threshold:
            return int(seq[i] - seq[step_index])
    return None


# ------------------------------------------------------------------------------------ mapping

def counts_to_position(counts: np.ndarray, slope: np.ndarray, offset_counts: np.ndarray) -> np.ndarray:
    """Raw counts, shape (..., 3) -> calibrated position [m], shape (..., 3)."""
    return (np.asarray(counts, dtype=float) - offset_counts) / slope


def force_to_command(force: np.ndarray, force_gain: np.ndarray) -> np.ndarray:
    """The force [N] to command so the device applies `force` [N], shape (3,)."""
    return np.asarray(force, dtype=float) / force_gain


# ------------------------------------------------------------------------------ jig trajectory

def jig_script(workspace: np.ndarray, *, cycles: int = 6) -> list[tuple[float, ...]]:
    """The reference procedure as rows (t [s], x, y, z [m], gripper [rad], buttons), repeated.

    One cycle: button 2 held while the handle visits, per axis, the + stop, the - stop and home
    (the sweep); then for each JIG_POINTS entry: move there, settle, hold button 1, settle. This is
    what the guided wizard asks a person to do; the emulator plays it with `--hand script:FILE`.
    """
    ws = np.asarray(workspace, dtype=float)
    rows: list[tuple[float, ...]] = []
    t = 0.0

    def at(p, buttons: int, dt: float) -> None:
        nonlocal t
        t += dt
        rows.append((round(t, 4), float(p[0]), float(p[1]), float(p[2]), 0.3, float(buttons)))

    home = np.zeros(3)
    rows.append((0.0, 0.0, 0.0, 0.0, 0.3, 0.0))
    at(home, 0, _LEAD_IN)
    for _ in range(cycles):
        at(home, BUTTON_SWEEP, 0.02)
        for a in range(3):
            end = np.zeros(3)
            end[a] = ws[a]
            at(end, BUTTON_SWEEP, _SWEEP_LEG)
            at(end, BUTTON_SWEEP, _SWEEP_HOLD)
            at(-end, BUTTON_SWEEP, 2 * _SWEEP_LEG)
            at(-end, BUTTON_SWEEP, _SWEEP_HOLD)
            at(home, BUTTON_SWEEP, _SWEEP_LEG)
        at(home, 0, 0.02)
        for p in JIG_POINTS:
            at(p, 0, _JIG_MOVE)
            at(p, BUTTON_JIG, _JIG_SETTLE)
            at(p, 0, _JIG_PRESS)
            at(p, 0, _JIG_SETTLE)
        at(home, 0, _JIG_MOVE)
    return rows


def write_jig_script(path: str, workspace: np.ndarray, *, cycles: int = 6) -> None:
    """Write jig_script() as an emulator hand script ("t x y z gripper buttons" rows)."""
    with open(path, "w") as fh:
        fh.write("# trocar reference jig procedure: t[s] x y z [m] gripper[rad] buttons\n")
        for r in jig_script(workspace, cycles=cycles):
            fh.write(" ".join(f"{v:.6g}" for v in r) + "\n")


# ------------------------------------------------------------------------- gravity (step 6)

GRAVITY_FEATURES = ("1", "x", "y", "z", "xx", "yy", "zz", "xy", "xz", "yz")


def gravity_features(p: np.ndarray) -> np.ndarray:
    """Quadratic features of calibrated positions p [m], shape (N, 3) -> (N, 10), in the order
    of GRAVITY_FEATURES (positions in metres, so coefficients are N, N/m, N/m^2)."""
    p = np.asarray(p, dtype=float).reshape(-1, 3)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    return np.column_stack([np.ones(len(p)), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z])


def gravity_grid(workspace: np.ndarray, *, n: int = 3, fraction: float = 0.5) -> np.ndarray:
    """The poses of the gravity step [m], shape (n^3, 3): an n x n x n grid over `fraction` of
    the workspace half extents [m], in a serpentine order (short moves between poses)."""
    ws = np.asarray(workspace, dtype=float) * fraction
    lv = [np.linspace(-w, w, n) for w in ws]
    out = []
    for i, z in enumerate(lv[2]):
        for j, y in enumerate(lv[1] if i % 2 == 0 else lv[1][::-1]):
            xs = lv[0] if (i * n + j) % 2 == 0 else lv[0][::-1]
            out.extend([x, y, z] for x in xs)
    return np.array(out)


def fit_gravity(poses: np.ndarray, holding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares gravity model: holding force [N], shape (N, 3), at poses [m], shape (N, 3)
    -> (coefficients, shape (3, 10), rms residual [N], shape (3,)). Each axis' holding force is a
    quadratic in position (GRAVITY_FEATURES): smooth arm-weight loads over a workspace are close
    to quadratic, and a model linear in its coefficients stays exact under per-axis force gains.
    Needs at least 10 poses spread over all three axes (ValueError otherwise)."""
    X = gravity_features(poses)
    h = np.asarray(holding, dtype=float).reshape(-1, 3)
    if len(X) < X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError(f"{len(X)} poses do not determine the gravity model (need a 3-D grid)")
    coef, *_ = np.linalg.lstsq(X, h, rcond=None)
    resid = np.sqrt(np.mean((h - X @ coef) ** 2, axis=0))
    return coef.T, resid


def gravity_force(coefficients: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Holding force [N] the model `coefficients` (3, 10) gives at p [m], shape (3,) or (N, 3)."""
    p = np.asarray(p, dtype=float)
    out = gravity_features(p.reshape(-1, 3)) @ np.asarray(coefficients, dtype=float).T
    return out.reshape(p.shape)


# ----------------------------------------------------------------------- stability (step 7)

def decay_ratio(x: np.ndarray, *, split: float = 0.5) -> tuple[float, float]:
    """Growth of an oscillation recorded after a kick: RMS about a linear trend of the second
    part of `x` [m] over the first part (split at `split`), and the first part's RMS [m].

    Below 1 the oscillation decays (the wall is stable), above 1 it grows. For a pole pair
    s = sigma +- j omega the ratio is exp(sigma * T_half), so the decision at 1 is unbiased.
    """
    x = np.asarray(x, dtype=float)
    k = int(len(x) * split)
    if k < 8 or len(x) - k < 8:
        raise ValueError("too few samples for a decay ratio")

    def rms(seg: np.ndarray) -> float:
        t = np.arange(len(seg), dtype=float)
        a, b = np.polyfit(t, seg, 1)
        return float(np.sqrt(np.mean((seg - (a * t + b)) ** 2)))

    first, second = rms(x[:k]), rms(x[k:])
    return (second / first if first > 0 else (np.inf if second > 0 else 0.0)), first
