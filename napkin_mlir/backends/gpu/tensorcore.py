"""The tensor-core rule: sm_80 `mma.sync` lowering of the FlashAttention-shaped partition.

The relabeling passes turn attention into: a grid group over (b, h, q-tile), and inside it a
stream over `x` whose step is the online softmax of a contraction (`napkin-stream-partition`
derives it). This is the GPU rule for that pattern, in four parts: the match
(`tensorcore_match.py`) gives every op of the partitioned program the part of the kernel that
implements it and refuses, naming the op, anything else; the plan (`tensorcore_plan.py`)
reads the tile sizes, axes, mask, scale, score ops and dtypes and refuses what the kernel
cannot hold; the emitter (`tensorcore_emit.py`) writes one `gpu.func`, the score ops by their
rules (`tensorcore_scores.py`); `compile_tensorcore_attention` here lowers it with
`KERNEL_PIPELINE` to PTX. In the kernel

* each warp owns 16 query rows (one m16 MMA tile) of the CTA's rows, which are the group's
  (r, q) rows flattened (grouped-query heads sharing a K/V head share the CTA and its K/V);
* Q, K and V tiles are copied global -> shared with 16-byte `cp.async`
  (`nvgpu.device_async_copy`, zero-filled past the end of q and x), K/V double-buffered so
  chunk j+1 loads while chunk j computes;
* fragments come from shared memory with `ldmatrix` (`.trans` for V);
* S = Q Kᵀ and O += P V run on `mma.sync.m16n8k16` (bf16/f16 in, f32 accumulate);
* the online softmax stays in registers: row max and sums across the 4 lanes of a quad with
  `shfl.xor`, the running sum kept per thread and reduced once at the end;
* P is repacked from the S accumulator layout into A fragments without touching memory.

A variant (score ops, or V's head dim other than Q's) gets the register budget of plain
attention at the same tiles: ptxas's count for the plain kernel plus 10% (and the extra O
accumulators of a wider V head), as `nvvm.maxnreg`, so that its occupancy stays that of
plain attention (ptxas otherwise spends spare registers on scheduling the extra code). If
ptxas would spill under that bound, the variant is compiled without it.

Shared-memory rows are padded by 8 elements (16 bytes) so `ldmatrix` reads are free of bank
conflicts. The fragment layouts used here are those of the PTX ISA for m16n8k16 and
ldmatrix (`fragments.py`); `napkin emulate` runs the emitted kernel on the CPU
(`napkin_mlir.emulator`).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from mlir import ir
from mlir.passmanager import PassManager

from napkin_mlir.backends.gpu.fragments import MMA_M
from napkin_mlir.backends.gpu.nvvm import check_target, nvvm_pipeline, ptx_of
from napkin_mlir.backends.gpu.ptxas import assemble
from napkin_mlir.backends.gpu.sidecar import GpuKernel, KernelArg
from napkin_mlir.backends.gpu.tensorcore_emit import emit_attention_kernel
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.backends.gpu.tensorcore_scores import with_index_positions
from napkin_mlir.errors import NapkinError, ToolError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_diagnostics
from napkin_mlir.pipeline.stages import KERNEL_PIPELINE


def compile_tensorcore_attention(
    partitioned: ir.Module, target: str, stop_after: str = "ptx", warp_rows: int = 16, filename: str | None = None
) -> tuple[GpuKernel, str]:
    """The tensor-core rule: a partitioned attention program -> the mma.sync kernel
    (`warp_rows` rows of the CTA tile per warp, a multiple of 16). Returns the kernel's launch
    description and the text at `stop_after` (gpu | nvvm | ptx); `kernel.ptx` is empty
    before the ptx stage. Every op of the program must be one the kernel implements, else a
    `TensorCoreRefusal` names it (at its location in `filename`)."""
    check_target(target)
    plan = AttentionPlan.from_partitioned(partitioned, warp_rows, filename)
    name, args = _kernel_args_from_diagram(partitioned)
    text = emit_attention_kernel(plan)
    kernel = GpuKernel(
        target,
        "attention_tc",
        plan.grid,
        (plan.threads, 1, 1),
        plan.smem_bytes,
        args,
        "",
        problem={
            "function": name,
            "kernel": "tensorcore",
            "warps": plan.warps,
            "warp_rows": plan.warp_rows,
            "tile": {"q": plan.gq, "x": plan.sx},
        },
    )
    flex = flex_description(plan, args)
    if flex is not None:
        kernel.problem["flex"] = flex
    if stop_after == "gpu":
        return kernel, text
    bounded = _bounded_variant(plan, target)
    if bounded is not None:
        text, ptx = bounded
        if stop_after == "ptx":
            kernel.ptx = ptx
            return kernel, ptx
    lowered = _lower(text, target, stop_after)
    if stop_after == "nvvm":
        return kernel, lowered
    kernel.ptx = lowered
    return kernel, kernel.ptx


def flex_description(plan: AttentionPlan, args: list[KernelArg]) -> dict[str, object] | None:
    """What PyTorch's FlexAttention needs to compute the same attention, for the GPU runner to
    time it beside the kernel: Q, K, V by name, the scale, and each mask's predicate as data
    (its ops in order, the arrays it reads by name and axes). None when the program has score
    ops other than masks, ops on the output, or grouped query heads."""
    if plan.output_ops or plan.r != 1 or any(op.name != "napkin.mask" for op in plan.score_ops):
        return None
    by_arg = {i: a for i, a in enumerate(args)}
    masks = []
    for op in plan.score_ops:
        assert op.body is not None
        steps = []
        for s in op.body.ops:
            attrs = dict(s.attributes)
            predicate = attrs.get("predicate")
            value = attrs.get("value")
            steps.append(
                {
                    "name": s.name,
                    "operands": list(s.operands),
                    "predicate": int(predicate.split(":")[0]) if predicate else None,
                    "value": value.split(":")[0].strip() if value else None,
                }
            )
        arrays = [[by_arg[o.ref].name, list(by_arg[o.ref].axes)] for o in op.operands[1:]]
        masks.append({"steps": steps, "result": op.body.result, "arrays": arrays})
    return {
        "q": plan.names[0],
        "k": plan.names[1],
        "v": plan.names[2],
        "scale": plan.scale,
        "extents": [plan.q, plan.x],
        "masks": masks,
    }


def _lower(text: str, target: str, stop_after: str) -> str:
    """The kernel's module text through the GPU pipeline to `stop_after` (nvvm | ptx)."""
    module = ir.Module.parse(text)
    try:
        PassManager.parse(nvvm_pipeline(KERNEL_PIPELINE, target, stop_after)).run(module.operation)
    except ir.MLIRError as err:
        raise NapkinError(f"GPU lowering failed:\n{format_diagnostics(err)}") from None
    return ptx_of(module) if stop_after == "ptx" else str(module)


def _ptxas(ptx: str, target: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        report = assemble(ptx, target, Path(tmp) / "kernel.cubin")
    return {k: v for k, v in report.items() if isinstance(v, int)}


def _bounded_variant(plan: AttentionPlan, target: str) -> tuple[str, str] | None:
    """For a variant of plain attention (score or output ops, another V head dim, outputs per
    row such as the log-sum-exp a backward needs): its kernel text and
    PTX under the register budget of the plain kernel at the same tiles (ptxas's count plus
    10%, plus the O accumulators of a wider V head, 2 registers per 4 columns). Plain means
    no mask either: a mask's chunk range alone (dynamic loop bounds) costs ptxas up to 20%
    more registers than it needs. None for plain attention, for a variant already within the
    budget (a cap lets ptxas spend registers up to it), when ptxas would spill under the
    budget, or without ptxas."""
    plain = dataclasses.replace(
        plan, dv=plan.d, score_ops=(), output_ops=(), inputs=(), skips=(), row_outputs=(), o_position=0
    )
    if plan == plain or not plan.softmax:  # a kernel without a softmax is no variant of attention
        return None
    try:
        registers = _ptxas(_lower(emit_attention_kernel(plain), target, "ptx"), target)["registers"]
        wider = (plan.warp_rows // MMA_M) * max(0, plan.dv - plan.d) // 2
        budget = min(255, int(registers * 1.1) + wider)
        # masks in i32 positions or in index ones: ptxas allocates either better, by shape
        candidates = [plan]
        wide = dataclasses.replace(plan, score_ops=with_index_positions(plan.score_ops))
        if wide != plan:
            candidates.append(wide)
        texts = [emit_attention_kernel(c) for c in candidates]
        ptxs = [_lower(text, target, "ptx") for text in texts]
        counts = [_ptxas(p, target)["registers"] for p in ptxs]
        best = counts.index(min(counts))
        if counts[best] <= budget:
            return texts[best], ptxs[best]
        text = emit_attention_kernel(candidates[best], max_registers=budget)
        ptx = _lower(text, target, "ptx")
        report = _ptxas(ptx, target)
    except ToolError:  # no ptxas here: the kernel as ptxas would allocate it
        return None
    if report["spill_stores_bytes"] or report["spill_loads_bytes"]:
        return None
    return text, ptx


def _kernel_args_from_diagram(partitioned: ir.Module) -> tuple[str, list[KernelArg]]:
    """Arguments of a diagram function (inputs, then one output per result), in order."""
    func = next(op.operation for op in partitioned.body.operations if op.operation.name == "func.func")
    block = func.regions[0].blocks[0]
    names = [ir.StringAttr(n).value for n in ir.ArrayAttr(func.attributes["arg_names"])]
    args = [
        KernelArg(n, "input", t.dtype, t.shape, t.axes)
        for n, t in zip(names, (ArrayType.from_mlir(a.type) for a in block.arguments), strict=True)
    ]
    ret = list(block.operations)[-1]
    for i, v in enumerate(ret.operands):
        t = ArrayType.from_mlir(v.type)
        args.append(KernelArg(f"out{i}", "output", t.dtype, t.shape, t.axes))
    return ir.StringAttr(func.attributes["sym_name"]).value, args
