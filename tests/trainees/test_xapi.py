"""xAPI export: cmi5 statement rules, names dropped on request, and a round trip through Ralph, a
real Learning Record Store on localhost."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
from trainees_helpers import load_json, result, run_cli

from trainees import records, xapi

DURATION = re.compile(r"^PT(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?$")


def _three_attempts(db, tmp_path):
    """A pass, a time-out and a killed session for one named trainee."""
    records.add_trainee(db, "R-042", name="Ann Example", cohort="PGY1")
    a = records.begin_attempt(db, "R-042", "peg_transfer", "1", started="2026-03-02T09:00:00Z")
    records.finish_attempt(db, a, result(41.25, path_length=2.1), ended="2026-03-02T09:00:42Z")
    b = records.begin_attempt(db, "R-042", "peg_transfer", "1", started="2026-03-02T10:00:00Z")
    records.finish_attempt(db, b, result(300.0, status="timeout", passed=False, score=0.0),
                           ended="2026-03-02T10:05:00Z")
    rec = tmp_path / "killed.trec"
    rec.write_bytes(b"partial")
    records.begin_attempt(db, "R-042", "peg_transfer", "1", started="2026-03-02T11:00:00Z", recording=rec)


def _by_registration(statements):
    out = defaultdict(list)
    for s in statements:
        out[s["context"]["registration"]].append(s)
    return list(out.values())


def test_statements_follow_cmi5_per_attempt(db, tmp_path):
    _three_attempts(db, tmp_path)
    out = tmp_path / "x.json"
    r = run_cli("export", "xapi", "--out", str(out), "--db", str(db))
    assert r.returncode == 0, r.stderr
    st = load_json(out)
    regs = _by_registration(st)
    verbs = [[s["verb"]["display"]["en-US"] for s in g] for g in regs]
    assert verbs == [["launched", "initialized", "completed", "passed", "terminated"],
                     ["launched", "initialized", "failed", "terminated"],
                     ["launched", "initialized", "abandoned"]]
    assert len({s["id"] for s in st}) == len(st)
    for s in st:
        verb = s["verb"]["display"]["en-US"]
        assert s["verb"]["id"].endswith("/" + verb)
        assert s["actor"]["account"]["name"] == "R-042" and s["actor"]["name"] == "Ann Example"
        assert {"id": xapi.CMI5_CATEGORY} in s["context"]["contextActivities"]["category"]
        res = s.get("result", {})
        assert ("score" in res) == (verb in ("passed", "failed"))  # score only on passed/failed
        if verb not in ("launched", "initialized"):
            assert DURATION.match(res["duration"])
    passed = regs[0][3]["result"]
    assert passed["success"] is True and passed["completion"] is True
    assert passed["duration"] == "PT41.25S"
    assert passed["score"]["raw"] == result(41.25)["score"]
    assert passed["score"]["scaled"] == round(result(41.25)["score"] / 100, 4)
    ext = passed["extensions"]
    assert ext["https://trocar.invalid/xapi/metrics/completion_time"] == 41.25
    assert ext["https://trocar.invalid/xapi/metrics/path_length"] == 2.1
    failed = regs[1][2]["result"]
    assert failed["success"] is False and failed["completion"] is False and failed["duration"] == "PT5M"


def test_a_metric_the_procedure_could_not_compute_is_left_out_not_nan(db, tmp_path):
    records.add_trainee(db, "T")
    aid = records.begin_attempt(db, "T", "peg_transfer", "1")
    records.finish_attempt(db, aid, json.dumps(result(40.0, path_length=float("nan"))))
    out = tmp_path / "x.json"
    assert run_cli("export", "xapi", "--out", str(out), "--db", str(db)).returncode == 0
    st = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the export"))
    ext = next(s for s in st if s["verb"]["display"]["en-US"] == "passed")["result"]["extensions"]
    assert list(ext) == ["https://trocar.invalid/xapi/metrics/completion_time"]


def test_drop_names_leaves_only_pseudonymous_ids(db, tmp_path):
    _three_attempts(db, tmp_path)
    out = tmp_path / "x.json"
    assert run_cli("export", "xapi", "--out", str(out), "--drop-names", "--db", str(db)).returncode == 0
    text = out.read_text()
    assert "Ann" not in text and "R-042" in text


def test_statements_reach_a_real_lrs_and_can_be_queried_back(db, tmp_path, lrs):
    url, user, password = lrs
    _three_attempts(db, tmp_path)
    out = tmp_path / "x.json"
    r = run_cli("export", "xapi", "--out", str(out), "--lrs", url, "--user", user, "--password", password,
                "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "accepted 12 statements" in r.stdout
    sent = load_json(out)
    for group in _by_registration(sent):
        reg = group[0]["context"]["registration"]
        back = xapi.query(url, user=user, password=password, registration=reg)
        assert sorted(s["id"] for s in back) == sorted(s["id"] for s in group)
        mine = {s["id"]: s for s in group}
        for s in back:
            assert s["verb"]["id"] == mine[s["id"]]["verb"]["id"]
            assert s.get("result", {}).get("score") == mine[s["id"]].get("result", {}).get("score")
    # exporting again is harmless: the LRS keeps one copy of each statement
    again = run_cli("export", "xapi", "--lrs", url, "--user", user, "--password", password, "--db", str(db))
    assert again.returncode == 0, again.stderr
    agent = {"objectType": "Agent", "account": sent[0]["actor"]["account"]}
    everything = xapi.query(url, user=user, password=password, agent=json.dumps(agent))
    assert len(everything) == len(sent)


def test_wrong_lrs_credentials_are_one_error_line(db, tmp_path, lrs):
    url, user, _ = lrs
    _three_attempts(db, tmp_path)
    r = run_cli("export", "xapi", "--lrs", url, "--user", user, "--password", "wrong", "--db", str(db))
    assert r.returncode == 2 and r.stderr.startswith("trocar: error: LRS at") and "credentials" in r.stderr
    assert r.stderr.count("\n") == 1
    nowhere = run_cli("export", "xapi", "--lrs", "http://127.0.0.1:9", "--user", "u", "--password", "p",
                      "--db", str(db))
    assert nowhere.returncode == 2 and "cannot reach the LRS" in nowhere.stderr
