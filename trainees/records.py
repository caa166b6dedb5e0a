"""Trainees, devices and attempts in the records database: the operations the runtime and the CLI
call. Each public write is one transaction, so a reader (or a crash) never sees half an attempt.

The runtime calls, around one session:
    attempt = begin_attempt(db, trainee, procedure, version, devices=..., recording=path)
    ... the session runs; the recording grows ...
    finish_attempt(db, attempt, result_json, recording_path=path)
An attempt whose session never returns (Ctrl-C before the result, crash, kill -9) stays stored as
'incomplete' with its recording path; a result with status "incomplete" is stored the same way, with
its metrics so far.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sim.errors import UserError
from trainees.db import connect
from trainees.rules import Attempt, Rules, Status, attempt_meets, evaluate, load_rules, target_bounds

DbArg = sqlite3.Connection | str | os.PathLike | None
RESULT_STATUSES = ("success", "failure", "timeout", "incomplete")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(t: datetime | str) -> str:
    """ISO 8601 in UTC with an explicit offset, so stored times sort as strings."""
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"not an ISO 8601 date/time: {t!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _use(db: DbArg, *, create: bool = True) -> Iterator[sqlite3.Connection]:
    if isinstance(db, sqlite3.Connection):
        yield db
        return
    conn = connect(db, create=create)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so two writers queue on the busy
    timeout instead of one failing at its first write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes, None when it does not exist."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def device_for_serial(serial: str, hand: int = 0) -> dict:
    """A device entry for begin_attempt: the serial and the SHA-256 of its calibration profile file
    ('' when the device has no profile)."""
    from haptics.profile import profile_path

    return {"serial": serial, "profile_hash": file_sha256(profile_path(serial)) or "", "hand": hand}


# ---------------------------------------------------------------- trainees

def _check_id(trainee_id: str) -> None:
    if not trainee_id or not trainee_id.isprintable() or trainee_id.strip() != trainee_id:
        raise UserError(f"trainee id must be printable with no surrounding spaces, got {trainee_id!r}")


def add_trainee(db: DbArg, trainee_id: str, *, name: str | None = None, cohort: str | None = None) -> None:
    _check_id(trainee_id)
    with _use(db) as conn, transaction(conn):
        if conn.execute("SELECT 1 FROM trainees WHERE id = ?", (trainee_id,)).fetchone():
            raise UserError(f"trainee {trainee_id!r} already exists")
        conn.execute("INSERT INTO trainees (id, name, cohort, created) VALUES (?, ?, ?, ?)",
                     (trainee_id, name, cohort, now_iso()))


def get_trainee(conn: sqlite3.Connection, trainee_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM trainees WHERE id = ?", (trainee_id,)).fetchone()
    if row is None:
        raise UserError(f"unknown trainee {trainee_id!r} (see: trocar trainee list)")
    return row


def list_trainees(conn: sqlite3.Connection, cohort: str | None = None) -> list[sqlite3.Row]:
    if cohort is None:
        return conn.execute("SELECT * FROM trainees ORDER BY id").fetchall()
    rows = conn.execute("SELECT * FROM trainees WHERE cohort = ? ORDER BY id", (cohort,)).fetchall()
    if not rows:
        raise UserError(f"no trainees in cohort {cohort!r}")
    return rows


# ---------------------------------------------------------------- attempts

def _device_rows(devices: Iterable[dict | tuple]) -> list[tuple[int, str, str]]:
    out = []
    for i, d in enumerate(devices):
        if isinstance(d, dict):
            out.append((int(d.get("hand", i)), str(d["serial"]), str(d.get("profile_hash") or "")))
        else:
            serial, phash = d
            out.append((i, str(serial), str(phash or "")))
    return out


def begin_attempt(db: DbArg, trainee: str, procedure: str, version: str, *,
                  devices: Iterable[dict | tuple] = (), recording: str | os.PathLike | None = None,
                  seed: int | None = None, started: datetime | str | None = None) -> int:
    """Store an 'incomplete' attempt before the session starts; returns its id.

    devices: one {"serial", "profile_hash", "hand"} per driven tool (see device_for_serial).
    An unknown trainee is a UserError and nothing is written.
    """
    rows = _device_rows(devices)
    with _use(db) as conn, transaction(conn):
        get_trainee(conn, trainee)
        cur = conn.execute(
            "INSERT INTO attempts (trainee_id, procedure, version, started, status, recording_path, seed)"
            " VALUES (?, ?, ?, ?, 'incomplete', ?, ?)",
            (trainee, procedure, str(version), iso(started) if started else now_iso(),
             os.fspath(Path(recording).absolute()) if recording else None, seed))
        attempt_id = int(cur.lastrowid)
        for hand, serial, phash in rows:
            conn.execute("INSERT OR IGNORE INTO devices (serial, profile_hash) VALUES (?, ?)",
                         (serial, phash))
            (dev,) = conn.execute("SELECT id FROM devices WHERE serial = ? AND profile_hash = ?",
                                  (serial, phash)).fetchone()
            conn.execute("INSERT INTO attempt_devices (attempt_id, hand, device_id) VALUES (?, ?, ?)",
                         (attempt_id, hand, dev))
    return attempt_id


def _parse_result(result_json: str | dict) -> dict:
    try:
        r = json.loads(result_json) if isinstance(result_json, str | bytes) else dict(result_json)
    except (ValueError, TypeError) as exc:
        raise UserError(f"result is not JSON: {exc}") from None
    if not isinstance(r, dict) or not isinstance(r.get("metrics", {}), dict):
        raise UserError("result must be a JSON object with a 'metrics' object")
    if r.get("status") not in RESULT_STATUSES:
        raise UserError(f"result status must be one of {', '.join(RESULT_STATUSES)}, got {r.get('status')!r}")
    for name, m in r.get("metrics", {}).items():
        if not isinstance(m, dict) or not isinstance(m.get("value"), int | float | None):
            raise UserError(f"result metric {name!r} must be an object with a numeric 'value'")
    return r


def finish_attempt(db: DbArg, attempt_id: int, result_json: str | dict, *,
                   recording_path: str | os.PathLike | None = None, rules: Rules | None = None,
                   ended: datetime | str | None = None) -> Status | None:
    """Complete a begun attempt with its ProcedureResult JSON, in one transaction: the result, score,
    pass/fail, every metric, the recording's SHA-256, and the trainee's proficiency status for the
    task (under `rules`, default the packaged rules). Returns that status (None when no rule names the
    procedure). A bad result or an already finished attempt is a UserError; nothing changes then.
    """
    r = _parse_result(result_json)
    rules = rules or load_rules()
    with _use(db) as conn:
        row = conn.execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        if row is None:
            raise UserError(f"no attempt {attempt_id}")
        if r.get("procedure", row["procedure"]) != row["procedure"]:
            raise UserError(f"result is for {r.get('procedure')!r}, attempt {attempt_id} is "
                            f"{row['procedure']!r}")
        rec = recording_path or row["recording_path"]
        digest = file_sha256(rec) if rec else None  # hashed outside the lock: recordings can be large
        with transaction(conn):
            if conn.execute("SELECT result_json FROM attempts WHERE id = ?", (attempt_id,)).fetchone()[0]:
                raise UserError(f"attempt {attempt_id} is already finished")
            passed = r.get("passed")
            if passed is None:  # a result without its own verdict: judge it by the lab's rule
                passed = _meets_rule(conn, rules, r, row)
            conn.execute(
                "UPDATE attempts SET ended = ?, status = ?, recording_path = ?, recording_sha256 = ?, "
                "result_json = ?, score = ?, passed = ?, seed = COALESCE(?, seed) WHERE id = ?",
                (iso(ended or r.get("ended") or now_iso()), r["status"],
                 os.fspath(Path(rec).absolute()) if rec else None, digest,
                 json.dumps(r, sort_keys=True), r.get("score"),
                 None if passed is None else int(bool(passed)), r.get("seed"), attempt_id))
            conn.executemany(
                "INSERT INTO metrics (attempt_id, name, value, unit, better) VALUES (?, ?, ?, ?, ?)",
                [(attempt_id, k, m.get("value"), m.get("unit"), m.get("better"))
                 for k, m in r.get("metrics", {}).items()])
            statuses = refresh_proficiency(conn, rules, trainee=row["trainee_id"],
                                           procedure=row["procedure"])
    return next(iter(statuses.values()), None)


def _meets_rule(conn: sqlite3.Connection, rules: Rules, r: dict, row: sqlite3.Row) -> bool | None:
    rule = next((t for t in rules.tasks if t.procedure == row["procedure"]), None)
    if rule is None or r["status"] == "incomplete":
        return None
    experts = (query_attempts(conn, procedure=rule.procedure, cohort=rule.expert_cohort)
               if rule.style == "benchmark" else [])
    bounds = target_bounds(rule, experts)
    if bounds is None:
        return None
    a = Attempt.from_result({**r, "procedure": row["procedure"]}, id=row["id"], trainee_id=row["trainee_id"],
                            started=row["started"])
    return attempt_meets(rule, bounds, a)


def _attempt_from(row: sqlite3.Row, metrics: dict[str, tuple[float, str | None]]) -> Attempt:
    kinds: tuple[str, ...] = ()
    if row["result_json"]:
        kinds = tuple(e.get("kind", "") for e in json.loads(row["result_json"]).get("errors", [])
                      if isinstance(e, dict))
    return Attempt(
        id=row["id"], trainee_id=row["trainee_id"], task=row["procedure"], started=row["started"],
        status=row["status"], score=row["score"],
        passed=None if row["passed"] is None else bool(row["passed"]),
        metrics={k: v for k, (v, _) in metrics.items() if v is not None and math.isfinite(v)},
        error_kinds=kinds, higher_better=frozenset(k for k, (_, b) in metrics.items() if b == "higher"))


def query_attempts(conn: sqlite3.Connection, *, trainee: str | None = None, procedure: str | None = None,
                   since: str | None = None, passed: bool | None = None,
                   cohort: str | None = None) -> list[Attempt]:
    """Attempts (oldest first) with their metrics, filtered; a named trainee must exist."""
    where, args = [], []
    if trainee is not None:
        get_trainee(conn, trainee)
        where.append("a.trainee_id = ?")
        args.append(trainee)
    if procedure is not None:
        where.append("a.procedure = ?")
        args.append(procedure)
    if since is not None:
        where.append("a.started >= ?")
        args.append(iso(since))
    if passed is not None:
        where.append("a.passed = ?")
        args.append(int(passed))
    if cohort is not None:
        where.append("t.cohort = ?")
        args.append(cohort)
    sql = ("SELECT a.* FROM attempts a JOIN trainees t ON t.id = a.trainee_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.started, a.id")
    rows = conn.execute(sql, args).fetchall()
    metrics: dict[int, dict] = {r["id"]: {} for r in rows}
    if rows:
        lo, hi = min(metrics), max(metrics)
        for m in conn.execute("SELECT attempt_id, name, value, better FROM metrics "
                              "WHERE attempt_id BETWEEN ? AND ?", (lo, hi)):
            if m["attempt_id"] in metrics:
                metrics[m["attempt_id"]][m["name"]] = (m["value"], m["better"])
    return [_attempt_from(r, metrics[r["id"]]) for r in rows]


def attempt_devices(conn: sqlite3.Connection, attempt_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT ad.hand, d.serial, d.profile_hash FROM attempt_devices ad "
                        "JOIN devices d ON d.id = ad.device_id WHERE ad.attempt_id = ? ORDER BY ad.hand",
                        (attempt_id,)).fetchall()


def attempt_row(conn: sqlite3.Connection, attempt_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
    if row is None:
        raise UserError(f"no attempt {attempt_id}")
    return row


# ---------------------------------------------------------------- proficiency

def refresh_proficiency(conn: sqlite3.Connection, rules: Rules, *, trainee: str | None = None,
                        procedure: str | None = None) -> dict[tuple[str, str], Status]:
    """Re-evaluate (and store) proficiency status for the given trainee(s) and task(s) under `rules`.

    Call inside a transaction to make it part of one; benchmark rules read the expert cohort's
    attempts from the same database, so their bounds move as experts are added.
    """
    trainees = [trainee] if trainee else [r["id"] for r in conn.execute("SELECT id FROM trainees")]
    out = {}
    for rule in rules.tasks:
        if procedure is not None and rule.procedure != procedure:
            continue
        experts = (query_attempts(conn, procedure=rule.procedure, cohort=rule.expert_cohort)
                   if rule.style == "benchmark" else [])
        bounds = target_bounds(rule, experts)
        for tid in trainees:
            mine = query_attempts(conn, trainee=tid, procedure=rule.procedure)
            st = evaluate(rule, mine, bounds)
            out[(tid, rule.name)] = st
            reached = None
            if st.reached_index is not None:
                reached = [a for a in mine if a.complete][st.reached_index].started
            conn.execute(
                "INSERT INTO proficiency (trainee_id, task, status, met, attempts, reached, rule, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (trainee_id, task) DO UPDATE SET "
                "status = excluded.status, met = excluded.met, attempts = excluded.attempts, "
                "reached = excluded.reached, rule = excluded.rule, updated = excluded.updated",
                (tid, rule.name, st.status, st.met, st.attempts, reached, rule.describe(), now_iso()))
    return out


def evaluate_all(conn: sqlite3.Connection, rules: Rules, trainee: str) -> dict[str, Status]:
    """Every task's status for one trainee, stored as a side effect (one transaction)."""
    get_trainee(conn, trainee)
    with transaction(conn):
        got = refresh_proficiency(conn, rules, trainee=trainee)
    return {task: st for (_, task), st in got.items()}
