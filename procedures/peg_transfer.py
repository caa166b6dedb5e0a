"""FLS peg transfer: the procedure (rules, phases, errors, score) on the `peg_transfer` scene.

Rules (FLS manual, ../shared/REFERENCES.md): 12 pegs (six per side), six objects starting on the
left. Lift each object with the non-dominant hand (tool 0, left), pass it mid-air to the dominant
hand (tool 1, right), place it on a peg on the other side; when all six are across, reverse (the
right hand lifts, the left hand places on the left). 300 s cut-off. An object dropped where it lands
on the board inside the field of view may be picked up again (a drop); one that comes to rest
outside the view or off the board is lost (penalty). A transfer without a mid-air hand-off is an
error (penalty). Proficiency: completed within 48 s with no object lost.

How the rules are read from the world (each tick, from the typed SceneEvents plus a few ring poses):
- a hand-off: a tool grasps a ring another tool holds while the ring is mid-air (its centre more
  than MID_AIR above where it rested when picked up);
- a release with no tool left holding the ring frees it; every CHECK_EVERY ticks its pose is read
  until it has moved less than STILL_M for SETTLE_CHECKS checks, then it is classified: on a peg
  (inside the hole clearance of a peg axis, below the peg top), on the board in view (a drop, it may
  be picked up again), or lost (off the board or out of view). A release from less than LIFTED above
  the rest height (a re-grasp) is not a drop;
- a ring that settles on a target-side peg is placed; without a hand-off on that trip it is also a
  'transfer_without_handoff' error.
Score (procedures.scoring): cut-off 300 s, penalty LOST_PENALTY per lost object (FLS: percentage of
objects lost) and NO_HANDOFF_PENALTY per transfer without hand-off (our choice; docs/procedures.md).
"""

from __future__ import annotations

import numpy as np

from procedures import metrics as mx
from procedures.base import Metric, Procedure, ProcedureResult, Trace, iso_now
from procedures.scoring import fls_score

N_OBJECTS = 6
CUTOFF_S = 300.0  # [s] FLS cut-off
TARGET_TIME_S = 48.0  # [s] FLS proficiency time (Ritter & Scott)
LOST_PENALTY = 100.0 / N_OBJECTS  # [s-equivalent] per lost object: the percentage of objects lost
NO_HANDOFF_PENALTY = LOST_PENALTY / 2  # [s-equivalent] per transfer without hand-off (our choice)
NON_DOMINANT, DOMINANT = 0, 1  # tool indices (right-handed trainee)
MID_AIR = 0.005  # [m] above the pick-up rest height: the ring is off its peg/board
LIFTED = 0.003  # [m] a release from lower than this above the rest height is a re-grasp, not a drop
CHECK_EVERY = 10  # [ticks] pose checks of free rings
STILL_M = 2e-4  # [m] per check: a ring moving less has come to rest
SETTLE_CHECKS = 5
WARN_EVERY = 100  # [ticks] force / view warnings refresh
FORCE_WARN = 3.0  # [N] HUD warning: too much force
DROP_WARN_S = 3.0  # [s] how long the HUD shows "object dropped"

PHASE_INSTRUCTIONS = (
    "Lift each object from the LEFT pegs with the left hand, pass it mid-air to the right hand, "
    "place it on a RIGHT peg",
    "Reverse: lift each object from the RIGHT pegs with the right hand, pass it mid-air to the "
    "left hand, place it on a LEFT peg",
)


class _Ring:
    """Bookkeeping of one object: where it rests, who holds it, this trip's hand-off."""

    __slots__ = (
        "peg",
        "side",
        "state",
        "holders",
        "handed",
        "rest_z",
        "last",
        "still",
        "lifted",
        "from_side",
    )

    def __init__(self, peg: int, side: int, z: float) -> None:
        self.peg = peg  # peg it rests on, -1 if none
        self.side = side  # side it rests on (0 left, 1 right)
        self.state = "rest"  # rest | held | free | lost
        self.holders: set[int] = set()
        self.handed = False
        self.rest_z = z
        self.last = np.zeros(3)
        self.still = 0
        self.lifted = False  # released from higher than LIFTED above rest (a drop if not placed)
        self.from_side = side


class PegTransfer(Procedure):
    """The FLS peg transfer (see the module docstring)."""

    name = "peg_transfer"
    version = "1"
    scene_name = "peg_transfer"
    cutoff_s = CUTOFF_S
    target_time_s = TARGET_TIME_S

    def __init__(self) -> None:
        super().__init__()
        self.phase = 0
        self.rings: list[_Ring] = []
        self.drops = 0
        self.lost = 0
        self.no_handoff = 0
        self.handoffs = 0
        self._last_drop_tick = -(10**9)
        self._spec = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def reset(self, scene, seed: int = 0) -> None:
        self._start(scene, seed)
        self._dt = scene.dt
        board = scene.rigid.pegboard
        if board is None or len(scene.rigid.graspable) != N_OBJECTS or scene.n_tools < 2:
            raise ValueError("peg transfer needs the peg_transfer scene (board, six rings, two tools)")
        self._spec = spec = board.spec
        self._pegs = np.array([spec.peg_world(i) for i in range(len(spec.peg_xy))])
        self._clearance = spec.hole_clearance
        self._bodies = list(scene.rigid.graspable)
        self.phase = 0
        self.drops = self.lost = self.no_handoff = self.handoffs = 0
        self._last_drop_tick = -(10**9)
        self.rings = []
        for k, body in enumerate(self._bodies):
            peg = spec.ring_pegs[k]
            self.rings.append(_Ring(peg, spec.side_of(peg), float(scene.rigid.body_pose(body)[2])))
        self.instruction = PHASE_INSTRUCTIONS[0]

    @staticmethod
    def _in_view(scene, points: np.ndarray) -> np.ndarray:
        return scene.scope.in_view(points)

    def update(self, scene, tick: int, events) -> None:
        if self.status != "running":
            return
        self.time_s = (tick - self.tick0 + 1) * self._dt
        for e in events:
            if e.body < 0 or e.kind not in ("grasp_object", "release_object"):
                continue
            r = self.rings[e.body]
            if e.kind == "grasp_object":
                self._grasped(scene, r, e)
            else:
                self._released(scene, r, e)
        if (tick - self.tick0) % CHECK_EVERY == 0:
            for k, r in enumerate(self.rings):
                if r.state == "free":
                    self._watch(scene, k, r, tick)
        if (tick - self.tick0) % WARN_EVERY == 0:
            self._refresh_warnings(scene, tick)
        if self.status == "running" and self.time_s >= self.cutoff_s - 1e-9:
            self._finish("timeout", tick)

    # -- rules ---------------------------------------------------------------------------------------

    def _grasped(self, scene, r: _Ring, e) -> None:
        if r.state == "lost":
            return
        z = float(scene.rigid.body_pose(self._bodies[e.body])[2])
        if r.holders:
            if z > r.rest_z + MID_AIR and e.tool not in r.holders:
                r.handed = True
                self.handoffs += 1
        elif r.state == "rest":  # picked up from a peg or the board: a new trip starts
            r.handed = False
            r.from_side = r.side
            r.rest_z = z
        r.holders.add(e.tool)
        r.state = "held"

    def _released(self, scene, r: _Ring, e) -> None:
        r.holders.discard(e.tool)
        if r.holders or r.state == "lost":
            return
        pos = scene.rigid.body_pose(self._bodies[e.body])[:3]
        r.lifted = bool(pos[2] > r.rest_z + LIFTED)
        r.state = "free"
        r.still = 0
        r.last[:] = pos

    def _watch(self, scene, k: int, r: _Ring, tick: int) -> None:
        pos = scene.rigid.body_pose(self._bodies[k])[:3]
        moved = float(np.linalg.norm(pos - r.last))
        r.last[:] = pos
        r.still = r.still + 1 if moved < STILL_M else 0
        if r.still >= SETTLE_CHECKS:
            self._settled(scene, k, r, pos, tick)

    def _settled(self, scene, k: int, r: _Ring, pos: np.ndarray, tick: int) -> None:
        spec = self._spec
        d = np.hypot(self._pegs[:, 0] - pos[0], self._pegs[:, 1] - pos[1])
        peg = int(np.argmin(d))
        on_peg = d[peg] < self._clearance and pos[2] < spec.top + spec.peg_height
        target = 1 - self.phase
        if on_peg:
            side = spec.side_of(peg)
            r.state, r.peg, r.side, r.rest_z = "rest", peg, side, float(pos[2])
            if side == target and r.from_side != target:
                if not r.handed:
                    self.no_handoff += 1
                    self._error(
                        tick,
                        "transfer_without_handoff",
                        f"object {k} placed on peg {peg} without a mid-air hand-off",
                    )
            elif r.lifted:
                self._drop(tick, k, "back on a peg of the same side")
            self._check_phase(tick)
            return
        on_board = (
            abs(pos[0] - spec.centre[0]) < spec.size[0] / 2
            and abs(pos[1] - spec.centre[1]) < spec.size[1] / 2
            and pos[2] < spec.top + 0.02
        )
        if on_board and bool(self._in_view(scene, pos[None, :])[0]):
            r.state, r.peg, r.rest_z = "rest", -1, float(pos[2])
            r.side = int(pos[0] > spec.centre[0])
            if r.lifted:
                self._drop(tick, k, "on the board, in view: pick it up again")
            return
        r.state, r.peg = "lost", -1
        self.lost += 1
        self.drops += 1
        self._last_drop_tick = tick
        where = "off the board" if not on_board else "outside the field of view"
        self._error(tick, "object_lost", f"object {k} dropped {where}: lost")
        if self.lost == N_OBJECTS:
            self._finish("failure", tick)
        else:
            self._check_phase(tick)

    def _drop(self, tick: int, k: int, where: str) -> None:
        self.drops += 1
        self._last_drop_tick = tick
        self._error(tick, "drop", f"object {k} dropped {where}")

    def _check_phase(self, tick: int) -> None:
        target = 1 - self.phase
        if all(
            r.state == "lost" or (r.state == "rest" and r.peg >= 0 and r.side == target) for r in self.rings
        ):
            if self.phase == 0:
                self.phase = 1
                self.instruction = PHASE_INSTRUCTIONS[1]
            else:
                self.instruction = "Done"
                self._finish("success", tick)

    def _refresh_warnings(self, scene, tick: int) -> None:
        w = []
        force = scene.rigid.last_force
        if float(np.max(np.einsum("ij,ij->i", force, force))) > FORCE_WARN**2:
            w.append("too much force")
        tips = scene.rigid.last_target  # the proxies follow their targets within ~mm
        if not bool(np.all(self._in_view(scene, tips))):
            w.append("instrument out of view")
        if (tick - self._last_drop_tick) * self._dt < DROP_WARN_S:
            w.append("object dropped")
        self.warnings = w

    # -- reporting -----------------------------------------------------------------------------------

    def progress(self) -> str:
        target = 1 - self.phase
        across = sum(r.state == "rest" and r.peg >= 0 and r.side == target for r in self.rings)
        label = "across" if self.phase == 0 else "back"
        return f"{across}/{N_OBJECTS} {label}" + (f", {self.lost} lost" if self.lost else "")

    def hud(self) -> dict:
        return {
            "instruction": self.instruction,
            "progress": self.progress(),
            "time_s": round(self.time_s, 2),
            "target_time_s": self.target_time_s,
            "warnings": list(self.warnings),
        }

    def penalty(self) -> float:
        """Penalty [s-equivalent]: LOST_PENALTY per lost object + NO_HANDOFF_PENALTY per transfer
        without hand-off."""
        return self.lost * LOST_PENALTY + self.no_handoff * NO_HANDOFF_PENALTY

    def result(self, trace: Trace) -> ProcedureResult:
        status = self.status if self.status != "running" else "incomplete"
        duration = self.time_s
        score = fls_score(duration, self.penalty(), self.cutoff_s) if status == "success" else 0.0
        met = status == "success" and duration <= self.target_time_s and self.lost == 0
        return ProcedureResult(
            procedure=self.name,
            version=self.version,
            seed=self.seed,
            status=status,
            completed=status == "success",
            passed=met,
            score=score,
            duration_s=round(duration, 3),
            started=self.started,
            ended=iso_now(),
            metrics=motion_metrics(trace, duration, self.drops),
            errors=list(self.errors),
            proficiency={
                "rule": f"completed within {self.target_time_s:g} s with no object lost",
                "met": met,
            },
        )


def motion_metrics(trace: Trace, completion_time: float, drops: int) -> dict[str, Metric]:
    """The peg transfer metric table from a Trace (formulas in procedures.metrics, docs/procedures.md)."""
    dt = trace.dt
    n_hands = trace.force.shape[1] if trace.force.ndim == 3 else 0
    tips = [trace.tips(i) for i in range(trace.tool_pose.shape[1])]
    speeds = np.array([mx.smoothed_speed(p, dt) for p in tips]) if trace.n else np.zeros((len(tips), 0))
    out = {"completion_time": Metric(round(completion_time, 3), "s", "lower", "completion time")}
    names = ("left", "right")
    for i, p in enumerate(tips[:2]):
        out[f"path_length_{names[i]}"] = Metric(
            round(mx.path_length(p), 4), "m", "lower", f"path length, {names[i]} hand"
        )
    ang = sum(mx.angular_path(trace.tool_pose[:, i, 3:7]) for i in range(len(tips)))
    out["angular_path"] = Metric(round(ang, 3), "rad", "lower", "angular path, both instruments")
    out["movements"] = Metric(
        float(sum(mx.count_movements(s) for s in speeds)), "count", "lower", "number of movements, both hands"
    )
    idle = round(mx.idle_time(speeds, dt), 3)
    out["idle_time"] = Metric(idle, "s", "lower", "idle time, summed over hands")
    keys: list[list[int]] = [[0, trace.n - 1] for _ in tips]
    for e in trace.events:
        if e.kind in ("grasp_object", "release_object") and 0 <= e.tool < len(tips):
            keys[e.tool].append(e.tick - trace.tick0)
    paths = [mx.path_length(p) for p in tips]
    ideal = [mx.economy_of_motion(p, k) * a for p, k, a in zip(tips, keys, paths, strict=True)]
    eco = sum(ideal) / sum(paths) if sum(paths) > 0 else 1.0
    out["economy_of_motion"] = Metric(round(eco, 4), "-", "higher", "economy of motion (ideal / actual path)")
    ldlj = [mx.mean_movement_ldlj(p, dt, s) for p, s in zip(tips, speeds, strict=True)]
    ldlj = [v for v in ldlj if np.isfinite(v)]
    out["log_dimensionless_jerk"] = Metric(
        round(float(np.mean(ldlj)), 3) if ldlj else None,
        "-",
        "lower",
        "smoothness: log dimensionless jerk per movement",
    )
    out["bimanual_dexterity"] = Metric(
        round(mx.bimanual_dexterity(speeds[:2]), 4),
        "-",
        "higher",
        "bimanual dexterity (both hands moving / any moving)",
    )
    mags = mx.force_magnitudes(trace.force) if n_hands else np.zeros((trace.n, 1))
    out["force_mean"] = Metric(
        round(float(mags.mean()) if mags.size else 0.0, 4), "N", "lower", "mean instrument force"
    )
    out["force_max"] = Metric(
        round(float(mags.max()) if mags.size else 0.0, 4), "N", "lower", "max instrument force"
    )
    out["time_force_over"] = Metric(
        round(mx.time_above(mags, mx.FORCE_LIMIT, dt), 3), "s", "lower", f"time above {mx.FORCE_LIMIT:g} N"
    )
    tip_arr = trace.tool_pose[:, :, :3]
    out["time_out_of_view"] = Metric(
        round(mx.time_out_of_view(tip_arr, trace.scope_pose, dt), 3),
        "s",
        "lower",
        "time with an instrument tip out of view",
    )
    out["drops"] = Metric(float(drops), "count", "lower", "objects dropped")
    return out
