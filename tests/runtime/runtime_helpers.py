"""Helpers for the runtime tests: run `trocar` as a user does, read the emulator event log."""

from __future__ import annotations

import os
import subprocess
import sys
import time

TROCAR = [sys.executable, "-m", "sim.cli"]


def trocar(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `trocar ARGS` to completion."""
    return subprocess.run([*TROCAR, *args], capture_output=True, text=True, timeout=timeout)


def read_events(path) -> list[tuple[float, str]]:
    """The emulator's event log: (time.monotonic() [s], event name)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2:
                out.append((float(parts[0]), parts[1]))
    return out


def wait_for(pred, timeout: float, step: float = 0.05) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(step)
    return pred()




def trocar_in_process(capsys, *argv: str) -> subprocess.CompletedProcess:
    """`trocar ARGV` through `sim.cli.main` in this process (the code a `trocar` process runs,
    without its start-up); same result shape as `trocar()`."""
    from sim.cli import main

    capsys.readouterr()
    code = main(list(argv))
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), code, cap.out, cap.err)
