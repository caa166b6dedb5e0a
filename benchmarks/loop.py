"""`trocar bench loop`: 1 kHz loop timing, an empty loop against the full real-time session.

Case 1 ("empty"): the periodic scheduler every loop runs on (`sim.runtime.scheduler`: absolute
deadlines, sleep to 200 us before, then spin; same scheduling request as the servo) in its own
process with nothing in the tick:
what the OS and Python give us. Case 2 ("scene"): `trocar run` itself for the same time: the
scene (default: 5k tets, two tools), the emulated device over a pty, the renderer stub reading the
mailbox at 60 Hz, the recording. One JSON object per case, then one with the ratios 2/1.

Figures: period p50/p99/p99.9/max [us]; lateness (tick start - deadline) p99 [us]; overrun
fraction (ticks starting more than 0.5 ms late, i.e. more than 1.5 ms after the previous
deadline); the fraction of periods above 1.5 ms; device round trip p99 [us] (FORCE sent -> the
first STATE echoing it, from SerialDevice.rtt_percentiles; includes waiting for the device's
next 1 ms tick).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time

KEYS = ("period_p50_us", "period_p99_us", "period_p999_us", "period_max_us", "lateness_p99_us",
        "overrun_fraction")


def _empty_main(cfg, conn) -> None:
    import gc

    from sim.runtime.realtime import apply_realtime_sched
    from sim.runtime.scheduler import PERIOD_NS, PeriodicScheduler, StopFlag
    from sim.runtime.timing import TickTimer

    sched = apply_realtime_sched(cfg)
    timer = TickTimer(capacity=int(cfg.seconds * 1000) + 1000)
    gc.collect()
    gc.freeze()
    gc.disable()
    until = time.perf_counter_ns() + int(cfg.seconds * 1e9)
    PeriodicScheduler(PERIOD_NS).run(lambda start, lateness: None, flag=StopFlag(), until_ns=until,
                                     timer=timer)
    gc.enable()
    r = timer.report()
    r["sched"] = sched
    conn.send(r)


def _row(case: str, r: dict, seconds: float) -> dict:
    row = {"case": case, "seconds": seconds, "ticks": r.get("ticks", 0)}
    for k in KEYS:
        row[k] = r.get(k)
    row["overrun_fraction"] = round(float(r.get("overrun_fraction", 0.0)), 6)
    row["over_1500us_fraction"] = round(float(r.get("over_1500us_fraction", 0.0)), 6)
    row["skipped"] = r.get("skipped", 0)
    row["rtt_p99_us"] = r.get("rtt_p99_us")
    for k in ("compute_p50_us", "compute_p99_us", "pybullet_p50_us", "contact_p50_us", "tissue_p50_us"):
        if k in r:
            row[k] = r[k]
    if "sched" in r:
        row["sched"] = r["sched"]
    return row


def run(args) -> list[dict]:
    """Both cases; returns the JSON rows (empty, scene, ratio)."""
    from sim.runtime.config import RunConfig
    from sim.runtime.realtime import run_realtime

    seconds = float(args.seconds)
    base = dict(realtime_priority=not args.no_fifo, affinity=not args.no_affinity)
    cfg = RunConfig(seconds=seconds, **base)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_empty_main, args=(cfg, child), name="trocar-bench-empty")
    p.start()
    child.close()
    empty = parent.recv()
    p.join()
    rows = [_row("empty", empty, seconds)]

    tmp = tempfile.mkdtemp(prefix="trocar-bench-loop-")
    try:
        overrides = {} if args.tets is None else {"tissue_tets": args.tets}
        scfg = RunConfig(scene=args.scene, overrides=overrides, device=args.device,
                         display=args.display, seconds=seconds, record=os.path.join(tmp, "s.trec"),
                         rate_mode=getattr(args, "rate_mode", "realtime"), **base)
        summary = run_realtime(scfg, log=lambda line: None)
        if summary.get("error"):
            from sim.errors import UserError

            raise UserError(summary["error"])
        r = dict(summary["report"] or {})
        from sim.runtime.recording import read_recording

        rec = read_recording(scfg.record)
        r["sched"] = [n.get("line") for n in rec.notes if n.get("kind") == "sched"]
        row = _row("scene", r, seconds)
        row.update(scene=args.scene, tets=args.tets, device=args.device, display=args.display,
                   mode=summary.get("mode"), renderer_snapshots=summary["render"]["snapshots"])
        if "physics" in r:  # multirate: the figures above are the haptic servo's
            ph = r["physics"]
            row["physics_ticks"] = ph.get("ticks")
            row["physics_period_p50_us"] = ph.get("period_p50_us")
            row["physics_compute_p50_us"] = ph.get("compute_p50_us")
        rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratio = {"case": "ratio_scene_over_empty"}
    for k in ("period_p50_us", "period_p99_us", "period_p999_us", "period_max_us", "lateness_p99_us"):
        a, b = rows[0].get(k), rows[1].get(k)
        ratio[k] = round(b / a, 3) if a and b is not None else None
    rows.append(ratio)
    return rows
