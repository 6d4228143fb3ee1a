"""The CPU backend: lower a loop program to LLVM and run it with MLIR's ExecutionEngine.

`CPU_PIPELINE` is the upstream tail as one pipeline string (it pastes into `mlir-opt`
unchanged). `CpuKernel` JIT-compiles a lowered module once and calls its functions on numpy
arrays; f16/bf16 arrays travel as their 16-bit patterns.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import ml_dtypes
import numpy as np
from mlir import ir
from mlir.execution_engine import ExecutionEngine
from mlir.passmanager import PassManager
from mlir.runtime import get_ranked_memref_descriptor

from napkin_mlir.arrays import ArrayType
from napkin_mlir.context import format_diagnostics
from napkin_mlir.errors import NapkinError

#: Loop program (linalg/scf/memref/arith/math) -> LLVM dialect, for the host CPU.
CPU_PIPELINE = (
    "builtin.module("
    "func.func(scf-forall-to-parallel,convert-linalg-to-loops),"
    "convert-scf-to-cf,"
    "arith-expand{include-bf16=true include-f8e8m0=false include-f4e2m1=false},"
    "convert-math-to-llvm,"
    "convert-math-to-libm,"
    "expand-strided-metadata,"
    "lower-affine,"
    "finalize-memref-to-llvm,"
    "convert-arith-to-llvm,"
    "convert-cf-to-llvm,"
    "convert-func-to-llvm,"
    "reconcile-unrealized-casts)"
)

NUMPY_DTYPES: dict[str, np.dtype] = {
    "f64": np.dtype(np.float64),
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
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
    names = tuple(ir.StringAttr(n).value for n in ir.ArrayAttr(f.attributes["arg_names"]))
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
        self.engine = ExecutionEngine(module, opt_level=opt_level)

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
