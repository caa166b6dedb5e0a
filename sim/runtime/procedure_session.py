"""Procedure attempts played by scripted hands through the session step, and their results.

Owns `ProcedureAttempt` (one attempt: `build_session` + `SessionStep` + devices, stepped in one
process; what `trocar run PROCEDURE --policy`, `trocar bench procedure`/`validity` and the tests
run), `run_procedure_session` (the `--policy` session: recording, result JSON next to it, a table
in the terminal) and `result_from_recording` (the result recomputed from a recording's rows, so a
recorded attempt and its replay give the same metrics).

Glue for issue 12 part 6 that belongs with the runtime: the devices are `procedures.policies`
hands (HapticDevices with `observe`) rather than `--device` strings, and the loop is lockstep or
paced to the wall clock by sleeping (no servo process); a real-time session opens the runtime's
display process (a window if there is a display, headless otherwise) fed by the snapshot mailbox.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from procedures.base import ProcedureResult, Trace
from sim.runtime.config import RunConfig
from sim.runtime.lockstep import build_session, numba_threads
from sim.runtime.step import SessionStep

UNPREEMPTED_US = 1000.0  # [us] update samples above this are preemptions of the process on a busy machine


@dataclass
class AttemptStats:
    """Timing of one attempt: ticks, wall [s], real-time factor (simulated / wall), the procedure's
    update cost per tick [us]: mean, p99, median, and the mean without samples over 1 ms."""

    ticks: int
    wall_s: float
    rtf: float
    update_us_mean: float
    update_us_p99: float
    update_us_median: float = 0.0
    update_us_mean_unpreempted: float = 0.0


class _TimedProcedure:
    """Passes update/hud through to the procedure and stores each update's duration [ns]."""

    def __init__(self, procedure, out: np.ndarray) -> None:
        self.procedure = procedure
        self.out = out
        self.i = 0

    def update(self, scene, tick, events) -> None:
        t0 = time.perf_counter_ns()
        self.procedure.update(scene, tick, events)
        if self.i < len(self.out):
            self.out[self.i] = time.perf_counter_ns() - t0
            self.i += 1

    def hud(self) -> dict:
        return self.procedure.hud()

    @property
    def done(self) -> bool:
        return self.procedure.done


class ProcedureAttempt:
    """One attempt: the procedure's scene, the procedure, one device per hand (hand i drives tool
    i), stepped by `SessionStep`; the Trace rows are kept in memory (and recorded if `recorder`).

    max_s: trace capacity [s] (default: the procedure's cut-off)."""

    def __init__(self, procedure_name: str, devices, *, seed: int = 0, scale: float = 1.5,
                 max_s: float | None = None, recorder=None, checksum_every: int = 100) -> None:
        cfg = RunConfig(scene=procedure_name, seed=seed, scale=scale, lockstep=True)
        self.cfg = cfg
        self.scene, self.procedure, self.hands = build_session(cfg, len(devices))
        for hand, dev in zip(self.hands, devices, strict=True):
            hand.device = dev
        self.seed = seed
        cap = int(round((max_s or self.procedure.cutoff_s) / self.scene.dt)) + 2
        self.cap = cap
        self.update_ns = np.zeros(cap, dtype=np.int64)
        self._timed = _TimedProcedure(self.procedure, self.update_ns)
        self.session = SessionStep(self.scene, self.hands, procedure=self._timed, recorder=recorder,
                                   checksum_every=checksum_every, t0_ns=time.perf_counter_ns())
        n_tools, n_hands = self.scene.n_tools, len(self.hands)
        self.tool_pose = np.zeros((cap, n_tools, 7))
        self.jaws = np.zeros((cap, n_tools))
        self.force = np.zeros((cap, n_hands, 3))
        self.scope_pose = np.zeros((cap, 7))
        self._scope_params = np.full(6, np.nan)
        self._scope_now = np.zeros(6)
        self._pose = np.zeros(7)
        self.n = 0

    @property
    def control(self):
        return self.session.control

    @property
    def wmaps(self) -> list:
        return [h.wmap for h in self.hands]

    def step(self, now_ns: int | None = None) -> None:
        """One tick of the session, plus this tick's Trace row."""
        self.session.step(time.perf_counter_ns() if now_ns is None else now_ns)
        i = self.n
        scene = self.scene
        scene.read_tool_poses(self.tool_pose[i])
        self.jaws[i] = self.session.control.jaws
        self.force[i] = self.session.force
        scope = scene.scope
        scope.params(self._scope_now)
        if not np.array_equal(self._scope_now, self._scope_params):  # the pose is costly; it rarely moves
            self._scope_params[:] = self._scope_now
            self._pose[:] = scope.pose
        self.scope_pose[i] = self._pose
        self.n = i + 1

    def run(self, *, stop=None) -> AttemptStats:
        """Step until the procedure ends, `stop()` is true or the trace is full."""
        t0 = time.perf_counter()
        while not self.procedure.done and self.n < self.cap - 1:
            self.step()
            if stop is not None and stop():
                break
        wall = time.perf_counter() - t0
        up = self.update_ns[: self._timed.i] * 1e-3
        if not len(up):
            return AttemptStats(0, wall, 0.0, 0.0, 0.0)
        return AttemptStats(self.n, wall, self.n * self.scene.dt / max(wall, 1e-9), float(up.mean()),
                            float(np.percentile(up, 99)), float(np.median(up)),
                            float(up[up < UNPREEMPTED_US].mean()))

    def trace(self) -> Trace:
        n = self.n
        return Trace(dt=self.scene.dt, t=(np.arange(n) + 1) * self.scene.dt, tool_pose=self.tool_pose[:n],
                     jaws=self.jaws[:n], force=self.force[:n], scope_pose=self.scope_pose[:n],
                     events=list(self.scene.events), tick0=self.procedure.tick0)

    def result(self) -> ProcedureResult:
        return self.procedure.result(self.trace())

    def close(self) -> None:
        self.scene.close()


#: The harness name the tests and benches first used (same class).
LockstepAttempt = ProcedureAttempt


def play(policy: str, seed: int, *, procedure: str = "peg_transfer", max_s: float | None = None):
    """One lockstep attempt by scripted hands of style `policy`; returns (result, stats). It also
    stops 1 s after the policy has finished or given up (the result is 'incomplete' if the procedure
    had not ended by then). The tissue kernels run on one Numba thread (`numba_threads`)."""
    with numba_threads(1):
        return _play(policy, seed, procedure=procedure, max_s=max_s)


def _play(policy: str, seed: int, *, procedure: str, max_s: float | None):
    from procedures.policies import make_hands

    hands = make_hands(policy, seed, procedure)
    att = ProcedureAttempt(procedure, hands, seed=seed, max_s=max_s)
    brain = hands[0].policy
    finished_at = [None]

    def stop() -> bool:
        if brain.gave_up or brain.finished:
            finished_at[0] = att.n if finished_at[0] is None else finished_at[0]
            return att.n - finished_at[0] > 1000
        return False

    try:
        stats = att.run(stop=stop)
        return att.result(), stats
    finally:
        att.close()


# -- results from recordings, `trocar run PROCEDURE --policy NAME` ---------------------------------------


def result_path(record: str) -> str:
    """Where a session's result goes: next to its recording."""
    return record + ".result.json"


def trace_from_recording(rec, dt: float, tick0: int = 0) -> Trace:
    """The Trace of a `sim.runtime.recording.Recording` (rows from tick0 on)."""
    from sim.scene import SceneEvent

    rows = rec.ticks[rec.ticks["tick"] >= tick0]
    events = [SceneEvent(*e) for e in rec.events if e[0] >= tick0]
    return Trace(dt=dt, t=(np.arange(len(rows)) + 1) * dt, tool_pose=rows["tool_pose"], jaws=rows["jaws"],
                 force=rows["force"], scope_pose=rows["scope_pose"], events=events, tick0=tick0)


def result_from_recording(procedure, record: str, recording=None) -> ProcedureResult:
    """`procedure`'s result over the rows of the recording `record` (after the session or a replay
    with that procedure object); `recording`: that file already read (`read_recording`)."""
    from sim.runtime.recording import read_recording

    rec = recording if recording is not None else read_recording(record)
    return procedure.result(trace_from_recording(rec, float(rec.meta.get("dt", 1e-3)), procedure.tick0))


def finish_procedure(procedure, record: str, *, log=print) -> ProcedureResult:
    """After a session with `procedure` recorded to `record`: its result from the recording's rows,
    written as `<record>.result.json`, and the table printed."""
    result = result_from_recording(procedure, record)
    with open(result_path(record), "w") as fh:
        fh.write(result.to_json(indent=1))
    print_result(result)
    log(f"result: {result_path(record)}")
    return result


def score_recording(record: str, *, log=print) -> ProcedureResult | None:
    """Re-run a recorded procedure session in lockstep (`sim.runtime.lockstep.replay`) and finish
    it (`finish_procedure`); None if the recording names no procedure."""
    from sim.runtime.lockstep import find_procedure, replay
    from sim.runtime.recording import read_recording

    meta = read_recording(record).meta
    proc = find_procedure(meta.get("scene", ""))
    if proc is None:
        return None
    replay(record, procedure=proc)
    return finish_procedure(proc, record, log=log)


def replayed_result(procedure, record: str, recording=None) -> tuple[ProcedureResult, bool | None]:
    """After `replay(record, procedure=procedure)`: the attempt's result computed again from the
    recording (`recording`: the file already read), and whether it equals the
    `<record>.result.json` the session wrote (None when that file is missing or unreadable).
    Writes nothing."""
    result = result_from_recording(procedure, record, recording)
    try:
        with open(result_path(record)) as fh:
            stored = ProcedureResult.from_json(fh.read())
    except (OSError, ValueError, KeyError, TypeError):
        return result, None
    same = (stored.status, stored.passed, stored.score, stored.duration_s) == (
        result.status, result.passed, result.score, result.duration_s)
    return result, same


def print_result(result: ProcedureResult, *, file=None) -> None:
    """The end-of-attempt summary as a rich table (status, score, pass/fail, metrics, errors)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    verdict = "PASS" if result.passed else "FAIL"
    t = Table(title=f"{result.procedure}: {result.status}, {result.duration_s:.1f} s, score "
                    f"{result.score:.1f}/100, proficiency {verdict} ({result.proficiency['rule']})")
    for col in ("metric", "value", "unit", "better"):
        t.add_column(col)
    for m in result.metrics.values():
        t.add_row(m.label, "-" if m.value is None else f"{m.value:g}", m.unit, m.better)
    console.print(t)
    for e in result.errors:
        console.print(f"  {e.t:7.2f} s  tick {e.tick}: {e.kind}: {e.message}")


class _Display:
    """A display process watching a `--policy` session: the session publishes snapshots to a
    mailbox every `publish_every` ticks and the runtime's render process (`realtime.render_entry`)
    shows them (window or headset), as for any `trocar run` session. Start/stop around the loop."""

    def __init__(self, session, display: str) -> None:
        import multiprocessing as mp

        from sim.runtime.keyboard import input_layout
        from sim.runtime.mailbox import SnapshotMailbox, layout_of
        from sim.runtime.realtime import render_entry
        from sim.runtime.scheduler import SharedStop

        self.box = SnapshotMailbox.create(layout_of(session.snapshot()))
        self.inputs = SnapshotMailbox.create(input_layout())  # the window's keys go nowhere: policies drive
        session.mailbox = self.box
        session.publish()
        ctx = mp.get_context("spawn")
        self.stop = SharedStop(ctx)
        self.proc = ctx.Process(target=render_entry, name="trocar-render", daemon=True,
                                args=(self.box.name, self.box.layout, session.scene.describe(), display,
                                      self.stop, None, None, self.inputs.name))
        self.proc.start()

    def close(self) -> None:
        self.stop.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        for box in (self.box, self.inputs):
            box.close()
            box.unlink()


def run_procedure_session(procedure: str, policy: str, *, seed: int = 0, record: str | None = None,
                          seconds: float | None = None, realtime: bool = False, display: str = "headless",
                          log=print) -> ProcedureResult:
    """Play `procedure` with scripted hands `policy`: record the session (`trocar replay` reproduces
    it), compute the result from the recording's rows, write it as `<recording>.result.json` and
    print the table. realtime: pace the ticks to the wall clock (else lockstep, as fast as possible).
    display: window | xr | headless | auto (a window if $DISPLAY is set): a real-time session is
    shown there while it plays (the display only reads snapshots; the recording is the same).
    The tissue kernels run on one Numba thread (`numba_threads`: on a busy 2-core machine a second
    thread waiting for a CPU stalled every parallel region; an attempt took 15 min instead of 1)."""
    with numba_threads(1):
        return _run_procedure_session(procedure, policy, seed=seed, record=record, seconds=seconds,
                                      realtime=realtime, display=display, log=log)


def _run_procedure_session(procedure: str, policy: str, *, seed: int, record: str | None,
                           seconds: float | None, realtime: bool, display: str, log) -> ProcedureResult:
    from procedures.policies import make_hands
    from sim.runtime.config import default_record_path, session_meta
    from sim.runtime.recording import RecordingWriter, read_recording

    record = record or default_record_path()
    hands = make_hands(policy, seed, procedure)
    brain = hands[0].policy
    cfg = RunConfig(scene=procedure, device=f"policy:{policy}", seconds=seconds, record=record,
                    lockstep=not realtime, seed=seed)
    att = ProcedureAttempt(procedure, hands, seed=seed, max_s=seconds)
    rec = RecordingWriter(record, dict(session_meta(cfg, att.scene, att.wmaps, "procedure"), policy=policy),
                          att.scene.n_tools, n_hands=len(hands))
    att.session.recorder = rec
    limit = int(round(seconds / att.scene.dt)) if seconds else att.cap - 1
    t0 = time.perf_counter_ns()
    att.session.t0_ns = t0
    finished_at = None
    dt, tick0 = att.scene.dt, att.procedure.tick0
    watcher = None
    if realtime:
        from sim.runtime.realtime import choose_display

        shown = choose_display(display)
        if shown != "headless":
            watcher = _Display(att.session, shown)
            log(f"display: {shown} (render pid {watcher.proc.pid})")
    try:
        while not att.procedure.done and att.n < min(limit, att.cap - 1):
            if realtime:
                deadline = t0 + int(att.n * dt * 1e9)
                while time.perf_counter_ns() < deadline:
                    time.sleep(2e-4)
            start = time.perf_counter_ns()
            att.step(start)
            end = time.perf_counter_ns()
            att.session.finish_row(end - start)
            rec.maybe_flush(end)
            if brain.gave_up or brain.finished:
                finished_at = att.n if finished_at is None else finished_at
                if att.n - finished_at > 1000:
                    break
        proc = att.procedure
        rec.close({"reason": proc.status, "ticks": att.scene.tick_count})
        result = proc.result(trace_from_recording(read_recording(record), dt, tick0))
    finally:
        if watcher is not None:
            watcher.close()
        att.close()
    with open(result_path(record), "w") as fh:
        fh.write(result.to_json(indent=1))
    print_result(result)
    log(f"recording: {record}\nresult: {result_path(record)}")
    return result
