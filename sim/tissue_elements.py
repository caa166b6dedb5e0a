"""The per-element pass of the tissue solver (Numba): deformation gradient, rotation, material
stress and energy, Rayleigh damping stress, corner forces. Nogil, float64, no allocation.

Two elastic laws, chosen per tissue (`TissueMaterial.elasticity`), both with the small-strain
behaviour of the same (E, nu), i.e. the same Lamé parameters mu, lam at rest:

- ``ELASTICITY_COROTATED`` (0): co-rotational linear elasticity,
  psi = mu |eps|^2 + lam/2 tr(eps)^2, eps = sym(R^T F) - I, R = polar(F). Exact for large
  rotations with small strains (bending, swinging, retraction of an organ), and what the
  one-step solver used. Under strong compression it does not resist inversion: an element
  flattened through itself has a finite energy with a stationary point at the mirror image.
- ``ELASTICITY_NEOHOOKEAN`` (1): stable neo-Hookean (Smith, de Goes, Kim 2018),
  psi = mu'/2 (I_C - 3) + lam'/2 (J - a)^2 - mu'/2 log(I_C + 1) - psi_0, with
  mu' = 4/3 mu, lam' = lam + 5/6 mu (the same linearisation at rest), a = 1 + 3 mu' / (4 lam')
  (rest is stress free), psi_0 making psi(I) = 0. The volume term grows as J -> 0 and keeps
  pushing past it, so a tool pressing one node cannot turn elements inside out; no polar
  decomposition is needed for its stress.

Damping (both laws): Rayleigh stiffness-proportional, as a quadratic dissipation potential over
the step, (beta / h') V W(eps_d), W(e) = mu |e|^2 + lam/2 tr(e)^2, eps_d = sym(R0^T (F(x) - F(x_p))),
R0 the element's rotation at the start of the step, x_p the BDF2 predictor positions. Its gradient
is beta * (co-rotated linear stress of the strain rate): rigid motion is not damped.
"""

from __future__ import annotations

import math

import numba as nb
from numba import prange

from sim.tissue_kernels import polar_step, quat_to_mat

ELASTICITY_COROTATED = 0
ELASTICITY_NEOHOOKEAN = 1
ELASTICITY_CODES = {"corotated": ELASTICITY_COROTATED, "neohookean": ELASTICITY_NEOHOOKEAN}

_KERNEL = dict(nogil=True, cache=True, parallel=True, error_model="numpy")


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def neohookean_params(mu, lam):
    """Stable neo-Hookean (mu', lam', a, psi_0) for small-strain Lamé parameters mu, lam [Pa].
    A dead element (mu = lam = 0, sim.tissue_topology) gets (0, 0, 1, 0): no stress, no energy
    (0 / 0 here made every node NaN in the step after a cut killed an element)."""
    mu_s = 4.0 / 3.0 * mu
    lam_s = lam + 5.0 / 6.0 * mu
    a = 1.0 + 0.75 * mu_s / lam_s if lam_s > 0.0 else 1.0
    psi0 = 0.5 * lam_s * (1.0 - a) ** 2 - 0.5 * mu_s * math.log(4.0)
    return mu_s, lam_s, a, psi0


@nb.njit(**_KERNEL)
def gather_gradients(tets, dm_inv, x, xp, grad):
    """Per element, row-major into grad (18, m): rows 0-8 F(x), rows 9-17 the gradient of x - xp.
    dm_inv (9, m) [1/m], x and xp [m] (n, 3). (Gathers in their own pass, so that the arithmetic
    passes below run over contiguous rows, which LLVM vectorises.)"""
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
            b1 = a1 - (xp[i1, c] - xp[i0, c])
            b2 = a2 - (xp[i2, c] - xp[i0, c])
            b3 = a3 - (xp[i3, c] - xp[i0, c])
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


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def corotated_stress(r, f0, f1, f2, f3, f4, f5, f6, f7, f8, mu, lam, c):
    """c * (R sigma(eps), W(eps)) with eps = sym(R^T F) - I, sigma = 2 mu eps + lam tr(eps) I,
    W = mu |eps|^2 + lam/2 tr(eps)^2: P (row-major 9-tuple) and the energy density."""
    e00 = r[0] * f0 + r[3] * f3 + r[6] * f6 - 1.0
    e11 = r[1] * f1 + r[4] * f4 + r[7] * f7 - 1.0
    e22 = r[2] * f2 + r[5] * f5 + r[8] * f8 - 1.0
    e01 = 0.5 * (r[0] * f1 + r[3] * f4 + r[6] * f7 + r[1] * f0 + r[4] * f3 + r[7] * f6)
    e02 = 0.5 * (r[0] * f2 + r[3] * f5 + r[6] * f8 + r[2] * f0 + r[5] * f3 + r[8] * f6)
    e12 = 0.5 * (r[1] * f2 + r[4] * f5 + r[7] * f8 + r[2] * f1 + r[5] * f4 + r[8] * f7)
    tr = e00 + e11 + e22
    w = c * (mu * (e00 * e00 + e11 * e11 + e22 * e22 + 2.0 * (e01 * e01 + e02 * e02 + e12 * e12))
             + 0.5 * lam * tr * tr)
    two_mu = 2.0 * c * mu
    ltr = c * lam * tr
    s00 = two_mu * e00 + ltr
    s11 = two_mu * e11 + ltr
    s22 = two_mu * e22 + ltr
    s01 = two_mu * e01
    s02 = two_mu * e02
    s12 = two_mu * e12
    return (r[0] * s00 + r[1] * s01 + r[2] * s02, r[0] * s01 + r[1] * s11 + r[2] * s12,
            r[0] * s02 + r[1] * s12 + r[2] * s22, r[3] * s00 + r[4] * s01 + r[5] * s02,
            r[3] * s01 + r[4] * s11 + r[5] * s12, r[3] * s02 + r[4] * s12 + r[5] * s22,
            r[6] * s00 + r[7] * s01 + r[8] * s02, r[6] * s01 + r[7] * s11 + r[8] * s12,
            r[6] * s02 + r[7] * s12 + r[8] * s22, w)


@nb.njit(**_KERNEL)
def element_forces(grad, q, q0, dm_inv, vol, mu, lam, kind, c_damp, force, weight, energy):
    """Forces and energies of every element from grad (`gather_gradients`) and rotations q.

    kind: ELASTICITY_COROTATED or ELASTICITY_NEOHOOKEAN. q0: rotations frozen for the damping
    term (4, m); c_damp = beta / h' [-] (0: no damping); the damping strain is that of grad[9:18].
    Writes force (9, m) [N] on corners 1-3 (corner 0 takes minus their sum), weight (m,) [m^3]
    (volume, or 0 where det F <= 0) and energy (m,) [J] (elastic + damping potential).
    Returns the number of inverted elements (det F <= 0).
    """
    m = grad.shape[1]
    inverted = 0
    neo = kind == ELASTICITY_NEOHOOKEAN
    for e in prange(m):
        f0, f1, f2 = grad[0, e], grad[1, e], grad[2, e]
        f3, f4, f5 = grad[3, e], grad[4, e], grad[5, e]
        f6, f7, f8 = grad[6, e], grad[7, e], grad[8, e]
        det = f0 * (f4 * f8 - f5 * f7) + f1 * (f5 * f6 - f3 * f8) + f2 * (f3 * f7 - f4 * f6)
        inverted += det <= 0.0
        weight[e] = vol[e] if det > 0.0 else 0.0
        mue = mu[e]
        lame = lam[e]
        r = quat_to_mat(q[0, e], q[1, e], q[2, e], q[3, e])
        p00, p01, p02, p10, p11, p12, p20, p21, p22, psi = elastic_stress(
            neo, f0, f1, f2, f3, f4, f5, f6, f7, f8, r, mue, lame)
        # Damping: the same co-rotated linear stress of the strain of x - xp, times beta / h'
        # (the "+ 1" that makes eps = sym(R^T F) - I cancels with the identity below).
        r = quat_to_mat(q0[0, e], q0[1, e], q0[2, e], q0[3, e])
        d00, d01, d02, d10, d11, d12, d20, d21, d22, psi_d = corotated_stress(
            r, grad[9, e] + r[0], grad[10, e] + r[1], grad[11, e] + r[2],
            grad[12, e] + r[3], grad[13, e] + r[4], grad[14, e] + r[5],
            grad[15, e] + r[6], grad[16, e] + r[7], grad[17, e] + r[8], mue, lame, c_damp)
        p00 += d00
        p01 += d01
        p02 += d02
        p10 += d10
        p11 += d11
        p12 += d12
        p20 += d20
        p21 += d21
        p22 += d22
        v = vol[e]
        energy[e] = v * (psi + psi_d)
        write_corner_forces(force, e, -v, dm_inv, p00, p01, p02, p10, p11, p12, p20, p21, p22)
    return inverted


@nb.njit(nogil=True, cache=True)
def element_pass(tets, dm_inv_rows, vol, mu, lam, kind, x, xp, q, q0, c_damp, polar_iters,
                 grad, force, weight, energy):
    """Gradients at x (and of x - xp), `polar_iters` rotation iterations on q (warm start), then
    `element_forces`. Returns the number of inverted elements."""
    gather_gradients(tets, dm_inv_rows, x, xp, grad)
    for _ in range(polar_iters):
        polar_refine(grad, q)
    return element_forces(grad, q, q0, dm_inv_rows, vol, mu, lam, kind, c_damp, force, weight,
                          energy)


# -- the step's element kernels (sim.tissue_solver) ------------------------------------------------
#
# The step keeps, per element and between ticks, F at the current positions (fs), the gradient of
# x - x_p of the next step's predictor (gs), and the corner forces and energy of the next step's
# potential at the current positions (force, energy). A trial point x + s dx then needs no gather of
# positions: F = F_base + s grad(dx), grad(x - x_p) = gs + (F - fs), so the gather is of the search
# direction only, once per direction, and every line-search trial is straight-line arithmetic over
# contiguous rows. See docs/tissue-solver.md, "One pass per tick".


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def elastic_stress(neo, f0, f1, f2, f3, f4, f5, f6, f7, f8, r, mue, lame):
    """First Piola-Kirchhoff stress (row-major 9-tuple) [Pa] and energy density [J/m^3] of F,
    co-rotational with rotation r (row-major 9-tuple) or stable neo-Hookean (r unused)."""
    if neo:
        c0 = f4 * f8 - f5 * f7
        c1 = f5 * f6 - f3 * f8
        c2 = f3 * f7 - f4 * f6
        c3 = f2 * f7 - f1 * f8
        c4 = f0 * f8 - f2 * f6
        c5 = f1 * f6 - f0 * f7
        c6 = f1 * f5 - f2 * f4
        c7 = f2 * f3 - f0 * f5
        c8 = f0 * f4 - f1 * f3
        det = f0 * c0 + f1 * c1 + f2 * c2
        mu_s, lam_s, a_s, psi0 = neohookean_params(mue, lame)
        ic = f0 * f0 + f1 * f1 + f2 * f2 + f3 * f3 + f4 * f4 + f5 * f5 + f6 * f6 + f7 * f7 + f8 * f8
        sa = mu_s * (1.0 - 1.0 / (ic + 1.0))
        sb = lam_s * (det - a_s)
        psi = (0.5 * mu_s * (ic - 3.0) + 0.5 * lam_s * (det - a_s) ** 2
               - 0.5 * mu_s * math.log(ic + 1.0) - psi0)
        p00 = sa * f0 + sb * c0
        p01 = sa * f1 + sb * c1
        p02 = sa * f2 + sb * c2
        p10 = sa * f3 + sb * c3
        p11 = sa * f4 + sb * c4
        p12 = sa * f5 + sb * c5
        p20 = sa * f6 + sb * c6
        p21 = sa * f7 + sb * c7
        p22 = sa * f8 + sb * c8
    else:
        p00, p01, p02, p10, p11, p12, p20, p21, p22, psi = corotated_stress(
            r, f0, f1, f2, f3, f4, f5, f6, f7, f8, mue, lame, 1.0)
    return p00, p01, p02, p10, p11, p12, p20, p21, p22, psi


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def damping_energy(r, g0, g1, g2, g3, g4, g5, g6, g7, g8, mue, lame, c):
    """c W(sym(R^T G)) [J/m^3]: the damping potential density of the velocity gradient G * h'."""
    e00 = r[0] * g0 + r[3] * g3 + r[6] * g6
    e11 = r[1] * g1 + r[4] * g4 + r[7] * g7
    e22 = r[2] * g2 + r[5] * g5 + r[8] * g8
    e01 = 0.5 * (r[0] * g1 + r[3] * g4 + r[6] * g7 + r[1] * g0 + r[4] * g3 + r[7] * g6)
    e02 = 0.5 * (r[0] * g2 + r[3] * g5 + r[6] * g8 + r[2] * g0 + r[5] * g3 + r[8] * g6)
    e12 = 0.5 * (r[1] * g2 + r[4] * g5 + r[7] * g8 + r[2] * g1 + r[5] * g4 + r[8] * g7)
    tr = e00 + e11 + e22
    return c * (mue * (e00 * e00 + e11 * e11 + e22 * e22 + 2.0 * (e01 * e01 + e02 * e02 + e12 * e12))
                + 0.5 * lame * tr * tr)


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def write_corner_forces(force, e, nv, dm_inv, p00, p01, p02, p10, p11, p12, p20, p21, p22):
    """force[:, e] = corners 1-3 of -V P Dm^-T (nv = -V): corner a+1 gets P times row a of Dm^-1."""
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


@nb.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def next_step_element(e, neo, f0, f1, f2, f3, f4, f5, f6, f7, f8, g0, g1, g2, g3, g4, g5, g6,
                      g7, g8, q, dm_inv, vol, mu, lam, c_damp, force, energy, weight):
    """Corner forces and energy of the next step's potential at F with its damping strain
    gradient G = grad(x - x_p) in the rotation q[:, e] (the next step's R0). Returns (det F, the
    elastic energy density [J/m^3])."""
    r = quat_to_mat(q[0, e], q[1, e], q[2, e], q[3, e])
    mue = mu[e]
    lame = lam[e]
    p00, p01, p02, p10, p11, p12, p20, p21, p22, psi = elastic_stress(
        neo, f0, f1, f2, f3, f4, f5, f6, f7, f8, r, mue, lame)
    d00, d01, d02, d10, d11, d12, d20, d21, d22, psi_d = corotated_stress(
        r, g0 + r[0], g1 + r[1], g2 + r[2], g3 + r[3], g4 + r[4], g5 + r[5], g6 + r[6],
        g7 + r[7], g8 + r[8], mue, lame, c_damp)
    v = vol[e]
    energy[e] = v * (psi + psi_d)
    det = f0 * (f4 * f8 - f5 * f7) + f1 * (f5 * f6 - f3 * f8) + f2 * (f3 * f7 - f4 * f6)
    weight[e] = v if det > 0.0 else 0.0
    write_corner_forces(force, e, -v, dm_inv, p00 + d00, p01 + d01, p02 + d02, p10 + d10,
                        p11 + d11, p12 + d12, p20 + d20, p21 + d21, p22 + d22)
    return det, psi


@nb.njit(**_KERNEL)
def refresh_elements(tets, dm_inv, vol, mu, lam, kind, x, xp, fresh, everything, q, polar_iters,
                     c_damp, fs, gs, force, energy, weight):
    """Re-evaluate from positions every element with a node flagged in fresh (n,) (all of them if
    `everything`): fs = F(x), gs = grad(x - xp), `polar_iters` rotation iterations on q, then the
    next step's corner forces and energy (see `next_step_element`). Returns elements refreshed."""
    m = tets.shape[0]
    neo = kind == ELASTICITY_NEOHOOKEAN
    count = 0
    for e in prange(m):
        i0, i1, i2, i3 = tets[e, 0], tets[e, 1], tets[e, 2], tets[e, 3]
        if not (everything or fresh[i0] or fresh[i1] or fresh[i2] or fresh[i3]):
            continue
        count += 1
        for c in range(3):
            a1 = x[i1, c] - x[i0, c]
            a2 = x[i2, c] - x[i0, c]
            a3 = x[i3, c] - x[i0, c]
            b1 = a1 - (xp[i1, c] - xp[i0, c])
            b2 = a2 - (xp[i2, c] - xp[i0, c])
            b3 = a3 - (xp[i3, c] - xp[i0, c])
            for k in range(3):
                fs[3 * c + k, e] = a1 * dm_inv[k, e] + a2 * dm_inv[3 + k, e] + a3 * dm_inv[6 + k, e]
                gs[3 * c + k, e] = b1 * dm_inv[k, e] + b2 * dm_inv[3 + k, e] + b3 * dm_inv[6 + k, e]
        w, qx, qy, qz = q[0, e], q[1, e], q[2, e], q[3, e]
        for _ in range(polar_iters):
            w, qx, qy, qz = polar_step(fs[0, e], fs[1, e], fs[2, e], fs[3, e], fs[4, e], fs[5, e],
                                       fs[6, e], fs[7, e], fs[8, e], w, qx, qy, qz)
        q[0, e] = w
        q[1, e] = qx
        q[2, e] = qy
        q[3, e] = qz
        next_step_element(e, neo, fs[0, e], fs[1, e], fs[2, e], fs[3, e], fs[4, e], fs[5, e],
                          fs[6, e], fs[7, e], fs[8, e], gs[0, e], gs[1, e], gs[2, e], gs[3, e],
                          gs[4, e], gs[5, e], gs[6, e], gs[7, e], gs[8, e], q, dm_inv, vol, mu,
                          lam, c_damp, force, energy, weight)
    return count


@nb.njit(**_KERNEL)
def gather_direction(tets, dm_inv, dx, df):
    """df (9, m) = grad(dx) per element, row-major: the change of F per unit step along dx [m]."""
    m = tets.shape[0]
    for e in prange(m):
        i0, i1, i2, i3 = tets[e, 0], tets[e, 1], tets[e, 2], tets[e, 3]
        d0, d1, d2 = dm_inv[0, e], dm_inv[1, e], dm_inv[2, e]
        d3, d4, d5 = dm_inv[3, e], dm_inv[4, e], dm_inv[5, e]
        d6, d7, d8 = dm_inv[6, e], dm_inv[7, e], dm_inv[8, e]
        for c in range(3):
            a1 = dx[i1, c] - dx[i0, c]
            a2 = dx[i2, c] - dx[i0, c]
            a3 = dx[i3, c] - dx[i0, c]
            df[3 * c, e] = a1 * d0 + a2 * d3 + a3 * d6
            df[3 * c + 1, e] = a1 * d1 + a2 * d4 + a3 * d7
            df[3 * c + 2, e] = a1 * d2 + a2 * d5 + a3 * d8


@nb.njit(**_KERNEL)
def trial_rotations(fb, df, s, f, q_src, q_dst):
    """F = fb + s df into f (9, m), and one rotation iteration from q_src towards polar(F) into
    q_dst (4, m) (may be the same array)."""
    m = f.shape[1]
    for e in prange(m):
        f0 = fb[0, e] + s * df[0, e]
        f1 = fb[1, e] + s * df[1, e]
        f2 = fb[2, e] + s * df[2, e]
        f3 = fb[3, e] + s * df[3, e]
        f4 = fb[4, e] + s * df[4, e]
        f5 = fb[5, e] + s * df[5, e]
        f6 = fb[6, e] + s * df[6, e]
        f7 = fb[7, e] + s * df[7, e]
        f8 = fb[8, e] + s * df[8, e]
        f[0, e] = f0
        f[1, e] = f1
        f[2, e] = f2
        f[3, e] = f3
        f[4, e] = f4
        f[5, e] = f5
        f[6, e] = f6
        f[7, e] = f7
        f[8, e] = f8
        w, x, y, z = polar_step(f0, f1, f2, f3, f4, f5, f6, f7, f8, q_src[0, e], q_src[1, e],
                                q_src[2, e], q_src[3, e])
        q_dst[0, e] = w
        q_dst[1, e] = x
        q_dst[2, e] = y
        q_dst[3, e] = z


@nb.njit(**_KERNEL)
def trial_forces(f, fs, gs, q, q0, dm_inv, vol, mu, lam, kind, c_damp, force, energy, e_trial,
                 weight, gn):
    """At a trial F = f (rotations q refined): e_trial (m,) [J] this step's elastic + damping energy
    (damping strain grad(x - x_p) = gs + f - fs in the step's start rotations q0), and the NEXT
    step's forces and energy at this point (`next_step_element` with G = gn = (fs - f) / 3, q),
    which become the carried evaluation (with f as its fs, gn as its gs) if the step ends here.
    Returns the inverted element count."""
    m = f.shape[1]
    neo = kind == ELASTICITY_NEOHOOKEAN
    third = 1.0 / 3.0
    inverted = 0
    for e in prange(m):
        f0, f1, f2 = f[0, e], f[1, e], f[2, e]
        f3, f4, f5 = f[3, e], f[4, e], f[5, e]
        f6, f7, f8 = f[6, e], f[7, e], f[8, e]
        u0, u1, u2 = fs[0, e] - f0, fs[1, e] - f1, fs[2, e] - f2
        u3, u4, u5 = fs[3, e] - f3, fs[4, e] - f4, fs[5, e] - f5
        u6, u7, u8 = fs[6, e] - f6, fs[7, e] - f7, fs[8, e] - f8
        r0 = quat_to_mat(q0[0, e], q0[1, e], q0[2, e], q0[3, e])
        psi_d = damping_energy(r0, gs[0, e] - u0, gs[1, e] - u1, gs[2, e] - u2, gs[3, e] - u3,
                               gs[4, e] - u4, gs[5, e] - u5, gs[6, e] - u6, gs[7, e] - u7,
                               gs[8, e] - u8, mu[e], lam[e], c_damp)
        g0, g1, g2 = third * u0, third * u1, third * u2
        g3, g4, g5 = third * u3, third * u4, third * u5
        g6, g7, g8 = third * u6, third * u7, third * u8
        gn[0, e] = g0
        gn[1, e] = g1
        gn[2, e] = g2
        gn[3, e] = g3
        gn[4, e] = g4
        gn[5, e] = g5
        gn[6, e] = g6
        gn[7, e] = g7
        gn[8, e] = g8
        det, psi = next_step_element(e, neo, f0, f1, f2, f3, f4, f5, f6, f7, f8, g0, g1, g2, g3,
                                     g4, g5, g6, g7, g8, q, dm_inv, vol, mu, lam, c_damp, force,
                                     energy, weight)
        e_trial[e] = vol[e] * (psi + psi_d)
        inverted += det <= 0.0
    return inverted


@nb.njit(**_KERNEL)
def step_forces(f, fs, gs, q, q0, dm_inv, vol, mu, lam, kind, c_damp, force):
    """This step's corner forces at F = f (elastic in q, damping of gs + f - fs in q0), into
    force (9, m): the residual for a further iteration within the step."""
    m = f.shape[1]
    neo = kind == ELASTICITY_NEOHOOKEAN
    for e in prange(m):
        f0, f1, f2 = f[0, e], f[1, e], f[2, e]
        f3, f4, f5 = f[3, e], f[4, e], f[5, e]
        f6, f7, f8 = f[6, e], f[7, e], f[8, e]
        r = quat_to_mat(q[0, e], q[1, e], q[2, e], q[3, e])
        mue = mu[e]
        lame = lam[e]
        p00, p01, p02, p10, p11, p12, p20, p21, p22, psi = elastic_stress(
            neo, f0, f1, f2, f3, f4, f5, f6, f7, f8, r, mue, lame)
        r0 = quat_to_mat(q0[0, e], q0[1, e], q0[2, e], q0[3, e])
        d00, d01, d02, d10, d11, d12, d20, d21, d22, psi_d = corotated_stress(
            r0, gs[0, e] + f0 - fs[0, e] + r0[0], gs[1, e] + f1 - fs[1, e] + r0[1],
            gs[2, e] + f2 - fs[2, e] + r0[2], gs[3, e] + f3 - fs[3, e] + r0[3],
            gs[4, e] + f4 - fs[4, e] + r0[4], gs[5, e] + f5 - fs[5, e] + r0[5],
            gs[6, e] + f6 - fs[6, e] + r0[6], gs[7, e] + f7 - fs[7, e] + r0[7],
            gs[8, e] + f8 - fs[8, e] + r0[8], mue, lame, c_damp)
        write_corner_forces(force, e, -vol[e], dm_inv, p00 + d00, p01 + d01, p02 + d02,
                            p10 + d10, p11 + d11, p12 + d12, p20 + d20, p21 + d21, p22 + d22)
