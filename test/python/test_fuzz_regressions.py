"""Regression tests for the bugs found by the fuzzer (test/fuzz/regressions/NNN-*.mlir).

The lit RUN lines of the reproducers check the command-line behaviour; these tests check what
lit cannot: numerics of lowerings that `napkin verify` does not take (a 16-bit sum lowered
without a stream partition, a streamed 16-bit sum of products).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CliResult
from mlir import ir

from napkin_mlir.backends.cpu import CpuKernel
from napkin_mlir.check import reference
from napkin_mlir.check.diagram import verify_diagram
from napkin_mlir.check.harness import judge_dtype
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.parse_guard import forward_reference
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import LOOPS_PIPELINE

REDUCE_BF16 = """\
func.func @red(%arg0: tensor<4x4096xbf16, {axes = ["r", "y"]}>) -> tensor<4xbf16, {axes = ["r"]}> {
  %0 = "napkin.reduce"(%arg0) {axis = "y", kind = "sum"} : (tensor<4x4096xbf16, {axes = ["r", "y"]}>) -> tensor<4xbf16, {axes = ["r"]}>
  return %0 : tensor<4xbf16, {axes = ["r"]}>
}
"""

SUM_OF_SQUARES_BF16 = """\
func.func @sq(%arg0: tensor<4x4096xbf16, {axes = ["r", "y"]}>) -> tensor<4xbf16, {axes = ["r"]}> {
  %0 = "napkin.mul"(%arg0, %arg0) : (tensor<4x4096xbf16, {axes = ["r", "y"]}>, tensor<4x4096xbf16, {axes = ["r", "y"]}>) -> tensor<4x4096xbf16, {axes = ["r", "y"]}>
  %1 = "napkin.reduce"(%0) {axis = "y", kind = "sum"} : (tensor<4x4096xbf16, {axes = ["r", "y"]}>) -> tensor<4xbf16, {axes = ["r"]}>
  return %1 : tensor<4xbf16, {axes = ["r"]}>
}
"""


def _lowered_matches(text: str, relabel: str, seed: int) -> None:
    """Relabel with `relabel` (may be empty), lower, run on the CPU, judge against JAX."""
    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(text)
        f = module.body.operations[0]
        ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
        ins_t = [ArrayType.from_mlir(t) for t in ftype.inputs]
        out_t = [ArrayType.from_mlir(t) for t in ftype.results]
        inputs = reference.random_inputs(tuple(ins_t), seed)
        ref64 = interpret(module, inputs, "f64")
        same = interpret(module, inputs, "same")
        if relabel:
            run_pipeline(module, f"builtin.module(napkin-verify,{relabel},napkin-verify)")
        run_pipeline(module, f"builtin.module(napkin-verify,{LOOPS_PIPELINE})")
        kernel = CpuKernel(module)
        outs = kernel(next(iter(kernel.signatures)), *inputs)
        for out, r64, r_same, t in zip(outs, ref64, same, out_t, strict=True):
            passed, criterion = judge_dtype(t.dtype, reference.compare(np.asarray(out), r64, r_same))
            assert passed, criterion


@pytest.mark.parametrize(
    "relabel",
    ["", "napkin-stream-partition{axis=y size=64}", "napkin-stream-partition{axis=y size=100}"],
    ids=["loops", "stream64", "stream100"],
)
@pytest.mark.parametrize("text", [REDUCE_BF16, SUM_OF_SQUARES_BF16], ids=["sum", "sum-of-squares"])
def test_003_bf16_sum_accumulates_in_f32(text: str, relabel: str, seed: int) -> None:
    """003: a bf16 napkin.reduce sum (plain or streamed) accumulates in f32 and rounds once."""
    _lowered_matches(text, relabel, seed)


def test_003_bf16_sum_verify(seed: int) -> None:
    with napkin_context(), ir.Location.unknown():
        result = verify_diagram(ir.Module.parse(REDUCE_BF16), seed=seed)
    assert all(o.passed for o in result.outputs), result


REPRO = Path(__file__).resolve().parents[1] / "fuzz" / "regressions"


def _repro(prefix: str) -> Path:
    return next(REPRO.glob(f"{prefix}-*.mlir"))


@pytest.mark.parametrize(
    "relabel",
    [
        "napkin-stream-partition{axis=n size=1}",
        "napkin-stream-partition{axis=n size=2}",
        "napkin-stream-partition{axis=n size=2},napkin-group-partition{axes=i sizes=1 level=grid}",
        "napkin-stream-partition{axis=n size=1},napkin-group-partition{axes=i sizes=1 level=grid},"
        "napkin-group-partition{axes=i sizes=1 level=warp}",
    ],
    ids=["top1", "top2", "group", "two-groups"],
)
def test_002_causal_mask_stream_without_group_lowers(relabel: str, seed: int) -> None:
    """002: a causal mask streamed along its cols with no enclosing group lowers (it used to
    abort the process: the stream's bound used a constant of the erased diagram) and runs right."""
    _lowered_matches(_repro("002").read_text(), relabel, seed)


def test_002_cli_no_abort(run_cli: Callable[..., CliResult]) -> None:
    r = run_cli("napkin-opt", str(_repro("002")), "--napkin-stream-partition=axis=n size=1", "--napkin-lower-to-loops")
    assert r.rc == 0, r.stderr
    assert "scf.for" in r.stdout


def _one_error(r: CliResult, *mentions: str) -> str:
    """Exactly one `error: file:line:col: ...` line, non-zero exit, no traceback."""
    assert r.rc not in (0, 134, -6), (r.rc, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert re.match(r"error: [^:\s]+\.mlir:\d+:\d+: ", errors[0]), errors[0]
    for m in mentions:
        assert m in errors[0], errors[0]
    return errors[0]


def test_001_assign_levels_unfused_round_trip_dominates(run_cli: Callable[..., CliResult]) -> None:
    """001: with fuse=false the round trip goes right after the definition, before every user."""
    r = run_cli("napkin-opt", str(_repro("001")), "--napkin-assign-levels=fuse=false", "--napkin-verify")
    assert r.rc == 0, r.stderr
    body = r.stdout[r.stdout.index('"napkin.exp"') :]
    assert body.index('"napkin.transfer"') < body.index('"napkin.relu"') < body.index('"napkin.tanh"')


def test_001_unfused_numerics(seed: int) -> None:
    _lowered_matches(_repro("001").read_text(), "napkin-assign-levels{fuse=false}", seed)


@pytest.mark.parametrize(
    ("prefix", "args", "mentions"),
    [
        ("004", ["--napkin-stream-partition=axis=x size=1"], ["'napkin.exp'", "keeps it", ":6:8:"]),
        ("006", ["--napkin-stream-partition=axis=a size=1"], ["'napkin.mask'", "nothing to stream", ":7:10:"]),
        ("008", ["--napkin-group-partition=axes=k sizes=1 level=grid"], ["'napkin.tanh'", "does not have it", ":7:8:"]),
        (
            "009",
            ["--napkin-group-partition=axes=y sizes=1 level=grid", "--napkin-stream-partition=axis=y size=2"],
            ["'napkin.group'", "maps it", "not reduced", "nothing to stream"],
        ),
        ("009", ["--napkin-stream-partition=axis=y size=3"], ["chunk size 3", "'napkin.exp'", ":6:8:"]),
    ],
    ids=["004-output-keeps-axis", "006-dead-boxes", "008-output-lacks-axis", "009-mapped-axis", "009-chunk-size"],
)
def test_located_refusals(prefix: str, args: list[str], mentions: list[str], run_cli: Callable[..., CliResult]) -> None:
    """004, 006, 008, 009: refusals are located at the op they name (006 used to crash)."""
    _one_error(run_cli("napkin-opt", str(_repro(prefix)), *args), *mentions)


def test_005_simt_without_group_refuses(run_cli: Callable[..., CliResult]) -> None:
    """005: the SIMT rule on a program with no group partition refuses with its reason."""
    r = run_cli("napkin", "emulate", str(_repro("005")), "--kernel", "simt", "--target", "sm_80", "--seed", "2")
    assert r.rc != 0 and "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "group partition" in errors[0] and "has none" in errors[0], r.stderr


@pytest.mark.parametrize("program", ["napkin-opt", "napkin"])
def test_007_forward_reference_parse_error_does_not_abort(program: str, run_cli: Callable[..., CliResult]) -> None:
    """007: upstream's parser aborts on this text; the tools report a located error instead."""
    args = [str(_repro("007"))] if program == "napkin-opt" else ["verify", str(_repro("007"))]
    _one_error(run_cli(program, *args), "'%in' is used before its definition", ":1:16:")


def test_007_forward_reference_precheck() -> None:
    assert forward_reference(_repro("007").read_text()) == ("%in", 1, 16)
    # no diagram or lit input of the project has one (they never pay for the child parse)
    for path in [*(REPRO.parents[1]).rglob("*.mlir"), *(REPRO.parents[2] / "examples").rglob("*.mlir")]:
        if "Output" in path.parts or path.name.startswith("007-"):
            continue
        for chunk in path.read_text().split("// -----"):
            assert forward_reference(chunk) is None, path
    # a use in a later region of a name defined in a closed sibling region is still caught
    sibling = "func.func @f() {\n  test.op {\n  ^bb0(%x: f32):\n  }\n  test.use %x\n  return\n}\n"
    assert forward_reference(sibling) == ("%x", 5, 12)


def test_bf16_contraction_with_a_bf16_result_accumulates_in_f32(seed: int) -> None:
    """A contraction whose result is bf16 (no f32 accumulator written in the diagram) sums in
    f32 and rounds once, in the lowering, a stream's state and the interpretation alike: over
    k = 4096 a bf16 accumulator would be off by far more than the rule allows."""
    from mlir import ir

    from napkin_mlir.check.diagram import verify_diagram
    from napkin_mlir.ir.context import napkin_context

    text = (
        'func.func @mm(%a: tensor<7x4096xbf16, {axes = ["m", "k"]}>, %b: tensor<4096x5xbf16, {axes = ["k", "n"]}>)'
        ' -> tensor<7x5xbf16, {axes = ["m", "n"]}> {\n'
        '  %c = "napkin.contract"(%a, %b) : (tensor<7x4096xbf16, {axes = ["m", "k"]}>, '
        'tensor<4096x5xbf16, {axes = ["k", "n"]}>) -> tensor<7x5xbf16, {axes = ["m", "n"]}>\n'
        '  return %c : tensor<7x5xbf16, {axes = ["m", "n"]}>\n}\n'
    )
    for tiles in (None, {"m": 4, "n": 4, "k": 1000}):
        with napkin_context(), ir.Location.unknown():
            result = verify_diagram(ir.Module.parse(text), seed, tiles)
        assert result.passed, result.summary()
        assert result.outputs[0].comparison.rel_fro < 1e-2


@pytest.mark.parametrize("program", ["napkin-opt", "napkin"])
def test_010_index_dense_array_does_not_abort(program: str, run_cli: Callable[..., CliResult]) -> None:
    """010: `array<index: ...>` aborts upstream's parser (index has no bit width); the tools
    check such text in a child process and report one located error."""
    args = [str(_repro("010"))] if program == "napkin-opt" else ["derive", str(_repro("010"))]
    _one_error(run_cli(program, *args), "dense array of index elements", ":1:")


ROW_SOFTMAX = """\
func.func @sm(%arg0: tensor<5x7x33xf32, {axes = ["d", "y", "c"]}>) -> tensor<5x7x33xf32, {axes = ["d", "y", "c"]}> {
  %0 = "napkin.softmax"(%arg0) {axis = "c"} : (tensor<5x7x33xf32, {axes = ["d", "y", "c"]}>) -> tensor<5x7x33xf32, {axes = ["d", "y", "c"]}>
  return %0 : tensor<5x7x33xf32, {axes = ["d", "y", "c"]}>
}
"""


@pytest.mark.parametrize("which", ["reproducer", "5x7x33"])
def test_011_simt_softmax_temporaries_in_shared_memory(
    which: str, seed: int, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    """011: a row softmax whose other axes are grouped keeps its row maximum and sum in
    buffers with no memory space; the SIMT rule used to view them into the workgroup buffer
    with the wrong type (invalid memref.view). They are shared now, and the emulated kernel
    matches the interpretation with no race."""
    path = _repro("011")
    if which != "reproducer":
        path = tmp_path / "softmax.mlir"
        path.write_text(ROW_SOFTMAX)
    r = run_cli("napkin", "emulate", str(path), "--kernel", "simt", "--target", "sm_80", "--seed", str(seed))
    assert r.rc == 0, r.stderr
    assert "no shared-memory race" in r.stdout, r.stdout
    assert re.search(r"^PASS ", r.stdout, re.M), r.stdout


def test_012_causal_skip_only_when_every_reduction_reads_the_mask(seed: int) -> None:
    """A stream over a causal mask's cols skips the chunks past the diagonal only when every
    reduction over the streamed axis reads the masked values: here a contraction sums the raw
    chunk beside the masked max, so every chunk must run (the CPU result was 42% off); causal
    attention still skips (its loop bound is the diagonal: `arith.minsi`)."""
    from napkin_mlir.check.harness import VerifyConfig, build
    from napkin_mlir.ir.diagrams import diagram_sizes
    from napkin_mlir.pipeline.stages import derivation

    program = """
func.func @f(%a: tensor<9x5xf32, {axes = ["i", "c"]}>) -> tensor<5xf32, {axes = ["c"]}> {
  %m = "napkin.mask"(%a) ({
  ^bb0(%mi1: index, %mj1: index, %mr1: index, %mc1: index):
    %mk1 = arith.cmpi sle, %mj1, %mi1 : index
    gpu.yield %mk1 : i1
  }) {rows = "c", cols = "i", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<9x5xf32, {axes = ["i", "c"]}>) -> tensor<9x5xf32, {axes = ["i", "c"]}>
  %r = "napkin.reduce"(%m) {axis = "i", kind = "max"} : (tensor<9x5xf32, {axes = ["i", "c"]}>) -> tensor<5xf32, {axes = ["c"]}>
  %o = "napkin.contract"(%a, %r) : (tensor<9x5xf32, {axes = ["i", "c"]}>, tensor<5xf32, {axes = ["c"]}>) -> tensor<5xf32, {axes = ["c"]}>
  return %o : tensor<5xf32, {axes = ["c"]}>
}"""
    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(program)
        x = reference.random_inputs((ArrayType.from_mlir(module.body.operations[0].arguments[0].type),), seed)
        want = np.asarray(interpret(module, x)[0])
        run_pipeline(module, "builtin.module(napkin-verify,napkin-stream-partition{axis=i size=2},napkin-verify)")
        run_pipeline(module, f"builtin.module(napkin-verify,{LOOPS_PIPELINE})")
        (got,) = CpuKernel(module)("f", *x)
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want), (got, want)
        attention = build(VerifyConfig("attention", {"b": 1, "h": 1, "q": 150, "x": 150, "d": 8}, "f32", causal=True))
        run_pipeline(attention, derivation("attention", diagram_sizes(attention), {}))
        run_pipeline(attention, f"builtin.module(napkin-verify,{LOOPS_PIPELINE})")
        assert "arith.minsi" in str(attention)


def test_013_softmax_contracted_across_its_rows_is_not_streamed(run_cli: Callable[..., CliResult]) -> None:
    """A softmax along k whose contraction also sums z (the softmax's rows vary along z): the
    running maximum's rescale cannot reach inside that sum, so the stream partition refuses
    with a located line instead of building a stream whose state types do not match."""
    (path,) = sorted((Path(__file__).parents[1] / "fuzz" / "regressions").glob("013-*.mlir"))
    r = run_cli(
        "napkin-opt", str(path), "--pass-pipeline=builtin.module(napkin-verify,napkin-stream-partition{axis=k size=1})"
    )
    assert r.rc != 0 and "Traceback" not in r.stderr, r.describe()
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "running maximum" in line and "['z']" in line and ":" in line.split("error:")[1], line


SOFTMAX_BF16 = """
func.func @f(%arg0: tensor<7x5xbf16, {axes = ["y", "d"]}>) -> tensor<5xbf16, {axes = ["d"]}> attributes {arg_names = ["A0"]} {
  %0 = "napkin.mask"(%arg0) ({
  ^bb0(%i: index, %j: index, %n: index, %m: index):
    %a = arith.subi %j, %m : index
    %b = arith.subi %i, %n : index
    %k = arith.cmpi sle, %a, %b : index
    gpu.yield %k : i1
  }) {cols = "y", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>, rows = "d"} : (tensor<7x5xbf16, {axes = ["y", "d"]}>) -> tensor<7x5xbf16, {axes = ["y", "d"]}>
  %1 = "napkin.softmax"(%0) {axis = "y"} : (tensor<7x5xbf16, {axes = ["y", "d"]}>) -> tensor<7x5xbf16, {axes = ["y", "d"]}>
  %2 = "napkin.contract"(%arg0, %1) : (tensor<7x5xbf16, {axes = ["y", "d"]}>, tensor<7x5xbf16, {axes = ["y", "d"]}>) -> tensor<5xf32, {axes = ["d"]}>
  %3 = "napkin.cast"(%2) : (tensor<5xf32, {axes = ["d"]}>) -> tensor<5xbf16, {axes = ["d"]}>
  return %3 : tensor<5xbf16, {axes = ["d"]}>
}
"""


@pytest.mark.parametrize("levels", ["", "napkin-assign-levels,"], ids=["plain", "levels"])
def test_017_bf16_softmax_streams_in_f32(levels: str, seed: int) -> None:
    """017 (fuzz seed 31, diagram 31000830): a softmax of bf16 scores (masked) streamed in
    chunks: the online form took the running max and sums of the bf16 chunk into f32 state
    directly (a reduce from bf16 to f32, a sub of bf16 and f32: verifier failures after the
    pass). The chunk is now cast to f32 first and P to the type the contraction reads; the
    meaning is unchanged and the CPU result passes the rule."""
    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(SOFTMAX_BF16)
        x = reference.random_inputs((ArrayType.from_mlir(module.body.operations[0].arguments[0].type),), seed)
        want = np.asarray(interpret(module, x, "f64")[0], np.float64)
        run_pipeline(
            module, f"builtin.module(napkin-verify,{levels}napkin-stream-partition{{axis=y size=5}},napkin-verify)"
        )
        assert "napkin.stream" in str(module)
        got = np.asarray(interpret(module, x, "f64")[0], np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    _lowered_matches(SOFTMAX_BF16, f"{levels}napkin-stream-partition{{axis=y size=5}}", seed)


FMA_BF16 = """\
func.func @fma(%a: tensor<4096xbf16, {axes = ["i"]}>, %b: tensor<4096xbf16, {axes = ["i"]}>, %c: tensor<4096xbf16, {axes = ["i"]}>) -> tensor<4096xbf16, {axes = ["i"]}> {
  %0 = "napkin.map"(%a, %b, %c) ({
  ^bb0(%x: bf16, %y: bf16, %z: bf16):
    %1 = math.fma %x, %y, %z : bf16
    gpu.yield %1 : bf16
  }) {operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0>} : (tensor<4096xbf16, {axes = ["i"]}>, tensor<4096xbf16, {axes = ["i"]}>, tensor<4096xbf16, {axes = ["i"]}>) -> tensor<4096xbf16, {axes = ["i"]}>
  return %0 : tensor<4096xbf16, {axes = ["i"]}>
}
"""


def test_018_fma_rounds_once(seed: int) -> None:
    """018 (fuzz seed 53, diagram 53000443): the JAX interpretation computed a bf16 `math.fma`
    as a bf16 product plus c, two roundings, where the CPU (and the GPU) round once; the fused
    result is now the reference's."""
    import ml_dtypes

    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(FMA_BF16)
        t = ArrayType(("i",), (4096,), "bf16")
        inputs = reference.random_inputs((t, t, t), seed)
        got = np.asarray(interpret(module, inputs, "same")[0], np.float32)
    a, b, c = (np.asarray(x, np.float32) for x in inputs)
    fused = (a * b + c).astype(ml_dtypes.bfloat16).astype(np.float32)  # the product is exact in f32
    twice = ((a * b).astype(ml_dtypes.bfloat16).astype(np.float32) + c).astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.count_nonzero(fused != twice) > 0  # the inputs tell the two apart
    np.testing.assert_array_equal(got, fused)
