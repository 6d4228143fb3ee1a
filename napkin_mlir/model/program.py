"""The partitioned napkin program as the performance model reads it (design.md section 1.3).

`extract(module)` walks the first function of a *partitioned* module (levels,
`napkin.transfer`, `napkin.group`, `napkin.stream`) through `ArrayType.from_mlir` and op
attributes, never through printed text, into a `Program`: its ops in program order (the
pseudocode's columns), the partitions (`Partition`) enclosing each op, and its array values
with their liveness (a value is live from its definition to its last use; a use inside a
loop keeps it live to the end of that loop; a contraction whose only user is an
accumulating `add` accumulates in place). `Program.retile` gives the same program at other
tile sizes. `in_place` finds the elementwise ops that overwrite a dying operand, and
`live_element_exprs` the live elements of every column as `Expr`s in the axis and tile sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, is_array
from napkin_mlir.ir.masks import Predicate, decides_stream, mask_parts, read_predicate
from napkin_mlir.model.expr import Expr

#: Elementwise ops: their result may overwrite an operand that dies there.
ELEMENTWISE = {
    "napkin.add",
    "napkin.sub",
    "napkin.mul",
    "napkin.div",
    "napkin.max",
    "napkin.scale",
    "napkin.relu",
    "napkin.gelu",
    "napkin.silu",
    "napkin.tanh",
    "napkin.exp",
    "napkin.cast",
    "napkin.mask",
    "napkin.map",
    "napkin.softmax",
}


# --------------------------------------------------------------------------------------
# Walking the partitioned program


@dataclass(frozen=True)
class Partition:
    kind: str  # "group" or "stream"
    axis: str
    size: int
    full: int
    level: str = "grid"

    @property
    def count(self) -> int:
        return -(-self.full // self.size)

    @property
    def symbol(self) -> str:
        return f"{'g' if self.kind == 'group' else 's'}_{self.axis}"

    def count_expr(self) -> Expr:
        if self.size == 1:
            return Expr.sym(self.axis)
        if self.size >= self.full:
            return Expr.const(1)
        return Expr.sym(self.axis) * Expr.sym(self.symbol, -1)

    def tile_expr(self) -> Expr:
        if self.size == 1:
            return Expr.const(1)
        if self.size >= self.full:
            return Expr.sym(self.axis)
        return Expr.sym(self.symbol)


def _attr_strings(op: ir.Operation, name: str) -> list[str]:
    return [ir.StringAttr(a).value for a in ir.ArrayAttr(op.attributes[name])]


def partitions_of(op: ir.Operation) -> list[Partition]:
    """The partitions a napkin.group / napkin.stream op introduces (full sizes read from its operands)."""
    full: dict[str, int] = {}
    for v in op.operands:
        if is_array(v.type):
            full.update(ArrayType.from_mlir(v.type).sizes)
    if op.name == "napkin.group":
        axes = _attr_strings(op, "axes")
        sizes = list(ir.DenseI64ArrayAttr(op.attributes["sizes"]))
        level = ir.StringAttr(op.attributes["level"]).value if "level" in op.attributes else "grid"
        return [Partition("group", a, s, full.get(a, s), level) for a, s in zip(axes, sizes, strict=True)]
    axis = ir.StringAttr(op.attributes["axis"]).value
    size = ir.IntegerAttr(op.attributes["size"]).value
    return [Partition("stream", axis, size, full.get(axis, size))]


@dataclass
class _Value:
    array: ArrayType
    defined: float
    last: float
    ctx: tuple[Partition, ...] = ()
    alias: bool = False  # a view of an operand (partition block argument): not a new buffer
    accumulate: bool = False  # contraction accumulated in place by its add


@dataclass(frozen=True)
class MaskInfo:
    """A napkin.mask as the model prices it: its axes, predicate and full lengths, and the
    stream axis whose empty chunks it lets the kernels skip (None: it skips nothing)."""

    rows: str
    cols: str
    predicate: Predicate
    extents: tuple[int, int]
    skips: str | None


@dataclass
class _Op:
    name: str
    pos: int
    end: int
    ctx: tuple[Partition, ...]
    block_id: int
    operands: list[int | None]
    results: list[int]
    inner: list[str] = field(default_factory=list)  # op names in a napkin.map body
    mask: MaskInfo | None = None  # a napkin.mask


@dataclass
class Program:
    """The partitioned program as the model sees it: ops in program order (positions are
    the pseudocode's columns), their enclosing partitions, and array values with liveness.
    Extracted once from the IR (`extract`); `retile` gives the same program at other tile
    sizes, which is how the tile search evaluates candidates without rebuilding IR."""

    ops: list[_Op]
    values: dict[int, _Value]
    io: list[ArrayType]
    groups: list[Partition]

    def partitions(self) -> list[Partition]:
        seen: dict[tuple[str, str], Partition] = {}
        for o in self.ops:
            for p in o.ctx:
                seen.setdefault((p.kind, p.axis), p)
        return list(seen.values())

    @property
    def tiles(self) -> dict[str, int]:
        return {p.axis: p.size for p in self.partitions() if p.size > 1 or p.full == 1}

    def retile(self, tiles: dict[str, int]) -> Program:
        """The same program with partition sizes `tiles` (axis -> size, clamped to the axis)."""
        new: dict[Partition, Partition] = {}
        for p in self.partitions():
            size = min(tiles.get(p.axis, p.size), p.full)
            new[p] = replace(p, size=max(1, size))

        def ctx_of(ctx: tuple[Partition, ...]) -> tuple[Partition, ...]:
            return tuple(new.get(p, p) for p in ctx)

        def arr(a: ArrayType, ctx: tuple[Partition, ...]) -> ArrayType:
            for p in ctx:
                if p.axis in a.axes:
                    a = a.with_size(p.axis, p.size)
            return a

        values = {k: replace(v, array=arr(v.array, ctx_of(v.ctx)), ctx=ctx_of(v.ctx)) for k, v in self.values.items()}
        ops = [replace(o, ctx=ctx_of(o.ctx)) for o in self.ops]
        return Program(ops, values, self.io, [new.get(p, p) for p in self.groups])


class _Walker:
    """Linearise a function into a `Program`: positions, enclosing partitions, values, uses."""

    def __init__(self, func: ir.Operation) -> None:
        self.pos = 0
        self.ops: list[_Op] = []
        self.ids: dict[ir.Value, int] = {}
        self.values: dict[int, _Value] = {}
        self.value_block: dict[int, int] = {}
        self.block_parent: dict[int, _Op | None] = {}
        self._blocks = 0
        self.uses: dict[int, list[_Op]] = {}
        body = func.regions[0].blocks[0]
        self._walk_block(body, (), None, alias_args=False)
        self._liveness()

    def _add_value(self, v: ir.Value, val: _Value, block: int) -> None:
        i = len(self.ids)
        self.ids[v] = i
        self.values[i] = val
        self.value_block[i] = block

    def _walk_block(
        self, block: ir.Block, ctx: tuple[Partition, ...], parent: _Op | None, alias_args: bool | int
    ) -> None:
        self._blocks += 1
        bid = self._blocks
        self.block_parent[bid] = parent
        for i, arg in enumerate(block.arguments):
            if is_array(arg.type):
                alias = alias_args is True or (not isinstance(alias_args, bool) and i < alias_args)
                self._add_value(arg, _Value(ArrayType.from_mlir(arg.type), self.pos, self.pos, ctx, alias=alias), bid)
        for view in block.operations:
            op = view.operation
            rec = _Op(op.name, self.pos, self.pos, ctx, bid, [self.ids.get(v) for v in op.operands], [])
            if op.name == "napkin.mask":
                rec.mask = _mask_info(op, block)
            self.pos += 1
            self.ops.append(rec)
            if op.name in ("napkin.group", "napkin.stream"):
                inner = ctx + tuple(partitions_of(op))
                if op.name == "napkin.group":
                    self._walk_block(op.regions[0].blocks[0], inner, rec, alias_args=True)
                else:
                    self._walk_block(op.regions[0].blocks[0], ctx, rec, alias_args=False)  # init: once
                    self._walk_block(op.regions[1].blocks[0], inner, rec, alias_args=len(op.operands))  # step
                    self._walk_block(op.regions[2].blocks[0], ctx, rec, alias_args=False)  # finish
            else:
                if op.name == "napkin.map":
                    rec.inner = [x.operation.name for x in op.regions[0].blocks[0].operations][:-1]
                for region in op.regions:
                    for b in region.blocks:
                        self._walk_block(b, ctx, rec, alias_args=True)
            rec.end = self.pos - 1
            for r in op.results:
                if is_array(r.type):
                    # results of a region op appear after its last nested op (the yielded value is an alias)
                    at = rec.end + 0.5 if rec.end > rec.pos else rec.pos
                    self._add_value(r, _Value(ArrayType.from_mlir(r.type), at, at, ctx), bid)
                    rec.results.append(self.ids[r])

    def _liveness(self) -> None:
        for rec in self.ops:
            for vid in rec.operands:
                if vid is None:
                    continue
                self.uses.setdefault(vid, []).append(rec)
                info = self.values[vid]
                # Climb from the user to the op that sits in the value's own block.
                user, home = rec, self.value_block[vid]
                while user.block_id != home:
                    parent = self.block_parent[user.block_id]
                    if parent is None:
                        break
                    user = parent
                info.last = max(info.last, user.end)
        # A contraction whose only user is an add accumulates in place (MMA accumulator).
        for rec in self.ops:
            if rec.name != "napkin.contract" or not rec.results:
                continue
            r = rec.results[0]
            uses = self.uses.get(r, [])
            if len(uses) == 1 and uses[0].name == "napkin.add":
                other = [o for o in uses[0].operands if o is not None and o != r]
                if other and self.values[other[0]].array.shape == self.values[r].array.shape:
                    self.values[r].accumulate = True


def extract(module: ir.Module | ir.Operation) -> Program:
    """The model's view of the first function of a partitioned module (or of a func.func)."""
    op = module.operation if isinstance(module, ir.Module) else module
    funcs = (
        [op]
        if op.name == "func.func"
        else [
            v.operation
            for v in op.regions[0].blocks[0].operations
            if v.operation.name == "func.func" and len(v.operation.regions[0].blocks) > 0
        ]
    )
    if not funcs:
        raise NapkinError("cost analysis: no function in the module")
    func = funcs[0]
    walker = _Walker(func)
    io = [ArrayType.from_mlir(a.type) for a in func.regions[0].blocks[0].arguments if is_array(a.type)]
    io += [
        ArrayType.from_mlir(r)
        for r in ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value).results
        if is_array(r)
    ]
    groups: list[Partition] = []
    for view in func.regions[0].blocks[0].operations:
        if view.operation.name == "napkin.group":
            groups = [p for p in partitions_of(view.operation) if p.level == "grid"]
            break
    return Program(walker.ops, walker.values, io, groups)


# --------------------------------------------------------------------------------------
# Symbolic memory: the live elements at every column of the program, as expressions


def in_place(prog: Program) -> list[tuple[int, _Value, _Value]]:
    """Elementwise boxes whose result can overwrite an operand that dies there (same shape
    and level): (position, operand, result), at most one operand per box."""
    found = []
    for o in prog.ops:
        if o.name in ELEMENTWISE and o.results:
            res = prog.values[o.results[0]]
            for vid in o.operands:
                info = prog.values.get(vid) if vid is not None else None
                if (
                    info
                    and info.last == o.pos
                    and info.defined <= o.pos
                    and info.array.shape == res.array.shape
                    and info.array.level == res.array.level
                ):
                    found.append((o.pos, info, res))
                    break
    return found


def _array_expr(v: _Value) -> Expr:
    """Elements of a value as an expression in axis sizes and the tile symbols of its partitions."""
    inner = {p.axis: p for p in v.ctx}
    e = Expr.const(1)
    for a, s in v.array.sizes.items():
        if a in inner:
            e = e * inner[a].tile_expr()
        elif s == 1:
            continue
        else:
            e = e * Expr.sym(a)
    return e


def live_element_exprs(prog: Program, levels: tuple[str, ...] = ("smem", "reg")) -> list[Expr]:
    """Per column of the program: live elements at `levels` (the paper's memory `M` is the
    largest), elementwise ops in place, as expressions in axis and tile sizes."""
    vals = prog.values
    exprs: dict[int, Expr] = {}
    live = [v for v in vals.values() if not v.alias and not v.accumulate and v.array.level in levels]
    end = max((o.end for o in prog.ops), default=0)
    for p in range(end + 1):
        e = Expr()
        for v in live:
            if v.defined <= p <= v.last:
                e = e + _array_expr(v)
        exprs[p] = e
    for pos, info, res in in_place(prog):
        if info.array.level in levels:
            exprs[pos] = exprs[pos] + (-1) * _array_expr(res)
    # drop duplicates (many columns hold the same set)
    out: list[Expr] = []
    for e in exprs.values():
        if e not in out:
            out.append(e)
    return out


def _mask_info(op: ir.Operation, block: ir.Block) -> MaskInfo:
    """The mask's predicate, and the axis of the stream whose step `block` is when the mask
    decides its chunks (`ir.masks.decides_stream`, as the lowering skips them)."""
    parts = mask_parts(op)
    parent = block.owner.operation if block.owner is not None else None
    skips = None
    if parent is not None and parent.name == "napkin.stream":
        axis = ir.StringAttr(parent.attributes["axis"]).value
        if axis in (parts.rows, parts.cols) and parts.offsets is not None and decides_stream(block, op, axis):
            skips = axis
    return MaskInfo(parts.rows, parts.cols, read_predicate(parts.block), parts.extents, skips)
