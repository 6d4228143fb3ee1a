"""Run a compiled napkin kernel on a GPU: check it against JAX, then time it beside JAX.

This module imports only numpy, JAX and a CUDA driver binding (CuPy), never the MLIR
bindings, so it runs on a GPU machine where only the cubin, its JSON sidecar and this file
are available:

    python -m napkin_mlir.backends.gpu.runner attention.cubin.json [--repeats 20] [--json out.json]

Steps: read the sidecar (entry, grid, block, dynamic shared memory, arguments in order,
problem), take inputs, poison the outputs with NaN, launch, judge by FlashAttention's rule (the
kernel's max error against a float64 reference at most twice that of JAX computing in the same
dtype; f32: relative Frobenius 1e-5), then time. Two kinds of kernel:

* the built-in attention: fresh random inputs, references from `jax.nn.dot_product_attention`
  (float64 and same dtype), timed beside JAX's cuDNN and XLA attention and PyTorch's
  `scaled_dot_product_attention` (its default choice, and its cuDNN backend);
* a diagram file's kernel (`napkin bench FILE --target gpu --prepare DIR`): the sidecar names
  the inputs and the diagram's interpretation in float64 and in the same dtype
  (`problem.reference.arrays`, computed where the compiler runs) and the interpretation under
  jax.jit exported for CUDA (`problem.reference.xla`), which is timed beside the kernel. A
  kernel of the backward of plain attention (`napkin bench FILE --grad`: `problem.backward_of`
  names the forward's Q, K, V and scale) is also timed beside JAX's whole backward (dQ, dK, dV
  by `jax.vjp` of `jax.nn.dot_product_attention`, cuDNN and XLA), whose FLOPs are 2.5 times
  the forward's: the backward kernels' times add up to its peer.

Every implementation is timed the same way: calls issued back to back in batches, the device
synchronised after each batch, the median over batches of the time per call (after warm-up).
With `--jsonl FILE` each kernel's report is appended as it finishes and kernels already in
the file are skipped, so a run that a crashed kernel ended can go on in a fresh process (the
kernel that was running is recorded as crashed).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# JAX would otherwise take most of the GPU's memory at its first use, beside CuPy's buffers.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

SIDECAR_FORMAT = 1
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "i32": "int32"}


class RunnerError(Exception):
    """A bad sidecar, a missing file or device, a failed launch: reported as `error: ...`."""


@dataclass(frozen=True)
class Arg:
    name: str
    role: str  # "input", "output" or "tensormap"
    dtype: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    tensor_map: dict[str, Any] | None = None


#: TMA swizzle modes (bytes) -> the driver's `CUtensorMapSwizzle` (NONE, 32B, 64B, 128B).
SWIZZLE_ENUM = {0: 0, 32: 1, 64: 2, 128: 3}
#: Element types -> the driver's `CUtensorMapDataType` (FLOAT16, FLOAT32, BFLOAT16, INT32).
TENSOR_MAP_DTYPE = {"f16": 6, "f32": 7, "bf16": 9, "i32": 3}


@dataclass(frozen=True)
class TensorMap:
    """A TMA tensor map in tile mode over a whole contiguous array (what
    `cuTensorMapEncodeTiled` is given): every list innermost first; `strides` in bytes for
    the dims after the first; out-of-bounds elements of a box read as zeros."""

    of: str  # the array's argument name
    dtype: str
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    box: tuple[int, ...]
    swizzle: int  # bytes: 0, 32, 64 or 128

    @property
    def box_bytes(self) -> int:
        """The bytes one load brings (out-of-bounds elements included): its mbarrier's tx count."""
        return int(np.prod(self.box)) * numpy_dtype(self.dtype).itemsize


def tensor_map(arg: Arg, args: tuple[Arg, ...] | list[Arg]) -> TensorMap:
    """The tensor map a "tensormap" argument describes, over the array it names (checked as
    the driver and the PTX ISA require: rank 1-5, box sizes 1-256, an inner box of a multiple
    of 16 bytes and, swizzled, of exactly the swizzle's bytes)."""
    spec = arg.tensor_map or {}
    source = next((a for a in args if a.name == spec.get("of") and a.role != "tensormap"), None)
    if source is None:
        raise RunnerError(f"tensor map {arg.name}: 'of' names no array argument ({spec.get('of')!r})")
    dims = tuple(reversed(source.shape))
    box = tuple(int(b) for b in spec.get("box", ()))
    swizzle = spec.get("swizzle", 0)
    item = numpy_dtype(source.dtype).itemsize
    strides, acc = [], item
    for n in dims[:-1]:
        acc *= n
        strides.append(acc)
    problems = []
    if not 1 <= len(dims) <= 5 or len(box) != len(dims):
        problems.append(f"a box of one size per dimension of {source.name} {source.shape} (rank 1-5), got {list(box)}")
    elif not all(1 <= b <= 256 for b in box):
        problems.append(f"box sizes in 1..256, got {list(box)}")
    elif swizzle not in SWIZZLE_ENUM:
        problems.append(f"a swizzle of 0, 32, 64 or 128 bytes, got {swizzle!r}")
    elif (box[0] * item) % 16 or (swizzle and box[0] * item != swizzle):
        problems.append(f"an inner box of a multiple of 16 bytes (swizzled: of {swizzle}), got {box[0] * item}")
    elif any(s % 16 for s in strides):
        problems.append(f"byte strides that are multiples of 16, got {strides}")
    if problems:
        raise RunnerError(f"tensor map {arg.name}: " + "; ".join(problems))
    return TensorMap(source.name, source.dtype, dims, tuple(strides), box, int(swizzle))


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
        if a.get("dtype") not in DTYPES or a.get("role") not in ("input", "output", "tensormap"):
            raise RunnerError(f"sidecar {path}: argument #{i} has a bad dtype or role: {a!r}")
        spec = a.get("tensor_map")
        if (a["role"] == "tensormap") != isinstance(spec, dict):
            raise RunnerError(f"sidecar {path}: argument #{i}: a tensor map (and only one) describes its 'tensor_map'")
        args.append(Arg(a["name"], a["role"], a["dtype"], tuple(a["shape"]), tuple(a["axes"]), spec))
    if not any(a.role == "output" for a in args):
        raise RunnerError(f"sidecar {path}: no output argument")
    for a in args:
        if a.role == "tensormap":
            try:
                tensor_map(a, args)
            except RunnerError as err:
                raise RunnerError(f"sidecar {path}: {err}") from None
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


def make_inputs(
    side: Sidecar, seed: int, integers: Callable[[tuple[int, ...]], np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Fresh standard-normal inputs in each argument's dtype; outputs poisoned with NaN;
    integer inputs (mask data) from `integers(shape)` (the caller's segment ids)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for a in side.args:
        if a.role == "tensormap":
            continue  # encoded from its array at launch
        if a.role == "input" and a.dtype == "i32":
            if integers is None:
                raise RunnerError(
                    f"input {a.name} holds integers (mask data): its values come with the reference arrays"
                )
            arrays[a.name] = integers(tuple(a.shape))
        elif a.role == "input":
            arrays[a.name] = rng.standard_normal(a.shape, dtype=np.float32).astype(numpy_dtype(a.dtype))
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


def _time_ms(fn: Any, sync: Any, repeats: int, warmup: int, per_batch: int = 5) -> list[float]:
    """Milliseconds per call of `fn`, one figure per batch of `per_batch` back-to-back calls
    (`sync()` waits for the device before and after each batch), after `warmup` calls."""
    import time

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_batch):
            fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3 / per_batch)
    return times


def _torch_attention_times(host: dict[str, np.ndarray], causal: bool, repeats: int, warmup: int) -> dict[str, Any]:
    """PyTorch's scaled_dot_product_attention on the same inputs (its (b, h, s, d) layout is the
    kernel's): its default choice and its cuDNN backend. Empty without PyTorch or a 4-D layout."""
    try:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return {}
    if host["Q"].ndim != 4:
        return {}
    out: dict[str, Any] = {}

    def tensor(a: np.ndarray) -> Any:
        if a.dtype.kind == "V" or str(a.dtype) == "bfloat16":
            return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16).cuda()
        return torch.from_numpy(np.ascontiguousarray(a)).cuda()

    q, k, v = (tensor(host[n]) for n in ("Q", "K", "V"))
    scale = 1.0 / float(np.sqrt(host["Q"].shape[-1]))
    for name, backend in (("torch", None), ("torch_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:

            def call(backend: Any = backend) -> Any:
                if backend is None:
                    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
                with sdpa_kernel(backend):
                    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

            call()
            out[name] = _time_ms(call, torch.cuda.synchronize, repeats, warmup)
        except Exception as err:  # a backend unavailable for this shape, dtype or build
            out[f"{name}_unavailable"] = str(err).splitlines()[0] if str(err) else type(err).__name__
    return out


#: arith.cmpi's predicates by number (MLIR's order), as Python comparisons.
_CMPI = ("eq", "ne", "lt", "le", "gt", "ge", "lt", "le", "gt", "ge")


def _torch_trunc_div(a: Any, c: Any) -> Any:
    import torch

    return torch.div(a, c, rounding_mode="trunc")


#: The integer and boolean arith ops of a mask predicate, on tensors: (a, c, where, trunc_div).
_FLEX_BINARY: dict[str, Any] = {
    "addi": lambda a, c, w, t: a + c,
    "subi": lambda a, c, w, t: a - c,
    "muli": lambda a, c, w, t: a * c,
    "floordivsi": lambda a, c, w, t: a // c,
    "ceildivsi": lambda a, c, w, t: -((-a) // c),
    "divsi": lambda a, c, w, t: t(a, c),
    "remsi": lambda a, c, w, t: a - c * t(a, c),
    # unsigned forms: the compiler uses them only where the dividend is >= 0 and the divisor > 0
    "divui": lambda a, c, w, t: a // c,
    "ceildivui": lambda a, c, w, t: -((-a) // c),
    "remui": lambda a, c, w, t: a % c,
    "minsi": lambda a, c, w, t: w(a < c, a, c),
    "maxsi": lambda a, c, w, t: w(a > c, a, c),
    "andi": lambda a, c, w, t: a & c,
    "ori": lambda a, c, w, t: a | c,
    "xori": lambda a, c, w, t: a ^ c,
}


def flex_predicate(mask: dict[str, Any], args: list[Any], where: Any, trunc_div: Any) -> Any:
    """A mask's predicate (the sidecar's data: ops in order, numbered values) on `args` (i, j,
    n_rows, n_cols, the arrays' values): tensors of FlexAttention's `mask_mod` (`where` =
    torch.where, `trunc_div` truncating division), or numpy arrays in the tests."""
    values = list(args)
    for s in mask["steps"]:
        x = [values[o] for o in s["operands"]]
        op = s["name"].removeprefix("arith.")
        if op == "constant":
            value = s["value"]
            values.append(value == "true" if value in ("true", "false") else int(value))
        elif op == "cmpi":
            a, c = x
            name = _CMPI[s["predicate"]]
            values.append({"eq": a == c, "ne": a != c, "lt": a < c, "le": a <= c, "gt": a > c, "ge": a >= c}[name])
        elif op == "select":
            values.append(where(x[0], x[1], x[2]))
        elif op in ("index_cast", "extsi", "extui", "trunci"):
            values.append(x[0])
        else:
            values.append(_FLEX_BINARY[op](x[0], x[1], where, trunc_div))
    return values[mask["result"]]


def _flex_times(
    side: Sidecar,
    host: dict[str, np.ndarray],
    refs: dict[str, tuple[np.ndarray, np.ndarray]],
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """PyTorch's FlexAttention computing the same masked attention (the sidecar's `flex`: Q,
    K, V, the scale, each mask's predicate as data, turned into a `mask_mod` of torch ops):
    the time of `create_block_mask` (FlexAttention evaluates the mask densely to find the
    blocks to skip) and of the compiled `flex_attention`, and its max error against the
    float64 reference. Empty without PyTorch's FlexAttention or a `flex` description."""
    flex = side.problem.get("flex")
    if not flex:
        return {}
    try:
        import torch
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as err:
        return {"flex_unavailable": str(err)}

    def tensor(a: np.ndarray) -> Any:
        if a.dtype.kind == "V" or str(a.dtype) == "bfloat16":
            return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16).cuda()
        return torch.from_numpy(np.ascontiguousarray(a)).cuda()

    try:
        q, k, v = (tensor(host[flex[n]]) for n in ("q", "k", "v"))
        n_rows, n_cols = flex["extents"]
        arrays = {name: tensor(host[name]) for m in flex["masks"] for name, _ in m["arrays"]}

        def mask_mod(b: Any, h: Any, i: Any, j: Any) -> Any:
            keep = None
            where = {"b": b, "h": h, "q": i, "x": j}
            for m in flex["masks"]:
                scalars = [arrays[name][tuple(where[a] for a in axes)] for name, axes in m["arrays"]]
                p = flex_predicate(m, [i, j, n_rows, n_cols, *scalars], torch.where, _torch_trunc_div)
                keep = p if keep is None else keep & p
            return keep

        B, H = q.shape[0], q.shape[1]
        block_mask = create_block_mask(mask_mod, B, H, n_rows, n_cols, device="cuda")
        compiled = torch.compile(flex_attention)
        out = compiled(q, k, v, block_mask=block_mask, scale=float(flex["scale"]))
        torch.cuda.synchronize()
        times: dict[str, Any] = {
            "flex": _time_ms(
                lambda: compiled(q, k, v, block_mask=block_mask, scale=float(flex["scale"])),
                torch.cuda.synchronize,
                repeats,
                warmup,
            ),
            "flex_block_mask": _time_ms(
                lambda: create_block_mask(mask_mod, B, H, n_rows, n_cols, device="cuda"),
                torch.cuda.synchronize,
                max(3, repeats // 4),
                1,
            ),
        }
        ref64 = next(iter(refs.values()))[0]
        times["flex_max_abs_error"] = float(np.max(np.abs(out.float().cpu().numpy() - ref64)))
        return times
    except Exception as err:  # FlexAttention unavailable for this build, shape or predicate
        return {"flex_unavailable": str(err).splitlines()[0] if str(err) else type(err).__name__}


def encode_tensor_map(m: TensorMap, address: int) -> bytes:
    """The 128-byte `CUtensorMap` of `m` over the device array at `address`
    (`cuTensorMapEncodeTiled` of cuda-python's driver bindings: tile mode, no interleave, no
    L2 promotion, out-of-bounds elements read as zeros)."""
    import ctypes

    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            from cuda import cuda as driver  # cuda-python before 12.6
        except ImportError:
            raise RunnerError("cuda-python is not installed: TMA tensor maps need cuTensorMapEncodeTiled") from None
    err, encoded = driver.cuTensorMapEncodeTiled(
        driver.CUtensorMapDataType(TENSOR_MAP_DTYPE[m.dtype]),
        len(m.dims),
        address,
        list(m.dims),
        list(m.strides),
        list(m.box),
        [1] * len(m.dims),
        driver.CUtensorMapInterleave(0),
        driver.CUtensorMapSwizzle(SWIZZLE_ENUM[m.swizzle]),
        driver.CUtensorMapL2promotion(0),
        driver.CUtensorMapFloatOOBfill(0),
    )
    if int(err) != 0:
        raise RunnerError(f"cuTensorMapEncodeTiled failed for the tensor map of {m.of}: {err}")
    return ctypes.string_at(encoded.getPtr(), 128)


def device_tensor_maps(cp: Any, side: Sidecar, device: dict[str, Any]) -> dict[str, Any]:
    """Each tensor-map argument as a 128-byte device buffer holding the map over its array's
    device copy (the kernel takes a pointer to it)."""
    maps = {}
    for a in side.args:
        if a.role == "tensormap":
            m = tensor_map(a, side.args)
            encoded = encode_tensor_map(m, int(device[m.of].data.ptr))
            maps[a.name] = cp.asarray(np.frombuffer(encoded, np.uint8))
    return maps


def _device_arrays(cp: Any, host: dict[str, np.ndarray]) -> dict[str, Any]:
    return {n: cp.asarray(a.view(np.uint16) if a.dtype.kind == "V" else a) for n, a in host.items()}


def _output(cp: Any, device: dict[str, Any], host: dict[str, np.ndarray], name: str) -> np.ndarray:
    out = cp.asnumpy(device[name])
    return out.view(host[name].dtype) if out.dtype != host[name].dtype else out


def file_inputs(side: Sidecar) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A diagram file's kernel: its inputs (outputs poisoned with NaN) and, per output, the
    interpretation's float64 and same-dtype results, from the arrays the sidecar names."""
    ref = side.problem["reference"]
    path = side.binary.parent / ref["arrays"]
    try:
        data = np.load(path)
    except OSError as err:
        raise RunnerError(f"cannot read the reference arrays {path}: {err}") from None
    host: dict[str, np.ndarray] = {}
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for a in side.args:
        if a.role == "tensormap":
            continue  # encoded from its array at launch
        if a.role == "input":
            x = data[f"in:{a.name}"]
            host[a.name] = x.view(numpy_dtype(a.dtype)) if a.dtype == "bf16" else x
            if host[a.name].shape != a.shape:
                raise RunnerError(f"{path}: input {a.name} has shape {host[a.name].shape}, the kernel takes {a.shape}")
        else:
            host[a.name] = np.full(a.shape, np.nan, dtype=numpy_dtype(a.dtype))
            same = data[f"same:{a.name}"]
            refs[a.name] = (data[f"ref64:{a.name}"], same.view(numpy_dtype(a.dtype)) if a.dtype == "bf16" else same)
    return host, refs


def _xla_times(side: Sidecar, host: dict[str, np.ndarray], repeats: int, warmup: int) -> dict[str, Any]:
    """The diagram's interpretation compiled by XLA for this GPU (the exported function)."""
    import jax

    path = side.binary.parent / side.problem["reference"]["xla"]
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
        args = [jax.device_put(host[a.name]) for a in side.args if a.role == "input"]
        fn = jax.jit(exported.call)
        jax.block_until_ready(fn(*args))
        last: list[Any] = []

        def call() -> None:
            last[:] = [fn(*args)]

        return {"xla": _time_ms(call, lambda: jax.block_until_ready(last), repeats, warmup)}
    except Exception as err:  # an export this JAX cannot load or XLA cannot compile
        return {"xla_unavailable": str(err).splitlines()[0] if str(err) else type(err).__name__}


def _backward_times(side: Sidecar, host: dict[str, np.ndarray], repeats: int, warmup: int) -> dict[str, Any]:
    """For a kernel of the differentiated program of plain attention (`problem.backward_of`:
    the forward's Q, K, V names and scale, no mask), JAX's whole backward at the same sizes,
    dQ, dK and dV by `jax.vjp` of `jax.nn.dot_product_attention` with cuDNN and with XLA, to
    set beside the sum of the backward kernels; and its FLOPs (2.5 times the forward's)."""
    import jax
    import jax.numpy as jnp

    desc = side.problem["backward_of"]
    names = (desc["q"], desc["k"], desc["v"])
    if any(n not in host or host[n].ndim != 4 for n in names):
        return {}  # the pre-pass: no Q, K and V among its arguments
    q, k, v = (jnp.asarray(to_jax_layout(host[n])) for n in names)
    do = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape[:3] + v.shape[3:]), q.dtype)
    b, s_q, h, d = q.shape
    out: dict[str, Any] = {"backward_flops": 2.5 * 4.0 * b * h * s_q * k.shape[1] * d}
    for impl in ("cudnn", "xla"):
        try:

            def grads(q: Any, k: Any, v: Any, do: Any, impl: str = impl) -> Any:
                attention = lambda q, k, v: jax.nn.dot_product_attention(  # noqa: E731
                    q, k, v, scale=desc["scale"], implementation=impl
                )
                return jax.vjp(attention, q, k, v)[1](do)

            fn = jax.jit(grads)
            jax.block_until_ready(fn(q, k, v, do))
            last: list[Any] = []

            def call(fn: Any = fn, last: list[Any] = last) -> None:
                last[:] = [fn(q, k, v, do)]

            out[f"{impl}_backward"] = _time_ms(call, lambda last=last: jax.block_until_ready(last), repeats, warmup)
        except Exception as err:  # an implementation unavailable here (cuDNN off a GPU) or for this shape
            out[f"{impl}_backward_unavailable"] = str(err).splitlines()[0] if str(err) else type(err).__name__
    return out


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
    is_attention = side.problem.get("diagram") == "attention"
    if not is_attention and "reference" not in side.problem:
        raise RunnerError(
            f"{sidecar}: a diagram file's kernel needs its references (napkin bench FILE --target gpu --prepare DIR)"
        )
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if is_attention:
        host = make_inputs(side, seed)
    else:
        host, refs = file_inputs(side)
    device = _device_arrays(cp, host)
    device.update(device_tensor_maps(cp, side, device))
    kernel = _launch(cp, side)
    params = tuple(device[a.name] for a in side.args)

    def launch() -> None:
        kernel(side.grid, side.block, params, shared_mem=side.dynamic_smem_bytes)

    launch()
    cp.cuda.Device().synchronize()
    report: dict[str, Any] = {
        "sidecar": str(sidecar),
        "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
        "problem": {k: v for k, v in side.problem.items() if k not in ("napkin", "reference")},
        "kernel": {"grid": list(side.grid), "block": list(side.block), "smem": side.dynamic_smem_bytes},
    }
    outputs = [a for a in side.args if a.role == "output"]
    if is_attention:
        out_arg = outputs[0]
        out = _output(cp, device, host, out_arg.name)
        ref64, same, jax, index = attention_references(host, side)
        passed, errors = judge(out[index], ref64, same, out_arg.dtype)
        if not np.all(np.isfinite(out.astype(np.float32))):
            passed, errors["non_finite_outside_check"] = False, True
        report["checked_heads"] = check_slice(side)
    else:
        passed, errors = True, {}
        for a in outputs:
            ok, errs = judge(_output(cp, device, host, a.name), *refs[a.name], a.dtype)
            passed, errors[a.name] = passed and ok, errs
    report["passed"], report["errors"] = passed, errors
    if repeats <= 0:
        return report
    times: dict[str, Any] = {"napkin": _time_ms(launch, cp.cuda.Device().synchronize, repeats, warmup)}
    if is_attention:
        import jax
        import jax.numpy as jnp

        causal = bool(side.problem.get("causal", False))
        q, k, v = (jnp.asarray(to_jax_layout(host[n])) for n in ("Q", "K", "V"))
        for impl in ("cudnn", "xla"):
            try:
                fn = jax.jit(
                    lambda q, k, v, impl=impl: jax.nn.dot_product_attention(
                        q, k, v, is_causal=causal, implementation=impl
                    )
                )
                fn(q, k, v).block_until_ready()
                last: list[Any] = []

                def call(fn: Any = fn, last: list[Any] = last) -> None:
                    last[:] = [fn(q, k, v)]

                times[impl] = _time_ms(call, lambda last=last: jax.block_until_ready(last), repeats, warmup)
            except Exception as err:  # an implementation unavailable for this shape or dtype
                report[f"{impl}_unavailable"] = str(err).splitlines()[0]
        for name, value in _torch_attention_times(host, causal, repeats, warmup).items():
            (times if isinstance(value, list) else report)[name] = value
        dims = side.problem.get("dims", {})
        flops = 4.0 * np.prod([dims.get(a, 1) for a in ("b", "h", "q", "x", "d")]) / (2 if causal else 1)
    else:
        for name, value in _xla_times(side, host, repeats, warmup).items():
            (times if isinstance(value, list) else report)[name] = value
        for name, value in _flex_times(side, host, refs, repeats, warmup).items():
            (times if isinstance(value, list) else report)[name] = value
        if "backward_of" in side.problem:
            for name, value in _backward_times(side, host, repeats, warmup).items():
                (times if isinstance(value, list) else report)[name] = value
        flops = float(side.problem.get("flops") or 0.0)
    report["median_ms"] = {k: statistics.median(v) for k, v in times.items()}
    report["spread_ms"] = {k: [min(v), max(v)] for k, v in times.items()}
    if flops:
        report["tflops"] = {k: flops / (m * 1e-3) / 1e12 for k, m in report["median_ms"].items()}
    for ref in ("cudnn", "xla", "flex", "cudnn_backward"):
        if ref in report["median_ms"]:
            report[f"ratio_to_{ref}"] = report["median_ms"]["napkin"] / report["median_ms"][ref]
    if "backward_flops" in report:  # JAX's whole backward: the sum of the backward kernels is its peer
        report["tflops_backward"] = {
            k: report["backward_flops"] / (m * 1e-3) / 1e12 for k, m in report["median_ms"].items() if "backward" in k
        }
    return report


def _done(jsonl: Path | None) -> tuple[set[str], set[str]]:
    """Sidecars already reported in `jsonl`, and those started but never reported (crashed)."""
    if jsonl is None or not jsonl.exists():
        return set(), set()
    started, reported = set(), set()
    for line in jsonl.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        (started if rec.get("started") else reported).add(rec.get("sidecar", ""))
    return reported, started - reported


def _append(jsonl: Path | None, record: dict[str, Any]) -> None:
    if jsonl is not None:
        with jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _is_cuda_error(err: Exception) -> bool:
    """A CUDA error leaves the context unusable: the process must end (a fresh one goes on)."""
    return "cuda" in type(err).__module__.lower() or "CUDA_ERROR" in str(err) or "cudaError" in str(err)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="gpu_runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sidecars", nargs="+", type=Path, help="kernel sidecars (.json) or directories of them")
    p.add_argument("--repeats", type=int, default=20, help="timed batches (0: check only)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--jsonl", type=Path, default=None, help="append each report; skip kernels already there")
    p.add_argument(
        "--kernel-timeout", type=float, default=0.0, help="end the process if one kernel takes longer (s; 0: no limit)"
    )
    args = p.parse_args(argv)
    reports, ok = [], True
    sidecars: list[Path] = []
    for path in args.sidecars:
        sidecars += sorted(path.glob("*.json")) if path.is_dir() else [path]
    sidecars = [s for s in sidecars if s.name != "results.json"]
    reported, crashed = _done(args.jsonl)
    for s in sorted(crashed):
        _append(args.jsonl, {"sidecar": s, "passed": False, "crashed": True})
        print(f"CRASH {s}: the process running it ended without a report", flush=True)
        ok = False
    try:
        for i, s in enumerate(sidecars, start=1):
            if str(s) in reported | crashed:
                continue
            print(f"[{i}/{len(sidecars)}] {s.name}", file=sys.stderr, flush=True)
            _append(args.jsonl, {"sidecar": str(s), "started": True})
            if args.kernel_timeout > 0:  # a hung kernel: the process ends, a fresh one goes on
                faulthandler.dump_traceback_later(args.kernel_timeout, exit=True)
            try:
                r = run(s, args.repeats, args.warmup, args.seed)
            except RunnerError:
                raise
            except Exception as err:
                faulthandler.cancel_dump_traceback_later()
                r = {"sidecar": str(s), "passed": False, "error": f"{type(err).__name__}: {err}"[:2000]}
                _append(args.jsonl, r)
                print(f"ERROR {s}: {r['error']}", flush=True)
                if _is_cuda_error(err):
                    return 3
                reports.append(r)
                ok = False
                continue
            faulthandler.cancel_dump_traceback_later()
            _append(args.jsonl, r)
            reports.append(r)
            ok = ok and r["passed"]
            print(f"{'PASS' if r['passed'] else 'FAIL'} {s}: {r['errors']} median ms {r.get('median_ms')}", flush=True)
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _append(args.jsonl, {"all_done": True})
    if args.json:
        device = next((r["device"] for r in reports if "device" in r), None)
        args.json.write_text(json.dumps({"device": device, "runs": reports}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
