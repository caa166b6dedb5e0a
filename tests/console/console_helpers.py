"""Helpers for the console tests: a real `trocar serve` on a free port over real SQLite files, and an
HTTP client that keeps cookies (imported by module name, like tests/trainees/trainees_helpers.py)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


def cli(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 120):
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=ROOT, input=input)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records_with_attempts(path: Path, recording: str | None = None) -> dict:
    """A records database with two trainees in cohort C1, one attempt each (ids returned)."""
    sys.path.insert(0, str(ROOT / "tests" / "trainees"))
    from trainees_helpers import result

    from trainees.records import add_trainee, begin_attempt, finish_attempt

    add_trainee(path, "R-001", cohort="C1")
    add_trainee(path, "R-002", cohort="C1")
    a1 = begin_attempt(path, "R-001", "peg_transfer", "1", recording=recording)
    finish_attempt(path, a1, result(41.0))
    a2 = begin_attempt(path, "R-002", "peg_transfer", "1", recording=recording)
    finish_attempt(path, a2, result(90.0))
    return {"R-001": a1, "R-002": a2}


class Server:
    """`trocar serve` in a subprocess with its own accounts: 'teach' (instructor), 'r1' (trainee
    R-001)."""

    def __init__(self, tmp: Path, *, records: Path, runtime: Path | None = None,
                 recordings: Path | None = None) -> None:
        self.users = tmp / "console.sqlite3"
        for name, role, extra in (("teach", "instructor", ()), ("r1", "trainee", ("--trainee", "R-001"))):
            r = cli("console-user", "add", name, "--role", role, *extra, "--password-stdin",
                    "--users", str(self.users), input=PASSWORD + "\n")
            assert r.returncode == 0, r.stderr
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--port", str(self.port), "--db", str(records), "--users", str(self.users)]
        if runtime:
            args += ["--runtime-dir", str(runtime)]
        if recordings:
            args += ["--recordings", str(recordings)]
        self.log = open(tmp / "serve.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "sim.cli", *args], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert self.proc.poll() is None, (tmp / "serve.log").read_text()
                time.sleep(0.2)
        raise AssertionError("trocar serve did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


class Client:
    """An HTTP client with a cookie jar; get/post return (status, body text, headers)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, method: str, path: str, data: dict | bytes | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=60) as r:
                return r.status, r.read().decode("utf-8", "replace"), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace"), e.headers

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, data):
        return self.request("POST", path, data)

    def login(self, name: str, password: str = PASSWORD) -> int:
        _, page, _ = self.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        status, _, headers = self.post("/login", {"csrf": token, "name": name, "password": password})
        return 200 if status == 303 and headers["location"] == "/" else status

    def csrf(self) -> str:
        _, page, _ = self.get("/")
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)
