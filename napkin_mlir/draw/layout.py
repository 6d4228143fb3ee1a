"""Geometry of a diagram: a layered left-to-right DAG layout per block, nested for partitions.

`Layout(program).block(block)` places one block: boxes in topological columns (longest path
from the arguments), dummy points where a wire skips columns, rows by barycentre sweeps, and
column gaps wide enough for the wire labels. A group or stream box is laid out as a
`Container`: its blocks placed inside a frame (a stream's init, step and finish side by side,
with the carried state looping back under the step). All sizes are in points, measured with
`style.text_width`, so labels do not overlap; nothing here paints.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from napkin_mlir.draw.labels import box_lines, group_title, stream_title, woven_axes
from napkin_mlir.draw.program import Block, Box, Program
from napkin_mlir.draw.style import FS, FS_SMALL, text_width

PORT_SP = 17.0  # vertical distance between ports of one box
VGAP = 16.0  # vertical gap between boxes of a column
DUMMY_GAP = 6.0  # vertical gap after a dummy point
BEND = 26.0  # horizontal room for a wire to bend in a gap
MIN_GAP = 22.0
FPAD = 10.0  # padding inside frames
FRAME_TITLE = 20.0
COMPARTMENT_TITLE = 14.0
CARRY = 22.0
BAND_H = 10.0  # height of the woven-axes band at the top of a box
DUMMY_PORT = 5.0  # where a wire passes through a dummy point (its height is 2 * DUMMY_PORT)

#: A wire drawn inside a frame: wire id, x0, y0, x1, y1 (frame coordinates).
Link = tuple[int, float, float, float, float]
#: A block placed inside a frame: role, layout, x, y (frame coordinates).
Part = tuple[str, "BlockLayout", float, float]


@dataclass
class LNode:
    """A node of a block layout: an argument port, a box, a container, the yield, or a dummy."""

    role: str  # "arg", "box", "yield", "dummy"
    w: float
    h: float
    ins: list[float]
    outs: list[float]
    box: Box | None = None
    wire: int | None = None  # arg nodes: the argument's wire
    col: int = 0
    x: float = 0.0
    y: float = 0.0
    inner: Container | None = None
    order: int = 0

    def in_y(self, i: int) -> float:
        return self.y + self.ins[i]

    def out_y(self, i: int) -> float:
        return self.y + self.outs[i]


@dataclass
class Edge:
    """A wire from an output port to an input port, through dummies where it skips columns."""

    wire: int
    src: LNode
    sport: int
    dst: LNode
    dport: int
    dummies: list[LNode] = field(default_factory=list)


@dataclass
class BlockLayout:
    """A placed block: its nodes and edges, column positions, size and port heights."""

    block: Block
    nodes: list[LNode]
    edges: list[Edge]
    col_x: list[float]
    col_w: list[float]
    gap_label: list[float]
    w: float
    h: float
    arg_y: dict[int, float]  # wire id -> y of its argument port
    out_y: list[float]  # y of each yielded value's port (right edge)
    left_names: bool = False


@dataclass
class Container:
    """The inside of a group or stream box: sub-layouts placed in the frame (local coordinates)."""

    kind: str
    parts: list[Part]
    title: str
    links: list[Link]
    carry: tuple[float, float, float] | None = None  # x_left, x_right, y of the carry loop


class Layout:
    """Lays out the blocks of one program."""

    def __init__(self, program: Program) -> None:
        self.p = program

    # -- boxes -------------------------------------------------------------------------

    def box_node(self, box: Box) -> LNode:
        """A box sized for its text and ports; group and stream boxes hold their layout."""
        if box.name == "group":
            return self.group(box)
        if box.name == "stream":
            return self.stream(box)
        lines = box_lines(box, self.p)
        band = " ".join(woven_axes(box, self.p))
        tw = max(text_width(s, FS, bold=(i == 0 and len(lines) > 1)) for i, s in enumerate(lines))
        if box.kind == "transfer":
            tw = max(text_width(lines[0], FS, True), text_width(lines[1], FS_SMALL))
        if band:
            tw = max(tw, text_width(band, FS_SMALL))
        pad = 14.0 if box.kind in ("binary", "reduce", "mask", "map") else 10.0
        if box.kind == "reduce":
            pad = 22.0
        w = max(tw + pad, 28.0)
        n = max(len(box.inputs), len(box.outputs), 1)
        top = BAND_H if band else 0.0
        h = max(top + 11.0 * len(lines) + 8.0, n * PORT_SP, 22.0)
        return LNode("box", w, h, _spread(len(box.inputs), h, top), _spread(len(box.outputs), h, top), box=box)

    def group(self, box: Box) -> LNode:
        """A dashed frame around the body: inputs enter on the left, results leave on the right."""
        body = self.block(box.regions[0])
        title = group_title(box, self.p)
        w = max(body.w + 2 * FPAD, text_width(title, FS, True) + 2 * FPAD)
        h = FRAME_TITLE + body.h + FPAD
        args = box.regions[0].args[: len(box.inputs)]
        ins = [FRAME_TITLE + body.arg_y.get(a, 0.0) for a in args]
        outs = [FRAME_TITLE + y for y in body.out_y]
        links: list[Link] = [(a, 0.0, y, FPAD, y) for a, y in zip(args, ins, strict=True)]
        links += [(r, FPAD + body.w, y, w, y) for r, y in zip(body.block.results, outs, strict=False)]
        inner = Container("group", [("group", body, FPAD, FRAME_TITLE)], title, links)
        return LNode("box", w, h, ins, outs, box=box, inner=inner)

    def stream(self, box: Box) -> LNode:
        """Three compartments: init left of the step (level with the state), step, finish."""
        init_b, step_b, fin_b = box.regions
        init, step, fin = self.block(init_b), self.block(step_b), self.block(fin_b)
        title = stream_title(box, self.p)
        n_chunks = len(box.inputs)
        chunk_args, state_args = step_b.args[:n_chunks], step_b.args[n_chunks:]
        ys = FRAME_TITLE + COMPARTMENT_TITLE
        xs = FPAD + init.w + 2 * FPAD + self._label_gap(init_b.results)
        yi = _init_y(init, step, chunk_args, state_args, ys)
        xf = xs + step.w + 2 * FPAD + self._label_gap(step_b.results)
        yf = _finish_y(step, fin, ys)
        w = max(xf + fin.w + 2 * FPAD, text_width(title, FS, True) + 2 * FPAD)
        h = max(ys + step.h + FPAD + CARRY, yi + init.h + FPAD, yf + fin.h + FPAD) + FPAD
        ins = [ys + step.arg_y[a] for a in chunk_args]
        outs = [yf + y for y in fin.out_y]
        parts: list[Part] = [("init", init, FPAD, yi), ("step", step, xs, ys), ("finish", fin, xf, yf)]
        links = _stream_links(parts, n_chunks, w)
        carry = (xs - FPAD / 2, xs + step.w + FPAD / 2, ys + step.h + FPAD + CARRY / 2) if state_args else None
        inner = Container("stream", parts, title, links, carry)
        return LNode("box", w, h, ins, outs, box=box, inner=inner)

    def _label_gap(self, wires: list[int]) -> float:
        """Room between compartments for the labels of the wires crossing it."""
        return max([text_width(self.p.wires[r].label(), FS_SMALL) for r in wires] + [0.0]) + BEND + 12

    # -- blocks ------------------------------------------------------------------------

    def block(self, block: Block, left_names: bool = False) -> BlockLayout:
        """Place one block: columns, dummies, rows, then x positions; origin at its top left."""
        nodes, edges, yld = self._graph(block)
        _assign_columns(nodes, edges, yld, has_args=bool(block.args))
        cols = _columns_with_dummies(nodes, edges, yld.col + 1)
        _place_rows(nodes, edges, cols)
        col_x, col_w, gap_label, width = self._place_columns(block, cols, edges, left_names)
        top = min(n.y for n in nodes)
        for n in nodes:
            n.y -= top - 4.0
        height = max(n.y + n.h for n in nodes) + 4.0
        arg_y = {n.wire: n.y + n.outs[0] for n in nodes if n.role == "arg"}
        out_y = [yld.y + p for p in yld.ins]
        return BlockLayout(block, nodes, edges, col_x, col_w, gap_label, width, height, arg_y, out_y, left_names)

    def _graph(self, block: Block) -> tuple[list[LNode], list[Edge], LNode]:
        """Nodes (arguments, boxes, the yield) and the edges between them."""
        producers: dict[int, tuple[LNode, int]] = {}
        nodes: list[LNode] = []
        for i, a in enumerate(block.args):
            n = LNode("arg", 0.0, PORT_SP, [], [PORT_SP / 2], wire=a, order=i)
            producers[a] = (n, 0)
            nodes.append(n)
        box_nodes = []
        for b in block.boxes:
            n = self.box_node(b)
            n.order = len(nodes)
            nodes.append(n)
            box_nodes.append(n)
            for k, o in enumerate(b.outputs):
                producers[o] = (n, k)
        n_results = len(block.results)
        yld = LNode("yield", 0.0, max(n_results, 1) * PORT_SP, [PORT_SP * (k + 0.5) for k in range(n_results)], [])
        nodes.append(yld)
        edges: list[Edge] = []
        for n in box_nodes:
            for k, v in enumerate(n.box.inputs):
                if v in producers:
                    edges.append(Edge(v, *producers[v], n, k))
        for k, v in enumerate(block.results):
            if v in producers:
                edges.append(Edge(v, *producers[v], yld, k))
        return nodes, edges, yld

    def _place_columns(
        self, block: Block, cols: list[list[LNode]], edges: list[Edge], left_names: bool
    ) -> tuple[list[float], list[float], list[float], float]:
        """Column x positions and widths, gaps wide enough for the labels of wires leaving a
        column; centres each node in its column. Returns col_x, col_w, gap_label, width."""
        ncols = len(cols)
        col_w = [max([n.w for n in col] + [0.0]) for col in cols]
        gap_label = [0.0] * ncols
        for e in edges:
            gap_label[e.src.col] = max(gap_label[e.src.col], text_width(self.p.wires[e.wire].label(), FS_SMALL) + 6)
        x = text_width(_arg_title_max(block, self.p), FS, True) + 10 if left_names else 4.0
        col_x = []
        for c in range(ncols):
            col_x.append(x)
            gap = max(gap_label[c] + BEND, MIN_GAP) if c < ncols - 1 else 0.0
            x += col_w[c] + gap
        width = x + (text_width("result", FS, True) + 10 if left_names else 4.0)
        for col in cols:
            for n in col:
                n.x = col_x[n.col] + (col_w[n.col] - n.w) / 2
        return col_x, col_w, gap_label, width


# --------------------------------------------------------------------------------------
# Steps of a block layout


def _assign_columns(nodes: list[LNode], edges: list[Edge], yld: LNode, has_args: bool) -> None:
    """Layering: longest path from the arguments; sources sit just before their first user;
    the yield gets a column of its own after everything else."""
    box_nodes = [n for n in nodes if n.role == "box"]
    preds: dict[int, list[Edge]] = {id(n): [] for n in nodes}
    succs: dict[int, list[Edge]] = {id(n): [] for n in nodes}
    for e in edges:
        preds[id(e.dst)].append(e)
        succs[id(e.src)].append(e)
    for n in [*box_nodes, yld]:
        n.col = 1 + max((e.src.col for e in preds[id(n)]), default=-1) if preds[id(n)] else -1
    first = 1 if has_args else 0
    for n in reversed(box_nodes):
        if n.col < 0:
            users = [e.dst.col for e in succs[id(n)] if e.dst.col >= 0]
            n.col = max(min(users) - 1, first) if users else first
    for n in box_nodes:  # fix up users of late-placed sources
        for e in succs[id(n)]:
            if e.dst.col <= n.col:
                e.dst.col = n.col + 1
    changed = True
    while changed:
        changed = False
        for e in edges:
            if e.dst.col <= e.src.col:
                e.dst.col = e.src.col + 1
                changed = True
    yld.col = max([n.col for n in nodes if n is not yld] + [0]) + 1


def _columns_with_dummies(nodes: list[LNode], edges: list[Edge], ncols: int) -> list[list[LNode]]:
    """Adds a dummy node in every column a wire skips; returns the nodes column by column."""
    for e in edges:
        for c in range(e.src.col + 1, e.dst.col):
            d = LNode("dummy", 0.0, 2 * DUMMY_PORT, [DUMMY_PORT], [DUMMY_PORT], col=c, wire=e.wire)
            e.dummies.append(d)
            nodes.append(d)
    cols: list[list[LNode]] = [[] for _ in range(ncols)]
    for n in nodes:
        cols[n.col].append(n)
    return cols


def _place_rows(nodes: list[LNode], edges: list[Edge], cols: list[list[LNode]]) -> None:
    """Ordering and vertical placement: each column stacked, then barycentre sweeps left to
    right, right to left and left to right again, so that wires run as straight as they can."""
    into: dict[int, list[tuple[float, LNode]]] = {id(n): [] for n in nodes}
    out_of: dict[int, list[tuple[float, LNode, float]]] = {id(n): [] for n in nodes}
    src_port: dict[tuple[int, int, float], float] = {}
    for a, ay, b, by in _segments(edges):
        into[id(b)].append((by, a))
        out_of[id(a)].append((ay, b, by))
        src_port[(id(a), id(b), by)] = ay

    def from_left(n: LNode) -> list[float]:  # the y at which n's incoming wires would be straight
        return [a.y + src_port[(id(a), id(n), by)] - by for by, a in into[id(n)]]

    def from_right(n: LNode) -> list[float]:  # the y at which n's outgoing wires would be straight
        return [b.y + by - ay for ay, b, by in out_of[id(n)]]

    for col in cols:
        y = 0.0
        for n in col:
            n.y = y
            y += n.h + VGAP
    left_to_right = range(len(cols))
    right_to_left = range(len(cols) - 1, -1, -1)
    _sweep(cols, left_to_right, from_left)
    _sweep(cols, right_to_left, from_right)
    _sweep(cols, left_to_right, from_left)


def _segments(edges: list[Edge]) -> list[tuple[LNode, float, LNode, float]]:
    """Every edge cut at its dummies: (node, port y, next node, port y)."""
    segs = []
    for e in edges:
        chain = [(e.src, e.src.outs[e.sport]), *[(d, DUMMY_PORT) for d in e.dummies], (e.dst, e.dst.ins[e.dport])]
        for (a, ay), (b, by) in itertools.pairwise(chain):
            segs.append((a, ay, b, by))
    return segs


def _sweep(cols: list[list[LNode]], order: range, wishes: Callable[[LNode], list[float]]) -> None:
    """Places the columns in `order`, each node at the mean of its wishes (where it has some);
    the first column keeps its order."""
    for c in order:
        col = cols[c]
        desired = {}
        for n in col:
            ws = wishes(n)
            desired[id(n)] = sum(ws) / len(ws) if ws else n.y
        _place_column(col, desired, keep_order=(c == 0))


def _place_column(col: list[LNode], desired: dict[int, float], keep_order: bool) -> None:
    """Nodes at their desired y in order of it, pushed down so they keep their gaps."""
    order = col if keep_order else sorted(col, key=lambda n: (desired[id(n)], n.order))
    y = -math.inf
    for n in order:
        n.y = max(desired[id(n)], y)
        y = n.y + n.h + _gap_after(n)
    # pull the column up when it overshoots its wishes on average
    shift = sum(n.y - desired[id(n)] for n in order) / len(order)
    if shift > 0:
        low = -math.inf
        for n in order:
            n.y = max(n.y - shift, low)
            low = n.y + n.h + _gap_after(n)


def _gap_after(n: LNode) -> float:
    return VGAP if n.role != "dummy" else DUMMY_GAP


# --------------------------------------------------------------------------------------
# Helpers


def _spread(n: int, h: float, top: float = 0.0) -> list[float]:
    """`n` port heights spread evenly over [top, h]."""
    if n == 0:
        return []
    span = h - top
    return [top + span * (k + 0.5) / n for k in range(n)]


def _arg_title_max(block: Block, program: Program) -> str:
    names = [program.wires[a].name or "" for a in block.args]
    return max(names, key=len, default="")


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _init_y(init: BlockLayout, step: BlockLayout, chunk_args: list[int], state_args: list[int], ys: float) -> float:
    """A stream's init sits level with the state ports of the step, below its chunk wires."""
    chunk_bottom = max([step.arg_y[a] for a in chunk_args] + [0.0])
    state_ys = [step.arg_y[a] for a in state_args]
    yi = ys + _mean(state_ys, step.h / 2) - _mean(init.out_y, init.h / 2)
    return max(yi, ys + chunk_bottom + 10.0 + COMPARTMENT_TITLE)


def _finish_y(step: BlockLayout, fin: BlockLayout, ys: float) -> float:
    """A stream's finish sits level with the step's results (not above the compartments)."""
    yf = ys + _mean(step.out_y, step.h / 2) - _mean(list(fin.arg_y.values()), fin.h / 2)
    return max(yf, ys)


def _stream_links(parts: list[Part], n_chunks: int, w: float) -> list[Link]:
    """The wires of a stream frame: chunks into the step, init into the state ports, the
    step's results into finish, finish's results out of the frame."""
    (_, init, xi, yi), (_, step, xs, ys), (_, fin, xf, yf) = parts
    chunk_args, state_args = step.block.args[:n_chunks], step.block.args[n_chunks:]
    links: list[Link] = [(a, 0.0, ys + step.arg_y[a], xs, ys + step.arg_y[a]) for a in chunk_args]
    for r, yo, a in zip(init.block.results, init.out_y, state_args, strict=False):
        links.append((r, xi + init.w, yi + yo, xs, ys + step.arg_y[a]))
    for r, yo, a in zip(step.block.results, step.out_y, fin.block.args, strict=False):
        links.append((r, xs + step.w, ys + yo, xf, yf + fin.arg_y[a]))
    for r, yo in zip(fin.block.results, fin.out_y, strict=False):
        links.append((r, xf + fin.w, yf + yo, w, yf + yo))
    return links
