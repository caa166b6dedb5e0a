"""The construct-validity table (benchmarks.procedure_cli.validity_table) on fixed attempt rows."""

import pytest

from benchmarks.procedure_cli import validity_table


def row(policy: str, time_s: float, economy: float, passed: bool) -> dict:
    metrics = {
        "completion_time": {"value": time_s, "unit": "s", "better": "lower", "label": "t"},
        "economy_of_motion": {"value": economy, "unit": "-", "better": "higher", "label": "e"},
    }
    return {
        "policy": policy,
        "seed": int(time_s),
        "result": {"metrics": metrics, "passed": passed, "duration_s": time_s},
    }


def test_metrics_separate_in_the_right_direction_and_pass_rates_are_counted():
    rows = [
        row("expert", 40, 0.7, True),
        row("expert", 42, 0.72, True),
        row("novice", 90, 0.3, False),
        row("novice", 100, 0.35, False),
    ]
    table, summary = validity_table(rows)
    t = {r["metric"]: r for r in table}
    # Completion time: means 41 vs 95, SDs 1.414 and 7.071, pooled sqrt((2 + 50) / 2) = 5.099.
    assert t["completion_time"]["cohens_d"] == pytest.approx(54 / 5.099, rel=1e-3)
    assert t["completion_time"]["separates"] and t["economy_of_motion"]["separates"]
    assert summary["all_separate"] and summary["proficiency_ok"]
    assert summary["expert_pass_rate"] == 1.0 and summary["novice_pass_rate"] == 0.0


def test_a_metric_that_favours_the_novice_does_not_separate():
    rows = [
        row("expert", 40, 0.3, True),
        row("expert", 42, 0.35, True),
        row("novice", 90, 0.7, True),
        row("novice", 100, 0.72, False),
    ]
    table, summary = validity_table(rows)
    t = {r["metric"]: r for r in table}
    assert t["economy_of_motion"]["cohens_d"] > 1 and not t["economy_of_motion"]["separates"]
    assert not summary["all_separate"] and not summary["proficiency_ok"]  # novice passes 50 %
