"""VR controllers as instruments: `--device xr` (one hand) or `xr,xr` (both hands).

The headset's display process (`sim.render.xr_controllers`, inside the Monado root or on a host
with an OpenXR runtime) writes each controller's grip pose, trigger and recentre presses into the
session's input mailbox (`sim.runtime.keyboard.input_layout`, fields xr_*) once per frame. Here, in
the servo, `XrControllerDevice` turns hand h's controller into device samples that go through the
same workspace map as a haptic device (`sim.runtime.devices.WorkspaceMap`), so recording and replay
are as for any device:

    p_device = R (p_controller - rest_h),   gripper = JAW_OPEN * (1 - trigger)

p_controller: grip position in OpenXR LOCAL (x right, y up, -z forward) [m]; R maps LOCAL axes to
device axes (x right, y away from the user, z up): (x, y, z)_device = (x, -z, y)_local; rest_h: the
controller position that holds tool h at its start tip, `REST[h]` (hands 15 cm either side of
the midline, 35 cm below and 45 cm in front of the eyes: forearms level, elbows at the sides;
$TROCAR_XR_REST = six numbers "xl,yl,zl,xr,yr,zr" [m] replaces them, for a trainee who sits or
stands differently) until the trainee presses the recentre button, which makes the controller's
current position the rest. p_device is clipped to +-`WORKSPACE` [m] per axis (the tool then stays
within 1.5 x that of its start tip) and follows the controller at most `MAX_SPEED` [m/s] of
servo time (`tick_s` per read: the servo reads once a tick, and a late tick that the servo
catches up on must not jump the tool): a controller picked up far from its rest (or a recentre)
glides the tool over instead of jerking it through the coupling spring.
While a controller is not tracked (or no headset frame has arrived yet) its sample is not connected
and the tool holds its last target. The trigger closes the jaws (released: open).

Force: these controllers have no actuator; `write_force` keeps the commanded force [N], and the
display vibrates the controller with the instrument's force (`sim.render.xr_controllers`), the
substitute for force feedback.
"""

from __future__ import annotations

import os
import time

import numpy as np

from haptics.device import DeviceSample, DeviceSpec, HapticDevice
from sim.errors import UserError
from sim.runtime.keyboard import JAW_OPEN, InputReader

#: Controller rest positions in OpenXR LOCAL [m], hand 0 (left) and hand 1 (right).
REST = np.array([[-0.15, -0.35, -0.45], [0.15, -0.35, -0.45]])
WORKSPACE = 0.1  # device-frame half range [m] per axis
MAX_SPEED = 0.3  # fastest the device position follows the controller [m/s] (a quick hand move)


def rest_positions() -> np.ndarray:
    """The controllers' rest positions (2, 3) [m] in OpenXR LOCAL: $TROCAR_XR_REST if set, else
    `REST`. Raises UserError with one line if the variable is not six finite numbers."""
    text = os.environ.get("TROCAR_XR_REST", "").strip()
    if not text:
        return REST.copy()
    try:
        rest = np.array([float(x) for x in text.split(",")])
    except ValueError:
        rest = np.zeros(0)
    if rest.shape != (6,) or not np.isfinite(rest).all():
        raise UserError(f"TROCAR_XR_REST={text!r}: expected six numbers in metres, "
                        "'xl,yl,zl,xr,yr,zr' (left then right controller, OpenXR LOCAL)")
    return rest.reshape(2, 3)


def local_to_device(p_local: np.ndarray) -> np.ndarray:
    """OpenXR LOCAL axes (x right, y up, -z forward) -> device axes (x right, y away, z up)."""
    return np.array([p_local[0], -p_local[2], p_local[1]])


class XrControllerDevice(HapticDevice):
    """Hand `hand`'s VR controller read from the input mailbox `box` (see the module docstring)."""

    def __init__(self, box, hand: int = 0, tick_s: float = 1e-3) -> None:
        self.reader = InputReader(box)
        self.hand = hand
        self.rest = rest_positions()[min(hand, 1)]
        self.max_step = MAX_SPEED * tick_s  # [m] per read (one read per servo tick of tick_s [s])
        self._spec = DeviceSpec(name="xr-controller", workspace=(WORKSPACE,) * 3)
        self.pos = np.zeros(3)
        self.gripper = JAW_OPEN
        self.force = np.zeros(3)
        self._seq = 0

    @property
    def spec(self) -> DeviceSpec:
        return self._spec

    def open(self) -> None:
        self.reader.start()

    def close(self) -> None:
        pass

    def read(self) -> DeviceSample:
        now = time.perf_counter()
        r = self.reader
        r.poll()
        h = self.hand
        valid = bool(r.now["xr_valid"][h])
        if valid:
            p = r.now["xr_pose"][h, :3]
            if int(r.delta("xr_recenter")[h]):
                self.rest = p.copy()
            goal = np.clip(local_to_device(p - self.rest), -WORKSPACE, WORKSPACE)
            step = goal - self.pos
            n = float(np.linalg.norm(step))
            if n > self.max_step:
                step *= self.max_step / n
            self.pos += step
            trigger = min(max(float(r.now["xr_trigger"][h]), 0.0), 1.0)
            self.gripper = JAW_OPEN * (1.0 - trigger)
            self._seq += 1
        return DeviceSample(t=now, seq=self._seq, position=self.pos.copy(),
                            gripper=self.gripper, connected=valid, fresh=valid)

    def write_force(self, force, gripper: float = 0.0) -> None:
        self.force[:] = force  # no actuator: the headset vibrates the controller instead
