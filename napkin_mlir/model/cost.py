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
* **time**: per resource (tensor cores at the dtype's dense peak, CUDA cores, MUFU, and each
  memory level at its bandwidth), the max of the terms when transfers overlap compute, the
  sum when they do not; the bound names the largest term. Partly-filled last waves of CTAs
  scale the compute and SMEM terms.
* **occupancy**: registers per thread (register-level peak over the CTA's threads plus
  `REGISTER_OVERHEAD`), SMEM per CTA (times `stages` for the streamed buffers), CTAs and
  warps per SM from the GPU's limits.
* **symbolic** costs: the same sums as expressions in the axis sizes and the tile symbols
  `g_<axis>` (group) and `s_<axis>` (stream), e.g. `2·q·d + 2·q·x·d/g_q` per (b, h).

The `dtype` override reprices the program's low-precision storage type (for instance fp8
for a bf16 program): arrays of that type are counted at the override's width and
contractions on it run at the override's tensor peak; f32 accumulators are unchanged.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, is_array
from napkin_mlir.model.hardware import DTYPE_BYTES, Hardware, canonical_dtype
from napkin_mlir.model.hardware import gpu as load_gpu

#: Registers per thread the model adds for addresses, indices and loop counters (estimate).
REGISTER_OVERHEAD = 32
#: Registers per thread for per-lane addresses and indices in the tensor-core mapping: a base,
#: plus per m16 tile of the warp (its row indices, masks and softmax scalars).
TENSOR_CORE_OVERHEAD = 32
TENSOR_CORE_OVERHEAD_PER_M_TILE = 16
#: Padding per shared-memory row in the tensor-core mapping (bytes).
SMEM_ROW_PADDING = 16

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
ELEMENTWISE = {
    "napkin.add",
    "napkin.sub",
    "napkin.mul",
    "napkin.div",
    "napkin.max",
    "napkin.scale",
    "napkin.relu",
    "napkin.gelu",
    "napkin.silu",
    "napkin.tanh",
    "napkin.exp",
    "napkin.cast",
    "napkin.mask",
    "napkin.map",
    "napkin.softmax",
}
LEVEL_ORDER = {"gmem": 0, "smem": 1, "reg": 2}


# --------------------------------------------------------------------------------------
# Symbolic expressions: sums of monomials coeff * prod(symbol ** exponent).


@dataclass(frozen=True)
class Expr:
    """A polynomial with rational exponents in named symbols (no sympy)."""

    terms: tuple[tuple[tuple[tuple[str, int], ...], float], ...] = ()

    @staticmethod
    def const(c: float) -> Expr:
        return Expr((((), float(c)),)) if c else Expr()

    @staticmethod
    def sym(name: str, power: int = 1) -> Expr:
        return Expr(((((name, power),), 1.0),))

    def _dict(self) -> dict[tuple[tuple[str, int], ...], float]:
        return dict(self.terms)

    @staticmethod
    def _from(d: dict[tuple[tuple[str, int], ...], float]) -> Expr:
        return Expr(tuple(sorted((k, v) for k, v in d.items() if v)))

    def __add__(self, other: Expr | float) -> Expr:
        other = other if isinstance(other, Expr) else Expr.const(other)
        d = self._dict()
        for k, v in other.terms:
            d[k] = d.get(k, 0.0) + v
        return Expr._from(d)

    __radd__ = __add__

    def __mul__(self, other: Expr | float) -> Expr:
        other = other if isinstance(other, Expr) else Expr.const(other)
        d: dict[tuple[tuple[str, int], ...], float] = {}
        for (k1, v1), (k2, v2) in itertools.product(self.terms, other.terms):
            powers: dict[str, int] = dict(k1)
            for s, p in k2:
                powers[s] = powers.get(s, 0) + p
            key = tuple(sorted((s, p) for s, p in powers.items() if p))
            d[key] = d.get(key, 0.0) + v1 * v2
        return Expr._from(d)

    __rmul__ = __mul__

    def symbols(self) -> set[str]:
        return {s for k, _ in self.terms for s, _ in k}

    def evaluate(self, env: dict[str, float]) -> float:
        total = 0.0
        for k, c in self.terms:
            v = c
            for s, p in k:
                v *= env[s] ** p
            total += v
        return total

    def split(self, symbol_prefixes: tuple[str, ...] = ("g_", "s_")) -> tuple[Expr, Expr]:
        """(terms independent of the tile symbols, terms that depend on them)."""
        fixed, dep = {}, {}
        for k, c in self.terms:
            (dep if any(s.startswith(symbol_prefixes) for s, _ in k) else fixed)[k] = c
        return Expr._from(fixed), Expr._from(dep)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        order = {"b": 0, "h": 1, "r": 2}
        parts = []
        for k, c in sorted(self.terms, key=lambda t: (-sum(p for _, p in t[0] if p > 0), str(t[0]))):
            num = sorted((s for s, p in k if p > 0 for _ in range(p)), key=lambda s: (order.get(s, 5), s))
            den = sorted((s for s, p in k if p < 0 for _ in range(-p)), key=lambda s: (order.get(s, 5), s))
            coeff = f"{c:g}" if c != 1 or not num else ""
            body = "·".join(([coeff] if coeff else []) + num)
            if den:
                body += "/" + ("·".join(den) if len(den) == 1 else "(" + "·".join(den) + ")")
            parts.append(body)
        return " + ".join(parts)


# --------------------------------------------------------------------------------------
# Report


@dataclass
class LevelCost:
    name: str
    transfer_bytes: float
    transfer_elements: float
    per_step_bytes: float
    per_step_elements: float
    peak_bytes: float
    capacity_bytes: float
    bandwidth: float
    seconds: float
    symbolic_elements: str = ""


@dataclass
class Transfer:
    """One `napkin.transfer` (or an implicit SMEM read) as the model counts it."""

    boundary: str  # "L2" (to/from gmem) or "SMEM"
    direction: str  # "load" or "store"
    array: str
    per_step_elements: int
    per_step_bytes: float
    count: int
    total_elements: float
    total_bytes: float
    loop: str  # innermost enclosing partition, e.g. "stream x" or "group b,h,q"


@dataclass
class CostReport:
    gpu: str
    dtype: str
    tiles: dict[str, int]
    levels: list[dict[str, Any]]
    transfers: list[dict[str, Any]]
    flops: float
    tensor_flops: float
    scalar_flops: float
    exp_ops: float
    arithmetic_intensity: float
    times: dict[str, float]
    predicted_seconds: float
    predicted_seconds_no_overlap: float
    predicted_seconds_overlapped: float
    overlap: bool
    bound: str
    achieved_tflops: float
    ctas: int
    warps_per_cta: int
    threads_per_cta: int
    registers_per_thread: int
    smem_per_cta: int
    ctas_per_sm: int
    warps_per_sm: int
    occupancy_limit: str
    fits: bool
    violations: list[str]
    stages: int
    peak_elements: float
    symbolic: dict[str, str]
    exprs: dict[str, Expr] = field(repr=False, default_factory=dict)

    def level(self, name: str) -> dict[str, Any]:
        return next(lv for lv in self.levels if lv["name"] == name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("exprs")
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A readable multi-line summary."""
        lines = [
            f"gpu {self.gpu}  dtype {self.dtype}  tiles {', '.join(f'{k}={v}' for k, v in self.tiles.items())}"
            f"  warps/CTA {self.warps_per_cta}  stages {self.stages}",
            f"{'level':<6} {'transfer':>12} {'per step':>12} {'peak':>12} {'capacity':>12} {'time':>11}  H (elements)",
        ]
        for lv in self.levels:
            lines.append(
                f"{lv['name']:<6} {_fmt_bytes(lv['transfer_bytes']):>12} {_fmt_bytes(lv['per_step_bytes']):>12} "
                f"{_fmt_bytes(lv['peak_bytes']):>12} {_fmt_bytes(lv['capacity_bytes']):>12} {_fmt_s(lv['seconds']):>11}  "
                f"{lv['symbolic_elements']}"
            )
        lines += [
            f"FLOPs: {self.flops:.4g} (tensor {self.tensor_flops:.4g}, scalar {self.scalar_flops:.4g}, exp {self.exp_ops:.4g});"
            f" intensity {self.arithmetic_intensity:.1f} FLOP/B (HBM)",
            "time terms: " + ", ".join(f"{k} {_fmt_s(v)}" for k, v in self.times.items()),
            f"predicted: {_fmt_s(self.predicted_seconds)} ({'overlapped' if self.overlap else 'not overlapped'};"
            f" {self.bound}-bound, {self.achieved_tflops:.1f} TFLOP/s); overlapped {_fmt_s(self.predicted_seconds_overlapped)},"
            f" without overlap {_fmt_s(self.predicted_seconds_no_overlap)}",
            f"occupancy: {self.ctas} CTAs x {self.warps_per_cta} warps, {self.registers_per_thread} regs/thread,"
            f" {_fmt_bytes(self.smem_per_cta)} SMEM/CTA -> {self.ctas_per_sm} CTAs = {self.warps_per_sm} warps per SM"
            f" (limited by {self.occupancy_limit})",
        ]
        if self.violations:
            lines.append("DOES NOT FIT: " + "; ".join(self.violations))
        return "\n".join(lines)


def _fmt_bytes(b: float) -> str:
    if b == float("inf"):
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KiB", 1024)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.2f} us"


# --------------------------------------------------------------------------------------
# Walking the partitioned program


@dataclass(frozen=True)
class Partition:
    kind: str  # "group" or "stream"
    axis: str
    size: int
    full: int
    level: str = "grid"

    @property
    def count(self) -> int:
        return -(-self.full // self.size)

    @property
    def symbol(self) -> str:
        return f"{'g' if self.kind == 'group' else 's'}_{self.axis}"

    def count_expr(self) -> Expr:
        if self.size == 1:
            return Expr.sym(self.axis)
        if self.size >= self.full:
            return Expr.const(1)
        return Expr.sym(self.axis) * Expr.sym(self.symbol, -1)

    def tile_expr(self) -> Expr:
        if self.size == 1:
            return Expr.const(1)
        if self.size >= self.full:
            return Expr.sym(self.axis)
        return Expr.sym(self.symbol)


def _attr_strings(op: ir.Operation, name: str) -> list[str]:
    return [ir.StringAttr(a).value for a in ir.ArrayAttr(op.attributes[name])]


def partitions_of(op: ir.Operation) -> list[Partition]:
    """The partitions a napkin.group / napkin.stream op introduces (full sizes read from its operands)."""
    full: dict[str, int] = {}
    for v in op.operands:
        if is_array(v.type):
            full.update(ArrayType.from_mlir(v.type).sizes)
    if op.name == "napkin.group":
        axes = _attr_strings(op, "axes")
        sizes = list(ir.DenseI64ArrayAttr(op.attributes["sizes"]))
        level = ir.StringAttr(op.attributes["level"]).value if "level" in op.attributes else "grid"
        return [Partition("group", a, s, full.get(a, s), level) for a, s in zip(axes, sizes, strict=True)]
    axis = ir.StringAttr(op.attributes["axis"]).value
    size = ir.IntegerAttr(op.attributes["size"]).value
    return [Partition("stream", axis, size, full.get(axis, size))]


@dataclass
class _Value:
    array: ArrayType
    defined: float
    last: float
    ctx: tuple[Partition, ...] = ()
    alias: bool = False  # a view of an operand (partition block argument): not a new buffer
    accumulate: bool = False  # contraction accumulated in place by its add


@dataclass
class _Op:
    name: str
    pos: int
    end: int
    ctx: tuple[Partition, ...]
    block_id: int
    operands: list[int | None]
    results: list[int]
    inner: list[str] = field(default_factory=list)  # op names in a napkin.map body
    mask: tuple[str, str] | None = None  # a causal napkin.mask: its (rows, cols) axes


@dataclass
class Program:
    """The partitioned program as the model sees it: ops in program order (positions are
    the pseudocode's columns), their enclosing partitions, and array values with liveness.
    Extracted once from the IR (`extract`); `retile` gives the same program at other tile
    sizes, which is how the tile search evaluates candidates without rebuilding IR."""

    ops: list[_Op]
    values: dict[int, _Value]
    io: list[ArrayType]
    groups: list[Partition]

    def partitions(self) -> list[Partition]:
        seen: dict[tuple[str, str], Partition] = {}
        for o in self.ops:
            for p in o.ctx:
                seen.setdefault((p.kind, p.axis), p)
        return list(seen.values())

    @property
    def tiles(self) -> dict[str, int]:
        return {p.axis: p.size for p in self.partitions() if p.size > 1 or p.full == 1}

    def retile(self, tiles: dict[str, int]) -> Program:
        """The same program with partition sizes `tiles` (axis -> size, clamped to the axis)."""
        new: dict[Partition, Partition] = {}
        for p in self.partitions():
            size = min(tiles.get(p.axis, p.size), p.full)
            new[p] = replace(p, size=max(1, size))

        def ctx_of(ctx: tuple[Partition, ...]) -> tuple[Partition, ...]:
            return tuple(new.get(p, p) for p in ctx)

        def arr(a: ArrayType, ctx: tuple[Partition, ...]) -> ArrayType:
            for p in ctx:
                if p.axis in a.axes:
                    a = a.with_size(p.axis, p.size)
            return a

        values = {k: replace(v, array=arr(v.array, ctx_of(v.ctx)), ctx=ctx_of(v.ctx)) for k, v in self.values.items()}
        ops = [replace(o, ctx=ctx_of(o.ctx)) for o in self.ops]
        return Program(ops, values, self.io, [new.get(p, p) for p in self.groups])


class _Walker:
    """Linearise a function into a `Program`: positions, enclosing partitions, values, uses."""

    def __init__(self, func: ir.Operation) -> None:
        self.pos = 0
        self.ops: list[_Op] = []
        self.ids: dict[ir.Value, int] = {}
        self.values: dict[int, _Value] = {}
        self.value_block: dict[int, int] = {}
        self.block_parent: dict[int, _Op | None] = {}
        self._blocks = 0
        self.uses: dict[int, list[_Op]] = {}
        body = func.regions[0].blocks[0]
        self._walk_block(body, (), None, alias_args=False)
        self._liveness()

    def _add_value(self, v: ir.Value, val: _Value, block: int) -> None:
        i = len(self.ids)
        self.ids[v] = i
        self.values[i] = val
        self.value_block[i] = block

    def _walk_block(
        self, block: ir.Block, ctx: tuple[Partition, ...], parent: _Op | None, alias_args: bool | int
    ) -> None:
        self._blocks += 1
        bid = self._blocks
        self.block_parent[bid] = parent
        for i, arg in enumerate(block.arguments):
            if is_array(arg.type):
                alias = alias_args is True or (not isinstance(alias_args, bool) and i < alias_args)
                self._add_value(arg, _Value(ArrayType.from_mlir(arg.type), self.pos, self.pos, ctx, alias=alias), bid)
        for view in block.operations:
            op = view.operation
            rec = _Op(op.name, self.pos, self.pos, ctx, bid, [self.ids.get(v) for v in op.operands], [])
            if op.name == "napkin.mask":
                rec.mask = (ir.StringAttr(op.attributes["rows"]).value, ir.StringAttr(op.attributes["cols"]).value)
            self.pos += 1
            self.ops.append(rec)
            if op.name in ("napkin.group", "napkin.stream"):
                inner = ctx + tuple(partitions_of(op))
                if op.name == "napkin.group":
                    self._walk_block(op.regions[0].blocks[0], inner, rec, alias_args=True)
                else:
                    self._walk_block(op.regions[0].blocks[0], ctx, rec, alias_args=False)  # init: once
                    self._walk_block(op.regions[1].blocks[0], inner, rec, alias_args=len(op.operands))  # step
                    self._walk_block(op.regions[2].blocks[0], ctx, rec, alias_args=False)  # finish
            else:
                if op.name == "napkin.map":
                    rec.inner = [x.operation.name for x in op.regions[0].blocks[0].operations][:-1]
                for region in op.regions:
                    for b in region.blocks:
                        self._walk_block(b, ctx, rec, alias_args=True)
            rec.end = self.pos - 1
            for r in op.results:
                if is_array(r.type):
                    # results of a region op appear after its last nested op (the yielded value is an alias)
                    at = rec.end + 0.5 if rec.end > rec.pos else rec.pos
                    self._add_value(r, _Value(ArrayType.from_mlir(r.type), at, at, ctx), bid)
                    rec.results.append(self.ids[r])

    def _liveness(self) -> None:
        for rec in self.ops:
            for vid in rec.operands:
                if vid is None:
                    continue
                self.uses.setdefault(vid, []).append(rec)
                info = self.values[vid]
                # Climb from the user to the op that sits in the value's own block.
                user, home = rec, self.value_block[vid]
                while user.block_id != home:
                    parent = self.block_parent[user.block_id]
                    if parent is None:
                        break
                    user = parent
                info.last = max(info.last, user.end)
        # A contraction whose only user is an add accumulates in place (MMA accumulator).
        for rec in self.ops:
            if rec.name != "napkin.contract" or not rec.results:
                continue
            r = rec.results[0]
            uses = self.uses.get(r, [])
            if len(uses) == 1 and uses[0].name == "napkin.add":
                other = [o for o in uses[0].operands if o is not None and o != r]
                if other and self.values[other[0]].array.shape == self.values[r].array.shape:
                    self.values[r].accumulate = True


def extract(module: ir.Module | ir.Operation) -> Program:
    """The model's view of the first function of a partitioned module (or of a func.func)."""
    op = module.operation if isinstance(module, ir.Module) else module
    funcs = (
        [op]
        if op.name == "func.func"
        else [
            v.operation
            for v in op.regions[0].blocks[0].operations
            if v.operation.name == "func.func" and len(v.operation.regions[0].blocks) > 0
        ]
    )
    if not funcs:
        raise NapkinError("cost analysis: no function in the module")
    func = funcs[0]
    walker = _Walker(func)
    io = [ArrayType.from_mlir(a.type) for a in func.regions[0].blocks[0].arguments if is_array(a.type)]
    io += [
        ArrayType.from_mlir(r)
        for r in ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value).results
        if is_array(r)
    ]
    groups: list[Partition] = []
    for view in func.regions[0].blocks[0].operations:
        if view.operation.name == "napkin.group":
            groups = [p for p in partitions_of(view.operation) if p.level == "grid"]
            break
    return Program(walker.ops, walker.values, io, groups)


# --------------------------------------------------------------------------------------
# Counting


def _storage_bytes(dtype: str, low: str | None, override: str | None) -> float:
    """Bytes per element of an array of `dtype` (the override reprices the storage type `low`)."""
    if override is not None and low is not None and dtype == low:
        return DTYPE_BYTES[canonical_dtype(override)]
    return DTYPE_BYTES[canonical_dtype(dtype)]


def _total(
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


def _low_precision(prog: Program) -> str | None:
    dts = [a.dtype for a in prog.io]
    for d in ("f16", "bf16"):
        if d in dts:
            return d
    return dts[0] if dts else None


def _wave_hbm(
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


def analyze(
    module: ir.Module | ir.Operation,
    gpu: str | Hardware,
    dtype: str | None = None,
    warps: int | None = None,
    stages: int = 1,
    tensor_cores: bool = False,
    warp_rows: int = 16,
) -> CostReport:
    """The cost report of the partitioned napkin program in `module` on `gpu`.

    `dtype` reprices the program's storage type (e.g. "fp8" for an f16/bf16 program);
    `warps` per CTA (default: one warp per 32 rows of the first grouped axis, doubled while
    registers overflow); `stages`: SMEM buffers per streamed array (2 = the next chunk loads
    while the current one is used, one more buffer); `tensor_cores`: price the resources of the
    mma.sync mapping (see `evaluate`)."""
    return evaluate(extract(module), gpu, dtype, warps, stages, tensor_cores, warp_rows)


def causal_skip(prog: Program) -> tuple[str | None, float]:
    """(streamed axis, fraction of its chunks visited) for a causal stream: a stream over a
    causal mask's cols inside a group over its rows stops at the group's last row, as the
    lowering and the GPU kernels do (the later chunks are entirely masked). Row tile i visits
    min(chunks, ceil(min((i+1) g, rows) / s)) chunks. (None, 1.0) without such a mask."""
    for o in prog.ops:
        if o.mask is None:
            continue
        rows, cols = o.mask
        group = next((p for p in o.ctx if p.kind == "group" and p.axis == rows), None)
        stream = next((p for p in o.ctx if p.kind == "stream" and p.axis == cols), None)
        if group is None or stream is None:
            continue
        visited = sum(
            min(stream.count, -(-min((i + 1) * group.size, group.full) // stream.size)) for i in range(group.count)
        )
        return cols, visited / (group.count * stream.count)
    return None, 1.0


def evaluate(
    prog: Program,
    gpu: str | Hardware,
    dtype: str | None = None,
    warps: int | None = None,
    stages: int = 1,
    tensor_cores: bool = False,
    warp_rows: int = 16,
) -> CostReport:
    """`analyze` on an extracted (possibly retiled) program.

    With `tensor_cores`, the resources follow the mma.sync mapping of `napkin_mlir.backends.gpu.tensorcore`:
    one warp per `warp_rows` rows (m16 tiles), contraction operands that stay fixed through a stream
    (Q) held in registers as fragments, shared-memory rows padded by 16 bytes (conflict-free
    ldmatrix), and TENSOR_CORE_OVERHEAD (+ per m16 tile) registers of per-lane addressing."""
    hw = gpu if isinstance(gpu, Hardware) else load_gpu(gpu)
    low = _low_precision(prog)
    compute_dtype = canonical_dtype(dtype) if dtype else canonical_dtype(low or "f32")

    def nbytes(a: ArrayType) -> float:
        return _storage_bytes(a.dtype, low, dtype)

    groups = prog.groups
    vals = prog.values
    n_ctas = math.prod(p.count for p in groups) if groups else 1
    row_tile = next((p.size for p in groups if p.size > 1), 16)
    rows_axis = next((p.axis for p in groups if p.size > 1), None)

    # ---- transfers and flops
    transfers: list[Transfer] = []
    gmem_list: list[tuple[ArrayType, tuple[Partition, ...], float, float]] = []
    sym: dict[str, Expr] = {k: Expr() for k in ("L2", "SMEM", "tensor_flops", "scalar_flops", "exp_ops")}
    sym_step = Expr()
    tensor = scalar = exps = 0.0
    smem_reads: list[tuple[ArrayType, tuple[Partition, ...], bool]] = []
    stream_smem_bytes = stream_smem_elems = 0.0
    skipped_axis, visited = causal_skip(prog)

    def visits(ctx: tuple[Partition, ...]) -> float:
        """The share of a causal stream's chunks that run (1 outside one)."""
        return visited if any(p.kind == "stream" and p.axis == skipped_axis for p in ctx) else 1.0

    for o in prog.ops:
        name, ctx = o.name, o.ctx
        if not name.startswith("napkin.") or name in ("napkin.group", "napkin.stream"):
            continue
        results = [vals[r].array for r in o.results]
        operands = [vals[v].array for v in o.operands if v is not None]
        if name == "napkin.transfer":
            src, dst = operands[0], results[0]
            total, s_tot, s_step = _total(dst, ctx)
            share = visits(ctx)
            total *= share
            boundary = "L2" if "gmem" in (src.level, dst.level) else "SMEM"
            direction = "load" if LEVEL_ORDER.get(dst.level or "", 0) > LEVEL_ORDER.get(src.level or "", 0) else "store"
            b = nbytes(dst)
            count = round(math.prod(p.count for p in ctx) * share)
            transfers.append(
                Transfer(
                    boundary,
                    direction,
                    str(dst),
                    dst.elements,
                    dst.elements * b,
                    count,
                    total,
                    total * b,
                    _loop_name(ctx),
                )
            )
            sym[boundary] = sym[boundary] + s_tot
            if boundary == "L2":
                gmem_list.append((dst, ctx, total, b))
                sym_step = sym_step + s_step
            if dst.level == "smem" and any(p.kind == "stream" for p in ctx):
                stream_smem_bytes += dst.elements * b
                stream_smem_elems += dst.elements
            continue
        if results and results[0].level == "reg":
            for a in operands:
                if a.level == "smem":
                    smem_reads.append((a, ctx, name == "napkin.contract"))
        if name == "napkin.contract":
            res = results[0]
            reduced = {ax: s for a in operands for ax, s in a.sizes.items() if ax not in res.axes}
            total, s_tot, _ = _total(res, ctx, reduced)
            tensor += 2 * total * visits(ctx)
            sym["tensor_flops"] = sym["tensor_flops"] + 2 * s_tot
            continue
        if not results:
            continue
        basis = operands[0] if name == "napkin.reduce" and operands else results[0]
        total, s_tot, _ = _total(basis, ctx)
        total *= visits(ctx)
        per = SCALAR_OPS.get(name, 0)
        nexp = EXP_OPS.get(name, 0)
        if name == "napkin.map":
            per = sum(0 if n.startswith("math.") else 1 for n in o.inner)
            nexp = sum(1 for n in o.inner if n.startswith("math."))
        exps += nexp * total
        sym["exp_ops"] = sym["exp_ops"] + nexp * s_tot
        scalar += per * total
        sym["scalar_flops"] = sym["scalar_flops"] + per * s_tot

    # ---- liveness: peak SMEM per CTA, register bytes per CTA, elements below gmem
    in_place: dict[int, float] = {}
    for pos, info, res in _in_place(prog):
        in_place[pos] = in_place.get(pos, 0.0) + min(nbytes(info.array), nbytes(res.array)) * res.array.elements
    peaks = {"smem": 0.0, "reg": 0.0}
    peak_elems = 0.0
    live = [v for v in vals.values() if not v.alias and not v.accumulate and v.array.level in peaks]
    for p in range(max((o.end for o in prog.ops), default=0) + 1):
        now = {"smem": 0.0, "reg": 0.0}
        elems = 0.0
        for v in live:
            if v.defined <= p <= v.last:
                now[v.array.level] += v.array.elements * nbytes(v.array)
                elems += v.array.elements
        now["reg"] -= in_place.get(p, 0.0)
        for k in peaks:
            peaks[k] = max(peaks[k], now[k])
        peak_elems = max(peak_elems, elems)
    smem_per_cta = int(peaks["smem"] + (stages - 1) * stream_smem_bytes)

    # ---- occupancy
    reg_bytes = peaks["reg"]
    overhead = REGISTER_OVERHEAD
    if tensor_cores:
        streamed = {p.axis for p in prog.partitions() if p.kind == "stream"}
        fixed = {id(a): a for a, ctx, is_contract in smem_reads if is_contract and not set(a.axes) & streamed}
        reg_bytes += sum(a.elements * nbytes(a) for a in fixed.values())
        rows = sum(a.elements / a.shape[-1] for v in vals.values() if (a := v.array).level == "smem" and not v.alias)
        stream_rows = stream_smem_elems and sum(
            a.elements / a.shape[-1]
            for v in vals.values()
            if (a := v.array).level == "smem" and not v.alias and set(a.axes) & streamed
        )
        smem_per_cta += int((rows + (stages - 1) * stream_rows) * SMEM_ROW_PADDING)
        overhead = TENSOR_CORE_OVERHEAD + TENSOR_CORE_OVERHEAD_PER_M_TILE * max(1, warp_rows // 16)

    def regs_for(w: int) -> int:
        return math.ceil(reg_bytes / 4 / (32 * w)) + overhead

    if warps is None and tensor_cores:
        # one warp per m16 tile of the output rows (all of the tile's rows: with grouped-query
        # attention the r query heads sharing a K/V head are rows of the same tile)
        rows_out = max((a.elements / a.shape[-1] for v in vals.values() if (a := v.array).level == "reg"), default=16)
        warps = max(1, min(16, int(rows_out) // warp_rows))
    if warps is None:
        warps = max(1, min(16, row_tile // 32))
        while regs_for(warps) > hw.registers_per_thread and warps < 16:
            warps *= 2
    regs = regs_for(warps)
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
    warps_per_sm = ctas_per_sm * warps

    # ---- SMEM reads by the warps; HBM after L2 reuse within a wave
    smem_total = smem_step = 0.0
    for a, ctx, is_contract in smem_reads:
        total, s_tot, _ = _total(a, ctx)
        total *= visits(ctx)
        # every warp (sm_80 ldmatrix) or warpgroup (sm_90a wgmma reads SMEM operands) that
        # splits the rows reads the whole operand that lacks the row axis
        readers = warps if hw.arch == "sm_80" else max(1, warps // 4)
        factor = readers if (is_contract and rows_axis is not None and rows_axis not in a.axes) else 1
        smem_total += total * nbytes(a) * factor
        if any(p.kind == "stream" for p in ctx):
            smem_step += a.elements * nbytes(a) * factor
        sym["SMEM"] = sym["SMEM"] + s_tot * factor
    concurrent = max(1, hw.sm_count * max(1, ctas_per_sm))
    l2_bytes = sum(t.total_bytes for t in transfers if t.boundary == "L2")
    l2_elems = sum(t.total_elements for t in transfers if t.boundary == "L2")
    hbm_bytes = min(_wave_hbm(gmem_list, groups, concurrent), l2_bytes) if gmem_list else 0.0

    # ---- time
    waves = -(-n_ctas // concurrent)
    fill = n_ctas / (waves * concurrent)
    peak = hw.peak(compute_dtype)
    times = {
        "tensor": tensor / (peak * fill),
        "scalar": scalar / (hw.scalar_peak * fill),
        "exp": exps / (hw.exp_rate * fill),
        "HBM": hbm_bytes / hw.hbm_bandwidth,
        "L2": l2_bytes / hw.l2_bandwidth,
        "SMEM": smem_total / (hw.smem_bandwidth * fill),
    }
    # Transfers overlap compute when the next chunk loads into an extra buffer (stages >= 2)
    # or another resident CTA computes meanwhile (>= 2 CTAs per SM).
    overlap = stages >= 2 or ctas_per_sm >= 2
    overlapped = max(times.values())
    bound = max(times, key=lambda k: times[k])
    flops = tensor + scalar + exps
    step_l2 = sum(t.per_step_bytes for t in transfers if t.boundary == "L2" and t.loop.startswith("stream"))
    footprint = sum(a.elements * nbytes(a) for a in prog.io)
    bpe = l2_bytes / l2_elems if l2_elems else 1.0
    levels = [
        LevelCost(
            "HBM", hbm_bytes, hbm_bytes / bpe, step_l2, 0, footprint, hw.hbm_bytes, hw.hbm_bandwidth, times["HBM"]
        ),
        LevelCost(
            "L2",
            l2_bytes,
            l2_elems,
            step_l2,
            0,
            min(float(hw.l2_bytes), step_l2 * concurrent),
            hw.l2_bytes,
            hw.l2_bandwidth,
            times["L2"],
            str(sym["L2"]),
        ),
        LevelCost(
            "SMEM",
            smem_total,
            0,
            smem_step,
            0,
            float(smem_per_cta),
            hw.smem_per_cta,
            hw.smem_bandwidth,
            times["SMEM"],
            str(sym["SMEM"]),
        ),
        LevelCost("REG", 0.0, 0, 0, 0, float(regs * 4), hw.registers_per_thread * 4, math.inf, 0.0, ""),
    ]
    exprs = {
        "H_L2_elements": sym["L2"],
        "H_L2_per_step_elements": sym_step,
        "H_SMEM_elements": sym["SMEM"],
        "tensor_flops": sym["tensor_flops"],
        "scalar_flops": sym["scalar_flops"],
        "exp_ops": sym["exp_ops"],
    }
    return CostReport(
        gpu=hw.name,
        dtype=compute_dtype,
        tiles=prog.tiles,
        levels=[asdict(lv) for lv in levels],
        transfers=[asdict(t) for t in transfers],
        flops=flops,
        tensor_flops=tensor,
        scalar_flops=scalar,
        exp_ops=exps,
        arithmetic_intensity=flops / hbm_bytes if hbm_bytes else math.inf,
        times=times,
        predicted_seconds=overlapped if overlap else sum(times.values()),
        predicted_seconds_overlapped=overlapped,
        overlap=overlap,
        predicted_seconds_no_overlap=sum(times.values()),
        bound=bound,
        achieved_tflops=tensor / (overlapped if overlap else sum(times.values())) / 1e12 if overlapped else 0.0,
        ctas=n_ctas,
        warps_per_cta=warps,
        threads_per_cta=threads,
        registers_per_thread=regs,
        smem_per_cta=smem_per_cta,
        ctas_per_sm=ctas_per_sm,
        warps_per_sm=warps_per_sm,
        occupancy_limit=limit_name if not violations else "does not fit",
        fits=not violations,
        violations=violations,
        stages=stages,
        peak_elements=peak_elems + (stages - 1) * stream_smem_elems,
        symbolic={k: str(v) for k, v in exprs.items()},
        exprs=exprs,
    )


# --------------------------------------------------------------------------------------
# Symbolic memory: the live elements at every column of the program, as expressions


def _in_place(prog: Program) -> list[tuple[int, _Value, _Value]]:
    """Elementwise boxes whose result can overwrite an operand that dies there (same shape
    and level): (position, operand, result), at most one operand per box."""
    found = []
    for o in prog.ops:
        if o.name in ELEMENTWISE and o.results:
            res = prog.values[o.results[0]]
            for vid in o.operands:
                info = prog.values.get(vid) if vid is not None else None
                if (
                    info
                    and info.last == o.pos
                    and info.defined <= o.pos
                    and info.array.shape == res.array.shape
                    and info.array.level == res.array.level
                ):
                    found.append((o.pos, info, res))
                    break
    return found


def _array_expr(v: _Value) -> Expr:
    """Elements of a value as an expression in axis sizes and the tile symbols of its partitions."""
    inner = {p.axis: p for p in v.ctx}
    e = Expr.const(1)
    for a, s in v.array.sizes.items():
        if a in inner:
            e = e * inner[a].tile_expr()
        elif s == 1:
            continue
        else:
            e = e * Expr.sym(a)
    return e


def live_element_exprs(prog: Program, levels: tuple[str, ...] = ("smem", "reg")) -> list[Expr]:
    """Per column of the program: live elements at `levels` (the paper's memory `M` is the
    largest), elementwise ops in place, as expressions in axis and tile sizes."""
    vals = prog.values
    exprs: dict[int, Expr] = {}
    live = [v for v in vals.values() if not v.alias and not v.accumulate and v.array.level in levels]
    end = max((o.end for o in prog.ops), default=0)
    for p in range(end + 1):
        e = Expr()
        for v in live:
            if v.defined <= p <= v.last:
                e = e + _array_expr(v)
        exprs[p] = e
    for pos, info, res in _in_place(prog):
        if info.array.level in levels:
            exprs[pos] = exprs[pos] + (-1) * _array_expr(res)
    # drop duplicates (many columns hold the same set)
    out: list[Expr] = []
    for e in exprs.values():
        if e not in out:
            out.append(e)
    return out
