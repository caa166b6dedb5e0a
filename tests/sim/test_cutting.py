"""Cutting and topology changes (sim.cutting, sim.tissue_topology, the scene's scissors):
small meshes, what a trainee or a procedure would notice (separate bodies, volumes, where the cut
faces are, stability, replays)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from sim import tissue_topology as tt
from sim.cutting import TIP_REACH, Blade, quad_blade, scissors_blade
from sim.instruments import SCISSORS
from sim.mesh_generators import block
from sim.scene import build_scene
from sim.tissue import make_state, step
from sim.tissue_model import TissueMaterial, TissueModelBuilder, linear_static
from sim.tissue_rebuild import face_keys, interior_faces
from sim.topology_solver import FactorRebuild

DT = 1e-3
SIZE = (0.04, 0.02, 0.01)


def _block(cells=(8, 4, 2), young=10e3, elasticity="corotated"):
    material = TissueMaterial(young=young, damping=0.02, elasticity=elasticity)
    model = TissueModelBuilder(block(SIZE, cells), material).fix_below(0.0).finalize(dt=DT)
    return model, make_state(model)


def _plane_x(x0, z_lo=-0.01):
    return quad_blade((x0, -0.01, z_lo), (x0, 0.05, z_lo), (x0, 0.05, 0.03), (x0, -0.01, 0.03),
                      direction=(0.0, 1.0, 0.0))


def _bodies(model):
    """Connected components of the live elements: list of (volume [m^3], rest node ids)."""
    live = model.volume > 0
    t = model.tets[live]
    r = np.repeat(t, 4, axis=1).ravel()
    c = np.tile(t, (1, 4)).ravel()
    g = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(model.node_count,) * 2)
    _, lab = connected_components(g, directed=False)
    labels = lab[t[:, 0]]
    return [(model.volume[live][labels == k].sum(), np.unique(t[labels == k]))
            for k in np.unique(labels)]


def test_straight_cut_splits_a_block_into_two_bodies_with_the_right_volumes():
    model, state = _block()
    x0 = 0.0123  # between two node planes (5 mm cells): nodes must move onto the blade
    change = tt.cut(model, state, _plane_x(x0), dt=DT)
    new = change.model
    bodies = sorted(_bodies(new), key=lambda b: b[0])
    assert len(bodies) == 2
    width = SIZE[1] * SIZE[2]
    assert bodies[0][0] == pytest.approx(x0 * width, rel=5e-3)
    assert bodies[1][0] == pytest.approx((SIZE[0] - x0) * width, rel=5e-3)
    assert new.volume.sum() == pytest.approx(model.volume.sum(), rel=5e-3)
    assert new.mass.sum() == pytest.approx(model.mass.sum(), rel=5e-3)
    # Every cut face lies on the plane (within 1 mm), on both sides, and is on the new surface.
    pts = change.state.x[change.faces.reshape(-1)]
    assert np.abs(pts[:, 0] - x0).max() < 1e-3
    assert change.faces.shape[0] == 2 * 4 * 2  # 4 x 2 cells of the cut plane, 2 triangles each
    keys = face_keys(new.surface, new.node_count)
    assert np.isin(face_keys(change.faces.reshape(-1, 3), new.node_count), keys).all()
    # Each side keeps its own copy of the cut nodes: the two bodies share no node.
    assert not np.intersect1d(bodies[0][1], bodies[1][1]).size
    assert change.length == pytest.approx(SIZE[1], rel=1e-6)  # the blade runs along y


def test_successive_snips_extend_one_continuous_cut():
    """Two snips overlapping by 1 mm (less than the 5 mm elements): the second continues the
    first's crack front, and together they cut the block in two."""
    model, state = _block()
    x0 = 0.0123

    def snip(y0, y1):
        return quad_blade((x0, y0, -0.01), (x0, y1, -0.01), (x0, y1, 0.03), (x0, y0, 0.03))

    first = tt.cut(model, state, snip(-0.01, 0.009), dt=DT)
    assert len(_bodies(first.model)) == 1 and first.model.cut_front.any()
    second = tt.cut(first.model, first.state, snip(0.008, 0.03), dt=DT)
    bodies = sorted(_bodies(second.model), key=lambda b: b[0])
    assert len(bodies) == 2
    assert bodies[0][0] == pytest.approx(x0 * SIZE[1] * SIZE[2], rel=5e-3)
    assert first.faces.shape[0] + second.faces.shape[0] == 2 * 4 * 2  # the whole plane, once


def test_cut_flaps_stay_stable_and_the_sag_matches_linear_fem_on_the_cut_mesh():
    """A partial cut from the top; the stepper (stale factor, then the rebuilt one swapped in)
    settles within 2 % of the converged linear FEM of the same cut mesh (co-rotational at 0.1 mm
    of sag: the difference is the law's nonlinearity, ~0.5 % uncut)."""
    model, state = _block(cells=(12, 6, 3), young=3e3)
    for _ in range(50):
        step(model, state, None, None, DT)
    change = tt.cut(model, state, _plane_x(0.0207, z_lo=0.0035), dt=DT)
    assert change.faces.size and len(_bodies(change.model)) == 1  # a slit, not two bodies
    new, s = change.model, change.state
    job = FactorRebuild(new, DT)
    for i in range(2500):
        if i == 200:
            new.use_system(job.result())
        step(new, s, None, None, DT)
    assert s.max_speed < 1e-4
    u = s.x - new.rest
    ref = linear_static(new)
    assert np.abs(u - ref).max() / np.abs(ref).max() < 0.02
    # The two lips of the slit moved apart/together as the FEM says, not as one piece.
    lips = change.faces[:, :, 0]
    assert np.abs(u[lips[:, 0]] - ref[lips[:, 0]]).max() < 0.02 * np.abs(ref).max()


def test_curved_cut_follows_the_blade_within_a_millimetre():
    model, state = _block(cells=(10, 5, 3))
    # A cylindrical blade (radius 25 mm, axis along z through (0.045, 0.01)): an arc across the block.
    ang = np.linspace(np.pi - 0.9, np.pi + 0.9, 19)
    cx, cy, r = 0.045, 0.01, 0.025
    arc = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], axis=1)
    tris = []
    for (a, b) in zip(arc[:-1], arc[1:], strict=True):
        p0, p1 = np.r_[a, -0.01], np.r_[b, -0.01]
        p2, p3 = np.r_[b, 0.03], np.r_[a, 0.03]
        tris += [(p0, p1, p2), (p0, p2, p3)]
    blade = Blade(np.array(tris), direction=(0.0, 1.0, 0.0))
    change = tt.cut(model, state, blade, dt=DT)
    pts = change.state.x[np.unique(change.faces.reshape(-1))]
    d = blade.distances(pts)
    assert d.max() < 1e-3
    assert change.model.volume.sum() == pytest.approx(model.volume.sum(), rel=5e-3)
    assert len(_bodies(change.model)) == 2
    # The cut faces cover the arc across the block (8 mm elements: within one cell of it).
    assert change.area > 0.8 * SIZE[2] * SIZE[1]


@pytest.mark.parametrize("elasticity", ["corotated", "neohookean"])
def test_separate_faces_and_remove_elements_keep_ids_and_mass(elasticity):
    # (neo-Hookean: a dead element's 0 / 0 Lame ratio made every node NaN on the next step; in
    # the cholecystectomy a tear then reset the tissue on every tick)
    model, state = _block(elasticity=elasticity)
    faces, elems = interior_faces(model)
    rest = model.rest
    mid = np.abs(rest[faces][:, :, 0] - 0.02).max(axis=1) < 1e-9  # the faces on the plane x = 20 mm
    change = tt.separate_faces(model, state, faces[mid], dt=DT)
    assert len(_bodies(change.model)) == 2
    assert np.array_equal(change.node_source[:model.node_count], np.arange(model.node_count))
    assert change.model.mass.sum() == pytest.approx(model.mass.sum(), rel=1e-12)
    assert np.array_equal(change.model.tets[:, :][change.model.tets < model.node_count],
                          model.tets[change.model.tets < model.node_count])
    # Removing the elements of one column of cells splits the block too; ids stay, the dead
    # elements carry no volume, and nodes with no live element left are held still.
    col = np.flatnonzero(np.abs(rest[model.tets].mean(axis=1)[:, 0] - 0.0125) < 2.6e-3)
    gone = tt.remove_elements(model, state, col, dt=DT)
    assert gone.model.tet_count == model.tet_count
    assert (gone.model.volume[col] == 0).all() and np.array_equal(gone.killed, col)
    assert gone.model.volume.sum() == pytest.approx(model.volume.sum() - model.volume[col].sum())
    assert len(_bodies(gone.model)) == 2
    orphans = gone.model.mass == 0
    assert gone.model.fixed[orphans].all()
    s = gone.state
    for _ in range(100):
        step(gone.model, s, None, None, DT)
    assert np.isfinite(s.x).all() and s.max_speed < 1.0


def test_scissors_blade_sweeps_the_fan_between_the_jaws():
    pose = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # tip at the origin, shaft along +z
    blade = scissors_blade(pose, SCISSORS, 0.6)
    jl = SCISSORS.jaw_length
    reach = jl + TIP_REACH  # the surface goes TIP_REACH past the tips (what they press ahead)
    assert np.allclose(blade.direction, (0.0, 0.0, -1.0))
    # The straight part lies in the y-z plane, inside the +-0.3 rad wedge below the hinge.
    pts = blade.triangles.reshape(-1, 3)
    below = jl - pts[:, 2]
    assert (below >= -1e-12).all() and below.max() <= reach + 1e-9
    ang = np.arctan2(np.abs(pts[:, 1]), np.maximum(below, 1e-12))
    assert ang.max() <= 0.3 + 1e-9
    bend = (0.4 * jl + TIP_REACH) * np.sin(SCISSORS.jaw_curve)
    assert pts[:, 0].max() == pytest.approx(bend)  # the bend
    assert blade.area() == pytest.approx(0.5 * 0.6 * reach * reach, rel=0.1)


def _cutting_session(scene, ticks=700):
    """Scissors pressed open into the pad and closed (a device's jaw command), and a scripted
    blade across the pad at tick 300 (scene.cut), as a procedure would."""
    control = scene.hold_control()
    start = control.targets[1].copy()
    goal = np.array([0.015, 0.0, 0.004, start[3]])
    x0 = -0.0113
    blade = quad_blade((x0, -0.05, 0.006), (x0, 0.05, 0.006), (x0, 0.05, 0.05), (x0, -0.05, 0.05))
    for i in range(ticks):
        control.targets[1] = start + min(1.0, i / 400) * (goal - start)
        control.jaws[1] = 0.0 if (i < 50 or i >= 500) else 0.8
        if i == 300:
            scene.cut(blade)
        scene.tick(control, scene.dt)


def test_scissors_and_scripted_cuts_replay_bit_identically():
    with build_scene("default", tissue_tets=1000) as scene:
        start = scene.get_state()
        _cutting_session(scene)
        cuts = [e for e in scene.events if e.kind == "cut"]
        assert cuts and cuts[0].tool == -1 and cuts[0].value == pytest.approx(0.06, rel=0.01)
        assert all(e.tool in (-1, 1) for e in cuts)
        # The scissors cut instead of grasping; nothing blew up.
        assert not [e for e in scene.events if e.kind in ("grasp", "tissue_reset") and e.tool != 0]
        changes = [e for e in scene.events if e.kind in ("cut", "cut_started")]  # notches count too
        assert scene.topology_version == len(changes)
        n = scene.tissue.node_count
        snap = scene.snapshot()
        assert snap["tissue_topo"].tolist() == [len(changes), n, scene.tissue.surface.shape[0]]
        assert np.array_equal(snap["tissue_x"][:n], scene.tissue_state.x)
        after = scene.checksum()
        events = [(e.tick, e.kind, e.value) for e in scene.events]
        scene.set_state(start)
        assert scene.tissue.node_count < n and scene.topology_version == 0
        _cutting_session(scene)
        assert scene.checksum() == after
        assert [(e.tick, e.kind, e.value) for e in scene.events] == events


def test_state_saved_before_a_cut_and_restored_after_it_continues_identically():
    with build_scene("default", tissue_tets=1000) as scene:
        control = scene.hold_control()
        for _ in range(20):
            scene.tick(control, scene.dt)
        x0 = 0.0013
        blade = quad_blade((x0, -0.05, 0.006), (x0, 0.05, 0.006), (x0, 0.05, 0.05), (x0, -0.05, 0.05))
        before = scene.get_state()
        c0 = scene.checksum()
        assert scene.cut(blade) is not None
        mid = scene.get_state()
        for _ in range(30):
            scene.tick(control, scene.dt)
        c_after = scene.checksum()
        scene.set_state(before)  # across the cut, back to the uncut pad
        assert scene.checksum() == c0
        scene.set_state(mid)  # and forward again, onto the cut one
        for _ in range(30):
            scene.tick(control, scene.dt)
        assert scene.checksum() == c_after
        scene.reset()
        assert scene.topology_version == 0 and not np.any(scene.tissue.volume == 0)
