"""IR surgery shared by the relabeling passes: finding the block to partition, creating
napkin ops at an insertion point, retyping values and rebuilding masks with offsets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from mlir import ir
from mlir.dialects import arith

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, is_array
from napkin_mlir.ir.masks import mask_parts, rebuild_mask
from napkin_mlir.ir.ops import op_info


def diagram_functions(module: ir.Operation) -> list[ir.Operation]:
    """The func.func ops of `module` that contain napkin ops."""
    found = []
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and any(op_info(o.operation.name) for o in op.regions[0].blocks[0].operations):
            found.append(op)
    return found


def innermost_block(f: ir.Operation) -> ir.Block:
    """The block the next relabeling applies to: the function body, or the body of the
    innermost group partition (relabelings recurse down the hierarchy)."""
    block = next(iter(f.regions[0].blocks))
    while True:
        groups = [op for op in block.operations if op.operation.name == "napkin.group"]
        if len(groups) != 1:
            return block
        block = next(iter(groups[0].regions[0].blocks))


def terminator(block: ir.Block) -> ir.Operation:
    return list(block.operations)[-1].operation


def body_ops(block: ir.Block) -> list[ir.Operation]:
    """The ops of `block` except its terminator."""
    return [op.operation for op in list(block.operations)[:-1]]


def walk_ops(ops: Iterable[ir.Operation], fn: Callable[[ir.Operation], None]) -> None:
    """Call `fn` on every op in `ops` and every op nested in them (pre-order).

    The ops are collected first and `fn` runs outside MLIR's walk callback, so exceptions
    (NapkinError diagnostics) propagate unchanged.
    """
    found: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        found.append(op)
        return ir.WalkResult.ADVANCE

    for op in ops:
        op.walk(visit, ir.WalkOrder.PRE_ORDER)
    for op in found:
        fn(op)


def str_attr(op: ir.Operation, name: str) -> str:
    """The string attribute `name` of `op`."""
    return ir.StringAttr(op.attributes[name]).value


def owner(v: ir.Value) -> ir.Operation | None:
    """The op defining `v` (None for a block argument)."""
    o = v.owner
    if isinstance(o, ir.Block):
        return None
    return o.operation if isinstance(o, ir.OpView) else o


def array(v: ir.Value) -> ArrayType:
    return ArrayType.from_mlir(v.type)


def has_axis(v: ir.Value, axis: str) -> bool:
    return is_array(v.type) and axis in array(v).axes


def users(v: ir.Value) -> list[ir.Operation]:
    """The ops using `v` (as Operations, not OpViews)."""
    return [u.owner.operation if isinstance(u.owner, ir.OpView) else u.owner for u in v.uses]


#: Number of optional operand/result slots of napkin.map, napkin.group and napkin.stream.
SLOTS = 8


def slot_attributes(operands: int, results: int | None) -> dict[str, ir.Attribute]:
    """`operandSegmentSizes` (and `resultSegmentSizes`) for an op with slot lists."""
    if operands > SLOTS or (results or 0) > SLOTS:
        raise NapkinError(
            f"at most {SLOTS} operands and results per partition or map, got {operands} and {results or 0}"
        )
    attrs = {"operandSegmentSizes": ir.DenseI32ArrayAttr.get([1] * operands + [0] * (SLOTS - operands))}
    if results is not None:
        attrs["resultSegmentSizes"] = ir.DenseI32ArrayAttr.get([1] * results + [0] * (SLOTS - results))
    return attrs


def create(name: str, operands: list[ir.Value], result: ArrayType, **attrs: ir.Attribute) -> ir.Value:
    """Create `napkin.<name>` at the current insertion point; return its result."""
    op = ir.Operation.create(f"napkin.{name}", results=[result.to_mlir()], operands=operands, attributes=attrs)
    return op.result


def broadcast_type(lhs: ir.Value, rhs: ir.Value) -> ArrayType:
    """Result type of an elementwise binary op: lhs's axes then rhs's new ones."""
    a, b = array(lhs), array(rhs)
    axes = list(a.axes) + [x for x in b.axes if x not in a.axes]
    sizes = {**b.sizes, **a.sizes}
    return ArrayType(tuple(axes), tuple(sizes[x] for x in axes), a.dtype, a.level)


def binary(name: str, lhs: ir.Value, rhs: ir.Value) -> ir.Value:
    return create(name, [lhs, rhs], broadcast_type(lhs, rhs))


def retile(v: ir.Value, tile: dict[str, int]) -> None:
    """Set the size of each axis in `tile` on the array value `v` (no-op for other values)."""
    if not is_array(v.type):
        return
    t = array(v)
    for a, s in tile.items():
        if a in t.axes:
            t = t.with_size(a, s)
    v.set_type(t.to_mlir())


def retile_all(ops: Iterable[ir.Operation], tile: dict[str, int]) -> None:
    """Retile every result and nested block argument of `ops` (recursively)."""

    def fix(op: ir.Operation) -> None:
        for r in op.results:
            retile(r, tile)
        for region in op.regions:
            for block in region.blocks:
                for a in block.arguments:
                    retile(a, tile)

    walk_ops(ops, fix)


def _is_zero(v: ir.Value) -> bool:
    owner = v.owner
    return (
        isinstance(owner, ir.OpView | ir.Operation)
        and owner.name == "arith.constant"
        and isinstance(owner.attributes["value"], ir.IntegerAttr)
        and ir.IntegerAttr(owner.attributes["value"]).value == 0
    )


def offset_mask(mask: ir.Operation, offsets: dict[str, ir.Value], extents: dict[str, int]) -> ir.Operation:
    """Rebuild a napkin.mask so its rows/cols offsets include `offsets` (axis -> index);
    `extents` gives the full length of each axis offset here (kept in `extents`)."""
    parts = mask_parts(mask)
    if parts.rows not in offsets and parts.cols not in offsets:
        return mask
    with ir.InsertionPoint(mask), mask.location:
        current: Sequence[ir.Value | None] = parts.offsets or (None, None)
        new_offsets = []
        for axis, cur in zip((parts.rows, parts.cols), current, strict=True):
            if axis in offsets:
                cur = offsets[axis] if cur is None or _is_zero(cur) else arith.addi(cur, offsets[axis])
            elif cur is None:
                cur = arith.constant(ir.IndexType.get(), 0)  # this axis keeps a zero offset
            new_offsets.append(cur)
    # an earlier tiling recorded the full lengths; else an axis not tiled yet has its own
    full = (
        parts.extents
        if parts.offsets is not None
        else tuple(
            extents.get(axis, known) for axis, known in zip((parts.rows, parts.cols), parts.extents, strict=True)
        )
    )
    new = rebuild_mask(mask, parts.input, (new_offsets[0], new_offsets[1]), full, parts.arrays, mask.results[0].type)
    mask.results[0].replace_all_uses_with(new.result)
    mask.erase()
    return new


def replace_inside(ops: Iterable[ir.Operation], old: ir.Value, new: ir.Value) -> None:
    """Replace uses of `old` by `new` in `ops` and everything nested in them."""
    walk_ops(ops, lambda op: op.replace_uses_of_with(old, new))


def output_site(v: ir.Value, ret: ir.Operation) -> ir.Operation:
    """Where to locate a diagnostic about output `v` of terminator `ret`: the box in ret's
    block that produces it, else `ret` itself (an argument passed through)."""
    o = v.owner
    if isinstance(o, ir.OpView | ir.Operation) and o.operation.block == ret.block:
        return o.operation
    return ret


def fail(op: ir.Operation, message: str) -> NapkinError:
    """A NapkinError located at `op`."""
    loc = str(op.location)
    if loc.startswith("loc(") and loc.endswith(")"):
        loc = loc[4:-1].replace('"', "")
    return NapkinError(message, where=None if loc == "unknown" else loc)


def retype_memory_spaces(root: ir.Operation, space: str | None) -> None:
    """Give every memref under `root` that has a memory space the memory space `space`
    (None: the default space), in results, block arguments and function signatures."""
    new_space = ir.Attribute.parse(space) if space else None

    def fix(t: ir.Type) -> ir.Type:
        if isinstance(t, ir.MemRefType) and t.memory_space is not None:
            return ir.MemRefType.get(t.shape, t.element_type, layout=t.layout, memory_space=new_space)
        return t

    def visit(op: ir.Operation) -> ir.WalkResult:
        for r in op.results:
            r.set_type(fix(r.type))
        for region in op.regions:
            for block in region.blocks:
                for a in block.arguments:
                    a.set_type(fix(a.type))
        if op.name == "func.func":
            ft = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
            op.attributes["function_type"] = ir.TypeAttr.get(
                ir.FunctionType.get([fix(t) for t in ft.inputs], [fix(t) for t in ft.results])
            )
        return ir.WalkResult.ADVANCE

    root.walk(visit)
