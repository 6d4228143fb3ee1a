"""napkin-cost-analysis: the performance model of a partitioned program, as attributes.

Runs `napkin_mlir.model.cost` on every diagram function of a partitioned module (levels,
transfers, groups and streams assigned) for the GPU named by `gpu` (a100, h100, h200) and
attaches the result to the function as a `napkin.cost` dictionary: predicted time and bound,
bytes per level (HBM, L2, SMEM), FLOPs, SMEM per CTA, registers per thread, CTAs and warps
per SM, and the symbolic transfer volume. With `print=true` it also prints the report
table on stdout. The IR is otherwise unchanged.

Before:

    func.func @matmul(%A: tensor<256x256xf16, {axes = ["m", "k"], level = "gmem"}>, ...) -> ... {
      %0 = "napkin.group"(%A, %B) ({ ... "napkin.stream" ... }) {axes = ["m", "n"], sizes = array<i64: 64, 64>, ...}

After (`napkin-cost-analysis{gpu=h100}`):

    func.func @matmul(...) -> ... attributes {napkin.cost = {bound = "...", ctas_per_sm = 3 : i64,
        flops = ..., H_L2_elements = "k*m*n/g_m + k*m*n/g_n + m*n", hbm_bytes = ..., l2_bytes = ...,
        predicted_seconds = ..., registers_per_thread = ... : i64, smem_bytes = ..., smem_per_cta = ... : i64,
        tensor_flops = ..., warps_per_sm = ... : i64}} {
      ...unchanged...
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.model.cost import evaluate, extract
from napkin_mlir.model.hardware import gpu as load_gpu
from passes import register


@dataclass(frozen=True)
class CostAnalysisOptions:
    """gpu: target (a100, h100, h200); dtype: reprice the storage type (e.g. fp8; empty =
    the program's); warps: warps per CTA (0 = from the tile); stages: SMEM buffers per streamed
    array; print: also print the report table."""

    gpu: str = "h100"
    dtype: str = ""
    warps: int = 0
    stages: int = 1
    print: bool = False


@register("napkin-cost-analysis", CostAnalysisOptions, "performance model: attach napkin.cost (H, M, time, occupancy)")
def run(module: ir.Operation, options: CostAnalysisOptions) -> None:
    hw = load_gpu(options.gpu)
    for f in diagram_functions(module):
        has_levels = False

        def seen(op: ir.Operation) -> ir.WalkResult:
            nonlocal has_levels
            has_levels = has_levels or op.name == "napkin.transfer"
            return ir.WalkResult.ADVANCE

        f.walk(seen)
        if not has_levels:
            raise NapkinError("napkin-cost-analysis needs a partitioned program (run napkin-assign-levels first)")
        report = evaluate(extract(f), hw, options.dtype or None, options.warps or None, options.stages)
        i64 = ir.IntegerType.get_signless(64)
        f64 = ir.F64Type.get()
        entries = {
            "predicted_seconds": ir.FloatAttr.get(f64, report.predicted_seconds),
            "bound": ir.StringAttr.get(report.bound),
            "flops": ir.FloatAttr.get(f64, report.flops),
            "tensor_flops": ir.FloatAttr.get(f64, report.tensor_flops),
            "hbm_bytes": ir.FloatAttr.get(f64, report.level("HBM")["transfer_bytes"]),
            "l2_bytes": ir.FloatAttr.get(f64, report.level("L2")["transfer_bytes"]),
            "smem_bytes": ir.FloatAttr.get(f64, report.level("SMEM")["transfer_bytes"]),
            "smem_per_cta": ir.IntegerAttr.get(i64, report.smem_per_cta),
            "registers_per_thread": ir.IntegerAttr.get(i64, report.registers_per_thread),
            "ctas_per_sm": ir.IntegerAttr.get(i64, report.ctas_per_sm),
            "warps_per_sm": ir.IntegerAttr.get(i64, report.warps_per_sm),
            "H_L2_elements": ir.StringAttr.get(report.symbolic["H_L2_elements"].replace("·", "*")),
            "gpu": ir.StringAttr.get(hw.name),
        }
        f.attributes["napkin.cost"] = ir.DictAttr.get(entries)
        if options.print:
            print(report.table())
