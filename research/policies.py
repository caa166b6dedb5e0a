"""Batch policies by name: `policy_hands(name, procedure, seed)` -> one HapticDevice per hand.

- ``expert`` / ``novice``: the procedure's scripted hands (`procedures.policies.make_hands`);
- ``random``: `RandomHand`s, a seeded random walk of each handle plus random jaw flips (a baseline
  that does nothing useful, for metrics' floor values);
- ``module:function``: your own, `function(procedure: str, seed: int) -> list[HapticDevice]`, one
  device per hand (hand h drives tool h; a device may have `observe(scene, wmap)`, called each tick
  before `read()`, to look at the world; it acts only through its samples).
"""

from __future__ import annotations

import importlib
import time

import numpy as np

from haptics.device import DeviceSample, DeviceSpec, HapticDevice

BUILTIN = ("expert", "novice", "random")
RANDOM_REACH_M = 0.04  # [m] the random walk stays within this of the workspace centre (device frame)
RANDOM_STEP_M = 2e-5  # [m] random walk step per tick (RMS per axis)
RANDOM_FLIP_P = 0.002  # per tick probability of flipping the jaw between open and closed
RANDOM_JAW_OPEN = 0.6  # [rad]


class RandomHand(HapticDevice):
    """A seeded random walk of the handle (device frame [m]) and random jaw flips, one step per read."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.position = np.zeros(3)
        self.jaw = 0.0
        self._seq = 0
        self.last_force = np.zeros(3)

    @property
    def spec(self) -> DeviceSpec:
        return DeviceSpec(name="random")

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self) -> DeviceSample:
        self._seq += 1
        self.position = np.clip(self.position + self.rng.normal(0.0, RANDOM_STEP_M, 3),
                                -RANDOM_REACH_M, RANDOM_REACH_M)
        if self.rng.random() < RANDOM_FLIP_P:
            self.jaw = RANDOM_JAW_OPEN - self.jaw
        return DeviceSample(t=time.perf_counter(), seq=self._seq, position=self.position.copy(),
                            gripper=self.jaw, connected=True, fresh=True)

    def write_force(self, force, gripper: float = 0.0) -> None:
        self.last_force[:] = force


def check_policy(name: str) -> None:
    """ValueError (one line) unless `name` is a built-in policy or an importable module:function."""
    if name in BUILTIN:
        return
    _load(name)


def _load(name: str):
    module, sep, func = name.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"unknown policy {name!r}; expected {', '.join(BUILTIN)} or module:function")
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"policy {name!r}: {exc}") from None
    if not callable(fn):
        raise ValueError(f"policy {name!r} is not callable")
    return fn


def policy_hands(name: str, procedure: str, seed: int, n_hands: int = 2) -> list:
    """The hands of policy `name` for one episode of `procedure` with `seed` (module docstring)."""
    if name in ("expert", "novice"):
        from procedures.policies import make_hands

        return list(make_hands(name, seed, procedure))
    if name == "random":
        return [RandomHand(seed * 1000 + h) for h in range(n_hands)]
    hands = list(_load(name)(procedure, seed))
    if not hands:
        raise ValueError(f"policy {name!r} returned no hands")
    return hands
