"""Task specs: what each environment adds to the generic `TrocarEnv` (research.envs.env).

A spec names the procedure (its scene, rules, status and score), the tool workspace, the task's
part of the state observation and the reward. A new procedure gets an environment by adding a
spec here and one `register` line in research/envs/__init__.py.

Rewards (per control step; the procedure's own score terms plus dense shaping):

PegTransfer-v0 (`procedures.peg_transfer`):
    r = 5 * (new objects placed on the target side; the reverse half counts again)
      + 1 * (new mid-air hand-offs)
      - 1 * (new drops) - LOST * (new lost objects) - NO_HANDOFF * (new transfers without hand-off)
      - 0.1 * distance [m] of the nearer tool tip to the nearest object still to move
      + score / 10 on success (score 0..100, the FLS formula)
    LOST and NO_HANDOFF are the procedure's penalties divided by 10 (lost 1.67, no hand-off 0.83).
TissueRetraction-v0 (`research.envs.retraction`):
    r = -10 * distance [m] flap point to target + 0.1 if the grasper holds tissue
      + 10 * (new time held at the target [s]) + score / 10 on success - 10 on failure
"""

from __future__ import annotations

import numpy as np

from procedures.peg_transfer import LOST_PENALTY, N_OBJECTS, NO_HANDOFF_PENALTY


class Task:
    """Base spec. Subclasses set env_id, time_limit_s (None: the procedure's cut-off) and fill the
    hooks; `extra_dim` is the length of `extra_obs`."""

    env_id = ""
    extra_dim = 0
    extra_labels: tuple[str, ...] = ()

    def make_procedure(self):
        raise NotImplementedError

    def scene_overrides(self, procedure, seed: int, tissue_tets: int | None) -> dict:
        over = dict(procedure.scene_overrides(seed))
        if tissue_tets is not None:
            over["tissue_tets"] = int(tissue_tets)
        return over

    def workspace(self, scene) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the tool tip targets (lo (3,), hi (3,)) [m]."""
        raise NotImplementedError

    def begin(self, scene, procedure) -> None:
        """After each reset: remember what the reward compares against."""

    def extra_obs(self, scene, procedure) -> np.ndarray:
        return np.zeros(0)

    def reward(self, scene, procedure, tips: np.ndarray) -> tuple[float, dict]:
        """The step's reward and its terms (summed), after the control step; tips (n_tools, 3) [m]."""
        raise NotImplementedError


class PegTransferTask(Task):
    env_id = "trocar/PegTransfer-v0"
    extra_dim = N_OBJECTS * 7 + N_OBJECTS * 2 + 1
    extra_labels = ("object poses (6 x (x, y, z, qx, qy, qz, qw))", "object held by tool (6 x 2)",
                    "phase (0 across, 1 back)")

    def make_procedure(self):
        from procedures.registry import get_procedure

        return get_procedure("peg_transfer")

    def workspace(self, scene):
        spec = scene.rigid.pegboard.spec
        c, s = np.asarray(spec.centre, float), np.asarray(spec.size, float)
        lo = np.array([c[0] - s[0] / 2 - 0.01, c[1] - s[1] / 2 - 0.01, spec.top - 0.005])
        hi = np.array([c[0] + s[0] / 2 + 0.01, c[1] + s[1] / 2 + 0.01, spec.top + 0.08])
        return lo, hi

    def _counts(self, p) -> np.ndarray:
        target = 1 - p.phase
        placed = sum(r.state == "rest" and r.peg >= 0 and r.side == target for r in p.rings)
        return np.array([p.phase * N_OBJECTS + placed, p.handoffs, p.drops, p.lost, p.no_handoff], float)

    def begin(self, scene, procedure) -> None:
        self._last = self._counts(procedure)

    def extra_obs(self, scene, procedure):
        held = np.zeros((N_OBJECTS, 2))
        bodies = list(scene.rigid.graspable)
        for tool, body in enumerate(scene.rigid.grasped[:2]):
            if body is not None:
                held[bodies.index(body), tool] = 1.0
        return np.concatenate([scene.body_poses().ravel(), held.ravel(), [float(procedure.phase)]])

    def reward(self, scene, procedure, tips):
        now = self._counts(procedure)
        d = now - self._last
        self._last = now
        target = 1 - procedure.phase
        todo = [k for k, r in enumerate(procedure.rings)
                if r.state != "lost" and not (r.state == "rest" and r.peg >= 0 and r.side == target)]
        dist = 0.0
        if todo:
            rings = scene.body_poses()[todo, :3]
            dist = float(np.min(np.linalg.norm(rings[:, None, :] - tips[None, :2, :], axis=2)))
        terms = {"placed": 5.0 * d[0], "handoff": 1.0 * d[1], "drop": -1.0 * d[2],
                 "lost": -LOST_PENALTY / 10 * d[3], "no_handoff": -NO_HANDOFF_PENALTY / 10 * d[4],
                 "reach": -0.1 * dist, "score": 0.0}
        return float(sum(terms.values())), terms


class TissueRetractionTask(Task):
    env_id = "trocar/TissueRetraction-v0"
    extra_dim = 8
    extra_labels = ("flap point (x, y, z)", "target (x, y, z)", "grasped (0/1)", "time held [s]")

    def make_procedure(self):
        from research.envs.retraction import TissueRetraction

        return TissueRetraction()

    def workspace(self, scene):
        rest = scene.tissue.rest
        lo = np.r_[rest[:, :2].min(axis=0) - 0.03, 0.0]
        hi = np.r_[rest[:, :2].max(axis=0) + 0.03, rest[:, 2].max() + 0.06]
        return lo, hi

    def begin(self, scene, procedure) -> None:
        self._held = 0.0

    def extra_obs(self, scene, procedure):
        return np.r_[procedure.flap_point(scene), procedure.target, float(procedure.grasped),
                     procedure.held_s]

    def reward(self, scene, procedure, tips):
        held = procedure.held_s - self._held
        self._held = procedure.held_s
        terms = {"distance": -10.0 * procedure.distance, "grasp": 0.1 if procedure.grasped else 0.0,
                 "hold": 10.0 * held, "failure": -10.0 if procedure.status == "failure" else 0.0,
                 "score": 0.0}
        return float(sum(terms.values())), terms


TASKS = {t.env_id: t for t in (PegTransferTask, TissueRetractionTask)}
