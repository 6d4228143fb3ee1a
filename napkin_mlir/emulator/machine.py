"""The emulated machine: one batch of CTAs whose threads run in lockstep, and its memory model.

Every SSA value is a numpy array with one entry per thread (`(CTAs, threads) + vector
shape`), so a batch of CTAs advances together; control flow that differs between threads
runs under a mask (`Machine.mask`), as a GPU's active mask would. A memref value is a
`MemRef`: a typed flat buffer, global (one for the grid) or shared (one row per CTA, a view
of the CTA's bytes). Shared memory starts as 0xFF bytes (NaN in every float type), so
anything read before it is written shows in the result.

The machine also holds the race check's shadow of shared memory (per `GRANULE` bytes: the
epoch, warp and op of the last write and of the last read), the `cp.async` copies in flight
(`PendingCopy`, by commit group), the TMA loads' shadow (`TmaShadow`: the bytes a load in
flight will write, and which mbarrier phase delivered the bytes a load wrote) and the counts
it reports (`Stats`). A TMA tensor map bound to a kernel argument is a `TensorMapRef`.

Epochs order the accesses for the race check. `epoch` is a clock that moves on at every
synchronisation (a CTA barrier, and each release: an mbarrier arrival, a named barrier);
`base` is its value at the last CTA barrier, before which everything is ordered. Between
barriers the warps order their accesses through mbarriers and named barriers: `floor`
(CTAs, warps, warps + warpgroups) holds, per warp, the epoch below which each other warp's
accesses (and each warpgroup's wgmma reads, the last columns) happen before the warp's
present; `readers` (made when a CTA's warps first split into tasks: `tasks.py`) the epoch of
each warp's and warpgroup's last read of every granule. `task` is the task running (None
outside warp specialization). What is checked and counted about each access lives in
`memory.py`; the programs it runs (`Steps`) are built by `program.py`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napkin_mlir.errors import NapkinError

WARP = 32
WARPGROUP = 128
BANKS = 32
#: Bytes of shared memory per race-check shadow entry (the smallest access the kernels make).
GRANULE = 2


class EmulationError(NapkinError):
    """The kernel did something a GPU would reject or that makes its result undefined."""


#: One compiled op: what it does to the machine's values, masks and memory.
Step = Callable[["Machine"], None]


class Steps(list):
    """A block's compiled ops, and how many of them are instructions (not control flow)."""

    ops: int = 0


@dataclass(frozen=True)
class MemRef:
    """A memref value: a typed flat buffer (global: one for the grid; shared: one row per CTA)."""

    name: str
    space: str  # "global" or "shared"
    data: np.ndarray  # global: (elements,); shared: (CTAs, elements), a view of the CTA's bytes
    offset: Any  # in elements: an int, or one per thread for a subview at a per-thread offset
    shape: tuple[Any, ...]  # ints, or per-thread sizes (arrays) for dynamic subviews
    strides: tuple[int, ...]

    @property
    def itemsize(self) -> int:
        return self.data.dtype.itemsize


def row_major(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.insert(0, acc)
        acc *= s
    return tuple(strides)


@dataclass
class Stats:
    """Per-CTA counts (CTA 0 of the grid for shared-memory wavefronts)."""

    warp_instructions: Counter = field(default_factory=Counter)
    global_read_bytes: int = 0
    global_write_bytes: int = 0
    smem_wavefronts: Counter = field(default_factory=Counter)
    smem_ideal_wavefronts: Counter = field(default_factory=Counter)
    global_sectors: Counter = field(default_factory=Counter)
    global_ideal_sectors: Counter = field(default_factory=Counter)
    ctas: int = 0
    unretired_copies: int = 0
    written: dict[int, np.ndarray] = field(default_factory=dict)  # output argument -> elements stored

    def coalescing_summary(self) -> dict[str, dict[str, int]]:
        return {
            k: {"sectors": self.global_sectors[k], "ideal": self.global_ideal_sectors[k]}
            for k in sorted(self.global_sectors)
        }

    def bank_conflict_summary(self) -> dict[str, dict[str, int]]:
        return {
            k: {"wavefronts": self.smem_wavefronts[k], "ideal": self.smem_ideal_wavefronts[k]}
            for k in sorted(self.smem_wavefronts)
        }


@dataclass(frozen=True)
class TensorMapRef:
    """A TMA tensor map (tile mode) bound to a kernel argument: the global array it reads,
    and, innermost dimension first, its sizes, element strides (the first is 1) and box;
    `swizzle` in bytes (0, 32, 64 or 128); out-of-bounds elements read as zeros."""

    name: str
    source: MemRef
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    box: tuple[int, ...]
    swizzle: int

    @property
    def box_bytes(self) -> int:
        return int(np.prod(self.box)) * self.source.itemsize


@dataclass
class TmaShadow:
    """The TMA loads' shadow of shared memory, per CTA and `GRANULE` bytes, and what the
    threads know of the mbarriers that deliver them (`ops_tma` makes it when a batch creates
    its first mbarrier group):

    * `pending`: the op of the load in flight that will write the granule (-1: none);
      `in_flight` counts the loads (one per issuing thread) not yet landed;
    * `landed_epoch`, `landed_barrier`, `landed_phase`: for a granule a load wrote, the barrier
      interval it landed in, the machine-wide number of the mbarrier it completed on and the
      phase (count of completed phases before it) its bytes belong to; `landing_epoch` is the
      interval of the latest landing (checks skip the shadow when it is not the current one);
    * `seen` (CTAs, threads, mbarriers): how many phases of each mbarrier a thread has seen
      complete by waiting on it; `barrier_names` names the machine-wide mbarriers."""

    pending: np.ndarray
    landed_epoch: np.ndarray
    landed_barrier: np.ndarray
    landed_phase: np.ndarray
    seen: np.ndarray
    barrier_names: list[str] = field(default_factory=list)
    in_flight: int = 0
    landing_epoch: int = -1


@dataclass
class PendingCopy:
    """A `cp.async` issued but not yet landed: the shared-memory elements it will write."""

    memref: MemRef
    ctas: np.ndarray
    positions: np.ndarray  # (N, elements)
    values: np.ndarray
    warps: np.ndarray
    op: int


class Machine:
    """The state of one batch of CTAs: values, masks, shared memory and its shadow.

    `slots` is the number of SSA value slots of the program, `op_names` its ops' locations
    (for diagnostics that name a second op); `writers` maps each output buffer to the thread
    that wrote each of its elements."""

    def __init__(
        self,
        slots: int,
        op_names: list[str],
        block: tuple[int, int, int],
        grid: tuple[int, int, int],
        cta_ids: np.ndarray,
        smem_bytes: int,
        stats: Stats,
        writers: dict[int, np.ndarray],
    ) -> None:
        threads = block[0] * block[1] * block[2]
        self.C, self.T = len(cta_ids), threads
        self.op_names = op_names
        self.env: list[Any] = [None] * slots
        self.mask = np.ones((self.C, self.T), bool)
        t = np.arange(threads)
        self.thread_ids = (
            (t % block[0])[None, :],
            (t // block[0] % block[1])[None, :],
            (t // (block[0] * block[1]))[None, :],
        )
        self.block_ids = (
            (cta_ids % grid[0])[:, None],
            (cta_ids // grid[0] % grid[1])[:, None],
            (cta_ids // (grid[0] * grid[1]))[:, None],
        )
        self.block_dims, self.grid_dims = block, grid
        self.lane = (t % WARP)[None, :]
        self.warp = np.broadcast_to((t // WARP)[None, :], (self.C, self.T))
        self.cta = np.arange(self.C)[:, None]
        self.global_thread = cta_ids[:, None] * threads + t[None, :]
        self.measure_cta0 = bool(cta_ids[0] == 0)
        size = -(-smem_bytes // 16) * 16
        self.smem_bytes = smem_bytes
        self.smem = np.full((self.C, size), 0xFF, np.uint8)
        shadow = (self.C, size // GRANULE)
        # race-check shadow: per granule, the epoch, warp and op of the last write and of the
        # last read (warp -2: read by several warps since the last CTA barrier)
        self.w_epoch, self.w_warp, self.w_op = (np.full(shadow, -1, np.int32) for _ in range(3))
        self.r_epoch, self.r_warp, self.r_op = (np.full(shadow, -1, np.int32) for _ in range(3))
        self.epoch = 0
        self.base = 0
        self.warps = threads // WARP
        self.floor = np.zeros((self.C, self.warps, self.warps + threads // WARPGROUP), np.int32)
        self.readers: np.ndarray | None = None  # (CTAs, granules, warps + warpgroups), once tasks split
        self.task: Any = None
        self.open_copies: list[PendingCopy] = []
        self.groups: deque[list[PendingCopy]] = deque()
        self.tma: TmaShadow | None = None
        self.stats = stats
        self.writers = writers

    # -- helpers used by the rules --

    def full(self, value: Any, rank: int) -> np.ndarray:
        """`value` broadcast to every lane: (CTAs, threads) + its trailing `rank` dims."""
        v = np.asarray(value)
        return np.broadcast_to(v, (self.C, self.T) + (v.shape[v.ndim - rank :] if rank else ()))

    def uniform(self, value: Any, where: str, what: str) -> int:
        v = np.asarray(value)
        active = v if v.ndim == 0 else np.broadcast_to(v, (self.C, self.T))[self.mask]
        if active.size == 0:
            return 0
        first = active.flat[0]
        if np.any(active != first):
            raise EmulationError(f"{what} differs between threads; the emulator needs it uniform", where)
        return int(first)

    def count(self, name: str, mask: np.ndarray | None = None, times: int = 1) -> None:
        """Count `times` warp-level instructions of kind `name` for every warp with an active lane."""
        m = self.mask if mask is None else mask
        self.stats.warp_instructions[name] += times * int(m.reshape(self.C, -1, WARP).any(axis=2).sum())

    def whole_warps(self, where: str) -> None:
        per_warp = self.mask.reshape(self.C, -1, WARP)
        if np.any(per_warp.any(axis=2) != per_warp.all(axis=2)):
            raise EmulationError("executed by only some lanes of a warp (it needs the whole warp)", where)

    def describe_lane(self, c: int, t: int) -> str:
        b = tuple(int(x[min(c, x.shape[0] - 1), 0]) for x in self.block_ids)
        return f"CTA {b} thread {t}"

    def run(self, steps: Steps) -> None:
        if steps.ops:
            self.count("IR ops", None, steps.ops)
        for step in steps:
            step(self)

    def run_masked(self, steps: Steps, mask: np.ndarray) -> None:
        saved = self.mask
        self.mask = mask
        try:
            self.run(steps)
        finally:
            self.mask = saved
