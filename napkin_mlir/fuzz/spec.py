"""Diagram specs: a random diagram as plain data, before it is MLIR.

A `Spec` names the axes and their sizes, the inputs, the boxes (in order, each naming its
operands by value number: the inputs first, then one value per box) and the outputs. It is
JSON-serializable (`to_json`/`from_json`), so a diagram travels to a worker process, is
written next to a reproducer and is shrunk by the minimizer without touching MLIR.

The result types are not stored: `infer_types` derives them with the builders' rules
(`napkin_mlir.ir.builders`), so a spec edited by the minimizer (a box bypassed, an axis
shrunk) either still types or raises `SpecError`. `build_module` turns a spec into napkin IR
with the builders, and `render` into text; they import MLIR when called, so that the
supervisor of a campaign (plain Python) handles specs without loading MLIR.

Map bodies are small scalar programs (`Instr`): each instruction names an MLIR op
(`arith.addf`, `math.tanh`, `const`) and its operands by scalar number (the block arguments
first, then one value per instruction); the last instruction is yielded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: Box kinds a spec holds (`Op.kind`), as the generator names them.
OP_KINDS = ("contract", "unary", "scale", "cast", "binary", "map", "reduce", "softmax", "mask")

#: Scalar ops of map bodies and their arity (`const` takes none: it holds `Instr.value`).
SCALAR_ARITY: dict[str, int] = {
    "const": 0,
    "arith.addf": 2,
    "arith.subf": 2,
    "arith.mulf": 2,
    "arith.divf": 2,
    "arith.maximumf": 2,
    "arith.minimumf": 2,
    "arith.negf": 1,
    "math.absf": 1,
    "math.tanh": 1,
    "math.sin": 1,
    "math.cos": 1,
    "math.exp": 1,
    "math.erf": 1,
    "math.atan": 1,
    "math.sqrt": 1,
    "math.log1p": 1,
    "math.rsqrt": 1,
    "math.fma": 3,
    "select.gt": 4,  # select(a > b, c, d): arith.cmpf ogt + arith.select
}


class SpecError(Exception):
    """A spec that does not type (the minimizer drops such candidates)."""


@dataclass
class Instr:
    """One scalar instruction of a map body."""

    op: str
    args: list[int] = field(default_factory=list)
    value: float = 0.0


@dataclass
class Op:
    """One box. `fn`: the unary/binary function or the reduction kind; `axes`: the result
    axes of a contraction; `dtype`: a contraction's accumulation type or a cast's target;
    `axis`/`rows`/`cols`/`factor`: the attributes of reduce/softmax, mask and scale."""

    kind: str
    operands: list[int]
    fn: str = ""
    axes: list[str] = field(default_factory=list)
    dtype: str = ""
    axis: str = ""
    rows: str = ""
    cols: str = ""
    factor: float = 1.0
    body: list[Instr] = field(default_factory=list)
    mask: str = "causal"  # the predicate of a mask (MASK_KINDS) and its width
    width: int = 1


#: Mask predicates (i, j: row and column positions; n, m: their lengths; w: `Op.width`).
#: Each keeps a key in every row when rows <= cols (`window`, `chunked`, `bottom_right`
#: need that; `causal` and `prefix` always do).
MASK_KINDS = ("causal", "window", "chunked", "prefix", "bottom_right")


def mask_predicate(kind: str, width: int) -> Any:
    """The arith builder of a mask kind's predicate (i, j, n_rows, n_cols) -> i1."""
    from mlir import ir
    from mlir.dialects import arith

    P = arith.CmpIPredicate

    def c(v: int) -> ir.Value:
        return arith.ConstantOp(ir.IndexType.get(), v).result

    def build(i: ir.Value, j: ir.Value, n: ir.Value, m: ir.Value) -> ir.Value:
        causal = arith.cmpi(P.sle, j, i)
        if kind == "window":
            return arith.andi(causal, arith.cmpi(P.slt, arith.subi(i, j), c(width)))
        if kind == "chunked":
            same = arith.cmpi(P.eq, arith.floordivsi(i, c(width)), arith.floordivsi(j, c(width)))
            return arith.andi(same, causal)
        if kind == "prefix":
            return arith.ori(arith.cmpi(P.slt, j, c(width)), causal)
        if kind == "bottom_right":
            return arith.cmpi(P.sle, arith.subi(j, m), arith.subi(i, n))
        return causal

    return build


@dataclass
class Input:
    name: str
    axes: list[str]
    dtype: str


@dataclass
class Spec:
    """A diagram as data: axis sizes, inputs, boxes, outputs (value numbers)."""

    name: str
    sizes: dict[str, int]
    inputs: list[Input]
    ops: list[Op]
    outputs: list[int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Spec:
        ops = [Op(**{**o, "body": [Instr(**i) for i in o.get("body", [])]}) for o in data["ops"]]
        return Spec(data["name"], dict(data["sizes"]), [Input(**i) for i in data["inputs"]], ops, list(data["outputs"]))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    def copy(self) -> Spec:
        return Spec.from_json(json.loads(self.dumps()))

    @property
    def values(self) -> int:
        return len(self.inputs) + len(self.ops)


@dataclass(frozen=True)
class VType:
    """The type of a value of a spec: axes in order and element type."""

    axes: tuple[str, ...]
    dtype: str


def _union(types: list[VType]) -> tuple[str, ...]:
    axes: list[str] = []
    for t in types:
        axes += [a for a in t.axes if a not in axes]
    return tuple(axes)


def op_type(op: Op, args: list[VType]) -> VType:
    """The result type of `op` on operands of types `args` (the builders' rules)."""
    if not args:
        raise SpecError(f"{op.kind} without operands")
    a = args[0]
    if op.kind == "contract":
        if len(args) != 2:
            raise SpecError("contract takes two operands")
        if args[0].dtype != args[1].dtype:
            raise SpecError("contract operands differ in dtype")
        have = set(args[0].axes) | set(args[1].axes)
        if not op.axes or any(x not in have for x in op.axes) or len(set(op.axes)) != len(op.axes):
            raise SpecError("contract result axes")
        return VType(tuple(op.axes), op.dtype or a.dtype)
    if op.kind in ("unary", "scale", "softmax", "mask"):
        if len(args) != 1:
            raise SpecError(f"{op.kind} takes one operand")
        if op.kind == "softmax" and op.axis not in a.axes:
            raise SpecError("softmax axis")
        if op.kind == "mask" and (op.rows not in a.axes or op.cols not in a.axes or op.rows == op.cols):
            raise SpecError("mask axes")
        if op.kind == "mask" and (op.mask not in MASK_KINDS or op.width < 1):
            raise SpecError("mask predicate")
        return a
    if op.kind == "cast":
        if len(args) != 1 or op.dtype == a.dtype:
            raise SpecError("cast")
        return VType(a.axes, op.dtype)
    if op.kind == "binary":
        if len(args) != 2 or args[0].dtype != args[1].dtype:
            raise SpecError("binary operands")
        return VType(_union(args), a.dtype)
    if op.kind == "map":
        if len({t.dtype for t in args}) != 1:
            raise SpecError("map operands differ in dtype")
        _check_body(op.body, len(args))
        return VType(_union(args), a.dtype)
    if op.kind == "reduce":
        if len(args) != 1 or op.axis not in a.axes or len(a.axes) < 2:
            raise SpecError("reduce axis")
        return VType(tuple(x for x in a.axes if x != op.axis), a.dtype)
    raise SpecError(f"unknown kind {op.kind}")


def _check_body(body: list[Instr], nargs: int) -> None:
    if not body:
        raise SpecError("empty map body")
    for i, ins in enumerate(body):
        if ins.op not in SCALAR_ARITY or len(ins.args) != SCALAR_ARITY[ins.op]:
            raise SpecError(f"bad scalar instruction {ins.op}")
        if any(not 0 <= a < nargs + i for a in ins.args):
            raise SpecError("scalar operand out of range")


def infer_types(spec: Spec) -> list[VType]:
    """The type of every value (inputs, then boxes); SpecError if the spec does not type."""
    types = [VType(tuple(i.axes), i.dtype) for i in spec.inputs]
    for x in spec.inputs:
        if len(set(x.axes)) != len(x.axes) or not x.axes or any(a not in spec.sizes for a in x.axes):
            raise SpecError("input axes")
    for op in spec.ops:
        if any(not 0 <= v < len(types) for v in op.operands):
            raise SpecError("operand out of range")
        types.append(op_type(op, [types[v] for v in op.operands]))
    if not spec.outputs or any(not 0 <= v < len(types) for v in spec.outputs):
        raise SpecError("outputs")
    if any(v < len(spec.inputs) for v in spec.outputs):
        raise SpecError("an output is an input")
    return types


def shape(spec: Spec, t: VType) -> tuple[int, ...]:
    return tuple(spec.sizes[a] for a in t.axes)


def build_module(spec: Spec) -> Any:
    """The spec as a napkin module, built with the builders (needs a napkin context and a
    location active). Raises SpecError when the spec does not type."""
    from mlir import ir
    from mlir.dialects import arith
    from mlir.dialects import math as mmath

    from napkin_mlir.ir.arrays import ArrayType, element_type
    from napkin_mlir.ir.builders import DiagramBuilder

    infer_types(spec)
    d = DiagramBuilder(
        spec.name,
        **{i.name: ArrayType(tuple(i.axes), tuple(spec.sizes[a] for a in i.axes), i.dtype) for i in spec.inputs},
    )
    values: list[ir.Value] = [d[i.name] for i in spec.inputs]

    def body_fn(op: Op, dtype: str) -> Any:
        def build(*args: ir.Value) -> ir.Value:
            scalars = list(args)
            etype = element_type(dtype)
            for ins in op.body:
                xs = [scalars[a] for a in ins.args]
                if ins.op == "const":
                    v = arith.ConstantOp(etype, ins.value).result
                elif ins.op == "select.gt":
                    cond = arith.cmpf(arith.CmpFPredicate.OGT, xs[0], xs[1])
                    v = arith.select(cond, xs[2], xs[3])
                elif ins.op.startswith("arith."):
                    v = getattr(arith, ins.op.removeprefix("arith."))(*xs)
                else:
                    v = getattr(mmath, ins.op.removeprefix("math."))(*xs)
                scalars.append(v)
            return scalars[-1]

        return build

    types = [VType(tuple(i.axes), i.dtype) for i in spec.inputs]
    for op in spec.ops:
        xs = [values[v] for v in op.operands]
        t = op_type(op, [types[v] for v in op.operands])
        if op.kind == "contract":
            r = d.contract(xs[0], xs[1], tuple(op.axes), dtype=op.dtype or None)
        elif op.kind == "unary":
            r = d.unary(op.fn, xs[0])
        elif op.kind == "scale":
            r = d.scale(xs[0], op.factor)
        elif op.kind == "cast":
            r = d.cast(xs[0], op.dtype)
        elif op.kind == "binary":
            r = d.binary(op.fn, xs[0], xs[1])
        elif op.kind == "map":
            r = d.map(body_fn(op, t.dtype), *xs)
        elif op.kind == "reduce":
            r = d.reduce(xs[0], op.axis, op.fn)
        elif op.kind == "softmax":
            r = d.softmax(xs[0], op.axis)
        else:
            r = d.mask(xs[0], op.rows, op.cols, mask_predicate(op.mask, op.width))
        values.append(r)
        types.append(t)
    return d.ret(*[values[v] for v in spec.outputs])


def render(spec: Spec) -> str:
    """The spec as napkin IR text (in a fresh context)."""
    from mlir import ir

    from napkin_mlir.ir.context import napkin_context

    with napkin_context(), ir.Location.unknown():
        return str(build_module(spec))
