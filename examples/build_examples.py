"""Builds the example diagrams of `examples/` with the project's builders and writes each as a
`.mlir` file: `python examples/build_examples.py [--out DIR]`.

The files are the source users read and run (`napkin verify examples/softcap_attention.mlir`);
this script is how they were made, and `test/python/test_examples.py` checks that it still
writes exactly them. Sizes are small and odd on purpose: `--dims` re-sizes any axis.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from mlir import ir
from mlir.dialects import arith
from mlir.dialects import math as mmath

from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.builders import DiagramBuilder
from napkin_mlir.ir.context import napkin_context

HERE = Path(__file__).resolve().parent
ACC = "f32"
DTYPE = "bf16"
B, H, Q, X, D = 1, 2, 37, 29, 16


def _f32(value: float) -> ir.Value:
    return arith.ConstantOp(ir.F32Type.get(), value).result


def softcap_attention() -> ir.Module:
    """Gemma 2: scores soft-capped as cap·tanh(s/cap) before the softmax (cap = 50)."""
    d = _attention_inputs("softcap_attention", D)
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    s = d.scale(d.tanh(d.scale(s, 1.0 / 50.0)), 50.0)
    return _finish_softmax(d, s, ("b", "h", "q", "d"))


def bias_attention() -> ir.Module:
    """Attention with an additive bias table per head (relative position, ALiBi): s + Bias[h,q,x]."""
    d = _attention_inputs("bias_attention", D, Bias=ArrayType(("h", "q", "x"), (H, Q, X), DTYPE))
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    s = d.add(s, d.cast(d["Bias"], ACC))
    return _finish_softmax(d, s, ("b", "h", "q", "d"))


def sigmoid_attention() -> ir.Module:
    """Sigmoid attention (Apple, 2024): O = sigmoid(s + b) V with b = -log(x) and no softmax."""
    d = _attention_inputs("sigmoid_attention", D)
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    shift = -math.log(X)
    p = d.map(lambda v: _sigmoid(arith.addf(v, _f32(shift))), s)
    o = d.contract(d.cast(p, DTYPE), d["V"], ("b", "h", "q", "d"), dtype=ACC)
    return d.ret(d.cast(o, DTYPE))


def cross_attention() -> ir.Module:
    """Cross-attention whose value head dim e (24) differs from the key head dim d (16)."""
    d = DiagramBuilder(
        "cross_attention",
        Q=ArrayType(("b", "h", "q", "d"), (B, H, Q, D), DTYPE),
        K=ArrayType(("b", "h", "x", "d"), (B, H, X, D), DTYPE),
        V=ArrayType(("b", "h", "x", "e"), (B, H, X, 24), DTYPE),
    )
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    return _finish_softmax(d, s, ("b", "h", "q", "e"))


def gqa_bias_attention() -> ir.Module:
    """Grouped-query attention (2 key/value heads, 2 query heads each) with a bias table per
    key/value head shared by its query heads."""
    r = 2
    d = DiagramBuilder(
        "gqa_bias_attention",
        Q=ArrayType(("b", "h", "r", "q", "d"), (B, H, r, Q, D), DTYPE),
        K=ArrayType(("b", "h", "x", "d"), (B, H, X, D), DTYPE),
        V=ArrayType(("b", "h", "x", "d"), (B, H, X, D), DTYPE),
        Bias=ArrayType(("h", "q", "x"), (H, Q, X), DTYPE),
    )
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "r", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    s = d.add(s, d.cast(d["Bias"], ACC))
    return _finish_softmax(d, s, ("b", "h", "r", "q", "d"))


def swiglu_mlp() -> ir.Module:
    """SwiGLU MLP (LLaMA): Y = (silu(X W1) · (X W3)) W2."""
    m, k, f, n = 45, 32, 96, 24
    d = DiagramBuilder(
        "swiglu_mlp",
        X=ArrayType(("m", "k"), (m, k), DTYPE),
        W1=ArrayType(("k", "f"), (k, f), DTYPE),
        W3=ArrayType(("k", "f"), (k, f), DTYPE),
        W2=ArrayType(("f", "n"), (f, n), DTYPE),
    )
    gate = d.silu(d.contract(d["X"], d["W1"], ("m", "f"), dtype=ACC))
    up = d.contract(d["X"], d["W3"], ("m", "f"), dtype=ACC)
    y = d.contract(d.cast(d.mul(gate, up), DTYPE), d["W2"], ("m", "n"), dtype=ACC)
    return d.ret(d.cast(y, DTYPE))


def rmsnorm_matmul() -> ir.Module:
    """RMSNorm feeding a matmul: Y = (X / sqrt(mean_k X² + eps) · g) W."""
    m, k, n = 45, 64, 24
    d = DiagramBuilder(
        "rmsnorm_matmul",
        X=ArrayType(("m", "k"), (m, k), DTYPE),
        G=ArrayType(("k",), (k,), DTYPE),
        W=ArrayType(("k", "n"), (k, n), DTYPE),
    )
    x = d.cast(d["X"], ACC)
    ms = d.reduce(d.mul(x, x), "k", "sum")
    inv = d.map(lambda v: mmath.rsqrt(arith.addf(arith.mulf(v, _f32(1.0 / k)), _f32(1e-6))), ms)
    normed = d.mul(d.mul(x, inv), d.cast(d["G"], ACC))
    y = d.contract(d.cast(normed, DTYPE), d["W"], ("m", "n"), dtype=ACC)
    return d.ret(d.cast(y, DTYPE))


def layernorm_matmul() -> ir.Module:
    """LayerNorm feeding a matmul: Y = ((X - μ) / sqrt(var + eps) · g + β) W with
    μ = mean_k X and var = mean_k (X - μ)²."""
    m, k, n = 45, 64, 24
    d = DiagramBuilder(
        "layernorm_matmul",
        X=ArrayType(("m", "k"), (m, k), DTYPE),
        G=ArrayType(("k",), (k,), DTYPE),
        Beta=ArrayType(("k",), (k,), DTYPE),
        W=ArrayType(("k", "n"), (k, n), DTYPE),
    )
    x = d.cast(d["X"], ACC)
    centered = d.sub(x, d.scale(d.reduce(x, "k", "sum"), 1.0 / k))
    var = d.scale(d.reduce(d.mul(centered, centered), "k", "sum"), 1.0 / k)
    inv = d.map(lambda v: mmath.rsqrt(arith.addf(v, _f32(1e-5))), var)
    normed = d.add(d.mul(d.mul(centered, inv), d.cast(d["G"], ACC)), d.cast(d["Beta"], ACC))
    y = d.contract(d.cast(normed, DTYPE), d["W"], ("m", "n"), dtype=ACC)
    return d.ret(d.cast(y, DTYPE))


def softmax_attention_by_hand() -> ir.Module:
    """Attention with its softmax written box by box: m = max_x s, p = e^(s - m),
    l = Σ_x p, O = (p / l) V."""
    d = _attention_inputs("softmax_attention_by_hand", D)
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    p = d.exp(d.sub(s, d.reduce(s, "x", "max")))
    o = d.contract(d.cast(d.div(p, d.reduce(p, "x", "sum")), DTYPE), d["V"], ("b", "h", "q", "d"), dtype=ACC)
    return d.ret(d.cast(o, DTYPE))


def sink_attention() -> ir.Module:
    """Attention with a per-head sink logit in the normalizer (gpt-oss):
    O = Σ_x e^(s_x - m) V_x / (e^(Sink_h - m) + Σ_x e^(s_x - m)) with m = max(max_x s, Sink_h),
    written box by box."""
    d = _attention_inputs("sink_attention", D, Sink=ArrayType(("h",), (H,), DTYPE))
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    sink = d.cast(d["Sink"], ACC)
    m = d.max(d.reduce(s, "x", "max"), sink)
    p = d.exp(d.sub(s, m))
    l_sum = d.add(d.reduce(p, "x", "sum"), d.exp(d.sub(sink, m)))
    o = d.contract(d.cast(d.div(p, l_sum), DTYPE), d["V"], ("b", "h", "q", "d"), dtype=ACC)
    return d.ret(d.cast(o, DTYPE))


def sliding_window_attention() -> ir.Module:
    """Causal sliding-window attention (Mistral, Gemma 2's local layers): query i sees keys
    i - w < j <= i, with the window w a quarter of the keys (so --dims keeps it a quarter)."""
    d = _attention_inputs("sliding_window_attention", D, q=Q, x=Q)

    def keep(i: ir.Value, j: ir.Value, _n_rows: ir.Value, n_cols: ir.Value) -> ir.Value:
        window = arith.ceildivsi(n_cols, _index(4))
        return arith.andi(_le(j, i), _lt(arith.subi(i, j), window))

    return _masked_softmax(d, keep)


def causal_bottom_right_attention() -> ir.Module:
    """Causal attention aligned at the bottom right (a chunk of new queries after a cache of
    keys: the last query sees every key): j - n_cols <= i - n_rows, here 29 queries and 37 keys."""
    d = _attention_inputs("causal_bottom_right_attention", D, q=X, x=Q)
    return _masked_softmax(d, lambda i, j, n_rows, n_cols: _le(arith.subi(j, n_cols), arith.subi(i, n_rows)))


def prefix_lm_attention() -> ir.Module:
    """Prefix-LM attention (T5, PaliGemma): the first p keys are seen by every query, the rest
    causally: j < p or j <= i, with p a quarter of the keys."""
    d = _attention_inputs("prefix_lm_attention", D, q=Q, x=Q)

    def keep(i: ir.Value, j: ir.Value, _n_rows: ir.Value, n_cols: ir.Value) -> ir.Value:
        return arith.ori(_lt(j, arith.ceildivsi(n_cols, _index(4))), _le(j, i))

    return _masked_softmax(d, keep)


def chunked_attention() -> ir.Module:
    """Chunked local attention (Llama 4): queries see causally the keys of their own chunk,
    i / c == j / c and j <= i, with chunks of a quarter of the keys."""
    d = _attention_inputs("chunked_attention", D, q=Q, x=Q)

    def keep(i: ir.Value, j: ir.Value, _n_rows: ir.Value, n_cols: ir.Value) -> ir.Value:
        c = arith.ceildivsi(n_cols, _index(4))
        same = arith.cmpi(arith.CmpIPredicate.eq, arith.floordivsi(i, c), arith.floordivsi(j, c))
        return arith.andi(same, _le(j, i))

    return _masked_softmax(d, keep)


def document_attention() -> ir.Module:
    """Document masking (packed sequences): a query sees causally the keys of its own
    document, read from segment ids per query (QDoc[b, q]) and per key (KDoc[b, x])."""
    d = _attention_inputs(
        "document_attention",
        D,
        q=Q,
        x=Q,
        QDoc=ArrayType(("b", "q"), (B, Q), "i32"),
        KDoc=ArrayType(("b", "x"), (B, Q), "i32"),
    )

    def keep(i: ir.Value, j: ir.Value, _n: ir.Value, _m: ir.Value, doc_q: ir.Value, doc_x: ir.Value) -> ir.Value:
        return arith.andi(arith.cmpi(arith.CmpIPredicate.eq, doc_q, doc_x), _le(j, i))

    return _masked_softmax(d, keep, d["QDoc"], d["KDoc"])


def _index(value: int) -> ir.Value:
    return arith.ConstantOp(ir.IndexType.get(), value).result


def _le(a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.cmpi(arith.CmpIPredicate.sle, a, b)


def _lt(a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.cmpi(arith.CmpIPredicate.slt, a, b)


def _masked_softmax(d: DiagramBuilder, keep: Callable[..., ir.Value], *arrays: ir.Value) -> ir.Module:
    s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype=ACC), 1.0 / math.sqrt(D))
    return _finish_softmax(d, d.mask(s, "q", "x", keep, *arrays), ("b", "h", "q", "d"))


def _sigmoid(v: ir.Value) -> ir.Value:
    one = _f32(1.0)
    return arith.divf(one, arith.addf(one, mmath.exp(arith.negf(v))))


def _attention_inputs(name: str, dim: int, q: int = Q, x: int = X, **extra: ArrayType) -> DiagramBuilder:
    return DiagramBuilder(
        name,
        Q=ArrayType(("b", "h", "q", "d"), (B, H, q, dim), DTYPE),
        K=ArrayType(("b", "h", "x", "d"), (B, H, x, dim), DTYPE),
        V=ArrayType(("b", "h", "x", "d"), (B, H, x, dim), DTYPE),
        **extra,
    )


def _finish_softmax(d: DiagramBuilder, s: ir.Value, out_axes: tuple[str, ...]) -> ir.Module:
    p = d.cast(d.softmax(s, "x"), DTYPE)
    o = d.contract(p, d["V"], out_axes, dtype=ACC)
    return d.ret(d.cast(o, DTYPE))


EXAMPLES: dict[str, Callable[[], ir.Module]] = {
    "softcap_attention": softcap_attention,
    "bias_attention": bias_attention,
    "sigmoid_attention": sigmoid_attention,
    "cross_attention": cross_attention,
    "gqa_bias_attention": gqa_bias_attention,
    "swiglu_mlp": swiglu_mlp,
    "rmsnorm_matmul": rmsnorm_matmul,
    "layernorm_matmul": layernorm_matmul,
    "softmax_attention_by_hand": softmax_attention_by_hand,
    "sink_attention": sink_attention,
    "sliding_window_attention": sliding_window_attention,
    "causal_bottom_right_attention": causal_bottom_right_attention,
    "prefix_lm_attention": prefix_lm_attention,
    "chunked_attention": chunked_attention,
    "document_attention": document_attention,
}


def render(name: str) -> str:
    """The text of example `name`, with its builder's docstring as a comment on top."""
    with napkin_context(), ir.Location.unknown():
        text = str(EXAMPLES[name]())
    doc = " ".join((EXAMPLES[name].__doc__ or "").split())
    return f"// {doc}\n// Written by examples/build_examples.py; re-size with --dims.\n{text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(HERE))
    out = Path(parser.parse_args().out)
    for name in EXAMPLES:
        (out / f"{name}.mlir").write_text(render(name))
        print(f"wrote {out / name}.mlir")


if __name__ == "__main__":
    main()
