"""What `trocar run PROCEDURE --trainee ID` does with the records, through trainees.runlink."""

from __future__ import annotations

import argparse
import json

import pytest
from trainees_helpers import result

from sim.errors import UserError
from trainees import records
from trainees.db import connect
from trainees.runlink import add_run_args, begin_for_run, finish_for_run


def _args(db, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_args(p)
    return p.parse_args(["--records-db", str(db), *extra])


def test_a_finished_run_stores_its_result_and_a_cut_run_its_recording(db, tmp_path):
    records.add_trainee(db, "R-1")
    args = _args(db, "--trainee", "R-1")
    rec = tmp_path / "s1.trec"
    aid = begin_for_run(args, "peg_transfer", "1", recording=str(rec), seed=4, serials=["EMU-A", "EMU-B"])
    rec.write_bytes(b"recording")
    (tmp_path / "s1.trec.result.json").write_text(json.dumps(result(44.0)))
    st = finish_for_run(args, aid, str(rec))
    assert st.met == 1
    cut = tmp_path / "s2.trec"
    aid2 = begin_for_run(args, "peg_transfer", "1", recording=str(cut))
    cut.write_bytes(b"half")
    finish_for_run(args, aid2, str(cut))  # no result file: Ctrl-C before the procedure ended
    conn = records.connect(db)
    a, b = records.query_attempts(conn, trainee="R-1")
    assert (a.status, a.metrics) == ("success", {"completion_time": 44.0})
    assert [d["serial"] for d in records.attempt_devices(conn, aid)] == ["EMU-A", "EMU-B"]
    row = records.attempt_row(conn, aid2)
    assert b.status == "incomplete" and row["recording_path"] == str(cut) and row["recording_sha256"]


def test_without_trainee_nothing_is_stored_and_bad_input_fails_before_the_session(db, tmp_path):
    assert begin_for_run(_args(db), "peg_transfer", "1", recording="x.trec") is None
    assert not db.exists()
    records.add_trainee(db, "R-1")
    with pytest.raises(UserError, match="unknown trainee"):
        begin_for_run(_args(db, "--trainee", "R-2"), "peg_transfer", "1", recording="x.trec")
    bad = tmp_path / "r.toml"
    bad.write_text("not toml [")
    with pytest.raises(UserError, match="malformed TOML"):
        begin_for_run(_args(db, "--trainee", "R-1", "--rules", str(bad)), "peg_transfer", "1",
                      recording="x.trec")
    assert records.query_attempts(records.connect(db)) == []


def test_devices_are_stored_with_their_calibration_profile_hash(db, tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    profile = tmp_path / "cfg" / "trocar" / "devices" / "EMU-A.json"
    profile.parent.mkdir(parents=True)
    profile.write_text('{"serial": "EMU-A", "scale": 1.0}')
    records.add_trainee(db, "R-1")
    aid = begin_for_run(_args(db, "--trainee", "R-1"), "peg_transfer", "1",
                        recording=str(tmp_path / "s.trec"), serials=["EMU-A", "EMU-B"])
    got = {d["serial"]: d["profile_hash"] for d in records.attempt_devices(records.connect(db), aid)}
    assert got == {"EMU-A": hashlib.sha256(profile.read_bytes()).hexdigest(), "EMU-B": ""}


def test_trocar_run_with_a_trainee_stores_the_scored_attempt(db, tmp_path):
    """The whole path a user takes: `trocar run peg_transfer --trainee ID` plays (scripted hands, a
    2 s lockstep attempt), writes the result next to the recording and stores it as that trainee's."""
    from trainees_helpers import run_cli

    records.add_trainee(db, "R-9")
    rec = tmp_path / "a.trec"
    p = run_cli("run", "peg_transfer", "--policy", "expert", "--lockstep", "--seconds", "2",
                "--record", str(rec), "--trainee", "R-9", "--records-db", str(db))
    assert p.returncode == 1, p.stderr  # an attempt cut short (here by --seconds) exits 1
    assert "stored for trainee R-9" in p.stdout
    stored = json.loads((tmp_path / "a.trec.result.json").read_text())
    conn = connect(db)
    try:
        rows = conn.execute("SELECT status, recording_path FROM attempts WHERE trainee_id = 'R-9'").fetchall()
    finally:
        conn.close()
    assert [tuple(r) for r in rows] == [(stored["status"], str(rec))]
    assert stored["status"] == "incomplete"  # cut at 2 s, long before the end
    bad = run_cli("run", "peg_transfer", "--policy", "expert", "--lockstep", "--seconds", "2",
                  "--record", str(tmp_path / "b.trec"), "--trainee", "NOPE", "--records-db", str(db))
    assert bad.returncode == 2 and bad.stderr.strip().startswith("trocar: error: unknown trainee")
    assert not (tmp_path / "b.trec").exists()  # refused before the session started
    conn = connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 1
    finally:
        conn.close()
