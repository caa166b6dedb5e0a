"""Fixtures for the haptics tests: emulators in their own processes behind real ptys."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from haptics.emulated_device import EmulatedDevice
from haptics.sched import request_fifo
from haptics.serial_device import SerialDevice

#: Emulators run SCHED_FIFO where permitted: a device keeps its clock on its own processor, and
#: on a loaded 2-core test machine a normal-priority emulator streams STATE at ~600 Hz, which
#: the calibration measurements would take for the device's behaviour (issue 11, item 9).
EMU_FIFO = ("--fifo", "50")


@contextlib.contextmanager
def host_fifo(priority: int = 40):
    """Run this (test) process SCHED_FIFO inside the block where permitted, as a haptic host
    would: a test whose own loop is the host and measures the handle over fixed windows cannot
    hold a 1 kHz loop at normal priority on a loaded 2-core machine (issue 11, item 9)."""
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    granted = request_fifo(priority) is None
    try:
        yield granted
    finally:
        if granted:
            os.sched_setscheduler(0, before[0], before[1])


def servo(dev: SerialDevice, seconds: float, force=(0.0, 0.0, 0.0),
          until: Callable | None = None) -> list:
    """Run a host loop (read, write_force, wait for the port) for up to `seconds` [s].

    force: a 3-sequence [N] or a function sample -> force. Stops early once until(sample) holds.
    Returns the fresh samples seen.
    """
    t_end = time.monotonic() + seconds
    fresh = []
    while time.monotonic() < t_end:
        s = dev.read()
        if s.fresh:
            fresh.append(s)
        dev.write_force(force(s) if callable(force) else force)
        if until is not None and until(s):
            break
        dev.wait(0.001)
    return fresh


def read_events(path) -> list[tuple[float, str, str]]:
    """The emulator's event log: (time.monotonic() [s], event, detail)."""
    out = []
    with open(path) as fh:
        for line in fh:
            t, _, rest = line.rstrip("\n").partition(" ")
            name, _, detail = rest.partition(" ")
            out.append((float(t), name, detail))
    return out


def first_event(path, name: str, after: float = 0.0) -> float | None:
    for t, n, _ in read_events(path):
        if n == name and t >= after:
            return t
    return None


@pytest.fixture
def make_device(tmp_path):
    """Factory: an opened EmulatedDevice (emulator args..., driver kwargs); closed at teardown.

    Defaults are generous for a loaded 2-core CI machine: host STATE timeout 200 ms, device
    watchdog 250 ms (a test process descheduled for 50 ms must not trip it: tests of the watchdog
    itself ask for 50 ms), a 50 ms soft start ramp. Each device's event log path is in
    `dev.event_log`.
    """
    devices: list[EmulatedDevice] = []

    def make(*args: str, **kw) -> EmulatedDevice:
        log = tmp_path / f"events{len(devices)}.log"
        kw.setdefault("state_timeout_s", 0.2)
        kw.setdefault("ramp_s", 0.05)
        kw.setdefault("watchdog_ms", 250)
        dev = EmulatedDevice("--event-log", str(log), *args, **kw)
        dev.event_log = log
        devices.append(dev)
        dev.open()
        return dev

    yield make
    for d in devices:
        d.close()


@pytest.fixture
def emulator(tmp_path):
    """Factory: start a bare emulator process with a stable link; returns (link, event_log)."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[str, str]:
        link = str(tmp_path / f"dev{len(procs)}")
        log = str(tmp_path / f"emu{len(procs)}.log")
        p = subprocess.Popen([sys.executable, "-m", "haptics.emulator", "--link", link,
                              "--event-log", log, "--exit-with-parent", *EMU_FIFO, *args],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        procs.append(p)
        ready, _, _ = select.select([p.stdout], [], [], 20.0)
        assert ready and p.stdout.readline().strip(), "emulator printed no pty path in 20 s"
        return link, log

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)
        p.stdout.close()
