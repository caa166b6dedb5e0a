"""Calibration fits on synthetic data: known errors in, the same errors out."""

from __future__ import annotations

import numpy as np
import pytest

from haptics import calibration as C

CPM = np.array([1e5, 1e5, 1e5])


def _encoder(p, sign, gain, offset):
    return np.round(sign * (1 + gain) * p * CPM + offset)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jig_fit_recovers_offset_gain_and_sign_of_a_quantised_encoder(seed):
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], 3)
    gain = rng.uniform(-0.05, 0.05, 3)
    offset = rng.integers(-3000, 3000, 3).astype(float)
    fit = C.fit_encoder(_encoder(C.JIG_POINTS, sign, gain, offset), C.JIG_POINTS, CPM)
    assert np.array_equal(fit.sign, sign)
    assert np.all(np.abs((1 + fit.gain_error) / (1 + gain) - 1) < 0.001)
    assert np.all(np.abs(fit.offset_counts - offset) / CPM * 1e3 < 0.01)  # [mm]
    assert np.all(fit.max_residual_mm < 0.01)  # quantisation only: 10 um counts
    p = C.counts_to_position(_encoder(C.JIG_POINTS, sign, gain, offset), fit.slope, fit.offset_counts)
    assert np.max(np.abs(p - C.JIG_POINTS)) < 1e-5


def test_jig_fit_reports_a_bad_jig_point_in_its_residual():
    counts = _encoder(C.JIG_POINTS, np.ones(3), np.zeros(3), np.zeros(3))
    counts[3, 1] += 200  # 2 mm off in y: the tip was not in the hole
    fit = C.fit_encoder(counts, C.JIG_POINTS, CPM)
    assert fit.max_residual_mm[1] > 1.0 and fit.max_residual_mm[0] < 0.01


def test_jig_fit_needs_points_spread_along_every_axis():
    pts = C.JIG_POINTS.copy()
    pts[:, 2] = 0.0
    with pytest.raises(ValueError, match="axis z: the jig points do not move"):
        C.fit_encoder(_encoder(pts, np.ones(3), np.zeros(3), np.zeros(3)), pts, CPM)


def test_jig_fit_refuses_an_encoder_that_does_not_count():
    counts = _encoder(C.JIG_POINTS, np.ones(3), np.zeros(3), np.zeros(3))
    counts[:, 1] = 42  # y encoder unplugged
    with pytest.raises(ValueError, match="axis y: the encoder does not follow"):
        C.fit_encoder(counts, C.JIG_POINTS, CPM)


def test_sweep_fit_finds_range_midpoint_scale_and_a_flipped_axis():
    ws = np.array([0.08, 0.08, 0.08])
    sign, gain, offset = np.array([1.0, -1.0, 1.0]), np.array([0.02, 0.0, -0.03]), np.array([500, 0, -70])
    t = np.linspace(0, 1, 201)
    sweep = []
    for a in range(3):  # + stop, - stop, home
        path = np.concatenate([t, 1 - 2 * t, t - 1]) * ws[a]
        p = np.zeros((len(path), 3))
        p[:, a] = path
        sweep.append(p)
    pos = np.concatenate(sweep)
    counts = _encoder(pos, sign, gain, offset)
    first = np.array([_encoder(np.diag(ws)[a], sign, gain, offset)[a] for a in range(3)])
    fit = C.fit_sweep(counts, first, ws, CPM)
    assert np.array_equal(fit.sign, sign)
    assert np.allclose(fit.offset_counts, offset, atol=1)
    assert np.allclose(fit.gain_error, gain, atol=1e-4)


def test_force_gain_fit_recovers_per_axis_motor_constants():
    k = 200.0
    gain = np.array([1.07, 0.91, 1.0])
    cmd = np.array([[3, 0, 0], [-3, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0, 3], [0, 0, -3]], float)
    disp = cmd * gain / k
    g, resid = C.fit_force_gain(cmd, disp, k)
    assert np.allclose(g, gain, rtol=1e-9) and np.all(resid < 1e-9)


def test_motion_onset_counts_device_ticks_from_the_force_step_to_motion():
    seq = np.arange(100, 200)
    counts = np.full(100, 1234.0)
    counts[56:] += np.arange(44) * 3 + 3  # the step was applied at index 50; motion 6 ticks later
    assert C.motion_onset(seq, counts, 50) == 6


def test_motion_onset_refuses_a_trial_with_lost_frames_or_a_moving_handle():
    seq = np.arange(100)
    counts = np.zeros(100)
    counts[60:] = 10
    gap = seq.copy()
    gap[55:] += 1
    assert C.motion_onset(gap, counts, 50) is None
    moving = counts.copy()
    moving[35] = 5
    assert C.motion_onset(seq, moving, 50) is None
    assert C.motion_onset(seq, counts, 5) is None  # no baseline before the step


def test_jig_script_presses_button_1_once_per_jig_point_per_cycle():
    rows = np.array(C.jig_script(np.array([0.08, 0.08, 0.08]), cycles=2))
    b = rows[:, 5].astype(int)
    presses = np.sum((b[1:] & C.BUTTON_JIG) & ~(b[:-1] & C.BUTTON_JIG))
    sweeps = np.sum((b[1:] & C.BUTTON_SWEEP) & ~(b[:-1] & C.BUTTON_SWEEP)) // C.BUTTON_SWEEP
    assert presses == 2 * len(C.JIG_POINTS) and sweeps == 2
    assert np.all(np.diff(rows[:, 0]) > 0)


def test_force_command_divides_by_the_gain_so_the_handle_feels_the_request():
    assert np.allclose(C.force_to_command([1.0, -2.0, 0.5], np.array([0.5, 2.0, 1.0])) * [0.5, 2, 1],
                       [1.0, -2.0, 0.5])


def _recording(sign, gain, offset, bad_hole: int | None = None) -> np.ndarray:
    """What the wizard records (seq, t_us, x, y, z, buttons, echo) at 1 kHz while a hand plays the
    jig script on an encoder with the given errors; bad_hole: that press misses its hole by 3 mm."""
    rows = np.array(C.jig_script(np.array([0.08, 0.08, 0.08]), cycles=1))
    t = np.arange(0.0, rows[-1, 0], 1e-3)
    pos = np.column_stack([np.interp(t, rows[:, 0], rows[:, i]) for i in (1, 2, 3)])
    buttons = rows[np.searchsorted(rows[:, 0], t, side="right") - 1, 5].astype(np.int64)
    if bad_hole is not None:
        b = (buttons & C.BUTTON_JIG) != 0
        starts = np.flatnonzero(b[1:] & ~b[:-1]) + 1
        i0 = starts[bad_hole - 1]
        pos[i0 - 50:i0 + 200, 0] += 0.003
    counts = _encoder(pos, sign, gain, offset).astype(np.int64)
    n = len(t)
    return np.column_stack([np.arange(n), (t * 1e6).astype(np.int64), counts, buttons, np.zeros(n)]
                           ).astype(np.int64)


def _info():
    from haptics import protocol as P
    return P.Info((1, 0), (1, 0, 0), "T", tuple(CPM), 2000.0, 5.0, 2.0, 2000.0, (0.08, 0.08, 0.08),
                  50, 1000)


def test_wizard_fit_of_a_recorded_jig_cycle_recovers_the_encoder_and_the_sweep():
    from haptics.calibration_steps import fit_position

    sign, gain, offset = np.array([-1.0, 1.0, -1.0]), np.array([0.04, -0.01, 0.0]), np.array([900, -30, 5])
    position, workspace = fit_position(_recording(sign, gain, offset), _info())
    assert np.array_equal(position["sign"], sign) and np.array_equal(workspace["sign"], sign)
    assert np.allclose(position["gain_error"], gain, atol=1e-4)
    assert np.allclose(position["offset_counts"], offset, atol=1)
    assert np.allclose(workspace["gain_error"], gain, atol=1e-3)


def test_wizard_fails_the_jig_step_naming_the_hole_the_tip_missed():
    from haptics.calibration_steps import CalibrationFailed, fit_position

    rec = _recording(np.ones(3), np.zeros(3), np.zeros(3), bad_hole=4)
    with pytest.raises(CalibrationFailed, match="worst at hole 4"):
        fit_position(rec, _info())


def test_stability_step_refuses_a_window_where_the_host_was_late_for_the_device():
    # The refusal for real overload stays: a window in which the device applied, at more than
    # WALL_UNSTEADY_FRACTION of its ticks, a force answering another STATE than usual is not
    # the device's own loop (calibrate_cli.steady_loop); a steady one is.
    from haptics.calibration_stability import WALL_UNSTEADY_FRACTION, steady_loop

    rng = np.random.default_rng(0)
    steady = np.full(300, 7)
    assert steady_loop(steady)
    late = steady.copy()
    late[rng.choice(300, int(300 * (WALL_UNSTEADY_FRACTION + 0.05)), replace=False)] = 9
    assert not steady_loop(late)
    few = steady.copy()
    few[rng.choice(300, int(300 * WALL_UNSTEADY_FRACTION / 2), replace=False)] = 9
    assert steady_loop(few)
