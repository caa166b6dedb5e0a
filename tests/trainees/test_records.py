"""The records database: a real SQLite file, real processes (kill -9, two writers), the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest
from trainees_helpers import ROOT, result, run_cli

from sim.errors import UserError
from trainees import db as dbmod
from trainees import records


def _file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_trainee_creates_an_owner_only_database_in_the_data_dir(tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    r = run_cli("trainee", "add", "R-017", "--cohort", "PGY1", env=env)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "data" / "trocar" / "records.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = run_cli("trainee", "list", env=env)
    assert "R-017" in listed.stdout and "PGY1" in listed.stdout
    shown = run_cli("trainee", "show", "R-017", env=env)
    assert shown.returncode == 0 and "R-017" in shown.stdout
    assert [ln.split("│")[2].strip() for ln in shown.stdout.splitlines() if ln.startswith("│ peg_transfer")] \
        == ["not_started"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == dbmod.SCHEMA_VERSION


def test_an_attempt_stores_result_metrics_devices_recording_hash_and_status(db, tmp_path):
    records.add_trainee(db, "T1", name="Ann Example", cohort="PGY1")
    rec = tmp_path / "session.trec"
    rec.write_bytes(b"TREC" + bytes(range(256)) * 40)
    aid = records.begin_attempt(db, "T1", "peg_transfer", "1", recording=rec,
                                devices=[{"serial": "EMU-1", "profile_hash": "ab" * 32, "hand": 0},
                                         {"serial": "EMU-2", "profile_hash": "", "hand": 1}])
    conn = records.connect(db)
    assert records.attempt_row(conn, aid)["status"] == "incomplete"
    res = result(41.5, path_length=2.5)
    st = records.finish_attempt(conn, aid, json.dumps(res), recording_path=rec)
    row = records.attempt_row(conn, aid)
    assert row["status"] == "success" and row["passed"] == 1 and row["score"] == res["score"]
    assert row["recording_sha256"] == hashlib.sha256(rec.read_bytes()).hexdigest()
    assert json.loads(row["result_json"]) == res
    got = {m["name"]: (m["value"], m["unit"])
           for m in conn.execute("SELECT * FROM metrics WHERE attempt_id=?", (aid,))}
    assert got == {"completion_time": (41.5, "s"), "path_length": (2.5, "m")}
    devices = [(d["hand"], d["serial"]) for d in records.attempt_devices(conn, aid)]
    assert devices == [(0, "EMU-1"), (1, "EMU-2")]
    assert st.status == "training" and st.met == 1
    prof = conn.execute("SELECT * FROM proficiency WHERE trainee_id='T1' AND task='peg_transfer'").fetchone()
    assert prof["status"] == "training" and prof["met"] == 1 and prof["attempts"] == 1


def test_an_interrupted_session_is_stored_as_incomplete_with_its_recording(db, tmp_path):
    records.add_trainee(db, "T1")
    rec = tmp_path / "cut.trec"
    rec.write_bytes(b"partial")
    aid = records.begin_attempt(db, "T1", "peg_transfer", "1", recording=rec)
    records.finish_attempt(db, aid, result(12.0, status="incomplete", passed=False))
    conn = records.connect(db)
    row = records.attempt_row(conn, aid)
    assert row["status"] == "incomplete" and row["recording_path"] == str(rec)
    assert row["recording_sha256"] == hashlib.sha256(b"partial").hexdigest()
    # it neither counts towards proficiency nor breaks a run
    assert records.evaluate_all(conn, records.load_rules(), "T1")["peg_transfer"].attempts == 0


def test_a_bad_result_or_a_second_finish_changes_nothing(db):
    records.add_trainee(db, "T1")
    aid = records.begin_attempt(db, "T1", "peg_transfer", "1")
    for bad in ("{not json", json.dumps({"status": "won", "metrics": {}}),
                json.dumps({**result(), "metrics": {"completion_time": {"value": "fast"}}}),
                json.dumps({**result(), "procedure": "pattern_cut"})):
        with pytest.raises(UserError):
            records.finish_attempt(db, aid, bad)
    conn = records.connect(db)
    assert records.attempt_row(conn, aid)["status"] == "incomplete"
    assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
    records.finish_attempt(conn, aid, result(40.0))
    before = conn.execute("SELECT result_json FROM attempts WHERE id=?", (aid,)).fetchone()[0]
    with pytest.raises(UserError, match="already finished"):
        records.finish_attempt(conn, aid, result(99.0))
    assert conn.execute("SELECT result_json FROM attempts WHERE id=?", (aid,)).fetchone()[0] == before
    assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 1


@pytest.mark.parametrize("argv", [
    ["trainee", "show", "nobody"],
    ["attempts", "--trainee", "nobody"],
    ["next", "--trainee", "nobody"],
    ["report", "--trainee", "nobody", "--out", "{out}"],
    ["export", "xapi", "--trainee", "nobody", "--out", "{out}"],
])
def test_unknown_trainee_is_one_error_line_and_changes_nothing(db, tmp_path, argv):
    records.add_trainee(db, "T1")
    aid = records.begin_attempt(db, "T1", "peg_transfer", "1")
    records.finish_attempt(db, aid, result(40.0))
    before = _file_digest(db)
    out = tmp_path / "out.file"
    r = run_cli(*[a.replace("{out}", str(out)) for a in argv], "--db", str(db))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("trocar: error: unknown trainee 'nobody'")
    assert not out.exists()
    assert _file_digest(db) == before


def test_a_database_from_a_newer_trocar_is_refused_untouched(db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {dbmod.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = _file_digest(db)
    r = run_cli("trainee", "add", "T9", "--db", str(db))
    assert r.returncode == 2 and "newer than this trocar supports" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _file_digest(db) == before
    assert not (db.parent / (db.name + "-wal")).exists()  # not even switched to WAL


def test_a_version_1_database_is_upgraded_and_keeps_its_records(db):
    conn = sqlite3.connect(db, isolation_level=None)
    for stmt in dbmod._statements(dbmod.MIGRATIONS[0]):  # exactly what trocar's first schema wrote
        conn.execute(stmt)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO trainees VALUES ('OLD1', 'Old Name', 'c2025', '2025-01-01T00:00:00+00:00')")
    conn.execute("INSERT INTO attempts (trainee_id, procedure, version, started, ended, status, result_json,"
                 " score, passed) VALUES ('OLD1', 'peg_transfer', '1', '2025-01-02T00:00:00+00:00',"
                 " '2025-01-02T00:01:00+00:00', 'success', ?, 84.0, 1)", (json.dumps(result(40.0)),))
    conn.execute("INSERT INTO metrics VALUES (1, 'completion_time', 40.0, 's', 'lower')")
    conn.close()

    up = records.connect(db)
    assert dbmod.schema_version(up) == dbmod.SCHEMA_VERSION
    [a] = records.query_attempts(up, trainee="OLD1")
    assert a.metrics == {"completion_time": 40.0} and a.score == 84.0
    assert up.execute("SELECT value FROM meta WHERE key='database_id'").fetchone()[0]
    aid = records.begin_attempt(up, "OLD1", "peg_transfer", "1", devices=[("EMU-9", "")])
    records.finish_attempt(up, aid, result(39.0))
    assert records.evaluate_all(up, records.load_rules(), "OLD1")["peg_transfer"].best_run == 2


WRITER = r"""
import json, sys, time
from trainees import records
db, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = {"procedure": "peg_transfer", "version": "1", "status": "success", "score": 50.0, "passed": False,
       "metrics": {f"m{i:02d}": {"value": float(i), "unit": "s"} for i in range(20)}, "errors": []}
conn = records.connect(db)
for i in range(n):
    aid = records.begin_attempt(conn, who, "peg_transfer", "1", recording=f"/tmp/{who}-{i}.trec")
    print("begun", aid, flush=True)
    records.finish_attempt(conn, aid, json.dumps(res))
if n == 0:
    aid = records.begin_attempt(conn, who, "peg_transfer", "1", recording="/tmp/killed.trec")
    print("begun", aid, flush=True)
    time.sleep(60)
"""


def _writer(db, who: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), who, str(n)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _consistent(conn: sqlite3.Connection) -> tuple[int, int]:
    """(complete, incomplete) attempts; asserts that none is half stored."""
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done = half = 0
    for row in conn.execute("SELECT a.id, a.status, a.result_json, COUNT(m.name) AS n FROM attempts a "
                            "LEFT JOIN metrics m ON m.attempt_id = a.id GROUP BY a.id"):
        if row["status"] == "incomplete":
            assert row["result_json"] is None and row["n"] == 0
            half += 1
        else:
            assert row["result_json"] is not None and row["n"] == 20
            done += 1
    return done, half


def test_kill_9_leaves_the_attempt_incomplete_and_no_half_rows(db):
    records.add_trainee(db, "K1")
    p = _writer(db, "K1", 0)  # begins an attempt, then is killed mid-session
    assert p.stdout.readline().startswith("begun")
    p.send_signal(signal.SIGKILL)
    p.wait()
    q = _writer(db, "K1", 10_000)  # killed at an arbitrary point of a stream of begin/finish
    for _ in range(15):
        assert q.stdout.readline().startswith("begun")
    time.sleep(0.05)
    q.send_signal(signal.SIGKILL)
    q.wait()
    conn = records.connect(db)
    done, half = _consistent(conn)
    assert done >= 14 and 1 <= half <= 2
    first = records.attempt_row(conn, 1)
    assert first["status"] == "incomplete" and first["recording_path"] == "/tmp/killed.trec"


def test_two_processes_writing_at_once_lose_nothing(db):
    records.add_trainee(db, "A")
    records.add_trainee(db, "B")
    procs = [_writer(db, who, 40) for who in ("A", "B")]
    for p in procs:
        p.stdout.read()
        assert p.wait(timeout=120) == 0
    conn = records.connect(db)
    assert _consistent(conn) == (80, 0)
    assert [len(records.query_attempts(conn, trainee=t)) for t in ("A", "B")] == [40, 40]


def test_attempts_filters_by_trainee_task_date_and_verdict(db):
    records.add_trainee(db, "T1")
    records.add_trainee(db, "T2")
    for who, t, day in (("T1", 40.0, 2), ("T1", 60.0, 3), ("T1", 41.0, 9), ("T2", 39.0, 9)):
        aid = records.begin_attempt(db, who, "peg_transfer", "1", started=f"2026-03-{day:02d}T09:00:00Z")
        records.finish_attempt(db, aid, result(t))
    records.begin_attempt(db, "T1", "peg_transfer", "1", started="2026-03-10T09:00:00Z")  # incomplete

    def titles(*argv: str) -> str:
        r = run_cli("attempts", *argv, "--db", str(db))
        assert r.returncode == 0, r.stderr
        return r.stdout.split("\n")[0].strip()

    assert titles() == "attempts (5)"
    assert titles("--trainee", "T1") == "attempts (4)"
    assert titles("--trainee", "T1", "--passed") == "attempts (2)"
    assert titles("--trainee", "T1", "--failed") == "attempts (1)"
    assert titles("--since", "2026-03-05", "--task", "peg_transfer") == "attempts (3)"
    assert titles("--task", "pattern_cut") == "attempts (0)"
