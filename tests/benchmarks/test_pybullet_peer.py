"""Smoke test of the PyBullet peer benchmark on a tiny clamped block."""

import math

import pytest

pytest.importorskip("pybullet")

from benchmarks.pybullet_peer import run_pybullet_block  # noqa: E402
from sim.mesh_generators import block, block_cells_for  # noqa: E402


def test_pybullet_block_sags_under_gravity_and_stays_stable():
    mesh = block(cells=block_cells_for(1000))
    result = run_pybullet_block(
        mesh, young=10e3, poisson=0.45, density=1000.0, damping=0.01, dt=1e-3,
        settle_steps=200, steps=20,
    )
    assert result["engine"] == "pybullet"
    assert result["tets"] == mesh.tet_count
    assert result["nodes"] == mesh.node_count
    assert len(result["step_us"]) == 20
    assert math.isfinite(result["median_us"]) and result["median_us"] > 0
    assert math.isfinite(result["p99_us"]) and result["p99_us"] >= result["median_us"]
    assert result["stable"] is True
    assert result["sag_mm"] > 0  # gravity pulls the top face down
    assert "NeoHookeanMu" in result["notes"]
