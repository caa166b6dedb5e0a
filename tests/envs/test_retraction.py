"""TissueRetraction-v0 can be solved through its actions alone: a scripted controller that reads
only the state observation grasps the flap and holds it at the target, and the episode ends as a
success with a score."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import research.envs  # noqa: F401 - registers the environments
from research.envs.env import MAX_SPEED_M_S, PER_TOOL


def test_a_scripted_controller_grasps_the_flap_and_holds_it_at_the_target():
    env = gym.make("trocar/TissueRetraction-v0", tissue_tets=1000)
    try:
        obs, _ = env.reset(seed=0)
        n_tools = env.action_space.shape[0] // 5
        flap = slice(n_tools * PER_TOOL, n_tools * PER_TOOL + 3)  # extra_labels: flap point, target, ...
        target = slice(flap.stop, flap.stop + 3)
        aim = slice(7, 10)  # tool 0's target x y z
        step = MAX_SPEED_M_S * env.unwrapped.control_period_s

        def toward(goal, jaw):
            a = np.zeros(env.action_space.shape, np.float32)
            a[:3] = np.clip((goal - obs[aim]) / step, -1, 1)
            a[4] = jaw
            return a

        start = obs[flap] + [0.004, 0.0, 0.0]
        low = start - [0, 0, 0.004]
        script = [(start + [0, 0, 0.02], 1, 30), (low, 1, 8), (low, -1, 4)]
        for goal, jaw, n in script:  # above the edge, jaws open; down onto it; close
            for _ in range(n):
                obs, reward, terminated, truncated, info = env.step(toward(goal, jaw))
        assert obs[target.stop] == 1.0  # grasped
        for _ in range(60):  # lift: move the tool by what the flap point still misses
            goal = obs[aim] + obs[target] - obs[flap]
            obs, reward, terminated, truncated, info = env.step(toward(goal, -1))
            if terminated or truncated:
                break
        assert terminated and not truncated
        assert info["result"]["status"] == "success" and info["result"]["score"] > 0
        assert info["metrics"]["hold_time"] >= 1.0
        assert np.linalg.norm(obs[flap] - obs[target]) < 0.005
        assert info["reward_terms"]["score"] > 0
    finally:
        env.close()
