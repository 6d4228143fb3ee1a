"""The pseudocode picture: one column per step, the buffers of every memory level below.

Each napkin op is a step, in program order, with the loops it runs in (group partitions:
parallel; stream partitions: for each chunk) marked above its column. A buffer is a set of
wires that are one array in memory (a group's argument and its outer value, a stream's
carried state through init, step and finish), found by union-find; its live range runs
from its first definition to its last use, through the whole loop when used inside a stream
it was defined outside of. Each level's lane lists the buffers live at each step, the total
per step and the peak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib import patches

from napkin_mlir.draw.labels import box_lines, group_title, stream_title
from napkin_mlir.draw.paint import MARGIN, TITLE_H, Painter, figure, paint_caption, paint_title, save
from napkin_mlir.draw.program import Block, Box, Program
from napkin_mlir.draw.style import (
    FS,
    FS_SMALL,
    FS_TITLE,
    GROUP_COLOUR,
    LEVEL_COLOURS,
    LEVEL_NAMES,
    LEVEL_ORDER,
    STREAM_COLOUR,
    format_bytes,
    text_width,
    tint,
)
from napkin_mlir.errors import NapkinError

LINE_H = 11.0  # a buffer's line in a lane
LOOP_H = 16.0  # a loop bracket above the columns
HEAD_H = 28.0  # the step names

#: A loop a step runs in: kind ("group" or "stream"), title, id of its box.
Loop = tuple[str, str, int]


@dataclass
class Step:
    """One op, with the stream phase it belongs to and the loops around it, outermost first."""

    box: Box
    phase: str  # "", "init", "step", "finish"
    loops: tuple[Loop, ...]


@dataclass
class Buffer:
    """Wires that are one array in memory, with its size at its level and its live steps."""

    root: int
    name: str
    level: str | None
    label: str
    nbytes: int
    first: int
    last: int


def _steps(program: Program) -> list[Step]:
    steps: list[Step] = []

    def visit(block: Block, loops: tuple[Loop, ...], phase: str) -> None:
        for box in block.boxes:
            if box.name == "group":
                visit(box.regions[0], (*loops, ("group", group_title(box, program), box.id)), phase)
            elif box.name == "stream":
                init, step, fin = box.regions
                visit(init, loops, "init")
                visit(step, (*loops, ("stream", stream_title(box, program), box.id)), "step")
                visit(fin, loops, "finish")
            else:
                steps.append(Step(box, phase, loops))

    visit(program.body, (), "")
    return steps


# --------------------------------------------------------------------------------------
# Buffers


class _Union:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _link_regions(uf: _Union, block: Block) -> None:
    """Joins the wires that cross a region boundary: a group's arguments and results with its
    operands and results; a stream's chunks with its operands, its state through init, step
    and finish, its finish results with its results."""
    for box in block.boxes:
        if box.name == "group":
            body = box.regions[0]
            for a, o in zip(body.args, box.inputs, strict=False):
                uf.union(a, o)
            for r, o in zip(body.results, box.outputs, strict=False):
                uf.union(r, o)
            _link_regions(uf, body)
        elif box.name == "stream":
            init, step, fin = box.regions
            n = len(box.inputs)
            for a, o in zip(step.args[:n], box.inputs, strict=False):
                uf.union(a, o)
            for s, i0, y, f in zip(step.args[n:], init.results, step.results, fin.args, strict=False):
                uf.union(s, i0)
                uf.union(s, y)
                uf.union(s, f)
            for r, o in zip(fin.results, box.outputs, strict=False):
                uf.union(r, o)
            for b in box.regions:
                _link_regions(uf, b)


def _buffer_names(program: Program, steps: list[Step], find: Callable[[int], int]) -> dict[int, str]:
    """Names by buffer root: function arguments by name, results `out`, transfers keep their
    source's name, others by kind and count (`S1`, `r2`, `acc1`, `exp1`)."""
    counts: dict[str, int] = {}
    names: dict[int, str] = {}
    for i, a in enumerate(program.body.args):
        names[find(a)] = program.wires[a].name or f"arg{i}"
    for r in program.body.results:
        names.setdefault(find(r), "out")
    for st in steps:
        box = st.box
        for o in box.outputs:
            root = find(o)
            if root in names:
                continue
            if box.kind == "transfer" and box.inputs:
                names[root] = names.get(find(box.inputs[0]), "t")
                continue
            base = {"contract": "S", "reduce": "r", "fill": "acc"}.get(box.kind, box.name)
            counts[base] = counts.get(base, 0) + 1
            names[root] = f"{base}{counts[base]}"
    return names


def _live_ranges(
    program: Program, steps: list[Step], find: Callable[[int], int]
) -> tuple[dict[int, int], dict[int, int]]:
    """First and last step of each buffer root. A use inside a stream keeps a buffer defined
    outside it live through the whole loop; arguments and results live throughout (a gmem
    result exists before the kernel runs)."""
    loop_span: dict[int, tuple[int, int]] = {}
    for i, st in enumerate(steps):
        for _, _, lid in st.loops:
            lo, hi = loop_span.get(lid, (i, i))
            loop_span[lid] = (min(lo, i), max(hi, i))
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    def_loops: dict[int, tuple[Loop, ...]] = {}
    n_steps = len(steps)
    for i, st in enumerate(steps):
        for o in st.box.outputs:
            r = find(o)
            if r not in first or i < first[r]:
                first[r] = i
                def_loops[r] = st.loops
            last[r] = max(last.get(r, i), i)
        for v in st.box.inputs:
            r = find(v)
            hi = i
            outer = {lid for _, _, lid in def_loops.get(r, ())}
            for kind, _, lid in st.loops:
                if kind == "stream" and lid not in outer:
                    hi = max(hi, loop_span[lid][1])
            last[r] = max(last.get(r, hi), hi)
            first.setdefault(r, 0)
    for a in program.body.args:
        r = find(a)
        first[r] = 0
        last[r] = n_steps - 1
    for res in program.body.results:
        last[find(res)] = n_steps - 1
        if program.wires[res].level == "gmem":  # the output array exists before the kernel runs
            first[find(res)] = 0
    return first, last


def _buffers(program: Program, steps: list[Step]) -> tuple[list[Buffer], Callable[[int], int]]:
    """The buffers of a program and the function mapping a wire to its buffer's root."""
    uf = _Union()
    for w in program.wires:
        uf.find(w)
    _link_regions(uf, program.body)
    names = _buffer_names(program, steps, uf.find)
    first, last = _live_ranges(program, steps, uf.find)
    buffers = []
    for r in sorted(first):
        members = [w for w in program.wires if uf.find(w) == r]
        level = program.wires[r].level
        # a buffer's size: its largest member at its level (tiles in gmem are views of the array)
        same = [m for m in members if program.wires[m].level == level] or members
        big = max(same, key=lambda m: program.wires[m].nbytes)
        wire = program.wires[big]
        buffers.append(
            Buffer(r, names.get(r, f"v{r}"), level, wire.label(drop_unit=True), wire.nbytes, first[r], last[r])
        )
    return buffers, uf.find


# --------------------------------------------------------------------------------------
# The table: what each column and lane holds, and how large it is


@dataclass
class _Table:
    """The measured pseudocode table (lanes are levels, columns are steps)."""

    steps: list[Step]
    lanes: list[str | None]
    live: list[dict[str | None, list[Buffer]]]  # per step, per level: the live buffers
    totals: list[dict[str | None, int]]  # per step, per level: their bytes
    peaks: dict[str | None, int]
    lane_h: dict[str | None, float]
    defined: list[set[int]]  # per step: the roots of the buffers it writes
    col_w: list[float]
    depth: int  # loops nested at most
    lane_title_w: float
    peak_w: float


def _step_label(st: Step, program: Program) -> list[str]:
    lines = box_lines(st.box, program)
    if st.box.kind == "transfer":
        return [lines[0], lines[1]]
    return [" ".join(lines)]


def _measure(program: Program, steps: list[Step], buffers: list[Buffer], find: Callable[[int], int]) -> _Table:
    lanes: list[str | None] = [lv for lv in LEVEL_ORDER if any(b.level == lv for b in buffers)]
    if any(b.level is None for b in buffers):
        lanes.append(None)
    live: list[dict[str | None, list[Buffer]]] = []
    for i in range(len(steps)):
        per = {lv: [b for b in buffers if b.level == lv and b.first <= i <= b.last] for lv in lanes}
        live.append(per)
    totals = [{lv: sum(b.nbytes for b in live[i][lv]) for lv in lanes} for i in range(len(steps))]
    peaks = {lv: max(t[lv] for t in totals) for lv in lanes}
    lane_h = {lv: (max(len(live[i][lv]) for i in range(len(steps))) + 1) * LINE_H + 10 for lv in lanes}
    defined = [{find(o) for o in st.box.outputs} for st in steps]
    col_w = []
    for i, st in enumerate(steps):
        texts = [(s, True) for s in _step_label(st, program)]
        for lv in lanes:
            texts += [(f"{b.name} {b.label}", True) for b in live[i][lv]]
            texts.append((format_bytes(totals[i][lv]), True))
        col_w.append(
            max(text_width(t, FS_SMALL, bold) for t, bold in texts) + (22 if st.box.kind == "transfer" else 10)
        )
    depth = max((len(st.loops) for st in steps), default=0)
    lane_title_w = max(text_width(LEVEL_NAMES[lv], FS, True) for lv in lanes) + 14
    peak_w = max(text_width(f"peak {format_bytes(peaks[lv])}", FS, True) for lv in lanes) + 16
    return _Table(steps, lanes, live, totals, peaks, lane_h, defined, col_w, depth, lane_title_w, peak_w)


# --------------------------------------------------------------------------------------
# Painting


def render_pseudocode(program: Program, path: Path, title: str, caption: list[str]) -> None:
    """The pseudocode picture: title, loop brackets, step names, one lane per level with the
    live buffers, totals and peak, transfer arrows between lanes, caption."""
    steps = _steps(program)
    if not steps:
        raise NapkinError("nothing to draw: the diagram has no operations")
    buffers, find = _buffers(program, steps)
    t = _measure(program, steps, buffers, find)
    grid_w = sum(t.col_w)
    width = MARGIN * 2 + t.lane_title_w + grid_w + t.peak_w
    cap_w = max([text_width(c, FS) for c in caption] + [0.0])
    width = max(width, cap_w + 2 * MARGIN, text_width(title, FS_TITLE, True) + 2 * MARGIN)
    top = TITLE_H + MARGIN + t.depth * LOOP_H
    height = top + HEAD_H + sum(t.lane_h[lv] for lv in t.lanes) + MARGIN + 14 * len(caption) + 10
    fig, ax = figure(width, height)
    painter = Painter(ax, program)
    paint_title(painter, title)
    xs = [MARGIN + t.lane_title_w]
    for w in t.col_w:
        xs.append(xs[-1] + w)
    _paint_loops(painter, t, xs)
    _paint_headers(painter, program, t, xs, top)
    lane_top, bottom = _paint_lanes(painter, t, xs, top + HEAD_H, grid_w)
    for x in xs[1:-1]:
        ax.plot([x, x], [top, bottom], color="#d5d8dc", lw=0.6, zorder=0)
    _paint_transfers(painter, program, t, xs, lane_top)
    paint_caption(painter, caption, bottom + MARGIN)
    save(fig, path)


def _paint_loops(painter: Painter, t: _Table, xs: list[float]) -> None:
    """A bracket above each run of columns in the same loop, one row per nesting depth."""
    steps = t.steps
    for d in range(t.depth):
        i = 0
        while i < len(steps):
            if len(steps[i].loops) <= d:
                i += 1
                continue
            lid = steps[i].loops[d][2]
            j = i
            while j + 1 < len(steps) and len(steps[j + 1].loops) > d and steps[j + 1].loops[d][2] == lid:
                j += 1
            _paint_loop(painter, steps[i].loops[d], xs[i], xs[j + 1], TITLE_H + MARGIN + d * LOOP_H)
            i = j + 1


def _paint_loop(painter: Painter, loop: Loop, x0: float, x1: float, y: float) -> None:
    kind, text, _ = loop
    colour = GROUP_COLOUR if kind == "group" else STREAM_COLOUR
    painter.ax.add_patch(
        patches.Rectangle((x0 + 1, y), x1 - x0 - 2, LOOP_H - 3, facecolor=tint(colour, 0.85), edgecolor=colour)
    )
    label = ("parallel: " if kind == "group" else "for each chunk: ") + text.split("  ", 1)[1]
    avail = x1 - x0 - 8
    while label and text_width(label, FS_SMALL) > avail:
        label = label[:-2] + "…" if len(label) > 2 else ""
        if label == "…":
            break
    painter.text(x0 + 4, y + LOOP_H / 2 - 1, label, FS_SMALL, colour, ha="left", bold=True)


def _paint_headers(painter: Painter, program: Program, t: _Table, xs: list[float], top: float) -> None:
    """Each step's name over its column; `init` and `finish` under the steps of those phases."""
    for i, st in enumerate(t.steps):
        for k, s in enumerate(_step_label(st, program)):
            painter.text(xs[i] + t.col_w[i] / 2, top + 8 + 10 * k, s, FS_SMALL, "black", bold=True)
        if st.phase in ("init", "finish"):
            painter.text(xs[i] + t.col_w[i] / 2, top + HEAD_H - 4, st.phase, FS_SMALL, STREAM_COLOUR, italic=True)


def _paint_lanes(
    painter: Painter, t: _Table, xs: list[float], y: float, grid_w: float
) -> tuple[dict[str | None, float], float]:
    """One lane per level from `y` down: the live buffers of each step (those it writes in
    bold), the step's total (the peak in red), the lane's peak at the right. Returns each
    lane's top and the bottom of the last."""
    lane_top: dict[str | None, float] = {}
    for lv in t.lanes:
        lane_top[lv] = y
        c = LEVEL_COLOURS[lv]
        h = t.lane_h[lv]
        painter.ax.add_patch(
            patches.Rectangle((MARGIN, y), t.lane_title_w + grid_w, h, facecolor=tint(c, 0.93), edgecolor=c, lw=1.0)
        )
        painter.text(MARGIN + 5, y + 10, LEVEL_NAMES[lv], FS, c, ha="left", bold=True)
        for i in range(len(t.steps)):
            cy = y + 10
            for b in t.live[i][lv]:
                is_def = b.root in t.defined[i]
                painter.text(
                    xs[i] + 5,
                    cy,
                    f"{b.name} {b.label}",
                    FS_SMALL,
                    c if is_def else tint(c, 0.35),
                    ha="left",
                    bold=is_def,
                )
                cy += LINE_H
            is_peak = t.totals[i][lv] == t.peaks[lv] and t.peaks[lv] > 0
            colour = "#b03a2e" if is_peak else "#555555"
            painter.text(xs[i] + 5, y + h - 7, format_bytes(t.totals[i][lv]), FS_SMALL, colour, ha="left", bold=is_peak)
        painter.text(xs[-1] + 8, y + h / 2, f"peak {format_bytes(t.peaks[lv])}", FS, c, ha="left", bold=True)
        y += h
    return lane_top, y


def _paint_transfers(
    painter: Painter, program: Program, t: _Table, xs: list[float], lane_top: dict[str | None, float]
) -> None:
    """For each transfer, an arrow at the right of its column from its source lane to its
    destination lane."""
    for i, st in enumerate(t.steps):
        if st.box.kind != "transfer" or not st.box.inputs or not st.box.outputs:
            continue
        a, b = program.wires[st.box.inputs[0]].level, program.wires[st.box.outputs[0]].level
        if a in lane_top and b in lane_top:
            ya, yb = lane_top[a] + t.lane_h[a] / 2, lane_top[b] + t.lane_h[b] / 2
            xa = xs[i + 1] - 5
            painter.ax.annotate(
                "",
                xy=(xa, yb),
                xytext=(xa, ya),
                arrowprops={"arrowstyle": "-|>", "color": LEVEL_COLOURS[b], "lw": 1.6},
                zorder=6,
            )
