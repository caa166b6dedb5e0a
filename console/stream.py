"""Live streams: per watched session, one renderer process of the console's own reading the session's
snapshot mailbox, and the hub that fans its frames out to the spectators' WebSockets.

The session's servo never knows: it writes snapshots into shared memory as always (seqlock, never
waits). The stream process (`stream_main`) copies the newest snapshot at up to STREAM_FPS, renders
it (EGL, `console.frames.FrameRenderer`), encodes a JPEG and sends the packed frame over a pipe.
A thread in the server reads the pipe and hands the frame to the event loop; every spectator's
WebSocket task sends the newest frame it has not sent yet (a slow page skips frames, it never
queues them). The process starts with the first spectator and stops a few seconds after the last.
Latency: the page acknowledges each frame it has drawn; now - the snapshot's pub_ns at that moment
is the scene-to-page latency (an over-estimate by the acknowledgement's own trip).
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing as mp
import os
import threading
import time

import numpy as np

from console.frames import pack, snapshot_header

STREAM_FPS = 25.0  # frames rendered per second at most (the servo publishes at 100 Hz)
LINGER_S = 3.0  # a stream with no spectators stops after this long [s]


def stream_main(reg: dict, conn, stop, fps: float = STREAM_FPS) -> None:
    """The stream process: attach to the mailbox of registration `reg`, render, send frames."""
    try:
        os.nice(5)  # frames may wait; nothing of the session's does
    except OSError:
        pass
    from console.frames import FrameRenderer
    from sim.runtime.mailbox import SnapshotMailbox
    from sim.runtime.share import decode_arrays

    layout = {k: (tuple(shape), dtype) for k, (shape, dtype) in reg["layout"].items()}
    box = SnapshotMailbox.attach(reg["mailbox"], layout)
    snap, scratch = box.empty(), box.empty()
    renderer = FrameRenderer(decode_arrays(reg["description"]))
    last_seq, frame_id = None, 0
    period = 1.0 / fps
    next_t = time.perf_counter()
    try:
        while not stop.is_set():
            seq = box.read_into(scratch)
            if seq is not None and seq != last_seq:
                snap, scratch, last_seq = scratch, snap, seq
                frame_id += 1
                header = snapshot_header(snap)
                header["id"] = frame_id
                cpu = time.process_time()
                jpeg = renderer.jpeg(snap)
                # CPU time of this frame [ms]: what the stream costs, whatever the machine's load
                header["cpu_ms"] = round((time.process_time() - cpu) * 1e3, 2)
                try:
                    conn.send_bytes(pack(header, jpeg))
                except (BrokenPipeError, OSError):
                    break
            next_t = max(next_t + period, time.perf_counter() - period)
            stop.wait(max(0.0, next_t - time.perf_counter()))
    finally:
        renderer.close()
        box.close()
        conn.close()


class LiveStream:
    """One session's stream in the server: the process, the pipe reader, the newest frame."""

    def __init__(self, reg: dict, loop: asyncio.AbstractEventLoop) -> None:
        self.reg, self.loop = reg, loop
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=stream_main, args=(reg, send, self.stop), daemon=True,
                                name="trocar-console-stream")
        self.proc.start()
        send.close()
        self.latest: tuple[int, bytes, dict] | None = None
        self.pub_ns: dict[int, int] = {}
        self.latency_ms: collections.deque = collections.deque(maxlen=2000)
        self.frame_t: collections.deque = collections.deque(maxlen=400)
        self.spectators = 0
        self.idle_since: float | None = None
        self._waiters: list[asyncio.Future] = []
        self._reader = threading.Thread(target=self._read, args=(recv,), daemon=True)
        self._reader.start()

    def _read(self, recv) -> None:
        from console.frames import unpack

        while True:
            try:
                data = recv.recv_bytes()
            except (EOFError, OSError):
                break
            header, _ = unpack(data)
            self.loop.call_soon_threadsafe(self._publish, header, data)
        self.loop.call_soon_threadsafe(self._publish, None, b"")

    def _publish(self, header: dict | None, data: bytes) -> None:
        if header is not None:
            self.latest = (header["id"], data, header)
            self.pub_ns[header["id"]] = header.get("pub_ns", 0)
            if len(self.pub_ns) > 256:
                for k in sorted(self.pub_ns)[:128]:
                    del self.pub_ns[k]
            self.frame_t.append(time.monotonic())
        else:
            self.latest = self.latest and (self.latest[0], b"", self.latest[2])  # ended
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    @property
    def ended(self) -> bool:
        return not self.proc.is_alive() and not self._reader.is_alive()

    async def next_frame(self, after: int, timeout: float = 5.0) -> tuple[int, bytes, dict] | None:
        """The newest frame with an id above `after` (waits for one); None if the stream ended or
        nothing came within `timeout`."""
        while self.latest is None or self.latest[0] <= after:
            if self.ended:
                return None
            fut = self.loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                return None
        return self.latest if self.latest[1] else None

    def acknowledge(self, frame_id: int) -> None:
        pub = self.pub_ns.get(frame_id)
        if pub:
            self.latency_ms.append((time.perf_counter_ns() - pub) / 1e6)

    def stats(self) -> dict:
        now = time.monotonic()
        recent = [t for t in self.frame_t if now - t <= 5.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
        lat = np.array(self.latency_ms) if self.latency_ms else np.zeros(0)
        return {"fps": round(fps, 2), "spectators": self.spectators, "acks": int(len(lat)),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
                "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
                "frames": self.latest[0] if self.latest else 0}

    def close(self) -> None:
        self.stop.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


class StreamHub:
    """The server's streams by session id: started with the first spectator, stopped LINGER_S after
    the last one left."""

    def __init__(self) -> None:
        self.streams: dict[str, LiveStream] = {}

    def join(self, reg: dict) -> LiveStream:
        s = self.streams.get(reg["id"])
        if s is None or s.ended:
            s = self.streams[reg["id"]] = LiveStream(reg, asyncio.get_running_loop())
        s.spectators += 1
        s.idle_since = None
        return s

    def leave(self, stream: LiveStream) -> None:
        stream.spectators -= 1
        if stream.spectators <= 0:
            stream.idle_since = time.monotonic()
            asyncio.get_running_loop().call_later(LINGER_S + 0.1, self._reap)

    def _reap(self) -> None:
        now = time.monotonic()
        for sid, s in list(self.streams.items()):
            if s.spectators <= 0 and s.idle_since is not None and now - s.idle_since >= LINGER_S:
                del self.streams[sid]
                threading.Thread(target=s.close, daemon=True).start()

    def close(self) -> None:
        for s in self.streams.values():
            s.close()
        self.streams.clear()
