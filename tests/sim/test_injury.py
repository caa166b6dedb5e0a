"""Clips, tearing and bleeding in the full scene tick (real PyBullet DIRECT + Numba tissue)."""

import numpy as np
import pytest

from sim import instruments as inst
from sim.bleeding import DROP_ML
from sim.clips import lumen_area, wall_gap
from sim.eased_move import eased_move
from sim.ports import Port
from sim.scene import Scene, SceneControl, build_scene
from sim.scene_build import SceneConfig
from sim.tissue_bodies import StripBody, TubeBody
from sim.tissue_topology import components
from sim.tool_scene import ToolSetup

DT = 1e-3


def kinds(scene, kind):
    return [e for e in scene.events if e.kind == kind]


def clamp_nodes(scene, high: bool) -> np.ndarray:
    x0 = scene.tissue.rest[:, 0]
    edge = x0 > x0.max() - 1e-9 if high else x0 < x0.min() + 1e-9
    return np.flatnonzero(scene.tissue.fixed & edge)


def test_strip_tears_at_its_threshold_and_the_force_drops():
    """A strip pulled by its clamp tears within 10 % of its configured force, with a 'tear' event
    carrying that force; the force falls afterwards; a restored state replays the tear exactly."""
    scene = build_scene("default", body=StripBody(tear="fragile", clamp_both=True), tissue_tets=1, tools=())
    threshold = scene.body_info.tear_force
    mass0 = scene.tissue.mass.sum()
    end = clamp_nodes(scene, high=True)
    scene.injury.set_probe(end)
    control = SceneControl(np.zeros((0, 4)), np.zeros(0))
    forces = []
    saved = None
    for k in range(1100):
        if k == 600:
            saved = scene.get_state()
        if not kinds(scene, "tear"):
            scene.tissue_state.x[end, 0] += 0.005 * DT  # 5 mm/s
        scene.tick(control, DT)
        forces.append(scene.injury.pull_force(scene.tissue_state, scene.reaction)[0])
    tears = kinds(scene, "tear")
    assert tears, "the strip did not tear"
    tear = tears[0]
    assert abs(tear.value - threshold) <= 0.10 * threshold, (tear.value, threshold)
    before = max(forces[: tear.tick - 5])
    assert before < tear.value + 1e-9  # nothing tore before that force was reached
    assert forces[-1] < 0.5 * threshold  # it tore through: the force dropped
    # ... because the strip came apart (faces separated by the cutting core, not softened):
    # its two clamped ends are in different pieces, and no mass was lost.
    pieces = components(scene.tissue)
    assert not set(pieces[clamp_nodes(scene, high=False)]) & set(pieces[end])
    assert scene.topology_version >= 1 and scene.tissue.mass.sum() == pytest.approx(mass0, rel=1e-9)
    dmg = scene.injury.damage
    assert dmg.failed.any() and 0.0 <= dmg.damage.min() and dmg.damage.max() <= 1.0
    end_sum = scene.checksum()
    n_events = len(scene.events)
    scene.set_state(saved)  # replay from before the tear
    for _ in range(600, 1100):
        if not kinds(scene, "tear"):
            scene.tissue_state.x[end, 0] += 0.005 * DT
        scene.tick(control, DT)
    assert scene.checksum() == end_sum
    assert len(scene.events) == n_events and kinds(scene, "tear")[0] == tear
    saved.release()
    scene.close()


def tube_scene(**body) -> Scene:
    """A tube under a clip applier whose port is straight above its middle (shaft vertical)."""
    tube = TubeBody(length=0.02, cells=(12, 1, 20), start=(-0.01, 0.0, 0.02), **body)
    cfg = SceneConfig(tools=(ToolSetup(inst.CLIP_APPLIER, Port((0.0, 0.0, 0.25)), depth=0.2),),
                      tissue_tets=1, body=tube)
    return Scene(cfg)


def move(scene, control, to, jaw, seconds):
    for _ in eased_move(control, 0, to, int(round(seconds / DT)), jaw):
        scene.tick(control, DT)


def test_clip_closes_the_lumen_and_stays_on_when_the_tube_moves():
    """A clip fired on a 3 mm duct closes its lumen (the opposite inner walls within 10 % of the
    0.7 mm wall of each other's plane) and stays on, closed, while the duct is lifted 5 mm by its
    ends: the clip goes along."""
    scene = tube_scene()
    info = scene.body_info
    open_area = lumen_area(scene.tissue_state.x, info, 0.01)
    control = SceneControl(np.array([[0.0, 0.0, 0.04, 0.0]]), np.array([0.7]))
    move(scene, control, (0.0, 0.0, 0.04), 0.7, 0.2)
    move(scene, control, (0.0, 0.0, 0.0165), 0.7, 0.4)  # jaws around the tube, tips below it
    move(scene, control, (0.0, 0.0, 0.0165), 0.0, 0.1)  # squeeze: the clip fires
    move(scene, control, (0.0, 0.0, 0.0165), 0.0, 0.1)
    clips = kinds(scene, "clip_applied")
    assert len(clips) == 1 and not kinds(scene, "clip_missed") and not kinds(scene, "tissue_reset")
    rec = scene.injury.clips.records()[0]
    assert rec["along"] == pytest.approx(0.01, abs=1e-3)  # the tube's middle
    assert rec["angle"] == pytest.approx(90.0, abs=5.0)  # square to the tube
    assert rec["spans_width"]
    closed = lumen_area(scene.tissue_state.x, info, rec["along"])
    assert closed < 0.15 * open_area, (closed, open_area)
    wall = info.r_out - info.r_in
    assert wall_gap(scene.tissue_state.x, scene.injury.clips, info, 0) < 0.1 * wall
    move(scene, control, (0.0, 0.0, 0.0165), 0.7, 0.1)  # open the applier and take it away
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.3)
    z0 = scene.injury.clips.pos[0, 2]
    ends = np.r_[clamp_nodes(scene, False), clamp_nodes(scene, True)]
    for _ in range(500):  # lift the tube by its ends, 5 mm in 0.5 s
        scene.tissue_state.x[ends, 2] += 0.01 * DT
        scene.tick(control, DT)
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.3)
    assert scene.injury.clips.pos[0, 2] - z0 == pytest.approx(0.005, abs=1.5e-3)  # the clip went along
    assert lumen_area(scene.tissue_state.x, info, rec["along"]) < 0.15 * open_area  # still closed
    assert wall_gap(scene.tissue_state.x, scene.injury.clips, info, 0) < 0.1 * wall
    assert scene.snapshot()["clips"][0, 7] == 1.0 and scene.snapshot()["clips"][1, 7] == 0.0
    assert not kinds(scene, "tissue_reset")
    scene.close()


def wound_in_middle(scene) -> np.ndarray:
    """The vessel's elements within 0.5 mm of its middle (as a cut or a tear there would fail)."""
    info = scene.body_info
    ax = info.axial[scene.tissue.tets].mean(axis=1)
    mid = 0.5 * (info.axial.min() + info.axial.max())
    return np.flatnonzero(np.abs(ax - mid) < 5e-4)


def fire_clip(scene, x_along: float) -> None:
    """Fire a clip square to the tube at x [m] from an applier frame straight above (jaws along -z)."""
    clips = scene.injury.clips
    free = ~scene.contact.skip & ~scene.tissue.fixed
    c = clips.fire(inst.CLIP_APPLIER, np.eye(3), np.array([x_along, 0.0, 0.0165]), 0.7,
                   scene.tissue_state.x, free)
    assert c >= 0
    scene.contact.skip[clips.node[c, :clips.count[c]]] = True


@pytest.mark.parametrize("clipped", [(), (-0.005,), (-0.005, 0.005)])
def test_opened_vessel_bleeds_unless_clipped_on_both_sides(clipped):
    scene = tube_scene(vessel=True, bleed_rate=0.5)
    control = SceneControl(np.array([[0.0, 0.0, 0.05, 0.0]]), np.array([0.7]))
    for x in clipped:
        fire_clip(scene, x)
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.1)  # the crimps close
    scene.injury.opened(wound_in_middle(scene), scene.tissue_state)
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.5)
    lost = scene.injury.bleeding.volume
    starts = kinds(scene, "bleed_start")
    open_sides = 2 - len(clipped)
    assert lost == pytest.approx(0.5 * open_sides * 0.5, rel=0.02)  # [mL]: rate x open sides x 0.5 s
    assert len(starts) == (1 if open_sides else 0)
    blood = scene.snapshot()["blood"]
    if open_sides:
        assert (blood[1:, 3] > 0).sum() >= 1  # drops on their way down
        assert lost >= 2 * DROP_ML
    else:
        assert not blood[:, 3].any()
    if len(clipped) == 1:  # clipping the other side stops it
        fire_clip(scene, 0.005)
        move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.1)
        assert kinds(scene, "bleed_stop") and scene.injury.bleeding.rate == 0.0
    scene.close()


@pytest.mark.parametrize("sealed", [False, True])
def test_cutting_a_vessel_bleeds_unless_it_is_clipped_on_both_sides(sealed):
    """Scissors-style cut across a vessel (the cutting core's Scene.cut with a blade through its
    middle): a wound opens there; unclipped it bleeds, clipped on both sides it does not."""
    from sim.cutting import quad_blade

    scene = tube_scene(vessel=True, bleed_rate=0.5)
    control = SceneControl(np.array([[0.0, 0.0, 0.05, 0.0]]), np.array([0.7]))
    if sealed:
        fire_clip(scene, -0.005)
        fire_clip(scene, 0.005)
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.1)
    x = 0.0003  # between two sections of the 1 mm axial mesh
    change = scene.cut(quad_blade([x, -0.004, 0.015], [x, 0.004, 0.015], [x, 0.004, 0.025],
                                  [x, -0.004, 0.025]))
    assert change is not None and kinds(scene, "cut")
    assert scene.injury.bleeding.n_wounds == 1
    assert scene.injury.bleeding.wound_s[0] == pytest.approx(0.01, abs=1.5e-3)
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.4)
    if sealed:
        assert not kinds(scene, "bleed_start") and scene.injury.bleeding.volume == 0.0
        assert scene.injury.clips.n_clips == 2  # the clips are still on the divided vessel
    else:
        assert kinds(scene, "bleed_start") and scene.injury.bleeding.volume > 0.3
    assert not kinds(scene, "tissue_reset")
    scene.close()


def test_a_restored_clipped_state_replays_bit_identically():
    """A clip's tether and the step-matrix rebuild at the settled clipped configuration (started
    150 ticks after firing, swapped in 50 later) are scene state: a state saved before it replays
    the same ticks to the same checksum; reset() takes the clip off."""
    scene = tube_scene()
    control = SceneControl(np.array([[0.0, 0.0, 0.05, 0.0]]), np.array([0.7]))
    fire_clip(scene, 0.0)
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.1)
    saved = scene.get_state()
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.25)  # past both swaps
    assert scene.tissue.system(DT).frames is not None  # the configuration's step matrix is in
    end = scene.checksum()
    scene.set_state(saved)
    assert scene.tissue.system(DT).frames is None
    move(scene, control, (0.0, 0.0, 0.05), 0.7, 0.25)
    assert scene.checksum() == end
    scene.reset()
    assert scene.injury.clips.n_clips == 0 and scene.tissue.springs is None
    assert scene.tissue.system(DT).frames is None
    saved.release()
    scene.close()
