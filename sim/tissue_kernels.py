"""Rotation kernels of the tissue core (Numba, nogil, float64, no allocation): quaternion to matrix
and the warm-started polar-decomposition iteration that every element runs in each energy
evaluation (`sim.tissue_elements.element_pass`).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


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


@nb.njit(nogil=True, cache=True)
def relative_quat(w, x, y, z, rw, rx, ry, rz):
    """q r^* (the rotation q after undoing r), (w, x, y, z) unit quaternions."""
    return (w * rw + x * rx + y * ry + z * rz, -w * rx + x * rw - y * rz + z * ry,
            -w * ry + x * rz + y * rw - z * rx, -w * rz - x * ry + y * rx + z * rw)
