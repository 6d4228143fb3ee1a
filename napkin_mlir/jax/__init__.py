"""napkin kernels as JAX operations, inside `jax.jit`, with gradients.

    import jax, jax.numpy as jnp
    from napkin_mlir import jax as nj

    o = jax.jit(lambda q, k, v: nj.attention(q, k, v, causal=True))(q, k, v)   # (B, T, N, H)
    mlp = nj.kernel("examples/swiglu_mlp.mlir")                              # any diagram
    y = jax.jit(lambda x, w1, w3, w2: mlp(x, w1, w3, w2))(x, w1, w3, w2)
    g = jax.grad(lambda q: nj.attention(q, k, v).sum())(q)

`attention` takes JAX's layout (that of `jax.nn.dot_product_attention`, grouped-query when
key/value have fewer heads); `kernel(diagram)` turns any diagram (a .mlir path, MLIR text,
a builder-made module or `napkin_mlir.api.Diagram`) into a function of its inputs. Each call
becomes one custom call in the HLO: a typed-FFI handler JIT-compiled with the kernel on the
CPU (`cpu_ffi.py`), the PTX through jaxlib's kernel call (or CuPy in `buffer_callback`) on a
GPU (`gpu_call.py`). Kernels are compiled once per shapes, dtypes and target and cached in
memory and on disk (`cache.py`; `NAPKIN_JAX_LOG=1` reports compiles and hits,
`NAPKIN_JAX_CACHE_DIR` moves the disk cache). Gradients: `jax.custom_vjp`, whose backward is
the VJP of the diagram's JAX interpretation until derived backward kernels exist (`ops.py`).

Importing this package needs JAX but not the MLIR wheels; compiling a kernel (a cache miss)
and the gradient's interpretation do.
"""

from __future__ import annotations

from napkin_mlir.jax.cache import CacheStats, cache_stats, compiler_version
from napkin_mlir.jax.ops import CompiledKernel, NapkinFunction, attention, attention_kernel, default_target, kernel

__all__ = [
    "CacheStats",
    "CompiledKernel",
    "NapkinFunction",
    "attention",
    "attention_kernel",
    "cache_stats",
    "compiler_version",
    "default_target",
    "kernel",
]
