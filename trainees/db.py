"""The records database file: where it lives, how it is opened (WAL, foreign keys, busy timeout, 0600)
and its versioned schema with forward migrations.

The schema version is SQLite's `PRAGMA user_version`. A fresh file runs every migration in order, so a
database made by an older trocar takes exactly the path a new one does. A file from a newer trocar is
refused before anything is written to it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sim.errors import UserError

# How long a writer waits for another process's transaction before giving up [ms]. A whole attempt is
# one short transaction, so seconds are plenty even on a loaded machine.
BUSY_TIMEOUT_MS = 30_000

# Each entry upgrades the schema from version i to i + 1. Never edit an entry once released: add one.
MIGRATIONS: tuple[str, ...] = (
    # v1: trainees, attempts and their metrics.
    """
    CREATE TABLE trainees (
        id      TEXT PRIMARY KEY,             -- pseudonymous id chosen by the lab
        name    TEXT,                         -- optional, dropped by exports on request
        cohort  TEXT,
        created TEXT NOT NULL                 -- ISO 8601 UTC
    );
    CREATE TABLE attempts (
        id               INTEGER PRIMARY KEY,
        trainee_id       TEXT NOT NULL REFERENCES trainees(id),
        procedure        TEXT NOT NULL,
        version          TEXT NOT NULL,
        started          TEXT NOT NULL,
        ended            TEXT,
        status           TEXT NOT NULL,       -- incomplete | success | failure | timeout
        recording_path   TEXT,
        recording_sha256 TEXT,
        result_json      TEXT,
        score            REAL,
        passed           INTEGER
    );
    CREATE INDEX attempts_trainee ON attempts(trainee_id, procedure, started);
    CREATE TABLE metrics (
        attempt_id INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        value      REAL,
        unit       TEXT,
        better     TEXT,
        PRIMARY KEY (attempt_id, name)
    );
    """,
    # v2: devices (serial + calibration profile hash) per attempt, proficiency status per task.
    """
    CREATE TABLE devices (
        id           INTEGER PRIMARY KEY,
        serial       TEXT NOT NULL,
        profile_hash TEXT NOT NULL DEFAULT '',   -- SHA-256 of the calibration profile file, '' if none
        UNIQUE (serial, profile_hash)
    );
    CREATE TABLE attempt_devices (
        attempt_id INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
        hand       INTEGER NOT NULL,
        device_id  INTEGER NOT NULL REFERENCES devices(id),
        PRIMARY KEY (attempt_id, hand)
    );
    CREATE TABLE proficiency (
        trainee_id TEXT NOT NULL REFERENCES trainees(id),
        task       TEXT NOT NULL,
        status     TEXT NOT NULL,             -- not_started | training | proficient | capped | ...
        met        INTEGER NOT NULL,          -- attempts that met the target
        attempts   INTEGER NOT NULL,          -- complete attempts counted
        reached    TEXT,                      -- when proficiency was reached (ISO 8601)
        rule       TEXT NOT NULL,             -- the rule's one-line description
        updated    TEXT NOT NULL,
        PRIMARY KEY (trainee_id, task)
    );
    ALTER TABLE attempts ADD COLUMN seed INTEGER;
    """,
    # v3: a random id for this database, so exported xAPI registrations stay unique across labs and
    # stable across exports.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('database_id', lower(hex(randomblob(16))));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def default_path() -> Path:
    """$XDG_DATA_HOME/trocar/records.sqlite3 (default ~/.local/share/trocar/records.sqlite3)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "trocar" / "records.sqlite3"


def _create_private(path: Path) -> None:
    """Create an empty file readable by its owner only; SQLite gives its -wal/-shm files the same
    permissions as the database file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to `target`, one migration per transaction; returns the old version."""
    old = schema_version(conn)
    for v in range(old, target):
        # executescript would commit on its own; run statements inside one explicit transaction so that
        # a crash mid-migration leaves the previous version intact.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) != v:  # another process migrated meanwhile
                conn.execute("ROLLBACK")
                continue
            for stmt in _statements(MIGRATIONS[v]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {v + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return old


def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def connect(db: str | os.PathLike | None = None, *, create: bool = True) -> sqlite3.Connection:
    """Open (and create or upgrade) the records database.

    `db` None means default_path(). With create=False a missing file is a UserError instead of a new
    database, so read-only commands never leave a file behind. A database whose schema is newer than
    this trocar's is refused (UserError) before anything is written.
    """
    path = Path(db) if db is not None else default_path()
    if not path.exists():
        if not create:
            raise UserError(f"no records database at {path} (add a trainee first: trocar trainee add ID)")
        _create_private(path)
    elif path.is_dir():
        raise UserError(f"{path} is a directory, not a records database")
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), so each public
    # operation is exactly one transaction and a second process waits on the busy timeout.
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        version = schema_version(conn)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path}: not a trocar records database ({exc})") from None
    if version > SCHEMA_VERSION:
        conn.close()
        raise UserError(f"{path}: database schema version {version} is newer than this trocar supports "
                        f"({SCHEMA_VERSION}); use a newer trocar")
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise UserError(f"{path}: cannot use write-ahead logging on this file system")
    # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9); only a power
    # loss may drop the last transactions, never corrupt the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    migrate(conn)
    return conn
