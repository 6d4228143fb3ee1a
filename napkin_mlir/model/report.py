"""The cost report of the performance model: `CostReport` (what `napkin_mlir.model.cost.evaluate`
returns: transfers, peak memory and time per level, FLOPs by kind, occupancy, the predicted
time and its bound, the tensor-core instruction family and peak the contractions were priced
at, the symbolic costs), `LevelCost` (one memory level's row) and `Transfer`
(one counted transfer), with the readable table (`CostReport.table`) and JSON form.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from napkin_mlir.model.expr import Expr


@dataclass
class LevelCost:
    """One memory level's row: bytes (and elements) moved in total and per step, peak live
    bytes, capacity, bandwidth, time, and the symbolic transfer volume in elements."""

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
    tensor_instruction: str  # what ran the contractions: "wgmma", "mma.sync" or "CUDA cores"
    tensor_peak: float  # its dense peak for the dtype (FLOP/s), the rate of the tensor term
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
            f"contractions: {self.tensor_instruction} at {self.tensor_peak / 1e12:.1f} TFLOP/s"
            f" ({self.dtype} dense peak on {self.gpu})",
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
