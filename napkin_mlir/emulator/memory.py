"""Memory accesses: where each lane's access lands, and what is checked and counted about it.

The instruction families (`ops_*.py`) call these for every load, store, copy and `ldmatrix`:

* addresses: `address` turns each lane's indices into an element index of the buffer, with
  bounds checked (memcheck); `gather` and `scatter` read and write those elements;
* `check_alignment`: vector accesses, `ldmatrix` rows and `cp.async` ends aligned;
* racecheck: shared memory written by one warp and read or written by another with nothing
  ordering the two, on the machine's shadow of shared memory (`race_check_read`,
  `race_check_write`; a `cp.async` counts as a write both when issued and when it lands,
  `race_check_landing`). A CTA barrier orders everything before it (`cta_barrier`); between
  barriers, accesses are ordered by happens-before edges (`release`, `acquire`: an mbarrier
  arrival and a wait that saw its phase complete, a named barrier's arrivals and the warps
  it releases), kept as the machine's per-warp `floor`s. A conflicting pair is first found
  by the barrier interval alone (`epoch >= base`, one comparison, as cheap as before) and only
  then looked up in the floors (`unordered`), so kernels synchronised by barriers pay nothing;
* TMA deliveries (`check_tma_access`, on every shared-memory read and write): no access to
  bytes a TMA load in flight will write, and bytes a load landed in the current barrier
  interval only by threads that waited on the mbarrier phase that delivered them;
* `claim_output`: an output element written by two threads;
* counts, for CTA 0 of the grid: shared-memory wavefronts against the conflict-free ideal
  (`count_wavefronts`, bank conflicts) and 32-byte global sectors against a fully coalesced
  access (`count_sectors`).

Diagnostics name the first offending lane (`first_set`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napkin_mlir.emulator.machine import BANKS, GRANULE, WARP, WARPGROUP, EmulationError, Machine, MemRef, PendingCopy

# --- addresses -----------------------------------------------------------------------------------


def first_set(flags: np.ndarray) -> tuple[int, ...]:
    """The index of the first set entry of `flags` (the lane a diagnostic names)."""
    return tuple(int(a[0]) for a in np.nonzero(flags))


def address(m: Machine, ref: MemRef, indices: list[Any], width: int, where: str, mask: np.ndarray) -> np.ndarray:
    """Element index of each lane's access (width elements along the last dimension), with
    bounds checked for the lanes in `mask`."""
    if len(indices) != len(ref.shape):
        raise EmulationError(f"{len(indices)} indices into a rank-{len(ref.shape)} memref", where)
    lin = np.broadcast_to(np.asarray(ref.offset, np.int64), (m.C, m.T))
    for d, (i, size, stride) in enumerate(zip(indices, ref.shape, ref.strides, strict=True)):
        i = np.broadcast_to(np.asarray(i, np.int64), (m.C, m.T))
        span = width if d == len(ref.shape) - 1 else 1
        bad = mask & ((i < 0) | (i + span > size))
        if bad.any():
            c, t = first_set(bad)
            idx = [int(m.full(j, 0)[c, t]) for j in indices]
            shape = [int(m.full(n, 0)[c, t]) for n in ref.shape]
            raise EmulationError(
                f"out of bounds: {ref.name}{idx} (+{width} elements) of shape {shape}, "
                f"{ref.space} memory, by {m.describe_lane(c, t)}",
                where,
            )
        lin = lin + i * stride
    return lin


def check_alignment(m: Machine, ref: MemRef, lin: np.ndarray, align: int, mask: np.ndarray, where: str) -> None:
    byte = lin * ref.itemsize
    bad = mask & (byte % align != 0)
    if bad.any():
        c, t = first_set(bad)
        raise EmulationError(
            f"misaligned access: {ref.space} {ref.name} byte offset {int(byte[c, t])} is not a multiple of {align}, "
            f"by {m.describe_lane(c, t)}",
            where,
        )


def element_positions(lin: np.ndarray, width: int) -> np.ndarray:
    """The elements an access of `width` elements starting at `lin` covers."""
    return lin[..., None] + np.arange(width) if width > 1 else lin


def gather(m: Machine, ref: MemRef, lin: np.ndarray, width: int) -> np.ndarray:
    pos = np.clip(element_positions(lin, width), 0, ref.data.shape[-1] - 1)
    if ref.space == "global":
        return ref.data[pos]
    return ref.data[m.cta.reshape((m.C,) + (1,) * (pos.ndim - 1)), pos]


def scatter(m: Machine, ref: MemRef, lin: np.ndarray, width: int, values: np.ndarray, mask: np.ndarray) -> None:
    ci, ti = np.nonzero(mask)
    pos = element_positions(lin[ci, ti], width)
    vals = values[ci, ti]
    if ref.space == "global":
        ref.data[pos] = vals
    else:
        ref.data[ci[:, None] if width > 1 else ci, pos] = vals


def claim_output(m: Machine, ref: MemRef, lin: np.ndarray, width: int, where: str) -> None:
    """Record which thread wrote each output element; a second writer is an error."""
    owners = m.writers.get(id(ref.data))
    if owners is None:
        return
    ci, ti = np.nonzero(m.mask)
    pos = element_positions(lin[ci, ti], width).reshape(len(ci), -1)
    me = np.broadcast_to(m.global_thread[ci, ti][:, None], pos.shape)
    prev = owners[pos]
    clash = (prev >= 0) & (prev != me)
    owners[pos] = me
    clash |= owners[pos] != me
    if clash.any():
        n, k = first_set(clash)
        raise EmulationError(
            f"output {ref.name} element {int(pos[n, k])} (flat) is written by two threads "
            f"(one of them {m.describe_lane(int(ci[n]), int(ti[n]))})",
            where,
        )


# --- happens-before: CTA barriers, releases and acquires -------------------------------------------


def cta_barrier(m: Machine) -> None:
    """A barrier of every thread of the CTAs: everything before it is ordered before everything
    after it (a new barrier interval)."""
    m.epoch += 1
    m.base = m.epoch
    m.floor.fill(m.epoch)


def release(m: Machine, ctas: np.ndarray, warps: np.ndarray) -> np.ndarray:
    """Warps `warps` of `ctas` (1-D, one entry per warp) release: the clock each hands on (its
    floor, with its own column past every access it made so far); the epoch then moves on, so
    that the accesses they make later are not covered."""
    rows = m.floor[ctas, warps]
    rows[np.arange(len(ctas)), warps] = m.epoch + 1
    m.epoch += 1
    return rows


def acquire(m: Machine, ctas: np.ndarray, warps: np.ndarray, clocks: np.ndarray) -> None:
    """Warps `warps` of `ctas` (1-D) acquire `clocks` (one row each): every access those clocks
    cover happens before the warps' later accesses."""
    if len(ctas) == 0:
        return
    keys = ctas * m.warps + warps
    keep = np.ones(len(keys), bool)  # the lanes of a warp come in a row, mostly with one clock
    keep[1:] = (keys[1:] != keys[:-1]) | (clocks[1:] != clocks[:-1]).any(axis=1)
    ctas, warps, clocks, keys = ctas[keep], warps[keep], clocks[keep], keys[keep]
    if len(np.unique(keys)) == len(keys):
        m.floor[ctas, warps] = np.maximum(m.floor[ctas, warps], clocks)
    else:
        np.maximum.at(m.floor, (ctas, warps), clocks)


def retire_reads(m: Machine, ctas: np.ndarray, group: int, epoch: int) -> None:
    """The warps of warpgroup `group` in `ctas` saw the warpgroup's wgmma reads made up to
    `epoch` complete (a wgmma.wait_group retired them)."""
    warps = np.arange(group * WARPGROUP // WARP, (group + 1) * WARPGROUP // WARP)
    column = m.warps + group
    cell = m.floor[ctas[:, None], warps[None, :], column]
    m.floor[ctas[:, None], warps[None, :], column] = np.maximum(cell, epoch + 1)


def track_readers(m: Machine) -> None:
    """Start keeping every warp's (and warpgroup's) last read epoch per granule (`m.readers`),
    which refines 'read by several warps' once warps run apart: granules read by several
    warps since the last barrier count as read by all of them."""
    if m.readers is not None:
        return
    columns = m.floor.shape[2]
    m.readers = np.full((*m.r_epoch.shape, columns), -1, np.int32)
    current = m.r_epoch >= m.base
    ci, gi = np.nonzero(current & (m.r_warp >= 0))
    m.readers[ci, gi, m.r_warp[ci, gi]] = m.r_epoch[ci, gi]
    ci, gi = np.nonzero(current & (m.r_warp == -2))
    m.readers[ci, gi, :] = m.r_epoch[ci, gi, None]


def unordered(
    m: Machine, clash: np.ndarray, ctas: np.ndarray, warps: np.ndarray, pos: np.ndarray, reads: bool
) -> np.ndarray:
    """`clash` (N, k): the last write (or reads) of granules `pos` of `ctas` (N,) by another warp
    since the last barrier, against an access by `warps` (N,); kept where no happens-before
    edge orders that access before this one (the floors). Reads by several warps are looked up
    per warp once `m.readers` is kept, else they all count as unordered."""
    if not clash.any():
        return clash
    n, k = np.nonzero(clash)
    c, w, p = ctas[n], warps[n], pos[n, k]
    if not reads:
        ok = m.w_epoch[c, p] < m.floor[c, w, np.maximum(m.w_warp[c, p], 0)]
    else:
        who = m.r_warp[c, p]
        one = who >= 0
        ok = np.zeros(len(n), bool)
        ok[one] = m.r_epoch[c[one], p[one]] < m.floor[c[one], w[one], who[one]]
        if m.readers is not None and not one.all():
            several = ~one
            epochs = m.readers[c[several], p[several]]
            epochs[np.arange(len(epochs)), w[several]] = -1  # its own reads come before, in program order
            ok[several] = (epochs < m.floor[c[several], w[several]]).all(axis=1)
    if not ok.any():
        return clash
    clash = clash.copy()
    clash[n[ok], k[ok]] = False
    return clash


# --- the shared-memory race check ------------------------------------------------------------------


def granules(ref: MemRef, lin: np.ndarray, width: int) -> np.ndarray:
    """The shadow granules (GRANULE bytes each) an access of `width` elements covers."""
    if ref.itemsize < GRANULE:
        raise EmulationError(f"{ref.itemsize}-byte shared-memory accesses are below the race check's granule")
    start = lin * ref.itemsize // GRANULE
    return start[..., None] + np.arange(width * ref.itemsize // GRANULE)


def race_check_write(m: Machine, ref: MemRef, lin: np.ndarray, width: int, mask: np.ndarray, op: int) -> None:
    ci, ti = np.nonzero(mask)
    if ci.size == 0:
        return
    cb = ci[:, None]
    pos = granules(ref, lin[ci, ti], width)
    check_tma_access(m, ref.name, ci, ti[:, None], pos, m.op_names[op], store=True)
    w = m.warp[ci, ti][:, None]
    clash_w = unordered(m, (m.w_epoch[cb, pos] >= m.base) & (m.w_warp[cb, pos] != w), ci, w[:, 0], pos, False)
    clash_r = unordered(m, (m.r_epoch[cb, pos] >= m.base) & (m.r_warp[cb, pos] != w), ci, w[:, 0], pos, True)
    if clash_w.any() or clash_r.any():
        writes = bool(clash_w.any())
        n, k = first_set(clash_w if writes else clash_r)
        ops, warps = (m.w_op, m.w_warp) if writes else (m.r_op, m.r_warp)
        c, b = ci[n], pos[n, k]
        report_race(m, ref, c, int(w[n, 0]), b, op, int(ops[c, b]), int(warps[c, b]), "wrote" if writes else "read")
    m.w_epoch[cb, pos] = m.epoch
    m.w_warp[cb, pos] = w
    m.w_op[cb, pos] = op
    clash = m.w_warp[cb, pos] != w
    if clash.any():
        n, k = first_set(clash)
        report_race(m, ref, ci[n], int(w[n, 0]), pos[n, k], op, op, int(m.w_warp[ci[n], pos[n, k]]), "wrote")


def race_check_read(m: Machine, ref: MemRef, lin: np.ndarray, width: int, mask: np.ndarray, op: int) -> None:
    ci, ti = np.nonzero(mask)
    if ci.size == 0:
        return
    cb = ci[:, None]
    pos = granules(ref, lin[ci, ti], width)
    check_tma_access(m, ref.name, ci, ti[:, None], pos, m.op_names[op], store=False)
    warps = m.warp[ci, ti]
    w = np.broadcast_to(warps[:, None], pos.shape)
    clash = unordered(m, (m.w_epoch[cb, pos] >= m.base) & (m.w_warp[cb, pos] != w), ci, warps, pos, False)
    if clash.any():
        n, k = first_set(clash)
        c, b = ci[n], pos[n, k]
        report_race(m, ref, c, int(w[n, 0]), b, op, int(m.w_op[c, b]), int(m.w_warp[c, b]), "wrote")
    many = (m.r_epoch[cb, pos] >= m.base) & (m.r_warp[cb, pos] != w)
    m.r_epoch[cb, pos] = m.epoch
    m.r_warp[cb, pos] = np.where(many, -2, w)
    m.r_op[cb, pos] = op
    several = m.r_warp[cb, pos] != w
    m.r_warp[cb[several.any(axis=1)], pos[several.any(axis=1)]] = -2
    if m.readers is not None:
        m.readers[cb, pos, w] = m.epoch


def race_check_landing(m: Machine, copy: PendingCopy) -> None:
    """A `cp.async` lands: its elements count as written now, by the warp that issued it."""
    ref = copy.memref
    cb = copy.ctas[:, None]
    pos = granules(ref, copy.positions[:, 0], copy.positions.shape[1])
    w = copy.warps[:, None]
    clash = unordered(m, (m.r_epoch[cb, pos] >= m.base) & (m.r_warp[cb, pos] != w), copy.ctas, copy.warps, pos, True)
    if clash.any():
        n, k = first_set(clash)
        c, b = copy.ctas[n], pos[n, k]
        note = " (a cp.async issued here, landing at a device_async_wait)"
        report_race(m, ref, c, int(w[n, 0]), b, copy.op, int(m.r_op[c, b]), int(m.r_warp[c, b]), "read", note)
    m.w_epoch[cb, pos], m.w_warp[cb, pos], m.w_op[cb, pos] = m.epoch, w, copy.op


def check_tma_access(
    m: Machine, what: str, ctas: np.ndarray, threads: np.ndarray, pos: np.ndarray, where: str, store: bool
) -> None:
    """An access of shared-memory granules `pos` (N, k) of `ctas` (N,) by `threads` (N, j),
    against the TMA loads: bytes a load in flight will write may not be touched, and bytes a
    load landed in this barrier interval only by threads that all saw the mbarrier phase that
    delivered them complete (a wait on it, or a named barrier with a thread that waited; after
    the next gpu.barrier every thread may)."""
    s = m.tma
    if s is None or pos.size == 0:
        return
    cb = ctas[:, None]
    verb = "written" if store else "read"
    if s.in_flight:
        owner = s.pending[cb, pos]
        if (owner >= 0).any():
            n, k = first_set(owner >= 0)
            raise EmulationError(
                f"shared-memory byte {int(pos[n, k]) * GRANULE} ({what}) is {verb} before the mbarrier wait that "
                f"delivers it: the TMA load at {m.op_names[owner[n, k]]} into it has not landed, by "
                f"{m.describe_lane(int(ctas[n]), int(threads[n, 0]))}",
                where,
            )
    if s.landing_epoch < m.base:
        return
    landed = s.landed_epoch[cb, pos] >= m.base
    if not landed.any():
        return
    barrier = np.maximum(s.landed_barrier[cb, pos], 0)
    seen = np.take_along_axis(s.seen[cb, threads].min(axis=1), barrier, axis=1)
    blind = landed & (seen <= s.landed_phase[cb, pos])
    if blind.any():
        n, k = first_set(blind)
        c, b = int(ctas[n]), int(pos[n, k])
        raise EmulationError(
            f"shared-memory byte {b * GRANULE} ({what}) is {verb} before the mbarrier wait that delivers it: "
            f"{m.describe_lane(c, int(threads[n, 0]))} did not wait on mbarrier {s.barrier_names[barrier[n, k]]} "
            f"for the phase the TMA load at {m.op_names[m.w_op[c, b]]} completed (a wait, or a gpu.barrier after "
            "another thread's wait, makes its bytes visible)",
            where,
        )


def report_race(
    m: Machine,
    ref: MemRef,
    cta: int,
    warp: int,
    byte: int,
    op: int,
    other_op: int,
    other_warp: int,
    kind: str,
    note: str = "",
) -> None:
    """Raise the race diagnostic: `warp` at `op` against `other_warp` at `other_op`."""
    names = m.op_names
    who = "several other warps" if other_warp == -2 else f"warp {other_warp}"
    raise EmulationError(
        f"shared-memory race in {m.describe_lane(cta, warp * WARP).split(' thread')[0]}: warp {warp} accesses "
        f"shared-memory byte {int(byte) * GRANULE} ({ref.name}){note}, which {who} {kind} at {names[other_op]} "
        "with no gpu.barrier in between (nor an mbarrier arrive and wait or a named barrier ordering the two)",
        names[op],
    )


# --- bank conflicts and coalescing -----------------------------------------------------------------


def distinct_per_row(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of `values` sorted, and where its distinct non-negative entries first appear
    (negative entries stand for inactive lanes)."""
    ordered = np.sort(values, axis=1)
    first = np.ones(ordered.shape, bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return ordered, first & (ordered >= 0)


def count_wavefronts(m: Machine, ref: MemRef, lin: np.ndarray, width: int, mask: np.ndarray, kind: str) -> None:
    """Shared-memory wavefronts of one warp-wide access in CTA 0 against the ideal: a request
    of 16-byte lanes is served 8 lanes at a time, 8-byte lanes 16 at a time, smaller ones 32;
    each phase takes as many wavefronts as the most distinct 4-byte words in one bank."""
    if not m.measure_cta0:
        return
    nbytes = width * ref.itemsize
    lanes = {16: 8, 8: 16}.get(nbytes, WARP)
    start = lin[0] * ref.itemsize  # (T,)
    words = (start[:, None] + np.arange(0, max(nbytes, 4), 4)) // 4  # (T, k)
    active = np.broadcast_to(mask[0][:, None], words.shape).reshape(-1, lanes * words.shape[1])
    ordered, distinct = distinct_per_row(np.where(active, words.reshape(active.shape), -1))  # (warps * phases, .)
    per_bank = np.zeros((len(ordered), BANKS), np.int64)
    rows = np.broadcast_to(np.arange(len(ordered))[:, None], ordered.shape)
    np.add.at(per_bank, (rows[distinct], ordered[distinct] % BANKS), 1)
    m.stats.smem_wavefronts[kind] += int(per_bank.max(axis=1).sum())
    m.stats.smem_ideal_wavefronts[kind] += int(active.any(axis=1).sum())


def count_sectors(m: Machine, ref: MemRef, lin: np.ndarray, nbytes: Any, mask: np.ndarray, kind: str) -> None:
    """32-byte global-memory sectors one warp-wide access of CTA 0 touches, against the
    fewest that could hold the bytes it asks for (a fully coalesced access)."""
    if not m.measure_cta0:
        return
    size = np.broadcast_to(np.asarray(nbytes, np.int64), (m.C, m.T))[0]
    active = mask[0] & (size > 0)
    first = lin[0] * ref.itemsize // 32
    last = (lin[0] * ref.itemsize + np.maximum(size, 1) - 1) // 32
    touched = first[:, None] + np.arange(int((last - first).max(initial=0)) + 1)  # (T, most sectors of a lane)
    touched = np.where(active[:, None] & (touched <= last[:, None]), touched, -1)
    _, distinct = distinct_per_row(touched.reshape(-1, WARP * touched.shape[1]))
    m.stats.global_sectors[kind] += int(distinct.sum())
    requested = np.where(active, size, 0).reshape(-1, WARP).sum(axis=1)
    m.stats.global_ideal_sectors[kind] += int((-(-requested // 32)).sum())
