"""napkin-differentiate: the backward diagram (reverse mode), derived from the forward.

From a plain diagram `@f` (one function of napkin ops) the pass builds `@f_vjp`, the
vector-Jacobian product as napkin ops: it takes the forward's inputs (those it needs), the
residuals, and one cotangent per output (`dO`), and returns the gradient of every input named
by `wrt` (`dQ`, `dK`, `dV`). The forward `@f` gains the residuals as extra results, after its
outputs; `result_names` on both functions and `arg_names` on `@f_vjp` name every array.

The rules, op by op, in reverse order (cotangents of a value used twice are added):

  * `contract`: transposed by axis name, d lhs = contract(dOut, rhs) onto lhs's axes, which
    sums over the contracted axes and over the axes woven in the forward that lhs lacks (an
    axis only lhs has, summed away in the forward, is broadcast back);
  * elementwise: exp (dy·y), tanh (dy·(1-y²)), relu, gelu (tanh approximation), silu, scale,
    cast (cast back), transfer (identity); add, sub, mul, div, max with broadcasting: the
    gradient of a broadcast operand is summed over the axes it lacks;
  * `map`: one `napkin.map` per operand, whose body recomputes the forward scalar ops and
    runs reverse mode on them (addf, subf, mulf, divf, negf, exp, tanh, rsqrt, sqrt, log,
    maximumf and minimumf (ties split in half, JAX's rule), select, extf, truncf, constant,
    cmpf; any other op on the gradient's path is refused, named with its location);
  * `reduce`: sum broadcasts the cotangent back; max sends it to the positions equal to the
    maximum, split equally between ties (JAX's rule: dO / count at each, by a select);
  * `softmax`: dS = P ∘ (dP − D) with D = Σ_axis dP ∘ P. When every use of P is a
    contraction (through casts) that contracts exactly the softmax axis and keeps every other
    axis of P, D = Σ_E dO ∘ O summed over the axes E that the contraction adds: Σ_x dP∘P =
    Σ_x Σ_E dO V P = Σ_E dO O (FlashAttention-2's D = rowsum(dO ∘ O)). `rowsums` says when
    to use it: `exact` (default) when the contraction reads P itself, so that O is Σ P V to
    the last bit; `output` also through a rounding cast (bf16 P), reading O from the output
    that casts it, as FlashAttention-2 does: exact in real arithmetic, but O then carries the
    forward's bf16 rounding of P and of O, an error of the size of JAX's own in bf16, which
    the project's rule (2x JAX's) rejects on about 1 small case in 10; `direct` never;
  * causal `mask`: the cotangent passes where the mask keeps and is 0 where it writes -inf,
    by a select on the same mask applied to ones (1 where kept, -inf where dropped, whatever
    the cotangent holds), never a product with 0 that would turn -inf or inf into NaN;
  * `fill`: nothing. Partitioned programs (group, stream) and ops without a rule are refused.
  Cotangents of f16/bf16 arrays are kept in f32 (FlashAttention-2 keeps dP and dS in f32) and
  the gradients are cast to their input's type at the end; `napkin.map` bodies differentiate
  in their own element type (as JAX differentiates the interpretation of the body).

Residuals: with `remat=false` every forward intermediate the backward reads is stored (a
result of `@f`). With `remat=true` (FlashAttention-2) the backward recomputes them from the
inputs, and the forward stores only what is cheap to keep: its outputs, and for every softmax
whose output the backward needs its row log-sum-exp L = m + log l, from which the backward
recomputes P = exp(S − L) instead of storing P. An f32 softmax is then written out as e / l of
the same row max m, exponentials e and row sum l that L is taken of, so that a stream of the
forward carries one running max and sum for both (and a kernel writes L from its own m and l).

Before (`remat=true`; `wrt` defaults to every input):

    func.func @attention(%Q: tensor<1x2x5x4xf32, {axes = ["b", "h", "q", "d"]}>, %K: ..., %V: ...) -> ... {
      %s = "napkin.contract"(%Q, %K) -> tensor<1x2x5x7xf32, {axes = ["b", "h", "q", "x"]}>
      %t = "napkin.scale"(%s) {factor = 0.5}
      %p = "napkin.softmax"(%t) {axis = "x"}
      %o = "napkin.contract"(%p, %V) -> tensor<1x2x5x4xf32, {axes = ["b", "h", "q", "d"]}>
      return %o

After:

    func.func @attention(...) -> (tensor<1x2x5x4xf32, ...>, tensor<1x2x5xf32, {axes = ["b", "h", "q"]}>)
        attributes {arg_names = ["Q", "K", "V"], result_names = ["O", "L"]} {
      %s = "napkin.contract"(%Q, %K)
      %t = "napkin.scale"(%s) {factor = 0.5}
      %m = "napkin.reduce"(%t) {axis = "x", kind = "max"}
      %e = "napkin.exp"("napkin.sub"(%t, %m))
      %l = "napkin.reduce"(%e) {axis = "x", kind = "sum"}
      %L = "napkin.map"(%m, %l) ({ m + log(l) })
      %p = "napkin.div"(%e, %l)                               // the softmax, written out
      %o = "napkin.contract"(%p, %V)
      return %o, %L
    }
    func.func @attention_vjp(%Q, %K, %V, %O, %L, %dO) -> (dQ, dK, dV)
        attributes {arg_names = ["Q", "K", "V", "O", "L", "dO"], result_names = ["dQ", "dK", "dV"]} {
      %s = "napkin.contract"(%Q, %K)                           // S recomputed
      %t = "napkin.scale"(%s) {factor = 0.5}
      %p = "napkin.exp"("napkin.sub"(%t, %L))                  // P = exp(S - L)
      %dP = "napkin.contract"(%dO, %V) -> [b, h, q, x]
      %dV = "napkin.contract"(%dO, %p) -> [b, h, x, d]
      %D = "napkin.reduce"("napkin.mul"(%dO, %O)) {axis = "d"}  // rowsum(dO ∘ O)
      %dS = "napkin.map"(%p, %dP, %D) ({ p * (g - D) })
      %dT = "napkin.scale"(%dS) {factor = 0.5}
      %dQ = "napkin.contract"(%dT, %K) -> [b, h, q, d]
      %dK = "napkin.contract"(%dT, %Q) -> [b, h, x, d]
      return %dQ, %dK, %dV
    }
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mlir import ir
from mlir.dialects import arith, func, gpu
from mlir.dialects import math as mmath

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, element_type, is_array
from napkin_mlir.ir.masks import copy_mask, mask_parts
from napkin_mlir.ir.ops import op_info
from napkin_mlir.ir.regions import (
    array,
    body_ops,
    create,
    diagram_functions,
    fail,
    owner,
    slot_attributes,
    str_attr,
    terminator,
)
from napkin_mlir.ir.regions import users as _users
from napkin_mlir.ir.segments import INTEGER_DTYPES
from passes import register

LOW_PRECISION = ("f16", "bf16")
PARTITIONS = ("napkin.group", "napkin.stream")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


@dataclass(frozen=True)
class DifferentiateOptions:
    """wrt: the inputs to differentiate, by arg_names or position (empty: every input);
    remat: recompute forward intermediates in the backward, storing only the outputs and the
    row log-sum-exp of each softmax (false: store every intermediate the backward reads);
    rowsums: the softmax's D = Σ dP∘P as Σ dO∘O where the ops prove it: `exact` when the
    contraction reads P itself (no rounding cast between), `output` also through a rounding
    cast, reading O from the output (FlashAttention-2's numerics), `direct` never."""

    wrt: tuple[str, ...] = ()
    remat: bool = False
    rowsums: Literal["exact", "output", "direct"] = "exact"


# --- building blocks (at the current insertion point and location) -------------------------


def _plain(v: ir.Value) -> ArrayType:
    """The array type of `v` without a memory level (the backward is a plain diagram)."""
    return array(v).with_level(None)


def _compute(dtype: str) -> str:
    """The element type elementwise math on `dtype` runs in (f16/bf16 widen to f32)."""
    return "f32" if dtype in LOW_PRECISION else dtype


def _adjoint(v: ir.Value) -> ArrayType:
    """The type of the cotangent of `v`: its axes, in its compute type (f32 for f16/bf16)."""
    t = _plain(v)
    return t.with_dtype(_compute(t.dtype))


def _cast(v: ir.Value, dtype: str) -> ir.Value:
    t = array(v)
    return v if t.dtype == dtype else create("cast", [v], t.with_dtype(dtype))


def _up(v: ir.Value) -> ir.Value:
    return _cast(v, _compute(array(v).dtype))


def _fill(t: ArrayType, value: float) -> ir.Value:
    return create("fill", [], t, value=ir.FloatAttr.get(ir.F64Type.get(), value))


def _like(t: ArrayType, axes: Sequence[str], dtype: str | None = None) -> ArrayType:
    """An array over `axes` (sizes from `t`)."""
    return ArrayType(tuple(axes), tuple(t.size(a) for a in axes), dtype or t.dtype)


def _map(operands: Sequence[ir.Value], result: ArrayType, body: Callable[..., ir.Value]) -> ir.Value:
    """`napkin.map` of `operands` (one element type) with result `result`; `body` builds the
    scalar result from the block arguments."""
    op = ir.Operation.create(
        "napkin.map",
        results=[result.to_mlir()],
        operands=list(operands),
        attributes=slot_attributes(len(operands), None),
        regions=1,
    )
    block = op.regions[0].blocks.append(*[element_type(array(v).dtype) for v in operands])
    with ir.InsertionPoint(block):
        gpu.YieldOp([body(*block.arguments)])
    return op.result


def _transpose(v: ir.Value, axes: Sequence[str]) -> ir.Value:
    t = array(v)
    if tuple(axes) == t.axes:
        return v
    return _map([v], _like(t, axes), lambda x: x)


def _sum_to(g: ir.Value, target: ArrayType) -> ir.Value:
    """`g` summed over the axes `target` lacks, in `target`'s axis order and element type
    (sums of low-precision values run in f32)."""
    extra = [a for a in array(g).axes if a not in target.axes]
    if extra:
        g = _up(g)
    for axis in extra:
        g = create("reduce", [g], array(g).without(axis), axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum"))
    return _cast(_transpose(g, target.axes), target.dtype)


def _broadcast_to(g: ir.Value, target: ArrayType) -> ir.Value:
    """`g` repeated along the axes of `target` it lacks (plus a fill of zeros)."""
    t = array(g)
    missing = [a for a in target.axes if a not in t.axes]
    if not missing:
        return _transpose(g, target.axes)
    zeros = _fill(_like(target, missing, t.dtype), 0.0)
    return create("add", [g, zeros], target.with_dtype(t.dtype))


def _const(t: ir.Type, value: float) -> ir.Value:
    return arith.constant(t, value)


def _tie_share(g: ir.Value, mine: ir.Value, other: ir.Value, greater: bool) -> ir.Value:
    """The share of a max (greater) or min cotangent `g` for the operand `mine`: all of it where
    `mine` wins, half on ties (JAX's rule), nothing where it loses."""
    t = g.type
    win = arith.cmpf(arith.CmpFPredicate.OGT if greater else arith.CmpFPredicate.OLT, mine, other)
    tie = arith.cmpf(arith.CmpFPredicate.OEQ, mine, other)
    half = arith.select(tie, arith.mulf(g, _const(t, 0.5)), _const(t, 0.0))
    return arith.select(win, g, half)


# --- scalar reverse mode inside napkin.map ---------------------------------------------------

ScalarRule = Callable[[Callable[[ir.Value, ir.Value], None], list[ir.Value], ir.Value, ir.Value], None]


def _scalar_rules() -> dict[str, ScalarRule]:
    """op name -> rule(add, operands, result, g): calls add(operand, contribution)."""

    def one(t: ir.Type) -> ir.Value:
        return _const(t, 1.0)

    return {
        "arith.addf": lambda add, xs, y, g: (add(xs[0], g), add(xs[1], g)),
        "arith.subf": lambda add, xs, y, g: (add(xs[0], g), add(xs[1], arith.negf(g))),
        "arith.mulf": lambda add, xs, y, g: (add(xs[0], arith.mulf(g, xs[1])), add(xs[1], arith.mulf(g, xs[0]))),
        "arith.divf": lambda add, xs, y, g: (
            add(xs[0], arith.divf(g, xs[1])),
            add(xs[1], arith.negf(arith.divf(arith.mulf(g, xs[0]), arith.mulf(xs[1], xs[1])))),
        ),
        "arith.negf": lambda add, xs, y, g: add(xs[0], arith.negf(g)),
        "math.exp": lambda add, xs, y, g: add(xs[0], arith.mulf(g, y)),
        "math.tanh": lambda add, xs, y, g: add(xs[0], arith.mulf(g, arith.subf(one(g.type), arith.mulf(y, y)))),
        "math.rsqrt": lambda add, xs, y, g: add(
            xs[0], arith.mulf(g, arith.mulf(_const(g.type, -0.5), arith.divf(y, xs[0])))
        ),
        "math.sqrt": lambda add, xs, y, g: add(xs[0], arith.divf(arith.mulf(g, _const(g.type, 0.5)), y)),
        "math.log": lambda add, xs, y, g: add(xs[0], arith.divf(g, xs[0])),
        "arith.maximumf": lambda add, xs, y, g: (
            add(xs[0], _tie_share(g, xs[0], xs[1], True)),
            add(xs[1], _tie_share(g, xs[1], xs[0], True)),
        ),
        "arith.minimumf": lambda add, xs, y, g: (
            add(xs[0], _tie_share(g, xs[0], xs[1], False)),
            add(xs[1], _tie_share(g, xs[1], xs[0], False)),
        ),
        "arith.select": lambda add, xs, y, g: (
            add(xs[1], arith.select(xs[0], g, _const(g.type, 0.0))),
            add(xs[2], arith.select(xs[0], _const(g.type, 0.0), g)),
        ),
        "arith.extf": lambda add, xs, y, g: add(xs[0], arith.truncf(xs[0].type, g)),
        "arith.truncf": lambda add, xs, y, g: add(xs[0], arith.extf(xs[0].type, g)),
    }


SCALAR_RULES = _scalar_rules()

#: Scalar ops that carry no gradient (constants, comparisons).
SCALAR_CONSTANT = ("arith.constant", "arith.cmpf")


def _is_float(t: ir.Type) -> bool:
    return isinstance(t, ir.F16Type | ir.BF16Type | ir.F32Type | ir.F64Type)


def _map_gradient(op: ir.Operation, index: int, g: ir.Value, operands: list[ir.Value], result: ArrayType) -> ir.Value:
    """A `napkin.map` of (g, operands...) yielding g · ∂f/∂operand[index] of the map `op`: its
    body recomputes the forward scalar ops, then runs reverse mode over them."""
    src = next(iter(op.regions[0].blocks))
    body_ops_ = [o.operation for o in src.operations]

    def body(gs: ir.Value, *xs: ir.Value) -> ir.Value:
        env: dict[ir.Value, ir.Value] = dict(zip(src.arguments, xs, strict=True))
        yielded = None
        for inner in body_ops_:
            if inner.name == "gpu.yield":
                yielded = inner.operands[0]
                break
            clone = inner.clone().operation
            for old, new in env.items():
                clone.replace_uses_of_with(old, new)
            for r_old, r_new in zip(inner.results, clone.results, strict=True):
                env[r_old] = r_new
        if yielded is None:
            raise fail(op, "napkin-differentiate: the body of 'napkin.map' does not end with gpu.yield")
        adj: dict[ir.Value, ir.Value] = {yielded: gs}

        def add(v: ir.Value, c: ir.Value) -> None:
            key = next((k for k, e in env.items() if e == v), v)
            if not _is_float(key.type):
                return
            adj[key] = arith.addf(adj[key], c) if key in adj else c

        for inner in reversed(body_ops_[: body_ops_.index(next(o for o in body_ops_ if o.name == "gpu.yield"))]):
            if not inner.results or inner.results[0] not in adj:
                continue
            rule = SCALAR_RULES.get(inner.name)
            if rule is None:
                if inner.name in SCALAR_CONSTANT:
                    continue
                raise fail(
                    inner,
                    f"napkin-differentiate: no derivative for '{inner.name}' in the body of a 'napkin.map' "
                    f"(differentiable: {', '.join(sorted(SCALAR_RULES))})",
                )
            rule(add, [env.get(v, v) for v in inner.operands], env[inner.results[0]], adj[inner.results[0]])
        grad = adj.get(src.arguments[index])
        return grad if grad is not None else _const(gs.type, 0.0)

    return _map([g, *operands], result, body)


# --- the backward --------------------------------------------------------------------------


def closed_region(op: ir.Operation) -> bool:
    """Every op in the regions of `op` uses only values defined inside them (a map's body is a
    function of its scalars: it can be copied into another function)."""
    inside: set[ir.Value] = set()
    for region in op.regions:
        for block in region.blocks:
            inside.update(block.arguments)
            for inner in block.operations:
                inner = inner.operation
                if inner.regions and not closed_region(inner):
                    return False
                if any(v not in inside for v in inner.operands):
                    return False
                inside.update(inner.results)
    return True


def _names(f: ir.Operation, attr: str, count: int, default: Callable[[int], str]) -> list[str]:
    if attr in f.attributes:
        names = [ir.StringAttr(a).value for a in ir.ArrayAttr(f.attributes[attr])]
        if len(names) == count:
            return names
    return [default(i) for i in range(count)]


def _string_array(names: Sequence[str]) -> ir.ArrayAttr:
    return ir.ArrayAttr.get([ir.StringAttr.get(n) for n in names])


#: Order of the backward's arguments: inputs, outputs, residuals, cotangents.
_ROLES = ("in", "out", "res", "cot")


class Backward:
    """Builds `@<f>_vjp` for the plain diagram `f` and adds the residuals to `f`."""

    def __init__(self, f: ir.Operation, options: DifferentiateOptions) -> None:
        self.f = f
        self.block = next(iter(f.regions[0].blocks))
        self.ops = body_ops(self.block)
        self.ret = terminator(self.block)
        self.outputs = list(self.ret.operands)
        self.remat = options.remat
        self.rowsums = options.rowsums
        self.name = str_attr(f, "sym_name")
        for op in self.ops:
            if op.name in PARTITIONS:
                raise fail(op, f"napkin-differentiate: takes a plain diagram (before partitioning), found {op.name}")
            if op.regions and not closed_region(op):
                raise fail(op, f"napkin-differentiate: the body of '{op.name}' uses values defined outside it")
        for v in [*self.block.arguments, *self.outputs]:
            if not is_array(v.type):
                raise NapkinError(f"napkin-differentiate: @{self.name} takes and returns napkin arrays only")
        self.used: set[str] = set()
        self.input_names = [
            self._fresh(n) for n in _names(f, "arg_names", len(self.block.arguments), lambda i: f"arg{i}")
        ]
        default_out = (lambda i: "O") if len(self.outputs) == 1 else (lambda i: f"O{i}")
        self.output_names = [self._fresh(n) for n in _names(f, "result_names", len(self.outputs), default_out)]
        self.wrt = self._resolve(options.wrt)
        self.active: set[ir.Value] = {self.block.arguments[i] for i in self.wrt}
        for op in self.ops:
            if any(v in self.active for v in op.operands):
                self.active.update(op.results)
        # the backward, built in a scratch function whose arguments appear on demand
        with ir.InsertionPoint(f.block), f.location:
            self.scratch = func.FuncOp(self.name + "_vjp_scratch", ir.FunctionType.get([], []))
        self.vblock = self.scratch.add_entry_block()
        self.args: dict[tuple[str, int], tuple[str, ir.Value]] = {}
        self.residuals: list[tuple[str, ir.Value]] = []
        self.lse: dict[ir.Operation, int] = {}
        self.decomposed: dict[ir.Operation, tuple[ir.Value, ir.Value]] = {}  # softmax -> (e, l)
        self.primal_of: dict[ir.Value, ir.Value] = {}
        self.adj: dict[ir.Value, ir.Value] = {}

    # --- names and arguments ------------------------------------------------------------------

    def _fresh(self, name: str) -> str:
        base, k = name, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def _resolve(self, wrt: tuple[str, ...]) -> list[int]:
        n = len(self.block.arguments)
        integer = [
            i for i, a in enumerate(self.block.arguments) if is_array(a.type) and array(a).dtype in INTEGER_DTYPES
        ]
        if not wrt:  # every float input (integer arrays, mask data, have no derivative)
            return [i for i in range(n) if i not in integer]
        chosen: list[int] = []
        for w in wrt:
            if w in self.input_names:
                i = self.input_names.index(w)
            elif w.isdigit() and int(w) < n:
                i = int(w)
            else:
                raise NapkinError(
                    f"napkin-differentiate: wrt: unknown input '{w}' (@{self.name} takes {', '.join(self.input_names)}, "
                    f"or positions 0 to {n - 1})"
                )
            if i in integer:
                raise NapkinError(
                    f"napkin-differentiate: wrt: '{w}' is an integer array (mask data): it has no derivative"
                )
            if i not in chosen:
                chosen.append(i)
        return chosen

    def _arg(self, role: str, index: int, name: str, t: ArrayType) -> ir.Value:
        key = (role, index)
        if key not in self.args:
            self.args[key] = (name, self.vblock.add_argument(t.to_mlir(), self.f.location))
        return self.args[key][1]

    # --- forward values in the backward -------------------------------------------------------

    def primal(self, v: ir.Value) -> ir.Value:
        """The forward value `v` inside the backward: an input, an output, a stored residual or
        a recomputation (remat), created on first use at the end of the backward."""
        if v in self.primal_of:
            return self.primal_of[v]
        op = owner(v)
        if op is None:
            i = ir.BlockArgument(v).arg_number
            found = self._arg("in", i, self.input_names[i], _plain(v))
        elif v in self.outputs:
            j = self.outputs.index(v)
            found = self._arg("out", j, self.output_names[j], _plain(v))
        elif op.name == "napkin.transfer":
            found = self.primal(op.operands[0])
        elif op.name == "napkin.fill" or self.remat:
            found = self._recompute(op, v)
        else:
            found = self.store(v)
        self.primal_of[v] = found
        return found

    def store(self, v: ir.Value) -> ir.Value:
        """`v` as a residual: a result of the forward and an argument of the backward."""
        if v in self.primal_of:
            return self.primal_of[v]
        k = len(self.residuals)
        name = self._fresh(f"R{k}")
        self.residuals.append((name, v))
        found = self._arg("res", k, name, _plain(v))
        self.primal_of[v] = found
        return found

    def _recompute(self, op: ir.Operation, v: ir.Value) -> ir.Value:
        if op.name == "napkin.softmax":
            return self._recompute_softmax(op)
        operands = [self.primal(x) for x in op.operands]
        with ir.InsertionPoint(self.vblock), op.location:
            new = op.clone().operation
        for old, val in zip(op.operands, operands, strict=True):
            new.replace_uses_of_with(old, val)
        for r_old, r_new in zip(op.results, new.results, strict=True):
            if is_array(r_new.type):
                r_new.set_type(_plain(r_old).to_mlir())
            self.primal_of.setdefault(r_old, r_new)
        return new.results[list(op.results).index(v)]

    def _logsumexp(self, op: ir.Operation) -> int:
        """The residual index of the row log-sum-exp L = m + log l of softmax `op`, added to the
        forward (in f32) before its return."""
        if op in self.lse:
            return self.lse[op]
        axis = str_attr(op, "axis")
        # an f32 softmax becomes e / l of the very max, exponentials and sum that give L (at the
        # softmax, which `_finish` replaces): one running max and sum when it is streamed
        shared = array(op.operands[0]).dtype == "f32" and array(op.results[0]).dtype == "f32"
        with ir.InsertionPoint(op if shared else self.ret), op.location:
            s = _cast(op.operands[0], "f32")
            row = array(s).without(axis)
            attrs = {"axis": ir.StringAttr.get(axis)}
            m = create("reduce", [s], row, kind=ir.StringAttr.get("max"), **attrs)
            e = create("exp", [create("sub", [s, m], array(s))], array(s))
            total = create("reduce", [e], row, kind=ir.StringAttr.get("sum"), **attrs)
            lse = _map([m, total], row, lambda a, b: arith.addf(a, mmath.log(b)))
        if shared:
            self.decomposed[op] = (e, total)
        k = len(self.residuals)
        self.residuals.append((self._fresh("L" if not self.lse else f"L{len(self.lse)}"), lse))
        self.lse[op] = k
        return k

    def _recompute_softmax(self, op: ir.Operation) -> ir.Value:
        """P = exp(S − L) from the recomputed scores S and the stored row log-sum-exp L."""
        k = self._logsumexp(op)
        name, lse = self.residuals[k]
        lse_arg = self._arg("res", k, name, _plain(lse))
        s = self.primal(op.operands[0])
        with ir.InsertionPoint(self.vblock), op.location:
            s32 = _cast(s, "f32")
            p = create("exp", [create("sub", [s32, lse_arg], array(s32))], array(s32))
            return _cast(p, _plain(op.results[0]).dtype)

    # --- cotangents ---------------------------------------------------------------------------

    def accumulate(self, v: ir.Value, g: ir.Value) -> None:
        want = _adjoint(v)
        if array(g) != want:
            raise NapkinError(f"napkin-differentiate: internal: cotangent {array(g)} for a value of type {want}")
        if v in self.adj:
            self.adj[v] = create("add", [self.adj[v], g], want)
        else:
            self.adj[v] = g

    def build(self) -> None:
        for j, out in enumerate(self.outputs):
            if out in self.active:
                with ir.InsertionPoint(self.vblock), self.f.location:
                    self.accumulate(out, _up(self._arg("cot", j, "d" + self.output_names[j], _plain(out))))
        for op in reversed(self.ops):
            grads = [self.adj.get(r) for r in op.results]
            if all(g is None for g in grads) or not any(v in self.active for v in op.operands):
                continue
            info = op_info(op.name)
            rule = RULES.get(info.kind if info else "")
            if info is None or rule is None:
                raise fail(op, f"napkin-differentiate: no derivative for '{op.name}'")
            with ir.InsertionPoint(self.vblock), op.location:
                rule(self, op, grads[0])
        with ir.InsertionPoint(self.vblock), self.f.location:
            grads_out = []
            for i in self.wrt:
                arg = self.block.arguments[i]
                grads_out.append(
                    _cast(self.adj[arg], _plain(arg).dtype) if arg in self.adj else _fill(_plain(arg), 0.0)
                )
            func.ReturnOp(grads_out)
        self._finish([f"d{self.input_names[i]}" for i in self.wrt], [array(g) for g in grads_out])

    def _finish(self, grad_names: list[str], grad_types: list[ArrayType]) -> None:
        """The backward with its arguments in order; the forward returning its residuals."""
        ordered = sorted(self.args.items(), key=lambda kv: (_ROLES.index(kv[0][0]), kv[0][1]))
        names = [name for _, (name, _v) in ordered]
        types = [v.type for _, (_n, v) in ordered]
        with ir.InsertionPoint(self.f.block), self.f.location:
            vjp = func.FuncOp(self.name + "_vjp", ir.FunctionType.get(types, [t.to_mlir() for t in grad_types]))
        entry = vjp.add_entry_block()
        for op in list(self.vblock.operations):
            entry.append(op.operation)
        for new, (_, (_n, old)) in zip(entry.arguments, ordered, strict=True):
            old.replace_all_uses_with(new)
        vjp.attributes["arg_names"] = _string_array(names)
        vjp.attributes["result_names"] = _string_array(self._fresh_all(grad_names))
        self.scratch.operation.erase()
        results = [*self.outputs, *(v for _, v in self.residuals)]
        with ir.InsertionPoint(self.ret), self.ret.location:
            func.ReturnOp(results)
        self.ret.erase()
        self.f.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get([a.type for a in self.block.arguments], [v.type for v in results])
        )
        self.f.attributes["arg_names"] = _string_array(self.input_names)
        self.f.attributes["result_names"] = _string_array([*self.output_names, *(n for n, _ in self.residuals)])
        for op, (e, total) in self.decomposed.items():  # last: the lists above hold its result
            with ir.InsertionPoint(op), op.location:
                p = create("div", [e, total], array(e))
            op.results[0].replace_all_uses_with(p)
            op.erase()

    def _fresh_all(self, names: list[str]) -> list[str]:
        return [self._fresh(n) for n in names]

    # --- softmax: D from the contractions that follow it ---------------------------------------

    def row_sums(self, op: ir.Operation) -> ir.Value | None:
        """D = Σ_axis dP ∘ P of softmax `op`, as Σ_E dO ∘ O over the contractions that use P,
        when the ops prove it (module docstring); None when they do not."""
        axis = str_attr(op, "axis")
        p = op.results[0]
        if self.rowsums == "direct":
            return None
        uses: list[tuple[ir.Operation, ir.Value]] = []
        for u in _users(p):
            if u.name == "napkin.cast":
                if self.rowsums == "exact":
                    return None  # O is computed from P rounded: its D would carry that rounding
                uses += [(t, u.results[0]) for t in _users(u.results[0])]
            else:
                uses.append((u, p))
        if not uses:
            return None
        rows = set(array(p).axes) - {axis}
        for c, pv in uses:
            if c.name != "napkin.contract" or list(c.operands).count(pv) != 1:
                return None
            ins = {a for v in c.operands for a in array(v).axes}
            out = set(array(c.results[0]).axes)
            if ins - out != {axis} or not rows <= out:
                return None
        target = _plain(p).without(axis).with_dtype(_compute(array(p).dtype))
        total: ir.Value | None = None
        for c, _ in uses:
            g = self.adj.get(c.results[0])
            if g is None:
                continue
            o = self.row_output(c.results[0])
            with ir.InsertionPoint(self.vblock), c.location:
                prod = create("mul", [_up(g), _up(o)], _plain(c.results[0]).with_dtype(array(_up(g)).dtype))
                part = _sum_to(prod, target)
                total = part if total is None else create("add", [total, part], target)
        return total

    def row_output(self, v: ir.Value) -> ir.Value:
        """A contraction's result for D: the output it is (or that casts it), else stored."""
        if v in self.outputs:
            return self.primal(v)
        users = _users(v)
        if (
            self.rowsums == "output"
            and len(users) == 1
            and users[0].name == "napkin.cast"
            and users[0].results[0] in self.outputs
        ):
            out = self.primal(users[0].results[0])
            with ir.InsertionPoint(self.vblock), users[0].location:
                return _cast(out, _plain(v).dtype)
        return self.store(v) if self.remat else self.primal(v)


# --- the rules, by op kind -------------------------------------------------------------------

Rule = Callable[[Backward, ir.Operation, ir.Value], None]


def _contract(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    y = _plain(op.results[0])
    for x, other in ((op.operands[0], op.operands[1]), (op.operands[1], op.operands[0])):
        if x not in bw.active:
            continue
        target = _adjoint(x)
        acc = array(gy).dtype
        o = _cast(bw.primal(other), acc)
        available = set(y.axes) | set(array(other).axes)
        kept = [a for a in target.axes if a in available]
        if not kept:
            raise fail(op, "napkin-differentiate: a contraction operand whose every axis is summed away alone")
        part = create("contract", [gy, o], _like(target, kept, acc))
        if len(kept) < len(target.axes):
            part = _broadcast_to(part, target.with_dtype(acc))
        bw.accumulate(x, _cast(part, target.dtype))


def _elementwise(
    bw: Backward, op: ir.Operation, gy: ir.Value, x: ir.Value, extra: Sequence[ir.Value], fn: Callable[..., ir.Value]
) -> None:
    """Contribution map(gy, *extra) -> fn(g, *extra scalars), in f32 for f16/bf16 arrays,
    summed onto x's axes and cast to x's element type."""
    operands = [_up(gy), *(_up(v) for v in extra)]
    t = array(operands[0])
    part = _map(operands, t, fn)
    bw.accumulate(x, _sum_to(part, _adjoint(x)))


def _unary(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    x = op.operands[0]
    name = op.name.removeprefix("napkin.")
    if name == "scale":
        bw.accumulate(x, create("scale", [gy], _adjoint(x), factor=op.attributes["factor"]))
        return
    one = lambda v: _const(v.type, 1.0)  # noqa: E731
    if name == "exp":
        _elementwise(bw, op, gy, x, [bw.primal(op.results[0])], lambda g, y: arith.mulf(g, y))
    elif name == "tanh":
        _elementwise(
            bw, op, gy, x, [bw.primal(op.results[0])], lambda g, y: arith.mulf(g, arith.subf(one(y), arith.mulf(y, y)))
        )
    elif name == "relu":
        _elementwise(bw, op, gy, x, [bw.primal(x)], lambda g, v: _tie_share(g, v, _const(v.type, 0.0), True))
    elif name == "gelu":
        _elementwise(bw, op, gy, x, [bw.primal(x)], _gelu_grad)
    elif name == "silu":
        _elementwise(bw, op, gy, x, [bw.primal(x)], _silu_grad)
    else:
        raise fail(op, f"napkin-differentiate: no derivative for '{op.name}'")


def _gelu_grad(g: ir.Value, x: ir.Value) -> ir.Value:
    """d/dx 0.5·x·(1 + tanh(u)), u = c·(x + 0.044715·x³): 0.5·(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3·0.044715·x²)."""
    t = x.type
    x2 = arith.mulf(x, x)
    u = arith.mulf(_const(t, _SQRT_2_OVER_PI), arith.addf(x, arith.mulf(_const(t, _GELU_C), arith.mulf(x, x2))))
    th = mmath.tanh(u)
    du = arith.mulf(_const(t, _SQRT_2_OVER_PI), arith.addf(_const(t, 1.0), arith.mulf(_const(t, 3 * _GELU_C), x2)))
    left = arith.mulf(_const(t, 0.5), arith.addf(_const(t, 1.0), th))
    right = arith.mulf(arith.mulf(_const(t, 0.5), x), arith.mulf(arith.subf(_const(t, 1.0), arith.mulf(th, th)), du))
    return arith.mulf(g, arith.addf(left, right))


def _silu_grad(g: ir.Value, x: ir.Value) -> ir.Value:
    """d/dx x·s(x) = s + x·s·(1 − s), s = 1 / (1 + e^−x)."""
    t = x.type
    s = arith.divf(_const(t, 1.0), arith.addf(_const(t, 1.0), mmath.exp(arith.negf(x))))
    return arith.mulf(g, arith.addf(s, arith.mulf(arith.mulf(x, s), arith.subf(_const(t, 1.0), s))))


def _binary(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    a, b = op.operands
    name = op.name.removeprefix("napkin.")
    for x, other, first in ((a, b, True), (b, a, False)):
        if x not in bw.active:
            continue
        if name == "add" or (name == "sub" and first):
            bw.accumulate(x, _sum_to(gy, _adjoint(x)))
        elif name == "sub":
            minus = create("scale", [gy], array(gy), factor=ir.FloatAttr.get(ir.F64Type.get(), -1.0))
            bw.accumulate(x, _sum_to(minus, _adjoint(x)))
        elif name == "mul":
            _elementwise(bw, op, gy, x, [bw.primal(other)], lambda g, o: arith.mulf(g, o))
        elif name == "div" and first:
            _elementwise(bw, op, gy, x, [bw.primal(b)], lambda g, d: arith.divf(g, d))
        elif name == "div":
            _elementwise(
                bw,
                op,
                gy,
                x,
                [bw.primal(a), bw.primal(b)],
                lambda g, n, d: arith.negf(arith.divf(arith.mulf(g, n), arith.mulf(d, d))),
            )
        elif name == "max":
            _elementwise(bw, op, gy, x, [bw.primal(x), bw.primal(other)], lambda g, m, o: _tie_share(g, m, o, True))
        else:
            raise fail(op, f"napkin-differentiate: no derivative for '{op.name}'")


def _cast_rule(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    x = op.operands[0]
    bw.accumulate(x, _cast(gy, _adjoint(x).dtype))


def _transfer(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    bw.accumulate(op.operands[0], gy)


def _map_rule(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    operands = [bw.primal(v) for v in op.operands]
    y = _plain(op.results[0])
    g = _cast(gy, y.dtype)  # the map's body computes in its own element type
    for i, x in enumerate(op.operands):
        if x not in bw.active:
            continue
        part = _map_gradient(op, i, g, operands, y)
        bw.accumulate(x, _sum_to(part, _adjoint(x)))


def _reduce(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    x = op.operands[0]
    target = _adjoint(x)
    if str_attr(op, "kind") == "sum":
        bw.accumulate(x, _broadcast_to(gy, target))
        return
    if str_attr(op, "kind") != "max":
        raise fail(op, f"napkin-differentiate: no derivative for a '{str_attr(op, 'kind')}' reduction")
    axis = str_attr(op, "axis")
    xs, ys, g = _up(bw.primal(x)), _up(bw.primal(op.results[0])), _up(gy)
    t = array(xs)

    def hit(v: ir.Value, m: ir.Value) -> ir.Value:
        return arith.select(arith.cmpf(arith.CmpFPredicate.OEQ, v, m), _const(v.type, 1.0), _const(v.type, 0.0))

    def share(v: ir.Value, m: ir.Value, e: ir.Value) -> ir.Value:
        return arith.select(arith.cmpf(arith.CmpFPredicate.OEQ, v, m), e, _const(v.type, 0.0))

    at_max = _map([xs, ys], t, hit)
    count = create("reduce", [at_max], t.without(axis), axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum"))
    each = _map([g, count], array(g), lambda gv, n: arith.divf(gv, n))  # one row value: the share of each tie
    bw.accumulate(x, _cast(_map([xs, ys, each], t, share), target.dtype))


def _softmax(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    x = op.operands[0]
    axis = str_attr(op, "axis")
    rows = bw.row_sums(op)
    with ir.InsertionPoint(bw.vblock), op.location:
        p, g = _up(bw.primal(op.results[0])), _up(gy)
        t = array(p)
        if rows is None:
            prod = create("mul", [g, p], t)
            rows = create(
                "reduce", [prod], t.without(axis), axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum")
            )
        ds = _map([p, g, rows], t, lambda pv, gv, dv: arith.mulf(pv, arith.subf(gv, dv)))
        bw.accumulate(x, _cast(ds, _adjoint(x).dtype))


def _mask(bw: Backward, op: ir.Operation, gy: ir.Value) -> None:
    """The cotangent where the mask keeps, 0 where it writes -inf: a select on the same mask
    applied to ones (1 kept, -inf dropped, whatever the cotangent's values), never 0·inf."""
    if mask_parts(op).offsets is not None:
        raise fail(op, "napkin-differentiate: a mask with tile offsets belongs to a partitioned program")
    x = op.operands[0]
    t = array(gy)
    ones = _map([gy], t, lambda g: _const(g.type, 1.0))
    arrays = [bw.primal(a) for a in mask_parts(op).arrays]  # e.g. segment ids, as the backward sees them
    kept = copy_mask(op, ones, t.to_mlir(), arrays).result  # the same predicate

    def keep(g: ir.Value, k: ir.Value) -> ir.Value:
        return arith.select(arith.cmpf(arith.CmpFPredicate.OEQ, k, _const(k.type, 1.0)), g, _const(g.type, 0.0))

    bw.accumulate(x, _map([gy, kept], t, keep))


RULES: dict[str, Rule] = {
    "contract": _contract,
    "unary": _unary,
    "cast": _cast_rule,
    "binary": _binary,
    "map": _map_rule,
    "reduce": _reduce,
    "softmax": _softmax,
    "mask": _mask,
    "transfer": _transfer,
}


def differentiate(module: ir.Operation, options: DifferentiateOptions) -> ir.Operation:
    """Add `@<f>_vjp` for the module's one diagram `@f` (and the residuals to `@f`); return it."""
    functions = diagram_functions(module)
    if len(functions) != 1:
        names = ", ".join("@" + str_attr(f, "sym_name") for f in functions)
        raise NapkinError(f"napkin-differentiate: expected one diagram function, found {len(functions)} ({names})")
    f = functions[0]
    name = str_attr(f, "sym_name") + "_vjp"
    for op in module.regions[0].blocks[0].operations:
        if "sym_name" in op.attributes and str_attr(op.operation, "sym_name") == name:
            raise NapkinError(f"napkin-differentiate: the module already has a function @{name}")
    bw = Backward(f, options)
    try:
        bw.build()
    except NapkinError:
        bw.scratch.operation.erase()
        raise
    return f


@register("napkin-differentiate", DifferentiateOptions, "reverse mode: add @<f>_vjp, the backward diagram")
def run(module: ir.Operation, options: DifferentiateOptions) -> None:
    differentiate(module, options)
