"""Rules for values: arith, math and vector ops, one numpy operation on every lane at once.

Elementwise ops (`ELEMENTWISE`: integer and float arithmetic, min/max, bitwise ops, math
functions and the casts) compute in numpy and round to the result's type; integer division
and remainder by zero give a defined value rather than a numpy warning (the GPU's result is
unspecified there). Also: constants (splat vectors only), compares, select, the vector ops
that take vectors apart and build them (extract, strided slices, from_elements, broadcast),
`vector.bitcast` and `llvm.extractvalue`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.special
from mlir import ir

from napkin_mlir.emulator.machine import EmulationError, Machine, Step
from napkin_mlir.emulator.program import Compiler, Rule, element_type, numpy_dtype, rule, vector_shape


def elementwise(fn: Callable[..., Any]) -> Rule:
    """The rule of an op whose result is `fn` of its operands, cast to the result's type."""

    def make(op: ir.Operation, c: Compiler) -> Step:
        ins = [c.slot(v) for v in op.operands]
        out = c.slot(op.results[0])
        dtype = numpy_dtype(element_type(op.results[0].type))

        def step(m: Machine) -> None:
            env = m.env
            env[out] = np.asarray(fn(*[env[i] for i in ins])).astype(dtype, copy=False)

        return step

    return make


def floor_div(a: Any, b: Any) -> Any:
    with np.errstate(divide="ignore"):
        return np.floor_divide(a, np.where(b == 0, 1, b))


def rem(a: Any, b: Any) -> Any:
    with np.errstate(divide="ignore"):
        return np.remainder(a, np.where(b == 0, 1, b))


def ceil_div(a: Any, b: Any) -> Any:
    return -floor_div(-np.asarray(a), b)


def trunc_div(a: Any, b: Any) -> Any:
    """arith.divsi: the quotient rounded toward zero."""
    q = floor_div(a, b)
    return np.where((q < 0) & (q * b != a), q + 1, q)


def trunc_rem(a: Any, b: Any) -> Any:
    """arith.remsi: the remainder with the dividend's sign."""
    return np.asarray(a) - np.asarray(b) * trunc_div(a, b)


ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "arith.addi": np.add,
    "arith.subi": np.subtract,
    "arith.muli": np.multiply,
    "arith.divui": floor_div,
    "arith.divsi": trunc_div,
    "arith.floordivsi": floor_div,
    "arith.ceildivui": ceil_div,
    "arith.ceildivsi": ceil_div,
    "arith.remui": rem,
    "arith.remsi": trunc_rem,
    "arith.minui": np.minimum,
    "arith.minsi": np.minimum,
    "arith.maxui": np.maximum,
    "arith.maxsi": np.maximum,
    "arith.andi": np.bitwise_and,
    "arith.ori": np.bitwise_or,
    "arith.xori": np.bitwise_xor,
    "arith.addf": np.add,
    "arith.subf": np.subtract,
    "arith.mulf": np.multiply,
    "arith.divf": np.divide,
    "arith.maximumf": np.maximum,
    "arith.minimumf": np.minimum,
    "arith.maxnumf": np.fmax,
    "arith.minnumf": np.fmin,
    "arith.negf": np.negative,
    "math.exp": np.exp,
    "math.exp2": np.exp2,
    "math.fma": lambda a, b, c: np.asarray(a, np.float64) * b + c,  # one rounding (to the result type)
    "math.log": np.log,
    "math.tanh": np.tanh,
    "math.sqrt": np.sqrt,
    "math.rsqrt": lambda a: 1 / np.sqrt(a),
    "math.absf": np.abs,
    "math.expm1": np.expm1,
    "math.log2": np.log2,
    "math.log10": np.log10,
    "math.log1p": np.log1p,
    "math.sin": np.sin,
    "math.cos": np.cos,
    "math.tan": np.tan,
    "math.atan": np.arctan,
    "math.atan2": np.arctan2,
    "math.erf": scipy.special.erf,
    "math.cbrt": np.cbrt,
    "math.powf": np.power,
    "math.floor": np.floor,
    "math.ceil": np.ceil,
    "math.trunc": np.trunc,
    "math.roundeven": np.round,  # halves to even
    "math.round": lambda a: np.sign(a) * np.floor(np.abs(a) + 0.5),  # halves away from zero
    "math.copysign": np.copysign,
    "arith.remf": np.fmod,
    "arith.truncf": lambda a: a,
    "arith.extf": lambda a: a,
    "arith.index_cast": lambda a: a,
    "arith.index_castui": lambda a: a,
    "arith.extui": lambda a: a,
    "arith.trunci": lambda a: a,
    "arith.sitofp": lambda a: a,
    "arith.uitofp": lambda a: a,
}
for _name, _fn in ELEMENTWISE.items():
    rule(_name)(elementwise(_fn))


@rule("arith.constant")
def _constant(op: ir.Operation, c: Compiler) -> Step:
    t = op.results[0].type
    attr = op.attributes["value"]
    dtype = numpy_dtype(element_type(t))
    if isinstance(t, ir.VectorType):
        dense = ir.DenseElementsAttr(attr)
        if not dense.is_splat:
            raise EmulationError("non-splat vector constants are not supported", c.where(op))
        splat = dense.get_splat_value()
        scalar = ir.FloatAttr(splat).value if isinstance(splat, ir.FloatAttr) else ir.IntegerAttr(splat).value
        value = np.full((1, 1, *vector_shape(t)), scalar, dtype)
    elif isinstance(attr, ir.FloatAttr):
        value = np.asarray(ir.FloatAttr(attr).value, dtype)
    elif isinstance(attr, ir.BoolAttr):
        value = np.asarray(ir.BoolAttr(attr).value, dtype)
    else:
        value = np.asarray(ir.IntegerAttr(attr).value, dtype)
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        m.env[out] = value

    return step


CMPI = {0: np.equal, 1: np.not_equal, 2: np.less, 3: np.less_equal, 4: np.greater, 5: np.greater_equal}
CMPI.update({6: np.less, 7: np.less_equal, 8: np.greater, 9: np.greater_equal})
CMPF = {1: np.equal, 2: np.greater, 3: np.greater_equal, 4: np.less, 5: np.less_equal, 6: np.not_equal}
CMPF.update({8: np.equal, 9: np.greater, 10: np.greater_equal, 11: np.less, 12: np.less_equal, 13: np.not_equal})


@rule("arith.cmpi", "arith.cmpf")
def _compare(op: ir.Operation, c: Compiler) -> Step:
    pred = ir.IntegerAttr(op.attributes["predicate"]).value
    table = CMPI if op.name == "arith.cmpi" else CMPF
    if pred not in table:
        raise EmulationError(f"comparison predicate {pred} is not supported", c.where(op))
    return elementwise(table[pred])(op, c)


@rule("arith.select")
def _select(op: ir.Operation, c: Compiler) -> Step:
    cond, t, f = (c.slot(v) for v in op.operands)
    rank = len(vector_shape(op.results[0].type))
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        k = np.asarray(m.env[cond])
        m.env[out] = np.where(k.reshape(k.shape + (1,) * rank), m.env[t], m.env[f])

    return step


@rule("vector.extract")
def _extract(op: ir.Operation, c: Compiler) -> Step:
    pos = list(ir.DenseI64ArrayAttr(op.attributes["static_position"]))
    if any(p < 0 for p in pos) or len(list(op.operands)) > 1:
        raise EmulationError("dynamic vector.extract positions are not supported", c.where(op))
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    index = (Ellipsis, *pos) + (slice(None),) * len(vector_shape(op.results[0].type))

    def step(m: Machine) -> None:
        m.env[out] = m.env[src][index]

    return step


@rule("vector.extract_strided_slice")
def _extract_strided_slice(op: ir.Operation, c: Compiler) -> Step:
    offsets, sizes, strides = (
        [ir.IntegerAttr(a).value for a in ir.ArrayAttr(op.attributes[k])] for k in ("offsets", "sizes", "strides")
    )
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    rank = len(vector_shape(op.operands[0].type))
    index = (Ellipsis, *(slice(o, o + n * k, k) for o, n, k in zip(offsets, sizes, strides, strict=True)))
    index += (slice(None),) * (rank - len(offsets))

    def step(m: Machine) -> None:
        m.env[out] = m.env[src][index]

    return step


@rule("vector.from_elements")
def _from_elements(op: ir.Operation, c: Compiler) -> Step:
    ins = [c.slot(v) for v in op.operands]
    shape = vector_shape(op.results[0].type)
    dtype = numpy_dtype(element_type(op.results[0].type))
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        parts = np.broadcast_arrays(*[np.asarray(m.env[i]) for i in ins])
        stacked = np.stack(parts, axis=-1).astype(dtype, copy=False)
        m.env[out] = stacked.reshape(stacked.shape[:-1] + shape)

    return step


@rule("vector.broadcast", "vector.splat")
def _broadcast(op: ir.Operation, c: Compiler) -> Step:
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    shape = vector_shape(op.results[0].type)

    def step(m: Machine) -> None:
        v = np.asarray(m.env[src])
        lead = v.shape if v.ndim <= 2 else v.shape[:2]
        m.env[out] = np.broadcast_to(v.reshape(lead + (1,) * len(shape)), lead + shape)

    return step


@rule("vector.bitcast")
def _bitcast(op: ir.Operation, c: Compiler) -> Step:
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    src_rank = len(vector_shape(op.operands[0].type))
    shape = vector_shape(op.results[0].type)
    dtype = numpy_dtype(element_type(op.results[0].type))

    def step(m: Machine) -> None:
        v = np.ascontiguousarray(m.env[src])
        lead = v.shape[: v.ndim - src_rank]
        m.env[out] = v.view(dtype).reshape(lead + shape)

    return step


@rule("llvm.extractvalue")
def _extractvalue(op: ir.Operation, c: Compiler) -> Step:
    (pos,) = list(ir.DenseI64ArrayAttr(op.attributes["position"]))
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])

    def step(m: Machine) -> None:
        m.env[out] = m.env[src][pos]

    return step
