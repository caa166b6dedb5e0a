"""Scripted hands for procedure tests: devices that follow world waypoints through the device path."""

from __future__ import annotations

import time

import numpy as np
import pytest

from haptics.device import DeviceSample, DeviceSpec, HapticDevice
from procedures.policies.motion import Mover, device_position


class WaypointHand(HapticDevice):
    """A hand that plays a list of steps: (world tip [m] (3,) or a callable(scene) -> tip, jaw [rad],
    seconds), each a minimum-jerk move; holds the last one. Acts only through its samples."""

    def __init__(self, steps) -> None:
        self.steps = list(steps)
        self.mover = None
        self.sample = DeviceSample(connected=True, fresh=True)
        self.last_force = np.zeros(3)

    @property
    def spec(self) -> DeviceSpec:
        return DeviceSpec(name="waypoints")

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def finished(self) -> bool:
        return not self.steps and self.mover is not None and not self.mover.busy

    def observe(self, scene, wmap) -> None:
        if self.mover is None:
            self.mover = Mover(scene.tools[wmap.tool].tip(), 0.0, scene.dt)
        if not self.mover.busy and self.steps:
            target, jaw, seconds = self.steps.pop(0)
            target = target(scene) if callable(target) else target
            self.mover.start(np.asarray(target, float), jaw, seconds)
        self.mover.step()
        self.sample = DeviceSample(
            t=time.perf_counter(),
            position=device_position(wmap, self.mover.tip),
            gripper=self.mover.jaw,
            connected=True,
            fresh=True,
        )

    def read(self) -> DeviceSample:
        return self.sample

    def write_force(self, force, gripper: float = 0.0) -> None:
        self.last_force[:] = force


def ring_rim(scene, k: int, sign: float, dz: float = 0.0) -> np.ndarray:
    """Near (sign -1) or far (+1) rim point [m] of ring k as it lies now (flat ring), raised by dz."""
    c = scene.rigid.body_pose(scene.rigid.graspable[k])[:3]
    return c + np.array([0.0, sign * scene.rigid.pegboard.spec.ring_radius, dz])


@pytest.fixture
def waypoint_hand():
    return WaypointHand
