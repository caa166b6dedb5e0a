"""Metrics and the score on inputs with answers computed by hand (procedures.metrics, .scoring)."""

import numpy as np
import pytest

from procedures import metrics as mx
from procedures.policies.motion import minimum_jerk
from procedures.scoring import fls_score
from procedures.view import in_view, look_pose

DT = 1e-3


def straight_move(length: float, seconds: float, *, rest: float = 0.0) -> np.ndarray:
    """A minimum-jerk move along x of `length` [m] in `seconds`, sampled at 1 kHz, with `rest`
    seconds standing still before and after."""
    n = int(round(seconds / DT))
    x = np.array([length * minimum_jerk(k / n) for k in range(n + 1)])
    pad = int(round(rest / DT))
    x = np.r_[np.zeros(pad), x, np.full(pad, length)]
    return np.c_[x, np.zeros_like(x), np.zeros_like(x)]


def test_straight_move_path_length_and_jerk_match_the_hand_computed_values():
    p = straight_move(0.10, 2.0)
    assert mx.path_length(p) == pytest.approx(0.10, abs=1e-12)
    # Minimum-jerk: integral |x'''|^2 dt = 720 L^2 / T^5, so the dimensionless jerk is 720. Third
    # differences miss ~1.5 samples at each end, where the jerk is largest: -0.5 % at T = 2 s.
    assert mx.dimensionless_jerk(p, DT) == pytest.approx(720.0, rel=0.01)
    assert mx.log_dimensionless_jerk(p, DT) == pytest.approx(np.log(720.0), abs=0.01)


def test_a_shaky_move_is_less_smooth_than_a_clean_one():
    p = straight_move(0.10, 0.8)
    t = np.arange(len(p)) * DT
    shaky = p + np.c_[np.zeros(len(p)), 3e-4 * np.sin(2 * np.pi * 8 * t), np.zeros(len(p))]
    assert mx.log_dimensionless_jerk(shaky, DT) > mx.log_dimensionless_jerk(p, DT) + 1.0


def test_two_separate_moves_count_as_two_movements_with_idle_time_between():
    a = straight_move(0.05, 0.5, rest=0.5)
    b = straight_move(0.05, 0.5, rest=0.5) + [0.05, 0.0, 0.0]
    p = np.r_[a, b]
    speed = mx.smoothed_speed(p, DT)
    assert mx.count_movements(speed) == 2
    # Idle: 0.5 s before, 1.0 s between, 0.5 s after, plus the slow ends of each move (< 10 mm/s),
    # minus what the 0.15 s smoothing spreads into the rests.
    idle = mx.idle_time(speed[None, :], DT)
    assert 1.8 < idle < 2.4
    still_hand = np.zeros((1, len(speed)))  # a second hand that never moves adds all of its time
    assert mx.idle_time(np.r_[speed[None, :], still_hand], DT) == pytest.approx(idle + len(p) * DT)
    assert mx.economy_of_motion(p, [0, len(p) - 1]) == pytest.approx(1.0)


def test_a_detour_halves_the_economy_of_motion():
    out = straight_move(0.05, 0.5)
    back = out[::-1]
    p = np.r_[out, back[1:], out[1:]]  # go, come back, go again: 3x the straight distance
    assert mx.economy_of_motion(p, [0, len(p) - 1]) == pytest.approx(1.0 / 3.0, rel=1e-9)
    # With the turn points as key points (e.g. a grasp there) the path is ideal again.
    assert mx.economy_of_motion(p, [0, len(out) - 1, 2 * len(out) - 2, len(p) - 1]) == pytest.approx(1.0)


def test_angular_path_of_a_quarter_turn():
    angles = np.linspace(0.0, np.pi / 2, 101)
    q = np.c_[np.zeros(101), np.zeros(101), np.sin(angles / 2), np.cos(angles / 2)]
    assert mx.angular_path(q) == pytest.approx(np.pi / 2, rel=1e-9)


def test_bimanual_dexterity_is_the_share_of_moving_time_both_hands_move():
    s = np.zeros((2, 100))
    s[0, 0:60] = 0.1
    s[1, 40:80] = 0.1  # both move during 40..60 (20 samples) of 80 moving samples
    assert mx.bimanual_dexterity(s) == pytest.approx(0.25)


def test_force_time_above_threshold_counts_any_hand():
    f = np.zeros((1000, 2, 3))
    f[100:300, 0, 2] = 2.0
    f[200:400, 1, 0] = -2.0
    mags = mx.force_magnitudes(f)
    assert mx.time_above(mags, 1.5, DT) == pytest.approx(0.3)
    assert mags.max() == pytest.approx(2.0)


def test_time_out_of_view_counts_ticks_with_any_tip_outside_the_frustum():
    scope = look_pose([0.0, -0.08, 0.14], [0.0, 0.0, 0.01])
    inside, behind = np.array([0.0, 0.0, 0.02]), np.array([0.0, -0.2, 0.3])
    assert in_view(np.array([inside, behind]), scope).tolist() == [True, False]
    tips = np.zeros((1000, 2, 3))
    tips[:] = inside
    tips[600:, 1] = behind
    assert mx.time_out_of_view(tips, np.tile(scope, (1000, 1)), DT) == pytest.approx(0.4)


def test_cohens_d_on_known_groups():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])
    assert mx.cohens_d(a, b) == pytest.approx(2.0)  # pooled SD 1
    assert mx.cohens_d(b, a) == pytest.approx(-2.0)
    assert mx.cohens_d(np.zeros(3), np.ones(3)) == np.inf


def test_fls_score_on_fixed_inputs():
    assert fls_score(48.0, 0.0, 300.0) == pytest.approx(84.0)
    assert fls_score(100.0, 100.0 / 6, 300.0) == pytest.approx(100.0 * (300 - 100 - 100 / 6) / 300, abs=1e-3)
    assert fls_score(300.0, 0.0, 300.0) == 0.0  # timed out
    assert fls_score(290.0, 50.0, 300.0) == 0.0  # penalties never make it negative
