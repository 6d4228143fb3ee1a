"""The elementwise ops on the score tile of the tensor-core kernel: a rule per op.

Between the score contraction S = Q Kᵀ and the online softmax, a program may change the
scores elementwise: scale them, pass them through tanh (a soft cap), add a bias table read
at each score's (q, x), multiply by a per-head slope, apply a `napkin.map` of arith and math
ops, mask them. The match (`tensorcore_match.py`) reads those ops off the program as plain
data, `ScoreOp`s in program order, and the kernel (`tensorcore_emit.py`) computes them in
registers, on each accumulator fragment element, through `SCORE_RULES`: one rule per napkin
op name, which builds the op's scalar code (f32) for one element at the current insertion
point: typed values in (`ir.Value`), the result out, constants through the kernel's builder
(`tensorcore_ops.KernelBuilder`). A program with an op that has no rule here is refused by
name. The same rules compute the elementwise ops of O / l
before its cast (`AttentionPlan.output_ops`), on the O fragments.

Values are numbered: value 0 is the element of S, value k + 1 the result of the k-th op.
An op's operands are score values, inputs (a function argument read at the element's global
coordinates, converted to the type the op reads) or constants (`Operand`); `apply_ops` builds
a sequence of them for both kernels. The same rules compute a kernel's outputs per query row
(`RowOutput`: the row log-sum-exp m + log l from the stream's final row max and sum).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mlir import ir
from mlir.dialects import arith
from mlir.dialects import math as math_d

from napkin_mlir.ir.masks import SIGNED_TO_UNSIGNED, IntegerFacts

if TYPE_CHECKING:
    from napkin_mlir.backends.gpu.tensorcore_ops import KernelBuilder

F32 = "f32"
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class Operand:
    """What a score op reads: a score value (`ref`: its number), a function argument read at
    the score's coordinates (`ref`: its position) or a constant (`value`). `dtype` is the
    element type the op reads (an input stored in another type is converted)."""

    kind: str  # "score" | "input" | "const"
    ref: int = 0
    dtype: str = F32
    value: float = 0.0


@dataclass(frozen=True)
class ScalarOp:
    """One arith or math op of a `napkin.map` body, as text parts. Operands and results are
    numbered in the body: its block arguments first, then each op's results in order."""

    name: str
    operands: tuple[int, ...]
    attributes: tuple[tuple[str, str], ...]  # (name, attribute as MLIR text)
    operand_types: tuple[str, ...]
    result_types: tuple[str, ...]
    constant: float | None = None  # a float arith.constant's value


@dataclass(frozen=True)
class MapBody:
    """The scalar region of a `napkin.map`: its ops and the number of the value it yields."""

    ops: tuple[ScalarOp, ...]
    result: int


@dataclass(frozen=True)
class ScoreOp:
    """One elementwise op on the scores, read off the program (`name` is the napkin op's)."""

    name: str
    operands: tuple[Operand, ...]
    factor: float = 1.0  # napkin.scale
    body: MapBody | None = None  # napkin.map; napkin.mask: its predicate
    positions: str = "index"  # napkin.mask: the type its predicate computes positions in
    wide: MapBody | None = None  # napkin.mask in i32: the same predicate with index positions


def with_index_positions(ops: tuple[ScoreOp, ...]) -> tuple[ScoreOp, ...]:
    """`ops` with every mask computing its positions as `index` values (64-bit in a kernel)."""
    return tuple(replace(op, body=op.wide, positions="index", wide=None) if op.wide is not None else op for op in ops)


@dataclass(frozen=True)
class Element:
    """Where one score element lies: its global query row and key column (index values),
    and the full lengths of q and x."""

    q: ir.Value | None
    x: ir.Value | None
    extents: tuple[int, int] = (0, 0)


#: A rule builds one op's code for one element at the current insertion point:
#: (builder, op, operand values, element) -> result value.
ScoreRule = Callable[["KernelBuilder", ScoreOp, list[ir.Value], Element], ir.Value]


def _call(name: str) -> ScoreRule:
    """The rule of an op that is one arith/math op of its operands (in order)."""

    def rule(b: KernelBuilder, op: ScoreOp, args: list[ir.Value], at: Element) -> ir.Value:
        return ir.Operation.create(name, results=[b.f32], operands=args).result

    return rule


def _scale(b: KernelBuilder, op: ScoreOp, args: list[ir.Value], at: Element) -> ir.Value:
    return arith.mulf(args[0], b.const(op.factor, F32))


def _relu(b: KernelBuilder, op: ScoreOp, args: list[ir.Value], at: Element) -> ir.Value:
    return arith.maximumf(args[0], b.const(0.0, F32))


def _gelu(b: KernelBuilder, op: ScoreOp, args: list[ir.Value], at: Element) -> ir.Value:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the interpretation's tanh form."""
    x = args[0]
    cube = arith.mulf(x, arith.mulf(x, x))
    inner = arith.addf(x, arith.mulf(b.const(0.044715, F32), cube))
    th = math_d.tanh(arith.mulf(b.const(SQRT_2_OVER_PI, F32), inner))
    half = arith.mulf(b.const(0.5, F32), x)
    return arith.mulf(half, arith.addf(b.const(1.0, F32), th))


def _silu(b: KernelBuilder, op: ScoreOp, args: list[ir.Value], at: Element) -> ir.Value:
    """x / (1 + e^-x)."""
    x = args[0]
    ex = math_d.exp(arith.negf(x))
    return arith.divf(x, arith.addf(b.const(1.0, F32), ex))


def _mask(b: KernelBuilder, op: ScoreOp, args: list[ir.Value], at: Element) -> ir.Value:
    """The mask's predicate at the element's global (q, x), with the full lengths and its
    arrays' values there: -inf where it is false."""
    assert op.body is not None and at.q is not None and at.x is not None
    keep = predicate_at(op.body, op.positions, at.q, at.x, at.extents, args[1:], b.const)
    return arith.select(keep, args[0], b.const(-math.inf, F32))


def _map(b: KernelBuilder, op: ScoreOp, args: list[ir.Value], at: Element) -> ir.Value:
    """The map's scalar body, op by op."""
    assert op.body is not None
    return rebuild(op.body, args, b.const)


def rebuild(body: MapBody, args: list[ir.Value], const: Callable[[float, str], ir.Value] | None = None) -> ir.Value:
    """A scalar region (a map's body, a mask's predicate) rebuilt op by op from its parts
    (name, result types, attributes) at the insertion point, its block arguments bound to
    `args`; float constants through `const` (a builder that shares them) when given; a cast
    to the type its operand already has (`specialized`) is that operand. Returns the value it
    yields."""
    values = list(args)
    for inner in body.ops:
        if inner.constant is not None and const is not None:
            values.append(const(inner.constant, inner.result_types[0]))
            continue
        operands = [values[i] for i in inner.operands]
        if inner.name == "arith.index_cast" and str(operands[0].type) == inner.result_types[0]:
            values.append(operands[0])
            continue
        new = ir.Operation.create(
            inner.name,
            results=[ir.Type.parse(t) for t in inner.result_types],
            operands=operands,
            attributes={k: ir.Attribute.parse(v) for k, v in inner.attributes},
        )
        values += list(new.results)
    return values[body.result]


def specialized(body: MapBody, facts: IntegerFacts) -> MapBody:
    """A predicate's body as the kernel computes it, by what interval reasoning proved over
    the positions it is evaluated at (`ir.masks.integer_facts`, one fact per op in order):
    its `index` values in i32 when they all fit (one register each instead of two), and a
    signed division or remainder of a non-negative value by a positive one unsigned (a
    shift or a multiply by a power of two's inverse, no sign fix-up). Same results."""

    def i32(text: str) -> str:
        return re.sub(r"\bindex\b", "i32", text) if facts.fits_i32 else text

    assert len(body.ops) >= len(facts.unsigned)
    ops = tuple(
        replace(
            op,
            name=SIGNED_TO_UNSIGNED[op.name] if k in facts.unsigned else op.name,
            attributes=tuple((a, i32(v)) for a, v in op.attributes),
            operand_types=tuple(i32(t) for t in op.operand_types),
            result_types=tuple(i32(t) for t in op.result_types),
        )
        for k, op in enumerate(body.ops)
    )
    return MapBody(ops, body.result)


def convert(v: ir.Value, src: str, dst: str) -> ir.Value:
    """A scalar read in type `src` as type `dst`: floats extended or truncated (bf16 and f16
    meet in f32); the same type (an integer mask array read as itself) as it is."""
    width = {"bf16": 16, "f16": 16, "f32": 32}
    if src == dst:
        return v
    if width[src] < width[dst]:
        return arith.extf(ir.Type.parse(dst), v)
    if width[src] > width[dst]:
        return arith.truncf(ir.Type.parse(dst), v)
    return convert(convert(v, src, F32), F32, dst)


def predicate_at(
    body: MapBody,
    positions: str,
    q: ir.Value,
    x: ir.Value,
    extents: tuple[int, int],
    arrays: list[ir.Value],
    const: Callable[[float, str], ir.Value] | None = None,
) -> ir.Value:
    """A mask's predicate (the i1) at global query `q` and key `x` with the full lengths
    `extents` and its arrays' scalars there, computed with positions of type `positions`
    ("index", or "i32" for a `specialized` body that fits; index positions are cast to it)."""
    t = ir.IndexType.get() if positions == "index" else ir.IntegerType.get_signless(32)
    at = [v if v.type == t else arith.index_cast(t, v) for v in (q, x)]
    lengths = [arith.constant(t, ir.IntegerAttr.get(t, n)) for n in extents]
    return rebuild(body, [*at, *lengths, *arrays], const)


#: Napkin op name -> the rule that builds its code for one score element.
SCORE_RULES: dict[str, ScoreRule] = {
    "napkin.scale": _scale,
    "napkin.exp": _call("math.exp"),
    "napkin.tanh": _call("math.tanh"),
    "napkin.relu": _relu,
    "napkin.gelu": _gelu,
    "napkin.silu": _silu,
    "napkin.add": _call("arith.addf"),
    "napkin.sub": _call("arith.subf"),
    "napkin.mul": _call("arith.mulf"),
    "napkin.div": _call("arith.divf"),
    "napkin.max": _call("arith.maximumf"),
    "napkin.mask": _mask,
    "napkin.map": _map,
}


@dataclass(frozen=True)
class ScoreInput:
    """A function argument the score ops read at each score's global coordinates: its
    position (also the kernel's argument), axes (a subset of the scores'), shape and dtype."""

    arg: int
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class RowOutput:
    """An output per query row (the row log-sum-exp a forward keeps for its backward): the
    ops, by the rules above, on value 0, the row max m of the program's scores, and value 1,
    their row sum l at the end of the stream (then each op's result, numbered on); `result`
    is the value stored, converted to `dtype`, as the function's result number `position`."""

    position: int
    ops: tuple[ScoreOp, ...]
    result: int
    dtype: str


def apply_ops(
    b: KernelBuilder,
    ops: tuple[ScoreOp, ...],
    values: list[ir.Value],
    read: Callable[[int, str], ir.Value],
    at: Element,
) -> list[ir.Value]:
    """`ops` in order, each by its rule, on the numbered `values` (value 0 the element, or the
    row max and sum of a `RowOutput`): returns every value, the ops' results appended. An
    input operand is read once per type through `read(position, dtype)`."""
    values = list(values)
    loaded: dict[tuple[int, str], ir.Value] = {}

    def operand(o: Operand) -> ir.Value:
        if o.kind == "score":
            return values[o.ref]
        if o.kind == "const":
            return b.const(o.value, o.dtype)
        if (o.ref, o.dtype) not in loaded:
            loaded[(o.ref, o.dtype)] = read(o.ref, o.dtype)
        return loaded[(o.ref, o.dtype)]

    for op in ops:
        values.append(SCORE_RULES[op.name](b, op, [operand(o) for o in op.operands], at))
    return values
