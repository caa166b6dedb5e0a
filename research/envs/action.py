"""The action hand: a device that feeds an environment's tool target and jaw through the session step.

An environment's actions do not poke the scene: each control period the environment moves this
device's target a little (one interpolated step per 1 ms tick), and `SessionStep` reads it like any
other device (`observe`, `read`, `WorkspaceMap.apply`), so an environment episode is recorded and
replayed like a session with a person's hands.
"""

from __future__ import annotations

import numpy as np

from haptics.device import ScriptedHand


class ActionHand(ScriptedHand):
    """Tool `tool`'s commanded tip target (x, y, z [m], roll [rad]) and jaw [rad] as a device.

    Device samples carry a position and a gripper, no roll (the haptic devices here have three
    positional degrees of freedom), so `observe` hands the roll to the workspace map as its home
    roll, which `WorkspaceMap.apply` writes to the target.
    """

    def __init__(self, target: np.ndarray, jaw: float = 0.0) -> None:
        super().__init__("env-action")
        self.target = np.array(target, dtype=float)  # (4,) world [m, m, m, rad]
        self.jaw = float(jaw)

    def observe(self, scene, wmap) -> None:
        wmap.home[wmap.tool, 3] = self.target[3]
        self.position = wmap.inverse(self.target[:3])
        self.gripper = self.jaw
