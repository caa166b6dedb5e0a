"""The mesh side of a tissue topology change (`sim.tissue_topology`): tet faces and their keys, the
live surface and interior faces, splitting nodes along separated faces (`split_groups`), and
building the changed model, state and extended step matrix from them (`rebuild`, which returns the
`TopologyChange`). The operations that decide what separates (cut, separate_faces,
remove_elements) are `sim.tissue_topology`'s. Node ids stay stable (new ones are appended), element
ids too (a dead element stays in the arrays: volume 0, no stiffness, no mass). docs/cutting.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numba as nb
import numpy as np

from sim.cutting import Blade
from sim.tissue import TissueState
from sim.tissue_model import TissueModel, TissueSystem
from sim.topology_solver import extend_system

#: Faces of tet (0, 1, 2, 3), normals away from the opposite corner for a positive tet.
TET_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]], dtype=np.int64)
#: TissueState arrays with one row per node (gathered through node_source after a change).
NODE_ARRAYS = ("x", "v", "x_prev", "v_prev", "x_last", "v_last", "xp", "y", "dx", "pz", "r_prev",
               "r_node", "res", "node_e", "fresh", "f_sum")
#: TissueState per-element scratch, rewritten by every step before it is read: a changed state
#: shares these with the state it came from (one of the two is stepped from then on).
ELEMENT_SCRATCH = ("qt", "f", "gn", "fb", "df", "f_cur", "e_trial", "grad")


@dataclass(frozen=True, eq=False)
class TopologyChange:
    """What a topology operation made (see docs/cutting.md, "API").

    Attributes:
        model, state: the new TissueModel and TissueState (the old ones are untouched).
        node_source: (n_new,) int64, the old node each new node comes from (identity for old ids).
        moved: (j,) int64, nodes moved onto the blade (cut only).
        killed: (k,) int64, elements that died in this change.
        faces: (f, 2, 3) int64, each separated face from its two sides (new node ids, outward).
        length: [m] extent of the separated faces along the blade direction (0 without a blade).
        area: [m^2] area of the separated faces (one side, current configuration).
        system: the step matrix the new model starts with (stale factor, extended).
    """

    model: TissueModel
    state: TissueState
    node_source: np.ndarray
    moved: np.ndarray
    killed: np.ndarray
    faces: np.ndarray
    length: float
    area: float
    system: TissueSystem


# -- faces -----------------------------------------------------------------------------------------


def face_keys(tri: np.ndarray, n: int) -> np.ndarray:
    """One int64 key per triangle (k, 3) of node ids < n, independent of corner order."""
    s = np.sort(np.asarray(tri, dtype=np.int64), axis=1)
    return (s[:, 0] * n + s[:, 1]) * n + s[:, 2]


def _live_faces(tets: np.ndarray, live: np.ndarray):
    """Faces of the live elements: (faces (4l, 3) outward, keys sorted order, elements)."""
    eid = np.flatnonzero(live)
    faces = tets[eid][:, TET_FACES].reshape(-1, 3).astype(np.int64)
    return faces, np.repeat(eid, 4)


def surface_of(tets: np.ndarray, live: np.ndarray, n: int) -> np.ndarray:
    """Outward boundary triangles (k, 3) int32 of the live elements, in a deterministic order
    (sorted by face key)."""
    faces, _ = _live_faces(tets, live)
    keys = face_keys(faces, n)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    single = np.ones(k.size, dtype=bool)
    dup = k[1:] == k[:-1]
    single[1:] &= ~dup
    single[:-1] &= ~dup
    return faces[order[single]].astype(np.int32)


def interior_faces(model: TissueModel) -> tuple[np.ndarray, np.ndarray]:
    """Every face shared by two live elements: (faces (f, 3) int64 node ids, as seen from the first
    element, elems (f, 2) int64 element ids), in face-key order. Candidates for tearing."""
    faces, elem = _live_faces(model.tets, model.volume > 0.0)
    keys = face_keys(faces, model.node_count)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    first = np.flatnonzero(k[1:] == k[:-1])
    return faces[order[first]], np.stack([elem[order[first]], elem[order[first + 1]]], axis=1)


# -- splitting nodes -------------------------------------------------------------------------------


@nb.njit(nogil=True, cache=True)
def _shared_face_key(tets, e, f, n):
    """Key of the face elements e and f share (3 common nodes), or -1."""
    c = 0
    lo = n
    hi = -1
    total = 0
    for a in range(4):
        na = tets[e, a]
        for b in range(4):
            if tets[f, b] == na:
                c += 1
                lo = min(lo, na)
                hi = max(hi, na)
                total += na
    if c != 3:
        return -1
    return (lo * n + (total - lo - hi)) * n + hi


@nb.njit(nogil=True, cache=True)
def split_groups(tets, live, node_ptr, node_inc, sep_keys, nodes, n, inc_out, copy_out):
    """For each node of `nodes`, group its live elements into classes connected through shared
    faces that are not in sep_keys (sorted int64 face keys). Writes one row per (node, live
    element) incidence into inc_out (r, 3) = (node, element, local corner) and the copy index into
    copy_out (r,) (0: the class holding the node's lowest element keeps the id). Returns rows."""
    r = 0
    for t in range(nodes.shape[0]):
        v = nodes[t]
        lo = node_ptr[v]
        hi = node_ptr[v + 1]
        cnt = 0
        elems = np.empty(hi - lo, dtype=np.int64)
        corner = np.empty(hi - lo, dtype=np.int64)
        for k in range(lo, hi):
            e = node_inc[k] >> 2
            if live[e]:
                elems[cnt] = e
                corner[cnt] = node_inc[k] & 3
                cnt += 1
        parent = np.arange(cnt)
        for i in range(cnt):
            for j in range(i + 1, cnt):
                key = _shared_face_key(tets, elems[i], elems[j], n)
                if key < 0:
                    continue
                pos = np.searchsorted(sep_keys, key)
                if pos < sep_keys.shape[0] and sep_keys[pos] == key:
                    continue
                a = i
                while parent[a] != a:
                    a = parent[a]
                b = j
                while parent[b] != b:
                    b = parent[b]
                if a != b:
                    if a < b:
                        parent[b] = a
                    else:
                        parent[a] = b
        label = np.full(cnt, -1, dtype=np.int64)
        groups = 0
        for i in range(cnt):  # elements are in increasing id order: class 0 holds the lowest
            a = i
            while parent[a] != a:
                a = parent[a]
            if label[a] < 0:
                label[a] = groups
                groups += 1
            inc_out[r, 0] = v
            inc_out[r, 1] = elems[i]
            inc_out[r, 2] = corner[i]
            copy_out[r] = label[a]
            r += 1
    return r


# -- building the changed model and state ----------------------------------------------------------


@nb.njit(nogil=True, cache=True)
def incidence(tets, n, node_ptr, node_inc, node_rep):
    """Node -> (element*4 + corner) incidence by counting sort, the same arrays as
    `sim.tissue_model.node_incidence` (corners in element order) without its O(m log m) sort."""
    node_ptr[:] = 0
    m = tets.shape[0]
    for e in range(m):
        for c in range(4):
            node_ptr[tets[e, c] + 1] += 1
    for i in range(n):
        node_ptr[i + 1] += node_ptr[i]
    fill = node_ptr[:-1].copy()
    for e in range(m):
        for c in range(4):
            v = tets[e, c]
            node_inc[fill[v]] = 4 * e + c
            fill[v] += 1
    for i in range(n):
        node_rep[i] = node_inc[node_ptr[i]] >> 2 if node_ptr[i + 1] > node_ptr[i] else 0


def incident_elements(model: TissueModel, nodes: np.ndarray) -> np.ndarray:
    """Sorted unique ids of the elements (live or dead) around `nodes`."""
    if nodes.size == 0:
        return np.zeros(0, dtype=np.int64)
    ptr = model.node_ptr.astype(np.int64)
    lo, hi = ptr[nodes], ptr[nodes + 1]
    start = np.concatenate([[0], np.cumsum(hi - lo)[:-1]])
    idx = np.repeat(lo - start, hi - lo) + np.arange(int((hi - lo).sum()))
    return np.unique(model.node_inc[idx].astype(np.int64) >> 2)


def rebuild(model: TissueModel, state: TissueState, rest: np.ndarray, x: np.ndarray,
             dead: np.ndarray, sep_keys: np.ndarray, affected: np.ndarray,
             shape: tuple[np.ndarray, np.ndarray, np.ndarray] | None, moved: np.ndarray, dt: float,
             blade: Blade | None, on_cut: np.ndarray | None = None) -> TopologyChange | None:
    """Split the affected nodes along sep_keys (elements `dead` die first), then build the new
    model, state and system. shape: (elements, dm_inv, volume) of elements whose rest shape
    changed (moved corners). on_cut (n_old,) bool: nodes now on a cut surface; those not split
    become the crack front (`TissueModel.cut_front`). Work is local to the elements around the
    affected nodes, except for a few O(n + m) copies and the incidence's counting sort."""
    n_old, m = model.node_count, model.tet_count
    live = (model.volume > 0.0) & ~dead
    old_tets = model.tets
    sep_keys = np.sort(sep_keys)
    affected = np.unique(affected)
    deg = np.diff(model.node_ptr.astype(np.int64))
    rows = int(deg[affected].sum())
    inc = np.empty((rows, 3), dtype=np.int64)
    cp = np.empty(rows, dtype=np.int64)
    rows = split_groups(old_tets, live, model.node_ptr, model.node_inc, sep_keys, affected, n_old,
                        inc, cp)
    inc, cp = inc[:rows], cp[:rows]
    extra = cp > 0
    if not extra.any() and not dead.any() and moved.size == 0:
        return None
    # New ids in (node, copy) order: deterministic.
    pairs = np.unique(inc[extra, 0] * 64 + cp[extra])
    node_source = np.concatenate([np.arange(n_old), pairs // 64])
    n = node_source.size
    tets = old_tets.copy()  # int32
    tets[inc[extra, 1], inc[extra, 2]] = n_old + np.searchsorted(pairs, inc[extra, 0] * 64 + cp[extra])

    # Element arrays: copies; rest shape redone where a corner moved; dead ones zeroed.
    volume = model.volume.copy()
    dm_inv = model.dm_inv.copy()
    mu, lam = model.mu.copy(), model.lam.copy()
    if shape is not None:
        dm_inv[shape[0]] = shape[1]
        volume[shape[0]] = shape[2]
    newly = np.flatnonzero(dead & (model.volume > 0.0))
    volume[dead] = 0.0
    dm_inv[dead] = 0.0
    mu[dead] = 0.0
    lam[dead] = 0.0
    alive = volume > 0.0
    mass = np.bincount(tets.reshape(-1), weights=np.repeat(model.material.density * volume / 4.0, 4),
                       minlength=n)
    fixed = model.fixed[node_source] | (mass <= 0.0)
    node_ptr = np.empty(n + 1, dtype=np.uint32)
    node_inc = np.empty(4 * m, dtype=np.uint32)
    node_rep = np.empty(n, dtype=np.uint32)
    incidence(tets, n, node_ptr, node_inc, node_rep)

    # Surface: faces without an affected node keep their status; faces with one belong only to
    # elements around affected nodes, whose faces are recounted.
    around = incident_elements(model, affected)
    around_live = around[alive[around]]
    faces_new = tets[around_live][:, TET_FACES].reshape(-1, 3)
    faces_old = old_tets[around_live][:, TET_FACES].reshape(-1, 3)
    touch = np.zeros(n_old, dtype=bool)
    touch[affected] = True
    with_aff = touch[faces_old].any(axis=1)
    keys_new = face_keys(faces_new, n)
    uk, inv, cnt = np.unique(keys_new, return_inverse=True, return_counts=True)
    boundary = with_aff & (cnt[inv] == 1)
    old_surf = np.asarray(model.surface, dtype=np.int64)
    keep = ~touch[old_surf].any(axis=1)
    surface = np.concatenate([old_surf[keep], faces_new[boundary][np.argsort(keys_new[boundary],
                                                                               kind="stable")]])

    tets32 = tets
    front = np.zeros(n, dtype=bool)
    old_front = model.cut_front if model.cut_front is not None else np.zeros(n_old, dtype=bool)
    front[:n_old] = old_front | (on_cut if on_cut is not None else False)
    front[pairs // 64] = False  # split nodes are lips now, not the tip
    new_model = model.with_topology(cut_front=front,
        rest=rest[node_source], tets=tets32, surface=surface.astype(np.int32), mass=mass,
        fixed=fixed, mu=mu, lam=lam, dm_inv=dm_inv,
        dm_inv_rows=np.ascontiguousarray(dm_inv.reshape(m, 9).T), volume=volume,
        node_ptr=node_ptr, node_inc=node_inc, node_rep=node_rep, tets_u=tets32.astype(np.uint32))
    new_state = _resize_state(state, x, node_source)
    system = extend_system(model.system(dt), new_model, node_source, dt)
    new_model.use_system(system)
    new_state.rhs = np.zeros((system.factor.d_inv.shape[0], 3))

    # The separated faces, seen from both sides (outward faces of the two elements).
    hit = np.isin(face_keys(faces_old, n_old), sep_keys)
    order = np.argsort(face_keys(faces_old[hit], n_old), kind="stable")
    two = faces_new[hit][order].astype(np.int64)
    two = two.reshape(-1, 2, 3) if len(two) % 2 == 0 else np.zeros((0, 2, 3), np.int64)
    length = area = 0.0
    if two.size:
        tri = new_state.x[two[:, 0]]
        area = 0.5 * float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                                          axis=1).sum())
        if blade is not None:
            proj = tri.reshape(-1, 3) @ blade.direction
            length = float(proj.max() - proj.min())
    return TopologyChange(model=new_model, state=new_state, node_source=node_source,
                          moved=np.asarray(moved, dtype=np.int64), killed=newly, faces=two,
                          length=length, area=area, system=system)


def _resize_state(state: TissueState, x: np.ndarray, node_source: np.ndarray) -> TissueState:
    """A copy of `state` for the new node set: node rows gathered from their sources (x from the
    possibly moved positions `x`), element rows copied, counters kept. The carried element
    evaluation (`TissueState.carried`) no longer matches the new mesh: the next step re-evaluates
    every element, and tries full steps (the old mesh's step hint says nothing of the new one)."""
    out = {}
    for f in fields(state):
        v = getattr(state, f.name)
        if f.name == "x":
            out[f.name] = np.ascontiguousarray(x[node_source])
        elif f.name in NODE_ARRAYS:
            out[f.name] = np.ascontiguousarray(v[node_source])
        elif f.name in ELEMENT_SCRATCH:
            out[f.name] = v
        elif isinstance(v, np.ndarray):
            out[f.name] = v.copy()
        else:
            out[f.name] = v
    out["carried"] = False
    out["step_hint"] = 1.0
    return TissueState(**out)
