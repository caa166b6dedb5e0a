"""Helpers shared by the render tests (imported by module name, like tests/sim/tissue_helpers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip with the reason; under CI=true fail instead (CI must run these tests)."""
    if CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `trocar` CLI in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def tissue_mask(img: np.ndarray) -> np.ndarray:
    """Pixels in the tissue's colour range."""
    from sim.render.xr import is_tissue_colour

    return is_tissue_colour(img)
