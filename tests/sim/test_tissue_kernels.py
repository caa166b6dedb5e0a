"""The Numba element kernels against the slow NumPy reference, and the invariances they must keep."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from tissue_helpers import pad_model

from sim import fem
from sim.tissue import elastic_energy, elastic_forces, element_stress, make_state
from sim.tissue_elements import element_pass
from sim.tissue_kernels import polar_quat, quat_to_mat
from sim.tissue_model import TissueMaterial
from sim.tissue_reference import tangent_stiffness


def reference_forces(model, x):
    return fem.corotated_forces_reference(x, model.tets, model.dm_inv, model.volume, model.mu,
                                          model.lam)


@pytest.fixture(scope="module")
def model():
    return pad_model(cells=(4, 3, 2))


@pytest.fixture(scope="module")
def neo_model():
    return pad_model(cells=(4, 3, 2), material=TissueMaterial(elasticity="neohookean"))


def random_deformation(model, seed):
    rng = np.random.default_rng(seed)
    rot = Rotation.random(random_state=seed).as_matrix()
    stretch = np.diag(rng.uniform(0.6, 1.4, 3))  # includes 40 % compression
    return model.rest @ (rot @ stretch).T + rng.normal(scale=5e-4, size=model.rest.shape)


@pytest.mark.parametrize("seed", range(5))
def test_numba_forces_equal_numpy_reference_on_random_deformations(model, seed):
    x = random_deformation(model, seed)
    f = elastic_forces(model, make_state(model, x))
    ref = reference_forces(model, x)
    assert np.abs(ref).max() > 1e-3  # the deformation produces real forces
    np.testing.assert_allclose(f, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("seed", range(3))
def test_neohookean_forces_and_energy_equal_numpy_reference(neo_model, seed):
    m = neo_model
    x = random_deformation(m, seed)
    x[m.tets[0, 0]] = x[m.tets[0, 1:]].mean(axis=0) * 2 - x[m.tets[0, 0]]  # one element inside out
    state = make_state(m, x)
    args = (x, m.tets, m.dm_inv, m.volume, m.mu, m.lam)
    ref = fem.neohookean_forces_reference(*args)
    np.testing.assert_allclose(elastic_forces(m, state), ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    e_ref = fem.neohookean_energy_reference(*args)
    assert abs(elastic_energy(m, state) - e_ref) < 1e-12 * abs(e_ref)


def test_neohookean_has_the_small_strain_stiffness_of_the_same_young_and_poisson(model, neo_model):
    # Its tangent at rest is the linear stiffness matrix K of (E, nu).
    k_lin = model.stiffness().toarray()
    k_neo = tangent_stiffness(neo_model, neo_model.rest).toarray()
    np.testing.assert_allclose(k_neo, k_lin, rtol=0, atol=1e-6 * np.abs(k_lin).max())


def test_damping_forces_equal_numpy_reference(model):
    rng = np.random.default_rng(11)
    x = random_deformation(model, 1)
    xp = x + rng.normal(scale=2e-4, size=x.shape)
    state = make_state(model, x)  # converged rotations of x: the frozen R0
    q0 = state.q.copy()
    grad, force, weight, energy = (np.zeros((18, model.tet_count)), np.zeros((9, model.tet_count)),
                                   np.zeros(model.tet_count), np.zeros(model.tet_count))
    c = 15.0
    args = (model.tets_u, model.dm_inv_rows, model.volume, model.mu, model.lam, model.elasticity)
    element_pass(*args, x, xp, state.q, q0, c, 0, grad, force, weight, energy)
    with_damping = force.copy()
    element_pass(*args, x, xp, state.q, q0, 0.0, 0, grad, force, weight, energy)
    corners = (with_damping - force).T.reshape(-1, 3, 3)
    f = np.zeros((model.node_count, 3))
    np.add.at(f, model.tets[:, 1:].reshape(-1), corners.reshape(-1, 3))
    np.add.at(f, model.tets[:, 0], -corners.sum(axis=1))
    r0 = np.stack(quat_to_mat.py_func(*q0), axis=1).reshape(-1, 3, 3)
    ref = fem.damping_forces_reference(x, xp, r0, model.tets, model.dm_inv, model.volume,
                                       model.mu, model.lam, c)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(f, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("angle", [1.0, 45.0, 90.0, 179.0])
def test_rigidly_rotated_mesh_feels_no_elastic_force(model, angle):
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    rot = Rotation.from_rotvec(np.radians(angle) * axis).as_matrix()
    x = model.rest @ rot.T + np.array([0.02, -0.01, 0.05])
    f = elastic_forces(model, make_state(model, x))
    # Scale: the force a 1 % strain would give on one element face, E * h^2 * 0.01.
    scale = model.material.young * 0.01**2 * 0.01
    assert np.abs(f).max() < 1e-9 * scale


def test_forces_of_a_stretched_mesh_rotate_with_it(model):
    rng = np.random.default_rng(3)
    x = model.rest + rng.normal(scale=1e-3, size=model.rest.shape)
    rot = Rotation.from_euler("xyz", [30, -70, 110], degrees=True).as_matrix()
    f = elastic_forces(model, make_state(model, x))
    f_rot = elastic_forces(model, make_state(model, x @ rot.T))
    np.testing.assert_allclose(f_rot, f @ rot.T, atol=1e-9 * np.abs(f).max())


@pytest.mark.parametrize("seed", range(4))
def test_rotation_extraction_matches_svd_polar_decomposition(seed):
    rng = np.random.default_rng(seed)
    a = Rotation.random(random_state=seed).as_matrix() @ (np.eye(3) + 0.3 * rng.normal(size=(3, 3)))
    if np.linalg.det(a) < 0:
        a[:, 0] *= -1
    q = np.array([1.0, 0.0, 0.0, 0.0])
    r = polar_quat(a, q, 200)
    np.testing.assert_allclose(r, fem.polar_rotation(a), atol=1e-10)


def test_rotation_of_an_inverted_element_is_a_proper_rotation():
    a = np.diag([1.0, 1.0, -0.3])  # flattened through itself
    r = polar_quat(a, np.array([1.0, 0.0, 0.0, 0.0]), 200)
    assert np.isclose(np.linalg.det(r), 1.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 70.0])
def test_element_stress_of_a_simple_shear_is_sqrt3_mu_gamma_in_any_orientation(model, angle):
    gamma = 0.01
    shear = np.eye(3) + gamma * np.outer([1, 0, 0], [0, 1, 0])
    rot = Rotation.from_rotvec(np.radians(angle) * np.array([0.0, 0.6, 0.8])).as_matrix()
    state = make_state(model, model.rest @ (rot @ shear).T)
    vm = element_stress(model, state)
    # Co-rotated small shear: sigma_xy = mu * gamma (to O(gamma^2)); von Mises = sqrt(3) sigma_xy.
    expected = np.sqrt(3) * model.mu * gamma
    np.testing.assert_allclose(vm, expected, rtol=2 * gamma)


def test_refactoring_on_an_unchanged_pattern_reuses_the_ordering_and_gives_the_same_factor(model):
    # An organ's step matrix is refactored at its configuration on the same pattern every
    # 0.5-1.5 s: the fill-reducing order is looked up, not recomputed, and the factor is the one
    # a fresh ordering gives, to the bit. Another pattern gets its own order.
    import scipy.sparse as sp

    from sim.sparse_factor import cached_orderings, factor_spd_blocked, minimum_degree_order

    free = np.repeat(~model.fixed, 3)
    kf = sp.csr_matrix(model.stiffness())[free][:, free]
    mat = sp.csr_matrix(kf + sp.diags(np.full(kf.shape[0], 1.0)))  # SPD, the step matrix's pattern
    cached_orderings(clear=True)
    first = factor_spd_blocked(mat)
    assert cached_orderings() == 1
    first.order[:] = 0  # a caller's array: the cache keeps its own copy
    again = factor_spd_blocked(2.0 * mat)
    assert cached_orderings() == 1
    assert np.array_equal(again.order, minimum_degree_order(sp.coo_matrix(mat), mat.shape[0] // 3))
    cached_orderings(clear=True)
    recomputed = factor_spd_blocked(2.0 * mat)
    assert np.array_equal(again.l_val, recomputed.l_val) and np.array_equal(again.d_inv, recomputed.d_inv)
    factor_spd_blocked(sp.csr_matrix(mat[:-3, :-3]))  # one node fewer: another pattern
    assert cached_orderings() == 2
