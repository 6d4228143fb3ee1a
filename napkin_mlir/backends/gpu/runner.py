"""Run a compiled napkin kernel on a GPU: check it against JAX, then time it beside JAX.

This module imports only numpy, JAX and a CUDA driver binding (CuPy), never the MLIR
bindings, so it runs on a GPU machine where only the cubin, its JSON sidecar and this file
are available:

    python -m napkin_mlir.backends.gpu.runner attention.cubin.json [--repeats 20] [--json out.json]

Steps: read the sidecar (entry, grid, block, dynamic shared memory, arguments in order,
problem), draw fresh random inputs, poison the output with NaN, launch, compare with
`jax.nn.dot_product_attention` by FlashAttention's rule (the kernel's max error against a
float64 reference at most twice that of JAX computing in the same dtype), then time the
kernel, JAX's cuDNN attention and JAX's XLA attention with CUDA events (warm-up, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# JAX would otherwise take most of the GPU's memory at its first use, beside CuPy's buffers.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

SIDECAR_FORMAT = 1
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


class RunnerError(Exception):
    """A bad sidecar, a missing file or device, a failed launch: reported as `error: ...`."""


@dataclass(frozen=True)
class Arg:
    name: str
    role: str
    dtype: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]


@dataclass(frozen=True)
class Sidecar:
    binary: Path
    target: str
    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dynamic_smem_bytes: int
    args: tuple[Arg, ...]
    problem: dict[str, Any]


def _triple(value: Any, what: str) -> tuple[int, int, int]:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and v > 0 for v in value)):
        raise RunnerError(f"sidecar: '{what}' must be three positive integers, got {value!r}")
    return (value[0], value[1], value[2])


def load_sidecar(path: Path) -> Sidecar:
    """Parse and validate a kernel sidecar (the binary path is relative to it)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunnerError(f"cannot read sidecar {path}: {err}") from None
    return parse_sidecar(data, Path(path))


def parse_sidecar(data: dict[str, Any], path: Path) -> Sidecar:
    """Validate a sidecar's contents (`path`: where it lives, for messages and the binary)."""
    if data.get("format") != SIDECAR_FORMAT:
        raise RunnerError(f"sidecar {path}: unsupported format {data.get('format')!r} (expected {SIDECAR_FORMAT})")
    for key in ("binary", "target", "entry", "grid", "block", "dynamic_smem_bytes", "args"):
        if key not in data:
            raise RunnerError(f"sidecar {path}: missing '{key}'")
    args = []
    for i, a in enumerate(data["args"]):
        if a.get("dtype") not in DTYPES or a.get("role") not in ("input", "output"):
            raise RunnerError(f"sidecar {path}: argument #{i} has a bad dtype or role: {a!r}")
        args.append(Arg(a["name"], a["role"], a["dtype"], tuple(a["shape"]), tuple(a["axes"])))
    if not any(a.role == "output" for a in args):
        raise RunnerError(f"sidecar {path}: no output argument")
    smem = data["dynamic_smem_bytes"]
    if not isinstance(smem, int) or smem < 0:
        raise RunnerError(f"sidecar {path}: bad dynamic_smem_bytes {smem!r}")
    return Sidecar(
        binary=Path(path).parent / data["binary"],
        target=data["target"],
        entry=data["entry"],
        grid=_triple(data["grid"], "grid"),
        block=_triple(data["block"], "block"),
        dynamic_smem_bytes=smem,
        args=tuple(args),
        problem=dict(data.get("problem", {})),
    )


def numpy_dtype(dtype: str) -> np.dtype:
    if dtype == "bf16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(DTYPES[dtype])


def make_inputs(side: Sidecar, seed: int) -> dict[str, np.ndarray]:
    """Fresh standard-normal inputs in each argument's dtype; outputs poisoned with NaN."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for a in side.args:
        if a.role == "input":
            arrays[a.name] = rng.standard_normal(a.shape).astype(numpy_dtype(a.dtype))
        else:
            arrays[a.name] = np.full(a.shape, np.nan, dtype=numpy_dtype(a.dtype))
    return arrays


def to_jax_layout(x: np.ndarray) -> np.ndarray:
    """(b, h[, r], s, d) -> (b, s, h*r, d), the layout of jax.nn.dot_product_attention."""
    if x.ndim == 5:
        b, h, r, s, d = x.shape
        x = x.reshape(b, h * r, s, d)
    return np.transpose(x, (0, 2, 1, 3))


def from_jax_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.transpose(np.asarray(x), (0, 2, 1, 3)).reshape(shape)


def judge(out: np.ndarray, ref64: np.ndarray, ref_same: np.ndarray, dtype: str) -> tuple[bool, dict[str, float]]:
    """FlashAttention's rule for 16-bit types, relative Frobenius 1e-5 for f32."""
    y, r, j = (np.asarray(t, np.float64) for t in (out, ref64, ref_same))
    norm = float(np.linalg.norm(r)) or 1.0
    errs = {
        "max_abs": float(np.max(np.abs(y - r))) if np.all(np.isfinite(y)) else float("inf"),
        "rel_fro": float(np.linalg.norm(y - r) / norm) if np.all(np.isfinite(y)) else float("inf"),
        "ref_max_abs": float(np.max(np.abs(j - r))),
    }
    if dtype == "f32":
        return errs["rel_fro"] <= 1e-5, errs
    return errs["max_abs"] <= 2 * errs["ref_max_abs"] + 1e-6, errs


#: Score-matrix elements the float64 reference may materialise at once (2 GiB).
REFERENCE_BUDGET = 1 << 28


def check_slice(side: Sidecar) -> int:
    """How many (batch 0) key/value heads the correctness check covers: all of them when the
    float64 score matrices fit REFERENCE_BUDGET, else as many as fit (at least one)."""
    q_arg = next(a for a in side.args if a.name == "Q")
    dims = dict(zip(q_arg.axes, q_arg.shape, strict=True))
    k_arg = next(a for a in side.args if a.name == "K")
    x = dict(zip(k_arg.axes, k_arg.shape, strict=True))["x"]
    per_head = dims.get("r", 1) * dims["q"] * x
    heads = dims["h"] if dims["b"] * dims["h"] * per_head <= REFERENCE_BUDGET else max(1, REFERENCE_BUDGET // per_head)
    return min(heads, dims["h"])


def attention_references(inputs: dict[str, np.ndarray], side: Sidecar) -> tuple[np.ndarray, np.ndarray, Any, tuple]:
    """float64 ground truth and JAX in the kernel's dtype, in the kernel's layout, for the
    slice of the problem `check_slice` picks (all of it unless the problem is huge).
    Returns (ref64, same, jax, index) where out[index] is the part they cover."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    causal = bool(side.problem.get("causal", False))
    heads = check_slice(side)
    q_shape = next(a for a in side.args if a.name == "Q").shape
    index = (slice(0, 1 if heads < q_shape[1] else None), slice(0, heads))
    q, k, v = (to_jax_layout(inputs[n][index]) for n in ("Q", "K", "V"))
    part_shape = inputs["Q"][index].shape
    q64, k64, v64 = (jnp.asarray(t.astype(np.float64)) for t in (q, k, v))
    n, kv = q64.shape[2], k64.shape[2]
    k64, v64 = jnp.repeat(k64, n // kv, axis=2), jnp.repeat(v64, n // kv, axis=2)
    s = jnp.einsum("bqnd,bxnd->bnqx", q64, k64) / np.sqrt(q64.shape[-1])
    if causal:
        s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, -jnp.inf)
    ref64 = np.asarray(jnp.einsum("bnqx,bxnd->bqnd", jax.nn.softmax(s, axis=-1), v64))
    same = jax.nn.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), is_causal=causal)
    return from_jax_layout(ref64, part_shape), from_jax_layout(np.asarray(same), part_shape), jax, index


def _launch(cp: Any, side: Sidecar) -> Any:
    module = cp.RawModule(path=str(side.binary))
    kernel = module.get_function(side.entry)
    if side.dynamic_smem_bytes > 48 * 1024:
        kernel.max_dynamic_shared_size_bytes = side.dynamic_smem_bytes
    return kernel


def _time_ms(cp: Any, fn: Any, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return times


def run(sidecar: Path, repeats: int = 20, warmup: int = 5, seed: int = 0) -> dict[str, Any]:
    """Check and time one kernel; returns a JSON-able report."""
    try:
        import cupy as cp
    except ImportError:
        raise RunnerError("CuPy is not installed: the GPU runner needs a CUDA driver binding") from None
    side = load_sidecar(sidecar)
    if not side.binary.exists():
        raise RunnerError(f"kernel binary {side.binary} not found")
    if cp.cuda.runtime.getDeviceCount() < 1:
        raise RunnerError("no CUDA device")
    if side.problem.get("diagram") != "attention":
        raise RunnerError(f"the runner checks attention kernels only, got {side.problem.get('diagram')!r}")
    host = make_inputs(side, seed)
    device = {n: cp.asarray(a.view(np.uint16) if a.dtype.kind == "V" else a) for n, a in host.items()}
    kernel = _launch(cp, side)
    params = tuple(device[a.name] for a in side.args)

    def launch() -> None:
        kernel(side.grid, side.block, params, shared_mem=side.dynamic_smem_bytes)

    launch()
    cp.cuda.Device().synchronize()
    out_arg = next(a for a in side.args if a.role == "output")
    out = cp.asnumpy(device[out_arg.name])
    if out.dtype != host[out_arg.name].dtype:
        out = out.view(host[out_arg.name].dtype)
    ref64, same, jax, index = attention_references(host, side)
    passed, errors = judge(out[index], ref64, same, out_arg.dtype)
    if not np.all(np.isfinite(out.astype(np.float32))):
        passed, errors["non_finite_outside_check"] = False, True
    import jax.numpy as jnp

    causal = bool(side.problem.get("causal", False))
    q, k, v = (jnp.asarray(to_jax_layout(host[n])) for n in ("Q", "K", "V"))
    report: dict[str, Any] = {
        "sidecar": str(sidecar),
        "passed": passed,
        "errors": errors,
        "checked_heads": check_slice(side),
        "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
    }
    times = {"napkin": _time_ms(cp, launch, repeats, warmup)}
    for impl in ("cudnn", "xla"):
        try:
            fn = jax.jit(
                lambda q, k, v, impl=impl: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)
            )
            fn(q, k, v).block_until_ready()
            times[impl] = _time_ms(cp, lambda fn=fn: fn(q, k, v).block_until_ready(), repeats, warmup)
        except Exception as err:  # an implementation unavailable for this shape or dtype
            report[f"{impl}_unavailable"] = str(err).splitlines()[0]
    dims = side.problem.get("dims", {})
    flops = 4.0 * np.prod([dims.get(a, 1) for a in ("b", "h", "q", "x", "d")]) / (2 if causal else 1)
    report["median_ms"] = {k: statistics.median(v) for k, v in times.items()}
    report["tflops"] = {k: flops / (m * 1e-3) / 1e12 for k, m in report["median_ms"].items()}
    if "cudnn" in report["median_ms"]:
        report["ratio_to_cudnn"] = report["median_ms"]["napkin"] / report["median_ms"]["cudnn"]
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="gpu_runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sidecars", nargs="+", type=Path, help="kernel sidecars (.json) or directories of them")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    reports, ok = [], True
    sidecars: list[Path] = []
    for path in args.sidecars:
        sidecars += sorted(path.glob("*.json")) if path.is_dir() else [path]
    sidecars = [s for s in sidecars if s.name != "results.json"]
    try:
        for i, s in enumerate(sidecars, start=1):
            print(f"[{i}/{len(sidecars)}] {s.name}", file=sys.stderr, flush=True)
            r = run(s, args.repeats, args.warmup, args.seed)
            reports.append(r)
            ok = ok and r["passed"]
            print(f"{'PASS' if r['passed'] else 'FAIL'} {s}: {r['errors']} median ms {r['median_ms']}")
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(
            json.dumps({"device": reports[0]["device"] if reports else None, "runs": reports}, indent=2) + "\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
