"""The periodic scheduler every timed loop runs on: deadlines on a grid, never catching up, stopping."""

from __future__ import annotations

from sim.runtime.scheduler import PeriodicScheduler, StopFlag


class FakeClock:
    """A clock that only moves when the loop waits or works (deterministic accounting)."""

    def __init__(self) -> None:
        self.now = 1_000_000_000
        self.waits: list[float] = []

    def __call__(self) -> int:
        self.now += 1  # reading the clock costs 1 ns: the spin terminates
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += int(seconds * 1e9)


def test_ticks_start_on_the_absolute_deadline_grid():
    clock = FakeClock()
    sched = PeriodicScheduler(1_000_000, spin_ns=200_000, min_idle_ns=0, wait=clock.wait, clock=clock)
    starts = []

    def tick(start, lateness):
        starts.append((start, lateness))
        clock.now += 300_000  # 0.3 ms of work

    flag = StopFlag()
    t0 = clock.now
    sched.start(t0)
    for _ in range(5):
        s = sched.wait_next()
        tick(s, s - sched.deadline)
        sched.done(clock())
    deadlines = [t0 + (k + 1) * 1_000_000 for k in range(5)]
    assert all(0 <= s - d < 1000 for (s, _), d in zip(starts, deadlines, strict=True))  # within 1 us
    assert all(0 <= late < 1000 for _, late in starts)
    assert sched.skipped == 0 and sched.ticks == 5 and not flag.set


def test_a_long_tick_drops_the_missed_deadlines_instead_of_catching_up():
    clock = FakeClock()
    sched = PeriodicScheduler(1_000_000, spin_ns=0, min_idle_ns=0, wait=clock.wait, clock=clock)
    sched.start(clock.now)
    first = sched.deadline
    sched.wait_next()
    clock.now += 3_500_000  # this tick took 3.5 periods
    dropped = sched.done(clock())
    assert dropped == 2 and sched.skipped == 2
    # the next deadline is on the grid and less than a period behind now: one late tick, no burst
    assert 0 <= clock.now - sched.deadline < 1_000_000 and (sched.deadline - first) % 1_000_000 == 0


def test_a_late_tick_still_idles_the_rt_share_before_it_starts():
    clock = FakeClock()
    sched = PeriodicScheduler(1_000_000, spin_ns=200_000, min_idle_ns=80_000, wait=clock.wait, clock=clock)
    sched.start(clock.now)
    clock.now = sched.deadline + 100_000  # already late
    sched.wait_next()
    assert clock.waits == [80_000e-9]


def test_after_a_tick_longer_than_the_period_the_idle_grows_with_it():
    # The kernel's RT budget is a share of wall time: 2.5 ms of work needs 2.5 x the idle, or a
    # servo that overruns is throttled for ~50 ms every second (the device watchdog trips).
    clock = FakeClock()
    sched = PeriodicScheduler(1_000_000, spin_ns=0, min_idle_ns=80_000, wait=clock.wait, clock=clock)
    sched.start(clock.now)
    sched.wait_next()
    clock.now += 2_500_000
    sched.done(clock())
    clock.waits.clear()
    sched.wait_next()
    assert len(clock.waits) == 1 and 2.5 * 80_000e-9 <= clock.waits[0] < 3.5 * 80_000e-9


def test_run_stops_on_the_flag_the_stop_event_and_the_end_time():
    clock = FakeClock()

    def make():
        return PeriodicScheduler(1_000_000, spin_ns=0, min_idle_ns=0, wait=clock.wait, clock=clock)

    flag = StopFlag()
    n = {"k": 0}

    def tick(start, lateness):
        n["k"] += 1
        if n["k"] == 3:
            flag.set = True

    assert make().run(tick, flag=flag) == "signal" and n["k"] == 3

    class Event:
        def __init__(self):
            self.asked = 0

        def is_set(self):
            self.asked += 1
            return True

    ev = Event()
    assert make().run(lambda s, late: None, stop=ev) == "stopped" and ev.asked == 1
    until = clock.now + 10_500_000
    sched = make()
    assert sched.run(lambda s, late: None, until_ns=until) == "seconds" and sched.ticks == 11


def test_run_accounts_every_tick_in_the_timer():
    from sim.runtime.timing import TickTimer

    clock = FakeClock()
    sched = PeriodicScheduler(1_000_000, spin_ns=0, min_idle_ns=0, wait=clock.wait, clock=clock)
    timer = TickTimer(capacity=64)
    until = clock.now + 20_500_000

    def tick(start, lateness):
        clock.now += 2_600_000 if sched.ticks == 5 else 100_000  # one long tick

    sched.run(tick, until_ns=until, timer=timer)
    r = timer.report()
    # 2.6 periods: the next deadline had passed by 1.6 periods, one whole one is dropped
    assert r["ticks"] == sched.ticks and r["skipped"] == sched.skipped == 1
