"""Draw napkin programs as the paper's diagrams (matplotlib, no display needed).

`draw(module, path)` renders the first napkin function of a module at any napkin stage (the
plain diagram, after `napkin-assign-levels`, after the group and stream partitions):

* arrays are **wires**, labelled with their axis names and sizes (`q64 d32`) and coloured by
  their memory **level** (the paper's wire colours; legend: gmem, smem, reg);
* operations are **boxes** with a shape per kind: contractions are square boxes (`Σ d` names the
  contracted axes), elementwise functions rounded boxes, binary ones stadiums, reductions
  trapezoids, softmax a double-framed box, the causal mask a saw-edged box, user maps a
  round-toothed box, constants small dashed boxes;
* **weaving**: the axes a box is mapped over are written on a thin band that passes straight
  through the box (the function itself acts on the remaining axes);
* **transfers** (`napkin.transfer`) are two-coloured arrow boxes where a wire changes colour:
  `load` going down the hierarchy, `store` going up;
* **group partitions** are dashed purple frames titled with their axes and group sizes (and
  the number of groups); **stream partitions** are amber frames with three compartments
  (`init`, `step` per chunk, `finish`), the chunk size and step count, and the carried state
  looping back under the step;
* a caption with per-level transfer volume and peak memory from the cost model
  (`napkin_mlir.model.cost.analyze`) when it is available and succeeds.

`draw(..., pseudocode=True)` draws the pseudocode form instead: one column per step (each
napkin op in program order, loops marked above), and for every memory level the buffers live
at that step with their sizes, the total per step and the peak.

The picture is computed from a pure-Python model of the IR (`extract`): array types are read
with `ArrayType.from_mlir`, attributes from builtin attributes, never from printed text. The
layout is a layered left-to-right DAG layout per block (topological columns, dummy points
for long wires, barycentric ordering), nested for group and stream regions; all sizes are in
points, measured with matplotlib's own text metrics, so labels do not overlap.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib import patches, rc_context
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path as MPath
from matplotlib.textpath import TextToPath
from mlir import ir
from PIL import Image

from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.arrays import DTYPE_BYTES, ArrayType, is_array
from napkin_mlir.ir.ops import op_info
from napkin_mlir.ir.regions import diagram_functions

__all__ = ["FORMATS", "LEVEL_COLOURS", "Program", "draw", "extract", "stage_of"]

#: Output formats by file extension.
FORMATS = ("png", "svg")

#: The paper's wire colours: one per memory level, from the top of the hierarchy down.
LEVEL_COLOURS: dict[str | None, str] = {
    "gmem": "#c0392b",
    "smem": "#2471a3",
    "reg": "#1e8449",
    None: "#4d4d4d",
}
LEVEL_ORDER = ("gmem", "smem", "reg")
LEVEL_NAMES = {"gmem": "gmem (global / HBM)", "smem": "smem (shared)", "reg": "reg (registers)", None: "no level yet"}
GROUP_COLOUR = "#7d3c98"
STREAM_COLOUR = "#b9770e"
BAND_COLOUR = "#7f8c8d"

FONT = "DejaVu Sans"
FS = 8.0  # box labels
FS_SMALL = 6.5  # wire labels, woven axes
FS_TITLE = 11.0
PORT_SP = 17.0  # vertical distance between ports of one box
VGAP = 16.0  # vertical gap between boxes of a column
BEND = 26.0  # horizontal room for a wire to bend in a gap
MIN_GAP = 22.0
FPAD = 10.0  # padding inside frames
FRAME_TITLE = 20.0
COMPARTMENT_TITLE = 14.0
CARRY = 22.0
DPI = 110

BINARY_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "max": "max"}


# --------------------------------------------------------------------------------------
# Text metrics

_T2P = TextToPath()


@functools.lru_cache(maxsize=4096)
def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width of `text` in points at font size `size` (1.06 slack for other SVG fonts)."""
    prop = FontProperties(family=FONT, size=size, weight="bold" if bold else "normal")
    w, _, _ = _T2P.get_text_width_height_descent(text, prop, ismath=False)
    return w * 1.06


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------------------
# The program model: a pure-Python copy of the napkin IR


@dataclass
class Wire:
    """An array value (a wire of the diagram)."""

    id: int
    array: ArrayType
    name: str | None = None

    @property
    def level(self) -> str | None:
        return self.array.level

    def label(self, drop_unit: bool = True) -> str:
        """`q64 d32 bf16`: axis names with sizes, then the element type (size-1 axes left out)."""
        pairs = list(zip(self.array.axes, self.array.shape, strict=True))
        kept = [(a, n) for a, n in pairs if not (drop_unit and n == 1)] or pairs
        return " ".join(f"{a}{n}" for a, n in kept) + f" {self.array.dtype}"

    @property
    def nbytes(self) -> int:
        return self.array.elements * DTYPE_BYTES.get(self.array.dtype, 4)


@dataclass
class Box:
    """An operation (a box), possibly holding regions (group: body; stream: init, step, finish)."""

    id: int
    name: str
    kind: str
    attrs: dict[str, object]
    inputs: list[int]
    outputs: list[int]
    regions: list[Block] = field(default_factory=list)


@dataclass
class Block:
    args: list[int]
    boxes: list[Box]
    results: list[int]
    role: str = "body"


@dataclass
class Program:
    name: str
    wires: dict[int, Wire]
    body: Block

    def walk(self) -> list[Box]:
        found: list[Box] = []

        def visit(block: Block) -> None:
            for box in block.boxes:
                found.append(box)
                for r in box.regions:
                    visit(r)

        visit(self.body)
        return found


def _attr_value(attr: ir.Attribute) -> object:
    if isinstance(attr, ir.StringAttr):
        return attr.value
    if isinstance(attr, ir.FloatAttr):
        return attr.value
    if isinstance(attr, ir.IntegerAttr):
        return attr.value
    if isinstance(attr, ir.DenseI64ArrayAttr):
        return list(attr)
    if isinstance(attr, ir.ArrayAttr):
        return [_attr_value(a) for a in attr]
    return None


def extract(module: ir.Module | ir.Operation) -> Program:
    """The first napkin function of `module` as a Program; NapkinError if there is none."""
    operation = module.operation if isinstance(module, ir.Module) else module
    funcs = diagram_functions(operation)
    if not funcs:
        raise NapkinError(
            "no napkin diagram in the module (draw takes the diagram and partitioned stages: "
            "a func.func holding napkin ops)"
        )
    func = funcs[0]
    ids: dict[ir.Value, int] = {}
    wires: dict[int, Wire] = {}
    counter = [0]

    def wire(value: ir.Value, name: str | None = None) -> int | None:
        if value in ids:
            return ids[value]
        if not is_array(value.type):
            return None
        counter[0] += 1
        ids[value] = counter[0]
        wires[counter[0]] = Wire(counter[0], ArrayType.from_mlir(value.type), name)
        return counter[0]

    def arrays(values: list[int | None]) -> list[int]:
        return [v for v in values if v is not None]

    def block_of(block: ir.Block, role: str, names: list[str] | None = None) -> Block:
        args = arrays([wire(a, names[i] if names and i < len(names) else None) for i, a in enumerate(block.arguments)])
        ops = [op.operation for op in block.operations]
        boxes: list[Box] = []
        results: list[int] = []
        for i, op in enumerate(ops):
            operands = [wire(v) for v in op.operands]
            if i == len(ops) - 1 and op.name in ("func.return", "gpu.yield"):
                results = arrays(operands)
                continue
            info = op_info(op.name)
            outs = arrays([wire(r) for r in op.results])
            ins = arrays(operands)
            if info is None and not ins and not outs:
                continue  # index constants and other scalar bookkeeping
            counter[0] += 1
            attrs = {str(k): _attr_value(op.attributes[str(k)]) for k in op.attributes}
            name = info.name if info else op.name
            box = Box(counter[0], name, info.kind if info else "other", attrs, ins, outs)
            if name == "group":
                box.regions = [block_of(op.regions[0].blocks[0], "group")]
            elif name == "stream":
                box.regions = [
                    block_of(op.regions[k].blocks[0], role) for k, role in enumerate(("init", "step", "finish"))
                ]
            boxes.append(box)
        return Block(args, boxes, results, role)

    names: list[str] = []
    if "arg_names" in func.attributes:
        names = [str(n) for n in (_attr_value(func.attributes["arg_names"]) or [])]
    body = block_of(func.regions[0].blocks[0], "function", names)
    name = str(_attr_value(func.attributes["sym_name"])) if "sym_name" in func.attributes else "diagram"
    return Program(name, wires, body)


def stage_of(program: Program) -> str:
    """A short description of the stage a program is at."""
    boxes = program.walk()
    kinds = {b.name for b in boxes}
    if "group" in kinds or "stream" in kinds:
        parts = [p for p in ("group", "stream") if p in kinds]
        return "partitioned (levels, " + " + ".join(parts) + " partition)"
    if any(w.level for w in program.wires.values()):
        return "levels assigned (transfers, fusion)"
    return "plain diagram"


# --------------------------------------------------------------------------------------
# Box appearance


def _woven(box: Box, program: Program) -> list[str]:
    """The axes a box is mapped over (they pass straight through it)."""
    if not box.outputs or box.kind in ("transfer", "fill", "group", "stream", "other"):
        return []
    out = list(program.wires[box.outputs[0]].array.axes)
    if box.kind == "softmax":
        return [a for a in out if a != box.attrs.get("axis")]
    if box.kind == "mask":
        return [a for a in out if a not in (box.attrs.get("rows"), box.attrs.get("cols"))]
    return out


def _lines(box: Box, program: Program) -> list[str]:
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


# --------------------------------------------------------------------------------------
# Layout: a layered DAG layout per block, nested for groups and streams


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
    wire: int
    src: LNode
    sport: int
    dst: LNode
    dport: int
    dummies: list[LNode] = field(default_factory=list)


@dataclass
class BlockLayout:
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
    parts: list[tuple[str, BlockLayout, float, float]]  # (role, layout, x, y)
    title: str
    links: list[tuple[int, float, float, float, float]]  # wire, x0, y0, x1, y1 (inside the frame)
    carry: tuple[float, float, float] | None = None  # x_left, x_right, y of the carry loop


class Layout:
    def __init__(self, program: Program) -> None:
        self.p = program

    # -- boxes -------------------------------------------------------------------------

    def box_node(self, box: Box) -> LNode:
        if box.name in ("group", "stream"):
            inner = self.group(box) if box.name == "group" else self.stream(box)
            return inner
        lines = _lines(box, self.p)
        woven = _woven(box, self.p)
        tw = max(text_width(s, FS, bold=(i == 0 and len(lines) > 1)) for i, s in enumerate(lines))
        if box.kind == "transfer":
            tw = max(text_width(lines[0], FS, True), text_width(lines[1], FS_SMALL))
        band = " ".join(woven)
        if band:
            tw = max(tw, text_width(band, FS_SMALL))
        pad = 14.0 if box.kind in ("binary", "reduce", "mask", "map") else 10.0
        if box.kind == "reduce":
            pad = 22.0
        w = max(tw + pad, 28.0)
        n = max(len(box.inputs), len(box.outputs), 1)
        h = (10.0 if band else 0.0) + 11.0 * len(lines) + 8.0
        h = max(h, n * PORT_SP, 22.0)
        ins = _spread(len(box.inputs), h, top=10.0 if band else 0.0)
        outs = _spread(len(box.outputs), h, top=10.0 if band else 0.0)
        return LNode("box", w, h, ins, outs, box=box)

    def group(self, box: Box) -> LNode:
        body = self.block(box.regions[0])
        title = _group_title(box, self.p)
        w = max(body.w + 2 * FPAD, text_width(title, FS, True) + 2 * FPAD)
        h = FRAME_TITLE + body.h + FPAD
        ins = [FRAME_TITLE + body.arg_y.get(a, 0.0) for a in box.regions[0].args[: len(box.inputs)]]
        outs = [FRAME_TITLE + y for y in body.out_y]
        links = []
        for a in box.regions[0].args[: len(box.inputs)]:
            y = FRAME_TITLE + body.arg_y.get(a, 0.0)
            links.append((a, 0.0, y, FPAD, y))
        for y0 in body.out_y:
            y = FRAME_TITLE + y0
            links.append((body.block.results[body.out_y.index(y0)], FPAD + body.w, y, w, y))
        inner = Container("group", [("group", body, FPAD, FRAME_TITLE)], title, links)
        return LNode("box", w, h, ins, outs, box=box, inner=inner)

    def stream(self, box: Box) -> LNode:
        init_b, step_b, fin_b = box.regions
        init = self.block(init_b)
        step = self.block(step_b)
        fin = self.block(fin_b)
        title = _stream_title(box, self.p)
        n_chunks = len(box.inputs)
        chunk_args = step_b.args[:n_chunks]
        state_args = step_b.args[n_chunks:]
        top = FRAME_TITLE + COMPARTMENT_TITLE
        # init sits left of the step, below the chunk wires, level with the state ports
        init_gap = max([text_width(self.p.wires[r].label(), FS_SMALL) for r in init_b.results] + [0.0]) + BEND + 12
        xs = FPAD + init.w + 2 * FPAD + init_gap
        ys = top
        chunk_bottom = max([step.arg_y[a] for a in chunk_args] + [0.0])
        state_ys = [step.arg_y[a] for a in state_args]
        yi = (
            ys
            + (sum(state_ys) / len(state_ys) if state_ys else step.h / 2)
            - (sum(init.out_y) / len(init.out_y) if init.out_y else init.h / 2)
        )
        yi = max(yi, ys + chunk_bottom + 10.0 + COMPARTMENT_TITLE)
        fin_gap = max([text_width(self.p.wires[r].label(), FS_SMALL) for r in step_b.results] + [0.0]) + BEND + 12
        xf = xs + step.w + 2 * FPAD + fin_gap
        yf = (
            ys
            + (sum(step.out_y) / len(step.out_y) if step.out_y else step.h / 2)
            - (sum(fin.arg_y.values()) / len(fin.arg_y) if fin.arg_y else fin.h / 2)
        )
        yf = max(yf, top)
        title_w = text_width(title, FS, True) + 2 * FPAD
        w = max(xf + fin.w + 2 * FPAD, title_w)
        bottom = max(ys + step.h + FPAD + CARRY, yi + init.h + FPAD, yf + fin.h + FPAD)
        h = bottom + FPAD
        ins = [ys + step.arg_y[a] for a in chunk_args]
        outs = [yf + y for y in fin.out_y]
        links: list[tuple[int, float, float, float, float]] = []
        for a in chunk_args:
            y = ys + step.arg_y[a]
            links.append((a, 0.0, y, xs, y))
        for r, yo, a in zip(init_b.results, init.out_y, state_args, strict=False):
            links.append((r, FPAD + init.w, yi + yo, xs, ys + step.arg_y[a]))
        fin_args = fin_b.args
        for r, yo, a in zip(step_b.results, step.out_y, fin_args, strict=False):
            links.append((r, xs + step.w, ys + yo, xf, yf + fin.arg_y[a]))
        for r, yo in zip(fin_b.results, fin.out_y, strict=False):
            links.append((r, xf + fin.w, yf + yo, w, yf + yo))
        parts = [("init", init, FPAD, yi), ("step", step, xs, ys), ("finish", fin, xf, yf)]
        carry = (xs - FPAD / 2, xs + step.w + FPAD / 2, ys + step.h + FPAD + CARRY / 2) if state_args else None
        inner = Container("stream", parts, title, links, carry)
        return LNode("box", w, h, ins, outs, box=box, inner=inner)

    # -- blocks ------------------------------------------------------------------------

    def block(self, block: Block, left_names: bool = False) -> BlockLayout:
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
        yld = LNode("yield", 0.0, max(len(block.results), 1) * PORT_SP, _spread(len(block.results), 0), [])
        yld.h = max(len(block.results), 1) * PORT_SP
        yld.ins = [PORT_SP * (k + 0.5) for k in range(len(block.results))]
        nodes.append(yld)
        edges: list[Edge] = []
        for n in box_nodes:
            for k, v in enumerate(n.box.inputs):
                if v in producers:
                    src, sp = producers[v]
                    edges.append(Edge(v, src, sp, n, k))
        for k, v in enumerate(block.results):
            if v in producers:
                src, sp = producers[v]
                edges.append(Edge(v, src, sp, yld, k))
        # layering: longest path from the arguments; sources sit just before their first user
        preds: dict[int, list[Edge]] = {id(n): [] for n in nodes}
        succs: dict[int, list[Edge]] = {id(n): [] for n in nodes}
        for e in edges:
            preds[id(e.dst)].append(e)
            succs[id(e.src)].append(e)
        for n in [*box_nodes, yld]:
            n.col = 1 + max((e.src.col for e in preds[id(n)]), default=-1) if preds[id(n)] else -1
        has_args = bool(block.args)
        for n in reversed(box_nodes):
            if n.col < 0:
                users = [e.dst.col for e in succs[id(n)] if e.dst.col >= 0]
                n.col = max(min(users) - 1, 1 if has_args else 0) if users else (1 if has_args else 0)
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
        ncols = yld.col + 1
        # dummies for wires that skip columns
        for e in edges:
            for c in range(e.src.col + 1, e.dst.col):
                d = LNode("dummy", 0.0, 10.0, [5.0], [5.0], col=c, wire=e.wire)
                e.dummies.append(d)
                nodes.append(d)
        cols: list[list[LNode]] = [[] for _ in range(ncols)]
        for n in nodes:
            cols[n.col].append(n)
        # ordering and vertical placement: sweeps by barycentres
        in_of: dict[int, list[tuple[float, LNode]]] = {}

        def segments() -> list[tuple[LNode, float, LNode, float]]:
            segs = []
            for e in edges:
                chain = [(e.src, e.src.outs[e.sport]), *[(d, 5.0) for d in e.dummies], (e.dst, e.dst.ins[e.dport])]
                for (a, ay), (b, by) in itertools.pairwise(chain):
                    segs.append((a, ay, b, by))
            return segs

        segs = segments()
        in_of = {id(n): [] for n in nodes}
        out_of: dict[int, list[tuple[float, LNode, float]]] = {id(n): [] for n in nodes}
        for a, ay, b, by in segs:
            in_of[id(b)].append((by, a))
            out_of[id(a)].append((ay, b, by))
            del ay
        seg_src_port = {}
        for a, ay, b, by in segs:
            seg_src_port[(id(a), id(b), by)] = ay

        def place(col: list[LNode], desired: dict[int, float], keep_order: bool) -> None:
            order = col if keep_order else sorted(col, key=lambda n: (desired[id(n)], n.order))
            y = -math.inf
            for n in order:
                n.y = max(desired[id(n)], y)
                y = n.y + n.h + (VGAP if n.role != "dummy" else 6.0)
            # pull the column up when it overshoots its wishes on average
            shift = sum(n.y - desired[id(n)] for n in order) / len(order)
            if shift > 0:
                low = -math.inf
                for n in order:
                    n.y = max(n.y - shift, low)
                    low = n.y + n.h + (VGAP if n.role != "dummy" else 6.0)

        def sweep_lr() -> None:
            for c, col in enumerate(cols):
                desired = {}
                for n in col:
                    ws = [_src_y(a, n, by) - by for by, a in in_of[id(n)]]
                    desired[id(n)] = sum(ws) / len(ws) if ws else n.y
                place(col, desired, keep_order=(c == 0))

        def _src_y(a: LNode, b: LNode, by: float) -> float:
            return a.y + seg_src_port[(id(a), id(b), by)]

        def sweep_rl() -> None:
            for c in range(ncols - 1, -1, -1):
                col = cols[c]
                desired = {}
                for n in col:
                    ws = [b.y + by - ay for ay, b, by in out_of[id(n)]]
                    desired[id(n)] = sum(ws) / len(ws) if ws else n.y
                place(col, desired, keep_order=(c == 0))

        # initial: stack each column
        for col in cols:
            y = 0.0
            for n in col:
                n.y = y
                y += n.h + VGAP
        sweep_lr()
        sweep_rl()
        sweep_lr()
        # x: column widths and gaps (room for the wire labels of wires leaving the column)
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
        for n in nodes:
            n.x = col_x[n.col] + (col_w[n.col] - n.w) / 2
        top = min(n.y for n in nodes)
        for n in nodes:
            n.y -= top - 4.0
        height = max(n.y + n.h for n in nodes) + 4.0
        arg_y = {n.wire: n.y + n.outs[0] for n in nodes if n.role == "arg"}
        out_y = [yld.y + p for p in yld.ins]
        return BlockLayout(block, nodes, edges, col_x, col_w, gap_label, width, height, arg_y, out_y, left_names)


def _spread(n: int, h: float, top: float = 0.0) -> list[float]:
    if n == 0:
        return []
    span = h - top
    return [top + span * (k + 0.5) / n for k in range(n)]


def _arg_title_max(block: Block, program: Program) -> str:
    names = [program.wires[a].name or "" for a in block.args]
    return max(names, key=len, default="")


def _axis_extent(box: Box, program: Program, axis: str) -> int | None:
    for i in box.inputs:
        arr = program.wires[i].array
        if axis in arr.axes:
            return arr.size(axis)
    return None


def _group_title(box: Box, program: Program) -> str:
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


def _stream_title(box: Box, program: Program) -> str:
    axis = str(box.attrs.get("axis", "?"))
    size = int(box.attrs.get("size", 0) or 0)
    total = _axis_extent(box, program, axis) or size
    steps = -(-total // size) if size else 0
    partial = f", last chunk {total - (steps - 1) * size}" if size and total % size else ""
    return f"stream partition  {axis}:{size}  ({steps} sequential steps over {axis}={total}{partial})"


# --------------------------------------------------------------------------------------
# Rendering the diagram


class Painter:
    def __init__(self, ax, program: Program) -> None:
        self.ax = ax
        self.p = program
        self.levels_seen: set[str | None] = set()

    def colour(self, wire: int) -> str:
        level = self.p.wires[wire].level
        self.levels_seen.add(level)
        return LEVEL_COLOURS.get(level, LEVEL_COLOURS[None])

    def text(self, x, y, s, size=FS, colour="black", ha="center", va="center", bold=False, italic=False, z=5):
        self.ax.text(
            x,
            y,
            s,
            fontsize=size,
            color=colour,
            ha=ha,
            va=va,
            family=FONT,
            fontweight="bold" if bold else "normal",
            fontstyle="italic" if italic else "normal",
            zorder=z,
        )

    def wire_label(self, x: float, y: float, wire: int) -> None:
        self.text(x + 3, y - 2.5, self.p.wires[wire].label(), FS_SMALL, self.colour(wire), ha="left", va="bottom", z=6)

    def block(self, lay: BlockLayout, ox: float, oy: float, names: bool = False) -> None:
        ncols = len(lay.col_x)
        labelled: set[tuple[int, int]] = set()
        for e in lay.edges:
            key = (id(e.src), e.sport)
            self.edge(lay, e, ox, oy, ncols, label=key not in labelled)
            labelled.add(key)
        for n in lay.nodes:
            if n.role == "box":
                self.node(n, ox, oy)
            elif n.role == "arg":
                y = oy + n.y + n.outs[0]
                x = ox + n.x
                c = self.colour(n.wire)
                self.ax.add_patch(patches.Circle((x, y), 2.2, color=c, zorder=4))
                if names and self.p.wires[n.wire].name:
                    self.text(x - 5, y, self.p.wires[n.wire].name, FS, c, ha="right", bold=True)
            elif n.role == "yield":
                for k, py in enumerate(n.ins):
                    y = oy + n.y + py
                    x = ox + n.x
                    c = self.colour(lay.block.results[k]) if k < len(lay.block.results) else "black"
                    self.ax.add_patch(patches.Circle((x, y), 2.2, color=c, zorder=4))
                    if names:
                        self.text(x + 5, y, "result", FS, c, ha="left", bold=True)

    def edge(self, lay: BlockLayout, e: Edge, ox: float, oy: float, ncols: int, label: bool = True) -> None:
        c = self.colour(e.wire)
        pts: list[tuple[float, float]] = []
        codes: list[int] = []
        sx = ox + e.src.x + e.src.w
        sy = oy + e.src.out_y(e.sport)
        pts.append((sx, sy))
        codes.append(MPath.MOVETO)
        col = e.src.col
        x_col_end = ox + lay.col_x[col] + lay.col_w[col]
        if x_col_end > sx:
            pts.append((x_col_end, sy))
            codes.append(MPath.LINETO)
        if label:
            self.wire_label(x_col_end, sy, e.wire)
        cur = (x_col_end, sy)
        chain = [*e.dummies, e.dst]
        for k, n in enumerate(chain):
            ny = oy + (n.y + 5.0 if n.role == "dummy" else n.in_y(e.dport))
            nx = ox + lay.col_x[n.col]
            gap_start = ox + lay.col_x[n.col - 1] + lay.col_w[n.col - 1]
            bend_start = gap_start + (lay.gap_label[n.col - 1] if k == 0 else 0.0)
            bend_start = min(bend_start, nx - 6)
            if abs(ny - cur[1]) < 0.5:
                pts.append((nx, ny))
                codes.append(MPath.LINETO)
            else:
                pts.append((bend_start, cur[1]))
                codes.append(MPath.LINETO)
                mid = (bend_start + nx) / 2
                pts += [(mid, cur[1]), (mid, ny), (nx, ny)]
                codes += [MPath.CURVE4] * 3
            if n.role == "dummy":
                pts.append((nx + lay.col_w[n.col], ny))
                codes.append(MPath.LINETO)
                cur = (nx + lay.col_w[n.col], ny)
            else:
                tx = ox + n.x
                if tx > nx:
                    pts.append((tx, ny))
                    codes.append(MPath.LINETO)
        self.ax.add_patch(patches.PathPatch(MPath(pts, codes), fill=False, edgecolor=c, lw=1.6, zorder=2))

    def node(self, n: LNode, ox: float, oy: float) -> None:
        box = n.box
        x, y, w, h = ox + n.x, oy + n.y, n.w, n.h
        if n.inner is not None:
            self.container(n, x, y)
            return
        out_c = self.colour(box.outputs[0]) if box.outputs else LEVEL_COLOURS[None]
        lines = _lines(box, self.p)
        woven = _woven(box, self.p)
        band = 10.0 if woven else 0.0
        k = box.kind
        face = {
            "contract": "#f5eef8",
            "unary": "#fef9e7",
            "binary": "#fef9e7",
            "cast": "#f4f6f6",
            "reduce": "#e8f8f5",
            "softmax": "#fdedec",
            "mask": "#f2f3f4",
            "map": "#eafaf1",
            "fill": "#ffffff",
        }.get(k, "#ffffff")
        lw = 1.4
        ax = self.ax
        if k == "transfer":
            src_c = self.colour(box.inputs[0]) if box.inputs else LEVEL_COLOURS[None]
            tip = min(8.0, h / 3)
            left = [(x, y), (x + w / 2, y), (x + w / 2, y + h), (x, y + h)]
            right = [(x + w / 2, y), (x + w - tip, y), (x + w, y + h / 2), (x + w - tip, y + h), (x + w / 2, y + h)]
            ax.add_patch(patches.Polygon(left, closed=True, facecolor=_tint(src_c), edgecolor="none", zorder=3))
            ax.add_patch(patches.Polygon(right, closed=True, facecolor=_tint(out_c), edgecolor="none", zorder=3))
            outline = [(x, y), (x + w - tip, y), (x + w, y + h / 2), (x + w - tip, y + h), (x, y + h)]
            ax.add_patch(patches.Polygon(outline, closed=True, fill=False, edgecolor="#333333", lw=1.0, zorder=4))
            self.text(x + w / 2 - 2, y + h / 2 - 5, lines[0], FS, "black", bold=True)
            self.text(x + w / 2 - 2, y + h / 2 + 6, lines[1], FS_SMALL, "#333333")
            return
        if k == "reduce":
            inset = min(8.0, h / 4)
            poly = [(x, y), (x + w, y + inset), (x + w, y + h - inset), (x, y + h)]
            ax.add_patch(patches.Polygon(poly, closed=True, facecolor=face, edgecolor=out_c, lw=lw, zorder=3))
        elif k == "softmax":
            ax.add_patch(patches.Rectangle((x, y), w, h, facecolor=face, edgecolor=out_c, lw=lw, zorder=3))
            ax.add_patch(
                patches.Rectangle((x + 2.5, y + 2.5), w - 5, h - 5, fill=False, edgecolor=out_c, lw=0.8, zorder=3)
            )
        elif k == "contract" or k == "other":
            ax.add_patch(patches.Rectangle((x, y), w, h, facecolor=face, edgecolor=out_c, lw=lw + 0.4, zorder=3))
        else:
            style = {
                "binary": f"round,pad=0,rounding_size={min(h, w) / 3:.1f}",
                "mask": "sawtooth,pad=0,tooth_size=3",
                "map": "roundtooth,pad=0,tooth_size=3",
                "fill": "round,pad=0,rounding_size=3",
            }.get(k, "round,pad=0,rounding_size=5")
            ax.add_patch(
                patches.FancyBboxPatch(
                    (x, y),
                    w,
                    h,
                    boxstyle=style,
                    facecolor=face,
                    edgecolor=out_c,
                    lw=lw,
                    ls="--" if k in ("fill", "cast") else "-",
                    zorder=3,
                )
            )
        if woven:
            ax.plot(
                [x - 5, x + w + 5], [y + band, y + band], color=BAND_COLOUR, lw=0.8, zorder=4, solid_capstyle="butt"
            )
            self.text(x + w / 2, y + band / 2 + 0.5, " ".join(woven), FS_SMALL, BAND_COLOUR, italic=True)
        body_top = y + band
        body_h = h - band
        nl = len(lines)
        for i, s in enumerate(lines):
            cy = body_top + body_h * (i + 0.5) / nl
            self.text(x + w / 2, cy, s, FS, "black", bold=(i == 0 and nl > 1) or k == "binary")

    def container(self, n: LNode, x: float, y: float) -> None:
        inner = n.inner
        ax = self.ax
        group = inner.kind == "group"
        colour = GROUP_COLOUR if group else STREAM_COLOUR
        ax.add_patch(
            patches.FancyBboxPatch(
                (x, y),
                n.w,
                n.h,
                boxstyle="round,pad=0,rounding_size=6",
                facecolor="#fbf7fd" if group else "#fef9f0",
                edgecolor=colour,
                lw=1.8 if group else 2.2,
                ls=(0, (5, 3)) if group else "solid",
                zorder=1,
            )
        )
        self.text(x + FPAD, y + FRAME_TITLE / 2 + 1, inner.title, FS, colour, ha="left", bold=True)
        if not group:
            captions = {"init": "init (head)", "step": "step: each chunk (accumulator update)", "finish": "finish"}
            for role, lay, px, py in inner.parts:
                rx, ry = x + px - FPAD / 2, y + py - COMPARTMENT_TITLE
                rw, rh = lay.w + FPAD, lay.h + COMPARTMENT_TITLE + FPAD / 2
                ax.add_patch(
                    patches.Rectangle(
                        (rx, ry), rw, rh, facecolor="white", edgecolor=STREAM_COLOUR, lw=0.8, ls=":", zorder=1.5
                    )
                )
                self.text(
                    rx + 3, ry + COMPARTMENT_TITLE / 2, captions[role], FS_SMALL, STREAM_COLOUR, ha="left", italic=True
                )
            if inner.carry:
                xl, xr, yc = inner.carry
                xl, xr, yc = x + xl, x + xr, y + yc
                y0 = yc - CARRY / 2
                loop = MPath(
                    [(xr, y0), (xr, yc), (xl, yc), (xl, y0)], [MPath.MOVETO, MPath.LINETO, MPath.LINETO, MPath.LINETO]
                )
                ax.add_patch(
                    patches.FancyArrowPatch(
                        path=loop, arrowstyle="-|>", mutation_scale=10, color=STREAM_COLOUR, lw=1.3, zorder=2
                    )
                )
                self.text((xl + xr) / 2, yc - 5, "carried state → next step", FS_SMALL, STREAM_COLOUR, italic=True)
        for wire, x0, y0, x1, y1 in inner.links:
            c = self.colour(wire)
            if abs(y1 - y0) < 0.5:
                ax.plot([x + x0, x + x1], [y + y0, y + y1], color=c, lw=1.6, zorder=2)
            else:
                mid = (x0 + x1) / 2
                path = MPath(
                    [(x + x0, y + y0), (x + mid, y + y0), (x + mid, y + y1), (x + x1, y + y1)],
                    [MPath.MOVETO, MPath.CURVE4, MPath.CURVE4, MPath.CURVE4],
                )
                ax.add_patch(patches.PathPatch(path, fill=False, edgecolor=c, lw=1.6, zorder=2))
            if x0 > 0 and x1 - x0 > 40:
                self.wire_label(x + x0, y + y0, wire)
        for wire_y in n.ins:
            ax.add_patch(patches.Rectangle((x - 2, y + wire_y - 3), 4, 6, color="#333333", zorder=4))
        for wire_y in n.outs:
            ax.add_patch(patches.Rectangle((x + n.w - 2, y + wire_y - 3), 4, 6, color="#333333", zorder=4))
        for _, lay, px, py in inner.parts:
            self.block(lay, x + px, y + py)


def _tint(colour: str, amount: float = 0.72) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


# --------------------------------------------------------------------------------------
# Cost caption


def cost_lines(module: ir.Module, gpu: str | None, dtype: str | None) -> list[str]:
    """Per-level transfer volume and peak memory from `napkin_mlir.model.cost`, or [] when unavailable."""
    if gpu is None:
        return []
    try:
        from napkin_mlir.model import cost

        report = cost.analyze(module, gpu, dtype)
        levels = list(report.levels)
    except (ImportError, NapkinError):
        return []
    except Exception:  # the caption is optional: never let the model break a drawing
        return []
    lines = []
    for lv in levels:
        get = (lambda k, lv=lv: lv.get(k)) if isinstance(lv, dict) else (lambda k, lv=lv: getattr(lv, k, None))
        name = get("name")
        if name is None:
            continue
        parts = [f"{name}:"]
        if get("transfer_bytes") is not None:
            parts.append(f"H = {format_bytes(float(get('transfer_bytes')))} moved")
        if get("peak_bytes") is not None:
            peak = f"M = {format_bytes(float(get('peak_bytes')))} peak"
            cap = get("capacity_bytes")
            if cap:
                peak += f" of {format_bytes(float(cap))}"
            parts.append(peak)
        lines.append(" ".join(parts[:1]) + " " + ", ".join(parts[1:]))
    if not lines:
        return []
    return [f"cost model ({gpu}): " + "   ".join(lines)]


# --------------------------------------------------------------------------------------
# Figure assembly


def _save(fig: Figure, path: Path) -> None:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"output '{path}': unsupported extension (expected .png or .svg)")
    try:
        if fmt == "svg":
            with rc_context({"svg.fonttype": "none", "svg.hashsalt": "napkin"}):
                fig.savefig(path, format="svg", metadata={"Date": None})
        else:
            # an adaptive 256-colour palette keeps the PNGs small (they are mostly white)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
            buf.seek(0)
            with Image.open(buf) as im:
                im.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)
    except OSError as err:
        raise NapkinError(f"cannot write '{path}': {err.strerror or err}") from None


def _legend(painter: Painter, x: float, y: float, items: list[tuple[str, str, str]]) -> float:
    """Draw legend items (kind, colour, text) in one row from (x, y); returns the row's width."""
    ax = painter.ax
    for kind, colour, label in items:
        if kind == "wire":
            ax.plot([x, x + 18], [y, y], color=colour, lw=2.2)
        elif kind == "group":
            ax.add_patch(patches.Rectangle((x, y - 5), 18, 10, fill=False, edgecolor=colour, ls=(0, (3, 2)), lw=1.4))
        elif kind == "stream":
            ax.add_patch(patches.Rectangle((x, y - 5), 18, 10, fill=False, edgecolor=colour, lw=1.8))
        elif kind == "band":
            ax.add_patch(patches.Rectangle((x + 4, y - 5), 10, 10, fill=False, edgecolor="#555555", lw=1.0))
            ax.plot([x, x + 18], [y - 2, y - 2], color=colour, lw=0.8)
        painter.text(x + 22, y, label, FS, "black", ha="left")
        x += 22 + text_width(label, FS) + 16
    return x


def _figure(width: float, height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(width / 72, height / 72))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    return fig, ax


def render_diagram(program: Program, path: Path, title: str, caption: list[str]) -> None:
    lay = Layout(program).block(program.body, left_names=True)
    margin = 14.0
    title_h = 26.0
    legend_items: list[tuple[str, str, str]] = []
    levels = {w.level for w in program.wires.values()}
    for lv in (*LEVEL_ORDER, None):
        if lv in levels or (lv is not None and levels - {None}):
            legend_items.append(("wire", LEVEL_COLOURS[lv], LEVEL_NAMES[lv]))
    kinds = {b.name for b in program.walk()}
    legend_items.append(("band", BAND_COLOUR, "woven axes (pass through)"))
    if "group" in kinds:
        legend_items.append(("group", GROUP_COLOUR, "group partition (parallel)"))
    if "stream" in kinds:
        legend_items.append(("stream", STREAM_COLOUR, "stream partition (sequential)"))
    legend_w = sum(22 + text_width(t, FS) + 16 for _, _, t in legend_items)
    cap_w = max([text_width(c, FS) for c in caption] + [0.0])
    width = max(lay.w + 2 * margin, legend_w + 2 * margin, cap_w + 2 * margin, text_width(title, FS_TITLE, True) + 30)
    height = title_h + lay.h + 2 * margin + 22 + 14 * len(caption) + 6
    fig, ax = _figure(width, height)
    painter = Painter(ax, program)
    painter.text(margin, title_h / 2 + 4, title, FS_TITLE, "black", ha="left", bold=True)
    ox = margin + max(0.0, (width - 2 * margin - lay.w) / 2)
    painter.block(lay, ox, title_h + margin, names=True)
    y = title_h + margin + lay.h + margin + 6
    _legend(painter, margin, y, legend_items)
    for i, c in enumerate(caption):
        painter.text(margin, y + 18 + 14 * i, c, FS, "#333333", ha="left")
    _save(fig, path)


# --------------------------------------------------------------------------------------
# Pseudocode: one column per step, buffers per level


@dataclass
class Step:
    box: Box
    phase: str  # "", "init", "step", "finish"
    loops: tuple[tuple[str, str, int], ...]  # (kind, title, id) from the outside in


def _steps(program: Program) -> list[Step]:
    steps: list[Step] = []

    def visit(block: Block, loops: tuple, phase: str) -> None:
        for box in block.boxes:
            if box.name == "group":
                visit(box.regions[0], (*loops, ("group", _group_title(box, program), box.id)), phase)
            elif box.name == "stream":
                init, step, fin = box.regions
                visit(init, loops, "init")
                visit(step, (*loops, ("stream", _stream_title(box, program), box.id)), "step")
                visit(fin, loops, "finish")
            else:
                steps.append(Step(box, phase, loops))

    visit(program.body, (), "")
    return steps


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


@dataclass
class Buffer:
    root: int
    name: str
    level: str | None
    label: str
    nbytes: int
    first: int
    last: int


def _buffers(program: Program, steps: list[Step]) -> tuple[list[Buffer], Callable[[int], int]]:
    uf = _Union()
    for w in program.wires:
        uf.find(w)

    def link(block: Block) -> None:
        for box in block.boxes:
            if box.name == "group":
                body = box.regions[0]
                for a, o in zip(body.args, box.inputs, strict=False):
                    uf.union(a, o)
                for r, o in zip(body.results, box.outputs, strict=False):
                    uf.union(r, o)
                link(body)
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
                    link(b)

    link(program.body)
    # names: function arguments by name, results "out", transfers keep their source's name
    counts: dict[str, int] = {}
    names: dict[int, str] = {}
    for i, a in enumerate(program.body.args):
        names[uf.find(a)] = program.wires[a].name or f"arg{i}"
    for r in program.body.results:
        names.setdefault(uf.find(r), "out")
    for st in steps:
        box = st.box
        for o in box.outputs:
            root = uf.find(o)
            if root in names:
                continue
            if box.kind == "transfer" and box.inputs:
                names[root] = names.get(uf.find(box.inputs[0]), "t")
                continue
            base = {"contract": "S", "reduce": "r", "fill": "acc"}.get(box.kind, box.name)
            counts[base] = counts.get(base, 0) + 1
            names[root] = f"{base}{counts[base]}"
    # live ranges (step indices); uses inside a loop keep outer buffers live through the loop
    loop_span: dict[int, tuple[int, int]] = {}
    for i, st in enumerate(steps):
        for _, _, lid in st.loops:
            lo, hi = loop_span.get(lid, (i, i))
            loop_span[lid] = (min(lo, i), max(hi, i))
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    def_loops: dict[int, tuple] = {}
    n_steps = len(steps)
    for i, st in enumerate(steps):
        for o in st.box.outputs:
            r = uf.find(o)
            if r not in first or i < first[r]:
                first[r] = i
                def_loops[r] = st.loops
            last[r] = max(last.get(r, i), i)
        for v in st.box.inputs:
            r = uf.find(v)
            hi = i
            outer = {lid for _, _, lid in def_loops.get(r, ())}
            for kind, _, lid in st.loops:
                if kind == "stream" and lid not in outer:
                    hi = max(hi, loop_span[lid][1])
            last[r] = max(last.get(r, hi), hi)
            first.setdefault(r, 0)
    for a in program.body.args:
        r = uf.find(a)
        first[r] = 0
        last[r] = n_steps - 1
    for res in program.body.results:
        last[uf.find(res)] = n_steps - 1
        if program.wires[res].level == "gmem":  # the output array exists before the kernel runs
            first[uf.find(res)] = 0
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


def _step_label(st: Step, program: Program) -> list[str]:
    lines = _lines(st.box, program)
    if st.box.kind == "transfer":
        return [lines[0], lines[1]]
    return [" ".join(lines)]


def render_pseudocode(program: Program, path: Path, title: str, caption: list[str]) -> None:
    steps = _steps(program)
    if not steps:
        raise NapkinError("nothing to draw: the diagram has no operations")
    buffers, find = _buffers(program, steps)
    lanes = [lv for lv in LEVEL_ORDER if any(b.level == lv for b in buffers)]
    if any(b.level is None for b in buffers):
        lanes.append(None)
    line_h = 11.0
    live: list[dict[str | None, list[Buffer]]] = []
    for i in range(len(steps)):
        per = {lv: [b for b in buffers if b.level == lv and b.first <= i <= b.last] for lv in lanes}
        live.append(per)
    totals = [{lv: sum(b.nbytes for b in live[i][lv]) for lv in lanes} for i in range(len(steps))]
    peaks = {lv: max(t[lv] for t in totals) for lv in lanes}
    lane_h = {lv: (max(len(live[i][lv]) for i in range(len(steps))) + 1) * line_h + 10 for lv in lanes}
    defined = [{find(o) for o in st.box.outputs} for st in steps]
    # column widths
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
    margin = 14.0
    title_h = 26.0
    loop_h = 16.0
    head_h = 28.0
    lane_title_w = max(text_width(LEVEL_NAMES[lv], FS, True) for lv in lanes) + 14
    peak_w = max(text_width(f"peak {format_bytes(peaks[lv])}", FS, True) for lv in lanes) + 16
    grid_w = sum(col_w)
    width = margin * 2 + lane_title_w + grid_w + peak_w
    cap_w = max([text_width(c, FS) for c in caption] + [0.0])
    width = max(width, cap_w + 2 * margin, text_width(title, FS_TITLE, True) + 2 * margin)
    top = title_h + margin + depth * loop_h
    height = top + head_h + sum(lane_h[lv] for lv in lanes) + margin + 14 * len(caption) + 10
    fig, ax = _figure(width, height)
    painter = Painter(ax, program)
    painter.text(margin, title_h / 2 + 4, title, FS_TITLE, "black", ha="left", bold=True)
    x0 = margin + lane_title_w
    xs = [x0]
    for w in col_w:
        xs.append(xs[-1] + w)
    # loop brackets
    for d in range(depth):
        i = 0
        while i < len(steps):
            if len(steps[i].loops) > d:
                lid = steps[i].loops[d][2]
                j = i
                while j + 1 < len(steps) and len(steps[j + 1].loops) > d and steps[j + 1].loops[d][2] == lid:
                    j += 1
                kind, text, _ = steps[i].loops[d]
                colour = GROUP_COLOUR if kind == "group" else STREAM_COLOUR
                y = title_h + margin + d * loop_h
                ax.add_patch(
                    patches.Rectangle(
                        (xs[i] + 1, y),
                        xs[j + 1] - xs[i] - 2,
                        loop_h - 3,
                        facecolor=_tint(colour, 0.85),
                        edgecolor=colour,
                    )
                )
                label = ("parallel: " if kind == "group" else "for each chunk: ") + text.split("  ", 1)[1]
                avail = xs[j + 1] - xs[i] - 8
                while label and text_width(label, FS_SMALL) > avail:
                    label = label[:-2] + "…" if len(label) > 2 else ""
                    if label == "…":
                        break
                painter.text(xs[i] + 4, y + loop_h / 2 - 1, label, FS_SMALL, colour, ha="left", bold=True)
                i = j + 1
            else:
                i += 1
    # headers
    for i, st in enumerate(steps):
        lab = _step_label(st, program)
        for k, s in enumerate(lab):
            painter.text(xs[i] + col_w[i] / 2, top + 8 + 10 * k, s, FS_SMALL, "black", bold=True)
        if st.phase in ("init", "finish"):
            painter.text(xs[i] + col_w[i] / 2, top + head_h - 4, st.phase, FS_SMALL, STREAM_COLOUR, italic=True)
    y = top + head_h
    lane_top: dict[str | None, float] = {}
    for lv in lanes:
        lane_top[lv] = y
        c = LEVEL_COLOURS[lv]
        ax.add_patch(
            patches.Rectangle(
                (margin, y), lane_title_w + grid_w, lane_h[lv], facecolor=_tint(c, 0.93), edgecolor=c, lw=1.0
            )
        )
        painter.text(margin + 5, y + 10, LEVEL_NAMES[lv], FS, c, ha="left", bold=True)
        for i in range(len(steps)):
            cy = y + 10
            for b in live[i][lv]:
                is_def = b.root in defined[i]
                painter.text(
                    xs[i] + 5,
                    cy,
                    f"{b.name} {b.label}",
                    FS_SMALL,
                    c if is_def else _mix(c),
                    ha="left",
                    bold=is_def,
                )
                cy += line_h
            is_peak = totals[i][lv] == peaks[lv] and peaks[lv] > 0
            painter.text(
                xs[i] + 5,
                y + lane_h[lv] - 7,
                format_bytes(totals[i][lv]),
                FS_SMALL,
                "#b03a2e" if is_peak else "#555555",
                ha="left",
                bold=is_peak,
            )
        painter.text(xs[-1] + 8, y + lane_h[lv] / 2, f"peak {format_bytes(peaks[lv])}", FS, c, ha="left", bold=True)
        y += lane_h[lv]
    for x in xs[1:-1]:
        ax.plot([x, x], [top, y], color="#d5d8dc", lw=0.6, zorder=0)
    # transfers: an arrow from the source lane to the destination lane
    for i, st in enumerate(steps):
        if st.box.kind != "transfer" or not st.box.inputs or not st.box.outputs:
            continue
        a, b = program.wires[st.box.inputs[0]].level, program.wires[st.box.outputs[0]].level
        if a in lane_top and b in lane_top:
            ya, yb = lane_top[a] + lane_h[a] / 2, lane_top[b] + lane_h[b] / 2
            xa = xs[i + 1] - 5
            ax.annotate(
                "",
                xy=(xa, yb),
                xytext=(xa, ya),
                arrowprops={"arrowstyle": "-|>", "color": LEVEL_COLOURS[b], "lw": 1.6},
                zorder=6,
            )
    for i, c in enumerate(caption):
        painter.text(margin, y + margin + 14 * i, c, FS, "#333333", ha="left")
    _save(fig, path)


def _mix(colour: str) -> tuple[float, float, float]:
    return _tint(colour, 0.35)


# --------------------------------------------------------------------------------------
# Entry point


def draw(
    module: ir.Module,
    path: str | Path,
    *,
    title: str | None = None,
    pseudocode: bool = False,
    gpu: str | None = "a100",
    dtype: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Render the first napkin function of `module` to `path` (.png or .svg); returns the path."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise UsageError(f"output '{path}': unsupported extension (expected .png or .svg)")
    program = extract(module)
    stage = stage_of(program)
    title = title or f"{program.name}: {stage}"
    caption = cost_lines(module, gpu, dtype)
    if pseudocode:
        render_pseudocode(program, path, title + " — pseudocode", caption)
    else:
        render_diagram(program, path, title, caption)
    log(f"wrote {path}")
    return path
