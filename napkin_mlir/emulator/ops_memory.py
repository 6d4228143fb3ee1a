"""Rules for memrefs: dynamic shared memory, views and subviews of it, loads and stores.

`gpu.dynamic_shared_memory` is the CTA's bytes; `memref.view` types a range of them (inside
what the launch provides, aligned to the element type; the shift must be uniform) and
`memref.subview` narrows a memref, at offsets and sizes that may differ between threads
(strides must not), checked against the source's bounds. Every load and store (scalar or a
1-D vector, `memref` or `vector` dialect) goes through one checked path (`_plain_access`):
bounds, vector alignment, then races and bank wavefronts for shared memory, or bytes moved,
sectors and single writers of outputs for global memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import EmulationError, Machine, MemRef, Step, row_major
from napkin_mlir.emulator.memory import (
    address,
    check_alignment,
    claim_output,
    count_sectors,
    count_wavefronts,
    first_set,
    gather,
    race_check_read,
    race_check_write,
    scatter,
)
from napkin_mlir.emulator.program import Compiler, numpy_dtype, rule, vector_shape

# --- shared memory and views of it -----------------------------------------------------------------


@rule("gpu.dynamic_shared_memory")
def _dynamic_smem(op: ir.Operation, c: Compiler) -> Step:
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        m.env[out] = MemRef("dynamic_shared_memory", "shared", m.smem, 0, (m.smem_bytes,), (1,))

    return step


@rule("memref.view")
def _view(op: ir.Operation, c: Compiler) -> Step:
    src, shift = c.slot(op.operands[0]), c.slot(op.operands[1])
    t = ir.MemRefType(op.results[0].type)
    if len(list(op.operands)) > 2 or not t.has_static_shape:
        raise EmulationError("memref.view with dynamic sizes is not supported", c.where(op))
    dtype = numpy_dtype(t.element_type)
    shape = tuple(t.shape)
    name = c.result_name(op)
    where = c.where(op)
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        base: MemRef = m.env[src]
        if base.space != "shared":
            raise EmulationError("memref.view of global memory is not supported", where)
        byte = m.uniform(m.env[shift], where, "the view's byte shift")
        size = int(np.prod(shape)) * dtype.itemsize
        if byte < 0 or byte + size > m.smem_bytes:
            raise EmulationError(
                f"view {name} covers bytes [{byte}, {byte + size}) but the launch gives {m.smem_bytes} B of dynamic "
                "shared memory",
                where,
            )
        if byte % dtype.itemsize:
            raise EmulationError(f"view {name} at byte {byte} is not aligned to its element type", where)
        m.env[out] = MemRef(name, "shared", base.data.view(dtype), byte // dtype.itemsize, shape, row_major(shape))

    return step


#: The static offset, size or stride of a subview that stands for a dynamic one.
DYNAMIC = -(2**63)


@rule("memref.subview")
def _subview(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    src = c.slot(view.source)
    rank = ir.MemRefType(view.source.type).rank
    if ir.MemRefType(op.results[0].type).rank != rank:
        raise EmulationError("rank-reducing subviews are not supported", c.where(op))
    dynamic = {
        "offsets": iter([c.slot(v) for v in view.offsets]),
        "sizes": iter([c.slot(v) for v in view.sizes]),
        "strides": iter([c.slot(v) for v in view.strides]),
    }
    parts = {
        key: [(next(dynamic[key]) if s == DYNAMIC else None, s) for s in getattr(view, f"static_{key}")]
        for key in ("offsets", "sizes", "strides")
    }
    name = c.result_name(op)
    out = c.slot(op.results[0])
    where = c.where(op)

    def step(m: Machine) -> None:
        ref: MemRef = m.env[src]

        def values(key: str) -> list[Any]:
            return [m.env[slot] if slot is not None else static for slot, static in parts[key]]

        offsets, sizes = values("offsets"), values("sizes")
        steps = [m.uniform(v, where, "a subview stride") for v in values("strides")]
        offset = ref.offset
        for d in range(rank):
            _check_subview_bounds(m, ref, name, d, offsets[d], sizes[d], steps[d], where)
            offset = offset + np.asarray(offsets[d], np.int64) * ref.strides[d]
        strides = tuple(s * k for s, k in zip(ref.strides, steps, strict=True))
        m.env[out] = MemRef(ref.name, ref.space, ref.data, offset, tuple(sizes), strides)

    return step


def _check_subview_bounds(
    m: Machine, ref: MemRef, name: str, d: int, offset: Any, size: Any, stride: int, where: str
) -> None:
    """Dimension `d` of subview `name` (offset, size, stride per thread) lies inside `ref`'s."""
    first, count = m.full(offset, 0), m.full(size, 0)
    last = first + (count - 1) * stride
    bad = m.mask & (count > 0) & ((first < 0) | (last >= m.full(ref.shape[d], 0)) | (last < 0))
    if bad.any():
        c_, t = first_set(bad)
        raise EmulationError(
            f"subview {name} of {ref.name} out of bounds in dimension {d}: offset {int(first[c_, t])}, "
            f"size {int(count[c_, t])} of {int(m.full(ref.shape[d], 0)[c_, t])}, by {m.describe_lane(c_, t)}",
            where,
        )


# --- loads and stores ------------------------------------------------------------------------------


def _width(t: ir.Type, op: ir.Operation, c: Compiler) -> int:
    """Elements one thread moves: 1 for a scalar, n for a vector<n>."""
    shape = vector_shape(t)
    if len(shape) > 1:
        raise EmulationError("only 1-D vector loads and stores are supported", c.where(op))
    return shape[0] if shape else 1


def _plain_access(
    m: Machine, ref: MemRef, indices: list[Any], width: int, where: str, op_id: int, store: bool
) -> np.ndarray:
    """Check and account one load or store by every active thread: bounds, vector alignment,
    races and bank wavefronts (shared) or bytes, sectors and single writers (global). Returns
    each thread's element index."""
    lin = address(m, ref, indices, width, where, m.mask)
    if width > 1:
        check_alignment(m, ref, lin, min(16, width * ref.itemsize), m.mask, where)
    kind = ("st." if store else "ld.") + ref.space
    if ref.space == "shared":
        (race_check_write if store else race_check_read)(m, ref, lin, width, m.mask, op_id)
        count_wavefronts(m, ref, lin, width, m.mask, kind)
    else:
        if store:
            claim_output(m, ref, lin, width, where)
        moved = int(m.mask.sum()) * width * ref.itemsize
        if store:
            m.stats.global_write_bytes += moved
        else:
            m.stats.global_read_bytes += moved
        count_sectors(m, ref, lin, width * ref.itemsize, m.mask, kind)
    m.count(kind)
    return lin


@rule("vector.load", "memref.load")
def _load(op: ir.Operation, c: Compiler) -> Step:
    base, *idx = (c.slot(v) for v in op.operands)
    width = _width(op.results[0].type, op, c)
    out = c.slot(op.results[0])
    where, op_id = c.where(op), c.op_id(op)

    def step(m: Machine) -> None:
        ref: MemRef = m.env[base]
        lin = _plain_access(m, ref, [m.env[i] for i in idx], width, where, op_id, store=False)
        m.env[out] = gather(m, ref, lin, width)

    return step


@rule("vector.store", "memref.store")
def _store(op: ir.Operation, c: Compiler) -> Step:
    value, base, *idx = (c.slot(v) for v in op.operands)
    width = _width(op.operands[0].type, op, c)
    rank = len(vector_shape(op.operands[0].type))
    where, op_id = c.where(op), c.op_id(op)

    def step(m: Machine) -> None:
        ref: MemRef = m.env[base]
        lin = _plain_access(m, ref, [m.env[i] for i in idx], width, where, op_id, store=True)
        scatter(m, ref, lin, width, m.full(m.env[value], rank), m.mask)

    return step
