"""`--device xr`: a VR controller's pose, trigger and recentre button (as the headset display writes
them into the session's input mailbox) become device samples through the documented mapping."""

import time

import numpy as np
import pytest

from sim.errors import UserError
from sim.runtime.keyboard import JAW_OPEN, input_layout
from sim.runtime.mailbox import SnapshotMailbox
from sim.runtime.xr_device import MAX_SPEED, REST, WORKSPACE, XrControllerDevice, local_to_device


@pytest.fixture
def box():
    b = SnapshotMailbox.create(input_layout())
    yield b
    b.close()
    b.unlink()


def _publish(box, data, h, pos, trigger=0.0, valid=True):
    data["xr_pose"][h, :3] = pos
    data["xr_pose"][h, 6] = 1.0
    data["xr_valid"][h] = valid
    data["xr_trigger"][h] = trigger
    box.write(data)


def _settle(dev, seconds=1.0, tick_s=1e-3):
    """Read as the servo does, once a tick, for `seconds` of servo time."""
    s = dev.read()
    for _ in range(int(round(seconds / tick_s))):
        s = dev.read()
    return s


def test_controller_pose_trigger_and_recentre_become_device_samples(box):
    data = box.empty()
    dev = XrControllerDevice(box, hand=1)
    dev.open()
    assert not dev.read().connected  # no headset frame yet: the tool holds
    # 3 cm right, 2 cm up, 4 cm forward of the right hand's rest: device (0.03, 0.04, 0.02).
    _publish(box, data, 1, REST[1] + [0.03, 0.02, -0.04], trigger=0.25)
    s = _settle(dev, 0.6)
    assert s.connected
    np.testing.assert_allclose(s.position, [0.03, 0.04, 0.02], atol=1e-9)
    assert s.gripper == pytest.approx(JAW_OPEN * 0.75)  # the trigger closes the jaws
    _publish(box, data, 1, REST[1] + [0.03, 0.02, -0.04], trigger=1.0)
    assert dev.read().gripper == 0.0
    # Far outside the workspace: clipped to +-WORKSPACE, reached no faster than MAX_SPEED per
    # servo tick, even when a tick comes 100 ms late (the servo catching up must not jump the tool).
    _publish(box, data, 1, REST[1] + [0.5, 0.0, 0.0])
    p0 = dev.read().position
    time.sleep(0.1)
    s = dev.read()
    assert np.linalg.norm(s.position - p0) == pytest.approx(MAX_SPEED * 1e-3)
    assert _settle(dev, 0.6).position[0] == pytest.approx(WORKSPACE)
    # Recentre: the controller's current position becomes the rest; the handle glides back to 0.
    here = REST[1] + [0.05, 0.05, 0.05]
    _publish(box, data, 1, here)
    data["xr_recenter"][1] += 1
    box.write(data)
    np.testing.assert_allclose(_settle(dev, 0.8).position, 0.0, atol=1e-9)
    np.testing.assert_allclose(dev.rest, here)
    # Tracking lost: not connected (the workspace map then holds the tool's last target).
    _publish(box, data, 1, here, valid=False)
    assert not dev.read().connected


def test_rest_positions_come_from_the_environment_or_fail_in_one_line(box, monkeypatch):
    monkeypatch.setenv("TROCAR_XR_REST", "-0.2,-0.3,-0.4, 0.2,-0.3,-0.5")
    data = box.empty()
    dev = XrControllerDevice(box, hand=1)
    dev.open()
    np.testing.assert_allclose(dev.rest, [0.2, -0.3, -0.5])
    _publish(box, data, 1, [0.21, -0.3, -0.5])
    np.testing.assert_allclose(_settle(dev, 0.2).position, [0.01, 0.0, 0.0], atol=1e-12)
    for bad in ("1,2,3", "a,b,c,d,e,f", "0,0,0,0,0,nan"):
        monkeypatch.setenv("TROCAR_XR_REST", bad)
        with pytest.raises(UserError, match="TROCAR_XR_REST=.*six numbers in metres"):
            XrControllerDevice(box, hand=0)


def test_axes():
    np.testing.assert_allclose(local_to_device(np.array([1.0, 2.0, 3.0])), [1.0, -3.0, 2.0])
