"""Tick accounting and the timing report.

Per tick the loop stores, in preallocated arrays (no allocation in the loop): the period (start
minus previous start), the lateness (start minus its absolute deadline), the compute time (start
to the end of the tick's work) and the scene's per-part times (`scene.part_ns`: pybullet,
contact, tissue). Past `capacity` ticks the arrays wrap (the report then covers the newest
`capacity` ticks; counters cover the whole session).

Definitions (real-time mode, period P = 1 ms):
- deadline k = t0 + k P (absolute, perf_counter_ns); the loop sleeps to ~200 us before it, then
  spins.
- lateness = tick start - deadline (>= 0 up to the spin's resolution).
- overrun = a tick that starts more than 0.5 P after its deadline (i.e. more than 1.5 P after the
  previous deadline).
- skipped = deadlines that had already passed when a tick ended; they are dropped, never caught up
  (the next tick is scheduled on the grid after `now`).
"""

from __future__ import annotations

import numpy as np

PARTS = ("pybullet", "contact", "tissue")


class TickTimer:
    """Preallocated per-tick timing arrays (ns) and counters."""

    def __init__(self, capacity: int = 1 << 20, period_ns: int = 1_000_000) -> None:
        self.capacity = capacity
        self.period_ns = period_ns
        self.period = np.zeros(capacity, np.int64)
        self.lateness = np.zeros(capacity, np.int64)
        self.compute = np.zeros(capacity, np.int64)
        self.parts = np.zeros((capacity, len(PARTS)), np.int64)
        self.n = 0  # ticks accounted
        self.overruns = 0
        self.skipped = 0
        self._prev_start = 0

    def account(self, start_ns: int, deadline_ns: int, end_ns: int, part_ns: np.ndarray | None) -> None:
        i = self.n % self.capacity
        self.period[i] = start_ns - self._prev_start if self.n else self.period_ns
        late = start_ns - deadline_ns
        self.lateness[i] = late
        self.compute[i] = end_ns - start_ns
        if part_ns is not None:
            self.parts[i] = part_ns
        if late > self.period_ns // 2:
            self.overruns += 1
        self._prev_start = start_ns
        self.n += 1

    def report(self) -> dict:
        """Percentiles [us] and counters (JSON-able)."""
        m = min(self.n, self.capacity)
        out: dict = {"ticks": self.n, "overruns": self.overruns, "skipped": self.skipped,
                     "overrun_fraction": self.overruns / self.n if self.n else 0.0}
        if m < 2:
            return out
        # The first period follows the warm-up, not a deadline: leave it out.
        period = self.period[1:m] / 1e3
        late = self.lateness[:m] / 1e3
        comp = self.compute[:m] / 1e3
        q = (50, 99, 99.9)

        def pct(a: np.ndarray, prefix: str) -> None:
            p = np.percentile(a, q)
            out[f"{prefix}_p50_us"] = round(float(p[0]), 1)
            out[f"{prefix}_p99_us"] = round(float(p[1]), 1)
            out[f"{prefix}_p999_us"] = round(float(p[2]), 1)
            out[f"{prefix}_max_us"] = round(float(a.max()), 1)

        out["over_1500us_fraction"] = round(float(np.mean(period > 1500.0)), 6)
        pct(period, "period")
        pct(late, "lateness")
        pct(comp, "compute")
        for k, name in enumerate(PARTS):
            a = self.parts[:m, k] / 1e3
            out[f"{name}_p50_us"] = round(float(np.percentile(a, 50)), 1)
            out[f"{name}_p99_us"] = round(float(np.percentile(a, 99)), 1)
        return out


def format_report(r: dict, title: str = "timing") -> str:
    """A few human lines from `TickTimer.report()`."""
    if "period_p50_us" not in r:
        return f"{title}: {r.get('ticks', 0)} ticks (too few for percentiles)"
    return "\n".join([
        f"{title}: {r['ticks']} ticks, overruns {r['overruns']} "
        f"({100 * r['overrun_fraction']:.3f} %), skipped deadlines {r['skipped']}",
        f"  period   p50 {r['period_p50_us']:.1f} p99 {r['period_p99_us']:.1f} "
        f"p99.9 {r['period_p999_us']:.1f} max {r['period_max_us']:.1f} us",
        f"  lateness p50 {r['lateness_p50_us']:.1f} p99 {r['lateness_p99_us']:.1f} "
        f"p99.9 {r['lateness_p999_us']:.1f} max {r['lateness_max_us']:.1f} us",
        f"  compute  p50 {r['compute_p50_us']:.1f} p99 {r['compute_p99_us']:.1f} "
        f"max {r['compute_max_us']:.1f} us; parts p50/p99: "
        + ", ".join(f"{p} {r[f'{p}_p50_us']:.0f}/{r[f'{p}_p99_us']:.0f}" for p in PARTS),
    ])


def format_link(links: list[dict]) -> tuple[list[str], int]:
    """Human lines for each hand's link health (haptics.link_health keys, from the report's
    "link" list) and the exit status they call for: 1 when a device was lost and not back at the
    end, or never connected; else 0. Devices without a link (null, replay, keyboard) print
    nothing."""
    lines: list[str] = []
    code = 0
    for h, st in enumerate(links):
        if not st or "shutdown_confirmed" not in st:
            continue
        name = f"device {h}" if len(links) > 1 else "device"
        lines.append(
            f"  {name} link: {st['frames_ok']} STATE frames, {st['frames_lost']} lost, "
            f"{st['crc_errors']} CRC and {st['framing_errors']} framing errors, "
            f"{st['disconnects']} disconnects, {st['reconnects']} reconnects, "
            f"{st['time_without_device_s']:.3f} s without the device")
        lines.append(f"  {name} calibration: "
                     + ("calibrated, " if st["calibrated"] else "UNCALIBRATED: ")
                     + st["calibration_note"])
        if not st["ever_connected"]:
            lines.append(f"{name} never connected: the session ran without it")
            code = 1
        elif not st["connected"]:
            lines.append(f"{name} LOST and not back at the end of the session "
                         f"({st['time_without_device_s']:.1f} s without it)")
            code = 1
        if st["shutdown_confirmed"] is False:
            lines.append(f"{name}: zero force and DISABLE not acknowledged at shutdown; the "
                         "device watchdog stopped the force")
    return lines, code
