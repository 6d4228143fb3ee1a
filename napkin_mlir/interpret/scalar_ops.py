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
import jax.numpy as jnp
import numpy as np
from mlir import ir

from napkin_mlir.interpret.core import Interpreter, Rule, register
from napkin_mlir.interpret.values import Named, Value

Fn = Callable[..., jax.Array]


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
    return jnp.asarray(value).astype(interp.scalar_dtype(t, op))


def elementwise(fn: Fn) -> Rule:
    def rule(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
        return [finish(interp, op, fn(*scalars(interp, op, args)))]

    return rule


def _divsi(a: jax.Array, b: jax.Array) -> jax.Array:
    """Integer division rounding toward zero (arith.divsi)."""
    q = a // b
    return q + ((a % b != 0) & ((a < 0) != (b < 0)))


def _unsigned(a: jax.Array) -> jax.Array:
    return jnp.asarray(a).astype(jnp.uint64)


FUNCTIONS: dict[str, Fn] = {
    # float arithmetic
    "arith.addf": jnp.add,
    "arith.subf": jnp.subtract,
    "arith.mulf": jnp.multiply,
    "arith.divf": jnp.divide,
    "arith.remf": jnp.fmod,
    "arith.negf": jnp.negative,
    "arith.maximumf": jnp.maximum,  # NaN-propagating
    "arith.minimumf": jnp.minimum,
    "arith.maxnumf": jnp.fmax,  # NaN-ignoring
    "arith.minnumf": jnp.fmin,
    "arith.select": jnp.where,
    # conversions: the result type does the work (finish)
    "arith.extf": lambda x: x,
    "arith.truncf": lambda x: x,
    "arith.sitofp": lambda x: x,
    "arith.fptosi": jnp.trunc,
    "arith.index_cast": lambda x: x,
    "arith.extsi": lambda x: x,
    "arith.trunci": lambda x: x,
    # integer and index arithmetic
    "arith.addi": lambda a, b: a + b,
    "arith.subi": lambda a, b: a - b,
    "arith.muli": lambda a, b: a * b,
    "arith.divsi": _divsi,
    "arith.remsi": lambda a, b: a - b * _divsi(a, b),
    "arith.floordivsi": lambda a, b: a // b,
    "arith.ceildivsi": lambda a, b: -((-a) // b),
    "arith.minsi": jnp.minimum,
    "arith.maxsi": jnp.maximum,
    "arith.andi": lambda a, b: a & b,
    "arith.ori": lambda a, b: a | b,
    "arith.xori": lambda a, b: a ^ b,
    # math
    "math.exp": jnp.exp,
    "math.exp2": jnp.exp2,
    "math.expm1": jnp.expm1,
    "math.log": jnp.log,
    "math.log2": jnp.log2,
    "math.log10": jnp.log10,
    "math.log1p": jnp.log1p,
    "math.tanh": jnp.tanh,
    "math.sin": jnp.sin,
    "math.cos": jnp.cos,
    "math.tan": jnp.tan,
    "math.atan": jnp.arctan,
    "math.atan2": jnp.arctan2,
    "math.sqrt": jnp.sqrt,
    "math.rsqrt": jax.lax.rsqrt,
    "math.cbrt": jnp.cbrt,
    "math.absf": jnp.abs,
    "math.powf": jnp.power,
    "math.erf": jax.lax.erf,
    "math.floor": jnp.floor,
    "math.ceil": jnp.ceil,
    "math.trunc": jnp.trunc,
    "math.roundeven": jnp.round,
    "math.round": lambda x: jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5),  # halves away from zero
    "math.copysign": jnp.copysign,
    "math.fma": lambda a, b, c: a * b + c,
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
    lambda a, b, u: jnp.zeros_like(u),
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
    lambda a, b, u: jnp.ones_like(u),
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
    a, b = (jnp.asarray(x) for x in scalars(interp, op, args))
    predicate = ir.IntegerAttr(op.attributes["predicate"]).value
    return [_CMPF[predicate](a, b, jnp.isnan(a) | jnp.isnan(b))]


@register("arith.cmpi")
def cmpi(interp: Interpreter, op: ir.Operation, args: list[Value]) -> list[Value]:
    a, b = (jnp.asarray(x) for x in scalars(interp, op, args))
    predicate = ir.IntegerAttr(op.attributes["predicate"]).value
    return [_CMPI[predicate](a, b)]
