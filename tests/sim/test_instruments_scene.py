"""Instruments, ports, coupling and the rigid world in real PyBullet DIRECT (sim.tool_scene)."""

import numpy as np
import pybullet as pb
import pytest

from sim import instruments as inst
from sim import rigid_world
from sim.ports import Port, distance_to_line
from sim.tool_scene import DEFAULT_STIFFNESS, ToolScene, ToolSetup

DT = 1e-3
LEFT = Port((-0.01, -0.10, 0.25))
RIGHT = Port((0.09, -0.06, 0.25))


def two_tools(**kwargs) -> ToolScene:
    return ToolScene([ToolSetup(inst.GRASPER, LEFT, depth=0.2), ToolSetup(inst.SCISSORS, RIGHT, depth=0.2)],
                     **kwargs)


class Script:
    """Drives tools through waypoints with cosine-smoothed interpolation, one tick per ms."""

    def __init__(self, scene: ToolScene):
        self.scene = scene
        self.tip = np.array([t.tip() for t in scene.tools])
        self.roll = np.zeros(len(scene.tools))
        self.jaw = np.zeros(len(scene.tools))

    def move(self, i, to, jaw, seconds):
        p0, j0 = self.tip[i].copy(), self.jaw[i]
        n = int(round(seconds / DT))
        for k in range(1, n + 1):
            w = 0.5 - 0.5 * np.cos(np.pi * k / n)
            self.tip[i] = p0 + w * (np.asarray(to, dtype=float) - p0)
            self.jaw[i] = j0 + w * (jaw - j0)
            self.scene.tick(np.c_[self.tip, self.roll], self.jaw, DT)


def test_catalogue_loads_with_jaw_joints_except_the_scope():
    with ToolScene([ToolSetup(s, LEFT) for s in inst.CATALOGUE.values()], pegboard=False) as scene:
        for tool in scene.tools:
            names = [pb.getJointInfo(tool.body, j, physicsClientId=scene.client)[1].decode()
                     for j in range(pb.getNumJoints(tool.body, physicsClientId=scene.client))]
            assert names == ["a", "b", "insert", "roll", "jaw_a", "jaw_b"]
            assert tool.spec.has_jaws == ("laparoscope" not in tool.spec.name)
            assert tool.spec.shaft_radius in (2.5e-3, 5.0e-3)
            assert 0.33 <= tool.spec.shaft_length <= 0.36
            if tool.spec.has_jaws:
                assert 0.012 <= tool.spec.jaw_length <= 0.020
    assert inst.SCOPE_30.view_angle == pytest.approx(np.radians(30.0))


@pytest.mark.parametrize("spec", [inst.GRASPER, inst.MARYLAND, inst.SCISSORS, inst.CLIP_APPLIER])
def test_jaws_open_and_close_on_command(spec):
    with ToolScene([ToolSetup(spec, LEFT)], pegboard=False) as scene:
        target = np.array([[*scene.tools[0].tip(), 0.0]])
        opening = 0.8 * spec.jaw_open_max
        for _ in range(200):
            scene.tick(target, np.array([opening]), DT)
        assert scene.tool_poses()[0, 4] == pytest.approx(opening, abs=0.02)
        for _ in range(200):
            scene.tick(target, np.array([0.0]), DT)
        assert abs(scene.tool_poses()[0, 4]) < 0.02


def test_shaft_passes_through_the_port_under_random_targets():
    rng = np.random.default_rng(7)
    worst = 0.0
    with two_tools() as scene:
        targets = np.zeros((2, 4))
        for k in range(1500):
            if k % 60 == 0:
                # Some targets are unreachable (above the port, outside the cone, too deep): projected.
                targets[:, :3] = rng.uniform([-0.25, -0.25, -0.1], [0.25, 0.25, 0.35], size=(2, 3))
                targets[:, 3] = rng.uniform(-3, 3, size=2)
            scene.tick(targets, rng.uniform(0, 1, size=2), DT)
            for tool in scene.tools:
                tip, axis = tool.shaft_pose()
                worst = max(worst, distance_to_line(tool.port_point, tip, axis))
    assert worst < 1e-3
    print(f"fulcrum error max {worst:.3g} m")


def test_unreachable_target_is_projected_not_obeyed():
    with ToolScene([ToolSetup(inst.GRASPER, LEFT)], pegboard=False) as scene:
        port = LEFT.point()
        target = port + np.array([0.3, 0.0, -0.02])  # nearly horizontal: outside the 60 deg cone
        for _ in range(600):
            scene.tick(np.array([[*target, 0.0]]), np.zeros(1), DT)
        tip, axis = scene.tools[0].shaft_pose()
        assert np.degrees(np.arccos(-axis[2])) == pytest.approx(60.0, abs=0.5)
        np.testing.assert_allclose(tip, scene.last_target[0], atol=2e-4)
        assert np.linalg.norm(tip - target) > 0.05


def test_coupling_force_is_stiffness_times_target_minus_proxy_in_contact():
    # Press the tip 5 mm into the free part of the board: the board holds the proxy, the spring stretches.
    with ToolScene([ToolSetup(inst.GRASPER, LEFT)]) as scene:
        spec = scene.pegboard.spec
        target = np.array([-0.01, -0.045, spec.top - 0.005])
        for _ in range(800):
            force = scene.tick(np.array([[*target, 0.0]]), np.zeros(1), DT)[0]
        proxy = scene.tools[0].tip()
        np.testing.assert_allclose(force, DEFAULT_STIFFNESS * (target - proxy), atol=0.02)
        assert force[2] < 0
        # The tip rests on the board, so about k * 5 mm minus what the jaw geometry holds above the tip.
        assert -DEFAULT_STIFFNESS * 0.0055 < force[2] < -DEFAULT_STIFFNESS * 0.003


def test_coupling_force_saturates_when_the_hand_pushes_far_into_the_board():
    # The target 6 cm under the board top: the spring alone would be k * 6 cm = 30 N; the coupling
    # saturates at MAX_COUPLING_FORCE, in the same direction, and the board still holds the tool.
    from sim.coupling_kernels import MAX_COUPLING_FORCE

    with ToolScene([ToolSetup(inst.GRASPER, LEFT)]) as scene:
        spec = scene.pegboard.spec
        target = np.array([-0.01, -0.01, spec.top - 0.06])
        peak = 0.0
        for _ in range(800):
            force = scene.tick(np.array([[*target, 0.0]]), np.zeros(1), DT)[0]
            peak = max(peak, float(np.linalg.norm(force)))
        proxy = scene.tools[0].tip()
        assert DEFAULT_STIFFNESS * np.linalg.norm(target - proxy) > 2 * MAX_COUPLING_FORCE
        assert peak <= MAX_COUPLING_FORCE + 1e-9
        assert np.linalg.norm(force) == pytest.approx(MAX_COUPLING_FORCE, rel=1e-6)
        spring = target - proxy
        assert force @ spring / (np.linalg.norm(force) * np.linalg.norm(spring)) > 0.99
        assert proxy[2] > spec.top - 0.003  # on the board, not through it


def test_proxy_converges_to_a_free_space_target_with_zero_force():
    with ToolScene([ToolSetup(inst.MARYLAND, LEFT)], pegboard=False) as scene:
        script = Script(scene)
        goal = np.array([0.02, -0.02, 0.08])
        script.move(0, goal, 0.0, 0.3)
        for _ in range(150):
            force = scene.tick(np.array([[*goal, 0.0]]), np.zeros(1), DT)[0]
        assert np.linalg.norm(scene.tools[0].tip() - goal) < 1e-4
        assert np.linalg.norm(force) < 0.05


def test_roll_follows_its_target_without_moving_the_tip():
    with ToolScene([ToolSetup(inst.GRASPER, LEFT, depth=0.2)], pegboard=False) as scene:
        tip = scene.tools[0].tip()
        for _ in range(400):
            scene.tick(np.array([[*tip, 1.2]]), np.zeros(1), DT)
        assert scene.tool_poses()[0, 3] == pytest.approx(1.2, abs=1e-3)
        np.testing.assert_allclose(scene.tools[0].tip(), tip, atol=1e-5)


def test_roll_holds_against_tissue_torque_about_the_shaft():
    """0.5 N sideways on a curved blade 3 mm off the shaft axis (1.5 mNm, what the gauze puts on
    the pattern cut's scissors) turns the instrument by a couple of degrees, as in a hand, and it
    settles: a roll spring as soft as the tip's coupling (1.7 mNm/rad) turned it by ~50 degrees."""
    with ToolScene([ToolSetup(inst.SCISSORS, RIGHT, depth=0.2)], pegboard=False) as scene:
        tool, tip = scene.tools[0], scene.tools[0].tip()
        rolls = []
        for _ in range(600):
            pos, orn = pb.getLinkState(tool.body, inst.LINK_SHAFT, physicsClientId=scene.client)[4:6]
            r = np.array(pb.getMatrixFromQuaternion(orn)).reshape(3, 3)
            point = np.array(pos) + 0.003 * r[:, 0] + 0.004 * r[:, 2]  # off the axis, up the blade
            pb.applyExternalForce(tool.body, inst.LINK_SHAFT, (0.5 * r[:, 1]).tolist(), point.tolist(),
                                  pb.WORLD_FRAME, physicsClientId=scene.client)
            scene.tick(np.array([[*tip, 0.0]]), np.zeros(1), DT)
            rolls.append(scene.tool_poses()[0, 3])
        turned = np.degrees(np.abs(rolls))
        assert 0.5 < turned[-1] < 3.0  # it does turn a little (the torque is applied), not ~50 deg
        assert turned.max() < 4.0 and np.ptp(turned[-100:]) < 0.05  # no overshoot, settled


def test_stiffness_above_the_device_limit_or_unstable_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        ToolScene([ToolSetup(inst.GRASPER, LEFT)], stiffness=900.0, max_stiffness=800.0, pegboard=False)
    with pytest.raises(ValueError, match="unstable"):
        ToolScene([ToolSetup(inst.GRASPER, LEFT)], stiffness=1e6, pegboard=False)


def test_tool_collides_with_a_peg_without_passing_through_it():
    # Sweep the closed jaws sideways into peg 9 (right side, empty) at half its height. A round 4 mm
    # peg deflects the tool around it (the spring pulls on), so check contact happens and
    # penetration stays below 0.5 mm.
    with ToolScene([ToolSetup(inst.GRASPER, RIGHT, depth=0.2)]) as scene:
        spec, board, cid = scene.pegboard.spec, scene.pegboard.board, scene.client
        peg = spec.peg_world(9)
        z = spec.top + spec.peg_height / 2
        script = Script(scene)
        script.move(0, [peg[0] - 0.015, peg[1], z], 0.0, 0.4)
        deepest, touching = 0.0, 0
        for k in range(1, 301):
            script.tip[0, 0] = peg[0] - 0.015 + 0.03 * k / 300
            scene.tick(np.c_[script.tip, script.roll], script.jaw, DT)
            contacts = pb.getContactPoints(scene.tools[0].body, board, physicsClientId=cid)
            touching += bool(contacts)
            deepest = min([deepest] + [c[8] for c in contacts])
        assert touching > 20
        assert deepest > -5e-4


def test_closing_jaws_on_nothing_grasps_nothing():
    with ToolScene([ToolSetup(inst.GRASPER, LEFT, depth=0.2)]) as scene:
        script = Script(scene)
        script.move(0, [0.0, -0.045, 0.03], 0.6, 0.2)
        script.move(0, [0.0, -0.045, 0.03], 0.0, 0.2)
        assert scene.grasped == [None]


def test_clip_rests_on_the_floor():
    with ToolScene([ToolSetup(inst.CLIP_APPLIER, RIGHT)], pegboard=False) as scene:
        clip = scene.add_clip(np.array([0.0, 0.05, 0.02]), orientation=pb.getQuaternionFromEuler([1.5, 0, 0]))
        scene.settle(500)
        pose = scene.body_pose(clip)
        assert 0.0 < pose[2] < 0.005


def transfer_ring(scene: ToolScene, ring: int, peg: int) -> None:
    """Scripted expert: grasp the near rim of `ring`, lift, carry over `peg`, release, retract."""
    spec = scene.pegboard.spec
    script = Script(scene)
    centre = scene.body_pose(ring)[:3]
    grasp = centre - np.array([0.0, spec.ring_radius, 0.0])
    script.move(0, grasp + [0, 0, 0.03], 0.6, 0.4)
    script.move(0, grasp, 0.6, 0.3)
    script.move(0, grasp, 0.0, 0.2)
    assert scene.grasped[0] == ring
    peg_top = spec.top + spec.peg_height
    lift = grasp.copy()
    lift[2] = peg_top + 0.025
    script.move(0, lift, 0.0, 0.4)
    goal = spec.peg_world(peg)
    hover = lift + np.array([goal[0] - centre[0], goal[1] - centre[1], 0.0])
    script.move(0, hover, 0.0, 0.5)
    for _ in range(3):  # the ring tilts with the shaft: servo its centre over the peg
        ring_now = scene.body_pose(ring)[:3]
        hover = hover + np.array([goal[0] - ring_now[0], goal[1] - ring_now[1], 0.0])
        script.move(0, hover, 0.0, 0.15)
    down = hover - np.array([0.0, 0.0, scene.body_pose(ring)[2] - (peg_top + 0.006)])
    script.move(0, down, 0.0, 0.3)
    script.move(0, down, 0.6, 0.15)
    assert scene.grasped[0] is None
    script.move(0, down + [0, 0, 0.04], 0.6, 0.3)
    script.move(0, script.tip[0], 0.6, 0.5)


def ring_on_peg(scene: ToolScene, ring: int, peg: int) -> bool:
    spec = scene.pegboard.spec
    centre = scene.body_pose(ring)[:3]
    axis = spec.peg_world(peg)
    inside = np.hypot(*(centre[:2] - axis[:2])) < spec.hole_clearance
    return bool(inside and centre[2] < spec.top + spec.peg_height)


def test_peg_transfer_moves_a_ring_onto_the_target_peg():
    with ToolScene([ToolSetup(inst.GRASPER, LEFT, depth=0.2)]) as scene:
        scene.settle(300)
        ring = scene.pegboard.rings[4]  # on peg 4, left side, middle row
        assert ring_on_peg(scene, ring, 4)
        transfer_ring(scene, ring, 10)  # right side, middle row
        assert ring_on_peg(scene, ring, 10)
        assert scene.body_pose(ring)[2] < scene.pegboard.spec.top + 0.005  # fell to the board
        # The other rings stayed where they were.
        others = [k for k in range(6) if k != 4]
        for k in others:
            assert ring_on_peg(scene, scene.pegboard.rings[k], scene.pegboard.spec.ring_pegs[k])


def run_lockstep(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    with two_tools() as scene:
        spec = scene.pegboard.spec
        out = []
        targets = np.zeros((2, 4))
        for k in range(1200):
            if k % 100 == 0:  # sweep through the board and rings so contacts happen
                low, high = [-0.06, -0.03, spec.top - 0.003], [0.06, 0.03, 0.04]
                targets[:, :3] = rng.uniform(low, high, size=(2, 3))
            scene.tick(targets, np.full(2, 0.5 * (k // 300 % 2)), DT)
        out.append(scene.tool_poses().ravel())
        for r in scene.pegboard.rings:
            out.append(scene.body_pose(r))
        return np.concatenate(out)


def test_lockstep_is_bit_identical():
    a, b = run_lockstep(3), run_lockstep(3)
    assert np.array_equal(a, b)


def test_rigid_world_pegboard_geometry():
    cid = rigid_world.make_client()
    try:
        board = rigid_world.add_pegboard(cid)
        assert len(board.spec.peg_xy) == 12 and len(board.rings) == 6
        assert [board.spec.side_of(i) for i in range(12)] == [0] * 6 + [1] * 6
    finally:
        pb.disconnect(physicsClientId=cid)
