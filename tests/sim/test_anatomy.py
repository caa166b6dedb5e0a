"""The cholecystectomy anatomy (sim.anatomy): valid, connected, varied meshes for many seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sim import anatomy as an
from sim.mesh import tet_volumes

SEEDS = range(6)


@pytest.fixture(scope="module")
def anatomies():
    return {s: an.anatomy_for_seed(s) for s in SEEDS}


def _shared(a, b1, b2) -> int:
    n1 = np.unique(a.mesh.tets[a.body == b1])
    n2 = np.unique(a.mesh.tets[a.body == b2])
    return len(np.intersect1d(n1, n2))


@pytest.mark.parametrize("seed", SEEDS)
def test_mesh_valid_and_connected(anatomies, seed):
    a = anatomies[seed]
    m = a.mesh
    assert tet_volumes(m.points, m.tets).min() > 0.0  # no inverted or flat element
    assert set(np.unique(a.body)) == set(range(len(an.BODIES)))
    assert 800 < m.tet_count < 3000  # coarse enough for the 1 ms tick, fine enough for the ducts
    t = m.tets.astype(np.int64)
    g = coo_matrix((np.ones(3 * len(t)), (np.repeat(t[:, 0], 3), t[:, 1:].ravel())),
                   shape=(m.node_count,) * 2)
    assert connected_components(g, directed=False)[0] == 1
    # Each junction shares nodes: neck-duct, duct-common duct, artery-gallbladder.
    assert _shared(a, an.GALLBLADDER, an.CYSTIC_DUCT) >= 3
    assert _shared(a, an.CYSTIC_DUCT, an.COMMON_BILE_DUCT) >= 3
    assert _shared(a, an.GALLBLADDER, an.CYSTIC_ARTERY) >= 3
    assert _shared(a, an.CYSTIC_ARTERY, an.COMMON_BILE_DUCT) == 0  # the artery never touches it


@pytest.mark.parametrize("seed", SEEDS)
def test_sizes_and_boundary(anatomies, seed):
    a = anatomies[seed]
    p = a.params
    cd = a.structures["cystic_duct"]
    assert 0.015 < cd.arclength()[-1] < 0.05  # free length of the cystic duct [m]
    # The duct's centreline runs inside the meshed duct: its nodes lie within ~a radius of it.
    nodes = a.mesh.points[a.node_body == an.CYSTIC_DUCT]
    d = np.array([cd.project(x)[1] for x in nodes])
    assert np.median(d) < 1.5 * p.cd_radius
    # Boundary: the bed, the common duct's ends and the artery's origin are held; the middle of
    # the cystic duct and of the artery (where clips go) is free.
    assert a.fixed[a.node_body == an.GALLBLADDER].sum() >= 10
    for name in ("cystic_duct", "cystic_artery"):
        lo, hi = a.safe_zones[name]
        mid = a.structures[name].at(0.5 * (lo + hi))
        near = np.linalg.norm(a.mesh.points - mid, axis=1) < 2 * a.structures[name].radius
        assert near.any() and not a.fixed[near].any()
        assert a.classify(mid)[0] == name
    assert a.classify(a.structures["common_bile_duct"].at(0.02))[0] == "common_bile_duct"


def test_seeds_vary_and_repeat(anatomies):
    lengths = {round(float(a.structures["cystic_duct"].arclength()[-1]), 4) for a in anatomies.values()}
    assert len(lengths) >= 4  # the layout is not one to learn by heart
    again = an.anatomy_for_seed(0)
    np.testing.assert_array_equal(again.mesh.points, anatomies[0].mesh.points)
