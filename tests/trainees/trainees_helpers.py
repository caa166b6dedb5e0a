"""Helpers shared by the records tests (imported by module name, like tests/render/render_helpers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LRS_VENV = ROOT / ".venv-lrs"


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`trocar ARGS` as a user runs it (a fresh process, this checkout's code)."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=ROOT)


def result(time_s: float = 40.0, *, status: str = "success", drops: int = 0, passed: bool | None = None,
           procedure: str = "peg_transfer", score: float | None = None, **metrics: float) -> dict:
    """A ProcedureResult dict (the JSON the procedures return)."""
    m = {"completion_time": {"value": time_s, "unit": "s", "better": "lower", "label": "completion time"}}
    for k, v in metrics.items():
        m[k] = {"value": v, "unit": "m", "better": "lower", "label": k}
    errors = [{"tick": 1000 * i, "t": float(i), "kind": "drop_outside_view", "message": "ring dropped"}
              for i in range(drops)]
    ok = status == "success" and time_s <= 48 and not drops
    return {"procedure": procedure, "version": "1", "seed": 3, "status": status,
            "completed": status == "success", "passed": ok if passed is None else passed,
            "score": round(100 * (300 - time_s) / 300, 2) if score is None else score,
            "duration_s": time_s, "started": "2026-03-02T09:00:00+00:00",
            "ended": "2026-03-02T09:01:00+00:00",
            "metrics": m, "errors": errors, "proficiency": {"rule": "test", "met": ok}}


def load_json(path: Path):
    return json.loads(Path(path).read_text())
