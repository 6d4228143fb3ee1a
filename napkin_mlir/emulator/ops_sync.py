"""Rules for threads working together: thread and block ids, `gpu.barrier` and `gpu.shuffle`.

A barrier must be reached by every thread of a CTA or by none; it opens a new interval of
the race check (shared-memory accesses on either side of it never race). A shuffle (xor, up,
down, idx, within `width` lanes) must be executed by whole warps; a lane whose source falls
outside its segment keeps its own value and gets `valid` false.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import WARP, EmulationError, Machine, Step
from napkin_mlir.emulator.program import Compiler, rule


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


@rule("gpu.barrier")
def _barrier(op: ir.Operation, c: Compiler) -> Step:
    where = c.where(op)

    def step(m: Machine) -> None:
        if np.any(m.mask.any(axis=1) != m.mask.all(axis=1)):
            raise EmulationError("gpu.barrier reached by some threads of a CTA but not by others", where)
        m.count("bar.sync")
        m.epoch += 1

    return step


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
