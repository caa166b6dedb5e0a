"""Port kinematics and target projection (sim.ports): pure NumPy, no PyBullet."""

import numpy as np
import pytest

from sim import ports

PORT = np.array([0.02, -0.1, 0.25])
LIMITS = dict(max_angle=np.radians(60.0), min_depth=0.023, max_depth=0.30)


def test_gimbal_angles_invert_shaft_direction():
    rng = np.random.default_rng(0)
    for a, b in rng.uniform(-1.0, 1.0, size=(50, 2)):
        u = ports.shaft_direction(a, b)
        assert np.linalg.norm(u) == pytest.approx(1.0)
        assert ports.gimbal_angles(u) == pytest.approx((a, b), abs=1e-12)


def test_tip_jacobian_matches_finite_differences():
    q = np.array([0.3, -0.4, 0.17])
    jac = ports.tip_jacobian(*q)
    h = 1e-7
    for c in range(3):
        dq = np.zeros(3)
        dq[c] = h
        fd = (ports.tip_position(PORT, *(q + dq)) - ports.tip_position(PORT, *(q - dq))) / (2 * h)
        np.testing.assert_allclose(jac[:, c], fd, atol=1e-7)


def test_reachable_position_target_is_obeyed_exactly():
    tip = PORT + np.array([0.05, 0.08, -0.2])
    x, u, s = ports.project_tip_target(PORT, tip, **LIMITS)
    np.testing.assert_allclose(x, tip, atol=1e-15)
    assert s == pytest.approx(np.linalg.norm(tip - PORT))


def test_target_too_deep_is_clamped_to_max_depth_on_the_same_line():
    tip = PORT + 0.5 * np.array([0.0, 0.6, -0.8])
    x, u, s = ports.project_tip_target(PORT, tip, **LIMITS)
    assert s == LIMITS["max_depth"]
    np.testing.assert_allclose(x, PORT + 0.30 * np.array([0.0, 0.6, -0.8]), atol=1e-15)


def test_target_above_the_port_goes_to_min_depth():
    x, u, s = ports.project_tip_target(PORT, PORT + np.array([0.0, 0.0, 0.05]), **LIMITS)
    assert s == LIMITS["min_depth"]
    np.testing.assert_allclose(x, PORT + np.array([0.0, 0.0, -LIMITS["min_depth"]]), atol=1e-15)


def test_target_outside_the_cone_goes_to_the_cone_edge():
    tip = PORT + np.array([0.2, 0.0, -0.02])  # 84 deg from vertical
    x, u, s = ports.project_tip_target(PORT, tip, **LIMITS)
    assert np.degrees(np.arccos(-u[2])) == pytest.approx(60.0)
    assert u[1] == pytest.approx(0.0) and u[0] > 0  # same azimuth as the command
    assert ports.distance_to_line(x, PORT, u) < 1e-15
    # Closest point on the allowed line: the residual is perpendicular to it.
    assert (tip - x) @ u == pytest.approx(0.0, abs=1e-15)


def test_pose_target_off_its_own_axis_is_projected_onto_the_line_through_the_port():
    axis = np.array([0.0, 0.0, -1.0])
    tip = PORT + np.array([0.03, 0.0, -0.2])  # commanded axis vertical but tip off it
    x, u, s = ports.project_pose_target(PORT, tip, axis, **LIMITS)
    np.testing.assert_allclose(u, axis)
    np.testing.assert_allclose(x, PORT + np.array([0.0, 0.0, -0.2]), atol=1e-15)
    assert ports.distance_to_line(PORT, x, u) < 1e-15


def test_clamp_to_cone_keeps_directions_inside():
    u = np.array([0.1, 0.2, -1.0])
    np.testing.assert_allclose(ports.clamp_to_cone(u, 1.0), u / np.linalg.norm(u))
    np.testing.assert_allclose(ports.clamp_to_cone(np.array([0.0, 0.0, 1.0]), 1.0), [0, 0, -1])


def test_numba_coupling_kernel_matches_the_numpy_formulas():
    from sim.coupling_kernels import coupling_torques
    from sim.ports import project_tip_target, tip_jacobian, tip_position
    from sim.tool_scene import coupling_force, critical_damping

    rng = np.random.default_rng(3)
    port = np.array([0.05, -0.1, 0.25])
    for _ in range(50):
        q = np.array([*rng.uniform(-0.8, 0.8, 2), rng.uniform(0.05, 0.3), rng.uniform(-3, 3)])
        qd = rng.normal(size=4)
        a = rng.normal(size=(4, 4))
        mass = a @ a.T + 4 * np.eye(4)
        grav = rng.normal(size=4)
        target = np.array([*(port + rng.uniform(-0.3, 0.3, 3) - [0, 0, 0.2]), rng.uniform(-3, 3)])
        prev = port + rng.uniform(-0.2, 0.2, 3) - [0, 0, 0.2]
        kw = dict(max_angle=1.0, min_depth=0.02, max_depth=0.3)
        tau, force, xt = np.zeros(4), np.zeros(3), np.zeros(3)
        prev_k = prev.copy()
        coupling_torques(port, q, qd, mass, grav, target, prev_k, 500.0, 1e-3, kw["max_angle"],
                         kw["min_depth"], kw["max_depth"], tau, force, xt)
        x_t, _, _ = project_tip_target(port, target[:3], **kw)
        jac = tip_jacobian(*q[:3])
        jinv = np.linalg.inv(jac)
        lam = jinv.T @ mass[:3, :3] @ jinv
        f_ref = coupling_force(500.0, critical_damping(500.0, lam), x_t, tip_position(port, *q[:3]),
                               (x_t - prev) / 1e-3, jac @ qd[:3])
        np.testing.assert_allclose(xt, x_t, atol=1e-12)
        np.testing.assert_allclose(force, f_ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(tau[:3], grav[:3] + jac.T @ f_ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(prev_k, x_t)
