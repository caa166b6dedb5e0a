"""Real-time sessions with the emulator over a real pty: force reaches the device, Ctrl-C and
kill -9 of the servo leave the device at zero force and a readable recording.

Behaviour only, no timing thresholds (those are in `trocar bench loop`): on a loaded 2-core CI
machine the loop may overrun, but what reaches the device and the file must still be right.
"""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest
from runtime_helpers import read_events, trocar_in_process, wait_for

from sim.runtime.recording import read_recording

STARTUP_S = 90  # spawn + imports + scene + JIT warm-up + device handshake, on a loaded machine


def _start(session, tmp_path, *extra: str):
    log = str(tmp_path / "emu.log")
    rec = str(tmp_path / "session.trec")
    if "--rate-mode" not in extra:
        extra = ("--rate-mode", "realtime", *extra)
    p = session("run", "--device", "emu", "--tets", "0", "--display", "headless", "--record", rec,
                "--soft-start", "0.1", "--emu-event-log", log, *extra)
    return p, log, rec


def _names(log: str) -> list[str]:
    return [n for _, n in read_events(log)]


def _wait_for_force(p, log: str) -> None:
    ok = wait_for(lambda: "output_nonzero" in _names(log) or p.poll() is not None, STARTUP_S)
    assert ok and p.poll() is None, (
        f"no force at the device; exit {p.poll()}\n{p.err_path.read_text()}")


def test_ctrl_c_ends_a_session_with_zero_force_and_a_complete_recording(session, tmp_path, capsys):
    p, log, rec = _start(session, tmp_path)
    _wait_for_force(p, log)
    assert wait_for(lambda: "renderer stub: reading snapshots" in p.err_path.read_text(), STARTUP_S)
    time.sleep(0.5)
    t_int = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    assert p.wait(60) == 0, p.err_path.read_text()
    events = read_events(log)
    after = [n for t, n in events if t >= t_int]
    # The host disabled the device and the output went to zero before the emulator was stopped.
    assert "disable" in after and "stop" in after
    outputs = [n for n in after if n.startswith("output_")]
    assert outputs and outputs[-1] == "output_zero"
    assert after.index("disable") < after.index("stop")
    r = read_recording(rec)
    assert r.damage is None and r.complete and r.end["reason"] == "SIGINT"
    assert np.max(np.abs(r.ticks["force"])) > 1e-3  # the coupling force was commanded
    assert np.all(np.diff(r.ticks["tick"]) == 1)
    out = p.out_path.read_text()
    assert "period   p50" in out and "lateness p50" in out and "overruns" in out
    m = re.search(r"renderer stub: (\d+) new snapshots", out)
    assert m and int(m.group(1)) > 0, out
    rp = trocar_in_process(capsys, "replay", rec)
    assert rp.returncode == 0, rp.stdout + rp.stderr
    assert "checksums equal" in rp.stdout


def test_kill_9_of_the_servo_keeps_the_recording_and_the_device_watchdog_zeroes_force(
        session, tmp_path, capsys):
    p, log, rec = _start(session, tmp_path)
    _wait_for_force(p, log)
    m = re.search(r"servo pid (\d+)", p.err_path.read_text())
    assert m, p.err_path.read_text()
    servo = int(m.group(1))
    time.sleep(0.5)
    t_kill_mono = time.monotonic()
    t_kill = time.perf_counter_ns()
    os.kill(servo, signal.SIGKILL)
    assert p.wait(60) == 1, p.err_path.read_text()
    out = p.out_path.read_text()
    assert "servo process killed by signal 9" in out and "readable up to tick" in out
    r = read_recording(rec)
    assert r.end is None and len(r.ticks) > 100
    last = r.meta["t0_perf_ns"] + r.ticks["t"][-1] * 1e9
    assert 0 <= t_kill - last <= 100e6, f"recording ends {(t_kill - last) / 1e6:.0f} ms before the kill"
    events = read_events(log)
    trip = next((t for t, n in events if n == "watchdog_trip" and t >= t_kill_mono), None)
    assert trip is not None, events
    zero = next((t for t, n in events if n == "output_zero" and t >= trip), None)
    assert zero is not None, events
    rp = trocar_in_process(capsys, "replay", rec)
    assert rp.returncode == 3, rp.stdout + rp.stderr
    assert "checksums equal" in rp.stdout and "no END chunk" in rp.stdout


def test_multirate_session_renders_force_from_the_local_model_and_replays(session, tmp_path, capsys):
    p, log, rec = _start(session, tmp_path, "--rate-mode", "multirate", "--seconds", "2")
    assert p.wait(STARTUP_S + 30) == 0, p.err_path.read_text()
    names = _names(log)
    assert "output_nonzero" in names and names.index("disable") < names.index("stop")
    out = p.out_path.read_text()
    assert "timing (haptic servo)" in out and "timing (physics, multirate)" in out
    r = read_recording(rec)
    assert r.complete and r.end["mode"] == "multirate" and len(r.ticks) > 10
    assert {"kind": "rate_mode", "mode": "multirate"} in r.notes
    rp = trocar_in_process(capsys, "replay", rec)
    assert rp.returncode == 0, rp.stdout + rp.stderr


def test_servo_leaves_the_kernels_rt_budget_idle_when_late():
    # A late FIFO servo that never sleeps is throttled by the kernel for the rest of each second
    # (~50 ms stalls): the loop must idle at least the unbudgeted share of every period.
    from sim.runtime.scheduler import rt_min_idle_ns

    try:
        runtime = int(open("/proc/sys/kernel/sched_rt_runtime_us").read())
        period = int(open("/proc/sys/kernel/sched_rt_period_us").read())
    except OSError:
        pytest.skip("no /proc/sys/kernel/sched_rt_* on this system")
    idle = rt_min_idle_ns(1_000_000)
    if runtime < 0:
        assert idle == 0
    else:
        assert idle > 1_000_000 * (1 - runtime / period)
        assert idle < 500_000  # and still most of the period for the tick
