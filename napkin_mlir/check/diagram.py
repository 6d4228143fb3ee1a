"""Verification of any diagram: derive it, run it on the CPU, judge it against its own JAX
interpretation.

`verify_diagram(module, ...)` is what `napkin verify FILE.mlir` runs. The references are the
JAX interpretation of the plain diagram itself (`napkin_mlir.interpret`): in float64 (the
ground truth) and in the declared element types (JAX in the same dtype); every output of the
compiled program is judged by the project's correctness rule (`harness.judge_dtype`). The
derivation is `derive.auto.derive`, so a user's diagram and a built-in take the same steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir

from napkin_mlir.backends.cpu import CpuKernel
from napkin_mlir.check import reference
from napkin_mlir.check.harness import judge_dtype
from napkin_mlir.derive.auto import Derivation, derive
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import LOOPS_PIPELINE


@dataclass(frozen=True)
class OutputCheck:
    """One output of the program against the references."""

    name: str
    comparison: reference.Comparison
    passed: bool
    criterion: str


@dataclass(frozen=True)
class DiagramResult:
    derivation: Derivation
    outputs: tuple[OutputCheck, ...]
    compile_seconds: float
    run_seconds: float

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def summary(self) -> str:
        """One line per output, the last starting with PASS or FAIL for the whole program."""
        lines = [
            f"  output {o.name}: {'ok' if o.passed else 'WRONG'}: rel. Frobenius {o.comparison.rel_fro:.3e} "
            f"(JAX same dtype {o.comparison.jax_rel_fro:.3e}), max |err| {o.comparison.max_abs:.3e} "
            f"(JAX {o.comparison.jax_max_abs:.3e}); rule: {o.criterion}"
            for o in self.outputs
        ]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: {sum(o.passed for o in self.outputs)}/{len(self.outputs)} outputs match JAX")
        return "\n".join(lines)


def _signature(module: ir.Module) -> tuple[list[ArrayType], list[ArrayType]]:
    f = diagram_functions(module.operation)[0]
    ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
    return [ArrayType.from_mlir(t) for t in ftype.inputs], [ArrayType.from_mlir(t) for t in ftype.results]


def compile_diagram(
    module: ir.Module,
    tiles: dict[str, int] | None = None,
    gpu: str | None = None,
    filename: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[CpuKernel, str, Derivation]:
    """Derive `module`'s plain diagram and compile it for the CPU (in place): the kernel, its
    function's name and the derivation."""
    inputs_t, _ = _signature(module)
    low = next((t.dtype for t in inputs_t if t.dtype in ("f16", "bf16")), None)
    derivation = derive(module, tiles, gpu, low, filename=filename)
    for reason in derivation.reasons:
        log(f"derive: {reason}")
    pipeline = derivation.pipeline()
    log(f"relabel: {pipeline}")
    run_pipeline(module, pipeline, filename=filename)
    loops = f"builtin.module(napkin-verify,{LOOPS_PIPELINE})"
    log(f"lower:   {loops}")
    run_pipeline(module, loops, filename=filename)
    kernel = CpuKernel(module)
    return kernel, next(iter(kernel.signatures)), derivation


def verify_diagram(
    module: ir.Module,
    seed: int = 0,
    tiles: dict[str, int] | None = None,
    gpu: str | None = None,
    filename: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> DiagramResult:
    """Derive `module`'s plain diagram, compile it for the CPU and judge every output against
    the interpretation of the diagram (needs the module's context active; `module` is consumed)."""
    inputs_t, outputs_t = _signature(module)
    inputs = reference.random_inputs(tuple(inputs_t), seed)
    ref64 = interpret(module, inputs, "f64", filename=filename)
    same = interpret(module, inputs, "same", filename=filename)
    t0 = time.perf_counter()
    kernel, name, derivation = compile_diagram(module, tiles, gpu, filename, log)
    t1 = time.perf_counter()
    outs = kernel(name, *inputs)
    t2 = time.perf_counter()
    checks = []
    for i, (out, r64, r_same, t) in enumerate(zip(outs, ref64, same, outputs_t, strict=True)):
        comparison = reference.compare(out, r64, r_same)
        passed, criterion = judge_dtype(t.dtype, comparison)
        checks.append(OutputCheck(f"#{i} {t}", comparison, passed, criterion))
    return DiagramResult(derivation, tuple(checks), t1 - t0, t2 - t1)
