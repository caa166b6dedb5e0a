"""Proficiency rules: loading the lab-editable TOML, deciding whether one attempt met a task's target,
and whether a series of attempts reached proficiency. Pure functions; the database is not touched here.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sim.errors import UserError

STYLES = ("fls", "benchmark")
DEFAULT_RULES = "rules.toml"  # packaged next to this module


@dataclass(frozen=True)
class Bound:
    """A metric's target: value <= max (lower is better) or value >= min (higher is better)."""

    metric: str
    limit: float
    lower_is_better: bool

    def met(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return value <= self.limit if self.lower_is_better else value >= self.limit

    def ratio(self, value: float) -> float:
        """How far from the target: > 1 means worse than the target, < 1 better (dimensionless)."""
        if self.lower_is_better:
            return value / self.limit if self.limit > 0 else (math.inf if value > 0 else 0.0)
        return self.limit / value if value > 0 else math.inf


@dataclass(frozen=True)
class TaskRule:
    name: str
    procedure: str
    label: str
    style: str
    prerequisites: tuple[str, ...]
    consecutive: int
    non_consecutive: int
    max_attempts: int
    forbidden_errors: tuple[str, ...]
    targets: tuple[Bound, ...] = ()           # fls
    expert_cohort: str = ""                   # benchmark
    min_expert_attempts: int = 5
    metrics: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.style == "fls":
            what = ", ".join(f"{b.metric} {'<=' if b.lower_is_better else '>='} {b.limit:g}"
                             for b in self.targets)
            if self.forbidden_errors:
                what += ", no " + "/".join(self.forbidden_errors)
        else:
            what = f"{', '.join(self.metrics)} within {self.expert_cohort} mean+2SD"
        return (f"{what}; {self.consecutive} consecutive + {self.non_consecutive} non-consecutive "
                f"(cap {self.max_attempts})")


@dataclass(frozen=True)
class Rules:
    tasks: tuple[TaskRule, ...]
    massed_window_hours: float = 4.0
    massed_block: int = 3
    plateau_window: int = 6
    iri_base: str = "https://trocar.invalid/xapi"
    source: str = ""

    def task(self, name: str) -> TaskRule:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UserError(f"unknown task {name!r}; tasks in {self.source}: "
                        f"{', '.join(t.name for t in self.tasks)}")


@dataclass
class Attempt:
    """What the rules need of one stored attempt (records.py builds these)."""

    id: int
    trainee_id: str
    task: str
    started: str
    status: str                              # incomplete | success | failure | timeout
    score: float | None = None
    passed: bool | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error_kinds: tuple[str, ...] = ()
    higher_better: frozenset[str] = frozenset()  # metrics whose result said "better": "higher"

    @property
    def complete(self) -> bool:
        return self.status != "incomplete"

    @classmethod
    def from_result(cls, result: dict, *, id: int, trainee_id: str, started: str) -> Attempt:
        """The rules' view of a ProcedureResult dict (as stored by records.finish_attempt)."""
        metrics = {k: float(m["value"]) for k, m in result.get("metrics", {}).items()
                   if isinstance(m.get("value"), int | float) and math.isfinite(m["value"])}
        return cls(id=id, trainee_id=trainee_id, task=result["procedure"], started=started,
                   status=result["status"], score=result.get("score"),
                   passed=result.get("passed"), metrics=metrics,
                   error_kinds=tuple(e.get("kind", "") for e in result.get("errors", [])),
                   higher_better=frozenset(k for k, m in result.get("metrics", {}).items()
                                           if m.get("better") == "higher"))


@dataclass(frozen=True)
class Status:
    """A trainee's standing on one task under its rule."""

    status: str          # not_started | training | proficient | capped | no_benchmark
    met: int             # complete attempts that met the target
    attempts: int        # complete attempts counted
    best_run: int        # longest run of consecutive met attempts
    reached_index: int | None  # index (into the complete attempts) where proficiency was reached
    reason: str


def _err(source: str, msg: str) -> UserError:
    return UserError(f"{source}: {msg}")


def _int(d: dict, key: str, default: int, source: str, minimum: int = 0) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise _err(source, f"{key} must be an integer >= {minimum}, got {v!r}")
    return v


def _parse_task(d: dict, source: str) -> TaskRule:
    if not isinstance(d.get("name"), str) or not d["name"]:
        raise _err(source, "every [[task]] needs a name")
    name = d["name"]
    where = f"{source}: task {name!r}"
    style = d.get("style", "fls")
    if style not in STYLES:
        raise UserError(f"{where}: style must be one of {', '.join(STYLES)}, got {style!r}")
    prereq = d.get("prerequisites", [])
    forb = d.get("forbidden_errors", [])
    if not all(isinstance(x, str) for x in [*prereq, *forb]):
        raise UserError(f"{where}: prerequisites and forbidden_errors must be lists of strings")
    targets = []
    for metric, spec in (d.get("targets") or {}).items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("max", "min"):
            raise UserError(f"{where}: target {metric!r} must be {{ max = X }} or {{ min = X }}")
        (kind, limit), = spec.items()
        if not isinstance(limit, int | float) or isinstance(limit, bool):
            raise UserError(f"{where}: target {metric!r} limit must be a number")
        targets.append(Bound(metric, float(limit), kind == "max"))
    metrics = tuple(d.get("metrics", []))
    if style == "fls" and not targets:
        raise UserError(f"{where}: an fls rule needs [task.targets]")
    if style == "benchmark" and (not metrics or not d.get("expert_cohort")):
        raise UserError(f"{where}: a benchmark rule needs metrics and expert_cohort")
    return TaskRule(
        name=name, procedure=str(d.get("procedure", name)), label=str(d.get("label", name)), style=style,
        prerequisites=tuple(prereq),
        consecutive=_int(d, "consecutive", 2, where), non_consecutive=_int(d, "non_consecutive", 10, where),
        max_attempts=_int(d, "max_attempts", 80, where, minimum=1), forbidden_errors=tuple(forb),
        targets=tuple(targets), expert_cohort=str(d.get("expert_cohort", "")),
        min_expert_attempts=_int(d, "min_expert_attempts", 5, where, minimum=2), metrics=metrics)


def parse_rules(text: str, source: str = "rules") -> Rules:
    """Rules from TOML text; any mistake is a UserError naming the file and the problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _err(source, f"malformed TOML: {exc}") from None
    raw_tasks = doc.get("task")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise _err(source, "no [[task]] entries")
    tasks = tuple(_parse_task(t, source) for t in raw_tasks)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise _err(source, "task names must be unique")
    for i, t in enumerate(tasks):
        for p in t.prerequisites:
            if p not in names[:i]:
                raise _err(source, f"task {t.name!r}: prerequisite {p!r} must be a task listed before it")
    sched = doc.get("schedule", {})
    window = sched.get("massed_window_hours", 4.0)
    if not isinstance(window, int | float) or window < 0:
        raise _err(source, "schedule.massed_window_hours must be a number >= 0")
    return Rules(tasks=tasks, massed_window_hours=float(window),
                 massed_block=_int(sched, "massed_block", 3, source, minimum=1),
                 plateau_window=_int(sched, "plateau_window", 6, source, minimum=3),
                 iri_base=str(doc.get("xapi", {}).get("iri_base", Rules.iri_base)).rstrip("/"),
                 source=source)


def load_rules(path: str | Path | None = None) -> Rules:
    """The rules in `path`, or the packaged default rules when None."""
    if path is None:
        text = resources.files("trainees").joinpath(DEFAULT_RULES).read_text(encoding="utf-8")
        return parse_rules(text, "default rules")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read rules {p}: {exc}") from None
    return parse_rules(text, str(p))


def expert_bounds(rule: TaskRule, expert_attempts: list[Attempt]) -> tuple[Bound, ...] | None:
    """Benchmark bounds (mean + 2 SD, or mean - 2 SD when higher is better) from the expert cohort's
    complete attempts; None when there are fewer than the rule's minimum."""
    done = [a for a in expert_attempts if a.status == "success"]
    if len(done) < rule.min_expert_attempts:
        return None
    bounds = []
    for m in rule.metrics:
        vals = [a.metrics[m] for a in done if m in a.metrics and math.isfinite(a.metrics[m])]
        if len(vals) < rule.min_expert_attempts:
            return None
        mean = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        lower = not any(m in a.higher_better for a in done)
        bounds.append(Bound(m, mean + 2 * sd if lower else mean - 2 * sd, lower))
    return tuple(bounds)


def target_bounds(rule: TaskRule, expert_attempts: list[Attempt]) -> tuple[Bound, ...] | None:
    """The bounds an attempt must meet: the rule's targets (fls) or the expert benchmark."""
    if rule.style == "fls":
        return rule.targets
    return expert_bounds(rule, expert_attempts)


def attempt_meets(rule: TaskRule, bounds: tuple[Bound, ...], a: Attempt) -> bool:
    """A complete, successful attempt with every bound met and no forbidden error."""
    if a.status != "success":
        return False
    if any(k in rule.forbidden_errors for k in a.error_kinds):
        return False
    return all(b.met(a.metrics.get(b.metric)) for b in bounds)


def evaluate(rule: TaskRule, attempts: list[Attempt], bounds: tuple[Bound, ...] | None) -> Status:
    """Proficiency over a trainee's attempts at one task, oldest first.

    Incomplete attempts (interrupted sessions) neither count nor break a run: the trainee did not get
    to finish them. Proficiency = a run of `consecutive` met attempts and `consecutive +
    non_consecutive` met attempts in all, reached within `max_attempts` complete attempts.
    """
    done = [a for a in attempts if a.complete]
    if bounds is None:
        return Status("no_benchmark", 0, len(done), 0, None,
                      f"fewer than {rule.min_expert_attempts} successful attempts by cohort "
                      f"{rule.expert_cohort!r}")
    if not done:
        return Status("not_started", 0, 0, 0, None, "no complete attempts yet")
    met = run = best = 0
    need = rule.consecutive + rule.non_consecutive
    for i, a in enumerate(done):
        if attempt_meets(rule, bounds, a):
            met += 1
            run += 1
            best = max(best, run)
        else:
            run = 0
        if best >= rule.consecutive and met >= need and i < rule.max_attempts:
            return Status("proficient", met, len(done), best, i,
                          f"target met {met} times incl. {best} in a row by attempt {i + 1}")
    if len(done) >= rule.max_attempts:
        return Status("capped", met, len(done), best, None,
                      f"not proficient after {rule.max_attempts} attempts: refer for remediation")
    missing_run = max(0, rule.consecutive - best)
    return Status("training", met, len(done), best, None,
                  f"target met {met}/{need} times, best run {best}/{rule.consecutive}"
                  + (f" (needs {missing_run} more in a row)" if missing_run else ""))
