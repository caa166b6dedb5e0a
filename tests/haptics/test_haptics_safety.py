"""Host-side force safety (pure): clamp, dF/dt limit, soft start; and the no-hardware devices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from haptics.device import DeviceError, DeviceSample, NullDevice, ReplayDevice
from haptics.safety import SOFT_RUN, SOFT_WAIT, ForceSafety


def run(s: ForceSafety, f, seconds: float, dt: float = 1e-3, t0: float = 0.0):
    """Apply the constant command f [N] every dt for `seconds`; returns outputs (N, 3), end t."""
    out, t = [], t0
    for _ in range(round(seconds / dt)):
        out.append(list(s.apply(*f, 0.0, t)))
        t += dt
    return np.array(out), t


def test_100_newtons_on_a_5_newton_device_never_exceeds_5_and_keeps_direction():
    s = ForceSafety(5.0, max_rate=1e6, ramp_s=0.5)
    run(s, (0, 0, 0), 0.01)
    out, _ = run(s, (60.0, -80.0, 0.0), 1.0)
    mags = np.linalg.norm(out, axis=1)
    assert mags.max() <= 5.0 + 1e-12
    assert mags[-1] == pytest.approx(5.0)
    nz = mags > 1e-9
    assert np.allclose(out[nz] / mags[nz, None], [0.6, -0.8, 0.0])


def test_dF_dt_limit_bounds_every_step():
    s = ForceSafety(5.0, max_rate=500.0, ramp_s=0.0)
    run(s, (0, 0, 0), 0.005)
    out, _ = run(s, (0.0, 0.0, 4.0), 0.05, t0=0.005)
    steps = np.linalg.norm(np.diff(np.vstack([[0, 0, 0], out]), axis=0), axis=1)
    assert steps.max() <= 500.0 * 1e-3 + 1e-12  # 0.5 N per 1 ms tick
    assert out[-1] == pytest.approx([0, 0, 4.0])
    assert out[6, 2] == pytest.approx(3.5)  # 7 ticks of 0.5 N


def test_soft_start_waits_while_the_command_is_large_then_ramps_over_ramp_s():
    s = ForceSafety(5.0, max_rate=1e6, ramp_s=2.0)
    out, t = run(s, (0.0, 2.0, 0.0), 0.5)
    assert s.phase == SOFT_WAIT and np.all(out == 0.0)
    run(s, (0.0, 0.1, 0.0), 0.01, t0=t)  # small: the ramp starts
    out, _ = run(s, (0.0, 2.0, 0.0), 2.2, t0=t + 0.01)
    assert out[999, 1] == pytest.approx(2.0 * 1.0 / 2.0, abs=0.02)  # half way at ~1 s
    assert out[-1, 1] == pytest.approx(2.0) and s.phase == SOFT_RUN


def test_reset_restarts_the_soft_start_from_zero():
    s = ForceSafety(5.0, max_rate=1e6, ramp_s=0.1)
    run(s, (0, 0, 0), 0.01)
    run(s, (1.0, 0, 0), 0.2, t0=0.01)
    s.reset()
    assert s.out == [0.0, 0.0, 0.0]
    out, _ = run(s, (1.0, 0, 0), 0.1, t0=1.0)
    assert np.all(out == 0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_commands_give_zero_force(bad):
    s = ForceSafety(5.0, max_rate=1e6, ramp_s=0.0)
    run(s, (1.0, 0, 0), 0.01)
    out = s.apply(bad, 0.0, 0.0, 0.0, 1.0)
    assert out == [0.0, 0.0, 0.0]


def test_gripper_force_is_clamped_to_the_device_limit():
    s = ForceSafety(5.0, max_gripper=2.0, ramp_s=0.0)
    s.apply(0, 0, 0, 0, 0.0)
    s.apply(0, 0, 0, -9.0, 0.001)
    assert s.gripper_out == -2.0


def test_null_device_reads_a_fixed_point_and_drops_force():
    with NullDevice((0.01, 0.0, 0.02)) as d:
        d.write_force((3.0, 0.0, 0.0))
        s = d.read()
        assert s.connected and s.position.tolist() == [0.01, 0.0, 0.02]
    assert d.last_force.tolist() == [0.0, 0.0, 0.0]


def test_replay_device_returns_recorded_samples_in_order(tmp_path):
    samples = [DeviceSample(t=i * 1e-3, position=np.array([i, 0, 0]) * 1e-3, buttons=i % 2)
               for i in range(5)]
    path = str(tmp_path / "rec.npz")
    ReplayDevice.save(path, samples)
    with ReplayDevice.load(path) as d:
        got = [d.read() for _ in range(6)]
    assert [s.position[0] for s in got] == pytest.approx([0, 1e-3, 2e-3, 3e-3, 4e-3, 4e-3])
    assert [s.fresh for s in got] == [True] * 5 + [False]
    with pytest.raises(DeviceError, match="cannot read recording"):
        ReplayDevice.load(str(tmp_path / "missing.npz"))
