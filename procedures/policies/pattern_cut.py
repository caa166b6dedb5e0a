"""Scripted pattern-cut hands: an expert and a novice style of one bimanual policy.

The left hand (tool 0, grasper) grasps the gauze inside the circle and lifts it a few mm
(traction), then holds. The right hand (tool 1, scissors) snips around the circle: for each snip
it puts the shaft axis through a point of the circle (tip `depth` below the gauze, so the blades
straddle it), turns the instrument (roll) until the plane its blades sweep contains the circle's
tangent there with the blades' curve bowing toward the centre, aims where the curved blades cross
the gauze, and closes the blades. It watches its own cut (the kerf each closure leaves, as a
person sees it, `procedures.pattern_cut.snip_points`) and snips again where the circle is not yet
cut through. Hands act only through their device samples (position, gripper, roll); what they
read is what a person sees: the instruments and the gauze's grasp.

Styles (seeded per episode):
- expert: quick direct moves, no tremor, the blades on the line (aim error 0.15 mm), a narrow
  blade opening (short, accurate cuts), no pauses; it judges its aim only on an instrument at
  rest (50 ms still before each look) and looks again, correcting up to twice more, until the
  kerf its open blades would cut lies within 0.5 mm of its aim;
- novice: slower moves with pauses, tremor, an aim that drifts off the line (a random walk of
  ~1.2 mm per snip, half pulled back when the novice notices), many short hesitant snips with
  wide-ish blade openings (straight cuts that leave the curve), presses the grasper deeper into
  the gauze, pulls it harder (6 mm up and 6 mm out from the circle, where the expert lifts 2 mm
  and shifts 3 mm with the cut) and presses the scissors down into it as the blades close (3 mm
  along the shaft): novices handle tissue with more force than experts (Horeman et al., Surg
  Endosc 2010, 24:3102); its left hand only holds (no traction that follows the cut).
- expert's left hand follows the cut: after each snip it shifts the traction point 3 mm away from
  where the scissors cut, while they move to the next snip (both hands work).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from procedures import pattern_cut as pc
from procedures.policies.motion import HandDevice, Mover, ScriptedPolicy, policy_hands

OPEN_GRASPER, CLOSED = 0.6, 0.0  # [rad]
# [m] where the grasper takes the gauze: outside the circle, front left, so that its shaft (from the
# left port) never crosses the scissors' (from the right port, reaching all round the circle).
GRASP_AT = np.array([-0.030, -0.020])  # on a node of the 5 mm gauze grid
MAX_EXTRA = 40  # extra snips to close gaps before giving up
RETRY_SHIFT = 0.0015  # [m] along the line: each further snip at the same gap lands this much aside
TRACTION_SHIFT = 0.003  # [m] how far the expert's traction point moves away from the cut


@dataclass(frozen=True)
class Style:
    """How a policy moves and cuts. speed [m/s]; min_move_s [s]; pause (lo, hi) [s] before a snip;
    tremor [m]; aim_sd: random error of each snip's aim across the line [m]; drift_sd: random walk
    of the aim per snip [m] (pulled back to the line by `correct` each snip); opening: blade
    opening per snip [rad]; spacing: arc between snips [m]; depth: tip below the gauze [m];
    press: how far below the gauze surface the grasper closes [m]; lift: how far the grasper
    lifts the gauze (traction) [m]; pull: how far it then pulls the gauze outward, away from the
    circle's centre [m]; push: how far the hand pushes the scissors down their shaft
    while the blades close [m]; close_s: blade closing [s];
    aim_checks: how often the hand looks where its blades cross the gauze and corrects (the first
    look also turns the instrument); look: how long the hand waits for the instrument to come to
    rest before each look [s] (judged on the move, the aim is off by the instrument's lag);
    recheck: up to this many further looks and corrections while the kerf the blades would cut
    strays more than `tolerance` [m] from the aim; settle: a still moment before closing after
    a correction [s] (a look that finds the aim good is one);
    traction: the left hand follows the cut round (shifts its traction while the scissors move)."""

    name: str
    speed: float
    min_move_s: float
    pause: tuple[float, float]
    tremor: float
    aim_sd: float
    drift_sd: float
    correct: float
    opening: float
    spacing: float
    depth: float
    press: float
    lift: float
    pull: float
    push: float
    close_s: float
    aim_checks: int
    traction: bool
    settle: float = 0.0
    look: float = 0.0
    recheck: int = 0
    tolerance: float = 0.0


EXPERT = Style("expert", speed=0.12, min_move_s=0.12, pause=(0.0, 0.0), tremor=0.0, aim_sd=1.5e-4,
               drift_sd=0.0, correct=1.0, opening=0.45, spacing=0.0045, depth=0.0015, press=0.0005,
               lift=0.002, pull=0.0, push=0.0, close_s=0.07, aim_checks=2, traction=True, settle=0.06,
               look=0.05, recheck=2, tolerance=5e-4)
NOVICE = Style("novice", speed=0.08, min_move_s=0.3, pause=(0.15, 0.5), tremor=6e-4, aim_sd=6e-4,
               drift_sd=1.2e-3, correct=0.5, opening=0.7, spacing=0.0035, depth=0.0025, press=0.0015,
               lift=0.006, pull=0.006, push=0.003, close_s=0.2, aim_checks=1, traction=False)
POLICIES = {"expert": EXPERT, "novice": NOVICE}


def make_hands(name: str, seed: int = 0) -> list[HandDevice]:
    """Two scripted hands (tool 0 = left grasper, tool 1 = right scissors) of style `name`."""
    return policy_hands(PatternCutPolicy, POLICIES, name, seed, (0, 1))


class PatternCutPolicy(ScriptedPolicy):
    """The shared brain of both hands (see the module docstring)."""

    turns = True

    def __init__(self, style: Style, seed: int = 0) -> None:
        super().__init__(style, seed)
        self.book = pc.CutBook()
        self.snips_done = 0
        self.phi_now = 0.0

    def _setup(self, scene) -> None:
        self.plane_z = float(scene.tissue.rest[:, 2].max())
        self.ports = [t.port_point.copy() for t in scene.tools]
        self.movers = [Mover(scene.tools[h].tip(), CLOSED, scene.dt) for h in (0, 1)]
        self.scripts = [self._grasper_script(), self._scissors_script()]

    # -- helpers -------------------------------------------------------------------------------------

    def shaft_frame(self, h: int) -> np.ndarray:
        """The instrument's shaft rotation (3, 3) as it is now (what the hand feels and sees)."""
        return pc._rot(self.scene.tool_link_poses()[h, 0, 3:7])

    # -- the grasper ---------------------------------------------------------------------------------

    def _grasper_script(self):
        s = self.style
        g = np.array([GRASP_AT[0], GRASP_AT[1], self.plane_z])
        above = g + [0.0, 0.0, 0.015]
        yield ("move", above, OPEN_GRASPER, self._duration(self.movers[0].tip, above))
        yield ("move", g + [0.0, 0.0, 0.001 - s.press], OPEN_GRASPER, max(s.min_move_s, 0.25))
        yield from self.pause()
        yield ("move", self.movers[0].tip, CLOSED, 0.1)
        yield ("hold", 0.05)
        if not self.scene.contact.grasping[0]:
            yield ("move", self.movers[0].tip + [0.0, 0.0, -0.0015], OPEN_GRASPER, 0.15)
            yield ("move", self.movers[0].tip, CLOSED, 0.1)
        out = np.r_[GRASP_AT - np.array(pc.CENTRE), 0.0]
        out /= np.linalg.norm(out)
        yield ("move", self.movers[0].tip + [0.0, 0.0, s.lift] + out * s.pull, CLOSED, 0.3)
        held = self.movers[0].tip.copy()
        while not self.finished:
            if not s.traction:  # the novice's left hand just holds
                yield ("hold", 0.5)
                continue
            # The expert keeps the gauze taut across the blades: as the cut goes round, the
            # traction point shifts a few mm away from where the scissors cut, while they move.
            n = self.snips_done
            yield ("until", lambda n=n: self.snips_done > n or self.finished)
            away = -np.array([np.cos(self.phi_now), np.sin(self.phi_now), 0.0]) * TRACTION_SHIFT
            yield ("move", held + away, CLOSED, 0.2)

    # -- the scissors --------------------------------------------------------------------------------

    def _scissors_script(self):
        s = self.style
        yield ("until", lambda: bool(self.scene.contact.grasping[0]) or self.t > 20.0)
        n = int(np.ceil(2 * np.pi * pc.RADIUS / s.spacing))
        phi0 = -0.5 * np.pi + self.rng.uniform(-0.2, 0.2)  # start at the front, nearest the hand
        drift = 0.0
        for k in range(n):
            drift = (1.0 - s.correct) * drift + self.rng.normal(0.0, s.drift_sd) if s.drift_sd else 0.0
            yield from self._snip(phi0 + 2 * np.pi * k / n, drift + self.rng.normal(0.0, s.aim_sd))
        last, tries = None, 0
        for _ in range(MAX_EXTRA):  # close the gaps the hand sees: in its blades' path or in the kerf
            phi = self._first_gap()
            if phi is None or pc.disc_free(self.scene.tissue):
                break
            # Snipping the same spot the same way changes nothing: shift along the line each try.
            same = last is not None and abs((phi - last + np.pi) % (2 * np.pi) - np.pi) < np.radians(4.0)
            tries = tries + 1 if same else 0
            last = phi
            shift = RETRY_SHIFT * ((tries + 1) // 2) * (1 if tries % 2 else -1) / pc.RADIUS
            yield from self._snip(phi + shift, self.rng.normal(0.0, s.aim_sd))
        else:
            self.gave_up = True
        yield ("move", self.movers[1].tip + [0.0, 0.0, 0.02], CLOSED, 0.3)
        self.finished = True

    def _first_gap(self) -> float | None:
        """The angle [rad] to snip at next: the middle of the first run of circle bins that its
        snips missed or that the gauze is not cut through at (the kerf it sees,
        `pc.mesh_cut_bins`); where none is left but the disc still hangs on the gauze, the strand
        it hangs on (`pc.tether_angle`); None when the disc is free."""
        model = self.scene.tissue
        miss = ~(self.book.covered & pc.mesh_cut_bins(model)) | pc.bridged_bins(model)
        if not miss.any():  # cut all round, yet the disc hangs on: snip the strand it hangs on
            return pc.tether_angle(model)
        if miss.all():
            return 0.0
        start = int(np.flatnonzero(~miss)[0])  # walk round from a covered bin
        order = (start + np.arange(pc.BINS)) % pc.BINS
        run = []
        for k in order:
            if miss[k]:
                run.append(k)
            elif run:
                break
        return float(np.radians(run[len(run) // 2] + 0.5))

    def _aim_error(self, p: np.ndarray, r: float, radial: np.ndarray,
                   along: np.ndarray) -> tuple[np.ndarray, float, float]:
        """How far [m] (3,) to move the tip and how far [rad] to turn the instrument about its shaft
        so that the open blades cross the gauze along the circle of radius r at p, and how far [m]
        the kerf they would cut now strays from that circle at its worst: what the hand sees of
        where its blades meet the gauze (the curved kerf, `pc.snip_points`): the middle of its
        range of distances from the centre against r (radial), its middle against p (along the
        tangent) and its direction against the tangent (the turn). Blades that do not reach the
        gauze: the shaft axis, no turn, an infinite stray."""
        pose = self.scene.tool_link_poses()[1, 0]
        pts = pc.snip_points(pose, self.style.opening, self.plane_z)
        err = np.zeros(3)
        u = pc._rot(pose[3:7])[:, 2]
        if len(pts) < 3:
            err[:2] = (p - (pose[:3] + u * (self.plane_z - pose[2]) / u[2]))[:2]
            return err, 0.0, np.inf
        d = pts[-1] - pts[0]
        turn = float(np.arctan2(d[0] * along[1] - d[1] * along[0], np.dot(d, along)))
        turn = (turn + 0.5 * np.pi) % np.pi - 0.5 * np.pi  # a kerf has no front and back
        dev = np.hypot(*(pts - np.array(pc.CENTRE)).T) - r
        dr = 0.5 * float(dev.max() + dev.min())  # centre the whole kerf on the line, ends included
        dt = float(np.dot(pts[len(pts) // 2] - p[:2], along))
        err[:2] = -dr * radial - dt * along
        stray = float(np.abs(dev).max())
        return err, turn * np.sign(u[2]), stray  # a turn about the shaft turns the kerf about +z by ~u_z x it

    def _snip(self, phi: float, off: float):
        """One snip across the circle at angle phi [rad], aimed `off` [m] outside the circle."""
        s = self.style
        r = pc.RADIUS + off
        p = np.array([pc.CENTRE[0] + r * np.cos(phi), pc.CENTRE[1] + r * np.sin(phi), self.plane_z])
        axis = p - self.ports[1]
        axis /= np.linalg.norm(axis)
        tip = p + axis * s.depth
        yield ("move", tip, s.opening, self._duration(self.movers[1].tip, tip))
        yield from self.pause()
        # Turn the blades until the plane they sweep holds the circle's tangent at p, their curve
        # (toward the shaft frame's +x) bowing toward the centre, as the circle does.
        tangent = np.array([-np.sin(phi), np.cos(phi), 0.0])
        rot = self.shaft_frame(1)
        u, x = rot[:, 2], rot[:, 0]
        want = np.cross(u, tangent)  # ~ toward the centre for a shaft pointing up
        want /= np.linalg.norm(want)
        delta = float(np.arctan2(np.dot(np.cross(x, want), u), np.dot(x, want)))
        yield ("move", tip, s.opening, max(0.06, abs(delta) * 0.3), self.movers[1].roll - delta)
        radial, along = np.array([np.cos(phi), np.sin(phi)]), tangent[:2]
        # The gauze pushes back on the blades: aim where they cross it.
        for k in range(s.aim_checks + s.recheck):
            if s.look:
                yield ("hold", s.look)  # judge the aim on an instrument at rest, not on its lag
            err, turn, stray = self._aim_error(p, r, radial, along)
            if k >= s.aim_checks and stray <= s.tolerance:
                break
            tip = self.movers[1].tip + err
            if k == 0:  # turn once, then only shift: the instrument's roll lags its command
                yield ("move", tip, s.opening, 0.08, self.movers[1].roll - turn)
            else:
                yield ("move", tip, s.opening, 0.08)
        else:  # the last thing done was a move: let the instrument settle before the blades close
            yield ("hold", s.settle)
        yield ("move", tip + axis * s.push, CLOSED, s.close_s)  # (a novice presses the blades down)
        pose = self.scene.tool_link_poses()[1, 0]
        self.book.add(pc.snip_points(pose, s.opening, self.plane_z))
        self.phi_now = phi
        self.snips_done += 1
