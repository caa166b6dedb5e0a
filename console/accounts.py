"""Console accounts: instructors and trainees, their password hashes, login sessions and CSRF tokens.

Stored in their own SQLite file (`console.sqlite3` next to the records database by default), 0600:
the records schema stays the records' own. Passwords are hashed with scrypt (memory-hard: n=2**14,
r=8, p=1 uses 16 MiB per hash, OWASP's minimum), a random 16-byte salt each. A login session is a
random 32-byte token (the cookie); the database keeps only its SHA-256, so a leaked database file
gives no live session. Sessions expire SESSION_S after login. Each session has its own CSRF token,
which every form and state-changing request must echo.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sim.errors import UserError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_S = 8 * 3600  # a login lasts one working day [s]
ROLES = ("instructor", "trainee")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,                -- instructor | trainee
    trainee_id TEXT,                         -- a trainee sees only this id's records
    salt       BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha  BLOB PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    expires    REAL NOT NULL                 -- unix time
);
"""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    trainee_id: str | None
    csrf: str = ""

    @property
    def instructor(self) -> bool:
        return self.role == "instructor"


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "trocar" / "console.sqlite3"


def connect(path: str | os.PathLike | None = None) -> sqlite3.Connection:
    p = Path(path) if path else default_path()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not p.exists():
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(p, timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(_SCHEMA)
    return conn


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=64 * 1024 * 1024, dklen=32)


def add_user(conn: sqlite3.Connection, name: str, password: str, role: str,
             trainee_id: str | None = None) -> None:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(f"bad user name {name!r} (letters, digits, - _ . ; at most 64)")
    if len(password) < 8:
        raise UserError("password too short (at least 8 characters)")
    if role == "trainee" and not trainee_id:
        raise UserError("a trainee account needs --trainee ID (the records it may see)")
    salt = secrets.token_bytes(16)
    try:
        conn.execute("INSERT INTO users (name, role, trainee_id, salt, hash) VALUES (?, ?, ?, ?, ?)",
                     (name, role, trainee_id if role == "trainee" else None, salt, _hash(password, salt)))
    except sqlite3.IntegrityError:
        raise UserError(f"user {name!r} already exists") from None


def list_users(conn: sqlite3.Connection) -> list[User]:
    return [User(r["name"], r["role"], r["trainee_id"])
            for r in conn.execute("SELECT name, role, trainee_id FROM users ORDER BY name")]


def remove_user(conn: sqlite3.Connection, name: str) -> None:
    if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
        raise UserError(f"no user {name!r}")


def login(conn: sqlite3.Connection, name: str, password: str, *, now: float | None = None) -> str | None:
    """A new session token for a correct name and password, else None (same work either way)."""
    row = conn.execute("SELECT salt, hash FROM users WHERE name = ?", (name,)).fetchone()
    salt, want = (row["salt"], row["hash"]) if row else (b"\0" * 16, b"")
    got = _hash(password, salt)  # hash even for unknown users: no timing oracle for names
    if row is None or not hmac.compare_digest(got, want):
        return None
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    conn.execute("DELETE FROM sessions WHERE expires < ?", (now,))
    conn.execute("INSERT INTO sessions (token_sha, user, csrf, expires) VALUES (?, ?, ?, ?)",
                 (hashlib.sha256(token.encode()).digest(), name, secrets.token_urlsafe(24), now + SESSION_S))
    return token


def session_user(conn: sqlite3.Connection, token: str | None, *, now: float | None = None) -> User | None:
    """The user of a live session token, else None."""
    if not token or len(token) > 128:
        return None
    now = time.time() if now is None else now
    row = conn.execute("SELECT u.name, u.role, u.trainee_id, s.csrf FROM sessions s JOIN users u "
                       "ON u.name = s.user WHERE s.token_sha = ? AND s.expires >= ?",
                       (hashlib.sha256(token.encode()).digest(), now)).fetchone()
    return User(row["name"], row["role"], row["trainee_id"], row["csrf"]) if row else None


def logout(conn: sqlite3.Connection, token: str | None) -> None:
    if token:
        conn.execute("DELETE FROM sessions WHERE token_sha = ?", (hashlib.sha256(token.encode()).digest(),))


def csrf_ok(user: User, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(user.csrf.encode(), str(token).encode())
