"""Console accounts on a real SQLite file: logins expire, wrong passwords and unknown names fail,
logout ends the session, CSRF tokens are per session."""

from __future__ import annotations

from console import accounts


def test_sessions_expire_and_logout_ends_them(tmp_path):
    conn = accounts.connect(tmp_path / "c.sqlite3")
    accounts.add_user(conn, "alice", "a long password", "instructor")
    assert accounts.login(conn, "alice", "wrong password", now=0.0) is None
    assert accounts.login(conn, "nobody", "a long password", now=0.0) is None
    token = accounts.login(conn, "alice", "a long password", now=0.0)
    user = accounts.session_user(conn, token, now=accounts.SESSION_S - 1)
    assert user is not None and user.instructor and user.name == "alice"
    assert accounts.session_user(conn, token, now=accounts.SESSION_S + 1) is None
    other = accounts.login(conn, "alice", "a long password", now=10.0)
    u2 = accounts.session_user(conn, other, now=11.0)
    assert u2.csrf != user.csrf and accounts.csrf_ok(u2, u2.csrf) and not accounts.csrf_ok(u2, user.csrf)
    accounts.logout(conn, other)
    assert accounts.session_user(conn, other, now=11.0) is None
    assert accounts.session_user(conn, "x" * 500) is None


def test_file_is_private(tmp_path):
    accounts.connect(tmp_path / "d" / "c.sqlite3").close()
    assert (tmp_path / "d" / "c.sqlite3").stat().st_mode & 0o777 == 0o600
