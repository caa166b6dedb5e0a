"""Tissue retraction: grasp a flap of the default scene's pad and hold it at a target (the simplest
tissue task, after LapGym's tissue retraction).

The flap point is the top-surface node of the pad nearest the middle of its left edge (-x side, the
grasper's side, tool 0). The target is that node's rest position raised by LIFT_M, moved by a seeded
offset of up to JITTER_M in each axis. The attempt succeeds once tool 0 has held tissue with the
flap point within TOLERANCE_M of the target for HOLD_S in total; it fails when the tissue solver had
to be reset (a 'tissue_reset' event: the pull was too violent); it times out at CUTOFF_S.

Score: 100 * (1 - duration / CUTOFF_S) on success, else 0. Proficiency: success within
TARGET_TIME_S. This is a Procedure (procedures.base) that lives with the environments because no
batch policy plays it yet; it reads only the scene (tissue state and the contact's attachments).
"""

from __future__ import annotations

import numpy as np

from procedures import metrics as mx
from procedures.base import Metric, Procedure, ProcedureResult, Trace, iso_now

CUTOFF_S = 10.0  # [s] attempt time limit
TARGET_TIME_S = 4.0  # [s] proficiency time
LIFT_M = 0.02  # [m] target height above the flap point's rest position
JITTER_M = 0.004  # [m] seeded target offset per axis (uniform in +-JITTER_M)
TOLERANCE_M = 0.005  # [m] flap point to target distance that counts as "at the target"
HOLD_S = 1.0  # [s] time at the target (while grasped) needed to succeed
GRASPER = 0  # tool index of the grasper (left port, default scene)


class TissueRetraction(Procedure):
    """See the module docstring. Attributes after each update: flap_node (tissue node id), target
    (3,) [m], distance [m] (flap point to target), grasped (tool 0 holds tissue), held_s [s]."""

    name = "tissue_retraction"
    version = "1"
    scene_name = "default"
    cutoff_s = CUTOFF_S
    target_time_s = TARGET_TIME_S

    def __init__(self) -> None:
        super().__init__()
        self.flap_node = -1
        self.target = np.zeros(3)
        self.distance = 0.0
        self.grasped = False
        self.held_s = 0.0

    def reset(self, scene, seed: int = 0) -> None:
        if scene.tissue is None:
            raise ValueError("tissue retraction needs a scene with tissue (the default scene)")
        self._start(scene, seed)
        self._dt = scene.dt
        rest = scene.tissue.rest
        top = rest[:, 2] > rest[:, 2].max() - 1e-6
        edge = np.array([rest[:, 0].min(), rest[:, 1].mean(), rest[:, 2].max()])
        ids = np.flatnonzero(top)
        self.flap_node = int(ids[np.argmin(np.linalg.norm(rest[ids] - edge, axis=1))])
        rng = np.random.default_rng(seed)
        jitter = rng.uniform(-JITTER_M, JITTER_M, 3)
        self.target = rest[self.flap_node] + np.array([0.0, 0.0, LIFT_M]) + jitter
        self.held_s = 0.0
        self.grasped = False
        self.distance = float(np.linalg.norm(rest[self.flap_node] - self.target))
        self.instruction = "Grasp the left edge of the pad and hold it at the target"

    def flap_point(self, scene) -> np.ndarray:
        """The flap point's current position [m] (3,)."""
        return scene.tissue_state.x[self.flap_node].copy()

    def update(self, scene, tick: int, events) -> None:
        if self.status != "running":
            return
        self.time_s = (tick - self.tick0 + 1) * self._dt
        if any(e.kind == "tissue_reset" for e in events):
            self._error(tick, "tissue_reset", "the tissue was pulled too hard and had to be reset")
            self._finish("failure", tick)
            return
        self.grasped = len(scene.contact.attached_nodes(GRASPER)) > 0
        self.distance = float(np.linalg.norm(scene.tissue_state.x[self.flap_node] - self.target))
        if self.grasped and self.distance <= TOLERANCE_M:
            self.held_s += self._dt
            if self.held_s >= HOLD_S - 1e-9:
                self.instruction = "Done"
                self._finish("success", tick)
                return
        if self.time_s >= self.cutoff_s - 1e-9:
            self._finish("timeout", tick)

    def hud(self) -> dict:
        return {"instruction": self.instruction,
                "progress": f"{self.distance * 1e3:.0f} mm to target, held {self.held_s:.1f}/{HOLD_S:g} s",
                "time_s": round(self.time_s, 2), "target_time_s": self.target_time_s, "warnings": []}

    def result(self, trace: Trace) -> ProcedureResult:
        status = self.status if self.status != "running" else "incomplete"
        duration = self.time_s
        score = 100.0 * max(0.0, 1.0 - duration / self.cutoff_s) if status == "success" else 0.0
        forces = mx.force_magnitudes(trace.force) if trace.n else np.zeros(1)
        metrics = {
            "completion_time": Metric(duration, "s", "lower", "time to complete"),
            "final_distance": Metric(self.distance, "m", "lower", "flap point to target at the end"),
            "hold_time": Metric(self.held_s, "s", "higher", "time held at the target"),
            "path_length": Metric(mx.path_length(trace.tips(GRASPER)) if trace.n else 0.0, "m", "lower",
                                  "grasper tip path length"),
            "max_force": Metric(float(np.max(forces)), "N", "lower", "largest force on a hand"),
        }
        met = status == "success" and duration <= self.target_time_s
        return ProcedureResult(
            procedure=self.name, version=self.version, seed=self.seed, status=status,
            completed=status == "success", passed=met, score=round(score, 3), duration_s=duration,
            started=self.started, ended=iso_now(), metrics=metrics, errors=list(self.errors),
            proficiency={"rule": f"success within {self.target_time_s:g} s", "met": met})
