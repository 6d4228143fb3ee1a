"""Rules for asynchronous copies: `cp.async` (`nvgpu.device_async_copy`), commit and wait.

A copy of 4, 8 or 16 bytes from global to shared memory reads its source when it is issued
(with the zero fill past `srcElements` applied) but writes shared memory only when a
`device_async_wait` retires its group: commit closes the copies issued since the last commit
into a group, and a wait retires groups oldest first until at most `numGroups` are in
flight. A kernel that reads a buffer before waiting for it reads poison. For the race check
a copy counts as a write both when issued and when it lands (`memory.race_check_landing`).
"""

from __future__ import annotations

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import EmulationError, Machine, MemRef, PendingCopy, Step
from napkin_mlir.emulator.memory import (
    address,
    check_alignment,
    count_sectors,
    count_wavefronts,
    element_positions,
    gather,
    race_check_landing,
    race_check_write,
)
from napkin_mlir.emulator.program import Compiler, rule


@rule("nvgpu.device_async_copy")
def _async_copy(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    src, dst = c.slot(view.src), c.slot(view.dst)
    src_idx = [c.slot(v) for v in view.srcIndices]
    dst_idx = [c.slot(v) for v in view.dstIndices]
    n = ir.IntegerAttr(op.attributes["dstElements"]).value
    src_n = c.slot(view.srcElements) if view.srcElements is not None else None
    token = c.slot(op.results[0])
    where, op_id = c.where(op), c.op_id(op)

    def step(m: Machine) -> None:
        sref: MemRef = m.env[src]
        dref: MemRef = m.env[dst]
        if dref.space != "shared" or sref.space != "global":
            raise EmulationError("cp.async copies global memory to shared memory", where)
        if n * dref.itemsize not in (4, 8, 16):
            raise EmulationError(f"cp.async of {n * dref.itemsize} bytes (4, 8 or 16)", where)
        count = np.broadcast_to(np.asarray(m.env[src_n] if src_n is not None else n, np.int64), (m.C, m.T))
        if np.any(m.mask & ((count < 0) | (count > n))):
            raise EmulationError(f"srcElements outside [0, {n}]", where)
        # the source is read now (only by lanes that read anything), with the zero fill
        reads = m.mask & (count > 0)
        slin = address(m, sref, [m.env[i] for i in src_idx], n, where, reads)
        dlin = address(m, dref, [m.env[i] for i in dst_idx], n, where, m.mask)
        check_alignment(m, dref, dlin, n * dref.itemsize, m.mask, where)
        check_alignment(m, sref, slin, n * sref.itemsize, reads, where)
        data = gather(m, sref, slin, n)
        data = np.where(np.arange(n) < count[..., None], data, np.zeros((), data.dtype))
        race_check_write(m, dref, dlin, n, m.mask, op_id)
        count_wavefronts(m, dref, dlin, n, m.mask, "cp.async")
        m.count("cp.async")
        m.stats.global_read_bytes += int(count[m.mask].sum()) * sref.itemsize
        count_sectors(m, sref, slin, count * sref.itemsize, m.mask, "cp.async")
        # the destination is written when the copy's group retires
        ci, ti = np.nonzero(m.mask)
        positions = element_positions(dlin[ci, ti], n)
        m.open_copies.append(PendingCopy(dref, ci, positions, data[ci, ti], m.warp[ci, ti], op_id))
        m.env[token] = None

    return step


@rule("nvgpu.device_async_create_group")
def _commit(op: ir.Operation, c: Compiler) -> Step:
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        m.count("cp.async.commit_group")
        m.groups.append(m.open_copies)
        m.open_copies = []
        m.env[out] = None

    return step


@rule("nvgpu.device_async_wait")
def _wait(op: ir.Operation, c: Compiler) -> Step:
    keep = ir.IntegerAttr(op.attributes["numGroups"]).value if "numGroups" in op.attributes else 0

    def step(m: Machine) -> None:
        m.count("cp.async.wait_group")
        while len(m.groups) > keep:
            for copy in m.groups.popleft():
                retire(m, copy)

    return step


def retire(m: Machine, copy: PendingCopy) -> None:
    """A cp.async lands: shared memory is written now (and counts as a write now)."""
    race_check_landing(m, copy)
    copy.memref.data[copy.ctas[:, None], copy.positions] = copy.values
