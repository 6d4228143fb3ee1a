"""A CPU emulator for napkin's GPU kernels: every thread of a grid, in lockstep, on numpy.

Without a GPU the tensor-core kernel can still be *run*. `emulate` executes the kernel's
gpu-stage IR (what `napkin compile --emit gpu` writes, before the upstream NVVM tail) op by
op. Every SSA value is a numpy array with one entry per thread (`(CTAs, threads) + vector
shape`), so a batch of CTAs advances together; control flow that differs between threads
runs under a mask, as a GPU's active mask would.

What the PTX ISA says is modelled, not what the emitter intended:

* `mma.sync` m16n8k16 (`nvvm.mma.sync` with packed i32 registers and `nvgpu.mma.sync` with
  vectors): each warp's 32 lanes' fragments are gathered into 16x16 A, 16x8 B and C tiles,
  multiplied in float32 and scattered back by the ISA's fragment layout;
* `ldmatrix` x1/x2/x4 (and `.trans`): lanes 8i..8i+7 give the rows of matrix i; every lane
  receives its two elements per matrix; row addresses must be 16-byte aligned;
* `cp.async` (`nvgpu.device_async_copy`): the source is read when the copy is issued, the
  zero fill past `srcElements` applied, but shared memory is written only when a
  `device_async_wait` retires the copy's group (groups retire oldest first, leaving at most
  `numGroups` in flight). A kernel that reads a buffer before waiting for it reads poison;
* `gpu.shuffle` (xor, up, down, idx) within a warp; `gpu.barrier`.

Shared memory starts as 0xFF bytes (NaN in every float type) and outputs are poisoned by the
caller, so anything read before it is written shows in the result. While running, the
emulator checks what compute-sanitizer would, and stops with an `error:` naming the op's
line in the kernel IR:

* memcheck: every global and shared access in bounds, vector accesses and `ldmatrix` rows
  aligned, views inside the dynamic shared memory the launch provides;
* racecheck: shared memory written by one warp and read or written by another with no
  `gpu.barrier` between (a `cp.async` counts as a write both when issued and when retired);
* a barrier some threads of a CTA reach and others do not; `mma.sync`, `ldmatrix` or a
  shuffle executed by part of a warp;
* an output element written by two threads.

It also counts, per CTA, warp-level instructions by kind, global bytes moved and shared
memory wavefronts against the conflict-free ideal (bank conflicts), for CTA 0 of the grid.

Speed: the interpreter costs a few microseconds per op for a whole batch of CTAs, so
problems of a few thousand query rows take seconds. It is a correctness tool; timings come
from the GPU runner.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.context import format_location, parse_module

#: Lanes (CTAs x threads) emulated at once; a grid runs in batches of whole CTAs.
LANES_PER_BATCH = 8192
WARP = 32
BANKS = 32
#: Bytes of shared memory per race-check shadow entry (the smallest access the kernels make).
GRANULE = 2


class EmulationError(NapkinError):
    """The kernel did something a GPU would reject or that makes its result undefined."""


Step = Callable[["Machine"], None]


# --- values ------------------------------------------------------------------------------------


def numpy_dtype(t: ir.Type) -> np.dtype:
    """The numpy dtype of an MLIR scalar type (index is int64, i1 is bool)."""
    import ml_dtypes

    if isinstance(t, ir.IndexType):
        return np.dtype(np.int64)
    if isinstance(t, ir.IntegerType):
        return np.dtype({1: np.bool_, 8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64}[t.width])
    if isinstance(t, ir.BF16Type):
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype({"f16": np.float16, "f32": np.float32, "f64": np.float64}[str(t)])


def element_type(t: ir.Type) -> ir.Type:
    return ir.ShapedType(t).element_type if isinstance(t, (ir.VectorType, ir.MemRefType)) else t


def vector_shape(t: ir.Type) -> tuple[int, ...]:
    return tuple(ir.VectorType(t).shape) if isinstance(t, ir.VectorType) else ()


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


# --- compiling IR into steps -----------------------------------------------------------------


class Steps(list):
    """A block's compiled ops, and how many of them are instructions (not control flow)."""

    ops: int = 0


#: Ops that only structure the program: not counted as instructions.
STRUCTURAL = {"scf.for", "scf.if", "gpu.launch", "memref.view", "memref.subview", "gpu.dynamic_shared_memory"}


class Compiler:
    """Turns a region's ops into a list of closures over value slots (one rule per op)."""

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines = text.splitlines()
        self.slots: dict[ir.Value, int] = {}
        self.op_names: list[str] = []  # op id -> "file:line (name)", for diagnostics

    def slot(self, value: ir.Value) -> int:
        if value not in self.slots:
            self.slots[value] = len(self.slots)
        return self.slots[value]

    def where(self, op: ir.Operation) -> str:
        return f"{format_location(op.location, self.filename)} ({op.name})"

    def result_name(self, op: ir.Operation) -> str:
        """The name the source text gives the op's first result (for messages)."""
        line = re.search(r":(\d+):\d+", str(op.location))
        found = re.match(r"\s*(%[\w.$-]+)", self.lines[int(line.group(1)) - 1]) if line else None
        return found.group(1) if found else op.results[0].get_name()

    def op_id(self, op: ir.Operation) -> int:
        self.op_names.append(self.where(op))
        return len(self.op_names) - 1

    def block(self, block: ir.Block) -> Steps:
        steps = Steps()
        for view in block.operations:
            op = view.operation
            if op.name in TERMINATORS:
                continue
            rule = RULES.get(op.name)
            if rule is None:
                raise EmulationError(f"the emulator has no rule for '{op.name}'", self.where(op))
            steps.append(rule(op, self))
            steps.ops += op.name not in STRUCTURAL
        return steps

    def terminator(self, block: ir.Block) -> list[int]:
        last = list(block.operations)[-1].operation
        return [self.slot(v) for v in last.operands]


def _enclosing_func(op: ir.Operation) -> ir.Operation | None:
    parent = op.parent
    while parent is not None and parent.name != "func.func":
        parent = parent.parent
    return parent


@dataclass
class Kernel:
    """A gpu.func compiled to steps, with its argument slots and types."""

    name: str
    args: list[tuple[int, ir.MemRefType]]
    body: Steps
    op_names: list[str]
    slots: int


def load_kernel(text: str, filename: str = "kernel.mlir", entry: str | None = None) -> Kernel:
    """Parse gpu-stage IR (a gpu.module holding a kernel gpu.func) and compile its body.
    Needs an active MLIR context."""
    module = parse_module(text, filename)
    funcs: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "gpu.func" and "gpu.kernel" in op.attributes:
            funcs.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    if not funcs:  # the SIMT rule's gpu stage: a host function holding the gpu.launch
        launches: list[ir.Operation] = []
        module.operation.walk(
            lambda o: (launches.append(o) if o.name == "gpu.launch" else None) or ir.WalkResult.ADVANCE
        )
        funcs = list({id(h): h for h in (_enclosing_func(o) for o in launches) if h is not None}.values())
    names = [ir.StringAttr(f.attributes["sym_name"]).value for f in funcs]
    if entry is not None:
        funcs = [f for f, n in zip(funcs, names, strict=True) if n == entry]
    if len(funcs) != 1:
        wanted = f"kernel '{entry}'" if entry else "exactly one kernel (a gpu.func, or a func.func with a gpu.launch)"
        raise EmulationError(f"expected {wanted} in the IR, found {names or 'none'}", filename)
    func = funcs[0]
    c = Compiler(filename, text)
    block = func.regions[0].blocks[0]
    args = []
    for a in block.arguments:
        if not isinstance(a.type, ir.MemRefType):
            raise EmulationError(f"kernel argument of type {a.type}: the emulator takes memref arguments", filename)
        args.append((c.slot(a), ir.MemRefType(a.type)))
    body = c.block(block)
    return Kernel(ir.StringAttr(func.attributes["sym_name"]).value, args, body, c.op_names, len(c.slots))


# --- the machine -------------------------------------------------------------------------------


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


@dataclass
class PendingCopy:
    memref: MemRef
    ctas: np.ndarray
    positions: np.ndarray  # (N, elements)
    values: np.ndarray
    warps: np.ndarray
    op: int


class Machine:
    """The state of one batch of CTAs: values, masks, shared memory and its shadow."""

    def __init__(
        self,
        kernel: Kernel,
        block: tuple[int, int, int],
        grid: tuple[int, int, int],
        cta_ids: np.ndarray,
        smem_bytes: int,
        stats: Stats,
        writers: dict[int, np.ndarray],
    ) -> None:
        threads = block[0] * block[1] * block[2]
        self.C, self.T = len(cta_ids), threads
        self.kernel = kernel
        self.env: list[Any] = [None] * kernel.slots
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
        # race-check shadow: per granule, the barrier interval (epoch), warp and op of the last
        # write and of the last read (warp -2: read by several warps)
        self.w_epoch, self.w_warp, self.w_op = (np.full(shadow, -1, np.int32) for _ in range(3))
        self.r_epoch, self.r_warp, self.r_op = (np.full(shadow, -1, np.int32) for _ in range(3))
        self.epoch = 0
        self.open_copies: list[PendingCopy] = []
        self.groups: deque[list[PendingCopy]] = deque()
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


# --- memory access ---------------------------------------------------------------------------


def _address(m: Machine, ref: MemRef, indices: list[Any], width: int, where: str, mask: np.ndarray) -> np.ndarray:
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
            c, t = _first(bad)
            idx = [int(m.full(j, 0)[c, t]) for j in indices]
            shape = [int(m.full(n, 0)[c, t]) for n in ref.shape]
            raise EmulationError(
                f"out of bounds: {ref.name}{idx} (+{width} elements) of shape {shape}, "
                f"{ref.space} memory, by {m.describe_lane(c, t)}",
                where,
            )
        lin = lin + i * stride
    return lin


def _first(flags: np.ndarray) -> tuple[int, ...]:
    """The index of the first set entry of `flags` (the lane a diagnostic names)."""
    return tuple(int(a[0]) for a in np.nonzero(flags))


def _check_alignment(m: Machine, ref: MemRef, lin: np.ndarray, align: int, mask: np.ndarray, where: str) -> None:
    byte = lin * ref.itemsize
    bad = mask & (byte % align != 0)
    if bad.any():
        c, t = _first(bad)
        raise EmulationError(
            f"misaligned access: {ref.space} {ref.name} byte offset {int(byte[c, t])} is not a multiple of {align}, "
            f"by {m.describe_lane(c, t)}",
            where,
        )


def _positions(lin: np.ndarray, width: int) -> np.ndarray:
    return lin[..., None] + np.arange(width) if width > 1 else lin


def _gather(m: Machine, ref: MemRef, lin: np.ndarray, width: int) -> np.ndarray:
    pos = np.clip(_positions(lin, width), 0, ref.data.shape[-1] - 1)
    if ref.space == "global":
        return ref.data[pos]
    return ref.data[m.cta.reshape((m.C,) + (1,) * (pos.ndim - 1)), pos]


def _scatter(m: Machine, ref: MemRef, lin: np.ndarray, width: int, values: np.ndarray, mask: np.ndarray) -> None:
    ci, ti = np.nonzero(mask)
    pos = _positions(lin[ci, ti], width)
    vals = values[ci, ti]
    if ref.space == "global":
        ref.data[pos] = vals
    else:
        ref.data[ci[:, None] if width > 1 else ci, pos] = vals


def _byte_positions(ref: MemRef, lin: np.ndarray, width: int) -> np.ndarray:
    """The shadow granules (GRANULE bytes each) an access of `width` elements covers."""
    if ref.itemsize < GRANULE:
        raise EmulationError(f"{ref.itemsize}-byte shared-memory accesses are below the race check's granule")
    start = lin * ref.itemsize // GRANULE
    return start[..., None] + np.arange(width * ref.itemsize // GRANULE)


def _race_check_write(m: Machine, ref: MemRef, lin: np.ndarray, width: int, mask: np.ndarray, op: int) -> None:
    ci, ti = np.nonzero(mask)
    if ci.size == 0:
        return
    cb = ci[:, None]
    pos = _byte_positions(ref, lin[ci, ti], width)
    w = m.warp[ci, ti][:, None]
    clash_w = (m.w_epoch[cb, pos] == m.epoch) & (m.w_warp[cb, pos] != w)
    clash_r = (m.r_epoch[cb, pos] == m.epoch) & (m.r_warp[cb, pos] != w)
    if clash_w.any() or clash_r.any():
        writes = bool(clash_w.any())
        n, k = _first(clash_w if writes else clash_r)
        ops, warps = (m.w_op, m.w_warp) if writes else (m.r_op, m.r_warp)
        c, b = ci[n], pos[n, k]
        _race(m, ref, c, int(w[n, 0]), b, op, int(ops[c, b]), int(warps[c, b]), "wrote" if writes else "read")
    m.w_epoch[cb, pos] = m.epoch
    m.w_warp[cb, pos] = w
    m.w_op[cb, pos] = op
    clash = m.w_warp[cb, pos] != w
    if clash.any():
        n, k = _first(clash)
        _race(m, ref, ci[n], int(w[n, 0]), pos[n, k], op, op, int(m.w_warp[ci[n], pos[n, k]]), "wrote")


def _race_check_read(m: Machine, ref: MemRef, lin: np.ndarray, width: int, mask: np.ndarray, op: int) -> None:
    ci, ti = np.nonzero(mask)
    if ci.size == 0:
        return
    cb = ci[:, None]
    pos = _byte_positions(ref, lin[ci, ti], width)
    w = np.broadcast_to(m.warp[ci, ti][:, None], pos.shape)
    clash = (m.w_epoch[cb, pos] == m.epoch) & (m.w_warp[cb, pos] != w)
    if clash.any():
        n, k = _first(clash)
        c, b = ci[n], pos[n, k]
        _race(m, ref, c, int(w[n, 0]), b, op, int(m.w_op[c, b]), int(m.w_warp[c, b]), "wrote")
    many = (m.r_epoch[cb, pos] == m.epoch) & (m.r_warp[cb, pos] != w)
    m.r_epoch[cb, pos] = m.epoch
    m.r_warp[cb, pos] = np.where(many, -2, w)
    m.r_op[cb, pos] = op
    several = m.r_warp[cb, pos] != w
    m.r_warp[cb[several.any(axis=1)], pos[several.any(axis=1)]] = -2


def _race(
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
    names = m.kernel.op_names
    who = "several other warps" if other_warp == -2 else f"warp {other_warp}"
    raise EmulationError(
        f"shared-memory race in {m.describe_lane(cta, warp * WARP).split(' thread')[0]}: warp {warp} accesses "
        f"shared-memory byte {int(byte) * GRANULE} ({ref.name}){note}, which {who} {kind} at {names[other_op]} with no gpu.barrier in between",
        names[op],
    )


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of `values` sorted, and where its distinct non-negative entries first appear
    (negative entries stand for inactive lanes)."""
    ordered = np.sort(values, axis=1)
    first = np.ones(ordered.shape, bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return ordered, first & (ordered >= 0)


def _wavefronts(m: Machine, ref: MemRef, lin: np.ndarray, width: int, mask: np.ndarray, kind: str) -> None:
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
    ordered, distinct = _distinct(np.where(active, words.reshape(active.shape), -1))  # (warps * phases, .)
    per_bank = np.zeros((len(ordered), BANKS), np.int64)
    rows = np.broadcast_to(np.arange(len(ordered))[:, None], ordered.shape)
    np.add.at(per_bank, (rows[distinct], ordered[distinct] % BANKS), 1)
    m.stats.smem_wavefronts[kind] += int(per_bank.max(axis=1).sum())
    m.stats.smem_ideal_wavefronts[kind] += int(active.any(axis=1).sum())


def _sectors(m: Machine, ref: MemRef, lin: np.ndarray, nbytes: Any, mask: np.ndarray, kind: str) -> None:
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
    _, distinct = _distinct(touched.reshape(-1, WARP * touched.shape[1]))
    m.stats.global_sectors[kind] += int(distinct.sum())
    requested = np.where(active, size, 0).reshape(-1, WARP).sum(axis=1)
    m.stats.global_ideal_sectors[kind] += int((-(-requested // 32)).sum())


# --- rules ----------------------------------------------------------------------------------------

TERMINATORS = {"scf.yield", "gpu.return", "gpu.terminator", "func.return"}
Rule = Callable[[ir.Operation, Compiler], Step]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return register


def _elementwise(fn: Callable[..., Any]) -> Rule:
    def make(op: ir.Operation, c: Compiler) -> Step:
        ins = [c.slot(v) for v in op.operands]
        out = c.slot(op.results[0])
        dtype = numpy_dtype(element_type(op.results[0].type))

        def step(m: Machine) -> None:
            env = m.env
            env[out] = np.asarray(fn(*[env[i] for i in ins])).astype(dtype, copy=False)

        return step

    return make


def _floor_div(a: Any, b: Any) -> Any:
    with np.errstate(divide="ignore"):
        return np.floor_divide(a, np.where(b == 0, 1, b))


def _rem(a: Any, b: Any) -> Any:
    with np.errstate(divide="ignore"):
        return np.remainder(a, np.where(b == 0, 1, b))


def _ceil_div(a: Any, b: Any) -> Any:
    return -_floor_div(-np.asarray(a), b)


ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "arith.addi": np.add,
    "arith.subi": np.subtract,
    "arith.muli": np.multiply,
    "arith.divui": _floor_div,
    "arith.divsi": _floor_div,
    "arith.floordivsi": _floor_div,
    "arith.ceildivui": _ceil_div,
    "arith.ceildivsi": _ceil_div,
    "arith.remui": _rem,
    "arith.remsi": _rem,
    "arith.minui": np.minimum,
    "arith.minsi": np.minimum,
    "arith.maxui": np.maximum,
    "arith.maxsi": np.maximum,
    "arith.andi": np.bitwise_and,
    "arith.ori": np.bitwise_or,
    "arith.xori": np.bitwise_xor,
    "arith.addf": np.add,
    "arith.subf": np.subtract,
    "arith.mulf": np.multiply,
    "arith.divf": np.divide,
    "arith.maximumf": np.maximum,
    "arith.minimumf": np.minimum,
    "arith.maxnumf": np.fmax,
    "arith.minnumf": np.fmin,
    "arith.negf": np.negative,
    "math.exp": np.exp,
    "math.exp2": np.exp2,
    "math.fma": lambda a, b, c: np.asarray(a, np.float64) * b + c,  # one rounding (to the result type)
    "math.log": np.log,
    "math.tanh": np.tanh,
    "math.sqrt": np.sqrt,
    "math.rsqrt": lambda a: 1 / np.sqrt(a),
    "math.absf": np.abs,
    "arith.truncf": lambda a: a,
    "arith.extf": lambda a: a,
    "arith.index_cast": lambda a: a,
    "arith.index_castui": lambda a: a,
    "arith.extui": lambda a: a,
    "arith.trunci": lambda a: a,
    "arith.sitofp": lambda a: a,
    "arith.uitofp": lambda a: a,
}
for _name, _fn in ELEMENTWISE.items():
    RULES[_name] = _elementwise(_fn)


@rule("arith.constant")
def _constant(op: ir.Operation, c: Compiler) -> Step:
    t = op.results[0].type
    attr = op.attributes["value"]
    dtype = numpy_dtype(element_type(t))
    if isinstance(t, ir.VectorType):
        dense = ir.DenseElementsAttr(attr)
        if not dense.is_splat:
            raise EmulationError("non-splat vector constants are not supported", c.where(op))
        splat = dense.get_splat_value()
        scalar = ir.FloatAttr(splat).value if isinstance(splat, ir.FloatAttr) else ir.IntegerAttr(splat).value
        value = np.full((1, 1, *vector_shape(t)), scalar, dtype)
    elif isinstance(attr, ir.FloatAttr):
        value = np.asarray(ir.FloatAttr(attr).value, dtype)
    elif isinstance(attr, ir.BoolAttr):
        value = np.asarray(ir.BoolAttr(attr).value, dtype)
    else:
        value = np.asarray(ir.IntegerAttr(attr).value, dtype)
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        m.env[out] = value

    return step


CMPI = {0: np.equal, 1: np.not_equal, 2: np.less, 3: np.less_equal, 4: np.greater, 5: np.greater_equal}
CMPI.update({6: np.less, 7: np.less_equal, 8: np.greater, 9: np.greater_equal})
CMPF = {1: np.equal, 2: np.greater, 3: np.greater_equal, 4: np.less, 5: np.less_equal, 6: np.not_equal}
CMPF.update({8: np.equal, 9: np.greater, 10: np.greater_equal, 11: np.less, 12: np.less_equal, 13: np.not_equal})


@rule("arith.cmpi", "arith.cmpf")
def _compare(op: ir.Operation, c: Compiler) -> Step:
    pred = ir.IntegerAttr(op.attributes["predicate"]).value
    table = CMPI if op.name == "arith.cmpi" else CMPF
    if pred not in table:
        raise EmulationError(f"comparison predicate {pred} is not supported", c.where(op))
    return _elementwise(table[pred])(op, c)


@rule("arith.select")
def _select(op: ir.Operation, c: Compiler) -> Step:
    cond, t, f = (c.slot(v) for v in op.operands)
    rank = len(vector_shape(op.results[0].type))
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        k = np.asarray(m.env[cond])
        m.env[out] = np.where(k.reshape(k.shape + (1,) * rank), m.env[t], m.env[f])

    return step


@rule("vector.extract")
def _extract(op: ir.Operation, c: Compiler) -> Step:
    pos = list(ir.DenseI64ArrayAttr(op.attributes["static_position"]))
    if any(p < 0 for p in pos) or len(list(op.operands)) > 1:
        raise EmulationError("dynamic vector.extract positions are not supported", c.where(op))
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    index = (Ellipsis, *pos) + (slice(None),) * len(vector_shape(op.results[0].type))

    def step(m: Machine) -> None:
        m.env[out] = m.env[src][index]

    return step


@rule("vector.extract_strided_slice")
def _extract_strided_slice(op: ir.Operation, c: Compiler) -> Step:
    offsets, sizes, strides = (
        [ir.IntegerAttr(a).value for a in ir.ArrayAttr(op.attributes[k])] for k in ("offsets", "sizes", "strides")
    )
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    rank = len(vector_shape(op.operands[0].type))
    index = (Ellipsis, *(slice(o, o + n * k, k) for o, n, k in zip(offsets, sizes, strides, strict=True)))
    index += (slice(None),) * (rank - len(offsets))

    def step(m: Machine) -> None:
        m.env[out] = m.env[src][index]

    return step


@rule("vector.from_elements")
def _from_elements(op: ir.Operation, c: Compiler) -> Step:
    ins = [c.slot(v) for v in op.operands]
    shape = vector_shape(op.results[0].type)
    dtype = numpy_dtype(element_type(op.results[0].type))
    out = c.slot(op.results[0])

    def step(m: Machine) -> None:
        parts = np.broadcast_arrays(*[np.asarray(m.env[i]) for i in ins])
        stacked = np.stack(parts, axis=-1).astype(dtype, copy=False)
        m.env[out] = stacked.reshape(stacked.shape[:-1] + shape)

    return step


@rule("vector.broadcast", "vector.splat")
def _broadcast(op: ir.Operation, c: Compiler) -> Step:
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    shape = vector_shape(op.results[0].type)

    def step(m: Machine) -> None:
        v = np.asarray(m.env[src])
        lead = v.shape if v.ndim <= 2 else v.shape[:2]
        m.env[out] = np.broadcast_to(v.reshape(lead + (1,) * len(shape)), lead + shape)

    return step


@rule("vector.bitcast")
def _bitcast(op: ir.Operation, c: Compiler) -> Step:
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])
    src_rank = len(vector_shape(op.operands[0].type))
    shape = vector_shape(op.results[0].type)
    dtype = numpy_dtype(element_type(op.results[0].type))

    def step(m: Machine) -> None:
        v = np.ascontiguousarray(m.env[src])
        lead = v.shape[: v.ndim - src_rank]
        m.env[out] = v.view(dtype).reshape(lead + shape)

    return step


@rule("llvm.extractvalue")
def _extractvalue(op: ir.Operation, c: Compiler) -> Step:
    (pos,) = list(ir.DenseI64ArrayAttr(op.attributes["position"]))
    src, out = c.slot(op.operands[0]), c.slot(op.results[0])

    def step(m: Machine) -> None:
        m.env[out] = m.env[src][pos]

    return step


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


# -- structured control flow --


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
    else_steps = c.block(op.regions[1].blocks[0]) if has_else else []
    else_yields = c.terminator(op.regions[1].blocks[0]) if has_else else []
    results = [c.slot(r) for r in op.results]
    ranks = [len(vector_shape(r.type)) for r in op.results]

    def step(m: Machine) -> None:
        k = np.broadcast_to(np.asarray(m.env[cond], bool), (m.C, m.T))
        taken, other = m.mask & k, m.mask & ~k
        run_then, run_else = bool(taken.any()), has_else and bool(other.any())
        if run_then:
            m.run_masked(then_steps, taken)
        if run_else:
            m.run_masked(else_steps, other)
        for r, rank, y_then, y_else in zip(results, ranks, then_yields, else_yields, strict=True):
            t_val = m.env[y_then] if run_then else m.env[y_else]
            e_val = m.env[y_else] if run_else else t_val
            m.env[r] = np.where(k.reshape(k.shape + (1,) * rank), t_val, e_val)

    return step


# -- affine maps --


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
        ir.AffineModExpr: _rem,
        ir.AffineFloorDivExpr: _floor_div,
        ir.AffineCeilDivExpr: _ceil_div,
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


# -- kernels launched from a host function (the SIMT rule's gpu stage) --


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


# -- memory --


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
            first, count = m.full(offsets[d], 0), m.full(sizes[d], 0)
            last = first + (count - 1) * steps[d]
            bad = m.mask & (count > 0) & ((first < 0) | (last >= m.full(ref.shape[d], 0)) | (last < 0))
            if bad.any():
                c_, t = _first(bad)
                raise EmulationError(
                    f"subview {name} of {ref.name} out of bounds in dimension {d}: offset {int(first[c_, t])}, "
                    f"size {int(count[c_, t])} of {int(m.full(ref.shape[d], 0)[c_, t])}, by {m.describe_lane(c_, t)}",
                    where,
                )
            offset = offset + np.asarray(offsets[d], np.int64) * ref.strides[d]
        strides = tuple(s * k for s, k in zip(ref.strides, steps, strict=True))
        m.env[out] = MemRef(ref.name, ref.space, ref.data, offset, tuple(sizes), strides)

    return step


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
    lin = _address(m, ref, indices, width, where, m.mask)
    if width > 1:
        _check_alignment(m, ref, lin, min(16, width * ref.itemsize), m.mask, where)
    kind = ("st." if store else "ld.") + ref.space
    if ref.space == "shared":
        (_race_check_write if store else _race_check_read)(m, ref, lin, width, m.mask, op_id)
        _wavefronts(m, ref, lin, width, m.mask, kind)
    else:
        if store:
            _claim_output(m, ref, lin, width, where)
        moved = int(m.mask.sum()) * width * ref.itemsize
        if store:
            m.stats.global_write_bytes += moved
        else:
            m.stats.global_read_bytes += moved
        _sectors(m, ref, lin, width * ref.itemsize, m.mask, kind)
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
        m.env[out] = _gather(m, ref, lin, width)

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
        _scatter(m, ref, lin, width, m.full(m.env[value], rank), m.mask)

    return step


def _claim_output(m: Machine, ref: MemRef, lin: np.ndarray, width: int, where: str) -> None:
    """Record which thread wrote each output element; a second writer is an error."""
    owners = m.writers.get(id(ref.data))
    if owners is None:
        return
    ci, ti = np.nonzero(m.mask)
    pos = _positions(lin[ci, ti], width).reshape(len(ci), -1)
    me = np.broadcast_to(m.global_thread[ci, ti][:, None], pos.shape)
    prev = owners[pos]
    clash = (prev >= 0) & (prev != me)
    owners[pos] = me
    clash |= owners[pos] != me
    if clash.any():
        n, k = _first(clash)
        raise EmulationError(
            f"output {ref.name} element {int(pos[n, k])} (flat) is written by two threads "
            f"(one of them {m.describe_lane(int(ci[n]), int(ti[n]))})",
            where,
        )


@rule("nvgpu.ldmatrix")
def _ldmatrix(op: ir.Operation, c: Compiler) -> Step:
    base, *idx = (c.slot(v) for v in op.operands)
    tiles = ir.IntegerAttr(op.attributes["numTiles"]).value
    transpose = ir.BoolAttr(op.attributes["transpose"]).value
    out = c.slot(op.results[0])
    where, op_id = c.where(op), c.op_id(op)

    def step(m: Machine) -> None:
        m.whole_warps(where)
        ref: MemRef = m.env[base]
        if ref.itemsize != 2 or ref.space != "shared":
            raise EmulationError("ldmatrix reads 16-bit elements from shared memory", where)
        giving = m.mask & (np.broadcast_to(m.lane, (m.C, m.T)) < 8 * tiles)  # lanes that give row addresses
        lin = _address(m, ref, [m.env[i] for i in idx], 8, where, giving)
        _check_alignment(m, ref, lin, 16, giving, where)
        _race_check_read(m, ref, lin, 8, giving, op_id)
        _wavefronts(m, ref, lin, 8, giving, "ldmatrix")
        m.count("ldmatrix")
        rows = _gather(m, ref, lin, 8).reshape(m.C, -1, 4, 8, 8)  # (C, W, matrix, row, col)
        if transpose:  # lane (g, t) gets M[2t + e, g]
            frag = rows.reshape(m.C, -1, 4, 4, 2, 8).transpose(0, 1, 5, 3, 2, 4)
        else:  # lane (g, t) gets M[g, 2t + e]
            frag = rows.reshape(m.C, -1, 4, 8, 4, 2).transpose(0, 1, 3, 4, 2, 5)
        m.env[out] = frag.reshape(m.C, m.T, 4, 2)[:, :, :tiles]

    return step


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
        reads = m.mask & (count > 0)
        slin = _address(m, sref, [m.env[i] for i in src_idx], n, where, reads)
        dlin = _address(m, dref, [m.env[i] for i in dst_idx], n, where, m.mask)
        _check_alignment(m, dref, dlin, n * dref.itemsize, m.mask, where)
        _check_alignment(m, sref, slin, n * sref.itemsize, reads, where)
        data = _gather(m, sref, slin, n)
        data = np.where(np.arange(n) < count[..., None], data, np.zeros((), data.dtype))
        _race_check_write(m, dref, dlin, n, m.mask, op_id)
        _wavefronts(m, dref, dlin, n, m.mask, "cp.async")
        m.count("cp.async")
        m.stats.global_read_bytes += int(count[m.mask].sum()) * sref.itemsize
        _sectors(m, sref, slin, count * sref.itemsize, m.mask, "cp.async")
        ci, ti = np.nonzero(m.mask)
        m.open_copies.append(PendingCopy(dref, ci, _positions(dlin[ci, ti], n), data[ci, ti], m.warp[ci, ti], op_id))
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
                _retire(m, copy)

    return step


def _retire(m: Machine, copy: PendingCopy) -> None:
    """A cp.async lands: shared memory is written now (and counts as a write now)."""
    ref = copy.memref
    cb = copy.ctas[:, None]
    pos = _byte_positions(ref, copy.positions[:, 0], copy.positions.shape[1])
    w = copy.warps[:, None]
    clash = (m.r_epoch[cb, pos] == m.epoch) & (m.r_warp[cb, pos] != w)
    if clash.any():
        n, k = _first(clash)
        c, b = copy.ctas[n], pos[n, k]
        note = " (a cp.async issued here, landing at a device_async_wait)"
        _race(m, ref, c, int(w[n, 0]), b, copy.op, int(m.r_op[c, b]), int(m.r_warp[c, b]), "read", note)
    m.w_epoch[cb, pos], m.w_warp[cb, pos], m.w_op[cb, pos] = m.epoch, w, copy.op
    ref.data[cb, copy.positions] = copy.values


@rule("nvvm.mma.sync", "nvgpu.mma.sync")
def _mma(op: ir.Operation, c: Compiler) -> Step:
    where = c.where(op)
    if op.name == "nvgpu.mma.sync":
        shape = list(ir.ArrayAttr(op.attributes["mmaShape"]))
        if [ir.IntegerAttr(s).value for s in shape] != [16, 8, 16]:
            raise EmulationError("only mma.sync m16n8k16 is supported", where)
        a_s, b_s, c_s = (c.slot(v) for v in op.operands)
        packed = None
    else:
        text = str(op.attributes["shape"])
        if "m = 16, n = 8, k = 16" not in text:
            raise EmulationError(f"only mma.sync m16n8k16 is supported, got {text}", where)
        if "row" not in str(op.attributes["layoutA"]) or "col" not in str(op.attributes["layoutB"]):
            raise EmulationError("only the row.col mma.sync layout is supported", where)
        packed = numpy_dtype(ir.Type.parse(str(op.attributes["multiplicandAPtxType"]).split("<")[1].rstrip(">")))
        operands = [c.slot(v) for v in op.operands]
        a_s, b_s, c_s = operands[:4], operands[4:6], operands[6:10]
    out = c.slot(op.results[0])

    def unpack(m: Machine, slots: list[int]) -> np.ndarray:
        regs = np.stack([np.ascontiguousarray(m.full(m.env[s], 0)).astype(np.int32) for s in slots], axis=-1)
        return regs[..., None].view(packed)  # (C, T, n, 2): the low half is element 0

    def step(m: Machine) -> None:
        m.whole_warps(where)
        m.count("mma.sync")
        if packed is None:
            a, b, acc = m.full(m.env[a_s], 2), m.full(m.env[b_s], 2), m.full(m.env[c_s], 2)
        else:
            a, b = unpack(m, a_s), unpack(m, b_s)
            acc = np.stack([m.full(m.env[s], 0) for s in c_s], axis=-1).reshape(m.C, m.T, 2, 2)
        d = mma_m16n8k16(a.astype(np.float32), b.astype(np.float32), acc.astype(np.float32))
        m.env[out] = d if packed is None else tuple(d.reshape(m.C, m.T, 4)[..., i] for i in range(4))

    return step


def mma_m16n8k16(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """D = A B + C for every warp, from and to the ISA's per-lane fragments.

    a: (C, T, 4, 2), lane (g, t) = (lane // 4, lane % 4) holds A[g + 8*(i%2), 8*(i//2) + 2t + e]
    in a[..., i, e]; b: (C, T, 2, 2) holds B[8j + 2t + e, g] in b[..., j, e]; acc and the result:
    (C, T, 2, 2) hold C[g + 8h, 2t + e] in [..., h, e]."""
    C, T = a.shape[:2]
    A = a.reshape(C, -1, 8, 4, 2, 2, 2).transpose(0, 1, 5, 2, 4, 3, 6).reshape(C, -1, 16, 16)
    B = b.reshape(C, -1, 8, 4, 2, 2).transpose(0, 1, 4, 3, 5, 2).reshape(C, -1, 16, 8)
    Cm = acc.reshape(C, -1, 8, 4, 2, 2).transpose(0, 1, 4, 2, 3, 5).reshape(C, -1, 16, 8)
    D = np.matmul(A, B) + Cm
    return D.reshape(C, -1, 2, 8, 4, 2).transpose(0, 1, 3, 4, 2, 5).reshape(C, T, 2, 2).astype(np.float32)


# --- running a grid ------------------------------------------------------------------------------


def run_kernel(
    kernel: Kernel,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    smem_bytes: int,
    arrays: Sequence[np.ndarray],
    outputs: Sequence[int] = (),
    names: Sequence[str] = (),
    lanes_per_batch: int = LANES_PER_BATCH,
    progress: Callable[[int, int], None] | None = None,
    cta_ids: Sequence[int] | None = None,
) -> Stats:
    """Run `kernel` over the grid with `arrays` bound to its memref arguments (in order;
    modified in place; only their element count must match the memref's, as for a device
    pointer; `names` name them in diagnostics). `outputs` are the argument positions whose
    elements may be written by one thread each (`Stats.written` says which were). `cta_ids`
    (linear, x fastest) runs only those CTAs of the grid. Returns per-CTA statistics."""
    if len(arrays) != len(kernel.args):
        raise EmulationError(f"the kernel takes {len(kernel.args)} arrays, got {len(arrays)}", kernel.name)
    threads = block[0] * block[1] * block[2]
    if threads % WARP:
        raise EmulationError(f"a block of {threads} threads is not a whole number of warps", kernel.name)
    bound = []
    writers: dict[int, np.ndarray] = {}
    for i, ((_, t), a) in enumerate(zip(kernel.args, arrays, strict=True)):
        shape = tuple(t.shape)
        if int(np.prod(shape)) != a.size or numpy_dtype(t.element_type) != a.dtype:
            raise EmulationError(
                f"argument #{i}: the kernel takes {t}, got an array {a.shape} of {a.dtype}", kernel.name
            )
        if not a.flags.c_contiguous:
            raise EmulationError(f"argument #{i} must be a contiguous array (a device buffer)", kernel.name)
        flat = a.reshape(-1)  # a view: the kernel writes into the caller's array
        bound.append(MemRef(names[i] if i < len(names) else f"arg{i}", "global", flat, 0, shape, row_major(shape)))
        if i in outputs:
            writers[id(flat)] = np.full(flat.size, -1, np.int64)
    stats = Stats()
    total = grid[0] * grid[1] * grid[2]
    chosen = np.arange(total) if cta_ids is None else np.unique(np.asarray(cta_ids, np.int64))
    if chosen.size == 0 or chosen[0] < 0 or chosen[-1] >= total:
        raise EmulationError(f"CTAs to run must lie in [0, {total})", kernel.name)
    ctas = len(chosen)
    per_batch = max(1, lanes_per_batch // threads)
    for first in range(0, ctas, per_batch):
        ids = chosen[first : first + per_batch]
        m = Machine(kernel, block, grid, ids, smem_bytes, stats, writers)
        for (slot, _), ref in zip(kernel.args, bound, strict=True):
            m.env[slot] = ref
        with np.errstate(over="ignore", invalid="ignore"):
            m.run(kernel.body)
        stats.unretired_copies += sum(len(g) for g in m.groups) + len(m.open_copies)
        if progress is not None:
            progress(min(first + per_batch, ctas), ctas)
    stats.ctas = ctas
    stats.written = {i: writers[id(bound[i].data)] >= 0 for i in outputs}
    return stats


# --- checking a kernel the way the GPU runner does ---------------------------------------------


@dataclass
class EmulationReport:
    """The outcome of emulating a kernel on fresh inputs and comparing it with JAX."""

    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    smem_bytes: int
    passed: bool
    errors: dict[str, float]
    criterion: str
    stats: Stats
    seconds: float

    def per_cta(self, value: int) -> float:
        return value / max(1, self.stats.ctas)

    def lines(self) -> list[str]:
        s = self.stats
        counts = ", ".join(f"{k} {self.per_cta(v):,.0f}" for k, v in s.warp_instructions.most_common())
        waves = s.bank_conflict_summary()
        conflicts = sum(v["wavefronts"] - v["ideal"] for v in waves.values())
        banks = ", ".join(f"{k} {v['wavefronts']:,} (ideal {v['ideal']:,})" for k, v in waves.items())
        coalescing = s.coalescing_summary()
        extra = sum(v["sectors"] - v["ideal"] for v in coalescing.values())
        sectors = ", ".join(f"{k} {v['sectors']:,} (ideal {v['ideal']:,})" for k, v in coalescing.items())
        verdict = "PASS" if self.passed else "FAIL"
        total = self.grid[0] * self.grid[1] * self.grid[2]
        share = f"{s.ctas} CTAs" if s.ctas == total else f"{s.ctas} of its {total:,} CTAs"
        return [
            f"kernel {self.entry}: grid {self.grid} x block {self.block}, {self.smem_bytes:,} B dynamic shared memory; "
            f"{share} emulated in {self.seconds:.1f} s",
            f"per CTA (warp instructions): {counts}",
            f"per CTA: global memory read {self.per_cta(s.global_read_bytes) / 1024:,.1f} KiB, "
            f"written {self.per_cta(s.global_write_bytes) / 1024:,.1f} KiB",
            f"shared-memory wavefronts, CTA 0: {banks}: "
            + ("no bank conflicts" if conflicts == 0 else f"{conflicts:,} extra wavefronts from bank conflicts"),
            f"global-memory sectors, CTA 0: {sectors}: "
            + ("fully coalesced" if extra == 0 else f"{extra:,} sectors more than fully coalesced accesses need"),
            "sanitizer: every access in bounds and aligned, no shared-memory race, each output element written once"
            + (f"; {s.unretired_copies} cp.async copies never waited for" if s.unretired_copies else ""),
            f"{verdict} max |error| {self.errors['max_abs']:.3g} (JAX in the same dtype: {self.errors['ref_max_abs']:.3g}), "
            f"relative Frobenius {self.errors['rel_fro']:.3g}; rule: {self.criterion}",
        ]

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "entry": self.entry,
            "grid": list(self.grid),
            "block": list(self.block),
            "dynamic_smem_bytes": self.smem_bytes,
            "passed": self.passed,
            "errors": self.errors,
            "criterion": self.criterion,
            "seconds": self.seconds,
            "ctas": s.ctas,
            "per_cta_warp_instructions": {k: self.per_cta(v) for k, v in s.warp_instructions.items()},
            "per_cta_global_read_bytes": self.per_cta(s.global_read_bytes),
            "per_cta_global_write_bytes": self.per_cta(s.global_write_bytes),
            "smem_wavefronts_cta0": s.bank_conflict_summary(),
            "global_sectors_cta0": s.coalescing_summary(),
            "unretired_copies": s.unretired_copies,
        }


def emulate(
    text: str,
    side: Any,
    seed: int = 0,
    filename: str = "kernel.mlir",
    progress: Callable[[int, int], None] | None = None,
    ctas: int | None = None,
) -> EmulationReport:
    """Run a kernel's gpu-stage IR with the launch its sidecar (a `gpu_runner.Sidecar`)
    describes, on fresh random inputs and NaN-poisoned outputs, and judge the result against
    JAX by the project's rule (`harness.judge`) for the problem the sidecar names.

    `ctas` runs only that many CTAs of the grid (the first, the last and evenly spaced ones
    between) and judges the output rows they write (attention): the kernel of a full-size
    problem checked in seconds."""
    import time

    from napkin_mlir.backends.gpu import runner as gpu_runner
    from napkin_mlir.check import harness, reference
    from napkin_mlir.ir.context import napkin_context

    problem = side.problem
    if not {"diagram", "dims", "dtype"} <= problem.keys():
        raise EmulationError(
            "the sidecar does not name its problem (diagram, dims, dtype): no reference to compare with"
        )
    config = harness.VerifyConfig(
        problem["diagram"],
        dict(problem["dims"]),
        problem["dtype"],
        causal=bool(problem.get("causal", False)),
        kv_heads=problem.get("kv_heads"),
        activation=problem.get("activation", "gelu"),
    )
    with napkin_context(), ir.Location.unknown():
        kernel = load_kernel(text, filename, side.entry)
    inputs = gpu_runner.make_inputs(side, seed)
    arrays = [inputs[a.name] for a in side.args]
    outputs = [i for i, a in enumerate(side.args) if a.role == "output"]
    total = side.grid[0] * side.grid[1] * side.grid[2]
    if ctas is not None and (ctas < 1 or config.diagram != "attention"):
        raise EmulationError("--ctas takes a positive count, and attention kernels only")
    chosen = None if ctas is None or ctas >= total else np.unique(np.linspace(0, total - 1, ctas).round())
    start = time.perf_counter()
    stats = run_kernel(
        kernel,
        side.grid,
        side.block,
        side.dynamic_smem_bytes,
        arrays,
        outputs=outputs,
        names=[a.name for a in side.args],
        progress=progress,
        cta_ids=chosen,
    )
    seconds = time.perf_counter() - start
    out = arrays[outputs[0]]
    if chosen is None:
        y, scope = out, ""
        ref64, same = harness.references(config, [arrays[i] for i, a in enumerate(side.args) if a.role == "input"])
    else:
        y, ref64, same = _written_rows(inputs, out, stats.written[outputs[0]].reshape(out.shape), config.causal)
        scope = f", on the {len(y)} rows the emulated CTAs wrote"
    with np.errstate(invalid="ignore"):
        c = reference.compare(y, ref64, same)
    passed, criterion = harness.judge(config, c)
    criterion += scope
    finite = bool(np.all(np.isfinite(y.astype(np.float32))))
    errors = {"max_abs": c.max_abs, "rel_fro": c.rel_fro, "ref_max_abs": c.jax_max_abs, "ref_rel_fro": c.jax_rel_fro}
    if not finite:
        errors.update(max_abs=float("inf"), rel_fro=float("inf"))
    return EmulationReport(
        kernel.name,
        side.grid,
        side.block,
        side.dynamic_smem_bytes,
        passed and finite,
        errors,
        criterion,
        stats,
        seconds,
    )


def _written_rows(
    inputs: dict[str, np.ndarray], out: np.ndarray, written: np.ndarray, causal: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The attention rows some CTAs wrote, with float64 and same-dtype JAX references computed
    for those rows only (the whole problem may be far too large to reference)."""
    import jax
    import jax.numpy as jnp

    rows = written.any(axis=-1)  # (b, h, [r,] q)
    if not rows.any() or not np.array_equal(written, np.broadcast_to(rows[..., None], written.shape)):
        raise EmulationError("the emulated CTAs wrote no output rows, or rows only in part")
    q, k, v = (inputs[n] for n in ("Q", "K", "V"))
    got, ref64, same = [], [], []
    for head in zip(*np.nonzero(rows.any(axis=-1)), strict=True):  # (b, h[, r]) with written rows
        idx = np.nonzero(rows[head])[0]
        qs, ks, vs = q[head][idx], k[head[0], head[1]], v[head[0], head[1]]
        s = qs.astype(np.float64) @ ks.astype(np.float64).T / np.sqrt(q.shape[-1])
        keep = np.arange(ks.shape[0])[None, :] <= idx[:, None] if causal else np.ones(s.shape, bool)
        s = np.where(keep, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        ref64.append((p / p.sum(axis=1, keepdims=True)) @ vs.astype(np.float64))
        one = (jnp.asarray(t)[None, :, None, :] for t in (qs, ks, vs))
        jax_rows = jax.nn.dot_product_attention(*one, mask=jnp.asarray(keep)[None, None], implementation="xla")
        same.append(np.asarray(jax_rows)[0, :, 0])
        got.append(out[head][idx])
    return np.concatenate(got), np.concatenate(ref64), np.concatenate(same)


def emulate_kernel(
    kernel: Any,
    text: str,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    ctas: int | None = None,
) -> EmulationReport:
    """`emulate` the gpu-stage `text` of a `gpu.GpuKernel` (as `napkin compile` builds them)."""
    from pathlib import Path

    from napkin_mlir.backends.gpu import runner as gpu_runner

    filename = f"{kernel.entry}.mlir"
    side = gpu_runner.parse_sidecar(kernel.sidecar(filename), Path(filename))
    return emulate(text, side, seed, filename, progress, ctas)


def emulate_sidecar(
    path: str | Any, seed: int = 0, progress: Callable[[int, int], None] | None = None, ctas: int | None = None
) -> EmulationReport:
    """`emulate` the gpu-stage IR a sidecar names (as `napkin compile --emit gpu` writes them)."""
    from pathlib import Path

    from napkin_mlir.backends.gpu import runner as gpu_runner

    try:
        side = gpu_runner.load_sidecar(Path(path))
    except gpu_runner.RunnerError as err:
        raise EmulationError(str(err)) from None
    if side.binary.suffix != ".mlir":
        raise EmulationError(
            f"{path} describes {side.binary.name}; the emulator runs gpu-stage IR (napkin compile --emit gpu -o FILE.mlir)"
        )
    try:
        text = side.binary.read_text()
    except OSError as err:
        raise EmulationError(f"cannot read the kernel IR: {err}") from None
    return emulate(text, side, seed, side.binary.name, progress, ctas)
