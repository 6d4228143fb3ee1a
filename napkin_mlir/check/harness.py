"""Verification harness: build a diagram, compile it, run it on the CPU, compare with JAX.

`verify(config)` draws fresh random inputs, runs the derived program through the CPU
backend and checks it against a float64 JAX reference:
  * f32: relative Frobenius error at most 1e-5;
  * f16/bf16: FlashAttention's rule, max |error| at most twice that of JAX computing in the
    same dtype against the same reference (plus 1e-6 so exact cases are not flaky).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from mlir import ir

from napkin_mlir.backends.cpu import NUMPY_DTYPES, CpuKernel, FunctionSignature
from napkin_mlir.check import reference
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import build_builtin, diagram_sizes
from napkin_mlir.pipeline.stages import compile_to_loops

F32_TOLERANCE = 1e-5
LOW_PRECISION_FACTOR = 2.0
LOW_PRECISION_FLOOR = 1e-6


@dataclass(frozen=True)
class VerifyConfig:
    """What to verify: a built-in diagram, its sizes by axis name, dtype and options."""

    diagram: str
    dims: dict[str, int]
    dtype: str = "f32"
    seed: int = 0
    causal: bool = False
    kv_heads: int | None = None
    activation: str = "gelu"
    tiles: dict[str, int] = field(default_factory=dict)
    tiled: bool = True
    gpu: str | None = None  # choose the missing tiles with the cost model for this GPU


@dataclass(frozen=True)
class VerifyResult:
    config: VerifyConfig
    comparison: reference.Comparison
    passed: bool
    criterion: str
    compile_seconds: float
    run_seconds: float

    def summary(self) -> str:
        c = self.comparison
        verdict = "PASS" if self.passed else "FAIL"
        if self.config.dtype in ("f32", "f64"):
            return f"{verdict}: rel. Frobenius error {c.rel_fro:.3e} (tolerance {F32_TOLERANCE:.0e}); max |err| {c.max_abs:.3e}"
        return (
            f"{verdict}: max |err| {c.max_abs:.3e}, JAX {self.config.dtype} max |err| {c.jax_max_abs:.3e} "
            f"(tolerance {self.criterion}); rel. Frobenius {c.rel_fro:.3e} vs JAX {c.jax_rel_fro:.3e}"
        )


def build(config: VerifyConfig) -> ir.Module:
    """The diagram of `config` (needs an active napkin context and location)."""
    return build_builtin(
        config.diagram,
        config.dims,
        config.dtype,
        causal=config.causal,
        kv_heads=config.kv_heads,
        activation=config.activation,
    )


def references(config: VerifyConfig, inputs: list[np.ndarray]) -> tuple[jax.Array, jax.Array]:
    low = jnp.dtype(NUMPY_DTYPES[config.dtype])
    if config.diagram == "matmul":
        fn: Callable = reference.matmul_ref
        extra: tuple = ()
    elif config.diagram == "attention":
        fn, extra = reference.attention_ref, (config.causal,)
    else:
        fn, extra = reference.mlp_ref, (config.activation,)
    return fn(*inputs, jnp.float64, *extra), fn(*inputs, low, *extra)


def model_tiles(config: VerifyConfig, **mapping: Any) -> dict[str, int]:
    """The given tiles, completed by the cost model's choice for `config.gpu`; `mapping` goes
    to `choose_tiles` (a backend's `feasible` limits, `tensor_cores`, `warp_rows`)."""
    from napkin_mlir.derive.tiles import choose_tiles
    from napkin_mlir.pipeline.stages import PARTITIONS

    grouped, streamed = PARTITIONS[config.diagram]
    if all(a in config.tiles for a in (*grouped, streamed)):
        return dict(config.tiles)
    options = {"causal": config.causal, "kv_heads": config.kv_heads} if config.diagram == "attention" else {}
    if config.diagram == "mlp":
        options = {"activation": config.activation}
    dtype = "f16" if config.dtype == "f32" else config.dtype  # the model prices tensor-core dtypes
    choice = choose_tiles(
        config.diagram, config.dims, dtype, config.gpu, fixed=dict(config.tiles), **mapping, **options
    )
    return {a: choice.tiles[a] for a in (*grouped, streamed) if a in choice.tiles}


def judge(config: VerifyConfig, c: reference.Comparison) -> tuple[bool, str]:
    return judge_dtype(config.dtype, c)


def half_ulp(dtype: str, magnitude: float) -> float:
    """Half a unit in the last place of a 16-bit float `dtype` (bf16: 8 significant bits,
    f16: 11) at `magnitude`: the error of the exact value correctly rounded there."""
    bits = {"bf16": 8, "f16": 11}.get(dtype)
    if bits is None or magnitude <= 0.0 or not math.isfinite(magnitude):
        return 0.0
    return 0.5 * 2.0 ** (math.floor(math.log2(magnitude)) - (bits - 1))


def judge_dtype(dtype: str, c: reference.Comparison) -> tuple[bool, str]:
    """The correctness rule for an output of element type `dtype`: (passed, the criterion).
    16-bit: at most twice JAX's max error in that dtype, where JAX's error counts as at
    least half an ulp at the reference's largest magnitude (the error of the correctly
    rounded result there; JAX can land below it on a few elements by luck, and a
    faithfully rounded kernel one ulp off there must not fail for that)."""
    if dtype in ("f32", "f64"):
        return c.rel_fro <= F32_TOLERANCE, f"rel. Frobenius <= {F32_TOLERANCE:.0e}"
    floor = half_ulp(dtype, c.ref_max_abs)
    bound = LOW_PRECISION_FACTOR * max(c.jax_max_abs, floor) + LOW_PRECISION_FLOOR
    return c.max_abs <= bound, f"max |err| <= 2 x max(JAX's, half an ulp of max |ref|) + 1e-6 = {bound:.3e}"


def compile_cpu(
    config: VerifyConfig, log: Callable[[str], None] = lambda _: None
) -> tuple[CpuKernel, FunctionSignature]:
    """`config`'s diagram through its derivation and the CPU backend: the kernel and its signature."""
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        tiles = model_tiles(config) if config.gpu and config.tiled else config.tiles
        compile_to_loops(module, config.diagram, diagram_sizes(module), tiles, config.tiled, log=log)
        kernel = CpuKernel(module)
    return kernel, next(iter(kernel.signatures.values()))


def verify(config: VerifyConfig, log: Callable[[str], None] = lambda _: None) -> VerifyResult:
    """Compile `config`'s diagram, run it on the CPU and compare with JAX."""
    t0 = time.perf_counter()
    kernel, sig = compile_cpu(config, log)
    t1 = time.perf_counter()
    inputs = reference.random_inputs(sig.inputs, config.seed)
    (out,) = kernel(sig.name, *inputs)
    t2 = time.perf_counter()
    ref64, ref_low = references(config, inputs)
    comparison = reference.compare(out, ref64, ref_low)
    passed, criterion = judge(config, comparison)
    return VerifyResult(config, comparison, passed, criterion, t1 - t0, t2 - t1)
