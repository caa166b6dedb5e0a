"""Tethers: groups of tissue nodes held to a rigid template by stiff springs (a clip's jaws).

A group g (nodes node[g, :count[g]], template positions tmpl[g] [m], stiffness k[g] [N/m] per
node) adds to the tissue step's incremental potential the shape-matching energy (Müller et al.
2005)

    E_g(x) = k/2 sum_a |x_a - c - R (t_a - t_c)|^2,   c, t_c the centroids of x and of the template,
                                                      R = polar(sum_a (x_a - c)(t_a - t_c)^T)

the energy of a massless rigid body (the template) tied to its nodes, minimised over its pose. It
pulls the nodes into the template's shape and does not resist the group moving or turning as a
whole: a clip closes its tissue and rides with it. Its gradient is k (x_a - c - R (t_a - t_c))
(the pose is optimal: envelope theorem); its Hessian at a fit is k (I - P), P the projector onto
the group's six rigid modes (`tether_stiffness`, added to the factored step matrix so that the
preconditioner knows the tethers; `sim.tissue_model.TissueSystem`).

In the step (`sim.tissue_solver`) a tethered node's frame is its group's R (the preconditioner's
blocks k (I - P) are then exact whatever its elements' rotations: the walls of a crimped tube
turn by up to 90 deg at the folds), its residual gets the tether force and each trial's energy
the tether energy. R is warm-started from q[g] (the group's rotation after the last step, which
the owner updates: `fit_tethers`) with TRIAL_ITERS polar iterations per evaluation: the gradient
above is the energy's only at the best R, and a crimped clip's template is nearly flat, where
the first-order polar iteration converges slowly; with 4 the line search rejected moves of about
the velocity tolerance that the gradient promised (a clipped duct creeping back after the applier
withdrew: 6.6 element passes a tick for 0.5 s; with 16: 1.0). 16 iterations of a 3x3 update cost
nothing next to the sums over the group's nodes.

`sim.tissue_solver.step_kernel` inlines these kernels: the Numba cache directory follows a hash
of every kernel file (`sim/__init__`), so editing this one recompiles it too.

Units: m, N. Kernels nogil, cached, float64, no allocation.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp

from sim.tissue_kernels import polar_step, quat_to_mat, relative_quat

TRIAL_ITERS = 16  # polar iterations per evaluation, from the group's last rotation (docstring)


@nb.njit(nogil=True, cache=True)
def _fit(g, node, count, tmpl, q, x, s, dx, iters):
    """(c (3,), t_c (3,), R (9,) row-major, quaternion) of group g at x + s dx [m]."""
    k = count[g]
    cx = cy = cz = tx = ty = tz = 0.0
    for a in range(k):
        j = node[g, a]
        cx += x[j, 0] + s * dx[j, 0]
        cy += x[j, 1] + s * dx[j, 1]
        cz += x[j, 2] + s * dx[j, 2]
        tx += tmpl[g, a, 0]
        ty += tmpl[g, a, 1]
        tz += tmpl[g, a, 2]
    inv = 1.0 / k
    cx *= inv
    cy *= inv
    cz *= inv
    tx *= inv
    ty *= inv
    tz *= inv
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = 0.0
    for a in range(k):
        j = node[g, a]
        px = x[j, 0] + s * dx[j, 0] - cx
        py = x[j, 1] + s * dx[j, 1] - cy
        pz = x[j, 2] + s * dx[j, 2] - cz
        rx = tmpl[g, a, 0] - tx
        ry = tmpl[g, a, 1] - ty
        rz = tmpl[g, a, 2] - tz
        a00 += px * rx
        a01 += px * ry
        a02 += px * rz
        a10 += py * rx
        a11 += py * ry
        a12 += py * rz
        a20 += pz * rx
        a21 += pz * ry
        a22 += pz * rz
    w, qa, qb, qc = q[g, 0], q[g, 1], q[g, 2], q[g, 3]
    for _ in range(iters):
        w, qa, qb, qc = polar_step(a00, a01, a02, a10, a11, a12, a20, a21, a22, w, qa, qb, qc)
    return cx, cy, cz, tx, ty, tz, quat_to_mat(w, qa, qb, qc), w, qa, qb, qc


@nb.njit(nogil=True, cache=True)
def _offset(g, a, node, tmpl, fit, x, s, dx):
    """Node a of group g at x + s dx minus its place on the fitted template [m] (fit: `_fit`)."""
    cx, cy, cz, tx, ty, tz, r = fit[0], fit[1], fit[2], fit[3], fit[4], fit[5], fit[6]
    j = node[g, a]
    rx = tmpl[g, a, 0] - tx
    ry = tmpl[g, a, 1] - ty
    rz = tmpl[g, a, 2] - tz
    return (x[j, 0] + s * dx[j, 0] - cx - (r[0] * rx + r[1] * ry + r[2] * rz),
            x[j, 1] + s * dx[j, 1] - cy - (r[3] * rx + r[4] * ry + r[5] * rz),
            x[j, 2] + s * dx[j, 2] - cz - (r[6] * rx + r[7] * ry + r[8] * rz))


@nb.njit(nogil=True, cache=True)
def tether_energy(n_groups, node, count, tmpl, stiff, q, x, s, dx):
    """Sum of the groups' energies [J] at x + s dx [m] (x, dx (n, 3))."""
    total = 0.0
    for g in range(n_groups):
        if count[g] == 0 or stiff[g] == 0.0:
            continue
        fit = _fit(g, node, count, tmpl, q, x, s, dx, TRIAL_ITERS)
        e = 0.0
        for a in range(count[g]):
            ux, uy, uz = _offset(g, a, node, tmpl, fit, x, s, dx)
            e += ux * ux + uy * uy + uz * uz
        total += 0.5 * stiff[g] * e
    return total


@nb.njit(nogil=True, cache=True)
def tether_pass(n_groups, node, count, tmpl, stiff, q, ref, x, fpos, h2, res, z, r_node):
    """At x (n, 3) [m]: add h2 x each tethered free node's tether force to res (n, 3) [N s^2], make
    its frame r_node (n, 3, 3) its group's rotation (relative to ref[j] (n', 4), the frame the step
    matrix was assembled with, if j < n') and rewrite its z[fpos] = frame^T res (after
    `sim.tissue_solver.node_pass`). Returns the groups' energy [J]."""
    total = 0.0
    for g in range(n_groups):
        if count[g] == 0 or stiff[g] == 0.0:
            continue
        fit = _fit(g, node, count, tmpl, q, x, 0.0, x, TRIAL_ITERS)
        rg = fit[6]
        gw, gx, gy, gz = fit[7], fit[8], fit[9], fit[10]
        kg = stiff[g]
        e = 0.0
        for a in range(count[g]):
            ux, uy, uz = _offset(g, a, node, tmpl, fit, x, 0.0, x)
            e += ux * ux + uy * uy + uz * uz
            j = node[g, a]
            p = fpos[j]
            if p < 0:
                continue
            r = rg
            if j < ref.shape[0]:  # the clip's turn since the step matrix was assembled
                w, qa, qb, qc = relative_quat(gw, gx, gy, gz, ref[j, 0], ref[j, 1], ref[j, 2], ref[j, 3])
                r = quat_to_mat(w, qa, qb, qc)
            bx = res[j, 0] - h2 * kg * ux
            by = res[j, 1] - h2 * kg * uy
            bz = res[j, 2] - h2 * kg * uz
            res[j, 0] = bx
            res[j, 1] = by
            res[j, 2] = bz
            for i in range(3):
                for c in range(3):
                    r_node[j, i, c] = r[3 * i + c]
            z[p, 0] = r[0] * bx + r[3] * by + r[6] * bz
            z[p, 1] = r[1] * bx + r[4] * by + r[7] * bz
            z[p, 2] = r[2] * bx + r[5] * by + r[8] * bz
        total += 0.5 * kg * e
    return total


@nb.njit(nogil=True, cache=True)
def fit_tethers(n_groups, node, count, tmpl, q, x, iters, centre):
    """Each group's rotation q (G, 4) (w, x, y, z) and node centroid centre (G, 3) [m] at x, refined
    by `iters` polar iterations from q, in place (after a step: the next step's warm start)."""
    for g in range(n_groups):
        if count[g] == 0:
            continue
        cx, cy, cz, _, _, _, _, w, qa, qb, qc = _fit(g, node, count, tmpl, q, x, 0.0, x, iters)
        q[g, 0], q[g, 1], q[g, 2], q[g, 3] = w, qa, qb, qc
        centre[g, 0], centre[g, 1], centre[g, 2] = cx, cy, cz


def rigid_projector(t: np.ndarray) -> np.ndarray:
    """I - P (3k, 3k), P the orthogonal projector onto the rigid motions (3 translations, 3 turns
    about the centroid) of points t (k, 3) [m] (DOF 3*a+axis)."""
    k = t.shape[0]
    r = t - t.mean(axis=0)
    modes = np.zeros((3 * k, 6))
    for i in range(3):
        modes[i::3, i] = 1.0
        e = np.zeros(3)
        e[i] = 1.0
        modes[:, 3 + i] = np.cross(e, r).reshape(-1)
    u, sv, _ = np.linalg.svd(modes, full_matrices=False)
    u = u[:, sv > 1e-9 * sv.max()]  # a line of nodes has only five rigid modes
    return np.eye(3 * k) - u @ u.T


def tether_stiffness(groups, n: int) -> sp.csr_matrix | None:
    """The tethers' Hessian at their templates, k (I - P) per group, as a (3n, 3n) sparse matrix
    [N/m] over n nodes (DOF 3*node+axis); groups: iterable of (nodes (k,), template (k, 3) [m],
    stiffness [N/m]). None if there are no groups."""
    rows, cols, vals = [], [], []
    for nodes, t, k in groups:
        if len(nodes) == 0 or k == 0.0:
            continue
        dof = (3 * np.asarray(nodes, np.int64)[:, None] + np.arange(3)).reshape(-1)
        block = k * rigid_projector(np.asarray(t, float))
        rows.append(np.repeat(dof, dof.size))
        cols.append(np.tile(dof, dof.size))
        vals.append(block.reshape(-1))
    if not rows:
        return None
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(3 * n, 3 * n))


#: No tethers (what `sim.tissue.step` passes when it is given none): the kernels' argument types.
EMPTY = (0, np.zeros((0, 1), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 1, 3)),
         np.zeros(0), np.zeros((0, 4)))
