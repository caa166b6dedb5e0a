"""One tool's scripted move for tests and benchmarks: its target (and optionally its jaws) eased
on a half-cosine, zero speed at both ends, one step per tick.

Usage: ``for _ in eased_move(control, tool, to, ticks, jaw): scene.tick(control, dt)``.
"""

from __future__ import annotations

import numpy as np


def eased_move(control, tool: int, to, ticks: int, jaw: float | None = None):
    """Yield once per tick while `control.targets[tool, :3]` goes from where it is to `to` [m]
    (and `control.jaws[tool]` to `jaw` [rad], if given) over `ticks` ticks; `control` is a
    `sim.scene.SceneControl`, changed in place before each yield."""
    p0 = control.targets[tool, :3].copy()
    j0 = float(control.jaws[tool])
    goal = np.asarray(to, dtype=float)
    for k in range(1, ticks + 1):
        w = 0.5 - 0.5 * np.cos(np.pi * k / ticks)
        control.targets[tool, :3] = p0 + w * (goal - p0)
        if jaw is not None:
            control.jaws[tool] = j0 + w * (jaw - j0)
        yield
