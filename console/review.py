"""Review: a stored attempt replayed in the page from its recording, frames rendered on demand.

A review process per opened recording (`review_main`) rebuilds the session from the recording's
META exactly as `trocar replay` does (`sim.runtime.lockstep.build_session`, the one `SessionStep`,
the recorded targets and jaws fed as control), steps forward to the asked time and renders the
snapshot with the console's `FrameRenderer`. Going back rebuilds the session and steps again from
the start (no keyframes yet). Attempts are named by their records id; recordings in the console's
recordings folder also by file name, checked against a strict pattern and resolved inside the folder.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import threading
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.guard import current_user, may_see_trainee, page_user, records, render, require_instructor

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.trec$")
MAX_WORKERS = 4  # review processes kept open at once (each holds a scene and a GL context)


def review_main(path: str, conn) -> None:
    """The review process: answer ('frame', t) with a packed frame at recorded time t [s]."""
    import numpy as np

    from console.frames import FrameRenderer, pack, snapshot_header
    from sim.runtime.config import RunConfig
    from sim.runtime.lockstep import build_session
    from sim.runtime.recording import read_recording
    from sim.runtime.step import SessionStep
    from sim.scene import SceneControl

    rec = read_recording(path)
    meta = rec.meta
    cfg = RunConfig(scene=meta.get("procedure") or meta["scene"], overrides=meta.get("overrides", {}),
                    seed=int(meta.get("seed", 0)), scale=float(meta.get("config", {}).get("scale", 1.5)))
    ticks = rec.ticks
    state: dict = {}

    def fresh() -> None:
        if "scene" in state:
            state["scene"].close()
        scene, procedure, hands = build_session(cfg, int(meta.get("n_hands", 1)))
        state.update(scene=scene, step=SessionStep(scene, hands, procedure=procedure, checksum_every=0),
                     row=0, control=SceneControl(np.zeros((scene.n_tools, 4)), np.zeros(scene.n_tools)))

    fresh()
    renderer = FrameRenderer(state["scene"].describe())
    dt = state["scene"].dt
    try:
        while True:
            try:
                kind, t = conn.recv()
            except (EOFError, OSError):
                break
            target = int(min(max(float(t), 0.0) / dt, max(len(ticks) - 1, 0)))
            if target < state["row"] - 1:
                fresh()
            step, control = state["step"], state["control"]
            while state["row"] <= target and state["row"] < len(ticks):
                row = ticks[state["row"]]
                control.targets[:] = row["targets"]
                control.jaws[:] = row["jaws"]
                step.step(0, control=control)
                state["row"] += 1
            snap = step.snapshot()
            header = snapshot_header(snap)
            header.update(t=round(state["row"] * dt, 3), duration=round(len(ticks) * dt, 3))
            conn.send_bytes(pack(header, renderer.jpeg(snap)))
    finally:
        renderer.close()
        state["scene"].close()


class ReviewWorker:
    """A review process and its pipe; `frame(t)` is called from the server's worker threads."""

    def __init__(self, path: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=review_main, args=(path, child), daemon=True, name="trocar-review")
        self.proc.start()
        child.close()
        self.lock = threading.Lock()

    def frame(self, t: float) -> bytes:
        with self.lock:
            self.conn.send(("frame", t))
            if not self.conn.poll(120):
                raise TimeoutError("review process did not answer")
            return self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()


def _worker(app, path: str) -> ReviewWorker:
    workers: dict = app.state.config.state.setdefault("reviews", {})
    w = workers.get(path)
    if w is None or not w.proc.is_alive():
        while len(workers) >= MAX_WORKERS:
            workers.pop(next(iter(workers))).close()
        w = workers[path] = ReviewWorker(path)
    return w


def _attempt(request: Request, user) -> tuple[dict, str]:
    """(attempt row as dict, recording path) of the attempt in the URL, checked for this user."""
    try:
        aid = int(request.path_params["attempt"])
    except ValueError:
        raise HTTPException(404, "no such attempt") from None
    conn = records(request)
    try:
        row = conn.execute("SELECT * FROM attempts WHERE id = ?", (aid,)).fetchone()
    finally:
        conn.close()
    if row is None or not may_see_trainee(user, row["trainee_id"]):
        raise HTTPException(404, "no such attempt")  # 404, not 403: ids of others stay unknown
    path = row["recording_path"]
    if not path or not Path(path).is_file():
        raise HTTPException(404, "the attempt's recording is not on this machine")
    return dict(row), path


def _named(request: Request, user) -> str:
    require_instructor(user)
    folder = request.app.state.config.recordings
    name = request.path_params["name"]
    if not folder or not _NAME.match(name):
        raise HTTPException(404, "no such recording")
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        raise HTTPException(404, "no such recording")
    return str(path)


def timeline(path: str, result: dict | None) -> dict:
    """Events (recorded scene events and the result's errors) and metrics for the page."""
    from sim.runtime.recording import read_recording

    rec = read_recording(path)
    dt = float(rec.meta.get("dt", 1e-3))
    events = [{"t": round((e[0] + 1) * dt, 3), "label": f"{e[1]} (tool {e[2]})"} for e in rec.events]
    for e in (result or {}).get("errors", []):
        label = f"error: {e.get('kind')}: {e.get('message', '')}"
        events.append({"t": float(e.get("t", 0.0)), "label": label})
    events.sort(key=lambda e: e["t"])
    metrics = [{"label": m.get("label", k), "value": m.get("value"), "unit": m.get("unit", "")}
               for k, m in (result or {}).get("metrics", {}).items()]
    return {"duration": round(len(rec.ticks) * dt, 3), "events": events, "metrics": metrics}


def _page(request: Request, user, path: str, frame_url: str, title: str, result: dict | None) -> Response:
    return render(request, "review.html", user, title=title, frame_url=frame_url,
                  timeline=timeline(path, result), result=result)


def attempt_page(request: Request) -> Response:
    user = page_user(request)
    if isinstance(user, RedirectResponse):
        return user
    row, path = _attempt(request, user)
    result = json.loads(row["result_json"]) if row["result_json"] else None
    return _page(request, user, path, f"/review/attempt/{row['id']}/frame",
                 f"attempt {row['id']}: {row['trainee_id']}, {row['procedure']}", result)


def recording_page(request: Request) -> Response:
    user = page_user(request)
    if isinstance(user, RedirectResponse):
        return user
    path = _named(request, user)
    res = Path(path + ".result.json")
    result = json.loads(res.read_text()) if res.is_file() else None
    return _page(request, user, path, f"/review/recording/{request.path_params['name']}/frame",
                 Path(path).name, result)


async def _frame(request: Request, path: str) -> Response:
    try:
        t = float(request.query_params.get("t", "0"))
    except ValueError:
        raise HTTPException(400, "t is a time in seconds") from None
    if not 0.0 <= t < 1e6:
        raise HTTPException(400, "t out of range")
    data = await run_in_threadpool(_worker(request.app, path).frame, t)
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": "no-store"})


async def attempt_frame(request: Request) -> Response:
    user = current_user(request)
    _, path = await run_in_threadpool(_attempt, request, user)
    return await _frame(request, path)


async def recording_frame(request: Request) -> Response:
    user = current_user(request)
    return await _frame(request, _named(request, user))


def routes() -> list:
    return [
        Route("/review/attempt/{attempt}", attempt_page),
        Route("/review/attempt/{attempt}/frame", attempt_frame),
        Route("/review/recording/{name}", recording_page),
        Route("/review/recording/{name}/frame", recording_frame),
    ]


def close(app) -> None:
    for w in app.state.config.state.pop("reviews", {}).values():
        w.close()
