"""The instructor's message and mark on a shared session's HUD (sim/render/hud.py, sim/render/text.py):
pure NumPy quads, so checked without a GL context."""

from __future__ import annotations

import numpy as np

from sim.render.hud import hud_quads, hud_state, instructor_quads
from sim.render.text import text_quads
from sim.runtime.step import HUD_BYTES, encode_hud


def _snapshot(hud: dict) -> dict:
    arr = np.zeros(HUD_BYTES, np.uint8)
    encode_hud(hud, arr)
    return {"tool_force": np.zeros((0, 3)), "tool_links": np.zeros((0, 3, 7)), "tick": np.array([5.0]),
            "hud": arr}


def test_message_is_drawn_as_text_and_mark_as_a_cross():
    assert instructor_quads({"message": "", "mark": None}, 640, 360) == []
    quads = np.array(instructor_quads({"message": "clip lower", "mark": [0.25, 0.75]}, 640, 360))
    longer = instructor_quads({"message": "clip lower, then cut", "mark": None}, 640, 360)
    assert len(longer) > len(quads) - 2  # more letters, more quads
    # The cross is centred at x = 0.25 * 640 and, with y measured from the top, 0.25 * 360 from the bottom.
    cross = quads[-2:]
    cx, cy = (cross[:, 0] + cross[:, 2]).mean() / 2, (cross[:, 1] + cross[:, 3]).mean() / 2
    assert abs(cx - 160) < 1e-9 and abs(cy - 90) < 1e-9
    # Different words give different pixels.
    assert text_quads("left", 0, 0, 16, (1, 1, 1, 1)) != text_quads("right", 0, 0, 16, (1, 1, 1, 1))


def test_hud_of_a_snapshot_carries_the_instructor_state():
    plain = hud_state(_snapshot({"instruction": "go"}), np.eye(4), 1e-3)
    shared = hud_state(_snapshot({"instruction": "go", "instructor": {"message": "less traction",
                                                                      "mark": None}}), np.eye(4), 1e-3)
    assert plain.instructor is None and shared.instructor["message"] == "less traction"
    assert len(hud_quads(shared, 640, 360)) > len(hud_quads(plain, 640, 360)) + 20
