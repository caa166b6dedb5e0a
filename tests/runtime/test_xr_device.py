"""`--device xr`: a VR controller's pose, trigger and recentre button (as the headset display writes
them into the session's input mailbox) become device samples through the documented mapping."""

import time

import numpy as np
import pytest

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


def _settle(dev, seconds=1.0):
    t_end = time.perf_counter() + seconds
    s = dev.read()
    while time.perf_counter() < t_end:
        s = dev.read()
        time.sleep(0.002)
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
    # Far outside the workspace: clipped to +-WORKSPACE, reached no faster than MAX_SPEED.
    _publish(box, data, 1, REST[1] + [0.5, 0.0, 0.0])
    t0 = time.perf_counter()
    x0 = dev.read().position[0]
    time.sleep(0.1)
    s = dev.read()
    dt = time.perf_counter() - t0
    assert 0 < s.position[0] - x0 <= MAX_SPEED * dt + 1e-9
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


def test_axes():
    np.testing.assert_allclose(local_to_device(np.array([1.0, 2.0, 3.0])), [1.0, -3.0, 2.0])
