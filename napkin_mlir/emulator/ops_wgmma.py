"""Rules for Hopper's warpgroup MMA (`wgmma`), by the PTX ISA's descriptor and fragment layouts.

* `nvvm.wgmma.mma_async` m64nNk16 (f16/bf16 in, f32 accumulate), both operands from shared
  memory: each warpgroup's (128 threads') 64-bit descriptors must agree; they are decoded
  (start address, leading and stride byte offsets, 128-byte swizzle), the 64x16 A and 16xN B
  tiles are read from the CTA's shared memory at the addresses the layout gives (K-major or
  MN-major, per `layoutA`/`layoutB`), and D = (scale-d ? D : 0) + A B in float32 is held by
  the threads in the accumulator layout: register v = 4j + 2i + c of thread (warp w of the
  warpgroup, lane l) is D[16w + l/4 + 8i, 8j + 2(l%4) + c];
* the async rules, per warpgroup (each keeps its own fence, open group and committed groups,
  so warpgroups running apart under warp specialization do not mix theirs): a wgmma needs a
  `wgmma.fence` since the warpgroup's last `wgmma.wait_group` (this emulator asks for one per
  group, as CUTLASS issues them); its result is an `Accumulator` that any other op may read
  only after a `wait_group` retired its group (reading it earlier is an error naming the
  wgmma), and the shared-memory bytes it read must be unchanged then (an overwrite before the
  wait is an error); the shared memory it reads must have been written before the last
  barrier, or ordered before every warp of the warpgroup by a named barrier or an mbarrier
  (another warp's stores are otherwise a race), and covered by a `fence.proxy.async` in or
  after the epoch of the write (the generic-proxy stores are otherwise invisible to the async
  proxy); those bytes count as read by the warpgroup (`memory.retire_reads`: ordered before
  what its warps do after the wait_group that retires it, and before what other warps do
  after a barrier or an acquire of that), and by every warp until the next barrier where
  warps do not run apart, so a store into them is a race. Bytes a TMA load wrote are
  async-proxy writes and need neither: only that the load landed and that every thread of the
  warpgroup waited on the mbarrier phase that delivered them (`memory.check_tma_access`);
  `in_flight_reads` gives the bytes the wgmmas not yet retired read, in every warpgroup (a
  TMA load into them is refused). Warpgroups with no active thread take no part (their
  descriptors are not read);
* `llvm.mlir.zero` and `llvm.mlir.undef` (accumulator structs: zeros, or NaN), `llvm.insertvalue` (one register of an
  accumulator replaced) and `memref.extract_aligned_pointer_as_index`
  (the shared address of a view: shared memory starts at address 0 here).

Semantics from the PTX ISA as `../shared/docs/hopper.md` section 3 states it (CUTLASS's
GmmaDescriptor and accumulator layouts); the 128-byte swizzle is applied to absolute
addresses: byte a lives at a ^ (((a >> 7) % 8) << 4).
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mlir import ir
from mlir.dialects import llvm

from napkin_mlir.emulator.machine import GRANULE, WARP, WARPGROUP, EmulationError, Machine, MemRef, Step
from napkin_mlir.emulator.memory import check_tma_access, retire_reads
from napkin_mlir.emulator.program import Compiler, numpy_dtype, rule

WGMMA_M = 64
SWIZZLE_LAYOUTS = {1: 128}  # descriptor layout field -> swizzle bytes (64B and 32B: not yet)


class Accumulator:
    """A wgmma's result: float32 (registers, CTAs, threads), readable once a wait_group
    retired its group; with the shared-memory bytes it read (addresses and values), which
    must not change before then; and the epoch it was issued in."""

    def __init__(self, values: np.ndarray, where: str, reads: list[tuple[np.ndarray, np.ndarray]], epoch: int) -> None:
        self.values = values
        self.where = where
        self.reads = reads
        self.epoch = epoch
        self.retired = False

    def retire(self, m: Machine) -> None:
        if self.retired:
            return
        for addr, seen in self.reads:
            if not np.array_equal(np.where(addr >= 0, _bytes_at(m, np.maximum(addr, 0)), seen), seen):
                raise EmulationError(
                    "shared memory a wgmma reads was overwritten before a wgmma.wait_group retired it "
                    f"(the wgmma at {self.where})"
                )
        self.retired = True

    def _check(self) -> None:
        if not self.retired:
            raise EmulationError(
                f"a wgmma accumulator is read before a wgmma.wait_group retired its group (the wgmma at {self.where})"
            )

    def __getitem__(self, index: Any) -> np.ndarray:
        self._check()
        return self.values[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self._check()
        return self.values if dtype is None else self.values.astype(dtype)


@dataclass
class _Warpgroup:
    """One warpgroup's wgmma state: whether a wgmma.fence opened the current group, the open
    group and the committed ones."""

    fenced: bool = False
    open: list[Accumulator] = field(default_factory=list)
    groups: deque[list[Accumulator]] = field(default_factory=deque)


@dataclass
class _WgmmaState:
    """Per machine: each warpgroup's state, and per CTA the epoch of the last fence.proxy.async."""

    warpgroups: list[_Warpgroup]
    proxy_epoch: np.ndarray


_STATES: weakref.WeakKeyDictionary[Machine, _WgmmaState] = weakref.WeakKeyDictionary()


def _state(m: Machine) -> _WgmmaState:
    if m not in _STATES:
        _STATES[m] = _WgmmaState([_Warpgroup() for _ in range(m.T // WARPGROUP)], np.full(m.C, -1, np.int64))
    return _STATES[m]


def _running(m: Machine) -> np.ndarray:
    """Per CTA and warpgroup, whether it executes the op (whole warpgroups: checked before)."""
    return m.mask.reshape(m.C, -1, WARPGROUP).any(axis=2)


def _active(m: Machine) -> list[_Warpgroup]:
    """The states of the warpgroups with an active thread (in any CTA of the batch)."""
    s = _state(m)
    return [s.warpgroups[g] for g in np.nonzero(_running(m).any(axis=0))[0]]


def _whole_warpgroups(m: Machine, where: str) -> None:
    if m.T % WARPGROUP:
        raise EmulationError(f"a wgmma needs whole warpgroups: the block has {m.T} threads", where)
    per = m.mask.reshape(m.C, -1, WARPGROUP)
    if np.any(per.any(axis=2) != per.all(axis=2)):
        raise EmulationError("executed by only some threads of a warpgroup (it needs all 128)", where)


@rule("memref.extract_aligned_pointer_as_index")
def _pointer(op: ir.Operation, c: Compiler) -> Step:
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    where = c.where(op)

    def step(m: Machine) -> None:
        ref: MemRef = m.env[src]
        if ref.space != "shared":
            raise EmulationError("the emulator takes the address of shared memory only", where)
        offset = m.uniform(ref.offset, where, "the view's offset")
        m.env[out] = np.asarray(offset * ref.itemsize, np.int64)

    return step


@rule("llvm.mlir.zero", "llvm.mlir.undef")
def _struct_constant(op: ir.Operation, c: Compiler) -> Step:
    """A struct of f32 registers: zeros, or (undef) NaN, so a result that used them shows."""
    t = op.results[0].type
    if not isinstance(t, llvm.StructType) or any(not isinstance(e, ir.F32Type) for e in t.body):
        raise EmulationError(f"{op.name} of {t}: the emulator takes structs of f32 only", c.where(op))
    registers = len(t.body)
    fill = 0.0 if op.name == "llvm.mlir.zero" else np.nan
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        m.env[out] = np.full((registers, m.C, m.T), fill, np.float32)

    return step


@rule("llvm.insertvalue")
def _insertvalue(op: ir.Operation, c: Compiler) -> Step:
    (pos,) = list(ir.DenseI64ArrayAttr(op.attributes["position"]))
    src, value, out = c.slot(op.operands[0]), c.slot(op.operands[1]), c.slot(op.results[0])

    def step(m: Machine) -> None:
        registers = np.array(m.env[src], np.float32)  # a copy (an unretired accumulator refuses)
        registers[pos] = m.env[value]
        m.env[out] = registers

    return step


@rule("nvvm.fence.proxy")
def _fence_proxy(op: ir.Operation, c: Compiler) -> Step:
    text = str(op.attributes["kind"]) + (str(op.attributes["space"]) if "space" in op.attributes else "")
    if "async.shared" not in text or "cta" not in text:
        raise EmulationError(f"only fence.proxy.async.shared::cta is supported, got {text}", c.where(op))

    def step(m: Machine) -> None:
        m.count("fence.proxy.async")
        _state(m).proxy_epoch[m.mask.any(axis=1)] = m.epoch

    return step


@rule("nvvm.wgmma.fence.aligned")
def _wgmma_fence(op: ir.Operation, c: Compiler) -> Step:
    where = c.where(op)

    def step(m: Machine) -> None:
        _whole_warpgroups(m, where)
        m.count("wgmma.fence")
        for wg in _active(m):
            wg.fenced = True

    return step


@rule("nvvm.wgmma.commit.group.sync.aligned")
def _wgmma_commit(op: ir.Operation, c: Compiler) -> Step:
    where = c.where(op)

    def step(m: Machine) -> None:
        _whole_warpgroups(m, where)
        m.count("wgmma.commit_group")
        for wg in _active(m):
            wg.groups.append(wg.open)
            wg.open = []

    return step


@rule("nvvm.wgmma.wait.group.sync.aligned")
def _wgmma_wait(op: ir.Operation, c: Compiler) -> Step:
    pending = ir.IntegerAttr(op.attributes["group"]).value
    where = c.where(op)

    def step(m: Machine) -> None:
        _whole_warpgroups(m, where)
        m.count("wgmma.wait_group")
        running = _running(m)
        s = _state(m)
        for g in np.nonzero(running.any(axis=0))[0]:
            wg = s.warpgroups[g]
            latest = -1
            while len(wg.groups) > pending:
                for acc in wg.groups.popleft():
                    acc.retire(m)
                    latest = max(latest, acc.epoch)
            if latest >= 0:
                retire_reads(m, np.nonzero(running[:, g])[0], int(g), latest)
            wg.fenced = False

    return step


def in_flight_reads(m: Machine) -> list[tuple[np.ndarray, str]]:
    """The shared byte addresses (CTAs, ...) each wgmma not yet retired by a wait_group reads
    (16-bit elements: each address and the next byte), with the wgmma's location."""
    s = _STATES.get(m)
    if s is None:
        return []
    live = {id(acc): acc for wg in s.warpgroups for acc in wg.open + [a for group in wg.groups for a in group]}
    return [(addr, acc.where) for acc in live.values() if not acc.retired for addr, _ in acc.reads]


def _attr(op: ir.Operation, name: str) -> str:
    """The enum's keyword: `#nvvm.mma_layout<row>` -> `row`."""
    return str(op.attributes[name]).split("<")[-1].rstrip(">").strip()


def _swizzle(addr: np.ndarray, swizzle: int) -> np.ndarray:
    return addr ^ (((addr >> 7) & (swizzle // 16 - 1)) << 4)


def _operand_addresses(desc: np.ndarray, rows: int, k: int, k_major: bool, itemsize: int, where: str) -> np.ndarray:
    """Byte addresses (C, G, rows, k) of a rows x k operand (A: m x k; B: n x k) from its
    descriptors (C, G): K-major start + (r % 8) S + (r / 8) SBO + k e; MN-major
    start + (r % (S/e)) e + (r / (S/e)) LBO + (k % 8) S + (k / 8) SBO; then the swizzle."""
    desc = desc.astype(np.uint64)
    start = ((desc & 0x3FFF) << 4).astype(np.int64)
    lbo = (((desc >> 16) & 0x3FFF) << 4).astype(np.int64)
    sbo = (((desc >> 32) & 0x3FFF) << 4).astype(np.int64)
    base = ((desc >> 49) & 7).astype(np.int64)
    layout = (desc >> 62).astype(np.int64)
    if np.any(base != 0):
        raise EmulationError("wgmma descriptors with a base offset are not supported", where)
    if np.any(layout != layout.flat[0]) or int(layout.flat[0]) not in SWIZZLE_LAYOUTS:
        raise EmulationError(
            f"wgmma descriptor layout {sorted(set(layout.flat))}: only 128-byte swizzle is supported", where
        )
    s = SWIZZLE_LAYOUTS[int(layout.flat[0])]
    r = np.arange(rows)[:, None]
    kk = np.arange(k)[None, :]
    start, lbo, sbo = (x[..., None, None] for x in (start, lbo, sbo))
    if k_major:
        addr = start + (r % 8) * s + (r // 8) * sbo + kk * itemsize
    else:
        per_row = s // itemsize
        addr = start + (r % per_row) * itemsize + (r // per_row) * lbo + (kk % 8) * s + (kk // 8) * sbo
    return _swizzle(addr, s)


def _bytes_at(m: Machine, addr: np.ndarray) -> np.ndarray:
    """The 16-bit words at byte addresses (C, G, ...) of each CTA's shared memory."""
    cta = np.arange(m.C).reshape((m.C,) + (1,) * (addr.ndim - 1))
    return m.smem[cta, addr].astype(np.uint16) | (m.smem[cta, addr + 1].astype(np.uint16) << 8)


def _read_operand(m: Machine, addr: np.ndarray, dtype: np.dtype, where: str, run: np.ndarray, op: int) -> np.ndarray:
    """16-bit elements at byte addresses (C, G, ...) of each CTA's shared memory, as float32,
    for the warpgroups `run` (C, G) that execute the wgmma (a CTA whose loop has ended while
    others go on is not reading, nor a warpgroup of another role); checks bounds, alignment,
    that the writes are ordered before every warp of the warpgroup and covered by a proxy
    fence, and marks the bytes read by the warpgroup."""
    on = np.broadcast_to(run.reshape(run.shape + (1,) * (addr.ndim - 2)), addr.shape)
    live = addr[on]
    if np.any(live < 0) or np.any(live + dtype.itemsize > m.smem_bytes):
        bad = live[(live < 0) | (live + dtype.itemsize > m.smem_bytes)].flat[0]
        raise EmulationError(
            f"wgmma reads shared memory out of bounds: byte {int(bad)} of {m.smem_bytes} B of dynamic shared memory",
            where,
        )
    if np.any(live % dtype.itemsize):
        raise EmulationError("wgmma operand element address misaligned", where)
    cta = np.arange(m.C).reshape((m.C,) + (1,) * (addr.ndim - 1))
    gran = np.where(on, addr, 0) // GRANULE
    if m.tma is not None:  # bytes TMA loads deliver: landed, and seen by the whole warpgroup
        ctas, groups = np.nonzero(run)
        threads = groups[:, None] * WARPGROUP + np.arange(WARPGROUP)
        check_tma_access(m, "a wgmma operand", ctas, threads, gran[ctas, groups].reshape(len(ctas), -1), where, False)
    values = _bytes_at(m, np.where(on, addr, 0)).view(dtype).astype(np.float32)
    written = np.where(on, m.w_epoch[cta, gran], -1)
    late = written >= m.base
    if late.any():  # stores since the last barrier: ordered before every warp of the warpgroup?
        c, g, *rest = np.nonzero(late)
        spot = (c, g, *rest)
        writer, epoch = m.w_warp[c, gran[spot]], written[spot]
        warps = g[:, None] * (WARPGROUP // WARP) + np.arange(WARPGROUP // WARP)
        after = epoch[:, None] >= m.floor[c[:, None], warps, np.maximum(writer, 0)[:, None]]
        if np.any(after & (warps != writer[:, None])):
            raise EmulationError(
                "wgmma reads shared memory written in the same barrier interval (no barrier between the stores and "
                "the wgmma, nor a named barrier or mbarrier ordering them before every warp of the warpgroup: a race "
                "with the other warps' stores)",
                where,
            )
    fence = _state(m).proxy_epoch.reshape((m.C,) + (1,) * (addr.ndim - 1))
    if np.any((written >= 0) & (fence < written)):
        raise EmulationError(
            "wgmma reads shared memory written by the threads with no fence.proxy.async since (generic-proxy "
            "stores are not visible to the async proxy)",
            where,
        )
    ctas = np.broadcast_to(cta, gran.shape)[on]
    grans = gran[on]
    m.r_epoch[ctas, grans] = m.epoch
    m.r_warp[ctas, grans] = -2
    m.r_op[ctas, grans] = op
    if m.readers is not None:  # the warpgroup's column: ordered by its wait_group (`retire_reads`)
        group = np.broadcast_to(np.arange(run.shape[1]).reshape((1, -1) + (1,) * (addr.ndim - 2)), addr.shape)
        m.readers[ctas, grans, m.warps + group[on]] = m.epoch
    return values


def _fragment_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each thread of a warpgroup (128) and accumulator register (n/2): row and column."""
    t = np.arange(WARPGROUP)[:, None]
    v = np.arange(n // 2)[None, :]
    w, lane = t // 32, t % 32
    j, i, c = v // 4, (v // 2) % 2, v % 2
    return 16 * w + lane // 4 + 8 * i, 8 * j + 2 * (lane % 4) + c


@rule("nvvm.wgmma.mma_async")
def _wgmma(op: ir.Operation, c: Compiler) -> Step:
    where = c.where(op)
    shape = {kv.split("=")[0].strip(): int(kv.split("=")[1]) for kv in _attr(op, "shape").split(",")}
    m_, n, k = shape["m"], shape["n"], shape["k"]
    types = (_attr(op, "typeA"), _attr(op, "typeB"), _attr(op, "typeD"))
    if m_ != WGMMA_M or k != 16 or types[0] != types[1] or types[0] not in ("bf16", "f16") or types[2] != "f32":
        raise EmulationError(f"only wgmma m64nNk16 f32.bf16/f16 is supported, got {shape} {types}", where)
    if _attr(op, "scaleA") != "one" or _attr(op, "scaleB") != "one":
        raise EmulationError("wgmma with negated inputs is not supported", where)
    scale_d = _attr(op, "scaleD") == "one"
    a_k_major = _attr(op, "layoutA") == "row"
    b_k_major = _attr(op, "layoutB") == "col"
    dtype = numpy_dtype(ir.BF16Type.get() if types[0] == "bf16" else ir.F16Type.get())
    acc_in, desc_a, desc_b = (c.slot(v) for v in op.operands)
    out = c.slot(op.results[0])
    rows, cols = _fragment_index(n)
    op_id = c.op_id(op)

    def step(m: Machine) -> None:
        _whole_warpgroups(m, where)
        run = _running(m)
        if not run.any():
            m.env[out] = m.env[acc_in]
            return
        active = _active(m)
        if not all(wg.fenced for wg in active):
            raise EmulationError("wgmma with no wgmma.fence since the last wgmma.wait_group", where)
        m.count("wgmma.mma_async")
        groups = m.T // WARPGROUP
        descs = []
        for slot in (desc_a, desc_b):
            d = m.full(m.env[slot], 0).reshape(m.C, groups, WARPGROUP)
            if np.any((d != d[:, :, :1]).any(axis=2) & run):
                raise EmulationError("wgmma descriptors differ between the threads of a warpgroup", where)
            d = d[:, :, 0].copy()
            d[~run] = d[run][0]  # warpgroups not running: a running one's, never read
            descs.append(d)
        a_addr = _operand_addresses(descs[0], WGMMA_M, k, a_k_major, 2, where)
        b_addr = _operand_addresses(descs[1], n, k, b_k_major, 2, where)
        a = _read_operand(m, a_addr, dtype, where, run, op_id)
        b = _read_operand(m, b_addr, dtype, where, run, op_id)
        d = np.einsum("cgmk,cgnk->cgmn", a, b, dtype=np.float32)  # (C, G, 64, n)
        acc = m.env[acc_in]
        prev = acc.values if isinstance(acc, Accumulator) else np.asarray(acc, np.float32)
        regs = prev.reshape(n // 2, m.C, groups, WARPGROUP)
        if scale_d:  # this thread's registers, gathered from D's layout and back
            d = d.copy()
            d[:, :, rows, cols] += regs.transpose(1, 2, 3, 0)
        new = d[:, :, rows, cols].transpose(3, 0, 1, 2).reshape(n // 2, m.C, m.T)
        ran = run.reshape((*run.shape, 1, 1))
        reads = [(np.where(ran, x, -2), _bytes_at(m, np.where(ran, x, 0))) for x in (a_addr, b_addr)]  # -2: not read
        result = Accumulator(new.astype(np.float32), where, reads, m.epoch)
        for wg in active:
            wg.open.append(result)
        m.env[out] = result

    return step
