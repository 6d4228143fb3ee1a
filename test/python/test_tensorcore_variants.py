"""Score modifications lowered op by op in the tensor-core (mma.sync) attention kernel.

The examples soft-capped, bias, grouped-query bias and cross attention (V's head dim 24, Q's
and K's 16) take the tensor-core rule (`--kernel auto` picks it), assemble for sm_80 and
sm_90a without spills and with at most 10% more registers than plain attention at the same
tiles, and pass on the emulator against the JAX interpretation of their own diagram. The
kernel computes what the program says: every score gets its tanh or its bias (counted in
the gpu-stage text), a kernel whose tanh or add rule is bypassed fails on the emulator, and
a kernel judged against another diagram fails; a bias table is read two keys at a time, from
global memory or from its tile staged in shared memory. Diagrams built here cover the rest:
a mask before the soft cap (masked scores become -cap, so no chunk may be skipped), a
`napkin.map` of the scores and a table, a per-head factor, per-query-head inputs of
grouped-query attention under the causal mask, a graph of every unary and binary rule, ops
on O / l before its cast, and a score op that has no rule yet (rounding the scores to bf16),
which is refused by name and location.
"""

from __future__ import annotations

import functools
import json
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from mlir import ir
from mlir.dialects import arith

from napkin_mlir.backends.gpu import tensorcore_scores
from napkin_mlir.backends.gpu.sidecar import GpuKernel
from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.check.harness import VerifyConfig
from napkin_mlir.cli.compile import FileProblem, compile_file_kernel, compile_to_file
from napkin_mlir.derive.auto import derive
from napkin_mlir.emulator import emulate_kernel
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.builders import DiagramBuilder
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.files import axis_sizes, load_diagram
from napkin_mlir.pipeline.passmanager import run_pipeline

EXAMPLES = REPO_ROOT / "examples"
MASKS = (
    "sliding_window_attention",
    "causal_bottom_right_attention",
    "prefix_lm_attention",
    "chunked_attention",
    "document_attention",
)
VARIANTS = (
    "softcap_attention",
    "bias_attention",
    "gqa_bias_attention",
    "cross_attention",
    "sliding_window_attention",
    "causal_bottom_right_attention",
    "prefix_lm_attention",
    "chunked_attention",
    "document_attention",
)
B, H, Q, X, D = 1, 2, 37, 29, 16


def _quiet(_: str) -> None:
    pass


def _gpu_kernel(path: Path, kernel_kind: str = "auto") -> tuple[GpuKernel, str, str]:
    """The kernel of a diagram file at the gpu stage (what the emulator runs) and its plain diagram."""
    kernel, text, plain = compile_file_kernel(FileProblem(str(path)), "sm_80", "gpu", kernel_kind, log=_quiet)
    assert kernel is not None
    return kernel, text, plain


def _plan(path: Path) -> AttentionPlan:
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path)
        run_pipeline(module, derive(module, filename=str(path)).pipeline(), filename=str(path))
        return AttentionPlan.from_partitioned(module, filename=str(path))


def _write(tmp_path: Path, name: str, build: Callable[[DiagramBuilder], ir.Value], **inputs: ArrayType) -> Path:
    """A diagram file: Q, K, V (b, h, q/x, d) and `inputs`; `build` gives the scores before the softmax."""
    bf16 = "bf16"
    with napkin_context(), ir.Location.unknown():
        d = DiagramBuilder(
            name,
            Q=ArrayType(("b", "h", "q", "d"), (B, H, Q, D), bf16),
            K=ArrayType(("b", "h", "x", "d"), (B, H, X, D), bf16),
            V=ArrayType(("b", "h", "x", "d"), (B, H, X, D), bf16),
            **inputs,
        )
        p = d.cast(d.softmax(build(d), "x"), bf16)
        text = str(d.ret(d.cast(d.contract(p, d["V"], ("b", "h", "q", "d"), dtype="f32"), bf16)))
    path = tmp_path / f"{name}.mlir"
    path.write_text(text)
    return path


def _scores(d: DiagramBuilder) -> ir.Value:
    return d.scale(d.contract(d["Q"], d["K"], ("b", "h", "q", "x"), dtype="f32"), 1.0 / math.sqrt(D))


def _elements_per_chunk(kernel: GpuKernel) -> int:
    """Score elements one thread holds per chunk: 4 per n8 tile of S per m16 tile of its warp."""
    return (kernel.problem["warp_rows"] // 16) * (kernel.problem["tile"]["x"] // 8) * 4


# --- the examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("example", VARIANTS)
def test_example_takes_the_tensor_cores_and_passes_on_the_emulator(example: str, seed: int) -> None:
    lines: list[str] = []
    kernel, text, _ = compile_file_kernel(
        FileProblem(str(EXAMPLES / f"{example}.mlir")), "sm_80", "gpu", "auto", log=lines.append
    )
    assert kernel is not None and kernel.problem["kernel"] == "tensorcore", lines
    report = emulate_kernel(kernel, text, seed)  # judged by the interpretation of its own diagram
    assert report.passed, report.lines()
    assert "interpretation of the diagram" in report.criterion


def _baseline(example: str, tiles: dict[str, int], target: str, out: Path) -> tuple[int, dict[str, int]]:
    """Registers and kernel tile of plain attention at `tiles` (the built-in grouped-query
    attention for GQA)."""
    if example == "gqa_bias_attention":
        config = VerifyConfig(
            "attention", {"b": B, "h": 2 * H, "q": Q, "x": X, "d": D}, "bf16", kv_heads=H, tiles=tiles
        )
        kernel = compile_to_file(config, target, "cubin", "tensorcore", 16, out, log=_quiet)
    else:  # plain attention at the example's own sizes
        with napkin_context(), ir.Location.unknown():
            sizes = {a: s for a, s in axis_sizes(load_diagram(EXAMPLES / f"{example}.mlir")).items() if a in "qx"}
        registers, tile = _plain_baseline(tuple(sorted(sizes.items())), tuple(sorted(tiles.items())), target)
        return registers, dict(tile)
    assert kernel is not None
    return int(kernel.ptxas["registers"]), kernel.problem["tile"]


@functools.cache
def _plain_baseline(
    sizes: tuple[tuple[str, int], ...], tiles: tuple[tuple[str, int], ...], target: str
) -> tuple[int, tuple[tuple[str, int], ...]]:
    """Registers and kernel tile of the plain attention file at `sizes` and `tiles`: the same
    kernel for every example of those sizes and tiles, so compiled once per test process."""
    with tempfile.TemporaryDirectory(prefix="plain-") as tmp:
        plain = FileProblem(str(EXAMPLES / "softmax_attention_by_hand.mlir"), dims=dict(sizes), tiles=dict(tiles))
        out = Path(tmp) / "plain.cubin"
        kernel = compile_to_file(None, target, "cubin", "tensorcore", 16, out, log=_quiet, file_problem=plain)
    assert kernel is not None
    return int(kernel.ptxas["registers"]), tuple(sorted(kernel.problem["tile"].items()))


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("example", VARIANTS)
def test_example_assembles_without_spills_near_plain_registers(example: str, target: str, tmp_path: Path) -> None:
    """0 spills (ptxas's report in the sidecar) and at most 10% more registers than plain
    attention at the same tiles, plus cross attention's extra O accumulators (2 registers
    per 4 columns of the wider V head), masks included (their predicates compute in i32, and
    the kernel is built under the budget of plain attention without a mask plus 10% where
    ptxas fits it without spilling)."""
    out = tmp_path / "variant.cubin"
    problem = FileProblem(str(EXAMPLES / f"{example}.mlir"))
    kernel = compile_to_file(None, target, "cubin", "auto", 16, out, log=_quiet, file_problem=problem)
    side = json.loads(out.with_suffix(".cubin.json").read_text())
    assert kernel is not None and side["problem"]["kernel"] == "tensorcore"
    assert side["ptxas"]["spill_stores_bytes"] == 0 and side["ptxas"]["spill_loads_bytes"] == 0
    base, tile = _baseline(example, side["problem"]["tiles"], target, tmp_path / "plain.cubin")
    assert tile == side["problem"]["tile"] and base > 0
    wider = 2 * (24 - D) // 4 if example == "cross_attention" else 0
    regs = side["ptxas"]["registers"]
    assert regs <= int(1.1 * base) + wider, (side["ptxas"], base)


# --- the kernel computes the program's ops ----------------------------------------------------------


def _softcap1(tmp_path: Path) -> Path:
    """The soft-capped example with a cap of 1, where the tanh changes the output a lot."""
    path = tmp_path / "softcap1.mlir"
    text = (EXAMPLES / "softcap_attention.mlir").read_text()
    path.write_text(text.replace("2.000000e-02", "1.000000e+00").replace("5.000000e+01", "1.000000e+00"))
    return path


def _bypassed(monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    """The rule of `op` replaced by one that passes its first operand through."""
    monkeypatch.setitem(tensorcore_scores.SCORE_RULES, op, lambda e, op_, args, at: args[0])


def test_softcap_plan_folds_the_last_scale_and_computes_the_rest() -> None:
    plan = _plan(EXAMPLES / "softcap_attention.mlir")
    assert [op.name for op in plan.score_ops] == ["napkin.scale", "napkin.scale", "napkin.tanh"]
    assert [op.factor for op in plan.score_ops[:2]] == [0.25, 0.02] and plan.scale == 50.0
    assert plan.skips == () and plan.inputs == ()


def test_softcap_kernel_has_a_tanh_per_score_and_fails_without_it(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel, text, _ = _gpu_kernel(_softcap1(tmp_path))
    assert text.count("math.tanh") == _elements_per_chunk(kernel)
    assert emulate_kernel(kernel, text, seed).passed
    _bypassed(monkeypatch, "napkin.tanh")
    kernel, text, _ = _gpu_kernel(_softcap1(tmp_path))
    assert "math.tanh" not in text and kernel.problem["kernel"] == "tensorcore"
    assert not emulate_kernel(kernel, text, seed).passed


def test_bias_kernel_reads_the_bias_at_every_score_and_fails_without_it(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = EXAMPLES / "bias_attention.mlir"
    kernel, text, plain = _gpu_kernel(path)
    assert emulate_kernel(kernel, text, seed).passed
    assert [(a.name, a.role, a.axes) for a in kernel.args[3:]] == [
        ("Bias", "input", ("h", "q", "x")),
        ("out0", "output", ("b", "h", "q", "d")),
    ]
    assert len(re.findall(r"memref\.load %A3\[", text)) == _elements_per_chunk(kernel)
    assert "%A3: memref<2x37x29xbf16>" in text and text.count("arith.extf") == _elements_per_chunk(kernel)
    # judged against the diagram that subtracts the bias (same arguments) it fails
    assert not emulate_kernel(kernel, text, seed, diagram=plain.replace('"napkin.add"', '"napkin.sub"')).passed
    _bypassed(monkeypatch, "napkin.add")
    kernel, text, _ = _gpu_kernel(path)
    assert not emulate_kernel(kernel, text, seed).passed


@pytest.mark.parametrize("x", [42, 40], ids=["global-pairs", "staged"])
def test_bias_is_read_two_keys_at_a_time_when_x_is_even(x: int, seed: int) -> None:
    """Even x: each thread's two neighbouring keys of a row come in one vector load, from
    global memory (x = 42), or, for x a multiple of 8 (whole 16-byte rows), from the chunk's
    tile of the table that cp.async copies into shared memory with K and V (x = 40); the
    chunk past x reads inside the table."""
    problem = FileProblem(str(EXAMPLES / "bias_attention.mlir"), dims={"x": x}, tiles={"q": 16, "x": 32})
    kernel, text, _ = compile_file_kernel(problem, "sm_80", "gpu", "tensorcore", log=_quiet)
    assert kernel is not None and "memref.load %A3" not in text
    source = "%bs3" if x % 8 == 0 else "%A3"
    loads = re.findall(rf"vector\.load {source}\[.*vector<2xbf16>", text)
    assert len(loads) == _elements_per_chunk(kernel) // 2
    assert ("nvgpu.device_async_copy %A3" in text) == (x % 8 == 0)
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()
    if x % 8 == 0:  # the table comes by cp.async only
        assert "ld.global" not in report.stats.coalescing_summary()


# --- diagrams built here ------------------------------------------------------------------------------


def test_mask_before_the_soft_cap_streams_every_chunk(tmp_path: Path, seed: int) -> None:
    """tanh(-inf) = -1: scores masked before a cap of 1 still count, so the mask is a score
    op at its place (an arith.select) and no chunk is skipped."""
    path = _write(tmp_path, "masked_softcap", lambda d: d.tanh(d.causal_mask(_scores(d), "q", "x")))
    plan = _plan(path)
    assert [op.name for op in plan.score_ops] == ["napkin.scale", "napkin.mask", "napkin.tanh"] and not plan.skips
    kernel, text, _ = _gpu_kernel(path)
    assert re.search(r"scf\.for %t = %c0 to %c\d+ step", text)  # a constant bound: every chunk
    assert emulate_kernel(kernel, text, seed).passed


def test_map_of_a_table_and_a_per_head_factor(tmp_path: Path, seed: int) -> None:
    """A napkin.map of the scores and a table (read in bf16, converted to f32), then a
    product with a per-head factor: extra kernel arguments in the function's order."""

    def build(d: DiagramBuilder) -> ir.Value:
        def body(s: ir.Value, t: ir.Value) -> ir.Value:
            return arith.addf(s, arith.mulf(t, arith.constant(ir.F32Type.get(), 0.5)))

        table = d.cast(d["Table"], "f32")
        return d.mul(d.map(body, _scores(d), table), d.cast(d["Slope"], "f32"))

    path = _write(
        tmp_path,
        "map_slope",
        build,
        Slope=ArrayType(("h",), (H,), "bf16"),
        Table=ArrayType(("q", "x"), (Q, X), "bf16"),
    )
    kernel, text, _ = _gpu_kernel(path)
    assert kernel.problem["kernel"] == "tensorcore"
    assert [a.name for a in kernel.args] == ["Q", "K", "V", "Slope", "Table", "out0"]
    assert "%A3: memref<2xbf16>, %A4: memref<37x29xbf16>, %O:" in text
    assert emulate_kernel(kernel, text, seed).passed


def test_a_score_op_without_a_rule_is_refused_by_name(tmp_path: Path) -> None:
    """Scores rounded to bf16 and back: napkin.cast has no score rule; refused where it is."""
    path = _write(tmp_path, "rounded", lambda d: d.cast(d.cast(_scores(d), "bf16"), "f32"))
    # the walk back from the softmax meets the cast back to f32 first, the file's second cast
    line = [n for n, ln in enumerate(path.read_text().splitlines(), 1) if '"napkin.cast"' in ln][1]
    with pytest.raises(TensorCoreRefusal, match=rf"does not lower 'napkin.cast' at {re.escape(str(path))}:{line}:"):
        _plan(path)
    lines: list[str] = []
    kernel, _, _ = compile_file_kernel(FileProblem(str(path)), "sm_80", "gpu", "auto", log=lines.append)
    assert kernel is not None and kernel.problem["kernel"] == "simt"
    assert next(ln for ln in lines if "napkin.cast" in ln).startswith("kernel: simt (the tensor-core rule")


def test_grouped_query_inputs_by_query_head_with_the_causal_mask(tmp_path: Path, seed: int) -> None:
    """Grouped-query attention (3 query heads per key/value head) times an f32 slope per
    query head (h, r), plus a bf16 table over (b, r, q, x), then the causal mask: the inputs
    are read at each score's (b, h, r, q, x), the mask still bounds the stream, over several
    CTAs and chunks."""
    r, x = 3, 40
    with napkin_context(), ir.Location.unknown():
        d = DiagramBuilder(
            "gqa_slope",
            Q=ArrayType(("b", "h", "r", "q", "d"), (B, H, r, Q, D), "bf16"),
            K=ArrayType(("b", "h", "x", "d"), (B, H, x, D), "bf16"),
            V=ArrayType(("b", "h", "x", "d"), (B, H, x, D), "bf16"),
            Slope=ArrayType(("h", "r"), (H, r), "f32"),
            Bias=ArrayType(("b", "r", "q", "x"), (B, r, Q, x), "bf16"),
        )
        s = d.scale(d.contract(d["Q"], d["K"], ("b", "h", "r", "q", "x"), dtype="f32"), 0.25)
        s = d.causal_mask(d.add(d.mul(s, d["Slope"]), d.cast(d["Bias"], "f32")), "q", "x")
        p = d.cast(d.softmax(s, "x"), "bf16")
        text = str(d.ret(d.cast(d.contract(p, d["V"], ("b", "h", "r", "q", "d"), dtype="f32"), "bf16")))
    path = tmp_path / "gqa_slope.mlir"
    path.write_text(text)
    problem = FileProblem(str(path), tiles={"q": 16, "x": 16})
    kernel, gpu_text, _ = compile_file_kernel(problem, "sm_80", "gpu", "tensorcore", log=_quiet)
    assert kernel is not None and kernel.grid == (3, H, B) and kernel.block == (32 * r, 1, 1)
    # the causal CTA streams the chunks its mask may keep: the loop's bounds come from the scan
    assert re.search(r"scf\.for %t = %c0 to %n\d+ step", gpu_text)
    report = emulate_kernel(kernel, gpu_text, seed)
    assert report.passed, report.lines()


def test_every_unary_and_binary_rule_on_a_dag_of_score_ops(tmp_path: Path, seed: int) -> None:
    """gelu, silu, relu, exp, sub, div, add and max, several reading two score values: each
    op's rule at every score, and the kernel passes against the diagram's interpretation."""

    def build(d: DiagramBuilder) -> ir.Value:
        s = _scores(d)
        wiggle = d.div(d.relu(s), d.exp(d.scale(s, 0.1)))
        return d.max(d.add(d.sub(d.gelu(s), d.silu(s)), wiggle), s)

    path = _write(tmp_path, "every_rule", build)
    plan = _plan(path)
    names = {op.name.removeprefix("napkin.") for op in plan.score_ops}
    assert {"gelu", "silu", "relu", "exp", "scale", "sub", "div", "add", "max"} <= names
    kernel, text, _ = _gpu_kernel(path)
    assert kernel.problem["kernel"] == "tensorcore" and text.count("math.tanh") == _elements_per_chunk(kernel)
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()


def test_ops_on_the_output_before_its_cast(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the normalization: O / l times a gate per row (h, q), scaled, plus a bias per
    column of V's head (e, wider than d): computed on the O fragments before the cast; the
    kernel fails on the emulator when the gate's product is dropped."""
    e = 24
    with napkin_context(), ir.Location.unknown():
        d = DiagramBuilder(
            "gated",
            Q=ArrayType(("b", "h", "q", "d"), (B, H, Q, D), "bf16"),
            K=ArrayType(("b", "h", "x", "d"), (B, H, X, D), "bf16"),
            V=ArrayType(("b", "h", "x", "e"), (B, H, X, e), "bf16"),
            Gate=ArrayType(("h", "q"), (H, Q), "bf16"),
            Shift=ArrayType(("e",), (e,), "f32"),
        )
        p = d.cast(d.softmax(_scores(d), "x"), "bf16")
        o = d.contract(p, d["V"], ("b", "h", "q", "e"), dtype="f32")
        o = d.add(d.scale(d.mul(o, d.cast(d["Gate"], "f32")), 2.0), d["Shift"])
        text = str(d.ret(d.cast(o, "bf16")))
    path = tmp_path / "gated.mlir"
    path.write_text(text)
    plan = _plan(path)
    assert [op.name for op in plan.output_ops] == ["napkin.mul", "napkin.scale", "napkin.add"] and plan.score_ops == ()
    kernel, gpu_text, _ = _gpu_kernel(path)
    assert [a.name for a in kernel.args] == ["Q", "K", "V", "Gate", "Shift", "out0"]
    report = emulate_kernel(kernel, gpu_text, seed)
    assert report.passed, report.lines()
    _bypassed(monkeypatch, "napkin.mul")
    kernel, gpu_text, _ = _gpu_kernel(path)
    assert not emulate_kernel(kernel, gpu_text, seed).passed
