"""What boxes and frames say: a box's label lines, its woven axes, the partition titles.

Shared by the layout (which measures the text) and by both pictures (which paint it).
"""

from __future__ import annotations

import math

from napkin_mlir.draw.program import Box, Program
from napkin_mlir.draw.style import LEVEL_ORDER

BINARY_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "max": "max"}


def woven_axes(box: Box, program: Program) -> list[str]:
    """The axes a box is mapped over (they pass straight through it)."""
    if not box.outputs or box.kind in ("transfer", "fill", "group", "stream", "other"):
        return []
    out = list(program.wires[box.outputs[0]].array.axes)
    if box.kind == "softmax":
        return [a for a in out if a != box.attrs.get("axis")]
    if box.kind == "mask":
        return [a for a in out if a not in (box.attrs.get("rows"), box.attrs.get("cols"))]
    return out


def box_lines(box: Box, program: Program) -> list[str]:
    """The text of a box, one string a line (the first is the op, bold when there are more)."""
    a = box.attrs
    if box.kind == "contract":
        ins = [set(program.wires[i].array.axes) for i in box.inputs]
        out = set(program.wires[box.outputs[0]].array.axes) if box.outputs else set()
        summed = sorted(set().union(*ins) - out) if ins else []
        return ["contract", "Σ " + " ".join(summed) if summed else "outer ×"]
    if box.name == "scale":
        return ["scale", f"×{float(a.get('factor', 1.0)):.4g}"]
    if box.kind == "unary":
        return [box.name]
    if box.kind == "cast":
        out = program.wires[box.outputs[0]].array.dtype if box.outputs else "?"
        return ["cast", f"→ {out}"]
    if box.kind == "binary":
        return [BINARY_SYMBOLS.get(box.name, box.name)]
    if box.kind == "reduce":
        return ["reduce", f"{'Σ' if a.get('kind') == 'sum' else 'max'} {a.get('axis', '?')}"]
    if box.kind == "softmax":
        return ["softmax", f"along {a.get('axis', '?')}"]
    if box.kind == "mask":
        return [f"{a.get('kind', 'causal')} mask", f"{a.get('cols', '?')} ≤ {a.get('rows', '?')}"]
    if box.kind == "map":
        return ["map", "f(·)"]
    if box.kind == "fill":
        v = a.get("value", 0.0)
        text = "−∞" if isinstance(v, float) and math.isinf(v) and v < 0 else ("∞" if v == math.inf else f"{v:g}")
        return [f"fill {text}"]
    if box.kind == "transfer":
        src = program.wires[box.inputs[0]].level if box.inputs else None
        dst = program.wires[box.outputs[0]].level if box.outputs else None
        down = _level_index(dst) > _level_index(src)
        return ["load ↓" if down else "store ↑", f"{src or '?'}→{dst or '?'}"]
    return [box.name]


def _level_index(level: str | None) -> int:
    return LEVEL_ORDER.index(level) if level in LEVEL_ORDER else -1


def _axis_extent(box: Box, program: Program, axis: str) -> int | None:
    for i in box.inputs:
        arr = program.wires[i].array
        if axis in arr.axes:
            return arr.size(axis)
    return None


def group_title(box: Box, program: Program) -> str:
    """`group partition  b:1 h:1 q:64 @grid  (4 independent groups)`."""
    axes = [str(a) for a in box.attrs.get("axes", []) or []]
    sizes = [int(s) for s in box.attrs.get("sizes", []) or []]
    count = 1
    parts = []
    for a, s in zip(axes, sizes, strict=False):
        total = _axis_extent(box, program, a) or s
        count *= -(-total // s)
        parts.append(f"{a}:{s}")
    level = box.attrs.get("level")
    where = f" @{level}" if level else ""
    return f"group partition  {' '.join(parts)}{where}  ({count} independent groups)"


def stream_title(box: Box, program: Program) -> str:
    """`stream partition  x:64  (2 sequential steps over x=80, last chunk 16)`."""
    axis = str(box.attrs.get("axis", "?"))
    size = int(box.attrs.get("size", 0) or 0)
    total = _axis_extent(box, program, axis) or size
    steps = -(-total // size) if size else 0
    partial = f", last chunk {total - (steps - 1) * size}" if size and total % size else ""
    return f"stream partition  {axis}:{size}  ({steps} sequential steps over {axis}={total}{partial})"
