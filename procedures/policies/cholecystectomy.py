"""Scripted cholecystectomy hands (clip and divide): an expert and a novice style of one policy.

Two hands, three instruments, through the device path. The left hand holds the grasper (tool 0)
for the whole step. The right hand uses the clip applier (tool 1), then exchanges it for the
scissors (tool 2): the applier is withdrawn to its port before the scissors go in, so the right
hand never drives two instruments at once. In the device path (`sim.runtime.procedure_session`:
device i drives tool i) the right hand is two devices, the applier's and the scissors', of which
only one moves at a time; the other holds its handle still (docs/procedures.md, "Hands").

- Left: grasps the infundibulum from above and pulls it laterally and up (Calot's triangle
  opens), then holds it there.
- Right, applier: once the triangle is open, three clips on the cystic duct (one on the
  gallbladder side, two on the patient side, leaving a gap for the scissors), then three on the
  cystic artery. For each clip it looks where the structure is now (the centroid of its tissue
  near the chosen spot, its current direction), brings the open jaws over it along the shaft,
  turns the instrument until the jaws close square to the structure, pushes the jaws across it,
  fires (closes), opens and backs out.
- Right, scissors: divides the duct, then the artery, between the gallbladder-side clip and the
  patient-side ones, with the blades square to the structure.

What the hands read is what a person sees: the organs' tissue where it is now, the instruments'
shaft orientation, whether the grasper holds tissue; they act only through their device samples
(position, gripper, roll).

Styles (seeded per episode):
- expert: quick direct moves, no tremor, clips at planned places in the middle of the safe zone
  (aim error 0.3 mm), turned square (three roll corrections), no pauses;
- novice: slower moves with pauses, tremor, clips aimed with a 2.5 mm error along the structure
  and one roll correction (obliquer clips), a harder, longer pull on the gallbladder that first
  overshoots (2.5-3.5 times the planned pull, drawn per seed: over-traction); past the
  gallbladder's tear force the infundibulum tears out of the jaws (`sim.damage`), and the hand
  grasps it again and pulls the planned distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from procedures.cholecystectomy import CLIP_MARKS
from procedures.policies.motion import HandDevice, Mover, ScriptedPolicy, Tremor, policy_hands
from sim.cutting import quat_matrix

GRASPER, APPLIER, SCISSORS = 0, 1, 2
OPEN_GRASPER, OPEN_APPLIER, OPEN_SCISSORS, CLOSED = 0.8, 0.7, 0.7, 0.0  # [rad]
ABOVE = 0.010  # [m] the jaws wait this far up the shaft from the structure before going across
STRUCTURES = ("cystic_duct", "cystic_artery")
RECLIP_STEP = 0.0015  # [m] a novice's extra clip goes this far from one that does not span, away from the gap


@dataclass(frozen=True)
class Style:
    """How a policy moves. speed [m/s]; min_move_s [s]; pause (lo, hi) [s] before each action;
    tremor [m]; aim_sd: error of each clip's or cut's place along the structure [m]; roll_checks:
    how often the hand looks at its jaws and turns them square; depth: how far past the
    structure's centre the jaw tips go [m] (depth_sd: its error per approach [m]); roll_sd: error
    of each roll correction [rad]; pull: the infundibulum's lateral, backward and upward pull [m]
    (3,); close_s: jaw closing [s]; both_hands: the right hand sets off while the left still
    retracts, and the left hand re-tensions the triangle while the right moves between the
    structures (an expert's hands work together; a novice's take turns); undershoot: the hand's
    first reach toward each structure stops this fraction short and a corrective move follows
    (novices make more, shorter sub-movements); reclip: a clip that does not cross the whole
    width gets a second one next to it (what a novice who sees it does); overpull (lo, hi): the
    first pull goes this many times `pull` (drawn per seed) before coming back to it (1: none)."""

    name: str
    speed: float
    min_move_s: float
    pause: tuple[float, float]
    tremor: float
    aim_sd: float
    roll_checks: int
    depth: float
    pull: tuple[float, float, float]
    close_s: float
    both_hands: bool
    depth_sd: float = 0.0
    roll_sd: float = 0.0
    undershoot: float = 0.0
    reclip: bool = False
    overpull: tuple[float, float] = (1.0, 1.0)


EXPERT = Style(
    "expert",
    speed=0.12,
    min_move_s=0.12,
    pause=(0.0, 0.0),
    tremor=0.0,
    aim_sd=3e-4,
    roll_checks=3,
    depth=0.0025,
    pull=(-0.008, -0.003, 0.004),
    close_s=0.1,
    both_hands=True,
)
NOVICE = Style(
    "novice",
    speed=0.05,
    min_move_s=0.3,
    pause=(0.3, 0.9),
    tremor=4e-4,
    aim_sd=2.5e-3,
    roll_checks=1,
    depth=0.0005,
    pull=(-0.016, -0.006, 0.009),
    close_s=0.25,
    both_hands=False,
    depth_sd=1.5e-3,
    roll_sd=0.35,
    undershoot=0.35,
    reclip=True,
    overpull=(2.5, 3.5),
)
POLICIES = {"expert": EXPERT, "novice": NOVICE}


def make_hands(name: str, seed: int = 0) -> list[HandDevice]:
    """The scripted devices of style `name`: the left hand's grasper (tool 0), the right hand's
    clip applier (tool 1) and scissors (tool 2)."""
    return policy_hands(CholecystectomyPolicy, POLICIES, name, seed, (GRASPER, APPLIER, SCISSORS))


class CholecystectomyPolicy(ScriptedPolicy):
    """The shared brain of the hands (see the module docstring)."""

    turns = True

    def __init__(self, style: Style, seed: int = 0) -> None:
        super().__init__(style, seed)
        # The over-traction's own draw: the other draws (aim, depth, roll, pauses) stay those of
        # the seed without it.
        self.overpull = float(np.random.default_rng((seed, 15)).uniform(*style.overpull))
        self.tremor.append(Tremor(style.tremor, self.rng))
        self.waiting = [None, None, None]
        self.retracted = False
        self.on_artery = False
        self.exchanged = False
        self._clips_before = 0
        self.clipped: dict[str, list[float]] = {n: [] for n in STRUCTURES}

    def observe(self, scene, hand: int):
        if self.scene is None:
            self.scene = scene
            self._setup(scene)
        if scene.tick_count != self._tick:
            self._tick = scene.tick_count
            self.t = self._tick * scene.dt
            for h in range(3):
                self._advance(h)
        m = self.movers[hand]
        return m.tip + self.tremor[hand].at(self.t), m.jaw, m.roll

    def _setup(self, scene) -> None:
        from sim.anatomy import BODIES

        a = scene.anatomy
        self.anatomy = a
        self.ports = [t.port_point.copy() for t in scene.tools]
        self.movers = [Mover(scene.tools[h].tip(), OPEN_APPLIER if h else CLOSED, scene.dt) for h in range(3)]
        self.home = [m.tip.copy() for m in self.movers]
        # Each structure's nodes and their arc length along it (the rest layout: what the trainee
        # learnt of this anatomy when looking at it before touching it).
        self.arc = {}
        for name in STRUCTURES:
            nodes = np.flatnonzero(a.node_body == BODIES.index(name))
            st = a.structures[name]
            self.arc[name] = (nodes, np.array([st.project(p)[0] for p in a.mesh.points[nodes]]))
        self.scripts = [self._grasper_script(), self._applier_script(), self._scissors_script()]

    # -- what the hands see --------------------------------------------------------------------------

    def where(self, name: str, s: float) -> tuple[np.ndarray, np.ndarray]:
        """The structure at arc length s [m] now: its centre [m] (3,) and unit direction (3,)."""
        nodes, arc = self.arc[name]
        x = self.scene.tissue_state.x

        def centre(lo, hi):
            sel = nodes[(arc > lo) & (arc < hi)]
            return x[sel].mean(axis=0) if len(sel) else None

        c = centre(s - 1e-3, s + 1e-3)
        a, b = centre(s - 3e-3, s - 1e-3), centre(s + 1e-3, s + 3e-3)
        if c is None or a is None or b is None:  # the rest layout
            st = self.anatomy.structures[name]
            c = st.at(s) if c is None else c
            return c, st.project(st.at(s))[2]
        t = b - a
        return c, t / np.linalg.norm(t)

    def shaft(self, h: int) -> np.ndarray:
        """The instrument's shaft rotation (3, 3) now (columns: across the jaws, closing, along)."""
        return quat_matrix(self.scene.tool_link_poses()[h, 0, 3:7])

    # -- the left hand: grasper ----------------------------------------------------------------------

    def _grasp_infundibulum(self):
        """Open jaws from above onto the infundibulum where it is now, and close them."""
        from sim.anatomy import GALLBLADDER

        s = self.style
        p = self.anatomy.landmarks["infundibulum"]
        x = self.scene.tissue_state.x
        n0 = len(self.anatomy.node_body)
        gb = self.anatomy.node_body == GALLBLADDER
        near = gb & (np.linalg.norm(x[:n0, :2] - p[:2], axis=1) < 0.004)
        top = float(x[:n0][near, 2].max())
        above = np.array([p[0], p[1], top + 0.01])
        mv = self.movers[GRASPER]
        yield ("move", above, OPEN_GRASPER, self._duration(mv.tip, above))
        yield ("move", np.array([p[0], p[1], top - 0.003]), OPEN_GRASPER, max(s.min_move_s, 0.2))
        yield from self.pause()
        yield ("move", mv.tip, CLOSED, 0.1)
        yield ("hold", 0.05)

    def _grasper_script(self):
        s = self.style
        mv = self.movers[GRASPER]
        yield from self._grasp_infundibulum()
        grip = mv.tip.copy()
        pulled = grip + np.asarray(s.pull)
        if self.overpull > 1.0:  # over-traction: too far first, then back to the planned pull
            far = grip + self.overpull * np.asarray(s.pull)
            yield ("move", far, CLOSED, max(0.4, self._duration(grip, far)))
            yield ("hold", 0.3)
            if not self.scene.contact.grasping[GRASPER]:  # torn out of the jaws: grasp it again
                yield ("move", mv.tip, OPEN_GRASPER, 0.2)
                yield ("hold", 0.5)  # it snaps back
                yield from self._grasp_infundibulum()
                grip = mv.tip.copy()
                pulled = grip + np.asarray(s.pull)
        yield ("move", pulled, CLOSED, max(0.4, self._duration(mv.tip, pulled)))
        self.retracted = True
        if s.both_hands:  # re-tension (2 mm more) while the applier moves on to the artery
            yield ("until", lambda: self.on_artery or self.finished)
            yield ("move", pulled + 0.2 * np.asarray(s.pull), CLOSED, 0.3)
        while not self.finished:
            yield ("hold", 0.5)

    # -- the right hand: clip applier, then scissors -------------------------------------------------

    def _square(self, h: int, name: str, s: float, jaw: float):
        """Turn instrument h until its jaws close square to the structure at s (roll only)."""
        for _ in range(self.style.roll_checks):
            _, t = self.where(name, s)
            rot = self.shaft(h)
            u, x = rot[:, 2], rot[:, 0]
            want = t - u * float(t @ u)
            want /= np.linalg.norm(want)
            d = float(np.arctan2(np.dot(np.cross(x, want), u), np.dot(x, want)))
            d = (d + 0.5 * np.pi) % np.pi - 0.5 * np.pi  # the jaws have no front and back
            if self.style.roll_sd:
                d += float(self.rng.normal(0.0, self.style.roll_sd))
            yield ("move", self.movers[h].tip, jaw, max(0.06, abs(d) * 0.3), self.movers[h].roll - d)

    def _across(self, h: int, name: str, s: float, jaw: float):
        """Bring instrument h's open jaws across the structure at arc length s [m]."""
        st = self.style
        mv = self.movers[h]
        c, _ = self.where(name, s)
        u = self.ports[h] - c
        u /= np.linalg.norm(u)
        above = c + u * ABOVE
        if st.undershoot:  # a first reach that stops short, then a corrective move
            short = mv.tip + (1.0 - st.undershoot) * (above - mv.tip)
            yield ("move", short, jaw, self._duration(mv.tip, short))
            yield ("hold", 0.2)
        yield ("move", above, jaw, self._duration(mv.tip, above))
        yield from self._square(h, name, s, jaw)
        yield from self.pause()
        c, _ = self.where(name, s)  # it may have moved while the hand turned
        depth = st.depth + (float(self.rng.normal(0.0, st.depth_sd)) if st.depth_sd else 0.0)
        yield ("move", c - u * depth, jaw, max(st.min_move_s, self._duration(above, c, 2.0)))

    def _back(self, h: int, dist: float) -> np.ndarray:
        """Instrument h's tip backed out dist [m] along its shaft, toward its port."""
        tip = self.movers[h].tip
        return tip + dist * (self.ports[h] - tip) / np.linalg.norm(self.ports[h] - tip)

    def _applier_script(self):
        st = self.style
        mv = self.movers[APPLIER]
        if st.both_hands:  # on its way to the triangle while the left hand still retracts
            c = self.anatomy.landmarks["calot"]
            stage = c + 0.03 * (self.ports[APPLIER] - c) / np.linalg.norm(self.ports[APPLIER] - c)
            yield ("until", lambda: bool(self.scene.contact.grasping[GRASPER]))
            yield ("move", stage, OPEN_APPLIER, self._duration(mv.tip, stage))
        yield ("until", lambda: self.retracted and not self.movers[GRASPER].busy)
        for name in STRUCTURES:
            self.on_artery = name == "cystic_artery"
            lo, hi = self.anatomy.safe_zones[name]
            for f in CLIP_MARKS[name]:
                s = lo + f * (hi - lo) + float(self.rng.normal(0.0, st.aim_sd))
                yield from self._clip(name, s)
                if st.reclip and not self._last_clip_spans():
                    yield from self._clip(name, s + RECLIP_STEP * (1.0 if f > 0.5 else -1.0))
        # The exchange: the applier comes out to where it started before the scissors go in.
        yield ("move", self.home[APPLIER], OPEN_APPLIER, self._duration(mv.tip, self.home[APPLIER]))
        self.exchanged = True

    def _clip(self, name: str, s: float):
        """Put a clip across structure `name` at arc length s [m] and back out."""
        mv = self.movers[APPLIER]
        yield from self._across(APPLIER, name, s, OPEN_APPLIER)
        self._clips_before = self.scene.injury.clips.n_clips
        yield ("move", mv.tip, CLOSED, self.style.close_s)  # fires the clip
        yield ("hold", 0.05)
        yield ("move", mv.tip, OPEN_APPLIER, 0.1)
        self.clipped[name].append(s)
        yield ("move", self._back(APPLIER, 0.012), OPEN_APPLIER, max(self.style.min_move_s, 0.15))

    def _last_clip_spans(self) -> bool:
        """Whether the newest clip crosses the whole width (a clip lost on nothing counts as not)."""
        clips = self.scene.injury.clips
        return clips.n_clips > self._clips_before and bool(clips.spans[clips.n_clips - 1])

    def _scissors_script(self):
        st = self.style
        yield ("until", lambda: self.exchanged)
        yield from self.pause()
        mv = self.movers[SCISSORS]
        for name in STRUCTURES:
            placed = sorted(self.clipped[name])
            s = (
                0.5 * (placed[0] + placed[1])
                if len(placed) >= 2
                else float(np.mean(self.anatomy.safe_zones[name]))
            )
            s += float(self.rng.normal(0.0, 0.3 * st.aim_sd))
            yield from self._across(SCISSORS, name, s, OPEN_SCISSORS)
            yield ("move", mv.tip, CLOSED, st.close_s)  # the blades divide it
            yield ("hold", 0.1)
            yield ("move", mv.tip, OPEN_SCISSORS, 0.1)
            yield ("move", self._back(SCISSORS, 0.015), OPEN_SCISSORS, max(st.min_move_s, 0.15))
        yield ("move", self.home[SCISSORS], CLOSED, self._duration(mv.tip, self.home[SCISSORS]))
        self.finished = True
