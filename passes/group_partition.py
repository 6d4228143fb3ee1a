"""napkin-group-partition: split mapped axes into independent groups (parallel work).

A function woven (mapped) over an axis computes every slice along it independently, so the
axis can be cut into groups of `size` processed in parallel: the grid of CTAs at the top
level, warps inside a CTA one level down (run the pass again: it partitions the body of the
innermost existing group). The pass refuses an axis that any box reduces, normalizes along
or streams over, and an axis missing from an output. Group sizes need not divide the axis:
the last group is partial and the lowering clips it.

Before (`axes=q sizes=64`):

    %s = "napkin.contract"(%Q, %K) : (tensor<200x64xf32, {axes = ["q", "d"]}>, ...) -> tensor<200x300xf32, ...>
    ...
    return %o : tensor<200x64xf32, {axes = ["q", "d"]}>

After:

    %o = "napkin.group"(%Q, %K, %V) ({
    ^bb0(%Qt: tensor<64x64xf32, {axes = ["q", "d"]}>, %Kt: ..., %Vt: ..., %q0: index):
      %s = "napkin.contract"(%Qt, %Kt) : (...) -> tensor<64x300xf32, {axes = ["q", "x"]}>
      ...
      gpu.yield %ot : tensor<64x64xf32, {axes = ["q", "d"]}>
    }) {axes = ["q"], level = "grid", sizes = array<i64: 64>} : (...) -> tensor<200x64xf32, {axes = ["q", "d"]}>
    return %o
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import gpu

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import is_array
from napkin_mlir.ir.regions import (
    array,
    body_ops,
    diagram_functions,
    fail,
    has_axis,
    innermost_block,
    offset_mask,
    output_site,
    replace_inside,
    retile_all,
    slot_attributes,
    terminator,
    walk_ops,
)
from napkin_mlir.lowering.loops import GROUP_MAPPING
from passes import register


@dataclass(frozen=True)
class GroupPartitionOptions:
    """axes: the mapped axes to partition; sizes: the group size of each; level: where the
    groups run (grid = CTAs, warp, thread)."""

    axes: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    level: str = "grid"


def _check_mapped(ops: list[ir.Operation], ret: ir.Operation, axis: str) -> None:
    """Raise unless every box is mapped over `axis` (it is never reduced or normalized)."""

    def check(op: ir.Operation) -> None:
        name = op.name
        reduces = name in ("napkin.contract", "napkin.reduce") and not has_axis(op.results[0], axis)
        if reduces and any(has_axis(v, axis) for v in op.operands):
            raise fail(
                op,
                f"cannot group-partition axis '{axis}': '{name}' reduces it, so its groups are not independent (stream-partition a reduced axis instead)",
            )
        if name == "napkin.softmax" and ir.StringAttr(op.attributes["axis"]).value == axis:
            raise fail(op, f"cannot group-partition axis '{axis}': 'napkin.softmax' normalizes along it")
        if name == "napkin.stream" and ir.StringAttr(op.attributes["axis"]).value == axis:
            raise fail(op, f"cannot group-partition axis '{axis}': it is already streamed")

    walk_ops(ops, check)
    for i, v in enumerate(ret.operands):
        if is_array(v.type) and axis not in array(v).axes:
            site = output_site(v, ret)
            raise fail(
                site,
                f"cannot group-partition axis '{axis}': output #{i} ({array(v)}) of '{site.name}' does not have it",
            )


def partition(f: ir.Operation, options: GroupPartitionOptions) -> None:
    block = innermost_block(f)
    ret = terminator(block)
    ops = body_ops(block)
    inputs = [a for a in block.arguments if is_array(a.type)]
    outputs = list(ret.operands)
    sizes: dict[str, int] = {}
    for v in [*inputs, *outputs] + [r for op in ops for r in op.results]:
        if is_array(v.type):
            sizes.update(array(v).sizes)
    for axis, size in zip(options.axes, options.sizes, strict=True):
        if axis not in sizes:
            raise NapkinError(
                f"napkin-group-partition: unknown axis '{axis}' (the diagram has axes {', '.join(sizes)})"
            )
        if not 0 < size <= sizes[axis]:
            raise NapkinError(
                f"napkin-group-partition: group size {size} for axis '{axis}' must be between 1 and its size {sizes[axis]}"
            )
        _check_mapped(ops, ret, axis)
    if any(v in inputs for v in outputs):
        raise NapkinError("napkin-group-partition: an output is an input passed through; nothing to partition")
    tile = dict(zip(options.axes, options.sizes, strict=True))
    attrs = {
        "axes": ir.ArrayAttr.get([ir.StringAttr.get(a) for a in options.axes]),
        "sizes": ir.DenseI64ArrayAttr.get(list(options.sizes)),
        "level": ir.StringAttr.get(options.level),
        **slot_attributes(len(inputs), len(outputs)),
    }
    with ir.InsertionPoint(ret), ret.location:
        group = ir.Operation.create(
            "napkin.group", results=[v.type for v in outputs], operands=inputs, attributes=attrs, regions=1
        )
    tile_types = []
    for a in inputs:
        t = array(a)
        for axis, s in tile.items():
            if axis in t.axes:
                t = t.with_size(axis, s)
        tile_types.append(t.to_mlir())
    body = group.regions[0].blocks.append(*tile_types, *[ir.IndexType.get()] * len(tile))
    with ir.InsertionPoint(body), ret.location:
        yield_op = gpu.YieldOp(outputs)
    for op in ops:
        op.move_before(yield_op)
    moved = [*ops, yield_op.operation]
    for old, new in zip(inputs, body.arguments, strict=False):
        replace_inside(moved, old, new)
    for i, v in enumerate(outputs):
        ret.replace_uses_of_with(v, group.results[i])
    retile_all(ops, tile)
    offsets = dict(zip(options.axes, list(body.arguments)[len(inputs) :], strict=True))
    masks: list[ir.Operation] = []
    walk_ops(ops, lambda op: masks.append(op) if op.name == "napkin.mask" else None)
    full = {a: s for v in inputs for a, s in array(v).sizes.items()}
    for mask in masks:
        offset_mask(mask, offsets, full)


@register("napkin-group-partition", GroupPartitionOptions, "split mapped axes into independent groups (grid, warps)")
def run(module: ir.Operation, options: GroupPartitionOptions) -> None:
    if not options.axes or len(options.axes) != len(options.sizes):
        raise NapkinError(
            f"napkin-group-partition: give one size per axis (axes={','.join(options.axes)} sizes={','.join(map(str, options.sizes))})"
        )
    if options.level not in GROUP_MAPPING:
        raise NapkinError(
            f"napkin-group-partition: unknown level '{options.level}' (expected {', '.join(GROUP_MAPPING)})"
        )
    for f in diagram_functions(module):
        partition(f, options)
