"""Fixtures for the runtime tests: `trocar` sessions in their own process group."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from runtime_helpers import TROCAR


@pytest.fixture
def session(tmp_path):
    """Factory: start `trocar ARGS` in a new process group (like a terminal job); returns the
    Popen (stdout/stderr go to files p.out_path, p.err_path). At teardown the whole group
    (supervisor, servo, renderer) is killed if still there; the emulator follows its parent."""
    procs: list = []

    def start(*args: str) -> subprocess.Popen:
        n = len(procs)
        out = open(tmp_path / f"session{n}.out", "w")  # noqa: SIM115 - closed at teardown
        err = open(tmp_path / f"session{n}.err", "w")  # noqa: SIM115
        p = subprocess.Popen([*TROCAR, *args], stdout=out, stderr=err, text=True,
                             start_new_session=True)
        p.out_path, p.err_path = tmp_path / f"session{n}.out", tmp_path / f"session{n}.err"
        procs.append((p, out, err))
        return p

    yield start
    for p, out, err in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(30)
        out.close()
        err.close()
