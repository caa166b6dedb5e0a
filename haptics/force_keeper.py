"""ForceKeeper: a thread that keeps the FORCE stream within the device watchdog's period while
the servo loop is stuck in a long tick (issue 11, item 5).

Measured on a loaded 2-core machine: real-time ticks of up to 70-124 ms, so the device watchdog
(50 ms) tripped during normal running and every trip cost a soft start. The tick's heavy parts
(the Numba tissue step) release the GIL, so a thread can send meanwhile. Every KEEP_PERIOD_S the
keeper asks each device (SerialDevice.keep_alive) to send a FORCE frame if none went out for
KEEP_SILENCE_S: the last force while the loop has been silent for less than KEEP_HOLD_S, then
zero force with the enable flag clear. Worst case between frames: KEEP_SILENCE_S + KEEP_PERIOD_S
+ a GIL switch interval (5 ms) = 35 ms < 50 ms. A process that is not running at all (stopped,
throttled, holding the GIL in C) still trips the watchdog, which is what it is for.
"""

from __future__ import annotations

import threading

KEEP_PERIOD_S = 0.010  # the keeper looks this often [s]
KEEP_SILENCE_S = 0.020  # and sends when no FORCE went out for this long [s]
KEEP_HOLD_S = 0.200  # it repeats the loop's last force for at most this long, then zero [s]


class ForceKeeper:
    """Keeps `devices` (objects with keep_alive(silence_s, hold_s), e.g. SerialDevice) streaming.
    Use as a context manager, or start()/stop(). `frames`: frames it sent."""

    def __init__(self, devices, *, period_s: float = KEEP_PERIOD_S,
                 silence_s: float = KEEP_SILENCE_S, hold_s: float = KEEP_HOLD_S) -> None:
        self.devices = [d for d in devices if d is not None and hasattr(d, "keep_alive")]
        self.period_s, self.silence_s, self.hold_s = period_s, silence_s, hold_s
        self.frames = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ForceKeeper:
        if self.devices and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="force-keeper", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (before the devices are closed). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            for d in self.devices:
                if d.keep_alive(self.silence_s, self.hold_s):
                    self.frames += 1

    def __enter__(self) -> ForceKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
