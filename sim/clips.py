"""Surgical clips: closing the clip applier on a tube crimps it, and the clip stays on.

Firing (`ClipSet.fire`): when the applier's jaw command closes past CLIP_FIRE, the tissue nodes
between its jaws, within its jaw width (+0.5 mm) across the jaw plane, are taken by a new clip, in
the applier's shaft frame at that tick: x (across the jaws: along the tube when the clip is square
to it), y (the closing direction), z (along the jaws).

Method: a clip is a rigid titanium part pressing its tissue into a crimped shape. Each clipped
node gets a crimped position: a tube's section (lumen radius r_in, outer radius r_out from
`BodyInfo`) is flattened into a "stadium": the wall's mid-surface keeps its perimeter and becomes
two flat layers joined by two folds of radius t/2 (t = r_out - r_in), so the lumen closes to a
slit (the inner walls meet on the clip's mid-plane) and the wall keeps its thickness; solid
tissue is squeezed to CLIP_GAP. The clip holds its nodes to that template by persistent stiff
springs (CLIP_STIFFNESS per node) in the tissue step's potential, as a tether
(`sim.tissue_tethers`: the energy of a massless rigid body tied to the nodes, minimised over its
pose): the tissue's elements keep their rest shapes and push back, the clip holds them, and the
clip's pose is whatever fits its nodes best, so it rides with the tissue wherever the tube is
moved. The template ramps from the nodes' positions at firing to the crimp over CRIMP_S. The
tethers' Hessian is added to the factored step matrix (`crimp_springs`; the scene refactors it
off the hot path and swaps it in CLIP_REFACTOR_TICKS after the clip fired), so that the
preconditioner knows them; SETTLE_TICKS after firing the step matrix is refactored at the
clipped configuration (`configuration`: the crimped wall's elements turn up to ~75 deg against
each other). Clipped nodes are left out of tool contact.

Before (issue 14, first rounds) the clip changed the crushed elements' rest shapes instead: the
rest-shaped preconditioner never matched them (20-40 element passes a tick) and a clipped tube
lifted 5 mm by its ends followed only ~2 mm in its middle (docs/clips-damage.md).

Record per clip (`records()`): position along the tube [m] (mean rest axial coordinate of its
nodes), angle to the tube axis [deg] (between the clip's jaw direction and the tube's tangent at
the clip; 90 = square), spans_width (its nodes cover every circumferential sector of the tube).
Its pose (drawn, snapshot): the applier's frame at firing, moved with the tether's fit.

Units: m, s, N.
"""

from __future__ import annotations

import numpy as np

from sim.scene_state import copy_attrs, hash_attrs, restore_attrs
from sim.tissue_kernels import quat_to_mat
from sim.tissue_solver import node_frames
from sim.tissue_tethers import fit_tethers, tether_stiffness

MAX_CLIPS = 16  # clips per scene (fixed: the snapshot row count)
MAX_NODES = 160  # tissue nodes one clip can hold
MAX_ELEMS = 640  # elements one clip holds back from tearing
CLIP_WIDTH = 4.0e-3  # [m] footprint across the jaw plane: the applier's jaw width (CLIP_APPLIER)
CLIP_GAP = 1.0e-3  # [m] closed clip's inner gap on tissue without a lumen
CLIP_FIRE = 0.5  # [rad] the applier fires (its ratchet engages) when the jaw command closes past this
CLIP_REARM = 0.6  # [rad] ... and loads the next clip when opened past this again
CRIMP_S = 0.05  # [s] crimp ramp
CLIP_STIFFNESS = 5.0e3  # [N/m] per clipped node: the tether holding it to the clip's template
#: ticks from firing to the swap of the step matrix with the clip's tether (factoring the
#: cholecystectomy's ~500 nodes takes 15-25 ms; the swap waits for the worker if it is late).
#: Until it is in, the stiff tether costs 9-12 element passes a tick.
CLIP_REFACTOR_TICKS = 25
#: ticks from firing to the snapshot of the clipped tissue for a step matrix assembled there (the
#: crimp closes in CRIMP_S, the tissue settles into it in ~0.1 s more; taken at the crimp's end,
#: 50 ticks, a lifted clipped duct needed 6.5 element passes a tick instead of 1)
SETTLE_TICKS = 150
FIT_ITERS = 8  # polar iterations per tick for the clip pose (warm-started)


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
        model: the tissue (`sim.tissue_model.TissueModel`); its `springs` are set to the clips' tethers.
        info: its `sim.tissue_bodies.BodyInfo` (tube coordinates, lumen radius; a body without
        them can still be clipped). dt [s]; n_tools.

    State (saved, restored, hashed): n_clips; per clip its nodes (node, count), their positions at
    firing and crimped (t0, t1) and the template now (tmpl) [m], tether stiffness (stiff) [N/m],
    the tether's rotation since firing and node centroid (rq, centre), the applier frame at firing
    (fire_p, fire_q), the elements it holds from tearing (elems, n_elems), crimp ramp, pose (pos,
    quat), record (along, angle, spans); per tool the jaw memory `armed` (a clip is loaded once the
    jaws open past CLIP_REARM: not at the start, where the held jaws are closed and a loaded
    applier fired into the air on the first tick of every session with a device). `springs` (the
    tethers' Hessian, derived) is saved and restored with it.
    """

    def __init__(self, model, info, dt: float, n_tools: int) -> None:
        self.model, self.info, self.dt = model, info, float(dt)
        self.inv_mass = np.where(model.fixed, 0.0, 1.0 / model.mass)
        self.n_clips = 0
        self.node = np.zeros((MAX_CLIPS, MAX_NODES), dtype=np.int64)
        self.count = np.zeros(MAX_CLIPS, dtype=np.int64)
        self.t0 = np.zeros((MAX_CLIPS, MAX_NODES, 3))
        self.t1 = np.zeros((MAX_CLIPS, MAX_NODES, 3))
        self.tmpl = np.zeros((MAX_CLIPS, MAX_NODES, 3))
        self.stiff = np.zeros(MAX_CLIPS)
        self.rq = np.zeros((MAX_CLIPS, 4))
        self.rq[:, 0] = 1.0
        self.centre = np.zeros((MAX_CLIPS, 3))
        self.fire_p = np.zeros((MAX_CLIPS, 3))
        self.fire_q = np.zeros((MAX_CLIPS, 4))
        self.fire_q[:, 0] = 1.0
        self.elems = np.zeros((MAX_CLIPS, MAX_ELEMS), dtype=np.int64)
        self.n_elems = np.zeros(MAX_CLIPS, dtype=np.int64)
        self.crimp = np.zeros(MAX_CLIPS)
        self.age = np.zeros(MAX_CLIPS, dtype=np.int64)
        self.pos = np.zeros((MAX_CLIPS, 3))
        self.quat = np.zeros((MAX_CLIPS, 4))
        self.quat[:, 0] = 1.0
        self.along = np.full(MAX_CLIPS, np.nan)
        self.angle = np.full(MAX_CLIPS, np.nan)
        self.spans = np.zeros(MAX_CLIPS, dtype=np.bool_)
        self.armed = np.zeros(n_tools, dtype=np.bool_)
        self.springs = None
        model.springs = None

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
        held = np.zeros(x.shape[0], dtype=bool)
        held[nodes] = True
        elems = np.flatnonzero(held[self.model.tets].any(axis=1) & (self.model.volume > 0))[:MAX_ELEMS]
        self.node[c] = 0
        self.node[c, :k] = nodes
        self.count[c] = k
        self.t0[c] = 0.0
        self.t0[c, :k] = x[nodes]
        self.t1[c] = 0.0
        self.t1[c, :k] = frame_p + crimped @ frame_r.T
        self.tmpl[c] = self.t0[c]
        self.stiff[c] = CLIP_STIFFNESS
        self.rq[c] = (1.0, 0.0, 0.0, 0.0)
        self.centre[c] = x[nodes].mean(axis=0)
        self.fire_p[c] = frame_p
        self.fire_q[c] = _mat_to_quat(frame_r)
        self.elems[c] = 0
        self.elems[c, :elems.size] = elems
        self.n_elems[c] = elems.size
        self.crimp[c] = 0.0
        self.age[c] = 0
        self.pos[c] = frame_p
        self.quat[c] = self.fire_q[c]
        self._record(c, nodes, frame_r, x)
        self.n_clips += 1
        self._set_springs(crimp_springs(self, self.model.node_count))
        return c

    def _set_springs(self, springs) -> None:
        self.springs = springs
        self.model.springs = springs

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
        """Advance the crimps still closing: their templates (before the tissue step). True if a
        clip is SETTLE_TICKS old: time to refactor the step matrix at the clipped configuration
        (`configuration`)."""
        done = False
        for c in range(self.n_clips):
            if self.crimp[c] < 1.0:
                s = self.crimp[c] = min(1.0, self.crimp[c] + self.dt / CRIMP_S)
                self.tmpl[c] = (1.0 - s) * self.t0[c] + s * self.t1[c]
            self.age[c] += 1
            done |= self.age[c] == SETTLE_TICKS
        return done

    def configuration(self, state) -> tuple:
        """The tissue's configuration now for a step matrix assembled there (`TissueSystem.build`'s
        `at`): element rotations, node frames (a clipped node's: its clip's rotation), the tethers'
        stiffness in this frame."""
        model = self.model
        frames = self.frames_into(state, np.zeros((model.node_count, 4)))
        return state.q.copy(), frames, crimp_springs(self, model.node_count, turned=True)

    def frames_into(self, state, out: np.ndarray) -> np.ndarray:
        """The node frames of `configuration` (n, 4) into out (its first n rows); returns them."""
        model = self.model
        frames = out[:model.node_count]
        node_frames(model.node_ptr, model.node_inc, model.node_rep, state.q, state.weight, frames)
        for c in range(self.n_clips):
            frames[self.node[c, :self.count[c]]] = self.rq[c]
        return frames

    def tethers(self) -> tuple:
        """The clips as tethers for the tissue step (`sim.tissue.step`, `sim.tissue_tethers`)."""
        return self.n_clips, self.node, self.count, self.tmpl, self.stiff, self.rq

    def after_step(self, state) -> None:
        """Each clip's rotation and pose from its nodes after the step (the next step's warm start;
        what the renderer draws)."""
        n = self.n_clips
        if not n:
            return
        fit_tethers(n, self.node, self.count, self.tmpl, self.rq, state.x, FIT_ITERS, self.centre)
        for c in range(n):
            k = self.count[c]
            r = np.array(quat_to_mat(*self.rq[c])).reshape(3, 3)
            self.pos[c] = self.centre[c] + r @ (self.fire_p[c] - self.tmpl[c, :k].mean(axis=0))
            self.quat[c] = _quat_mul(self.rq[c], self.fire_q[c])

    def retopologize(self, model) -> None:
        """The tissue has a new model (a cut; node and element ids are stable): it keeps the tethers."""
        self.model = model
        with np.errstate(divide="ignore"):
            self.inv_mass = np.where(model.fixed | (model.mass <= 0), 0.0, 1.0 / model.mass)
        model.springs = self.springs

    def clipped_nodes(self) -> np.ndarray:
        """Every node held by a clip (sorted, unique)."""
        n = self.n_clips
        return np.unique(np.concatenate([self.node[c, :self.count[c]] for c in range(n)])) if n else \
            np.zeros(0, dtype=np.int64)

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

    _NOT_STATE = frozenset({"model", "info", "dt", "inv_mass", "springs"})

    def get_state(self) -> dict:
        out = copy_attrs(self, self._NOT_STATE)
        out["springs"] = self.springs  # never changed in place: a new matrix per clip
        return out

    def set_state(self, saved: dict) -> None:
        saved = dict(saved)
        springs = saved.pop("springs")
        restore_attrs(self, saved)
        self._set_springs(springs)

    def hash_into(self, h) -> None:
        hash_attrs(h, self, self._NOT_STATE)


def crimp_springs(clips: ClipSet, n: int, turned: bool = False):
    """The tethers' stiffness at their crimped templates [N/m], (3n, 3n) (`TissueModel.springs`);
    turned: the templates turned as each clip is now (else as at firing)."""
    groups = []
    for c in range(clips.n_clips):
        t = clips.t1[c, :clips.count[c]]
        if turned:
            t = t @ np.array(quat_to_mat(*clips.rq[c])).reshape(3, 3).T
        groups.append((clips.node[c, :clips.count[c]], t, clips.stiff[c]))
    return tether_stiffness(groups, n)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a b of (w, x, y, z) quaternions."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


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


def wall_gap(x: np.ndarray, clips: ClipSet, info, c: int) -> float:
    """Largest distance [m] of clip c's lumen-wall nodes (positions x (n, 3) [m]) from its
    mid-plane, along the clip's closing axis now: 0 when the closed lumen's inner walls meet."""
    nodes = clips.node[c, :clips.count[c]]
    nodes = nodes[info.inner[nodes]]
    closing = np.array(quat_to_mat(*clips.quat[c])).reshape(3, 3)[:, 1]
    y = (x[nodes] - clips.pos[c]) @ closing
    return float(np.abs(y - y.mean()).max())
