"""The gymnasium environments (research.envs): what a researcher relies on, on real PyBullet,
Numba tissue and EGL. Episodes are shortened with time_limit_s to keep the suite fast."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import research.envs  # noqa: F401 - registers the environments
from research.envs.env import MAX_SPEED_M_S

RETRACTION = {"tissue_tets": 1000, "time_limit_s": 1.0}


def _actions(env, n, seed=7):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(n)]


def test_both_environments_are_registered_and_pass_the_checker():
    for env_id, kwargs in (("trocar/PegTransfer-v0", {"time_limit_s": 0.5}),
                           ("trocar/TissueRetraction-v0", RETRACTION)):
        env = gym.make(env_id, **kwargs)
        try:
            check_env(env.unwrapped, skip_render_check=True)
        finally:
            env.close()


def test_reset_is_in_place_and_the_same_seed_gives_the_same_episode():
    env = gym.make("trocar/TissueRetraction-v0", **RETRACTION).unwrapped
    try:
        client, tissue = env.scene.rigid.client, env.scene.tissue
        acts = _actions(env, 3)
        runs = []
        for seed in (5, 6, 5):
            obs, info = env.reset(seed=seed)
            seq = [obs] + [env.step(a)[0] for a in acts]
            runs.append((np.array(seq), env.procedure.target.copy(), env.scene.checksum()))
            assert info["reset_s"] < 1.0  # in place: no new world, no refactorisation
        assert env.scene.rigid.client == client and env.scene.tissue is tissue
        np.testing.assert_array_equal(runs[0][0], runs[2][0])
        assert runs[0][2] == runs[2][2]
        assert not np.array_equal(runs[0][1], runs[1][1])  # the seed moves the target
        assert np.abs(runs[0][0][-1] - runs[0][0][0]).max() > 1e-3  # the actions did something
    finally:
        env.close()


def test_an_action_moves_the_tip_at_the_documented_speed_and_opens_the_jaw():
    env = gym.make("trocar/PegTransfer-v0", time_limit_s=2.0).unwrapped
    try:
        obs0, _ = env.reset(seed=0)
        a = np.zeros(env.action_space.shape, np.float32)
        a[1] = 1.0  # tool 0: +y at full speed
        a[4] = 1.0  # tool 0: open the jaw
        for _ in range(5):
            obs, *_ = env.step(a)
        moved = obs[7 + 1] - obs0[7 + 1]  # tool 0's target y
        assert moved == pytest.approx(5 * MAX_SPEED_M_S * env.control_period_s, rel=1e-6)
        assert obs[1] - obs0[1] > 0.5 * moved  # the real tip followed through the coupling
        assert obs[11] > 0.3  # jaw command [rad]
        assert obs[15 + 11] == 0.0  # tool 1 untouched
    finally:
        env.close()


def test_episode_ends_truncated_at_the_time_limit_with_metrics_and_result():
    env = gym.make("trocar/PegTransfer-v0", time_limit_s=0.3)
    try:
        env.reset(seed=1)
        steps = 0
        for a in _actions(env, 10):
            _, reward, terminated, truncated, info = env.step(a)
            steps += 1
            if terminated or truncated:
                break
        assert truncated and not terminated and steps == 3
        assert info["result"]["procedure"] == "peg_transfer"
        assert info["metrics"]["completion_time"] == pytest.approx(0.3)
        assert set(info["reward_terms"]) >= {"placed", "reach", "score"}
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
    finally:
        env.close()


def test_camera_observations_show_the_scene_with_depth_and_points():
    env = gym.make("trocar/TissueRetraction-v0", obs_mode="rgbd", point_cloud=True, image_size=(48, 64),
                   **RETRACTION)
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        rgb, depth, pts = obs["rgb"], obs["depth"][..., 0], obs["points"]
        assert rgb.shape == (48, 64, 3) and rgb.std() > 5  # not a blank frame
        near = depth < 1.0  # something drawn, not the far plane
        assert near.mean() > 0.5
        # the centre of the view lies on the pad or the floor (z ~ 0..2 cm), in front of the scope
        centre = pts[24, 32]
        assert -0.005 < centre[2] < 0.03
        scope_eye = env.unwrapped.scene.scope.pose[:3]
        assert np.linalg.norm(centre - scope_eye) == pytest.approx(depth[24, 32], rel=0.5)
    finally:
        env.close()


def test_two_environments_in_one_process_do_not_disturb_each_other():
    a = gym.make("trocar/PegTransfer-v0", time_limit_s=1.0).unwrapped
    b = gym.make("trocar/PegTransfer-v0", time_limit_s=1.0).unwrapped
    try:
        assert a.scene.rigid.client != b.scene.rigid.client
        acts = _actions(a, 3)
        a.reset(seed=2)
        b.reset(seed=2)
        for act in acts:  # interleaved, b with other actions
            oa = a.step(act)[0]
            b.step(-act)
        a.reset(seed=2)
        for act in acts:
            alone = a.step(act)[0]
        np.testing.assert_array_equal(oa, alone)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_environments_step_and_autoreset(mode):
    envs = gym.make_vec("research.envs:trocar/PegTransfer-v0", num_envs=2, vectorization_mode=mode,
                        time_limit_s=0.2)
    try:
        obs, _ = envs.reset(seed=[0, 1])
        assert obs.shape == (2, envs.single_observation_space.shape[0])
        ends = 0
        for _ in range(3):
            obs, reward, term, trunc, _ = envs.step(envs.action_space.sample())
            ends += int(np.sum(term | trunc))
            assert np.all(np.isfinite(obs)) and reward.shape == (2,)
        assert ends == 2  # both hit the 0.2 s limit on the second step
    finally:
        envs.close()


def test_two_camera_environments_render_their_own_scenes_and_survive_each_others_close():
    a = gym.make("trocar/PegTransfer-v0", obs_mode="rgb", image_size=(32, 32), time_limit_s=1.0).unwrapped
    b = gym.make("trocar/TissueRetraction-v0", obs_mode="rgb", image_size=(32, 32), **RETRACTION).unwrapped
    try:
        img_a, _ = a.reset(seed=0)
        img_b, _ = b.reset(seed=0)
        assert np.abs(img_a.astype(int) - img_b.astype(int)).mean() > 5  # two different scenes
        b.close()
        again = a.reset(seed=0)[0]
        np.testing.assert_array_equal(again, img_a)
    finally:
        a.close()
        b.close()
