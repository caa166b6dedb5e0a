"""`trocar bench cut`: a scripted cutting sequence across the default scene's 5k pad.

Each run ticks the default scene (lockstep, tools held above the pad) through the same script twice:
once with `SNIPS` snips of a vertical blade that extend one continuous cut across the pad (one
every `--every` ticks, each 13 mm long and overlapping the last by 1 mm, through the whole
thickness: the pad ends in two bodies, each clamped at the bottom), and once without cutting. It
prints one JSON line per run and a summary:

- tick median / p99 / max [us] over the ticks from the first snip to the end, with and without
  cutting, their ratio (target: p99 <= 1.5x, no tick over 5 ms), and each snip tick's time;
- the new boundary's distance to the swept blade surface [mm] (max, mean over the nodes of each
  snip's separated faces, at the snip tick, to the union of the snips so far);
- mass and volume change of the pad [%];
- the sag error after the cut [%]: the settled pad's displacement against the converged linear FEM
  of the cut mesh (`sim.tissue_model.linear_static`), max |u - u_ref| / max |u_ref|;
- whether it fell into two bodies, tissue resets (must be 0), the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from sim.errors import UserError

SNIPS = 6
SNIP_LENGTH = 0.013  # [m] along y, each snip 1 mm into the last
CUT_X = 0.0013  # [m]: the cut plane x = 1.3 mm (between node planes of the 5k pad)


def _blade(k: int):
    from sim.cutting import quad_blade

    y0 = -0.035 + k * (SNIP_LENGTH - 0.001)
    y1 = y0 + SNIP_LENGTH
    return quad_blade((CUT_X, y0, -0.01), (CUT_X, y1, -0.01), (CUT_X, y1, 0.03), (CUT_X, y0, 0.03),
                      direction=(0.0, 1.0, 0.0))


def _session(tets: int, every: int, settle: int, cutting: bool) -> dict:
    from sim.cutting import Blade
    from sim.runtime.step import SessionStep
    from sim.scene import build_scene

    out: dict = {"ticks": [], "snip_us": [], "dist_mm": [], "resets": 0}
    with build_scene("default", tissue_tets=tets) as scene:
        control = scene.hold_control()
        step = SessionStep(scene, [], checksum_every=0)
        for _ in range(200):  # settle under gravity before timing
            step.step(0, control=control)
        v0, m0 = float(scene.tissue.volume.sum()), float(scene.tissue.mass.sum())
        total = SNIPS * every + settle
        times = np.empty(total)
        for i in range(total):
            t0 = time.perf_counter_ns()
            if cutting and i % every == 0 and i // every < SNIPS:
                change = scene.cut(_blade(i // every))
                if change is not None:
                    # Against the surface the blade swept so far (all snips): a face joining the
                    # last snip's crack front lies on the earlier snip, off this one's edge.
                    swept = Blade(np.concatenate([_blade(k).triangles for k in range(i // every + 1)]),
                                  (0.0, 1.0, 0.0))
                    pts = change.state.x[np.unique(change.faces.reshape(-1))]
                    out["dist_mm"].extend((swept.distances(pts) * 1e3).tolist())
            step.step(t0, control=control)
            t1 = time.perf_counter_ns()
            times[i] = (t1 - t0) * 1e-3
            if cutting and i % every == 0 and i // every < SNIPS:
                out["snip_us"].append(round(times[i], 1))
        out["ticks"] = times
        out["resets"] = sum(e.kind == "tissue_reset" for e in scene.events)
        out["cuts"] = sum(e.kind == "cut" for e in scene.events)
        model, state = scene.tissue, scene.tissue_state
        out["volume_pct"] = 100.0 * (float(model.volume.sum()) / v0 - 1.0)
        out["mass_pct"] = 100.0 * (float(model.mass.sum()) / m0 - 1.0)
        out["nodes"] = model.node_count
        out["bodies"] = _bodies(model)
        if cutting:
            from sim.tissue_model import linear_static

            u = state.x - model.rest
            ref = linear_static(model)
            out["sag_error_pct"] = 100.0 * float(np.abs(u - ref).max() / np.abs(ref).max())
            out["sag_mm"] = float(-ref[:, 2].min() * 1e3)
            out["max_speed"] = float(state.max_speed)
    return out


def _bodies(model) -> int:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    t = model.tets[model.volume > 0]
    r = np.repeat(t, 4, axis=1).ravel()
    c = np.tile(t, (1, 4)).ravel()
    g = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(model.node_count,) * 2)
    _, lab = connected_components(g, directed=False)
    return int(np.unique(lab[t[:, 0]]).size)


def run_once(tets: int, every: int, settle: int) -> dict:
    from sim import tissue_topology
    from sim.tissue import warmup

    warmup()
    tissue_topology.warmup()  # the bench's scene has no scissors, so the scene does not do it
    load0 = os.getloadavg()[0]
    cut = _session(tets, every, settle, True)
    base = _session(tets, every, settle, False)
    a, b = cut["ticks"], base["ticks"]

    def stats(t):
        return (round(float(np.median(t)), 1), round(float(np.percentile(t, 99)), 1),
                round(float(t.max()), 1))

    (cm, cp, cx), (bm, bp, bx) = stats(a), stats(b)
    d = np.array(cut["dist_mm"]) if cut["dist_mm"] else np.zeros(1)
    return {
        "bench": "cut", "tets": tets, "snips": SNIPS, "cuts": cut["cuts"], "ticks": int(a.size),
        "cut_median_us": cm, "cut_p99_us": cp, "cut_max_us": cx,
        "nocut_median_us": bm, "nocut_p99_us": bp, "nocut_max_us": bx,
        "p99_ratio": round(cp / bp, 3), "median_ratio": round(cm / bm, 3),
        "ticks_over_5ms": int(np.sum(a > 5000.0)), "nocut_ticks_over_5ms": int(np.sum(b > 5000.0)),
        "snip_tick_us": cut["snip_us"],
        "boundary_to_blade_max_mm": round(float(d.max()), 6),
        "boundary_to_blade_mean_mm": round(float(d.mean()), 6),
        "volume_change_pct": round(cut["volume_pct"], 4), "mass_change_pct": round(cut["mass_pct"], 4),
        "sag_error_pct": round(cut["sag_error_pct"], 3), "sag_mm": round(cut["sag_mm"], 4),
        "settled_max_speed_m_s": cut["max_speed"],
        "bodies_after": cut["bodies"], "nodes_after": cut["nodes"], "tissue_resets": cut["resets"],
        "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def run(args: argparse.Namespace) -> int:
    if args.tets < 6 or args.repeats < 1 or args.every < 1 or args.settle < 1:
        raise UserError("--tets >= 6, --repeats >= 1, --every >= 1 and --settle >= 1 are required")
    rows = []
    for _ in range(args.repeats):
        row = run_once(args.tets, args.every, args.settle)
        rows.append(row)
        print(json.dumps(row), flush=True)
    med = {k: round(float(np.median([r[k] for r in rows])), 3) for k in (
        "cut_median_us", "cut_p99_us", "cut_max_us", "nocut_median_us", "nocut_p99_us", "p99_ratio",
        "boundary_to_blade_max_mm", "volume_change_pct", "sag_error_pct")}
    print(json.dumps({"bench": "cut_summary", "runs": len(rows), **{f"{k}_median": v for k, v in med.items()},
                      "targets": {"p99_ratio": 1.5, "max_tick_us": 5000, "boundary_mm": 1.0,
                                  "volume_pct": 0.5, "sag_error_pct": 2.0}}))
    return 0


def register(sub, bsub) -> None:
    """Add `trocar bench cut`."""
    b = bsub.add_parser("cut", help="scripted cut across the 5k pad: tick cost, boundary, volume, sag")
    b.add_argument("--tets", type=int, default=5000, help="approximate tissue tet count (default 5000)")
    b.add_argument("--every", type=int, default=500, help="ticks between snips (default 500)")
    b.add_argument("--settle", type=int, default=1000, help="ticks after the last snip (default 1000)")
    b.add_argument("--repeats", type=int, default=1, help="runs (default 1)")
    b.set_defaults(func=run)
