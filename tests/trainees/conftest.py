"""Fixtures for the records tests: a real SQLite file per test, a database filled by simulated
learners, and Ralph (a real LRS) on localhost."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from trainees_helpers import LRS_VENV


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "records.sqlite3"


@pytest.fixture(scope="session")
def sim_db(tmp_path_factory) -> Path:
    """A records database with simulated learners (cohort sim-next) and the expert cohort, filled
    through the public records API."""
    from benchmarks.curriculum import populate
    from trainees.rules import load_rules

    path = tmp_path_factory.mktemp("simdb") / "records.sqlite3"
    populate(path, load_rules(), 2, seed=1, schedule="next")
    populate(path, load_rules(), 1, seed=1, schedule="round_robin")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lrs(tmp_path_factory):
    """Ralph on 127.0.0.1 with a file-system backend and one basic-auth user; yields (url, user,
    password). Installed by scripts/setup-lrs.sh (make test). Skips when absent unless CI is set."""
    py = LRS_VENV / "bin" / "python"
    if not py.exists():
        if os.environ.get("CI"):
            pytest.fail("Ralph is not installed (.venv-lrs): scripts/setup-lrs.sh must run before the tests")
        pytest.skip("Ralph LRS not installed: run `bash scripts/setup-lrs.sh` (make test does)")
    home = tmp_path_factory.mktemp("ralph")
    env = dict(os.environ, RALPH_APP_DIR=str(home), RALPH_AUTH_FILE=str(home / "auth.json"),
               RALPH_RUNSERVER_BACKEND="fs",
               RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH=str(home / "statements"))
    user, password = "lab", "s3cret-pw"
    subprocess.run([str(LRS_VENV / "bin" / "ralph"), "auth", "-u", user, "-p", password, "-s", "all",
                    "-M", "mailto:lab@example.org", "-w"], env=env, check=True, capture_output=True,
                   timeout=120)
    port = _free_port()
    # uvicorn directly (not `ralph runserver`, which adds a file-watching reloader process)
    proc = subprocess.Popen([str(py), "-m", "uvicorn", "ralph.api:app", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=home)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/__heartbeat__", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read().decode(errors="replace")[-2000:]
            pytest.fail(f"Ralph did not start: {out}")
        time.sleep(0.2)
    yield url, user, password
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
