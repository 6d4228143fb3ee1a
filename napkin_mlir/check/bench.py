"""Benchmarks: the generated kernel and a reference, side by side in one run.

Each measurement warms both up, then times `repeats` calls of each, interleaved, and reports
medians and their ratio (napkin / reference; below 1 means the generated kernel is faster).
Results are written as JSON under `bench/results/`. The CPU benchmark compares with
`jax.nn.dot_product_attention` compiled by XLA for the host.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from napkin_mlir.backends.cpu import NUMPY_DTYPES
from napkin_mlir.check import reference
from napkin_mlir.check.harness import VerifyConfig, compile_cpu

RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass(frozen=True)
class Measurement:
    """One benchmarked problem: medians in seconds and the ratio napkin / reference."""

    diagram: str
    dims: dict[str, int]
    dtype: str
    causal: bool
    tiles: dict[str, int]
    napkin_median_s: float
    reference_median_s: float
    ratio: float
    gflops_napkin: float
    gflops_reference: float
    repeats: int
    max_abs_diff: float
    reference_name: str = "jax.nn.dot_product_attention (XLA, CPU)"
    max_rel_diff: float = 0.0  # max |napkin - reference| / max |reference|
    napkin_times_s: list[float] = field(default_factory=list)
    reference_times_s: list[float] = field(default_factory=list)


def attention_flops(dims: dict[str, int], causal: bool) -> float:
    """4·b·h·q·x·d (two matmuls), halved for causal, as FlashAttention counts."""
    flops = 4.0 * dims["b"] * dims["h"] * dims["q"] * dims["x"] * dims["d"]
    return flops / 2 if causal else flops


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def side_by_side(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int, warmup: int
) -> tuple[Any, Any, list[float], list[float]]:
    """Warm both up, then time `repeats` calls of each, interleaved: (our last result, theirs,
    our times, their times)."""
    for _ in range(warmup):
        a, b = ours(), theirs()
    a_t, b_t = [], []
    for _ in range(repeats):
        a_t.append(_timed(ours))
        b_t.append(_timed(theirs))
    return a, b, a_t, b_t


def progress(i: int, n: int, label: str) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label:<40}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def bench_attention_cpu(config: VerifyConfig, repeats: int = 10, warmup: int = 2) -> Measurement:
    """Time the derived attention kernel and XLA's attention on the same inputs."""
    kernel, sig = compile_cpu(config)
    inputs = reference.random_inputs(sig.inputs, config.seed)
    dtype = jnp.dtype(NUMPY_DTYPES[config.dtype])
    qj, kj, vj = (reference._bhqd_to_jax(jnp.asarray(t, dtype)) for t in inputs)
    xla = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=config.causal, implementation="xla"))

    def run_napkin() -> np.ndarray:
        return kernel(sig.name, *inputs)[0]

    def run_xla() -> jax.Array:
        return xla(qj, kj, vj).block_until_ready()

    ours, theirs, ours_t, theirs_t = side_by_side(run_napkin, run_xla, repeats, warmup)
    theirs_bhqd = np.asarray(jnp.transpose(theirs, (0, 2, 1, 3)), np.float64).reshape(ours.shape)
    diff = float(np.max(np.abs(np.asarray(ours, np.float64) - theirs_bhqd)))
    ours_m, theirs_m = statistics.median(ours_t), statistics.median(theirs_t)
    flops = attention_flops(config.dims, config.causal)
    return Measurement(
        diagram=config.diagram,
        dims=dict(config.dims),
        dtype=config.dtype,
        causal=config.causal,
        tiles=dict(config.tiles),
        napkin_median_s=ours_m,
        reference_median_s=theirs_m,
        ratio=ours_m / theirs_m,
        gflops_napkin=flops / ours_m / 1e9,
        gflops_reference=flops / theirs_m / 1e9,
        repeats=repeats,
        max_abs_diff=diff,
        napkin_times_s=ours_t,
        reference_times_s=theirs_t,
    )


def write_results(kind: str, measurements: list[Measurement], out: Path | None = None) -> Path:
    """Write measurements and the machine they came from as JSON; return the path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out or RESULTS_DIR / f"{kind}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "measurements": [asdict(m) for m in measurements],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def contraction_flops(module: object) -> float:
    """2 · (the product of every axis a contraction touches), summed over the diagram's
    contractions: the multiply-adds that dominate a diagram's work."""
    from napkin_mlir.ir.arrays import ArrayType
    from napkin_mlir.ir.regions import diagram_functions

    total = 0.0
    for op in diagram_functions(module.operation)[0].regions[0].blocks[0].operations:  # type: ignore[attr-defined]
        if op.operation.name == "napkin.contract":
            sizes: dict[str, int] = {}
            for v in op.operands:
                sizes.update(ArrayType.from_mlir(v.type).sizes)
            total += 2.0 * float(np.prod(list(sizes.values())))
    return total


def bench_diagram_cpu(
    path: str,
    dims: dict[str, int] | None,
    dtype: str | None,
    tiles: dict[str, int] | None,
    seed: int = 0,
    repeats: int = 10,
    warmup: int = 2,
) -> Measurement:
    """Time any diagram's derived CPU program against XLA's compilation of the same diagram
    (its JAX interpretation in the declared dtypes, under `jax.jit`), on the same inputs."""
    from mlir import ir

    from napkin_mlir.check.diagram import compile_diagram
    from napkin_mlir.interpret import interpret
    from napkin_mlir.ir.arrays import ArrayType
    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.files import axis_sizes, load_diagram

    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, dims, dtype)
        sizes = axis_sizes(module)
        flops = contraction_flops(module)
        f = module.body.operations[0]
        arg_types = tuple(ArrayType.from_mlir(a.type) for a in f.regions[0].blocks[0].arguments)
        inputs = reference.random_inputs(arg_types, seed)
        plain = ir.Module.parse(str(module))
        xla = jax.jit(lambda *xs: interpret(plain, xs, "same", filename=path))
        xla(*inputs)[0].block_until_ready()  # trace while the diagram's context is alive
        kernel, name, _ = compile_diagram(module, tiles, None, filename=path)
    low = next((t.dtype for t in arg_types if t.dtype in ("f16", "bf16")), "f32")

    def run_napkin() -> np.ndarray:
        return kernel(name, *inputs)[0]

    def run_xla() -> jax.Array:
        return xla(*inputs)[0].block_until_ready()

    ours, theirs, ours_t, theirs_t = side_by_side(run_napkin, run_xla, repeats, warmup)
    diff = float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))
    ours_m, theirs_m = statistics.median(ours_t), statistics.median(theirs_t)
    return Measurement(
        diagram=path,
        dims=sizes,
        dtype=low,
        causal=False,
        tiles=dict(tiles or {}),
        napkin_median_s=ours_m,
        reference_median_s=theirs_m,
        ratio=ours_m / theirs_m,
        gflops_napkin=flops / ours_m / 1e9,
        gflops_reference=flops / theirs_m / 1e9,
        repeats=repeats,
        max_abs_diff=diff,
        reference_name="the diagram's JAX interpretation under jax.jit (XLA, CPU)",
        max_rel_diff=diff / max(float(np.max(np.abs(np.asarray(theirs, np.float64)))), 1e-300),
        napkin_times_s=ours_t,
        reference_times_s=theirs_t,
    )
