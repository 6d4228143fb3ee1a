"""The built-in diagrams: matmul, attention and mlp, parameterised by named axis sizes.

Each function returns a module holding one diagram. Low-precision inputs (f16/bf16) are
contracted with f32 accumulation and cast back, as tensor-core kernels do; attention casts
its probabilities to the input dtype before the second contraction (as FlashAttention does).

Axis names: matmul `m, n, k`; attention `b, h, q, x, d` (and `r`, the query heads sharing
one key/value head, for grouped-query attention); mlp `m, k, f, n`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir

from napkin_mlir.errors import UsageError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.builders import DiagramBuilder

ACCUMULATOR = "f32"


@dataclass(frozen=True)
class DiagramSpec:
    """A built-in diagram: its axes (required names), optional flags and builder."""

    name: str
    axes: tuple[str, ...]
    build: Callable[..., ir.Module]
    summary: str


def _check_dims(name: str, axes: tuple[str, ...], dims: dict[str, int]) -> None:
    unknown = sorted(set(dims) - set(axes))
    if unknown:
        raise UsageError(f"{name}: unknown axis '{unknown[0]}' (axes are {', '.join(axes)})")
    missing = [a for a in axes if a not in dims]
    if missing:
        raise UsageError(f"{name}: missing size for axis '{missing[0]}' (give --dims {'=..,'.join(axes)}=..)")
    for a, s in dims.items():
        if s <= 0:
            raise UsageError(f"{name}: axis '{a}' must have a positive size, got {s}")


def matmul(dims: dict[str, int], dtype: str = "f32") -> ir.Module:
    """C[m, n] = sum_k A[m, k] B[k, n]."""
    _check_dims("matmul", ("m", "n", "k"), dims)
    m, n, k = dims["m"], dims["n"], dims["k"]
    d = DiagramBuilder("matmul", A=ArrayType(("m", "k"), (m, k), dtype), B=ArrayType(("k", "n"), (k, n), dtype))
    c = d.contract(d["A"], d["B"], ("m", "n"), dtype=ACCUMULATOR)
    return d.ret(d.cast(c, dtype))


def attention_axes(dims: dict[str, int], kv_heads: int | None) -> tuple[tuple[str, ...], dict[str, int]]:
    """Query axes and sizes; with kv_heads < h the head axis splits into (h=kv_heads, r=h/kv_heads)."""
    h = dims["h"]
    if kv_heads is None or kv_heads == h:
        return ("b", "h", "q", "d"), dict(dims)
    if kv_heads <= 0 or h % kv_heads:
        raise UsageError(f"attention: --kv-heads {kv_heads} must divide the number of heads h={h}")
    sizes = dict(dims)
    sizes["h"], sizes["r"] = kv_heads, h // kv_heads
    return ("b", "h", "r", "q", "d"), sizes


def attention(dims: dict[str, int], dtype: str = "f32", causal: bool = False, kv_heads: int | None = None) -> ir.Module:
    """O = softmax(Q K^T / sqrt(d)) V per batch and head (optionally causal, grouped-query)."""
    _check_dims("attention", ("b", "h", "q", "x", "d"), dims)
    q_axes, sz = attention_axes(dims, kv_heads)
    kv_axes = ("b", "h", "x", "d")
    d = DiagramBuilder(
        "attention",
        Q=ArrayType(q_axes, tuple(sz[a] for a in q_axes), dtype),
        K=ArrayType(kv_axes, tuple(sz[a] for a in kv_axes), dtype),
        V=ArrayType(kv_axes, tuple(sz[a] for a in kv_axes), dtype),
    )
    s_axes = (*q_axes[:-1], "x")
    s = d.contract(d["Q"], d["K"], s_axes, dtype=ACCUMULATOR)
    s = d.scale(s, 1.0 / math.sqrt(sz["d"]))
    if causal:
        s = d.causal_mask(s, rows="q", cols="x")
    p = d.cast(d.softmax(s, "x"), dtype)
    o = d.contract(p, d["V"], q_axes, dtype=ACCUMULATOR)
    return d.ret(d.cast(o, dtype))


def mlp(dims: dict[str, int], dtype: str = "f32", activation: str = "gelu") -> ir.Module:
    """Y[m, n] = act(X[m, k] W1[k, f]) W2[f, n]."""
    _check_dims("mlp", ("m", "k", "f", "n"), dims)
    m, k, f, n = dims["m"], dims["k"], dims["f"], dims["n"]
    d = DiagramBuilder(
        "mlp",
        X=ArrayType(("m", "k"), (m, k), dtype),
        W1=ArrayType(("k", "f"), (k, f), dtype),
        W2=ArrayType(("f", "n"), (f, n), dtype),
    )
    h = d.unary(activation, d.contract(d["X"], d["W1"], ("m", "f"), dtype=ACCUMULATOR))
    y = d.contract(d.cast(h, dtype), d["W2"], ("m", "n"), dtype=ACCUMULATOR)
    return d.ret(d.cast(y, dtype))


def diagram_sizes(module: ir.Module) -> dict[str, int]:
    """Axis name -> size over the arguments of the module's (first) diagram function, as built
    (with `r` for grouped-query attention): what the derivation pipelines are sized by."""
    sizes: dict[str, int] = {}
    for arg in module.body.operations[0].regions[0].blocks[0].arguments:
        sizes.update(ArrayType.from_mlir(arg.type).sizes)
    return sizes


DIAGRAMS: dict[str, DiagramSpec] = {
    "matmul": DiagramSpec("matmul", ("m", "n", "k"), matmul, "C[m,n] = A[m,k] B[k,n]"),
    "attention": DiagramSpec("attention", ("b", "h", "q", "x", "d"), attention, "softmax(Q K^T / sqrt(d)) V"),
    "mlp": DiagramSpec("mlp", ("m", "k", "f", "n"), mlp, "act(X W1) W2"),
}


def build_builtin(
    name: str,
    dims: dict[str, int],
    dtype: str = "f32",
    causal: bool = False,
    kv_heads: int | None = None,
    activation: str = "gelu",
) -> ir.Module:
    """The built-in diagram `name` at `dims` (needs an active napkin context and location);
    `causal` and `kv_heads` apply to attention, `activation` to mlp."""
    if dtype not in ("f32", "f16", "bf16"):
        raise UsageError(f"unsupported dtype '{dtype}' (expected f32, f16 or bf16)")
    if name == "matmul":
        return matmul(dims, dtype)
    if name == "attention":
        return attention(dims, dtype, causal=causal, kv_heads=kv_heads)
    if name == "mlp":
        return mlp(dims, dtype, activation)
    raise UsageError(f"unknown diagram '{name}' (expected matmul, attention or mlp)")
