"""The HUD: elapsed time, a force bar per tool, warnings. Pure NumPy; the renderer draws the quads.

Warnings: excessive force (|F| above `FORCE_WARN` [N]: the bar turns red and the screen gets a red
border) and instrument out of view (the tool tip projects outside the image or behind the scope:
an amber marker on the screen edge toward the tip, and the tool's bar frame turns amber).
Quads are (x0, y0, x1, y1, r, g, b, a) in pixels, origin at the bottom-left corner.
A shared session (`trocar run --share`) also shows the instructor's latest message (a banner) and
mark (a cross on the view), which the snapshot's `hud` JSON carries under "instructor".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.render.geometry import project

#: Force at which the HUD warns [N] (a firm but safe pull on bowel is ~2-4 N).
FORCE_WARN = 4.0
#: Force of a full bar [N].
FORCE_FULL = 8.0

# Seven-segment layout in a unit cell (x0, y0, x1, y1), width 0.6, height 1: a b c d e f g.
_SEGMENTS = {
    "a": (0.0, 0.92, 0.6, 1.0), "b": (0.52, 0.5, 0.6, 1.0), "c": (0.52, 0.0, 0.6, 0.5),
    "d": (0.0, 0.0, 0.6, 0.08), "e": (0.0, 0.0, 0.08, 0.5), "f": (0.0, 0.5, 0.08, 1.0),
    "g": (0.0, 0.46, 0.6, 0.54),
}
_DIGITS = {"0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc", "5": "afgcd",
           "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcdfg", "-": "g"}


@dataclass
class HudState:
    """What the HUD shows for one frame.

    elapsed: simulated time [s]; force: |F| per tool [N] (n_tools,); over: force above FORCE_WARN;
    out_of_view: tool tip outside the image; edge: per tool, the NDC direction (2,) toward the tip;
    labels: per tool its name; jaw_open: per tool True (open) / False (closed) / None (unknown:
    the snapshot has no `jaws`); selected: the tool the keys and mouse move (None: not shown);
    fps: frames per second the display shows (None: not shown).
    """

    elapsed: float
    force: np.ndarray
    over: np.ndarray
    out_of_view: np.ndarray
    edge: np.ndarray
    instructor: dict | None = None
    labels: list[str] | None = None
    jaw_open: list[bool | None] | None = None
    selected: int | None = None
    fps: float | None = None

    @property
    def warning(self) -> bool:
        return bool(self.over.any() or self.out_of_view.any())


#: A jaw counts as open above this fraction of its opening range (the HUD's OPEN / CLOSED).
JAW_OPEN_FRACTION = 0.15


def hud_state(snapshot: dict, view_proj: np.ndarray, dt: float, *, force_warn: float = FORCE_WARN,
              tools: list[dict] | None = None, selected: int | None = None,
              fps: float | None = None) -> HudState:
    """HUD state from a snapshot and the scope's view-projection matrix. tools: the description's
    tools (names and jaw ranges for the labels); selected, fps: from the display."""
    force = np.linalg.norm(np.asarray(snapshot["tool_force"]).reshape(-1, 3), axis=1)
    links = np.asarray(snapshot["tool_links"]).reshape(-1, 3, 7)
    tips = links[:, 0, :3]
    if len(tips):
        ndc, front = project(view_proj, tips)
        out = ~front | (np.abs(ndc[:, 0]) > 1.0) | (np.abs(ndc[:, 1]) > 1.0)
        edge = np.where(front[:, None], ndc[:, :2], -ndc[:, :2])
    else:
        out, edge = np.zeros(0, bool), np.zeros((0, 2))
    instructor = None
    if "hud" in snapshot:
        from sim.hud_state import decode_hud

        instructor = decode_hud(snapshot["hud"]).get("instructor")
    labels = jaw_open = None
    if tools is not None:
        labels = [("L " if i == 0 else "R " if i == 1 else f"{i + 1} ") + str(t.get("name", "tool"))
                  for i, t in enumerate(tools)]
        jaws = np.asarray(snapshot["jaws"], float).ravel() if "jaws" in snapshot else None
        jaw_open = [None if jaws is None or i >= len(jaws) or not t.get("jaw_open_max")
                    else bool(jaws[i] > JAW_OPEN_FRACTION * float(t["jaw_open_max"]))
                    for i, t in enumerate(tools)]
    return HudState(elapsed=float(np.asarray(snapshot["tick"]).ravel()[0]) * dt, force=force,
                    over=force > force_warn, out_of_view=out, edge=edge, instructor=instructor,
                    labels=labels, jaw_open=jaw_open, selected=selected, fps=fps)


def tool_label_quads(state: HudState, i: int, x0: float, y0: float, height: int) -> list[tuple]:
    """Tool i's name and jaw state above its force bar at (x0, y0) [px]; the selected tool's label
    is bright yellow on a frame, the others grey."""
    from sim.render.text import text_quads, text_width

    jaw = state.jaw_open[i] if state.jaw_open is not None and i < len(state.jaw_open) else None
    text = state.labels[i] + ("" if jaw is None else " OPEN" if jaw else " CLOSED")
    size = int(max(11, height / 36))
    selected = state.selected == i
    colour = (1.0, 0.9, 0.2, 1.0) if selected else (0.85, 0.85, 0.85, 0.85)
    quads = []
    if selected:
        w = text_width(text, size)
        quads.append((x0 - 4, y0, x0 + w + 6, y0 + size + 8, 0.25, 0.2, 0.0, 0.7))
    return quads + text_quads(text, x0, y0 + size + 4, size, colour)


def fps_quads(fps: float, width: int, height: int) -> list[tuple]:
    """The display's frame rate, top right, as seven-segment digits with an 'fps' tag."""
    from sim.render.text import text_quads

    glyph = max(10.0, height / 36)
    text = f"{min(fps, 999.0):.0f}"
    x = width - 12 - (len(text) * 0.85 + 2.2) * glyph
    quads = [(x - 6, height - glyph - 14, width - 6, height - 6, 0.0, 0.0, 0.0, 0.45)]
    quads += digit_quads(text, x, height - glyph - 10, glyph, (0.7, 0.95, 0.7, 0.9))
    green = (0.7, 0.95, 0.7, 0.9)
    return quads + text_quads("fps", x + len(text) * 0.85 * glyph + 4, height - 10, int(glyph), green)


def instructor_quads(guide: dict, width: int, height: int) -> list[tuple]:
    """The instructor's message (a banner under the clock) and mark (a cross) as quads."""
    from sim.render.text import text_quads, text_width

    quads: list[tuple] = []
    text = str(guide.get("message") or "")
    if text:
        size = int(max(12, height / 24))
        line = text if len(text) <= 90 else text[:87] + "..."
        top = height - 2.6 * max(12.0, height / 24) - 8
        quads.append((8, top - size - 10, 16 + text_width(line, size) + 8, top + 4, 0.1, 0.2, 0.5, 0.8))
        quads += text_quads(line, 16, top - 2, size, (1.0, 0.95, 0.4, 1.0))
    if guide.get("mark"):
        mx, my = guide["mark"]
        cx, cy = mx * width, (1.0 - my) * height  # marks are top-left based, quads bottom-left
        s, w = max(10.0, height / 30), max(2.0, height / 240)
        c = (0.2, 0.9, 1.0, 0.95)
        quads += [(cx - s, cy - w, cx + s, cy + w, *c), (cx - w, cy - s, cx + w, cy + s, *c)]
    return quads


def digit_quads(text: str, x: float, y: float, height: float,
                colour: tuple[float, float, float, float]) -> list[tuple]:
    """Quads drawing text of digits, '-', ':' and '.' as seven-segment glyphs at (x, y) [px]."""
    quads = []
    w = 0.6 * height
    for ch in text:
        if ch in (":", "."):
            s = 0.1 * height
            dots = (0.25, 0.7) if ch == ":" else (0.0,)
            for d in dots:
                quads.append((x + s, y + d * height, x + 2 * s, y + d * height + s, *colour))
            x += 0.35 * height
            continue
        for seg in _DIGITS.get(ch, ""):
            x0, y0, x1, y1 = _SEGMENTS[seg]
            quads.append((x + x0 * height, y + y0 * height, x + x1 * height, y + y1 * height, *colour))
        x += w + 0.25 * height
    return quads


def format_elapsed(seconds: float) -> str:
    """'MM:SS.d'."""
    tenths = int(seconds * 10)
    return f"{tenths // 600:02d}:{(tenths // 10) % 60:02d}.{tenths % 10:d}"


def hud_quads(state: HudState, width: int, height: int) -> list[tuple]:
    """All HUD quads for a frame of width x height pixels."""
    quads: list[tuple] = []
    white = (0.95, 0.95, 0.95, 0.9)
    glyph = max(12.0, height / 24)
    quads.append((8, height - glyph - 16, 16 + 6.2 * glyph, height - 8, 0.0, 0.0, 0.0, 0.45))
    quads += digit_quads(format_elapsed(state.elapsed), 12, height - glyph - 12, glyph, white)
    n = len(state.force)
    bar_w, bar_h = min(220.0, 0.35 * width), max(8.0, height / 48)
    for i in range(n):
        x0 = 12 + i * (width - 24 - bar_w) / max(n - 1, 1)
        y0 = 12
        frame = (0.95, 0.65, 0.1, 0.9) if state.out_of_view[i] else (0.1, 0.1, 0.1, 0.6)
        quads.append((x0 - 3, y0 - 3, x0 + bar_w + 3, y0 + bar_h + 3, *frame))
        frac = float(np.clip(state.force[i] / FORCE_FULL, 0.0, 1.0))
        colour = (0.9, 0.1, 0.1, 0.95) if state.over[i] else (0.2 + 0.6 * frac, 0.8 - 0.3 * frac, 0.2, 0.95)
        quads.append((x0, y0, x0 + frac * bar_w, y0 + bar_h, *colour))
        # A tick at the warning threshold.
        xw = x0 + FORCE_WARN / FORCE_FULL * bar_w
        quads.append((xw - 1, y0 - 3, xw + 1, y0 + bar_h + 3, 1.0, 1.0, 1.0, 0.8))
        if state.labels is not None and i < len(state.labels):
            quads += tool_label_quads(state, i, x0, y0 + bar_h + 4, height)
        if state.out_of_view[i]:
            d = state.edge[i]
            d = d / max(np.abs(d).max(), 1e-9)
            cx, cy = (0.5 + 0.45 * d[0]) * width, (0.5 + 0.45 * d[1]) * height
            s = max(6.0, height / 40)
            quads.append((cx - s, cy - s, cx + s, cy + s, 0.95, 0.65, 0.1, 0.95))
    if state.instructor:
        quads += instructor_quads(state.instructor, width, height)
    if state.fps is not None:
        quads += fps_quads(state.fps, width, height)
    if state.over.any():
        b = max(4.0, height / 100)
        red = (0.9, 0.1, 0.1, 0.8)
        quads += [(0, 0, width, b, *red), (0, height - b, width, height, *red),
                  (0, 0, b, height, *red), (width - b, 0, width, height, *red)]
    return quads
