"""The action hand: a device that feeds an environment's tool target and jaw through the session step.

An environment's actions do not poke the scene: each control period the environment moves this
device's target a little (one interpolated step per 1 ms tick), and `SessionStep` reads it like any
other device (`observe`, `read`, `WorkspaceMap.apply`), so an environment episode is recorded and
replayed like a session with a person's hands.
"""

from __future__ import annotations

import time

import numpy as np

from haptics.device import DeviceSample, DeviceSpec, HapticDevice


class ActionHand(HapticDevice):
    """Tool `tool`'s commanded tip target (x, y, z [m], roll [rad]) and jaw [rad] as a device.

    Device samples carry a position and a gripper, no roll (the haptic devices here have three
    positional degrees of freedom), so `observe` hands the roll to the workspace map as its home
    roll, which `WorkspaceMap.apply` writes to the target.
    """

    def __init__(self, target: np.ndarray, jaw: float = 0.0) -> None:
        self.target = np.array(target, dtype=float)  # (4,) world [m, m, m, rad]
        self.jaw = float(jaw)
        self._spec = DeviceSpec(name="env-action", max_force=10.0, max_stiffness=2000.0)
        self._seq = 0
        self._position = np.zeros(3)
        self.last_force = np.zeros(3)

    @property
    def spec(self) -> DeviceSpec:
        return self._spec

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.last_force[:] = 0.0

    def observe(self, scene, wmap) -> None:
        wmap.home[wmap.tool, 3] = self.target[3]
        self._position = wmap.inverse(self.target[:3])

    def read(self) -> DeviceSample:
        self._seq += 1
        return DeviceSample(t=time.perf_counter(), seq=self._seq, position=self._position,
                            gripper=self.jaw, connected=True, fresh=True)

    def write_force(self, force, gripper: float = 0.0) -> None:
        self.last_force[:] = force
