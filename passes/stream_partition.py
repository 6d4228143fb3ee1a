"""napkin-stream-partition: stream a reduced axis in chunks, carrying an accumulator.

The paper's stream partition: an axis that the function reduces can be consumed `size`
elements at a time by a sequential loop, if the function is *streamable* along it: there is
a head (initial state) and a body B with B(f(x), y) = f(x ⊕ y). The pass proves this from
the ops (`passes/streamable.py` holds the proofs) and derives head, body and tail:

  * monoid reductions (sum, max) and contractions over the axis: state = the partial result,
    head = 0 or -inf, body = add/max of the chunk's partial result;
  * sums over the axis of products with factors constant along it: the sum is linear, so
    each term's partial sum is carried and its factors are applied in finish. The
    normalized contraction `a1(s)/b(Σ a2(s))`, RMSNorm feeding a matmul
    (Σ_k x·r·g·w = r · Σ_k x·g·w with r = rsqrt(mean x² + eps)) and LayerNorm feeding a
    matmul are such sums; a difference x - μ from the mean of x is carried centered on the
    running mean M (Welford's update of the count and M, and the partial sums of powers of
    x - M re-centered when M moves), never as Σ x² - |k| μ², which cancels when |μ| ≫ spread;
  * softmax followed by contractions over the axis (attention): the online form with the
    running max m, the running sum l and one accumulator o per contraction,
        m' = max(m, max_j s_j),  k = (m' = -inf ? 0 : m'),  α = e^(m - k),  p = e^(s - k),
        l' = α·l + Σ_j p_j,      o' = α·o + Σ_j p_j v_j,      result = o / l;
    for `napkin.softmax`, and for a softmax written by hand: any e^(s - c) whose shift c is
    proven an upper bound of s along the axis (its napkin.reduce max, or a napkin.max of it
    with e.g. a per-head sink logit) is carried online, and finish multiplies by e^(M - c)
    (M the final max) when c is not M itself;
    with `online=false` both are refused: without the rescaling they need the whole row.
    Every online form shifts by k, which is m' except in a row that has seen only -inf so far
    (a mask or bias that empties it in the first chunks), where e^(-inf - (-inf)) would be
    NaN: there k = 0, so α = p = 0 and the row's state stays (m, l, o) = (-inf, 0, 0) until a
    finite score comes (k is a `napkin.map` over m': arith.cmpf oeq with -inf, arith.select
    of 0). The finish is unchanged: a row that is -inf everywhere gives 0 / 0 = NaN, as the
    diagram's own softmax does (with a sink in the normalizer, 0 / e^0 = 0, as the diagram);

Finish computes, from the final state, every reduction the boxes after the stream use (the
factors are recomputed there; inputs they need, such as a sink logit, are carried in the
state). Anything else (a box inside the chunk that applies a function to a value that needs
the whole axis, an output that keeps the axis) is refused with a diagnostic naming the box;
never wrong code.

Only the boxes that touch the axis *and* lead to a reduction over it are streamed; boxes woven
over it but independent of that reduction stay where they are. The pass works on the body of
the innermost group, or, when that body holds a stream over another axis whose step uses this
one, inside that step: streams nest (after `axis=x`, `axis=d` consumes the d-contraction of
Q Kᵀ in chunks within each x chunk).

Before (`axis=x size=32`, inside a group over q):

    %s = "napkin.contract"(%Qt, %Kt) -> tensor<64x300xf32, {axes = ["q", "x"]}>
    %p = "napkin.softmax"(%s) {axis = "x"}
    %o = "napkin.contract"(%p, %Vt) -> tensor<64x64xf32, {axes = ["q", "d"]}>

After:

    %o = "napkin.stream"(%Qt, %Kt, %Vt) ({
      %m = "napkin.fill"() {value = 0xFFF0000000000000 : f64} -> tensor<64xf32, {axes = ["q"]}>
      %l = "napkin.fill"() {value = 0.0 : f64}  ...  gpu.yield %m, %l, %acc
    }, {
    ^bb0(%Qc: ..., %Kc: tensor<32x64xf32, ...>, %Vc: ..., %x0: index, %m: ..., %l: ..., %acc: ...):
      %s = "napkin.contract"(%Qc, %Kc) -> tensor<64x32xf32, {axes = ["q", "x"]}>
      %mc = "napkin.reduce"(%s) {axis = "x", kind = "max"}
      %m2 = "napkin.max"(%m, %mc)
      %k = "napkin.map"(%m2) ({
      ^bb0(%v: f32):
        %ninf = arith.constant 0xFF800000 : f32
        %zero = arith.constant 0.000000e+00 : f32
        %empty = arith.cmpf oeq, %v, %ninf : f32
        %safe = arith.select %empty, %zero, %v : f32
        gpu.yield %safe : f32
      })
      %p = "napkin.exp"("napkin.sub"(%s, %k))   %alpha = "napkin.exp"("napkin.sub"(%m, %k))
      ... l2 = l·alpha + Σ_x p, acc2 = acc·alpha + contract(p, %Vc) ...  gpu.yield %m2, %l2, %acc2
    }, {
    ^bb0(%m: ..., %l: ..., %acc: ...):
      %o = "napkin.div"(%acc, %l)  gpu.yield %o
    }) {axis = "x", size = 32 : i64}

RMSNorm feeding a matmul (`axis=k`): before, `%y = contract(cast(mul(mul(%x, %r), %g)), %W)`
with `%r = map(reduce_sum(mul(%x, %x)))`; after, the state is (Σ x², Σ (x·g) W), and

    }, {
    ^bb0(%ss: tensor<8xf32, {axes = ["m"]}>, %acc: tensor<8x24xf32, {axes = ["m", "n"]}>):
      %r = "napkin.map"(%ss) ({ ... math.rsqrt ... })
      %y = "napkin.mul"(%acc, %r)  gpu.yield %y
    }) {axis = "k", size = 32 : i64}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, element_type
from napkin_mlir.ir.regions import (
    array,
    binary,
    body_ops,
    create,
    diagram_functions,
    fail,
    has_axis,
    innermost_block,
    offset_mask,
    retile,
    slot_attributes,
    terminator,
)
from passes import register
from passes.streamable import Leaf, Plan, Slot, Summand, owner, product_axes, prove, str_attr


@dataclass(frozen=True)
class StreamPartitionOptions:
    """axis: the reduced axis to stream; size: elements per chunk; online: allow the online
    (max-rescaled) softmax form."""

    axis: str = ""
    size: int = 0
    online: bool = True


def _row_type(t: ArrayType, axis: str) -> ArrayType:
    return t.without(axis).with_dtype("f32")


def _target_block(f: ir.Operation, axis: str) -> ir.Block:
    """The innermost group body, or, when it holds a stream over another axis whose step
    uses `axis`, that step (streams nest: a contraction axis consumed in chunks per chunk)."""
    block = innermost_block(f)
    while True:
        streams = [op.operation for op in block.operations if op.operation.name == "napkin.stream"]
        if len(streams) != 1 or str_attr(streams[0], "axis") == axis:
            return block
        step = streams[0].regions[1].blocks[0]
        if not any(has_axis(v, axis) for op in step.operations for v in [*op.operands, *op.results]):
            return block
        block = step


def _fill(t: ArrayType, value: float) -> ir.Value:
    return create("fill", [], t, value=ir.FloatAttr.get(ir.F64Type.get(), value))


def _cast(v: ir.Value, dtype: str) -> ir.Value:
    t = array(v)
    return v if t.dtype == dtype else create("cast", [v], t.with_dtype(dtype))


def _safe_shift(m: ir.Value) -> ir.Value:
    """The shift of the online exponents for the running max `m`: `m`, or 0 where `m` is -inf
    (a row that has seen only -inf so far, e.g. masked throughout the chunks so far), so that
    α = e^(m_old - shift) and p = e^(s - shift) are e^(-inf) = 0 there, not e^(-inf + inf) = NaN.
    A `napkin.map` over `m`: arith.cmpf oeq with -inf, arith.select of 0."""
    t = array(m)
    el = element_type(t.dtype)
    op = ir.Operation.create(
        "napkin.map", results=[t.to_mlir()], operands=[m], attributes=slot_attributes(1, None), regions=1
    )
    block = op.regions[0].blocks.append(el)
    with ir.InsertionPoint(block):
        x = block.arguments[0]
        ninf = arith.ConstantOp(el, -math.inf).result
        zero = arith.ConstantOp(el, 0.0).result
        empty = arith.CmpFOp(arith.CmpFPredicate.OEQ, x, ninf).result
        gpu.YieldOp([arith.SelectOp(empty, zero, x).result])
    return op.result


def _within(t: ArrayType, axes: set[str]) -> ArrayType:
    """`t` restricted to `axes` (in t's order)."""
    keep = [a for a in t.axes if a in axes]
    return ArrayType(tuple(keep), tuple(t.size(a) for a in keep), t.dtype, t.level)


def _combine(name: str, lhs: ir.Value, rhs: ir.Value, target: ArrayType) -> ir.Value:
    """lhs `name` rhs, with the result's axes in `target`'s order."""
    axes = set(array(lhs).axes) | set(array(rhs).axes)
    return create(name, [lhs, rhs], _within(target, axes))


class _Builder:
    """Builds the napkin.stream of a `Plan` in place of its region."""

    def __init__(self, block: ir.Block, ops: list[ir.Operation], plan: Plan, axis: str, size: int) -> None:
        self.block, self.ops, self.plan, self.axis, self.size = block, ops, plan, axis, size
        self.mapping: dict[ir.Value, ir.Value] = {}
        self.offset: ir.Value | None = None
        self.rescales: dict[tuple[ir.Value, ir.Value], ir.Value] = {}
        self.means: dict[ir.Value, ir.Value] = {}  # μ -> the running mean M' after this chunk
        self.centered: dict[ir.Value, ir.Value] = {}  # μ -> the chunk's u - M'

    # --- state ---------------------------------------------------------------------------
    def state_types(self) -> list[ArrayType]:
        types: list[ArrayType] = []
        for g in self.plan.softmax:
            row = _row_type(array(g.softmax.operands[0]), self.axis)
            types += [row, row] + [array(r.results[0]) for r in g.reducers]
        return types + [s.type for s in self.plan.slots]

    def heads(self) -> list[str]:
        """The head kind of each state slot, in order."""
        kinds: list[str] = []
        for g in self.plan.softmax:
            kinds += ["m", "l"] + ["o"] * len(g.reducers)
        return kinds + [s.kind for s in self.plan.slots]

    # --- the step ------------------------------------------------------------------------
    def clone(self, op: ir.Operation) -> ir.Operation:
        axis, size = self.axis, self.size
        new = op.clone().operation
        for old, val in self.mapping.items():
            new.replace_uses_of_with(old, val)
        for r_old, r_new in zip(op.results, new.results, strict=True):
            retile(r_new, {axis: size})
            self.mapping[r_old] = r_new
        if new.name == "napkin.mask" and axis in (str_attr(new, "rows"), str_attr(new, "cols")):
            assert self.offset is not None
            rebuilt = offset_mask(new, {axis: self.offset}, {axis: array(op.operands[0]).size(axis)})
            self.mapping[op.results[0]] = rebuilt.results[0]
        return new

    def product(self, slot: Slot, i: int, online: ir.Value | None) -> ir.Value:
        """The chunk's product of side `i` of a partial, cast to its target dtype."""
        factors = [(self.chunk_leaf(leaf), leaf.power) for leaf in slot.sides[i]]
        if online is not None and slot.online_side == i:
            factors.append((online, 1))
        factors.sort(key=lambda f: -f[1])  # a product starts from a factor, not a divisor
        work, target = slot.work, slot.targets[i]
        alone = len(factors) == 1 and factors[0][1] == 1
        if alone and array(factors[0][0]).dtype == (target or work):
            return factors[0][0]
        sizes = {a: s for v, _ in factors for a, s in array(v).sizes.items()}
        acc = _cast(factors[0][0], work)
        for v, power in factors[1:]:
            v = _cast(v, work)
            axes = product_axes([array(acc), array(v)], slot.orders[i])
            t = ArrayType(axes, tuple(sizes[a] for a in axes), work, slot.type.level)
            acc = create("mul" if power > 0 else "div", [acc, v], t)
        return _cast(acc, target) if target else acc

    def chunk_leaf(self, leaf: Leaf) -> ir.Value:
        """A chunk value of a partial: the value, or for a centered leaf, value - M'."""
        if leaf.center is None:
            return self.mapping[leaf.value]
        if leaf.center not in self.centered:
            self.centered[leaf.center] = binary("sub", self.mapping[leaf.value], self.means[leaf.center])
        return self.centered[leaf.center]

    def welford(self, count: Slot, mean: Slot, n: ir.Value, m: ir.Value) -> tuple[ir.Value, ir.Value]:
        """Welford's update of (count n, running mean M) of u by one chunk: n' = n + |chunk|,
        M' = M + Σ_chunk (u - M) / n' (the first chunk sets M' to its own mean, whatever M is)."""
        axis = self.axis
        u = self.mapping[mean.sides[0][0].value]
        ones = _fill(array(u).with_dtype("f32"), 1.0)  # a partial chunk's fill has its valid size
        length = create("reduce", [ones], count.type, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum"))
        n_new = binary("add", n, length)
        step = create(
            "reduce", [binary("sub", u, m)], mean.type, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum")
        )
        return n_new, binary("add", m, binary("div", step, n_new))

    def recenter(self, slot: Slot, state: ir.Value, old: dict[Slot | None, ir.Value], shift: ir.Value) -> ir.Value:
        """Σ_seen (u - M')^p Y from the old partials Σ_seen (u - M)^i Y, i <= p, with shift = M - M'."""
        p = len(slot.lower)
        acc = state
        for i, lower in slot.lower:
            term = old[lower]
            for _ in range(p - i):
                term = _combine("mul", term, shift, slot.type)
            if math.comb(p, i) != 1:
                term = create("scale", [term], array(term), factor=ir.FloatAttr.get(ir.F64Type.get(), math.comb(p, i)))
            acc = _combine("add", acc, term, slot.type)
        return acc

    def partial(self, slot: Slot, online: ir.Value | None) -> ir.Value:
        """The chunk's contribution to `slot`."""
        axis = self.axis
        if slot.plain:
            assert slot.reduction is not None
            if slot.type.dtype != array(slot.reduction.results[0]).dtype:  # a 16-bit sum, carried in f32
                if slot.form == "contract":
                    chunks = [self.mapping[v] for v in slot.reduction.operands]
                    return create("contract", chunks, slot.type)
                chunk = _cast(self.mapping[slot.reduction.operands[0]], slot.type.dtype)
                return create("reduce", [chunk], slot.type, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum"))
            return self.clone(slot.reduction).results[0]
        if slot.form == "contract":
            lhs, rhs = (self.product(slot, i, online) for i in range(2))
            return create("contract", [lhs, rhs], slot.type)
        prod = _cast(self.product(slot, 0, online), slot.type.dtype)  # 16-bit sums run in f32
        t = array(prod)
        out = ArrayType(
            tuple(a for a in t.axes if a != axis),
            tuple(t.size(a) for a in t.axes if a != axis),
            slot.type.dtype,
            slot.type.level,
        )
        if out != slot.type:
            raise NapkinError(f"napkin-stream-partition: internal: partial {out} differs from its state {slot.type}")
        return create("reduce", [prod], out, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum"))

    def step(self, states: list[ir.Value]) -> list[ir.Value]:
        plan, axis = self.plan, self.axis
        for op in plan.chunk_ops:
            self.clone(op)
        new_states: list[ir.Value] = []
        i = 0
        for g in plan.softmax:
            m, l_sum, outs = states[i], states[i + 1], states[i + 2 : i + 2 + len(g.reducers)]
            i += 2 + len(g.reducers)
            s = self.mapping[g.softmax.operands[0]]
            if array(s).dtype != "f32":  # a 16-bit softmax computes in f32, as it does unstreamed
                s = create("cast", [s], array(s).with_dtype("f32"))
            row = array(m)
            m_chunk = create("reduce", [s], row, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("max"))
            m_new = binary("max", m, m_chunk)
            shift = _safe_shift(m_new)  # m', or 0 for a row that has seen only -inf
            p = create("exp", [binary("sub", s, shift)], array(s))
            alpha = create("exp", [binary("sub", m, shift)], row)
            p_sum = create("reduce", [p], row, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum"))
            l_new = binary("add", binary("mul", l_sum, alpha), p_sum)
            new_states += [m_new, l_new]
            for o, red in zip(outs, g.reducers, strict=True):
                cast = g.casts[red]
                prob = g.softmax.results[0] if cast is None else cast.results[0]
                dtype = array(prob).dtype  # the type the contraction reads P in
                p_in = create("cast", [p], array(p).with_dtype(dtype)) if dtype != array(p).dtype else p
                operands = [p_in if v == prob else self.mapping[v] for v in red.operands]
                partial = create("contract", operands, array(red.results[0]))
                new_states.append(binary("add", binary("mul", o, alpha), partial))
        running: dict[Slot, tuple[ir.Value, ir.Value]] = {}  # max slot -> (m, m')
        onlines: dict[Slot, tuple[ir.Value, ir.Value]] = {}  # max slot -> (p, alpha)
        old: dict[Slot | None, ir.Value] = dict(zip(plan.slots, states[i:], strict=True))
        updated: dict[Slot, ir.Value] = {}
        shifts: dict[ir.Value, ir.Value] = {}  # μ -> M - M'
        for mu, (count, mean) in plan.centers.items():
            n_new, m_new = self.welford(count, mean, old[count], old[mean])
            updated[count], updated[mean] = n_new, m_new
            self.means[mu] = m_new
            shifts[mu] = binary("sub", old[mean], m_new)
        for slot in plan.slots:
            state = states[i]
            i += 1
            if slot in updated:
                new_states.append(updated[slot])
                continue
            if slot.center is not None:  # a centered partial: the seen sums re-centered on M'
                old[None] = old[plan.centers[slot.center][0]]
                new_states.append(
                    _combine(
                        "add", self.recenter(slot, state, old, shifts[slot.center]), self.partial(slot, None), slot.type
                    )
                )
                continue
            if slot.kind == "carry":
                assert slot.carried is not None
                new_states.append(self.mapping[slot.carried])
                continue
            p = None
            if slot.kind == "online":  # p = e^(s - m'), alpha = e^(m - m') with the running max m (m' safe)
                assert slot.maximum is not None
                top = plan.exprs[slot.maximum][0].slot
                assert top is not None
                if top not in onlines:
                    m, m_new = running[top]
                    s = self.mapping[slot.maximum.operands[0]]
                    shift = _safe_shift(m_new)  # m', or 0 for a row that has seen only -inf
                    p = create("exp", [binary("sub", s, shift)], array(s))
                    onlines[top] = (p, create("exp", [binary("sub", m, shift)], array(m)))
                p, alpha = onlines[top]
            partial = self.partial(slot, p)
            if slot.kind == "online":
                new_states.append(binary("add", binary("mul", state, alpha), partial))
            else:
                new = binary("add" if slot.kind == "sum" else "max", state, partial)
                new_states.append(new)
                running[slot] = (state, new)
        return new_states

    # --- finish --------------------------------------------------------------------------
    def finish(self, args: list[ir.Value]) -> list[ir.Value]:
        plan = self.plan
        values: dict[ir.Value, ir.Value] = {}
        i = 0
        for g in plan.softmax:
            l_sum = args[i + 1]
            for j, red in enumerate(g.reducers):
                values[red.results[0]] = binary("div", args[i + 2 + j], l_sum)
            i += 2 + len(g.reducers)
        slot_args = dict(zip(plan.slots, args[i:], strict=True))
        carried = {s.carried: slot_args[s] for s in plan.slots if s.carried is not None}

        def value(v: ir.Value) -> ir.Value:
            if v in values:
                return values[v]
            op = owner(v)
            if op is not None and op in plan.exprs:
                values[v] = self.expression(op, plan.exprs[op], value, slot_args)
            elif v in plan.derived:
                assert op is not None
                operands = [value(x) for x in op.operands]
                new = op.clone().operation
                for old, x in zip(op.operands, operands, strict=True):
                    new.replace_uses_of_with(old, x)
                values.update(zip(op.results, new.results, strict=True))
            else:
                values[v] = carried[v]
            return values[v]

        return [value(r.results[0]) for r in plan.results]

    def expression(
        self,
        r: ir.Operation,
        summands: list[Summand],
        value: Callable[[ir.Value], ir.Value],
        slot_args: dict[Slot, ir.Value],
    ) -> ir.Value:
        """The value of reduction `r` from the final state: Σ coeff · slot · Π consts."""
        target = array(r.results[0])
        parts: list[tuple[bool, ir.Value]] = []
        for s in summands:
            coeff = s.coeff
            if s.slot is not None:
                v = _cast(slot_args[s.slot], target.dtype)  # a 16-bit sum's f32 state rounds once
            else:  # constant along the axis
                v, coeff = _fill(target, abs(coeff)), math.copysign(1.0, coeff)
            for leaf in sorted(s.consts, key=lambda c: -c.power):
                if leaf.center is not None:  # M - μ: the final running mean less the diagram's mean
                    mean = slot_args[self.plan.centers[leaf.center][1]]
                    c = _cast(binary("sub", mean, value(leaf.value)), target.dtype)
                else:
                    c = _cast(value(leaf.value), target.dtype)
                v = _combine("mul" if leaf.power > 0 else "div", v, c, target)
            if s.rescale is not None:  # e^(M - c) <= 1: the online sums ran with M, the term has c
                if s.rescale not in self.rescales:
                    m, shift = (_cast(value(x), target.dtype) for x in s.rescale)
                    d = binary("sub", m, shift)
                    self.rescales[s.rescale] = create("exp", [d], array(d))
                v = _combine("mul", v, self.rescales[s.rescale], target)
            if abs(coeff) != 1.0:
                v = create("scale", [v], array(v), factor=ir.FloatAttr.get(ir.F64Type.get(), abs(coeff)))
            parts.append((coeff < 0, v))
        negative, acc = parts[0]
        if negative:
            acc = create("scale", [acc], array(acc), factor=ir.FloatAttr.get(ir.F64Type.get(), -1.0))
        for negative, v in parts[1:]:
            acc = _combine("sub" if negative else "add", acc, v, target)
        if array(acc) != target:
            raise NapkinError(f"napkin-stream-partition: internal: finish computes {array(acc)} for {target}")
        return acc

    # --- splice --------------------------------------------------------------------------
    def build(self) -> None:
        plan, axis, size, ops = self.plan, self.axis, self.size, self.ops
        inputs = plan.inputs
        results = [r.results[0] for r in plan.results]
        state_types = self.state_types()
        # the stream goes after the region and after the definitions of its operands
        pos = max(ops.index(op) for op in plan.region)
        for v in inputs:
            o = owner(v)
            if o is not None and o in ops:
                pos = max(pos, ops.index(o))
        where = ops[pos + 1] if pos + 1 < len(ops) else terminator(self.block)
        loc = ops[max(ops.index(r) for r in plan.results)].location
        attrs = {
            "axis": ir.StringAttr.get(axis),
            "size": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), size),
            **slot_attributes(len(inputs), len(results)),
        }
        with ir.InsertionPoint(where), loc:
            stream = ir.Operation.create(
                "napkin.stream", results=[v.type for v in results], operands=inputs, attributes=attrs, regions=3
            )
        init = stream.regions[0].blocks.append()
        with ir.InsertionPoint(init), loc:
            heads = [
                _fill(t, -math.inf if k in ("max", "m") else 0.0)
                for k, t in zip(self.heads(), state_types, strict=True)
            ]
            gpu.YieldOp(heads)
        chunk_types = []
        for v in inputs:
            t = array(v)
            chunk_types.append((t.with_size(axis, size) if axis in t.axes else t).to_mlir())
        step = stream.regions[1].blocks.append(*chunk_types, ir.IndexType.get(), *[t.to_mlir() for t in state_types])
        args = list(step.arguments)
        self.mapping = dict(zip(inputs, args[: len(inputs)], strict=True))
        self.offset = args[len(inputs)]
        with ir.InsertionPoint(step), loc:
            gpu.YieldOp(self.step(args[len(inputs) + 1 :]))
        finish = stream.regions[2].blocks.append(*[t.to_mlir() for t in state_types])
        with ir.InsertionPoint(finish), loc:
            gpu.YieldOp(self.finish(list(finish.arguments)))
        for old, new in zip(results, stream.results, strict=True):
            old.replace_all_uses_with(new)
        self.splice(stream)

    def splice(self, stream: ir.Operation) -> None:
        """Move the boxes before the stream that use its results after it; erase the region
        and the boxes that only served it, then what only they used."""
        doomed = set(self.plan.doomed)
        moved = set(stream.results)
        after = stream
        for op in self.ops:
            if op in doomed or op == stream:
                continue
            if any(v in moved for v in op.operands) and self._before(op, stream):
                op.move_after(after)
                after = op
                moved |= set(op.results)
        position = {id(op): i for i, op in enumerate(self.ops)}
        fed: list[ir.Operation] = []
        for op in reversed(self.plan.doomed):
            for v in op.operands:
                o = owner(v)
                if o is not None and id(o) in position and o not in doomed and o not in fed:
                    fed.append(o)
            op.erase()
        for op in sorted(fed, key=lambda o: position[id(o)], reverse=True):
            if op.name.startswith("napkin.") and not op.regions and all(not list(r.uses) for r in op.results):
                op.erase()

    def _before(self, op: ir.Operation, stream: ir.Operation) -> bool:
        for view in self.block.operations:
            if view.operation == stream:
                return False
            if view.operation == op:
                return True
        return False


def _check_not_mapped(f: ir.Operation, block: ir.Block, axis: str) -> None:
    """Refuse an axis that an enclosing group partition maps: it is not reduced there."""
    op = block.owner.operation
    while op != f:
        if op.name == "napkin.group" and axis in [ir.StringAttr(a).value for a in ir.ArrayAttr(op.attributes["axes"])]:
            raise fail(
                op,
                f"cannot stream axis '{axis}': this 'napkin.group' maps it (a group partition of a mapped axis), "
                "so it is not reduced inside: nothing to stream",
            )
        op = op.parent.operation
    return


def partition(f: ir.Operation, options: StreamPartitionOptions) -> None:
    axis, size = options.axis, options.size
    block = _target_block(f, axis)
    ops = body_ops(block)
    ret = terminator(block)
    _check_not_mapped(f, block, axis)
    full, site = None, ret
    for op in reversed(ops):
        for v in [*op.operands, *op.results]:
            if has_axis(v, axis):
                full, site = array(v).size(axis), op
    if full is None:
        if block == next(iter(f.regions[0].blocks)):
            raise fail(f, f"napkin-stream-partition: unknown axis '{axis}' (no array in the diagram has it)")
        owner = block.owner
        raise fail(
            owner,
            f"napkin-stream-partition: no array in the body of this '{owner.name}' has axis '{axis}' "
            "(the stream partitions the innermost partition's body)",
        )
    if not 0 < size <= full:
        raise fail(
            site,
            f"napkin-stream-partition: chunk size {size} for axis '{axis}' must be between 1 and its size {full} "
            f"(in '{site.name}')",
        )
    plan = prove(ops, list(ret.operands), axis, options.online)
    _Builder(block, ops, plan, axis, size).build()


@register("napkin-stream-partition", StreamPartitionOptions, "stream a reduced axis in chunks with a carried state")
def run(module: ir.Operation, options: StreamPartitionOptions) -> None:
    if not options.axis or options.size <= 0:
        raise NapkinError("napkin-stream-partition: give axis=<name> and size=<positive chunk size>")
    for f in diagram_functions(module):
        partition(f, options)
