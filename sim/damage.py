"""Tissue damage and tearing: per-element damage in [0, 1] from the stress history, and elements
that fail (separate) when it reaches 1.

Method (continuum damage, brittle at the end; docs/clips-damage.md):
- Every `every` ticks a kernel computes each element's co-rotated small-strain Cauchy stress
  sigma = 2 mu eps + lam tr(eps) I, eps = sym(R^T F) - I (R: the element rotation of the last
  step; the same measure as `sim.tissue.element_stress`, for either elastic law), rotated back to
  the world frame.
- Non-local averaging (Pijaudier-Cabot & Bazant 1987): the stress tensor is averaged, weighted by
  rest volume, over the live elements whose rest centroids lie within `radius` [m] of the
  element's. This removes the mesh-size dependence of a local criterion and the singular stress
  at clamp corners and jaw edges; with `radius` about the structure's half width the average is
  the section stress N / A, so a strip or duct tears at its configured force.
- Damage D = clip((s1 - onset * s_t) / ((1 - onset) s_t), 0, 1), s1 the largest principal value
  of the averaged stress (tension tears tissue), s_t the element's tear stress [Pa]; D only grows
  (history maximum). Damage does not soften the element before it fails (the force-at-tear check
  stays a clean threshold); an element reaching D = 1 fails.
- Failed elements separate: `crack_blade()` gives the crack surface through them, a plane
  across the largest principal strain direction through their centroid, as wide as the failed
  band plus one element; the scene cuts the mesh along it with the cutting core
  (`sim.tissue_topology.cut`: faces separate, mass and volume kept, the next failure continues
  the crack from its front). Only if that separates nothing (a band too small to cross an edge)
  does `soften()` scale the failed elements' Lamé parameters by RESIDUAL instead (their mass
  stays with their nodes).

Under a grasper's jaws (bodies whose `BodyInfo.bite_tear_force` is set: the cholecystectomy's
organs): the tissue a grasper holds tears out of its jaws when the jaws pull on it harder than its
material's tear force for BITE_HOLD_TICKS ticks (Rodrigues et al. measured exactly that: a grasper
pulling tissue until it was damaged). The elements of the bite (incident to the held nodes) are
then torn (damage 1, in the torn volume) and the grasp ends, so the pull drops to what the contact
still pushes. While a bite holds, its elements are left out of the continuum criterion (`grip`):
on a coarse mesh a bite is one or two nodes, and the strain next to them is the point load's, not
the section's (the 9 mm gallbladder tore there at half its tear force). The bite is not cut out of
the mesh: on the 9 mm gallbladder a crack through its elements is a 1-2 cm hole, and the separated
slivers left nodes hanging in one element that shook at metres per second.

Thresholds per material (`TEAR_MATERIALS`): a tear force [N] for the structure the material
makes, from the safe pulling forces in Rodrigues et al. 2012 (1.25 N fallopian tube ... 11.4 N
fascia, ../shared/REFERENCES.md); `tear_stress = tear_force / section_area` for the structure's
nominal section.

Units: m, N, Pa. Kernels nogil, cached, float64, no allocation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from sim.scene_state import copy_attrs, hash_attrs, restore_attrs
from sim.tissue_kernels import quat_to_mat

#: Lamé scale of a failed element: small enough to carry nothing, > 0 so that no law divides by 0.
RESIDUAL = 1e-6
#: Damage starts at this fraction of the tear stress.
ONSET = 0.5
#: [s] failures closer together than this are one tear (the crack running through the section).
TEAR_GAP_S = 0.2
#: [m/s] a step with a node faster than this is a numerical transient (the contact stage or a
#: blow-up being caught), not loading: its strains do not count.
TRANSIENT_SPEED = 2.0
#: Relative strain band of the elements that fail together (the crack front).
CRACK_BAND = 0.02
#: Most elements one non-local average reads (larger neighbourhoods are sampled evenly).
MAX_NEIGHBOURS = 32
#: [ticks] a bite tears when the jaws' pull stays past its tear force this long (the attach force
#: of a one-node bite flickers tick to tick).
BITE_HOLD_TICKS = 5


@dataclass(frozen=True)
class TearMaterial:
    """Tearing threshold of one tissue.

    name: tag; tear_force: pulling force [N] at which a structure of this tissue tears;
    source: where the number comes from; onset: fraction of the tear stress where damage starts.
    """

    name: str
    tear_force: float
    source: str
    onset: float = ONSET

    def __post_init__(self):
        if not self.tear_force > 0:
            raise ValueError(f"tear force must be > 0 N, got {self.tear_force}")
        if not 0.0 <= self.onset < 1.0:
            raise ValueError(f"damage onset must be in [0, 1), got {self.onset}")

    def tear_stress(self, section_area: float) -> float:
        """Tear stress [Pa] of a structure of nominal section `section_area` [m^2]."""
        if not section_area > 0:
            raise ValueError(f"section area must be > 0 m^2, got {section_area}")
        return self.tear_force / section_area


_RODRIGUES = "Rodrigues et al. 2012, safe pulling forces (../shared/REFERENCES.md)"
#: Tear thresholds per material: the fragile and strong ends of the safe-pulling-force range, and
#: what the cholecystectomy's structures are set to (a duct or artery tears like the most fragile
#: tubes measured; the gallbladder wall between them).
TEAR_MATERIALS = {
    "fragile": TearMaterial("fragile", 1.25, _RODRIGUES + ": fallopian tube"),
    "duct": TearMaterial("duct", 1.25, _RODRIGUES + ": fallopian tube, the most fragile tube measured"),
    "artery": TearMaterial("artery", 1.25, _RODRIGUES + ": fallopian tube, the most fragile tube measured"),
    "gallbladder": TearMaterial("gallbladder", 1.25, _RODRIGUES + ": the fragile end of the 1.25-11.4 N "
                                "range (our choice for a thin-walled organ: the model's gallbladder, "
                                "an effective 10 kPa solid, needs ~15 cm of pull for 4 N; "
                                "docs/clips-damage.md)"),
    "fascia": TearMaterial("fascia", 11.4, _RODRIGUES + ": fascia"),
    "gauze": TearMaterial("gauze", 20.0, "our choice: cotton gauze does not tear under a grasper"),
}


def tear_material(name: str) -> TearMaterial:
    """A material of `TEAR_MATERIALS`; ValueError naming the known ones otherwise."""
    try:
        return TEAR_MATERIALS[name]
    except KeyError:
        raise ValueError(f"unknown tear material {name!r}; known: {', '.join(TEAR_MATERIALS)}") from None


@nb.njit(nogil=True, cache=True, error_model="numpy")
def element_world_strain(tets, dm_inv, q, x, failed, eps):
    """Co-rotated (Biot) strain sym(R^T F) - I of each live element, in the world frame, into eps
    (m, 6) [-] (xx, yy, zz, xy, xz, yz); failed elements get 0. dm_inv (9, m) [1/m] rows,
    q (4, m) element rotations (w, x, y, z), x (n, 3) [m]."""
    m = tets.shape[0]
    for e in range(m):
        if failed[e]:
            for k in range(6):
                eps[e, k] = 0.0
            continue
        i0, i1, i2, i3 = tets[e, 0], tets[e, 1], tets[e, 2], tets[e, 3]
        f00 = f01 = f02 = f10 = f11 = f12 = f20 = f21 = f22 = 0.0
        for c in range(3):
            a1 = x[i1, c] - x[i0, c]
            a2 = x[i2, c] - x[i0, c]
            a3 = x[i3, c] - x[i0, c]
            r0 = a1 * dm_inv[0, e] + a2 * dm_inv[3, e] + a3 * dm_inv[6, e]
            r1 = a1 * dm_inv[1, e] + a2 * dm_inv[4, e] + a3 * dm_inv[7, e]
            r2 = a1 * dm_inv[2, e] + a2 * dm_inv[5, e] + a3 * dm_inv[8, e]
            if c == 0:
                f00, f01, f02 = r0, r1, r2
            elif c == 1:
                f10, f11, f12 = r0, r1, r2
            else:
                f20, f21, f22 = r0, r1, r2
        r = quat_to_mat(q[0, e], q[1, e], q[2, e], q[3, e])
        # G = R^T F, S = sym(G) - I (co-rotated frame)
        g00 = r[0] * f00 + r[3] * f10 + r[6] * f20
        g01 = r[0] * f01 + r[3] * f11 + r[6] * f21
        g02 = r[0] * f02 + r[3] * f12 + r[6] * f22
        g10 = r[1] * f00 + r[4] * f10 + r[7] * f20
        g11 = r[1] * f01 + r[4] * f11 + r[7] * f21
        g12 = r[1] * f02 + r[4] * f12 + r[7] * f22
        g20 = r[2] * f00 + r[5] * f10 + r[8] * f20
        g21 = r[2] * f01 + r[5] * f11 + r[8] * f21
        g22 = r[2] * f02 + r[5] * f12 + r[8] * f22
        s00, s11, s22 = g00 - 1.0, g11 - 1.0, g22 - 1.0
        s01, s02, s12 = 0.5 * (g01 + g10), 0.5 * (g02 + g20), 0.5 * (g12 + g21)
        # world: R S R^T
        t00 = r[0] * s00 + r[1] * s01 + r[2] * s02
        t01 = r[0] * s01 + r[1] * s11 + r[2] * s12
        t02 = r[0] * s02 + r[1] * s12 + r[2] * s22
        t10 = r[3] * s00 + r[4] * s01 + r[5] * s02
        t11 = r[3] * s01 + r[4] * s11 + r[5] * s12
        t12 = r[3] * s02 + r[4] * s12 + r[5] * s22
        t20 = r[6] * s00 + r[7] * s01 + r[8] * s02
        t21 = r[6] * s01 + r[7] * s11 + r[8] * s12
        t22 = r[6] * s02 + r[7] * s12 + r[8] * s22
        eps[e, 0] = t00 * r[0] + t01 * r[1] + t02 * r[2]
        eps[e, 1] = t10 * r[3] + t11 * r[4] + t12 * r[5]
        eps[e, 2] = t20 * r[6] + t21 * r[7] + t22 * r[8]
        eps[e, 3] = t00 * r[3] + t01 * r[4] + t02 * r[5]
        eps[e, 4] = t00 * r[6] + t01 * r[7] + t02 * r[8]
        eps[e, 5] = t10 * r[6] + t11 * r[7] + t12 * r[8]


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def max_principal(a00, a11, a22, a01, a02, a12):
    """Largest eigenvalue of a symmetric 3x3 matrix (closed form, Smith 1961)."""
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    q = (a00 + a11 + a22) / 3.0
    if p1 <= 1e-30 * (q * q + 1e-300):
        return max(a00, max(a11, a22))
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p2 = b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1
    p = math.sqrt(p2 / 6.0)
    inv = 1.0 / p
    b00 *= inv
    b11 *= inv
    b22 *= inv
    c01, c02, c12 = a01 * inv, a02 * inv, a12 * inv
    det = b00 * (b11 * b22 - c12 * c12) - c01 * (c01 * b22 - c12 * c02) + c02 * (c01 * c12 - b11 * c02)
    r = min(max(0.5 * det, -1.0), 1.0)
    return q + 2.0 * p * math.cos(math.acos(r) / 3.0)


def _flat(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Integer arrays `parts` as one int64 array and its offsets (len(parts) + 1,)."""
    ptr = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=ptr[1:])
    return (np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)), ptr


@nb.njit(nogil=True, cache=True, error_model="numpy")
def bite_pulls(nodes, node_ptr, elements, el_ptr, f_ext, failed, volume, bite_force, pull, limit):
    """Each held bite b (its nodes nodes[node_ptr[b]:node_ptr[b + 1]], its elements
    elements[el_ptr[b]:el_ptr[b + 1]]): pull[b] = |sum of f_ext (n, 3) [N] over its nodes| [N],
    limit[b] = the smallest bite_force (m,) [N] of its live (volume > 0), unfailed elements (inf if
    none is left)."""
    for b in range(node_ptr.shape[0] - 1):
        fx = fy = fz = 0.0
        for j in range(node_ptr[b], node_ptr[b + 1]):
            i = nodes[j]
            fx += f_ext[i, 0]
            fy += f_ext[i, 1]
            fz += f_ext[i, 2]
        pull[b] = math.sqrt(fx * fx + fy * fy + fz * fz)
        lim = math.inf
        for j in range(el_ptr[b], el_ptr[b + 1]):
            e = elements[j]
            if volume[e] > 0.0 and not failed[e] and bite_force[e] < lim:
                lim = bite_force[e]
        limit[b] = lim


@nb.njit(nogil=True, cache=True, error_model="numpy")
def damage_update(sig, nl_ptr, nl_idx, nl_w, failed, tear_strain, onset, damage, s1, newly):
    """Non-local average of the strains sig (m, 6) over each element's neighbourhood (CSR nl_ptr,
    nl_idx, rest volume weights nl_w; failed elements excluded), its largest principal value into
    s1 (m,) [-], damage (m,) raised to the history maximum against tear_strain (m,) [-]; elements
    strained past the tear strain now (not yet failed) are written to newly[:k]. Returns k.

    An element whose damage onset (onset * tear_strain) lies above every live element's largest
    principal strain cannot gain damage (the average of the neighbourhood cannot exceed it: the
    largest eigenvalue is convex): its average is skipped and s1 gets that bound instead. For an
    expert's whole cholecystectomy that is every element (the update took ~0.3 ms every 5th tick)."""
    m = sig.shape[0]
    bound = 0.0  # Gershgorin bound of the largest principal strain of any live element
    for o in range(m):
        if not failed[o]:
            ax, ay, az = abs(sig[o, 3]), abs(sig[o, 4]), abs(sig[o, 5])  # xy, xz, yz
            bound = max(bound, sig[o, 0] + ax + ay, sig[o, 1] + ax + az, sig[o, 2] + ay + az)
    k = 0
    for e in range(m):
        if failed[e]:
            s1[e] = 0.0
            continue
        if bound < onset[e] * tear_strain[e]:
            s1[e] = bound
            continue
        a0 = a1 = a2 = a3 = a4 = a5 = 0.0
        wsum = 0.0
        for j in range(nl_ptr[e], nl_ptr[e + 1]):
            o = nl_idx[j]
            if failed[o]:
                continue
            w = nl_w[j]
            wsum += w
            a0 += w * sig[o, 0]
            a1 += w * sig[o, 1]
            a2 += w * sig[o, 2]
            a3 += w * sig[o, 3]
            a4 += w * sig[o, 4]
            a5 += w * sig[o, 5]
        if wsum <= 0.0:
            s1[e] = 0.0
            continue
        inv = 1.0 / wsum
        s = max_principal(a0 * inv, a1 * inv, a2 * inv, a3 * inv, a4 * inv, a5 * inv)
        s1[e] = s
        st = tear_strain[e]
        d = (s - onset[e] * st) / ((1.0 - onset[e]) * st)
        if d > damage[e]:
            damage[e] = min(d, 1.0)
        if d >= 1.0:  # strained past the tear strain now (not only at some earlier time)
            newly[k] = e
            k += 1
    return k


def neighbourhoods(rest: np.ndarray, tets: np.ndarray, volume: np.ndarray, radius: float,
                   max_neighbours: int = MAX_NEIGHBOURS):
    """CSR (ptr (m+1,), idx, weights) of the elements whose rest centroids lie within radius [m] of
    each element's (itself included), weighted by rest volume [m^3]. A neighbourhood with more than
    max_neighbours elements is sampled evenly (every k-th by distance order, weights times k), which
    bounds the cost per element and keeps the average (the mesh is near uniform)."""
    from scipy.spatial import cKDTree

    c = rest[tets].mean(axis=1)
    tree = cKDTree(c)
    lists = tree.query_ball_point(c, r=max(radius, 0.0))
    idx_l, w_l = [], []
    for e, li in enumerate(lists):
        li = np.array(sorted(li), dtype=np.int64)
        w = volume[li].astype(np.float64)
        if li.size > max_neighbours:
            order = np.argsort(np.linalg.norm(c[li] - c[e], axis=1), kind="stable")
            k = li.size / max_neighbours
            pick = order[(np.arange(max_neighbours) * k).astype(np.int64)]
            li, w = li[pick], w[pick] * k
        idx_l.append(li)
        w_l.append(w)
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([li.size for li in idx_l], out=ptr[1:])
    return ptr, np.concatenate(idx_l), np.concatenate(w_l)


class DamageField:
    """Damage and failure of one tissue body's elements (see the module docstring).

    Args:
        model: the tissue (`sim.tissue_model.TissueModel`); its mu/lam are scaled in place on failure.
        tear_stress: per element [Pa], shape (m,) (np.inf: never tears).
        radius: non-local averaging radius [m].
        onset: damage onset as a fraction of the tear stress (scalar or (m,)).
        every: ticks between damage updates.

    State (saved, restored, hashed): damage (m,) in [0, 1], failed (m,) bool, soft (m,) bool
    (failed elements softened instead of separated), ticks.
    """

    def __init__(self, model, tear_stress, *, radius: float, onset=ONSET, every: int = 5,
                 bite_force=None) -> None:
        m = model.tet_count
        self.model = model
        self.tear_stress = np.broadcast_to(np.asarray(tear_stress, np.float64), (m,)).copy()
        # Uniaxial tension: stress = E strain, so the tear strain is tear_stress / E per element.
        young = model.mu * (3.0 * model.lam + 2.0 * model.mu) / (model.lam + model.mu)
        self.tear_strain = self.tear_stress / young
        self.onset = np.broadcast_to(np.asarray(onset, np.float64), (m,)).copy()
        self.every = max(1, int(every))
        self.nl_ptr, self.nl_idx, self.nl_w = neighbourhoods(model.rest, model.tets, model.volume, radius)
        self.mu0 = model.mu.copy()
        self.lam0 = model.lam.copy()
        self.sig = np.zeros((m, 6))
        self.s1 = np.zeros(m)
        self.newly = np.zeros(m, dtype=np.int64)
        self.damage = np.zeros(m)
        self.failed = np.zeros(m, dtype=np.bool_)
        self.soft = np.zeros(m, dtype=np.bool_)  # failed and not separated: softened
        self.off = np.zeros(m, dtype=np.bool_)  # failed or dead (removed by a cut): no strain, no say
        self.held = np.zeros(m, dtype=np.bool_)  # crushed under a clip on purpose: no tear, no say
        self.gripped = np.zeros(m, dtype=np.bool_)  # in a grasper's bite now: judged by `bite_force`
        #: (m,) [N] pull at which a bite on an element's nodes tears out (None: bites never tear).
        self.bite_force = (None if bite_force is None else
                           np.broadcast_to(np.asarray(bite_force, np.float64), (m,)).copy())
        self.ticks = 0
        if self.bite_force is not None:  # compile (or load) the bite kernel now, not at a grasp
            self.bite_pulls(self.bite_set([]), np.zeros((0, 3)), np.zeros(0), np.zeros(0))

    def update(self, state) -> np.ndarray:
        """One tick: every `every` ticks recompute the damage; returns the elements that failed now
        (marked failed; the caller separates them: `crack_blade`, or `soften`), possibly empty."""
        self.ticks += 1
        if self.ticks % self.every or state.max_speed > TRANSIENT_SPEED:
            return self.newly[:0]
        element_world_strain(self.model.tets_u, self.model.dm_inv_rows, state.q, state.x, self.off,
                             self.sig)
        k = damage_update(self.sig, self.nl_ptr, self.nl_idx, self.nl_w, self.off, self.tear_strain,
                          self.onset, self.damage, self.s1, self.newly)
        if k:
            # The crack starts where the strain is highest: only the elements within CRACK_BAND of
            # the largest strain fail now; the section's others carry the load and fail next time
            # if still strained past the threshold (a crack runs through instead of a band failing).
            cand = self.newly[:k]
            s = self.s1[cand]
            keep = cand[s >= (1.0 - CRACK_BAND) * s.max()]
            k = keep.size
            self.newly[:k] = keep
            self.separate(self.newly[:k])
        return self.newly[:k]

    def separate(self, elements: np.ndarray) -> None:
        """Mark elements failed (damage 1): they no longer take part in the strain averages. Their
        stiffness is untouched: the crack (`crack_blade`) or `soften` takes their load away."""
        self.failed[elements] = True
        self.damage[elements] = 1.0
        self._refresh_off()

    def crack_blade(self, x: np.ndarray, elements: np.ndarray):
        """The crack surface through failed elements (k,) at positions x (n, 3) [m]: a square
        `sim.cutting.Blade` through their volume-weighted centroid, normal to the largest principal
        direction of their mean strain (what pulled them apart), reaching one element size beyond
        the farthest of them in its plane. None if there is no element."""
        from sim.cutting import quad_blade

        el = np.asarray(elements, dtype=np.int64)
        if el.size == 0:
            return None
        tets = self.model.tets[el]
        vol = np.maximum(self.model.volume[el], 0.0) + 1e-30
        cen = x[tets].mean(axis=1)
        c = (cen * vol[:, None]).sum(axis=0) / vol.sum()
        e = (self.sig[el] * vol[:, None]).sum(axis=0) / vol.sum()
        t = np.array([[e[0], e[3], e[4]], [e[3], e[1], e[5]], [e[4], e[5], e[2]]])
        w, v = np.linalg.eigh(t)
        d = v[:, int(np.argmax(w))]
        u = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        b = np.cross(d, u)
        rel = cen - c
        rel -= np.outer(rel @ d, d)
        h = float(np.cbrt(12.0 * max(float(self.model.volume[el].mean()), 1e-30)))  # ~ edge length
        r = float(np.linalg.norm(rel, axis=1).max()) + 1.5 * h
        return quad_blade(c - r * u - r * b, c + r * u - r * b, c + r * u + r * b, c - r * u + r * b)

    def soften(self, elements: np.ndarray) -> None:
        """Failed elements that no crack separated carry no more stress (Lamé scaled by RESIDUAL,
        mass kept). The caller re-evaluates the tissue (`TissueState.carried = False`)."""
        self.soft[elements] = True
        self._apply_failed()

    def _refresh_off(self) -> None:
        live = self.model.volume > 0.0
        np.logical_or(self.failed, ~live, out=self.off)
        self.off |= self.held
        self.off |= self.gripped

    def _apply_failed(self) -> None:
        live = self.model.volume > 0.0
        self._refresh_off()
        scale = np.where(self.soft, RESIDUAL, 1.0) * live
        np.multiply(self.mu0, scale, out=self.model.mu)
        np.multiply(self.lam0, scale, out=self.model.lam)

    def hold(self, elements: np.ndarray) -> None:
        """Elements a clip crushed (`sim.clips`): their strain is the clip's doing, not a pull, so they
        neither tear nor count in their neighbours' non-local average (a clip on a retracted duct
        otherwise tore it next to the clip at 0.2 N of pull)."""
        self.held[elements] = True
        self._apply_failed()

    def bite_elements(self, nodes: np.ndarray) -> np.ndarray:
        """Live elements incident to `nodes` (a grasper's bite), element ids (k,), sorted."""
        model = self.model
        nodes = np.asarray(nodes, dtype=np.int64)
        ptr = model.node_ptr.astype(np.int64)
        lo, counts = ptr[nodes], ptr[nodes + 1] - ptr[nodes]
        # The incidence slots of every node in one index array: node j's run starts at lo[j].
        start = np.cumsum(counts) - counts
        slots = np.repeat(lo - start, counts) + np.arange(int(counts.sum()))
        e = np.unique(model.node_inc[slots].astype(np.int64) >> 2)
        return e[model.volume[e] > 0.0]

    def grip(self, nodes: np.ndarray) -> None:
        """The nodes every grasper holds now (after a grasp or a release): their elements leave
        the continuum criterion while held (see the module docstring)."""
        self.gripped[:] = False
        self.gripped[self.bite_elements(nodes)] = True
        self._refresh_off()

    def bite_pulls(self, bites: tuple, f_ext: np.ndarray, pull: np.ndarray, limit: np.ndarray) -> None:
        """`bite_pulls` (the kernel) for `bites` = (nodes, node_ptr, elements, el_ptr) (`bite_set`):
        each bite's pull [N] and the pull it tears out at [N] (bite_force must be set)."""
        nodes, node_ptr, elements, el_ptr = bites
        bite_pulls(nodes, node_ptr, elements, el_ptr, f_ext, self.failed, self.model.volume,
                   self.bite_force, pull, limit)

    def bite_set(self, groups: list[np.ndarray]) -> tuple:
        """The flat arrays `bite_pulls` takes for bites holding the node groups `groups`: (nodes,
        node_ptr, elements, el_ptr), each bite's elements its nodes' live ones now."""
        return (*_flat(groups), *_flat([self.bite_elements(g) for g in groups]))

    def tear_bite(self, nodes: np.ndarray) -> np.ndarray:
        """The bite on `nodes` tore out: its weakest material's elements are torn (damage 1,
        failed); returns them. Their stiffness is kept (see the module docstring)."""
        el = self.bite_elements(nodes)
        el = el[~self.failed[el]]
        if el.size:
            el = el[self.bite_force[el] <= self.bite_force[el].min() * (1.0 + 1e-9)]
            self.separate(el)
        return el

    def retopologize(self, model) -> None:
        """The tissue has a new model (element ids are stable; dead elements have volume 0)."""
        self.model = model
        self._apply_failed()

    # -- metrics -------------------------------------------------------------------------------------

    def summary(self) -> dict:
        """Tissue-damage metrics: max and volume-mean damage [-], damaged volume (D >= 0.5) and
        torn volume [mm^3], failed elements [count]."""
        vol = self.model.volume
        total = float(vol.sum())
        return {
            "damage_max": float(self.damage.max()) if self.damage.size else 0.0,
            "damage_mean": float((self.damage * vol).sum() / total) if total > 0 else 0.0,
            "damaged_mm3": float(vol[self.damage >= 0.5].sum() * 1e9),
            "torn_mm3": float(vol[self.failed].sum() * 1e9),
            "failed": int(self.failed.sum()),
        }

    # -- state ---------------------------------------------------------------------------------------

    _NOT_STATE = frozenset({"model", "tear_stress", "tear_strain", "onset", "every", "nl_ptr", "nl_idx",
                            "nl_w", "mu0", "lam0", "sig", "s1", "newly", "off", "bite_force"})

    def get_state(self) -> dict:
        return copy_attrs(self, self._NOT_STATE)

    def set_state(self, saved: dict) -> None:
        restore_attrs(self, saved)
        self._apply_failed()

    def hash_into(self, h) -> None:
        hash_attrs(h, self, self._NOT_STATE)
