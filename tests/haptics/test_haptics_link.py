"""Host driver against the emulator in another process over a real pty (pyserial path)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import servo

from haptics import protocol as P
from haptics.device import DeviceError
from haptics.serial_device import SerialDevice


def ack_for(dev, opcode: int, arg: int = 0, timeout: float = 2.0) -> P.Ack:
    tok = dev.command(opcode, arg)
    servo(dev, timeout, until=lambda s: tok not in dev._pending)
    assert tok not in dev._pending, f"no ACK for {P.CMD_NAMES.get(opcode, opcode)}"
    return dev.acks[opcode]


def test_handshake_reads_info_into_the_spec(make_device):
    dev = make_device("--serial", "LAB-42", "--max-force", "3.5")
    assert dev.phase == "running"
    assert dev.spec.serial == "LAB-42" and dev.spec.max_force == pytest.approx(3.5)
    assert dev.spec.counts_per_m == (1e5, 1e5, 1e5) and dev.spec.rate_hz == 1000
    s = servo(dev, 0.3)[-1]
    assert s.status & P.STATUS_ENABLED and s.status & P.STATUS_HOMED


def test_force_frames_reach_the_device_and_are_echoed(make_device):
    dev = make_device()
    servo(dev, 0.1)
    got = servo(dev, 3.0, force=(1.0, -0.5, 0.0),
                until=lambda s: s.force_applied[0] >= 1.0 - 1e-9)[-1]
    assert got.force_applied == pytest.approx([1.0, -0.5, 0.0])
    assert dev.last_force_sent == pytest.approx((1.0, -0.5, 0.0))
    v = P.STATE_STRUCT.unpack(dev._state_payload)
    assert 0 < dev._force_seq - v[11] < 50  # echo of a recent FORCE seq
    assert dev.rtt_count > 0 and 0 < dev.rtt_percentiles((50,))[0] < 1e6


def test_force_moves_the_spring_held_handle_by_force_over_stiffness(make_device):
    dev = make_device("--hand-stiffness", "200")
    servo(dev, 0.1)
    # The handle has settled once the device has applied the full 1 N for 1.5 s in a row: a link
    # blip restarts the soft start, and the handle then has to settle again, so the 1.5 s are
    # counted from the last time the force was not full.
    full_since = [None]

    def settled(s) -> bool:
        if abs(s.force_applied[2] - 1.0) > 1e-9:
            full_since[0] = None
        elif full_since[0] is None:
            full_since[0] = s.t_device_us
        return full_since[0] is not None and s.t_device_us - full_since[0] >= 1_500_000

    samples = servo(dev, 10.0, force=(0.0, 0.0, 1.0), until=settled)
    assert full_since[0] is not None and samples[-1].t_device_us - full_since[0] >= 1_500_000, \
        "the device never applied 1 N for 1.5 s in a row"
    s = samples[-1]
    assert s.position == pytest.approx([0.0, 0.0, 1.0 / 200.0], abs=2e-5)  # 5 mm +- 2 counts


def test_commanded_100_newtons_never_leaves_the_host_above_5_and_keeps_direction(make_device):
    dev = make_device("--max-force", "5", ramp_s=0.2)
    servo(dev, 0.1)
    sent = []

    def cmd(s):
        sent.append(dev.last_force_sent)
        return (60.0, 0.0, -80.0)

    samples = servo(dev, 1.5, force=cmd)
    sent = np.array(sent)
    assert np.linalg.norm(sent, axis=1).max() <= 5.0 + 1e-9
    applied = np.array([s.force_applied for s in samples])
    mags = np.linalg.norm(applied, axis=1)
    assert mags.max() <= 5.0 + 2e-3  # mN rounding
    # the clamp is reached exactly (the peak, not the last sample: on a loaded 2-core machine a link
    # blip near the end restarts the soft start, and the last sample is then still ramping)
    assert mags.max() == pytest.approx(5.0, abs=2e-3)
    nz = mags > 0.05
    assert np.allclose(applied[nz] / mags[nz, None], [0.6, 0.0, -0.8], atol=2e-3)
    # the device never had to clamp: nothing above its limit ever reached it
    assert not any(s.status & P.STATUS_CLAMPED for s in samples)


def test_every_command_is_acknowledged_with_its_effective_value(make_device):
    dev = make_device("--max-force", "5")
    assert ack_for(dev, P.CMD_SET_WATCHDOG_MS, 80).value == 80
    assert ack_for(dev, P.CMD_SET_WATCHDOG_MS, 1).result == P.ACK_BAD_ARGUMENT
    assert ack_for(dev, P.CMD_SET_MAX_FORCE_MN, 3000).value == 3000
    assert ack_for(dev, P.CMD_SET_MAX_FORCE_MN, 99000).value == 5000  # never above hardware
    assert ack_for(dev, P.CMD_HOME).result == P.ACK_OK
    assert ack_for(dev, P.CMD_SAVE_CALIBRATION).result == P.ACK_OK
    assert ack_for(dev, 99).result == P.ACK_UNKNOWN_OPCODE
    dev.info = None
    assert ack_for(dev, P.CMD_GET_INFO).result == P.ACK_OK
    servo(dev, 2.0, until=lambda s: dev.info is not None)
    assert dev.info is not None and dev.info.watchdog_ms == 80
    assert ack_for(dev, P.CMD_DISABLE).result == P.ACK_OK
    s = servo(dev, 0.2)[-1]
    assert not s.status & P.STATUS_ENABLED
    assert ack_for(dev, P.CMD_ENABLE).result == P.ACK_OK
    assert servo(dev, 0.2)[-1].status & P.STATUS_ENABLED


def test_set_rate_changes_the_state_stream_rate_on_the_device_clock(make_device):
    dev = make_device()
    assert ack_for(dev, P.CMD_SET_RATE_HZ, 250).value == 250
    servo(dev, 0.1)
    samples = servo(dev, 0.5)
    dt_us = (samples[-1].t_device_us - samples[0].t_device_us) / (samples[-1].seq - samples[0].seq)
    assert dt_us == pytest.approx(4000, rel=0.05)  # device clock: independent of host load
    assert ack_for(dev, P.CMD_SET_RATE_HZ, 5000).result == P.ACK_BAD_ARGUMENT


def test_malformed_frames_sent_to_the_device_are_counted_and_ignored(make_device):
    dev = make_device()
    dev._ser.write(b"\x05garbage\x00" + P.encode(P.Force(1, (0, 0, 0), 0, 0, 0))[:-3] + b"\x00")
    ack = ack_for(dev, P.CMD_GET_COUNTER, P.COUNTER_FRAME_ERRORS)
    assert ack.result == P.ACK_OK and ack.value >= 2
    assert dev.phase == "running"


def test_a_device_with_another_major_protocol_version_is_refused(make_device):
    with pytest.raises(DeviceError, match=r"speaks trocar protocol 2\.0, this host speaks 1\.0"):
        make_device("--protocol-version", "2.0")


def test_opening_a_missing_port_fails_with_one_clear_line():
    with pytest.raises(DeviceError, match=r"^cannot open /dev/trocar-missing: .*No such file"):
        SerialDevice("/dev/trocar-missing").open()


def test_two_devices_each_get_their_own_force(make_device):
    left = make_device("--serial", "LEFT")
    right = make_device("--serial", "RIGHT")
    assert (left.spec.serial, right.spec.serial) == ("LEFT", "RIGHT")
    for i in range(2000):  # one bimanual loop, ~2 s: zero first so both soft starts begin
        sl, sr = left.read(), right.read()
        on = i >= 300
        left.write_force((1.0 * on, 0.0, 0.0))
        right.write_force((0.0, -1.0 * on, 0.0))
        left.wait(0.0005)
        right.wait(0.0005)
    sl, sr = left.read(), right.read()
    assert sl.force_applied == pytest.approx([1.0, 0.0, 0.0])
    assert sr.force_applied == pytest.approx([0.0, -1.0, 0.0])
    assert sl.position == pytest.approx([0.005, 0.0, 0.0], abs=5e-5)
    assert sr.position == pytest.approx([0.0, -0.005, 0.0], abs=5e-5)


def test_miscalibration_knobs_show_in_the_raw_counts(make_device):
    dev = make_device("--hand", "still", "--hand-at", "0.01,0.01,0.01",
                      "--encoder-offset", "100,0,0", "--axis-sign", "1,-1,1",
                      "--gain-error", "0,0,0.1")
    s = servo(dev, 0.3)[-1]
    assert s.position_counts.tolist() == [1100, -1000, 1100]


def test_force_constant_error_moves_the_handle_more_than_the_reported_force(make_device):
    dev = make_device("--force-constant-error", "0.5,0,0")
    servo(dev, 0.1)
    servo(dev, 1.5, force=(1.0, 0.0, 0.0))
    s = servo(dev, 0.2, force=(1.0, 0.0, 0.0))[-1]
    assert s.force_applied[0] == pytest.approx(1.0)  # what the device believes
    assert s.position[0] == pytest.approx(1.5 / 200.0, abs=3e-5)  # what the hand felt


def test_latency_delays_the_response_on_the_device_clock(make_device):
    dev = make_device("--latency-ms", "20", ramp_s=0.0)
    servo(dev, 0.1)
    samples = servo(dev, 0.1, force=(0.1, 0.0, 0.0)) + servo(dev, 0.5, force=(2.0, 0.0, 0.0))
    t_force = next(s.t_device_us for s in samples if s.force_applied[0] > 0)
    t_move = next(s.t_device_us for s in samples if s.position_counts[0] != 0)
    assert t_move - t_force >= 2 * 20_000 * 0.9  # actuation + sensing delay


def test_scripted_hand_moves_the_handle_and_presses_buttons(make_device, tmp_path):
    script = tmp_path / "hand.txt"
    script.write_text("0 0 0 0 0.1 0\n0.2 0.01 0 0 0.2 1\n100 0.01 0 0 0.2 1\n")
    dev = make_device("--hand", f"script:{script}")
    s = servo(dev, 3.0, until=lambda s: s.buttons == 1)[-1]
    s = servo(dev, 0.3)[-1]
    assert s.buttons == 1
    assert s.position == pytest.approx([0.01, 0.0, 0.0], abs=1e-5)
    assert s.gripper == pytest.approx(0.2, abs=1e-3)
