"""Lockstep mode, replay, and building a session: the step in one process, no sleeping, deterministic.

`build_session(cfg, n_hands)` makes what every loop runs: the scene (seeded: `scene.rng`), the
procedure if cfg.scene names one (`procedures.registry`), and one `Hand` per device.
`run_lockstep` drives `SessionStep` in a plain loop (headless runs, tests, research batches).
`replay` re-runs a recording through the same `SessionStep`: it rebuilds the session from META and
feeds the recorded targets and jaws (the devices are not consulted: the targets are what the scene
saw), and compares the scene checksums and events with the recorded ones, up to the first damage.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from sim.errors import UserError
from sim.runtime.config import RunConfig, session_meta
from sim.runtime.devices import WorkspaceMap, parse_devices, start_emulators
from sim.runtime.recording import RecordingWriter, meta_problem, read_recording
from sim.runtime.step import Hand, SessionStep, close_hands, open_hands
from sim.runtime.timing import TickTimer


@contextlib.contextmanager
def numba_threads(n: int):
    """Run the tissue kernels with n Numba threads (results do not depend on n,
    docs/tissue-solver.md). One is the default: on a small, busy machine a second thread that has
    to wait for a CPU makes every parallel region wait (measured: 0.1 ms -> 70 ms per tissue step
    of the 1000-tet pad on this 2-vCPU VM under load)."""
    import numba

    prev = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def find_procedure_class(name: str):
    """The procedure class for `name` if `procedures.registry` knows it, else None."""
    try:
        from procedures.registry import PROCEDURES, procedure_class
    except ImportError:
        return None
    return procedure_class(name) if name in PROCEDURES else None


def find_procedure(name: str):
    """A new procedure object for `name` if `procedures.registry` knows it, else None."""
    cls = find_procedure_class(name)
    return cls() if cls is not None else None


def emulator_hands(cfg: RunConfig) -> tuple:
    """Per-hand emulator options of the session: the config's, else those of the procedure it
    plays (`emulator_hands`: emulated hands that move where that scene has room), else none."""
    if cfg.hand_emu_args:
        return cfg.hand_emu_args
    return tuple(getattr(find_procedure_class(cfg.scene), "emulator_hands", ()))


def build_session(cfg: RunConfig, n_hands: int = 1, *, procedure=None):
    """(scene, procedure or None, hands) for cfg: hand h drives tool h (no device yet: callers open
    them). A procedure name in cfg.scene builds that procedure's scene (its overrides, then cfg's)
    and resets it with cfg.seed. Raises UserError when there are more hands than tools."""
    from sim.errors import UserError
    from sim.scene import build_scene

    proc = procedure if procedure is not None else find_procedure(cfg.scene)
    if proc is not None:
        build = getattr(proc, "build_scene", None)
        if build is not None and not cfg.overrides:
            scene = build(cfg.seed)
        else:
            over = dict(proc.scene_overrides(cfg.seed)) if hasattr(proc, "scene_overrides") else {}
            over.update(cfg.overrides)
            scene = build_scene(getattr(proc, "scene_name", "default"), seed=cfg.seed, **over)
    else:
        scene = build_scene(cfg.scene, seed=cfg.seed, **cfg.overrides)
    if n_hands > scene.n_tools:
        scene.close()
        raise UserError(f"{n_hands} devices but scene {cfg.scene!r} has {scene.n_tools} tools")
    if proc is not None:
        proc.reset(scene, cfg.seed)
    hands = [Hand(None, WorkspaceMap.for_scene(scene, tool=h, scale=cfg.scale, hands=n_hands))
             for h in range(n_hands)]
    return scene, proc, hands


def run_lockstep(cfg: RunConfig, *, log=print, procedure=None) -> dict:
    """Run cfg.seconds of simulated time as fast as possible; returns the timing report (with the
    final checksum, and `status` of the procedure if there is one). A procedure that is `done` ends
    the run early."""
    from sim.tissue import warmup

    if cfg.seconds is None:
        raise ValueError("lockstep needs --seconds")
    choices = parse_devices(cfg.device)
    choices, emus = start_emulators(choices, emu_args=cfg.emu_args, hand_emu_args=emulator_hands(cfg),
                                    event_log=cfg.emu_event_log)
    scene = step = rec = None
    stack = contextlib.ExitStack()
    try:
        scene, procedure, hands = build_session(cfg, len(choices), procedure=procedure)
        stack.enter_context(numba_threads(cfg.threads))
        warmup()
        if cfg.record:
            rec = RecordingWriter(cfg.record, session_meta(cfg, scene, [h.wmap for h in hands], "lockstep"),
                                  scene.n_tools, n_hands=len(hands))
        t0 = time.perf_counter_ns()
        step = SessionStep(scene, hands, procedure=procedure, recorder=rec,
                           checksum_every=cfg.checksum_every, t0_ns=t0)
        open_hands(hands, choices, soft_start_s=cfg.soft_start_s)
        timer = TickTimer(capacity=max(int(cfg.seconds / scene.dt) + 1, 16))
        n = int(round(cfg.seconds / scene.dt))
        for _ in range(n):
            start = time.perf_counter_ns()
            step.step(start)
            end = time.perf_counter_ns()
            step.finish_row(end - start)
            timer.account(start, start, end, scene.part_ns)
            if rec is not None:
                rec.maybe_flush(end)
            if procedure is not None and getattr(procedure, "done", False):
                break
        report = timer.report()
        report["wall_s"] = round((time.perf_counter_ns() - t0) / 1e9, 3)
        report["checksum"] = scene.checksum()
        if procedure is not None:
            report["status"] = getattr(procedure, "status", None)
        return report
    finally:
        if step is not None:
            step.force[:] = 0.0
            close_hands(step.hands)
        if rec is not None:
            rec.close({"reason": "end", "ticks": scene.tick_count})
        if scene is not None:
            scene.close()
        stack.close()
        for emu in emus:
            emu.stop()


@dataclass
class ReplayResult:
    """ticks: ticks replayed; checked: checksums compared; mismatch: first differing
    (tick, recorded, replayed) or None; events_equal: recorded events == replayed events over the
    replayed ticks; damage: the reader's one line, or None; complete: the file had an END chunk."""

    ticks: int
    checked: int
    mismatch: tuple | None
    events_equal: bool
    damage: str | None
    complete: bool
    last_tick: int

    @property
    def ok(self) -> bool:
        return self.mismatch is None and self.events_equal


def replay_row(row, control, scene, has_scope: bool) -> None:
    """Put one recorded tick row's targets and jaws into control, and its scope parameters (if the
    recording has them and the row set them) on the scene: what replaying that tick needs."""
    control.targets[:] = row["targets"]
    control.jaws[:] = row["jaws"]
    if has_scope and row["scope"].any():
        scene.scope.set_params(row["scope"])


def replay(path: str, *, progress=None, threads: int = 1, procedure=None, recording=None) -> ReplayResult:
    """Re-run a recording in lockstep through `SessionStep` and compare checksums (see the module
    docstring). The procedure (if META names one) is rebuilt and updated as in the session;
    `procedure` overrides it (e.g. to read its result afterwards). `recording`: the file at `path`
    already read (`read_recording`), so a caller that needs it too reads it once."""
    from sim.scene import SceneControl

    rec = recording if recording is not None else read_recording(path)
    if not rec.meta:  # nothing to replay: bad input, not a damaged session (UserError: exit 2)
        raise UserError(rec.damage or f"{path}: no META")
    meta = rec.meta
    problem = meta_problem(meta, replay=True)
    if problem is not None:
        raise UserError(f"{path}: {problem}")
    cfg = RunConfig(scene=meta["scene"], overrides=meta["overrides"], seed=meta["seed"],
                    scale=float(meta.get("config", {}).get("scale", 1.5)))
    try:
        scene, procedure, hands = build_session(cfg, int(meta.get("n_hands", 1)), procedure=procedure)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: META scene {meta['scene']!r} with overrides "
                        f"{meta['overrides']} cannot be built here: {exc}") from None
    if scene.n_tools != meta["n_tools"]:
        scene.close()
        raise UserError(f"{path}: META says {meta['n_tools']} tools, scene {meta['scene']!r} has "
                        f"{scene.n_tools} here")
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(numba_threads(threads))
        step = SessionStep(scene, hands, procedure=procedure, checksum_every=0)
        ticks = rec.ticks
        n_tools = scene.n_tools
        control = SceneControl(np.zeros((n_tools, 4)), np.zeros(n_tools))
        has_scope = "scope" in (ticks.dtype.names or ())
        expected = dict(rec.checksums)
        checked = 0
        mismatch = None
        last = -1
        for row in ticks:
            k = int(row["tick"])
            if k != scene.tick_count:
                rec.damage = rec.damage or f"{path}: tick {k} where tick {scene.tick_count} was expected"
                break
            replay_row(row, control, scene, has_scope)
            step.step(0, control=control)
            last = k
            want = expected.get(k)
            if want is not None:
                got = scene.checksum()
                checked += 1
                if got != want and mismatch is None:
                    mismatch = (k, want, got)
                    break
            if progress is not None and k % 1000 == 0:
                progress(k)
        replayed = [[e.tick, e.kind, e.tool, e.value, e.message, e.body] for e in scene.events]
        recorded = [e for e in rec.events if e[0] <= last]
        events_equal = replayed == recorded
        return ReplayResult(last + 1, checked, mismatch, events_equal, rec.damage, rec.end is not None,
                            last)
    finally:
        stack.close()
        scene.close()
