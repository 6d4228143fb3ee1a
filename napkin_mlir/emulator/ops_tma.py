"""Rules for Hopper's TMA loads and mbarriers, with the PTX ISA's semantics.

* `builtin.unrealized_conversion_cast` from an `!llvm.ptr` kernel argument to a
  `!nvgpu.tensormap.descriptor`: the tensor map bound to the argument (`TensorMapRef`),
  whose box, element type and swizzle must be the ones the descriptor type states. The
  emulator has no other cast.
* mbarriers: `nvgpu.mbarrier.create` makes a group of barriers (one group per op; running
  the op again gives the same group). Per CTA each barrier keeps its expected arrival count,
  the arrivals still pending, a transaction count (bytes), the number of phases completed,
  and the thread and barrier interval of its init. `mbarrier.init` (one thread per barrier
  and CTA; not while a phase is in progress) sets count = pending = n in 1..2^20-1, tx = 0.
  `arrive.expect_tx` adds bytes to tx then arrives; `arrive` arrives. A phase completes when
  no arrival is pending and tx is 0: the phase count goes up (its parity flips), pending goes
  back to the count and tx to 0. Arrivals beyond the pending ones are an error.
* uses of a barrier: it must be initialized, and threads other than its initializer may use
  it only after a `gpu.barrier` that follows an `nvvm.fence.mbarrier.init` by the initializer.
* `nvgpu.tma.async.load` (tile mode): each issuing thread reads the box from global memory
  when it issues (coordinates signed, innermost first; elements outside the array read as
  zero) and the bytes land in shared memory later: the box's dense row-major image at the
  destination's address (128-byte aligned, 1024 for the 128-byte swizzle), with the swizzle
  applied to absolute shared addresses (a ^ (((a >> 7) & (S/16 - 1)) << 4) for S = 32, 64
  or 128). A landing writes shared memory and takes the box's bytes off its barrier's tx.
  Loads land lazily: when a thread of their CTA waits on their barrier for a phase that has
  not completed (in issue order, until it completes); a load never waited for is counted
  in `Stats.unretired_copies`.
* `nvgpu.mbarrier.try_wait.parity p`: blocks until the phase of parity p has completed, that
  is until the current phase's parity differs from p (on a fresh barrier p = 1 passes at once),
  in every CTA whose threads wait. A phase that the pending loads cannot complete blocks the
  task (the side of a warp-specialized `scf.if`: `tasks.py`) until another task completes it;
  outside any task all threads run in lockstep, so nothing else can: that is reported as a
  deadlock naming the barrier, the parity and what is missing (as is a deadlock of tasks).
* happens-before for the race check: an arrival releases the arriving warps' accesses
  (`memory.release`: their clocks join the barrier's), a phase's completion keeps the clock
  of every arrival before it, and a wait that sees the phase complete acquires it
  (`memory.acquire`): what the consumers did before arriving on a stage's "empty" barrier
  is ordered before what the producer does after its wait on it (its TMA load into the
  stage), with no CTA barrier between.
* `nvvm.setmaxregister` (whole warpgroups; counted): per CTA each warpgroup's count after
  it; once every warpgroup of a CTA has set one, their sum x 128 must fit the SM's register
  file (65,536), and an increase may not go below, nor a decrease above, the current count.
* `nvvm.fence.mbarrier.init` and `nvgpu.tma.prefetch.descriptor` (counted).

Checks on the bytes (the shadow is `machine.TmaShadow`): touching bytes a load in flight will
write is an error naming the load (read before the mbarrier wait that delivers it), and so is
reading landed bytes by a thread that did not wait for the phase that delivered them (until
the next `gpu.barrier`); a load counts for the race check as a write by the issuing warp
when issued and again when it lands; a load into bytes a wgmma not yet retired reads is
refused (the stage was reused before it was released), as is a load into bytes another
load in flight will write. Landed bytes are async-proxy writes made visible by the wait:
wgmma reads them with no `fence.proxy.async` or barrier after the wait.

Semantics as `../shared/docs/hopper.md` sections 1a, 3c and 3d state them.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import (
    GRANULE,
    WARPGROUP,
    EmulationError,
    Machine,
    MemRef,
    Step,
    TensorMapRef,
    TmaShadow,
)
from napkin_mlir.emulator.memory import acquire, first_set, race_check_write, release, report_race, unordered
from napkin_mlir.emulator.ops_wgmma import in_flight_reads
from napkin_mlir.emulator.program import Compiler, is_pointer, numpy_dtype, rule
from napkin_mlir.emulator.tasks import Wait, block

#: Arrival counts and transaction counts stay below this (the PTX ISA's 20-bit range).
MBARRIER_LIMIT = 2**20
#: 32-bit registers of an SM's register file (what setmaxnreg counts may claim at once).
REGISTER_FILE = 65536
SWIZZLES = {"none": 0, "swizzle_32b": 32, "swizzle_64b": 64, "swizzle_128b": 128}


# --- state -----------------------------------------------------------------------------------------


@dataclass
class _Group:
    """One `nvgpu.mbarrier.create`'s barriers, per CTA of the batch (arrays (CTAs, barriers))."""

    name: str
    size: int
    first: int  # the machine-wide number of barrier 0 (`TmaShadow.seen`)
    initialized: np.ndarray
    expected: np.ndarray
    pending: np.ndarray
    tx: np.ndarray
    phase: np.ndarray  # phases completed
    init_epoch: np.ndarray
    init_thread: np.ndarray
    fenced: np.ndarray  # an nvvm.fence.mbarrier.init by the initializer followed the init
    clock: np.ndarray  # (CTAs, barriers, floor columns): what every arrival since the init released
    done: np.ndarray  # the clock when the last phase completed (what a wait acquires)
    seen_clock: np.ndarray  # (CTAs, barriers, mbarriers): the phases the arriving threads had seen complete
    seen_done: np.ndarray  # the same when the last phase completed
    loads: list[_Load] = field(default_factory=list)  # in issue order, until all landed

    def label(self, b: int) -> str:
        return f"{self.name}[{b}]"

    def seen_columns(self, n: int) -> None:
        """Widen the seen clocks to `n` mbarriers (groups created since)."""
        grow = n - self.seen_clock.shape[2]
        if grow > 0:
            pad = ((0, 0), (0, 0), (0, grow))
            self.seen_clock, self.seen_done = np.pad(self.seen_clock, pad), np.pad(self.seen_done, pad)

    def outstanding(self) -> np.ndarray:
        """Loads in flight per CTA and barrier."""
        counts = np.zeros(self.pending.shape, np.int64)
        for load in self.loads:
            live = ~load.landed
            np.add.at(counts, (load.ctas[live], load.barriers[live]), 1)
        return counts


@dataclass
class _Load:
    """One `tma.async.load` executed: per issuing thread its CTA, barrier and warp, the shared
    addresses and bytes it will write, the granules they cover and whether it has landed."""

    op: int
    dst: MemRef
    group: _Group
    ctas: np.ndarray
    barriers: np.ndarray
    warps: np.ndarray
    addresses: np.ndarray  # (L, bytes), swizzled
    data: np.ndarray  # (L, bytes) uint8
    granules: np.ndarray  # (L, bytes / GRANULE)
    landed: np.ndarray


_GROUPS: weakref.WeakKeyDictionary[Machine, dict[int, _Group]] = weakref.WeakKeyDictionary()


def _groups(m: Machine) -> dict[int, _Group]:
    if m not in _GROUPS:
        _GROUPS[m] = {}
    return _GROUPS[m]


def _shadow(m: Machine) -> TmaShadow:
    if m.tma is None:
        shape = (m.C, m.smem.shape[1] // GRANULE)
        m.tma = TmaShadow(
            pending=np.full(shape, -1, np.int32),
            landed_epoch=np.full(shape, -1, np.int64),
            landed_barrier=np.full(shape, -1, np.int32),
            landed_phase=np.zeros(shape, np.int64),
            seen=np.zeros((m.C, m.T, 0), np.int64),
        )
    return m.tma


def _cta(m: Machine, c: int) -> str:
    return m.describe_lane(c, 0).split(" thread")[0]


def _lanes(m: Machine, predicate: int | None) -> np.ndarray:
    """The threads that execute a predicated op: the active ones whose predicate is true."""
    if predicate is None:
        return m.mask
    return m.mask & np.broadcast_to(np.asarray(m.env[predicate], bool), (m.C, m.T))


def _group(m: Machine, slot: int, where: str) -> _Group:
    g = m.env[slot]
    if not isinstance(g, _Group):
        raise EmulationError("an mbarrier op on a value that is not an mbarrier group", where)
    return g


def _barrier_ids(m: Machine, g: _Group, slot: int, ci: np.ndarray, ti: np.ndarray, where: str) -> np.ndarray:
    ids = np.asarray(m.full(m.env[slot], 0)[ci, ti], np.int64)
    bad = (ids < 0) | (ids >= g.size)
    if bad.any():
        n = int(np.argmax(bad))
        raise EmulationError(
            f"mbarrier index {int(ids[n])} outside group {g.name} of {g.size}, by "
            f"{m.describe_lane(int(ci[n]), int(ti[n]))}",
            where,
        )
    return ids


def _use(m: Machine, g: _Group, ci: np.ndarray, ti: np.ndarray, ids: np.ndarray, where: str, what: str) -> None:
    """Threads (ci, ti) use barriers `ids`: initialized, and published to threads other than
    the initializer by a fence.mbarrier.init and then a gpu.barrier."""
    ready = g.initialized[ci, ids]
    if not ready.all():
        n = int(np.argmax(~ready))
        raise EmulationError(
            f"{what} uses mbarrier {g.label(int(ids[n]))} before it is initialized, by "
            f"{m.describe_lane(int(ci[n]), int(ti[n]))}",
            where,
        )
    other = ti != g.init_thread[ci, ids]
    early = other & (g.init_epoch[ci, ids] >= m.base)
    unfenced = other & ~g.fenced[ci, ids]
    for bad, why in (
        (early, "in the barrier interval of its mbarrier.init by thread {t} (no gpu.barrier since)"),
        (unfenced, "though no nvvm.fence.mbarrier.init by thread {t} followed its init before the gpu.barrier"),
    ):
        if bad.any():
            n = int(np.argmax(bad))
            c, b = int(ci[n]), int(ids[n])
            raise EmulationError(
                f"{what} uses mbarrier {g.label(b)} {why.format(t=int(g.init_thread[c, b]))}, by "
                f"{m.describe_lane(c, int(ti[n]))}: other threads may use a barrier only after its initializer's "
                "nvvm.fence.mbarrier.init and a gpu.barrier",
                where,
            )


def _complete(g: _Group, cs: np.ndarray, bs: np.ndarray) -> None:
    """Barriers (cs, bs) whose phase has no arrival pending and tx 0 complete it."""
    done = g.initialized[cs, bs] & (g.pending[cs, bs] == 0) & (g.tx[cs, bs] == 0)
    if done.any():
        keys = np.unique(cs[done] * g.size + bs[done])
        c, b = keys // g.size, keys % g.size
        g.phase[c, b] += 1
        g.pending[c, b] = g.expected[c, b]
        g.tx[c, b] = 0
        g.done[c, b] = g.clock[c, b]
        g.seen_done[c, b] = g.seen_clock[c, b]


# --- tensor maps -----------------------------------------------------------------------------------


def _descriptor(t: ir.Type, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """A `!nvgpu.tensormap.descriptor` type's box (innermost first), element type and swizzle."""
    text = str(t)
    start = text.find("tensor = memref<")
    if start < 0:
        raise EmulationError(f"cannot read the box of {text}", where)
    begin = start + len("tensor = ")
    depth, end = 0, begin
    while end < len(text):
        depth += {"<": 1, ">": -1}.get(text[end], 0)
        if depth == 0 and text[end] == ">":
            break
        end += 1
    box_t = ir.MemRefType(ir.Type.parse(text[begin : end + 1]))
    fields = dict(re.findall(r"(\w+) = (\w+)", text[end:]))
    if fields.get("oob", "zero") != "zero" or fields.get("interleave", "none") != "none":
        raise EmulationError(f"{text}: the emulator takes zero-filled, non-interleaved tensor maps", where)
    if fields.get("swizzle") not in SWIZZLES:
        raise EmulationError(f"{text}: unknown swizzle", where)
    return tuple(reversed(box_t.shape)), numpy_dtype(box_t.element_type), SWIZZLES[fields["swizzle"]]


@rule("builtin.unrealized_conversion_cast")
def _cast(op: ir.Operation, c: Compiler) -> Step:
    where = c.where(op)
    sources = [str(v.type) for v in op.operands]
    targets = [str(r.type) for r in op.results]
    if (
        len(sources) != 1
        or len(targets) != 1
        or not is_pointer(op.operands[0].type)
        or not targets[0].startswith("!nvgpu.tensormap.descriptor<")
    ):
        raise EmulationError(
            f"the emulator has no rule for this cast: {', '.join(sources)} to {', '.join(targets)} "
            "(it takes !llvm.ptr to !nvgpu.tensormap.descriptor only)",
            where,
        )
    box, dtype, swizzle = _descriptor(op.results[0].type, where)
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])

    def step(m: Machine) -> None:
        tmap = m.env[src]
        if not isinstance(tmap, TensorMapRef):
            raise EmulationError("the !llvm.ptr argument cast to a TMA descriptor is not bound to a tensor map", where)
        if tmap.box != box or tmap.swizzle != swizzle or tmap.source.data.dtype != dtype:
            raise EmulationError(
                f"the descriptor type says box {list(box)} (innermost first), swizzle {swizzle}, {dtype}, but the "
                f"tensor map {tmap.name} bound to the argument has box {list(tmap.box)}, swizzle {tmap.swizzle}, "
                f"{tmap.source.data.dtype} (over {tmap.source.name})",
                where,
            )
        m.env[out] = tmap

    return step


@rule("nvgpu.tma.prefetch.descriptor")
def _prefetch(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    desc = c.slot(view.tensorMapDescriptor)
    predicate = c.slot(view.predicate) if view.predicate is not None else None
    where = c.where(op)

    def step(m: Machine) -> None:
        if not isinstance(m.env[desc], TensorMapRef):
            raise EmulationError("prefetch of a value that is not a tensor map", where)
        m.count("prefetch.tensormap", _lanes(m, predicate))

    return step


# --- mbarriers -------------------------------------------------------------------------------------


@rule("nvgpu.mbarrier.create")
def _create(op: ir.Operation, c: Compiler) -> Step:
    found = re.search(r"num_barriers\s*=\s*(\d+)", str(op.results[0].type))
    size = int(found.group(1)) if found else 1
    name = c.result_name(op)
    op_id = c.op_id(op)
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        groups = _groups(m)
        if op_id not in groups:
            s = _shadow(m)
            first = s.seen.shape[2]
            s.seen = np.concatenate([s.seen, np.zeros((m.C, m.T, size), np.int64)], axis=2)
            s.barrier_names += [f"{name}[{b}]" for b in range(size)]

            def per_barrier(fill: int | bool, dtype: type) -> np.ndarray:
                return np.full((m.C, size), fill, dtype)

            groups[op_id] = _Group(
                name,
                size,
                first,
                initialized=per_barrier(False, np.bool_),
                expected=per_barrier(0, np.int64),
                pending=per_barrier(0, np.int64),
                tx=per_barrier(0, np.int64),
                phase=per_barrier(0, np.int64),
                init_epoch=per_barrier(-1, np.int64),
                init_thread=per_barrier(-1, np.int64),
                fenced=per_barrier(False, np.bool_),
                clock=np.zeros((m.C, size, m.floor.shape[2]), np.int32),
                done=np.zeros((m.C, size, m.floor.shape[2]), np.int32),
                seen_clock=np.zeros((m.C, size, 0), np.int64),
                seen_done=np.zeros((m.C, size, 0), np.int64),
            )
        m.env[out] = groups[op_id]

    return step


@rule("nvgpu.mbarrier.init")
def _init(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    grp, count, idx = c.slot(view.barriers), c.slot(view.count), c.slot(view.mbarId)
    predicate = c.slot(view.predicate) if view.predicate is not None else None
    where = c.where(op)

    def step(m: Machine) -> None:
        g = _group(m, grp, where)
        mask = _lanes(m, predicate)
        ci, ti = np.nonzero(mask)
        if ci.size == 0:
            return
        ids = _barrier_ids(m, g, idx, ci, ti, where)
        counts = np.asarray(m.full(m.env[count], 0)[ci, ti], np.int64)
        keys, many = np.unique(ci * g.size + ids, return_counts=True)
        if (many > 1).any():
            k = int(np.argmax(many > 1))
            cta, b = int(keys[k] // g.size), int(keys[k] % g.size)
            raise EmulationError(
                f"mbarrier {g.label(b)} is initialized by {int(many[k])} threads of {_cta(m, cta)} at once "
                "(exactly one thread must initialize it)",
                where,
            )
        bad = (counts < 1) | (counts >= MBARRIER_LIMIT)
        if bad.any():
            n = int(np.argmax(bad))
            raise EmulationError(f"mbarrier count {int(counts[n])} outside 1..{MBARRIER_LIMIT - 1}", where)
        busy = g.initialized[ci, ids] & (
            (g.pending[ci, ids] != g.expected[ci, ids]) | (g.tx[ci, ids] != 0) | (g.outstanding()[ci, ids] > 0)
        )
        if busy.any():
            n = int(np.argmax(busy))
            cta, b = int(ci[n]), int(ids[n])
            raise EmulationError(
                f"mbarrier {g.label(b)} of {_cta(m, cta)} is initialized again while a phase is in progress "
                f"({int(g.expected[cta, b] - g.pending[cta, b])} arrivals made, tx {int(g.tx[cta, b])})",
                where,
            )
        g.initialized[ci, ids] = True
        g.expected[ci, ids] = g.pending[ci, ids] = counts
        g.tx[ci, ids] = g.phase[ci, ids] = 0
        g.init_epoch[ci, ids] = m.epoch
        g.init_thread[ci, ids] = ti
        g.fenced[ci, ids] = False
        g.clock[ci, ids] = g.done[ci, ids] = 0
        g.seen_clock[ci, ids] = g.seen_done[ci, ids] = 0
        s = _shadow(m)
        s.seen[ci[:, None], np.arange(m.T)[None, :], (g.first + ids)[:, None]] = 0
        m.count("mbarrier.init", mask)

    return step


@rule("nvvm.fence.mbarrier.init")
def _fence_init(op: ir.Operation, c: Compiler) -> Step:
    def step(m: Machine) -> None:
        m.count("fence.mbarrier_init")
        for g in _groups(m).values():
            cs, bs = np.nonzero(g.initialized & (g.init_epoch >= m.base))
            by_initializer = m.mask[cs, g.init_thread[cs, bs]]
            g.fenced[cs[by_initializer], bs[by_initializer]] = True

    return step


@rule("nvgpu.mbarrier.arrive", "nvgpu.mbarrier.arrive.expect_tx")
def _arrive(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    expect = op.name.endswith("expect_tx")
    grp, idx = c.slot(view.barriers), c.slot(view.mbarId)
    txcount = c.slot(view.txcount) if expect else None
    predicate = c.slot(view.predicate) if expect and view.predicate is not None else None
    token = c.slot(op.results[0]) if len(op.results) else None
    where = c.where(op)
    kind = "mbarrier.arrive.expect_tx" if expect else "mbarrier.arrive"

    def step(m: Machine) -> None:
        if token is not None:
            m.env[token] = np.zeros((), np.int64)  # the state token: never looked at here
        g = _group(m, grp, where)
        mask = _lanes(m, predicate)
        ci, ti = np.nonzero(mask)
        if ci.size == 0:
            return
        ids = _barrier_ids(m, g, idx, ci, ti, where)
        _use(m, g, ci, ti, ids, where, kind)
        if txcount is not None:
            nbytes = np.asarray(m.full(m.env[txcount], 0)[ci, ti], np.int64)
            if ((nbytes < 0) | (nbytes >= MBARRIER_LIMIT)).any():
                raise EmulationError(f"expect_tx of {int(nbytes.max())} bytes: outside 0..{MBARRIER_LIMIT - 1}", where)
            np.add.at(g.tx, (ci, ids), nbytes)
            if (np.abs(g.tx[ci, ids]) >= MBARRIER_LIMIT).any():
                raise EmulationError(f"an mbarrier's transaction count leaves +-{MBARRIER_LIMIT - 1}", where)
        np.subtract.at(g.pending, (ci, ids), 1)
        np.maximum.at(g.clock, (ci, ids), release(m, ci, m.warp[ci, ti]))
        s = _shadow(m)
        g.seen_columns(s.seen.shape[2])
        np.maximum.at(g.seen_clock, (ci, ids), s.seen[ci, ti])
        over = g.pending[ci, ids] < 0
        if over.any():
            n = int(np.argmax(over))
            cta, b = int(ci[n]), int(ids[n])
            raise EmulationError(
                f"more arrivals on mbarrier {g.label(b)} of {_cta(m, cta)} than its count {int(g.expected[cta, b])} "
                f"in this phase (the phase waits for tx {int(g.tx[cta, b])} bytes still), by "
                f"{m.describe_lane(cta, int(ti[n]))}",
                where,
            )
        _complete(g, ci, ids)
        m.count(kind, mask)

    return step


@rule("nvgpu.mbarrier.try_wait.parity")
def _wait(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    grp, idx, parity = c.slot(view.barriers), c.slot(view.mbarId), c.slot(view.phaseParity)
    where = c.where(op)

    def step(m: Machine) -> None:
        g = _group(m, grp, where)
        ci, ti = np.nonzero(m.mask)
        if ci.size == 0:
            return
        ids = _barrier_ids(m, g, idx, ci, ti, where)
        _use(m, g, ci, ti, ids, where, "mbarrier.try_wait.parity")
        par = np.asarray(m.full(m.env[parity], 0)[ci, ti], np.int64) & 1
        keys, inverse = np.unique(ci * g.size + ids, return_inverse=True)
        want = np.zeros(len(keys), np.int64)
        want[inverse] = par
        mixed = par != want[inverse]
        if mixed.any():
            n = int(np.argmax(mixed))
            raise EmulationError(
                f"the parity waited for on mbarrier {g.label(int(ids[n]))} differs between the threads of "
                f"{_cta(m, int(ci[n]))}; the emulator needs it uniform in a CTA",
                where,
            )
        cs, bs = keys // g.size, keys % g.size

        def ready() -> bool:
            """Whether the phase completed in every CTA, once the loads in flight on it landed."""
            blocked = (g.phase[cs, bs] & 1) == want
            if blocked.any():
                _land(m, g, cs[blocked], bs[blocked], want[blocked])
                blocked = (g.phase[cs, bs] & 1) == want
            return not blocked.any()

        def missing() -> str:
            k = int(np.argmax((g.phase[cs, bs] & 1) == want))
            cta, b = int(cs[k]), int(bs[k])
            return (
                f"mbarrier {g.label(b)} for the phase of parity {int(want[k])} in {_cta(m, cta)}: "
                f"{int(g.pending[cta, b])} of {int(g.expected[cta, b])} arrivals and {int(g.tx[cta, b])} transaction "
                "bytes missing"
            )

        block(
            m,
            Wait(ready, lambda: f"waits at {where} on {missing()}"),
            lambda: EmulationError(
                f"deadlock: the threads wait on {missing()}, so it can never complete, with no TMA load in flight on "
                "it (the emulator runs the threads in lockstep: nothing else can arrive while they wait)",
                where,
            ),
        )
        s = _shadow(m)
        g.seen_columns(s.seen.shape[2])
        s.seen[ci, ti] = np.maximum(s.seen[ci, ti], g.seen_done[ci, ids])  # what the arriving threads had seen
        number = g.first + ids
        s.seen[ci, ti, number] = np.maximum(s.seen[ci, ti, number], g.phase[ci, ids])
        acquire(m, ci, m.warp[ci, ti], g.done[ci, ids])
        m.count("mbarrier.try_wait.parity")

    return step


# --- TMA loads -------------------------------------------------------------------------------------


def swizzle(addresses: np.ndarray, nbytes: int) -> np.ndarray:
    """Where byte address a lands under the `nbytes` (0, 32, 64, 128) swizzle: its 16-byte
    chunk bits [4, 4 + log2(S/16)) XORed with bits [7, 7 + log2(S/16))."""
    if nbytes == 0:
        return addresses
    return addresses ^ (((addresses >> 7) & (nbytes // 16 - 1)) << 4)


def _read_box(tmap: TensorMapRef, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes at `coords` (L, rank; innermost first) as (L,) + box outermost first, with
    elements outside the array zero, and which elements were inside."""
    lanes, rank = coords.shape
    out = (lanes, *reversed(tmap.box))
    offset = np.zeros(out, np.int64)
    inside = np.ones(out, bool)
    for i in range(rank):
        shape = [lanes] + [1] * rank
        shape[rank - i] = tmap.box[i]
        g = (coords[:, i, None] + np.arange(tmap.box[i])).reshape(shape)
        inside = inside & (g >= 0) & (g < tmap.dims[i])
        offset = offset + g * tmap.strides[i]
    data = tmap.source.data
    values = np.where(inside, data[np.clip(offset + tmap.source.offset, 0, data.size - 1)], np.zeros((), data.dtype))
    return values, inside


def _check_wgmma_reads(m: Machine, ci: np.ndarray, base: np.ndarray, nbytes: int, where: str) -> None:
    """A TMA load may not write bytes a wgmma that no wait_group has retired still reads."""
    for addr, reader in in_flight_reads(m):
        a = addr[ci].reshape(len(ci), -1)
        hit = (a >= base[:, None]) & (a < base[:, None] + nbytes)
        if hit.any():
            n, k = first_set(hit)
            raise EmulationError(
                "a TMA load overwrites shared memory a wgmma in flight reads (stage reused before it was "
                f"released): byte {int(a[n, k])} of {_cta(m, int(ci[n]))}, read by the wgmma at {reader}, which "
                "no wgmma.wait_group has retired",
                where,
            )


@rule("nvgpu.tma.async.load")
def _tma_load(op: ir.Operation, c: Compiler) -> Step:
    view = op.opview
    where = c.where(op)
    if view.multicastMask is not None:
        raise EmulationError("TMA multicast is not supported (one CTA per cluster)", where)
    desc, grp, idx, dst = (c.slot(v) for v in (view.tensorMapDescriptor, view.barriers, view.mbarId, view.dst))
    coords = [c.slot(v) for v in view.coordinates]
    predicate = c.slot(view.predicate) if view.predicate is not None else None
    shape = tuple(ir.MemRefType(view.dst.type).shape)
    op_id = c.op_id(op)

    def step(m: Machine) -> None:
        mask = _lanes(m, predicate)
        ci, ti = np.nonzero(mask)
        if ci.size == 0:
            return
        tmap = m.env[desc]
        if not isinstance(tmap, TensorMapRef):
            raise EmulationError("a TMA load through a value that is not a tensor map", where)
        dref: MemRef = m.env[dst]
        if dref.space != "shared":
            raise EmulationError("a TMA load writes shared memory", where)
        if len(coords) != len(tmap.dims):
            raise EmulationError(f"{len(coords)} coordinates into a rank-{len(tmap.dims)} tensor map", where)
        if tuple(reversed(tmap.box)) != shape or dref.data.dtype != tmap.source.data.dtype:
            raise EmulationError(
                f"the destination {dref.name} is {list(shape)} of {dref.data.dtype}, the box "
                f"{list(reversed(tmap.box))} of {tmap.source.data.dtype} (outermost first)",
                where,
            )
        g = _group(m, grp, where)
        ids = _barrier_ids(m, g, idx, ci, ti, where)
        _use(m, g, ci, ti, ids, where, "a TMA load")
        xs = np.stack([np.asarray(m.full(m.env[s], 0)[ci, ti], np.int64) for s in coords], axis=1)
        if ((xs < -(2**31)) | (xs >= 2**31)).any():
            raise EmulationError(f"TMA coordinates {xs[0].tolist()} outside the signed 32-bit range", where)
        base = np.broadcast_to(np.asarray(dref.offset, np.int64), (m.C, m.T))[ci, ti] * dref.itemsize
        nbytes = tmap.box_bytes
        align = 1024 if tmap.swizzle == 128 else 128
        if (base % align).any() or (base < 0).any() or (base + nbytes > m.smem_bytes).any():
            raise EmulationError(
                f"TMA destination {dref.name} at shared byte {int(base[0])} (+{nbytes} B): it must be {align}-byte "
                f"aligned and inside the {m.smem_bytes} B of dynamic shared memory",
                where,
            )
        values, inside = _read_box(tmap, xs)
        s = _shadow(m)
        granules = (base // GRANULE)[:, None] + np.arange(nbytes // GRANULE)
        other = s.pending[ci[:, None], granules]
        if (other >= 0).any():
            n, k = first_set(other >= 0)
            raise EmulationError(
                f"a TMA load into shared byte {int(granules[n, k]) * GRANULE} of {_cta(m, int(ci[n]))}, which the "
                f"TMA load at {m.op_names[other[n, k]]} still in flight will write",
                where,
            )
        _check_wgmma_reads(m, ci, base, nbytes, where)
        lin = np.zeros((m.C, m.T), np.int64)
        lin[ci, ti] = base // dref.itemsize
        race_check_write(m, dref, lin, nbytes // dref.itemsize, mask, op_id)
        s.pending[ci[:, None], granules] = op_id
        s.in_flight += len(ci)
        image = np.ascontiguousarray(values).reshape(len(ci), -1).view(np.uint8)
        addresses = swizzle(base[:, None] + np.arange(nbytes), tmap.swizzle)
        load = _Load(op_id, dref, g, ci, ids, m.warp[ci, ti], addresses, image, granules, np.zeros(len(ci), bool))
        g.loads.append(load)
        m.count("cp.async.bulk.tensor", mask)
        m.stats.global_read_bytes += int(inside.sum()) * dref.itemsize

    return step


def _land(m: Machine, g: _Group, cs: np.ndarray, bs: np.ndarray, want: np.ndarray) -> None:
    """Land the loads in flight on barriers (cs, bs) in issue order while the phase of parity
    `want` there has not completed."""
    for load in g.loads:
        blocked = (g.phase[cs, bs] & 1) == want
        if not blocked.any():
            break
        lanes = ~load.landed & np.isin(load.ctas * g.size + load.barriers, cs[blocked] * g.size + bs[blocked])
        if lanes.any():
            _land_lanes(m, load, lanes)
    g.loads = [load for load in g.loads if not load.landed.all()]


def _land_lanes(m: Machine, load: _Load, lanes: np.ndarray) -> None:
    """The loads of threads `lanes` land: a write by the issuing warp now (a race with other
    warps' reads in this barrier interval), their bytes in shared memory, marked as delivered
    by the barrier's current phase, and their bytes off its tx."""
    g, s = load.group, m.tma
    assert s is not None
    ctas, bars = load.ctas[lanes], load.barriers[lanes]
    cb, pos = ctas[:, None], load.granules[lanes]
    w = load.warps[lanes][:, None]
    clash = unordered(m, (m.r_epoch[cb, pos] >= m.base) & (m.r_warp[cb, pos] != w), ctas, w[:, 0], pos, True)
    if clash.any():
        n, k = first_set(clash)
        c, b = int(ctas[n]), int(pos[n, k])
        note = " (a TMA load issued here, landing at an mbarrier wait)"
        report_race(m, load.dst, c, int(w[n, 0]), b, load.op, int(m.r_op[c, b]), int(m.r_warp[c, b]), "read", note)
    m.smem[cb, load.addresses[lanes]] = load.data[lanes]
    s.pending[cb, pos] = -1
    s.in_flight -= int(lanes.sum())
    s.landed_epoch[cb, pos] = m.epoch
    s.landed_barrier[cb, pos] = (g.first + bars)[:, None]
    s.landed_phase[cb, pos] = g.phase[ctas, bars][:, None]
    s.landing_epoch = m.epoch
    # an async-proxy write: not a generic store (no proxy fence or barrier needed before a wgmma)
    m.w_epoch[cb, pos], m.w_warp[cb, pos], m.w_op[cb, pos] = -1, -1, load.op
    load.landed[lanes] = True
    np.subtract.at(g.tx, (ctas, bars), load.data.shape[1])
    _complete(g, ctas, bars)


# --- warp specialization -----------------------------------------------------------------------------


@rule("nvvm.setmaxregister")
def _setmaxregister(op: ir.Operation, c: Compiler) -> Step:
    count = ir.IntegerAttr(op.attributes["regCount"]).value
    action = str(op.attributes["action"]).split()[-1].rstrip(">")
    where = c.where(op)
    if count % 8 or not 24 <= count <= 256:
        raise EmulationError(f"setmaxnreg {count}: a multiple of 8 in 24..256", where)

    increase = action == "increase"

    def step(m: Machine) -> None:
        if m.T % WARPGROUP:
            raise EmulationError(f"setmaxnreg needs whole warpgroups: the block has {m.T} threads", where)
        per = m.mask.reshape(m.C, -1, WARPGROUP)
        active = per.any(axis=2)
        if np.any(active != per.all(axis=2)):
            raise EmulationError("setmaxnreg executed by only some threads of a warpgroup (it needs all 128)", where)
        m.count(f"setmaxnreg.{'inc' if increase else 'dec'}")
        if m not in _REGISTERS:
            _REGISTERS[m] = np.full(active.shape, -1, np.int64)
        registers = _REGISTERS[m]
        cs, gs = np.nonzero(active)
        now = registers[cs, gs]
        wrong = (now >= 0) & ((now > count) if increase else (now < count))
        if wrong.any():
            n = int(np.argmax(wrong))
            raise EmulationError(
                f"setmaxnreg.{'inc' if increase else 'dec'} to {count} registers by warpgroup {int(gs[n])} of "
                f"{_cta(m, int(cs[n]))}, which holds {int(now[n])}: an increase may not lower the count, nor a "
                "decrease raise it",
                where,
            )
        registers[cs, gs] = count
        total = registers.sum(axis=1) * WARPGROUP
        over = (registers >= 0).all(axis=1) & (total > REGISTER_FILE)
        if over.any():
            c = int(np.argmax(over))
            terms = " + ".join(f"{int(r)} x {WARPGROUP}" for r in registers[c])
            raise EmulationError(
                f"the warpgroups of {_cta(m, c)} claim {terms} = {int(total[c])} registers after setmaxnreg, more than "
                f"the register file's {REGISTER_FILE}",
                where,
            )

    return step


#: Per batch, each CTA's warpgroups' register counts after their last setmaxnreg (-1: none yet).
_REGISTERS: weakref.WeakKeyDictionary[Machine, np.ndarray] = weakref.WeakKeyDictionary()
