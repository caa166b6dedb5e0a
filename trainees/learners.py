"""A statistical model of a learner whose skill improves with practice; it produces ProcedureResult
JSON for every task in the rules, including tasks whose procedure does not exist yet. Used by
`trocar bench curriculum` to compare practice schedules, and by tests to fill a records database.

Model (docs/trainees.md): each learner has a skill s in [0, 1) per (task, metric) and per task for its
errors. A metric's value is expert + (novice - expert) * (1 - s), times log-normal noise; a forbidden
error happens with probability novice_p * (1 - s) + expert_p * s. One attempt raises every skill of
the task by  rate * talent * (1 - s) * readiness * spacing * focus:
- readiness = min over prerequisites of clip(mean skill there / 0.8, 0.2, 1): practising a task
  before its basics transfers little (skills build on each other);
- spacing = 0.75 ** (earlier attempts at this task in the same day): massed repetitions teach less
  (distributed practice beat massed practice: Moulton 2006);
- focus = 1.5 for the metric the attempt was told to work on, else 1.
The numbers are chosen, not fitted: novice/expert values follow the FLS targets in REFERENCES.md
(peg transfer novices ~2-3 min, experts ~30 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np


@dataclass(frozen=True)
class MetricModel:
    novice: float
    expert: float
    cv: float          # coefficient of variation of the log-normal noise
    unit: str
    label: str


@dataclass(frozen=True)
class TaskModel:
    metrics: dict[str, MetricModel]
    errors: dict[str, tuple[float, float]]   # kind -> (novice probability, expert probability)
    rate: float                              # skill gained per attempt at full readiness
    cutoff_s: float                          # time limit: a slower attempt is a time-out


TASKS: dict[str, TaskModel] = {
    "peg_transfer": TaskModel(
        {"completion_time": MetricModel(160.0, 32.0, 0.12, "s", "completion time")},
        {"drop_outside_view": (0.45, 0.01)}, rate=0.11, cutoff_s=300.0),
    "pattern_cut": TaskModel(
        {"completion_time": MetricModel(280.0, 72.0, 0.12, "s", "completion time"),
         "cut_deviation": MetricModel(0.008, 0.0010, 0.20, "m", "max distance of the cut from the line")},
        {}, rate=0.09, cutoff_s=300.0),
    "cholecystectomy": TaskModel(
        {"completion_time": MetricModel(1800.0, 700.0, 0.10, "s", "completion time"),
         "path_length": MetricModel(45.0, 15.0, 0.10, "m", "instrument path length"),
         "tissue_damage": MetricModel(0.50, 0.05, 0.25, "1", "damaged tissue fraction")},
        {}, rate=0.08, cutoff_s=3600.0),
}
PREREQ_READY = 0.8      # mean prerequisite skill at which a task is learnt at full rate
MIN_READINESS = 0.2
SPACING_DECAY = 0.75
FOCUS_GAIN = 1.5


@dataclass
class Learner:
    """One simulated trainee; `rng` drives both learning noise and result noise."""

    name: str
    prerequisites: dict[str, tuple[str, ...]]
    rng: np.random.Generator
    talent: float = 1.0
    skill: dict[tuple[str, str], float] = field(default_factory=dict)
    today: dict[str, int] = field(default_factory=dict)   # attempts per task in the current day

    @classmethod
    def new(cls, name: str, prerequisites: dict[str, tuple[str, ...]], seed: int,
            start_skill: float = 0.0) -> Learner:
        rng = np.random.default_rng(seed)
        talent = float(np.exp(rng.normal(0.0, 0.25)))
        me = cls(name, prerequisites, rng, talent)
        for task, model in TASKS.items():
            for m in [*model.metrics, "errors"]:
                me.skill[(task, m)] = start_skill
        return me

    def mean_skill(self, task: str) -> float:
        vals = [v for (t, _), v in self.skill.items() if t == task]
        return sum(vals) / len(vals)

    def new_day(self) -> None:
        self.today.clear()

    def attempt(self, task: str, *, seed: int, started: datetime, focus: str | None = None,
                version: str = "sim") -> dict:
        """Perform one attempt: returns its ProcedureResult dict, then learns from it."""
        model = TASKS[task]
        metrics, errors = {}, []
        duration = 0.0
        for m, mm in model.metrics.items():
            s = self.skill[(task, m)]
            value = (mm.expert + (mm.novice - mm.expert) * (1.0 - s)) * float(
                np.exp(self.rng.normal(-0.5 * mm.cv ** 2, mm.cv)))
            if m == "completion_time":
                value = min(value, model.cutoff_s)  # a time-out stops the clock at the cut-off
                duration = value
            metrics[m] = {"value": round(value, 6), "unit": mm.unit, "better": "lower", "label": mm.label}
        se = self.skill[(task, "errors")]
        for kind, (p_nov, p_exp) in model.errors.items():
            if self.rng.random() < p_nov * (1.0 - se) + p_exp * se:
                t = float(self.rng.uniform(0.0, duration))
                errors.append({"tick": int(t * 1000), "t": round(t, 3), "kind": kind,
                               "message": f"simulated {kind.replace('_', ' ')}"})
        status = "success" if duration < model.cutoff_s else "timeout"
        score = max(0.0, 100.0 * (model.cutoff_s - duration) / model.cutoff_s - 10.0 * len(errors))
        result = {
            "procedure": task, "version": version, "seed": seed, "status": status,
            "completed": status == "success", "passed": None, "score": round(score, 2),
            "duration_s": round(duration, 3), "started": started.isoformat(timespec="seconds"),
            "ended": (started + timedelta(seconds=duration)).isoformat(timespec="seconds"),
            "metrics": metrics, "errors": errors,
            "proficiency": {"rule": "simulated learner", "met": None},
        }
        self._learn(task, focus)
        return result

    def _learn(self, task: str, focus: str | None) -> None:
        ready = 1.0
        for p in self.prerequisites.get(task, ()):
            ready = min(ready, min(1.0, max(MIN_READINESS, self.mean_skill(p) / PREREQ_READY)))
        spacing = SPACING_DECAY ** self.today.get(task, 0)
        self.today[task] = self.today.get(task, 0) + 1
        rate = TASKS[task].rate * self.talent * ready * spacing
        for m in [*TASKS[task].metrics, "errors"]:
            focused = m == focus or (m == "errors" and focus in TASKS[task].errors)
            gain = FOCUS_GAIN if focused else 1.0
            s = self.skill[(task, m)]
            # a little noise so that learners do not move in lockstep; never negative learning
            self.skill[(task, m)] = min(0.999, s + max(0.0, rate * gain * (1.0 - s)
                                                      * float(self.rng.normal(1.0, 0.15))))


def expert_results(task: str, n: int, seed: int, started: datetime) -> list[dict]:
    """`n` attempts by experienced surgeons (skill about 0.95) at `task`, for a benchmark cohort."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        e = Learner.new(f"expert{i}", {}, int(rng.integers(1 << 31)), start_skill=0.0)
        for key in e.skill:
            e.skill[key] = float(np.clip(rng.normal(0.95, 0.02), 0.85, 0.99))
        out.append(e.attempt(task, seed=i, started=started + timedelta(minutes=30 * i)))
    return out
