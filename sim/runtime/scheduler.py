"""The periodic scheduler every timed loop runs on (servo, multirate servo, device bench, emulator).

Owns the timing discipline of ../shared/ARCHITECTURE.md, in one place:
- absolute deadlines on a grid: deadline k = t0 + k * period (`clock()`, default
  time.perf_counter_ns), so errors never accumulate;
- sleep until `spin_ns` before the deadline (through `wait`, which may return early: the emulator
  waits on its pty and handles bytes as they arrive), then spin to the deadline;
- the RT idle share: a late tick still sleeps `min_idle_ns` before it starts, because Linux lets
  SCHED_FIFO tasks use only sched_rt_runtime_us of every sched_rt_period_us and a servo that never
  sleeps is stopped for the rest of the second (measured: ~50 ms stalls every second);
- never catch up: deadlines that passed while a tick ran are dropped (counted in `skipped`), the next
  tick goes on the grid after now;
- a stop flag (`StopFlag`, set from a signal handler) and a cross-process stop event, checked every
  tick and every `STOP_CHECK_EVERY` ticks respectively.

Nothing here allocates per tick.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

PERIOD_NS = 1_000_000  # the servo period [ns] (1 kHz)
SPIN_NS = 200_000  # sleep until this long before a deadline, then spin [ns]
STOP_CHECK_EVERY = 8  # ticks between looks at a cross-process stop event (a syscall-ish read)


def rt_min_idle_ns(period_ns: int = PERIOD_NS) -> int:
    """Idle time [ns] a loop must leave in every period so SCHED_FIFO is never throttled.

    Linux lets real-time tasks use sched_rt_runtime_us of every sched_rt_period_us (by default 95 %);
    a loop that overruns and never sleeps hits that limit and is then stopped for the rest of the
    second. Leaving the unbudgeted share plus a margin (x1.6) idle in each tick avoids it. 0 where
    throttling is off (runtime -1) or unreadable.
    """
    try:
        with open("/proc/sys/kernel/sched_rt_runtime_us") as f:
            runtime = int(f.read())
        with open("/proc/sys/kernel/sched_rt_period_us") as f:
            rt_period = int(f.read())
    except (OSError, ValueError):
        return 0
    if runtime < 0 or rt_period <= 0:
        return 0
    return int(period_ns * (1.0 - runtime / rt_period) * 1.6)


class StopFlag:
    """A flag a signal handler sets and a loop reads every tick. `why`: the signal's name."""

    def __init__(self) -> None:
        self.set = False
        self.why = ""

    def handler(self, signum: int, frame: object) -> None:
        self.set = True
        self.why = signal.Signals(signum).name

    def install(self, *signums: int) -> StopFlag:
        """Make this flag the handler of `signums` (default SIGINT and SIGTERM); returns self."""
        for s in signums or (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self.handler)
        return self


class SharedStop:
    """A cross-process stop event with no lock: one byte in shared memory (`ctx.RawValue`), set
    once, read with one load. A multiprocessing.Event takes a lock in is_set(), set() and wait():
    a session process killed -9 inside one of them leaves that lock held, and every later
    set()/is_set() in the other processes blocks for good (seen: kill -9 of the renderer hung
    the supervisor's Ctrl-C and the physics loop). Pass it to child processes at their start.
    """

    def __init__(self, ctx) -> None:
        self._flag = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return self._flag.value != 0

    def wait(self, timeout: float | None = None, *, poll_s: float = 0.005) -> bool:
        """Sleep until set or `timeout` [s] passed (polling every poll_s [s]); returns is_set()."""
        t_end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = poll_s if t_end is None else min(poll_s, t_end - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self.is_set()


class PeriodicScheduler:
    """Absolute-deadline periodic timing (see the module docstring).

    period_ns: tick period [ns]; spin_ns: spin this long before each deadline [ns] (0: no spin);
    min_idle_ns: sleep before a late tick [ns] (None: `rt_min_idle_ns(period_ns)`); wait(seconds):
    how to sleep (time.sleep by default; may return early); clock(): ns timestamps.

    Attributes: deadline (ns, of the tick about to run or running), ticks (run), skipped (deadlines
    dropped because a tick ran past them).
    """

    def __init__(self, period_ns: int = PERIOD_NS, *, spin_ns: int = SPIN_NS,
                 min_idle_ns: int | None = None, wait: Callable[[float], object] | None = None,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        if period_ns <= 0:
            raise ValueError("period_ns must be > 0")
        self.period_ns = int(period_ns)
        self.spin_ns = int(spin_ns)
        self.min_idle_ns = rt_min_idle_ns(period_ns) if min_idle_ns is None else int(min_idle_ns)
        self.wait = wait or time.sleep
        self.clock = clock
        self.deadline = 0
        self.ticks = 0
        self.skipped = 0
        self._last_len = 0  # the last tick's length, its deadline to its end [ns]

    def start(self, now_ns: int | None = None) -> None:
        """Put the first deadline one period after now."""
        self.deadline = (self.clock() if now_ns is None else now_ns) + self.period_ns
        self.ticks = 0
        self.skipped = 0

    def wait_next(self) -> int:
        """Wait for the current deadline (sleep, then spin); returns the tick's start [ns]."""
        clock = self.clock
        deadline = self.deadline
        rem = deadline - clock() - self.spin_ns
        if rem > 0:
            while rem > 0:  # `wait` may return early (I/O arrived): wait again for what is left
                self.wait(rem * 1e-9)
                rem = deadline - clock() - self.spin_ns
        elif self.min_idle_ns:
            # Late: still yield, or RT throttling stalls us. The budget is a share of wall time,
            # so a tick longer than the period needs a proportionally longer idle (measured: 2 ms
            # ticks with an 80 us idle were throttled ~50 ms every second, and the device
            # watchdog tripped each time).
            self.wait(self.min_idle_ns * max(1.0, self._last_len / self.period_ns) * 1e-9)
        now = clock()
        while now < deadline:
            now = clock()
        return now

    def done(self, end_ns: int) -> int:
        """The tick that started at the current deadline ended at end_ns: move to the next deadline,
        dropping any that already passed. Returns how many were dropped."""
        self.ticks += 1
        self._last_len = end_ns - self.deadline
        self.deadline += self.period_ns
        late = end_ns - self.deadline
        if late >= self.period_ns:  # missed whole periods: drop them (no burst to catch up)
            missed = late // self.period_ns
            self.deadline += missed * self.period_ns
            self.skipped += missed
            return int(missed)
        return 0

    def run(self, tick: Callable[[int, int], int | None], *, flag: StopFlag | None = None,
            stop=None, until_ns: int | None = None, timer=None, parts=None) -> str:
        """Run `tick(start_ns, lateness_ns)` once per period until stopped; returns why it stopped:
        'signal' (flag set), 'seconds' (a tick ended after until_ns [clock ns]), 'stopped' (stop,
        an object with is_set(), e.g. a multiprocessing.Event, checked every STOP_CHECK_EVERY ticks).

        tick may return its end time [ns] (else the clock is read after it). timer: a
        `sim.runtime.timing.TickTimer` to account each tick in (with `parts`, the per-part ns array
        the tick fills, e.g. scene.part_ns)."""
        clock = self.clock
        self.start()
        k = 0
        while True:
            start = self.wait_next()
            deadline = self.deadline
            end = tick(start, start - deadline)
            if end is None:
                end = clock()
            if timer is not None:
                timer.account(start, deadline, end, parts)
            missed = self.done(end)
            if missed and timer is not None:
                timer.skipped += missed
            k += 1
            if flag is not None and flag.set:
                return "signal"
            if until_ns is not None and end >= until_ns:
                return "seconds"
            if stop is not None and k % STOP_CHECK_EVERY == 0 and stop.is_set():
                return "stopped"
