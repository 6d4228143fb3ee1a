"""Tile sizes from the performance model, no autotuning (design.md section 1.3).

`choose_tiles(diagram, sizes, dtype, gpu)` builds the diagram once, runs its real
relabeling derivation (`pipeline.derivation`) and extracts the partitioned program
(`cost.extract`). Every candidate is that same program retiled (`Program.retile`) and priced
by `cost.evaluate`, the function behind `cost.analyze`, so the choice agrees with
`analyze` of the program derived at the chosen tiles (a test checks this). Candidates:

* divisibility: each tiled axis is a multiple of the lcm of the tensor-core shape of its
  role in the contractions (sm_80 `mma.sync` m16n8k16; sm_90a `wgmma` m64nNk16, k32 for fp8;
  the mma.sync mapping, `tensor_cores`, takes m16n8k16 on every target) and, when it is the
  contiguous axis of an array loaded from global memory, of the coalescing width (128 B /
  element size); an axis smaller than that is taken whole;
* capacity: SMEM per CTA and registers per thread must fit (`CostReport.fits`); a backend
  that knows its kernel's registers gives them (`registers`: tiles -> registers per thread),
  and tiles whose kernel would need more than a thread or the SM's register file holds
  (ptxas would spill) are discarded; `simt_feasible` keeps the SIMT rule's shared memory
  under the block's limit;
* warps: with the mma.sync mapping a power of two and at least `MIN_WARPS_PER_CTA` warps
  per CTA (a CTA of one warp cannot hide its latencies; ptxas's registers for 3, 6 or 12
  warps vary beyond what their fragments explain), unless no tile that fits has such a
  CTA (a short q: then the most warps up to the floor);
* stages: 2 (the next chunk's load overlaps the current compute: one more SMEM buffer per
  streamed array) when it fits, else 1.

The winner minimises the predicted time; ties go to fewer bytes from HBM, then through L2. `optimal_transfer`
is the paper's single-level model instead: minimise `H` subject to `M <= budget` elements,
with `H` and `M` the symbolic expressions read off the program.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlir import ir

from napkin_mlir.errors import UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import build_builtin, diagram_sizes
from napkin_mlir.model.cost import CostReport, Program, evaluate, extract, live_element_exprs
from napkin_mlir.model.hardware import DTYPE_BYTES, Hardware, canonical_dtype
from napkin_mlir.model.hardware import gpu as load_gpu
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import PARTITIONS, derivation

#: Largest tile the search tries per axis.
MAX_TILE = 256
#: Multiples of the divisor tried per axis.
MULTIPLES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: Fewest warps per CTA of the mma.sync mapping: one per SM sub-partition (scheduler and
#: tensor core), below which a CTA's own latencies stall it.
MIN_WARPS_PER_CTA = 4


def storage_dtype(dtype: str) -> str:
    """The dtype the diagram is built with (fp8 is modelled on an f16 program, repriced)."""
    dt = canonical_dtype(dtype)
    return {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "fp8": "f16", "tf32": "f32"}.get(dt, "f32")


def partitioned(
    diagram: str,
    sizes: dict[str, int],
    tiles: dict[str, int] | None = None,
    dtype: str = "f16",
    fuse: bool = True,
    **options: Any,
) -> Program:
    """Build a built-in diagram, run its derivation (at `tiles`, else the defaults) and
    extract the model's program. `options`: causal, kv_heads, activation."""
    with napkin_context(), ir.Location.unknown():
        module = build_builtin(diagram, dict(sizes), storage_dtype(dtype), **options)
        built = diagram_sizes(module)
        grouped, streamed = PARTITIONS[diagram]
        tileable = {a: s for a, s in (tiles or {}).items() if a in (*grouped, streamed)}  # b, h: one per group
        pipeline = derivation(diagram, built, tileable)
        if not fuse:
            pipeline = _drop_stream(pipeline.replace("napkin-assign-levels", "napkin-assign-levels{fuse=false}"))
        run_pipeline(module, pipeline)
        return extract(module)


def _drop_stream(pipeline: str) -> str:
    """The pipeline without its stream partition (the unfused diagram cannot stream softmax)."""
    start = pipeline.find("napkin-stream-partition{")
    if start < 0:
        return pipeline
    end = pipeline.find("}", start) + 1
    if pipeline[end : end + 1] == ",":
        end += 1
    return pipeline[:start] + pipeline[end:]


# --------------------------------------------------------------------------------------
# Divisibility


def divisors(
    prog: Program, hw: Hardware, dtype: str, coalesce_bytes: int | None = None, mma_sync: bool = False
) -> dict[str, int]:
    """Per tileable axis: the lcm of its MMA-shape and coalescing requirements (rows of
    `coalesce_bytes`, default the GPU's 128-byte line); `mma_sync`: the warp-level mma.sync
    shape instead of the GPU's largest (wgmma on sm_90a)."""
    dt = canonical_dtype(dtype)
    m, n, k = hw.mma_sync_shape(dt) if mma_sync else hw.mma_shape(dt)
    width = DTYPE_BYTES[dt]
    need: dict[str, int] = {p.axis: 1 for p in prog.partitions() if p.size > 1 or p.full == 1}
    vals = prog.values
    for o in prog.ops:
        if o.name == "napkin.contract" and len(o.operands) == 2 and o.results:
            lhs, rhs = (vals[v].array for v in o.operands if v is not None)
            res = vals[o.results[0]].array
            for a in need:
                if a in res.axes and a in lhs.axes and a not in rhs.axes:
                    need[a] = math.lcm(need[a], m)
                elif a in res.axes and a in rhs.axes and a not in lhs.axes:
                    need[a] = math.lcm(need[a], n)
                elif a in lhs.axes and a in rhs.axes and a not in res.axes:
                    need[a] = math.lcm(need[a], k)
        if o.name == "napkin.transfer" and o.results:
            dst = vals[o.results[0]].array
            last = dst.axes[-1]
            if last in need and dst.dtype != "f32":
                need[last] = math.lcm(need[last], max(1, int((coalesce_bytes or hw.coalesce_bytes) // width)))
    return need


def _candidates(full: int, div: int, cap: int = MAX_TILE) -> list[int]:
    if full <= div:
        return [full]
    out = sorted({div * k for k in MULTIPLES if div * k <= min(full, cap)})
    if full <= cap and full not in out:
        out.append(full)
    return out or [min(full, div)]


# --------------------------------------------------------------------------------------
# Choice


@dataclass
class Candidate:
    tiles: dict[str, int]
    stages: int
    report: CostReport

    def row(self) -> dict[str, Any]:
        r = self.report
        return {
            "tiles": self.tiles,
            "stages": self.stages,
            "warps_per_cta": r.warps_per_cta,
            "smem_per_cta": r.smem_per_cta,
            "registers_per_thread": r.registers_per_thread,
            "ctas_per_sm": r.ctas_per_sm,
            "warps_per_sm": r.warps_per_sm,
            "hbm_bytes": r.level("HBM")["transfer_bytes"],
            "predicted_seconds": r.predicted_seconds,
            "tflops": r.achieved_tflops,
            "bound": r.bound,
            "fits": r.fits,
        }


@dataclass
class TileChoice:
    diagram: str
    gpu: str
    dtype: str
    sizes: dict[str, int]
    tiles: dict[str, int]
    stages: int
    warps: int
    report: CostReport
    divisors: dict[str, int]
    candidates: list[Candidate] = field(repr=False, default_factory=list)

    def table(self, top: int = 8) -> str:
        """The configuration table (paper style): the best candidates, the chosen one marked."""
        rows = sorted((c for c in self.candidates if c.report.fits), key=lambda c: c.report.predicted_seconds)[:top]
        head = (
            f"{'':2}{'tiles':<22} {'stg':>3} {'warps':>5} {'SMEM/CTA':>9} {'regs':>4} {'CTA/SM':>6} {'warps/SM':>8}"
            f" {'HBM':>10} {'time':>10} {'TFLOP/s':>8}  bound"
        )
        lines = [
            f"tile choice: {self.diagram} on {self.gpu} ({self.dtype}), sizes "
            + ", ".join(f"{k}={v}" for k, v in self.sizes.items())
            + "; divisibility "
            + ", ".join(f"{k}%{v}" for k, v in self.divisors.items()),
            head,
        ]
        for c in rows:
            r = c.row()
            mark = "* " if c.tiles == self.tiles and c.stages == self.stages else "  "
            tiles = ",".join(f"{k}={v}" for k, v in c.tiles.items())
            lines.append(
                f"{mark}{tiles:<22} {r['stages']:>3} {r['warps_per_cta']:>5} {r['smem_per_cta'] / 1024:>7.1f}Ki"
                f" {r['registers_per_thread']:>4} {r['ctas_per_sm']:>6} {r['warps_per_sm']:>8}"
                f" {r['hbm_bytes'] / 1e6:>8.1f}MB {r['predicted_seconds'] * 1e6:>8.1f}us {r['tflops']:>8.1f}  {r['bound']}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "diagram": self.diagram,
            "gpu": self.gpu,
            "dtype": self.dtype,
            "sizes": self.sizes,
            "tiles": self.tiles,
            "stages": self.stages,
            "warps_per_cta": self.warps,
            "divisors": self.divisors,
        }


def search(
    prog: Program,
    hw: Hardware,
    dtype: str | None,
    diagram: str,
    sizes: dict[str, int],
    fixed: dict[str, int] | None = None,
    feasible: Callable[[dict[str, int]], bool] | None = None,
    tensor_cores: bool = False,
    warp_rows: int = 16,
    registers: Callable[[dict[str, int]], int] | None = None,
) -> TileChoice:
    """Evaluate the candidate tiles of `prog` and return the fastest that fits (and that
    `feasible`, a backend's own limits, accepts); `tensor_cores` prices the mma.sync mapping
    with `warp_rows` rows per warp; `registers` gives the kernel's registers per thread at
    given tiles (the backend's estimate), which the occupancy and the capacity check use."""
    dt = canonical_dtype(dtype) if dtype else None
    mapping = (feasible, tensor_cores, warp_rows, registers)
    try:
        return _search(prog, hw, dt, diagram, sizes, fixed or {}, None, *mapping)
    except UsageError:
        # nothing fits with whole 128-byte lines: fall back to 32-byte sectors
        return _search(prog, hw, dt, diagram, sizes, fixed or {}, 32, *mapping)


def _search(
    prog: Program,
    hw: Hardware,
    dt: str | None,
    diagram: str,
    sizes: dict[str, int],
    fixed: dict[str, int],
    coalesce: int | None,
    feasible: Callable[[dict[str, int]], bool] | None = None,
    tensor_cores: bool = False,
    warp_rows: int = 16,
    registers: Callable[[dict[str, int]], int] | None = None,
) -> TileChoice:
    divs = divisors(prog, hw, dt or _program_dtype(prog), coalesce, mma_sync=tensor_cores)
    axes = [a for a in PARTITIONS.get(diagram, ((), ""))[0] if a in divs] + [
        a for a in divs if a not in PARTITIONS.get(diagram, ((), ""))[0]
    ]
    fulls = {p.axis: p.full for p in prog.partitions()}
    options = [[fixed[a]] if a in fixed else _candidates(fulls[a], divs[a]) for a in axes]
    tried: list[Candidate] = []
    fitting: list[Candidate] = []
    for combo in itertools.product(*options):
        tiles = dict(zip(axes, combo, strict=True))
        if feasible is not None and not feasible(tiles):
            continue
        p = prog.retile(tiles)
        regs = registers(tiles) if registers is not None else None
        for stages in (2, 1):
            rep = evaluate(p, hw, dt, stages=stages, tensor_cores=tensor_cores, warp_rows=warp_rows, registers=regs)
            cand = Candidate(tiles, stages, rep)
            tried.append(cand)
            if rep.fits:
                fitting.append(cand)
                break
    if not fitting:
        raise UsageError(f"no tile configuration of {diagram} fits {hw.title} (SMEM per CTA and registers per thread)")
    if tensor_cores:
        fitting = _warp_floor(fitting)
    best = min(fitting, key=lambda c: _key(c.report))
    return TileChoice(
        diagram,
        hw.name,
        best.report.dtype,
        dict(sizes),
        best.tiles,
        best.stages,
        best.report.warps_per_cta,
        best.report,
        divs,
        tried,
    )


def _warp_floor(fitting: list[Candidate]) -> list[Candidate]:
    """The candidates whose CTAs have a power of two, at least `MIN_WARPS_PER_CTA`, warps;
    if none, those with the most warps up to that floor."""
    preferred = [c for c in fitting if (w := c.report.warps_per_cta) >= MIN_WARPS_PER_CTA and w & (w - 1) == 0]
    if preferred:
        return preferred
    floor = min(MIN_WARPS_PER_CTA, max(c.report.warps_per_cta for c in fitting))
    return [c for c in fitting if c.report.warps_per_cta >= floor]


def shared_footprint(prog: Program) -> int:
    """Shared memory (bytes) when every array below global memory has a buffer of its own,
    16-byte aligned: what the SIMT rule allocates at most (it keeps the register-level tiles,
    shared by the CTA's threads, in shared memory too)."""
    total = 0
    for v in prog.values.values():
        a = v.array
        if a.level in ("smem", "reg") and not v.alias:
            total += -(-int(a.elements * DTYPE_BYTES[canonical_dtype(a.dtype)]) // 16) * 16
    return total


def simt_feasible(prog: Program, hw: Hardware) -> Callable[[dict[str, int]], bool]:
    """For `search`: whether the SIMT rule's shared memory at tiles fits one block of `hw`."""
    return lambda tiles: shared_footprint(prog.retile(tiles)) <= hw.smem_per_cta


def _key(r: CostReport) -> tuple[float, float, float]:
    """Fastest first; among equal predictions, fewer bytes from HBM, then through L2."""
    return (round(r.predicted_seconds, 12), r.level("HBM")["transfer_bytes"], r.level("L2")["transfer_bytes"])


def _program_dtype(prog: Program) -> str:
    for a in prog.io:
        if a.dtype in ("f16", "bf16"):
            return a.dtype
    return prog.io[0].dtype if prog.io else "f32"


def choose_tiles(
    diagram: str,
    sizes: dict[str, int],
    dtype: str,
    gpu: str,
    fixed: dict[str, int] | None = None,
    feasible: Callable[[dict[str, int]], bool] | None = None,
    tensor_cores: bool = False,
    warp_rows: int = 16,
    registers: Callable[[dict[str, int]], int] | None = None,
    **options: Any,
) -> TileChoice:
    """The tile sizes (group and stream, by axis name) that minimise the predicted time of
    `diagram` at `sizes` in `dtype` on `gpu`, subject to capacity and divisibility.
    `fixed` pins some axes; `registers` is a backend's register estimate (see `search`);
    `options` go to the diagram builder (causal, kv_heads, ...)."""
    if diagram not in PARTITIONS:
        raise UsageError(f"no derivation for diagram '{diagram}'")
    hw = load_gpu(gpu)
    hw.peak(dtype)  # reject fp8 on Ampere early
    prog = partitioned(diagram, sizes, None, dtype, **options)
    override = canonical_dtype(dtype) if canonical_dtype(dtype) == "fp8" else None
    return search(prog, hw, override or dtype, diagram, sizes, fixed, feasible, tensor_cores, warp_rows, registers)


# --------------------------------------------------------------------------------------
# The paper's single-level model: minimise H subject to M <= budget


@dataclass
class TransferOptimum:
    tiles: dict[str, int]
    transfer_elements: float
    memory_elements: float
    dependent_elements: float  # the M-dependent part of H


def optimal_transfer(
    prog: Program,
    memory_elements: float,
    grouped: tuple[str, ...],
    streamed: str,
    divisor: int = 1,
    stream_sizes: tuple[int, ...] | None = None,
) -> TransferOptimum:
    """Minimise the symbolic `H` (elements crossing the global-memory boundary) over the
    group sizes of `grouped` and the stream size of `streamed` (multiples of `divisor`),
    subject to the symbolic peak live memory `M` (elements below global memory) <= budget.
    Both expressions are read off `prog` (`CostReport.exprs`, `live_element_exprs`)."""
    report = evaluate(prog, "h100")
    h = report.exprs["H_L2_elements"]
    fixed_part, _ = h.split()
    mems = live_element_exprs(prog)
    fulls = {p.axis: p.full for p in prog.partitions()}
    env0: dict[str, float] = {a: float(s) for a, s in _axis_sizes(prog).items()}

    def env(tiles: dict[str, int]) -> dict[str, float]:
        e = dict(env0)
        for a, t in tiles.items():
            e[f"g_{a}"] = e[f"s_{a}"] = float(t)
        return e

    def memory(tiles: dict[str, int]) -> float:
        e = env(tiles)
        return max(m.evaluate(e) for m in mems)

    best: TransferOptimum | None = None
    streams = stream_sizes or (divisor,)
    last = grouped[-1]
    outer = grouped[:-1]
    outer_opts = [range(divisor, fulls[a] + 1, divisor) for a in outer]
    for s in streams:
        for combo in itertools.product(*outer_opts):
            tiles = {**dict(zip(outer, combo, strict=True)), streamed: s}
            # largest multiple of divisor for the last grouped axis that fits (M grows with it)
            lo, hi = 0, fulls[last] // divisor
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if memory({**tiles, last: mid * divisor}) <= memory_elements:
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0:
                continue
            tiles[last] = lo * divisor
            value = h.evaluate(env(tiles))
            if best is None or value < best.transfer_elements:
                fixed_value = fixed_part.evaluate(env(tiles))
                best = TransferOptimum(dict(tiles), value, memory(tiles), value - fixed_value)
    if best is None:
        raise UsageError(f"no tiles fit in M = {memory_elements:g} elements")
    return best


def _axis_sizes(prog: Program) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for a in prog.io:
        sizes.update(a.sizes)
    return sizes
