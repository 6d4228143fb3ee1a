"""The derivation's decisions: which axes are grouped (woven or tiled), which are streamed
(and nested), at default or given tiles, with one reason per decision.

`decide(module, tiles)` is the one set of rules for every diagram, a user's file or a built-in
(`pipeline.stages.derivation` builds the built-in and calls it); `derive.auto.derive` adds the
cost model's tiles for a GPU. The rules, from the program itself:

* **levels**: `napkin-assign-levels` with fusion: every intermediate stays at the lowest
  level, so no array that is not an input or an output travels through global memory;
* **groups**: an axis can be grouped when every output has it and no box reduces,
  normalizes or contracts over it; it is grouped only when every box's result has it too
  (otherwise each group would recompute the boxes without it, as the mlp's first layer has
  no `n`). A grouped axis that every contracted input has gives no reuse: it is *woven*, one
  slice per group (attention's b and h); the others are *tiled* (q; matmul's m and n). Tiled
  axes that reuse the same inputs are one reuse: the group tiles the innermost of them (in
  the output's axis order) and holds the others whole (grouped-query attention's r heads sharing a K/V head stay in the
  group of their q tile, so each K/V chunk is loaded once for all of them, as the
  tensor-core kernel expects);
* **stream**: the reduced axes that no output keeps are the candidates, the one reduced
  nearest the outputs first (then the largest); the first one `napkin-stream-partition`
  proves streamable is streamed (its refusals of the
  others are reported as reasons). Another candidate that the stream's step still reduces
  (a contraction axis inside the step) can be streamed inside it, a *nested* stream: when
  `--tile` names it, or when the cost model prices it lower (`derive.auto`);
* **tiles**: `--tile` first, else `DEFAULT_TILE` (clipped to the axis); the grid holds at
  most `GRID_DIMS` grouped axes.

The result is a pipeline string that `napkin-opt --pass-pipeline=` accepts unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlir import ir

from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_location
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.pipeline.passmanager import run_pipeline

#: Tile of a grouped or streamed axis when neither --tile nor a GPU's cost model gives one.
DEFAULT_TILE = 64

#: Grid dimensions a group partition maps onto (CUDA's x, y, z).
GRID_DIMS = 3

PARTITION_OPS = ("napkin.group", "napkin.stream")

#: Boxes that change an array's type or level but do no work a group could share.
PASS_THROUGH = ("napkin.cast", "napkin.scale", "napkin.transfer")


@dataclass
class Derivation:
    """A derivation: what is grouped (woven or tiled), what is streamed (and streamed inside
    that stream), the tiles, and why."""

    woven: list[str] = field(default_factory=list)
    tiled: list[str] = field(default_factory=list)
    streamed: str | None = None
    tiles: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    filename: str | None = None
    nested: str | None = None  # streamed inside `streamed`'s step
    whole: list[str] = field(default_factory=list)  # tiled axes held whole in every group
    nestable: list[str] = field(default_factory=list)  # axes that could stream inside `streamed`

    def pipeline(self, sizes: dict[str, int] | None = None) -> str:
        """The relabeling pipeline (diagram -> partitioned), for `napkin-opt --pass-pipeline=`."""
        steps = ["napkin-verify", "napkin-assign-levels"]
        grouped = [*self.woven, *self.tiled]
        if grouped:
            group_sizes = [1] * len(self.woven) + [self.tiles[a] for a in self.tiled]
            steps.append(
                f"napkin-group-partition{{axes={','.join(grouped)} sizes={','.join(map(str, group_sizes))} level=grid}}"
            )
        for axis in (self.streamed, self.nested):
            if axis:
                steps.append(f"napkin-stream-partition{{axis={axis} size={self.tiles[axis]}}}")
        steps.append("napkin-verify")
        return f"builtin.module({','.join(steps)})"

    def tileable(self) -> list[str]:
        """The axes whose tile the derivation chooses: tiled groups, then the streams."""
        return [*self.tiled, *(a for a in (self.streamed, self.nested) if a)]


def the_diagram(module: ir.Module, filename: str | None) -> ir.Operation:
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


def diagram_axis_sizes(f: ir.Operation) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for arg in f.regions[0].blocks[0].arguments:
        sizes.update(ArrayType.from_mlir(arg.type).sizes)
    return sizes


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
    reuses: dict[str, tuple[int, ...]] = {}
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
            reuses[axis] = tuple(reused)
            names = ", ".join(_name(f, n) for n in reused)
            d.reasons.append(f"{axis}: group tiles: the contractions reuse {names} (which lack {axis}) across a tile")
        else:
            d.woven.append(axis)
            d.reasons.append(f"{axis}: woven, one slice per group: every contracted input has it, nothing is reused")
    order = {a: i for i, a in enumerate(outputs[0].axes)} if outputs else {}
    for axis in list(d.tiled):
        same = [a for a in d.tiled if reuses[a] == reuses[axis]]
        tiled = max(same, key=lambda a: order[a])  # the innermost: a tile's rows run along it
        if axis != tiled:
            d.tiled.remove(axis)
            d.whole.append(axis)
            names = ", ".join(_name(f, n) for n in reuses[axis])
            d.reasons.append(
                f"{axis}: held whole in every group: a tile of {tiled} with all of {axis} reuses {names} as a tile "
                "of both would, in one grid dimension"
            )


def _candidates(f: ir.Operation) -> list[str]:
    """Reduced axes that no output keeps: the one reduced nearest the outputs first (its
    stream takes the boxes before it along, so what they compute stays in chunks: the mlp's
    f, not the k of its first layer), then the largest."""
    block = f.regions[0].blocks[0]
    ret = block.operations[len(block.operations) - 1]
    kept = {a for v in ret.operands for a in ArrayType.from_mlir(v.type).axes}
    sizes = diagram_axis_sizes(f)
    boxes = _boxes(f)
    last = {a: i for i, op in enumerate(boxes) for a in _reduced_axes(op)}
    return sorted((a for a in last if a not in kept), key=lambda a: (-last[a], -sizes[a], a))


def _first_line(err: NapkinError, filename: str | None) -> str:
    first = str(err).splitlines()[0]
    if filename and first.startswith("-:"):  # the parser names its buffer "-"
        first = filename + first[1:]
    return first


def _trial(module: ir.Module, d: Derivation, streamed: str, nested: str | None, tiles: dict[str, int]) -> None:
    """Run the partition with `streamed` (and `nested` inside it) on a copy; raises the pass's refusal."""
    sizes = diagram_axis_sizes(the_diagram(module, d.filename))
    trial_tiles = {
        a: min(tiles.get(a, DEFAULT_TILE), sizes[a]) for a in [*d.tiled, streamed, *([nested] if nested else [])]
    }
    trial = Derivation(list(d.woven), list(d.tiled), streamed, trial_tiles, nested=nested)
    run_pipeline(ir.Module.parse(str(module)), trial.pipeline(), filename=d.filename)


def decide_stream(module: ir.Module, f: ir.Operation, d: Derivation, tiles: dict[str, int]) -> None:
    """The first candidate (`_candidates`) the stream pass accepts; then the
    other candidates that can stream inside it (nested only when `tiles` names one)."""
    candidates = _candidates(f)
    if not candidates:
        d.reasons.append("no stream: no reduced axis outside the outputs")
        return
    for axis in candidates:
        try:
            _trial(module, d, axis, None, tiles)
        except NapkinError as err:
            d.reasons.append(f"{axis}: not streamed: {_first_line(err, d.filename)}")
            continue
        d.streamed = axis
        d.reasons.append(f"{axis}: streamed in chunks (the stream partition proved it streamable)")
        break
    else:
        d.reasons.append("no stream: no reduced axis is streamable")
        return
    boxes = _boxes(f)
    sizes = diagram_axis_sizes(f)
    inner = sorted(set().union(*(_reduced_axes(op) for op in boxes)) - {d.streamed}, key=lambda a: (-sizes[a], a))
    for axis in inner:  # an axis an output keeps may still be reduced inside the step (attention's d)
        try:
            _trial(module, d, d.streamed, axis, tiles)
        except NapkinError:
            continue  # the outer stream's step does not reduce it (or not streamably)
        d.nestable.append(axis)
    asked = [a for a in d.nestable if a in tiles]
    if asked:
        d.nested = asked[0]
        d.reasons.append(f"{d.nested}: streamed inside the {d.streamed} stream's step (--tile names it)")
    elif d.nestable:
        d.reasons.append(
            f"{', '.join(d.nestable)}: could stream inside the {d.streamed} stream (a nested stream): not nested "
            f"without --tile {d.nestable[0]}=... or a GPU's cost model preferring it"
        )


def check_tiles(tiles: dict[str, int], d: Derivation, sizes: dict[str, int]) -> None:
    allowed = [*d.tileable(), *(a for a in d.nestable if a != d.nested)]
    for axis, size in tiles.items():
        if axis not in allowed:
            raise UsageError(
                f"--tile: axis '{axis}' is not tiled by this derivation (tileable axes: {', '.join(allowed) or 'none'})"
            )
        if size > sizes[axis]:
            raise UsageError(f"--tile: tile {axis}={size} is larger than the axis ({axis}={sizes[axis]})")


def fit_grid(d: Derivation, sizes: dict[str, int]) -> None:
    """At most `GRID_DIMS` grouped axes: tiled axes whose tile is the whole axis are left whole
    (smallest first), since one group along them changes nothing; then the smallest woven axes."""
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


def format_tiles(tiles: dict[str, int]) -> str:
    return ",".join(f"{a}={s}" for a, s in tiles.items())


def decide(module: ir.Module, tiles: dict[str, int] | None = None, filename: str | None = None) -> Derivation:
    """Decide the relabelings of `module`'s diagram (needs its context active) at the tiles
    `tiles` names and `DEFAULT_TILE` for the others."""
    f = the_diagram(module, filename)
    sizes = diagram_axis_sizes(f)
    tiles = dict(tiles or {})
    d = Derivation(filename=filename)
    d.reasons.append("levels: napkin-assign-levels with fusion: intermediates stay in registers")
    decide_groups(f, d)
    decide_stream(module, f, d, tiles)
    check_tiles(tiles, d, sizes)
    d.tiles = {a: min(tiles.get(a, DEFAULT_TILE), sizes[a]) for a in d.tileable()}
    fit_grid(d, sizes)
    return d
