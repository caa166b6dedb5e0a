"""Scripted peg transfer hands: an expert and a novice style of one bimanual policy.

Each hand runs a script (a generator) that yields commands the executor carries out tick by tick:
('move', tip [m] (3,), jaw [rad] or None, duration [s]) as a minimum-jerk move, ('hold', seconds),
('until', predicate) to wait on the world. The source-side hand lifts a ring (grasps its near rim),
carries it to the hand-off point, offers it; the other hand grasps the far rim mid-air; the lifter
opens; the receiver carries it over the mirror peg, servos the ring centre over the peg axis, lowers
and releases. When no ring is left on the source side the roles swap (the reverse half).

Styles (seeded per episode):
- expert: fast direct minimum-jerk moves, no tremor, no corrections, the receiver waits at the
  hand-off point and the lifter fetches the next ring while the receiver places (both hands work);
- novice: slower moves, a pause before each grasp and release, overshoot then a corrective
  sub-movement, tremor, pushes the jaws into the board when grasping (more force), one hand at a
  time, parks an idle hand high (sometimes out of view), and now and then fumbles a ring while
  lifting it (it falls back around its peg: a drop in view, picked up again).
Only `scene.rigid` poses and grasp state are read (what a person sees on the screen); the hands act
only through their device samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from procedures.policies.motion import HandDevice, Mover, ScriptedPolicy, policy_hands

OPEN, CLOSED = 0.6, 0.0  # [rad] jaw commands
HANDOFF_Z = 0.028  # [m] ring centre above the peg tops at the hand-off and while carrying
PLACE_Z = 0.006  # [m] ring centre above the peg top where it is released
MAX_TRIES = 4


@dataclass(frozen=True)
class Style:
    """How a policy moves. speed: mean speed of a move [m/s]; min_move_s [s]; pause: (lo, hi) [s]
    before grasps and releases; overshoot: fraction of the move length the first move misses by
    (then a corrective sub-movement); tremor: amplitude [m]; press: how far below the grasp point the
    jaws are pushed [m]; parallel: both hands work at once; park_high: probability that an idle hand
    is parked high toward its port; p_fumble: probability of dropping a ring while lifting it."""

    name: str
    speed: float
    min_move_s: float
    pause: tuple[float, float]
    overshoot: float
    tremor: float
    press: float
    parallel: bool
    park_high: float
    p_fumble: float
    close_s: float


EXPERT = Style(
    "expert",
    speed=0.16,
    min_move_s=0.16,
    pause=(0.0, 0.03),
    overshoot=0.0,
    tremor=0.0,
    press=0.0,
    parallel=True,
    park_high=0.0,
    p_fumble=0.0,
    close_s=0.08,
)
NOVICE = Style(
    "novice",
    speed=0.13,
    min_move_s=0.3,
    pause=(0.1, 0.35),
    overshoot=0.18,
    tremor=6e-4,
    press=0.006,
    parallel=False,
    park_high=0.25,
    p_fumble=0.12,
    close_s=0.2,
)
POLICIES = {"expert": EXPERT, "novice": NOVICE}


def make_hands(name: str, seed: int = 0) -> list[HandDevice]:
    """Two scripted hands (tool 0 = left, tool 1 = right) sharing one policy of style `name`."""
    return policy_hands(PegTransferPolicy, POLICIES, name, seed, (0, 1))


class PegTransferPolicy(ScriptedPolicy):
    """The shared brain of both hands (the hand-off needs both). See the module docstring."""

    def __init__(self, style: Style, seed: int = 0) -> None:
        super().__init__(style, seed)
        self.phase = 0  # 0: left -> right, 1: right -> left
        self.offer = None  # ring index offered at the hand-off point
        self.received = False
        self.busy_rings: set[int] = set()
        self.placed = 0

    def _setup(self, scene) -> None:
        rig = scene.rigid
        self.spec = rig.pegboard.spec
        self.bodies = list(rig.graspable)
        self.pegs = np.array([self.spec.peg_world(i) for i in range(len(self.spec.peg_xy))])
        self.peg_top = self.spec.top + self.spec.peg_height
        self.movers = [Mover(scene.tools[h].tip(), CLOSED, scene.dt) for h in (0, 1)]
        self.home = [m.tip.copy() for m in self.movers]
        self.scripts = [self._hand_script(0), self._hand_script(1)]

    # -- helpers -------------------------------------------------------------------------------------

    def ring_pose(self, k: int) -> np.ndarray:
        return self.scene.rigid.body_pose(self.bodies[k])

    def holds(self, h: int, k: int) -> bool:
        return self.scene.rigid.grasped[h] == self.bodies[k]

    def rim(self, k: int, sign: float) -> np.ndarray:
        """The ring's near (sign -1) or far (+1) rim point [m]: centre + sign R y', y' = world +y
        projected onto the ring plane."""
        pose = self.ring_pose(k)
        x, y, z, w = pose[3:]
        n = np.array([2 * (x * z + y * w), 2 * (y * z - x * w), 1 - 2 * (x * x + y * y)])
        yp = np.array([0.0, 1.0, 0.0]) - n * n[1]
        yp /= np.linalg.norm(yp)
        return pose[:3] + sign * self.spec.ring_radius * yp

    def move(self, h: int, target, jaw=None, scale: float = 1.0, correct: bool = True):
        """Commands for a move of hand h to target, with the style's overshoot + correction."""
        start = self.movers[h].tip.copy()
        target = np.asarray(target, float)
        d = target - start
        dist = float(np.linalg.norm(d))
        if correct and self.style.overshoot > 0.0 and dist > 0.02:
            miss = self.style.overshoot * dist * self.rng.uniform(0.5, 1.0)
            off = self.rng.normal(size=3)
            off[2] = abs(off[2]) * 0.5  # a miss errs upward rather than into the board
            off *= min(miss, 0.012) / np.linalg.norm(off)
            yield ("move", target + off, jaw, self._duration(start, target, scale))
            yield ("hold", self.rng.uniform(0.05, 0.2))
            yield ("move", target, jaw, max(self.style.min_move_s, 0.25))
        else:
            yield ("move", target, jaw, self._duration(start, target, scale))

    # -- scripts -------------------------------------------------------------------------------------

    def _source_rings(self, side: int) -> list[int]:
        """Rings resting on `side` (on a peg or the board), not being handled, inner ones first."""
        out = []
        for k in range(len(self.bodies)):
            if k in self.busy_rings:
                continue
            p = self.ring_pose(k)[:3]
            on_board = abs(p[0]) < self.spec.size[0] / 2 and abs(p[1]) < self.spec.size[1] / 2
            if on_board and p[2] < self.spec.top + 0.02 and int(p[0] > self.spec.centre[0]) == side:
                out.append(k)
        return sorted(out, key=lambda k: abs(self.ring_pose(k)[0]))

    def handoff_point(self) -> np.ndarray:
        """Ring centre at the hand-off [m]: mid-board, above the peg tops."""
        return np.array([self.spec.centre[0], self.spec.centre[1] - 0.01, self.peg_top + HANDOFF_Z])

    def _hand_script(self, h: int):
        while not self.finished:
            src = self.phase  # phase 0: the left side (hand 0) lifts
            if h == src:
                yield from self._lift_one(h, src)
            else:
                yield from self._receive_one(h)

    def _idle_spot(self, h: int) -> np.ndarray | None:
        """Where a sequential (novice) hand waits: sometimes parked high toward its port (out of
        view), else where it is (None)."""
        if self.rng.uniform() < self.style.park_high:
            return np.array([self.home[h][0] * 0.9, -0.085, 0.13])
        return None

    def _lift_one(self, h: int, src: int):
        rings = self._source_rings(src)
        if not rings:
            if not self.busy_rings and not self._strays(1 - src):
                if self.phase == 0:
                    self.phase = 1
                else:
                    self.finished = True
                return
            yield ("until", lambda: not self.busy_rings or self.phase != src or self.finished)
            if not self.busy_rings and self._strays(1 - src):
                yield ("hold", 0.2)  # the other hand is fixing a missed placement
            return
        k = rings[0]
        self.busy_rings.add(k)
        yield from self._grasp_resting(h, k)
        if not self._got:
            self.gave_up = self.finished = True
            return
        rest_z = self.ring_pose(k)[2]
        if self.rng.uniform() < self.style.p_fumble:  # a fumble while lifting: falls back on its peg
            yield ("move", self.movers[h].tip + [0.0, 0.0, 0.012], CLOSED, 0.3)
            yield ("move", self.movers[h].tip, OPEN, 0.08)
            yield ("move", self.movers[h].tip + [0.0, -0.005, 0.02], OPEN, 0.3)
            yield ("hold", 0.6)
            self.busy_rings.discard(k)
            return
        lift = self.movers[h].tip.copy()
        lift[2] += self.peg_top + 0.008 - rest_z
        yield ("move", lift, CLOSED, self._duration(self.movers[h].tip, lift, 1.2))
        goal = self.handoff_point()
        tip_from_ring = self.movers[h].tip - self.ring_pose(k)[:3]
        yield from self.move(h, goal + tip_from_ring, CLOSED)
        # The ring tilts as the shaft pivots about the port: put its centre on the hand-off point.
        for _ in range(2):
            err = goal - self.ring_pose(k)[:3]
            yield ("move", self.movers[h].tip + err, CLOSED, 0.12)
        self.received = False
        self.offer = k
        yield ("until", lambda: self.received or self.finished)
        yield from self.pause()
        yield ("move", self.movers[h].tip, OPEN, 0.08)
        yield ("until", lambda: not self.holds(h, k))
        self.offer = None
        away = self.movers[h].tip + [(-0.012 if h == 0 else 0.012), -0.01, 0.012]
        yield ("move", away, OPEN, 0.2)
        if not self.style.parallel:
            spot = self._idle_spot(h)
            if spot is not None:
                yield from self.move(h, spot, CLOSED, correct=False)
            yield ("until", lambda: k not in self.busy_rings or self.finished)

    def _receive_one(self, h: int):
        src = self.phase
        strays = [k for k in self._strays(1 - src) if self.offer != k]
        if strays and self.offer is None:
            yield from self._fix_stray(h, strays[0])
            return
        goal = self.handoff_point()
        r = self.spec.ring_radius
        if self.style.parallel:
            standby = goal + [0.0, r, 0.03]
            if np.linalg.norm(self.movers[h].tip - standby) > 1e-3:
                yield from self.move(h, standby, OPEN)
        else:
            spot = self._idle_spot(h)
            if spot is not None:
                yield from self.move(h, spot, CLOSED, correct=False)
        # Wait for an offer; a ring that missed its peg on this side (seen every 0.1 s) comes first.
        tick0 = self._tick
        yield ("until", lambda: self.offer is not None or self.phase != src or self.finished
               or ((self._tick - tick0) % 100 == 0 and bool(self._strays(1 - src))))
        if self.offer is None:
            return
        k = self.offer
        got = False
        for _ in range(MAX_TRIES):
            far = self.rim(k, 1.0)
            yield from self.move(h, far + [0.0, 0.002, 0.015], OPEN)
            yield ("move", far + [0.0, 0.0, 0.001], OPEN, max(self.style.min_move_s, 0.15))
            yield from self.pause()
            yield ("move", far, CLOSED, self.style.close_s)
            if self.holds(h, k):
                got = True
                break
            yield ("move", self.movers[h].tip + [0, 0.005, 0.015], OPEN, 0.2)
        if not got:
            self.gave_up = self.finished = True
            return
        self.received = True
        yield ("until", lambda: not self.scene.rigid.grasped[1 - h] == self.bodies[k] or self.finished)
        yield from self._place(h, k)

    def _place(self, h: int, k: int):
        """Hand h holds ring k: carry it over a free destination peg (the mirror of where it came
        from), servo its centre over the peg axis, lower, release, step back."""
        dst = self._target_peg(k)
        peg = self.pegs[dst]
        ring = self.ring_pose(k)[:3]
        tip_from_ring = self.movers[h].tip - ring
        above = np.array([peg[0], peg[1], self.peg_top + HANDOFF_Z - 0.01])
        yield from self.move(h, above + tip_from_ring, CLOSED)
        for _ in range(3):  # servo the ring centre over the peg axis
            err = above - self.ring_pose(k)[:3]
            yield ("move", self.movers[h].tip + err, CLOSED, 0.12)
        down = self.peg_top + PLACE_Z - self.ring_pose(k)[2]
        yield ("move", self.movers[h].tip + [0.0, 0.0, down], CLOSED, max(self.style.min_move_s, 0.18))
        yield from self.pause()
        yield ("move", self.movers[h].tip, OPEN, 0.08)
        yield ("move", self.movers[h].tip + [0.0, 0.004, 0.02], OPEN, 0.18)
        yield ("hold", 0.15)  # let it settle before the next look
        self.busy_rings.discard(k)
        self.placed += 1

    def _strays(self, side: int) -> list[int]:
        """Rings resting on the board of `side` but on no peg (missed placements), not handled."""
        clearance = self.spec.hole_clearance
        out = []
        for k in self._source_rings(side):
            p = self.ring_pose(k)[:3]
            if np.hypot(self.pegs[:, 0] - p[0], self.pegs[:, 1] - p[1]).min() > clearance:
                out.append(k)
        return out

    def _grasp_resting(self, h: int, k: int):
        """Grasp resting ring k at its near rim (retries); sets self._got."""
        self._got = False
        for _ in range(MAX_TRIES):
            near = self.rim(k, -1.0)
            yield from self.move(h, near + [0.0, -0.002, 0.02], OPEN)
            yield ("move", near + [0.0, 0.0, 0.002], OPEN, max(self.style.min_move_s, 0.15))
            yield from self.pause()
            press = near - [0.0, 0.0, self.style.press]
            yield ("move", press, CLOSED, self.style.close_s)
            if self.holds(h, k):
                self._got = True
                return
            yield ("move", self.movers[h].tip + [0, 0, 0.015], OPEN, 0.2)

    def _fix_stray(self, h: int, k: int):
        """The destination hand puts a ring that missed its peg onto one (no hand-off needed: it
        is already on that side)."""
        self.busy_rings.add(k)
        yield from self._grasp_resting(h, k)
        if not self._got:
            self.gave_up = self.finished = True
            return
        lift = self.movers[h].tip + [0.0, 0.0, self.peg_top + 0.008 - self.ring_pose(k)[2]]
        yield ("move", lift, CLOSED, self._duration(self.movers[h].tip, lift, 1.2))
        yield from self._place(h, k)

    def _target_peg(self, k: int) -> int:
        """A free peg on the destination side, preferring the mirror of the ring's source peg."""
        ring = self.ring_pose(k)[:3]
        dst_side = 1 - self.phase
        taken = set()
        for j in range(len(self.bodies)):
            if j == k:
                continue
            p = self.ring_pose(j)[:3]
            d = np.hypot(self.pegs[:, 0] - p[0], self.pegs[:, 1] - p[1])
            if d.min() < 0.006:
                taken.add(int(d.argmin()))
        free = [i for i in range(len(self.pegs)) if self.spec.side_of(i) == dst_side and i not in taken]
        if not free:
            free = [i for i in range(len(self.pegs)) if self.spec.side_of(i) == dst_side]
        mirror = np.array([-ring[0], ring[1]])
        return min(free, key=lambda i: np.hypot(*(self.pegs[i, :2] - mirror)))
