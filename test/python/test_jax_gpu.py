"""napkin_mlir.jax on a CUDA GPU: attention inside `jax.jit` against `jax.nn.dot_product_attention`.

Needs a CUDA GPU visible to JAX and skips without one. It imports nothing that needs the MLIR
wheels, because the GPU machine has JAX and CuPy but not them: there the kernels come from
the disk cache, compiled beforehand where the compiler runs (PTX needs no GPU):

    .venv/bin/python test/python/test_jax_gpu.py .jaxcache sm_90a                  # here
    NAPKIN_JAX_CACHE_DIR=.jaxcache python3 -m pytest -q test/python/test_jax_gpu.py  # there

Where MLIR is installed the test compiles what is missing itself. The cases cover both GPU
routes: bf16/f16 attention takes the tensor-core rule through jaxlib's kernel call; f32 the
SIMT rule (a 2-D block) through CuPy in `buffer_callback`. The rule is the runner's
(`backends/gpu/runner.py judge`: 16-bit max error at most twice JAX's own against float64
plus 1e-6, f32 relative Frobenius 1e-5), on fresh random inputs.
"""

from __future__ import annotations

import os
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from napkin_mlir import jax as nj
from napkin_mlir.backends.gpu.runner import judge

#: (dtype, causal, query shape, key/value shape), JAX's layout (batch, seq, heads, head_dim).
CASES = [
    ("bf16", True, (2, 100, 4, 64), (2, 77, 2, 64)),
    ("f16", False, (1, 130, 2, 128), (1, 257, 2, 128)),
    ("f32", True, (1, 45, 2, 32), (1, 61, 2, 32)),
]
JNP = {"f32": jnp.float32, "f16": jnp.float16, "bf16": jnp.bfloat16}


def _has_cuda() -> bool:
    try:
        return jax.default_backend() == "gpu"
    except RuntimeError:
        return False


def attention64(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool) -> np.ndarray:
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    s = np.einsum("bqnd,bxnd->bnqx", q, k) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.einsum("bnqx,bxnd->bqnd", p / p.sum(axis=-1, keepdims=True), v)


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU visible to JAX (none here)")
@pytest.mark.parametrize(("dtype", "causal", "q_shape", "kv_shape"), CASES)
def test_attention_on_the_gpu(dtype: str, causal: bool, q_shape: tuple, kv_shape: tuple) -> None:
    seed = zlib.crc32(f"{dtype}{causal}{q_shape}".encode()) + int(os.environ.get("NAPKIN_TEST_SEED", "0"))
    rng = np.random.default_rng(seed)
    q, k, v = (
        jnp.asarray(rng.standard_normal(s).astype(np.float32), JNP[dtype]) for s in (q_shape, kv_shape, kv_shape)
    )
    compiled = nj.attention_kernel(q, k, v, causal=causal)
    want_route = "xla_buffer_python_gpu_callback" if dtype == "f32" else "triton_kernel_call_ffi"
    assert compiled.call_target == want_route
    fn = jax.jit(lambda q, k, v: nj.attention(q, k, v, causal=causal))
    hlo = fn.lower(q, k, v).as_text()
    assert sum("stablehlo.custom_call" in line for line in hlo.splitlines()) == 1, hlo
    out = np.asarray(fn(q, k, v).astype(jnp.float32))
    same = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")
    exact = [np.asarray(t.astype(jnp.float32)) for t in (q, k, v)]
    passed, errors = judge(out, attention64(*exact, causal), np.asarray(same.astype(jnp.float32)), dtype)
    assert passed, errors


def precompile(cache: str, target: str) -> None:
    """Compile every case's kernel for `target` into the disk cache `cache` (no GPU needed)."""
    os.environ["NAPKIN_JAX_CACHE_DIR"] = cache
    for dtype, causal, q_shape, kv_shape in CASES:
        q, kv = jax.ShapeDtypeStruct(q_shape, JNP[dtype]), jax.ShapeDtypeStruct(kv_shape, JNP[dtype])
        compiled = nj.attention_kernel(q, kv, kv, causal=causal, target=target)
        print(f"{compiled.label} for {target}: {compiled.call_target} [{compiled.key[:12]}]")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: test_jax_gpu.py CACHE_DIR sm_80|sm_90a")
    precompile(sys.argv[1], sys.argv[2])
