"""Surgical clips: closing the clip applier on a tube crimps it, permanently.

Firing (`ClipSet.fire`): when the applier's jaw command closes past CLIP_FIRE, the tissue nodes
between its jaws, within its jaw width (+0.5 mm) across the jaw plane, are taken by a new clip, in
the applier's shaft frame at that tick: x (across the jaws: along the tube when the clip is square
to it), y (the closing direction), z (along the jaws).

Method: a clip crushes the tissue under it for good, so the clip changes the *rest shape* of the
elements it holds (plastic deformation), not the forces on them. Each clipped node gets a crimped
position: a tube's section (lumen radius r_in, outer radius r_out from `BodyInfo`) is flattened
into a "stadium": the wall's mid-surface keeps its perimeter and becomes two flat layers joined
by two folds of radius t/2 (t = r_out - r_in), so the lumen closes to a slit (the inner walls
meet on the clip's mid-plane) and the wall keeps its thickness; solid tissue is squeezed to
CLIP_GAP. Every element with a clipped node gets the rest shape (inverse edge matrix) of its
corners at those positions, ramped over CRIMP_S (`crimp_elements`). The solver then finds the
crimped shape as the energy minimum: no constraint forces, nothing to fight the implicit step
(projecting the nodes instead, as the contact stage does, blew the thin wall up within tens of
ticks: docs/clips-damage.md). Clipped nodes are left out of tool contact. The clip is not a
separate body: it rides with its nodes; its pose (snapshot, records) is the best rigid fit of
the nodes to their crimped positions (centroid + polar rotation, warm-started).

Record per clip (`records()`): position along the tube [m] (mean rest axial coordinate of its
nodes), angle to the tube axis [deg] (between the clip's jaw direction and the tube's tangent at
the clip; 90 = square), spans_width (its nodes cover every circumferential sector of the tube).

Units: m, s. Kernels nogil, cached, float64, no allocation.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sim.scene_state import copy_attrs, hash_attrs, restore_attrs
from sim.tissue_kernels import polar_step, quat_to_mat

MAX_CLIPS = 16  # clips per scene (fixed: the snapshot row count)
MAX_NODES = 160  # tissue nodes one clip can hold
MAX_ELEMS = 640  # elements one clip reshapes
CLIP_WIDTH = 4.0e-3  # [m] footprint across the jaw plane: the applier's jaw width (CLIP_APPLIER)
CLIP_GAP = 1.0e-3  # [m] closed clip's inner gap on tissue without a lumen
CLIP_FIRE = 0.5  # [rad] the applier fires (its ratchet engages) when the jaw command closes past this
CLIP_REARM = 0.6  # [rad] ... and loads the next clip when opened past this again
CRIMP_S = 0.05  # [s] crimp ramp
FIT_ITERS = 3  # polar iterations per tick for the clip pose
PULL = 0.3  # share of the way to its crimped place a clipped node is moved after each step
MIN_DET = 0.05  # a crimped element keeps at least this fraction of its rest volume (else unchanged)


@nb.njit(nogil=True, cache=True, error_model="numpy")
def crimp_elements(elems, n, p0, p1, s, dm_inv):
    """Rest shapes of a clip's elements at ramp s in [0, 1]: corners (1 - s) p0 + s p1 [m] (E, 4, 3);
    dm_inv (9, m) rows written for elems[:n] (inverse of [X1-X0, X2-X0, X3-X0], row-major)."""
    for a in range(n):
        e = elems[a]
        m00 = m01 = m02 = m10 = m11 = m12 = m20 = m21 = m22 = 0.0
        for c in range(3):
            b0 = (1.0 - s) * p0[a, 0, c] + s * p1[a, 0, c]
            d1 = (1.0 - s) * p0[a, 1, c] + s * p1[a, 1, c] - b0
            d2 = (1.0 - s) * p0[a, 2, c] + s * p1[a, 2, c] - b0
            d3 = (1.0 - s) * p0[a, 3, c] + s * p1[a, 3, c] - b0
            if c == 0:
                m00, m01, m02 = d1, d2, d3
            elif c == 1:
                m10, m11, m12 = d1, d2, d3
            else:
                m20, m21, m22 = d1, d2, d3
        c00 = m11 * m22 - m12 * m21
        c01 = m02 * m21 - m01 * m22
        c02 = m01 * m12 - m02 * m11
        c10 = m12 * m20 - m10 * m22
        c11 = m00 * m22 - m02 * m20
        c12 = m02 * m10 - m00 * m12
        c20 = m10 * m21 - m11 * m20
        c21 = m01 * m20 - m00 * m21
        c22 = m00 * m11 - m01 * m10
        inv = 1.0 / (m00 * c00 + m01 * c10 + m02 * c20)
        dm_inv[0, e], dm_inv[1, e], dm_inv[2, e] = c00 * inv, c01 * inv, c02 * inv
        dm_inv[3, e], dm_inv[4, e], dm_inv[5, e] = c10 * inv, c11 * inv, c12 * inv
        dm_inv[6, e], dm_inv[7, e], dm_inv[8, e] = c20 * inv, c21 * inv, c22 * inv


@nb.njit(nogil=True, cache=True, error_model="numpy")
def fit_clips(n_clips, node, count, ref, x, pos, quat, inv_mass, pull, crimp):
    """Each clip's pose: the best rigid fit of its nodes (node (C, K), count (C,), positions x
    (n, 3) [m]) to their crimped clip-frame positions ref (C, K, 3) [m]: pos (C, 3) [m] and quat
    (C, 4) (w, x, y, z), warm-started, updated in place."""
    for c in range(n_clips):
        k = count[c]
        if k == 0:
            continue
        cx = cy = cz = lx = ly = lz = 0.0
        for a in range(k):
            j = node[c, a]
            cx += x[j, 0]
            cy += x[j, 1]
            cz += x[j, 2]
            lx += ref[c, a, 0]
            ly += ref[c, a, 1]
            lz += ref[c, a, 2]
        inv_k = 1.0 / k
        cx *= inv_k
        cy *= inv_k
        cz *= inv_k
        lx *= inv_k
        ly *= inv_k
        lz *= inv_k
        a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = 0.0
        for a in range(k):
            j = node[c, a]
            px, py, pz = x[j, 0] - cx, x[j, 1] - cy, x[j, 2] - cz
            qx, qy, qz = ref[c, a, 0] - lx, ref[c, a, 1] - ly, ref[c, a, 2] - lz
            a00 += px * qx
            a01 += px * qy
            a02 += px * qz
            a10 += py * qx
            a11 += py * qy
            a12 += py * qz
            a20 += pz * qx
            a21 += pz * qy
            a22 += pz * qz
        w, qa, qb, qc = quat[c, 0], quat[c, 1], quat[c, 2], quat[c, 3]
        for _ in range(FIT_ITERS):
            w, qa, qb, qc = polar_step(a00, a01, a02, a10, a11, a12, a20, a21, a22, w, qa, qb, qc)
        quat[c, 0], quat[c, 1], quat[c, 2], quat[c, 3] = w, qa, qb, qc
        r = quat_to_mat(w, qa, qb, qc)
        px = cx - (r[0] * lx + r[1] * ly + r[2] * lz)
        py = cy - (r[3] * lx + r[4] * ly + r[5] * lz)
        pz = cz - (r[6] * lx + r[7] * ly + r[8] * lz)
        pos[c, 0], pos[c, 1], pos[c, 2] = px, py, pz
        if pull > 0.0 and crimp[c] >= 1.0:
            for a in range(k):
                j = node[c, a]
                if inv_mass[j] > 0.0:
                    for i in range(3):
                        t = (pos[c, i] + r[3 * i] * ref[c, a, 0] + r[3 * i + 1] * ref[c, a, 1]
                             + r[3 * i + 2] * ref[c, a, 2])
                        x[j, i] += pull * (t - x[j, i])


def stadium(local: np.ndarray, r_in: float, r_out: float) -> np.ndarray:
    """Crimped clip-frame positions [m] (k, 3) of tube nodes at clip-frame positions local (k, 3):
    the section about the nodes' mean (y, z) flattened into a stadium along z (module docstring).
    x is kept."""
    t = r_out - r_in
    rm = 0.5 * (r_in + r_out)
    a = 0.5 * t
    half = 0.5 * np.pi * (rm - a)  # half the flat length
    yc, zc = local[:, 1].mean(), local[:, 2].mean()
    dy, dz = local[:, 1] - yc, local[:, 2] - zc
    rho = np.hypot(dy, dz)
    s = rm * np.mod(np.arctan2(dy, dz), 2 * np.pi)  # arc length from the +z fold, toward +y
    q = np.pi * a / 2  # quarter fold
    seg = [q, q + 2 * half, 3 * q + 2 * half, 3 * q + 4 * half, 4 * q + 4 * half]
    my, mz, ny, nz = (np.zeros_like(s) for _ in range(4))
    for i, si in enumerate(s):
        if si < seg[0] or si >= seg[3]:  # the +z fold
            b = (si - seg[3] if si >= seg[3] else si + q) / a - np.pi / 2
            ny[i], nz[i] = np.sin(b), np.cos(b)
            my[i], mz[i] = a * ny[i], half + a * nz[i]
        elif si < seg[1]:  # top layer, +z -> -z
            my[i], mz[i], ny[i], nz[i] = a, half - (si - seg[0]), 1.0, 0.0
        elif si < seg[2]:  # the -z fold
            b = (si - seg[1]) / a + np.pi / 2
            ny[i], nz[i] = np.sin(b), np.cos(b)
            my[i], mz[i] = a * ny[i], -half + a * nz[i]
        else:  # bottom layer, -z -> +z
            my[i], mz[i], ny[i], nz[i] = -a, -half + (si - seg[2]), -1.0, 0.0
    off = rho - rm
    out = local.copy()
    out[:, 1] = yc + my + off * ny
    out[:, 2] = zc + mz + off * nz
    return out


def _mat_to_quat(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (Shepperd)."""
    t = np.trace(r)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = (0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s)
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = np.zeros(4)
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q, float)
    return q / np.linalg.norm(q)


class ClipSet:
    """The clips on one tissue body (see the module docstring).

    Args:
        model: the tissue (`sim.tissue.TissueModel`); the rest shapes (dm_inv_rows) of clipped
        elements are changed in place. info: its `sim.tissue_bodies.BodyInfo` (tube coordinates,
        lumen radius; a body without them can still be clipped). dt [s]; n_tools.

    State (saved, restored, hashed): n_clips; per clip its nodes (node, count), crimped clip-frame
    positions (ref), elements and their corner shapes (elems, n_elems, p0, p1), crimp ramp, pose
    (pos, quat), record (along, angle, spans); per tool the jaw memory `armed` (a clip is loaded
    once the jaws open past CLIP_REARM: not at the start, where the held jaws are closed and a
    loaded applier fired into the air on the first tick of every session with a device).
    """

    def __init__(self, model, info, dt: float, n_tools: int) -> None:
        self.model, self.info, self.dt = model, info, float(dt)
        self.inv_mass = np.where(model.fixed, 0.0, 1.0 / model.mass)
        self.pull = PULL if getattr(info, "clip_pull", True) else 0.0  # never changes: not state
        self.n_clips = 0
        self.node = np.full((MAX_CLIPS, MAX_NODES), -1, dtype=np.int64)
        self.count = np.zeros(MAX_CLIPS, dtype=np.int64)
        self.ref = np.zeros((MAX_CLIPS, MAX_NODES, 3))
        self.elems = np.zeros((MAX_CLIPS, MAX_ELEMS), dtype=np.int64)
        self.n_elems = np.zeros(MAX_CLIPS, dtype=np.int64)
        self.p0 = np.zeros((MAX_CLIPS, MAX_ELEMS, 4, 3))
        self.p1 = np.zeros((MAX_CLIPS, MAX_ELEMS, 4, 3))
        self.dm_e0 = np.zeros((MAX_CLIPS, MAX_ELEMS, 9))  # the elements' unclipped rest shapes
        self.crimp = np.zeros(MAX_CLIPS)
        self.pos = np.zeros((MAX_CLIPS, 3))
        self.quat = np.zeros((MAX_CLIPS, 4))
        self.quat[:, 0] = 1.0
        self.along = np.full(MAX_CLIPS, np.nan)
        self.angle = np.full(MAX_CLIPS, np.nan)
        self.spans = np.zeros(MAX_CLIPS, dtype=np.bool_)
        self.armed = np.zeros(n_tools, dtype=np.bool_)

    # -- firing --------------------------------------------------------------------------------------

    def fire(self, spec, frame_r: np.ndarray, frame_p: np.ndarray, jaw: float, x: np.ndarray,
             free: np.ndarray) -> int:
        """Close a clip with the applier whose shaft frame is (frame_r (3, 3), frame_p (3,) [m]),
        jaws opened `jaw` [rad] when it fired, on the tissue at x (n, 3); `free` (n,) bool: nodes it
        may take (not held by another tool or clip). Returns the clip index, -1 if nothing was
        between the jaws (the clip is lost), -2 if the scene has MAX_CLIPS clips already."""
        if self.n_clips >= MAX_CLIPS:
            return -2
        jl = spec.jaw_length
        local = (x - frame_p) @ frame_r
        along = jl - local[:, 2]
        wedge = along * np.tan(max(0.5 * jaw, 0.0)) + spec.jaw_thickness + spec.jaw_gap / 2
        half_w = 0.5 * max(spec.jaw_width, CLIP_WIDTH) + 5e-4  # the jaws' whole footprint + 0.5 mm
        between = ((along >= 0.0) & (along <= jl) & (np.abs(local[:, 0]) <= half_w)
                   & (np.abs(local[:, 1]) <= wedge) & free)
        nodes = np.flatnonzero(between)
        if nodes.size == 0:
            return -1
        if nodes.size > MAX_NODES:  # keep the ones nearest the clip's mid-plane
            nodes = nodes[np.argsort(np.abs(local[nodes, 0]), kind="stable")[:MAX_NODES]]
            nodes.sort()
        c = self.n_clips
        k = nodes.size
        info = self.info
        if info is not None and info.r_in > 0.0:
            crimped = stadium(local[nodes], info.r_in, info.r_out)
        else:  # solid tissue: squeezed to CLIP_GAP across the jaws
            crimped = local[nodes].copy()
            ym = crimped[:, 1].mean()
            span = max(float(np.abs(crimped[:, 1] - ym).max()), 1e-9)
            crimped[:, 1] = ym + (crimped[:, 1] - ym) * min(1.0, 0.5 * CLIP_GAP / span)
        target = x.copy()
        target[nodes] = frame_p + crimped @ frame_r.T
        tets = self.model.tets
        held = np.zeros(x.shape[0], dtype=bool)
        held[nodes] = True
        elems = np.flatnonzero(held[tets].any(axis=1) & (self.model.volume > 0))[:MAX_ELEMS]
        p0 = x[tets[elems]]
        p1 = target[tets[elems]]
        det0 = np.linalg.det((p0[:, 1:] - p0[:, :1]).transpose(0, 2, 1))
        det1 = np.linalg.det((p1[:, 1:] - p1[:, :1]).transpose(0, 2, 1))
        flat = ~(det1 > MIN_DET * det0)  # would flatten or invert: that element keeps its shape
        p1[flat] = p0[flat]
        self.node[c] = -1
        self.node[c, :k] = nodes
        self.count[c] = k
        self.ref[c] = 0.0
        self.ref[c, :k] = crimped
        self.elems[c] = 0
        self.elems[c, :elems.size] = elems
        self.n_elems[c] = elems.size
        self.p0[c, :elems.size] = p0
        self.p1[c, :elems.size] = p1
        self.dm_e0[c, :elems.size] = self.model.dm_inv_rows[:, elems].T
        self.crimp[c] = 0.0
        self.pos[c] = frame_p
        self.quat[c] = _mat_to_quat(frame_r)
        self._record(c, nodes, frame_r, x)
        self.n_clips += 1
        return c

    def crimped_rows(self, c: int) -> np.ndarray:
        """The tissue's rest-shape rows (9, m) with clip c fully crimped (what its ramp ends at):
        the step matrix to factor for the clipped tissue (`sim.scene.Scene` rebuilds it)."""
        rows = self.model.dm_inv_rows.copy()
        crimp_elements(self.elems[c], self.n_elems[c], self.p0[c], self.p1[c], 1.0, rows)
        return rows

    def _record(self, c: int, nodes: np.ndarray, frame_r: np.ndarray, x: np.ndarray) -> None:
        info = self.info
        if info is None or info.axial is None:
            self.along[c], self.angle[c], self.spans[c] = np.nan, np.nan, False
            return
        s = float(info.axial[nodes].mean())
        self.along[c] = s
        self.spans[c] = np.unique(info.sector[nodes]).size == info.n_sectors
        # The tube's tangent at the clip: centroids of the sections 1-3 mm either side, now.
        lo = (info.axial > s - 3e-3) & (info.axial < s - 1e-3)
        hi = (info.axial > s + 1e-3) & (info.axial < s + 3e-3)
        if lo.any() and hi.any():
            t = x[hi].mean(axis=0) - x[lo].mean(axis=0)
        else:
            t = info.axis
        t = t / np.linalg.norm(t)
        cosang = abs(float(t @ frame_r[:, 2]))
        self.angle[c] = float(np.degrees(np.arccos(min(cosang, 1.0))))

    # -- per tick ------------------------------------------------------------------------------------

    def before_step(self) -> bool:
        """Advance the crimps still closing: their elements' rest shapes (before the tissue step).
        True if a rest shape changed (the tissue's carried element evaluation is then stale)."""
        dm = self.model.dm_inv_rows
        changed = False
        for c in range(self.n_clips):
            if self.crimp[c] < 1.0:
                self.crimp[c] = min(1.0, self.crimp[c] + self.dt / CRIMP_S)
                crimp_elements(self.elems[c], self.n_elems[c], self.p0[c], self.p1[c], self.crimp[c], dm)
                changed = True
        return changed

    def after_step(self, state) -> None:
        """Each clip's pose from its nodes after the step (what the renderer draws)."""
        if self.n_clips:
            fit_clips(self.n_clips, self.node, self.count, self.ref, state.x, self.pos, self.quat,
                      self.inv_mass, self.pull, self.crimp)

    def _apply(self) -> None:
        """Rest shapes of every clipped element at its clip's ramp (after a restore or a new model)."""
        dm = self.model.dm_inv_rows
        for c in range(self.n_clips):
            crimp_elements(self.elems[c], self.n_elems[c], self.p0[c], self.p1[c], self.crimp[c], dm)

    def _undo(self) -> None:
        """Give the clipped elements back their unclipped rest shapes (before a restore)."""
        dm = self.model.dm_inv_rows
        for c in range(self.n_clips):
            k = self.n_elems[c]
            dm[:, self.elems[c, :k]] = self.dm_e0[c, :k].T

    def retopologize(self, model) -> None:
        """The tissue has a new model (a cut; node and element ids are stable): crimp its elements."""
        self.model = model
        with np.errstate(divide="ignore"):
            self.inv_mass = np.where(model.fixed | (model.mass <= 0), 0.0, 1.0 / model.mass)
        self._apply()

    def clipped_nodes(self) -> np.ndarray:
        """Every node held by a clip (sorted, unique)."""
        n = self.n_clips
        return np.unique(self.node[:n][self.node[:n] >= 0])

    def records(self) -> list[dict]:
        """One dict per clip: index, along [m], angle [deg], spans_width, position [m] (3,)."""
        return [{"index": c, "along": float(self.along[c]), "angle": float(self.angle[c]),
                 "spans_width": bool(self.spans[c]), "position": self.pos[c].tolist()}
                for c in range(self.n_clips)]

    def poses(self, out: np.ndarray) -> np.ndarray:
        """Clip poses for the snapshot into out (MAX_CLIPS, 8): position [m], quaternion (x, y, z,
        w), 1 for a clip on (0 rows unused). Returns out."""
        out[:] = 0.0
        n = self.n_clips
        out[:n, :3] = self.pos[:n]
        out[:n, 3:6] = self.quat[:n, 1:]
        out[:n, 6] = self.quat[:n, 0]
        out[:n, 7] = 1.0
        return out

    # -- state ---------------------------------------------------------------------------------------

    _NOT_STATE = frozenset({"model", "info", "dt", "inv_mass", "pull"})

    def get_state(self) -> dict:
        return copy_attrs(self, self._NOT_STATE)

    def set_state(self, saved: dict) -> None:
        self._undo()
        restore_attrs(self, saved)
        self._apply()

    def hash_into(self, h) -> None:
        hash_attrs(h, self, self._NOT_STATE)


def lumen_area(x: np.ndarray, info, s: float) -> float:
    """Area [m^2] of the lumen at rest axial coordinate s [m] (the nearest mesh section): the
    polygon of its lumen-wall nodes, in sector order, projected on the plane normal to the tube's
    current tangent there (centroids of the neighbouring sections)."""
    stations = np.unique(np.round(info.axial[info.inner], 12))
    i = int(np.argmin(np.abs(stations - s)))
    s0 = stations[i]
    ring = np.flatnonzero(info.inner & (np.abs(info.axial - s0) < 1e-9))
    ring = ring[np.argsort(info.sector[ring])]
    a, b = stations[max(i - 1, 0)], stations[min(i + 1, len(stations) - 1)]
    t = (x[np.abs(info.axial - b) < 1e-9].mean(axis=0) - x[np.abs(info.axial - a) < 1e-9].mean(axis=0))
    t /= np.linalg.norm(t)
    u = np.cross(t, [0.0, 0.0, 1.0] if abs(t[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    w = np.cross(t, u)
    p = x[ring] - x[ring].mean(axis=0)
    q0, q1 = p @ u, p @ w
    return 0.5 * abs(float(np.sum(q0 * np.roll(q1, -1) - np.roll(q0, -1) * q1)))
