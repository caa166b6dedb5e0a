"""The tissue time step (Numba): BDF2 on the incremental potential, minimised by a few
preconditioned Newton-type iterations with a backtracking line search. Nogil, float64, no
allocation; one call from Python per step. Derivation and measurements: docs/tissue-solver.md.

With h' = 2h/3, the BDF2 step from (x_n, v_n) and its history (x_{n-1}, v_{n-1}) is

    x_p = (4 x_n - x_{n-1}) / 3,   v_p = (4 v_n - v_{n-1}) / 3,   y = x_p + h' v_p
    x_{n+1} = argmin E(x),   v_{n+1} = (x_{n+1} - x_p) / h'
    E(x) = |x - y|_M^2 / (2 h'^2) + alpha |x - x_p|_M^2 / (2 h') + Psi(x) + D(x) - f . (x - y)

Psi is the elastic energy (`sim.tissue_elements`), D the Rayleigh damping potential (beta / h')
sum V W(eps_d) with the strain of x - x_p in the rotations of the step's start, f the external
loads plus weights. Its stationarity condition is exactly the BDF2 equation of motion, so a converged
step is BDF2 (second order, A-stable, strongly damping only the mesh-scale modes), and each
iteration lowers E, so no iteration can pump energy in: that is what keeps large deformations
stable without changing the physics.

The minimisation starts at x_n, where the previous step's accepted trial already evaluated this
step's forces and energy (carried in the state; elements with a node moved since are re-evaluated
from positions). Each iteration: residual r = -h'^2 grad E at the current x; direction
dx = R_N A^-1 R_N^T r (Polak-Ribiere+ after the first) with A = (1 + h' alpha) M + h' (h' + beta)
K_rest prefactored once (`sim.sparse_factor`) and R_N one rotation per node (the Hessian of E at
rest, rotated; exact for rigid motion); then x + s dx with s = 1, else the parabola's minimum,
then halving, until E decreases by Armijo's rule (a move below `tol` [m] is accepted as is). A
step iterates again only if s = 1 was rejected or the body turns fast; otherwise what is left is
the next step's start (docs/tissue-solver.md, "One pass per tick"). The history of a node is
restarted (x_{n-1} = x_n - h v_n, v_{n-1} = v_n: a constant-velocity past) when its x or v is not
what the last step wrote, so resets, teleports and the contact stage's position projections need
no bookkeeping by the caller.

Numba keys a cached kernel on its own file only, while these inline `sim.tissue_elements` and
`sim.tissue_tethers`: the cache directory is named by a hash of every kernel file (`sim/__init__`),
so a change to any of them compiles anew.
"""

from __future__ import annotations

import math

import numba as nb
from numba import prange

from sim.sparse_factor import block_ldl_solve
from sim.tissue_elements import (
    gather_direction,
    polar_refine,
    refresh_elements,
    step_forces,
    trial_forces,
    trial_rotations,
)
from sim.tissue_kernels import quat_to_mat, relative_quat
from sim.tissue_tethers import tether_energy, tether_pass

ARMIJO = 1e-4  # sufficient-decrease fraction of the line search
MAX_TRIALS = 12  # step lengths tried: 1, the secant's, then halving
HINT_REACH = 20.0  # a full move beyond this many tol is motion: the next step tries s = 1
HINT_MIN = 0.05  # smallest first trial a settled step hands on (the parabola's own floor)
_KERNEL = dict(nogil=True, cache=True, parallel=True, error_model="numpy")


@nb.njit(nogil=True, cache=True)
def node_frame(i, node_ptr, node_inc, node_rep, q, weight):
    """Node i's frame (w, x, y, z): the weight-averaged rotation of its live adjacent elements
    (weight > 0; quaternions sign-aligned to the first one), or node_rep[i]'s if none is live.

    Always the average, never one element's: the rotated rest matrix then misjudges each adjacent
    element by its share of the spread, and the frame moves smoothly with the elements. A frame
    that switched from one element's rotation to the average where the spread passed a threshold
    (10 deg, then 1 deg) fed a limit cycle in the one-pass step: the cholecystectomy's hanging
    cystic duct (elements turned up to 16 deg at rest under gravity) oscillated at 0.09-0.21 m/s
    forever with the tools in the air; with the average seed 0's settles (other seeds also need
    the step matrix at their configuration: docs/tissue-solver.md).
    """
    rep = node_rep[i]
    for k in range(node_ptr[i], node_ptr[i + 1]):
        if weight[node_inc[k] >> 2] > 0.0:
            rep = node_inc[k] >> 2
            break
    w0, w1, w2, w3 = q[0, rep], q[1, rep], q[2, rep], q[3, rep]
    a0 = a1 = a2 = a3 = 0.0
    for k in range(node_ptr[i], node_ptr[i + 1]):
        e = node_inc[k] >> 2
        wt = weight[e]
        if wt > 0.0:
            if q[0, e] * w0 + q[1, e] * w1 + q[2, e] * w2 + q[3, e] * w3 < 0.0:
                wt = -wt
            a0 += wt * q[0, e]
            a1 += wt * q[1, e]
            a2 += wt * q[2, e]
            a3 += wt * q[3, e]
    norm = math.sqrt(a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3)
    if norm > 0.0:
        w0, w1, w2, w3 = a0 / norm, a1 / norm, a2 / norm, a3 / norm
    return w0, w1, w2, w3


@nb.njit(nogil=True, cache=True)
def node_frames(node_ptr, node_inc, node_rep, q, weight, out):
    """Every node's `node_frame` into out (n, 4)."""
    for i in range(out.shape[0]):
        w, x, y, z = node_frame(i, node_ptr, node_inc, node_rep, q, weight)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = w, x, y, z


@nb.njit(nogil=True, cache=True)
def frame_drift(frames, fpos, ref, limit):
    """How many free nodes' frames, frames (n, 4), have turned from ref (n', 4) (the node frames a
    step matrix was assembled at; identity past n') by more than `limit`, given as
    sin^2(theta / 2)."""
    count = 0
    for i in range(fpos.shape[0]):
        if fpos[i] < 0:
            continue
        if i < ref.shape[0]:
            d = (frames[i, 0] * ref[i, 0] + frames[i, 1] * ref[i, 1] + frames[i, 2] * ref[i, 2]
                 + frames[i, 3] * ref[i, 3])
        else:
            d = frames[i, 0]
        count += 1.0 - d * d > limit
    return count


@nb.njit(**_KERNEL)
def node_pass(node_ptr, node_inc, node_rep, force, q, weight, f_ext, mass, gravity, x, y, xp,
              h2, ah, fpos, r_node, res, z, node_e, ref):
    """Per node: sum the element forces, pick the node frame, form the residual and its share of E.

    Node i's frame: `node_frame` (relative to ref[i], see below). Writes r_node (n, 3, 3);
    res (n, 3) = h'^2 (f_el + f_ext + m g) - m (x - y) - h' alpha m (x - x_p) [N s^2], zero on
    fixed nodes; z[fpos[i]] = R_i^T res_i (factor order);
    node_e (n,) the node's part of h'^2 E [J s^2]. Sums run in a fixed order (thread-count
    independent results). ref (n', 4): the node frames the step matrix was assembled at
    (`sim.tissue_model.TissueSystem.frames`): node i's frame is then relative to ref[i] (i < n').
    """
    n = node_ptr.shape[0] - 1
    for i in prange(n):
        fx = f_ext[i, 0]
        fy = f_ext[i, 1]
        fz = f_ext[i, 2]
        ex = fx
        ey = fy
        ez = fz
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
        w0, w1, w2, w3 = node_frame(i, node_ptr, node_inc, node_rep, q, weight)
        if i < ref.shape[0]:
            w0, w1, w2, w3 = relative_quat(w0, w1, w2, w3, ref[i, 0], ref[i, 1], ref[i, 2], ref[i, 3])
        r = quat_to_mat(w0, w1, w2, w3)
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
            ex += mi * gravity[0]
            ey += mi * gravity[1]
            ez += mi * gravity[2]
            uy0 = x[i, 0] - y[i, 0]
            uy1 = x[i, 1] - y[i, 1]
            uy2 = x[i, 2] - y[i, 2]
            up0 = x[i, 0] - xp[i, 0]
            up1 = x[i, 1] - xp[i, 1]
            up2 = x[i, 2] - xp[i, 2]
            bx = h2 * (fx + mi * gravity[0]) - mi * (uy0 + ah * up0)
            by = h2 * (fy + mi * gravity[1]) - mi * (uy1 + ah * up1)
            bz = h2 * (fz + mi * gravity[2]) - mi * (uy2 + ah * up2)
            res[i, 0] = bx
            res[i, 1] = by
            res[i, 2] = bz
            z[p, 0] = r[0] * bx + r[3] * by + r[6] * bz
            z[p, 1] = r[1] * bx + r[4] * by + r[7] * bz
            z[p, 2] = r[2] * bx + r[5] * by + r[8] * bz
            node_e[i] = (0.5 * mi * (uy0 * uy0 + uy1 * uy1 + uy2 * uy2
                                     + ah * (up0 * up0 + up1 * up1 + up2 * up2))
                         - h2 * (ex * uy0 + ey * uy1 + ez * uy2))
        else:
            res[i, 0] = 0.0
            res[i, 1] = 0.0
            res[i, 2] = 0.0
            node_e[i] = 0.0


@nb.njit(nogil=True, cache=True)
def ordered_sum(a):
    """Sum of a 1-D array in index order (the same bits for any thread count)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i]
    return s


@nb.njit(nogil=True, cache=True)
def bdf2_predict(fpos, x, v, x_prev, v_prev, x_last, v_last, h, hb, xp, y, fresh):
    """BDF2 predictor x_p, y (n, 3) [m]; shifts the history (x_prev, v_prev <- x, v).

    A node whose x or v differs from what the last step wrote (x_last, v_last) restarts with a
    constant-velocity past, x_{n-1} = x_n - h v_n, v_{n-1} = v_n, and is flagged in fresh (n,)
    (its elements' carried evaluation is stale). Fixed nodes: y = x, x_p = x unless the node was
    moved since the last step (then x_p = x - h' (x - x_last) / dt: it moves at that speed), flagged
    if x moved.
    Returns the number of fresh nodes.
    """
    n = x.shape[0]
    count = 0
    for i in range(n):
        moved = False
        for c in range(3):
            if x[i, c] != x_last[i, c]:
                moved = True
        if fpos[i] < 0:
            for c in range(3):
                # A fixed node the caller moved since the last step (a scripted clamp pull) moves
                # at (x - x_last) / dt during this step: the damping sees that velocity
                # (x - x_p = h' v) instead of a standing clamp dragging its neighbours back.
                d = x[i, c] - x_last[i, c]
                xp[i, c] = x[i, c] - (2.0 / 3.0) * d if moved and math.isfinite(d) else x[i, c]
                y[i, c] = x[i, c]
            fresh[i] = moved
            count += moved
            continue
        for c in range(3):
            if v[i, c] != v_last[i, c]:
                moved = True
        fresh[i] = moved
        count += moved
        for c in range(3):
            xc = x[i, c]
            vc = v[i, c]
            if moved:
                xm = xc - h * vc
                vm = vc
            else:
                xm = x_prev[i, c]
                vm = v_prev[i, c]
            xpc = (4.0 * xc - xm) / 3.0
            xp[i, c] = xpc
            y[i, c] = xpc + hb * ((4.0 * vc - vm) / 3.0)
            x_prev[i, c] = xc
            v_prev[i, c] = vc
    return count


@nb.njit(nogil=True, cache=True)
def node_energy(fpos, mass, gravity, f_ext, x, s, dx, y, xp, h2, ah):
    """The node terms of h'^2 E at x + s dx [J s^2]: inertia, mass damping, loads and weights
    (the per-node energy `node_pass` writes, summed in index order)."""
    total = 0.0
    for i in range(x.shape[0]):
        if fpos[i] < 0:
            continue
        mi = mass[i]
        x0 = x[i, 0] + s * dx[i, 0]
        x1 = x[i, 1] + s * dx[i, 1]
        x2 = x[i, 2] + s * dx[i, 2]
        uy0 = x0 - y[i, 0]
        uy1 = x1 - y[i, 1]
        uy2 = x2 - y[i, 2]
        up0 = x0 - xp[i, 0]
        up1 = x1 - xp[i, 1]
        up2 = x2 - xp[i, 2]
        total += (0.5 * mi * (uy0 * uy0 + uy1 * uy1 + uy2 * uy2
                              + ah * (up0 * up0 + up1 * up1 + up2 * up2))
                  - h2 * ((f_ext[i, 0] + mi * gravity[0]) * uy0
                          + (f_ext[i, 1] + mi * gravity[1]) * uy1
                          + (f_ext[i, 2] + mi * gravity[2]) * uy2))
    return total


@nb.njit(nogil=True, cache=True)
def precondition(fpos, r_node, z, pz):
    """pz_i = R_i z_i (world frame) for free nodes, 0 for fixed: the preconditioned residual
    R_N A^-1 R_N^T res once z holds the solve's result."""
    for i in range(fpos.shape[0]):
        p = fpos[i]
        if p < 0:
            pz[i, 0] = 0.0
            pz[i, 1] = 0.0
            pz[i, 2] = 0.0
            continue
        z0, z1, z2 = z[p, 0], z[p, 1], z[p, 2]
        pz[i, 0] = r_node[i, 0, 0] * z0 + r_node[i, 0, 1] * z1 + r_node[i, 0, 2] * z2
        pz[i, 1] = r_node[i, 1, 0] * z0 + r_node[i, 1, 1] * z1 + r_node[i, 1, 2] * z2
        pz[i, 2] = r_node[i, 2, 0] * z0 + r_node[i, 2, 1] * z1 + r_node[i, 2, 2] * z2


@nb.njit(nogil=True, cache=True)
def dot(a, b):
    """Sum of a * b over (n, 3) arrays, in index order."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i, 0] * b[i, 0] + a[i, 1] * b[i, 1] + a[i, 2] * b[i, 2]
    return s


@nb.njit(nogil=True, cache=True)
def conjugate(pz, res, r_prev, zr_prev, dx):
    """Polak-Ribiere+ search direction dx = pz + b dx (b = 0 on the first iteration, zr_prev = 0,
    or when dx would not descend); returns (max |dx_i| [m], res . dx, res . pz)."""
    zr = dot(res, pz)
    b = 0.0
    if zr_prev > 0.0:
        b = max(0.0, (zr - dot(pz, r_prev)) / zr_prev)
    n = pz.shape[0]
    gd = 0.0
    for i in range(n):
        for c in range(3):
            dx[i, c] = pz[i, c] + b * dx[i, c]
    gd = dot(res, dx)
    if not gd > 0.0:
        dx[:, :] = pz
        gd = zr
    dmax2 = 0.0
    for i in range(n):
        dmax2 = max(dmax2, dx[i, 0] * dx[i, 0] + dx[i, 1] * dx[i, 1] + dx[i, 2] * dx[i, 2])
    return math.sqrt(dmax2), gd, zr


@nb.njit(nogil=True, cache=True)
def mean_turn2(q0, q1, vol):
    """Volume-weighted mean of sin^2(theta_e / 2), theta_e each element's turn [rad] between two
    sets of rotations (4, m): (theta / 2)^2 of the body's mean turn (a spin, not a few elements
    turning under a tool)."""
    s = 0.0
    v = 0.0
    for e in range(q0.shape[1]):
        d = (q0[0, e] * q1[0, e] + q0[1, e] * q1[1, e] + q0[2, e] * q1[2, e]
             + q0[3, e] * q1[3, e])
        s += vol[e] * (1.0 - d * d)
        v += vol[e]
    return s / v


@nb.njit(nogil=True, cache=True)
def axpy_free(fpos, base, s, dx, out):
    """out = base + s dx on free nodes (fixed nodes keep out's values)."""
    for i in range(fpos.shape[0]):
        if fpos[i] >= 0:
            out[i, 0] = base[i, 0] + s * dx[i, 0]
            out[i, 1] = base[i, 1] + s * dx[i, 1]
            out[i, 2] = base[i, 2] + s * dx[i, 2]


@nb.njit(nogil=True, cache=True)
def next_hint(s, s_first, dmax, tol):
    """The first step length the next step's line search tries, after this step's first
    iteration accepted s having tried s_first first along a direction whose full move is dmax [m].

    Where the rest matrix misjudges a stiff spot (the elements folded under a 2 N point load are
    much stiffer than at rest), a settled body's sub-tol remainder overshoots at s = 1 every other
    step, and each time the parabola's shorter step costs a second element pass. So a step that
    settled (accepted move below tol) with a shortened s starts the next one there, and keeps it
    while the body stays settled. A body that moves goes back to full steps: x2 per step while
    its full move is within HINT_REACH tol, straight to 1 beyond (2 mm/s at 1 kHz), so a tool
    pushing tissue never meets a shortened first trial for more than one step (and that step
    iterates on, as any step whose line search shortened does).
    """
    if s == 0.0 or dmax > HINT_REACH * tol:
        return 1.0
    settled = s * dmax <= tol
    if s == s_first:
        return s if (s < 1.0 and settled) else min(1.0, 2.0 * s)
    return max(s, HINT_MIN) if settled else 1.0


@nb.njit(nogil=True, cache=True)
def step_kernel(tets, dm_inv, vol, mu, lam, kind, mass, gravity, node_ptr, node_inc, node_rep,
                fpos, l_ptr, l_col, l_val, d_inv, h, beta, alpha, polar_iters, max_iters, tol,
                turn2, f_ext, x, v, q, x_prev, v_prev, x_last, v_last, fs, gs, force, energy,
                weight, carried, qt, f, gn, xp, y, dx, pz, r_prev, fb, df, f_cur, e_trial, r_node, res, z,
                node_e, fresh, ref, t_n, t_node, t_count, t_tmpl, t_k, t_q, hint):
    """One BDF2 step in place on x, v, the history and the carried evaluation (q, fs, gs, force,
    energy, weight: see `sim.tissue_elements`; carried = False re-evaluates every element).

    The step's end rotations, F and next-step damping gradients are written to qt, f and gn: the
    caller swaps them with q, fs and gs (no copies). ref: the step matrix's node frames (`node_pass`).
    t_n ... t_q: tethers (`sim.tissue_tethers`:
    groups, nodes, counts, templates, stiffnesses, rotations), in the potential. hint: the first
    step length the line search tries (1 unless the last step settled with a shortened one, see
    below). Returns (inverted elements, max node speed [m/s], NaN/inf node count, iterations,
    element passes, elements re-evaluated from positions, the next step's hint).
    """
    hb = 2.0 * h / 3.0
    h2 = hb * hb
    c_damp = beta / hb
    ah = alpha * hb
    bdf2_predict(fpos, x, v, x_prev, v_prev, x_last, v_last, h, hb, xp, y, fresh)
    # The evaluation carried from the last step is at these x, in these rotations; elements with
    # a node moved since (contact projections, resets) are re-evaluated from positions.
    refreshed = refresh_elements(tets, dm_inv, vol, mu, lam, kind, x, xp, fresh, not carried, q,
                                 polar_iters, c_damp, fs, gs, force, energy, weight)
    node_pass(node_ptr, node_inc, node_rep, force, q, weight, f_ext, mass, gravity, x, y, xp,
              h2, ah, fpos, r_node, res, z, node_e, ref)
    e_cur = h2 * ordered_sum(energy) + ordered_sum(node_e)
    if t_n:
        e_cur += h2 * tether_pass(t_n, t_node, t_count, t_tmpl, t_k, t_q, ref, x, fpos, h2, res, z, r_node)
    base_f = fs
    q_src = q
    evals = 0
    iters = 0
    inverted = 0
    zr_prev = 0.0
    s = 0.0
    for it in range(max_iters):
        block_ldl_solve(l_ptr, l_col, l_val, d_inv, z)
        precondition(fpos, r_node, z, pz)
        dmax, gd, zr = conjugate(pz, res, r_prev, zr_prev, dx)
        iters += 1
        gather_direction(tets, dm_inv, dx, df)
        # Line search on E along dx: s = 1 (the hint on a step's first iteration); if E did not
        # drop enough, the minimum of the parabola through E(0), its slope and E(s) (a
        # direction that underestimates a stiffening mode n-fold overshoots by n), then halving;
        # none: stay (s = 0).
        s = hint if it == 0 else 1.0
        s_first = s
        e_new = e_cur
        for ls in range(MAX_TRIALS + 1):
            if ls == MAX_TRIALS:
                s = 0.0
            trial_rotations(base_f, df, s, f, q_src, qt)
            for _ in range(polar_iters - 1):
                polar_refine(f, qt)
            inverted = trial_forces(f, fs, gs, qt, q, dm_inv, vol, mu, lam, kind, c_damp, force,
                                    energy, e_trial, weight, gn)
            evals += 1
            if s == 0.0:
                break
            e_new = h2 * ordered_sum(e_trial) + node_energy(fpos, mass, gravity, f_ext, x, s, dx,
                                                            y, xp, h2, ah)
            if t_n:
                e_new += h2 * tether_energy(t_n, t_node, t_count, t_tmpl, t_k, t_q, x, s, dx)
            if e_new <= e_cur - ARMIJO * s * gd or s * dmax <= tol:
                break
            if ls == 0:
                curv = 2.0 * (e_new - e_cur + s * gd) / (s * s)  # along dx, in units of h'^2 E
                s = min(max(gd / curv, 0.05 * s), 0.5 * s) if curv > 0.0 else 0.5 * s
            else:
                s *= 0.5
        # Another iteration only where the line search had to shorten the step (the rest
        # matrix misjudged the curvature along dx) or where the body turns fast (the rest
        # matrix sees the second-order part of a turn as strain, and what a step leaves of it
        # is systematic: a spin would gain angular momentum), and the move still matters.
        # Otherwise the remainder is left to the next step, which starts from here.
        if it == 0:
            hint = next_hint(s, s_first, dmax, tol)
        if s * dmax <= tol or it + 1 == max_iters:
            break
        if s == 1.0 and mean_turn2(q, qt, vol) <= turn2:
            break
        axpy_free(fpos, x, s, dx, x)
        s = 0.0
        e_cur = e_new
        r_prev[:, :] = res
        zr_prev = zr
        step_forces(f, fs, gs, qt, q, dm_inv, vol, mu, lam, kind, c_damp, f_cur)
        node_pass(node_ptr, node_inc, node_rep, f_cur, qt, weight, f_ext, mass, gravity, x, y,
                  xp, h2, ah, fpos, r_node, res, z, node_e, ref)
        if t_n:
            tether_pass(t_n, t_node, t_count, t_tmpl, t_k, t_q, ref, x, fpos, h2, res, z, r_node)
        fb[:, :] = f
        base_f = fb
        q_src = qt

    vmax2 = 0.0
    bad = 0
    inv_hb = 1.0 / hb
    for i in range(x.shape[0]):
        if fpos[i] >= 0:
            for c in range(3):
                xc = x[i, c] + s * dx[i, c]
                x[i, c] = xc
                v[i, c] = (xc - xp[i, c]) * inv_hb
            s2 = v[i, 0] * v[i, 0] + v[i, 1] * v[i, 1] + v[i, 2] * v[i, 2]
            if math.isfinite(s2):
                vmax2 = max(vmax2, s2)
            else:
                bad += 1
        for c in range(3):
            x_last[i, c] = x[i, c]
            v_last[i, c] = v[i, c]
    return inverted, math.sqrt(vmax2), bad, iters, evals, refreshed, hint
