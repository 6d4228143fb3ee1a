"""JAX references for the built-in diagrams, in float64 (ground truth) and in the input dtype.

Inputs are drawn fresh from a seeded normal distribution and rounded to the dtype under
test, so the float64 reference sees exactly the values the kernel sees and every error
measured is computation error. Attention uses `jax.nn.dot_product_attention` (layout
(batch, seq, heads, head_dim)); our arrays are (b, h[, r], q, d) and are transposed here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from napkin_mlir.backends.cpu import NUMPY_DTYPES
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.segments import INTEGER_DTYPES, segment_ids

jax.config.update("jax_enable_x64", True)


def random_inputs(arrays: tuple[ArrayType, ...], seed: int) -> list[np.ndarray]:
    """Standard-normal inputs rounded to each array's dtype (never zeros); integer arrays
    (mask data) are `segment_ids`."""
    rng = np.random.default_rng(seed)
    span = max((t.shape[-1] for t in arrays if t.dtype in INTEGER_DTYPES and t.shape), default=1)
    return [
        segment_ids(t.shape, seed, span)
        if t.dtype in INTEGER_DTYPES
        else rng.standard_normal(t.shape).astype(NUMPY_DTYPES[t.dtype])
        for t in arrays
    ]


def _jnp_dtype(a: np.ndarray) -> jnp.dtype:
    return jnp.dtype(a.dtype)


def matmul_ref(a: np.ndarray, b: np.ndarray, dtype: jnp.dtype) -> jax.Array:
    return jnp.matmul(jnp.asarray(a, dtype), jnp.asarray(b, dtype))


def _bhqd_to_jax(x: jax.Array) -> jax.Array:
    """(b, h[, r], s, d) -> (b, s, h*r, d)."""
    if x.ndim == 5:
        b, h, r, s, d = x.shape
        x = x.reshape(b, h * r, s, d)
    return jnp.transpose(x, (0, 2, 1, 3))


def attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, dtype: jnp.dtype, causal: bool) -> jax.Array:
    """jax.nn.dot_product_attention in `dtype`; for float64 (the ground truth) the same formula
    written out, because dot_product_attention computes its softmax in float32."""
    qj, kj, vj = (_bhqd_to_jax(jnp.asarray(t, dtype)) for t in (q, k, v))
    if jnp.dtype(dtype) == jnp.float64:
        n, kv = qj.shape[2], kj.shape[2]
        kj, vj = jnp.repeat(kj, n // kv, axis=2), jnp.repeat(vj, n // kv, axis=2)
        s = jnp.einsum("bqnd,bxnd->bnqx", qj, kj) / np.sqrt(qj.shape[-1])
        if causal:
            s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, -jnp.inf)
        o = jnp.einsum("bnqx,bxnd->bqnd", jax.nn.softmax(s, axis=-1), vj)
    else:
        o = jax.nn.dot_product_attention(qj, kj, vj, is_causal=causal, implementation="xla")
    o = jnp.transpose(o, (0, 2, 1, 3))
    return o.reshape(q.shape)


def mlp_ref(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, dtype: jnp.dtype, activation: str) -> jax.Array:
    acts: dict[str, Callable[[jax.Array], jax.Array]] = {
        "gelu": lambda t: jax.nn.gelu(t, approximate=True),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
        "tanh": jnp.tanh,
        "exp": jnp.exp,
    }
    h = acts[activation](jnp.asarray(x, dtype) @ jnp.asarray(w1, dtype))
    return h @ jnp.asarray(w2, dtype)


@dataclass(frozen=True)
class Comparison:
    """Errors of a kernel output against the float64 reference, next to JAX's own."""

    rel_fro: float  # ||y - ref||_F / ||ref||_F
    max_abs: float
    jax_rel_fro: float  # the same for JAX computing in the input dtype
    jax_max_abs: float
    ref_max_abs: float = 0.0  # the reference's largest magnitude


def compare(out: np.ndarray, ref64: jax.Array, jax_same_dtype: jax.Array) -> Comparison:
    ref = np.asarray(ref64, np.float64)
    y = np.asarray(out, np.float64)
    j = np.asarray(jax_same_dtype.astype(jnp.float64))
    norm = float(np.linalg.norm(ref)) or 1.0
    return Comparison(
        rel_fro=float(np.linalg.norm(y - ref)) / norm,
        max_abs=float(np.max(np.abs(y - ref))),
        jax_rel_fro=float(np.linalg.norm(j - ref)) / norm,
        jax_max_abs=float(np.max(np.abs(j - ref))),
        ref_max_abs=float(np.max(np.abs(ref))) if ref.size else 0.0,
    )
