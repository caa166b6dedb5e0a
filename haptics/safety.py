"""Host-side force safety: clamp, dF/dt limit, soft start, and zero-force-on-exit/signal.

Owns the rule that no force leaves the host unless it passed ForceSafety.apply, and the process
hooks (atexit, SIGTERM, SIGINT) that zero every open device before the process goes away.
Order inside apply(): soft-start scale -> direction-preserving clamp -> dF/dt limit. Since both
the previous output and the clamped target lie inside the ball |F| <= max_force, every point on
the rate-limited step between them does too, so the output never exceeds max_force.
"""

from __future__ import annotations

import atexit
import math
import signal
import threading
import weakref

SOFT_WAIT = 0  # waiting until the commanded force is small
SOFT_RAMP = 1  # ramping the gain 0 -> 1
SOFT_RUN = 2  # full gain


class ForceSafety:
    """Turns the simulation's force command into a force that is safe to send.

    max_force [N]: clamp radius (the device's INFO max force, or lower); max_rate [N/s]: largest
    change of the output vector per second; ramp_s [s]: soft-start duration; start_threshold [N]:
    the command must be below this before the ramp starts (a device must not jump to a large
    force the moment it connects). Works on plain floats: three components per call, no arrays.
    """

    __slots__ = ("max_force", "max_gripper", "max_rate", "ramp_s", "start_threshold", "phase",
                 "_t_ramp", "_t_prev", "out", "gripper_out", "clamped")

    def __init__(self, max_force: float, *, max_gripper: float = 0.0, max_rate: float = 500.0,
                 ramp_s: float = 2.0, start_threshold: float | None = None) -> None:
        self.max_force = float(max_force)
        self.max_gripper = float(max_gripper)
        self.max_rate = float(max_rate)
        self.ramp_s = float(ramp_s)
        self.start_threshold = (0.05 * self.max_force if start_threshold is None
                                else float(start_threshold))
        self.out = [0.0, 0.0, 0.0]  # last output [N]
        self.gripper_out = 0.0  # last gripper output [N]
        self.clamped = False  # the last command was clamped
        self.reset()

    def reset(self) -> None:
        """Back to zero output and the start of the soft start (connect, reconnect, re-enable)."""
        self.phase = SOFT_WAIT
        self._t_ramp = 0.0
        self._t_prev: float | None = None
        self.out[0] = self.out[1] = self.out[2] = 0.0
        self.gripper_out = 0.0

    def gain(self, now: float) -> float:
        """Soft-start gain in [0, 1] at time `now` [s]."""
        if self.phase == SOFT_RUN:
            return 1.0
        if self.phase == SOFT_WAIT:
            return 0.0
        g = (now - self._t_ramp) / self.ramp_s if self.ramp_s > 0 else 1.0
        if g >= 1.0:
            self.phase = SOFT_RUN
            return 1.0
        return max(g, 0.0)

    def apply(self, fx: float, fy: float, fz: float, gripper: float, now: float) -> list[float]:
        """Safe output [N] for command (fx, fy, fz) [N] at time `now` [s]; also sets gripper_out.

        Returns the internal 3-list `out` (valid until the next call). Non-finite commands give
        zero output.
        """
        if not (math.isfinite(fx) and math.isfinite(fy) and math.isfinite(fz)
                and math.isfinite(gripper)):
            fx = fy = fz = gripper = 0.0
        mag = math.sqrt(fx * fx + fy * fy + fz * fz)
        if self.phase == SOFT_WAIT and mag <= self.start_threshold:
            self.phase = SOFT_RAMP
            self._t_ramp = now
        g = self.gain(now)
        fx *= g
        fy *= g
        fz *= g
        mag *= g
        self.clamped = mag > self.max_force
        if self.clamped:
            s = self.max_force / mag
            fx *= s
            fy *= s
            fz *= s
        out = self.out
        dt = 0.0 if self._t_prev is None else max(now - self._t_prev, 0.0)
        self._t_prev = now
        dx = fx - out[0]
        dy = fy - out[1]
        dz = fz - out[2]
        step = math.sqrt(dx * dx + dy * dy + dz * dz)
        lim = self.max_rate * dt
        if step > lim:
            s = lim / step
            dx *= s
            dy *= s
            dz *= s
        out[0] += dx
        out[1] += dy
        out[2] += dz
        gripper *= g
        self.gripper_out = max(-self.max_gripper, min(self.max_gripper, gripper))
        return out


# ---------------------------------------------------------------- zero force on exit and signals

_zeroers: weakref.WeakSet = weakref.WeakSet()
_installed = False
_lock = threading.Lock()
_previous: dict[int, object] = {}


def zero_all() -> None:
    """Zero and disable every registered open device; never raises (runs on exit paths)."""
    for dev in list(_zeroers):
        try:
            dev.emergency_zero()
        except Exception:  # noqa: BLE001 - an exit path must reach every device
            pass


def _on_signal(signum: int, frame: object) -> None:
    zero_all()
    prev = _previous.get(signum)
    if callable(prev):
        prev(signum, frame)  # e.g. default_int_handler raises KeyboardInterrupt
        return
    if prev == signal.SIG_IGN:
        return
    # SIG_DFL: exit with the conventional status; finally/with blocks still run.
    raise SystemExit(128 + signum)


def register(device: object) -> None:
    """Zero `device` (which has emergency_zero()) on exit, SIGTERM and SIGINT.

    Signal handlers can only be installed from the main thread; from other threads the atexit
    hook and the device's context manager still apply.
    """
    global _installed
    _zeroers.add(device)
    with _lock:
        if _installed:
            return
        atexit.register(zero_all)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                _previous[sig] = signal.getsignal(sig)
                signal.signal(sig, _on_signal)
        _installed = True


def unregister(device: object) -> None:
    """Stop tracking a closed device."""
    _zeroers.discard(device)

