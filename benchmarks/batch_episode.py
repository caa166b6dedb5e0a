"""One batch episode: a lockstep run of a procedure by a policy, with its recording, its result and
a replay check. What a batch worker (local process or Ray task) runs.

Files of episode i in DIR/episodes/: `ep-iiiii.trec` (the session recording: `trocar replay` re-runs
it), `ep-iiiii.trec.result.json` (the ProcedureResult, as `trocar run` writes it) and
`ep-iiiii.json` (the episode row: episode, seed, policy, status, score, metrics, final checksum,
ticks, wall time; written last and atomically: its presence means the episode is done).

The result is computed from the recording (`result_of`), so a replay gives the same
result: `replay_episode` re-runs the recording through the same step and recomputes it.
"""

from __future__ import annotations

import json
import os
import socket
import time

from procedures.base import ProcedureResult

SETTLE_S = 1.0  # [s] after a scripted policy finishes: the last object may still be settling
CHECKSUM_EVERY = 100  # [ticks]


def episode_paths(out_dir: str, episode: int) -> dict[str, str]:
    base = os.path.join(out_dir, "episodes", f"ep-{episode:05d}")
    return {"recording": base + ".trec", "result": base + ".trec.result.json", "row": base + ".json"}


def result_of(procedure, rec) -> ProcedureResult:
    """The procedure's result from a recording's rows (sim.runtime.procedure_session's Trace)."""
    from sim.runtime.procedure_session import trace_from_recording

    return procedure.result(trace_from_recording(rec, float(rec.meta.get("dt", 1e-3)), procedure.tick0))


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def run_episode(procedure: str, policy: str, seed: int, out_dir: str, episode: int, *,
                max_s: float | None = None, attempt: int = 1) -> dict:
    """Run episode `episode` (see the module docstring); returns its row (also written as JSON)."""
    from procedures.registry import get_procedure
    from research.policies import policy_hands
    from sim.runtime.config import RunConfig, session_meta
    from sim.runtime.lockstep import build_session, numba_threads
    from sim.runtime.recording import RecordingWriter, read_recording
    from sim.runtime.step import SessionStep

    paths = episode_paths(out_dir, episode)
    os.makedirs(os.path.dirname(paths["row"]), exist_ok=True)
    t_wall = time.perf_counter()
    proc = get_procedure(procedure)
    devices = policy_hands(policy, procedure, seed)
    cfg = RunConfig(scene=procedure, device=f"policy:{policy}", seconds=max_s, record=paths["recording"],
                    lockstep=True, seed=seed, checksum_every=CHECKSUM_EVERY)
    scene, proc, hands = build_session(cfg, len(devices), procedure=proc)
    try:
        for hand, dev in zip(hands, devices, strict=True):
            dev.open()
            hand.device = dev
        meta = dict(session_meta(cfg, scene, [h.wmap for h in hands], "batch"), procedure=procedure,
                    policy=policy, episode=episode)
        rec = RecordingWriter(paths["recording"], meta, scene.n_tools, n_hands=len(hands))
        step = SessionStep(scene, hands, procedure=proc, recorder=rec, checksum_every=CHECKSUM_EVERY)
        limit = int(round(min(max_s or proc.cutoff_s, proc.cutoff_s) / scene.dt)) + 1
        brain = getattr(devices[0], "policy", None)
        settle = int(round(SETTLE_S / scene.dt))
        finished_at = None
        with numba_threads(1):
            for n in range(limit):
                now = time.perf_counter_ns()
                step.step(now)
                rec.maybe_flush(now)
                if proc.done:
                    break
                if brain is not None and (getattr(brain, "finished", False)
                                          or getattr(brain, "gave_up", False)):
                    finished_at = n if finished_at is None else finished_at
                    if n - finished_at >= settle:
                        break
        checksum = scene.checksum()
        ticks = scene.tick_count
        if ticks % CHECKSUM_EVERY:  # the final state too, so a replay checks where the episode ended
            rec.checksum(ticks - 1, checksum)
        rec.close({"reason": proc.status, "ticks": ticks, "checksum": checksum})
    finally:
        for dev in devices:
            dev.close()
        scene.close()
    result = result_of(proc, read_recording(paths["recording"]))
    _write_atomic(paths["result"], result.to_json(indent=1))
    row = {"episode": episode, "seed": seed, "procedure": procedure, "policy": policy,
           "status": result.status, "completed": result.completed, "passed": result.passed,
           "score": result.score, "duration_s": result.duration_s, "errors": len(result.errors),
           "metrics": {k: m.value for k, m in result.metrics.items()},
           "units": {k: m.unit for k, m in result.metrics.items()},
           "ticks": ticks, "checksum": checksum, "wall_s": round(time.perf_counter() - t_wall, 3),
           "attempt": attempt, "worker": f"{socket.gethostname()}:{os.getpid()}",
           "recording": os.path.relpath(paths["recording"], out_dir)}
    _write_atomic(paths["row"], json.dumps(row))
    return row


def replay_episode(recording: str) -> tuple[object, ProcedureResult, str]:
    """Re-run an episode's recording (sim.runtime.lockstep.replay, with a fresh procedure that is
    updated on the replayed ticks; the replay compares every recorded checksum, the final state's
    included) -> (ReplayResult, the recomputed result, the final checksum the recording's END holds)."""
    from procedures.registry import get_procedure
    from sim.runtime.lockstep import replay
    from sim.runtime.recording import read_recording

    rec = read_recording(recording)
    proc = get_procedure(rec.meta["procedure"])
    r = replay(recording, procedure=proc)
    result = result_of(proc, rec)
    return r, result, (rec.end or {}).get("checksum", "")


def same_result(a: ProcedureResult, b: ProcedureResult) -> bool:
    """Equal results apart from the wall-clock timestamps (started, ended)."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("started")
        d.pop("ended")
    return da == db
