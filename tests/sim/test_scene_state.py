"""Scene state: save, restore and reset in place are bit-identical; the checksum sees all of it."""

from __future__ import annotations

import numpy as np
import pytest

from sim.scene import SceneControl, build_scene

TETS = 1000


GRASPED_BY = 700  # ticks: the jaws have closed on the pad by then


def _grasp_xy() -> tuple[float, float]:
    """The top-face node nearest the pad centre (the jaws close around a node there)."""
    from sim.scene_build import SceneConfig, make_tissue

    rest = make_tissue(SceneConfig(tissue_tets=TETS)).rest
    top = np.flatnonzero(rest[:, 2] >= rest[:, 2].max() - 1e-9)
    node = top[np.argmin(np.linalg.norm(rest[top, :2], axis=1))]
    return float(rest[node, 0]), float(rest[node, 1])


GRASP_XY = _grasp_xy()


def make_scene():
    """The pad with a vertical grasper above its centre (as in test_scene_contact) and the
    scissors through the right port."""
    from sim import instruments as inst
    from sim.ports import Port
    from sim.scene import Scene
    from sim.scene_build import RIGHT_PORT, SceneConfig
    from sim.tool_scene import ToolSetup

    tools = (ToolSetup(inst.GRASPER, Port((*GRASP_XY, 0.25)), depth=0.2),
             ToolSetup(inst.SCISSORS, RIGHT_PORT, depth=0.2))
    return Scene(SceneConfig(tools=tools, tissue_tets=TETS))


def press_and_grasp(scene, k: int) -> SceneControl:
    """Tick k of a script: the grasper comes down with open jaws, sinks 2 mm into the pad, closes on
    it and lifts; the scissors press on the pad and slide (contact, friction, attachments)."""
    if not hasattr(scene, "_test_start"):
        scene._test_start = scene.hold_control().targets.copy()
    start = scene._test_start
    top = float(scene.tissue.rest[:, 2].max())
    above = np.array([*GRASP_XY, top + 0.01])
    into = np.array([*GRASP_XY, top - 0.002])
    targets = start.copy()
    w1, w2 = min(1.0, k / 300.0), min(1.0, max(0.0, (k - 300) / 300.0))
    targets[0, :3] = (1 - w1) * start[0, :3] + w1 * above + w2 * (into - above)
    if k > 700:
        targets[0, 2] += 0.003 * min(1.0, (k - 700) / 100.0)
    press = np.array([0.025, 0.0, top - 0.003])
    targets[1, :3] = (1 - w1) * start[1, :3] + w1 * press
    targets[1, 0] += 0.003 * np.sin(0.01 * k)
    jaws = np.array([0.8 * min(1.0, max(0.0, (700 - k) / 100.0)), 0.0])  # closes over 600..700
    return SceneControl(targets, jaws)


def run(scene, k0: int, n: int) -> None:
    for k in range(k0, k0 + n):
        scene.tick(press_and_grasp(scene, k), scene.dt)


@pytest.fixture(scope="module")
def scene():
    with make_scene() as s:
        yield s


def test_restore_then_the_same_ticks_give_a_bit_identical_state(scene):
    scene.reset()
    run(scene, 0, GRASPED_BY + 20)  # grasped and pressing by now
    assert scene.contact.att_node.size > 0, "the script should hold tissue in the jaws"
    saved = scene.get_state()
    run(scene, GRASPED_BY + 20, 60)
    first = scene.checksum()
    x_first = scene.tissue_state.x.copy()
    scene.set_state(saved)
    assert scene.tick_count == GRASPED_BY + 20
    run(scene, GRASPED_BY + 20, 60)
    assert scene.checksum() == first
    assert np.array_equal(scene.tissue_state.x, x_first)
    saved.release()


def test_reset_returns_to_the_built_state_and_replays_identically(scene):
    with make_scene() as fresh:
        built = fresh.checksum()
        run(fresh, 0, GRASPED_BY + 30)
        reference = fresh.checksum()
    scene.reset()
    assert scene.checksum() == built and scene.tick_count == 0 and scene.events == []
    run(scene, 0, GRASPED_BY + 30)
    assert scene.checksum() == reference


def test_reset_with_a_seed_reseeds_the_scene_rng(scene):
    scene.reset(seed=5)
    a = scene.rng.random(3)
    scene.reset(seed=5)
    assert np.array_equal(scene.rng.random(3), a)
    scene.reset(seed=6)
    assert not np.array_equal(scene.rng.random(3), a)


@pytest.mark.parametrize("where", [
    "tissue rotations", "face multipliers", "grasp attachments", "coupling targets",
    "carried contact forces", "tool reaction", "scope", "rng"])
def test_the_checksum_changes_when_any_dynamic_state_changes(scene, where):
    scene.reset()
    run(scene, 0, GRASPED_BY + 20)
    before = scene.checksum()
    saved = scene.get_state()
    if where == "tissue rotations":
        scene.tissue_state.q[1, 0] += 1e-12
    elif where == "face multipliers":
        scene.contact.lam_face[0] += 1e-12
    elif where == "grasp attachments":
        scene.contact.att_local[0, 0] += 1e-12
    elif where == "coupling targets":
        scene.rigid.last_target[0, 0] += 1e-12
    elif where == "carried contact forces":
        scene.contact.f_node[0, 0] += 1e-12
    elif where == "tool reaction":
        scene.reaction[0, 0] += 1e-12
    elif where == "scope":
        scene.scope.roll += 1e-9
    else:
        scene.rng.random()
    assert scene.checksum() != before
    scene.set_state(saved)
    assert scene.checksum() == before
    saved.release()


def test_a_grasped_ring_is_held_again_after_restore():
    with build_scene("peg_transfer") as scene:
        # Tool 0 grasps ring 0 at its near rim (the jaws straddle the tube), from above.
        rim = scene.body_poses()[0, :3] - [0.0, scene.rigid.pegboard.spec.ring_radius, 0.0]
        start = scene.hold_control().targets.copy()

        def control(k):
            t = start.copy()
            above = rim + [0.0, 0.0, 0.02]
            if k < 300:
                w = k / 300.0
                t[0, :3] = (1 - w) * start[0, :3] + w * above
            else:
                w = min(1.0, (k - 300) / 100.0)
                t[0, :3] = (1 - w) * above + w * (rim + [0.0, 0.0, 0.001])
            if k > 600:
                t[0, 2] += 0.03 * min(1.0, (k - 600) / 300.0)
            return SceneControl(t, np.array([0.6 if k < 450 else 0.0, 0.0]))

        for k in range(550):
            scene.tick(control(k), scene.dt)
        held = scene.rigid.grasped[0]
        assert held is not None, "the script should grasp a ring"
        b = scene.rigid.graspable.index(held)
        z0 = scene.body_poses()[b, 2]
        saved = scene.get_state()
        for k in range(550, 900):
            scene.tick(control(k), scene.dt)
        first = scene.checksum()
        lifted = scene.body_poses()[b, 2]
        scene.set_state(saved)
        assert scene.rigid.grasped[0] == held
        for k in range(550, 900):
            scene.tick(control(k), scene.dt)
        assert scene.checksum() == first
        assert scene.body_poses()[b, 2] == lifted > z0 + 0.01  # the ring went up with the jaws
