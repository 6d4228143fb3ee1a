"""The NVVM tail both GPU rules share: the targets, the upstream pipeline for a stage, and
the PTX out of the `gpu.binary` that `gpu-module-to-binary{format=isa}` leaves.

The pipeline strings themselves (`GPU_PIPELINE`, `KERNEL_PIPELINE`) live in
`napkin_mlir.pipeline.stages`; this module only fills in the target and cuts the binary step
when the caller stops at the nvvm stage.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import gpu as gpu_d
from mlir.passmanager import PassManager

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.context import format_diagnostics
from napkin_mlir.pipeline.stages import KERNEL_PIPELINE

#: The GPU targets: chip -> PTX features given to `nvvm-attach-target`.
TARGETS = {"sm_80": "+ptx80", "sm_90a": "+ptx80"}

_TO_BINARY = ",gpu-module-to-binary{format=isa})"


def check_target(target: str) -> None:
    """NapkinError unless `target` is one of `TARGETS`."""
    if target not in TARGETS:
        raise NapkinError(f"unknown GPU target '{target}' (expected {', '.join(TARGETS)})")


def nvvm_pipeline(template: str, target: str, stop_after: str) -> str:
    """`template` (GPU_PIPELINE or KERNEL_PIPELINE) for `target`; at `stop_after == "nvvm"`
    without the final `gpu-module-to-binary`, so the module stays in the NVVM dialect."""
    pipeline = template.format(chip=target, features=TARGETS[target])
    if stop_after == "nvvm":
        pipeline = pipeline.replace(_TO_BINARY, ")")
    return pipeline


def ptx_of(module: ir.Module) -> str:
    """The PTX text of the module's (first) `gpu.binary`."""
    binary = next(op for op in module.body.operations if op.operation.name == "gpu.binary")
    obj = gpu_d.ObjectAttr(ir.ArrayAttr(binary.attributes["objects"])[0])
    return obj.object.decode() if isinstance(obj.object, bytes) else str(obj.object)


def lower_built_kernel(module: ir.Module, target: str, stop_after: str, what: str) -> str:
    """A kernel module built with the bindings (`what` names it in errors): verified, then taken
    through KERNEL_PIPELINE to `stop_after` ("gpu", "nvvm" or "ptx"); returns that stage's
    text (the PTX for "ptx")."""
    try:
        module.operation.verify()
    except ir.MLIRError as err:
        raise NapkinError(f"the {what}'s IR does not verify:\n{format_diagnostics(err)}") from None
    if stop_after == "gpu":
        return str(module)
    try:
        PassManager.parse(nvvm_pipeline(KERNEL_PIPELINE, target, stop_after)).run(module.operation)
    except ir.MLIRError as err:
        raise NapkinError(f"GPU lowering failed:\n{format_diagnostics(err)}") from None
    return str(module) if stop_after == "nvvm" else ptx_of(module)
