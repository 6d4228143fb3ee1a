"""Rules for the partitions: `napkin.group` (run the body on every group, put the result tiles
back together) and `napkin.stream` (init, step over the chunks in order, finish).

Tiles are cut from the actual operands, so a group or chunk nested in a partial tile is cut
from that smaller tile, and the last group or chunk along an axis its size does not divide
is partial (`min(size, full - offset)` elements, as `_valid_extent` in the loop lowering).
The body runs with the tile's actual size as the current size of each cut axis (what a
`napkin.fill` in it takes).
"""

from __future__ import annotations

import itertools
from typing import Any

from mlir import ir

from napkin_mlir.interpret.core import Interpreter, register
from napkin_mlir.interpret.napkin_ops import arrays, str_attr
from napkin_mlir.interpret.values import Named, Value
from napkin_mlir.ir.arrays import ArrayType, is_array


def _block(op: ir.Operation, region: int) -> ir.Block:
    return next(iter(op.regions[region].blocks))


def full_size(interp: Interpreter, op: ir.Operation, axis: str, operands: list[Named]) -> int:
    """The actual size of `axis` around a partition: from an operand having it, else the
    current size of the enclosing tile, else the static size of a result type."""
    for x in operands:
        if axis in x.axes:
            return x.size(axis)
    for r in op.results:
        if is_array(r.type) and axis in ArrayType.from_mlir(r.type).axes:
            return interp.axis_size(axis, ArrayType.from_mlir(r.type).size(axis))
    raise interp.fail(op, f"interpret: no operand or result of '{op.name}' has axis '{axis}'")


def _assemble(
    xp: Any, tiles: dict[tuple[int, ...], Named], counts: list[int], axes: list[str], prefix: tuple[int, ...]
) -> Named:
    """Concatenate the tiles (keyed by group index) along the grouped axes, outermost first."""
    depth = len(prefix)
    if depth == len(axes):
        return tiles[prefix]
    parts = [_assemble(xp, tiles, counts, axes, (*prefix, i)) for i in range(counts[depth])]
    where = parts[0].axes.index(axes[depth])
    return Named(xp.concatenate([p.data for p in parts], axis=where), parts[0].axes)


@register("napkin.group")
def group(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    operands = arrays(interp, op, args)
    axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(op.attributes["axes"])]
    sizes = list(ir.DenseI64ArrayAttr(op.attributes["sizes"]))
    outs = [ArrayType.from_mlir(r.type) for r in op.results]
    for out in outs:
        missing = [a for a in axes if a not in out.axes]
        if missing:  # every group would write the whole result: not a partition of it
            raise interp.fail(op, f"interpret: result {out} lacks the grouped axis '{missing[0]}'")
    full = [full_size(interp, op, a, operands) for a in axes]
    counts = [-(-n // s) for n, s in zip(full, sizes, strict=True)]
    tiles: list[dict[tuple[int, ...], Named]] = [{} for _ in outs]
    for index in itertools.product(*(range(c) for c in counts)):
        offsets = {a: i * s for a, i, s in zip(axes, index, sizes, strict=True)}
        extents = {a: min(s, n - offsets[a]) for a, s, n in zip(axes, sizes, full, strict=True)}
        cut = [x.cut(offsets, extents) for x in operands]
        results = interp.run_block(_block(op, 0), [*cut, *offsets.values()], extents)
        for i, (r, out) in enumerate(zip(results, outs, strict=True)):
            if not isinstance(r, Named):
                raise interp.fail(op, "interpret: a group body must yield arrays")
            tiles[i][index] = r.transposed(out.axes)
    return [_assemble(interp.xp, t, counts, axes, ()) for t in tiles]


@register("napkin.stream")
def stream(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    operands = arrays(interp, op, args)
    axis = str_attr(op, "axis")
    size = ir.IntegerAttr(op.attributes["size"]).value
    if not any(axis in x.axes for x in operands):
        raise interp.fail(op, f"interpret: no operand of the stream has its axis '{axis}'")
    full = full_size(interp, op, axis, operands)
    state = interp.run_block(_block(op, 0), [])
    for offset in range(0, full, size):
        extent = {axis: min(size, full - offset)}
        chunks = [x.cut({axis: offset}, extent) for x in operands]
        state = interp.run_block(_block(op, 1), [*chunks, offset, *state], extent)
    return interp.run_block(_block(op, 2), state)
