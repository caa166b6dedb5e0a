"""`trocar bench curriculum`: simulated learners (trainees.learners) practise every task in the rules
under three schedules, and we count the attempts until they are proficient at all of them:

- next:        each attempt is what `trocar next` advises (progression, weakest-metric focus, spacing:
               when it says rest, the learner's day ends);
- round_robin: a fixed curriculum, the tasks in turn, every slot of every day;
- round_robin_skip: the same, but skipping tasks already proficient (a fairer baseline);
and two ablations of `next`, to show what each of its parts is worth:
- next_massed:   `next`'s task and focus, but no rest: the learner keeps practising all day;
- next_no_focus: `next`'s task and spacing, but no weakest-metric focus.

Each learner is the same (same seed) under every schedule. Proficiency is judged by the real rules
(trainees.rules.evaluate); the benchmark task's bounds come from a simulated expert cohort.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from datetime import UTC, datetime, timedelta

from trainees.learners import TASKS, Learner, expert_results
from trainees.progression import advise
from trainees.rules import Attempt, Rules, evaluate, load_rules, target_bounds

SCHEDULES = ("next", "round_robin", "round_robin_skip", "next_massed", "next_no_focus")
SLOT = timedelta(minutes=20)   # one attempt plus feedback
DAY_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
EXPERTS = 20                   # simulated experts whose attempts set a benchmark rule's bounds


def expert_bounds(rules: Rules, seed: int, n: int = EXPERTS) -> dict:
    out = {}
    for t in rules.tasks:
        experts = []
        if t.style == "benchmark":
            for i, r in enumerate(expert_results(t.procedure, n, seed, DAY_START - timedelta(days=30))):
                experts.append(Attempt.from_result(r, id=i, trainee_id=f"expert{i}", started=r["started"]))
        out[t.name] = target_bounds(t, experts)
    return out


def simulate(rules: Rules, schedule: str, seed: int, bounds: dict, *, per_day: int = 6,
             limit: int = 400, on_attempt=None) -> dict:
    """One learner under one schedule until proficient at every task, a task is capped, or `limit`
    attempts. on_attempt(task, focus, result) is called for each attempt (e.g. to store it)."""
    prereq = {t.procedure: tuple(rules.task(p).procedure for p in t.prerequisites) for t in rules.tasks}
    learner = Learner.new(f"{schedule}-{seed}", prereq, seed)
    attempts: dict[str, list[Attempt]] = {t.name: [] for t in rules.tasks}
    available = frozenset(TASKS)
    n = day = rr = 0
    while n < limit:
        learner.new_day()
        slot = DAY_START + timedelta(days=day)
        for _ in range(per_day):
            focus = None
            if schedule.startswith("next"):
                adv = advise(rules, attempts, bounds, available, slot)
                if adv.task is None:
                    return _outcome(rules, attempts, bounds, n, day + 1)
                if adv.not_before is not None and schedule != "next_massed":
                    break  # rest: the day ends here
                task = adv.task
                focus = None if schedule == "next_no_focus" else adv.settings.get("focus")
            else:
                names = [t.name for t in rules.tasks]
                if schedule == "round_robin_skip":
                    names = [t.name for t in rules.tasks
                             if evaluate(t, attempts[t.name], bounds[t.name]).status != "proficient"]
                task = names[rr % len(names)]
                rr += 1
            rule = rules.task(task)
            result = learner.attempt(rule.procedure, seed=n, started=slot, focus=focus)
            if on_attempt is not None:
                on_attempt(task, focus, result)
            attempts[task].append(Attempt.from_result(result, id=n, trainee_id=learner.name,
                                                      started=slot.isoformat(timespec="seconds")))
            n += 1
            slot += SLOT
            out = _outcome(rules, attempts, bounds, n, day + 1)
            if out["reached"] or out["capped"]:
                return out
        day += 1
    return _outcome(rules, attempts, bounds, n, day)


def _outcome(rules: Rules, attempts: dict, bounds: dict, n: int, days: int) -> dict:
    st = {t.name: evaluate(t, attempts[t.name], bounds[t.name]).status for t in rules.tasks}
    return {"attempts": n, "days": days, "reached": all(s == "proficient" for s in st.values()),
            "capped": any(s == "capped" for s in st.values()),
            "per_task": {k: len(v) for k, v in attempts.items()}}


def compare(rules: Rules, learners: int, seed: int = 0, per_day: int = 6, limit: int = 400) -> dict:
    bounds = expert_bounds(rules, seed + 10_000)
    runs = {s: [simulate(rules, s, seed + i, bounds, per_day=per_day, limit=limit) for i in range(learners)]
            for s in SCHEDULES}
    summary = {}
    for s, rs in runs.items():
        done = [r for r in rs if r["reached"]]
        summary[s] = {
            "reached": len(done), "capped": sum(r["capped"] for r in rs),
            "attempts_median": statistics.median(r["attempts"] for r in done) if done else None,
            "attempts_mean": round(statistics.fmean(r["attempts"] for r in done), 1) if done else None,
            "days_median": statistics.median(r["days"] for r in done) if done else None,
            "per_task_mean": {t.name: round(statistics.fmean(r["per_task"][t.name] for r in rs), 1)
                              for t in rules.tasks},
        }
    # paired: the same learner under `next` and under each round robin (unreached counts as `limit`)
    for s in SCHEDULES[1:3]:
        a = [r["attempts"] if r["reached"] else limit for r in runs["next"]]
        b = [r["attempts"] if r["reached"] else limit for r in runs[s]]
        summary[f"next_fewer_than_{s}"] = sum(x < y for x, y in zip(a, b, strict=True))
    return {"bench": "curriculum", "learners": learners, "seed": seed, "per_day": per_day,
            "limit": limit, "tasks": [t.name for t in rules.tasks], "schedules": summary}


def populate(db, rules: Rules, learners: int, *, seed: int = 0, schedule: str = "next",
             cohort: str | None = None, per_day: int = 6, limit: int = 400) -> dict:
    """Store simulated learners (trainees `<cohort>-<i>`) and an expert cohort in a records database
    through the public records API, as real sessions would; returns {trainee: simulate() outcome}.
    The experts (the same for every seed's schedules) are stored once."""
    from trainees import records

    cohort = cohort or f"sim-{schedule}"
    conn = db if isinstance(db, sqlite3.Connection) else records.connect(db)
    have = {r["id"] for r in records.list_trainees(conn)}
    bounds = expert_bounds(rules, seed + 10_000)
    for t in rules.tasks:
        if t.style != "benchmark" or f"{t.expert_cohort}-0" in have:
            continue
        for i, r in enumerate(expert_results(t.procedure, EXPERTS, seed + 10_000,
                                             DAY_START - timedelta(days=30))):
            tid = f"{t.expert_cohort}-{i}"
            records.add_trainee(conn, tid, cohort=t.expert_cohort)
            have.add(tid)
            _store(conn, rules, tid, r)
    out = {}
    for i in range(learners):
        tid = f"{cohort}-{i}"
        if tid not in have:
            records.add_trainee(conn, tid, cohort=cohort)
        out[tid] = simulate(rules, schedule, seed + i, bounds, per_day=per_day, limit=limit,
                            on_attempt=lambda task, focus, r, tid=tid: _store(conn, rules, tid, r))
    return out


def _store(conn, rules: Rules, trainee: str, result: dict) -> int:
    from trainees import records

    aid = records.begin_attempt(conn, trainee, result["procedure"], result["version"],
                                seed=result["seed"], started=result["started"])
    records.finish_attempt(conn, aid, result, rules=rules, ended=result["ended"])
    return aid


def run(args) -> int:
    from sim.errors import UserError

    if args.learners < 1:
        raise UserError("--learners must be >= 1")
    if args.per_day < 1:
        raise UserError("--per-day must be >= 1")
    rules = load_rules(args.rules)
    if args.db:
        for schedule in SCHEDULES[:3]:
            populate(args.db, rules, args.learners, seed=args.seed, schedule=schedule,
                     per_day=args.per_day, limit=args.limit)
    out = compare(rules, args.learners, args.seed, args.per_day, args.limit)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.learners} simulated learners, {args.per_day} attempts/day at most; "
          f"attempts until proficient at {', '.join(out['tasks'])}:")
    for s in SCHEDULES:
        r = out["schedules"][s]
        print(f"  {s:17s} reached {r['reached']}/{args.learners}  median attempts {r['attempts_median']}  "
              f"mean {r['attempts_mean']}  median days {r['days_median']}  capped {r['capped']}")
    return 0
