"""Numba kernel of the virtual coupling (the math of `sim.tool_scene`, one call per tool per tick).

The same formulas as `sim.ports` (target projection, tip kinematics) and `sim.tool_scene`
(critically damped coupling), fused so a tick pays one dispatch instead of ~30 small NumPy calls;
`tests/sim/test_instruments_ports.py` checks the kernel against the NumPy functions.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Saturation of the coupling force [N]: above the strongest safe pull on tissue (11.4 N, fascia,
#: ../shared/REFERENCES.md) so every tear threshold stays reachable, but bounded: a tool stuck (on
#: a fixed organ, at its port's angle limit) while the hand moves on stretched the coupling spring
#: to 50-90 N in the cholecystectomy, pushed that into the tissue and into the force metrics.
MAX_COUPLING_FORCE = 15.0
#: Roll servo: natural frequency x dt of the joint spring-damper that turns the shaft to its
#: commanded roll (critically damped, explicit torque: stable well past 0.3; the tip coupling is
#: refused above 0.5). A hand holds an instrument's roll far stiffer than the tip's 500 N/m
#: coupling: a roll spring of the tip's natural frequency (k I_roll / m, 1.7 mNm/rad for the
#: 5e-7 kg m^2 shaft) let 1.6 mNm from the gauze (0.5 N on a curved blade 3 mm off the axis)
#: turn the scissors 20-40 degrees while they closed. At 0.3: 0.045 Nm/rad, ~2 degrees.
ROLL_OMEGA_DT = 0.3


@nb.njit(cache=True, nogil=True)
def project_tip(port, target, max_angle, min_depth, max_depth, out):
    """`sim.ports.project_tip_target` into out (3,) [m]; returns the depth s [m]."""
    dx, dy, dz = target[0] - port[0], target[1] - port[1], target[2] - port[2]
    n = np.sqrt(dx * dx + dy * dy + dz * dz)
    if n == 0.0:
        ux, uy, uz = 0.0, 0.0, -1.0
    else:
        ux, uy, uz = dx / n, dy / n, dz / n
        if -uz < np.cos(max_angle):
            h = np.sqrt(ux * ux + uy * uy)
            if h == 0.0:
                ux, uy, uz = 0.0, 0.0, -1.0
            else:
                ux, uy, uz = np.sin(max_angle) * ux / h, np.sin(max_angle) * uy / h, -np.cos(max_angle)
    s = min(max(dx * ux + dy * uy + dz * uz, min_depth), max_depth)
    out[0], out[1], out[2] = port[0] + s * ux, port[1] + s * uy, port[2] + s * uz
    return s


@nb.njit(cache=True, nogil=True)
def coupling_torques(port, q, qd, mass, grav, target, prev_target, k, dt, max_angle,
                     min_depth, max_depth, tau, force, x_target):
    """One tool's coupling for one tick.

    port (3,) [m]; q, qd (4,): (a, b [rad], s [m], roll [rad]) and rates; mass (4, 4): joint-space
    inertia of (a, b, s, roll); grav (4,): gravity-holding joint torques; target (4,): commanded tip
    (x, y, z [m]) and roll [rad]; prev_target (3,) [m]: last tick's projected target (updated in
    place); k [N/m]; dt [s]; the port limits. Outputs: tau (4,) joint torques/forces
    to command, force (3,) [N] the coupling force on the proxy (saturated at MAX_COUPLING_FORCE),
    x_target (3,) [m] projected target.
    """
    project_tip(port, target, max_angle, min_depth, max_depth, x_target)
    a, b, s = q[0], q[1], q[2]
    sa, ca, sb, cb = np.sin(a), np.cos(a), np.sin(b), np.cos(b)
    jac = np.empty((3, 3))
    jac[0, 0], jac[0, 1], jac[0, 2] = 0.0, -s * cb, -sb
    jac[1, 0], jac[1, 1], jac[1, 2] = s * ca * cb, -s * sa * sb, sa * cb
    jac[2, 0], jac[2, 1], jac[2, 2] = s * sa * cb, s * ca * sb, -ca * cb
    x = np.empty(3)
    x[0], x[1], x[2] = port[0] - s * sb, port[1] + s * sa * cb, port[2] - s * ca * cb
    v = jac @ qd[:3]
    jinv = np.linalg.inv(jac)
    m3 = np.empty((3, 3))  # contiguous copy: PyBullet's matrix arrives as a slice of the 6x6
    for r in range(3):
        for c in range(3):
            m3[r, c] = mass[r, c]
    lam = jinv.T @ m3 @ jinv
    lam = 0.5 * (lam + lam.T)
    w, vec = np.linalg.eigh(lam)
    root = np.zeros((3, 3))
    for i in range(3):
        wi = np.sqrt(max(w[i], 0.0))
        for r in range(3):
            for c in range(3):
                root[r, c] += vec[r, i] * wi * vec[c, i]
    damp = 2.0 * np.sqrt(k) * root
    dv = np.empty(3)  # target velocity (finite difference) minus proxy velocity [m/s]
    for i in range(3):
        dv[i] = (x_target[i] - prev_target[i]) / dt - v[i]
    for i in range(3):
        force[i] = k * (x_target[i] - x[i]) + damp[i, 0] * dv[0] + damp[i, 1] * dv[1] + damp[i, 2] * dv[2]
    mag = np.sqrt(force[0] * force[0] + force[1] * force[1] + force[2] * force[2])
    if mag > MAX_COUPLING_FORCE:
        for i in range(3):
            force[i] *= MAX_COUPLING_FORCE / mag
    prev_target[:] = x_target
    jt_f = jac.T @ force
    for i in range(3):
        tau[i] = grav[i] + jt_f[i]
    # Roll: a critically damped joint spring-damper at ROLL_OMEGA_DT / dt (a hand holds its roll stiff).
    i_roll = mass[3, 3]
    omega = ROLL_OMEGA_DT / dt
    tau[3] = grav[3] + i_roll * omega * (omega * (target[3] - q[3]) - 2.0 * qd[3])
