"""Pure NumPy parts of the renderer: normals, meshes, the laparoscope camera, the HUD."""

import numpy as np
import pytest

from sim.camera import LaparoscopeCamera
from sim.render import geometry as geo
from sim.render.hud import FORCE_WARN, digit_quads, format_elapsed, hud_quads, hud_state


def test_vertex_normals_match_the_slow_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    tris = rng.integers(0, 50, size=(120, 3)).astype(np.int32)  # nodes 50..59 on no triangle
    np.testing.assert_allclose(geo.vertex_normals(x, tris), geo.vertex_normals_reference(x, tris), atol=1e-12)


def test_box_normals_point_outward_and_match_the_winding():
    v, n, t = geo.box_mesh()
    for tri in t:
        face = np.cross(v[tri[1]] - v[tri[0]], v[tri[2]] - v[tri[0]])
        assert face @ n[tri[0]] > 0
        assert v[tri].mean(axis=0) @ n[tri[0]] > 0


def test_camera_aimed_at_a_target_sees_it_in_the_image_centre():
    port, target = np.array([0.0, -0.15, 0.25]), np.array([0.0, 0.0, 0.02])
    cam = LaparoscopeCamera.aimed_at(port, target)
    ndc, front = geo.project(cam.projection(4 / 3) @ cam.view(), target[None])
    assert front[0]
    np.testing.assert_allclose(ndc[0, :2], 0.0, atol=1e-9)
    # The scope tip lies on the port-target line: the shaft pivots about the port.
    d = np.cross(cam.eye() - port, target - port)
    assert np.linalg.norm(d) < 1e-12


def test_thirty_degree_scope_looks_up_the_image_so_the_target_moves_down():
    port, target = np.array([0.0, -0.15, 0.25]), np.array([0.0, 0.0, 0.02])
    cam = LaparoscopeCamera.aimed_at(port, target, view_angle=np.radians(30.0))
    ndc, front = geo.project(cam.projection(4 / 3) @ cam.view(), target[None])
    assert front[0] and ndc[0, 1] < -0.5 and abs(ndc[0, 0]) < 1e-9


def test_hud_flags_excessive_force_and_tools_out_of_view():
    cam = LaparoscopeCamera.aimed_at([0.0, -0.15, 0.25], [0.0, 0.0, 0.02])
    links = np.zeros((2, 3, 7))
    links[:, :, 6] = 1.0
    links[0, 0, :3] = (0.0, 0.0, 0.03)  # in view
    links[1, 0, :3] = (0.0, -0.30, 0.30)  # behind the scope
    snap = {"tool_force": np.array([[0.0, 0.0, 1.0], [FORCE_WARN + 1, 0, 0]]), "tool_links": links,
            "tick": np.array([1500.0])}
    state = hud_state(snap, cam.projection(4 / 3) @ cam.view(), 1e-3)
    assert state.elapsed == pytest.approx(1.5)
    assert list(state.over) == [False, True]
    assert list(state.out_of_view) == [False, True]
    quads = hud_quads(state, 640, 480)
    red_border = [q for q in quads if q[:4] == (0, 0, 640, q[3]) and q[4] > 0.8]
    assert red_border


def test_elapsed_time_is_drawn_as_seven_segment_digits():
    assert format_elapsed(83.45) == "01:23.4"
    assert len(digit_quads("8", 0, 0, 10, (1, 1, 1, 1))) == 7
    assert len(digit_quads("1", 0, 0, 10, (1, 1, 1, 1))) == 2
