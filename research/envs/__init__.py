"""Gymnasium environments of trocar, registered on import:

    import gymnasium as gym
    import research.envs  # registers trocar/PegTransfer-v0 and trocar/TissueRetraction-v0
    env = gym.make("trocar/PegTransfer-v0", obs_mode="state")

`gym.make("research.envs:trocar/PegTransfer-v0")` imports this module itself (what vector
environments' worker processes need). Keyword arguments are `research.envs.env.TrocarEnv`'s.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from research.envs.tasks import TASKS

ENV_IDS = tuple(TASKS)


def register_envs() -> None:
    """Register every task's environment with gymnasium (idempotent)."""
    for env_id in ENV_IDS:
        if env_id not in registry:
            register(id=env_id, entry_point="research.envs.env:TrocarEnv", kwargs={"task": env_id},
                     disable_env_checker=False)


register_envs()
