"""Numba kernels of the tissue step. Everything here is `nogil`, float64, and allocates nothing.

The step is one linearly implicit (backward Euler) Newton step of co-rotational linear FEM, with the
Jacobian approximated by the rest-state system matrix rotated into each node's frame:

    A_rest = (1 + h alpha) M + h (h + beta) K_rest        (factored once, `sparse_factor`)
    dv     = R_N A_rest^-1 R_N^T  h (f(x + (h + beta) v) + f_ext + M g - alpha M v)
    v     += dv,   x += h v

where f(.) is the co-rotational elastic force with each element's rotation R_e taken at x, and
R_N is a per-node rotation (that of one adjacent, non-inverted element). Evaluating the force at
x + (h + beta) v with R_e frozen is exactly f(x) - (h + beta) K_R v, i.e. the implicit and
Rayleigh-damping terms of the rotated stiffness, at the cost of one element pass. Because the
force is exact, a step with v = 0 leaves x unchanged only at true equilibrium: statics are the
exact nonlinear co-rotational solution whatever the Jacobian approximation.

Layout: per-element quantities are structure-of-arrays, shape (k, m), so the arithmetic loops
(`polar_refine`, `element_forces`) are straight-line code over contiguous rows that LLVM vectorises
(4 doubles per AVX2 instruction, ~3x over the scalar loop). Index arrays are unsigned so Numba
emits no negative-index wraparound code in the gathers.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from sim.sparse_factor import block_ldl_solve

_KERNEL = dict(nogil=True, cache=True, parallel=True, error_model="numpy")


@nb.njit(nogil=True, cache=True, inline="always")
def quat_to_mat(w, x, y, z):
    """Rotation matrix entries (row-major 9-tuple) of a unit quaternion."""
    return (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def polar_step(a00, a01, a02, a10, a11, a12, a20, a21, a22, w, x, y, z):
    """One iteration of Müller et al. 2016 towards the rotation part of A: returns the new unit
    quaternion (w, x, y, z).

    R turns by omega = sum_i r_i x a_i / |sum_i r_i . a_i| (r_i, a_i the columns of R and A),
    applied to first order (dq = (1, omega/2), renormalised): no trig, same fixed point, the
    polar rotation maximising tr(R^T A). It always yields a proper rotation, also for inverted A,
    which is what keeps inverted elements recoverable.
    """
    r = quat_to_mat(w, x, y, z)
    ox = (r[3] * a20 - r[6] * a10) + (r[4] * a21 - r[7] * a11) + (r[5] * a22 - r[8] * a12)
    oy = (r[6] * a00 - r[0] * a20) + (r[7] * a01 - r[1] * a21) + (r[8] * a02 - r[2] * a22)
    oz = (r[0] * a10 - r[3] * a00) + (r[1] * a11 - r[4] * a01) + (r[2] * a12 - r[5] * a02)
    dot = (r[0] * a00 + r[3] * a10 + r[6] * a20 + r[1] * a01 + r[4] * a11 + r[7] * a21
           + r[2] * a02 + r[5] * a12 + r[8] * a22)
    half = 0.5 / (abs(dot) + 1.0e-30)
    dx = ox * half
    dy = oy * half
    dz = oz * half
    nw = w - dx * x - dy * y - dz * z
    nx = x + dx * w + dy * z - dz * y
    ny = y - dx * z + dy * w + dz * x
    nz = z + dx * y - dy * x + dz * w
    norm = 1.0 / math.sqrt(nw * nw + nx * nx + ny * ny + nz * nz)
    return nw * norm, nx * norm, ny * norm, nz * norm


def polar_quat(a, q, iters):
    """Rotation part of a 3x3 matrix `a` starting from quaternion q (4,), in place; returns R (3x3).

    Python-level convenience around `polar_step` for tests and set-up code.
    """
    w, x, y, z = q
    for _ in range(iters):
        w, x, y, z = polar_step(*np.asarray(a, float).reshape(-1), w, x, y, z)
    q[:] = (w, x, y, z)
    return np.array(quat_to_mat(w, x, y, z)).reshape(3, 3)


@nb.njit(**_KERNEL)
def gather_gradients(tets, dm_inv, x, v, shift, grad):
    """Deformation gradients per element, row-major, into grad (18, m): rows 0-8 F(x), rows 9-17
    F(x + shift v). dm_inv (9, m) [1/m], x [m] and v [m/s] (n, 3), shift [s]."""
    m = tets.shape[0]
    for e in prange(m):
        i0, i1, i2, i3 = tets[e, 0], tets[e, 1], tets[e, 2], tets[e, 3]
        d0, d1, d2 = dm_inv[0, e], dm_inv[1, e], dm_inv[2, e]
        d3, d4, d5 = dm_inv[3, e], dm_inv[4, e], dm_inv[5, e]
        d6, d7, d8 = dm_inv[6, e], dm_inv[7, e], dm_inv[8, e]
        for c in range(3):
            a1 = x[i1, c] - x[i0, c]
            a2 = x[i2, c] - x[i0, c]
            a3 = x[i3, c] - x[i0, c]
            b1 = a1 + shift * (v[i1, c] - v[i0, c])
            b2 = a2 + shift * (v[i2, c] - v[i0, c])
            b3 = a3 + shift * (v[i3, c] - v[i0, c])
            grad[3 * c, e] = a1 * d0 + a2 * d3 + a3 * d6
            grad[3 * c + 1, e] = a1 * d1 + a2 * d4 + a3 * d7
            grad[3 * c + 2, e] = a1 * d2 + a2 * d5 + a3 * d8
            grad[9 + 3 * c, e] = b1 * d0 + b2 * d3 + b3 * d6
            grad[10 + 3 * c, e] = b1 * d1 + b2 * d4 + b3 * d7
            grad[11 + 3 * c, e] = b1 * d2 + b2 * d5 + b3 * d8


@nb.njit(**_KERNEL)
def polar_refine(grad, q):
    """One rotation-extraction iteration for every element: q (4, m) towards polar(F), F = grad[0:9]."""
    m = grad.shape[1]
    for e in prange(m):
        w, x, y, z = polar_step(grad[0, e], grad[1, e], grad[2, e], grad[3, e], grad[4, e],
                                grad[5, e], grad[6, e], grad[7, e], grad[8, e],
                                q[0, e], q[1, e], q[2, e], q[3, e])
        q[0, e] = w
        q[1, e] = x
        q[2, e] = y
        q[3, e] = z


@nb.njit(**_KERNEL)
def element_forces(grad, q, dm_inv, vol, mu, lam, force, weight):
    """Co-rotational forces on corners 1-3 of each element, force (9, m) [N] (row 3*(a-1)+axis;
    corner 0 takes minus their sum), from F_y = grad[9:18] with R = R(q) frozen.

    sigma = 2 mu eps + lam tr(eps) I, eps = sym(R^T F_y) - I; forces = -V (R sigma) Dm^-T.
    Writes weight (m,): the element's volume, or 0 where det F(x) <= 0 (an inverted element's
    rotation says nothing about its neighbourhood's frame). Returns the number of such elements.
    """
    m = grad.shape[1]
    inverted = 0
    for e in prange(m):
        f0, f1, f2 = grad[0, e], grad[1, e], grad[2, e]
        f3, f4, f5 = grad[3, e], grad[4, e], grad[5, e]
        f6, f7, f8 = grad[6, e], grad[7, e], grad[8, e]
        det = f0 * (f4 * f8 - f5 * f7) - f1 * (f3 * f8 - f5 * f6) + f2 * (f3 * f7 - f4 * f6)
        inverted += det <= 0.0
        weight[e] = vol[e] if det > 0.0 else 0.0
        y0, y1, y2 = grad[9, e], grad[10, e], grad[11, e]
        y3, y4, y5 = grad[12, e], grad[13, e], grad[14, e]
        y6, y7, y8 = grad[15, e], grad[16, e], grad[17, e]
        r = quat_to_mat(q[0, e], q[1, e], q[2, e], q[3, e])
        e00 = r[0] * y0 + r[3] * y3 + r[6] * y6 - 1.0
        e11 = r[1] * y1 + r[4] * y4 + r[7] * y7 - 1.0
        e22 = r[2] * y2 + r[5] * y5 + r[8] * y8 - 1.0
        e01 = 0.5 * (r[0] * y1 + r[3] * y4 + r[6] * y7 + r[1] * y0 + r[4] * y3 + r[7] * y6)
        e02 = 0.5 * (r[0] * y2 + r[3] * y5 + r[6] * y8 + r[2] * y0 + r[5] * y3 + r[8] * y6)
        e12 = 0.5 * (r[1] * y2 + r[4] * y5 + r[7] * y8 + r[2] * y1 + r[5] * y4 + r[8] * y7)
        two_mu = 2.0 * mu[e]
        tr = lam[e] * (e00 + e11 + e22)
        s00 = two_mu * e00 + tr
        s11 = two_mu * e11 + tr
        s22 = two_mu * e22 + tr
        s01 = two_mu * e01
        s02 = two_mu * e02
        s12 = two_mu * e12
        p00 = r[0] * s00 + r[1] * s01 + r[2] * s02
        p01 = r[0] * s01 + r[1] * s11 + r[2] * s12
        p02 = r[0] * s02 + r[1] * s12 + r[2] * s22
        p10 = r[3] * s00 + r[4] * s01 + r[5] * s02
        p11 = r[3] * s01 + r[4] * s11 + r[5] * s12
        p12 = r[3] * s02 + r[4] * s12 + r[5] * s22
        p20 = r[6] * s00 + r[7] * s01 + r[8] * s02
        p21 = r[6] * s01 + r[7] * s11 + r[8] * s12
        p22 = r[6] * s02 + r[7] * s12 + r[8] * s22
        nv = -vol[e]
        # Corner a+1 gets column a of -V P Dm^-T, i.e. P times row a of Dm^-1. (Written out: an
        # inner loop here would be what LLVM vectorises, instead of the element loop.)
        d0, d1, d2 = dm_inv[0, e], dm_inv[1, e], dm_inv[2, e]
        d3, d4, d5 = dm_inv[3, e], dm_inv[4, e], dm_inv[5, e]
        d6, d7, d8 = dm_inv[6, e], dm_inv[7, e], dm_inv[8, e]
        force[0, e] = nv * (p00 * d0 + p01 * d1 + p02 * d2)
        force[1, e] = nv * (p10 * d0 + p11 * d1 + p12 * d2)
        force[2, e] = nv * (p20 * d0 + p21 * d1 + p22 * d2)
        force[3, e] = nv * (p00 * d3 + p01 * d4 + p02 * d5)
        force[4, e] = nv * (p10 * d3 + p11 * d4 + p12 * d5)
        force[5, e] = nv * (p20 * d3 + p21 * d4 + p22 * d5)
        force[6, e] = nv * (p00 * d6 + p01 * d7 + p02 * d8)
        force[7, e] = nv * (p10 * d6 + p11 * d7 + p12 * d8)
        force[8, e] = nv * (p20 * d6 + p21 * d7 + p22 * d8)
    return inverted


@nb.njit(**_KERNEL)
def node_gather(node_ptr, node_inc, node_rep, force, q, weight, f_ext, mass, gravity, v, h, alpha,
                fpos, r_node, z):
    """Sum element forces at each node and rotate the momentum change into the node frame.

    Node i's frame is the rotation of its first adjacent element that is not inverted (node_rep[i]
    if none): exact for rigid motion, within the rotation change across one element elsewhere,
    which is all the Jacobian needs. (A volume-weighted mean of all adjacent rotations was as
    stable and cost 55 us more per 5k-tet step.)
    Writes r_node (n, 3, 3) and, for free nodes, z[fpos[i]] = R_i^T h (f + f_ext + m g - alpha m v).
    Sums run in a fixed order, so results do not depend on the thread count.
    """
    n = node_ptr.shape[0] - 1
    for i in prange(n):
        fx = f_ext[i, 0]
        fy = f_ext[i, 1]
        fz = f_ext[i, 2]
        for k in range(node_ptr[i], node_ptr[i + 1]):
            code = node_inc[k]
            e = code >> 2
            corner = code & 3
            if corner == 0:
                fx -= force[0, e] + force[3, e] + force[6, e]
                fy -= force[1, e] + force[4, e] + force[7, e]
                fz -= force[2, e] + force[5, e] + force[8, e]
            else:
                row = 3 * (corner - 1)
                fx += force[row, e]
                fy += force[row + 1, e]
                fz += force[row + 2, e]
        rep = node_rep[i]
        for k in range(node_ptr[i], node_ptr[i + 1]):
            if weight[node_inc[k] >> 2] > 0.0:
                rep = node_inc[k] >> 2
                break
        r = quat_to_mat(q[0, rep], q[1, rep], q[2, rep], q[3, rep])
        r_node[i, 0, 0] = r[0]
        r_node[i, 0, 1] = r[1]
        r_node[i, 0, 2] = r[2]
        r_node[i, 1, 0] = r[3]
        r_node[i, 1, 1] = r[4]
        r_node[i, 1, 2] = r[5]
        r_node[i, 2, 0] = r[6]
        r_node[i, 2, 1] = r[7]
        r_node[i, 2, 2] = r[8]
        p = fpos[i]
        if p >= 0:
            mi = mass[i]
            bx = h * (fx + mi * (gravity[0] - alpha * v[i, 0]))
            by = h * (fy + mi * (gravity[1] - alpha * v[i, 1]))
            bz = h * (fz + mi * (gravity[2] - alpha * v[i, 2]))
            z[p, 0] = r[0] * bx + r[3] * by + r[6] * bz
            z[p, 1] = r[1] * bx + r[4] * by + r[7] * bz
            z[p, 2] = r[2] * bx + r[5] * by + r[8] * bz


@nb.njit(**_KERNEL)
def node_update(fpos, r_node, z, h, x, v):
    """v += R_i z_i, x += h v for free nodes.

    Returns (largest speed [m/s], count of nodes whose velocity is NaN/inf).
    """
    n = x.shape[0]
    vmax2 = 0.0
    bad = 0
    for i in prange(n):
        p = fpos[i]
        if p >= 0:
            z0, z1, z2 = z[p, 0], z[p, 1], z[p, 2]
            vx = v[i, 0] + r_node[i, 0, 0] * z0 + r_node[i, 0, 1] * z1 + r_node[i, 0, 2] * z2
            vy = v[i, 1] + r_node[i, 1, 0] * z0 + r_node[i, 1, 1] * z1 + r_node[i, 1, 2] * z2
            vz = v[i, 2] + r_node[i, 2, 0] * z0 + r_node[i, 2, 1] * z1 + r_node[i, 2, 2] * z2
            v[i, 0] = vx
            v[i, 1] = vy
            v[i, 2] = vz
            x[i, 0] += h * vx
            x[i, 1] += h * vy
            x[i, 2] += h * vz
            s2 = vx * vx + vy * vy + vz * vz
            if math.isfinite(s2):
                vmax2 = max(vmax2, s2)
            else:
                bad += 1
    return math.sqrt(vmax2), bad


@nb.njit(nogil=True, cache=True)
def step_kernel(tets, dm_inv, vol, mu, lam, mass, gravity, node_ptr, node_inc, node_rep, fpos,
                l_ptr, l_col, l_val, d_inv, h, beta, alpha, polar_iters, f_ext,
                x, v, q, grad, force, weight, r_node, z):
    """The whole tissue step in one call (one dispatch from Python): gradients, rotations,
    forces, right-hand side, block solve, update. Returns (inverted, max speed, NaN count)."""
    gather_gradients(tets, dm_inv, x, v, h + beta, grad)
    for _ in range(polar_iters):
        polar_refine(grad, q)
    inverted = element_forces(grad, q, dm_inv, vol, mu, lam, force, weight)
    node_gather(node_ptr, node_inc, node_rep, force, q, weight, f_ext, mass, gravity, v, h, alpha,
                fpos, r_node, z)
    block_ldl_solve(l_ptr, l_col, l_val, d_inv, z)
    vmax, bad = node_update(fpos, r_node, z, h, x, v)
    return inverted, vmax, bad
