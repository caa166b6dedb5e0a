"""Where batch episodes run: local worker processes or a Ray cluster. Both retry an episode once when
its worker crashes, raises or hangs, and report every such problem without stopping the others.

`Spec` is what every episode of a batch shares; a backend's `run(jobs, report)` runs jobs
[(episode, seed)] and calls report(kind, episode, payload) with kind 'done' (payload: the row),
'retry' (payload: why; the episode runs once more) or 'failed' (payload: why; given up).

Local: K spawned worker processes, each running episodes one after another (imports and Numba
kernels loaded once per worker). A worker that dies (its process sentinel fires) or runs one
episode past `timeout_s` is killed (by its own PID) and replaced.
Ray: `ray.init()` starts a small local instance (num_cpus = workers, no dashboard, a 80 MB object
store) unless an address is given (an existing cluster: its nodes need trocar installed and the out
directory shared). One task per episode, at most `workers` in flight; a task that fails (its worker
died: Ray raises on get) is retried once; one past `timeout_s` is cancelled (force) and retried once.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait

RAY_OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is ~75 MB; episodes return small rows
#: [s] a local worker's start-up (process spawn, imports) before its first episode's clock starts:
#: measured 15-30 s on a 2-core box at load 18, so it gets its own, generous allowance
STARTUP_S = 300.0


@dataclass(frozen=True)
class Spec:
    """What every episode of a batch shares: procedure, policy, out_dir, max_s (None: the procedure's
    cut-off), timeout_s: wall-clock limit of one episode before its worker counts as hung."""

    procedure: str
    policy: str
    out_dir: str
    max_s: float | None
    timeout_s: float


def _episode(spec: Spec, episode: int, seed: int, attempt: int) -> dict:
    from benchmarks.batch_episode import run_episode

    return run_episode(spec.procedure, spec.policy, seed, spec.out_dir, episode, max_s=spec.max_s,
                       attempt=attempt)


def _worker_main(conn, spec: Spec) -> None:
    """A local worker: episodes from conn until None; per episode ('start', None) once it begins,
    then ('ok', row) or ('error', text)."""
    import benchmarks.batch_episode  # noqa: F401 - imports before the first episode's clock starts

    while True:
        job = conn.recv()
        if job is None:
            return
        episode, seed, attempt = job
        conn.send(("start", None))
        try:
            conn.send(("ok", _episode(spec, episode, seed, attempt)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which retries the episode
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


class _Retrier:
    """Attempt bookkeeping shared by the backends: each episode runs at most twice."""

    def __init__(self, jobs, report) -> None:
        self.queue = deque((ep, seed, 1) for ep, seed in jobs)
        self.report = report

    def failed(self, job, why: str) -> None:
        ep, seed, attempt = job
        if attempt < 2:
            self.report("retry", ep, why)
            self.queue.append((ep, seed, attempt + 1))
        else:
            self.report("failed", ep, why)


class _Worker:
    def __init__(self, ctx, spec: Spec) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()
        self.job = None
        self.started = 0.0
        self.begun = False  # the current episode has started (the worker sent 'start')

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()  # our own child, by its PID
        self.proc.join(5)
        self.conn.close()


class LocalBackend:
    """K worker processes on this machine (see the module docstring)."""

    name = "local"

    def __init__(self, spec: Spec, workers: int) -> None:
        import multiprocessing as mp

        self.spec = spec
        self.n = max(1, int(workers))
        self.ctx = mp.get_context("spawn")  # no inherited PyBullet clients, Numba threads or locks
        self.workers: list[_Worker] = []

    def run(self, jobs, report) -> None:
        """Run jobs to the end (workers stay up for another run; `close()` ends them, busy or not)."""
        r = _Retrier(jobs, report)
        while r.queue or any(w.job for w in self.workers):
            while r.queue and (len(self.workers) < self.n or any(w.job is None for w in self.workers)):
                idle = next((w for w in self.workers if w.job is None), None)
                if idle is None:
                    idle = _Worker(self.ctx, self.spec)
                    self.workers.append(idle)
                idle.job = r.queue.popleft()
                idle.started = time.monotonic()
                idle.begun = False
                idle.conn.send(idle.job)
            busy = [w for w in self.workers if w.job]
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.5)
            for w in busy:
                self._check(w, r)

    def _check(self, w: _Worker, r: _Retrier) -> None:
        if w.conn.poll():
            try:
                kind, payload = w.conn.recv()
            except (EOFError, OSError):
                kind, payload = "crash", None
            if kind == "start":  # the worker is up (imports done): the episode's clock starts now
                w.started = time.monotonic()
                w.begun = True
                return
            if kind == "ok":
                w.job = None
                r.report("done", payload["episode"], payload)
                return
            if kind == "error":
                job, w.job = w.job, None
                r.failed(job, f"episode raised: {payload.strip().splitlines()[0]}")
                return
        if not w.proc.is_alive():
            job = w.job
            self._replace(w)
            r.failed(job, f"worker crashed (exit code {w.proc.exitcode})")
        elif time.monotonic() - w.started > self.spec.timeout_s + (0.0 if w.begun else STARTUP_S):
            job = w.job
            self._replace(w)
            r.failed(job, f"worker hung (no result after {self.spec.timeout_s:g} s): killed")

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers[self.workers.index(w)] = fresh = _Worker(self.ctx, self.spec)
        fresh.job = None
        w.job = None

    def close(self) -> None:
        for w in self.workers:
            if w.job is None and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
                w.proc.join(5)
            w.kill()
        self.workers = []


class RayBackend:
    """Episodes as Ray tasks (see the module docstring)."""

    name = "ray"

    def __init__(self, spec: Spec, workers: int, address: str | None = None) -> None:
        import ray

        self.ray = ray
        self.spec = spec
        self.n = max(1, int(workers))
        self.started_ray = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                # the local workers must import this checkout's packages: the raylet and its workers
                # inherit the driver's environment
                root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                path = os.environ.get("PYTHONPATH", "")
                if root not in path.split(os.pathsep):
                    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
                ray.init(num_cpus=self.n, include_dashboard=False, object_store_memory=RAY_OBJECT_STORE_BYTES,
                         log_to_driver=False, configure_logging=False)
            self.started_ray = True
        self.task = ray.remote(num_cpus=1, max_retries=0)(_episode)
        self.address = ray.get_runtime_context().gcs_address

    def run(self, jobs, report) -> None:
        ray = self.ray
        r = _Retrier(jobs, report)
        inflight: dict = {}  # ref -> (job, submitted)
        try:
            while r.queue or inflight:
                while r.queue and len(inflight) < self.n:
                    job = r.queue.popleft()
                    inflight[self.task.remote(self.spec, *job)] = (job, time.monotonic())
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                for ref in ready:
                    job, _t = inflight.pop(ref)
                    try:
                        row = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        r.failed(job, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
                        continue
                    report("done", row["episode"], row)
                now = time.monotonic()
                for ref, (job, t) in list(inflight.items()):
                    if now - t > self.spec.timeout_s:
                        ray.cancel(ref, force=True)
                        del inflight[ref]
                        r.failed(job, f"task hung (no result after {self.spec.timeout_s:g} s): cancelled")
        finally:
            for ref in inflight:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_ray:
            self.ray.shutdown()


def make_backend(name: str, spec: Spec, workers: int, address: str | None = None):
    if name == "ray":
        return RayBackend(spec, workers, address)
    return LocalBackend(spec, workers)

