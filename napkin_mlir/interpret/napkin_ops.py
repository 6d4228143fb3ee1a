"""Rules for the napkin ops without partitions: contractions, elementwise functions, maps,
reductions, softmax, masks, fills, casts and transfers (`dialects/README.md` defines each).

Every rule takes its operands by axis name and returns its result in the axis order of the
result type, with the result's element type at the interpreter's precision. Elementwise math
on f16/bf16 runs in f32 and rounds back (as the loop lowering does); contractions convert
their inputs to the result's (accumulation) element type and accumulate in it.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Sequence

import jax
import numpy as np
from mlir import ir

from napkin_mlir.interpret.core import Interpreter, register
from napkin_mlir.interpret.values import Named, Value, as_int, compute_dtype
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.masks import POSITION_ARGS, mask_parts

#: An elementwise function: (array namespace, *operands) -> result.
Fn = Callable[..., jax.Array]


def _call(name: str) -> Fn:
    """The namespace's function `name` (jnp.exp or np.exp, ...)."""
    return lambda xp, *args: getattr(xp, name)(*args)


def result_type(op: ir.Operation) -> ArrayType:
    return ArrayType.from_mlir(op.results[0].type)


def str_attr(op: ir.Operation, name: str) -> str:
    return ir.StringAttr(op.attributes[name]).value


def arrays(interp: Interpreter, op: ir.Operation, args: Sequence[Value]) -> list[Named]:
    """The operands of `op`, which must all be arrays."""
    for i, a in enumerate(args):
        if not isinstance(a, Named):
            raise interp.fail(op, f"interpret: operand #{i} of '{op.name}' must be an array")
    return [a for a in args if isinstance(a, Named)]


def actual_shape(interp: Interpreter, out: ArrayType, ins: Sequence[Named]) -> list[int]:
    """The result's actual sizes: each axis from an operand having it, else the frame's size."""
    sizes: dict[str, int] = {}
    for x in ins:
        sizes.update(x.sizes)
    return [sizes[a] if a in sizes else interp.axis_size(a, s) for a, s in zip(out.axes, out.shape, strict=True)]


def elementwise(interp: Interpreter, op: ir.Operation, ins: Sequence[Named], fn: Fn) -> list[Value]:
    """Apply `fn` to the operands broadcast by axis name to the result's axes."""
    out = result_type(op)
    compute = compute_dtype(out.dtype, interp.precision)
    data = fn(interp.xp, *(x.astype(compute).aligned(out.axes) for x in ins))
    return [Named(broadcast(interp, data, actual_shape(interp, out, ins)).astype(interp.dtype(out)), out.axes)]


def broadcast(interp: Interpreter, data: jax.Array, shape: list[int]) -> jax.Array:
    data = interp.xp.asarray(data)
    return data if list(data.shape) == shape else interp.xp.broadcast_to(data, shape)


# --- contraction ---------------------------------------------------------------------------


@register("napkin.contract")
def contract(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    lhs, rhs = arrays(interp, op, args)
    out = result_type(op)
    letters = dict(zip(dict.fromkeys((*lhs.axes, *rhs.axes, *out.axes)), string.ascii_letters, strict=False))
    spec = "{},{}->{}".format(*("".join(letters[a] for a in axes) for axes in (lhs.axes, rhs.axes, out.axes)))
    acc = compute_dtype(out.dtype, interp.precision)  # a 16-bit result accumulates in f32, rounded once
    data = interp.xp.einsum(spec, lhs.data.astype(acc), rhs.data.astype(acc), preferred_element_type=acc)
    return [Named(data.astype(interp.dtype(out)), out.axes)]


# --- elementwise ---------------------------------------------------------------------------

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

UNARY: dict[str, Fn] = {
    "napkin.exp": _call("exp"),
    "napkin.tanh": _call("tanh"),
    "napkin.relu": lambda xp, x: xp.maximum(x, 0.0),
    "napkin.gelu": lambda xp, x: 0.5 * x * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * (x * (x * x))))),
    "napkin.silu": lambda xp, x: x / (1.0 + xp.exp(-x)),
}

BINARY: dict[str, Fn] = {
    "napkin.add": _call("add"),
    "napkin.sub": _call("subtract"),
    "napkin.mul": _call("multiply"),
    "napkin.div": _call("divide"),
    "napkin.max": _call("maximum"),
}


@register(*UNARY)
def unary(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    return elementwise(interp, op, arrays(interp, op, args), UNARY[op.name])


@register("napkin.scale")
def scale(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    factor = ir.FloatAttr(op.attributes["factor"]).value
    return elementwise(interp, op, arrays(interp, op, args), lambda xp, x: x * factor)


@register(*BINARY)
def binary(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    return elementwise(interp, op, arrays(interp, op, args), BINARY[op.name])


@register("napkin.cast")
def cast(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    (x,) = arrays(interp, op, args)
    out = result_type(op)
    return [x.transposed(out.axes).astype(interp.dtype(out))]


@register("napkin.transfer")
def transfer(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    (x,) = arrays(interp, op, args)
    out = result_type(op)
    return [x.transposed(out.axes).astype(interp.dtype(out))]


@register("napkin.map")
def map_(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    """Run the scalar region once on whole arrays (aligned by axis name to the result)."""
    ins = arrays(interp, op, args)
    out = result_type(op)
    block = next(iter(op.regions[0].blocks))
    params = list(block.arguments)
    if len(params) != len(ins):
        raise interp.fail(op, f"interpret: the map body takes {len(params)} scalars for {len(ins)} operands")
    xs = [x.aligned(out.axes).astype(interp.scalar_dtype(p.type, op)) for x, p in zip(ins, params, strict=True)]
    results = interp.run_block(block, xs)
    if len(results) != 1 or isinstance(results[0], Named):
        raise interp.fail(op, "interpret: the map body must yield one scalar")
    data = broadcast(interp, results[0], actual_shape(interp, out, ins))
    return [Named(data.astype(interp.dtype(out)), out.axes)]


# --- reductions, softmax, mask, fill ----------------------------------------------------------


@register("napkin.reduce")
def reduce(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    (x,) = arrays(interp, op, args)
    axis, kind = str_attr(op, "axis"), str_attr(op, "kind")
    combine = {"sum": interp.xp.sum, "max": interp.xp.max}.get(kind)
    if combine is None or axis not in x.axes:
        raise interp.fail(op, f"interpret: cannot reduce axis '{axis}' of {list(x.axes)} with kind '{kind}'")
    out = result_type(op)
    # a 16-bit sum accumulates in f32 and rounds once (as the loop lowering does)
    data = combine(x.data.astype(compute_dtype(out.dtype, interp.precision)), axis=x.axes.index(axis))
    return [Named(data, tuple(a for a in x.axes if a != axis)).transposed(out.axes).astype(interp.dtype(out))]


@register("napkin.softmax")
def softmax(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    """max, exp(x - max) rounded to the element type, sum, divide (the lowering's four steps)."""
    (x,) = arrays(interp, op, args)
    out = result_type(op)
    axis = x.axes.index(str_attr(op, "axis"))
    compute, store = compute_dtype(out.dtype, interp.precision), interp.dtype(out)
    xc = x.data.astype(compute)
    xp = interp.xp
    e = xp.exp(xc - xp.max(xc, axis=axis, keepdims=True)).astype(store).astype(compute)
    data = (e / xp.sum(e, axis=axis, keepdims=True)).astype(store)
    return [Named(data, x.axes).transposed(out.axes)]


@register("napkin.mask")
def mask(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    """Keep entry (i, j) of (rows, cols) where the predicate region yields true at the global
    positions (offsets added), with the full lengths and the arrays' scalars there."""
    parts = mask_parts(op)
    x = arrays(interp, op, args[:1])[0]
    rows, cols = parts.rows, parts.cols
    if rows not in x.axes or cols not in x.axes:
        raise interp.fail(op, f"interpret: cannot mask ({rows}, {cols}) of an array with axes {list(x.axes)}")
    n_offsets = 0 if parts.offsets is None else 2
    row0, col0 = (as_int(a, "a mask offset") for a in args[1:3]) if n_offsets else (0, 0)
    extra = arrays(interp, op, args[1 + n_offsets :])

    def positions(axis: str, start: int) -> np.ndarray:  # index bookkeeping, not data
        shape = [x.size(a) if a == axis else 1 for a in x.axes]
        return (np.arange(x.size(axis), dtype=np.int64) + start).reshape(shape)

    params = list(parts.block.arguments)
    scalars = [
        a.aligned(x.axes).astype(interp.scalar_dtype(p.type, op))
        for a, p in zip(extra, params[POSITION_ARGS:], strict=True)
    ]
    n_rows, n_cols = (np.int64(n) for n in parts.extents)
    keep = interp.run_block(parts.block, [positions(rows, row0), positions(cols, col0), n_rows, n_cols, *scalars])
    if len(keep) != 1 or isinstance(keep[0], Named):
        raise interp.fail(op, "interpret: the mask's predicate must yield one i1")
    xp = interp.xp
    data = xp.where(xp.asarray(keep[0], bool), x.data, xp.asarray(-np.inf, x.data.dtype))
    return [Named(data, x.axes).transposed(result_type(op).axes)]


@register("napkin.fill")
def fill(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    """A constant array, sized by the current tile where its axes are cut."""
    out = result_type(op)
    value = ir.FloatAttr(op.attributes["value"]).value
    shape = [interp.axis_size(a, s) for a, s in zip(out.axes, out.shape, strict=True)]
    return [Named(interp.xp.full(shape, value, interp.dtype(out)), out.axes)]
