"""Topology changes of a tissue body: cut along a blade, separate faces (tearing), remove elements,
and the solver's factor after a change.

A change never mutates a `TissueModel`: it returns a `TopologyChange` holding a new model and a new
state, which the caller (the scene) swaps in at a tick boundary. Node ids are stable (nodes are
only appended: a split node keeps its id on one side), element ids are stable (a removed element
stays in the arrays, dead: volume 0, no stiffness, no mass). Method, choices and measurements:
docs/cutting.md.

The cut (`cut`): every mesh edge that crosses the blade surface has its nearer end moved onto the
blade, along the edge, in both the rest and the current configuration (an interior node moved
inside its star leaves the body's volume unchanged; a surface node is only moved along a surface
edge where it can be). Then every mesh face whose three nodes lie on the blade separates the two
elements on its sides (`separate_faces`). The new boundary is made of mesh faces with their
corners on the blade, so it follows the blade to within the sagitta of a face on a curved blade,
whatever the element size, and no element smaller than the mesh's own is created (elements
flattened onto the blade have zero volume and die: they carried no volume).

The new model, state and system of a change (node splitting, incidence, surface, the old factor
extended to the new nodes: `sim.topology_solver`) are built by `sim.tissue_rebuild.rebuild`; a
worker thread factors the new matrix for a deterministic swap.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from sim.cutting import END_TOL, Blade, edge_hits, point_distances
from sim.tissue import TissueState
from sim.tissue_model import TissueModel
from sim.tissue_rebuild import (
    TET_FACES,
    TopologyChange,
    face_keys,
    incident_elements,
    interior_faces,
    rebuild,
)

#: A node within this distance [m] of the blade counts as lying on it.
ON_BLADE_TOL = 1e-7
#: An element a cut's node moves shrink below this fraction of its volume dies (`cut`).
SLIVER = 0.05
#: Edges of tet (0, 1, 2, 3).
TET_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]], dtype=np.int64)


# -- operations --------------------------------------------------------------------------------------


@nb.njit(nogil=True, cache=True)
def move_ends(ends, t, pick, forbidden, order, x, rest, moved):
    """Resolve crossing edges in `order`: an edge (a, b) crossing the blade at a + t (b - a) whose
    ends are both unmoved gets end pick (0: a, 1: b) moved onto the crossing, in x and rest (n, 3)
    [m] alike, unless that move is forbidden (e, 2) (it would unclamp a node). Marks moved nodes
    in `moved` (n,)."""
    for j in order:
        a = ends[j, 0]
        b = ends[j, 1]
        tj = t[j]
        if moved[a] or moved[b] or tj <= END_TOL or tj >= 1.0 - END_TOL:
            continue
        k = pick[j]
        if forbidden[j, k]:
            continue
        node, other, f = (a, b, tj) if k == 0 else (b, a, 1.0 - tj)
        for c in range(3):
            x[node, c] += f * (x[other, c] - x[node, c])
            rest[node, c] += f * (rest[other, c] - rest[node, c])
        moved[node] = True


@nb.njit(nogil=True, cache=True)
def elements_in_box(tets, x, volume, lo, hi, out):
    """out[e] = live element e's bounding box (at positions x) overlaps the box lo-hi [m]."""
    for e in range(tets.shape[0]):
        if volume[e] <= 0.0:
            out[e] = False
            continue
        inside = True
        for c in range(3):
            a = x[tets[e, 0], c]
            mn = a
            mx = a
            for k in range(1, 4):
                a = x[tets[e, k], c]
                mn = min(mn, a)
                mx = max(mx, a)
            if mn > hi[c] or mx < lo[c]:
                inside = False
        out[e] = inside


def _edges_of(tets: np.ndarray, n: int) -> np.ndarray:
    """Unique edges (e, 2) int64 (a < b) of tets (m, 4)."""
    e = np.sort(tets[:, TET_EDGES].reshape(-1, 2).astype(np.int64), axis=1)
    keys = np.unique(e[:, 0] * n + e[:, 1])
    return np.stack([keys // n, keys % n], axis=1)


def cut(model: TissueModel, state: TissueState, blade: Blade, *, dt: float) -> TopologyChange | None:
    """Separate the tissue along the blade surface (module docstring); None if nothing is cut.

    Positions are the current ones (state.x): the blade is in world coordinates.
    """
    n = model.node_count
    x = state.x
    live = model.volume > 0.0
    lo, hi = blade.bounds()
    near = np.zeros(model.tet_count, dtype=np.bool_)
    elements_in_box(model.tets_u, x, model.volume, lo, hi, near)
    if not near.any():
        return None
    cand = np.flatnonzero(near)
    edges = _edges_of(model.tets[cand], n)
    s = np.empty(edges.shape[0])
    edge_hits(x, edges, blade.triangles, s)
    hit = np.flatnonzero(s >= 0.0)
    rest = model.rest.copy()
    xn = x.copy()
    on_surface = np.zeros(n, dtype=bool)
    on_surface[model.surface.reshape(-1)] = True
    near_node = np.zeros(n, dtype=bool)
    near_node[edges[hit].reshape(-1)] = True
    tri = model.surface[near_node[model.surface].all(axis=1)]
    sk = np.sort(tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).astype(np.int64), axis=1)
    surf_edge = np.isin(edges[hit, 0] * n + edges[hit, 1], sk[:, 0] * n + sk[:, 1])
    # Each crossing edge offers two moves (either end onto the crossing point). Rank them: a
    # clamped node stays clamped; a surface node leaves the surface only as a last resort (it
    # dents the surface: the volume changes); no end moved more than 0.75, then 0.6, of the edge;
    # shortest move first; take the edges in the order of their best move (greedy), so
    # that a crossing is usually already resolved before it would need a bad move.
    ends = edges[hit]
    t = s[hit]
    frac = np.stack([t, 1.0 - t], axis=1)
    length = np.linalg.norm(x[ends[:, 1]] - x[ends[:, 0]], axis=1)
    leaves = on_surface[ends] & ~surf_edge[:, None]
    # A clamped node may only slide toward another clamped one (the clamp stays where it was).
    unclamps = model.fixed[ends] & ~model.fixed[ends[:, ::-1]]
    score = (unclamps * 32.0 + leaves * 16.0 + (frac > 0.75) * 8.0 + (frac > 0.6) * 2.0
             + frac * length[:, None] / max(float(length.max(initial=0.0)), 1e-12))
    pick = np.argmin(score, axis=1)
    moved_mask = np.zeros(n, dtype=np.bool_)
    order = np.argsort(score[np.arange(hit.size), pick], kind="stable")
    move_ends(ends, t, pick, unclamps, order, xn, rest, moved_mask)
    moved = np.flatnonzero(moved_mask)
    # Elements beside a moved node may now touch the blade too.
    around_moved = incident_elements(model, moved)
    near[around_moved[live[around_moved]]] = True
    cand = np.flatnonzero(near)
    cand_nodes = np.unique(model.tets[cand])
    dist = np.empty(cand_nodes.size)
    point_distances(np.ascontiguousarray(xn[cand_nodes]), blade.triangles, dist)
    on_blade = np.zeros(n, dtype=bool)
    on_blade[cand_nodes[dist <= ON_BLADE_TOL]] = True
    on_blade |= moved_mask
    if not on_blade.any():
        return None
    # The crack front of earlier snips continues the cut: faces between it and this blade part too.
    front = model.cut_front if model.cut_front is not None else np.zeros(n, dtype=bool)
    on_cut = on_blade | front
    # Elements with all four corners on the blade are flat: they die (they hold no volume); so
    # does one a move turned inside out (none in the tests and benchmark: counted in `killed`).
    flat = np.zeros(model.tet_count, dtype=bool)
    flat[cand] = on_blade[model.tets[cand]].all(axis=1)
    shape = None
    if moved.size:
        touched = around_moved[live[around_moved] & ~flat[around_moved]]
        p = rest[model.tets[touched]]
        dm = (p[:, 1:, :] - p[:, :1, :]).transpose(0, 2, 1)
        vol = np.linalg.det(dm) / 6.0
        # A move that leaves a sliver (under SLIVER of its old volume) kills it like a flat one:
        # a sliver's stiffness over its mass blows the one-pass step up (tissue_reset).
        ok = vol > SLIVER * model.volume[touched]
        flat[touched[~ok]] = True
        shape = (touched[ok], np.linalg.inv(dm[ok]), vol[ok])
    # Faces of the candidate elements lying on the blade, shared by two elements that stay alive.
    alive_c = cand[~flat[cand]]
    faces = model.tets[alive_c][:, TET_FACES].reshape(-1, 3)
    onf = on_cut[faces].all(axis=1) & on_blade[faces].any(axis=1)
    keys = face_keys(faces[onf], n)
    uk, cnt = np.unique(keys, return_counts=True)
    sep = uk[cnt == 2]
    sep_nodes = np.unique(faces[onf][np.isin(keys, sep)])
    affected = np.concatenate([sep_nodes, np.unique(model.tets[flat])]).astype(np.int64)
    if sep.size == 0 and not flat.any() and moved.size == 0:
        return None
    return rebuild(model, state, rest, xn, flat, sep, affected, shape, moved, dt, blade, on_blade)


def components(model: TissueModel) -> np.ndarray:
    """Connected pieces of the tissue: a label (n,) int per node; nodes share a label when live
    elements join them (after a cut or tear, a piece that came off has its own label)."""
    n = model.node_count
    tets = model.tets[model.volume > 0.0].astype(np.int64)
    a = np.repeat(tets[:, :1], 3, axis=1).reshape(-1)
    b = tets[:, 1:].reshape(-1)
    graph = sp.coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def separate_faces(model: TissueModel, state: TissueState, faces: np.ndarray, *,
                   dt: float) -> TopologyChange | None:
    """Separate the elements on either side of the given interior faces (k, 3) node ids (any order):
    the nodes along them are duplicated so that the two sides no longer share them. Faces that are
    not shared by two live elements are ignored. None if nothing separates."""
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.size == 0:
        return None
    n = model.node_count
    inner, _ = interior_faces(model)
    keys = np.intersect1d(face_keys(faces, n), face_keys(inner, n))
    if keys.size == 0:
        return None
    nodes = np.unique(np.stack([keys // (n * n), (keys // n) % n, keys % n], axis=1))
    return rebuild(model, state, model.rest, state.x, np.zeros(model.tet_count, bool), keys, nodes,
                    None, np.zeros(0, np.int64), dt, None)


def remove_elements(model: TissueModel, state: TissueState, elements: np.ndarray, *,
                    dt: float) -> TopologyChange | None:
    """Kill the given elements (k,) (ids stay; volume, stiffness and mass go to 0). Their nodes are
    split where the remaining elements around them no longer connect; nodes left with no live
    element become fixed. None if all were dead already."""
    el = np.unique(np.asarray(elements, dtype=np.int64))
    el = el[model.volume[el] > 0.0]
    if el.size == 0:
        return None
    dead = np.zeros(model.tet_count, dtype=bool)
    dead[el] = True
    return rebuild(model, state, model.rest, state.x, dead, np.zeros(0, np.int64),
                    np.unique(model.tets[el]).astype(np.int64), None, np.zeros(0, np.int64), dt, None)


def warmup() -> float:
    """Load (or compile) the topology kernels before a loop starts: a cut through a two-cell block
    (~70 ms here). Without it a session's first snip or tear loaded them inside its tick (the
    5k pad's first snip took 55 ms to cut instead of 11). Returns seconds."""
    import time

    from sim.cutting import quad_blade
    from sim.mesh_generators import block
    from sim.tissue import make_state
    from sim.tissue_model import TissueModelBuilder

    t0 = time.perf_counter()
    model = TissueModelBuilder(block((0.02, 0.01, 0.01), (2, 1, 1))).fix_below(0.0).finalize(dt=1e-3)
    x = 0.0093  # [m] between the block's node planes, so edges cross the blade
    blade = quad_blade((x, -0.01, -0.01), (x, 0.02, -0.01), (x, 0.02, 0.02), (x, -0.01, 0.02))
    change = cut(model, make_state(model), blade, dt=1e-3)
    if change is not None:
        components(change.model)
    return time.perf_counter() - t0
