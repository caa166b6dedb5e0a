"""Dying with the session: how a process that can command force notices that its parent died.

Owns the two mechanisms (used by every session process that can command force, and the renderer):
- `die_with_parent()`: prctl(PR_SET_PDEATHSIG, SIGTERM) through ctypes (Linux). The kernel sends
  SIGTERM the moment the parent exits, however it died (kill -9 included). The process's SIGTERM
  handler only sets its stop flag; the loop ends at its next tick and the device is zeroed and
  disabled (confirmed by the device, haptics.serial_device) on the way out.
- `ParentWatch`: a heartbeat check, os.getppid() against the parent's pid (and, for ancestors
  further up, a pidfd that becomes readable when that process exits), wrapped around the loop's
  cross-process stop event (the scheduler looks at it every STOP_CHECK_EVERY = 8 ticks). It
  covers what the signal cannot: a parent that died before prctl ran, a platform without
  prctl, a handler replaced later, a grandparent (the multirate haptic servo's supervisor).

Bound (docs/runtime.md, measured by tests/runtime/test_orphans.py): force commanded zero within
one tick of the signal (or 8 ticks of the heartbeat) after the parent's death, plus the
device's 5 ms ramp; the device watchdog (50 ms) stays the backstop if the process itself dies.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits. Returns True when
    granted. Call it after the handler for `sig` is installed (a signal that arrives before would
    kill the process before it could zero anything; before a device is open that is harmless)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def expected_parent() -> int:
    """The pid of the process that started this one (multiprocessing's record of it, which stays
    right after the parent died), else the current parent."""
    p = multiprocessing.parent_process()
    return p.pid if p is not None and p.pid else os.getppid()


class ParentWatch:
    """A stop event for a loop: set once `stop` (any object with is_set(), or None) is set, once
    the parent process is gone, or once a process in `also` (pids, e.g. the grandparent) has
    exited (`orphaned` then says so). One getppid() and one select() per look."""

    def __init__(self, stop=None, parent_pid: int | None = None, also=()) -> None:
        self.stop = stop
        self.parent_pid = expected_parent() if parent_pid is None else parent_pid
        self.orphaned = False
        self._fds: list[int] = []
        for pid in also:
            try:
                self._fds.append(os.pidfd_open(pid))
            except ProcessLookupError:  # already gone
                self.orphaned = True
            except (OSError, AttributeError):  # no pidfd here: the signal chain must do
                pass

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid

    def wait(self, timeout: float, *, poll_s: float = 0.01) -> bool:
        """Sleep until set or `timeout` [s] passed (looking every poll_s [s]); returns is_set()."""
        t_end = time.monotonic() + timeout
        while not self.is_set():
            left = min(poll_s, t_end - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self.is_set()

    def is_set(self) -> bool:
        if self.orphaned or os.getppid() != self.parent_pid:
            self.orphaned = True
            return True
        if self._fds and select.select(self._fds, (), (), 0)[0]:
            self.orphaned = True  # a pidfd is readable once its process has exited
            return True
        return self.stop is not None and self.stop.is_set()
