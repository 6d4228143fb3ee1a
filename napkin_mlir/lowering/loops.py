"""Lowering napkin diagrams to a loop program over buffers: one rule per op kind.

Every napkin array becomes a memref buffer (its memory space names its level once levels
are assigned) and every box becomes one or more `linalg.generic` ops whose loop dimensions
are the axis names: the output's axes are parallel, the axes a contraction or reduction
drops are reductions, and each operand's indexing map picks its axes by name (this is the
paper's weaving, made literal). Later stages lower the generics to `scf` loops (CPU) or map
them to threads and tensor cores (GPU).

The rules are table-driven (`RULES`, one per `OpInfo.kind`), each writes into a destination
buffer chosen by the caller (destination-passing style), so the same rules lower whole
arrays here and tiles inside group and stream loops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, func, linalg, memref, scf
from mlir.dialects import math as mmath

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, element_type, is_array
from napkin_mlir.ir.masks import MlirDomain, decides_stream, mask_parts, predicate_bounds, read_predicate
from napkin_mlir.ir.ops import op_info
from napkin_mlir.ir.segments import INTEGER_DTYPES

PARALLEL = "#linalg.iterator_type<parallel>"
REDUCTION = "#linalg.iterator_type<reduction>"

#: Memory level -> memref memory space (None: default/global address space).
LEVEL_MEMORY_SPACE: dict[str, str | None] = {
    "gmem": None,
    "smem": "#gpu.address_space<workgroup>",
    "reg": "#gpu.address_space<private>",
}


@dataclass(frozen=True)
class Buffer:
    """A memref holding an array (or a tile of one), with its axis names."""

    value: ir.Value
    axes: tuple[str, ...]
    dtype: str


def memref_type(array: ArrayType) -> ir.MemRefType:
    space = LEVEL_MEMORY_SPACE.get(array.level or "gmem")
    if array.level is not None and array.level not in LEVEL_MEMORY_SPACE:
        raise NapkinError(f"unknown memory level '{array.level}' (known: {', '.join(LEVEL_MEMORY_SPACE)})")
    attr = ir.Attribute.parse(space) if space else None
    return ir.MemRefType.get(list(array.shape), element_type(array.dtype), memory_space=attr)


def _subview_type(source: ir.Type, offsets: Sequence[ir.Value | int], sizes: Sequence[ir.Value | int]) -> ir.MemRefType:
    """Result type of a unit-stride subview: dynamic sizes/offset where the values are dynamic."""
    src = ir.MemRefType(source)
    strides, offset = src.get_strides_and_offset()
    dynamic = ir.ShapedType.get_dynamic_stride_or_offset()
    if offset != dynamic and all(isinstance(o, int) for o in offsets):
        offset = offset + sum(o * st for o, st in zip(offsets, strides, strict=True))  # type: ignore[operator]
    else:
        offset = dynamic
    shape = [s if isinstance(s, int) else ir.ShapedType.get_dynamic_size() for s in sizes]
    layout = ir.StridedLayoutAttr.get(offset, strides)
    return ir.MemRefType.get(shape, src.element_type, layout=layout, memory_space=src.memory_space)


# --- scalar helpers ------------------------------------------------------------------------


def _f32() -> ir.Type:
    return ir.F32Type.get()


def to_f32(v: ir.Value) -> ir.Value:
    """Widen f16/bf16 scalars to f32 (elementwise math runs in f32, like CUDA kernels)."""
    if isinstance(v.type, ir.F32Type | ir.F64Type):
        return v
    return arith.extf(_f32(), v)


def convert(v: ir.Value, target: ir.Type) -> ir.Value:
    """Convert a float scalar to `target` (extend or truncate)."""
    src = v.type
    if str(src) == str(target):
        return v
    width = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16}
    if width[str(src)] < width[str(target)]:
        return arith.extf(target, v)
    if width[str(src)] > width[str(target)]:
        return arith.truncf(target, v)
    return arith.truncf(target, arith.extf(_f32(), v))


def fconst(value: float, t: ir.Type) -> ir.Value:
    return arith.constant(t, value)


def _gelu(x: ir.Value) -> ir.Value:
    t = x.type
    c = fconst(math.sqrt(2.0 / math.pi), t)
    inner = arith.mulf(c, arith.addf(x, arith.mulf(fconst(0.044715, t), arith.mulf(x, arith.mulf(x, x)))))
    return arith.mulf(arith.mulf(fconst(0.5, t), x), arith.addf(fconst(1.0, t), mmath.tanh(inner)))


def _silu(x: ir.Value) -> ir.Value:
    t = x.type
    return arith.divf(x, arith.addf(fconst(1.0, t), mmath.exp(arith.negf(x))))


#: Elementwise unary functions on f32 scalars (the `scale` factor is passed separately).
UNARY_SCALAR: dict[str, Callable[[ir.Value], ir.Value]] = {
    "exp": mmath.exp,
    "tanh": mmath.tanh,
    "relu": lambda x: arith.maximumf(x, fconst(0.0, x.type)),
    "gelu": _gelu,
    "silu": _silu,
}

BINARY_SCALAR: dict[str, Callable[[ir.Value, ir.Value], ir.Value]] = {
    "add": arith.addf,
    "sub": arith.subf,
    "mul": arith.mulf,
    "div": arith.divf,
    "max": arith.maximumf,
}


# --- linalg.generic over named axes -----------------------------------------------------------


def generic(
    inputs: Sequence[Buffer],
    output: Buffer,
    loop_axes: Sequence[str],
    body: Callable[[list[ir.Value], ir.Value, Callable[[str], ir.Value]], ir.Value],
    reduced: Sequence[str] = (),
) -> ir.Operation:
    """A linalg.generic whose loops are `loop_axes` (those in `reduced` are reductions).

    `body(input_scalars, output_scalar, index_of)` returns the value to store; `index_of(axis)`
    gives the loop index of an axis (linalg.index).
    """
    loops = list(loop_axes)

    def amap(axes: Sequence[str]) -> ir.AffineMapAttr:
        return ir.AffineMapAttr.get(
            ir.AffineMap.get(len(loops), 0, [ir.AffineDimExpr.get(loops.index(a)) for a in axes])
        )

    maps = ir.ArrayAttr.get([amap(b.axes) for b in inputs] + [amap(output.axes)])
    iters = ir.ArrayAttr.get([ir.Attribute.parse(REDUCTION if a in reduced else PARALLEL) for a in loops])
    op = linalg.GenericOp([], [b.value for b in inputs], [output.value], maps, iters)
    block = op.regions[0].blocks.append(*[element_type(b.dtype) for b in [*inputs, output]])
    with ir.InsertionPoint(block):
        args = list(block.arguments)
        result = body(args[:-1], args[-1], lambda axis: linalg.IndexOp(loops.index(axis)).result)
        linalg.YieldOp([result])
    return op.operation


def copy(src: Buffer, dst: Buffer) -> None:
    """dst = src elementwise (a generic, so it lowers to plain loops on every backend)."""
    t = element_type(dst.dtype)
    generic([src], dst, dst.axes, lambda xs, _acc, _ix: convert(xs[0], t))


def fill(out: Buffer, value: float) -> None:
    linalg.fill(fconst(value, element_type(out.dtype)), outs=[out.value])


# --- rules ---------------------------------------------------------------------------------


class Lowerer:
    """Lowers the napkin ops of one block into buffer code at the current insertion point.

    Inside group and stream loops a tile may be partial (the last group along an axis the
    group size does not divide, the last chunk of a stream). `extents` holds, per such
    axis, the index value of its valid extent; every buffer of the scope is a subview of
    that size, so each generic touches exactly the valid elements (remainders need no
    separate code path and padding never enters a reduction).
    """

    def __init__(self) -> None:
        self.scopes: list[list[ir.Value]] = [[]]
        self.index_env: dict[ir.Value, ir.Value] = {}
        self.extents: dict[str, ir.Value] = {}

    def alloc(self, array: ArrayType) -> Buffer:
        v = memref.alloc(memref_type(array), [], [])
        self.scopes[-1].append(v)
        return Buffer(self.clip(v, array.axes, array.shape), array.axes, array.dtype)

    def clip(
        self, v: ir.Value, axes: Sequence[str], shape: Sequence[int], offsets: dict[str, ir.Value] | None = None
    ) -> ir.Value:
        """A subview of `v` at `offsets` (per axis) with the current valid extents."""
        offsets = offsets or {}
        if not any(a in self.extents or a in offsets for a in axes):
            return v
        offs: list[ir.Value | int] = [offsets.get(a, 0) for a in axes]
        sizes: list[ir.Value | int] = [self.extents.get(a, s) for a, s in zip(axes, shape, strict=True)]
        return memref.subview(v, offs, sizes, [1] * len(axes), result_type=_subview_type(v.type, offs, sizes))

    def push_scope(self) -> None:
        self.scopes.append([])

    def pop_scope(self) -> None:
        for v in self.scopes.pop():
            memref.dealloc(v)

    def lower_ops(
        self, ops: Sequence[ir.Operation], env: dict[ir.Value, Buffer], dests: dict[ir.Value, Buffer]
    ) -> None:
        """Lower `ops` in order; `env` maps napkin values to buffers, `dests` pre-chooses
        destinations (e.g. the function's output buffers)."""
        for op in ops:
            info = op_info(op.name)
            if info is None:
                if op.name in ("func.return", "gpu.yield"):
                    continue
                if op.name.startswith("arith."):  # index arithmetic on offsets
                    clone = op.clone().operation
                    for old, new in self.index_env.items():
                        clone.replace_uses_of_with(old, new)
                    for r_old, r_new in zip(op.results, clone.results, strict=True):
                        self.index_env[r_old] = r_new
                    continue
                raise NapkinError(f"cannot lower '{op.name}' inside a napkin diagram", where=str(op.location))
            outs = [dests.get(r) or self.alloc(ArrayType.from_mlir(r.type)) for r in op.results]
            missing = [v for v in op.operands if v not in env and is_array(v.type)]
            if missing:  # an array from outside the region: lowering it would read the wrong buffer
                raise NapkinError(
                    f"cannot lower '{op.name}': an operand array is not visible in its region", where=str(op.location)
                )
            RULES[info.kind](self, op, [env[v] for v in op.operands if v in env], outs)
            env.update(zip(op.results, outs, strict=True))

    def index(self, v: ir.Value) -> ir.Value:
        return self.index_env.get(v, v)


def _attr_str(op: ir.Operation, name: str) -> str:
    return ir.StringAttr(op.attributes[name]).value


def lower_contract(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    if outs[0].dtype in ("f16", "bf16"):
        # a 16-bit result accumulates in f32 and rounds once (as tensor cores and the interpretation do)
        acc = lw.alloc(ArrayType.from_mlir(op.results[0].type).with_dtype("f32").with_level(None))
        contract_into(ins, acc)
        copy(acc, outs[0])
        return
    contract_into(ins, outs[0])


def contract_into(ins: list[Buffer], out: Buffer) -> None:
    """out = the contraction of `ins` over the axes `out` lacks, accumulated in out's type."""
    lhs, rhs = ins
    reduced = [a for a in (*lhs.axes, *rhs.axes) if a not in out.axes]
    reduced = list(dict.fromkeys(reduced))
    acc_t = element_type(out.dtype)
    fill(out, 0.0)

    # Loop order for the host's vectorizer: when the last reduced axis is contiguous in both
    # operands (Q Kᵀ over d), it goes innermost as a dot product whose sum may be reassociated;
    # otherwise the last output axis goes innermost (unit stride, no loop-carried dependence).
    dot = bool(reduced) and lhs.axes[-1] == rhs.axes[-1] == reduced[-1]
    fast = arith.FastMathFlags.reassoc if dot else None

    def body(xs: list[ir.Value], acc: ir.Value, _: Callable) -> ir.Value:
        prod = arith.mulf(convert(xs[0], acc_t), convert(xs[1], acc_t))
        return arith.addf(acc, prod, fastmath=fast) if fast else arith.addf(acc, prod)

    loops = [*out.axes, *reduced] if dot or not out.axes else [*out.axes[:-1], *reduced, *out.axes[-1:]]
    generic([lhs, rhs], out, loops, body, reduced)


def lower_unary(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    out = outs[0]
    name = op.name.removeprefix("napkin.")
    if name == "scale":
        factor = ir.FloatAttr(op.attributes["factor"]).value

        def fn(x: ir.Value) -> ir.Value:
            return arith.mulf(x, fconst(factor, x.type))
    else:
        fn = UNARY_SCALAR[name]
    t = element_type(out.dtype)
    generic(ins, out, out.axes, lambda xs, _acc, _ix: convert(fn(to_f32(xs[0])), t))


def lower_cast(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    out = outs[0]
    t = element_type(out.dtype)
    generic(ins, out, out.axes, lambda xs, _acc, _ix: convert(xs[0], t))


def lower_binary(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    out = outs[0]
    fn = BINARY_SCALAR[op.name.removeprefix("napkin.")]
    t = element_type(out.dtype)
    generic(ins, out, out.axes, lambda xs, _acc, _ix: convert(fn(to_f32(xs[0]), to_f32(xs[1])), t))


def _inline_region(src: ir.Block, args: Sequence[ir.Value]) -> ir.Value:
    """Clone the scalar ops of `src` at the insertion point with its block arguments bound
    to `args`; return the value its gpu.yield yields."""
    mapping = dict(zip(src.arguments, args, strict=True))
    for inner in src.operations:
        if inner.name == "gpu.yield":
            return mapping.get(inner.operands[0], inner.operands[0])
        clone = inner.clone().operation
        for old, new in mapping.items():
            clone.replace_uses_of_with(old, new)
        for old_r, new_r in zip(inner.results, clone.results, strict=True):
            mapping[old_r] = new_r
    raise NapkinError("a scalar region must end with gpu.yield")


def lower_map(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    src = next(iter(op.regions[0].blocks))
    generic(ins, outs[0], outs[0].axes, lambda xs, _acc, _ix: _inline_region(src, xs))


def reduce_into(src: Buffer, out: Buffer, axis: str, kind: str) -> None:
    """out = reduce_{axis} src with `kind` (sum/max); `out` is initialised here."""
    fill(out, 0.0 if kind == "sum" else -math.inf)
    t = element_type(out.dtype)
    combine = arith.addf if kind == "sum" else arith.maximumf
    generic([src], out, [*out.axes, axis], lambda xs, acc, _ix: combine(acc, convert(xs[0], t)), [axis])


def lower_reduce(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    out = outs[0]
    axis, kind = _attr_str(op, "axis"), _attr_str(op, "kind")
    if kind == "sum" and out.dtype in ("f16", "bf16"):
        # a 16-bit sum accumulates in f32 and rounds once (as contractions and the interpretation do)
        acc = lw.alloc(ArrayType.from_mlir(op.results[0].type).with_dtype("f32").with_level(None))
        reduce_into(ins[0], acc, axis, kind)
        copy(acc, out)
        return
    reduce_into(ins[0], out, axis, kind)


def lower_softmax(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    out = outs[0]
    """max over the axis, exp(x - max), sum, divide: four generics."""
    (src,) = ins
    axis = _attr_str(op, "axis")
    array = ArrayType.from_mlir(op.results[0].type)
    row = array.without(axis).with_dtype("f32").with_level(None)
    mx, total = lw.alloc(row), lw.alloc(row)
    reduce_into(src, mx, axis, "max")
    t = element_type(out.dtype)
    generic([src, mx], out, out.axes, lambda xs, _a, _i: convert(mmath.exp(arith.subf(to_f32(xs[0]), xs[1])), t))
    reduce_into(out, total, axis, "sum")
    generic([out, total], out, out.axes, lambda xs, _a, _i: convert(arith.divf(to_f32(xs[0]), xs[1]), t))


def lower_mask(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    """The predicate region inlined at every element: i, j the global positions (offsets
    added), the full lengths, the arrays' scalars there; -inf where it is false."""
    out = outs[0]
    parts = mask_parts(op)
    offsets = [lw.index(v) for v in parts.offsets or ()]
    t = element_type(out.dtype)

    def body(xs: list[ir.Value], _acc: ir.Value, index_of: Callable[[str], ir.Value]) -> ir.Value:
        r, c = index_of(parts.rows), index_of(parts.cols)
        if offsets:
            r, c = arith.addi(r, offsets[0]), arith.addi(c, offsets[1])
        keep = _inline_region(parts.block, [r, c, *(_index(n) for n in parts.extents), *xs[1:]])
        return arith.select(keep, xs[0], fconst(-math.inf, t))

    generic(ins, out, out.axes, body)  # ins: the input, then the arrays


def lower_fill(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    out = outs[0]
    fill(out, ir.FloatAttr(op.attributes["value"]).value)


def lower_transfer(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    out = outs[0]
    copy(ins[0], out)


# --- partitions: groups become scf.forall, streams become scf.for ----------------------------

#: Group level -> GPU mapping attribute kind of its scf.forall.
GROUP_MAPPING = {"grid": "block", "warp": "warp", "thread": "thread"}


def _index(value: int) -> ir.Value:
    return arith.constant(ir.IndexType.get(), value)


def _valid_extent(offset: ir.Value, tile: int, full: int) -> ir.Value | None:
    """min(tile, full - offset) when `tile` does not divide `full`, else None (always whole)."""
    if full % tile == 0:
        return None
    return arith.minsi(_index(tile), arith.subi(_index(full), offset))


def _full_sizes(values: Sequence[ir.Value]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for v in values:
        sizes.update(ArrayType.from_mlir(v.type).sizes)
    return sizes


def _body(op: ir.Operation, region: int = 0) -> ir.Block:
    return next(iter(op.regions[region].blocks))


def _yielded(block: ir.Block) -> list[ir.Value]:
    return list(list(block.operations)[-1].operands)


def _tile_view(lw: Lowerer, buf: Buffer, offsets: dict[str, ir.Value], tile: dict[str, int]) -> Buffer:
    if not any(a in offsets for a in buf.axes):
        return buf
    # sizes: valid extent where partial, else the tile size; untiled axes keep their full size
    mr = ir.MemRefType(buf.value.type)
    shape = [tile.get(a, s) for a, s in zip(buf.axes, mr.shape, strict=True)]
    return Buffer(lw.clip(buf.value, buf.axes, shape, offsets), buf.axes, buf.dtype)


def _copy_yields(env: dict[ir.Value, Buffer], yielded: Sequence[ir.Value], dests: Sequence[Buffer]) -> None:
    """Copy each yielded value into its destination unless it was computed there."""
    for v, dst in zip(yielded, dests, strict=True):
        if env[v].value != dst.value:
            copy(env[v], dst)


def lower_group(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    """napkin.group -> scf.forall over the groups, mapped to blocks/warps/threads."""
    axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(op.attributes["axes"])]
    tile = dict(zip(axes, ir.DenseI64ArrayAttr(op.attributes["sizes"]), strict=True))
    level = ir.StringAttr(op.attributes["level"]).value
    full = _full_sizes([*op.operands, *op.results])
    counts = [-(-full[a] // tile[a]) for a in axes]
    kind = GROUP_MAPPING.get(level)
    if kind is None:
        raise NapkinError(f"unknown group level '{level}' (known: {', '.join(GROUP_MAPPING)})")
    if len(axes) > 3:
        raise NapkinError(f"a group partition maps to at most 3 grid/thread dimensions, got {len(axes)} axes {axes}")
    dims = ["x", "y", "z"]
    mapping = ir.ArrayAttr.get(
        [ir.Attribute.parse(f"#gpu.{kind}<{dims[len(axes) - 1 - i]}>") for i in range(len(axes))]
    )
    loop = scf.ForallOp([0] * len(axes), counts, [1] * len(axes), mapping=mapping)
    block = _body(op)
    saved = dict(lw.extents)
    with ir.InsertionPoint(loop.body):
        offsets = {a: arith.muli(iv, _index(tile[a])) for a, iv in zip(axes, loop.induction_variables, strict=True)}
        for a in axes:
            outer = saved.get(a)  # the enclosing tile along `a` may itself be partial
            if outer is not None:
                remaining = arith.subi(outer, offsets[a])
                extent = arith.maxsi(_index(0), arith.minsi(_index(tile[a]), remaining))
            else:
                extent = _valid_extent(offsets[a], tile[a], full[a])
            if extent is not None:
                lw.extents[a] = extent
            else:
                lw.extents.pop(a, None)
        args = list(block.arguments)
        env = {arg: _tile_view(lw, b, offsets, tile) for arg, b in zip(args, ins, strict=False)}
        for arg, a in zip(args[len(ins) :], axes, strict=True):
            lw.index_env[arg] = offsets[a]
        dests = {v: _tile_view(lw, b, offsets, tile) for v, b in zip(_yielded(block), outs, strict=True)}
        lw.push_scope()
        lw.lower_ops(list(block.operations), env, dests)
        _copy_yields(env, _yielded(block), list(dests.values()))
        lw.pop_scope()
        scf.InParallelOp()
    lw.extents = saved


def _chunk_runs(lw: Lowerer, step: ir.Block, axis: str, env: dict[ir.Value, Buffer]) -> ir.Value | None:
    """Whether the current chunk of the stream over `axis` can contribute: for each mask in
    the step over `axis` that decides the stream (`ir.masks.decides_stream`), the mask's
    predicate is bounded over the chunk's positions, and over the range of each integer
    array it reads (segment ids: their least and greatest value in the chunk's tile, found
    by a scan of the tile), by interval reasoning (`ir.masks`); a chunk where one of them is
    false everywhere is empty and skipped (not computed). None when no mask decides (every
    chunk runs)."""
    runs: ir.Value | None = None
    for inner_op in step.operations:
        op = inner_op.operation
        if op.name.startswith("arith.") and all(_available(lw, step, v) for v in op.operands):
            clone = op.clone().operation  # index arithmetic on offsets, needed before the step
            for old, new in lw.index_env.items():
                clone.replace_uses_of_with(old, new)
            for r_old, r_new in zip(op.results, clone.results, strict=True):
                lw.index_env[r_old] = r_new
            continue
        if op.name != "napkin.mask" or axis not in (_attr_str(op, "rows"), _attr_str(op, "cols")):
            continue
        parts = mask_parts(op)
        if parts.offsets is None or not decides_stream(step, op, axis):
            continue
        if not all(_available(lw, step, v) for v in parts.offsets):
            continue
        tile = ArrayType.from_mlir(parts.input.type)
        ranges = []
        for offset, ax in zip(parts.offsets, (parts.rows, parts.cols), strict=True):
            start = lw.index(offset)
            ranges.append((start, arith.addi(start, _index(tile.size(ax) - 1))))
        sources = [_through_transfers(a) for a in parts.arrays]  # the ids as the step receives them
        arrays = [_integer_range(env[a]) if a in env and env[a].dtype in INTEGER_DTYPES else None for a in sources]
        pred = read_predicate(parts.block)
        may = predicate_bounds(pred, MlirDomain(), ranges[0], ranges[1], parts.extents, arrays).may
        if may is True:
            continue
        if may is False:
            may = arith.constant(ir.IntegerType.get_signless(1), 0)
        runs = may if runs is None else arith.andi(runs, may)
    return runs


def _through_transfers(v: ir.Value) -> ir.Value:
    """`v` before the napkin.transfers that copied it (the same values at another level)."""
    while isinstance(v.owner, ir.OpView | ir.Operation) and v.owner.name == "napkin.transfer":
        v = v.owner.operands[0]
    return v


def _integer_range(buf: Buffer) -> tuple[ir.Value, ir.Value]:
    """The least and greatest element of an integer buffer (a tile of segment ids), as index
    values: a scan of its elements (the tile's own size, partial tiles included)."""
    sizes = [memref.dim(buf.value, _index(d)) for d in range(ir.MemRefType(buf.value.type).rank)]

    def scan(depth: int, at: list[ir.Value], carried: list[ir.Value]) -> list[ir.Value]:
        if depth == len(sizes):
            v = arith.index_cast(ir.IndexType.get(), memref.load(buf.value, at))
            return [arith.minsi(carried[0], v), arith.maxsi(carried[1], v)]
        loop = scf.ForOp(_index(0), sizes[depth], _index(1), carried)
        with ir.InsertionPoint(loop.body):
            scf.YieldOp(scan(depth + 1, [*at, loop.induction_variable], list(loop.inner_iter_args)))
        return list(loop.results)

    lo, hi = scan(0, [], [_index(2**62), _index(-(2**62))])
    return lo, hi


def _available(lw: Lowerer, step: ir.Block, v: ir.Value) -> bool:
    """An index value known before the step's ops run: lowered already, or from outside."""
    if v in lw.index_env:
        return True
    return not (isinstance(v.owner, ir.Block) and v.owner == step) and not any(
        v in list(o.results) for o in step.operations
    )


def lower_stream(lw: Lowerer, op: ir.Operation, ins: list[Buffer], outs: list[Buffer]) -> None:
    """napkin.stream -> state buffers (init), scf.for over chunks (step), finish."""
    axis = ir.StringAttr(op.attributes["axis"]).value
    size = ir.IntegerAttr(op.attributes["size"]).value
    full = _full_sizes(list(op.operands))[axis]
    init, step, finish = (_body(op, i) for i in range(3))
    state_values = _yielded(init)
    state = [lw.alloc(ArrayType.from_mlir(v.type)) for v in state_values]
    lw.lower_ops(list(init.operations), {}, dict(zip(state_values, state, strict=True)))
    loop = scf.ForOp(_index(0), _index(full), _index(size))
    saved = dict(lw.extents)
    with ir.InsertionPoint(loop.body):
        x0 = loop.induction_variable
        extent = _valid_extent(x0, size, full)
        if extent is not None:
            lw.extents[axis] = extent
        args = list(step.arguments)
        n = len(ins)
        env = {arg: _tile_view(lw, b, {axis: x0}, {axis: size}) for arg, b in zip(args[:n], ins, strict=True)}
        lw.index_env[args[n]] = x0
        env.update(zip(args[n + 1 :], state, strict=True))
        runs = _chunk_runs(lw, step, axis, env)
        branch = scf.IfOp(runs) if runs is not None else None
        with ir.InsertionPoint(branch.then_block) if branch is not None else contextlib.nullcontext():
            lw.push_scope()
            lw.lower_ops(list(step.operations), env, {})
            _copy_yields(env, _yielded(step), state)
            lw.pop_scope()
            if branch is not None:
                scf.YieldOp([])
        scf.YieldOp([])
    lw.extents = saved
    env = dict(zip(finish.arguments, state, strict=True))
    lw.lower_ops(list(finish.operations), env, dict(zip(_yielded(finish), outs, strict=True)))
    _copy_yields(env, _yielded(finish), outs)


RULES: dict[str, Callable[[Lowerer, ir.Operation, list[Buffer], list[Buffer]], None]] = {
    "contract": lower_contract,
    "unary": lower_unary,
    "cast": lower_cast,
    "binary": lower_binary,
    "map": lower_map,
    "reduce": lower_reduce,
    "softmax": lower_softmax,
    "mask": lower_mask,
    "fill": lower_fill,
    "transfer": lower_transfer,
    "group": lower_group,
    "stream": lower_stream,
}


# --- functions -----------------------------------------------------------------------------


def is_diagram(f: ir.Operation) -> bool:
    return f.name == "func.func" and any(op_info(op.name) for op in f.regions[0].blocks[0].operations)


def lower_function(f: func.FuncOp) -> func.FuncOp:
    """Replace diagram `f` (tensors in, tensors out) by `f(inputs..., outputs...)` on memrefs."""
    block = f.regions[0].blocks[0]
    in_arrays = [ArrayType.from_mlir(a.type) for a in block.arguments]
    ret = list(block.operations)[-1]
    out_arrays = [ArrayType.from_mlir(v.type) for v in ret.operands]
    sig = [memref_type(a) for a in in_arrays + out_arrays]
    name = ir.StringAttr(f.attributes["sym_name"]).value
    with ir.InsertionPoint(f):
        new = func.FuncOp(name, ir.FunctionType.get(sig, []))
    new.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    if "arg_names" in f.attributes:
        new.attributes["arg_names"] = f.attributes["arg_names"]
    new.attributes["napkin.inputs"] = ir.ArrayAttr.get([ir.TypeAttr.get(a.to_mlir()) for a in in_arrays])
    new.attributes["napkin.outputs"] = ir.ArrayAttr.get([ir.TypeAttr.get(a.to_mlir()) for a in out_arrays])
    entry = new.add_entry_block()
    args = list(entry.arguments)
    env = {
        old: Buffer(new_v, a.axes, a.dtype)
        for old, new_v, a in zip(block.arguments, args[: len(in_arrays)], in_arrays, strict=True)
    }
    dests: dict[ir.Value, Buffer] = {}
    copies: list[tuple[Buffer, Buffer]] = []
    for v, a, dst in zip(ret.operands, out_arrays, args[len(in_arrays) :], strict=True):
        buf = Buffer(dst, a.axes, a.dtype)
        if v in env or v in dests:  # an input returned as is, or one value returned twice
            copies.append((env.get(v) or dests[v], buf))
        else:
            dests[v] = buf
    lw = Lowerer()
    with ir.InsertionPoint(entry):
        lw.lower_ops(list(block.operations), env, dests)
        for src, dst in copies:
            copy(src, dst)
        lw.pop_scope()
        func.ReturnOp([])
    f.operation.erase()
    return new


def lower_module(module: ir.Operation) -> None:
    """Lower every diagram function of the module op `module` in place."""
    for op in list(module.regions[0].blocks[0].operations):
        if is_diagram(op.operation):
            lower_function(op.operation.opview)
