"""Frames of a recorded session: `trocar render --replay FILE --at T` shows what the trainee saw.

`ReplayedSession` rebuilds the recording's scene (and its procedure, whose HUD the frames show)
as `trocar replay` does (`sim.runtime.lockstep.build_session` from the META) and steps it with
the recorded targets, jaws and scope parameters, so a coach can look at any moment of an attempt
(the clips on Calot's triangle before the division, where a tear began) without playing it again.
"""

from __future__ import annotations

import numpy as np

from sim.errors import UserError
from sim.runtime.lockstep import replay_row


class ReplayedSession:
    """The session of recording `path`, advanced by `advance(t)` to simulated time t [s]."""

    def __init__(self, path: str) -> None:
        from sim.runtime.config import RunConfig
        from sim.runtime.lockstep import build_session
        from sim.runtime.recording import meta_problem, read_recording
        from sim.runtime.step import SessionStep
        from sim.scene import SceneControl

        rec = read_recording(path)
        if not rec.meta:
            raise UserError(rec.damage or f"{path}: no META")
        problem = meta_problem(rec.meta, replay=True)
        if problem is not None:
            raise UserError(f"{path}: {problem}")
        meta = rec.meta
        cfg = RunConfig(scene=meta["scene"], overrides=meta["overrides"], seed=meta["seed"],
                        scale=float(meta.get("config", {}).get("scale", 1.5)))
        self.scene, procedure, hands = build_session(cfg, int(meta.get("n_hands", 1)))
        self.step = SessionStep(self.scene, hands, procedure=procedure, checksum_every=0)
        self.ticks = rec.ticks
        self.path = path
        n = self.scene.n_tools
        self.control = SceneControl(np.zeros((n, 4)), np.zeros(n))
        self._row = 0

    def advance(self, t_end: float) -> None:
        """Step the recorded controls until the scene's simulated time reaches t_end [s]; a time
        past the recording's end is one clear error."""
        scene, ticks = self.scene, self.ticks
        has_scope = "scope" in (ticks.dtype.names or ())
        while scene.tick_count * scene.dt < t_end - 1e-12:
            if self._row >= len(ticks):
                raise UserError(f"--at {t_end:g} s: {self.path} ends at {len(ticks) * scene.dt:.3f} s")
            replay_row(ticks[self._row], self.control, scene, has_scope)
            self.step.step(0, control=self.control)
            self._row += 1
