"""napkin-stream-partition: stream a reduced axis in chunks, carrying an accumulator.

The paper's stream partition: an axis that the function reduces can be consumed `size`
elements at a time by a sequential loop, if the function is *streamable* along it: there is
a head (initial state) and a body B with B(f(x), y) = f(x ⊕ y). The pass proves this for
the boxes it finds and derives head, body and tail:

  * monoid reductions (sum, max) and contractions over the axis: state = the partial result,
    head = 0 or -inf, body = add/max of the chunk's partial result;
  * a normalized contraction `div(a1(s), b(Σ a2(s)))` contracted over the axis: the division
    does not depend on the axis, so it moves after the contraction (then it is a sum);
  * softmax followed by contractions over the axis (attention): the online form with the
    running max m, the running sum l and one accumulator o per contraction,
        m' = max(m, max_j s_j),  α = e^(m - m'),  p = e^(s - m'),
        l' = α·l + Σ_j p_j,      o' = α·o + Σ_j p_j v_j,      result = o / l;
    with `online=false` softmax is refused: without the rescaling it needs the whole row.

Anything else (a box inside the chunk that needs a reduction over the whole axis, an output
that keeps the axis) is refused with a diagnostic naming the box; never wrong code.

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
      ... online update ...  gpu.yield %m2, %l2, %acc2
    }, {
    ^bb0(%m: ..., %l: ..., %acc: ...):
      %o = "napkin.div"(%acc, %l)  gpu.yield %o
    }) {axis = "x", size = 32 : i64}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlir import ir
from mlir.dialects import gpu

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, is_array
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
from napkin_mlir.ir.regions import users as _users
from passes import register


@dataclass(frozen=True)
class StreamPartitionOptions:
    """axis: the reduced axis to stream; size: elements per chunk; online: allow the online
    (max-rescaled) softmax form."""

    axis: str = ""
    size: int = 0
    online: bool = True


@dataclass
class Accumulator:
    """One piece of state: a monoid reduction, or an online softmax with its contractions."""

    kind: str  # "sum", "max" or "softmax"
    reducers: list[ir.Operation]  # the ops whose results the stream produces
    softmax: ir.Operation | None = None
    casts: dict[ir.Operation, ir.Operation | None] = field(default_factory=dict)  # contraction -> cast between


def _str(op: ir.Operation, name: str) -> str:
    return ir.StringAttr(op.attributes[name]).value


def _reduces(op: ir.Operation, axis: str) -> bool:
    return (
        op.name in ("napkin.contract", "napkin.reduce")
        and any(has_axis(v, axis) for v in op.operands)
        and not has_axis(op.results[0], axis)
    )


def _factor_normalizers(ops: list[ir.Operation], axis: str) -> bool:
    """contract(div(A, D), V) over `axis` with D free of `axis` -> div(contract(A, V), D).
    Returns True when something was rewritten."""
    for op in ops:
        if not _reduces(op, axis) or op.name != "napkin.contract":
            continue
        for i, operand in enumerate(op.operands):
            chain = operand.owner
            cast = None
            if getattr(chain, "name", "") == "napkin.cast":
                cast, chain = chain, chain.operands[0].owner
            if getattr(chain, "name", "") != "napkin.div":
                continue
            num, den = chain.operands
            if has_axis(den, axis) or not has_axis(num, axis):
                continue
            out = array(op.results[0])
            if not set(array(den).axes) <= set(out.axes) or array(den).dtype != out.dtype:
                continue
            with ir.InsertionPoint(op), op.location:
                if cast is not None:
                    num = create("cast", [num], array(num).with_dtype(array(cast.results[0]).dtype))
                operands = list(op.operands)
                operands[i] = num
                partial = create("contract", operands, out)
                normalized = binary("div", partial, den)
            op.results[0].replace_all_uses_with(normalized)
            op.erase()
            for dead in (cast, chain):
                if dead is not None and not list(dead.results[0].uses):
                    dead.operation.erase()
            return True
    return False


def _classify(
    ops: list[ir.Operation], outputs: list[ir.Value], axis: str, online: bool
) -> tuple[list[ir.Operation], list[Accumulator]]:
    """The ops to move into the stream and the accumulators. Streamed are the boxes that
    touch the axis and lead to a reduction over it; boxes that only carry the axis along
    (woven over it, independent of the reduction) stay outside."""
    touching = [op for op in ops if any(has_axis(v, axis) for v in [*op.operands, *op.results])]
    if not touching:
        raise NapkinError(f"napkin-stream-partition: no box uses axis '{axis}'")
    feeds: set[ir.Operation] = {op for op in touching if _reduces(op, axis)}
    for op in reversed(ops):
        if op in touching and any(u in feeds for r in op.results for u in _users(r)):
            feeds.add(op)
    streamed = [op for op in touching if op in feeds] or touching
    produced = {r for op in streamed for r in op.results}
    for i, v in enumerate(outputs):
        if has_axis(v, axis) and (v in produced or not feeds):
            raise NapkinError(
                f"cannot stream axis '{axis}': output #{i} ({array(v)}) keeps it; a stream partition needs an axis the function reduces"
            )
    reduced: list[ir.Operation] = [op for op in streamed if _reduces(op, axis)]
    # values that depend on a whole-axis reduction
    derived: set[ir.Value] = set()
    for op in ops:
        if op in reduced or any(v in derived for v in op.operands):
            derived.update(op.results)
    accs: list[Accumulator] = []
    claimed: set[ir.Operation] = set()
    for op in streamed:
        if op.name == "napkin.softmax" and _str(op, "axis") == axis:
            if not online:
                raise fail(
                    op,
                    f"softmax along '{axis}' is not streamable as it stands: its normalizer needs the whole axis; allow the online (max-rescaled) form with online=true",
                )
            acc = Accumulator("softmax", [], softmax=op)
            for user in _users(op.results[0]):
                cast = None
                if user.name == "napkin.cast" and len(_users(user.results[0])) >= 1:
                    cast = user
                    targets = _users(user.results[0])
                else:
                    targets = [user]
                for t in targets:
                    if t.name != "napkin.contract" or not _reduces(t, axis):
                        raise fail(
                            t,
                            f"cannot stream axis '{axis}': the softmax along it feeds '{t.name}', which is not a contraction over '{axis}' (only softmax followed by contractions is streamable)",
                        )
                    acc.reducers.append(t)
                    acc.casts[t] = cast
                    claimed.add(t)
            accs.append(acc)
    for op in reduced:
        if op in claimed:
            continue
        kind = "max" if op.name == "napkin.reduce" and _str(op, "kind") == "max" else "sum"
        accs.append(Accumulator(kind, [op]))
    for op in streamed:
        if op in reduced:
            continue
        for v in op.operands:
            if v in derived:
                src = v.owner
                raise fail(
                    op,
                    f"cannot stream axis '{axis}': '{op.name}' works on chunks of '{axis}' but uses '{getattr(src, 'name', 'a value')}', which needs the whole axis (use napkin.softmax for the online form, or a normalizer that divides after the contraction)",
                )
        for r in op.results:
            for u in _users(r):
                if u not in streamed:
                    raise fail(
                        op,
                        f"cannot stream axis '{axis}': this value is computed per chunk of '{axis}' but '{u.name}' "
                        "outside the stream needs it whole",
                    )
    return streamed, accs


def _row_type(t: ArrayType, axis: str) -> ArrayType:
    return t.without(axis).with_dtype("f32")


def _target_block(f: ir.Operation, axis: str) -> ir.Block:
    """The innermost group body, or, when it holds a stream over another axis whose step
    uses `axis`, that step (streams nest: a contraction axis consumed in chunks per chunk)."""
    block = innermost_block(f)
    while True:
        streams = [op.operation for op in block.operations if op.operation.name == "napkin.stream"]
        if len(streams) != 1 or _str(streams[0], "axis") == axis:
            return block
        step = streams[0].regions[1].blocks[0]
        if not any(has_axis(v, axis) for op in step.operations for v in [*op.operands, *op.results]):
            return block
        block = step


def partition(f: ir.Operation, options: StreamPartitionOptions) -> None:
    axis, size = options.axis, options.size
    block = _target_block(f, axis)
    while _factor_normalizers(body_ops(block), axis):
        pass
    ops = body_ops(block)
    ret = terminator(block)
    full = None
    for op in ops:
        for v in [*op.operands, *op.results]:
            if has_axis(v, axis):
                full = array(v).size(axis)
    if full is None:
        raise NapkinError(f"napkin-stream-partition: unknown axis '{axis}' (no array in the diagram has it)")
    if not 0 < size <= full:
        raise NapkinError(
            f"napkin-stream-partition: chunk size {size} for axis '{axis}' must be between 1 and its size {full}"
        )
    streamed, accs = _classify(ops, list(ret.operands), axis, options.online)
    skip = {acc.softmax for acc in accs if acc.softmax} | {c for acc in accs for c in acc.casts.values() if c}
    reducers = [r for acc in accs for r in acc.reducers]
    chunk_ops = [op for op in streamed if op not in skip and op not in reducers]
    defined = {r for op in streamed for r in op.results}
    inputs: list[ir.Value] = []
    for op in streamed:
        for v in op.operands:
            if is_array(v.type) and v not in defined and v not in inputs:
                inputs.append(v)
    results = [r.results[0] for r in reducers]
    # state types
    state_types: list[ArrayType] = []
    for acc in accs:
        if acc.kind == "softmax":
            row = _row_type(array(acc.softmax.operands[0]), axis)
            state_types += [row, row] + [array(r.results[0]) for r in acc.reducers]
        else:
            state_types.append(array(acc.reducers[0].results[0]))
    last = max(reducers, key=lambda o: ops.index(o))
    attrs = {
        "axis": ir.StringAttr.get(axis),
        "size": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), size),
        **slot_attributes(len(inputs), len(results)),
    }
    with ir.InsertionPoint(last), last.location:
        stream = ir.Operation.create(
            "napkin.stream", results=[v.type for v in results], operands=inputs, attributes=attrs, regions=3
        )
    loc = last.location
    # init: the head
    init = stream.regions[0].blocks.append()
    with ir.InsertionPoint(init), loc:
        heads = []
        for acc, t in zip(_expand(accs), state_types, strict=True):
            value = -math.inf if acc in ("max", "m") else 0.0
            heads.append(create("fill", [], t, value=ir.FloatAttr.get(ir.F64Type.get(), value)))
        gpu.YieldOp(heads)
    # step: the body B
    chunk_types = []
    for v in inputs:
        t = array(v)
        chunk_types.append((t.with_size(axis, size) if axis in t.axes else t).to_mlir())
    step = stream.regions[1].blocks.append(*chunk_types, ir.IndexType.get(), *[t.to_mlir() for t in state_types])
    args = list(step.arguments)
    mapping: dict[ir.Value, ir.Value] = dict(zip(inputs, args[: len(inputs)], strict=True))
    offset = args[len(inputs)]
    states = args[len(inputs) + 1 :]

    def clone(op: ir.Operation) -> ir.Operation:
        new = op.clone().operation
        for old, val in mapping.items():
            new.replace_uses_of_with(old, val)
        for r_old, r_new in zip(op.results, new.results, strict=True):
            retile(r_new, {axis: size})
            mapping[r_old] = r_new
        if new.name == "napkin.mask" and _str(new, "cols") == axis:
            rebuilt = offset_mask(new, {axis: offset})
            mapping[op.results[0]] = rebuilt.results[0]
        return new

    with ir.InsertionPoint(step), loc:
        for op in chunk_ops:
            clone(op)
        new_states: list[ir.Value] = []
        i = 0
        for acc in accs:
            if acc.kind == "softmax":
                m, l_sum, outs = states[i], states[i + 1], states[i + 2 : i + 2 + len(acc.reducers)]
                i += 2 + len(acc.reducers)
                s = mapping[acc.softmax.operands[0]]
                row = array(m)
                m_chunk = create("reduce", [s], row, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("max"))
                m_new = binary("max", m, m_chunk)
                p = create("exp", [binary("sub", s, m_new)], array(s))
                alpha = create("exp", [binary("sub", m, m_new)], row)
                p_sum = create("reduce", [p], row, axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get("sum"))
                l_new = binary("add", binary("mul", l_sum, alpha), p_sum)
                new_states += [m_new, l_new]
                for o, red in zip(outs, acc.reducers, strict=True):
                    cast = acc.casts[red]
                    p_in = create("cast", [p], array(p).with_dtype(array(cast.results[0]).dtype)) if cast else p
                    prob = acc.softmax.results[0] if cast is None else cast.results[0]
                    operands = [p_in if v == prob else mapping[v] for v in red.operands]
                    partial = create("contract", operands, array(red.results[0]))
                    new_states.append(binary("add", binary("mul", o, alpha), partial))
            else:
                red = acc.reducers[0]
                partial = clone(red).results[0]
                new_states.append(binary("add" if acc.kind == "sum" else "max", states[i], partial))
                i += 1
        gpu.YieldOp(new_states)
    # finish: the tail
    finish = stream.regions[2].blocks.append(*[t.to_mlir() for t in state_types])
    fargs = list(finish.arguments)
    with ir.InsertionPoint(finish), loc:
        outs_final: list[ir.Value] = []
        i = 0
        for acc in accs:
            if acc.kind == "softmax":
                l_sum = fargs[i + 1]
                for j in range(len(acc.reducers)):
                    outs_final.append(binary("div", fargs[i + 2 + j], l_sum))
                i += 2 + len(acc.reducers)
            else:
                outs_final.append(fargs[i])
                i += 1
        gpu.YieldOp(outs_final)
    for old, new in zip(results, stream.results, strict=True):
        old.replace_all_uses_with(new)
    # ops placed before the stream that use its results move after it
    after = stream
    for op in ops:
        if op in streamed or ops.index(op) > ops.index(last):
            continue
        if any(v in set(stream.results) for v in op.operands):
            op.move_after(after)
            after = op
    for op in reversed(streamed):
        op.erase()


def _expand(accs: list[Accumulator]) -> list[str]:
    """The head kind of each state slot, in order."""
    kinds: list[str] = []
    for acc in accs:
        kinds += ["m", "l"] + ["o"] * len(acc.reducers) if acc.kind == "softmax" else [acc.kind]
    return kinds


@register("napkin-stream-partition", StreamPartitionOptions, "stream a reduced axis in chunks with a carried state")
def run(module: ir.Operation, options: StreamPartitionOptions) -> None:
    if not options.axis or options.size <= 0:
        raise NapkinError("napkin-stream-partition: give axis=<name> and size=<positive chunk size>")
    for f in diagram_functions(module):
        partition(f, options)
