"""The elementwise ops on the score tile of the tensor-core kernel: a rule per op.

Between the score contraction S = Q Kᵀ and the online softmax, a program may change the
scores elementwise: scale them, pass them through tanh (a soft cap), add a bias table read
at each score's (q, x), multiply by a per-head slope, apply a `napkin.map` of arith and math
ops, mask them. The match (`tensorcore_match.py`) reads those ops off the program as plain
data, `ScoreOp`s in program order, and the kernel (`tensorcore_emit.py`) computes them in
registers, on each accumulator fragment element, through `SCORE_RULES`: one rule per napkin
op name, which writes the op's scalar code (f32) for one element. A program with an op that
has no rule here is refused by name. The same rules compute the elementwise ops of O / l
before its cast (`AttentionPlan.output_ops`), on the O fragments.

Values are numbered: value 0 is the element of S, value k + 1 the result of the k-th op.
An op's operands are score values, inputs (a function argument read at the element's global
coordinates, converted to the type the op reads) or constants (`Operand`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from napkin_mlir.backends.gpu.tensorcore_text import TextEmitter

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
    body: MapBody | None = None  # napkin.map


@dataclass(frozen=True)
class Element:
    """Where one score element lies: its global query row and key column (index values),
    and the full lengths of q and x."""

    q: str
    x: str
    extents: tuple[int, int] = (0, 0)


#: A rule writes one op's code for one element: (emitter, op, operand values, element) -> result.
ScoreRule = Callable[[TextEmitter, ScoreOp, list[str], Element], str]


def _call(name: str) -> ScoreRule:
    """The rule of an op that is one arith/math op of its operands (in order)."""

    def rule(e: TextEmitter, op: ScoreOp, args: list[str], at: Element) -> str:
        return e.op(f"{name} {', '.join(args)} : {F32}", "sm")

    return rule


def _scale(e: TextEmitter, op: ScoreOp, args: list[str], at: Element) -> str:
    return e.op(f"arith.mulf {args[0]}, {e.const(op.factor, F32)} : {F32}", "sm")


def _relu(e: TextEmitter, op: ScoreOp, args: list[str], at: Element) -> str:
    return e.op(f"arith.maximumf {args[0]}, {e.const(0.0, F32)} : {F32}", "sm")


def _gelu(e: TextEmitter, op: ScoreOp, args: list[str], at: Element) -> str:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the interpretation's tanh form."""
    x = args[0]
    cube = e.op(f"arith.mulf {x}, {e.op(f'arith.mulf {x}, {x} : {F32}', 'sm')} : {F32}", "sm")
    inner = e.op(f"arith.addf {x}, {e.op(f'arith.mulf {e.const(0.044715, F32)}, {cube} : {F32}', 'sm')} : {F32}")
    th = e.op(f"math.tanh {e.op(f'arith.mulf {e.const(SQRT_2_OVER_PI, F32)}, {inner} : {F32}', 'sm')} : {F32}", "sm")
    half = e.op(f"arith.mulf {e.const(0.5, F32)}, {x} : {F32}", "sm")
    return e.op(f"arith.mulf {half}, {e.op(f'arith.addf {e.const(1.0, F32)}, {th} : {F32}', 'sm')} : {F32}", "sm")


def _silu(e: TextEmitter, op: ScoreOp, args: list[str], at: Element) -> str:
    """x / (1 + e^-x)."""
    x = args[0]
    ex = e.op(f"math.exp {e.op(f'arith.negf {x} : {F32}', 'sm')} : {F32}", "sm")
    return e.op(f"arith.divf {x}, {e.op(f'arith.addf {e.const(1.0, F32)}, {ex} : {F32}', 'sm')} : {F32}", "sm")


def _mask(e: TextEmitter, op: ScoreOp, args: list[str], at: Element) -> str:
    """The mask's predicate at the element's global (q, x), with the full lengths and its
    arrays' values there: -inf where it is false."""
    keep = _body(e, op, [at.q, at.x, e.idx(at.extents[0]), e.idx(at.extents[1]), *args[1:]])
    return e.op(f"arith.select {keep}, {args[0]}, {e.const(-math.inf, F32)} : {F32}", "sm")


def _map(e: TextEmitter, op: ScoreOp, args: list[str], at: Element) -> str:
    """The map's scalar body, op by op."""
    return _body(e, op, args)


def _body(e: TextEmitter, op: ScoreOp, args: list[str]) -> str:
    """A scalar region (a map's body, a mask's predicate) op by op, its block arguments bound
    to `args` (generic form; float constants shared)."""
    assert op.body is not None
    values = list(args)
    for inner in op.body.ops:
        if inner.constant is not None:
            values.append(e.const(inner.constant, inner.result_types[0]))
            continue
        attrs = ", ".join(f"{k} = {v}" for k, v in inner.attributes)
        operands = ", ".join(values[i] for i in inner.operands)
        sig = f"({', '.join(inner.operand_types)}) -> ({', '.join(inner.result_types)})"
        text = f'"{inner.name}"({operands}){f" {{{attrs}}}" if attrs else ""} : {sig}'
        if not inner.result_types:
            e.emit(text)
            continue
        values.append(e.op(text, "sm"))
    return values[op.body.result]


#: Napkin op name -> the rule that writes its code for one score element.
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
