"""`trocar bench env` and `trocar bench batch`: research API throughput, JSON lines.

bench env: per environment and observation mode (state, rgb): env steps per second (wall) and per
CPU second of this process (the per-core rate, less sensitive to a busy machine), the mean reset
time [s] (in place), and the lockstep real-time factor (simulated / wall time) of the steps.
bench batch: episodes per minute of short scripted episodes with 1 and 2 workers on each backend
(local processes, a local Ray), and the ratios 2 workers / 1 worker and Ray / local.
Every line carries the machine's CPU count and 1-minute load average: on a shared box the numbers
are what this process got, not what the code can do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from sim.errors import UserError


def _machine() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "loadavg_1min": round(os.getloadavg()[0], 2)}


def bench_env_one(env_id: str, mode: str, steps: int, resets: int, *, tets: int | None = None,
                  size: int = 128) -> dict:
    import gymnasium as gym

    import research.envs  # noqa: F401 - registers the environments

    kwargs = {"obs_mode": mode, "image_size": (size, size)}
    if tets is not None and "Retraction" in env_id:
        kwargs["tissue_tets"] = tets
    t0 = time.perf_counter()
    env = gym.make(env_id, **kwargs).unwrapped
    make_s = time.perf_counter() - t0
    try:
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))  # first-call costs out of the timing
        rng = np.random.default_rng(0)
        n, w0, c0 = 0, time.perf_counter(), time.process_time()
        while n < steps:
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            n += 1
            if term or trunc:
                env.reset(seed=n)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        reset_s = []
        for k in range(resets):
            env.reset(seed=100 + k)
            reset_s.append(env.last_reset_s)
            env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        return {"bench": "env", "env": env_id, "obs_mode": mode,
                "image_size": size if mode != "state" else None,
                "tissue_tets": len(env.scene.tissue.tets) if env.scene.tissue is not None else 0,
                "steps": steps, "control_period_s": env.control_period_s,
                "steps_per_s": round(steps / wall, 2), "steps_per_cpu_s": round(steps / max(cpu, 1e-9), 2),
                "lockstep_rtf": round(steps * env.control_period_s / wall, 3),
                "reset_s_mean": round(float(np.mean(reset_s)), 5),
                "reset_s_max": round(float(np.max(reset_s)), 5),
                "make_s": round(make_s, 2), **_machine()}
    finally:
        env.close()


def run_bench_env(args: argparse.Namespace) -> int:
    from research.envs import ENV_IDS

    if args.steps < 1 or args.resets < 1:
        raise UserError("--steps and --resets must be >= 1")
    envs = args.env or list(ENV_IDS)
    for e in envs:
        if e not in ENV_IDS:
            raise UserError(f"unknown environment {e!r}; known: {', '.join(ENV_IDS)}")
    for env_id in envs:
        for mode in args.modes:
            print(json.dumps(bench_env_one(env_id, mode, args.steps, args.resets, tets=args.tets,
                                           size=args.size)), flush=True)
    return 0


def bench_batch_one(backend: str, workers: int, episodes: int, max_s: float, procedure: str,
                    policy: str) -> dict:
    from benchmarks.batch_backends import Spec, make_backend

    with tempfile.TemporaryDirectory(prefix="trocar-bench-batch-") as out:
        spec = Spec(procedure, policy, out, max_s, 3600.0)
        t_start = time.perf_counter()
        b = make_backend(backend, spec, workers)
        start_s = time.perf_counter() - t_start
        done = []
        try:
            # one warm-up episode per worker: process start and imports are not episode throughput
            b.run([(10_000 + k, k) for k in range(workers)], lambda kind, ep, p: None)
            t0 = time.perf_counter()
            b.run([(i, i) for i in range(episodes)], lambda kind, ep, p: done.append(kind == "done"))
            wall = time.perf_counter() - t0
        finally:
            b.close()
    return {"bench": "batch", "backend": backend, "workers": workers, "episodes": episodes, "done": sum(done),
            "episode_sim_s": max_s, "procedure": procedure, "policy": policy, "wall_s": round(wall, 2),
            "backend_start_s": round(start_s, 2), "episodes_per_min": round(60.0 * sum(done) / wall, 2),
            **_machine()}


def run_bench_batch(args: argparse.Namespace) -> int:
    if args.episodes < 1 or args.max_seconds <= 0:
        raise UserError("--episodes must be >= 1 and --max-seconds > 0")
    rates = {}
    for backend in args.backends:
        for workers in (1, 2):
            row = bench_batch_one(backend, workers, args.episodes, args.max_seconds, args.procedure,
                                  args.policy)
            rates[(backend, workers)] = row["episodes_per_min"]
            print(json.dumps(row), flush=True)
    summary = {"bench": "batch_scaling", **_machine()}
    for backend in args.backends:
        summary[f"{backend}_2w_over_1w"] = round(rates[(backend, 2)] / max(rates[(backend, 1)], 1e-9), 3)
    if "ray" in args.backends and "local" in args.backends:
        for w in (1, 2):
            summary[f"ray_over_local_{w}w"] = round(rates[("ray", w)] / max(rates[("local", w)], 1e-9), 3)
    print(json.dumps(summary), flush=True)
    return 0


def register(bsub) -> None:
    e = bsub.add_parser("env", help="gymnasium environments: steps/s (state, rgb), reset time, lockstep RTF")
    e.add_argument("--env", action="append", help="environment id (repeatable; default all)")
    e.add_argument("--modes", nargs="+", choices=["state", "rgb", "rgbd"], default=["state", "rgb"])
    e.add_argument("--steps", type=int, default=30, help="timed env steps per case (default 30)")
    e.add_argument("--resets", type=int, default=5, help="timed resets per case (default 5)")
    e.add_argument("--tets", type=int, help="tissue tets of TissueRetraction (default: the scene's)")
    e.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    e.set_defaults(func=run_bench_env)
    b = bsub.add_parser("batch", help="batch scaling: episodes/min with 1 and 2 workers, local and Ray")
    b.add_argument("--procedure", default="peg_transfer")
    b.add_argument("--policy", default="expert")
    b.add_argument("--episodes", type=int, default=4, help="timed episodes per case (default 4)")
    b.add_argument("--max-seconds", type=float, default=3.0, help="simulated seconds per episode (default 3)")
    b.add_argument("--backends", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    b.set_defaults(func=run_bench_batch)
