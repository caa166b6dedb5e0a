"""`trocar bench console`: does watching a session slow its haptic servo? Stream rate and latency.

One shared session (`trocar run SCENE --device emu --display headless --share`, real time) and one
`trocar serve`, both real processes. Three windows of `--seconds` each, back to back in the same
session: no spectators, N spectators (WebSocket clients in this process that take every frame and
acknowledge it, as the page does), no spectators again. The servo's period in each window comes from
the session's recording (tick start times, perf_counter: the same monotonic clock in every process,
so windows are cut by this process's clock). Latency = a frame's arrival at a spectator minus the
publish time of the snapshot it shows (`pub_ns`, written by the servo). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from sim.errors import UserError

PASSWORD = "bench-password-0"
FIRST_FRAME_S = 180.0  # how long the spectators wait for the stream's first frame [s]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _login(base: str) -> str:
    """Log in as the bench's instructor; the session cookie."""
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/login", timeout=60).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrf": token, "name": "bench", "password": PASSWORD}).encode()
    opener.open(base + "/login", data=body, timeout=60).read()
    cookie = next((c for c in jar if c.name == "trocar_session"), None)
    if cookie is None:
        raise RuntimeError("bench could not log in to the console")
    return f"trocar_session={cookie.value}"


async def _spectator(url: str, cookie: str, origin: str, until: list, out: dict) -> None:
    from websockets.asyncio.client import connect

    from console.frames import unpack

    async with connect(url, additional_headers={"Cookie": cookie}, origin=origin, max_size=None) as ws:
        while time.monotonic() < until[0]:
            try:
                data = await asyncio.wait_for(ws.recv(), max(0.05, until[0] - time.monotonic()))
            except TimeoutError:
                break
            now = time.perf_counter_ns()
            header, jpeg = unpack(data)
            out["frames"].append(time.monotonic())
            out["cpu_ms"].append(header.get("cpu_ms", 0.0))
            if header.get("pub_ns"):
                out["latency_ms"].append((now - header["pub_ns"]) / 1e6)
            await ws.send(f"ack {header['id']}")


async def _spectate(n: int, url: str, cookie: str, origin: str, seconds: float) -> tuple[list[dict], tuple]:
    """n spectators; the window is the `seconds` after the first frame reached a spectator (the
    console's stream process starts with the first spectator: EGL, shaders). Per spectator, frames,
    latencies and stream CPU per frame inside the window; and the window (perf_counter_ns)."""
    outs = [{"frames": [], "latency_ms": [], "cpu_ms": []} for _ in range(n)]
    window: dict = {}

    async def clock() -> None:
        give_up = time.monotonic() + FIRST_FRAME_S
        while not any(o["frames"] for o in outs):
            if time.monotonic() > give_up:
                raise UserError(f"no frame reached a spectator within {FIRST_FRAME_S:.0f} s")
            await asyncio.sleep(0.05)
        window["t0"], window["ns0"] = time.monotonic() + 1.0, time.perf_counter_ns() + int(1e9)

    until = [time.monotonic() + FIRST_FRAME_S + seconds + 1.0]
    task = asyncio.create_task(clock())
    spectators = [asyncio.create_task(_spectator(url, cookie, origin, until, o)) for o in outs]
    await task
    until[0] = window["t0"] + seconds
    await asyncio.gather(*spectators)
    t0, t1 = window["t0"], window["t0"] + seconds
    for o in outs:
        keep = [i for i, t in enumerate(o["frames"]) if t0 <= t < t1]
        for k in ("frames", "latency_ms", "cpu_ms"):
            o[k] = [o[k][i] for i in keep if i < len(o[k])]
    return outs, (window["ns0"], window["ns0"] + int(seconds * 1e9))


def _periods(record: str, windows: list[tuple[int, int]]) -> list[dict]:
    from sim.runtime.recording import read_recording

    rec = read_recording(record)
    t0 = int(rec.meta["t0_perf_ns"])
    start_ns = t0 + (rec.ticks["t"] * 1e9).astype(np.int64)
    out = []
    for a, b in windows:
        s = start_ns[(start_ns >= a) & (start_ns < b)]
        per = np.diff(s) / 1e3
        out.append({"ticks": int(len(s)),
                    "period_us_p50": round(float(np.percentile(per, 50)), 1) if len(per) else None,
                    "period_us_p99": round(float(np.percentile(per, 99)), 1) if len(per) else None,
                    "period_us_max": round(float(per.max()), 1) if len(per) else None})
    return out


def run(args) -> int:
    if args.spectators < 1 or args.spectators > 200:
        raise UserError("--spectators must be 1..200")
    if not 1 <= args.seconds <= 600:
        raise UserError("--seconds must be 1..600")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))

    def log(msg: str) -> None:
        if not args.json:
            print(f"bench console: {msg}", file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trocar-bench-console-") as tmp:
        tmp = Path(tmp)
        xdg = tmp / "xdg"
        xdg.mkdir(mode=0o700)
        env_run = dict(env, XDG_RUNTIME_DIR=str(xdg))
        runtime = xdg / "trocar" / "sessions"
        runtime.mkdir(parents=True, mode=0o700)
        users = tmp / "console.sqlite3"
        cli = [sys.executable, "-m", "sim.cli"]
        subprocess.run([*cli, "console-user", "add", "bench", "--role", "instructor", "--password-stdin",
                        "--users", str(users)], input=PASSWORD + "\n", text=True, env=env, check=True,
                       capture_output=True)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        record = str(tmp / "session.trec")
        procs = []
        try:
            serve = subprocess.Popen([*cli, "serve", "--port", str(port), "--users", str(users), "--db",
                                      str(tmp / "records.sqlite3"), "--runtime-dir", str(runtime)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(serve)
            session = subprocess.Popen([*cli, "run", args.scene, "--device", "emu", "--display", "headless",
                                        "--share", "--seconds", "3600", "--rate-mode", "realtime",
                                        "--record", record], env=env_run, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            procs.append(session)
            log("waiting for the shared session")
            deadline = time.monotonic() + 600
            while not list(runtime.glob("*.json")):
                if session.poll() is not None or time.monotonic() > deadline:
                    raise UserError(f"the session did not start (trocar run {args.scene} --share)")
                time.sleep(0.5)
            sid = json.loads(next(runtime.glob("*.json")).read_text())["id"]
            cookie = _login(base)
            time.sleep(2.0)  # the servo's loop starts right after it registers
            windows = []
            a = time.perf_counter_ns()
            log(f"window 1: no spectators, {args.seconds} s")
            time.sleep(args.seconds)
            windows.append((a, time.perf_counter_ns()))
            log(f"window 2: {args.spectators} spectators, {args.seconds} s (after the first frame)")
            url = f"ws://127.0.0.1:{port}/live/{sid}/ws"
            outs, window = asyncio.run(_spectate(args.spectators, url, cookie, base, args.seconds))
            windows.append(window)
            time.sleep(4.0)  # the stream lingers 3 s after its last spectator
            a = time.perf_counter_ns()
            log(f"window 3: no spectators, {args.seconds} s")
            time.sleep(args.seconds)
            windows.append((a, time.perf_counter_ns()))
            session.send_signal(signal.SIGINT)
            session.wait(120)
            periods = _periods(record, windows)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
    lat = np.array([v for o in outs for v in o["latency_ms"]])
    fps = [len(o["frames"]) / args.seconds for o in outs]
    cpu = np.array([v for o in outs for v in o["cpu_ms"]])
    none_p99 = max(p["period_us_p99"] or 0 for p in (periods[0], periods[2]))
    result = {
        "bench": "console", "scene": args.scene, "spectators": args.spectators, "seconds": args.seconds,
        "servo_none": periods[0], "servo_spectators": periods[1], "servo_none_after": periods[2],
        "servo_p99_ratio": round(periods[1]["period_us_p99"] / none_p99, 3) if none_p99 else None,
        "stream_fps_median": round(float(np.median(fps)), 2), "stream_fps_min": round(float(min(fps)), 2),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "frames_received": int(sum(len(o["frames"]) for o in outs)),
        "stream_cpu_ms_per_frame_median": round(float(np.median(cpu)), 1) if len(cpu) else None,
        "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result), flush=True)
    if not args.json:
        print(f"servo period p99: {periods[0]['period_us_p99']} us without spectators, "
              f"{periods[1]['period_us_p99']} us with {args.spectators}, {periods[2]['period_us_p99']} us "
              f"after; stream {result['stream_fps_median']} fps per spectator, latency p95 "
              f"{result['latency_ms_p95']} ms (load {result['loadavg_before'][0]} on {os.cpu_count()} CPUs)")
    return 0
