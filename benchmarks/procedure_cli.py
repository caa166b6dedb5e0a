"""`trocar bench procedure NAME` and `trocar bench validity NAME`: scripted attempts in lockstep.

bench procedure: one expert attempt, headless, one core: the lockstep real-time factor (simulated /
wall time, whole step including the scripted hands and the procedure), the procedure's update cost
per tick [us] (mean, p99; target <= 20 us mean), ticks, score. One JSON line.

bench validity: construct validity in silico: both policies over seeds 0..episodes-1 (a process pool
of --workers), per metric the mean and SD of each group and Cohen's d (novice minus expert, pooled
SD), whether it separates in the right direction with |d| > 1, and the share of attempts meeting
proficiency per group (expert >= 90 %, novice <= 10 % expected). JSON lines: one per metric, one
summary; without --json also a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from sim.errors import UserError

D_MIN = 1.0  # |Cohen's d| a metric must exceed
EXPERT_PASS_MIN, NOVICE_PASS_MAX = 0.9, 0.1


def _attempt(job: tuple[str, str, int]) -> dict:
    from sim.runtime.procedure_session import play

    procedure, policy, seed = job
    result, stats = play(policy, seed, procedure=procedure)
    return {
        "policy": policy,
        "seed": seed,
        "result": result.to_dict(),
        "rtf": stats.rtf,
        "update_us": {
            "mean": round(stats.update_us_mean, 2),
            "median": round(stats.update_us_median, 2),
            "p99": round(stats.update_us_p99, 1),
            "mean_unpreempted": round(stats.update_us_mean_unpreempted, 2),
        },
        "wall_s": stats.wall_s,
    }


def _check_procedure(name: str) -> None:
    from procedures.registry import PROCEDURES

    if name not in PROCEDURES:
        raise UserError(f"unknown procedure {name!r}; known: {', '.join(PROCEDURES)}")


def run_procedure(args: argparse.Namespace) -> int:
    _check_procedure(args.procedure)
    if args.seed < 0:
        raise UserError("--seed must be >= 0")
    row = _attempt((args.procedure, args.policy, args.seed))
    r = row["result"]
    out = {
        "bench": "procedure",
        "procedure": args.procedure,
        "policy": args.policy,
        "seed": args.seed,
        "status": r["status"],
        "score": r["score"],
        "duration_s": r["duration_s"],
        "ticks": int(round(r["duration_s"] * 1000)),
        "wall_s": round(row["wall_s"], 2),
        "lockstep_rtf": round(row["rtf"], 3),
        "update_us": row["update_us"],
        "update_target_us": 20.0,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    if not args.json:
        print(
            f"{args.procedure} by the {args.policy}: {r['status']}, {r['duration_s']} s, score {r['score']}; "
            f"lockstep {out['lockstep_rtf']}x real time; procedure update {row['update_us']['mean']} us/tick"
        )
    return 0


def validity_table(rows: list[dict]) -> tuple[list[dict], dict]:
    """Per-metric statistics and the summary from attempt rows (see the module docstring)."""
    from procedures.metrics import cohens_d

    rows = sorted(rows, key=lambda r: (r["policy"], r["seed"]))
    groups = {p: [r["result"] for r in rows if r["policy"] == p] for p in ("expert", "novice")}
    names = list(groups["expert"][0]["metrics"]) if groups["expert"] else []
    table = []
    for name in names:
        vals = {
            p: np.array(
                [g["metrics"][name]["value"] for g in groups[p] if g["metrics"][name]["value"] is not None],
                float,
            )
            for p in groups
        }
        meta = groups["expert"][0]["metrics"][name]
        d = cohens_d(vals["expert"], vals["novice"]) if all(len(v) for v in vals.values()) else float("nan")
        want = 1.0 if meta["better"] == "lower" else -1.0  # novices should be worse
        row = {"bench": "validity_metric", "metric": name, "unit": meta["unit"], "better": meta["better"]}
        for p, v in vals.items():
            row[f"{p}_mean"] = round(float(v.mean()), 4) if len(v) else None
            row[f"{p}_sd"] = round(float(v.std(ddof=1)), 4) if len(v) > 1 else None
        row["cohens_d"] = round(d, 3) if np.isfinite(d) else (None if np.isnan(d) else str(d))
        row["separates"] = bool(np.isfinite(d) or np.isinf(d)) and want * d > D_MIN
        table.append(row)
    pass_rate = {p: (float(np.mean([g["passed"] for g in groups[p]])) if groups[p] else None) for p in groups}
    summary = {
        "bench": "validity",
        "episodes": {p: len(g) for p, g in groups.items()},
        "expert_pass_rate": pass_rate["expert"],
        "novice_pass_rate": pass_rate["novice"],
        "metrics_separating": sum(r["separates"] for r in table),
        "metrics": len(table),
        "all_separate": all(r["separates"] for r in table),
        "proficiency_ok": (
            pass_rate["expert"] is not None
            and pass_rate["expert"] >= EXPERT_PASS_MIN
            and pass_rate["novice"] <= NOVICE_PASS_MAX
        ),
    }
    return table, summary


def run_validity(args: argparse.Namespace) -> int:
    _check_procedure(args.procedure)
    if args.episodes < 2 or args.workers < 1:
        raise UserError("--episodes >= 2 and --workers >= 1 are required")
    jobs = [(args.procedure, p, s) for s in range(args.episodes) for p in ("expert", "novice")]
    t0 = time.perf_counter()
    rows = []

    def done(row: dict) -> None:  # one line per attempt as it finishes: long runs show progress
        rows.append(row)
        r = row["result"]
        print(json.dumps({"bench": "validity_attempt", "policy": row["policy"], "seed": row["seed"],
                          "status": r["status"], "passed": r["passed"], "duration_s": r["duration_s"],
                          "score": r["score"], "wall_s": round(row["wall_s"], 1),
                          "metrics": {k: m["value"] for k, m in r["metrics"].items()}}), flush=True)

    if args.workers == 1:
        for j in jobs:
            done(_attempt(j))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            for row in pool.imap_unordered(_attempt, jobs, chunksize=1):
                done(row)
    table, summary = validity_table(rows)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["workers"] = args.workers
    summary["sim_s"] = {
        p: round(float(np.mean([r["result"]["duration_s"] for r in rows if r["policy"] == p])), 2)
        for p in ("expert", "novice")
    }
    for row in table:
        print(json.dumps(row))
    print(json.dumps(summary))
    if not args.json:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{args.procedure}: expert vs novice, {args.episodes} seeds each")
        for col in ("metric", "unit", "expert mean (SD)", "novice mean (SD)", "Cohen's d", "separates"):
            t.add_column(col)
        for r in table:
            t.add_row(
                r["metric"],
                r["unit"],
                f"{r['expert_mean']} ({r['expert_sd']})",
                f"{r['novice_mean']} ({r['novice_sd']})",
                str(r["cohens_d"]),
                "yes" if r["separates"] else "NO",
            )
        Console().print(t)
        rates = summary["expert_pass_rate"], summary["novice_pass_rate"]
        print(f"proficiency met: expert {rates[0]:.0%}, novice {rates[1]:.0%}")
    return 0


def register(sub, bsub) -> None:
    """Add `trocar bench procedure` and `trocar bench validity`."""
    from procedures.policies import POLICIES

    b = bsub.add_parser(
        "procedure", help="one scripted attempt in lockstep: real-time factor, procedure cost"
    )
    b.add_argument("procedure", help="procedure name (peg_transfer)")
    b.add_argument(
        "--policy", choices=sorted(POLICIES), default="expert", help="scripted hands (default expert)"
    )
    b.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    b.add_argument("--json", action="store_true", help="JSON line only")
    b.set_defaults(func=run_procedure)
    v = bsub.add_parser("validity", help="expert vs novice policies over seeds: metrics, Cohen's d")
    v.add_argument("procedure", help="procedure name (peg_transfer)")
    v.add_argument("--episodes", type=int, default=20, help="seeds per policy (default 20)")
    v.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="parallel processes (default: 2 or the CPU count if fewer)",
    )
    v.add_argument("--json", action="store_true", help="JSON lines only")
    v.set_defaults(func=run_validity)
