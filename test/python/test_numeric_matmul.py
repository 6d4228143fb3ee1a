"""Numeric tests: the built-in diagrams, compiled and run on the CPU, against references.

Every case goes through the harness API (`verify`), which checks the kernel against JAX in
float64 (f32: rel. Frobenius <= 1e-5; f16/bf16: max |err| <= 2x JAX's own in that dtype).
Each case then runs the pieces again (build -> compile_to_loops -> CpuKernel) on the same
inputs and checks the output against an independent float64 numpy reference, so a harness
that compared against the wrong thing would not go unnoticed. The last tests feed the gate
deliberately wrong outputs and check that it says FAIL.

Inputs are random; every test gets its own seed (see conftest.py).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from mlir import ir

from napkin_mlir.backends.cpu import NUMPY_DTYPES, CpuKernel
from napkin_mlir.check import reference
from napkin_mlir.check.harness import VerifyConfig, build, judge, verify
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.pipeline.stages import compile_to_loops

#: Independent sanity bound on the kernel's rel. Frobenius error against float64, per dtype
#: (unit roundoff: f32 6e-8, f16 4.9e-4, bf16 3.9e-3; outputs are rounded to the dtype).
REL_FRO_SANITY = {"f32": 1e-5, "f16": 5e-3, "bf16": 4e-2}


# --- running the pieces and independent references ----------------------------------------------


def run_kernel(config: VerifyConfig) -> tuple[list[np.ndarray], np.ndarray]:
    """Build, lower and run `config`'s diagram on inputs drawn as the harness draws them."""
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        sizes = diagram_sizes(module)
        compile_to_loops(module, config.diagram, sizes, config.tiles, config.tiled)
        kernel = CpuKernel(module)
        (sig,) = kernel.signatures.values()
        inputs = reference.random_inputs(sig.inputs, config.seed)
        (out,) = kernel(sig.name, *inputs)
    return inputs, out


def _gelu_tanh(t: np.ndarray) -> np.ndarray:
    return 0.5 * t * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * t**3)))


NUMPY_ACTIVATIONS = {
    "gelu": _gelu_tanh,
    "relu": lambda t: np.maximum(t, 0.0),
    "silu": lambda t: t / (1.0 + np.exp(-t)),
    "tanh": np.tanh,
}


def numpy_reference(config: VerifyConfig, inputs: list[np.ndarray]) -> np.ndarray:
    """The diagram's result in float64, written with numpy only (not with JAX)."""
    xs = [np.asarray(a, np.float64) for a in inputs]
    if config.diagram == "matmul":
        a, b = xs
        return a @ b
    if config.diagram == "mlp":
        x, w1, w2 = xs
        return NUMPY_ACTIVATIONS[config.activation](x @ w1) @ w2
    assert config.diagram == "attention"
    q, k, v = xs
    grouped = q.ndim == 5  # (b, h_kv, r, q, d): r query heads share one key/value head
    if not grouped:
        q = q[:, :, None]
    s = np.einsum("bhrqd,bhxd->bhrqx", q, k) / math.sqrt(q.shape[-1])
    if config.causal:  # query i sees keys 0..i (top-left aligned when q != x)
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    o = np.einsum("bhrqx,bhxd->bhrqd", p / p.sum(axis=-1, keepdims=True), v)
    return o if grouped else o[:, :, 0]


def jax_reference(config: VerifyConfig, inputs: list[np.ndarray], dtype: jnp.dtype) -> object:
    if config.diagram == "matmul":
        return reference.matmul_ref(*inputs, dtype)
    if config.diagram == "mlp":
        return reference.mlp_ref(*inputs, dtype, config.activation)
    return reference.attention_ref(*inputs, dtype, config.causal)


#: How far the harness's "float64" JAX reference may be from numpy's (rel. Frobenius).
#: jax.nn.dot_product_attention computes its softmax in float32 even for float64 inputs,
#: so the attention reference is only float32-accurate (see test_attention_reference_is_float64).
JAX_F64_REFERENCE_GAP = {"matmul": 1e-12, "mlp": 1e-12, "attention": 1e-6}


def check(config: VerifyConfig) -> None:
    """The full check of one configuration (see the module docstring)."""
    result = verify(config)
    c = result.comparison
    summary = result.summary()
    assert result.passed, f"{config}: {summary}"
    assert summary.startswith("PASS"), summary
    for name in ("rel_fro", "max_abs", "jax_rel_fro", "jax_max_abs"):
        assert math.isfinite(getattr(c, name)), f"{config}: {name} is {getattr(c, name)}"
    if config.dtype != "f32":
        # JAX in a 16-bit dtype is inexact on random inputs: the 2x bound is a real bound.
        assert c.jax_max_abs > 0, f"{config}: JAX's {config.dtype} result is exact, the gate is vacuous"

    inputs, out = run_kernel(config)
    ref = numpy_reference(config, inputs)
    assert out.dtype == NUMPY_DTYPES[config.dtype]
    assert out.shape == ref.shape, f"output shape {out.shape}, expected {ref.shape}"
    assert np.isfinite(out.astype(np.float64)).all(), "non-finite output"
    ref_norm = float(np.linalg.norm(ref))
    assert ref_norm > 0, "the reference is all zeros: the inputs do not exercise the kernel"
    rel = float(np.linalg.norm(out.astype(np.float64) - ref)) / ref_norm
    assert rel <= REL_FRO_SANITY[config.dtype], f"{config}: rel. Frobenius error {rel:.3e} against numpy"
    # The harness compared the same output (same seed, deterministic kernel) with a reference
    # that agrees with numpy's: their distance bounds the difference of the measured errors.
    jax64 = np.asarray(jax_reference(config, inputs, jnp.float64), np.float64)
    ref_gap = float(np.linalg.norm(jax64 - ref)) / ref_norm
    assert ref_gap <= JAX_F64_REFERENCE_GAP[config.diagram], (
        f"{config}: JAX and numpy references differ by {ref_gap:.3e}"
    )
    assert abs(rel - c.rel_fro) <= ref_gap * (1 + 1e-6) + 1e-12, f"numpy {rel:.6e} vs harness {c.rel_fro:.6e}"


# --- the built-in diagrams ------------------------------------------------------------------------
#
# `verify` compiles through the tiled derivation by default (group and stream partitions with
# the default tiles, clamped to the axis sizes); `tiled=False` lowers the diagram whole (the
# naive untiled loops); `tiles=` overrides tile sizes. Sizes are picked so that tiles do not
# divide the axes (partial last tiles) and, for attention, so that some key chunks are fully
# masked for some query tiles.


def _case_id(value: object) -> str:
    if isinstance(value, dict):
        return ",".join(f"{a}{s}" for a, s in value.items())
    return str(value)


def _cases(diagram: str, rows: list[tuple]) -> list:
    return [
        pytest.param(diagram, dims, dtype, opts, id="-".join(map(_case_id, (dims, dtype, opts))))
        for dims, dtype, opts in rows
    ]


MATMUL_SHAPES = [(300, 200, 100), (1, 7, 13), (64, 64, 64), (17, 129, 33)]


def _mm(m: int, n: int, k: int) -> dict[str, int]:
    return {"m": m, "n": n, "k": k}


MATMUL_CASES = _cases(
    "matmul",
    [(_mm(*shape), dtype, {}) for shape in MATMUL_SHAPES for dtype in ("f32", "bf16")]
    + [
        (_mm(17, 129, 33), "f16", {}),
        (_mm(17, 129, 33), "f32", {"tiles": {"m": 8, "n": 48, "k": 5}}),
        (_mm(17, 129, 33), "bf16", {"tiles": {"m": 16, "n": 7, "k": 32}}),
        (_mm(300, 200, 100), "f32", {"tiled": False}),
        (_mm(17, 129, 33), "bf16", {"tiled": False}),
    ],
)

MLP_CASES = _cases(
    "mlp",
    [
        ({"m": 33, "k": 17, "f": 65, "n": 9}, "f32", {"activation": "gelu"}),
        ({"m": 33, "k": 17, "f": 65, "n": 9}, "bf16", {"activation": "relu"}),
        ({"m": 64, "k": 32, "f": 96, "n": 16}, "f32", {"activation": "silu"}),
        ({"m": 64, "k": 32, "f": 96, "n": 16}, "bf16", {"activation": "silu"}),
        ({"m": 64, "k": 32, "f": 96, "n": 16}, "bf16", {"activation": "gelu", "tiles": {"m": 24, "f": 7}}),
        ({"m": 5, "k": 40, "f": 24, "n": 3}, "f16", {"activation": "silu"}),
        ({"m": 33, "k": 17, "f": 65, "n": 9}, "f32", {"activation": "gelu", "tiled": False}),
    ],
)

SMALL = {"b": 1, "h": 2, "q": 33, "x": 47, "d": 16}
SMALL_TILES = {"tiles": {"q": 16, "x": 8}}
ATTENTION_CASES = _cases(
    "attention",
    [
        # naive untiled loops (the whole score matrix at once)
        (SMALL, "f32", {"tiled": False}),
        (SMALL, "f32", {"tiled": False, "causal": True}),
        (SMALL, "bf16", {"tiled": False, "causal": True, "kv_heads": 1}),
        ({"b": 2, "h": 4, "q": 19, "x": 19, "d": 8}, "f32", {"tiled": False, "kv_heads": 2}),
        # FlashAttention-2 derivation: q grouped, x streamed with online softmax
        (SMALL, "f32", SMALL_TILES),
        (SMALL, "f32", {**SMALL_TILES, "causal": True}),
        (SMALL, "bf16", SMALL_TILES),
        (SMALL, "bf16", {**SMALL_TILES, "causal": True}),
        (SMALL, "f32", {**SMALL_TILES, "causal": True, "kv_heads": 1}),  # multi-query
        (SMALL, "f32", {**SMALL_TILES, "kv_heads": 2}),  # kv_heads == h: ordinary attention
        (
            {"b": 2, "h": 4, "q": 19, "x": 19, "d": 8},
            "bf16",
            {"tiles": {"q": 4, "x": 6}, "kv_heads": 2, "causal": True},
        ),
        ({"b": 1, "h": 1, "q": 47, "x": 21, "d": 12}, "f32", {"tiles": {"q": 10, "x": 4}, "causal": True}),
        (
            {"b": 1, "h": 2, "q": 21, "x": 30, "d": 16},
            "f16",
            {"tiles": {"q": 8, "x": 16}, "causal": True, "kv_heads": 1},
        ),
        ({"b": 1, "h": 1, "q": 130, "x": 77, "d": 32}, "bf16", {"causal": True}),  # default tiles
    ],
)


@pytest.mark.parametrize(("diagram", "dims", "dtype", "options"), MATMUL_CASES + MLP_CASES + ATTENTION_CASES)
def test_diagram_matches_references(diagram: str, dims: dict[str, int], dtype: str, options: dict, seed: int) -> None:
    check(VerifyConfig(diagram, dims, dtype, seed, **options))


# --- the gate can fail --------------------------------------------------------------------------


def _matmul_refs(inputs: list[np.ndarray], dtype: str) -> tuple[object, object]:
    return reference.matmul_ref(*inputs, jnp.float64), reference.matmul_ref(*inputs, jnp.dtype(NUMPY_DTYPES[dtype]))


def _verdict(config: VerifyConfig, out: np.ndarray, refs: tuple[object, object]) -> tuple[bool, reference.Comparison]:
    c = reference.compare(out, *refs)
    return judge(config, c)[0], c


def _perturbed(kind: str, out: np.ndarray, inputs: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """`out` made wrong in one of the ways a buggy kernel would be."""
    y = out.astype(np.float64)
    rms = float(np.sqrt(np.mean(y**2)))
    if kind == "noise":  # relative noise of 1e-4: 10x the f32 tolerance
        y = y + 1e-4 * rms * rng.standard_normal(y.shape)
    elif kind == "one-element":  # one entry off by 5% of the output's scale
        i = tuple(int(rng.integers(s)) for s in y.shape)
        y[i] += 0.05 * rms
    elif kind == "last-k-dropped":  # the reduction loop stops one step early
        a, b = (np.asarray(t, np.float64) for t in inputs)
        y = y - np.outer(a[:, -1], b[-1, :])
    elif kind == "nan":  # an output element never written (CpuKernel pre-fills with NaN)
        y[tuple(int(rng.integers(s)) for s in y.shape)] = np.nan
    else:
        raise AssertionError(kind)
    return y.astype(out.dtype)


# (relative noise of 1e-4 is below bf16 resolution, so "noise" is an f32-only case)
WRONG_MATMUL_CASES = [(kind, "f32") for kind in ("noise", "one-element", "last-k-dropped", "nan")] + [
    (kind, "bf16") for kind in ("one-element", "last-k-dropped", "nan")
]


@pytest.mark.parametrize(("kind", "dtype"), WRONG_MATMUL_CASES)
def test_gate_rejects_wrong_matmul(kind: str, dtype: str, seed: int) -> None:
    config = VerifyConfig("matmul", {"m": 37, "n": 45, "k": 29}, dtype, seed)
    inputs, out = run_kernel(config)
    refs = _matmul_refs(inputs, dtype)
    ok, c = _verdict(config, out, refs)
    assert ok, f"control: the unmodified kernel output must pass ({c})"
    bad = _perturbed(kind, out, inputs, np.random.default_rng(seed))
    assert not np.array_equal(bad, out, equal_nan=True), "the perturbation did not change the output"
    ok, c = _verdict(config, bad, refs)
    assert not ok, f"the gate accepted a wrong output ({kind}): {c}"


def test_gate_rejects_attention_with_wrong_mask(seed: int) -> None:
    """A kernel compiled without the causal mask, judged against the causal reference."""
    dims = {"b": 1, "h": 2, "q": 24, "x": 24, "d": 16}
    causal = VerifyConfig("attention", dims, "bf16", seed, causal=True)
    inputs, out_causal = run_kernel(causal)
    _, out_full = run_kernel(VerifyConfig("attention", dims, "bf16", seed, causal=False))
    refs = (
        reference.attention_ref(*inputs, jnp.float64, True),
        reference.attention_ref(*inputs, jnp.bfloat16, True),
    )
    assert _verdict(causal, out_causal, refs)[0], "control: the causal kernel must pass"
    ok, c = _verdict(causal, out_full, refs)
    assert not ok, f"the gate accepted non-causal output for causal attention: {c}"


def test_attention_reference_is_float64(seed: int) -> None:
    """The ground truth must be float64 throughout; the f32 gate (1e-5) needs a reference well below it."""
    config = VerifyConfig("attention", {"b": 1, "h": 2, "q": 33, "x": 47, "d": 16}, "f32", seed, causal=True)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(s) for s in ((1, 2, 33, 16), (1, 2, 47, 16), (1, 2, 47, 16))]
    ref = numpy_reference(config, inputs)
    jax64 = np.asarray(jax_reference(config, inputs, jnp.float64), np.float64)
    gap = float(np.linalg.norm(jax64 - ref) / np.linalg.norm(ref))
    assert gap <= 1e-12, f"the float64 attention reference is off by {gap:.3e} (rel. Frobenius)"
