"""Differential checks of one diagram: every relabeling against the interpretation, and the
CPU backend against the correctness rule.

`check_diagram(text, pipelines, seed)` parses the diagram (so every op has a `file:line:col`
location), checks that `napkin-verify` accepts it, interprets it in float64 and in its
declared types on fresh random inputs (`check.reference.random_inputs`), then for each
pipeline runs the steps one at a time on a fresh copy and after each step

* verifies the result (the Python verifier and MLIR's), and
* interprets it in float64: every output must equal the original's within 1e-9 of the
  output's largest magnitude (non-finite entries must be the same non-finite values);

and after the last step lowers the program to loops, runs it with the CPU backend and judges
every output with the project's rule (`judge_dtype` on `reference.compare`). An f32 output
whose own JAX interpretation in f32 comes within 8x of the rule (`SUMMATION_ORDER_MARGIN`) is
badly conditioned: it is counted, not
judged; so is an output whose float64 reference is not finite.

A pass that refuses (NapkinError, UsageError) must say where: its message holds a
`file:line:col` or names a napkin op; refusals are counted by reason. Anything else is a
`Failure`: a verifier failure after a pass, an interpretation that differs or errs, an
exception that is not a NapkinError (a traceback), an unlocated refusal, a wrong result.
Aborts and hangs are caught by the worker's supervisor (`napkin_mlir.fuzz.worker`).

This module runs in the worker process (it imports MLIR and JAX).
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mlir import ir

from napkin_mlir.backends.cpu import CpuKernel
from napkin_mlir.check import reference
from napkin_mlir.check.harness import F32_TOLERANCE, judge_dtype
from napkin_mlir.derive.auto import Derivation, derive
from napkin_mlir.errors import NapkinError
from napkin_mlir.fuzz import pipelines as pl
from napkin_mlir.fuzz.signature import located, normalize
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.ir.verifier import verify_napkin
from napkin_mlir.pipeline.passmanager import PassFailure, run_pipeline
from napkin_mlir.pipeline.stages import LOOPS_PIPELINE

#: Relative tolerance (of an output's largest magnitude) of the float64 interpretation
#: before and after a pass.
RELABEL_RTOL = 1e-9


@dataclass
class Failure:
    """One failure: its category, where (the pipeline and step), and what."""

    category: str
    message: str
    pipeline: list[dict[str, Any]] = field(default_factory=list)
    step: int = -1
    detail: str = ""

    def signature(self) -> str:
        """Category plus the normalized first line (what deduplicates failures)."""
        return f"{self.category}: {normalize(self.message)}"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    """What checking one diagram did and found."""

    pipelines: int = 0
    passes: int = 0
    comparisons: int = 0
    cpu_runs: int = 0
    judged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=dict)  # stage -> program text (mutation corpus)
    steps_run: list[list[dict[str, Any]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["failures"] = [f.to_json() for f in self.failures]
        return out

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1


# --- reading a diagram -----------------------------------------------------------------------


def _function(module: ir.Module) -> ir.Operation:
    return diagram_functions(module.operation)[0]


def signature(module: ir.Module) -> tuple[list[ArrayType], list[ArrayType]]:
    f = _function(module)
    ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
    return [ArrayType.from_mlir(t) for t in ftype.inputs], [ArrayType.from_mlir(t) for t in ftype.results]


def facts(module: ir.Module) -> pl.DiagramFacts:
    """What the plain diagram maps and reduces."""
    f = _function(module)
    block = f.regions[0].blocks[0]
    sizes: dict[str, int] = {}
    for arg in block.arguments:
        sizes.update(ArrayType.from_mlir(arg.type).sizes)
    reduced: set[str] = set()
    softmax: set[str] = set()
    ops = [op.operation for op in block.operations]
    for op in ops:
        if op.name == "napkin.contract":
            ins = {a for v in op.operands for a in ArrayType.from_mlir(v.type).axes}
            reduced |= ins - set(ArrayType.from_mlir(op.results[0].type).axes)
        elif op.name in ("napkin.reduce", "napkin.softmax"):
            axis = ir.StringAttr(op.attributes["axis"]).value
            reduced.add(axis)
            if op.name == "napkin.softmax":
                softmax.add(axis)
    ret = ops[-1]
    outputs = [set(ArrayType.from_mlir(v.type).axes) for v in ret.operands]
    return pl.DiagramFacts(sizes, outputs, reduced, softmax)


def derived_steps(d: Derivation) -> list[pl.Step]:
    """The derivation's pipeline as steps."""
    steps: list[pl.Step] = [{"pass": "verify"}, {"pass": "levels", "fuse": True, "hierarchy": "gmem,smem,reg"}]
    grouped = [*d.woven, *d.tiled]
    if grouped:
        sizes = [1] * len(d.woven) + [d.tiles[a] for a in d.tiled]
        steps.append({"pass": "group", "axes": grouped, "sizes": sizes, "level": "grid"})
    if d.streamed:
        steps.append({"pass": "stream", "axis": d.streamed, "size": d.tiles[d.streamed]})
    steps.append({"pass": "verify"})
    return steps


# --- comparing ---------------------------------------------------------------------------------


def same_values(after: np.ndarray, before: np.ndarray, rtol: float = RELABEL_RTOL) -> str | None:
    """None when `after` equals `before` (see the module docstring), else what differs."""
    a = np.asarray(after, np.float64)
    b = np.asarray(before, np.float64)
    if a.shape != b.shape:
        return f"shape {a.shape} instead of {b.shape}"
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb):
        return f"{int(np.sum(fa != fb))} entries differ in finiteness (e.g. {a[fa != fb].ravel()[:3]} vs {b[fa != fb].ravel()[:3]})"
    nf = ~fb
    if nf.any() and not np.array_equal(np.isnan(a[nf]), np.isnan(b[nf])):
        return "NaN entries differ"
    infs = nf & ~np.isnan(b)
    if infs.any() and not np.array_equal(a[infs], b[infs]):
        return "infinite entries differ in sign"
    if not fb.any():
        return None
    scale = float(np.max(np.abs(b[fb])))
    err = float(np.max(np.abs(a[fb] - b[fb])))
    if err > rtol * scale and err > 0.0:
        return f"max |diff| {err:.3e} > {rtol:.0e} x max |ref| {scale:.3e}"
    return None


# --- running ------------------------------------------------------------------------------------


class _Stop(Exception):
    """Ends one pipeline (after its failure or refusal is recorded)."""


def _crash(report: Report, what: str, err: BaseException, steps: list[pl.Step], index: int) -> None:
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    report.failures.append(Failure("crash", f"{what}: {type(err).__name__}: {err}", steps, index, tb[-4000:]))


def _run_step(module: ir.Module, text: str, filename: str) -> None:
    run_pipeline(module, f"builtin.module({text})", filename=filename)


def _handle_pass_error(report: Report, err: NapkinError, label: str, steps: list[pl.Step], index: int) -> None:
    """Record a pass's NapkinError: a refusal (located) or a failure."""
    if isinstance(err, PassFailure):
        cause = err.cause
        if cause is not None and not isinstance(cause, NapkinError):
            _crash(report, f"pass {err.pass_name or label}", cause, steps, index)
            return
        if cause is None and err.pass_name is None:  # MLIR's verifier (or an upstream pass)
            report.failures.append(Failure("verifier-after-pass", f"{label}: {err}", steps, index))
            return
    message = str(err)
    if not located(message):
        report.failures.append(Failure("unlocated-refusal", f"{label}: {message}", steps, index))
        return
    report.refuse(f"{label.split('{')[0]}: {normalize(message)}")


def _compare(
    report: Report,
    module: ir.Module,
    inputs: list[np.ndarray],
    ref64: list[Any],
    filename: str,
    steps: list[pl.Step],
    index: int,
    label: str,
) -> None:
    found = verify_napkin(module.operation)
    if found:
        msg = "; ".join(f"{d.location}: {d.message}" for d in found[:3])
        report.failures.append(
            Failure("verifier-after-pass", f"after {label}: {msg}", steps, index, str(module)[-6000:])
        )
        raise _Stop
    try:
        outs = interpret(module, inputs, "f64", filename=filename, arrays="numpy")
    except NapkinError as err:
        report.failures.append(Failure("interpret-error", f"after {label}: {err}", steps, index, str(module)[-6000:]))
        raise _Stop from None
    except Exception as err:
        _crash(report, f"interpret after {label}", err, steps, index)
        raise _Stop from None
    for i, (o, r) in enumerate(zip(outs, ref64, strict=True)):
        report.comparisons += 1
        diff = same_values(np.asarray(o), np.asarray(r))
        if diff is not None:
            report.failures.append(Failure("mismatch-after-pass", f"after {label}: output #{i}: {diff}", steps, index))
            raise _Stop


def run_pipeline_checked(
    report: Report,
    text: str,
    steps: list[pl.Step],
    inputs: list[np.ndarray],
    ref64: list[Any],
    same: list[Any],
    outputs_t: list[ArrayType],
    filename: str,
    cpu: bool,
    keep_stages: bool = False,
) -> None:
    """Run one pipeline step by step with every check (results go to `report`)."""
    report.pipelines += 1
    report.steps_run.append(steps)
    module = ir.Module.parse(text)
    sizes = facts(module).sizes
    try:
        for index, step in enumerate(steps):
            label = pl.render_step(step, sizes)
            try:
                _run_step(module, label, filename)
            except NapkinError as err:
                _handle_pass_error(report, err, label, steps, index)
                raise _Stop from None
            except Exception as err:
                _crash(report, f"pass {label}", err, steps, index)
                raise _Stop from None
            report.passes += 1
            if step["pass"] != "verify":  # napkin-verify changes nothing: no need to interpret again
                _compare(report, module, inputs, ref64, filename, steps, index, label)
        if keep_stages:
            report.stages["partitioned"] = str(module)
        if not cpu:
            return
        lower = f"napkin-verify,{LOOPS_PIPELINE}"
        try:
            _run_step(module, lower, filename)
        except NapkinError as err:
            _handle_pass_error(report, err, lower, steps, len(steps))
            raise _Stop from None
        except Exception as err:
            _crash(report, "lower to loops", err, steps, len(steps))
            raise _Stop from None
        if keep_stages:
            report.stages["loops"] = str(module)
        try:
            kernel = CpuKernel(module)
            name = next(iter(kernel.signatures))
            outs = kernel(name, *inputs)
        except NapkinError as err:
            report.failures.append(Failure("backend-error", f"CPU backend: {err}", steps, len(steps)))
            raise _Stop from None
        except Exception as err:
            _crash(report, "CPU backend", err, steps, len(steps))
            raise _Stop from None
        report.cpu_runs += 1
        for i, (out, r64, rs, t) in enumerate(zip(outs, ref64, same, outputs_t, strict=True)):
            judge_output(report, i, out, r64, rs, t, steps)
    except _Stop:
        return


#: An f32 output is judged only where JAX's own f32 error leaves this factor of room under the
#: rule's 1e-5: a legal summation order (the CPU loops add sequentially, XLA in blocks) can
#: be several times less accurate on a badly conditioned output (fuzz reproducer 016: JAX
#: 3.9e-6, the sequential loops 1.7e-5); a well-conditioned one is judged with the full rule.
SUMMATION_ORDER_MARGIN = 8.0


def judge_output(
    report: Report, i: int, out: np.ndarray, r64: Any, rs: Any, t: ArrayType, steps: list[pl.Step]
) -> None:
    """Judge one CPU output by the project's rule (or count why it is not judged)."""
    if not np.all(np.isfinite(np.asarray(r64))):
        report.skip("non-finite reference")
        return
    if t.dtype in ("f32", "f64"):
        own = reference.compare(np.asarray(rs), r64, rs)
        if own.rel_fro > F32_TOLERANCE / SUMMATION_ORDER_MARGIN:
            report.skip("badly conditioned in f32 (JAX in f32 within 8x of the rule)")
            return
    comparison = reference.compare(out, r64, rs)
    passed, criterion = judge_dtype(t.dtype, comparison)
    report.judged += 1
    if not passed:
        report.failures.append(
            Failure(
                "wrong-result",
                f"output #{i} {t}: rel. Frobenius {comparison.rel_fro:.3e} (JAX {comparison.jax_rel_fro:.3e}), "
                f"max |err| {comparison.max_abs:.3e} (JAX {comparison.jax_max_abs:.3e}); rule: {criterion}",
                steps,
                len(steps),
            )
        )


def check_diagram(
    text: str,
    pipelines: list[list[pl.Step]] | None = None,
    seed: int = 0,
    filename: str = "fuzz.mlir",
    random_pipelines: int = 2,
    cpu: float = 1.0,
    keep_stages: bool = False,
    progress: Callable[[list[pl.Step]], None] | None = None,
) -> Report:
    """Check one diagram (see the module docstring). `pipelines` given: exactly those;
    otherwise the derived pipeline, one around it and `random_pipelines` drawn ones, drawn
    from `seed`. `cpu`: the chance that a drawn pipeline also runs on the CPU (the derived
    one always does). `progress` is told each pipeline before it runs (so that a
    supervisor knows which one was running when the process died)."""
    report = Report()
    rng = random.Random(seed)
    with napkin_context(), ir.Location.unknown():
        try:
            module = ir.Module.parse(text)
        except ir.MLIRError as err:
            report.failures.append(Failure("generator", f"the diagram does not parse: {err}"))
            return report
        found = verify_napkin(module.operation)
        if found:
            msg = "; ".join(f"{d.location}: {d.message}" for d in found[:3])
            report.failures.append(Failure("generator", f"napkin-verify rejects the diagram: {msg}"))
            return report
        inputs_t, outputs_t = signature(module)
        inputs = reference.random_inputs(tuple(inputs_t), seed)
        try:
            ref64 = interpret(module, inputs, "f64", filename=filename, arrays="numpy")
            same = interpret(module, inputs, "same", filename=filename)
        except NapkinError as err:
            report.failures.append(Failure("interpret-error", f"the plain diagram: {err}"))
            return report
        except Exception as err:
            _crash(report, "interpret the plain diagram", err, [], -1)
            return report
        if keep_stages:
            report.stages["diagram"] = text
        runs: list[tuple[list[pl.Step], bool]] = []
        if pipelines is not None:
            runs = [(p, cpu > 0) for p in pipelines]
        else:
            info = facts(module)
            low = next((t.dtype for t in inputs_t if t.dtype in ("f16", "bf16")), None)
            try:
                derivation = derive(ir.Module.parse(text), None, None, low, filename=filename)
            except NapkinError as err:  # derive is not a pass: its refusals need no location
                report.refuse(f"derive: {normalize(str(err))}")
                derivation = None
            except Exception as err:
                _crash(report, "derive", err, [], -1)
                derivation = None
            if derivation is not None:
                derived = derived_steps(derivation)
                runs.append((derived, True))
                runs.append((pl.around(rng, derived, info.sizes), rng.random() < cpu))
            for _ in range(random_pipelines):
                runs.append((pl.draw(rng, info), rng.random() < cpu))
        for index, (steps, on_cpu) in enumerate(runs):
            if progress is not None:
                progress(steps)
            run_pipeline_checked(
                report, text, steps, inputs, ref64, same, outputs_t, filename, on_cpu, keep_stages and index == 0
            )
    return report
