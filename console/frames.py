"""The console's frames: one binary WebSocket message per frame, and the renderer the console owns.

Message = u32 little-endian header length, the header as UTF-8 JSON, then the JPEG. The header
carries what the page shows beside the picture: id, tick, the snapshot's publish time (pub_ns,
perf_counter_ns: CLOCK_MONOTONIC, the same clock in every process of this machine), both tools'
force vectors [N], the procedure's HUD (instruction, progress, time) and the instructor state.

`FrameRenderer` is an EGL headless view plus a JPEG encoder; the live-stream process and the review
process both draw through it, so a live frame and a reviewed frame look the same.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np

WIDTH, HEIGHT = 640, 360  # streamed frame size [px]
JPEG_QUALITY = 75


def pack(header: dict, jpeg: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<I", len(h)) + h + jpeg


def unpack(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack_from("<I", data)
    return json.loads(data[4:4 + n]), data[4 + n:]


def snapshot_header(snap: dict) -> dict:
    """What the page shows of a snapshot besides the picture."""
    from sim.runtime.step import decode_hud

    hud = decode_hud(snap["hud"]) if "hud" in snap else {}
    force = np.asarray(snap["tool_force"]).reshape(-1, 3)
    return {"tick": int(np.asarray(snap["tick"]).ravel()[0]),
            "pub_ns": int(snap["pub_ns"][0]) if "pub_ns" in snap else 0,
            "force": [[round(float(v), 4) for v in f] for f in force],
            "hud": hud}


class FrameRenderer:
    """Snapshots -> JPEG frames of WIDTH x HEIGHT through the simulator's own renderer (EGL)."""

    def __init__(self, description: dict, width: int = WIDTH, height: int = HEIGHT) -> None:
        from sim.camera import default_camera
        from sim.render.offscreen import HeadlessView

        self.view = HeadlessView(description, width, height)
        self.camera = default_camera(description)

    def jpeg(self, snap: dict) -> bytes:
        from PIL import Image

        img = self.view.render(snap, self.camera)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()

    def close(self) -> None:
        self.view.close()
