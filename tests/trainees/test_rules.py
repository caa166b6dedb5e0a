"""Proficiency rules: FLS counting, benchmark bounds from an expert cohort, the rules file."""

from __future__ import annotations

import pytest
from trainees_helpers import result, run_cli

from sim.errors import UserError
from trainees.rules import Attempt, evaluate, expert_bounds, load_rules, parse_rules

RULES = load_rules()
PEG = RULES.task("peg_transfer")


def _attempts(times: list[float | None], drops: set[int] = frozenset()) -> list[Attempt]:
    """None: an interrupted (incomplete) attempt."""
    out = []
    for i, t in enumerate(times):
        r = result(t or 10.0, status="incomplete" if t is None else "success", drops=int(i in drops))
        when = f"2026-03-02T{i % 24:02d}:00:00+00:00"
        out.append(Attempt.from_result(r, id=i, trainee_id="T", started=when))
    return out


def test_peg_transfer_needs_2_consecutive_and_10_more_under_48_s_without_drops():
    assert PEG.targets[0].limit == 48.0 and PEG.consecutive == 2 and PEG.non_consecutive == 10
    alternating = [40.0, 60.0] * 12          # 12 met attempts, never two in a row
    st = evaluate(PEG, _attempts(alternating), PEG.targets)
    assert st.status == "training" and st.met == 12 and st.best_run == 1
    st = evaluate(PEG, _attempts([*alternating[:20], 40.0, 40.0, 60.0]), PEG.targets)  # 10 + a run of 2
    assert st.status == "proficient" and st.reached_index == 21 and st.met == 12
    eleven = [40.0, 60.0] * 9 + [40.0, 40.0]  # a run of 2 but 11 met in all
    assert evaluate(PEG, _attempts(eleven), PEG.targets).status == "training"


def test_a_drop_out_of_view_or_a_slow_time_misses_the_target():
    st = evaluate(PEG, _attempts([40.0] * 12, drops={5}), PEG.targets)
    assert st.met == 11 and st.status == "training"
    assert evaluate(PEG, _attempts([48.5] * 12), PEG.targets).met == 0


def test_interrupted_attempts_neither_count_nor_break_a_run():
    st = evaluate(PEG, _attempts([40.0, None, 40.0] + [40.0] * 10), PEG.targets)
    assert st.status == "proficient" and st.attempts == 12 and st.best_run == 12


def test_training_is_capped_at_80_attempts():
    st = evaluate(PEG, _attempts([60.0] * 80), PEG.targets)
    assert st.status == "capped" and "80" in st.reason
    assert evaluate(PEG, _attempts([60.0] * 79), PEG.targets).status == "training"


def test_benchmark_rule_uses_expert_mean_plus_2_sd_and_needs_enough_experts():
    chole = RULES.task("cholecystectomy")
    experts = []
    for i, t in enumerate([600.0, 700.0, 800.0, 700.0, 700.0]):
        experts.append(Attempt(id=i, trainee_id=f"E{i}", task="cholecystectomy",
                               started="2026-01-01T00:00:00+00:00", status="success",
                               metrics={"completion_time": t, "path_length": 10.0, "tissue_damage": 0.1}))
    bounds = {b.metric: b for b in expert_bounds(chole, experts)}
    # mean 700, sample SD sqrt(20000/4) = 70.71 -> 841.4
    assert bounds["completion_time"].limit == pytest.approx(700 + 2 * 70.7107, abs=1e-3)
    assert bounds["completion_time"].lower_is_better
    assert expert_bounds(chole, experts[:4]) is None
    assert evaluate(chole, [], None).status == "no_benchmark"


@pytest.mark.parametrize("text, message", [
    ("[[task]\nname = 'x'", "malformed TOML"),
    ("[schedule]\nmassed_block = 3\n", "no [[task]] entries"),
    ("[[task]]\nname = 'a'\nstyle = 'vibes'\n[task.targets]\nt = {max = 1}\n", "style must be one of"),
    ("[[task]]\nname = 'a'\n[task.targets]\nt = {under = 1}\n", "must be { max = X }"),
    ("[[task]]\nname = 'a'\nprerequisites = ['b']\n[task.targets]\nt = {max = 1}\n", "listed before it"),
    ("[[task]]\nname = 'a'\nconsecutive = -1\n[task.targets]\nt = {max = 1}\n", "integer >= 0"),
])
def test_a_bad_rules_file_is_one_clear_error(text, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("{", r"\{")):
        parse_rules(text, "lab.toml")


def test_cli_rejects_a_malformed_rules_file_and_writes_nothing(db, tmp_path):
    from trainees import records

    records.add_trainee(db, "T1")
    bad = tmp_path / "lab.toml"
    bad.write_text("[[task]]\nname = 'peg_transfer'\ntargets = {completion_time = {max = 48}\n")
    before = db.read_bytes()
    out = tmp_path / "r.html"
    for argv in (["next", "--trainee", "T1"], ["report", "--trainee", "T1", "--out", str(out)],
                 ["trainee", "show", "T1"]):
        r = run_cli(*argv, "--db", str(db), "--rules", str(bad))
        assert r.returncode == 2
        assert r.stderr.startswith(f"trocar: error: {bad}: malformed TOML") and r.stderr.count("\n") == 1
    assert db.read_bytes() == before and not out.exists()


def test_the_packaged_rules_list_the_fls_tasks_in_curriculum_order():
    assert [t.name for t in RULES.tasks] == ["peg_transfer", "pattern_cut", "cholecystectomy"]
    assert RULES.task("pattern_cut").targets[0].limit == 98.0
    assert RULES.task("cholecystectomy").style == "benchmark"
