"""Numba kernels of the tool-tissue contact stage (see sim.contact for the method).

Geometry: a capsule is a segment p0-p1 [m] with radius r [m], packed as a row (p0, p1, r) of a
(k, 7) array. Closest points between a segment and a triangle follow Ericson, Real-Time Collision
Detection, 5.1.5 (point-triangle) and 5.1.9 (segment-segment). Everything float64, no allocation
inside the loops; all kernels nogil and cached.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_EPS = 1e-12


@nb.njit(cache=True, nogil=True, inline="always")
def _closest_pt_tri(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Closest point on triangle abc to p: returns barycentric (u, v, w) with point = u a + v b + w c."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:
        return 1.0, 0.0, 0.0
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    if d3 >= 0.0 and d4 <= d3:
        return 0.0, 1.0, 0.0
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        t = d1 / (d1 - d3)
        return 1.0 - t, t, 0.0
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    if d6 >= 0.0 and d5 <= d6:
        return 0.0, 0.0, 1.0
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        t = d2 / (d2 - d6)
        return 1.0 - t, 0.0, t
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return 0.0, 1.0 - t, t
    den = 1.0 / (va + vb + vc)
    v = vb * den
    w = vc * den
    return 1.0 - v - w, v, w


@nb.njit(cache=True, nogil=True, inline="always")
def _closest_seg_seg(p1x, p1y, p1z, d1x, d1y, d1z, p2x, p2y, p2z, d2x, d2y, d2z):
    """Parameters (s, t) in [0, 1] of the closest points p1 + s d1 and p2 + t d2 (scalars, no arrays)."""
    rx, ry, rz = p1x - p2x, p1y - p2y, p1z - p2z
    a = d1x * d1x + d1y * d1y + d1z * d1z
    e = d2x * d2x + d2y * d2y + d2z * d2z
    f = d2x * rx + d2y * ry + d2z * rz
    if a <= _EPS and e <= _EPS:
        return 0.0, 0.0
    if a <= _EPS:
        return 0.0, min(max(f / e, 0.0), 1.0)
    c = d1x * rx + d1y * ry + d1z * rz
    if e <= _EPS:
        return min(max(-c / a, 0.0), 1.0), 0.0
    b = d1x * d2x + d1y * d2y + d1z * d2z
    den = a * e - b * b
    s = min(max((b * f - c * e) / den, 0.0), 1.0) if den > _EPS else 0.0
    t = (b * s + f) / e
    if t < 0.0:
        t = 0.0
        s = min(max(-c / a, 0.0), 1.0)
    elif t > 1.0:
        t = 1.0
        s = min(max((b - c) / a, 0.0), 1.0)
    return s, t


@nb.njit(cache=True, nogil=True)
def closest_seg_tri(p0, p1, a, b, c, out_bary):
    """Closest points between segment p0-p1 and triangle abc [m] (all (3,) arrays).

    Returns (distance [m], s) with the segment point p0 + s (p1 - p0); out_bary (3,) receives the
    triangle point's barycentric weights. A segment that crosses the triangle gives distance 0.
    Scalar arithmetic only: it runs for every candidate face in the 1 kHz loop.
    """
    ax, ay, az = a[0], a[1], a[2]
    bx, by, bz = b[0], b[1], b[2]
    cx, cy, cz = c[0], c[1], c[2]
    px, py, pz = p0[0], p0[1], p0[2]
    dx, dy, dz = p1[0] - px, p1[1] - py, p1[2] - pz
    ux, uy, uz = bx - ax, by - ay, bz - az
    vx, vy, vz = cx - ax, cy - ay, cz - az
    nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
    nn = nx * nx + ny * ny + nz * nz
    # Crossing: the segment pierces the triangle's plane inside the triangle.
    if nn > _EPS * _EPS:
        h0 = nx * (px - ax) + ny * (py - ay) + nz * (pz - az)
        h1 = nx * (px + dx - ax) + ny * (py + dy - ay) + nz * (pz + dz - az)
        if h0 * h1 < 0.0:
            s = h0 / (h0 - h1)
            qx, qy, qz = px + s * dx, py + s * dy, pz + s * dz
            u, v, w = _closest_pt_tri(qx, qy, qz, ax, ay, az, bx, by, bz, cx, cy, cz)
            ex = qx - (u * ax + v * bx + w * cx)
            ey = qy - (u * ay + v * by + w * cy)
            ez = qz - (u * az + v * bz + w * cz)
            if ex * ex + ey * ey + ez * ez < 1e-20:
                out_bary[0], out_bary[1], out_bary[2] = u, v, w
                return 0.0, s
    best = np.inf
    best_s = 0.0
    for k in range(2):
        qx, qy, qz = px + k * dx, py + k * dy, pz + k * dz
        u, v, w = _closest_pt_tri(qx, qy, qz, ax, ay, az, bx, by, bz, cx, cy, cz)
        ex = qx - (u * ax + v * bx + w * cx)
        ey = qy - (u * ay + v * by + w * cy)
        ez = qz - (u * az + v * bz + w * cz)
        dd = ex * ex + ey * ey + ez * ez
        if dd < best:
            best, best_s = dd, float(k)
            out_bary[0], out_bary[1], out_bary[2] = u, v, w
    for k in range(3):
        if k == 0:
            ox, oy, oz, ex, ey, ez = ax, ay, az, bx - ax, by - ay, bz - az
        elif k == 1:
            ox, oy, oz, ex, ey, ez = bx, by, bz, cx - bx, cy - by, cz - bz
        else:
            ox, oy, oz, ex, ey, ez = cx, cy, cz, ax - cx, ay - cy, az - cz
        s, t = _closest_seg_seg(px, py, pz, dx, dy, dz, ox, oy, oz, ex, ey, ez)
        gx = px + s * dx - (ox + t * ex)
        gy = py + s * dy - (oy + t * ey)
        gz = pz + s * dz - (oz + t * ez)
        dd = gx * gx + gy * gy + gz * gz
        if dd < best:
            best, best_s = dd, s
            if k == 0:
                out_bary[0], out_bary[1], out_bary[2] = 1.0 - t, t, 0.0
            elif k == 1:
                out_bary[0], out_bary[1], out_bary[2] = 0.0, 1.0 - t, t
            else:
                out_bary[0], out_bary[1], out_bary[2] = t, 0.0, 1.0 - t
    return np.sqrt(best), best_s


@nb.njit(cache=True, nogil=True)
def attach_project(att_node, att_tool, att_local, shaft_r, shaft_p, mass, dt, x, v, f, touched):
    """Bilateral grasp attachments: each attached node is put at its jaw-frame position.

    att_node (a,) node ids; att_tool (a,) tool ids; att_local (a, 3) [m] positions in the tool's shaft
    frame; shaft_r (t, 3, 3), shaft_p (t, 3) shaft frames (rotation, origin [m]).
    The correction d moves x and v (v += d / dt) and adds m d / dt^2 [N] to the node's carried force f.
    touched (n,) receives tool + 1 for every attached node.
    """
    inv_h = 1.0 / dt
    inv_h2 = inv_h * inv_h
    for a in range(att_node.shape[0]):
        j = att_node[a]
        t = att_tool[a]
        for i in range(3):
            target = shaft_p[t, i] + shaft_r[t, i, 0] * att_local[a, 0] + shaft_r[t, i, 1] * att_local[a, 1] \
                + shaft_r[t, i, 2] * att_local[a, 2]
            d = target - x[j, i]
            x[j, i] = target
            v[j, i] += d * inv_h
            f[j, i] += mass[j] * d * inv_h2
        touched[j] = t + 1


@nb.njit(cache=True, nogil=True, inline="always")
def _capsule_box(caps, c, pad, box):
    """Axis-aligned box of capsule c's segment grown by pad [m] into box (6,): lo xyz, hi xyz."""
    for i in range(3):
        box[i] = min(caps[c, i], caps[c, 3 + i]) - pad
        box[3 + i] = max(caps[c, i], caps[c, 3 + i]) + pad


@nb.njit(cache=True, nogil=True, inline="always")
def _closest_on_segment(caps, c, px, py, pz):
    """Parameter s in [0, 1] of the point of capsule c's segment closest to p."""
    dx, dy, dz = caps[c, 3] - caps[c, 0], caps[c, 4] - caps[c, 1], caps[c, 5] - caps[c, 2]
    dd = dx * dx + dy * dy + dz * dz
    if dd < _EPS:
        return 0.0
    s = ((px - caps[c, 0]) * dx + (py - caps[c, 1]) * dy + (pz - caps[c, 2]) * dz) / dd
    return min(max(s, 0.0), 1.0)


@nb.njit(cache=True, nogil=True)
def contact_project(caps, caps_prev, cap_tool, tris, surf_nodes, x, v, mass, inv_mass, dt, margin, mu,
                    iters, edge, f, normal, touched, skip, corr, tri_box, near, lam_face, face_tool,
                    face_dir, face_w, face_on, f_face, tool_force, tool_point):
    """Capsules against the tissue surface, after the tissue step (see sim.contact for the method).

    caps, caps_prev (k, 7): capsules now and one step ago; cap_tool (k,) owning tool; tris (t, 3)
    surface triangles; surf_nodes (s,) surface node ids; x, v (n, 3) tissue state, corrected in
    place; mass, inv_mass (n,) [kg, 1/kg] (inv_mass 0 for fixed nodes); margin [m]: contact band
    kept while a carried force is left; mu: friction coefficient; iters: node sweeps; edge [m]:
    longest surface edge (a face point lies within it of a corner), to skip capsules no face can
    reach; f (n, 3) [N]: node force carried from the previous step (in) and the new one (out);
    normal (n, 3): contact normal per node; touched (n,) int: tool + 1 per node in contact
    (attachments already marked); skip (n,) bool: attached nodes; corr (n, 3), tri_box (t, 10),
    near (k,) int: scratch; lam_face (t,) [N], face_tool (t,) int (tool + 1), face_dir (t, 3),
    face_w (t, 3): each face contact's carried normal force, owner, direction and corner shares
    (in/out); face_on (t,) int scratch; f_face (n, 3) [N] out: the face forces on the nodes, for the
    next step; tool_force (tools, 3) [N] out: tissue force on each tool; tool_point
    (tools, 4) out: columns 0-2 sum of |f| x [N m], column 3 sum of |f| [N] (their ratio is the
    force-weighted contact point).
    """

    n_cap = caps.shape[0]
    inv_h = 1.0 / dt
    inv_h2 = inv_h * inv_h
    h2 = dt * dt
    corr[:] = 0.0
    tool_force[:] = 0.0
    tool_point[:] = 0.0
    bary = np.zeros(3)
    p0 = np.zeros(3)
    p1 = np.zeros(3)
    va = np.zeros(3)
    vb = np.zeros(3)
    vc = np.zeros(3)
    box = np.zeros(6)
    # Which capsules have a surface node within a radius + one edge: only those can meet a face.
    for c in range(n_cap):
        near[c] = 0
        reach = caps[c, 6] + edge
        _capsule_box(caps, c, reach, box)
        for q in range(surf_nodes.shape[0]):
            j = surf_nodes[q]
            px, py, pz = x[j, 0], x[j, 1], x[j, 2]
            if px < box[0] or px > box[3] or py < box[1] or py > box[4] or pz < box[2] or pz > box[5]:
                continue
            s = _closest_on_segment(caps, c, px, py, pz)
            ex = px - (caps[c, 0] + s * (caps[c, 3] - caps[c, 0]))
            ey = py - (caps[c, 1] + s * (caps[c, 4] - caps[c, 1]))
            ez = pz - (caps[c, 2] + s * (caps[c, 5] - caps[c, 2]))
            if ex * ex + ey * ey + ez * ez < reach * reach:
                near[c] = 1
                break
    # 1. Node contacts: the carried force is per node, so complementarity is per node too: on the
    #    capsule surface with a push >= 0, or off it (beyond the band) with none.
    for _ in range(iters):
        for c in range(n_cap):
            if near[c] == 0:
                continue
            r = caps[c, 6]
            reach = r + margin
            _capsule_box(caps, c, reach, box)
            tool = cap_tool[c]
            for q in range(surf_nodes.shape[0]):
                j = surf_nodes[q]
                px, py, pz = x[j, 0], x[j, 1], x[j, 2]
                if px < box[0] or px > box[3] or py < box[1] or py > box[4] or pz < box[2] or pz > box[5]:
                    continue
                if skip[j] or inv_mass[j] == 0.0:
                    continue
                s = _closest_on_segment(caps, c, px, py, pz)
                ex = px - (caps[c, 0] + s * (caps[c, 3] - caps[c, 0]))
                ey = py - (caps[c, 1] + s * (caps[c, 4] - caps[c, 1]))
                ez = pz - (caps[c, 2] + s * (caps[c, 5] - caps[c, 2]))
                dist = np.sqrt(ex * ex + ey * ey + ez * ez)
                if dist >= reach or dist < 1e-12:
                    continue
                nx, ny, nz = ex / dist, ey / dist, ez / dist
                gap = dist - r
                if gap < 0.0:
                    move = -gap
                else:
                    # In the band: pull back only as far as the carried push (and this sweep's
                    # corrections) allow.
                    fn = f[j, 0] * nx + f[j, 1] * ny + f[j, 2] * nz
                    cn = corr[j, 0] * nx + corr[j, 1] * ny + corr[j, 2] * nz
                    room = fn * h2 * inv_mass[j] + cn
                    if room <= 0.0:
                        continue
                    move = -min(gap, room)
                touched[j] = tool + 1
                normal[j, 0], normal[j, 1], normal[j, 2] = nx, ny, nz
                x[j, 0] += move * nx
                x[j, 1] += move * ny
                x[j, 2] += move * nz
                corr[j, 0] += move * nx
                corr[j, 1] += move * ny
                corr[j, 2] += move * nz
    # 2. Carried forces from the corrections; nodes out of contact drop theirs; friction.
    for j in range(x.shape[0]):
        t1 = touched[j]
        if skip[j]:
            fm = np.sqrt(f[j, 0] ** 2 + f[j, 1] ** 2 + f[j, 2] ** 2)
            for i in range(3):
                tool_force[t1 - 1, i] -= f[j, i]
                tool_point[t1 - 1, i] += fm * x[j, i]
            tool_point[t1 - 1, 3] += fm
            continue
        if t1 == 0:
            # Out of contact: drop the carried force. (Its push in this step was spread over the
            # tissue by the implicit solve, so it is small.)
            f[j, 0] = f[j, 1] = f[j, 2] = 0.0
            continue
        for i in range(3):
            v[j, i] += corr[j, i] * inv_h
            f[j, i] += mass[j] * corr[j, i] * inv_h2
        nx, ny, nz = normal[j, 0], normal[j, 1], normal[j, 2]
        fn = f[j, 0] * nx + f[j, 1] * ny + f[j, 2] * nz
        if fn <= 0.0:
            f[j, 0] = f[j, 1] = f[j, 2] = 0.0
            touched[j] = 0
            continue
        # Friction: the carried tangential force plus what would stop the node sliding on the tool,
        # clamped to the Coulomb cone |f_t| <= mu f_n. Tool velocity from the nearest capsule.
        c_best = 0
        best = np.inf
        s_best = 0.0
        for c in range(n_cap):
            if cap_tool[c] != t1 - 1:
                continue
            s = _closest_on_segment(caps, c, x[j, 0], x[j, 1], x[j, 2])
            e = 0.0
            for i in range(3):
                d = x[j, i] - (caps[c, i] + s * (caps[c, 3 + i] - caps[c, i]))
                e += d * d
            e = np.sqrt(e) - caps[c, 6]
            if e < best:
                best, c_best, s_best = e, c, s
        rn = 0.0
        for i in range(3):
            vt = ((1.0 - s_best) * (caps[c_best, i] - caps_prev[c_best, i])
                  + s_best * (caps[c_best, 3 + i] - caps_prev[c_best, 3 + i])) * inv_h
            va[i] = v[j, i] - vt  # relative velocity
            rn += va[i] * normal[j, i]
        mag = 0.0
        for i in range(3):
            vb[i] = f[j, i] - fn * normal[j, i]  # old tangential force
            vc[i] = vb[i] - mass[j] * (va[i] - rn * normal[j, i]) * inv_h  # sticking force
            mag += vc[i] * vc[i]
        mag = np.sqrt(mag)
        scale = mu * fn / mag if mag > mu * fn else 1.0
        fm = 0.0
        for i in range(3):
            vc[i] *= scale
            dv = (vc[i] - vb[i]) * dt * inv_mass[j]
            v[j, i] += dv
            x[j, i] += dv * dt
            f[j, i] = fn * normal[j, i] + vc[i]
            fm += f[j, i] * f[j, i]
        fm = np.sqrt(fm)
        tool = t1 - 1
        for i in range(3):
            tool_force[tool, i] -= f[j, i]
            tool_point[tool, i] += fm * x[j, i]
        tool_point[tool, 3] += fm
    # 3. Faces: a capsule may touch a face between nodes (a tip landing inside a triangle). Each face
    #    in contact carries a normal force lam_face [N] between steps, like a node: spread over the
    #    corners by normalised barycentric weights w^ (f_k = lam w^_k n), raised by what the
    #    penetration left after the step needs (d lam = depth / (h^2 sum w_k w^_k / m_k)), lowered in
    #    the band as far as it stays >= 0, dropped when the face leaves the band. Corners held by a
    #    node contact take no share, and a face whose contact point sits mostly on such corners is
    #    left to the node (the dimple around a pressed node grazes the capsule everywhere).
    n_tri = tris.shape[0]
    any_near = 0
    for c in range(n_cap):
        any_near += near[c]
    face_on[:] = 0
    if any_near > 0:
        for t in range(n_tri):
            ia, ib, ic = tris[t, 0], tris[t, 1], tris[t, 2]
            rr = 0.0
            for i in range(3):
                tri_box[t, i] = min(x[ia, i], x[ib, i], x[ic, i])
                tri_box[t, 3 + i] = max(x[ia, i], x[ib, i], x[ic, i])
                tri_box[t, 6 + i] = 0.5 * (tri_box[t, i] + tri_box[t, 3 + i])  # box centre
                rr += (tri_box[t, 3 + i] - tri_box[t, i]) ** 2
            tri_box[t, 9] = 0.5 * np.sqrt(rr)  # radius of a sphere holding the triangle
    for c in range(n_cap):
        if near[c] == 0:
            continue
        r = caps[c, 6]
        reach = r + margin
        _capsule_box(caps, c, reach, box)
        for i in range(3):
            p0[i] = caps[c, i]
            p1[i] = caps[c, 3 + i]
        tool = cap_tool[c]
        for t in range(n_tri):
            if (tri_box[t, 3] < box[0] or tri_box[t, 0] > box[3] or tri_box[t, 4] < box[1]
                    or tri_box[t, 1] > box[4] or tri_box[t, 5] < box[2] or tri_box[t, 2] > box[5]):
                continue
            # Bounding sphere against the segment: cheap, and rejects most of a long tilted shaft's box.
            sc = _closest_on_segment(caps, c, tri_box[t, 6], tri_box[t, 7], tri_box[t, 8])
            e = 0.0
            for i in range(3):
                d = tri_box[t, 6 + i] - (caps[c, i] + sc * (caps[c, 3 + i] - caps[c, i]))
                e += d * d
            if e > (reach + tri_box[t, 9]) ** 2:
                continue
            ia, ib, ic = tris[t, 0], tris[t, 1], tris[t, 2]
            if skip[ia] or skip[ib] or skip[ic]:
                continue
            for i in range(3):
                va[i] = x[ia, i]
                vb[i] = x[ib, i]
                vc[i] = x[ic, i]
            dist, s = closest_seg_tri(p0, p1, va, vb, vc, bary)
            if dist >= reach:
                continue
            free_w = 0.0
            for k in range(3):
                j = tris[t, k]
                if touched[j] != tool + 1 and inv_mass[j] > 0.0:
                    free_w += bary[k]
            if free_w < 0.5:
                continue
            if dist > 1e-9:
                for i in range(3):
                    sx = p0[i] + s * (p1[i] - p0[i])
                    face_dir[t, i] = (bary[0] * va[i] + bary[1] * vb[i] + bary[2] * vc[i] - sx) / dist
                depth = r - dist
            else:  # the axis touches the face: back out through the normal
                ux, uy, uz = vb[0] - va[0], vb[1] - va[1], vb[2] - va[2]
                wx, wy, wz = vc[0] - va[0], vc[1] - va[1], vc[2] - va[2]
                nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
                nl = np.sqrt(nx * nx + ny * ny + nz * nz)
                if nl < _EPS:
                    continue
                face_dir[t, 0], face_dir[t, 1], face_dir[t, 2] = -nx / nl, -ny / nl, -nz / nl
                depth = r
            wsum = 0.0
            for k in range(3):
                j = tris[t, k]
                share = bary[k] / free_w if (touched[j] != tool + 1 and inv_mass[j] > 0.0) else 0.0
                face_w[t, k] = share
                wsum += bary[k] * share * inv_mass[j]
            if wsum <= 0.0:
                continue
            old = lam_face[t] if face_tool[t] == tool + 1 else 0.0
            dlam = depth / (wsum * h2)
            if old + dlam < 0.0:
                dlam = -old
            lam_face[t] = old + dlam
            face_tool[t] = tool + 1
            face_on[t] = 1
            for k in range(3):
                j = tris[t, k]
                dm = face_w[t, k] * inv_mass[j] * dlam * h2
                for i in range(3):
                    x[j, i] += dm * face_dir[t, i]
                    v[j, i] += dm * face_dir[t, i] * inv_h
    f_face[:] = 0.0
    for t in range(n_tri):
        if face_on[t] == 0 or lam_face[t] <= 0.0:
            lam_face[t] = 0.0
            face_tool[t] = 0
            continue
        tool = face_tool[t] - 1
        for k in range(3):
            j = tris[t, k]
            fk = lam_face[t] * face_w[t, k]
            for i in range(3):
                f_face[j, i] += fk * face_dir[t, i]
                tool_force[tool, i] -= fk * face_dir[t, i]
                tool_point[tool, i] += fk * x[j, i]
            tool_point[tool, 3] += fk


@nb.njit(cache=True, nogil=True)
def build_capsules(link_pose, local_seg, radius, caps, frame_r, frame_p):
    """World capsules from link poses.

    link_pose (t, 3, 7): per tool the shaft, jaw A, jaw B link poses (position [m], quaternion
    x, y, z, w); local_seg (t, 3, 6): each capsule's segment ends in its link frame [m];
    radius (t, 3) [m]; caps (3 t, 7) out; frame_r (t, 3, 3), frame_p (t, 3) out: shaft frames.
    """
    rot = np.zeros((3, 3))
    for t in range(link_pose.shape[0]):
        for k in range(3):
            qx, qy, qz, qw = link_pose[t, k, 3], link_pose[t, k, 4], link_pose[t, k, 5], link_pose[t, k, 6]
            rot[0, 0] = 1.0 - 2.0 * (qy * qy + qz * qz)
            rot[0, 1] = 2.0 * (qx * qy - qz * qw)
            rot[0, 2] = 2.0 * (qx * qz + qy * qw)
            rot[1, 0] = 2.0 * (qx * qy + qz * qw)
            rot[1, 1] = 1.0 - 2.0 * (qx * qx + qz * qz)
            rot[1, 2] = 2.0 * (qy * qz - qx * qw)
            rot[2, 0] = 2.0 * (qx * qz - qy * qw)
            rot[2, 1] = 2.0 * (qy * qz + qx * qw)
            rot[2, 2] = 1.0 - 2.0 * (qx * qx + qy * qy)
            if k == 0:
                for i in range(3):
                    frame_p[t, i] = link_pose[t, 0, i]
                    for m in range(3):
                        frame_r[t, i, m] = rot[i, m]
            c = 3 * t + k
            for e in range(2):
                for i in range(3):
                    acc = link_pose[t, k, i]
                    for m in range(3):
                        acc += rot[i, m] * local_seg[t, k, 3 * e + m]
                    caps[c, 3 * e + i] = acc
            caps[c, 6] = radius[t, k]


@nb.njit(cache=True, nogil=True)
def clearance(caps, tris, x):
    """Smallest distance [m] between any capsule's surface and any surface triangle (negative:
    the triangle is inside the capsule by that much). caps (k, 7), tris (t, 3), x (n, 3) [m]."""
    bary = np.zeros(3)
    p0 = np.zeros(3)
    p1 = np.zeros(3)
    a = np.zeros(3)
    b = np.zeros(3)
    c = np.zeros(3)
    best = np.inf
    for k in range(caps.shape[0]):
        for i in range(3):
            p0[i] = caps[k, i]
            p1[i] = caps[k, 3 + i]
        for t in range(tris.shape[0]):
            for i in range(3):
                a[i] = x[tris[t, 0], i]
                b[i] = x[tris[t, 1], i]
                c[i] = x[tris[t, 2], i]
            d, _ = closest_seg_tri(p0, p1, a, b, c, bary)
            best = min(best, d - caps[k, 6])
    return best
