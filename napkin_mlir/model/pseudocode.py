"""Pseudocode of a partitioned napkin program (design.md section 1.4).

`pseudocode(module, gpu)` prints the looped algorithm: every `napkin.group` as a parallel
loop over groups (the grid of CTAs), every `napkin.stream` as a sequential loop over chunks
with its carried state, and in each loop body the buffers at each level (SMEM, registers)
with their sizes, the transfers per step and the operations. Hardware features are
annotated where they apply: coalesced vector loads (16-byte vectors, 128-byte lines),
`cp.async` (sm_80) or TMA (sm_90a) for loads into SMEM and, with 2 stages, the overlap of the
next chunk's load with the current compute (one more buffer); tensor-core instructions with
their shape and count per step (`mma.sync.m16n8k16` on sm_80, `wgmma.m64nNk16` on sm_90a,
k32 for fp8); exponents on the MUFU unit. Everything is read from the IR (op attributes and
`ArrayType`s), so any partitioned diagram prints.
"""

from __future__ import annotations

import math

from mlir import ir

from napkin_mlir.ir.arrays import ArrayType, is_array
from napkin_mlir.ir.masks import mask_parts, predicate_text, read_predicate
from napkin_mlir.model.cost import CostReport, causal_skip, evaluate, extract, partitions_of
from napkin_mlir.model.hardware import DTYPE_BYTES, Hardware, canonical_dtype
from napkin_mlir.model.hardware import gpu as load_gpu

LEVEL_NAME = {"gmem": "HBM", "smem": "SMEM", "reg": "REG"}


def _kib(b: float) -> str:
    return f"{b / 1024:.1f} KiB" if b >= 1024 else f"{b:.0f} B"


class _Printer:
    def __init__(self, hw: Hardware, dtype: str | None, report: CostReport, low: str | None) -> None:
        self.hw = hw
        self.dtype = dtype
        self.report = report
        self.low = low
        self.names: dict[ir.Value, str] = {}
        self.skipped: tuple[str | None, float] = (None, 1.0)  # the stream axis a mask skips chunks of
        self.counter = 0
        self.lines: list[str] = []

    def nbytes(self, a: ArrayType) -> float:
        if self.dtype and a.dtype == self.low:
            return DTYPE_BYTES[canonical_dtype(self.dtype)]
        return DTYPE_BYTES[canonical_dtype(a.dtype)]

    def type_name(self, a: ArrayType) -> str:
        dt = canonical_dtype(self.dtype) if (self.dtype and a.dtype == self.low) else a.dtype
        dims = ",".join(
            f"{ax}={s}" for ax, s in zip(a.axes, a.shape, strict=True) if s != 1 or ax not in ("b", "h", "r")
        )
        return f"[{dims}] {dt}"

    def name(self, v: ir.Value, hint: str = "t") -> str:
        if v not in self.names:
            self.counter += 1
            self.names[v] = f"{hint}{self.counter}"
        return self.names[v]

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    # ------------------------------------------------------------------ features
    def load_features(self, a: ArrayType, streamed: bool) -> str:
        width = self.nbytes(a)
        row = a.shape[-1] * width
        vec = int(min(self.hw.vector_load_bytes, row))
        per = max(1, int(vec // width))
        coalesced = "coalesced" if row % self.hw.coalesce_bytes == 0 else f"rows of {row:.0f} B: partly coalesced"
        engine = "TMA cp.async.bulk.tensor" if self.hw.arch.startswith("sm_90") else f"cp.async {vec} B"
        text = (
            f"{engine}; {vec}-byte vectors ({per} x {self.type_name(a).split()[-1]}) along '{a.axes[-1]}', {coalesced}"
        )
        if streamed and self.report.stages >= 2:
            text += f"; stage 2: chunk i+1 loads during compute on chunk i (+{_kib(a.elements * width)} buffer)"
        return text

    def mma(self, lhs: ArrayType, rhs: ArrayType, res: ArrayType) -> str:
        dt = canonical_dtype(self.dtype) if (self.dtype and lhs.dtype == self.low) else canonical_dtype(lhs.dtype)
        instr = self.hw.mma_instruction(dt)
        if instr is None:
            return "CUDA-core FMAs (no tensor-core type)"
        m_sz = math.prod(s for ax, s in res.sizes.items() if ax in lhs.axes and ax not in rhs.axes)
        n_sz = math.prod(s for ax, s in res.sizes.items() if ax in rhs.axes and ax not in lhs.axes)
        k_sz = math.prod(s for ax, s in lhs.sizes.items() if ax in rhs.axes and ax not in res.axes)
        m, n, k = self.hw.mma_shape(dt)
        if self.hw.arch.startswith("sm_90") and "wgmma" in instr:
            n_used = min(256, max(8, -(-n_sz // 8) * 8))
            count = -(-m_sz // m) * -(-n_sz // n_used) * -(-k_sz // k)
            shape = instr.replace("nN", f"n{n_used}")
            return f"tensor cores: {shape} x {count} per step (M={m_sz} N={n_sz} K={k_sz}, warpgroups of 4 warps)"
        count = -(-m_sz // m) * -(-n_sz // n) * -(-k_sz // k)
        return f"tensor cores: {instr} x {count} per step (M={m_sz} N={n_sz} K={k_sz})"

    # ------------------------------------------------------------------ walk
    def block(self, block: ir.Block, depth: int) -> None:
        for view in block.operations:
            op = view.operation
            if not op.name.startswith("napkin."):
                if op.name in ("gpu.yield", "func.return") and len(op.operands):
                    vals = ", ".join(self.name(v) for v in op.operands)
                    self.emit(depth, f"yield {vals}" if op.name == "gpu.yield" else f"return {vals}")
                    # the next state of a stream / the results of a group
                continue
            if op.name == "napkin.group":
                self.group(op, depth)
            elif op.name == "napkin.stream":
                self.stream(op, depth)
            else:
                self.simple(op, depth)

    def bind_args(self, args: list[ir.Value], operands: list[ir.Value], suffix: str) -> None:
        for arg, opd in zip(args, operands, strict=False):
            self.names[arg] = self.name(opd) + suffix

    def group(self, op: ir.Operation, depth: int) -> None:
        parts = partitions_of(op)
        loops = ", ".join(f"{p.axis} in 0..{p.full} step {p.size}" for p in parts if p.full > 1)
        n = math.prod(p.count for p in parts)
        r = self.report
        self.emit(
            depth,
            f"parallel for {loops}:   # {n} groups = CTAs ({r.warps_per_cta} warps, {r.registers_per_thread} regs/thread,"
            f" {_kib(r.smem_per_cta)} SMEM; {r.ctas_per_sm} CTAs = {r.warps_per_sm} warps per SM)",
        )
        body = op.regions[0].blocks[0]
        self.bind_args(list(body.arguments), list(op.operands), "")
        self.block(body, depth + 1)

    def stream(self, op: ir.Operation, depth: int) -> None:
        (p,) = partitions_of(op)
        init, step, finish = (op.regions[i].blocks[0] for i in range(3))
        self.emit(depth, f"# stream {p.axis}: state initialised (head)")
        self.block(init, depth)
        init_yield = list(init.operations)[-1].operation
        state = list(init_yield.operands)
        n_in = len(op.operands)
        args = list(step.arguments)
        for arg, opd in zip(args[:n_in], op.operands, strict=False):
            cut = is_array(opd.type) and p.axis in ArrayType.from_mlir(opd.type).axes
            self.names[arg] = self.name(opd) + (f"[{p.axis}]" if cut else "")
        self.names[args[n_in]] = f"{p.axis}0"
        for a, s in zip(args[n_in + 1 :], state, strict=False):
            self.names[a] = self.name(s)
        skip = ""
        if self.skipped[0] == p.axis:
            skip = f"; the mask skips the chunks where it keeps nothing: {self.skipped[1]:.0%} of them run"
        self.emit(depth, f"for {p.axis}0 in 0..{p.full} step {p.size}:   # sequential, {p.count} steps (body){skip}")
        self.block(step, depth + 1)
        step_yield = list(step.operations)[-1].operation
        for a, s in zip(list(finish.arguments), state, strict=False):
            self.names[a] = self.name(s)
        del step_yield
        self.emit(depth, f"# stream {p.axis}: finish (tail)")
        self.block(finish, depth)
        fin_yield = list(finish.operations)[-1].operation
        for r, v in zip(op.results, fin_yield.operands, strict=False):
            self.names[r] = self.name(v)

    def simple(self, op: ir.Operation, depth: int) -> None:
        res = [ArrayType.from_mlir(r.type) for r in op.results if is_array(r.type)]
        args = [v for v in op.operands if is_array(v.type)]
        arrs = [ArrayType.from_mlir(v.type) for v in args]
        out = self.name(op.results[0]) if op.results else "_"
        if op.name == "napkin.transfer":
            src, dst = arrs[0], res[0]
            size = _kib(dst.elements * self.nbytes(dst))
            if dst.level == "smem" or (src.level == "gmem" and dst.level == "reg"):
                in_stream = "[" in self.name(args[0])
                feat = self.load_features(dst, in_stream)
                self.emit(
                    depth,
                    f"{LEVEL_NAME[dst.level]:<5} {out}: {self.type_name(dst)} ({size}) <- load {self.name(args[0])} from {LEVEL_NAME[src.level or 'gmem']}   # {feat}",
                )
            else:
                engine = "TMA store" if self.hw.arch.startswith("sm_90") else "st.global 16-byte vectors"
                self.emit(
                    depth,
                    f"{LEVEL_NAME[dst.level or 'gmem']:<5} {out} <- store {self.name(args[0])}: {self.type_name(dst)} ({size})   # {engine}",
                )
            return
        level = LEVEL_NAME.get(res[0].level or "", "?") if res else ""
        what = op.name.removeprefix("napkin.")
        attrs = []
        for key in ("axis", "kind", "factor", "value"):
            if key in op.attributes:
                attrs.append(f"{key}={op.attributes[key]}".replace(" : f64", "").replace(" : f32", ""))
        call = f"{what}({', '.join(self.name(v) for v in args)}{'; ' + ', '.join(attrs) if attrs else ''})"
        if op.name == "napkin.mask":
            parts = mask_parts(op)
            data = "".join(f", a{k} = {self.name(a)}" for k, a in enumerate(parts.arrays))
            keep = predicate_text(read_predicate(parts.block))
            call = f"mask({self.name(parts.input)}; keep {keep} at i = {parts.rows}, j = {parts.cols}{data})"
        note = ""
        if op.name == "napkin.contract" and len(arrs) == 2:
            reduced = sorted({ax for a in arrs for ax in a.axes} - set(res[0].axes))
            call = f"contract({self.name(args[0])}, {self.name(args[1])}) over {','.join(reduced)}"
            note = "   # " + self.mma(arrs[0], arrs[1], res[0])
        elif op.name in ("napkin.exp", "napkin.tanh", "napkin.gelu", "napkin.silu"):
            note = f"   # MUFU (SFU) x {res[0].elements} per step"
        size = _kib(res[0].elements * self.nbytes(res[0])) if res else ""
        self.emit(depth, f"{level:<5} {out}: {self.type_name(res[0]) if res else ''} ({size}) = {call}{note}")


def pseudocode(
    module: ir.Module,
    gpu: str | Hardware,
    dtype: str | None = None,
    warps: int | None = None,
    stages: int | None = None,
    report: CostReport | None = None,
) -> str:
    """The looped algorithm of the partitioned program in `module` on `gpu`."""
    hw = gpu if isinstance(gpu, Hardware) else load_gpu(gpu)
    prog = extract(module)
    if report is None:
        if stages is None:
            report = evaluate(prog, hw, dtype, warps, stages=2)
            if not report.fits:
                report = evaluate(prog, hw, dtype, warps, stages=1)
        else:
            report = evaluate(prog, hw, dtype, warps, stages=stages)
    low = next((a.dtype for a in prog.io if a.dtype in ("f16", "bf16")), None)
    printer = _Printer(hw, dtype, report, low)
    printer.skipped = causal_skip(prog)
    func = next(v.operation for v in module.body.operations if v.operation.name == "func.func")
    body = func.regions[0].blocks[0]
    names = (
        [ir.StringAttr(a).value for a in ir.ArrayAttr(func.attributes["arg_names"])]
        if "arg_names" in func.attributes
        else []
    )
    for i, arg in enumerate(body.arguments):
        printer.names[arg] = names[i] if i < len(names) else f"in{i}"
    fname = ir.StringAttr(func.attributes["sym_name"]).value
    printer.emit(
        0,
        f"# {fname} on {hw.title} ({hw.arch}), {report.dtype}; tiles "
        + ", ".join(f"{k}={v}" for k, v in report.tiles.items())
        + f"; {report.stages} stage(s)",
    )
    for arg in body.arguments:
        if is_array(arg.type):
            a = ArrayType.from_mlir(arg.type)
            printer.emit(
                0, f"HBM   {printer.names[arg]}: {printer.type_name(a)} ({_kib(a.elements * printer.nbytes(a))})"
            )
    printer.block(body, 0)
    printer.emit(
        0,
        f"# predicted {report.predicted_seconds * 1e6:.1f} us ({report.bound}-bound), "
        f"HBM {report.level('HBM')['transfer_bytes'] / 1e6:.1f} MB, {report.achieved_tflops:.1f} TFLOP/s",
    )
    return "\n".join(printer.lines)
