"""The next exercise: which task a trainee should practise next, with which focus, and why.

The algorithm (docs/trainees.md has the long form):
1. Walk the tasks in curriculum order (the rules file's order). Skip, with a reason, tasks whose
   procedure this trocar does not have yet, tasks without an expert benchmark, tasks already proficient
   and tasks capped at their attempt limit. A task whose prerequisites are not all proficient is locked
   (proficiency-based progression: finish the prerequisites first).
2. Spacing: the trainee's attempts at a task within the last `massed_window_hours` form a block. A task
   whose block already holds `massed_block` attempts is "massed": another open task is preferred, and
   when none is open the advice is to rest until the block's window has passed (distributed practice
   beat massed practice in RCTs: Moulton 2006).
3. Of the open, unmassed tasks the earliest in the curriculum wins (it unlocks the others).
4. Focus: the task's weakest metric relative to its target or expert benchmark, from the median of the
   last three complete attempts (a forbidden error in any of them counts as weakest of all).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from trainees.rules import Attempt, Bound, Rules, Status, TaskRule, evaluate

RECENT = 3  # complete attempts whose median stands for "how the trainee does now"


@dataclass
class Advice:
    task: str | None                    # None: nothing to practise now (all done, or all blocked)
    why: str                            # one line
    settings: dict = field(default_factory=dict)   # {"focus": metric, "target": ..., ...}
    not_before: str | None = None       # ISO 8601: rest until then (spacing), else None
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (task, reason)
    statuses: dict[str, Status] = field(default_factory=dict)


def available_procedures() -> frozenset[str]:
    """Procedure names this trocar can run (empty until the procedures registry exists)."""
    try:
        from procedures.registry import PROCEDURES
    except ImportError:
        return frozenset()
    return frozenset(PROCEDURES)


def weakest(rule: TaskRule, bounds: tuple[Bound, ...], attempts: list[Attempt]) -> tuple[str, str, float]:
    """(metric or error kind, one-line description, how far off: > 1 worse than the target)."""
    recent = [a for a in attempts if a.complete][-RECENT:]
    if not recent:
        return ("", "no attempts yet", float("inf"))
    for kind in rule.forbidden_errors:
        n = sum(kind in a.error_kinds for a in recent)
        if n:
            return (kind, f"{kind} in {n} of the last {len(recent)}", float("inf"))
    worst = ("", "", -1.0)
    for b in bounds:
        vals = [a.metrics[b.metric] for a in recent if b.metric in a.metrics]
        if not vals:
            return (b.metric, f"{b.metric} not measured yet", float("inf"))
        med = statistics.median(vals)
        r = b.ratio(med)
        if r > worst[2]:
            op = "<=" if b.lower_is_better else ">="
            worst = (b.metric, f"{b.metric} {med:.3g} vs {op} {b.limit:.3g} (x{r:.2f})", r)
    return worst


def _block(attempts: list[Attempt], now: datetime, window_h: float) -> tuple[int, datetime | None]:
    """Attempts in the current massed block (started within the window) and the oldest one's start."""
    start = now - timedelta(hours=window_h)
    inside = [datetime.fromisoformat(a.started) for a in attempts
              if start <= datetime.fromisoformat(a.started) <= now]
    return len(inside), (min(inside) if inside else None)


def advise(rules: Rules, attempts: dict[str, list[Attempt]], bounds: dict[str, tuple[Bound, ...] | None],
           available: frozenset[str] | set[str], now: datetime | None = None) -> Advice:
    """The next exercise for one trainee. attempts[task]: that trainee's attempts, oldest first;
    bounds[task]: target_bounds(...) (None: no benchmark yet)."""
    now = now or datetime.now(UTC)
    statuses = {t.name: evaluate(t, attempts.get(t.name, []), bounds.get(t.name)) for t in rules.tasks}
    skipped: list[tuple[str, str]] = []
    open_tasks: list[TaskRule] = []
    for t in rules.tasks:
        st = statuses[t.name]
        if st.status == "proficient":
            skipped.append((t.name, "proficient"))
        elif t.procedure not in available:
            skipped.append((t.name, f"no procedure {t.procedure!r} in this trocar yet"))
        elif st.status == "no_benchmark":
            skipped.append((t.name, f"no expert benchmark: {st.reason}"))
        elif st.status == "capped":
            skipped.append((t.name, st.reason))
        elif missing := [p for p in t.prerequisites if statuses[p].status != "proficient"]:
            skipped.append((t.name, f"locked until proficient at {', '.join(missing)}"))
        else:
            open_tasks.append(t)
    if not open_tasks:
        if all(statuses[t.name].status == "proficient" for t in rules.tasks):
            why = "proficient at every task; keep skills fresh with any task"
        else:
            why = "nothing to practise now: " + "; ".join(f"{n}: {r}" for n, r in skipped
                                                          if r != "proficient")
        return Advice(None, why, skipped=skipped, statuses=statuses)

    blocks = {t.name: _block(attempts.get(t.name, []), now, rules.massed_window_hours) for t in open_tasks}
    fresh = [t for t in open_tasks if blocks[t.name][0] < rules.massed_block]
    rest_until = None
    if fresh:
        pick = fresh[0]
    else:
        pick = open_tasks[0]
        rest_until = blocks[pick.name][1] + timedelta(hours=rules.massed_window_hours)
    b = bounds.get(pick.name) or ()
    metric, focus_text, _ = weakest(pick, b, attempts.get(pick.name, []))
    st = statuses[pick.name]
    parts = [f"{pick.name}: " + ("prerequisites done" if pick.prerequisites else "first in the curriculum"),
             st.reason, f"weakest: {focus_text}"]
    n_block = blocks[pick.name][0]
    if rest_until is not None:
        parts.append(f"{n_block} attempts in the last {rules.massed_window_hours:g} h: rest until "
                     f"{rest_until.strftime('%Y-%m-%d %H:%M')} UTC (spaced practice)")
    elif pick is not open_tasks[0]:
        parts.append(f"{open_tasks[0].name} had {blocks[open_tasks[0].name][0]} attempts in the last "
                     f"{rules.massed_window_hours:g} h (spaced practice)")
    settings = {"focus": metric} if metric else {}
    for bd in b:
        if bd.metric == metric:
            settings["target"] = round(bd.limit, 6)
    return Advice(pick.name, "; ".join(parts), settings,
                  rest_until.isoformat(timespec="seconds") if rest_until else None, skipped, statuses)


def advise_from_db(conn, rules: Rules, trainee: str, *, available: frozenset[str] | None = None,
                   now: datetime | None = None) -> Advice:
    """advise() for a trainee in the records database (statuses are stored as a side effect)."""
    from trainees.records import evaluate_all, query_attempts
    from trainees.rules import target_bounds

    evaluate_all(conn, rules, trainee)
    attempts, bounds = {}, {}
    for t in rules.tasks:
        attempts[t.name] = query_attempts(conn, trainee=trainee, procedure=t.procedure)
        experts = (query_attempts(conn, procedure=t.procedure, cohort=t.expert_cohort)
                   if t.style == "benchmark" else [])
        bounds[t.name] = target_bounds(t, experts)
    return advise(rules, attempts, bounds, available_procedures() if available is None else available, now)
