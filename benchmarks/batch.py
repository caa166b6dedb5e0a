"""`trocar batch PROCEDURE --policy P --episodes N --seed S --workers K --backend local|ray --out DIR`.

Episode i (seed S + i) is one lockstep run (benchmarks.batch_episode) on a local worker process or a
Ray task (benchmarks.batch_backends); a rich progress bar counts them. At the end DIR holds
results.parquet, summary.json and plots.png (benchmarks.batch_report) and the summary table is
printed. DIR/batch.json records the batch's settings; running the same command again (after an
interruption, or with a larger --episodes) skips the episodes already done. A worker that crashes
or hangs is reported and its episode retried once; an episode that fails twice is reported and left
out (exit status 1), the others are kept.
"""

from __future__ import annotations

import argparse
import json
import os

from sim.errors import UserError

BACKENDS = ("local", "ray")
DEFAULT_TIMEOUT_S = 3600.0  # [s] wall time of one episode before its worker counts as hung
SETTINGS = ("procedure", "policy", "seed", "max_seconds")


def _validate(args: argparse.Namespace) -> None:
    from procedures.registry import PROCEDURES
    from research.policies import check_policy

    if args.procedure not in PROCEDURES:
        raise UserError(f"unknown procedure {args.procedure!r}; known: {', '.join(PROCEDURES)}")
    try:
        check_policy(args.policy)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.episodes < 1:
        raise UserError("--episodes must be >= 1")
    if args.workers < 1:
        raise UserError("--workers must be >= 1")
    if args.seed < 0:
        raise UserError("--seed must be >= 0")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise UserError("--max-seconds must be > 0")
    if args.episode_timeout <= 0:
        raise UserError("--episode-timeout must be > 0")
    if args.address and args.backend != "ray":
        raise UserError("--address needs --backend ray")
    if args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--backend ray needs Ray (pip install ray)") from None


def _settings(args: argparse.Namespace) -> dict:
    return {"procedure": args.procedure, "policy": args.policy, "seed": args.seed,
            "max_seconds": args.max_seconds}


def _prepare(out: str, settings: dict) -> None:
    """Create DIR, or check that it holds a batch with the same settings (then it resumes)."""
    path = os.path.join(out, "batch.json")
    if os.path.exists(path):
        with open(path) as fh:
            old = json.load(fh)
        diff = [k for k in SETTINGS if old.get(k) != settings[k]]
        if diff:
            raise UserError(f"{out} holds a batch with other settings ({', '.join(diff)}); use another --out")
        return
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f"--out {out}: exists and is not an empty directory or a batch")
    os.makedirs(os.path.join(out, "episodes"), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(settings, fh, indent=1)


def run_batch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from benchmarks.batch_backends import Spec, make_backend
    from benchmarks.batch_report import load_rows, write_report

    _validate(args)
    out = os.path.abspath(args.out)
    _prepare(out, _settings(args))
    os.makedirs(os.path.join(out, "episodes"), exist_ok=True)
    done = {r["episode"] for r in load_rows(out)}
    jobs = [(i, args.seed + i) for i in range(args.episodes) if i not in done]
    console = Console(stderr=True)
    if done:
        console.print(f"batch: resuming: {len(done)} episodes done, {len(jobs)} to run")
    spec = Spec(args.procedure, args.policy, out, args.max_seconds, args.episode_timeout)
    failed: dict[int, str] = {}
    title = f"{args.procedure} / {args.policy}"
    if jobs:
        backend = make_backend(args.backend, spec, args.workers, args.address)
        where = f"ray at {backend.address}" if args.backend == "ray" else f"{args.workers} local workers"
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=False) as bar:
                task = bar.add_task(f"{title} ({where})", total=args.episodes, completed=len(done))

                def report(kind: str, episode: int, payload) -> None:
                    if kind == "done":
                        bar.advance(task)
                    elif kind == "retry":
                        console.print(f"batch: episode {episode}: {payload}; retrying once")
                    else:
                        failed[episode] = payload
                        console.print(f"batch: episode {episode} FAILED twice: {payload}")
                        bar.advance(task)

                backend.run(jobs, report)
        except KeyboardInterrupt:
            n = len(load_rows(out))
            console.print(f"batch: interrupted: {n}/{args.episodes} episodes done; "
                          "run the same command to resume")
            return 130
        finally:
            backend.close()
    summary = write_report(out, title, console=Console())
    print(json.dumps({"batch": out, "episodes": summary["episodes"], "failed": sorted(failed),
                      "results": os.path.join(out, "results.parquet")}))
    return 1 if failed else 0


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("procedure", help="procedure name (e.g. peg_transfer)")
    p.add_argument("--policy", default="expert",
                   help="expert | novice | random | module:function (default expert)")
    p.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of episode 0; episode i gets seed + i")
    p.add_argument("--workers", type=int, default=1, help="episodes at once (default 1)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="local processes or Ray")
    p.add_argument("--address", help="an existing Ray cluster's address (default: start a local Ray)")
    p.add_argument("--max-seconds", type=float, help="simulated time limit per episode [s] (default: the "
                   "procedure's cut-off)")
    p.add_argument("--episode-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="wall time [s] after which an episode's worker counts as hung "
                   f"(default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--out", required=True, help="output directory (created; an existing batch resumes)")


def register(sub, bsub) -> None:
    """Add `batch`, `bench env` and `bench batch`."""
    b = sub.add_parser("batch", help="run a procedure headless over many seeded episodes (local or Ray)")
    add_batch_arguments(b)
    b.set_defaults(func=run_batch)
    from benchmarks.env_bench import register as register_bench

    register_bench(bsub)
