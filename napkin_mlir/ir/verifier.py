"""The Python half of napkin verification: the rules IRDL cannot express.

IRDL checks operand counts, tensor base types and required attributes when a module is
parsed or verified. This module checks the diagram rules on top: every wire is a named-axis
array, axis names exist, sizes agree wherever an axis is shared, element types match, and
the region ops (map, group, stream) have bodies of the right shape.

`verify_napkin(op)` returns a list of `Diagnostic`s (location + message); `check_napkin(op)`
raises `VerificationError` with all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir

from napkin_mlir.errors import NapkinError, VerificationError
from napkin_mlir.ir.arrays import ArrayType, dtype_name, is_array
from napkin_mlir.ir.context import format_location
from napkin_mlir.ir.masks import mask_parts, predicate_arg_types, read_predicate
from napkin_mlir.ir.ops import op_info
from napkin_mlir.ir.segments import INTEGER_DTYPES


@dataclass(frozen=True)
class Diagnostic:
    """One verifier finding, anchored at an op's location."""

    location: ir.Location
    message: str

    def format(self, filename: str | None = None) -> str:
        return f"{format_location(self.location, filename)}: error: {self.message}"


class _Fail(Exception):
    pass


def _array(v: ir.Value, what: str) -> ArrayType:
    try:
        return ArrayType.from_mlir(v.type)
    except NapkinError as e:
        raise _Fail(f"{what}: {e.message}") from None


def _str_attr(op: ir.Operation, name: str) -> str:
    return ir.StringAttr(op.attributes[name]).value


def _check_axis(t: ArrayType, axis: str, what: str) -> None:
    if axis not in t.axes:
        raise _Fail(f"unknown axis '{axis}' in {what} (its axes are {list(t.axes)})")


def _check_sizes_agree(arrays: list[tuple[str, ArrayType]]) -> None:
    seen: dict[str, tuple[int, str]] = {}
    for what, t in arrays:
        for a, s in t.sizes.items():
            if a in seen and seen[a][0] != s:
                raise _Fail(f"axis '{a}' has size {seen[a][0]} in {seen[a][1]} but {s} in {what}")
            seen.setdefault(a, (s, what))


def _same_shape(src: ArrayType, dst: ArrayType, what: str) -> None:
    if src.axes != dst.axes or src.shape != dst.shape:
        raise _Fail(f"{what}: result {dst} must have the axes and sizes of the input {src}")


def _verify_contract(op: ir.Operation) -> None:
    lhs, rhs = _array(op.operands[0], "lhs"), _array(op.operands[1], "rhs")
    out = _array(op.results[0], "result")
    _check_sizes_agree([("lhs", lhs), ("rhs", rhs), ("the result", out)])
    for a in out.axes:
        if a not in lhs.axes and a not in rhs.axes:
            raise _Fail(f"result axis '{a}' is in neither input")
    if lhs.dtype != rhs.dtype:
        raise _Fail(f"inputs have different element types ({lhs.dtype} and {rhs.dtype})")


def _verify_unary(op: ir.Operation) -> None:
    src, out = _array(op.operands[0], "input"), _array(op.results[0], "result")
    _same_shape(src, out, op.name)
    if src.dtype != out.dtype:
        raise _Fail(f"result element type {out.dtype} differs from the input's {src.dtype} (use napkin.cast)")


def _verify_cast(op: ir.Operation) -> None:
    _same_shape(_array(op.operands[0], "input"), _array(op.results[0], "result"), op.name)


def _verify_broadcast(op: ir.Operation, inputs: list[ArrayType]) -> None:
    out = _array(op.results[0], "result")
    for i, t in enumerate(inputs):
        for a in t.axes:
            if a not in out.axes:
                raise _Fail(f"operand #{i} axis '{a}' is not an axis of the result {list(out.axes)}")
    _check_sizes_agree([(f"operand #{i}", t) for i, t in enumerate(inputs)] + [("the result", out)])
    covered = {a for t in inputs for a in t.axes}
    for a in out.axes:
        if a not in covered:
            raise _Fail(f"result axis '{a}' comes from no operand")
    dtypes = {t.dtype for t in inputs} | {out.dtype}
    if len(dtypes) != 1:
        raise _Fail(f"operands and result must share one element type, got {sorted(dtypes)}")


def _verify_binary(op: ir.Operation) -> None:
    _verify_broadcast(op, [_array(v, f"operand #{i}") for i, v in enumerate(op.operands)])


def _verify_map(op: ir.Operation) -> None:
    inputs = [_array(v, f"operand #{i}") for i, v in enumerate(op.operands)]
    if not inputs:
        raise _Fail("needs at least one operand")
    _verify_broadcast(op, inputs)
    body = op.regions[0]
    blocks = list(body.blocks)
    if len(blocks) != 1:
        raise _Fail("body must have exactly one block")
    block = blocks[0]
    if len(block.arguments) != len(inputs):
        raise _Fail(f"body takes {len(block.arguments)} scalars but the op has {len(inputs)} operands")
    for i, (arg, t) in enumerate(zip(block.arguments, inputs, strict=True)):
        if str(arg.type) != str(t.to_mlir().element_type):
            raise _Fail(f"body argument #{i} has type {arg.type}, expected the element type {t.dtype}")
    term = list(block.operations)[-1]
    out = _array(op.results[0], "result")
    if term.name != "gpu.yield" or len(term.operands) != 1:
        raise _Fail("body must end with gpu.yield of one scalar")
    if dtype_name(term.operands[0].type) != out.dtype:
        raise _Fail(f"body yields {term.operands[0].type} but the result element type is {out.dtype}")


def _verify_reduce(op: ir.Operation) -> None:
    src, out = _array(op.operands[0], "input"), _array(op.results[0], "result")
    axis = _str_attr(op, "axis")
    _check_axis(src, axis, "the input")
    expect = src.without(axis)
    if out.axes != expect.axes or out.shape != expect.shape:
        raise _Fail(f"result must be the input without axis '{axis}' ({expect}), got {out}")
    if out.dtype != src.dtype:
        raise _Fail(f"result element type {out.dtype} differs from the input's {src.dtype}")


def _verify_softmax(op: ir.Operation) -> None:
    src, out = _array(op.operands[0], "input"), _array(op.results[0], "result")
    _check_axis(src, _str_attr(op, "axis"), "the input")
    _same_shape(src, out, op.name)
    if src.dtype != out.dtype:
        raise _Fail("result element type differs from the input's")


def _verify_mask(op: ir.Operation) -> None:
    src, out = _array(op.operands[0], "input"), _array(op.results[0], "result")
    rows, cols = _str_attr(op, "rows"), _str_attr(op, "cols")
    _check_axis(src, rows, "the input")
    _check_axis(src, cols, "the input")
    if rows == cols:
        raise _Fail(f"rows and cols must be different axes, both are '{rows}'")
    n_offsets = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))[1]
    if n_offsets not in (0, 2):
        raise _Fail(f"takes either no offsets or two (rows, cols), got {n_offsets}")
    if n_offsets and "extents" not in op.attributes:
        raise _Fail("a mask with offsets needs `extents` (the full lengths of rows and cols)")
    if "extents" in op.attributes and len(ir.DenseI64ArrayAttr(op.attributes["extents"])) != 2:
        raise _Fail("`extents` holds two lengths (rows, cols)")
    _same_shape(src, out, op.name)
    parts = mask_parts(op)
    for k, a in enumerate(parts.arrays):
        t = _array(a, f"array #{k}")
        for axis, size in t.sizes.items():
            if src.sizes.get(axis) != size:
                raise _Fail(f"array #{k} has axis '{axis}' of size {size}, which the input {src} does not have")
    blocks = list(op.regions[0].blocks)
    if len(blocks) != 1:
        raise _Fail("the predicate must have exactly one block")
    expect = [str(t) for t in predicate_arg_types(parts.arrays)]
    got = [str(a.type) for a in blocks[0].arguments]
    if got != expect:
        raise _Fail(
            f"the predicate takes ({', '.join(got)}), expected ({', '.join(expect)}): "
            "i, j, n_rows, n_cols and one scalar per array"
        )
    term = list(blocks[0].operations)[-1]
    if term.name != "gpu.yield" or len(term.operands) != 1 or str(term.operands[0].type) != "i1":
        raise _Fail("the predicate must end with gpu.yield of one i1")
    try:
        read_predicate(blocks[0])
    except NapkinError as e:
        raise _Fail(e.message) from None


def _verify_fill(op: ir.Operation) -> None:
    _array(op.results[0], "result")


def _verify_transfer(op: ir.Operation) -> None:
    src, out = _array(op.operands[0], "input"), _array(op.results[0], "result")
    _same_shape(src, out, op.name)
    if src.dtype != out.dtype:
        raise _Fail("a transfer keeps the element type")
    if out.level is None:
        raise _Fail("the result of a transfer must name its level")
    if src.level == out.level:
        raise _Fail(f"source and destination are both at level '{out.level}'")


def _yield_types(block: ir.Block, what: str) -> list[ir.Type]:
    ops = list(block.operations)
    if not ops or ops[-1].name != "gpu.yield":
        raise _Fail(f"{what} must end with gpu.yield")
    return [v.type for v in ops[-1].operands]


def _tile(t: ArrayType, sizes: dict[str, int]) -> ArrayType:
    for a, s in sizes.items():
        if a in t.axes:
            t = t.with_size(a, s)
    return t


def _verify_group(op: ir.Operation) -> None:
    axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(op.attributes["axes"])]
    sizes = list(ir.DenseI64ArrayAttr(op.attributes["sizes"]))
    if len(axes) != len(sizes):
        raise _Fail(f"{len(axes)} axes but {len(sizes)} sizes")
    inputs = [_array(v, f"operand #{i}") for i, v in enumerate(op.operands)]
    outs = [_array(v, f"result #{i}") for i, v in enumerate(op.results)]
    _check_sizes_agree(
        [(f"operand #{i}", t) for i, t in enumerate(inputs)] + [(f"result #{i}", t) for i, t in enumerate(outs)]
    )
    for a, s in zip(axes, sizes, strict=True):
        if not any(a in t.axes for t in inputs + outs):
            raise _Fail(f"unknown axis '{a}': no operand or result has it")
        full = next(t.size(a) for t in inputs + outs if a in t.axes)
        if not 0 < s <= full:
            raise _Fail(f"group size {s} for axis '{a}' must be between 1 and its size {full}")
    tiles = dict(zip(axes, sizes, strict=True))
    block = next(iter(op.regions[0].blocks))
    expected = [str(_tile(t, tiles).to_mlir()) for t in inputs] + ["index"] * len(axes)
    got = [str(a.type) for a in block.arguments]
    if got != expected:
        raise _Fail(
            f"body arguments must be the operand tiles then one index per axis: expected ({', '.join(expected)}), got ({', '.join(got)})"
        )
    want = [str(_tile(t, tiles).to_mlir()) for t in outs]
    have = [str(t) for t in _yield_types(block, "the body")]
    if have != want:
        raise _Fail(f"body must yield the result tiles ({', '.join(want)}), got ({', '.join(have)})")


def _verify_stream(op: ir.Operation) -> None:
    axis = _str_attr(op, "axis")
    size = ir.IntegerAttr(op.attributes["size"]).value
    inputs = [_array(v, f"operand #{i}") for i, v in enumerate(op.operands)]
    outs = [_array(v, f"result #{i}") for i, v in enumerate(op.results)]
    if not any(axis in t.axes for t in inputs):
        raise _Fail(f"unknown axis '{axis}': no operand has it")
    if any(axis in t.axes for t in outs):
        raise _Fail(f"axis '{axis}' is streamed, so no result may have it")
    full = next(t.size(axis) for t in inputs if axis in t.axes)
    if not 0 < size <= full:
        raise _Fail(f"chunk size {size} for axis '{axis}' must be between 1 and its size {full}")
    init, step, finish = (next(iter(r.blocks)) for r in op.regions)
    state = [str(t) for t in _yield_types(init, "init")]
    if len(init.arguments) != 0:
        raise _Fail("init takes no arguments")
    chunks = [str(_tile(t, {axis: size}).to_mlir()) for t in inputs]
    got = [str(a.type) for a in step.arguments]
    if got != [*chunks, "index", *state]:
        raise _Fail(
            f"step arguments must be the operand chunks, the chunk offset and the state: expected ({', '.join([*chunks, 'index', *state])}), got ({', '.join(got)})"
        )
    if [str(t) for t in _yield_types(step, "step")] != state:
        raise _Fail("step must yield a new state of the types init yields")
    if [str(a.type) for a in finish.arguments] != state:
        raise _Fail("finish takes the state")
    if [str(t) for t in _yield_types(finish, "finish")] != [str(t.to_mlir()) for t in outs]:
        raise _Fail("finish must yield the results")


_RULES: dict[str, Callable[[ir.Operation], None]] = {
    "contract": _verify_contract,
    "unary": _verify_unary,
    "cast": _verify_cast,
    "binary": _verify_binary,
    "map": _verify_map,
    "reduce": _verify_reduce,
    "softmax": _verify_softmax,
    "mask": _verify_mask,
    "fill": _verify_fill,
    "transfer": _verify_transfer,
    "group": _verify_group,
    "stream": _verify_stream,
}


#: The ops integer arrays (mask data) may pass through; napkin.mask reads them as its arrays.
_CARRY_INTEGERS = ("napkin.group", "napkin.stream", "napkin.transfer")


def _check_integer_arrays(op: ir.Operation) -> None:
    """Integer arrays are data for mask predicates (segment ids): every other op computes on
    floats, and a mask's input is a float array."""
    if op.name in _CARRY_INTEGERS:
        return
    values = [op.operands[0], op.results[0]] if op.name == "napkin.mask" else [*op.operands, *op.results]
    for v in values:
        if is_array(v.type) and ArrayType.from_mlir(v.type).dtype in INTEGER_DTYPES:
            raise _Fail(
                f"integer array {ArrayType.from_mlir(v.type)} where floats are computed: "
                "integer arrays are data that mask predicates read (napkin.mask's arrays)"
            )


def verify_napkin(root: ir.Operation) -> list[Diagnostic]:
    """Check every napkin op under `root` (IRDL verification first); return the findings."""
    with root.context, ir.Location.unknown():
        return _verify(root)


def _verify(root: ir.Operation) -> list[Diagnostic]:
    try:
        root.verify()
    except ir.MLIRError as err:
        return [Diagnostic(d.location, d.message) for d in err.error_diagnostics]
    found: list[Diagnostic] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        info = op_info(op.name)
        if info is not None:
            try:
                _check_integer_arrays(op)
                _RULES[info.kind](op)
            except _Fail as fail:
                found.append(Diagnostic(op.location, f"'{op.name}' op {fail}"))
        return ir.WalkResult.ADVANCE

    root.walk(visit)
    return found


def check_napkin(root: ir.Operation, filename: str | None = None) -> None:
    """Raise VerificationError listing every finding of `verify_napkin`."""
    found = verify_napkin(root)
    if found:
        raise VerificationError("\n".join(d.format(filename) for d in found))
