"""The Numba element kernels against the slow NumPy reference, and the invariances they must keep."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from tissue_helpers import pad_model

from sim import fem
from sim.tissue import elastic_forces, element_stress, make_state
from sim.tissue_kernels import polar_quat


def reference_forces(model, x):
    return fem.corotated_forces_reference(x, model.tets, model.dm_inv, model.volume, model.mu,
                                          model.lam)


@pytest.fixture(scope="module")
def model():
    return pad_model(cells=(4, 3, 2))


@pytest.mark.parametrize("seed", range(5))
def test_numba_forces_equal_numpy_reference_on_random_deformations(model, seed):
    rng = np.random.default_rng(seed)
    rot = Rotation.random(random_state=seed).as_matrix()
    stretch = np.diag(rng.uniform(0.6, 1.4, 3))  # includes 40 % compression
    x = model.rest @ (rot @ stretch).T + rng.normal(scale=5e-4, size=model.rest.shape)
    f = elastic_forces(model, make_state(model, x))
    ref = reference_forces(model, x)
    assert np.abs(ref).max() > 1e-3  # the deformation produces real forces
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
