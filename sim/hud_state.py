"""The HUD state a session publishes in each snapshot: the procedure's `hud()` (and an instructor's
message) as UTF-8 JSON in a fixed-size uint8 array, so the seqlock mailbox keeps fixed shapes.

Its own module, free of the runtime's imports, because every display decodes it, including the
OpenXR client that runs inside the Monado root where the device stack (pyserial) is not installed.
"""

from __future__ import annotations

import json

import numpy as np

HUD_BYTES = 2048  # size of the snapshot's `hud` array [bytes] (procedure HUD + an instructor message)


def encode_hud(hud: dict | None, out: np.ndarray) -> None:
    """Write `hud` as UTF-8 JSON into out (uint8, (HUD_BYTES,)), zero padded; {} for None."""
    data = json.dumps(hud or {}, separators=(",", ":")).encode()
    if len(data) > len(out):  # keep it parseable: drop the warnings, then cut the instruction
        hud = dict(hud or {}, warnings=[])
        hud["instruction"] = str(hud.get("instruction", ""))[: len(out) // 2]
        data = json.dumps(hud, separators=(",", ":")).encode()[: len(out)]
    out[: len(data)] = np.frombuffer(data, np.uint8)
    out[len(data):] = 0


def decode_hud(arr: np.ndarray) -> dict:
    """The HUD dict of a snapshot's `hud` array ({} if empty or unreadable)."""
    raw = bytes(np.asarray(arr, np.uint8)).rstrip(b"\0")
    if not raw:
        return {}
    try:
        out = json.loads(raw)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}
