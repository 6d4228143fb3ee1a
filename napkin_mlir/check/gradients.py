"""Gradients of any diagram, checked on the CPU against `jax.vjp` of its JAX interpretation.

`verify_gradients(module, ...)` is what `napkin verify ... --grad` runs:

1. `napkin-differentiate` (with `remat=true` by default: FlashAttention-2's residuals) turns
   the forward diagram into the forward with its residuals and the backward `@f_vjp`;
   `napkin-fission` cuts the backward into one diagram per class of gradients with the same
   axes (and a preprocessing diagram for the values they would each recompute per group);
2. every one of these diagrams is derived (`derive.auto.derive`, the same rules as any
   diagram: its groups, stream and tiles), relabeled, lowered and compiled for the CPU;
3. the forward runs on fresh random inputs; the backward diagrams run on those inputs, the
   forward's outputs and residuals, and fresh random cotangents, passed by name
   (`arg_names` / `result_names`);
4. every gradient (and every forward output) is judged by the project's correctness rule
   (`harness.judge_dtype`) against `jax.vjp` of the interpretation of the *original*
   forward diagram: in float64 (the ground truth) and in the declared element types (JAX in
   the same dtype).

`interpret_gradients` does steps 1 and 3 with the interpretation in place of the CPU (no
compilation): the backward diagram's meaning against the reference, in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from mlir import ir

from napkin_mlir.backends.cpu import NUMPY_DTYPES, CpuKernel
from napkin_mlir.check import reference
from napkin_mlir.check.diagram import OutputCheck
from napkin_mlir.check.harness import judge_dtype
from napkin_mlir.derive.auto import Derivation, derive
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.ir.segments import INTEGER_DTYPES
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import LOOPS_PIPELINE


@dataclass(frozen=True)
class Function:
    """One diagram of the differentiated program: its name, argument and result names, types."""

    name: str
    arg_names: tuple[str, ...]
    result_names: tuple[str, ...]
    inputs: tuple[ArrayType, ...]
    outputs: tuple[ArrayType, ...]


@dataclass(frozen=True)
class Stage:
    """A function of the program as run: its derivation (None when interpreted)."""

    function: Function
    derivation: Derivation | None


@dataclass(frozen=True)
class GradientResult:
    stages: tuple[Stage, ...]
    checks: tuple[OutputCheck, ...]
    compile_seconds: float
    run_seconds: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def summary(self) -> str:
        lines = [
            f"  {c.name}: {'ok' if c.passed else 'WRONG'}: rel. Frobenius {c.comparison.rel_fro:.3e} "
            f"(JAX same dtype {c.comparison.jax_rel_fro:.3e}), max |err| {c.comparison.max_abs:.3e} "
            f"(JAX {c.comparison.jax_max_abs:.3e}); rule: {c.criterion}"
            for c in self.checks
        ]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(
            f"{verdict}: {sum(c.passed for c in self.checks)}/{len(self.checks)} outputs and gradients match JAX"
        )
        return "\n".join(lines)


def _names(f: ir.Operation, attr: str, count: int, prefix: str) -> tuple[str, ...]:
    if attr in f.attributes:
        return tuple(ir.StringAttr(a).value for a in ir.ArrayAttr(f.attributes[attr]))
    return tuple(f"{prefix}{i}" for i in range(count))


def function_of(f: ir.Operation) -> Function:
    ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
    ins = tuple(ArrayType.from_mlir(t) for t in ftype.inputs)
    outs = tuple(ArrayType.from_mlir(t) for t in ftype.results)
    return Function(
        ir.StringAttr(f.attributes["sym_name"]).value,
        _names(f, "arg_names", len(ins), "arg"),
        _names(f, "result_names", len(outs), "result"),
        ins,
        outs,
    )


def differentiate(
    module: ir.Module,
    wrt: Sequence[str] = (),
    remat: bool = True,
    split: bool = True,
    rowsums: str = "exact",
    filename: str | None = None,
) -> list[ir.Module]:
    """The forward diagram with its residuals, then the backward diagram(s), one module each
    (`module`, whose context must be active, is consumed)."""
    options = [f"remat={'true' if remat else 'false'}", f"rowsums={rowsums}"]
    if wrt:
        options.append(f"wrt={','.join(wrt)}")
    steps = [f"napkin-differentiate{{{' '.join(options)}}}"]
    if split:
        name = ir.StringAttr(diagram_functions(module.operation)[0].attributes["sym_name"]).value
        steps.append(f"napkin-fission{{func={name}_vjp}}")
    run_pipeline(module, f"builtin.module(napkin-verify,{','.join(steps)},napkin-verify)", filename=filename)
    return [ir.Module.parse(f.get_asm(enable_debug_info=True)) for f in diagram_functions(module.operation)]


def reference_vjp(
    module: ir.Module,
    inputs: list[np.ndarray],
    cotangents: list[np.ndarray],
    wrt: list[int],
    precision: str,
    filename: str | None = None,
) -> tuple[list[jax.Array], list[jax.Array]]:
    """The interpretation's outputs and `jax.vjp` of it for the inputs at positions `wrt`, in
    `precision` ("f64": every array in float64, the ground truth; "same": the declared types)."""
    if precision == "f64":
        primals = [jnp.asarray(x, jnp.float64) for x in inputs]
        cots = tuple(jnp.asarray(c, jnp.float64) for c in cotangents)
    else:
        primals = [jnp.asarray(x) for x in inputs]
        cots = tuple(jnp.asarray(c) for c in cotangents)

    def fn(*xs: jax.Array) -> tuple[jax.Array, ...]:
        full = list(primals)
        for i, x in zip(wrt, xs, strict=True):
            full[i] = x
        return tuple(interpret(module, full, precision, filename=filename))

    outs, vjp = jax.vjp(fn, *[primals[i] for i in wrt])
    return list(outs), list(vjp(cots))


def random_cotangents(outputs: Sequence[ArrayType], seed: int) -> list[np.ndarray]:
    """Standard-normal cotangents rounded to each output's dtype (a stream of their own)."""
    rng = np.random.default_rng([seed, 1])
    return [rng.standard_normal(t.shape).astype(NUMPY_DTYPES[t.dtype]) for t in outputs]


def _wrt_positions(forward: Function, wrt: Sequence[str]) -> list[int]:
    if not wrt:  # every float input: integer arrays (mask data) have no derivative
        return [i for i, t in enumerate(forward.inputs) if t.dtype not in INTEGER_DTYPES]
    positions = []
    for w in wrt:
        if w in forward.arg_names:
            positions.append(forward.arg_names.index(w))
        elif w.isdigit() and int(w) < len(forward.inputs):
            positions.append(int(w))
        else:
            raise UsageError(f"--wrt: unknown input '{w}' (inputs are {', '.join(forward.arg_names)})")
    return list(dict.fromkeys(positions))


def _check(
    module: ir.Module,
    seed: int,
    wrt: Sequence[str],
    remat: bool,
    split: bool,
    rowsums: str,
    filename: str | None,
    prepare: Callable[[ir.Module, Function], tuple[Derivation | None, Callable[[list[np.ndarray]], list[np.ndarray]]]],
) -> GradientResult:
    functions = diagram_functions(module.operation)
    if len(functions) != 1:
        raise UsageError(f"gradients: expected one diagram function, found {len(functions)}")
    forward = function_of(functions[0])
    positions = _wrt_positions(forward, wrt)
    inputs = reference.random_inputs(forward.inputs, seed)
    cotangents = random_cotangents(forward.outputs, seed)
    o64, g64 = reference_vjp(module, inputs, cotangents, positions, "f64", filename)
    o_same, g_same = reference_vjp(module, inputs, cotangents, positions, "same", filename)
    t0 = time.perf_counter()
    copy = ir.Module.parse(module.operation.get_asm(enable_debug_info=True))  # keeps the file's locations
    parts = differentiate(copy, [forward.arg_names[i] for i in positions], remat, split, rowsums, filename)
    prepared = []
    for part in parts:
        fn = function_of(diagram_functions(part.operation)[0])
        derivation, call = prepare(part, fn)
        prepared.append((Stage(fn, derivation), call))
    t1 = time.perf_counter()
    env: dict[str, np.ndarray] = dict(zip(forward.arg_names, inputs, strict=True))
    first = prepared[0][0].function  # the forward: its outputs, then its residuals
    env.update({"d" + n: c for n, c in zip(first.result_names, cotangents, strict=False)})
    outputs: dict[str, np.ndarray] = {}
    for stage, call in prepared:
        missing = [n for n in stage.function.arg_names if n not in env]
        if missing:
            raise NapkinError(f"gradients: @{stage.function.name} takes '{missing[0]}', which nothing computes")
        results = call([env[n] for n in stage.function.arg_names])
        for n, r in zip(stage.function.result_names, results, strict=True):
            env[n] = r
            outputs[n] = r
    t2 = time.perf_counter()
    checks = []
    for n, t, r64, r_same in zip(first.result_names, forward.outputs, o64, o_same, strict=False):
        c = reference.compare(outputs[n], r64, r_same)
        passed, criterion = judge_dtype(t.dtype, c)
        checks.append(OutputCheck(f"output {n} {t}", c, passed, criterion))
    for i, r64, r_same in zip(positions, g64, g_same, strict=True):
        n, t = "d" + forward.arg_names[i], forward.inputs[i]
        if n not in outputs:
            raise NapkinError(f"gradients: no diagram computes the gradient {n}")
        c = reference.compare(outputs[n], r64, r_same)
        passed, criterion = judge_dtype(t.dtype, c)
        checks.append(OutputCheck(f"gradient {n} {t}", c, passed, criterion))
    return GradientResult(tuple(s for s, _ in prepared), tuple(checks), t1 - t0, t2 - t1)


def interpret_gradients(
    module: ir.Module,
    seed: int = 0,
    wrt: Sequence[str] = (),
    remat: bool = True,
    split: bool = True,
    precision: str = "f64",
    rowsums: str = "exact",
    filename: str | None = None,
) -> GradientResult:
    """The differentiated program run by the interpretation (in `precision`) instead of the
    CPU, judged as `verify_gradients` judges it."""

    def prepare(part: ir.Module, fn: Function) -> tuple[None, Callable[[list[np.ndarray]], list[np.ndarray]]]:
        def call(args: list[np.ndarray]) -> list[np.ndarray]:
            outs = interpret(part, args, precision, filename=filename)
            return [np.asarray(o.astype(jnp.float64) if precision == "f64" else o) for o in outs]

        return None, call

    return _check(module, seed, wrt, remat, split, rowsums, filename, prepare)


def verify_gradients(
    module: ir.Module,
    seed: int = 0,
    tiles: dict[str, int] | None = None,
    gpu: str | None = None,
    filename: str | None = None,
    wrt: Sequence[str] = (),
    remat: bool = True,
    split: bool = True,
    rowsums: str = "exact",
    log: Callable[[str], None] = lambda _: None,
) -> GradientResult:
    """Differentiate `module`'s diagram, derive and compile every diagram of the result for the
    CPU, run them and judge every output and gradient against `jax.vjp` of the diagram's
    interpretation (needs the module's context active). `tiles` pins the tiles of the axes
    each derivation tiles or streams."""

    def prepare(part: ir.Module, fn: Function) -> tuple[Derivation, Callable[[list[np.ndarray]], list[np.ndarray]]]:
        low = next((t.dtype for t in fn.inputs if t.dtype in ("f16", "bf16")), None)
        derivation = derive(part, None, gpu, low, filename=filename)
        tileable = [*derivation.tiled, *([derivation.streamed] if derivation.streamed else [])]
        mine = {a: s for a, s in (tiles or {}).items() if a in tileable}
        if mine:
            derivation = derive(part, mine, gpu, low, filename=filename)
        for reason in derivation.reasons:
            log(f"@{fn.name}: derive: {reason}")
        pipeline = derivation.pipeline()
        log(f"@{fn.name}: relabel: {pipeline}")
        run_pipeline(part, pipeline, filename=filename)
        run_pipeline(part, f"builtin.module(napkin-verify,{LOOPS_PIPELINE})", filename=filename)
        kernel = CpuKernel(part)

        def call(args: list[np.ndarray]) -> list[np.ndarray]:
            return kernel(fn.name, *args)

        return derivation, call

    if tiles:
        log(f"tiles: {','.join(f'{a}={s}' for a, s in tiles.items())} where a derivation tiles or streams the axis")
    return _check(module, seed, wrt, remat, split, rowsums, filename, prepare)
