"""Session recording: an append-only log of length-prefixed, CRC'd chunks (format in docs/runtime.md).

Owns the file format, the writer (used inside the tick: no allocation per tick, one os.write per
flush, fsync on a background thread) and the reader (stops at the first damaged chunk and says
where).

File = MAGIC (8 bytes) then chunks; a chunk is

    u32 length | u32 crc32(kind || body) | u8 kind | body[length]       (little-endian)

Kinds: META (JSON: config, versions, seed, tick dtype), TICKS (raw rows of the tick dtype,
contiguous tick indices), EVENTS (JSON list of [tick, kind, tool, value, message, body]; files
written before `body` existed have 5-element rows, read back with body -1), CHECKSUMS
(JSON list of [tick, sha256 hex] taken after that tick), NOTE (JSON: log lines such as the
scheduling the servo got), END (JSON: reason and the timing report; its absence means the
session did not close: killed or crashed).

Durability: the writer hands a chunk to the kernel (os.write) at least every `flush_s` (40 ms)
of ticks, so a kill -9 of the writing process loses at most the last 40 ms plus the tick in
flight; a background thread fsyncs every `fsync_s` (50 ms), which bounds the loss on power
failure (the fsync system call releases the GIL, so the tick never waits for the disk).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"TRCREC01"
CHUNK_HEADER = struct.Struct("<IIB")
KIND_META, KIND_TICKS, KIND_EVENTS, KIND_CHECKSUMS, KIND_NOTE, KIND_END = 1, 2, 3, 4, 5, 6
KIND_NAMES = {KIND_META: "META", KIND_TICKS: "TICKS", KIND_EVENTS: "EVENTS",
              KIND_CHECKSUMS: "CHECKSUMS", KIND_NOTE: "NOTE", KIND_END: "END"}
MAX_CHUNK = 64 << 20  # a length above this is damage, not data [bytes]
FORMAT_VERSION = 2  # 2: per-hand device fields and force, tool/scope poses


def tick_dtype(n_tools: int, n_hands: int = 1) -> np.dtype:
    """One recorded tick. Times [s], positions [m], angles [rad], forces [N]. Per-hand fields have a
    leading (n_hands,) axis (hand h drives the tool of its workspace map, META "hands").

    tick: tick index (scene.tick_count before the tick); t: host time since session start;
    dev_t: sample arrival time (perf_counter) [s]; dev_seq: STATE seq; dev_pos: handle position,
    device frame (3,); dev_grip: gripper angle; dev_buttons, dev_status: raw bits; dev_flags:
    bit 0 fresh, bit 1 connected; dev_force: the force the device reports applying (STATE) (3,);
    targets: tool targets fed to scene.tick (n_tools, 4); jaws
    (n_tools,); force: force commanded to each hand's device before the driver's safety chain
    (n_hands, 3); tool_pose: each tool's shaft link (tip) pose after the tick (n_tools, 7)
    [m, quaternion x y z w]; scope_pose: the laparoscope's camera pose (7,); scope: its params (6,)
    (`sim.camera.PARAMS`: replay restores them); lateness_ns: tick start minus its deadline (0 in
    lockstep); compute_ns: tick compute time.
    """
    h = max(1, int(n_hands))
    return np.dtype([
        ("tick", "<i8"), ("t", "<f8"),
        ("dev_t", "<f8", (h,)), ("dev_seq", "<i8", (h,)), ("dev_pos", "<f8", (h, 3)),
        ("dev_grip", "<f8", (h,)), ("dev_buttons", "<i4", (h,)), ("dev_status", "<i4", (h,)),
        ("dev_flags", "<i4", (h,)), ("dev_force", "<f8", (h, 3)),
        ("targets", "<f8", (n_tools, 4)), ("jaws", "<f8", (n_tools,)), ("force", "<f8", (h, 3)),
        ("tool_pose", "<f8", (n_tools, 7)), ("scope_pose", "<f8", (7,)), ("scope", "<f8", (6,)),
        ("lateness_ns", "<i8"), ("compute_ns", "<i8"),
    ])


def _dtype_to_json(dt: np.dtype) -> list:
    return [[name, dt.fields[name][0].base.str, list(dt.fields[name][0].shape)] for name in dt.names]


def _dtype_from_json(spec: list) -> np.dtype:
    return np.dtype([(n, s, tuple(shape)) if shape else (n, s) for n, s, shape in spec])


def versions() -> dict:
    """Versions that decide whether a replay can be bit-exact."""
    import platform
    import sys

    out = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform(),
           "machine": platform.machine()}
    for mod in ("numba", "pybullet", "scipy"):
        try:
            from importlib.metadata import version

            out[mod] = version(mod)
        except Exception:  # noqa: BLE001 - a missing version is recorded as missing
            out[mod] = None
    try:
        from importlib.metadata import version

        out["trocar"] = version("trocar")
    except Exception:  # noqa: BLE001
        out["trocar"] = None
    return out


class RecordingWriter:
    """Appends a session to `path` (created, truncated). Per tick: `next_row()` then fill its fields.

    meta: JSON-able dict (config, seed, scene); n_tools and n_hands size the tick rows.
    """

    def __init__(self, path: str, meta: dict, n_tools: int, *, n_hands: int = 1, flush_s: float = 0.04,
                 fsync_s: float = 0.05, capacity: int = 256) -> None:
        self.path = path
        self.dtype = tick_dtype(n_tools, n_hands)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.buf = np.zeros(capacity, self.dtype)
        self.fields = {name: self.buf[name] for name in self.dtype.names}
        self.n = 0
        self.flush_ns = int(flush_s * 1e9)
        self._last_flush = time.perf_counter_ns()
        self._events: list = []
        self._checksums: list = []
        self.bytes_written = 0
        self.ticks_written = 0
        self._lock = threading.Lock()  # fd lifetime vs the fsync thread
        self._stop = threading.Event()
        self._dirty = False
        self._write_raw(MAGIC)
        full = dict(meta, format=FORMAT_VERSION, tick_dtype=_dtype_to_json(self.dtype),
                    n_tools=n_tools, n_hands=max(1, int(n_hands)))
        self._chunk(KIND_META, json.dumps(full, default=_json_default).encode())
        self._fsync_s = fsync_s
        self._thread = threading.Thread(target=self._fsync_loop, name="recording-fsync", daemon=True)
        self._thread.start()

    # -- per tick ---------------------------------------------------------------------------

    def next_row(self) -> int:
        """Index into `fields[...]` for this tick's row (flushes first if the buffer is full)."""
        if self.n == len(self.buf):
            self.flush()
        i = self.n
        self.n = i + 1
        return i

    def event(self, tick: int, kind: str, tool: int, value: float, message: str, body: int = -1) -> None:
        self._events.append([tick, kind, tool, value, message, body])

    def checksum(self, tick: int, digest: str) -> None:
        self._checksums.append([tick, digest])

    def note(self, **fields) -> None:
        """A log record (scheduling, device events); written with the next flush."""
        self.flush()
        self._chunk(KIND_NOTE, json.dumps(fields, default=_json_default).encode())

    def maybe_flush(self, now_ns: int) -> None:
        """Flush if `flush_s` has passed since the last flush (call once per tick)."""
        if now_ns - self._last_flush >= self.flush_ns:
            self.flush(now_ns)

    def flush(self, now_ns: int | None = None) -> None:
        """Hand buffered ticks, events and checksums to the kernel (survives kill -9)."""
        self._last_flush = time.perf_counter_ns() if now_ns is None else now_ns
        if self.n:
            self._chunk(KIND_TICKS, self.buf[: self.n].tobytes())
            self.ticks_written += self.n
            self.n = 0
        if self._events:
            self._chunk(KIND_EVENTS, json.dumps(self._events).encode())
            self._events = []
        if self._checksums:
            self._chunk(KIND_CHECKSUMS, json.dumps(self._checksums).encode())
            self._checksums = []

    def close(self, end: dict | None = None) -> None:
        """Flush, write END (reason, report), fsync, close. Idempotent."""
        if self.fd < 0:
            return
        self.flush()
        self._chunk(KIND_END, json.dumps(end or {}, default=_json_default).encode())
        self._stop.set()
        self._thread.join(2.0)
        with self._lock:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1

    # -- internals --------------------------------------------------------------------------

    def _chunk(self, kind: int, body: bytes) -> None:
        crc = zlib.crc32(body, zlib.crc32(bytes((kind,))))
        self._write_raw(CHUNK_HEADER.pack(len(body), crc, kind) + body)

    def _write_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.bytes_written += len(data)
        self._dirty = True

    def _fsync_loop(self) -> None:
        while not self._stop.wait(self._fsync_s):
            if not self._dirty:
                continue
            self._dirty = False
            with self._lock:
                if self.fd >= 0:
                    try:
                        os.fsync(self.fd)
                    except OSError:
                        return


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


@dataclass
class Recording:
    """What `read_recording` found. ticks: structured array (tick_dtype) of the intact ticks;
    damage: None or one line saying where the file stops being readable and why; complete: an
    END chunk was read; valid_bytes: bytes up to the end of the last intact chunk."""

    path: str
    meta: dict = field(default_factory=dict)
    ticks: np.ndarray = field(default_factory=lambda: np.zeros(0, tick_dtype(1)))
    events: list = field(default_factory=list)
    checksums: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    end: dict | None = None
    damage: str | None = None
    valid_bytes: int = 0

    @property
    def complete(self) -> bool:
        return self.end is not None and self.damage is None


def is_recording(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_recording(path: str) -> Recording:
    """Read every intact chunk up to the first damage. OSError if the file cannot be opened."""
    with open(path, "rb") as fh:
        data = fh.read()
    rec = Recording(path)
    if data[: len(MAGIC)] != MAGIC:
        rec.damage = f"{path}: not a trocar session recording (bad magic at byte 0)"
        return rec
    pos = len(MAGIC)
    parts: list[np.ndarray] = []
    dtype = None
    next_tick = None
    index = 0
    while pos < len(data):
        where = f"{path}: chunk {index} at byte {pos}"
        if len(data) - pos < CHUNK_HEADER.size:
            rec.damage = f"{where}: truncated chunk header ({len(data) - pos} of {CHUNK_HEADER.size} bytes)"
            break
        length, crc, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind not in KIND_NAMES or length > MAX_CHUNK:
            rec.damage = f"{where}: corrupt chunk header (kind {kind}, length {length})"
            break
        body_at = pos + CHUNK_HEADER.size
        body = data[body_at: body_at + length]
        if len(body) < length:
            rec.damage = (f"{where}: truncated {KIND_NAMES[kind]} chunk ({len(body)} of {length} "
                          f"body bytes)")
            break
        if zlib.crc32(body, zlib.crc32(bytes((kind,)))) != crc:
            rec.damage = f"{where}: CRC mismatch in {KIND_NAMES[kind]} chunk ({length} bytes)"
            break
        try:
            if kind == KIND_META:
                rec.meta = json.loads(body)
                dtype = _dtype_from_json(rec.meta["tick_dtype"])
            elif kind == KIND_TICKS:
                if dtype is None or length % dtype.itemsize:
                    raise ValueError("TICKS before META or partial row")
                rows = np.frombuffer(body, dtype)
                if len(rows) and next_tick is not None and rows["tick"][0] != next_tick:
                    raise ValueError(f"tick {rows['tick'][0]} follows tick {next_tick - 1}")
                if len(rows):
                    next_tick = int(rows["tick"][-1]) + 1
                parts.append(rows)
            elif kind == KIND_EVENTS:
                rec.events.extend(e if len(e) == 6 else [*e, -1] for e in json.loads(body))
            elif kind == KIND_CHECKSUMS:
                rec.checksums.extend((int(t), str(h)) for t, h in json.loads(body))
            elif kind == KIND_NOTE:
                rec.notes.append(json.loads(body))
            elif kind == KIND_END:
                rec.end = json.loads(body)
        except (ValueError, KeyError, TypeError) as exc:
            rec.damage = f"{where}: bad {KIND_NAMES[kind]} chunk: {exc}"
            break
        pos = body_at + length
        index += 1
        rec.valid_bytes = pos
    if dtype is not None:
        rec.ticks = np.concatenate(parts) if parts else np.zeros(0, dtype)
    elif rec.damage is None:
        rec.damage = f"{path}: no META chunk"
    return rec
