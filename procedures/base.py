"""The procedure API: what a training task is (`Procedure`), what it reads (`Trace`) and what it
returns (`ProcedureResult`).

A procedure builds its scene (`scene_name` + `scene_overrides`), is `reset` at the start of an
attempt, consumes each tick's typed `sim.scene.SceneEvent`s in `update` (cheap: <= 20 us per tick,
measured by `trocar bench procedure`), keeps its state (phase, instruction, errors), decides
success, failure or time-out, shows a HUD (`hud()`), and at the end turns the attempt's `Trace`
(the per-tick arrays a recording holds) into a `ProcedureResult`: score, pass/fail against its
proficiency rule, metrics with units, errors with their tick. Metrics come from the Trace only, so
a replay and a batch give the same numbers.

A procedure never imports the runtime, the renderer or the records; they import it.
"""

from __future__ import annotations

import abc
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

STATUSES = ("running", "success", "failure", "timeout")


@dataclass
class Trace:
    """One attempt as arrays, one row per tick (what the session recording stores).

    Attributes:
        dt: tick period [s].
        t: simulated time at the end of each tick since the attempt started [s], shape (N,).
        tool_pose: each tool's shaft link after the tick (tip position [m], quaternion x y z w),
            shape (N, n_tools, 7).
        jaws: commanded jaw opening per tool [rad], shape (N, n_tools).
        force: force on each hand (the negative coupling force on its tool) [N], shape (N, n_hands, 3).
        scope_pose: laparoscope camera pose (eye [m], quaternion x y z w; the camera looks along
            its local -z, image up = local +y), shape (N, 7).
        events: the attempt's SceneEvents (ticks are scene tick indices).
        tick0: scene tick index of row 0.
    """

    dt: float
    t: np.ndarray
    tool_pose: np.ndarray
    jaws: np.ndarray
    force: np.ndarray
    scope_pose: np.ndarray
    events: list = field(default_factory=list)
    tick0: int = 0

    @property
    def n(self) -> int:
        return len(self.t)

    def tips(self, tool: int) -> np.ndarray:
        """Tool tip positions [m], shape (N, 3)."""
        return self.tool_pose[:, tool, :3]


@dataclass(frozen=True)
class Metric:
    """One metric value: value in `unit` (None when undefined, e.g. smoothness without a movement);
    better: 'lower' or 'higher'; label: what it is, for people."""

    value: float | None
    unit: str
    better: str
    label: str


@dataclass(frozen=True)
class ProcedureError:
    """A scored mistake: tick (scene tick index), t (attempt time [s]), kind (short tag), message."""

    tick: int
    t: float
    kind: str
    message: str


@dataclass
class ProcedureResult:
    """The outcome of one attempt (the JSON records, the research API and the console consume).

    status: 'success' | 'failure' | 'timeout' | 'incomplete' (stopped before the procedure ended);
    score: normalised 0..100 (procedure-specific formula, docs/procedures.md); passed: the
    proficiency rule was met; duration_s: attempt time [s]; started/ended: ISO 8601 wall-clock
    times; metrics: name -> Metric; errors: ProcedureError list; proficiency: {'rule', 'met'}.
    """

    procedure: str
    version: str
    seed: int
    status: str
    completed: bool
    passed: bool
    score: float
    duration_s: float
    started: str
    ended: str
    metrics: dict[str, Metric]
    errors: list[ProcedureError]
    proficiency: dict

    def to_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = {k: asdict(m) for k, m in self.metrics.items()}
        d["errors"] = [asdict(e) for e in self.errors]
        return d

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ProcedureResult:
        d = json.loads(text)
        d["metrics"] = {k: Metric(**m) for k, m in d["metrics"].items()}
        d["errors"] = [ProcedureError(**e) for e in d["errors"]]
        return cls(**d)


def iso_now() -> str:
    """Wall-clock time now, ISO 8601 with offset (for result timestamps only, never simulated)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Procedure(abc.ABC):
    """A training task. Subclasses set `name`, `version`, `scene_name`, `cutoff_s`, `target_time_s`.

    Lifecycle: `reset(scene, seed)` at the start of an attempt; `update(scene, tick, events)` once per
    tick after `scene.tick` with that tick's events; `done` turns True when `status` leaves
    'running'; `result(trace)` at the end. `instruction` is the current phase's instruction.
    """

    name: str = ""
    version: str = "1"
    scene_name: str = "default"
    cutoff_s: float = 300.0  # attempt time limit [s]
    target_time_s: float = 0.0  # proficiency time [s]

    def __init__(self) -> None:
        self.status = "running"
        self.instruction = ""
        self.seed = 0
        self.errors: list[ProcedureError] = []
        self.warnings: list[str] = []
        self.started = iso_now()
        self.tick0 = 0
        self.time_s = 0.0
        self.end_tick = -1

    def scene_overrides(self, seed: int) -> dict:
        """SceneConfig field overrides for `sim.scene.build_scene(self.scene_name, **overrides)`."""
        return {}

    @property
    def done(self) -> bool:
        return self.status != "running"

    @abc.abstractmethod
    def reset(self, scene, seed: int = 0) -> None:
        """Start an attempt on a freshly built or reset scene (scene.tick_count is the first tick)."""

    @abc.abstractmethod
    def update(self, scene, tick: int, events) -> None:
        """Consume one tick (tick index `tick`, done) and its SceneEvents; may end the attempt."""

    @abc.abstractmethod
    def hud(self) -> dict:
        """HUD content: instruction, progress (str), time_s, target_time_s, warnings (list[str])."""

    @abc.abstractmethod
    def result(self, trace: Trace) -> ProcedureResult:
        """The attempt's result; metrics are computed from `trace`."""

    # -- helpers for subclasses ---------------------------------------------------------------------

    def _start(self, scene, seed: int) -> None:
        self.status = "running"
        self.seed = int(seed)
        self.errors = []
        self.warnings = []
        self.started = iso_now()
        self.tick0 = scene.tick_count
        self.time_s = 0.0
        self.end_tick = -1

    def _error(self, tick: int, kind: str, message: str) -> None:
        self.errors.append(ProcedureError(tick, round((tick - self.tick0 + 1) * self._dt, 6), kind, message))

    def _finish(self, status: str, tick: int) -> None:
        if self.status == "running":
            self.status = status
            self.end_tick = tick

    _dt = 1e-3
