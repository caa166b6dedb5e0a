"""The anatomy explorer drawn through real EGL: hidden layers are not drawn, scaling makes the
organs bigger on screen, the clipping plane cuts away what is on the viewer's side of it (checked
in world space from the depth buffer), and the controls move the view as documented."""

import numpy as np
import pytest
from render_helpers import tissue_mask

from sim.render.explorer import MAX_SCALE, Explorer, display_string, split_display

W, H = 320, 240


@pytest.fixture(scope="module")
def canvas(egl, recorded):
    from sim.render.egl import EGLContext, prefer_egl_platform

    prefer_egl_platform()
    ctx = EGLContext()
    from sim.render.gl_objects import Framebuffer
    from sim.render.gl_renderer import Renderer

    renderer, fb = Renderer(recorded["description"]), Framebuffer(W, H)
    yield renderer, fb
    ctx.make_current()
    renderer.release()
    fb.release()
    ctx.close()


def _draw(canvas, snap, ex: Explorer):
    from sim.render.explorer import draw_window

    renderer, fb = canvas
    fb.bind()
    draw_window(renderer, snap, ex, W, H)
    return fb.read_rgb(), fb.read_depth()


def _world_points(ex: Explorer, depth: np.ndarray) -> np.ndarray:
    """Sim-world points [m] of every drawn pixel, from the depth buffer."""
    ys, xs = np.nonzero(depth < 1.0)
    ndc = np.c_[(xs + 0.5) / W * 2 - 1, 1 - (ys + 0.5) / H * 2, depth[ys, xs] * 2 - 1, np.ones(len(xs))]
    view, _ = ex.view()
    m = np.linalg.inv(ex.projection(W / H) @ view @ ex.scene_transform())
    p = ndc @ m.T
    return p[:, :3] / p[:, 3:]


def test_layers_scale_and_clipping_plane(canvas, recorded):
    snap = recorded["snapshots"][-1]
    ex = Explorer.for_scene(recorded["description"])
    img, depth = _draw(canvas, snap, ex)
    tissue = tissue_mask(img).sum()
    assert tissue > 0.02 * W * H
    ex.press("5")  # hide the tissue
    assert tissue_mask(_draw(canvas, snap, ex)[0]).sum() < 0.02 * tissue
    ex.press("5")
    # Scaled x1.25^3 about the organs' centre: the tissue covers ~1.95^2 as many pixels.
    for _ in range(3):
        ex.press("equal")
    big = tissue_mask(_draw(canvas, snap, ex)[0]).sum()
    assert big > 2.0 * tissue
    ex.press("r")
    assert ex.scale == 1.0 and ex.hidden == {"walls"}
    # Clipping plane through the centre, normal towards the viewer's side (-y): nothing drawn has
    # y < centre y; without it, much does (the pad's near half, the floor in front).
    pts = _world_points(ex, depth)
    cy = ex.centre[1]
    assert (pts[:, 1] < cy - 2e-3).mean() > 0.2
    ex.press("c")
    img_c, depth_c = _draw(canvas, snap, ex)
    pts_c = _world_points(ex, depth_c)
    assert len(pts_c) > 0.2 * len(pts)
    assert (pts_c[:, 1] < cy - 2e-3).mean() < 0.002
    ex.press("left_bracket")  # [: cut 5 mm deeper (away from the viewer): nothing in front of that
    pts_b = _world_points(ex, _draw(canvas, snap, ex)[1])
    assert (pts_b[:, 1] < cy + 5e-3 - 2e-3).mean() < 0.002


def test_controls_and_display_options():
    ex = Explorer(centre=np.zeros(3))
    d0 = ex.distance
    ex.hold(1.0, walk_in=True)
    assert ex.distance == pytest.approx(d0 * np.exp(-0.5))
    yaw0 = ex.yaw
    ex.hold(0.5, left=True)
    assert ex.yaw == pytest.approx(yaw0 - 0.6)
    for _ in range(40):
        ex.press("equal")
    assert ex.scale == MAX_SCALE  # room size: a 10 cm pad becomes 2 m
    base, opts = split_display(display_string("xr-explore", scale=8, clip=True, hide=("walls", "trainer")))
    assert base == "xr-explore" and opts == {"scale": 8.0, "clip": True, "hidden": {"walls", "trainer"}}
    assert split_display("window") == ("window", None)
    # The headset places the organs' centre ahead of the user, scaled: 1 cm there is scale cm here.
    ex = Explorer(centre=np.array([0.0, 0.02, 0.03]), scale=10.0)
    w = ex.xr_world()
    a, b = w @ np.r_[ex.centre, 1.0], w @ np.r_[ex.centre + [0.01, 0, 0], 1.0]
    assert np.allclose(a[:3], [0.0, -0.35, -0.7]) and np.isclose(np.linalg.norm(b - a), 0.1)
