"""Counting what a partitioned program moves and computes, for the performance model
(`napkin_mlir.model.cost`): per array inside its partitions, the exact total elements over all
executions and the symbolic total and per-step volumes (`element_counts`); the transfers per
level boundary (`count_transfers`), the FLOPs by unit (`count_flops`), the SMEM operands
read by the warps (`smem_operands`), the peak live memory per level (`peak_memory`) and the
HBM volume of a wave of groups that share what they re-read (`wave_hbm`). Arrays are priced
per element by `element_bytes` (a dtype override reprices the `low_precision` storage type).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.model.expr import Expr
from napkin_mlir.model.hardware import DTYPE_BYTES, canonical_dtype
from napkin_mlir.model.program import Partition, Program, _Op, in_place
from napkin_mlir.model.report import Transfer

#: Ops computed as one MUFU (special-function) instruction per element.
EXP_OPS = {"napkin.exp": 1, "napkin.tanh": 1, "napkin.gelu": 1, "napkin.silu": 1, "napkin.softmax": 1}
#: Scalar FLOPs per element of each elementwise/reduction op (FMA counted as 2).
SCALAR_OPS = {
    "napkin.add": 1,
    "napkin.sub": 1,
    "napkin.mul": 1,
    "napkin.div": 1,
    "napkin.max": 1,
    "napkin.scale": 1,
    "napkin.relu": 1,
    "napkin.gelu": 7,
    "napkin.silu": 3,
    "napkin.tanh": 0,
    "napkin.exp": 0,
    "napkin.cast": 0,
    "napkin.mask": 1,
    "napkin.reduce": 1,
    "napkin.softmax": 4,
    "napkin.fill": 0,
}
LEVEL_ORDER = {"gmem": 0, "smem": 1, "reg": 2}


#: The partitions enclosing an op or a value, outermost first.
Ctx = tuple[Partition, ...]
#: Bytes per element of an array as priced (the dtype override applied).
ElementBytes = Callable[[ArrayType], float]
#: The share of a causal stream's chunks that run, for an op inside partitions `ctx`.
Visits = Callable[[Ctx], float]


def _storage_bytes(dtype: str, low: str | None, override: str | None) -> float:
    """Bytes per element of an array of `dtype` (the override reprices the storage type `low`)."""
    if override is not None and low is not None and dtype == low:
        return DTYPE_BYTES[canonical_dtype(override)]
    return DTYPE_BYTES[canonical_dtype(dtype)]


def element_bytes(low: str | None, override: str | None) -> ElementBytes:
    """Bytes per element of an array: the `override` dtype reprices the storage type `low`."""

    def nbytes(a: ArrayType) -> float:
        return _storage_bytes(a.dtype, low, override)

    return nbytes


def low_precision(prog: Program) -> str | None:
    """The program's low-precision storage type: f16 or bf16 when an input or output has it, else the first one's."""
    dts = [a.dtype for a in prog.io]
    for d in ("f16", "bf16"):
        if d in dts:
            return d
    return dts[0] if dts else None


@dataclass
class Moves:
    """What the `napkin.transfer` ops move: the counted transfers, the L2 ones as
    (array, partitions, total elements, bytes per element) for the HBM wave model, the
    symbolic volumes, and the SMEM buffers refilled by a stream (multiplied by `stages`)."""

    transfers: list[Transfer] = field(default_factory=list)
    gmem: list[tuple[ArrayType, Ctx, float, float]] = field(default_factory=list)
    l2_expr: Expr = field(default_factory=Expr)
    l2_step_expr: Expr = field(default_factory=Expr)
    smem_expr: Expr = field(default_factory=Expr)
    stream_smem_bytes: float = 0.0
    stream_smem_elements: float = 0.0


@dataclass
class Flops:
    """Operations by unit: tensor-core FLOPs, scalar FLOPs and exponents (MUFU ops), exact and symbolic."""

    tensor: float = 0.0
    scalar: float = 0.0
    exps: float = 0.0
    tensor_expr: Expr = field(default_factory=Expr)
    scalar_expr: Expr = field(default_factory=Expr)
    exp_expr: Expr = field(default_factory=Expr)


def wave_hbm(
    transfers: list[tuple[ArrayType, tuple[Partition, ...], float, float]], groups: list[Partition], wave: int
) -> float:
    """HBM bytes when the `wave` concurrently running groups share what they re-read:
    choose the wave's shape over the grid axes (powers of two) that minimises the volume."""
    axes = [p for p in groups if p.count > 1]
    options = []
    for p in axes:
        opts, w = [], 1
        while w < p.count * 2 and w <= wave:
            opts.append(min(w, p.count))
            w *= 2
        options.append(sorted(set(opts)))
    best = math.inf
    for combo in itertools.product(*options):
        if math.prod(combo) > wave:
            continue
        widen = {p.axis: w for p, w in zip(axes, combo, strict=True)}
        vol = 0.0
        for array, ctx, total, width in transfers:
            n, base = 1, total
            for p in ctx:
                if p.axis in array.axes:
                    continue
                base /= p.count
                if p.kind == "group" and p.axis in widen:
                    n *= -(-p.full // min(p.full, p.size * widen[p.axis]))
                else:
                    n *= p.count
            vol += base * n * width
        best = min(best, vol)
    return best


def element_counts(
    array: ArrayType, ctx: tuple[Partition, ...], extra_axes: dict[str, int] | None = None
) -> tuple[float, Expr, Expr]:
    """(exact total elements over all executions, symbolic total, symbolic per-step) of an
    array (plus `extra_axes`, e.g. a contraction's reduced axes) inside partitions `ctx`.
    Axes the partitions cut count at full size (the tiles cover them once, partial last
    tiles included); partitions over other axes multiply by their number of groups/chunks."""
    sizes = dict(array.sizes)
    sizes.update(extra_axes or {})
    outer: dict[str, Partition] = {}
    inner: dict[str, Partition] = {}
    for p in ctx:
        outer.setdefault(p.axis, p)
        inner[p.axis] = p
    total = 1.0
    sym_total, sym_step = Expr.const(1), Expr.const(1)
    for a, s in sizes.items():
        total *= outer[a].full if a in outer else s
        sym_total = sym_total * Expr.sym(a)
        sym_step = sym_step * (inner[a].tile_expr() if a in inner else Expr.sym(a))
    for p in ctx:
        if p.axis not in sizes:
            total *= p.count
            sym_total = sym_total * p.count_expr()
    return total, sym_total, sym_step


def _loop_name(ctx: tuple[Partition, ...]) -> str:
    if not ctx:
        return "once"
    if ctx[-1].kind == "stream":
        return f"stream {ctx[-1].axis}"
    return "group " + ",".join(p.axis for p in ctx if p.kind == "group")


def _priced_ops(prog: Program) -> Iterator[tuple[_Op, list[ArrayType], list[ArrayType]]]:
    """The napkin ops the model prices (not the partition ops themselves), with their result
    and operand arrays, in program order."""
    vals = prog.values
    for o in prog.ops:
        if not o.name.startswith("napkin.") or o.name in ("napkin.group", "napkin.stream"):
            continue
        yield o, [vals[r].array for r in o.results], [vals[v].array for v in o.operands if v is not None]


def count_transfers(prog: Program, nbytes: ElementBytes, visits: Visits) -> Moves:
    """transfers per level: every `napkin.transfer`, its boundary (`L2` when it
    touches gmem, else `SMEM`) and direction, per step and in total (`element_counts`, scaled by the
    causal share), and the symbolic totals (L2 also per step)."""
    moves = Moves()
    for o, results, operands in _priced_ops(prog):
        if o.name != "napkin.transfer":
            continue
        ctx = o.ctx
        src, dst = operands[0], results[0]
        total, s_tot, s_step = element_counts(dst, ctx)
        share = visits(ctx)
        total *= share
        boundary = "L2" if "gmem" in (src.level, dst.level) else "SMEM"
        direction = "load" if LEVEL_ORDER.get(dst.level or "", 0) > LEVEL_ORDER.get(src.level or "", 0) else "store"
        b = nbytes(dst)
        count = round(math.prod(p.count for p in ctx) * share)
        moves.transfers.append(
            Transfer(
                boundary, direction, str(dst), dst.elements, dst.elements * b, count, total, total * b, _loop_name(ctx)
            )
        )
        if boundary == "L2":
            moves.l2_expr = moves.l2_expr + s_tot
            moves.gmem.append((dst, ctx, total, b))
            moves.l2_step_expr = moves.l2_step_expr + s_step
        else:
            moves.smem_expr = moves.smem_expr + s_tot
        if dst.level == "smem" and any(p.kind == "stream" for p in ctx):
            moves.stream_smem_bytes += dst.elements * b
            moves.stream_smem_elements += dst.elements
    return moves


def count_flops(prog: Program, visits: Visits) -> Flops:
    """FLOPs by kind: contractions on the tensor cores (2 per multiply-add over the
    reduced axes), elementwise ops and reductions on the CUDA cores (`SCALAR_OPS` per
    element), exponents on the MUFU (`EXP_OPS`; a `napkin.map` counts its body's ops)."""
    f = Flops()
    for o, results, operands in _priced_ops(prog):
        name, ctx = o.name, o.ctx
        if name == "napkin.transfer":
            continue
        if name == "napkin.contract":
            res = results[0]
            reduced = {ax: s for a in operands for ax, s in a.sizes.items() if ax not in res.axes}
            total, s_tot, _ = element_counts(res, ctx, reduced)
            f.tensor += 2 * total * visits(ctx)
            f.tensor_expr = f.tensor_expr + 2 * s_tot
            continue
        if not results:
            continue
        basis = operands[0] if name == "napkin.reduce" and operands else results[0]
        total, s_tot, _ = element_counts(basis, ctx)
        total *= visits(ctx)
        per = SCALAR_OPS.get(name, 0)
        nexp = EXP_OPS.get(name, 0)
        if name == "napkin.map":
            per = sum(0 if n.startswith("math.") else 1 for n in o.inner)
            nexp = sum(1 for n in o.inner if n.startswith("math."))
        f.exps += nexp * total
        f.exp_expr = f.exp_expr + nexp * s_tot
        f.scalar += per * total
        f.scalar_expr = f.scalar_expr + per * s_tot
    return f


def smem_operands(prog: Program) -> list[tuple[ArrayType, Ctx, bool]]:
    """The SMEM operands of ops that compute into registers: (array, partitions, read by a contraction)."""
    reads = []
    for o, results, operands in _priced_ops(prog):
        if o.name != "napkin.transfer" and results and results[0].level == "reg":
            reads += [(a, o.ctx, o.name == "napkin.contract") for a in operands if a.level == "smem"]
    return reads


def peak_memory(prog: Program, nbytes: ElementBytes) -> tuple[dict[str, float], float]:
    """memory per level: by liveness over the program's columns, the peak bytes live
    in SMEM and in registers (per CTA; elementwise ops in place) and the peak live elements."""
    in_place_bytes: dict[int, float] = {}
    for pos, info, res in in_place(prog):
        in_place_bytes[pos] = (
            in_place_bytes.get(pos, 0.0) + min(nbytes(info.array), nbytes(res.array)) * res.array.elements
        )
    peaks = {"smem": 0.0, "reg": 0.0}
    peak_elems = 0.0
    live = [v for v in prog.values.values() if not v.alias and not v.accumulate and v.array.level in peaks]
    for p in range(max((o.end for o in prog.ops), default=0) + 1):
        now = {"smem": 0.0, "reg": 0.0}
        elems = 0.0
        for v in live:
            if v.defined <= p <= v.last:
                now[v.array.level] += v.array.elements * nbytes(v.array)
                elems += v.array.elements
        now["reg"] -= in_place_bytes.get(p, 0.0)
        for k in peaks:
            peaks[k] = max(peaks[k], now[k])
        peak_elems = max(peak_elems, elems)
    return peaks, peak_elems
