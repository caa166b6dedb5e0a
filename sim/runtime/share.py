"""Sharing a running session with the instructor console (`trocar run ... --share`).

Owns two things the console and the session agree on, so neither imports the other:

- the registration: one JSON file per shared session in the runtime directory
  (`$XDG_RUNTIME_DIR/trocar/sessions/`, else `/tmp/trocar-<uid>/sessions/`), written once the servo
  is ready (snapshot mailbox name and layout, scene description, recording, pid) and removed at exit.
  The directory is 0700: the mailbox names in it give read access to the session.
- the guide channel: a small seqlock mailbox (`sim.runtime.mailbox`) the console writes and the
  session reads: `paused` (the servo holds the attempt while it is 1), the instructor's latest
  message (UTF-8, MESSAGE_BYTES at most) with its id, the latest mark (x, y in [0, 1] of the view,
  origin top-left) with its id. The trainee's render process reads it and writes back, in arrays
  only it writes, the ids it has put on the HUD (`seen`), so the console can show "delivered".
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.runtime.mailbox import SnapshotMailbox

#: Longest instructor message [bytes of UTF-8]; the console refuses longer ones.
MESSAGE_BYTES = 280

GUIDE_LAYOUT = {
    "paused": ((1,), "|u1"),
    "message": ((MESSAGE_BYTES,), "|u1"),
    "message_id": ((1,), "<i8"),
    "mark": ((2,), "<f8"),
    "mark_id": ((1,), "<i8"),
}
# Written by the trainee's render process only (single aligned 8-byte stores: no seqlock needed).
SEEN_LAYOUT = {"seen": ((2,), "<i8")}  # [message id, mark id] on the trainee's HUD


def runtime_dir() -> Path:
    """Where shared sessions register (created 0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "trocar" if base else Path(tempfile.gettempdir()) / f"trocar-{os.getuid()}"
    d = root / "sessions"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def register(info: dict, folder: Path | None = None) -> Path:
    """Write the registration of a shared session (atomically); returns its path."""
    folder = folder or runtime_dir()
    path = folder / f"{info['id']}.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_sessions(folder: Path | None = None) -> list[dict]:
    """Registrations of live shared sessions (those whose process is gone are skipped)."""
    folder = folder or runtime_dir()
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            info = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and _alive(int(info.get("pid", -1))):
            out.append(info)
    return out


class GuideChannel:
    """The instructor -> session channel (see the module docstring). `create()` by the session's
    supervisor (which unlinks it), `attach(name)` by the console, the servo and the renderer."""

    def __init__(self, box: SnapshotMailbox, seen: SnapshotMailbox, owner: bool) -> None:
        self.box, self.seen_box, self.owner = box, seen, owner
        self.paused = box.views["paused"]  # the servo reads this one byte every tick
        self.seen = seen.views["seen"]

    @property
    def names(self) -> tuple[str, str]:
        return self.box.name, self.seen_box.name

    @classmethod
    def create(cls) -> GuideChannel:
        return cls(SnapshotMailbox.create(GUIDE_LAYOUT), SnapshotMailbox.create(SEEN_LAYOUT), True)

    @classmethod
    def attach(cls, names) -> GuideChannel:
        a, b = names
        return cls(SnapshotMailbox.attach(a, GUIDE_LAYOUT), SnapshotMailbox.attach(b, SEEN_LAYOUT), False)

    def read(self) -> dict:
        """{paused, message, message_id, mark (x, y) or None, mark_id}; the current state."""
        out = self.box.empty()
        if self.box.read_into(out) is None:
            return {"paused": False, "message": "", "message_id": 0, "mark": None, "mark_id": 0}
        text = bytes(out["message"]).rstrip(b"\0").decode("utf-8", "replace")
        mark_id = int(out["mark_id"][0])
        return {"paused": bool(out["paused"][0]), "message": text, "message_id": int(out["message_id"][0]),
                "mark": [float(v) for v in out["mark"]] if mark_id else None, "mark_id": mark_id}

    def _write(self, **changes) -> dict:
        state = self.read()
        state.update(changes)
        msg = np.zeros(MESSAGE_BYTES, np.uint8)
        data = state["message"].encode()[:MESSAGE_BYTES]
        msg[: len(data)] = np.frombuffer(data, np.uint8)
        self.box.write({"paused": np.array([state["paused"]], np.uint8), "message": msg,
                        "message_id": np.array([state["message_id"]]),
                        "mark": np.array(state["mark"] or [0.0, 0.0], float),
                        "mark_id": np.array([state["mark_id"]])})
        return state

    def send_message(self, text: str) -> int:
        """Publish a message; returns its id. ValueError if longer than MESSAGE_BYTES."""
        if len(text.encode()) > MESSAGE_BYTES:
            raise ValueError(f"message longer than {MESSAGE_BYTES} bytes")
        return self._write(message=text, message_id=self.read()["message_id"] + 1)["message_id"]

    def send_mark(self, x: float, y: float) -> int:
        """Publish a mark at (x, y) in [0, 1] of the view (origin top-left); returns its id."""
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError("mark outside the view")
        return self._write(mark=[float(x), float(y)], mark_id=self.read()["mark_id"] + 1)["mark_id"]

    def set_paused(self, paused: bool) -> None:
        self._write(paused=bool(paused))

    def acknowledge(self, message_id: int, mark_id: int) -> None:
        """The trainee's renderer: these ids are on the HUD now."""
        self.seen[0] = message_id
        self.seen[1] = mark_id

    def close(self) -> None:
        self.paused = self.seen = None
        self.box.close()
        self.seen_box.close()
        if self.owner:
            self.box.unlink()
            self.seen_box.unlink()


def registration(cfg, ready: dict) -> dict:
    """The registration of a session from its RunConfig and the servo's 'ready' message."""
    return {"id": session_id(), "pid": os.getpid(), "scene": cfg.scene, "device": cfg.device,
            "seed": cfg.seed, "record": cfg.record, "mode": ready.get("mode"),
            "mailbox": ready["mailbox"],
            "layout": {k: [list(shape), dtype] for k, (shape, dtype) in ready["layout"].items()},
            "description": encode_arrays(ready["description"]), "guide": list(cfg.guide),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "trainee": getattr(cfg, "trainee", None)}



def encode_arrays(obj):
    """Plain JSON for a scene description: arrays become {"__array__": list, "dtype": str}."""
    if isinstance(obj, np.ndarray):
        return {"__array__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        return {k: encode_arrays(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_arrays(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def decode_arrays(obj):
    """The inverse of encode_arrays."""
    if isinstance(obj, dict):
        if "__array__" in obj:
            return np.array(obj["__array__"], dtype=np.dtype(obj["dtype"]))
        return {k: decode_arrays(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_arrays(v) for v in obj]
    return obj


def session_id() -> str:
    """A new shared-session id: time and pid (unique on this machine, sorts by start)."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
