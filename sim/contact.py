"""Tool-tissue contact (placeholder: no contact yet; the Numba stage lands next)."""

from __future__ import annotations

import numpy as np


class ToolTissueContact:
    """Tool capsules against one tissue body; grasp attachments. Interface used by sim.scene."""

    def __init__(self, model, tools, dt: float) -> None:
        self.model, self.tools, self.dt = model, tools, dt
        self._events: list[tuple[str, int, float, str]] = []

    def apply_reaction(self, client: int) -> None:
        """Apply last tick's tissue reaction to the tool bodies (before stepSimulation)."""

    def before_step(self, jaws: np.ndarray, f_ext: np.ndarray) -> None:
        """Contact detection and grasp updates; f_ext (n, 3) [N] is the force carried into the step."""

    def after_step(self, state, f_ext: np.ndarray, reaction: np.ndarray) -> None:
        """Project the tissue out of the tools; reaction (n_tools, 3) [N] receives the force on each tool."""

    def drain_events(self) -> list[tuple[str, int, float, str]]:
        out, self._events = self._events, []
        return out
