"""Lockstep mode and replay: the tick in one process, no sleeping, deterministic.

`run_lockstep` drives `TickCore` in a plain loop (headless runs, tests, research batches).
`replay` re-runs a recording: it rebuilds the scene from META and feeds the recorded targets and
jaws through `scene.tick` (the device is not consulted: the targets are what the scene saw), and
compares the scene checksums and events with the recorded ones, up to the first damage.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from sim.errors import UserError
from sim.runtime.config import RunConfig, session_meta
from sim.runtime.devices import EmulatorProcess, WorkspaceMap, open_device, parse_device
from sim.runtime.recording import RecordingWriter, read_recording
from sim.runtime.tick import TickCore
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


def build_session_scene(cfg: RunConfig):
    from sim.scene import build_scene

    np.random.seed(cfg.seed)
    return build_scene(cfg.scene, **cfg.overrides)


def run_lockstep(cfg: RunConfig, *, log=print) -> dict:
    """Run cfg.seconds of simulated time as fast as possible; returns the timing report."""
    from sim.tissue import warmup

    if cfg.seconds is None:
        raise ValueError("lockstep needs --seconds")
    choice = parse_device(cfg.device)
    emu = None
    if choice.kind == "emu":
        from sim.runtime.devices import EMU_DEFAULT_ARGS, DeviceChoice

        emu = EmulatorProcess(*EMU_DEFAULT_ARGS, *cfg.emu_args, event_log=cfg.emu_event_log)
        choice = DeviceChoice("serial", emu.path)
    scene = build_session_scene(cfg)
    dev = None
    rec = None
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(numba_threads(cfg.threads))
        warmup()
        wmap = WorkspaceMap.for_scene(scene, scale=cfg.scale)
        if cfg.record:
            rec = RecordingWriter(cfg.record, session_meta(cfg, scene, wmap, "lockstep"), scene.n_tools)
        dev = open_device(choice, soft_start_s=cfg.soft_start_s)
        t0 = time.perf_counter_ns()
        core = TickCore(scene, dev, wmap, rec, checksum_every=cfg.checksum_every, t0_ns=t0)
        timer = TickTimer(capacity=max(int(cfg.seconds / scene.dt) + 1, 16))
        n = int(round(cfg.seconds / scene.dt))
        for _ in range(n):
            start = time.perf_counter_ns()
            core.step(start)
            end = time.perf_counter_ns()
            core.finish_row(end - start)
            timer.account(start, start, end, scene.part_ns)
            if rec is not None:
                rec.maybe_flush(end)
        report = timer.report()
        report["wall_s"] = round((time.perf_counter_ns() - t0) / 1e9, 3)
        report["checksum"] = scene.checksum()
        return report
    finally:
        if dev is not None:
            dev.zero()
            dev.close()
        if rec is not None:
            rec.close({"reason": "end", "ticks": scene.tick_count})
        scene.close()
        stack.close()
        if emu is not None:
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


def replay(path: str, *, progress=None, threads: int = 1) -> ReplayResult:
    """Re-run a recording in lockstep and compare checksums (see the module docstring)."""
    from sim.scene import SceneControl, build_scene

    rec = read_recording(path)
    if not rec.meta:  # nothing to replay: bad input, not a damaged session (UserError: exit 2)
        raise UserError(rec.damage or f"{path}: no META")
    meta = rec.meta
    np.random.seed(meta["seed"])
    try:
        scene = build_scene(meta["scene"], **meta["overrides"])
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: META scene {meta['scene']!r} with overrides "
                        f"{meta['overrides']} cannot be built here: {exc}") from None
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(numba_threads(threads))
        ticks = rec.ticks
        n_tools = scene.n_tools
        control = SceneControl(np.zeros((n_tools, 4)), np.zeros(n_tools))
        expected = dict(rec.checksums)
        checked = 0
        mismatch = None
        last = -1
        for row in ticks:
            k = int(row["tick"])
            if k != scene.tick_count:
                rec.damage = rec.damage or f"{path}: tick {k} where tick {scene.tick_count} was expected"
                break
            control.targets[:] = row["targets"]
            control.jaws[:] = row["jaws"]
            scene.tick(control, scene.dt)
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
        replayed = [[e.tick, e.kind, e.tool, e.value, e.message] for e in scene.events]
        recorded = [e for e in rec.events if e[0] <= last]
        events_equal = replayed == recorded
        return ReplayResult(last + 1, checked, mismatch, events_equal, rec.damage, rec.end is not None,
                            last)
    finally:
        stack.close()
        scene.close()
