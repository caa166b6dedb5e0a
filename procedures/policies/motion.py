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
    """One hand's commanded tip (world [m]), jaw [rad] and roll [rad, relative to home], advanced
    one tick at a time.

    `start(target, jaw, duration, roll)` begins a minimum-jerk move from the current command
    (jaw/roll None: keep); `step()` advances it by one tick; `busy` while a move runs.
    """

    def __init__(self, tip: np.ndarray, jaw: float, dt: float) -> None:
        self.tip = np.array(tip, dtype=float)
        self.jaw = float(jaw)
        self.roll = 0.0
        self.dt = dt
        self._from = self.tip.copy()
        self._to = self.tip.copy()
        self._jaw_from = self._jaw_to = self.jaw
        self._roll_from = self._roll_to = 0.0
        self._n = 0
        self._k = 0

    @property
    def busy(self) -> bool:
        return self._k < self._n

    def start(self, target, jaw: float | None, duration: float, roll: float | None = None) -> None:
        self._from[:] = self.tip
        self._to[:] = target
        self._jaw_from = self.jaw
        self._jaw_to = self.jaw if jaw is None else float(jaw)
        self._roll_from = self.roll
        self._roll_to = self.roll if roll is None else float(roll)
        self._n = max(1, int(round(duration / self.dt)))
        self._k = 0

    def step(self) -> None:
        if self._k < self._n:
            self._k += 1
            w = minimum_jerk(self._k / self._n)
            self.tip[:] = self._from + w * (self._to - self._from)
            self.jaw = self._jaw_from + w * (self._jaw_to - self._jaw_from)
            self.roll = self._roll_from + w * (self._roll_to - self._roll_from)


class ScriptedPolicy:
    """The shared brain of two scripted hands: each hand runs a script (a generator) of commands the
    executor carries out tick by tick: ('move', tip [m] (3,), jaw [rad] or None, duration [s]
    [, roll [rad]]) as a minimum-jerk move, ('hold', seconds), ('until', predicate) to wait on
    the world. Subclasses set `self.scripts` (one generator per hand) and `self.movers` in
    `_setup(scene)`; `turns` (class attribute): the hands also return a roll.

    style: needs `tremor` [m], `speed` [m/s], `min_move_s` [s], `pause` (lo, hi) [s]."""

    turns = False

    def __init__(self, style, seed: int = 0) -> None:
        self.style = style
        self.rng = np.random.default_rng(seed)
        self.tremor = [Tremor(style.tremor, self.rng), Tremor(style.tremor, self.rng)]
        self.scene = None
        self.movers: list[Mover] = []
        self.scripts = []
        self.waiting: list = [None, None]
        self.finished = False
        self.gave_up = False
        self.t = 0.0
        self._tick = -1

    def observe(self, scene, hand: int):
        """Advance the policy (once per tick) and return hand's commanded tip [m] (3,) and jaw [rad]
        (and roll [rad] if the policy `turns` the instruments)."""
        if self.scene is None:
            self.scene = scene
            self._setup(scene)
        if scene.tick_count != self._tick:
            self._tick = scene.tick_count
            self.t = self._tick * scene.dt
            for h in (0, 1):
                self._advance(h)
        m = self.movers[hand]
        tip = m.tip + self.tremor[hand].at(self.t)
        return (tip, m.jaw, m.roll) if self.turns else (tip, m.jaw)

    def _setup(self, scene) -> None:
        raise NotImplementedError

    def _advance(self, h: int) -> None:
        m = self.movers[h]
        if m.busy:
            m.step()
            return
        wait = self.waiting[h]
        if wait is not None:
            if not wait():
                return
            self.waiting[h] = None
        while not m.busy and self.waiting[h] is None:
            try:
                cmd = next(self.scripts[h])
            except StopIteration:
                self.waiting[h] = lambda: False
                return
            if cmd[0] == "move":
                m.start(cmd[1], cmd[2], cmd[3], cmd[4] if len(cmd) > 4 else None)
            elif cmd[0] == "hold":
                m.start(m.tip, None, cmd[1])
            else:
                if not cmd[1]():
                    self.waiting[h] = cmd[1]
        if m.busy:
            m.step()

    def _duration(self, a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> float:
        """Duration [s] of a minimum-jerk move from a to b at the style's mean speed."""
        d = float(np.linalg.norm(np.asarray(b) - np.asarray(a)))
        return max(self.style.min_move_s, scale * 1.875 * d / self.style.speed)  # 1.875: peak/mean speed

    def pause(self):
        lo, hi = self.style.pause
        if hi > 0.0:
            yield ("hold", self.rng.uniform(lo, hi))


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
        """Look at the world; the policy advances and sets this hand's next sample (a policy that
        `turns` the instruments also returns a roll [rad] relative to home)."""
        out = self.policy.observe(scene, self.hand)
        self.position = device_position(wmap, out[0])
        self.gripper = out[1]
        self.roll = float(out[2]) if len(out) > 2 else None


def policy_hands(policy_class, styles: dict, name: str, seed: int, hands) -> list[HandDevice]:
    """One HandDevice per tool index in `hands`, all driven by one `policy_class(styles[name],
    seed)` (the hands share one brain: hand-offs and two-handed work need both). An unknown name
    is a ValueError naming the known ones."""
    if name not in styles:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(styles)}")
    policy = policy_class(styles[name], seed)
    return [HandDevice(policy, h) for h in hands]
