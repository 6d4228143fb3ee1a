"""The look shared by every picture: level colours, frame colours, fonts, text metrics.

Sizes are in points. `text_width` measures with matplotlib's own text metrics, so the layout
leaves room for every label before anything is painted.
"""

from __future__ import annotations

import functools

from matplotlib.colors import to_rgb
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

#: The paper's wire colours: one per memory level, from the top of the hierarchy down.
LEVEL_COLOURS: dict[str | None, str] = {
    "gmem": "#c0392b",
    "smem": "#2471a3",
    "reg": "#1e8449",
    None: "#4d4d4d",
}
#: The memory levels, from the top of the hierarchy down.
LEVEL_ORDER = ("gmem", "smem", "reg")
LEVEL_NAMES = {"gmem": "gmem (global / HBM)", "smem": "smem (shared)", "reg": "reg (registers)", None: "no level yet"}
GROUP_COLOUR = "#7d3c98"
STREAM_COLOUR = "#b9770e"
BAND_COLOUR = "#7f8c8d"

FONT = "DejaVu Sans"
FS = 8.0  # box labels
FS_SMALL = 6.5  # wire labels, woven axes
FS_TITLE = 11.0

_T2P = TextToPath()


@functools.lru_cache(maxsize=4096)
def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width of `text` in points at font size `size` (1.06 slack for other SVG fonts)."""
    prop = FontProperties(family=FONT, size=size, weight="bold" if bold else "normal")
    w, _, _ = _T2P.get_text_width_height_descent(text, prop, ismath=False)
    return w * 1.06


def format_bytes(n: float) -> str:
    """`512 B`, `1.5 KiB`, `2 MiB`: a byte count for a label."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def tint(colour: str, amount: float = 0.72) -> tuple[float, float, float]:
    """`colour` mixed with white (`amount` 0: the colour, 1: white)."""
    r, g, b = to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)
