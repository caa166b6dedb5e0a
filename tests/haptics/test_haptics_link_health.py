"""Link robustness (issue 11): a handshake that retries, a shutdown the device confirms, the
20 ms host link timeout, and the link-health counters, each against the real emulator process
with its own fault flags; what the device saw is read from its event log.
"""

from __future__ import annotations

import time

import pytest
from conftest import first_event, read_events, servo
from test_haptics_faults import MARGIN_S, events, ramp_up

from haptics.device import DeviceError
from haptics.emulator_physics import RAMP_DOWN_S
from haptics.serial_device import SHUTDOWN_CONFIRM_S, SerialDevice
from haptics.serial_link import HANDSHAKE_RETRY_S, STATE_TIMEOUT_S


def _count(log, name: str) -> int:
    return sum(1 for _, n, _ in read_events(log) if n == name)


def test_lost_info_frames_are_asked_for_again_and_the_device_opens(make_device):
    # The ACK of GET_INFO arrives but its INFO frame is corrupted, three times in a row.
    dev = make_device("--lose-info", "3")
    assert dev.phase == "running" and dev.spec.serial == "EMU-0001"
    assert _count(dev.event_log, "get_info") >= 4  # the device was asked again each time
    assert _count(dev.event_log, "enable") == 1
    ramp_up(dev)


@pytest.mark.parametrize("seed", range(4))
def test_one_percent_byte_loss_during_the_handshake_never_stops_the_open(make_device, seed):
    dev = make_device("--drop-bytes", "0.01", "--seed", str(seed))
    assert dev.phase == "running"
    assert first_event(dev.event_log, "enable") is not None


def test_reconnect_after_replug_retries_the_handshake_too(make_device, tmp_path):
    link = str(tmp_path / "haptic0")
    dev = make_device("--unplug-at", "0.5", "--replug-after", "0.3", "--lose-info", "2", link=link)
    ramp_up(dev)
    servo(dev, 3.0, until=lambda s: not s.connected)
    t_replug_asked = _count(dev.event_log, "get_info")
    servo(dev, 5.0, until=lambda s: dev.phase == "running")
    assert dev.phase == "running", [e.message for e in dev.events]
    assert _count(dev.event_log, "get_info") >= t_replug_asked + 3  # two lost INFO, asked again
    ramp_up(dev)
    st = dev.link_stats()
    assert st["disconnects"] >= 1 and st["reconnects"] >= 1
    assert st["time_without_device_s"] >= 0.3  # at least the time the device was unplugged


def test_a_handshake_that_never_completes_fails_with_one_line_at_the_deadline(emulator):
    link, log = emulator("--lose-info", "1000")
    dev = SerialDevice(link, handshake_timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as err:
        dev.open()
    took = time.monotonic() - t0
    msg = str(err.value)
    assert "no INFO" in msg and "\n" not in msg
    assert 0.5 <= took < 0.5 + MARGIN_S  # the deadline, not forever
    assert _count(log, "get_info") >= 0.5 / HANDSHAKE_RETRY_S - 1  # asked again all along


@pytest.mark.parametrize("seed", range(3))
def test_shutdown_with_5_percent_host_to_device_loss_is_confirmed_by_the_device(emulator, seed):
    # ~5 % of the bytes to the device are lost (a CMD frame is lost ~45 % of the time); the
    # device watchdog is set long (1 s) so that only the host's shutdown can stop the force.
    link, log = emulator("--drop-rx-bytes", "0.05", "--seed", str(seed))
    dev = SerialDevice(link, watchdog_ms=1000, ramp_s=0.05, state_timeout_s=0.2)
    dev.open()
    try:
        ramp_up(dev)
        t_close = time.monotonic()
    finally:
        dev.close()
    assert dev.shutdown_confirmed is True
    time.sleep(0.1)  # the device ramps the output down over 5 ms
    disable = first_event(log, "disable", after=t_close)
    zero = first_event(log, "output_zero", after=t_close)
    assert disable is not None and disable - t_close <= SHUTDOWN_CONFIRM_S
    assert zero is not None and zero - disable <= RAMP_DOWN_S + MARGIN_S
    assert first_event(log, "watchdog_trip") is None


def test_link_timeout_is_the_documented_20_ms_and_is_counted(make_device):
    dev = make_device("--stop-replying-at", "0.6", state_timeout_s=STATE_TIMEOUT_S)
    assert STATE_TIMEOUT_S == 0.02
    ramp_up(dev)
    servo(dev, 3.0, force=(1.0, 0, 0), until=lambda s: dev.phase == "link lost")
    lost = events(dev, "link_lost")
    assert lost, "host did not notice the silent device"
    t_stop = first_event(dev.event_log, "stop_replying")
    detect = lost[0].t - t_stop
    print(f"link loss detected {detect * 1000:.1f} ms after the device went silent")
    assert 0.010 <= detect <= STATE_TIMEOUT_S + MARGIN_S
    servo(dev, 0.2)
    st = dev.link_stats()
    assert st["disconnects"] == 1 and st["reconnects"] == 0 and not st["connected"]
    assert st["ever_connected"] and st["time_without_device_s"] >= 0.15


def test_unplug_without_replug_is_counted_and_close_does_not_wait(make_device, tmp_path):
    link = str(tmp_path / "haptic0")
    dev = make_device("--unplug-at", "0.5", link=link)
    ramp_up(dev)
    servo(dev, 3.0, force=(1.0, 0, 0), until=lambda s: not s.connected)
    t_unplug = first_event(dev.event_log, "unplug")
    disc = events(dev, "disconnect")
    # Seen at the host's next read after the unplug (this test's loop, on a loaded machine).
    assert disc and disc[0].t - t_unplug <= STATE_TIMEOUT_S + MARGIN_S
    servo(dev, 0.5)  # keeps trying to reopen; nothing comes
    st = dev.link_stats()
    assert st["disconnects"] == 1 and st["reconnects"] == 0 and not st["connected"]
    assert st["time_without_device_s"] >= 0.45
    t = time.monotonic()
    dev.close()
    assert time.monotonic() - t < 0.1 and dev.shutdown_confirmed is None


def test_a_stalled_device_shows_as_one_loss_and_one_reconnect(make_device):
    dev = make_device("--stall-ms", "300", "--stall-at", "0.6")  # host timeout 200 ms
    ramp_up(dev)
    t_end = time.monotonic() + 5.0
    while first_event(dev.event_log, "stall_end") is None and time.monotonic() < t_end:
        servo(dev, 0.05)
    servo(dev, 3.0, until=lambda s: dev.phase == "running")
    assert first_event(dev.event_log, "stall_end") is not None
    st = dev.link_stats()
    assert st["disconnects"] >= 1 and st["reconnects"] == st["disconnects"] and st["connected"]
    assert 0.05 <= st["time_without_device_s"] <= 0.3 + 2 * MARGIN_S
    assert st["frames_ok"] > 0 and st["crc_errors"] == 0
