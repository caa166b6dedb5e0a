"""FLS pattern cut: the procedure (rules, phases, errors, score) on the `pattern_cut` scene.

Rules (FLS, ../shared/REFERENCES.md): a 10 x 10 cm gauze held taut in its frame, a 4 cm circle
marked on it with a line 2 mm wide. One hand gives traction with the grasper (tool 0, left), the
other cuts with the scissors (tool 1, right) along the circle until the disc is free. 300 s
cut-off. Proficiency: 98 s, all of the cut within the line.

How the cut is read (from typed SceneEvents and the scissors' pose; `snip_points`): every 'snip'
event (the blades closed; value = widest opening since the last snip [rad]) cuts the gauze where
the surface the blades swept (`sim.cutting.scissors_spokes`: a fan in the shaft's y-z plane, hinge
to tip, the distal 40 % curved like the jaws) crosses the gauze's top plane: a short polyline. The
cutting core (`sim.cutting`) separates the tissue along the same blade surface; scoring reads
the geometry of the blades, so it does not depend on the mesh resolution. (A straightened fan
here once scored the expert's cut within 0.2 mm of the circle while the curved blades had cut the
gauze 1-4 mm outside it.)
- deviation of a cut point: | |p - c| - R | from the circle (centre c, radius R) [m];
- the line: deviation <= LINE_W / 2 (1 mm); a snip with any point beyond is an 'off_line' error;
- area outside the line [m^2]: the integral over the cut polylines of max(0, deviation - LINE_W/2)
  ds, i.e. the area between the cut and the line's edge where the cut strays (FLS scores the
  area outside the line; we integrate it along the cut: an area deviation, not a length one);
- coverage: the circle's angle (1 degree bins, seen from the centre) swept by cut segments whose
  ends both lie within COVER_BAND of the circle (the HUD's progress).
The disc is free when the mesh says so, not the blades: after each topology change (a 'cut' or
'tear') the gauze's connected pieces are recounted (`sim.tissue_topology.components`) and the
attempt succeeds once the piece holding the node nearest the circle's centre holds no node of
the clamped rim (`disc_free`).
Score (procedures.scoring): cut-off 300 s; penalty = the area outside the line as a percentage of
the line's own area (2 pi R LINE_W, 251 mm^2), capped at 100 [s-equivalent] (FLS: "% area outside
the line"; the exact FLS constant is not public, docs/procedures.md).
"""

from __future__ import annotations

import numpy as np

from procedures.base import Metric, Procedure, ProcedureResult, Trace, iso_now
from procedures.peg_transfer import motion_metrics
from procedures.scoring import fls_score
from sim.cutting import scissors_spokes
from sim.instruments import SCISSORS as SCISSORS_SPEC

CUTOFF_S = 300.0  # [s] FLS cut-off
TARGET_TIME_S = 98.0  # [s] FLS proficiency time (Ritter & Scott)
GRASPER, SCISSORS = 0, 1  # tool indices (right-handed trainee: traction left, cut right)
CENTRE = (0.0, 0.0)  # [m] circle centre on the gauze
RADIUS = 0.02  # [m] the 4 cm circle
LINE_W = 0.002  # [m] line width
COVER_BAND = 0.004  # [m] a cut this close to the circle counts toward freeing the disc
BRIDGE_BAND = 0.0015  # [m] an element reaching this far to both sides of the circle bridges it
BINS = 360
FAN_SAMPLES = 25  # points per snip along the swept blade surface
WARN_EVERY = 100  # [ticks]
FORCE_WARN = 3.0  # [N]
OFF_LINE_WARN_S = 2.0  # [s] the HUD shows the last off-line snip this long

PHASE_INSTRUCTIONS = (
    "Grasp the gauze inside the circle with the LEFT grasper and lift it a little (traction)",
    "Cut along the circle with the scissors, keeping the blades on the line, until the disc is free",
)


def _rot(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion (x, y, z, w)."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def snip_points(pose: np.ndarray, opening: float, plane_z: float, n: int = FAN_SAMPLES) -> np.ndarray:
    """Where a snip cut the plane z = plane_z [m]: points (k, 2) [m], in blade order, where the
    `n` spokes of the surface the jaws swept (`sim.cutting.scissors_spokes`: hinge, bend and tip
    of the curved jaws, total opening `opening` [rad], the surface the cutting core cuts along)
    cross the plane, for the scissors whose shaft link pose is `pose` (7,) (tip [m] + quaternion
    x y z w; +z up the shaft, jaws open in its y-z plane, curved toward +x)."""
    r = _rot(pose[3:7])
    fan = scissors_spokes(SCISSORS_SPEC, opening, n) @ r.T + pose[:3]  # (n, 3 points, 3) world
    pts = []
    for spoke in fan:
        for a, b in ((spoke[0], spoke[1]), (spoke[1], spoke[2])):
            dz = b[2] - a[2]
            if abs(dz) < 1e-12:
                continue
            s = (plane_z - a[2]) / dz
            if 0.0 <= s <= 1.0:
                pts.append((a + s * (b - a))[:2])
                break
    return np.array(pts).reshape(-1, 2)


def disc_free(model) -> bool:
    """Whether the disc inside the circle has come off the frame: the connected piece of the gauze
    holding the (rest) node nearest the circle's centre contains no clamped node."""
    from sim.tissue_topology import components

    label = components(model)
    d = np.hypot(model.rest[:, 0] - CENTRE[0], model.rest[:, 1] - CENTRE[1])
    live = np.zeros(model.node_count, dtype=bool)
    live[model.tets[model.volume > 0.0].reshape(-1)] = True
    d[~live] = np.inf
    piece = label[int(np.argmin(d))]
    return not bool(model.fixed[label == piece].any())


def tether_angle(model) -> float | None:
    """Where the disc still hangs on the gauze [rad, about the centre]: the angle at which the
    shortest chain of live elements (in node hops, rest coordinates) from the node nearest the
    centre to a clamped rim node first crosses the circle; None when no chain exists (the disc is
    free). What a person sees lifting the disc: the strand it hangs on (two snips whose kerfs
    overlap side by side leave one that no cut face, bin by bin, gives away)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order

    n = model.node_count
    tets = model.tets[model.volume > 0.0].astype(np.int64)
    a = np.repeat(tets[:, :1], 3, axis=1).reshape(-1)
    b = tets[:, 1:].reshape(-1)
    graph = sp.coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    r = np.hypot(model.rest[:, 0] - CENTRE[0], model.rest[:, 1] - CENTRE[1])
    live = np.zeros(n, dtype=bool)
    live[tets.reshape(-1)] = True
    start = int(np.argmin(np.where(live, r, np.inf)))
    order, pred = breadth_first_order(graph, start, directed=False, return_predecessors=True)
    rim = order[model.fixed[order]]
    if rim.size == 0:
        return None
    path = [int(rim[0])]  # the nearest clamped node, back to the centre
    while path[-1] != start:
        path.append(int(pred[path[-1]]))
    path = path[::-1]
    k = next(i for i, v in enumerate(path) if r[v] > RADIUS)
    p = 0.5 * (model.rest[path[k]] + model.rest[path[max(k - 1, 0)]])
    return float(np.arctan2(p[1] - CENTRE[1], p[0] - CENTRE[0]))


def mesh_cut_bins(model) -> np.ndarray:
    """The circle's 1-degree bins (BINS,) bool that the gauze is cut through at: crossed by a cut
    face (a surface triangle standing across the sheet, inside the frame) within COVER_BAND of
    the circle, in rest (material) coordinates: the kerf a person sees, whatever the blades did."""
    p = model.rest[model.surface]  # (k, 3, 3) [m]
    nrm = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    c = p.mean(axis=1)
    standing = np.abs(nrm[:, 2]) < 0.9 * np.linalg.norm(nrm, axis=1)  # across the sheet, not on top
    near = np.abs(np.hypot(c[:, 0] - CENTRE[0], c[:, 1] - CENTRE[1]) - RADIUS) <= COVER_BAND
    covered = np.zeros(BINS, dtype=bool)
    for tri in p[standing & near]:
        cover(tri[[0, 1, 2, 0], :2], covered)
    return covered


def bridged_bins(model, band: float = BRIDGE_BAND) -> np.ndarray:
    """The circle's 1-degree bins (BINS,) bool where the gauze still bridges the line: a live
    element with rest (material) corners both nearer than R - band and farther than R + band
    from the centre (no cut passed through it)."""
    live = model.volume > 0.0
    r = np.hypot(model.rest[:, 0] - CENTRE[0], model.rest[:, 1] - CENTRE[1])[model.tets]
    across = live & (r.min(axis=1) < RADIUS - band) & (r.max(axis=1) > RADIUS + band)
    c = model.rest[model.tets[across]].mean(axis=1)
    ang = np.degrees(np.arctan2(c[:, 1] - CENTRE[1], c[:, 0] - CENTRE[0])) % 360.0
    out = np.zeros(BINS, dtype=bool)
    out[np.floor(ang).astype(int) % BINS] = True
    return out


def deviation(points: np.ndarray) -> np.ndarray:
    """Distance [m] of points (k, 2) [m] from the circle."""
    return np.abs(np.hypot(points[:, 0] - CENTRE[0], points[:, 1] - CENTRE[1]) - RADIUS)


def area_outside(points: np.ndarray) -> float:
    """Area [m^2] outside the line along one snip's polyline: trapezoid integral of
    max(0, deviation - LINE_W / 2) ds."""
    if len(points) < 2:
        return 0.0
    over = np.maximum(deviation(points) - 0.5 * LINE_W, 0.0)
    ds = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return float(np.sum(0.5 * (over[1:] + over[:-1]) * ds))


def cover(points: np.ndarray, covered: np.ndarray) -> None:
    """Mark the 1-degree bins of `covered` (BINS,) swept by segments with both ends within
    COVER_BAND of the circle."""
    if len(points) < 2:
        return
    ok = deviation(points) <= COVER_BAND
    ang = np.degrees(np.arctan2(points[:, 1] - CENTRE[1], points[:, 0] - CENTRE[0])) % 360.0
    for i in range(len(points) - 1):
        if not (ok[i] and ok[i + 1]):
            continue
        a, b = ang[i], ang[i + 1]
        span = (b - a + 180.0) % 360.0 - 180.0  # the short way round
        lo = a if span >= 0 else b
        k0 = int(np.floor(lo))
        k1 = int(np.floor(lo + abs(span)))
        covered[np.arange(k0, k1 + 1) % BINS] = True


class CutBook:
    """What the snips so far cut: per snip its points; coverage, deviations, area outside."""

    def __init__(self) -> None:
        self.covered = np.zeros(BINS, dtype=bool)
        self.snips = 0
        self.cutting_snips = 0
        self.off_line = 0
        self.area = 0.0
        self.length = 0.0
        self.length_in = 0.0
        self.dev_sum = 0.0
        self.dev_max = 0.0
        self.n_points = 0
        self.last_dev = None

    def add(self, points: np.ndarray) -> tuple[bool, float]:
        """Book one snip's points; returns (it cut the gauze, its largest deviation [m])."""
        self.snips += 1
        if len(points) < 2:
            return False, 0.0
        self.cutting_snips += 1
        dev = deviation(points)
        cover(points, self.covered)
        self.area += area_outside(points)
        seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
        inside = (dev[1:] <= 0.5 * LINE_W) & (dev[:-1] <= 0.5 * LINE_W)
        self.length += float(seg.sum())
        self.length_in += float(seg[inside].sum())
        self.dev_sum += float(dev.sum())
        self.n_points += len(dev)
        worst = float(dev.max())
        self.dev_max = max(self.dev_max, worst)
        self.last_dev = worst
        if worst > 0.5 * LINE_W:
            self.off_line += 1
        return True, worst

    @property
    def coverage(self) -> float:
        return float(self.covered.mean())


class PatternCut(Procedure):
    """The FLS pattern cut (see the module docstring)."""

    name = "pattern_cut"
    version = "1"
    scene_name = "pattern_cut"
    cutoff_s = CUTOFF_S
    target_time_s = TARGET_TIME_S

    def __init__(self) -> None:
        super().__init__()
        self.phase = 0
        self.book = CutBook()
        self.plane_z = 0.0
        self._last_off_tick = -(10**9)
        self.regrasps = 0
        self.free = False
        self._topo_seen = 0

    def reset(self, scene, seed: int = 0) -> None:
        self._start(scene, seed)
        self._dt = scene.dt
        info = getattr(scene, "body_info", None)
        if info is None or info.name != "gauze" or scene.n_tools < 2:
            raise ValueError("pattern cut needs the pattern_cut scene (gauze, grasper, scissors)")
        self.plane_z = float(scene.tissue.rest[:, 2].max())
        self.phase = 0
        self.book = CutBook()
        self._last_off_tick = -(10**9)
        self.regrasps = 0
        self.free = False
        self._topo_seen = getattr(scene, "topology_version", 0)
        self.instruction = PHASE_INSTRUCTIONS[0]

    def update(self, scene, tick: int, events) -> None:
        if self.status != "running":
            return
        self.time_s = (tick - self.tick0 + 1) * self._dt
        for e in events:
            if e.kind == "grasp" and e.tool == GRASPER:
                if self.phase == 0:
                    self.phase = 1
                    self.instruction = PHASE_INSTRUCTIONS[1]
                else:
                    self.regrasps += 1
            elif e.kind == "snip" and e.tool == SCISSORS:
                pose = scene.tool_link_poses()[SCISSORS, 0]
                self._snip(snip_points(pose, e.value, self.plane_z), tick)
        if (tick - self.tick0) % WARN_EVERY == 0:
            self._refresh_warnings(scene, tick)
        version = getattr(scene, "topology_version", 0)
        if version != self._topo_seen:
            self._topo_seen = version
            self.free = disc_free(scene.tissue)
        if self.free:
            self.instruction = "Done: the disc is free"
            self._finish("success", tick)
        elif self.time_s >= self.cutoff_s - 1e-9:
            self._finish("timeout", tick)

    def _snip(self, points: np.ndarray, tick: int) -> None:
        cut, worst = self.book.add(points)
        if cut and worst > 0.5 * LINE_W:
            self._last_off_tick = tick
            self._error(tick, "off_line", f"cut {worst * 1e3:.1f} mm from the circle "
                        f"({(worst - 0.5 * LINE_W) * 1e3:.1f} mm outside the line)")

    def _refresh_warnings(self, scene, tick: int) -> None:
        w = []
        force = scene.rigid.last_force
        if float(np.max(np.einsum("ij,ij->i", force, force))) > FORCE_WARN**2:
            w.append("too much force")
        if not bool(np.all(scene.scope.in_view(scene.rigid.last_target))):
            w.append("instrument out of view")
        if (tick - self._last_off_tick) * self._dt < OFF_LINE_WARN_S and self.book.last_dev is not None:
            w.append(f"off the line by {(self.book.last_dev - 0.5 * LINE_W) * 1e3:.1f} mm")
        self.warnings = w

    def progress(self) -> str:
        b = self.book
        last = "" if b.last_dev is None else f", last cut {b.last_dev * 1e3:.1f} mm from the circle"
        return f"{100 * b.coverage:.0f} % of the circle cut{last}"

    def hud(self) -> dict:
        return {"instruction": self.instruction, "progress": self.progress(), "time_s": round(self.time_s, 2),
                "target_time_s": self.target_time_s, "warnings": list(self.warnings),
                "line": {"centre": list(CENTRE), "radius": RADIUS, "width": LINE_W},
                "deviation_mm": None if self.book.last_dev is None else round(self.book.last_dev * 1e3, 2)}

    # -- reporting -----------------------------------------------------------------------------------

    def result(self, trace: Trace) -> ProcedureResult:
        status = self.status if self.status != "running" else "incomplete"
        duration = self.time_s
        book = book_from_trace(trace, self.plane_z)
        penalty = penalty_of(book.area)
        score = fls_score(duration, penalty, self.cutoff_s) if status == "success" else 0.0
        met = status == "success" and duration <= self.target_time_s and book.area == 0.0
        return ProcedureResult(
            procedure=self.name, version=self.version, seed=self.seed, status=status,
            completed=status == "success", passed=met, score=score, duration_s=round(duration, 3),
            started=self.started, ended=iso_now(), metrics=cut_metrics(trace, duration, book),
            errors=list(self.errors),
            proficiency={"rule": f"disc free within {self.target_time_s:g} s, all of the cut within the line",
                         "met": met})


def penalty_of(area: float) -> float:
    """Penalty [s-equivalent]: the area outside the line as a % of the line's area, capped at 100."""
    return min(100.0, 100.0 * area / (2 * np.pi * RADIUS * LINE_W))


def book_from_trace(trace: Trace, plane_z: float) -> CutBook:
    """The cut from a Trace: every scissors 'snip' event at the pose of its tick's row."""
    book = CutBook()
    for e in trace.events:
        if e.kind == "snip" and e.tool == SCISSORS:
            row = e.tick - trace.tick0
            if 0 <= row < trace.n:
                book.add(snip_points(trace.tool_pose[row, SCISSORS], e.value, plane_z))
    return book


def cut_metrics(trace: Trace, completion_time: float, book: CutBook) -> dict[str, Metric]:
    """The pattern cut metric table: the cut's accuracy and economy, then the motion metrics of
    the peg transfer (procedures.metrics; docs/procedures.md)."""
    out = motion_metrics(trace, completion_time, 0)
    del out["drops"]
    mean_dev = book.dev_sum / book.n_points if book.n_points else None
    out["area_outside_line"] = Metric(round(book.area * 1e6, 3), "mm^2", "lower",
                                      "cut area outside the line")
    out["cut_deviation_mean"] = Metric(None if mean_dev is None else round(mean_dev * 1e3, 3), "mm", "lower",
                                       "mean distance of the cut from the circle")
    out["cut_deviation_max"] = Metric(round(book.dev_max * 1e3, 3), "mm", "lower",
                                      "largest distance of the cut from the circle")
    within = book.length_in / book.length if book.length > 0 else None
    out["cut_within_line"] = Metric(None if within is None else round(within, 4), "-", "higher",
                                    "share of the cut length within the line")
    out["snips"] = Metric(float(book.snips), "count", "lower", "scissors closures")
    # (the share of the circle cut through is 1 in every completed attempt by definition: the HUD
    # shows it, the metric table does not)
    return out
