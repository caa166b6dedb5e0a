"""Hand motion for scripted policies: minimum-jerk moves, tremor, and the device each hand is.

`HandDevice` is a `haptics.device.ScriptedHand` whose samples come from a policy: the session step
calls `observe(scene, wmap)` (the policy plans from what it sees), then `read()` (the sample: the
hand's commanded world tip mapped into the device frame by `wmap.inverse`), then `write_force(f)`
(the hand feels f; scripted hands keep it as `last_force`).
"""

from __future__ import annotations

import numpy as np

from haptics.device import ScriptedHand


def minimum_jerk(s: float) -> float:
    """Minimum-jerk profile 10 s^3 - 15 s^4 + 6 s^5 for s in [0, 1] (Flash & Hogan 1985)."""
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 + s * (-15.0 + 6.0 * s))


def device_position(wmap, world: np.ndarray) -> np.ndarray:
    """Device-frame position [m] (3,) that makes `wmap` (the hand's WorkspaceMap) command the world
    tip `world` [m]."""
    return np.asarray(wmap.inverse(world), dtype=float)


class Mover:
    """One hand's commanded tip (world [m]) and jaw [rad], advanced one tick at a time.

    `start(target, jaw, duration)` begins a minimum-jerk move from the current command; `step()`
    advances it by one tick; `busy` while a move runs.
    """

    def __init__(self, tip: np.ndarray, jaw: float, dt: float) -> None:
        self.tip = np.array(tip, dtype=float)
        self.jaw = float(jaw)
        self.dt = dt
        self._from = self.tip.copy()
        self._to = self.tip.copy()
        self._jaw_from = self._jaw_to = self.jaw
        self._n = 0
        self._k = 0

    @property
    def busy(self) -> bool:
        return self._k < self._n

    def start(self, target, jaw: float | None, duration: float) -> None:
        self._from[:] = self.tip
        self._to[:] = target
        self._jaw_from = self.jaw
        self._jaw_to = self.jaw if jaw is None else float(jaw)
        self._n = max(1, int(round(duration / self.dt)))
        self._k = 0

    def step(self) -> None:
        if self._k < self._n:
            self._k += 1
            w = minimum_jerk(self._k / self._n)
            self.tip[:] = self._from + w * (self._to - self._from)
            self.jaw = self._jaw_from + w * (self._jaw_to - self._jaw_from)


class Tremor:
    """Physiological-like tremor: per axis a sum of two sines (6-10 Hz), amplitude [m], seeded."""

    def __init__(self, amplitude: float, rng: np.random.Generator) -> None:
        self.amplitude = amplitude
        self.freq = rng.uniform(6.0, 10.0, size=(2, 3))
        self.phase = rng.uniform(0.0, 2 * np.pi, size=(2, 3))

    def at(self, t: float) -> np.ndarray:
        if self.amplitude == 0.0:
            return np.zeros(3)
        return 0.5 * self.amplitude * np.sin(2 * np.pi * self.freq * t + self.phase).sum(axis=0)


class HandDevice(ScriptedHand):
    """One hand of a scripted policy, as a device (see the module docstring). hand: tool index."""

    def __init__(self, policy, hand: int) -> None:
        super().__init__(f"scripted-{policy.style.name}-{hand}")
        self.policy = policy
        self.hand = hand

    def observe(self, scene, wmap) -> None:
        """Look at the world; the policy advances and sets this hand's next sample."""
        tip, jaw = self.policy.observe(scene, self.hand)
        self.position = device_position(wmap, tip)
        self.gripper = jaw
