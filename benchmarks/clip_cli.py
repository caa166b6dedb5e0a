"""`trocar bench clip`: what a clip costs the tissue tick, and whether it holds.

A 20 mm duct (outer/inner radius 1.5/0.8 mm, 1,440 tets, ends clamped) under a clip applier whose
port is straight above its middle, in the full scene tick (lockstep, one tool): the applier comes
down around the duct, closes (a clip fires), opens and withdraws; the duct rests 0.3 s, then its
clamped ends are lifted 5 mm in 0.5 s and it settles 0.3 s. The peer is the same run with the
applier kept open above the duct (no clip), in the same process. Per phase (clipping: from the
squeeze to the withdrawal; rest; lift; settle): element passes per tick (mean, max) and tick time
(median, p99) [us]; the clip's result: lumen area left at the clip [% of open], the lumen walls'
largest distance from the clip's mid-plane [mm], how far the clip and the duct's middle went up
[mm]. Summary: the clipped/unclipped ratio of tick medians and of passes in the rest and lift
phases, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from sim.errors import UserError

PHASES = ("clipping", "rest", "lift", "settle")


def _run(clip: bool) -> dict:
    from sim import instruments as inst
    from sim.clips import lumen_area, wall_gap
    from sim.eased_move import eased_move
    from sim.ports import Port
    from sim.scene import Scene, SceneControl
    from sim.scene_build import SceneConfig
    from sim.tissue_bodies import TubeBody
    from sim.tool_scene import ToolSetup

    tube = TubeBody(length=0.02, cells=(12, 1, 20), start=(-0.01, 0.0, 0.02))
    scene = Scene(SceneConfig(tools=(ToolSetup(inst.CLIP_APPLIER, Port((0.0, 0.0, 0.25)), depth=0.2),),
                              tissue_tets=1, body=tube))
    try:
        dt = scene.dt
        info = scene.body_info
        state = scene.tissue_state
        open_area = lumen_area(state.x, info, 0.01)
        control = SceneControl(np.array([[0.0, 0.0, 0.04, 0.0]]), np.array([0.7]))
        passes: dict[str, list[int]] = {p: [] for p in PHASES}
        ticks: dict[str, list[float]] = {p: [] for p in PHASES}

        def tick(phase: str | None) -> None:
            t0 = time.perf_counter_ns()
            scene.tick(control, dt)
            if phase is not None:
                ticks[phase].append((time.perf_counter_ns() - t0) / 1e3)
                passes[phase].append(state.evaluations)

        def move(to, jaw, seconds, phase=None):
            for _ in eased_move(control, 0, to, int(round(seconds / dt)), jaw):
                tick(phase)

        z_grip = 0.0165 if clip else 0.05
        move((0.0, 0.0, 0.04), 0.7, 0.2)
        move((0.0, 0.0, z_grip), 0.7, 0.4)
        move((0.0, 0.0, z_grip), 0.0 if clip else 0.7, 0.2, "clipping")
        move((0.0, 0.0, z_grip), 0.7, 0.1, "clipping")
        move((0.0, 0.0, 0.05), 0.7, 0.3, "clipping")
        move((0.0, 0.0, 0.05), 0.7, 0.3, "rest")
        clips = scene.injury.clips
        mid = np.flatnonzero(np.abs(info.axial - 0.01) < 1e-9)
        z_mid = state.x[mid, 2].mean()
        z_clip = clips.pos[0, 2]
        x0 = scene.tissue.rest[:, 0]
        ends = np.flatnonzero(scene.tissue.fixed & ((x0 < x0.min() + 1e-9) | (x0 > x0.max() - 1e-9)))
        for _ in range(500):
            state.x[ends, 2] += 0.01 * dt
            tick("lift")
        move((0.0, 0.0, 0.05), 0.7, 0.3, "settle")
        out = {"bench": "clip", "clipped": bool(clips.n_clips), "tets": scene.tissue.tet_count,
               "resets": sum(e.kind == "tissue_reset" for e in scene.events)}
        for p in PHASES:
            ev, us = np.array(passes[p]), np.array(ticks[p])
            out[p] = {"passes_mean": round(float(ev.mean()), 2), "passes_max": int(ev.max()),
                      "tick_median_us": round(float(np.median(us)), 1),
                      "tick_p99_us": round(float(np.percentile(us, 99)), 1)}
        out["middle_lift_mm"] = round(float(state.x[mid, 2].mean() - z_mid) * 1e3, 2)
        if clips.n_clips:
            along = clips.records()[0]["along"]
            out["lumen_left_pct"] = round(100.0 * lumen_area(state.x, info, along) / open_area, 2)
            out["wall_gap_mm"] = round(wall_gap(state.x, clips, info, 0) * 1e3, 3)
            out["clip_lift_mm"] = round(float(clips.pos[0, 2] - z_clip) * 1e3, 2)
        return out
    finally:
        scene.close()


def run_clip(args: argparse.Namespace) -> int:
    if not 1 <= args.repeats <= 20:
        raise UserError("--repeats must be 1-20")
    rows = {True: [], False: []}
    for _ in range(args.repeats):
        for clip in (True, False):
            row = _run(clip)
            rows[clip].append(row)
            print(json.dumps(row), flush=True)

    def med(clip, phase, key):
        return float(np.median([r[phase][key] for r in rows[clip]]))

    summary = {"bench": "clip_summary", "runs": args.repeats}
    for p in ("rest", "lift"):
        for key, name in (("tick_median_us", "tick"), ("passes_mean", "passes")):
            summary[f"{p}_{name}_ratio"] = round(med(True, p, key) / med(False, p, key), 2)
    summary.update({"middle_lift_mm": float(np.median([r["middle_lift_mm"] for r in rows[True]])),
                    "machine": platform.machine(), "cpus": os.cpu_count(),
                    "loadavg_1min": round(os.getloadavg()[0], 2)})
    print(json.dumps(summary))
    return 0


def register(sub, bsub) -> None:
    """Add `trocar bench clip`."""
    b = bsub.add_parser("clip", help="a clipped duct lifted by its ends: passes and tick time vs "
                        "unclipped (JSON)")
    b.add_argument("--repeats", type=int, default=1, help="runs of each (default 1)")
    b.set_defaults(func=run_clip)
