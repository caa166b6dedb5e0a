"""`trocar serve`, `trocar console-user` and `trocar bench console` refuse bad input with one
`trocar: error:` line and status 2, before starting anything."""

from __future__ import annotations

from console_helpers import PASSWORD, cli


def _one_error(r) -> None:
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("trocar: error: ") and r.stderr.count("\n") == 1, r.stderr


def test_bad_options_are_one_line_errors(tmp_path):
    users = str(tmp_path / "u.sqlite3")
    _one_error(cli("bench", "console", "--spectators", "0"))
    _one_error(cli("run", "peg_transfer", "--share", "--lockstep", "--seconds", "1"))
    _one_error(cli("run", "peg_transfer", "--share", "--policy", "expert"))
    _one_error(cli("serve", "--port", "70000"))
    _one_error(cli("serve", "--ssl-certfile", str(tmp_path / "missing.pem")))
    _one_error(cli("console-user", "add", "bob", "--role", "instructor", "--password-stdin", "--users", users,
                   input="short\n"))
    _one_error(cli("console-user", "add", "../bob", "--role", "instructor", "--password-stdin",
                   "--users", users, input=PASSWORD + "\n"))
    assert cli("console-user", "list", "--users", users).stdout == ""  # nothing was added
    r = cli("console-user", "add", "bob", "--role", "instructor", "--password-stdin", "--users", users,
            input=PASSWORD + "\n")
    assert r.returncode == 0
    _one_error(cli("console-user", "add", "bob", "--role", "instructor", "--password-stdin", "--users", users,
                   input=PASSWORD + "\n"))
    assert cli("console-user", "list", "--users", users).stdout == "bob\tinstructor\t\n"
