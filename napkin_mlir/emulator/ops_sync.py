"""Rules for threads working together: thread and block ids, barriers and `gpu.shuffle`.

* A CTA barrier (`gpu.barrier`, `nvvm.barrier0`, `nvvm.barrier` with no operands) must be
  reached by every thread of a CTA or by none; it opens a new interval of the race check
  (shared-memory accesses on either side of it never race).
* Named barriers, `nvvm.barrier id = %i number_of_threads = %n` (`bar.sync i, n`) and
  `nvvm.barrier.arrive` (`bar.arrive i, n`), as the PTX ISA has them: barrier i (0..15) of a
  CTA completes when n threads (a multiple of 32, whole warps, at most the block) arrived;
  `bar.sync` waits for that, `bar.arrive` does not. Threads are grouped by (CTA, id), so the
  id may differ between warps (one per consumer warpgroup). The threads of an op arrive
  together; a barrier still short of threads blocks the task (warp specialization:
  `tasks.py`), or, outside any task, where nothing else can arrive, is an error naming the
  barrier, n and the count, as are more than n arrivals and differing n. Its completion
  orders, for the race check, every arriving warp's accesses before the accesses the
  `bar.sync` warps make after it (`memory.release` and `acquire`: the floors of those warps
  only, so no access of another warp is taken as ordered), and hands on which mbarrier
  phases the threads saw complete (for reading TMA-delivered bytes). A named barrier that
  every thread of every CTA running reaches with n = the block is a CTA barrier.
* A shuffle (xor, up, down, idx, within `width` lanes) must be executed by whole warps; a
  lane whose source falls outside its segment keeps its own value and gets `valid` false.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import WARP, EmulationError, Machine, Step
from napkin_mlir.emulator.memory import acquire, cta_barrier, release
from napkin_mlir.emulator.program import Compiler, rule
from napkin_mlir.emulator.tasks import Wait, block

#: Named barriers per CTA (bar.sync ids 0..15).
NAMED_BARRIERS = 16


@rule("gpu.thread_id", "gpu.block_id", "gpu.block_dim", "gpu.grid_dim")
def _ids(op: ir.Operation, c: Compiler) -> Step:
    dim = "xyz".index(str(op.attributes["dimension"]).split()[-1].rstrip(">"))
    out = c.slot(op.results[0])
    source: Callable[[Machine], Any] = {
        "gpu.thread_id": lambda m: m.thread_ids[dim],
        "gpu.block_id": lambda m: m.block_ids[dim],
        "gpu.block_dim": lambda m: np.asarray(m.block_dims[dim], np.int64),
        "gpu.grid_dim": lambda m: np.asarray(m.grid_dims[dim], np.int64),
    }[op.name]

    def step(m: Machine) -> None:
        m.env[out] = source(m)

    return step


def _cta_barrier(where: str) -> Step:
    def step(m: Machine) -> None:
        if np.any(m.mask.any(axis=1) != m.mask.all(axis=1)):
            raise EmulationError("gpu.barrier reached by some threads of a CTA but not by others", where)
        m.count("bar.sync")
        cta_barrier(m)

    return step


@rule("gpu.barrier", "nvvm.barrier0")
def _barrier(op: ir.Operation, c: Compiler) -> Step:
    return _cta_barrier(c.where(op))


@dataclass
class _Named:
    """The named barriers of a batch, per (CTA, id): threads arrived, the n they arrive with
    (0: none pending), completions so far, the warps arrived and those waiting (bit masks),
    and the clock their arrivals released (`memory.release`)."""

    count: np.ndarray
    expected: np.ndarray
    generation: np.ndarray
    arrived: np.ndarray
    waiting: np.ndarray
    clock: np.ndarray


_NAMED: weakref.WeakKeyDictionary[Machine, _Named] = weakref.WeakKeyDictionary()


def _named(m: Machine) -> _Named:
    if m not in _NAMED:
        shape = (m.C, NAMED_BARRIERS)
        _NAMED[m] = _Named(
            *(np.zeros(shape, np.int64) for _ in range(5)), np.zeros((*shape, m.floor.shape[2]), np.int32)
        )
    return _NAMED[m]


def _complete(m: Machine, st: _Named, cs: np.ndarray, ids: np.ndarray) -> None:
    """Barriers (cs, ids) have all their threads: the waiting warps acquire what the arriving
    ones released and the mbarrier phases they saw; the barriers start over."""
    bits = np.arange(m.warps)
    waiting = ((st.waiting[cs, ids][:, None] >> bits) & 1).astype(bool)  # (K, warps)
    k, w = np.nonzero(waiting)
    acquire(m, cs[k], w, st.clock[cs[k], ids[k]])
    if m.tma is not None and m.tma.seen.shape[2]:
        arrived = np.repeat(((st.arrived[cs, ids][:, None] >> bits) & 1).astype(bool), WARP, axis=1)  # (K, T)
        joined = np.where(arrived[..., None], m.tma.seen[cs], 0).max(axis=1)  # (K, mbarriers)
        k, t = np.nonzero(np.repeat(waiting, WARP, axis=1))
        m.tma.seen[cs[k], t] = np.maximum(m.tma.seen[cs[k], t], joined[k])
    st.count[cs, ids] = st.expected[cs, ids] = st.arrived[cs, ids] = st.waiting[cs, ids] = 0
    st.clock[cs, ids] = 0
    st.generation[cs, ids] += 1


def _named_barrier(where: str, ident: int | None, threads: int | None, sync: bool) -> Step:
    kind = "bar.sync" if sync else "bar.arrive"

    def per_lane(m: Machine, slot: int | None, default: int, ci: np.ndarray, ti: np.ndarray) -> np.ndarray:
        if slot is None:
            return np.full(len(ci), default, np.int64)
        return np.asarray(m.full(m.env[slot], 0)[ci, ti], np.int64)

    def step(m: Machine) -> None:
        ci, ti = np.nonzero(m.mask)
        if ci.size == 0:
            return
        m.whole_warps(where)
        lane_ids, lane_ns = per_lane(m, ident, 0, ci, ti), per_lane(m, threads, m.T, ci, ti)
        ids, ns = lane_ids.reshape(-1, WARP), lane_ns.reshape(-1, WARP)  # whole warps: 32 lanes in a row
        if np.any(ids != ids[:, :1]) or np.any(ns != ns[:, :1]):
            raise EmulationError(
                f"the barrier id or thread count of {kind} differs between the threads of a warp", where
            )
        cs, warps, ids, ns = ci[::WARP], ti[::WARP] // WARP, ids[:, 0], ns[:, 0]
        bad = (ids < 0) | (ids >= NAMED_BARRIERS) | (ns % WARP != 0) | (ns < WARP) | (ns > m.T)
        if bad.any():
            n = int(np.argmax(bad))
            raise EmulationError(
                f"{kind} {int(ids[n])}, {int(ns[n])}: the id must lie in 0..{NAMED_BARRIERS - 1} and the thread count "
                f"be a multiple of {WARP} in {WARP}..{m.T} (the block)",
                where,
            )
        st = _NAMED.get(m)
        whole = m.mask.any(axis=1)
        if (
            sync
            and np.array_equal(whole, m.mask.all(axis=1))
            and (ns == m.T).all()
            and len(np.unique(cs * NAMED_BARRIERS + ids)) == len(np.unique(cs))
            and (st is None or not st.count[whole].any())
        ):
            m.count(kind)  # every thread of every CTA running, with no other arrival pending: a CTA barrier
            cta_barrier(m)
            return
        st = _named(m)
        keys, inverse = np.unique(cs * NAMED_BARRIERS + ids, return_inverse=True)
        gc, gid = keys // NAMED_BARRIERS, keys % NAMED_BARRIERS
        n_of = np.zeros(len(keys), np.int64)
        n_of[inverse] = ns
        pending = st.expected[gc, gid]
        mixed = n_of[inverse] != ns
        clash = (pending > 0) & (pending != n_of)
        if mixed.any() or clash.any():
            j = int(np.argmax(mixed))
            k = int(inverse[j]) if mixed.any() else int(np.argmax(clash))
            other = int(ns[j]) if mixed.any() else int(pending[k])
            raise EmulationError(
                f"named barrier {int(gid[k])} of {_cta(m, int(gc[k]))}: threads arrive with differing thread counts "
                f"({int(n_of[k])} and {other})",
                where,
            )
        st.expected[gc, gid] = n_of
        st.count[gc, gid] += np.bincount(inverse, minlength=len(keys)) * WARP
        over = st.count[gc, gid] > n_of
        if over.any():
            k = int(np.argmax(over))
            raise EmulationError(
                f"more threads arrive at named barrier {int(gid[k])} of {_cta(m, int(gc[k]))} than its "
                f"{int(n_of[k])}: {int(st.count[gc[k], gid[k]])} ({kind} {int(gid[k])}, {int(n_of[k])})",
                where,
            )
        np.maximum.at(st.clock, (cs, ids), release(m, cs, warps))
        bits = np.left_shift(np.int64(1), warps.astype(np.int64))
        np.bitwise_or.at(st.arrived, (cs, ids), bits)
        if sync:
            np.bitwise_or.at(st.waiting, (cs, ids), bits)
        target = st.generation[gc, gid] + 1
        full = st.count[gc, gid] == n_of
        if full.any():
            _complete(m, st, gc[full], gid[full])
        m.count(kind)
        if not sync:
            return

        def short() -> str:
            k = int(np.argmax(st.generation[gc, gid] < target))
            c, i = int(gc[k]), int(gid[k])
            return (
                f"named barrier {i} of {_cta(m, c)} (bar.sync {i}, {int(st.expected[c, i])}): "
                f"{int(st.count[c, i])} of {int(st.expected[c, i])} threads arrived"
            )

        block(
            m,
            Wait(lambda: bool((st.generation[gc, gid] >= target).all()), lambda: f"waits at {where} on {short()}"),
            lambda: EmulationError(
                f"deadlock: {short()}, and no other thread can arrive (the emulator runs the threads in lockstep "
                "here: the other threads are past it, or never reach it)",
                where,
            ),
        )

    return step


def _cta(m: Machine, c: int) -> str:
    return m.describe_lane(c, 0).split(" thread")[0]


@rule("nvvm.barrier")
def _nvvm_barrier(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    where = c.where(op)
    if view.reductionPredicate is not None or "reductionOp" in op.attributes:
        raise EmulationError("barrier reductions (bar.red) are not supported", where)
    if view.barrierId is None and view.numberOfThreads is None:
        return _cta_barrier(where)
    ident = c.slot(view.barrierId) if view.barrierId is not None else None
    threads = c.slot(view.numberOfThreads) if view.numberOfThreads is not None else None
    return _named_barrier(where, ident, threads, sync=True)


@rule("nvvm.barrier.arrive")
def _barrier_arrive(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    ident = c.slot(view.barrierId) if view.barrierId is not None else None
    return _named_barrier(c.where(op), ident, c.slot(view.numberOfThreads), sync=False)


@rule("gpu.shuffle")
def _shuffle(op: ir.Operation, c: Compiler) -> Step:
    value, offset, width = (c.slot(v) for v in op.operands)
    mode = str(op.attributes["mode"]).split()[-1].rstrip(">")
    out, ok = c.slot(op.results[0]), c.slot(op.results[1])
    where = c.where(op)

    def step(m: Machine) -> None:
        m.whole_warps(where)
        m.count("shfl.sync")
        off = np.broadcast_to(np.asarray(m.env[offset], np.int64), (m.C, m.T))
        wid = np.broadcast_to(np.asarray(m.env[width], np.int64), (m.C, m.T))
        lane = np.broadcast_to(m.lane, (m.C, m.T))
        base = lane - lane % wid
        src = {"xor": lane ^ off, "up": lane - off, "down": lane + off, "idx": base + off}[mode]
        valid = (src >= base) & (src < base + wid)
        src = np.where(valid, src, lane)
        v = m.full(m.env[value], 0)
        per_warp = v.reshape(m.C, -1, WARP)
        got = np.take_along_axis(per_warp, src.reshape(m.C, -1, WARP), axis=2).reshape(m.C, m.T)
        m.env[out], m.env[ok] = got, valid

    return step
