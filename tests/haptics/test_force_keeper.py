"""The FORCE stream outlives a long servo tick (issue 11, item 5): with a ForceKeeper the device
watchdog does not trip while the loop is stuck for 150 ms, and a loop stuck for longer than
KEEP_HOLD_S gets zero force at the device, still without a watchdog trip."""

from __future__ import annotations

import time

from conftest import first_event, read_events, servo
from test_haptics_faults import MARGIN_S, ramp_up

from haptics.force_keeper import KEEP_HOLD_S, ForceKeeper


def _after(log, t0):
    return [n for t, n, _ in read_events(log) if t >= t0]


def test_a_150_ms_tick_keeps_the_force_on_with_a_keeper_and_trips_the_watchdog_without(make_device):
    dev = make_device(watchdog_ms=50)
    ramp_up(dev)
    t0 = time.monotonic()
    time.sleep(0.15)  # a long tick that releases the GIL (the tissue step), no keeper
    servo(dev, 0.1, force=(1.0, 0.0, 0.0))
    assert "watchdog_trip" in _after(dev.event_log, t0)  # what the keeper is for
    ramp_up(dev)
    with ForceKeeper([dev]) as keeper:
        t1 = time.monotonic()
        time.sleep(0.15)
        seen = _after(dev.event_log, t1)
        servo(dev, 0.1, force=(1.0, 0.0, 0.0))
    assert keeper.frames > 0
    assert "watchdog_trip" not in seen and "output_zero" not in seen, seen
    assert dev.read().force_applied[0] > 0.99


def test_a_loop_stuck_past_the_hold_time_gets_zero_force_not_a_watchdog_trip(make_device):
    dev = make_device(watchdog_ms=50)
    ramp_up(dev)
    with ForceKeeper([dev]):
        t0 = time.monotonic()
        time.sleep(KEEP_HOLD_S + 0.3)
        seen = _after(dev.event_log, t0)
        zero = first_event(dev.event_log, "output_zero", after=t0)
        assert "watchdog_trip" not in seen and zero is not None, seen
        assert KEEP_HOLD_S - 0.01 <= zero - t0 <= KEEP_HOLD_S + MARGIN_S
        ramp_up(dev)  # the loop is back: soft start, force again
