"""The session step: devices -> map -> scene.tick -> procedure -> forces, rows and snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from haptics.device import NullDevice
from sim.runtime.devices import GLIDE_S, WorkspaceMap
from sim.runtime.mailbox import SnapshotMailbox, layout_of
from sim.runtime.recording import RecordingWriter, read_recording
from sim.runtime.step import Hand, SessionStep, decode_hud
from sim.scene import build_scene


class CountingProcedure:
    """A procedure stand-in: counts ticks, keeps the events it was handed, shows a HUD."""

    def __init__(self) -> None:
        self.ticks: list[int] = []
        self.events: list = []

    def update(self, scene, tick, events) -> None:
        self.ticks.append(tick)
        self.events.extend(events)

    def hud(self) -> dict:
        return {"instruction": f"tick {len(self.ticks)}", "progress": 0.5, "warnings": ["w"]}


@pytest.fixture
def scene():
    with build_scene("default", tissue_tets=0) as s:
        yield s


def test_each_hand_drives_its_own_tool_and_gets_its_own_force(scene, tmp_path):
    left, right = NullDevice((0.0, 0.0, -0.01)), NullDevice((0.0, 0.0, 0.01))
    for d in (left, right):
        d.open()
    hands = [Hand(left, WorkspaceMap.for_scene(scene, tool=0)),
             Hand(right, WorkspaceMap.for_scene(scene, tool=1))]
    rec = RecordingWriter(str(tmp_path / "s.trec"), {"mode": "test"}, scene.n_tools, n_hands=2)
    step = SessionStep(scene, hands, recorder=rec, checksum_every=10)
    home = [h.wmap.home.copy() for h in hands]
    n = int(round(GLIDE_S / scene.dt)) + 20  # the link-up glide, then 20 ticks at the hand
    for k in range(n):
        step.step(k * 1_000_000)
        if k == 0:  # the first sample starts the glide: the targets have barely left home
            assert np.linalg.norm(step.control.targets[0, :3] - home[0][0, :3]) < 1e-6
    rec.close()
    assert np.allclose(step.control.targets[0, :3], home[0][0, :3] + 1.5 * np.array([0, 0, -0.01]))
    assert np.allclose(step.control.targets[1, :3], home[1][1, :3] + 1.5 * np.array([0, 0, 0.01]))
    # each device got minus the coupling force of its own tool
    assert np.allclose(left.last_force, -step.coupling[0])
    assert np.allclose(right.last_force, -step.coupling[1])
    r = read_recording(str(tmp_path / "s.trec"))
    assert r.ticks["force"].shape == (n, 2, 3) and r.ticks["dev_pos"].shape == (n, 2, 3)
    assert np.allclose(r.ticks["dev_pos"][-1], [[0, 0, -0.01], [0, 0, 0.01]])
    assert r.ticks["tool_pose"].shape == (n, 2, 7)
    # the recorded tool pose is where the tool tip is after the tick
    assert np.allclose(r.ticks["tool_pose"][-1, :, :3], [t.tip() for t in scene.tools], atol=1e-9)
    assert np.allclose(r.ticks["scope_pose"][-1], scene.scope.pose)
    assert len(r.checksums) == n // 10


def test_a_device_link_coming_up_glides_the_tool_to_the_hand_without_a_force_kick(scene):
    # The handle is 45 mm from where the tool holds when its link comes up. Taken in one tick, the
    # target's 45 m/s finite-difference velocity put 800 N of coupling damping on the tool (seen in
    # a two-device session). Gliding, the target follows a minimum-jerk path and the force stays at
    # what accelerating the tool costs: peak acceleration 5.77 * 45 mm / GLIDE_S^2 on ~0.2 kg.
    dev = NullDevice((0.0, 0.0, 0.03))
    dev.open()
    hand = Hand(dev, WorkspaceMap.for_scene(scene, tool=0))
    step = SessionStep(scene, [hand])
    home = hand.wmap.home[0, :3].copy()
    goal = home + 1.5 * np.array([0.0, 0.0, 0.03])
    n = int(round(GLIDE_S / scene.dt))
    peak, mid = 0.0, None
    for k in range(n + 200):
        step.step(k * 1_000_000)
        peak = max(peak, float(np.linalg.norm(step.coupling[0])))
        if k == n // 2 - 1:
            mid = step.control.targets[0, :3].copy()
    np.testing.assert_allclose(mid, 0.5 * (home + goal), atol=1e-6)  # min-jerk: halfway at half time
    np.testing.assert_allclose(step.control.targets[0, :3], goal, atol=1e-12)
    np.testing.assert_allclose(scene.tools[0].tip(), goal, atol=1e-3)  # the tool got there
    assert peak < 0.5, peak
    # a link that drops and comes back glides again (from the held target, to the hand's new place)
    dev.close()
    step.step(0)
    hand.device = NullDevice((0.0, 0.0, 0.0))
    hand.device.open()
    step.step(0)
    assert np.linalg.norm(step.control.targets[0, :3] - goal) < 1e-6


class ButtonHand(NullDevice):
    """A handle held still at `position` whose button bits the test sets (`buttons`)."""

    buttons = 0

    def read(self):
        s = super().read()
        s.buttons = self.buttons
        return s


def test_button_1_exchanges_the_instrument_of_a_hand_that_holds_two(scene):
    # One device, two instruments (the default scene's two graspers): the hand starts on tool 0;
    # a press of button 1 hands tool 0 back (it glides to its start pose) and takes tool 1, which
    # glides to the hand; holding the button does not exchange again; a second press goes back.
    dev = ButtonHand((0.0, 0.0, 0.02))
    dev.open()
    wmap = WorkspaceMap.for_scene(scene, tool=0, hands=1)
    assert wmap.instruments == (0, 1)
    assert WorkspaceMap.for_scene(scene, tool=0, hands=2).instruments == ()  # each hand its own tool
    hand = Hand(dev, wmap)
    step = SessionStep(scene, [hand])
    home = wmap.home[:, :3].copy()
    at_hand = [home[i] + 1.5 * np.array([0.0, 0.0, 0.02]) for i in (0, 1)]
    n = int(round(GLIDE_S / scene.dt))
    for _ in range(n + 50):
        step.step(0)
    np.testing.assert_allclose(step.control.targets[0, :3], at_hand[0], atol=1e-12)
    dev.buttons = 1
    peak = 0.0
    for k in range(n + 50):  # held down the whole time: one exchange
        step.step(0)
        peak = max(peak, float(np.abs(step.coupling).max()))
        if k == n // 2 - 1:  # both halfway: min-jerk glides of GLIDE_S
            np.testing.assert_allclose(step.control.targets[0, :3], 0.5 * (at_hand[0] + home[0]), atol=1e-6)
            np.testing.assert_allclose(step.control.targets[1, :3], 0.5 * (home[1] + at_hand[1]), atol=1e-6)
    assert wmap.tool == 1
    np.testing.assert_allclose(step.control.targets[0, :3], home[0], atol=1e-12)  # handed back
    np.testing.assert_allclose(step.control.targets[1, :3], at_hand[1], atol=1e-12)  # taken
    np.testing.assert_allclose(dev.last_force, -step.coupling[1])  # the hand feels the new tool
    assert peak < 0.5, peak  # no kick on either tool (the glides: ~0.2 kg at 5.8 x 33 mm / 1 s^2)
    dev.buttons = 0
    step.step(0)
    dev.buttons = 1
    for _ in range(n + 50):
        step.step(0)
    assert wmap.tool == 0
    np.testing.assert_allclose(step.control.targets[0, :3], at_hand[0], atol=1e-12)
    np.testing.assert_allclose(step.control.targets[1, :3], home[1], atol=1e-12)


def test_the_procedure_sees_every_tick_and_event_and_its_hud_reaches_the_snapshot(scene):
    proc = CountingProcedure()
    step = SessionStep(scene, [], procedure=proc, publish_every=5)
    box = SnapshotMailbox.create(layout_of(step.snapshot()))
    step.mailbox = box
    try:
        control = scene.hold_control()
        for k in range(10):
            if k == 4:  # an event of tick 4 (as the scene appends them)
                scene.events.append(_event(scene.tick_count))
            step.step(0, control=control)
        assert proc.ticks == list(range(10))
        assert len(proc.events) == 1 and proc.events[0].tick == 4
        snap = SnapshotMailbox.attach(box.name, box.layout).read()
        hud = decode_hud(snap["hud"])
        assert hud["instruction"] == "tick 10" and hud["warnings"] == ["w"]
        assert snap["scope_pose"].shape == (7,) and step.published == 2
    finally:
        box.close()
        box.unlink()


def _event(tick: int):
    from sim.scene import SceneEvent

    return SceneEvent(tick, "grasp_object", 0, 0.0, "test")
