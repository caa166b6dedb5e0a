"""Real-time scheduling for the haptic loops outside `trocar run` (whose servo asks through
sim.runtime.realtime): the emulator's device clock and the calibration wizard's host loop.

A 1 kHz loop at normal priority on a loaded 2-core machine runs late by tens of milliseconds
(measured: the emulator streamed STATE at 584-757 Hz at loads of 6-10), which the calibration
steps would take for the device's behaviour. SCHED_FIFO, when permitted, keeps these loops on
time; without the permission they run as before and say so.
"""

from __future__ import annotations

import os


def request_fifo(priority: int) -> str | None:
    """Ask for SCHED_FIFO at `priority` (1..99) for this process. Returns None when granted,
    else one line saying why not (the process runs on at normal priority)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        return f"SCHED_FIFO {priority} not permitted ({exc}); normal priority"
    return None
