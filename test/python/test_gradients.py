"""Gradients derived as napkin diagrams (`napkin-differentiate`, `napkin-fission`), checked
against `jax.vjp` of the forward diagram's JAX interpretation, on fresh random inputs and
cotangents, by the project's correctness rule (f32: relative Frobenius <= 1e-5; bf16: max
error <= 2x that of JAX in bf16):

* the backward's meaning, by the interpretation (no compilation): built-ins and examples,
  with residuals stored or recomputed, and every way of taking the softmax's row sums;
* the backward compiled for the CPU, derived like any diagram, at small odd sizes: attention
  (plain, causal, grouped-query), the soft-capped example, matmul, mlp and every example,
  in f32 and bf16; the derivation of attention's backward is FlashAttention-2's;
* a broken backward is caught; refusals name the op; ties of a max split like JAX's;
  a causal mask streamed along its rows (the dK, dV stream) keeps its meaning;
* `napkin verify ... --grad` ends with PASS.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, run_cli_process
from mlir import ir

import passes.differentiate as differentiate_pass
from napkin_mlir.check.gradients import differentiate, function_of, interpret_gradients, verify_gradients
from napkin_mlir.errors import NapkinError
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.context import napkin_context, parse_module
from napkin_mlir.ir.diagrams import build_builtin
from napkin_mlir.ir.files import axis_sizes, load_diagram
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.pipeline.passmanager import run_pipeline

EXAMPLES = REPO_ROOT / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.mlir"))

ATTENTION = {"b": 1, "h": 2, "q": 19, "x": 23, "d": 8}
BUILTINS: dict[str, tuple[str, dict[str, int], dict[str, object]]] = {
    "attention": ("attention", ATTENTION, {}),
    "attention-causal": ("attention", ATTENTION, {"causal": True}),
    "attention-gqa": ("attention", {**ATTENTION, "h": 4}, {"causal": True, "kv_heads": 2}),
    "matmul": ("matmul", {"m": 13, "n": 7, "k": 11}, {}),
    "mlp-gelu": ("mlp", {"m": 9, "k": 7, "f": 13, "n": 5}, {"activation": "gelu"}),
    "mlp-silu": ("mlp", {"m": 9, "k": 7, "f": 13, "n": 5}, {"activation": "silu"}),
    "mlp-relu": ("mlp", {"m": 9, "k": 7, "f": 13, "n": 5}, {"activation": "relu"}),
    "mlp-tanh": ("mlp", {"m": 9, "k": 7, "f": 13, "n": 5}, {"activation": "tanh"}),
}

#: Small odd sizes for the examples (axes they lack are ignored).
EXAMPLE_SIZES = {"q": 13, "x": 17, "d": 8, "e": 6, "m": 11, "k": 19, "f": 21, "n": 5}


def _builtin(key: str, dtype: str) -> ir.Module:
    name, dims, options = BUILTINS[key]
    return build_builtin(name, dims, dtype, **options)  # type: ignore[arg-type]


def _example(name: str, dtype: str) -> ir.Module:
    """The example at small odd sizes, in `dtype` (needs an active napkin context)."""
    path = EXAMPLES / f"{name}.mlir"
    own = axis_sizes(load_diagram(path))
    return load_diagram(path, {a: s for a, s in EXAMPLE_SIZES.items() if a in own}, dtype)


def _assert_passed(result: object) -> None:
    assert result.passed, result.summary()  # type: ignore[attr-defined]
    assert any(c.name.startswith("gradient") for c in result.checks)  # type: ignore[attr-defined]


# --- the backward's meaning, by the interpretation ------------------------------------------


@pytest.mark.parametrize("remat", [True, False], ids=["recompute", "store"])
@pytest.mark.parametrize("key", list(BUILTINS))
def test_builtin_backward_interpreted_in_float64(key: str, remat: bool, seed: int) -> None:
    """In float64 the backward diagram is the derivative: equal to jax.vjp to 1e-10 (gelu's
    derivative is a map whose constants sqrt(2/pi) and 0.044715 are f32 values, a relative
    change of about 3e-8 from the interpretation's float64 constants: 1e-7 there)."""
    with napkin_context(), ir.Location.unknown():
        result = interpret_gradients(_builtin(key, "f32"), seed, remat=remat, precision="f64")
    _assert_passed(result)
    tolerance = 1e-7 if key == "mlp-gelu" else 1e-10
    assert max(c.comparison.rel_fro for c in result.checks) < tolerance, result.summary()


@pytest.mark.parametrize("rowsums", ["exact", "output", "direct"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_softmax_row_sums_every_way(rowsums: str, dtype: str, seed: int) -> None:
    """D = rowsum(dP∘P) taken directly, as rowsum(dO∘O) where exact, or also from the rounded
    output (FlashAttention-2): the same derivative (in float64, where casts are exact)."""
    with napkin_context(), ir.Location.unknown():
        result = interpret_gradients(_builtin("attention-causal", dtype), seed, rowsums=rowsums, precision="f64")
    assert max(c.comparison.rel_fro for c in result.checks) < 1e-10, result.summary()


@pytest.mark.parametrize("name", NAMES)
def test_example_backward_interpreted(name: str, seed: int) -> None:
    with napkin_context(), ir.Location.unknown():
        module = _example(name, "f32")
        result = interpret_gradients(module, seed, precision="f64", filename=name)
    _assert_passed(result)
    assert max(c.comparison.rel_fro for c in result.checks) < 1e-10, result.summary()


def test_residuals_recomputed_or_stored() -> None:
    """remat=true stores O and the row log-sum-exp L (FlashAttention-2); remat=false stores P."""
    with napkin_context(), ir.Location.unknown():
        parts = differentiate(_builtin("attention-causal", "f32"), remat=True)
        forward = function_of(diagram_functions(parts[0].operation)[0])
        names = [function_of(diagram_functions(p.operation)[0]).name for p in parts]
        stored = differentiate(_builtin("attention-causal", "f32"), remat=False, split=False)
        stored_forward = function_of(diagram_functions(stored[0].operation)[0])
    assert forward.result_names == ("O", "L")
    assert forward.outputs[1].axes == ("b", "h", "q")
    assert names == ["attention", "attention_vjp_pre", "attention_vjp_dQ", "attention_vjp_dK_dV"]
    assert stored_forward.result_names == ("O", "R0")
    assert stored_forward.outputs[1].axes == ("b", "h", "q", "x")


# --- compiled for the CPU ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "dtype"),
    [
        ("attention", "f32"),
        ("attention-causal", "bf16"),
        # ("attention-causal", "f32") is test_attention_backward_is_derived_as_flashattention2's run
        ("attention-gqa", "bf16"),
        ("attention-gqa", "f32"),  # its D diagram weaves b, h, r, q: derive leaves b whole (3 grid axes)
        ("matmul", "bf16"),
        ("mlp-gelu", "f32"),
        ("mlp-silu", "bf16"),
    ],
)
def test_builtin_gradients_on_the_cpu(key: str, dtype: str, seed: int) -> None:
    """Causal attention in f32 is not a case here: test_attention_backward_is_derived_as_
    flashattention2 makes the very same run (tiles q=8, x=8; a tile of m is dropped for a
    diagram without m) and asserts these checks too, beside its derivations."""
    with napkin_context(), ir.Location.unknown():
        result = verify_gradients(_builtin(key, dtype), seed, tiles={"q": 8, "x": 8, "m": 8})
    _assert_passed(result)
    gradients = [c for c in result.checks if c.name.startswith("gradient")]
    assert len(gradients) == len(result.stages[0].function.inputs)  # one per input


def test_attention_backward_is_derived_as_flashattention2(seed: int) -> None:
    """derive, given the backward: D once (a preprocessing diagram), dK and dV grouped over key
    tiles streaming query tiles, dQ grouped over query tiles streaming key tiles. (It is also
    the f32 causal case of test_builtin_gradients_on_the_cpu: passed, one gradient per input.)"""
    with napkin_context(), ir.Location.unknown():
        result = verify_gradients(_builtin("attention-causal", "f32"), seed, tiles={"q": 8, "x": 8})
    _assert_passed(result)
    gradients = [c for c in result.checks if c.name.startswith("gradient")]
    assert len(gradients) == len(result.stages[0].function.inputs)  # one per input
    stages = {s.function.name: s.derivation for s in result.stages}
    assert stages["attention"].tiled == ["q"] and stages["attention"].streamed == "x"
    dkdv = stages["attention_vjp_dK_dV"]
    assert dkdv.woven == ["b", "h"] and dkdv.tiled == ["x"] and dkdv.streamed == "q"
    dq = stages["attention_vjp_dQ"]
    assert dq.woven == ["b", "h"] and dq.tiled == ["q"] and dq.streamed == "x"
    pre = next(s.function for s in result.stages if s.function.name == "attention_vjp_pre")
    assert pre.result_names == ("D",) and pre.arg_names == ("O", "dO")


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_example_gradients_on_the_cpu(name: str, dtype: str, seed: int) -> None:
    with napkin_context(), ir.Location.unknown():
        result = verify_gradients(_example(name, dtype), seed, filename=name)
    _assert_passed(result)


def test_stored_residuals_on_the_cpu(seed: int) -> None:
    with napkin_context(), ir.Location.unknown():
        result = verify_gradients(_builtin("attention-causal", "bf16"), seed, remat=False, tiles={"q": 8})
    _assert_passed(result)


# --- the checks can fail ----------------------------------------------------------------------


def test_a_wrong_softmax_backward_is_caught(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Without the row sums (dS = P∘dP) the gradients of Q and K are wrong, and judged so."""

    def without_row_sums(bw: differentiate_pass.Backward, op: ir.Operation, gy: ir.Value) -> None:
        p = bw.primal(op.results[0])
        bw.accumulate(op.operands[0], differentiate_pass.create("mul", [gy, p], differentiate_pass.array(p)))

    monkeypatch.setitem(differentiate_pass.RULES, "softmax", without_row_sums)
    with napkin_context(), ir.Location.unknown():
        result = interpret_gradients(_builtin("attention", "f32"), seed, precision="f64", split=False)
    wrong = {c.name.split()[1] for c in result.checks if not c.passed}
    assert wrong == {"dQ", "dK"}, result.summary()


def test_unsupported_map_op_is_refused() -> None:
    text = """
func.func @sine(%S: tensor<8xf32, {axes = ["q"]}>) -> tensor<8xf32, {axes = ["q"]}> {
  %r = "napkin.map"(%S) ({
  ^bb0(%a: f32):
    %b = math.sin %a : f32
    gpu.yield %b : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<8xf32, {axes = ["q"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return %r : tensor<8xf32, {axes = ["q"]}>
}"""
    with napkin_context(), ir.Location.unknown():
        module = parse_module(text, "sine.mlir")
        with pytest.raises(NapkinError, match=r"no derivative for 'math.sin'") as err:
            run_pipeline(module, "builtin.module(napkin-differentiate)", filename="sine.mlir")
    assert ":5:10: " in str(err.value)  # the math.sin op's line and column


def test_max_ties_split_like_jax() -> None:
    """A row maximum reached twice sends half of the cotangent to each (JAX's rule)."""
    text = """
func.func @rowmax(%X: tensor<3x4xf32, {axes = ["m", "k"]}>) -> tensor<3xf32, {axes = ["m"]}> {
  %r = "napkin.reduce"(%X) {axis = "k", kind = "max"} : (tensor<3x4xf32, {axes = ["m", "k"]}>) -> tensor<3xf32, {axes = ["m"]}>
  return %r : tensor<3xf32, {axes = ["m"]}>
}"""
    x = np.array([[1.0, 3.0, 3.0, -2.0], [0.5, -1.0, 0.25, 0.5], [4.0, 4.0, 4.0, 1.0]], np.float32)
    g = np.array([1.5, -2.0, 3.0], np.float32)
    with napkin_context(), ir.Location.unknown():
        module = parse_module(text)
        _, vjp = jax.vjp(lambda v: interpret(module, [v], "f64")[0], jnp.asarray(x, jnp.float64))
        (expected,) = vjp(jnp.asarray(g, jnp.float64))
        run_pipeline(module, "builtin.module(napkin-differentiate{remat=true})")
        (got,) = interpret(module, [x, x.max(axis=1), g], "f64", function="rowmax_vjp")
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=0, atol=1e-12)
    assert np.asarray(got)[0].tolist() == [0.0, 0.75, 0.75, 0.0]


def test_causal_mask_streamed_along_its_rows_keeps_its_meaning(seed: int) -> None:
    """Streaming q, the rows of a causal mask (the dK, dV stream), offsets the mask by the
    chunk: the interpretation is unchanged by the stream partition."""
    text = """
func.func @rows(%Q: tensor<11x4xf32, {axes = ["q", "d"]}>, %K: tensor<9x4xf32, {axes = ["x", "d"]}>, %W: tensor<11x3xf32, {axes = ["q", "e"]}>) -> tensor<9x3xf32, {axes = ["x", "e"]}> {
  %s = "napkin.contract"(%Q, %K) : (tensor<11x4xf32, {axes = ["q", "d"]}>, tensor<9x4xf32, {axes = ["x", "d"]}>) -> tensor<11x9xf32, {axes = ["q", "x"]}>
  %m = "napkin.mask"(%s) ({
  ^bb0(%mi2: index, %mj2: index, %mr2: index, %mc2: index):
    %mk2 = arith.cmpi sle, %mj2, %mi2 : index
    gpu.yield %mk2 : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<11x9xf32, {axes = ["q", "x"]}>) -> tensor<11x9xf32, {axes = ["q", "x"]}>
  %p = "napkin.exp"(%m) : (tensor<11x9xf32, {axes = ["q", "x"]}>) -> tensor<11x9xf32, {axes = ["q", "x"]}>
  %y = "napkin.contract"(%p, %W) : (tensor<11x9xf32, {axes = ["q", "x"]}>, tensor<11x3xf32, {axes = ["q", "e"]}>) -> tensor<9x3xf32, {axes = ["x", "e"]}>
  return %y : tensor<9x3xf32, {axes = ["x", "e"]}>
}"""
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(s).astype(np.float32) for s in ((11, 4), (9, 4), (11, 3))]
    with napkin_context(), ir.Location.unknown():
        module = parse_module(text)
        (before,) = interpret(module, inputs, "f64")
        run_pipeline(
            module,
            "builtin.module(napkin-group-partition{axes=x sizes=4},napkin-stream-partition{axis=q size=3},napkin-verify)",
        )
        assert "napkin.stream" in str(module)
        (after,) = interpret(module, inputs, "f64")
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-12, atol=1e-12)


# --- the command line -------------------------------------------------------------------------


def test_cli_verify_grad_builtin() -> None:
    r = run_cli_process(
        "napkin",
        "verify",
        "attention",
        "--grad",
        "--causal",
        "--dims",
        "b=1,h=2,q=13,x=11,d=8",
        "--dtype",
        "bf16",
        "--tile",
        "q=8,x=8",
        timeout=600,
    )
    assert r.rc == 0, r.stdout + r.stderr
    assert r.last_line().startswith("PASS: 4/4")
    assert "@attention_vjp_dK_dV: relabel:" in r.stdout


def test_cli_verify_grad_file() -> None:
    path = Path("examples") / "softcap_attention.mlir"
    r = run_cli_process(
        "napkin", "verify", str(path), "--grad", "--dtype", "f32", "--dims", "q=9,x=13", "--wrt", "K", timeout=600
    )
    assert r.rc == 0, r.stdout + r.stderr
    assert r.last_line().startswith("PASS: 2/2")
    assert "gradient dK" in r.stdout and "gradient dQ" not in r.stdout


def test_cli_verify_grad_bad_wrt() -> None:
    r = run_cli_process("napkin", "verify", "matmul", "--grad", "--dims", "m=5,n=3,k=4", "--wrt", "Z", timeout=300)
    assert r.rc != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "'Z'" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
