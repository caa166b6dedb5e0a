"""The HUD's instrument labels (name, jaw state, selected) and frame rate, from a snapshot."""

import numpy as np

from sim.render.hud import JAW_OPEN_FRACTION, hud_quads, hud_state

TOOLS = [{"name": "atraumatic_grasper", "jaw_open_max": 0.6},
         {"name": "curved_scissors", "jaw_open_max": 0.5}]


def _snap(jaws):
    return {"tool_force": np.zeros((2, 3)), "tool_links": np.zeros((2, 3, 7)), "tick": np.array([0.0]),
            "jaws": np.asarray(jaws, float)}


def test_jaw_state_selected_tool_and_fps():
    st = hud_state(_snap([0.5, 0.0]), np.eye(4), 1e-3, tools=TOOLS, selected=1, fps=29.6)
    assert st.labels == ["L atraumatic_grasper", "R curved_scissors"]
    assert st.jaw_open == [True, False]
    edge = JAW_OPEN_FRACTION * 0.6
    assert hud_state(_snap([edge * 0.9, 0]), np.eye(4), 1e-3, tools=TOOLS).jaw_open[0] is False
    plain = hud_quads(hud_state(_snap([0.5, 0.0]), np.eye(4), 1e-3), 640, 360)
    full = hud_quads(st, 640, 360)
    assert len(full) > len(plain) + 40  # two labels and the fps read-out
    # The selected (right) label gets a highlight box; picking the left one moves it left.
    def highlight_x(quads):
        return [q[0] for q in quads if q[4:8] == (0.25, 0.2, 0.0, 0.7)]
    assert len(highlight_x(full)) == 1 and highlight_x(full)[0] > 320
    st.selected = 0
    assert highlight_x(hud_quads(st, 640, 360))[0] < 320
    # No jaws in an old snapshot: the label has no state rather than a wrong one.
    snap = _snap([0, 0])
    del snap["jaws"]
    assert hud_state(snap, np.eye(4), 1e-3, tools=TOOLS).jaw_open == [None, None]
