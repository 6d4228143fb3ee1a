"""The CPU backend: lower a loop program to LLVM and run it with MLIR's ExecutionEngine.

`CPU_PIPELINE` (in `napkin_mlir.pipeline.stages`) is the upstream tail it runs. `CpuKernel`
JIT-compiles a lowered module once and calls its functions on numpy arrays; f16/bf16 arrays
travel as their 16-bit patterns. On a CPU without native bf16 conversions (AMD EPYC, most
Intel parts before Sapphire Rapids) LLVM lowers them to the soft-float helpers `__truncsfbf2`
and friends, which the bindings ship in `libmlir_float16_utils.so`: the engine loads it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
from mlir import ir
from mlir.execution_engine import ExecutionEngine
from mlir.passmanager import PassManager
from mlir.runtime import get_ranked_memref_descriptor

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_diagnostics
from napkin_mlir.pipeline.stages import CPU_PIPELINE

#: Soft-float conversion helpers for CPUs without native f16/bf16 conversion instructions.
FLOAT16_UTILS = Path(ir.__file__).resolve().parent / "lib" / "libmlir_float16_utils.so"

NUMPY_DTYPES: dict[str, np.dtype] = {
    "f64": np.dtype(np.float64),
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "i32": np.dtype(np.int32),
}


def _descriptor(a: np.ndarray) -> ctypes._Pointer:
    if a.dtype.itemsize == 2 and a.dtype != np.int16 and a.dtype != np.uint16:
        a = a.view(np.uint16)
    return ctypes.pointer(ctypes.pointer(get_ranked_memref_descriptor(a)))


@dataclass(frozen=True)
class FunctionSignature:
    """What a lowered napkin function takes: inputs then outputs, as named-axis arrays."""

    name: str
    inputs: tuple[ArrayType, ...]
    outputs: tuple[ArrayType, ...]
    input_names: tuple[str, ...]


def signature_of(f: ir.Operation) -> FunctionSignature:
    """Read a lowered function's signature from its `napkin.inputs`/`napkin.outputs` attributes."""
    outs = tuple(ArrayType.from_mlir(ir.TypeAttr(t).value) for t in ir.ArrayAttr(f.attributes["napkin.outputs"]))
    ins = tuple(ArrayType.from_mlir(ir.TypeAttr(t).value) for t in ir.ArrayAttr(f.attributes["napkin.inputs"]))
    if "arg_names" in f.attributes:
        names = tuple(ir.StringAttr(n).value for n in ir.ArrayAttr(f.attributes["arg_names"]))
    else:  # a diagram written by hand names its arguments only by position
        names = tuple(f"arg{i}" for i in range(len(ins)))
    return FunctionSignature(ir.StringAttr(f.attributes["sym_name"]).value, ins, outs, names)


class CpuKernel:
    """A loop-program module compiled for the host; call its functions on numpy arrays."""

    def __init__(self, module: ir.Module, opt_level: int = 3) -> None:
        self.signatures = {
            s.name: s
            for s in (signature_of(op.operation) for op in module.body.operations if "napkin.outputs" in op.attributes)
        }
        from passes.erase_memory_spaces import EraseMemorySpacesOptions
        from passes.erase_memory_spaces import run as erase_memory_spaces

        try:
            erase_memory_spaces(module.operation, EraseMemorySpacesOptions())
            PassManager.parse(CPU_PIPELINE).run(module.operation)
        except ir.MLIRError as err:
            raise NapkinError(f"CPU lowering failed:\n{format_diagnostics(err)}") from None
        libs = [str(FLOAT16_UTILS)] if FLOAT16_UTILS.exists() else []
        self.engine = ExecutionEngine(module, opt_level=opt_level, shared_libs=libs)

    def __call__(self, name: str, *inputs: np.ndarray) -> list[np.ndarray]:
        sig = self.signatures[name]
        if len(inputs) != len(sig.inputs):
            raise NapkinError(f"{name} takes {len(sig.inputs)} inputs, got {len(inputs)}")
        args = []
        for a, t, n in zip(inputs, sig.inputs, sig.input_names, strict=True):
            want = NUMPY_DTYPES[t.dtype]
            if a.shape != t.shape or a.dtype != want:
                raise NapkinError(f"{name}: input {n} must be {t.shape} {t.dtype}, got {a.shape} {a.dtype}")
            args.append(np.ascontiguousarray(a))
        outs = [np.full(t.shape, np.nan, dtype=NUMPY_DTYPES[t.dtype]) for t in sig.outputs]
        self.engine.invoke(name, *[_descriptor(a) for a in args + outs])
        return outs
