"""FLS pattern cut: the cut geometry, scoring on known traces, and the procedure on the real scene."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from procedures import pattern_cut as pc
from procedures.base import Trace
from procedures.scoring import fls_score
from sim.cutting import scissors_blade
from sim.instruments import SCISSORS
from sim.scene import SceneEvent

PLANE_Z = 0.03


def quat_of(r: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a rotation matrix."""
    return Rotation.from_matrix(r).as_quat()


def curve_offset(depth: float = 0.0015) -> float:
    """[m] how far inward of the shaft axis the curved blades cross the gauze: the plane is
    jaw_length - depth below the hinge, the bend 0.6 jaw_length below it, the distal part bent
    by jaw_curve (sim.cutting.scissors_spokes)."""
    return (0.4 * SCISSORS.jaw_length - depth) * np.tan(SCISSORS.jaw_curve)


def scissors_pose(point, tangent, depth=0.0015) -> np.ndarray:
    """A vertical scissors shaft whose curved blades cross the gauze at `point` (x, y) (the
    middle of their kerf), tip `depth` below it, blades opening along `tangent` (x, y), curving
    toward the centre of the pattern (as the scripted hands hold them)."""
    t = np.r_[np.asarray(tangent, float), 0.0]
    t /= np.linalg.norm(t)
    u = np.array([0.0, 0.0, 1.0])
    inward = np.cross(u, t)
    r = np.column_stack([inward, np.cross(u, inward), u])  # local x (curve), y (opening), z (shaft)
    axis = np.asarray(point, float) - inward[:2] * curve_offset(depth)
    return np.r_[axis[0], axis[1], PLANE_Z - depth, quat_of(r)]


def snip_trace(offsets, opening=0.6, n=28, t_end=20.0, dt=1e-3) -> Trace:
    """A Trace with n snips around the circle, snip k aimed offsets[k] [m] outside it."""
    rows = int(round(t_end / dt))
    pose = np.zeros((rows, 2, 7))
    pose[:, :, 6] = 1.0
    events = []
    for k in range(n):
        phi = 2 * np.pi * k / n
        r = pc.RADIUS + offsets[k]
        row = 1000 + k * 500
        aim = (r * np.cos(phi), r * np.sin(phi))
        pose[row, pc.SCISSORS] = scissors_pose(aim, (-np.sin(phi), np.cos(phi)))
        events.append(SceneEvent(row, "snip", pc.SCISSORS, opening, "snip"))
    return Trace(dt=dt, t=(np.arange(rows) + 1) * dt, tool_pose=pose, jaws=np.zeros((rows, 2)),
                 force=np.zeros((rows, 2, 3)), scope_pose=np.tile([0, -0.15, 0.25, 0, 0, 0, 1.0], (rows, 1)),
                 events=events)


def test_snip_points_lie_on_the_surface_the_blades_cut_along():
    """Scoring reads the cut where the cutting core makes it: on the swept surface of the curved
    blades (a straightened fan once scored cuts 1-4 mm off the line as on it)."""
    pose = scissors_pose((pc.RADIUS, 0.0), (0.0, 1.0))
    pts = pc.snip_points(pose, 0.6, PLANE_Z)
    assert len(pts) == pc.FAN_SAMPLES
    blade = scissors_blade(pose, SCISSORS, 0.6)
    on = np.c_[pts, np.full(len(pts), PLANE_Z)]
    # on the surface the tissue is cut along (the cutting core's triangles between its spokes,
    # 0.1 rad apart, are within 10 um of the curved surface the spokes sample)
    assert blade.distances(on).max() < 1e-5
    mid = pts[len(pts) // 2]
    assert mid == pytest.approx([pc.RADIUS, 0.0], abs=1e-12)  # the kerf's middle where it was put
    # the curved blades bow toward the centre, as the circle does: the kerf's ends lie inward
    assert pts[0, 0] < mid[0] and pts[-1, 0] < mid[0]
    assert pts[:, 1] == pytest.approx(-pts[::-1, 1], abs=1e-12)  # symmetric about the middle
    half = (SCISSORS.jaw_length - 0.0015) * np.tan(0.3)  # about the hinge height x tan(half opening)
    assert pts[:, 1].max() == pytest.approx(half, rel=0.1)
    assert pc.deviation(pts).max() < 0.5 * pc.LINE_W  # a snip on the circle stays within the line
    assert len(pc.snip_points(scissors_pose((0.0, 0.0), (1, 0), depth=-0.02), 0.6, PLANE_Z)) == 0  # above it


def test_accurate_cut_frees_the_disc_with_no_penalty():
    book = pc.book_from_trace(snip_trace(np.zeros(28)), PLANE_Z)
    assert book.coverage == 1.0
    assert book.area == 0.0 and book.off_line == 0
    assert book.dev_max < 0.5 * pc.LINE_W


def test_cut_off_the_line_is_penalised_by_the_area_outside():
    off = np.zeros(28)
    off[5] = 0.003  # one snip 3 mm outside: its chord is 2 mm outside the line's edge, ~7.7 mm long
    book = pc.book_from_trace(snip_trace(off), PLANE_Z)
    assert book.off_line == 1 and book.coverage == 1.0  # 3 mm is within the band that still frees it
    chord = 2 * (SCISSORS.jaw_length - 0.0015) * np.tan(0.3)
    assert book.area == pytest.approx(0.002 * chord, rel=0.15)  # ~ (3 - 1) mm x the chord
    penalty = pc.penalty_of(book.area)
    assert penalty == pytest.approx(100 * book.area / (2 * np.pi * pc.RADIUS * pc.LINE_W))
    assert fls_score(60.0, penalty, pc.CUTOFF_S) < fls_score(60.0, 0.0, pc.CUTOFF_S)


def test_gap_leaves_the_disc_attached():
    off = np.zeros(28)
    off[10] = 0.02  # that snip cuts 2 cm off the circle: the circle there is not cut
    book = pc.book_from_trace(snip_trace(off), PLANE_Z)
    assert book.coverage < 1.0


def test_result_of_a_known_trace():
    """The procedure's result from a trace: time, penalty, proficiency."""
    proc = pc.PatternCut()
    proc.status, proc.time_s, proc.plane_z = "success", 40.0, PLANE_Z
    good = proc.result(snip_trace(np.zeros(28)))
    assert good.passed and good.score == fls_score(40.0, 0.0, pc.CUTOFF_S)
    assert good.metrics["area_outside_line"].value == 0.0 and good.metrics["cut_within_line"].value == 1.0
    off = np.zeros(28)
    off[3] = 0.0025
    bad = proc.result(snip_trace(off))
    assert not bad.passed and bad.score < good.score  # within the time, but not all within the line
    proc.time_s = 120.0
    slow = proc.result(snip_trace(np.zeros(28)))
    assert not slow.passed  # all within the line, over 98 s


FIRST_S = 12.0  # [s] of each scripted attempt the real-scene tests run (a whole one takes minutes)


@pytest.fixture(scope="module")
def first_seconds():
    """The first FIRST_S s of the expert's and the novice's attempts (seed 0) on the pattern_cut
    scene through the device path: per policy its procedure, HUD at the start and now, result."""
    from procedures.policies import make_hands
    from sim.runtime.procedure_session import ProcedureAttempt

    runs = {}
    for name in ("expert", "novice"):
        att = ProcedureAttempt("pattern_cut", make_hands(name, 0, "pattern_cut"), seed=0, max_s=FIRST_S + 0.5)
        try:
            hud0 = att.procedure.hud()
            while att.n < int(FIRST_S / att.scene.dt):
                att.step()
            runs[name] = SimpleNamespace(proc=att.procedure, hud0=hud0, hud=att.procedure.hud(),
                                         result=att.result(), kinds=[e.kind for e in att.scene.events])
        finally:
            att.close()
    return runs


def test_expert_starts_the_pattern_cut_on_the_real_scene(first_seconds):
    """Through the device path on the pattern_cut scene: the left hand takes the gauze, the
    scissors snip along the circle, within the line; the HUD follows."""
    run = first_seconds["expert"]
    proc, hud = run.proc, run.hud
    assert run.hud0["instruction"] == pc.PHASE_INSTRUCTIONS[0]
    assert "grasp" in run.kinds and proc.phase == 1
    assert "tissue_reset" not in run.kinds  # the gauze under the blades stays sound
    assert hud["instruction"] == pc.PHASE_INSTRUCTIONS[1]
    assert proc.book.cutting_snips >= 8
    assert proc.book.area == 0.0 and proc.book.dev_max < 0.5 * pc.LINE_W  # on the line
    assert 0.0 < proc.book.coverage < 1.0
    assert "% of the circle cut" in hud["progress"] and hud["deviation_mm"] < 1.0
    assert hud["line"] == {"centre": [0.0, 0.0], "radius": pc.RADIUS, "width": pc.LINE_W}
    res = run.result  # the same cut, recomputed from the trace
    assert res.metrics["snips"].value == proc.book.snips
    assert res.metrics["area_outside_line"].value == 0.0
    assert res.status == "incomplete" and not res.passed


def test_novice_cuts_slower_and_off_the_line(first_seconds):
    """In the same first seconds, through the same device path, the novice has cut less of the
    circle than the expert, and wandered off the line (errors, area outside, deviation): the
    full attempts (`trocar bench procedure pattern_cut --policy expert|novice`) end with the
    expert freeing the disc within proficiency and the novice not (docs/procedures.md)."""
    ex, no = first_seconds["expert"], first_seconds["novice"]
    assert "grasp" in no.kinds and no.proc.book.cutting_snips >= 2
    assert no.proc.book.coverage < 0.5 * ex.proc.book.coverage
    assert any(e.kind == "off_line" for e in no.result.errors)
    assert not any(e.kind == "off_line" for e in ex.result.errors)
    m_ex, m_no = ex.result.metrics, no.result.metrics
    assert m_no["area_outside_line"].value > 0.0 == m_ex["area_outside_line"].value
    assert m_no["cut_deviation_mean"].value > m_ex["cut_deviation_mean"].value
    assert m_no["cut_within_line"].value < 1.0 == m_ex["cut_within_line"].value


def test_the_disc_is_free_when_the_mesh_says_so():
    """Blades along the circle in snips about one gauze element long: the disc comes off the frame
    only when the last snip closes the circle (judged from the mesh's connected pieces, not from
    where the blades were), and the gauze keeps its volume."""
    from sim.cutting import quad_blade
    from sim.scene import build_scene

    scene = build_scene("pattern_cut")
    z = scene.tissue.rest[:, 2]
    lo, hi = z.min() - 1e-3, z.max() + 1e-3
    vol0 = scene.tissue.volume.sum()
    k = 24
    for i in range(k):
        assert not pc.disc_free(scene.tissue)
        a0, a1 = 2 * np.pi * i / k, 2 * np.pi * (i + 1.05) / k
        p0 = pc.RADIUS * np.array([np.cos(a0), np.sin(a0)])
        p1 = pc.RADIUS * np.array([np.cos(a1), np.sin(a1)])
        scene.cut(quad_blade([*p0, lo], [*p1, lo], [*p1, hi], [*p0, hi]))
    assert pc.disc_free(scene.tissue)
    assert scene.tissue.volume.sum() == pytest.approx(vol0, rel=5e-3)
    scene.close()


def test_the_strand_the_disc_hangs_on_is_found():
    """Cut all round but one stretch (105-135 degrees): the chain of elements from the centre to
    the clamped rim crosses the circle there (the scripted hands snip where the disc hangs when no
    gap shows bin by bin: expert seed 2 once stood idle for 270 s beside a disc on one strand);
    once that stretch is cut the disc is free and no strand is left."""
    from sim.cutting import quad_blade
    from sim.scene import build_scene

    scene = build_scene("pattern_cut")
    z = scene.tissue.rest[:, 2]
    lo, hi = z.min() - 1e-3, z.max() + 1e-3

    def snip(i, k=24):
        a0, a1 = 2 * np.pi * i / k, 2 * np.pi * (i + 1.05) / k
        p0 = pc.RADIUS * np.array([np.cos(a0), np.sin(a0)])
        p1 = pc.RADIUS * np.array([np.cos(a1), np.sin(a1)])
        scene.cut(quad_blade([*p0, lo], [*p1, lo], [*p1, hi], [*p0, hi]))

    try:
        for i in range(24):
            if i not in (7, 8):
                snip(i)
        assert not pc.disc_free(scene.tissue)
        ang = np.degrees(pc.tether_angle(scene.tissue)) % 360.0
        assert 100.0 < ang < 140.0
        snip(7)
        snip(8)
        assert pc.disc_free(scene.tissue) and pc.tether_angle(scene.tissue) is None
    finally:
        scene.close()
