"""Rules for control flow: `scf.for`, `scf.if`, affine maps and `gpu.launch`.

Threads that take different paths run under masks, as a GPU's active mask would: a loop
runs until no active thread has an iteration left, each iteration under the mask of the
threads still in it (values a thread carries stop changing when its loop has ended), and
both sides of an `scf.if` run under complementary masks, each only if some thread takes it:
one after the other, or, when both have threads and either holds (at any depth) an op that
waits for other threads (an mbarrier wait, a named barrier: warp specialization), at once as
cooperative tasks (`tasks.run_concurrently`), so that a side blocked on a wait only the
other side can complete lets the other side run. The loop step must be the same for every
thread. A `gpu.launch` (the SIMT rule's kernels, launched from a host function) binds its
ids and sizes and runs its body, once its launch sizes are checked against the grid and
block the emulator was given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import EmulationError, Machine, Step, Steps
from napkin_mlir.emulator.ops_arith import ceil_div, floor_div, rem
from napkin_mlir.emulator.program import Compiler, rule, vector_shape
from napkin_mlir.emulator.tasks import BLOCKING, run_concurrently

# --- structured control flow -----------------------------------------------------------------------


@rule("scf.for")
def _for(op: ir.Operation, c: Compiler) -> Step:
    lb, ub, st, *inits = (c.slot(v) for v in op.operands)
    body = op.regions[0].blocks[0]
    iv, *carried = (c.slot(a) for a in body.arguments)
    ranks = [len(vector_shape(a.type)) for a in list(body.arguments)[1:]]
    results = [c.slot(r) for r in op.results]
    steps = c.block(body)
    yields = c.terminator(body)
    where = c.where(op)

    def step(m: Machine) -> None:
        env = m.env
        lower, upper = np.asarray(env[lb]), np.asarray(env[ub])
        stride = m.uniform(env[st], where, "the loop step")
        if stride <= 0:
            raise EmulationError(f"loop step {stride} is not positive", where)
        state = [env[i] for i in inits]
        outer = m.mask
        k = 0
        while True:
            ivs = lower + k * stride
            active = outer & (ivs < upper)
            if not active.any():
                break
            env[iv] = ivs
            for s, v in zip(carried, state, strict=True):
                env[s] = v
            m.run_masked(steps, active)
            new = [env[y] for y in yields]
            if np.array_equal(active, outer):
                state = new
            else:
                state = [
                    np.where(active.reshape(active.shape + (1,) * r), n, o)
                    for n, o, r in zip(new, state, ranks, strict=True)
                ]
            k += 1
        for r, v in zip(results, state, strict=True):
            env[r] = v

    return step


@rule("scf.if")
def _if(op: ir.Operation, c: Compiler) -> Step:
    cond = c.slot(op.operands[0])
    then_block = op.regions[0].blocks[0]
    then_steps, then_yields = c.block(then_block), c.terminator(then_block)
    has_else = len(op.regions) > 1 and len(op.regions[1].blocks) > 0
    else_steps = c.block(op.regions[1].blocks[0]) if has_else else Steps()
    else_yields = c.terminator(op.regions[1].blocks[0]) if has_else else []
    results = [c.slot(r) for r in op.results]
    ranks = [len(vector_shape(r.type)) for r in op.results]
    where = c.where(op)
    concurrent = has_else and _may_block(op)

    def step(m: Machine) -> None:
        k = np.broadcast_to(np.asarray(m.env[cond], bool), (m.C, m.T))
        taken, other = m.mask & k, m.mask & ~k
        run_then, run_else = bool(taken.any()), has_else and bool(other.any())
        if concurrent and run_then and run_else:
            sides = [("then-branch", then_steps, taken), ("else-branch", else_steps, other)]
            run_concurrently(m, sides, where)
        else:
            if run_then:
                m.run_masked(then_steps, taken)
            if run_else:
                m.run_masked(else_steps, other)
        for r, rank, y_then, y_else in zip(results, ranks, then_yields, else_yields, strict=True):
            t_val = m.env[y_then] if run_then else m.env[y_else]
            e_val = m.env[y_else] if run_else else t_val
            m.env[r] = np.where(k.reshape(k.shape + (1,) * rank), t_val, e_val)

    return step


def _may_block(op: ir.Operation) -> bool:
    """Whether an op nested in `op` may wait for other threads (`tasks.BLOCKING`)."""
    found = []

    def visit(inner: ir.Operation) -> ir.WalkResult:
        if inner.name in BLOCKING:
            found.append(inner)
            return ir.WalkResult.INTERRUPT
        return ir.WalkResult.ADVANCE

    op.walk(visit)
    return bool(found)


# --- affine maps -----------------------------------------------------------------------------------


def _affine(expr: ir.AffineExpr, n_dims: int) -> Callable[[list[Any]], Any]:
    """A numpy evaluator of an affine expression over operand values (dims, then symbols)."""
    if isinstance(expr, ir.AffineConstantExpr):
        value = expr.value
        return lambda ops: value
    if isinstance(expr, ir.AffineDimExpr):
        pos = expr.position
        return lambda ops: ops[pos]
    if isinstance(expr, ir.AffineSymbolExpr):
        pos = n_dims + expr.position
        return lambda ops: ops[pos]
    lhs, rhs = _affine(expr.lhs, n_dims), _affine(expr.rhs, n_dims)
    combine = {
        ir.AffineAddExpr: np.add,
        ir.AffineMulExpr: np.multiply,
        ir.AffineModExpr: rem,
        ir.AffineFloorDivExpr: floor_div,
        ir.AffineCeilDivExpr: ceil_div,
    }[type(expr)]
    return lambda ops: combine(lhs(ops), rhs(ops))


@rule("affine.apply", "affine.min", "affine.max")
def _affine_op(op: ir.Operation, c: Compiler) -> Step:
    amap = ir.AffineMapAttr(op.attributes["map"]).value
    results = [_affine(e, amap.n_dims) for e in amap.results]
    ins = [c.slot(v) for v in op.operands]
    out = c.slot(op.results[0])
    fold = {"affine.apply": None, "affine.min": np.minimum, "affine.max": np.maximum}[op.name]

    def step(m: Machine) -> None:
        ops = [np.asarray(m.env[i], np.int64) for i in ins]
        values = [np.asarray(r(ops), np.int64) for r in results]
        m.env[out] = values[0] if fold is None else fold.reduce(np.broadcast_arrays(*values))

    return step


# --- kernels launched from a host function (the SIMT rule's gpu stage) -----------------------------


@rule("gpu.launch")
def _launch(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    if len(list(view.asyncDependencies)) or view.clusterSizeX is not None:
        raise EmulationError("async or clustered launches are not supported", c.where(op))
    sizes = [c.slot(v) for v in (view.gridSizeX, view.gridSizeY, view.gridSizeZ)]
    sizes += [c.slot(v) for v in (view.blockSizeX, view.blockSizeY, view.blockSizeZ)]
    body = op.regions[0].blocks[0]
    ids = [c.slot(a) for a in body.arguments]
    steps = c.block(body)
    where = c.where(op)

    def step(m: Machine) -> None:
        launched = [m.uniform(m.env[s], where, "the launch size") for s in sizes]
        if tuple(launched[:3]) != m.grid_dims or tuple(launched[3:]) != m.block_dims:
            raise EmulationError(
                f"the IR launches grid {tuple(launched[:3])} x block {tuple(launched[3:])}, "
                f"but the emulator was given grid {m.grid_dims} x block {m.block_dims}",
                where,
            )
        values = [*m.block_ids, *m.thread_ids, *(np.asarray(g, np.int64) for g in (*m.grid_dims, *m.block_dims))]
        for slot, value in zip(ids, values, strict=True):
            m.env[slot] = value
        m.run(steps)

    return step
