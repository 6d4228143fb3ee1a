"""The performance model of a partitioned napkin program (design.md section 1.3).

`analyze(module, gpu, dtype=None)` reads the *partitioned* IR (levels, `napkin.transfer`,
`napkin.group`, `napkin.stream`) through `ArrayType.from_mlir` and op attributes, never
through printed text, so it works for any diagram:

* **H** (transfer volume) per level boundary, per step and in total, in elements and bytes.
  A transfer inside partitions executes once per group and stream step; its total is exact
  for partial tiles: every axis of the array that a partition cuts contributes its full
  size (the tiles cover it once), every partition over an axis the array lacks multiplies
  by its number of groups/chunks (`ceil(N/size)`): the array is re-read by each of them.
  Boundaries: `L2` counts what crosses between the SMs and global memory (every transfer
  to or from `gmem`); `HBM` is the part of it that misses L2: groups running in the same
  wave share the arrays they re-read (the wave's groups are arranged, as swizzled CTA
  orders do, to minimise that volume), never less than the compulsory traffic; `SMEM`
  counts the reads of SMEM operands by register-level ops (once per warp for operands the
  warps do not split).
* **M** (peak live memory of one processor) by liveness over the linearised program (the
  pseudocode's columns): values are live from their definition to their last use (a use
  inside a loop keeps them live to the end of that loop); elementwise ops work in place;
  a contraction feeding an accumulating `add` accumulates in place (an MMA). SMEM is per CTA,
  registers are reported per CTA and per thread.
* **FLOPs**: tensor-core (contractions, 2 per multiply-add), scalar (elementwise,
  reductions) and exponent (`exp`, `tanh`, `gelu`, `silu`: one MUFU op per element).
* **time**: per resource (tensor cores at the dense peak of the dtype and of the instruction
  family the kernel issues, CUDA cores, MUFU, and each memory level at its bandwidth), the
  max of the terms when transfers overlap compute, the sum when they do not; the bound
  names the largest term. Partly-filled last waves of CTAs scale the compute and SMEM
  terms. Latency: an SM reaches its compute and SMEM rates only
  with enough resident warps to issue while others wait (`Hardware.latency_warps_per_sm`:
  a CTA of one warp runs at an eighth of them), and the bytes the resident CTAs have in
  flight (one stream step's loads each) bound the memory bandwidth by Little's law (the
  `latency` term: L2 traffic x memory latency / bytes in flight).
* **occupancy**: registers per thread (register-level peak over the CTA's threads plus
  `REGISTER_OVERHEAD`, or a backend's own estimate: `registers`), SMEM per CTA (times
  `stages` for the streamed buffers), CTAs and warps per SM from the GPU's limits.
* **symbolic** costs: the same sums as expressions in the axis sizes and the tile symbols
  `g_<axis>` (group) and `s_<axis>` (stream), e.g. `2·q·d + 2·q·x·d/g_q` per (b, h).

The instruction family: the mma.sync mapping (`tensor_cores`, what `napkin compile` emits on
sm_80 and sm_90a alike) runs its contractions at the GPU's `mma.sync` peak, which on Hopper
is well below the `wgmma` datasheet peak (`Hardware.peak`); without it the estimate is the
generic one at the GPU's native family (wgmma on sm_90a), whose warpgroups also share each
SMEM operand read where mma.sync's warps read it each. The report names the family and the
peak it priced (`tensor_instruction`, `tensor_peak`).

The `dtype` override reprices the program's low-precision storage type (for instance fp8
for a bf16 program): arrays of that type are counted at the override's width and
contractions on it run at the override's tensor peak; f32 accumulators are unchanged.

The model's modules: `expr` (`Expr`, the symbolic sums), `program` (`extract`: the IR read
into a `Program` with partitions and liveness), `counting` (transfers, FLOPs and peak memory
counted over the partitions), `report` (`CostReport`) and this one, which prices: `evaluate`
runs its steps in order (count transfers and FLOPs, peak memory, registers and SMEM per CTA,
warps and occupancy, traffic per level, time and bound, levels, report). The names callers
use are importable from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from mlir import ir

from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.masks import NUMPY, predicate_bounds
from napkin_mlir.model.counting import (
    Ctx,
    ElementBytes,
    Flops,
    Moves,
    Visits,
    count_flops,
    count_transfers,
    element_bytes,
    element_counts,
    low_precision,
    peak_memory,
    smem_operands,
    wave_hbm,
)
from napkin_mlir.model.expr import Expr
from napkin_mlir.model.hardware import Hardware, canonical_dtype
from napkin_mlir.model.hardware import gpu as load_gpu
from napkin_mlir.model.program import Partition, Program, extract, live_element_exprs, partitions_of
from napkin_mlir.model.report import CostReport, LevelCost, Transfer

__all__ = [
    "CostReport",
    "Expr",
    "LevelCost",
    "Partition",
    "Program",
    "Transfer",
    "analyze",
    "causal_skip",
    "evaluate",
    "extract",
    "live_element_exprs",
    "partitions_of",
]

#: Registers per thread the model adds for addresses, indices and loop counters (estimate).
REGISTER_OVERHEAD = 32
#: Registers per thread for per-lane addresses and indices in the tensor-core mapping: a base,
#: plus per m16 tile of the warp (its row indices, masks and softmax scalars).
TENSOR_CORE_OVERHEAD = 32
TENSOR_CORE_OVERHEAD_PER_M_TILE = 16
#: Padding per shared-memory row in the tensor-core mapping (bytes).
SMEM_ROW_PADDING = 16


def analyze(
    module: ir.Module | ir.Operation,
    gpu: str | Hardware,
    dtype: str | None = None,
    warps: int | None = None,
    stages: int = 1,
    tensor_cores: bool = False,
    warp_rows: int = 16,
    registers: int | None = None,
) -> CostReport:
    """The cost report of the partitioned napkin program in `module` on `gpu`.

    `dtype` reprices the program's storage type (e.g. "fp8" for an f16/bf16 program);
    `warps` per CTA (default: one warp per 32 rows of the first grouped axis, doubled while
    registers overflow); `stages`: SMEM buffers per streamed array (2 = the next chunk loads
    while the current one is used, one more buffer); `tensor_cores`: price the resources of the
    mma.sync mapping (see `evaluate`); `registers` per thread, when a backend knows them
    (its kernel's register estimate), replace the model's."""
    return evaluate(extract(module), gpu, dtype, warps, stages, tensor_cores, warp_rows, registers)


def evaluate(
    prog: Program,
    gpu: str | Hardware,
    dtype: str | None = None,
    warps: int | None = None,
    stages: int = 1,
    tensor_cores: bool = False,
    warp_rows: int = 16,
    registers: int | None = None,
) -> CostReport:
    """`analyze` on an extracted (possibly retiled) program.

    With `tensor_cores`, the resources follow the mma.sync mapping of `napkin_mlir.backends.gpu.tensorcore`:
    one warp per `warp_rows` rows (m16 tiles), contraction operands that stay fixed through a stream
    (Q) held in registers as fragments, shared-memory rows padded by 16 bytes (conflict-free
    ldmatrix), TENSOR_CORE_OVERHEAD (+ per m16 tile) registers of per-lane addressing, and the
    contractions at the GPU's mma.sync peak; otherwise at its native family's (wgmma on sm_90a)."""
    hw = gpu if isinstance(gpu, Hardware) else load_gpu(gpu)
    instruction = hw.instruction_family("mma.sync" if tensor_cores else None)
    low = low_precision(prog)
    compute_dtype = canonical_dtype(dtype) if dtype else canonical_dtype(low or "f32")
    nbytes = element_bytes(low, dtype)
    visits = _visits(prog)
    moves = count_transfers(prog, nbytes, visits)
    flops = count_flops(prog, visits)
    reads = smem_operands(prog)
    peaks, peak_elems = peak_memory(prog, nbytes)
    reg_bytes, smem_per_cta, overhead = _cta_memory(prog, nbytes, peaks, moves, reads, stages, tensor_cores, warp_rows)
    if warps is None:
        warps = _warps_per_cta(prog, hw, reg_bytes, overhead, tensor_cores, warp_rows)
    if registers is None:
        registers = _registers_per_thread(reg_bytes, warps, overhead)
    cta = _occupancy(hw, warps, registers, smem_per_cta)
    traffic = _traffic(prog, hw, instruction, nbytes, visits, moves, reads, cta)
    n_ctas = math.prod(p.count for p in prog.groups) if prog.groups else 1
    time = _time_and_bound(hw, compute_dtype, instruction, flops, traffic, cta, n_ctas, stages, _in_flight_bytes(moves))
    levels = _levels(prog, hw, nbytes, moves, traffic, cta, time.times)
    peak_elements = peak_elems + (stages - 1) * moves.stream_smem_elements
    return _report(
        prog, hw.name, compute_dtype, stages, n_ctas, moves, flops, traffic, cta, time, levels, peak_elements
    )


# --------------------------------------------------------------------------------------
# The steps of `evaluate`, in order


@dataclass
class _Cta:
    """One CTA's resources and how many CTAs fit on an SM."""

    warps: int
    threads: int
    registers_per_thread: int
    smem_bytes: int
    ctas_per_sm: int
    limit: str
    violations: list[str]


@dataclass
class _Traffic:
    """Bytes through each memory level in total (SMEM also per stream step), the symbolic
    SMEM volume, and the number of CTAs running at once (one wave)."""

    l2_bytes: float
    l2_elements: float
    hbm_bytes: float
    smem_bytes: float
    smem_step_bytes: float
    smem_expr: Expr
    concurrent: int


@dataclass
class _Time:
    """Seconds per resource, whether transfers overlap compute, the overlapped (largest term)
    and serial (sum) times, the bound (the largest term's resource), and what ran the
    contractions at which peak (FLOP/s)."""

    times: dict[str, float]
    overlap: bool
    overlapped: float
    serial: float
    bound: str
    contraction_unit: str
    contraction_peak: float

    @property
    def predicted(self) -> float:
        return self.overlapped if self.overlap else self.serial


def _visits(prog: Program) -> Visits:
    """The share of a causal stream's chunks that run for an op in `ctx` (1 outside such a stream)."""
    skipped_axis, visited = causal_skip(prog)

    def visits(ctx: Ctx) -> float:
        return visited if any(p.kind == "stream" and p.axis == skipped_axis for p in ctx) else 1.0

    return visits


def _cta_memory(
    prog: Program,
    nbytes: ElementBytes,
    peaks: dict[str, float],
    moves: Moves,
    reads: list[tuple[ArrayType, Ctx, bool]],
    stages: int,
    tensor_cores: bool,
    warp_rows: int,
) -> tuple[float, int, int]:
    """Registers and shared memory: (register bytes per CTA, SMEM bytes per CTA with
    `stages` buffers per streamed array, registers of overhead per thread). The tensor-core
    mapping adds the fixed contraction operands as register fragments, 16 padding bytes per
    SMEM row and the per-lane addressing overhead."""
    smem_per_cta = int(peaks["smem"] + (stages - 1) * moves.stream_smem_bytes)
    reg_bytes = peaks["reg"]
    if not tensor_cores:
        return reg_bytes, smem_per_cta, REGISTER_OVERHEAD
    vals = prog.values
    streamed = {p.axis for p in prog.partitions() if p.kind == "stream"}
    fixed = {id(a): a for a, ctx, is_contract in reads if is_contract and not set(a.axes) & streamed}
    reg_bytes += sum(a.elements * nbytes(a) for a in fixed.values())
    rows = sum(a.elements / a.shape[-1] for v in vals.values() if (a := v.array).level == "smem" and not v.alias)
    stream_rows = moves.stream_smem_elements and sum(
        a.elements / a.shape[-1]
        for v in vals.values()
        if (a := v.array).level == "smem" and not v.alias and set(a.axes) & streamed
    )
    smem_per_cta += int((rows + (stages - 1) * stream_rows) * SMEM_ROW_PADDING)
    overhead = TENSOR_CORE_OVERHEAD + TENSOR_CORE_OVERHEAD_PER_M_TILE * max(1, warp_rows // 16)
    return reg_bytes, smem_per_cta, overhead


def _registers_per_thread(reg_bytes: float, warps: int, overhead: int) -> int:
    """Registers per thread when `warps` warps share `reg_bytes` of register values."""
    return math.ceil(reg_bytes / 4 / (32 * warps)) + overhead


def _warps_per_cta(
    prog: Program, hw: Hardware, reg_bytes: float, overhead: int, tensor_cores: bool, warp_rows: int
) -> int:
    """Warps per CTA when not given: with tensor cores one warp per `warp_rows` rows of
    the output (all of the tile's rows: with grouped-query attention the r query heads sharing
    a K/V head are rows of the same tile); otherwise one per 32 rows of the first grouped
    axis, doubled while the registers per thread overflow. At most 16."""
    if tensor_cores:
        rows_out = max(
            (a.elements / a.shape[-1] for v in prog.values.values() if (a := v.array).level == "reg"), default=16
        )
        return max(1, min(16, -(-int(rows_out) // warp_rows)))  # a partial m16 tile takes a warp too
    row_tile = next((p.size for p in prog.groups if p.size > 1), 16)
    warps = max(1, min(16, row_tile // 32))
    while _registers_per_thread(reg_bytes, warps, overhead) > hw.registers_per_thread and warps < 16:
        warps *= 2
    return warps


def _occupancy(hw: Hardware, warps: int, regs: int, smem_per_cta: int) -> _Cta:
    """Occupancy: the limits one CTA breaks (registers, SMEM, threads), and the CTAs
    per SM allowed by CTA slots, warps, registers (allocated per warp in units) and SMEM."""
    threads = 32 * warps
    violations = []
    if regs > hw.registers_per_thread:
        violations.append(f"{regs} registers per thread > {hw.registers_per_thread}")
    if smem_per_cta > hw.smem_per_cta:
        violations.append(f"SMEM per CTA {smem_per_cta} B > {hw.smem_per_cta} B")
    if threads > hw.max_threads_per_cta:
        violations.append(f"{threads} threads per CTA > {hw.max_threads_per_cta}")
    unit = hw.register_alloc_unit
    regs_per_warp = -(-min(regs, hw.registers_per_thread) * 32 // unit) * unit
    limits = {
        "CTA slots": hw.max_ctas_per_sm,
        "warps": hw.max_warps_per_sm // warps,
        "registers": hw.registers_per_sm // (regs_per_warp * warps),
        "SMEM": hw.smem_per_sm // (smem_per_cta + hw.smem_reserved_per_cta),
    }
    limit_name = min(limits, key=lambda k: limits[k])
    if limits[limit_name] < 1 and not violations:
        violations.append(f"one CTA exceeds the SM's {limit_name}")
    ctas_per_sm = max(0, limits[limit_name]) if not violations else 0
    return _Cta(warps, threads, regs, smem_per_cta, ctas_per_sm, limit_name, violations)


def _traffic(
    prog: Program,
    hw: Hardware,
    instruction: str,
    nbytes: ElementBytes,
    visits: Visits,
    moves: Moves,
    reads: list[tuple[ArrayType, Ctx, bool]],
    cta: _Cta,
) -> _Traffic:
    """Traffic per level: SMEM reads by the warps (every warp with mma.sync, ldmatrix, or
    warpgroup with wgmma, that splits the rows reads the whole contraction operand that
    lacks the row axis), L2 = all gmem transfers, HBM = the L2 traffic that misses when the
    groups of one wave share what they re-read (`wave_hbm`), never more than L2."""
    rows_axis = next((p.axis for p in prog.groups if p.size > 1), None)
    smem_total = smem_step = 0.0
    smem_expr = moves.smem_expr
    for a, ctx, is_contract in reads:
        total, s_tot, _ = element_counts(a, ctx)
        total *= visits(ctx)
        readers = cta.warps if instruction == "mma.sync" else max(1, cta.warps // 4)
        factor = readers if (is_contract and rows_axis is not None and rows_axis not in a.axes) else 1
        smem_total += total * nbytes(a) * factor
        if any(p.kind == "stream" for p in ctx):
            smem_step += a.elements * nbytes(a) * factor
        smem_expr = smem_expr + s_tot * factor
    concurrent = max(1, hw.sm_count * max(1, cta.ctas_per_sm))
    l2_bytes = sum(t.total_bytes for t in moves.transfers if t.boundary == "L2")
    l2_elems = sum(t.total_elements for t in moves.transfers if t.boundary == "L2")
    hbm_bytes = min(wave_hbm(moves.gmem, prog.groups, concurrent), l2_bytes) if moves.gmem else 0.0
    return _Traffic(l2_bytes, l2_elems, hbm_bytes, smem_total, smem_step, smem_expr, concurrent)


def _in_flight_bytes(moves: Moves) -> float:
    """Bytes one CTA requests from global memory at once: one step of its innermost loop
    that loads (a stream step's chunks, else the group's tiles)."""
    loads = [t for t in moves.transfers if t.boundary == "L2" and t.direction == "load"]
    streamed = [t.per_step_bytes for t in loads if t.loop.startswith("stream")]
    return sum(streamed) if streamed else sum(t.per_step_bytes for t in loads)


def _time_and_bound(
    hw: Hardware,
    compute_dtype: str,
    instruction: str,
    flops: Flops,
    traffic: _Traffic,
    cta: _Cta,
    ctas: int,
    stages: int,
    in_flight: float,
) -> _Time:
    """Time and bound: the time per resource (tensor cores at the dense peak of the dtype
    through `instruction`, the family the kernel issues, CUDA cores, MUFU, each memory level
    at its bandwidth; a partly-filled last wave of CTAs (a grid shorter than a wave spreads
    over the SMs first) scales the compute and SMEM terms, and so do too few resident warps
    per SM to hide latency). `latency`: the L2
    traffic at the bandwidth the CTAs in flight sustain, their `in_flight` bytes each per
    memory latency (without overlap, every step waits that latency on top of its
    transfer). Transfers overlap compute when the next
    chunk loads into an extra buffer (stages >= 2) or another resident CTA computes
    meanwhile (>= 2 CTAs per SM): then the time is the largest term, else the sum. The bound
    names the largest."""
    waves = -(-ctas // traffic.concurrent)
    resident = max(1, min(cta.ctas_per_sm, -(-ctas // hw.sm_count)))  # CTAs per SM (a short grid spreads out)
    fill = ctas / (waves * hw.sm_count * resident)
    busy = fill * min(1.0, resident * cta.warps / hw.latency_warps_per_sm)
    active = min(ctas, traffic.concurrent)
    sustained = active * in_flight / hw.memory_latency_s
    peak = hw.peak(compute_dtype, instruction)
    times = {
        "tensor": flops.tensor / (peak * busy),
        "scalar": flops.scalar / (hw.scalar_peak * busy),
        "exp": flops.exps / (hw.exp_rate * busy),
        "HBM": traffic.hbm_bytes / hw.hbm_bandwidth,
        "L2": traffic.l2_bytes / hw.l2_bandwidth,
        "latency": traffic.l2_bytes / sustained if sustained else 0.0,
        "SMEM": traffic.smem_bytes / (hw.smem_bandwidth * busy),
    }
    overlap = stages >= 2 or cta.ctas_per_sm >= 2
    bound = max(times, key=lambda k: times[k])
    unit = hw.contraction_unit(compute_dtype, instruction)
    return _Time(times, overlap, max(times.values()), sum(times.values()), bound, unit, peak)


def _levels(
    prog: Program,
    hw: Hardware,
    nbytes: ElementBytes,
    moves: Moves,
    traffic: _Traffic,
    cta: _Cta,
    times: dict[str, float],
) -> list[LevelCost]:
    """The report's rows: HBM (peak = the inputs' and outputs' footprint), L2 (peak =
    one wave's per-step transfers, at most the L2), SMEM (per CTA) and registers (per thread)."""
    step_l2 = sum(t.per_step_bytes for t in moves.transfers if t.boundary == "L2" and t.loop.startswith("stream"))
    footprint = sum(a.elements * nbytes(a) for a in prog.io)
    bpe = traffic.l2_bytes / traffic.l2_elements if traffic.l2_elements else 1.0
    hbm = traffic.hbm_bytes
    return [
        LevelCost("HBM", hbm, hbm / bpe, step_l2, 0, footprint, hw.hbm_bytes, hw.hbm_bandwidth, times["HBM"]),
        LevelCost(
            "L2",
            traffic.l2_bytes,
            traffic.l2_elements,
            step_l2,
            0,
            min(float(hw.l2_bytes), step_l2 * traffic.concurrent),
            hw.l2_bytes,
            hw.l2_bandwidth,
            times["L2"],
            str(moves.l2_expr),
        ),
        LevelCost(
            "SMEM",
            traffic.smem_bytes,
            0,
            traffic.smem_step_bytes,
            0,
            float(cta.smem_bytes),
            hw.smem_per_cta,
            hw.smem_bandwidth,
            times["SMEM"],
            str(traffic.smem_expr),
        ),
        LevelCost(
            "REG", 0.0, 0, 0, 0, float(cta.registers_per_thread * 4), hw.registers_per_thread * 4, math.inf, 0.0, ""
        ),
    ]


def _report(
    prog: Program,
    gpu: str,
    compute_dtype: str,
    stages: int,
    ctas: int,
    moves: Moves,
    flops: Flops,
    traffic: _Traffic,
    cta: _Cta,
    time: _Time,
    levels: list[LevelCost],
    peak_elements: float,
) -> CostReport:
    """The report: the steps' results as a `CostReport`, with the symbolic costs."""
    total_flops = flops.tensor + flops.scalar + flops.exps
    hbm = traffic.hbm_bytes
    exprs = {
        "H_L2_elements": moves.l2_expr,
        "H_L2_per_step_elements": moves.l2_step_expr,
        "H_SMEM_elements": traffic.smem_expr,
        "tensor_flops": flops.tensor_expr,
        "scalar_flops": flops.scalar_expr,
        "exp_ops": flops.exp_expr,
    }
    return CostReport(
        gpu=gpu,
        dtype=compute_dtype,
        tiles=prog.tiles,
        levels=[asdict(lv) for lv in levels],
        transfers=[asdict(t) for t in moves.transfers],
        flops=total_flops,
        tensor_flops=flops.tensor,
        scalar_flops=flops.scalar,
        exp_ops=flops.exps,
        arithmetic_intensity=total_flops / hbm if hbm else math.inf,
        times=time.times,
        predicted_seconds=time.predicted,
        predicted_seconds_overlapped=time.overlapped,
        overlap=time.overlap,
        predicted_seconds_no_overlap=time.serial,
        bound=time.bound,
        tensor_instruction=time.contraction_unit,
        tensor_peak=time.contraction_peak,
        achieved_tflops=flops.tensor / time.predicted / 1e12 if time.overlapped else 0.0,
        ctas=ctas,
        warps_per_cta=cta.warps,
        threads_per_cta=cta.threads,
        registers_per_thread=cta.registers_per_thread,
        smem_per_cta=cta.smem_bytes,
        ctas_per_sm=cta.ctas_per_sm,
        warps_per_sm=cta.ctas_per_sm * cta.warps,
        occupancy_limit=cta.limit if not cta.violations else "does not fit",
        fits=not cta.violations,
        violations=cta.violations,
        stages=stages,
        peak_elements=peak_elements,
        symbolic={k: str(v) for k, v in exprs.items()},
        exprs=exprs,
    )


# --------------------------------------------------------------------------------------
# Block skipping by the mask


def causal_skip(prog: Program) -> tuple[str | None, float]:
    """(streamed axis, fraction of its chunks visited) for a stream whose chunks a mask
    decides: inside a group over the mask's rows, a stream over its cols visits, per row
    tile, only the chunks where the mask's predicate may be true (interval reasoning over
    the tile's and the chunk's positions, `ir.masks.predicate_bounds`, as the lowering and
    the GPU kernels skip them). (None, 1.0) without such a mask."""
    for o in prog.ops:
        m = o.mask
        if m is None or m.skips is None:
            continue
        other = m.rows if m.skips == m.cols else m.cols
        group = next((p for p in o.ctx if p.kind == "group" and p.axis == other), None)
        stream = next((p for p in o.ctx if p.kind == "stream" and p.axis == m.skips), None)
        if stream is None:
            continue
        tiles = np.arange(group.count if group else 1)[:, None]
        chunks = np.arange(stream.count)[None, :]
        g_size, g_full = (group.size, group.full) if group else (m.extents[0 if other == m.rows else 1],) * 2
        t_lo, t_hi = tiles * g_size, np.minimum((tiles + 1) * g_size, g_full) - 1
        c_lo, c_hi = chunks * stream.size, np.minimum((chunks + 1) * stream.size, stream.full) - 1
        rows, cols = ((t_lo, t_hi), (c_lo, c_hi)) if other == m.rows else ((c_lo, c_hi), (t_lo, t_hi))
        may = predicate_bounds(m.predicate, NUMPY, rows, cols, m.extents).may
        visited = np.broadcast_to(np.asarray(may, bool), (tiles.size, chunks.size)).sum()
        return m.skips, float(visited) / (tiles.size * chunks.size)
    return None, 1.0
