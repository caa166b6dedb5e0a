"""Numba kernels of the tissue step. Everything here is `nogil`, float64, and allocates nothing.

The step is one linearly implicit (backward Euler) Newton step of co-rotational linear FEM, with the
Jacobian approximated by the rest-state system matrix rotated into each node's frame:

    A_rest = (1 + h alpha) M + h (h + beta) K_rest        (factored once, `sparse_factor`)
    dv     = R_N A_rest^-1 R_N^T  h (f(x + (h + beta) v) + f_ext + M g - alpha M v)
    v     += dv,   x += h v

where f(.) is the co-rotational elastic force with each element's rotation R_e taken at x, and R_N is
the per-node rotation (polar part of the volume-weighted sum of the adjacent R_e). Evaluating the
force at x + (h + beta) v with R_e frozen is exactly f(x) - (h + beta) K_R v, i.e. the implicit and
Rayleigh-damping terms of the rotated stiffness, at the cost of one element pass. Because the force
is exact, a step with v = 0 leaves x unchanged only at true equilibrium: statics are the exact
nonlinear co-rotational solution whatever the Jacobian approximation.
"""

from __future__ import annotations

import math

import numba as nb
from numba import prange


@nb.njit(nogil=True, cache=True, inline="always")
def quat_to_mat(w, x, y, z):
    """Rotation matrix entries (row-major 9-tuple) of a unit quaternion."""
    return (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )


@nb.njit(nogil=True, cache=True)
def polar_quat(a00, a01, a02, a10, a11, a12, a20, a21, a22, q, iters):
    """Rotation part of A (3x3) by Müller et al. 2016, warm-started from unit quaternion q (4,).

    Each iteration turns R towards A's columns (maximising tr(R^T A)); `q` is updated in place.
    It always returns a proper rotation, also for inverted A, which is what keeps inverted
    elements recoverable. Stops early once the correction angle is below 1e-12 rad.
    Returns R as a row-major 9-tuple.
    """
    w, x, y, z = q[0], q[1], q[2], q[3]
    for _ in range(iters):
        r = quat_to_mat(w, x, y, z)
        # omega = sum_i r_i x a_i / |sum_i r_i . a_i|, r_i and a_i the columns of R and A.
        ox = (r[3] * a20 - r[6] * a10) + (r[4] * a21 - r[7] * a11) + (r[5] * a22 - r[8] * a12)
        oy = (r[6] * a00 - r[0] * a20) + (r[7] * a01 - r[1] * a21) + (r[8] * a02 - r[2] * a22)
        oz = (r[0] * a10 - r[3] * a00) + (r[1] * a11 - r[4] * a01) + (r[2] * a12 - r[5] * a02)
        dot = (r[0] * a00 + r[3] * a10 + r[6] * a20 + r[1] * a01 + r[4] * a11 + r[7] * a21
               + r[2] * a02 + r[5] * a12 + r[8] * a22)
        inv = 1.0 / (abs(dot) + 1.0e-30)
        ox *= inv
        oy *= inv
        oz *= inv
        # First-order rotation by omega (dq = (1, omega/2), renormalised below): no trig, and
        # the fixed point is the same polar rotation.
        if ox * ox + oy * oy + oz * oz < 1.0e-24:
            break
        c = 1.0
        dx, dy, dz = 0.5 * ox, 0.5 * oy, 0.5 * oz
        # q <- dq * q
        nw = c * w - dx * x - dy * y - dz * z
        nx = c * x + dx * w + dy * z - dz * y
        ny = c * y - dx * z + dy * w + dz * x
        nz = c * z + dx * y - dy * x + dz * w
        norm = 1.0 / math.sqrt(nw * nw + nx * nx + ny * ny + nz * nz)
        w, x, y, z = nw * norm, nx * norm, ny * norm, nz * norm
    q[0], q[1], q[2], q[3] = w, x, y, z
    return quat_to_mat(w, x, y, z)


@nb.njit(nogil=True, cache=True, inline="always")
def _edge_gradient(a, i0, i1, i2, i3, d):
    """Row-major 9-tuple of (edge matrix of a at the 4 nodes) @ Dm^-1: F for positions, dF/dt
    for velocities."""
    p00 = a[i1, 0] - a[i0, 0]
    p10 = a[i1, 1] - a[i0, 1]
    p20 = a[i1, 2] - a[i0, 2]
    p01 = a[i2, 0] - a[i0, 0]
    p11 = a[i2, 1] - a[i0, 1]
    p21 = a[i2, 2] - a[i0, 2]
    p02 = a[i3, 0] - a[i0, 0]
    p12 = a[i3, 1] - a[i0, 1]
    p22 = a[i3, 2] - a[i0, 2]
    return (
        p00 * d[0, 0] + p01 * d[1, 0] + p02 * d[2, 0],
        p00 * d[0, 1] + p01 * d[1, 1] + p02 * d[2, 1],
        p00 * d[0, 2] + p01 * d[1, 2] + p02 * d[2, 2],
        p10 * d[0, 0] + p11 * d[1, 0] + p12 * d[2, 0],
        p10 * d[0, 1] + p11 * d[1, 1] + p12 * d[2, 1],
        p10 * d[0, 2] + p11 * d[1, 2] + p12 * d[2, 2],
        p20 * d[0, 0] + p21 * d[1, 0] + p22 * d[2, 0],
        p20 * d[0, 1] + p21 * d[1, 1] + p22 * d[2, 1],
        p20 * d[0, 2] + p21 * d[1, 2] + p22 * d[2, 2],
    )


@nb.njit(nogil=True, cache=True, parallel=True)
def element_pass(tets, dm_inv, vol, mu, lam, x, v, shift, q_elem, polar_iters, f_elem):
    """Per-element co-rotational forces at y = x + shift v with R_e = polar(F(x)) frozen.

    Writes f_elem (m, 4, 3) [N] and the rotations q_elem (m, 4); returns the number of elements
    with det F(x) <= 0.
    """
    m = tets.shape[0]
    inverted = 0
    for e in prange(m):
        i0, i1, i2, i3 = tets[e, 0], tets[e, 1], tets[e, 2], tets[e, 3]
        d = dm_inv[e]
        f = _edge_gradient(x, i0, i1, i2, i3, d)
        det = (f[0] * (f[4] * f[8] - f[5] * f[7]) - f[1] * (f[3] * f[8] - f[5] * f[6])
               + f[2] * (f[3] * f[7] - f[4] * f[6]))
        if det <= 0.0:
            inverted += 1
        r = polar_quat(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], q_elem[e],
                       polar_iters)
        u = _edge_gradient(v, i0, i1, i2, i3, d)
        y0 = f[0] + shift * u[0]
        y1 = f[1] + shift * u[1]
        y2 = f[2] + shift * u[2]
        y3 = f[3] + shift * u[3]
        y4 = f[4] + shift * u[4]
        y5 = f[5] + shift * u[5]
        y6 = f[6] + shift * u[6]
        y7 = f[7] + shift * u[7]
        y8 = f[8] + shift * u[8]
        # eps = sym(R^T F_y) - I
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
        # P = R sigma
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
        # Column a of H = -V P Dm^-T is the force on node a+1 (Dm^-T column a = Dm^-1 row a).
        f1x = nv * (p00 * d[0, 0] + p01 * d[0, 1] + p02 * d[0, 2])
        f1y = nv * (p10 * d[0, 0] + p11 * d[0, 1] + p12 * d[0, 2])
        f1z = nv * (p20 * d[0, 0] + p21 * d[0, 1] + p22 * d[0, 2])
        f2x = nv * (p00 * d[1, 0] + p01 * d[1, 1] + p02 * d[1, 2])
        f2y = nv * (p10 * d[1, 0] + p11 * d[1, 1] + p12 * d[1, 2])
        f2z = nv * (p20 * d[1, 0] + p21 * d[1, 1] + p22 * d[1, 2])
        f3x = nv * (p00 * d[2, 0] + p01 * d[2, 1] + p02 * d[2, 2])
        f3y = nv * (p10 * d[2, 0] + p11 * d[2, 1] + p12 * d[2, 2])
        f3z = nv * (p20 * d[2, 0] + p21 * d[2, 1] + p22 * d[2, 2])
        f_elem[e, 0, 0] = -(f1x + f2x + f3x)
        f_elem[e, 0, 1] = -(f1y + f2y + f3y)
        f_elem[e, 0, 2] = -(f1z + f2z + f3z)
        f_elem[e, 1, 0] = f1x
        f_elem[e, 1, 1] = f1y
        f_elem[e, 1, 2] = f1z
        f_elem[e, 2, 0] = f2x
        f_elem[e, 2, 1] = f2y
        f_elem[e, 2, 2] = f2z
        f_elem[e, 3, 0] = f3x
        f_elem[e, 3, 1] = f3y
        f_elem[e, 3, 2] = f3z
    return inverted


@nb.njit(nogil=True, cache=True, parallel=True)
def node_gather(node_ptr, node_inc, vol, f_elem, q_elem, f_ext, mass, gravity, v, h, alpha,
                fpos, q_node, r_node, z):
    """Sum element forces at each node, rotate the momentum change into the node frame.

    The node rotation is the volume-weighted mean of the adjacent element quaternions (sign
    aligned with the node's previous rotation), normalised: exact for a rigid motion, and a
    smooth average where rotations vary. Writes q_node, r_node (n, 3, 3) and, for free nodes,
    z[fpos[i]] = R_i^T h (f + f_ext + m g - alpha m v). Sums run in a fixed order, so results do
    not depend on the thread count.
    """
    n = node_ptr.shape[0] - 1
    for i in prange(n):
        fx = f_ext[i, 0]
        fy = f_ext[i, 1]
        fz = f_ext[i, 2]
        pw, px, py, pz = q_node[i, 0], q_node[i, 1], q_node[i, 2], q_node[i, 3]
        qw = qx = qy = qz = 0.0
        for k in range(node_ptr[i], node_ptr[i + 1]):
            code = node_inc[k]
            e = code >> 2
            loc = code & 3
            fx += f_elem[e, loc, 0]
            fy += f_elem[e, loc, 1]
            fz += f_elem[e, loc, 2]
            ew, ex, ey, ez = q_elem[e, 0], q_elem[e, 1], q_elem[e, 2], q_elem[e, 3]
            w = vol[e]
            if ew * pw + ex * px + ey * py + ez * pz < 0.0:
                w = -w
            qw += w * ew
            qx += w * ex
            qy += w * ey
            qz += w * ez
        norm = 1.0 / math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw *= norm
        qx *= norm
        qy *= norm
        qz *= norm
        q_node[i, 0], q_node[i, 1], q_node[i, 2], q_node[i, 3] = qw, qx, qy, qz
        r = quat_to_mat(qw, qx, qy, qz)
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


@nb.njit(nogil=True, cache=True, parallel=True)
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
            rn = r_node[i]
            z0, z1, z2 = z[p, 0], z[p, 1], z[p, 2]
            vx = v[i, 0] + rn[0, 0] * z0 + rn[0, 1] * z1 + rn[0, 2] * z2
            vy = v[i, 1] + rn[1, 0] * z0 + rn[1, 1] * z1 + rn[1, 2] * z2
            vz = v[i, 2] + rn[2, 0] * z0 + rn[2, 1] * z1 + rn[2, 2] * z2
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

