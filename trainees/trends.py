"""Trends in a trainee's attempts: plateau detection, who is stuck, attempts per week. Pure functions."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timedelta

# A plateau: over the last `window` attempts the metric improved by less than this fraction of its mean.
PLATEAU_GAIN = 0.05


def plateau_start(values: list[float], window: int, *, lower_is_better: bool = True) -> int | None:
    """Index where the current plateau starts, or None when the last `window` values still improve.

    Improvement = the least-squares slope over the window times its length, in the metric's better
    direction, relative to the window's mean. A plateau is only a problem when the target is not met;
    the caller decides that.
    """
    if len(values) < window:
        return None
    tail = values[-window:]
    xs = range(window)
    xm, ym = (window - 1) / 2, statistics.fmean(tail)
    slope = sum((x - xm) * (y - ym) for x, y in zip(xs, tail, strict=True)) / sum((x - xm) ** 2 for x in xs)
    gain = -slope * (window - 1) if lower_is_better else slope * (window - 1)
    if ym == 0 or gain / abs(ym) >= PLATEAU_GAIN:
        return None
    # extend backwards while earlier windows were flat too, so the report can shade the whole plateau
    start = len(values) - window
    while start > 0 and plateau_start(values[start - 1:start - 1 + window], window,
                                      lower_is_better=lower_is_better) is not None:
        start -= 1
    return start


def week_of(t: str | datetime) -> str:
    """ISO week label, e.g. 2026-W05."""
    y, w, _ = (datetime.fromisoformat(t) if isinstance(t, str) else t).isocalendar()
    return f"{y}-W{w:02d}"


def attempts_per_week(started: list[str]) -> dict[str, int]:
    """Attempt counts per ISO week, in order, with empty weeks in between included."""
    if not started:
        return {}
    counts = Counter(week_of(s) for s in started)
    days = [datetime.fromisoformat(s) for s in started]
    out, d, last = {}, min(days), max(days)
    while d <= last:
        out[week_of(d)] = counts.get(week_of(d), 0)
        d += timedelta(days=7)
    out.setdefault(week_of(last), counts[week_of(last)])
    return out
