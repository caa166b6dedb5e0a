"""A procedure session in one process: `trocar run PROCEDURE --policy expert|novice`, the attempts
`trocar bench procedure` / `trocar bench validity` run, and the tests' harness.

TEMPORARY glue until issue-12r's SessionStep lands (then `LockstepAttempt.step` becomes a call
to it and `trocar run` drives procedures through the ordinary servo/lockstep loops).
`LockstepAttempt.step` does what the contract's session step does (sim/runtime/step.py, helper
R): per hand `device.observe(scene, wmap)`, `read()`, `wmap.apply(...)`; `scene.tick`;
`procedure.update(scene, tick, new_events)`; per hand `write_force(-coupling[wmap.tool])`; a trace
row (tool shaft poses, jaws, per-hand force, scope pose). Switch to SessionStep when it lands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from procedures.base import ProcedureResult, Trace
from procedures.registry import get_procedure
from procedures.view import default_scope_pose
from sim.runtime.devices import WorkspaceMap
from sim.scene import SceneControl, build_scene


@dataclass
class AttemptStats:
    """Timing of one attempt: ticks, wall [s], real-time factor (simulated / wall), procedure
    update cost per tick [us]: mean, median, p99, and the mean without samples over 1 ms (on a
    busy machine those are preemptions of the process, not procedure work)."""

    ticks: int
    wall_s: float
    rtf: float
    update_us_mean: float
    update_us_p99: float
    update_us_median: float = 0.0
    update_us_mean_unpreempted: float = 0.0


class LockstepAttempt:
    """One attempt: scene + procedure + devices (one per hand: device i drives tool i)."""

    def __init__(
        self, procedure_name: str, devices, *, seed: int = 0, scale: float = 1.5, max_s: float | None = None
    ) -> None:
        self.procedure = get_procedure(procedure_name)
        self.scene = build_scene(self.procedure.scene_name, **self.procedure.scene_overrides(seed))
        self.devices = list(devices)
        self.wmaps = [
            WorkspaceMap.for_scene(self.scene, tool=i, scale=scale) for i in range(len(self.devices))
        ]
        hold = self.scene.hold_control()
        self.control = SceneControl(hold.targets.copy(), hold.jaws.copy())
        self.seed = seed
        self.procedure.reset(self.scene, seed)
        cap = int(round((max_s or self.procedure.cutoff_s) / self.scene.dt)) + 2
        n_tools, n_hands = self.scene.n_tools, len(self.devices)
        self.tool_pose = np.zeros((cap, n_tools, 7))
        self.jaws = np.zeros((cap, n_tools))
        self.force = np.zeros((cap, n_hands, 3))
        spec = self.scene.rigid.pegboard.spec if self.scene.rigid.pegboard else None
        target = [*spec.centre, spec.top] if spec else [0.0, 0.0, 0.0]
        self.scope_pose = default_scope_pose(self.scene.config.scope_port.point(), target)
        self.n = 0
        self.cap = cap
        self.update_ns = np.zeros(cap, dtype=np.int64)
        self._f = np.zeros(3)

    def step(self) -> None:
        scene, control = self.scene, self.control
        for dev, wmap in zip(self.devices, self.wmaps, strict=True):
            observe = getattr(dev, "observe", None)
            if observe is not None:
                observe(scene, wmap)
            s = dev.read()
            if s.connected:
                wmap.apply(s.position, s.gripper, control.targets, control.jaws)
        n_ev = len(scene.events)
        tick = scene.tick_count
        coupling = scene.tick(control, scene.dt)
        t0 = time.perf_counter_ns()
        self.procedure.update(scene, tick, scene.events[n_ev:])
        self.update_ns[self.n] = time.perf_counter_ns() - t0
        i = self.n
        for h, (dev, wmap) in enumerate(zip(self.devices, self.wmaps, strict=True)):
            np.negative(coupling[wmap.tool], out=self._f)
            dev.write_force(self._f)
            self.force[i, h] = self._f
        self.tool_pose[i] = scene.tool_link_poses()[:, 0, :]
        self.jaws[i] = control.jaws
        self.n += 1

    def run(self, *, stop=None) -> AttemptStats:
        """Step until the procedure ends, `stop()` is true or the trace is full."""
        t0 = time.perf_counter()
        while not self.procedure.done and self.n < self.cap - 1:
            self.step()
            if stop is not None and stop():
                break
        wall = time.perf_counter() - t0
        up = self.update_ns[: self.n] * 1e-3
        if not self.n:
            return AttemptStats(0, wall, 0.0, 0.0, 0.0)
        return AttemptStats(self.n, wall, self.n * self.scene.dt / max(wall, 1e-9), float(up.mean()),
                            float(np.percentile(up, 99)), float(np.median(up)), float(up[up < 1000.0].mean()))

    def trace(self) -> Trace:
        n = self.n
        return Trace(
            dt=self.scene.dt,
            t=(np.arange(n) + 1) * self.scene.dt,
            tool_pose=self.tool_pose[:n],
            jaws=self.jaws[:n],
            force=self.force[:n],
            scope_pose=np.tile(self.scope_pose, (n, 1)),
            events=list(self.scene.events),
            tick0=self.procedure.tick0,
        )

    def result(self) -> ProcedureResult:
        return self.procedure.result(self.trace())

    def close(self) -> None:
        self.scene.close()


def play(policy: str, seed: int, *, procedure: str = "peg_transfer", max_s: float | None = None):
    """One attempt by scripted hands of style `policy`; returns (result, stats). The attempt also
    stops when the policy has finished or given up (the result is then 'incomplete' if the
    procedure had not ended)."""
    from procedures.policies import make_hands

    hands = make_hands(policy, seed)
    att = LockstepAttempt(procedure, hands, seed=seed, max_s=max_s)
    brain = hands[0].policy
    try:
        stats = att.run(stop=lambda: brain.gave_up or (brain.finished and att.n > 0 and _settled(att)))
        return att.result(), stats
    finally:
        att.close()


def _settled(att: LockstepAttempt) -> bool:
    # The policy is done but the last ring may still be settling: give the procedure 1 s to see it.
    if not hasattr(att, "_finish_tick"):
        att._finish_tick = att.n
    return att.n - att._finish_tick > 1000


# -- `trocar run PROCEDURE --policy NAME` ---------------------------------------------------------------


def result_path(record: str) -> str:
    """Where a session's result goes: next to its recording."""
    return record + ".result.json"


def print_result(result: ProcedureResult, *, file=None) -> None:
    """The end-of-attempt summary as a rich table (status, score, pass/fail, metrics, errors)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    verdict = "PASS" if result.passed else "FAIL"
    t = Table(
        title=f"{result.procedure}: {result.status}, {result.duration_s:.1f} s, score "
        f"{result.score:.1f}/100, proficiency {verdict} ({result.proficiency['rule']})"
    )
    for col in ("metric", "value", "unit", "better"):
        t.add_column(col)
    for m in result.metrics.values():
        t.add_row(m.label, "-" if m.value is None else f"{m.value:g}", m.unit, m.better)
    console.print(t)
    for e in result.errors:
        console.print(f"  {e.t:7.2f} s  tick {e.tick}: {e.kind}: {e.message}")


def run_procedure_session(
    procedure: str,
    policy: str,
    *,
    seed: int = 0,
    record: str | None = None,
    seconds: float | None = None,
    realtime: bool = False,
    log=print,
) -> ProcedureResult:
    """Play `procedure` with scripted hands `policy`; record the session (targets, jaws, events,
    checksums: `trocar replay` reproduces it), write the result JSON next to the recording and print
    the table. realtime: pace the ticks to the wall clock (else lockstep, as fast as possible)."""
    from procedures.policies import make_hands
    from sim.runtime.config import RunConfig, default_record_path, session_meta
    from sim.runtime.recording import RecordingWriter

    record = record or default_record_path()
    hands = make_hands(policy, seed)
    brain = hands[0].policy
    att = LockstepAttempt(procedure, hands, seed=seed, max_s=seconds)
    cfg = RunConfig(
        scene=att.procedure.scene_name,
        device=f"policy:{policy}",
        seconds=seconds,
        record=record,
        lockstep=not realtime,
        seed=seed,
    )
    rec = RecordingWriter(
        record,
        dict(session_meta(cfg, att.scene, att.wmaps[0], "procedure"), procedure=procedure, policy=policy),
        att.scene.n_tools,
    )
    limit = int(round(seconds / att.scene.dt)) if seconds else att.cap - 1
    t0 = time.perf_counter_ns()
    n_events = len(att.scene.events)
    done_at = None
    try:
        while not att.procedure.done and att.n < min(limit, att.cap - 1):
            tick = att.scene.tick_count
            if realtime:
                deadline = t0 + int(att.n * att.scene.dt * 1e9)
                while time.perf_counter_ns() < deadline:
                    time.sleep(2e-4)
            now = time.perf_counter_ns()
            att.step()
            i = rec.next_row()
            f = rec.fields
            f["tick"][i] = tick
            f["t"][i] = (now - t0) * 1e-9
            f["targets"][i] = att.control.targets
            f["jaws"][i] = att.control.jaws
            f["force"][i] = att.force[att.n - 1, 0]
            f["dev_flags"][i] = 3
            events = att.scene.events
            for e in events[n_events:]:
                rec.event(e.tick, e.kind, e.tool, e.value, e.message, e.body)
            n_events = len(events)
            if att.scene.tick_count % 100 == 0:
                rec.checksum(att.scene.tick_count - 1, att.scene.checksum())
            rec.maybe_flush(time.perf_counter_ns())
            if brain.gave_up or brain.finished:
                done_at = att.n if done_at is None else done_at
                if att.n - done_at > 1000:
                    break
        result = att.result()
        rec.close({"reason": att.procedure.status, "ticks": att.scene.tick_count, "result": result.to_dict()})
    finally:
        att.close()
    with open(result_path(record), "w") as fh:
        fh.write(result.to_json(indent=1))
    print_result(result)
    log(f"recording: {record}\nresult: {result_path(record)}")
    return result
