"""Rules for the upstream `arith` and `math` ops: the scalar bodies of `napkin.map` and the
index arithmetic on group/chunk offsets.

A map body is run once on whole arrays (its scalar arguments bound to the operands aligned
by axis name), so every rule here is elementwise over jax arrays; on `index` values (Python
ints) it is plain integer arithmetic. Float results take the op's declared element type at
the interpreter's precision (`"f64"`: float64, so `arith.truncf` is an identity; `"same"`:
the declared type, so `arith.truncf` rounds). Ops missing here have no rule, and the
interpreter reports them by name and location.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from mlir import ir

from napkin_mlir.interpret.core import Interpreter, Rule, register
from napkin_mlir.interpret.values import Named, Value

#: An elementwise function: (array namespace, *operands) -> result.
Fn = Callable[..., jax.Array]


def _call(name: str) -> Fn:
    """The namespace's function `name` (jnp.exp or np.exp, ...)."""
    return lambda xp, *args: getattr(xp, name)(*args)


def scalars(interp: Interpreter, op: ir.Operation, args: Sequence[Value]) -> list[Value]:
    """The operands, which must be scalars (map values) or indices, not napkin arrays."""
    if any(isinstance(a, Named) for a in args):
        raise interp.fail(op, f"interpret: '{op.name}' applies to scalars and indices, not to napkin arrays")
    return list(args)


def finish(interp: Interpreter, op: ir.Operation, value: Value) -> Value:
    """`value` in the result's type: a Python int for a scalar index, else a jax array."""
    t = op.results[0].type
    if isinstance(t, ir.IndexType) and np.ndim(value) == 0:
        return int(np.asarray(value))
    return interp.xp.asarray(value).astype(interp.scalar_dtype(t, op))


#: The type a fused multiply-add of each type is computed in: one where the product of two
#: values is exact, so that the sum is the only rounding before the result's own.
_FMA_WIDER = {"bfloat16": "float32", "float16": "float32", "float32": "float64"}


def _fused_multiply_add(xp: object, a: object, b: object, c: object) -> object:
    """`math.fma`: a * b + c rounded once (as the CPU's and the GPU's fma are), not the
    product rounded to the element type and then the sum (fuzz regression 018: in bf16 the
    two roundings made JAX's reference differ from the fused result)."""
    t = xp.result_type(a, b, c)  # type: ignore[attr-defined]
    wide = _FMA_WIDER.get(str(t))
    if wide is None:
        return a * b + c  # type: ignore[operator]
    a, b, c = (xp.asarray(v, dtype=wide) for v in (a, b, c))  # type: ignore[attr-defined]
    return xp.asarray(a * b + c, dtype=t)  # type: ignore[attr-defined,operator]


def elementwise(fn: Fn) -> Rule:
    def rule(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
        return [finish(interp, op, fn(interp.xp, *scalars(interp, op, args)))]

    return rule


def _divsi(a: jax.Array, b: jax.Array) -> jax.Array:
    """Integer division rounding toward zero (arith.divsi)."""
    q = a // b
    return q + ((a % b != 0) & ((a < 0) != (b < 0)))


def _unsigned(a: jax.Array) -> jax.Array:
    return a.astype(np.uint64)  # an array (cmpi takes its operands as arrays)


FUNCTIONS: dict[str, Fn] = {
    # float arithmetic
    "arith.addf": _call("add"),
    "arith.subf": _call("subtract"),
    "arith.mulf": _call("multiply"),
    "arith.divf": _call("divide"),
    "arith.remf": _call("fmod"),
    "arith.negf": _call("negative"),
    "arith.maximumf": _call("maximum"),  # NaN-propagating
    "arith.minimumf": _call("minimum"),
    "arith.maxnumf": _call("fmax"),  # NaN-ignoring
    "arith.minnumf": _call("fmin"),
    "arith.select": _call("where"),
    # conversions: the result type does the work (finish)
    "arith.extf": lambda xp, x: x,
    "arith.truncf": lambda xp, x: x,
    "arith.sitofp": lambda xp, x: x,
    "arith.fptosi": _call("trunc"),
    "arith.index_cast": lambda xp, x: x,
    "arith.extsi": lambda xp, x: x,
    "arith.trunci": lambda xp, x: x,
    # integer and index arithmetic
    "arith.addi": lambda xp, a, b: a + b,
    "arith.subi": lambda xp, a, b: a - b,
    "arith.muli": lambda xp, a, b: a * b,
    "arith.divsi": lambda xp, a, b: _divsi(a, b),
    "arith.remsi": lambda xp, a, b: a - b * _divsi(a, b),
    "arith.floordivsi": lambda xp, a, b: a // b,
    "arith.ceildivsi": lambda xp, a, b: -((-a) // b),
    "arith.minsi": _call("minimum"),
    "arith.maxsi": _call("maximum"),
    "arith.andi": lambda xp, a, b: a & b,
    "arith.ori": lambda xp, a, b: a | b,
    "arith.xori": lambda xp, a, b: a ^ b,
    # math
    "math.exp": _call("exp"),
    "math.exp2": _call("exp2"),
    "math.expm1": _call("expm1"),
    "math.log": _call("log"),
    "math.log2": _call("log2"),
    "math.log10": _call("log10"),
    "math.log1p": _call("log1p"),
    "math.tanh": _call("tanh"),
    "math.sin": _call("sin"),
    "math.cos": _call("cos"),
    "math.tan": _call("tan"),
    "math.atan": _call("arctan"),
    "math.atan2": _call("arctan2"),
    "math.sqrt": _call("sqrt"),
    "math.rsqrt": _call("rsqrt"),
    "math.cbrt": _call("cbrt"),
    "math.absf": _call("abs"),
    "math.powf": _call("power"),
    "math.erf": _call("erf"),
    "math.floor": _call("floor"),
    "math.ceil": _call("ceil"),
    "math.trunc": _call("trunc"),
    "math.roundeven": _call("round"),
    "math.round": lambda xp, x: xp.sign(x) * xp.floor(xp.abs(x) + 0.5),  # halves away from zero
    "math.copysign": _call("copysign"),
    "math.fma": lambda xp, a, b, c: _fused_multiply_add(xp, a, b, c),
}

for _name, _fn in FUNCTIONS.items():
    register(_name)(elementwise(_fn))


@register("arith.constant")
def constant(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    attr = op.attributes["value"]
    if isinstance(attr, ir.BoolAttr):
        return [bool(ir.BoolAttr(attr).value)]
    if isinstance(attr, ir.FloatAttr):
        return [finish(interp, op, ir.FloatAttr(attr).value)]
    if isinstance(attr, ir.IntegerAttr):
        return [finish(interp, op, ir.IntegerAttr(attr).value)]
    raise interp.fail(op, f"interpret: unsupported constant {attr}")


#: arith.cmpf predicates, in the order of their enum values (false, oeq, ..., uno, true).
_CMPF: list[Callable[[jax.Array, jax.Array, jax.Array], jax.Array]] = [
    lambda a, b, u: u & False,
    lambda a, b, u: a == b,
    lambda a, b, u: a > b,
    lambda a, b, u: a >= b,
    lambda a, b, u: a < b,
    lambda a, b, u: a <= b,
    lambda a, b, u: (a != b) & ~u,
    lambda a, b, u: ~u,
    lambda a, b, u: (a == b) | u,
    lambda a, b, u: (a > b) | u,
    lambda a, b, u: (a >= b) | u,
    lambda a, b, u: (a < b) | u,
    lambda a, b, u: (a <= b) | u,
    lambda a, b, u: a != b,
    lambda a, b, u: u,
    lambda a, b, u: u | True,
]

#: arith.cmpi predicates, in the order of their enum values.
_CMPI: list[Callable[[jax.Array, jax.Array], jax.Array]] = [
    lambda a, b: a == b,
    lambda a, b: a != b,
    lambda a, b: a < b,
    lambda a, b: a <= b,
    lambda a, b: a > b,
    lambda a, b: a >= b,
    lambda a, b: _unsigned(a) < _unsigned(b),
    lambda a, b: _unsigned(a) <= _unsigned(b),
    lambda a, b: _unsigned(a) > _unsigned(b),
    lambda a, b: _unsigned(a) >= _unsigned(b),
]


@register("arith.cmpf")
def cmpf(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    a, b = (interp.xp.asarray(x) for x in scalars(interp, op, args))
    predicate = ir.IntegerAttr(op.attributes["predicate"]).value
    return [_CMPF[predicate](a, b, interp.xp.isnan(a) | interp.xp.isnan(b))]


@register("arith.cmpi")
def cmpi(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    a, b = (interp.xp.asarray(x) for x in scalars(interp, op, args))
    predicate = ir.IntegerAttr(op.attributes["predicate"]).value
    return [_CMPI[predicate](a, b)]
