"""The renderer draws the live tissue surface after a cut (snapshot version 3): a pad cut
in two and pulled 6 mm apart shows the floor through the gap; the same pull without the cut only
stretches the tissue over it."""

import numpy as np
from render_helpers import tissue_mask

from sim.camera import default_camera
from sim.cutting import quad_blade
from sim.render import geometry as geo

W, H = 320, 240


def _pixel(cam, point):
    ndc, front = geo.project(cam.projection(W / H) @ cam.view(), np.asarray(point, float)[None])
    assert front[0]
    return int(round((ndc[0, 0] + 1) / 2 * (W - 1))), int(round((1 - ndc[0, 1]) / 2 * (H - 1)))


def _pulled_apart(scene, gap):
    """A snapshot with the right side's nodes moved +gap [m] in x (a display-only edit)."""
    snap = scene.snapshot()
    n = int(snap["tissue_topo"][1])
    snap["tissue_x"][:n][_right_side(scene), 0] += gap
    return snap


def _right_side(scene):
    """Nodes of the live elements whose centroid lies right of the cut plane."""
    t = scene.tissue.tets[scene.tissue.volume > 0]
    c = scene.tissue.rest[t].mean(axis=1)[:, 0]
    mask = np.zeros(scene.tissue.node_count, dtype=bool)
    mask[np.unique(t[c > 0.0013])] = True
    return mask


def test_a_cut_pad_pulled_apart_shows_the_floor_through_the_cut(egl):
    from sim.render.offscreen import HeadlessView
    from sim.scene import build_scene

    with build_scene("default", tissue_tets=1000) as scene:
        desc = scene.describe()
        cam = default_camera(desc)
        top = scene.tissue.rest[:, 2].max()
        px, py = _pixel(cam, (0.0013 + 0.003, 0.0, top))
        with HeadlessView(desc, W, H) as view:
            whole = view.render(_pulled_apart(scene, 0.006), cam, hud=False)
            x0 = 0.0013
            assert scene.cut(quad_blade((x0, -0.05, -0.01), (x0, 0.05, -0.01), (x0, 0.05, 0.05),
                                        (x0, -0.05, 0.05))) is not None
            cut = view.render(_pulled_apart(scene, 0.006), cam, hud=False)
            assert view.renderer.tris.shape[0] == int(scene.snapshot()["tissue_topo"][2])
        patch = (slice(py - 1, py + 2), slice(px - 1, px + 2))
        assert tissue_mask(whole[patch]).all()  # stretched tissue over the gap
        assert not tissue_mask(cut[patch]).any()  # the floor shows through the cut
        # Away from the cut both frames show tissue.
        qx, qy = _pixel(cam, (-0.02, 0.0, top))
        assert tissue_mask(whole[qy:qy + 1, qx:qx + 1]).all()
        assert tissue_mask(cut[qy:qy + 1, qx:qx + 1]).all()
