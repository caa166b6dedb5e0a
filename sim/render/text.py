"""Text for the HUD as quads: a line of text rasterised once by Pillow's built-in font, each run of
lit pixels in a row one quad (the HUD draws only quads; no font texture or atlas to manage).

Used for the instructor's message on a shared session's HUD, the instruments' names and jaw states
and the frame rate. Cached per (text, size).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _runs(text: str, size: int) -> tuple[tuple[int, int, int], ...]:
    """(row from the top, x0, x1) runs of lit pixels of `text` at `size` pixels; none without
    Pillow (the headset display's root may lack it: the HUD then shows bars and digits only)."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return ()

    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    x0, y0, x1, y1 = font.getbbox(text)
    img = Image.new("L", (max(1, x1 - min(x0, 0)), max(1, y1 - min(y0, 0))))
    ImageDraw.Draw(img).text((-min(x0, 0), -min(y0, 0)), text, fill=255, font=font)
    lit = np.asarray(img) > 96
    runs = []
    for r, row in enumerate(lit):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        runs += [(r, int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return tuple(runs)


def text_width(text: str, size: int) -> int:
    runs = _runs(text, size)
    return max((b for _, _, b in runs), default=0)


def text_quads(text: str, x: float, y_top: float, size: int,
               colour: tuple[float, float, float, float]) -> list[tuple]:
    """Quads (x0, y0, x1, y1, r, g, b, a) drawing `text` with its top-left at (x, y_top) [px, origin
    bottom-left like the rest of the HUD]."""
    return [(x + a, y_top - r - 1, x + b, y_top - r, *colour) for r, a, b in _runs(text, size)]
