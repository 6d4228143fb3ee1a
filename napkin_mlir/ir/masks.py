"""Masks as predicates of positions: reading a `napkin.mask`, building one, and deciding by
interval reasoning whether a tile of it is empty, full or partial.

A `napkin.mask` keeps the entry at position i of its `rows` axis and j of its `cols` axis
where its region yields true (and writes -inf elsewhere). The region's block takes

    i, j, n_rows, n_cols : index     (positions and full lengths of the two axes)
    a_0, ..., a_k                    (one scalar per extra array, read at the entry)

and ends in `gpu.yield %keep : i1`. Causal masking is `j <= i`; bottom-right aligned causal
`j - n_cols <= i - n_rows`; a sliding window adds `i - j < w`; a document mask compares the
segment ids of the query and the key (`a_0 == a_1`). Inside a group or stream tile the op
carries the tile's global offsets along rows and cols (two index operands) and the full
lengths in the `extents` attribute; positions given to the region are then global.

`read_predicate` turns the region into plain data (`Predicate`: numbered values, one `Step`
per op), refusing an op it does not know by name. `predicate_bounds` runs that data over
intervals in any `Domain` -- Python/numpy integers for the cost model and tests, MLIR
index values for kernels that decide at run time -- and answers, for a tile whose
positions lie in [i_lo, i_hi] x [j_lo, j_hi] (and whose arrays lie in given ranges), whether
the predicate may be true somewhere (`may`) and whether it must be true everywhere (`must`).
A chunk with `may` false is empty (skipped: not loaded, not computed); one with `must` true
is full (no mask needed); otherwise it is partial. The reasoning is symbolic over the
tile's ranges: no dense mask is ever evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from mlir import ir
from mlir.dialects import arith, gpu, scf

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, element_type

#: Block arguments of the predicate before the arrays' scalars: i, j, n_rows, n_cols.
POSITION_ARGS = 4
#: Extra arrays a mask may read.
MASK_ARRAYS = 4

_CMPI = ["eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge"]
_CMPF = [
    "false",
    "oeq",
    "ogt",
    "oge",
    "olt",
    "ole",
    "one",
    "ord",
    "ueq",
    "ugt",
    "uge",
    "ult",
    "ule",
    "une",
    "uno",
    "true",
]

#: The arith ops a predicate may use (integer/index/i1 arithmetic and comparisons, float
#: comparisons of the arrays' scalars, conversions).
PREDICATE_OPS = frozenset(
    {
        "arith.constant",
        "arith.addi",
        "arith.subi",
        "arith.muli",
        "arith.divsi",
        "arith.floordivsi",
        "arith.ceildivsi",
        "arith.remsi",
        "arith.minsi",
        "arith.maxsi",
        "arith.cmpi",
        "arith.cmpf",
        "arith.andi",
        "arith.ori",
        "arith.xori",
        "arith.select",
        "arith.index_cast",
        "arith.extsi",
        "arith.extui",
        "arith.trunci",
        "arith.sitofp",
        "arith.fptosi",
        "arith.addf",
        "arith.subf",
        "arith.mulf",
    }
)


# --- the op ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskParts:
    """The pieces of a `napkin.mask`."""

    rows: str
    cols: str
    input: ir.Value
    offsets: tuple[ir.Value, ir.Value] | None  # global offsets of the tile along rows, cols
    extents: tuple[int, int]  # full lengths of rows and cols
    arrays: tuple[ir.Value, ...]  # the extra arrays the predicate reads
    block: ir.Block


def _segments(op: ir.Operation) -> list[int]:
    return list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))


def mask_parts(op: ir.Operation) -> MaskParts:
    rows, cols = ir.StringAttr(op.attributes["rows"]).value, ir.StringAttr(op.attributes["cols"]).value
    operands = list(op.operands)
    n_offsets = _segments(op)[1] if "operandSegmentSizes" in op.attributes else 0
    offsets = (operands[1], operands[2]) if n_offsets == 2 else None
    arrays = tuple(operands[1 + n_offsets :])
    t = ArrayType.from_mlir(operands[0].type)
    if "extents" in op.attributes:
        r, c = ir.DenseI64ArrayAttr(op.attributes["extents"])
        extents = (int(r), int(c))
    else:
        extents = (t.sizes.get(rows, 0), t.sizes.get(cols, 0))
    return MaskParts(rows, cols, operands[0], offsets, extents, arrays, next(iter(op.regions[0].blocks)))


def mask_attributes(
    rows: str, cols: str, n_offsets: int, n_arrays: int, extents: tuple[int, int] | None
) -> dict[str, ir.Attribute]:
    if n_arrays > MASK_ARRAYS:
        raise NapkinError(f"a mask reads at most {MASK_ARRAYS} arrays, got {n_arrays}")
    attrs: dict[str, ir.Attribute] = {
        "rows": ir.StringAttr.get(rows),
        "cols": ir.StringAttr.get(cols),
        "operandSegmentSizes": ir.DenseI32ArrayAttr.get(
            [1, n_offsets] + [1] * n_arrays + [0] * (MASK_ARRAYS - n_arrays)
        ),
    }
    if extents is not None:
        attrs["extents"] = ir.DenseI64ArrayAttr.get(list(extents))
    return attrs


def predicate_arg_types(arrays: Sequence[ir.Value]) -> list[ir.Type]:
    index = ir.IndexType.get()
    return [index] * POSITION_ARGS + [element_type(ArrayType.from_mlir(a.type).dtype) for a in arrays]


def create_mask(
    x: ir.Value,
    rows: str,
    cols: str,
    predicate: Callable[..., ir.Value],
    arrays: Sequence[ir.Value] = (),
    result: ir.Type | None = None,
) -> ir.Operation:
    """A `napkin.mask` of `x` at the current insertion point; `predicate` builds the i1 from
    the block arguments (i, j, n_rows, n_cols, one scalar per array)."""
    op = ir.Operation.create(
        "napkin.mask",
        results=[result or x.type],
        operands=[x, *arrays],
        attributes=mask_attributes(rows, cols, 0, len(arrays), None),
        regions=1,
    )
    body = op.regions[0].blocks.append(*predicate_arg_types(arrays))
    with ir.InsertionPoint(body):
        gpu.YieldOp([predicate(*body.arguments)])
    return op


def causal(i: ir.Value, j: ir.Value, *_: ir.Value) -> ir.Value:
    """The causal predicate (top-left aligned): key j at or before query i."""
    return arith.cmpi(arith.CmpIPredicate.sle, j, i)


def rebuild_mask(
    mask: ir.Operation,
    input: ir.Value,
    offsets: tuple[ir.Value, ir.Value] | None,
    extents: tuple[int, int] | None,
    arrays: Sequence[ir.Value],
    result: ir.Type,
) -> ir.Operation:
    """A new mask before `mask` with other operands, taking over its predicate region (the
    old op is left with an empty region: erase it or replace its uses)."""
    parts = mask_parts(mask)
    n_offsets = 0 if offsets is None else 2
    attrs = mask_attributes(parts.rows, parts.cols, n_offsets, len(arrays), extents)
    with ir.InsertionPoint(mask), mask.location:
        new = ir.Operation.create(
            "napkin.mask",
            results=[result],
            operands=[input, *(offsets or ()), *arrays],
            attributes=attrs,
            regions=1,
        )
    old_block = parts.block
    block = new.regions[0].blocks.append(*[a.type for a in old_block.arguments])
    for old_arg, new_arg in zip(old_block.arguments, block.arguments, strict=True):
        old_arg.replace_all_uses_with(new_arg)
    ip = ir.InsertionPoint(block)
    for inner in list(old_block.operations):
        inner.operation.detach_from_parent()
        ip.insert(inner.operation)
    return new


def copy_mask(
    mask: ir.Operation, input: ir.Value, result: ir.Type, arrays: Sequence[ir.Value] | None = None
) -> ir.Operation:
    """A mask like `mask` (same predicate and offsets; its arrays, or `arrays` in their
    place) of another input, at the current insertion point; `mask` is unchanged."""
    clone = mask.clone().operation  # clones the region with it
    parts = mask_parts(clone)
    own = parts.arrays if arrays is None else tuple(arrays)
    new = rebuild_mask(clone, input, parts.offsets, _extents_attr(clone), own, result)
    clone.erase()
    return new


def _extents_attr(op: ir.Operation) -> tuple[int, int] | None:
    if "extents" not in op.attributes:
        return None
    r, c = ir.DenseI64ArrayAttr(op.attributes["extents"])
    return int(r), int(c)


def decides_stream(step: ir.Block, mask: ir.Operation, axis: str) -> bool:
    """Whether `mask` decides which chunks of a stream over `axis` matter: on a chunk where
    the mask drops every entry, every reduction over the axis in the stream step (a
    `napkin.reduce` along it, or a contraction that sums it away) adds only its identity,
    so skipping the chunk leaves the state as it is.

    Dropped entries are followed through the step: the mask makes them -inf; a positive
    scale, a cast, adding or subtracting another value (taken finite or -inf) keep -inf;
    exp turns -inf into 0; a cast, a scale or a product keep 0; a `napkin.map` is followed
    through its body (`_map_result`: the backward's dS = P ∘ (dP − D), and its gradient
    mask select(m == 1, dS, 0)). A max reduction of -inf entries, and a sum reduction or a
    contraction of 0 entries, add their identity; any other reduction over the axis (a sum
    of -inf, a max after tanh(-inf) = -1, ...) needs every chunk."""
    neg: set[ir.Value] = {mask.results[0]}  # -inf wherever the mask drops an entry
    zero: set[ir.Value] = set()  # 0 there
    for view in step.operations:
        op = view.operation
        operands = list(op.operands)
        name = op.name
        reduces = (name == "napkin.reduce" and ir.StringAttr(op.attributes["axis"]).value == axis) or (
            name == "napkin.contract"
            and any(axis in ArrayType.from_mlir(v.type).axes for v in operands)
            and axis not in ArrayType.from_mlir(op.results[0].type).axes
        )
        if reduces:
            kind = ir.StringAttr(op.attributes["kind"]).value if name == "napkin.reduce" else "sum"
            dropped = operands[0] in neg if kind == "max" else any(v in zero for v in operands)
            if name == "napkin.contract":
                dropped = any(v in zero for v in operands) and not any(v in neg for v in operands)
            if not dropped:
                return False
            continue
        if not op.results or not any(v in neg or v in zero for v in operands):
            continue
        out = op.results[0]
        if name == "napkin.map":
            known = _map_result(op, [_NEG if v in neg else _ZERO if v in zero else None for v in operands])
            if known == _NEG:
                neg.add(out)
            elif known == _ZERO:
                zero.add(out)
        elif name == "napkin.exp" and operands[0] in neg:
            zero.add(out)
        elif name == "napkin.cast" or (name == "napkin.scale" and ir.FloatAttr(op.attributes["factor"]).value > 0):
            (neg if operands[0] in neg else zero).add(out)
        elif (name in ("napkin.add", "napkin.sub") and operands[0] in neg and operands[1] not in zero) or (
            name == "napkin.add" and operands[1] in neg and operands[0] not in zero
        ):
            neg.add(out)
        elif (name == "napkin.mul" and any(v in zero for v in operands) and not any(v in neg for v in operands)) or (
            name == "napkin.scale" and operands[0] in zero
        ):
            zero.add(out)
    return True


_NEG, _ZERO = float("-inf"), 0.0


def _map_result(op: ir.Operation, args: list[float | None]) -> float | None:
    """The value a `napkin.map` yields where its operands are `args` (-inf, 0, or None:
    some finite value), or None when its body does not decide it: its ops evaluated on
    what is known (constants, -inf, 0), others finite (arith's mulf, addf, subf, negf,
    select, cmpf with a constant, math.exp); any other op yields an unknown value."""
    body = op.regions[0].blocks[0]
    known: dict[ir.Value, float | bool | None] = dict(zip(body.arguments, args, strict=True))
    for view in body.operations:
        o = view.operation
        ins = [known.get(v) for v in o.operands]
        out: float | bool | None = None
        if o.name == "arith.constant":
            attr = o.attributes["value"]
            out = ir.FloatAttr(attr).value if isinstance(attr, ir.FloatAttr) else None
        elif o.name == "arith.mulf":
            if _ZERO in ins and _NEG not in ins:
                out = _ZERO  # 0 times a finite value (or 0)
            elif all(isinstance(v, float) for v in ins):
                out = ins[0] * ins[1]  # type: ignore[operator]
        elif o.name in ("arith.addf", "arith.subf"):
            a, b = ins
            if a == _NEG and (b is None or (isinstance(b, float) and math.isfinite(b))):
                out = _NEG  # -inf plus or minus a finite value
            elif o.name == "arith.addf" and b == _NEG and (a is None or (isinstance(a, float) and math.isfinite(a))):
                out = _NEG
            elif isinstance(a, float) and isinstance(b, float) and math.isfinite(a) and math.isfinite(b):
                out = a + b if o.name == "arith.addf" else a - b
        elif o.name == "arith.negf" and isinstance(ins[0], float) and math.isfinite(ins[0]):
            out = -ins[0]
        elif o.name == "math.exp" and ins[0] == _NEG:
            out = _ZERO
        elif o.name == "arith.cmpf" and all(isinstance(v, float) for v in ins):
            # ordered and unordered predicates alike: these values are never NaN
            compare = _CMPF[ir.IntegerAttr(o.attributes["predicate"]).value][1:]
            a, b = ins
            tests = {"eq": a == b, "gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b, "ne": a != b}  # type: ignore[operator]
            out = tests.get(compare)
        elif o.name == "arith.select":
            cond, a, b = ins
            out = a if cond is True else b if cond is False else (a if a is not None and a == b else None)
        if o.results:
            known[o.results[0]] = out
    yielded = known.get(list(body.operations)[-1].operation.operands[0])
    return yielded if isinstance(yielded, float) and yielded in (_NEG, _ZERO) else None


# --- the predicate as data -------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One op of the predicate: `name`, operand numbers, and for comparisons the predicate
    name, for constants the value. `kind` is the result's: "int", "bool" or "float"."""

    name: str
    operands: tuple[int, ...]
    kind: str
    predicate: str | None = None
    value: float | int | None = None
    type: str = ""  # the result's MLIR type


@dataclass(frozen=True)
class Predicate:
    """A mask's region as data: values 0-3 are i, j, n_rows, n_cols, then one per array,
    then one per step; `result` numbers the yielded i1."""

    arrays: tuple[str, ...]  # each array's element kind ("int" or "float")
    steps: tuple[Step, ...]
    result: int


def _kind(t: ir.Type) -> str:
    if isinstance(t, ir.IntegerType) and ir.IntegerType(t).width == 1:
        return "bool"
    if isinstance(t, ir.IndexType | ir.IntegerType):
        return "int"
    return "float"


def read_predicate(block: ir.Block, where: str = "the mask") -> Predicate:
    """The region of a mask as data; an op outside `PREDICATE_OPS` is refused by name."""
    number: dict[Any, int] = {}
    args = list(block.arguments)
    for k, a in enumerate(args):
        number[a] = k
    arrays = tuple(_kind(a.type) for a in args[POSITION_ARGS:])
    steps: list[Step] = []
    result = -1
    for view in block.operations:
        op = view.operation
        if op.name == "gpu.yield":
            result = number[op.operands[0]]
            break
        if op.name not in PREDICATE_OPS:
            raise NapkinError(
                f"{where}: the predicate cannot use '{op.name}' (it takes {', '.join(sorted(PREDICATE_OPS))})"
            )
        kind = _kind(op.results[0].type)
        predicate = value = None
        if op.name == "arith.cmpi":
            predicate = _CMPI[ir.IntegerAttr(op.attributes["predicate"]).value]
        elif op.name == "arith.cmpf":
            predicate = _CMPF[ir.IntegerAttr(op.attributes["predicate"]).value]
        elif op.name == "arith.constant":
            attr = op.attributes["value"]
            value = ir.FloatAttr(attr).value if kind == "float" else ir.IntegerAttr(attr).value
            if kind == "bool":
                value = int(value) & 1
        operands = tuple(number[v] for v in op.operands)
        steps.append(Step(op.name, operands, kind, predicate, value, str(op.results[0].type)))
        number[op.results[0]] = len(args) + len(steps) - 1
    if result < 0:
        raise NapkinError(f"{where}: the predicate must end with gpu.yield of an i1")
    return Predicate(arrays, tuple(steps), result)


# --- interval reasoning ------------------------------------------------------------------------


class Domain(Protocol):
    """Arithmetic on integers and booleans that `predicate_bounds` computes with: Python or
    numpy values (`NUMPY`), or code (MLIR index/i1 values, see `MlirDomain`)."""

    def const(self, v: int) -> Any: ...
    def boolean(self, v: bool) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def mul(self, a: Any, b: Any) -> Any: ...
    def floordiv(self, a: Any, c: int) -> Any: ...
    def min(self, a: Any, b: Any) -> Any: ...
    def max(self, a: Any, b: Any) -> Any: ...
    def lt(self, a: Any, b: Any) -> Any: ...
    def le(self, a: Any, b: Any) -> Any: ...
    def eq(self, a: Any, b: Any) -> Any: ...
    def and_(self, a: Any, b: Any) -> Any: ...
    def or_(self, a: Any, b: Any) -> Any: ...
    def not_(self, a: Any) -> Any: ...
    def select(self, c: Any, a: Any, b: Any) -> Any: ...


class NumpyDomain:
    """Integers and booleans as Python/numpy values (vectorized over many tiles at once)."""

    def const(self, v: int) -> Any:
        return v

    def boolean(self, v: bool) -> Any:
        return v

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def sub(self, a: Any, b: Any) -> Any:
        return a - b

    def mul(self, a: Any, b: Any) -> Any:
        return a * b

    def floordiv(self, a: Any, c: int) -> Any:
        return np.floor_divide(a, c)

    def min(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    def max(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    def lt(self, a: Any, b: Any) -> Any:
        return np.less(a, b)

    def le(self, a: Any, b: Any) -> Any:
        return np.less_equal(a, b)

    def eq(self, a: Any, b: Any) -> Any:
        return np.equal(a, b)

    def and_(self, a: Any, b: Any) -> Any:
        return np.logical_and(a, b)

    def or_(self, a: Any, b: Any) -> Any:
        return np.logical_or(a, b)

    def not_(self, a: Any) -> Any:
        return np.logical_not(a)

    def select(self, c: Any, a: Any, b: Any) -> Any:
        return np.where(c, a, b)


NUMPY = NumpyDomain()


class MlirDomain:
    """Integers as `index` values and booleans as `i1` values, emitted with the arith
    builders at the current insertion point (for a kernel that decides at run time)."""

    def const(self, v: int) -> Any:
        return arith.constant(ir.IndexType.get(), int(v))

    def boolean(self, v: bool) -> Any:
        return arith.constant(ir.IntegerType.get_signless(1), int(v))

    def add(self, a: Any, b: Any) -> Any:
        return arith.addi(a, b)

    def sub(self, a: Any, b: Any) -> Any:
        return arith.subi(a, b)

    def mul(self, a: Any, b: Any) -> Any:
        return arith.muli(a, b)

    def floordiv(self, a: Any, c: int) -> Any:
        return arith.floordivsi(a, self.const(c))

    def min(self, a: Any, b: Any) -> Any:
        return arith.minsi(a, b)

    def max(self, a: Any, b: Any) -> Any:
        return arith.maxsi(a, b)

    def lt(self, a: Any, b: Any) -> Any:
        return arith.cmpi(arith.CmpIPredicate.slt, a, b)

    def le(self, a: Any, b: Any) -> Any:
        return arith.cmpi(arith.CmpIPredicate.sle, a, b)

    def eq(self, a: Any, b: Any) -> Any:
        return arith.cmpi(arith.CmpIPredicate.eq, a, b)

    def and_(self, a: Any, b: Any) -> Any:
        return arith.andi(a, b)

    def or_(self, a: Any, b: Any) -> Any:
        return arith.ori(a, b)

    def not_(self, a: Any) -> Any:
        return arith.xori(a, self.boolean(True))

    def select(self, c: Any, a: Any, b: Any) -> Any:
        return arith.select(c, a, b)


#: A bound or truth value: a domain value, or a Python constant (int, or bool for truths);
#: `None` as a bound means unbounded.
Bound = Any


@dataclass(frozen=True)
class Interval:
    """Integers in [lo, hi] (None: unbounded on that side); `const` when known here."""

    lo: Bound
    hi: Bound
    const: int | None = None


@dataclass(frozen=True)
class Truth:
    """A boolean over a tile: `must` (true everywhere) and `may` (true somewhere)."""

    must: Bound
    may: Bound


UNBOUNDED = Interval(None, None)
UNKNOWN = Truth(False, True)


class _Ops:
    """Domain arithmetic that folds Python constants, so emitted code stays small."""

    def __init__(self, d: Domain) -> None:
        self.d = d

    def _lift(self, v: Any) -> Any:
        return self.d.const(v) if isinstance(v, int) and not isinstance(v, bool) else v

    def int2(self, fn: str, a: Bound, b: Bound) -> Bound:
        if a is None or b is None:
            return None
        if isinstance(a, int) and isinstance(b, int):
            return {"add": a + b, "sub": a - b, "mul": a * b, "min": min(a, b), "max": max(a, b)}[fn]
        return getattr(self.d, fn)(self._lift(a), self._lift(b))

    def floordiv(self, a: Bound, c: int) -> Bound:
        if a is None:
            return None
        return a // c if isinstance(a, int) else self.d.floordiv(a, c)

    def cmp(self, fn: str, a: Bound, b: Bound, unknown: bool) -> Bound:
        """a < b or a <= b or a == b; `unknown` when a bound is missing."""
        if a is None or b is None:
            return unknown
        if isinstance(a, int) and isinstance(b, int):
            return {"lt": a < b, "le": a <= b, "eq": a == b}[fn]
        return getattr(self.d, fn)(self._lift(a), self._lift(b))

    def and_(self, a: Bound, b: Bound) -> Bound:
        if a is False or b is False:
            return False
        if a is True:
            return b
        if b is True:
            return a
        return self.d.and_(a, b)

    def or_(self, a: Bound, b: Bound) -> Bound:
        if a is True or b is True:
            return True
        if a is False:
            return b
        if b is False:
            return a
        return self.d.or_(a, b)

    def not_(self, a: Bound) -> Bound:
        return (not a) if isinstance(a, bool) else self.d.not_(a)

    def select(self, c: Bound, a: Bound, b: Bound) -> Bound:
        if c is True:
            return a
        if c is False:
            return b
        if a is None or b is None:
            return None
        if isinstance(a, bool) and isinstance(b, bool) and a == b:
            return a
        lift = self.d.boolean if isinstance(a, bool) or isinstance(b, bool) else self._lift
        a = lift(a) if isinstance(a, int) else a
        b = lift(b) if isinstance(b, int) else b
        return self.d.select(c, a, b)


def _compare(o: _Ops, pred: str, a: Interval, b: Interval) -> Truth:
    """Must/may of `a pred b` over the two intervals (signed; unsigned and ordered float
    predicates alike, with "may" left true where NaN or negative values could decide)."""
    base = pred.lstrip("sou") if pred not in ("eq", "ne") else pred
    if base in ("gt", "ge"):
        a, b, base = b, a, {"gt": "lt", "ge": "le"}[base]
    if base == "lt":
        t = Truth(o.cmp("lt", a.hi, b.lo, False), o.cmp("lt", a.lo, b.hi, True))
    elif base == "le":
        t = Truth(o.cmp("le", a.hi, b.lo, False), o.cmp("le", a.lo, b.hi, True))
    elif base in ("eq", "ne"):
        single = o.and_(
            o.and_(o.cmp("eq", a.lo, a.hi, False), o.cmp("eq", b.lo, b.hi, False)), o.cmp("eq", a.lo, b.lo, False)
        )
        overlap = o.and_(o.cmp("le", a.lo, b.hi, True), o.cmp("le", b.lo, a.hi, True))
        t = Truth(single, overlap) if base == "eq" else Truth(o.not_(overlap), o.not_(single))
    elif base == "true":
        t = Truth(True, True)
    elif base == "false":
        t = Truth(False, False)
    else:  # ord / uno: depends on NaNs only
        t = UNKNOWN
    if pred.startswith("u") and pred not in ("eq", "ne"):  # unsigned or unordered: stay conservative
        return Truth(False, True) if pred in ("ult", "ule", "ugt", "uge") else Truth(t.must, True)
    return t


def _arith(o: _Ops, step: Step, xs: list[Interval]) -> Interval:
    name = step.name.removeprefix("arith.")
    if step.kind == "int" and all(x.const is not None for x in xs):  # fold constants
        v = int(_CONCRETE[step.name](step, *(x.const for x in xs)))
        return Interval(v, v, v)
    a = xs[0]
    if name in ("index_cast", "extsi", "extui", "trunci", "sitofp", "fptosi"):
        return a
    b = xs[1]
    if name in ("addi", "addf"):
        return Interval(o.int2("add", a.lo, b.lo), o.int2("add", a.hi, b.hi), _fold(a, b, lambda x, y: x + y))
    if name in ("subi", "subf"):
        return Interval(o.int2("sub", a.lo, b.hi), o.int2("sub", a.hi, b.lo), _fold(a, b, lambda x, y: x - y))
    if name == "minsi":
        return Interval(o.int2("min", a.lo, b.lo), _hull_min(o, a.hi, b.hi), _fold(a, b, min))
    if name == "maxsi":
        return Interval(_hull_max(o, a.lo, b.lo), o.int2("max", a.hi, b.hi), _fold(a, b, max))
    if name in ("muli", "mulf"):
        for x, c in ((a, b.const), (b, a.const)):
            if c is not None:
                lo, hi = (o.int2("mul", x.lo, c), o.int2("mul", x.hi, c))
                return Interval(lo, hi) if c >= 0 else Interval(hi, lo)
        return UNBOUNDED
    c = b.const
    if c is None or c <= 0:
        return UNBOUNDED
    if name == "floordivsi":
        return Interval(o.floordiv(a.lo, c), o.floordiv(a.hi, c), None if a.const is None else a.const // c)
    if name in ("divsi", "ceildivsi"):
        # monotone in a and between floor(a / c) and floor(a / c) + 1
        hi = o.floordiv(a.hi, c)
        return Interval(o.floordiv(a.lo, c), o.int2("add", hi, 1) if hi is not None else None)
    if name == "remsi":
        if a.lo is None or a.hi is None:
            return Interval(-(c - 1), c - 1)
        same = o.cmp("eq", o.floordiv(a.lo, c), o.floordiv(a.hi, c), False)
        nonneg = o.cmp("le", 0, a.lo, False)
        exact = o.and_(same, nonneg)
        lo_exact = o.int2("sub", a.lo, o.int2("mul", o.floordiv(a.lo, c), c))
        hi_exact = o.int2("sub", a.hi, o.int2("mul", o.floordiv(a.hi, c), c))
        return Interval(
            o.select(exact, lo_exact, o.select(nonneg, 0, -(c - 1))),
            o.select(exact, hi_exact, c - 1),
        )
    return UNBOUNDED


def _fold(a: Interval, b: Interval, fn: Callable[[int, int], int]) -> int | None:
    return fn(a.const, b.const) if a.const is not None and b.const is not None else None


def _hull_min(o: _Ops, a: Bound, b: Bound) -> Bound:
    """Upper bound of min(x, y): the smaller upper bound (either alone when one is unbounded)."""
    if a is None:
        return b
    if b is None:
        return a
    return o.int2("min", a, b)


def _hull_max(o: _Ops, a: Bound, b: Bound) -> Bound:
    if a is None:
        return b
    if b is None:
        return a
    return o.int2("max", a, b)


def predicate_bounds(
    pred: Predicate,
    domain: Domain,
    rows: tuple[Bound, Bound],
    cols: tuple[Bound, Bound],
    extents: tuple[int, int],
    arrays: Sequence[tuple[Bound, Bound] | None] = (),
) -> Truth:
    """Must/may of the predicate over positions i in [rows], j in [cols] (inclusive bounds,
    domain values or Python ints), full lengths `extents`, each array's scalar in its range
    (None: unknown)."""
    out = _ranges(pred, domain, rows, cols, extents, arrays)[pred.result]
    if not isinstance(out, Truth):
        raise NapkinError("the mask's predicate must yield an i1")
    return out


I32_RANGE = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class IntegerFacts:
    """What interval reasoning proves about a predicate's integers over the positions a
    kernel evaluates it at (`integer_facts`)."""

    fits_i32: bool  # every index value lies in i32's range: the predicate can compute in i32
    unsigned: frozenset[int]  # steps (numbers in `Predicate.steps`) of signed division or
    # remainder whose dividend is >= 0 and divisor a positive constant: unsigned gives the same


SIGNED_TO_UNSIGNED = {
    "arith.divsi": "arith.divui",
    "arith.floordivsi": "arith.divui",
    "arith.ceildivsi": "arith.ceildivui",
    "arith.remsi": "arith.remui",
}


def integer_facts(
    pred: Predicate, rows: tuple[int, int], cols: tuple[int, int], extents: tuple[int, int]
) -> IntegerFacts:
    """`IntegerFacts` of the predicate for i in [rows] and j in [cols] (inclusive), full
    lengths `extents`, its arrays' integers being i32. Conservative: a value interval
    reasoning cannot bound neither fits nor is non-negative."""
    arrays = [I32_RANGE if kind == "int" else None for kind in pred.arrays]
    values = _ranges(pred, NUMPY, rows, cols, extents, arrays)
    steps = values[POSITION_ARGS + len(arrays) :]

    def within(v: Interval | Truth, lo: int, hi: int) -> bool:
        return isinstance(v, Interval) and isinstance(v.lo, int) and isinstance(v.hi, int) and lo <= v.lo <= v.hi <= hi

    index_values = values[:POSITION_ARGS] + [v for s, v in zip(pred.steps, steps, strict=True) if s.type == "index"]
    fits = all(within(v, *I32_RANGE) for v in index_values)
    unsigned = frozenset(
        k
        for k, s in enumerate(pred.steps)
        if s.name in SIGNED_TO_UNSIGNED
        and within(values[s.operands[0]], 0, 2**62)
        and within(values[s.operands[1]], 1, 2**62)
    )
    return IntegerFacts(fits, unsigned)


def visited_chunks(
    preds: Sequence[Predicate],
    domain: MlirDomain,
    rows: tuple[Any, Any],
    n_chunks: int,
    chunk: int,
    extents: tuple[int, int],
    transposed: bool = False,
) -> tuple[Any, Any]:
    """[lower, upper) of the chunks of `chunk` keys that a kernel's CTA with query rows
    [rows] (inclusive `index` values) visits: from the first to the last chunk where every
    predicate may be true, by interval reasoning in a scan over the chunks (an `scf.for` at
    the insertion point, block arguments named ch, lo, hi); lower == upper when no chunk
    may keep a key. No dense mask is evaluated. `transposed`: the CTA's rows are keys and
    the chunks are of queries (the backward's dK/dV); `extents` stay the masks' (q, x)."""
    scan = scf.ForOp(
        domain.const(0), domain.const(n_chunks), domain.const(1), [domain.const(n_chunks), domain.const(0)]
    )
    for arg, name in zip(scan.body.arguments, ("ch", "lo", "hi"), strict=True):
        arg.set_location(ir.Location.name(name))
    with ir.InsertionPoint(scan.body):
        c = scan.induction_variable
        lo, hi = scan.inner_iter_args
        first = domain.mul(c, domain.const(chunk))
        cols = (first, domain.add(first, domain.const(chunk - 1)))
        may: Any = True
        for pred in preds:
            q_range, x_range = (cols, rows) if transposed else (rows, cols)
            bound = predicate_bounds(pred, domain, q_range, x_range, extents).may
            if bound is False or may is False:
                may = False
            elif bound is not True:
                may = bound if may is True else domain.and_(may, bound)
        if isinstance(may, bool):
            may = domain.boolean(may)
        lo_next = arith.select(may, arith.minsi(lo, c), lo)
        hi_next = arith.select(may, domain.add(c, domain.const(1)), hi)
        scf.YieldOp([lo_next, hi_next])
    upper = scan.results[1]
    return arith.minsi(scan.results[0], upper), upper


def _ranges(
    pred: Predicate,
    domain: Domain,
    rows: tuple[Bound, Bound],
    cols: tuple[Bound, Bound],
    extents: tuple[int, int],
    arrays: Sequence[tuple[Bound, Bound] | None],
) -> list[Interval | Truth]:
    """The range of every value of the predicate (see `predicate_bounds`)."""
    o = _Ops(domain)
    values: list[Interval | Truth] = [
        Interval(*rows, rows[0] if isinstance(rows[0], int) and rows[0] == rows[1] else None),
        Interval(*cols, cols[0] if isinstance(cols[0], int) and cols[0] == cols[1] else None),
        Interval(extents[0], extents[0], extents[0]),
        Interval(extents[1], extents[1], extents[1]),
    ]
    for k in range(len(pred.arrays)):
        rng = arrays[k] if k < len(arrays) else None
        values.append(UNBOUNDED if rng is None else Interval(*rng))
    for step in pred.steps:
        xs = [values[i] for i in step.operands]
        if step.name == "arith.constant":
            if step.kind == "bool":
                values.append(Truth(bool(step.value), bool(step.value)))
            elif step.kind == "int":
                v = int(step.value or 0)
                values.append(Interval(v, v, v))
            else:
                values.append(UNBOUNDED)
        elif step.name in ("arith.cmpi", "arith.cmpf"):
            a, b = xs
            assert isinstance(a, Interval) and isinstance(b, Interval) and step.predicate
            values.append(_compare(o, step.predicate, a, b))
        elif step.kind == "bool":
            values.append(_boolean(o, step, xs))
        elif step.name == "arith.select":
            c, a, b = xs
            assert isinstance(c, Truth) and isinstance(a, Interval) and isinstance(b, Interval)
            values.append(_select_interval(o, c, a, b))
        else:
            assert all(isinstance(x, Interval) for x in xs)
            values.append(_arith(o, step, xs))  # type: ignore[arg-type]
    return values


def _boolean(o: _Ops, step: Step, xs: list[Interval | Truth]) -> Truth:
    if step.name in ("arith.trunci", "arith.extui", "arith.extsi", "arith.index_cast"):
        x = xs[0]
        return x if isinstance(x, Truth) else UNKNOWN
    if not all(isinstance(x, Truth) for x in xs[-2:]):
        return UNKNOWN
    if step.name == "arith.select":
        c, a, b = xs
        assert isinstance(c, Truth) and isinstance(a, Truth) and isinstance(b, Truth)
        must = o.or_(o.and_(c.must, a.must), o.and_(o.not_(c.may), b.must))
        must = o.or_(must, o.and_(a.must, b.must))
        may = o.or_(o.and_(c.may, a.may), o.and_(o.not_(c.must), b.may))
        return Truth(must, may)
    a, b = xs
    assert isinstance(a, Truth) and isinstance(b, Truth)
    if step.name == "arith.andi":
        return Truth(o.and_(a.must, b.must), o.and_(a.may, b.may))
    if step.name == "arith.ori":
        return Truth(o.or_(a.must, b.must), o.or_(a.may, b.may))
    if step.name == "arith.xori":
        must = o.or_(o.and_(a.must, o.not_(b.may)), o.and_(o.not_(a.may), b.must))
        may = o.or_(o.and_(a.may, o.not_(b.must)), o.and_(o.not_(a.must), b.may))
        return Truth(must, may)
    return UNKNOWN


def _select_interval(o: _Ops, c: Truth, a: Interval, b: Interval) -> Interval:
    if c.must is True:
        return a
    if c.may is False:
        return b
    if a.lo is None or b.lo is None:
        lo = None
    else:
        lo = o.select(c.must, a.lo, o.select(c.may, o.int2("min", a.lo, b.lo), b.lo))
    if a.hi is None or b.hi is None:
        hi = None
    else:
        hi = o.select(c.must, a.hi, o.select(c.may, o.int2("max", a.hi, b.hi), b.hi))
    return Interval(lo, hi)


#: How `predicate_text` writes each op: a binary operator, or a function of its operands.
_TEXT = {
    "arith.addi": "+",
    "arith.subi": "-",
    "arith.muli": "*",
    "arith.addf": "+",
    "arith.subf": "-",
    "arith.mulf": "*",
    "arith.floordivsi": "//",
    "arith.divsi": "/",
    "arith.remsi": "%",
    "arith.andi": "and",
    "arith.ori": "or",
    "arith.xori": "xor",
}
_CMP_TEXT = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def predicate_text(pred: Predicate) -> str:
    """The predicate as one expression over i, j, n_rows, n_cols and a0, a1, ... (the arrays'
    values), e.g. `j <= i and i - j < 1024`: for pseudocode and messages."""
    names = ["i", "j", "n_rows", "n_cols", *(f"a{k}" for k in range(len(pred.arrays)))]
    texts: list[str] = list(names)
    atomic = [True] * len(texts)

    def arg(k: int) -> str:
        return texts[k] if atomic[k] else f"({texts[k]})"

    for s in pred.steps:
        x = s.operands
        if s.name == "arith.constant":
            text, simple = (str(bool(s.value)).lower() if s.kind == "bool" else str(s.value)), True
        elif s.name in ("arith.cmpi", "arith.cmpf"):
            p = s.predicate or ""
            base = p if p in ("eq", "ne") else p[1:]
            text, simple = f"{arg(x[0])} {_CMP_TEXT.get(base, p)} {arg(x[1])}", False
        elif s.name in _TEXT:
            text, simple = f"{arg(x[0])} {_TEXT[s.name]} {arg(x[1])}", False
        elif s.name == "arith.select":
            text, simple = f"{arg(x[1])} if {arg(x[0])} else {arg(x[2])}", False
        elif s.name in ("arith.minsi", "arith.maxsi", "arith.ceildivsi"):
            fn = {"arith.minsi": "min", "arith.maxsi": "max", "arith.ceildivsi": "ceildiv"}[s.name]
            text, simple = f"{fn}({texts[x[0]]}, {texts[x[1]]})", True
        else:  # conversions
            text, simple = texts[x[0]], atomic[x[0]]
        texts.append(text)
        atomic.append(simple)
    return texts[pred.result]


def tile_class(truth: Truth) -> str:
    """The kind of one tile, from a truth of Python/numpy booleans: "empty" (skipped),
    "full" (no mask needed) or "partial"."""
    if not bool(truth.may):
        return "empty"
    return "full" if bool(truth.must) else "partial"


def evaluate(
    pred: Predicate, i: np.ndarray, j: np.ndarray, extents: tuple[int, int], arrays: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """The predicate at every (i, j) (broadcast numpy arrays of positions and scalars), in
    numpy: the dense truth the tests compare the interval reasoning with."""
    values: list[Any] = [i, j, extents[0], extents[1], *arrays]
    for step in pred.steps:
        xs = [values[k] for k in step.operands]
        values.append(_CONCRETE[step.name](step, *xs))
    return np.asarray(values[pred.result], bool)


def _trunc_div(a: Any, b: Any) -> Any:
    q = np.floor_divide(a, b)
    return np.where((q < 0) & (q * b != a), q + 1, q)


_CMP_NUMPY: dict[str, Callable[[Any, Any], Any]] = {
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}


def _cmp(step: Step, a: Any, b: Any) -> Any:
    p = step.predicate or ""
    if p in ("true", "false"):
        return np.full(np.broadcast(a, b).shape, p == "true")
    base = p if p in ("eq", "ne") else p[1:]
    if base in ("rd", "no"):
        nan = np.isnan(a) | np.isnan(b)
        return ~nan if p == "ord" else nan
    r = _CMP_NUMPY[base](a, b)
    if step.name == "arith.cmpf" and p.startswith("u"):
        r = r | np.isnan(a) | np.isnan(b)
    return r


_CONCRETE: dict[str, Callable[..., Any]] = {
    "arith.constant": lambda s: bool(s.value) if s.kind == "bool" else s.value,
    "arith.addi": lambda s, a, b: a + b,
    "arith.subi": lambda s, a, b: a - b,
    "arith.muli": lambda s, a, b: a * b,
    "arith.addf": lambda s, a, b: a + b,
    "arith.subf": lambda s, a, b: a - b,
    "arith.mulf": lambda s, a, b: a * b,
    "arith.divsi": lambda s, a, b: _trunc_div(a, b),
    "arith.floordivsi": lambda s, a, b: np.floor_divide(a, b),
    "arith.ceildivsi": lambda s, a, b: -np.floor_divide(-a, b),
    "arith.remsi": lambda s, a, b: a - b * _trunc_div(a, b),
    "arith.minsi": lambda s, a, b: np.minimum(a, b),
    "arith.maxsi": lambda s, a, b: np.maximum(a, b),
    "arith.cmpi": _cmp,
    "arith.cmpf": _cmp,
    "arith.andi": lambda s, a, b: a & b,
    "arith.ori": lambda s, a, b: a | b,
    "arith.xori": lambda s, a, b: a ^ b,
    "arith.select": lambda s, c, a, b: np.where(c, a, b),
    "arith.index_cast": lambda s, a: a,
    "arith.extsi": lambda s, a: a,
    "arith.extui": lambda s, a: a,
    "arith.trunci": lambda s, a: a,
    "arith.sitofp": lambda s, a: np.asarray(a, float),
    "arith.fptosi": lambda s, a: np.trunc(a).astype(np.int64),
}

assert set(_CONCRETE) == PREDICATE_OPS
