"""Laparoscopic cholecystectomy, the clip-and-divide step: the procedure (phases, errors, metrics,
score) on the `cholecystectomy` scene (issue 15; docs/anatomy.md, docs/procedures.md).

Tools: 0 grasper (left hand: the infundibulum), 1 clip applier (right hand), 2 scissors (right
hand's second instrument). The fundus is held retracted over the liver by the assistant (fixed
nodes of the anatomy).

Phases (the HUD shows the first one not done; the trainee may work in any order):
1. retract: grasp the infundibulum (gallbladder nodes held by the grasper) and pull it laterally,
   >= RETRACT_M from where it was grasped: Calot's triangle opens;
2. clip the cystic duct: >= 2 clips on the patient side and >= 1 on the gallbladder side, leaving
   a gap for the scissors, each inside the safe zone (`Anatomy.safe_zones`), at its marked site
   (`CLIP_MARKS`);
3. clip the cystic artery, the same;
4. divide the cystic duct between its clips; 5. divide the cystic artery between its clips.

How the world is read (each tick, from typed SceneEvents and the tissue's rest geometry, so it
does not depend on how far the organs moved):
- 'clip_applied' (value = clip index): the clip's nodes (`scene.injury.clips`); their organ labels
  say what it is on; their rest centroid projected on that structure's centreline gives its
  position s [m] (0 at the gallbladder) and distance to the nearest marked site; the angle is between the
  structure's current tangent there and the clip's across-direction (0 = square to it); it spans the
  width when it holds >= SPAN_FRACTION of the structure's nodes within 1.5 mm of s.
- 'cut' (B's cutting: the scissors separated tissue): the organ nodes within CUT_REACH of the
  scissors' closed jaws at that tick say what was cut and where (s).
- 'tear', 'bleed_start' / 'bleed_stop' (K's damage and bleeding) are errors / the blood metric.
Errors: clip outside its zone, not across the width, > MAX_ANGLE_DEG from square, clip or cut on
the common bile duct (critical: the attempt fails), dividing with < 2 patient-side clips (bile
leak / bleeding), dividing outside the clips, tearing, excessive force (> FORCE_LIMIT for
FORCE_HOLD_S), an instrument out of view while it moves.
Score (procedures.scoring): cut-off 600 s, penalties in seconds-equivalent per error kind
(`PENALTY`); proficiency: completed without critical error, every clip in its zone and across the
width, within `TARGET_TIME_S` (the scripted expert's mean + 2 SD, until real expert data exists).
"""

from __future__ import annotations

import numpy as np

from procedures.base import Metric, Procedure, ProcedureResult, Trace, iso_now
from procedures.peg_transfer import motion_metrics
from procedures.scoring import fls_score
from sim.cutting import quat_matrix

CUTOFF_S = 600.0  # [s] attempt limit (our choice: twice the FLS tasks', the step is longer)
#: [s] proficiency time: the scripted expert's mean + 2 SD over seeds 0-2 (17.815, 17.315, 17.63 s:
#: 17.59 + 2 x 0.25; `trocar bench validity cholecystectomy`, docs/procedures.md), as LAP Mentor
#: sets proficiency from experts until real expert data exists (its clip-and-cut best quartile is
#: 68 s, REFERENCES.md: the scripted expert is far quicker than a person).
TARGET_TIME_S = 18.1
GRASPER, APPLIER, SCISSORS = 0, 1, 2
RETRACT_M = 0.005  # [m] lateral pull of the infundibulum that opens the triangle
MAX_ANGLE_DEG = 30.0
SPAN_FRACTION = 0.6
CUT_REACH = 0.002  # [m]
#: [N] on a hand (the HUD's warning level; a grasper's bite on the gallbladder tears at 1.25 N)
FORCE_LIMIT = 4.0
FORCE_HOLD_S = 0.3
WARN_EVERY = 100  # [ticks]
STRUCTURES = ("cystic_duct", "cystic_artery")
#: [s-equivalent] per error kind (our choice: a misplaced clip costs a re-clip, ~10 s; tearing
#: and an unsecured division are complications).
#: The marked clip sites of each structure, as fractions of its safe zone (0: its gallbladder end):
#: one gallbladder-side clip, then two patient-side ones, leaving a gap for the scissors between the
#: first two; the artery's stay clear of its origin next to the common duct. The HUD gives them in
#: mm (`clip_marks_mm`); a clip's placement error is its distance to the nearest mark.
CLIP_MARKS = {"cystic_duct": (0.15, 0.6, 0.85), "cystic_artery": (0.1, 0.55, 0.8)}
PENALTY = {"clip_outside_zone": 10.0, "clip_not_spanning": 10.0, "clip_oblique": 5.0,
           "divided_unsecured": 60.0, "divided_outside_clips": 30.0, "tear": 30.0,
           "excessive_force": 5.0, "out_of_view": 2.0, "clip_on_cbd": 600.0, "cut_on_cbd": 600.0}
CRITICAL = ("clip_on_cbd", "cut_on_cbd")

INSTRUCTIONS = (
    "Grasp the infundibulum (gallbladder neck) with the LEFT grasper and pull it laterally to open "
    "Calot's triangle",
    "Clip the CYSTIC DUCT inside its zone: 2 clips on the patient side, 1 on the gallbladder side",
    "Clip the CYSTIC ARTERY inside its zone: 2 clips on the patient side, 1 on the gallbladder side",
    "Divide the CYSTIC DUCT with the scissors between the patient-side and gallbladder-side clips "
    "(two devices: button 1 on the right handle, or C, exchanges the clip applier for the scissors)",
    "Divide the CYSTIC ARTERY with the scissors between its clips",
    "Done: the cystic duct and artery are clipped and divided",
)


class _Structure:
    """Clips and division of one structure."""

    def __init__(self) -> None:
        self.clips: list[dict] = []
        self.divided_at: float | None = None

    def sides(self, s_cut: float | None = None) -> tuple[int, int]:
        """(gallbladder-side, patient-side) clips that hold, relative to s_cut [m] (default: the
        middle between the innermost clips of each side)."""
        good = [c["s"] for c in self.clips if c["spans"]]
        if s_cut is None:
            if len(good) < 3:
                return 0, 0
            good.sort()
            s_cut = 0.5 * (good[0] + good[1])  # the one gallbladder-side clip, then the rest
        return sum(s < s_cut for s in good), sum(s > s_cut for s in good)


class Cholecystectomy(Procedure):
    """Clip and divide the cystic duct and artery (see the module docstring)."""

    name = "cholecystectomy"
    version = "1"
    scene_name = "cholecystectomy"
    #: `--device emu` hands for this procedure (emulator options per hand, after the defaults):
    #: circles of 1 cm radius, 1 cm ahead of and 5 mm above each instrument's start tip, in the air
    #: in front of the scope (the default circles, made for the tissue pad, ploughed the tools
    #: through the liver and tore the gallbladder).
    emulator_hands = (("--hand-at", "0.0,0.01,0.005", "--hand-radius", "0.01"),
                      ("--hand-at=0.0,0.01,0.005", "--hand-radius", "0.01"))
    cutoff_s = CUTOFF_S
    target_time_s = TARGET_TIME_S

    def __init__(self) -> None:
        super().__init__()
        self._clear()

    def _clear(self) -> None:
        self.phase = 0
        self.retracted = False
        self.grasp_ref: np.ndarray | None = None
        self.st = {name: _Structure() for name in STRUCTURES}
        self.clip_log: list[dict] = []
        self.blood_ml = 0.0
        self.tears = 0
        self.force_ticks = 0
        self.critical = False

    def scene_overrides(self, seed: int) -> dict:
        from sim.organs import AnatomyBody

        return {"body": AnatomyBody(seed=int(seed))}

    def reset(self, scene, seed: int = 0) -> None:
        self._start(scene, seed)
        self._dt = scene.dt
        if scene.anatomy is None or scene.n_tools < 3:
            raise ValueError("the cholecystectomy needs the cholecystectomy scene (anatomy, grasper, "
                             "clip applier, scissors)")
        self._clear()
        self.anatomy = scene.anatomy
        self.instruction = INSTRUCTIONS[0]

    # -- per tick ------------------------------------------------------------------------------------

    def update(self, scene, tick: int, events) -> None:
        if self.status != "running":
            return
        self.time_s = (tick - self.tick0 + 1) * self._dt
        for e in events:
            if e.kind == "clip_applied" and e.tool == APPLIER:
                self._clip(scene, int(e.value), tick)
            elif e.kind == "cut":
                self._cut(scene, e.tool, tick)
            elif e.kind == "tear":
                self.tears += 1
                self._error(tick, "tear", f"tissue torn ({e.value:.1f} N): pull more gently")
            elif e.kind in ("bleed_start", "bleed_stop"):
                self.blood_ml = max(self.blood_ml, float(e.value))
        bleeding = scene.injury.bleeding if scene.injury is not None else None
        if bleeding is not None:
            self.blood_ml = float(bleeding.volume)
        if not self.retracted:
            self._check_retraction(scene)
        self._check_force(scene, tick)
        if (tick - self.tick0) % WARN_EVERY == 0:
            self._refresh_warnings(scene, tick)
        self._advance_phase()
        if self.critical:
            self._finish("failure", tick)
        elif self.phase == len(INSTRUCTIONS) - 1:
            self._finish("success", tick)
        elif self.time_s >= self.cutoff_s - 1e-9:
            self._finish("timeout", tick)

    def _check_retraction(self, scene) -> None:
        from sim.anatomy import GALLBLADDER

        nodes = scene.contact.attached_nodes(GRASPER)
        n0 = len(self.anatomy.node_body)
        nodes = nodes[nodes < n0]
        nodes = nodes[self.anatomy.node_body[nodes] == GALLBLADDER] if len(nodes) else nodes
        if len(nodes) == 0:
            self.grasp_ref = None
            return
        at = scene.tissue_state.x[nodes].mean(axis=0)
        if self.grasp_ref is None:
            self.grasp_ref = scene.tissue.rest[nodes].mean(axis=0)
        lateral = self.grasp_ref[0] - at[0]  # the patient's right is -x in the view
        if lateral >= RETRACT_M:
            self.retracted = True

    def _check_force(self, scene, tick: int) -> None:
        f = scene.rigid.last_force
        if float(np.max(np.einsum("ij,ij->i", f, f))) > FORCE_LIMIT**2:
            self.force_ticks += 1
            if self.force_ticks == int(FORCE_HOLD_S / self._dt):
                self._error(tick, "excessive_force", f"more than {FORCE_LIMIT:g} N for "
                            f"{FORCE_HOLD_S:g} s: tissue damage")
        else:
            self.force_ticks = 0

    def _advance_phase(self) -> None:
        done = [self.retracted,
                self.st["cystic_duct"].sides() >= (1, 2),
                self.st["cystic_artery"].sides() >= (1, 2),
                self.st["cystic_duct"].divided_at is not None,
                self.st["cystic_artery"].divided_at is not None]
        sides_ok = [self.st[n].sides()[0] >= 1 and self.st[n].sides()[1] >= 2 for n in STRUCTURES]
        done[1], done[2] = sides_ok
        self.phase = next((i for i, d in enumerate(done) if not d), len(done))
        self.instruction = INSTRUCTIONS[self.phase]

    # -- clips and cuts ------------------------------------------------------------------------------

    def _organ_nodes(self, scene, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nodes, organ labels) of the start-mesh nodes among `nodes` (the copies a cut appends are
        left out: node ids are stable, docs/cutting.md)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        nodes = nodes[nodes < len(self.anatomy.node_body)]
        return nodes, self.anatomy.node_body[nodes]

    def _clip(self, scene, c: int, tick: int) -> None:
        from sim.anatomy import BODIES, COMMON_BILE_DUCT

        clips = scene.injury.clips
        raw = clips.node[c, :clips.count[c]]
        nodes, labels = self._organ_nodes(scene, raw)
        if len(nodes) == 0:
            return
        if np.count_nonzero(labels == COMMON_BILE_DUCT) >= 2:
            self._record_clip(c, "common_bile_duct", np.nan, np.nan, np.nan, False, tick)
            self.critical = True
            self._error(tick, "clip_on_cbd", "CRITICAL: a clip on the common bile duct (bile duct "
                        "injury); the attempt fails")
            return
        counts = np.bincount(labels, minlength=len(BODIES))
        counts[[BODIES.index(n) for n in BODIES if n not in STRUCTURES]] = 0
        if counts.max() == 0:
            self._record_clip(c, "", np.nan, np.nan, np.nan, False, tick)
            self._error(tick, "clip_outside_zone", "clip on neither the cystic duct nor the artery")
            return
        body = int(np.argmax(counts))
        name = BODIES[body]
        st = self.anatomy.structures[name]
        on = nodes[labels == body]
        s, _, _ = st.project(scene.tissue.rest[on].mean(axis=0))
        lo, hi = self.anatomy.safe_zones[name]
        dist = 0.0 if lo <= s <= hi else min(abs(s - lo), abs(s - hi))
        zone_dist = min(abs(s - (lo + f * (hi - lo))) for f in CLIP_MARKS[name])
        angle = self._clip_angle(scene, c, name, body, s)
        spans = self._spans(scene, on, body, name, s)
        self._record_clip(c, name, s, zone_dist, angle, spans, tick)
        label = name.replace("_", " ")
        if dist > 0.0:
            self._error(tick, "clip_outside_zone", f"clip on the {label} {dist * 1e3:.1f} mm outside "
                        "its zone")
        if not spans:
            self._error(tick, "clip_not_spanning", f"clip on the {label} does not cross its whole width")
        if np.isfinite(angle) and angle > MAX_ANGLE_DEG:
            self._error(tick, "clip_oblique", f"clip {angle:.0f} deg from square to the {label} "
                        f"(limit {MAX_ANGLE_DEG:g})")

    def _record_clip(self, c, name, s, zone_dist, angle, spans, tick) -> None:
        rec = {"clip": c, "structure": name, "s": float(s), "zone_dist": float(zone_dist),
               "angle": float(angle), "spans": bool(spans), "tick": int(tick)}
        self.clip_log.append(rec)
        if name in self.st:
            self.st[name].clips.append(rec)

    def _structure_nodes(self, scene, body: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Start-mesh nodes of organ `body` and their arc length along its centreline [m]."""
        key = ("_arc", name)
        if key not in self.__dict__:
            nodes = np.flatnonzero(self.anatomy.node_body == body)
            st = self.anatomy.structures[name]
            arc = np.array([st.project(p)[0] for p in self.anatomy.mesh.points[nodes]])
            self.__dict__[key] = (nodes, arc)
        return self.__dict__[key]

    def _clip_angle(self, scene, c: int, name: str, body: int, s: float) -> float:
        """Angle [deg] between the structure's current tangent at s and the clip's across-axis."""
        nodes, arc = self._structure_nodes(scene, body, name)
        x = scene.tissue_state.x
        lo, hi = nodes[(arc > s - 3e-3) & (arc < s - 1e-3)], nodes[(arc > s + 1e-3) & (arc < s + 3e-3)]
        if len(lo) == 0 or len(hi) == 0:
            return float("nan")
        t = x[hi].mean(axis=0) - x[lo].mean(axis=0)
        t /= np.linalg.norm(t)
        across = quat_matrix(_xyzw(scene, c))[:, 0]
        return float(np.degrees(np.arccos(min(1.0, abs(float(t @ across))))))

    def _spans(self, scene, on: np.ndarray, body: int, name: str, s: float) -> bool:
        nodes, arc = self._structure_nodes(scene, body, name)
        band = nodes[np.abs(arc - s) < 1.5e-3]
        if len(band) == 0:
            return False
        return np.isin(band, on).mean() >= SPAN_FRACTION

    def _cut(self, scene, tool: int, tick: int) -> None:
        from sim.anatomy import BODIES

        if tool < 0:  # a scripted blade (scene.cut): no instrument to read where it cut
            return
        pose = scene.tool_link_poses()[tool, 0]
        r = quat_matrix(pose[3:7])
        jl = scene.tools[tool].spec.jaw_length
        a, b = pose[:3], pose[:3] + r[:, 2] * jl  # tip .. hinge
        x = scene.tissue_state.x
        ab = b - a
        t = np.clip((x - a) @ ab / (ab @ ab), 0.0, 1.0)
        near = np.flatnonzero(np.linalg.norm(x - (a + t[:, None] * ab), axis=1) < CUT_REACH)
        nodes, labels = self._organ_nodes(scene, near)
        if len(nodes) == 0:
            return
        counts = np.bincount(labels, minlength=len(BODIES))
        if counts[BODIES.index("common_bile_duct")] >= 2:
            self.critical = True
            self._error(tick, "cut_on_cbd", "CRITICAL: the common bile duct was cut; the attempt fails")
            return
        for name in STRUCTURES:
            body = BODIES.index(name)
            if counts[body] == 0 or self.st[name].divided_at is not None:
                continue
            st = self.anatomy.structures[name]
            s = st.project(scene.tissue.rest[nodes[labels == body]].mean(axis=0))[0]
            self.st[name].divided_at = float(s)
            gb_side, patient = self.st[name].sides(s)
            label = name.replace("_", " ")
            if patient < 2:
                self._error(tick, "divided_unsecured", f"{label} divided with {patient} patient-side "
                            "clip(s): " + ("bleeding" if name == "cystic_artery" else "bile leak"))
            elif gb_side < 1:
                self._error(tick, "divided_outside_clips", f"{label} divided outside its clips")

    def _refresh_warnings(self, scene, tick: int) -> None:
        w = []
        f = scene.rigid.last_force
        if float(np.max(np.einsum("ij,ij->i", f, f))) > FORCE_LIMIT**2:
            w.append("too much force")
        tips = scene.rigid.last_target
        if not bool(np.all(scene.scope.in_view(tips))):
            w.append("instrument out of view")
        if self.blood_ml > 0:
            w.append(f"bleeding: {self.blood_ml:.1f} mL lost")
        self.warnings = w

    def progress(self) -> str:
        d, a = (self.st[n] for n in STRUCTURES)
        return (f"duct clips {len(d.clips)}, artery clips {len(a.clips)}; "
                f"divided: duct {'yes' if d.divided_at is not None else 'no'}, "
                f"artery {'yes' if a.divided_at is not None else 'no'}")

    def hud(self) -> dict:
        a = getattr(self, "anatomy", None)
        zones = {n: [round(v * 1e3, 1) for v in a.safe_zones[n]] for n in STRUCTURES} if a is not None else {}
        marks = {n: [round(lo + f * (hi - lo), 1) for f in CLIP_MARKS[n]] for n, (lo, hi) in zones.items()}
        return {"instruction": self.instruction, "progress": self.progress(),
                "time_s": round(self.time_s, 2), "target_time_s": self.target_time_s,
                "warnings": list(self.warnings), "phase": self.phase, "safe_zones_mm": zones,
                "clip_marks_mm": marks}

    # -- reporting -----------------------------------------------------------------------------------

    def result(self, trace: Trace) -> ProcedureResult:
        status = self.status if self.status != "running" else "incomplete"
        duration = self.time_s
        penalty = sum(PENALTY.get(e.kind, 0.0) for e in self.errors)
        score = fls_score(duration, penalty, self.cutoff_s) if status == "success" else 0.0
        clean = all(c["spans"] and np.isfinite(c["zone_dist"]) for c in self.clip_log) and not any(
            e.kind in ("clip_outside_zone", "divided_unsecured", *CRITICAL) for e in self.errors)
        met = status == "success" and duration <= self.target_time_s and clean
        return ProcedureResult(
            procedure=self.name, version=self.version, seed=self.seed, status=status,
            completed=status == "success", passed=met, score=score, duration_s=round(duration, 3),
            started=self.started, ended=iso_now(), metrics=self.metrics(trace, duration),
            errors=list(self.errors),
            proficiency={"rule": f"clipped and divided within {self.target_time_s:g} s, every clip in "
                         "its zone and across the width, no critical error", "met": met})

    def metrics(self, trace: Trace, duration: float) -> dict[str, Metric]:
        """Peg-transfer motion metrics plus clip placement, clips, blood and damage. Two hands,
        three instruments: the right hand's path and speed are the clip applier's and the
        scissors' together (it holds one at a time, `procedures.policies.cholecystectomy`), and an
        instrument counts as out of view only while it moves (the one parked at its port is not
        in use)."""
        out = motion_metrics(trace, duration, 0)
        del out["drops"]
        if trace.tool_pose.shape[1] > SCISSORS:
            _two_hands(out, trace)
        placed = [c for c in self.clip_log if c["structure"] in STRUCTURES]
        dist = [c["zone_dist"] for c in placed if np.isfinite(c["zone_dist"])]
        ang = [c["angle"] for c in placed if np.isfinite(c["angle"])]
        out["clips"] = Metric(float(len(self.clip_log)), "count", "lower", "clips applied")
        out["clip_zone_distance"] = Metric(round(float(np.mean(dist)) * 1e3, 3) if dist else None, "mm",
                                           "lower", "mean clip distance to its nearest marked site")
        out["clip_angle"] = Metric(round(float(np.mean(ang)), 2) if ang else None, "deg", "lower",
                                   "mean clip angle from square")
        out["clip_span"] = Metric(round(float(np.mean([c["spans"] for c in placed])), 4) if placed else None,
                                  "-", "higher", "share of clips across the whole width")
        out["blood_lost"] = Metric(round(self.blood_ml, 3), "mL", "lower", "blood lost")
        out["tears"] = Metric(float(self.tears), "count", "lower", "tissue tears")
        out["errors"] = Metric(float(len(self.errors)), "count", "lower", "errors")
        return out


def _two_hands(out: dict[str, Metric], trace: Trace) -> None:
    """Right-hand path and bimanual dexterity over the applier and the scissors; time out of view
    of the moving instruments only (see `Cholecystectomy.metrics`)."""
    from procedures import metrics as mx

    dt = trace.dt
    tips = trace.tool_pose[:, :, :3]
    right = mx.path_length(tips[:, APPLIER]) + mx.path_length(tips[:, SCISSORS])
    old = out["path_length_right"]
    out["path_length_right"] = Metric(round(right, 4), old.unit, old.better,
                                      "path length, right hand (clip applier + scissors)")
    speeds = np.array([mx.smoothed_speed(tips[:, i], dt) for i in range(tips.shape[1])])
    hands = np.vstack([speeds[GRASPER], np.maximum(speeds[APPLIER], speeds[SCISSORS])])
    old = out["bimanual_dexterity"]
    out["bimanual_dexterity"] = Metric(round(mx.bimanual_dexterity(hands), 4), old.unit, old.better,
                                       old.label)
    moving = speeds.T > mx.MOVE_OFF  # (N, tools)
    away = np.zeros(trace.n, bool)
    change = np.r_[0, np.flatnonzero(np.any(np.diff(trace.scope_pose, axis=0) != 0, axis=1)) + 1, trace.n]
    for a, b in zip(change[:-1], change[1:], strict=True):
        inside = mx.in_view(tips[a:b].reshape(-1, 3), trace.scope_pose[a]).reshape(b - a, -1)
        away[a:b] = (moving[a:b] & ~inside).any(axis=1)
    old = out["time_out_of_view"]
    out["time_out_of_view"] = Metric(round(float(np.count_nonzero(away) * dt), 3), old.unit, old.better,
                                     "time with a moving instrument tip out of view")


def _xyzw(scene, c: int) -> np.ndarray:
    """Clip c's orientation as a quaternion (x, y, z, w), from the snapshot's clip rows."""
    rows = scene.injury.clips.poses(np.zeros((len(scene.injury.clips.pos), 8)))
    return rows[c, 3:7]
