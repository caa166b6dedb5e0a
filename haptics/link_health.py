"""Link health: the counters every HapticDevice reports through `link_stats()`.

Owns the dictionary's keys (one place, so the runtime's timing report, the recording's END chunk
and the monitors agree) and the up/down bookkeeping of a link: when it first came up, how often
it went down and came back, and how long in all it was down.

Keys of `link_stats()`:
  frames_ok: STATE frames received [count]; frames_lost: STATE sequence gaps [count];
  crc_errors, framing_errors: bad frames [count]; disconnects: port lost (unplug) plus link lost
  (no STATE within the host timeout) [count]; reconnects: the link came back to running after
  one of those [count]; time_without_device_s: time the link was not running after it first ran,
  up to now [s]; ever_connected: the link ran at least once; connected: it runs now;
  calibrated: a valid calibration profile is applied; calibration_note: why not, or which one.
A device without a link (null, keyboard, replay) reports zeros (`no_link_stats`).
"""

from __future__ import annotations

import time

LINK_STAT_KEYS = ("frames_ok", "frames_lost", "crc_errors", "framing_errors", "disconnects",
                  "reconnects", "time_without_device_s", "ever_connected", "connected",
                  "calibrated", "calibration_note")


def no_link_stats(note: str = "") -> dict:
    """The stats of a device without a link: every counter zero, not calibrated."""
    return {"frames_ok": 0, "frames_lost": 0, "crc_errors": 0, "framing_errors": 0,
            "disconnects": 0, "reconnects": 0, "time_without_device_s": 0.0,
            "ever_connected": False, "connected": False, "calibrated": False,
            "calibration_note": note}


class LinkUpTime:
    """Up/down transitions of one link, fed from the driver's poll (cheap: two compares when
    nothing changed). Times are time.monotonic() [s]."""

    __slots__ = ("up", "ever_up", "downs", "reconnects", "_down_since", "_down_s")

    def __init__(self) -> None:
        self.up = False
        self.ever_up = False
        self.downs = 0  # up -> down transitions [count]
        self.reconnects = 0  # down -> up transitions after the first up [count]
        self._down_since: float | None = None
        self._down_s = 0.0

    def update(self, up: bool, now: float | None = None) -> None:
        """Record that the link is `up` (running) or not, at `now` [s]."""
        if up == self.up:
            return
        now = time.monotonic() if now is None else now
        self.up = up
        if up:
            if self.ever_up:
                self.reconnects += 1
                if self._down_since is not None:
                    self._down_s += now - self._down_since
            self.ever_up = True
            self._down_since = None
        else:
            self.downs += 1
            self._down_since = now

    def down_s(self, now: float | None = None) -> float:
        """Total time [s] the link was down after it first came up, including a current outage."""
        if self._down_since is None:
            return self._down_s
        now = time.monotonic() if now is None else now
        return self._down_s + (now - self._down_since)
