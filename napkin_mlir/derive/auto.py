"""Automatic derivation: the relabeling pipeline of any diagram, with one reason per decision.

The paper derives FlashAttention by hand: weave b and h, group q, stream x, keep the scores
low. `derive(module, ...)` makes the same decisions for any plain diagram (one function of
napkin ops), from the program itself:

* **levels**: `napkin-assign-levels` with fusion: every intermediate stays at the lowest
  level, so no array that is not an input or an output travels through global memory;
* **groups**: an axis can be grouped when every output has it and no box reduces,
  normalizes or contracts over it; it is grouped only when every box's result has it too
  (otherwise each group would recompute the boxes without it, as the mlp's first layer has
  no `n`). A grouped axis that every input has gives no reuse: it is *woven*, one slice per
  group (attention's b and h); the others are *tiled* (q; matmul's m and n);
* **stream**: the reduced axes that no output keeps are the candidates, largest first; the
  first one `napkin-stream-partition` proves streamable is streamed (its refusals of the
  others are reported as reasons);
* **tiles**: `--tile` first, then, with a GPU, the cost model's choice over the derived
  program (`derive.tiles.search`), else `DEFAULT_TILE`.

The result is a pipeline string that `napkin-opt --pass-pipeline=` accepts unchanged.

Before (matmul):

    %c = "napkin.contract"(%a, %b) : (tensor<300x100xf32, {axes = ["m", "k"]}>, ...) -> tensor<300x200xf32, ...>

After `derive`: `builtin.module(napkin-verify,napkin-assign-levels,napkin-group-partition{axes=m,n
sizes=64,64 level=grid},napkin-stream-partition{axis=k size=64},napkin-verify)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlir import ir

from napkin_mlir.derive.tiles import search
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_location
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.model.cost import extract
from napkin_mlir.model.hardware import gpu as load_gpu
from napkin_mlir.pipeline.passmanager import run_pipeline

#: Tile of a grouped or streamed axis when neither --tile nor a GPU's cost model gives one.
DEFAULT_TILE = 64

PARTITION_OPS = ("napkin.group", "napkin.stream")


@dataclass
class Derivation:
    """A derivation: what is grouped (woven or tiled), what is streamed, the tiles, and why."""

    woven: list[str] = field(default_factory=list)
    tiled: list[str] = field(default_factory=list)
    streamed: str | None = None
    tiles: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    filename: str | None = None

    def pipeline(self, sizes: dict[str, int] | None = None) -> str:
        """The relabeling pipeline (diagram -> partitioned), for `napkin-opt --pass-pipeline=`."""
        steps = ["napkin-verify", "napkin-assign-levels"]
        grouped = [*self.woven, *self.tiled]
        if grouped:
            group_sizes = [1] * len(self.woven) + [self.tiles[a] for a in self.tiled]
            steps.append(
                f"napkin-group-partition{{axes={','.join(grouped)} sizes={','.join(map(str, group_sizes))} level=grid}}"
            )
        if self.streamed:
            steps.append(f"napkin-stream-partition{{axis={self.streamed} size={self.tiles[self.streamed]}}}")
        steps.append("napkin-verify")
        return f"builtin.module({','.join(steps)})"


def _the_diagram(module: ir.Module, filename: str | None) -> ir.Operation:
    functions = diagram_functions(module.operation)
    if len(functions) != 1:
        raise UsageError(f"derive: expected one diagram function, found {len(functions)}")
    f = functions[0]
    for op in f.regions[0].blocks[0].operations:
        if op.operation.name in PARTITION_OPS:
            raise NapkinError(
                f"{format_location(op.operation.location, filename)}: derive: '{op.operation.name}': the diagram is already "
                "partitioned (derive takes a plain diagram)"
            )
    return f


def _boxes(f: ir.Operation) -> list[ir.Operation]:
    return [op.operation for op in f.regions[0].blocks[0].operations if op.operation.name.startswith("napkin.")]


def _reduced_axes(op: ir.Operation) -> set[str]:
    """Axes a box needs whole: contracted, reduced or normalized over."""
    name = op.name
    if name == "napkin.contract":
        ins = {a for v in op.operands for a in ArrayType.from_mlir(v.type).axes}
        return ins - set(ArrayType.from_mlir(op.results[0].type).axes)
    if name in ("napkin.reduce", "napkin.softmax"):
        return {ir.StringAttr(op.attributes["axis"]).value}
    return set()


def _sizes(f: ir.Operation) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for arg in f.regions[0].blocks[0].arguments:
        sizes.update(ArrayType.from_mlir(arg.type).sizes)
    return sizes


#: Boxes that change an array's type or level but do no work a group could share.
PASS_THROUGH = ("napkin.cast", "napkin.scale", "napkin.transfer")


def _direct_inputs(v: ir.Value) -> set[int]:
    """Argument numbers `v` is, up to casts, scales and transfers."""
    if isinstance(v.owner, ir.Block):
        return {ir.BlockArgument(v).arg_number}
    op = v.owner
    if op.name in PASS_THROUGH:
        return _direct_inputs(op.operands[0])
    return set()


def _input_like(op: ir.Operation) -> bool:
    """A box computed from inputs alone by pass-through boxes (a cast of a bias table):
    recomputing it in every group costs no more than loading the input again. A fill (a
    constant) reads nothing at all."""
    if op.name == "napkin.fill":
        return True
    if op.name not in PASS_THROUGH:
        return False
    v = op.operands[0]
    return isinstance(v.owner, ir.Block) or _input_like(v.owner)


def _name(f: ir.Operation, number: int) -> str:
    if "arg_names" in f.attributes:
        return ir.StringAttr(ir.ArrayAttr(f.attributes["arg_names"])[number]).value
    return f"%arg{number}"


def decide_groups(f: ir.Operation, d: Derivation) -> None:
    """Which axes are grouped, and whether each is woven or tiled (module docstring)."""
    block = f.regions[0].blocks[0]
    ret = block.operations[len(block.operations) - 1]
    outputs = [ArrayType.from_mlir(v.type) for v in ret.operands]
    boxes = _boxes(f)
    reduced = set().union(*(_reduced_axes(op) for op in boxes)) if boxes else set()
    contracted = sorted(
        {n for op in boxes if op.name == "napkin.contract" for v in op.operands for n in _direct_inputs(v)}
    )
    for axis in outputs[0].axes if outputs else ():
        if not all(axis in o.axes for o in outputs):
            d.reasons.append(f"{axis}: not grouped: an output lacks it")
            continue
        if axis in reduced:
            box = next(op for op in boxes if axis in _reduced_axes(op))
            d.reasons.append(
                f"{axis}: not grouped: '{box.name}' at {format_location(box.location, d.filename)} needs it whole"
            )
            continue
        lacking = [
            op for op in boxes if axis not in ArrayType.from_mlir(op.results[0].type).axes and not _input_like(op)
        ]
        if lacking:
            box = lacking[0]
            d.reasons.append(
                f"{axis}: not grouped: '{box.name}' at {format_location(box.location, d.filename)} computes a result without it, "
                "which every group would recompute"
            )
            continue
        reused = [n for n in contracted if axis not in ArrayType.from_mlir(block.arguments[n].type).axes]
        if reused:
            d.tiled.append(axis)
            names = ", ".join(_name(f, n) for n in reused)
            d.reasons.append(f"{axis}: group tiles: the contractions reuse {names} (which lack {axis}) across a tile")
        else:
            d.woven.append(axis)
            d.reasons.append(f"{axis}: woven, one slice per group: every contracted input has it, nothing is reused")


def decide_stream(module: ir.Module, f: ir.Operation, d: Derivation, tiles: dict[str, int]) -> None:
    """The largest reduced axis that no output keeps and the stream pass accepts."""
    block = f.regions[0].blocks[0]
    ret = block.operations[len(block.operations) - 1]
    kept = {a for v in ret.operands for a in ArrayType.from_mlir(v.type).axes}
    sizes = _sizes(f)
    reduced = set().union(*(_reduced_axes(op) for op in _boxes(f))) if _boxes(f) else set()
    candidates = sorted((a for a in reduced if a not in kept), key=lambda a: (-sizes[a], a))
    if not candidates:
        d.reasons.append("no stream: no reduced axis outside the outputs")
        return
    for axis in candidates:
        trial = Derivation(d.woven, d.tiled, axis, {**_defaults(d, sizes, tiles), axis: min(DEFAULT_TILE, sizes[axis])})
        copy = ir.Module.parse(str(module))
        try:
            run_pipeline(copy, trial.pipeline(), filename=d.filename)
        except NapkinError as err:
            first = str(err).splitlines()[0]
            if d.filename and first.startswith("-:"):  # the parser names its buffer "-"
                first = d.filename + first[1:]
            d.reasons.append(f"{axis}: not streamed: {first}")
            continue
        d.streamed = axis
        d.reasons.append(f"{axis}: streamed in chunks (the stream partition proved it streamable)")
        return
    d.reasons.append("no stream: no reduced axis is streamable")


def _defaults(d: Derivation, sizes: dict[str, int], tiles: dict[str, int]) -> dict[str, int]:
    return {a: min(tiles.get(a, DEFAULT_TILE), sizes[a]) for a in d.tiled}


def _check_tiles(tiles: dict[str, int], d: Derivation, sizes: dict[str, int]) -> None:
    allowed = [*d.tiled, *([d.streamed] if d.streamed else [])]
    for axis, size in tiles.items():
        if axis not in allowed:
            raise UsageError(
                f"--tile: axis '{axis}' is not tiled by this derivation (tileable axes: {', '.join(allowed) or 'none'})"
            )
        if size > sizes[axis]:
            raise UsageError(f"--tile: tile {axis}={size} is larger than the axis ({axis}={sizes[axis]})")


def derive(
    module: ir.Module,
    tiles: dict[str, int] | None = None,
    gpu: str | None = None,
    dtype: str | None = None,
    defaults: dict[str, int] | None = None,
    filename: str | None = None,
) -> Derivation:
    """Decide the relabelings of `module`'s diagram (needs its context active). `tiles` pins
    tile sizes by axis; `gpu` lets the cost model choose the others; `defaults` replace
    `DEFAULT_TILE` for named axes (the built-ins keep their historical defaults)."""
    f = _the_diagram(module, filename)
    sizes = _sizes(f)
    tiles = dict(tiles or {})
    d = Derivation(filename=filename)
    d.reasons.append("levels: napkin-assign-levels with fusion: intermediates stay in registers")
    decide_groups(f, d)
    decide_stream(module, f, d, tiles)
    _check_tiles(tiles, d, sizes)
    chosen = {**(defaults or {}), **tiles}
    tileable = [*d.tiled, *([d.streamed] if d.streamed else [])]
    d.tiles = {a: min(chosen.get(a, DEFAULT_TILE), sizes[a]) for a in tileable}
    _fit_grid(d, sizes)
    if gpu and tileable:
        d.tiles = _model_tiles(module, d, gpu, dtype, tiles, sizes)
        d.reasons.append(f"tiles: {_fmt(d.tiles)} chosen by the cost model for {gpu} ({_fmt(tiles) or 'none'} fixed)")
    elif tileable:
        d.reasons.append(f"tiles: {_fmt(d.tiles)} ({'given by --tile' if tiles else 'defaults'}; --gpu asks the model)")
    return d


#: Grid dimensions a group partition maps onto (CUDA's x, y, z).
GRID_DIMS = 3


def _fit_grid(d: Derivation, sizes: dict[str, int]) -> None:
    """At most `GRID_DIMS` grouped axes: tiled axes whose tile is the whole axis are left whole
    (smallest first), since one group along them changes nothing."""
    whole = sorted((a for a in d.tiled if d.tiles[a] >= sizes[a]), key=lambda a: (sizes[a], a))
    while len(d.woven) + len(d.tiled) > GRID_DIMS and whole:
        axis = whole.pop(0)
        d.tiled.remove(axis)
        del d.tiles[axis]
        d.reasons.append(
            f"{axis}: left whole in every group (its tile is the whole axis; the grid has {GRID_DIMS} dimensions)"
        )
    woven = sorted(d.woven, key=lambda a: (sizes[a], a))  # then woven axes: a group takes the whole axis
    while len(d.woven) + len(d.tiled) > GRID_DIMS and woven:
        axis = woven.pop(0)
        d.woven.remove(axis)
        d.reasons.append(
            f"{axis}: left whole in every group (the smallest woven axis; the grid has {GRID_DIMS} dimensions)"
        )
    if len(d.woven) + len(d.tiled) > GRID_DIMS:
        raise UsageError(
            f"derive: {len(d.woven) + len(d.tiled)} grouped axes ({', '.join([*d.woven, *d.tiled])}) do not fit the "
            f"{GRID_DIMS} grid dimensions; fix the tile of one of them to its whole size with --tile"
        )


def _fmt(tiles: dict[str, int]) -> str:
    return ",".join(f"{a}={s}" for a, s in tiles.items())


def _model_tiles(
    module: ir.Module, d: Derivation, gpu: str, dtype: str | None, fixed: dict[str, int], sizes: dict[str, int]
) -> dict[str, int]:
    copy = ir.Module.parse(str(module))
    run_pipeline(copy, d.pipeline())
    prog = extract(copy)
    hw = load_gpu(gpu)
    choice = search(prog, hw, dtype, "the diagram", sizes, fixed)
    return {a: choice.tiles.get(a, d.tiles[a]) for a in d.tiles}
