"""`trocar next`: proficiency-based progression, weakest metric, spacing; and the simulated learners'
comparison with round-robin curricula."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from trainees_helpers import result, run_cli

from trainees import records
from trainees.progression import advise, available_procedures
from trainees.rules import Attempt, load_rules, parse_rules

RULES = load_rules()
ALL = frozenset(t.procedure for t in RULES.tasks)
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
BOUNDS = {t.name: t.targets or None for t in RULES.tasks}


def _done(task: str, times: list[float], *, start: datetime, step_h: float = 24.0,
          **metrics) -> list[Attempt]:
    out = []
    for i, t in enumerate(times):
        when = start + timedelta(hours=step_h * i)
        r = result(t, procedure=task, **metrics)
        out.append(Attempt.from_result(r, id=i, trainee_id="T", started=when.isoformat(timespec="seconds")))
    return out


def test_a_new_trainee_starts_with_peg_transfer_and_later_tasks_wait_for_it():
    adv = advise(RULES, {}, BOUNDS, ALL, NOW)
    assert adv.task == "peg_transfer" and adv.not_before is None
    skipped = dict(adv.skipped)
    assert skipped["pattern_cut"] == "locked until proficient at peg_transfer"
    assert skipped["cholecystectomy"].startswith("no expert benchmark")


def test_tasks_without_a_procedure_are_skipped_with_a_reason():
    adv = advise(RULES, {}, BOUNDS, frozenset({"peg_transfer"}), NOW)
    assert adv.task == "peg_transfer"
    assert dict(adv.skipped)["pattern_cut"] == "no procedure 'pattern_cut' in this trocar yet"
    none = advise(RULES, {}, BOUNDS, frozenset(), NOW)
    assert none.task is None and "peg_transfer: no procedure 'peg_transfer'" in none.why


def test_after_peg_transfer_proficiency_the_weakest_pattern_cut_metric_is_the_focus():
    peg = _done("peg_transfer", [40.0] * 12, start=NOW - timedelta(days=20))
    cut = _done("pattern_cut", [80.0, 85.0, 90.0], start=NOW - timedelta(days=3), cut_deviation=0.005)
    adv = advise(RULES, {"peg_transfer": peg, "pattern_cut": cut}, BOUNDS, ALL, NOW)
    assert adv.task == "pattern_cut"
    assert dict(adv.skipped)["peg_transfer"] == "proficient"
    assert adv.settings == {"focus": "cut_deviation", "target": 0.002}
    assert "weakest: cut_deviation 0.005 vs <= 0.002 (x2.50)" in adv.why
    assert "prerequisites done" in adv.why


def test_drops_out_of_view_outrank_a_slow_time():
    peg = _done("peg_transfer", [70.0, 65.0], start=NOW - timedelta(days=2))
    peg[-1].error_kinds = ("drop_outside_view",)
    adv = advise(RULES, {"peg_transfer": peg}, BOUNDS, ALL, NOW)
    assert adv.settings["focus"] == "drop_outside_view" and "in 1 of the last 2" in adv.why


def test_massed_practice_is_spaced_out():
    recent = _done("peg_transfer", [60.0] * 3, start=NOW - timedelta(hours=1.5), step_h=0.5)
    adv = advise(RULES, {"peg_transfer": recent}, BOUNDS, ALL, NOW)
    assert adv.task == "peg_transfer"
    assert adv.not_before == (NOW - timedelta(hours=1.5) + timedelta(hours=4)).isoformat(timespec="seconds")
    assert "rest until" in adv.why
    two = advise(RULES, {"peg_transfer": recent[:2]}, BOUNDS, ALL, NOW)
    assert two.not_before is None


def test_with_two_open_tasks_the_massed_one_yields_to_the_other():
    rules = parse_rules("[[task]]\nname = 'a'\n[task.targets]\ncompletion_time = {max = 48}\n"
                        "[[task]]\nname = 'b'\n[task.targets]\ncompletion_time = {max = 48}\n")
    a = _done("a", [60.0] * 3, start=NOW - timedelta(hours=1), step_h=0.3)
    bounds = {t.name: t.targets for t in rules.tasks}
    adv = advise(rules, {"a": a}, bounds, frozenset({"a", "b"}), NOW)
    assert adv.task == "b" and adv.not_before is None and "a had 3 attempts" in adv.why
    later = advise(rules, {"a": a}, bounds, frozenset({"a", "b"}), NOW + timedelta(hours=5))
    assert later.task == "a"


def test_cli_next_names_a_task_and_why_or_skips_with_reasons(db):
    records.add_trainee(db, "T1")
    aid = records.begin_attempt(db, "T1", "peg_transfer", "1")
    records.finish_attempt(db, aid, result(55.0))
    r = run_cli("next", "--trainee", "T1", "--json", "--db", str(db))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    skipped = {s["task"]: s["reason"] for s in out["skipped"]}
    # the pattern cut needs peg transfer proficiency first (55 s is not: proficiency is 48 s)
    if "pattern_cut" in available_procedures():
        assert skipped["pattern_cut"] == "locked until proficient at peg_transfer"
    else:
        assert skipped["pattern_cut"] == "no procedure 'pattern_cut' in this trocar yet"
    if "peg_transfer" in available_procedures():
        assert out["task"] == "peg_transfer" and out["settings"]["focus"] == "completion_time"
    else:
        assert out["task"] is None and "peg_transfer" in skipped
    text = run_cli("next", "--trainee", "T1", "--db", str(db))
    assert text.returncode == 0 and text.stdout.startswith("next: ")


def test_simulated_learners_reach_proficiency_in_fewer_attempts_with_next():
    r = run_cli("bench", "curriculum", "--learners", "8", "--seed", "3", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["schedules"]
    assert s["next"]["reached"] == 8
    for baseline in ("round_robin", "round_robin_skip"):
        assert s["next"]["attempts_median"] < s[baseline]["attempts_median"]
        assert s[f"next_fewer_than_{baseline}"] >= 7
