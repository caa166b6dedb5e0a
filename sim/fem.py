"""Linear-tetrahedron FEM in plain NumPy/SciPy: shape gradients, lumped masses, stiffness assembly,
and the slow references of the elastic laws (co-rotational, stable neo-Hookean: forces, energies)
that the Numba kernels are tested against.

Nothing here runs in the haptic loop; it builds models and checks them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def lame(young: float, poisson: float) -> tuple[float, float]:
    """Lamé parameters (mu, lambda) [Pa] from Young's modulus [Pa] and Poisson's ratio [-]."""
    mu = young / (2.0 * (1.0 + poisson))
    lam = young * poisson / ((1.0 + poisson) * (1.0 - 2.0 * poisson))
    return mu, lam


def rest_shape(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse rest edge matrices Dm^-1 [1/m], shape (m, 3, 3), and rest volumes [m^3], shape (m,).

    Dm = [X1-X0, X2-X0, X3-X0] (edge vectors as columns), so F = Ds Dm^-1.
    """
    p = points[tets]
    dm = (p[:, 1:, :] - p[:, :1, :]).transpose(0, 2, 1)
    return np.linalg.inv(dm), np.linalg.det(dm) / 6.0


def shape_gradients(dm_inv: np.ndarray) -> np.ndarray:
    """Gradients of the 4 linear shape functions [1/m], shape (m, 4, 3): grad N_a = row a-1 of Dm^-1."""
    g = np.empty((dm_inv.shape[0], 4, 3))
    g[:, 1:, :] = dm_inv
    g[:, 0, :] = -dm_inv.sum(axis=1)
    return g


def lumped_masses(node_count: int, tets: np.ndarray, volumes: np.ndarray, density) -> np.ndarray:
    """Node masses [kg], shape (n,): each tet's mass split equally over its 4 nodes."""
    m = np.zeros(node_count)
    np.add.at(m, tets.reshape(-1), np.repeat(np.broadcast_to(density, volumes.shape) * volumes / 4, 4))
    return m


def stiffness_matrix(points, tets, mu, lam) -> sp.csr_matrix:
    """Linear-elastic stiffness K [N/m], (3n, 3n) CSR, DOF 3*i+axis. mu, lam [Pa]: scalars or (m,)."""
    dm_inv, vol = rest_shape(points, tets)
    return stiffness_from_shapes(dm_inv, vol, tets, points.shape[0], mu, lam)


def stiffness_from_shapes(dm_inv, vol, tets, n, mu, lam) -> sp.csr_matrix:
    """`stiffness_matrix` from the elements' rest shapes: dm_inv (m, 3, 3) [1/m] and volumes
    vol (m,) [m^3] of tets (m, 4) over n nodes (a step matrix assembled at a deformed
    configuration turns them: `sim.tissue_model.TissueSystem.build`)."""
    g = shape_gradients(dm_inv)
    m = tets.shape[0]
    mu = np.broadcast_to(np.asarray(mu, float), (m,))
    lam = np.broadcast_to(np.asarray(lam, float), (m,))
    # K_e[a,i,b,j] = V (lam g_ai g_bj + mu g_aj g_bi + mu delta_ij g_a.g_b)
    gg = np.einsum("eai,ebj->eaibj", g, g)
    dot = np.einsum("eak,ebk->eab", g, g)
    gg_t = np.einsum("eaj,ebi->eaibj", g, g)
    ke = lam[:, None, None, None, None] * gg + mu[:, None, None, None, None] * gg_t
    ke += mu[:, None, None, None, None] * dot[:, :, None, :, None] * np.eye(3)[None, None, :, None, :]
    ke *= vol[:, None, None, None, None]
    dof = (3 * tets[:, :, None] + np.arange(3)[None, None, :]).reshape(m, 12)
    rows = np.repeat(dof, 12, axis=1).reshape(-1)
    cols = np.tile(dof, (1, 12)).reshape(-1)
    n3 = 3 * n
    return sp.csr_matrix((ke.reshape(-1), (rows, cols)), shape=(n3, n3))


def polar_rotation(f: np.ndarray) -> np.ndarray:
    """Rotation part of F, shape (..., 3, 3), by SVD with det = +1 (a reflection goes to the stretch)."""
    u, _, vt = np.linalg.svd(f)
    flip = np.linalg.det(u @ vt) < 0
    u[flip, :, -1] *= -1
    return u @ vt


def _corotated_stress(x, tets, dm_inv, mu, lam):
    """Deformation gradients, rotations and co-rotated strain/stress per tet (vectorised)."""
    m = tets.shape[0]
    mu = np.broadcast_to(np.asarray(mu, float), (m,))[:, None, None]
    lam = np.broadcast_to(np.asarray(lam, float), (m,))[:, None, None]
    p = x[tets]
    f = (p[:, 1:, :] - p[:, :1, :]).transpose(0, 2, 1) @ dm_inv
    r = polar_rotation(f)
    g = r.transpose(0, 2, 1) @ f
    eps = 0.5 * (g + g.transpose(0, 2, 1)) - np.eye(3)
    tr = np.trace(eps, axis1=1, axis2=2)[:, None, None]
    sigma = 2 * mu * eps + lam * tr * np.eye(3)
    return r, eps, sigma, mu, lam


def corotated_forces_reference(x, tets, dm_inv, vol, mu, lam) -> np.ndarray:
    """Co-rotational elastic node forces [N], shape (n, 3): the slow reference of the kernels.

    Energy per tet V (mu |eps|^2 + lam/2 tr(eps)^2) with eps = sym(R^T F) - I, R = polar(F) by
    SVD; force = -V R sigma Dm^-T on nodes 1..3, node 0 takes minus their sum.
    """
    r, _, sigma, _, _ = _corotated_stress(x, tets, dm_inv, mu, lam)
    h = -vol[:, None, None] * (r @ sigma) @ dm_inv.transpose(0, 2, 1)
    fe = np.concatenate([-h.sum(axis=2)[:, None, :], h.transpose(0, 2, 1)], axis=1)
    f = np.zeros_like(x)
    np.add.at(f, tets.reshape(-1), fe.reshape(-1, 3))
    return f


def corotated_energy_reference(x, tets, dm_inv, vol, mu, lam) -> float:
    """Total co-rotational elastic energy [J] of positions x (n, 3)."""
    _, eps, _, mu_, lam_ = _corotated_stress(x, tets, dm_inv, mu, lam)
    tr = np.trace(eps, axis1=1, axis2=2)
    dens = mu_[:, 0, 0] * np.sum(eps * eps, axis=(1, 2)) + 0.5 * lam_[:, 0, 0] * tr**2
    return float(np.sum(vol * dens))


def neohookean_params(mu, lam):
    """Stable neo-Hookean (mu', lam', a, psi_0) with the small-strain Lamé parameters mu, lam [Pa]
    (Smith et al. 2018): mu' = 4/3 mu, lam' = lam + 5/6 mu, a = 1 + 3 mu' / (4 lam'), psi_0 the
    energy density at F = I (subtracted so that rest has zero energy)."""
    mu_s = 4.0 / 3.0 * np.asarray(mu, float)
    lam_s = np.asarray(lam, float) + 5.0 / 6.0 * np.asarray(mu, float)
    # a dead element (mu = lam = 0: cut or torn away) has a = 1 and no stress, not 0 / 0
    a = 1.0 + 0.75 * np.divide(mu_s, lam_s, out=np.zeros_like(mu_s), where=lam_s > 0.0)
    psi0 = 0.5 * lam_s * (1.0 - a) ** 2 - 0.5 * mu_s * np.log(4.0)
    return mu_s, lam_s, a, psi0


def _neohookean_stress(x, tets, dm_inv, mu, lam):
    """First Piola stress P (m, 3, 3) [Pa] and energy density (m,) [J/m^3] of stable neo-Hookean."""
    m = tets.shape[0]
    mu_s, lam_s, a, psi0 = neohookean_params(np.broadcast_to(np.asarray(mu, float), (m,)),
                                             np.broadcast_to(np.asarray(lam, float), (m,)))
    p = x[tets]
    f = (p[:, 1:, :] - p[:, :1, :]).transpose(0, 2, 1) @ dm_inv
    j = np.linalg.det(f)
    cof = np.stack([np.cross(f[:, :, 1], f[:, :, 2]), np.cross(f[:, :, 2], f[:, :, 0]),
                    np.cross(f[:, :, 0], f[:, :, 1])], axis=2)  # dJ/dF, column k = f_{k+1} x f_{k+2}
    ic = np.sum(f * f, axis=(1, 2))
    piola = (mu_s * (1 - 1 / (ic + 1)))[:, None, None] * f + (lam_s * (j - a))[:, None, None] * cof
    psi = 0.5 * mu_s * (ic - 3) + 0.5 * lam_s * (j - a) ** 2 - 0.5 * mu_s * np.log(ic + 1) - psi0
    return piola, psi


def neohookean_forces_reference(x, tets, dm_inv, vol, mu, lam) -> np.ndarray:
    """Stable neo-Hookean elastic node forces [N], shape (n, 3): the slow reference of the kernels."""
    piola, _ = _neohookean_stress(x, tets, dm_inv, mu, lam)
    h = -vol[:, None, None] * piola @ dm_inv.transpose(0, 2, 1)
    fe = np.concatenate([-h.sum(axis=2)[:, None, :], h.transpose(0, 2, 1)], axis=1)
    f = np.zeros_like(x)
    np.add.at(f, tets.reshape(-1), fe.reshape(-1, 3))
    return f


def neohookean_energy_reference(x, tets, dm_inv, vol, mu, lam) -> float:
    """Total stable neo-Hookean elastic energy [J] of positions x (n, 3)."""
    _, psi = _neohookean_stress(x, tets, dm_inv, mu, lam)
    return float(np.sum(vol * psi))


def elastic_forces_reference(elasticity: str, x, tets, dm_inv, vol, mu, lam) -> np.ndarray:
    """Node forces [N] (n, 3) of the named law ('corotated' or 'neohookean')."""
    fn = neohookean_forces_reference if elasticity == "neohookean" else corotated_forces_reference
    return fn(x, tets, dm_inv, vol, mu, lam)


def elastic_energy_reference(elasticity: str, x, tets, dm_inv, vol, mu, lam) -> float:
    """Elastic energy [J] of the named law ('corotated' or 'neohookean')."""
    fn = neohookean_energy_reference if elasticity == "neohookean" else corotated_energy_reference
    return fn(x, tets, dm_inv, vol, mu, lam)


def damping_forces_reference(x, xp, r0, tets, dm_inv, vol, mu, lam, c) -> np.ndarray:
    """Node forces [N] (n, 3) of the step's Rayleigh damping potential c V W(eps_d), with
    eps_d = sym(R0^T grad(x - xp)), R0 (m, 3, 3) the rotations frozen at the step's start and
    W(e) = mu |e|^2 + lam/2 tr(e)^2: force = -c V R0 sigma(eps_d) Dm^-T (c = beta / h' [-])."""
    m = tets.shape[0]
    mu = np.broadcast_to(np.asarray(mu, float), (m,))[:, None, None]
    lam = np.broadcast_to(np.asarray(lam, float), (m,))[:, None, None]
    d = (x - xp)[tets]
    g = (d[:, 1:, :] - d[:, :1, :]).transpose(0, 2, 1) @ dm_inv
    rg = r0.transpose(0, 2, 1) @ g
    eps = 0.5 * (rg + rg.transpose(0, 2, 1))
    sigma = 2 * mu * eps + lam * np.trace(eps, axis1=1, axis2=2)[:, None, None] * np.eye(3)
    h = -c * vol[:, None, None] * (r0 @ sigma) @ dm_inv.transpose(0, 2, 1)
    fe = np.concatenate([-h.sum(axis=2)[:, None, :], h.transpose(0, 2, 1)], axis=1)
    f = np.zeros_like(x)
    np.add.at(f, tets.reshape(-1), fe.reshape(-1, 3))
    return f
