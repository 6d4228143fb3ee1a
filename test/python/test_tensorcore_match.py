"""The tensor-core rule accounts for every op, and `napkin compile|emulate FILE.mlir`.

The tensor-core kernel is FlashAttention's online softmax between two mma.sync contractions,
with the program's elementwise ops on the scores computed by a rule per op
(test_tensorcore_variants.py), so the rule may take a partitioned program only when each of
its ops is one the kernel implements. These tests: attention whose normalizer is something
else (a sink logit) is refused, naming the op and its location (sigmoid attention, a stream
without a softmax, takes the kernel's accumulating form, as the backward's dQ does); a
program changed in one op (a reduction kind, an operand order that matters, a mask offset,
V replaced by K, a fill value, a dead op, a score op reading the carried state) is refused
naming that op; plain, causal and grouped-query attention are still taken, every op given its
part of the kernel, and two scales before the softmax fold into one factor. Then the command
line on files: the SIMT fallback (one line saying why) judged against the file's own JAX
interpretation, the soft-capped file through the tensor cores, and a plain attention file
through the tensor-core rule, identical to the built-in's kernel (good runs call the
command's main() in this process, as only their output is checked; the refusal's exit code
and error line are checked in a subprocess).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, CliResult, run_cli_in_process
from mlir import ir

from napkin_mlir.backends.cpu import NUMPY_DTYPES
from napkin_mlir.backends.gpu import runner as gpu_runner
from napkin_mlir.backends.gpu.tensorcore import compile_tensorcore_attention
from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal, match_attention
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.check.harness import VerifyConfig, build
from napkin_mlir.cli.compile import FileProblem, compile_file_kernel
from napkin_mlir.derive.auto import derive
from napkin_mlir.emulator import emulate_kernel
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.files import load_diagram
from napkin_mlir.pipeline.passmanager import run_pipeline

EXAMPLES = REPO_ROOT / "examples"


def _location(path: Path, op: str) -> str:
    """FILE:LINE:COL of the first `op` written in `path` (where the parser puts it)."""
    quoted = f'"{op}"'
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if quoted in line:
            return f"{path}:{number}:{line.index(quoted) + 1}"
    raise AssertionError(f"{op} not in {path}")


def _derived_file(path: Path, dims: dict[str, int] | None = None) -> ir.Module:
    module = load_diagram(path, dims)
    run_pipeline(module, derive(module, filename=str(path)).pipeline(), filename=str(path))
    return module


def _derived(dims: dict[str, int], causal: bool = False, kv_heads: int | None = None) -> ir.Module:
    module = build(VerifyConfig("attention", dims, "bf16", causal=causal, kv_heads=kv_heads))
    run_pipeline(module, derive(module, {"q": 32, "x": 32}).pipeline())
    return module


def _nested(op: ir.Operation) -> list[ir.Operation]:
    found: list[ir.Operation] = []
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                found.append(inner.operation)
                found += _nested(inner.operation)
    return found


# --- refused: the programs the kernel does not compute --------------------------------------------


def _stream_location(path: Path) -> str:
    """Where the stream partition of an attention file is: the P·V contraction it ends with."""
    lines = path.read_text().splitlines()
    number = [n for n, line in enumerate(lines, start=1) if '"napkin.contract"' in line][1]
    column = lines[number - 1].index('"napkin.contract"') + 1
    return f"{path}:{number}:{column}"


@pytest.mark.parametrize(("example", "reason"), [("sink_attention", "this stream carries 4 values")], ids=["sink"])
def test_attention_variants_are_refused_naming_the_op(example: str, reason: str) -> None:
    """A sink logit in the normalizer (a fourth carried value) is not the kernel's online
    softmax: the refusal names the stream, where it is, and says why."""
    path = EXAMPLES / f"{example}.mlir"
    with napkin_context(), ir.Location.unknown():
        module = _derived_file(path)
        expected = f"the tensor-core rule does not lower 'napkin.stream' at {_stream_location(path)} ("
        with pytest.raises(TensorCoreRefusal, match=re.escape(expected) + f".*{reason}") as refused:
            compile_tensorcore_attention(module, "sm_80", stop_after="gpu", filename=str(path))
        assert str(refused.value).endswith("use --kernel simt")
        with pytest.raises(TensorCoreRefusal, match=re.escape(expected)):
            AttentionPlan.from_partitioned(module, filename=str(path))


def _step(module: ir.Module) -> list[ir.Operation]:
    stream = next(op for op in _nested(module.body.operations[0].operation) if op.name == "napkin.stream")
    return [op.operation for op in stream.regions[1].blocks[0].operations]


def _reduce_sum_to_max(module: ir.Module) -> str:
    op = next(o for o in _step(module) if o.name == "napkin.reduce" and "sum" in str(o.attributes["kind"]))
    op.attributes["kind"] = ir.StringAttr.get("max")
    return "napkin.reduce"


def _alpha_reversed(module: ir.Module) -> str:
    op = next(o for o in _step(module) if o.name == "napkin.sub" and isinstance(o.operands[0], ir.BlockArgument))
    a, b = op.operands
    op.operands[0], op.operands[1] = b, a
    return "napkin.sub"


def _mask_offsets_swapped(module: ir.Module) -> str:
    op = next(o for o in _step(module) if o.name == "napkin.mask")
    a, b = op.operands[1], op.operands[2]
    op.operands[1], op.operands[2] = b, a
    return "napkin.mask"


def _pv_reads_k(module: ir.Module) -> str:
    step = _step(module)
    k_chunk, _v_chunk = (o for o in step if o.name == "napkin.transfer")
    pv = [o for o in step if o.name == "napkin.contract"][1]
    pv.operands[1] = k_chunk.results[0]
    return "napkin.contract"


def _row_sum_starts_at_one(module: ir.Module) -> str:
    stream = next(op for op in _nested(module.body.operations[0].operation) if op.name == "napkin.stream")
    fill = [op.operation for op in stream.regions[0].blocks[0].operations][1]
    fill.attributes["value"] = ir.FloatAttr.get(ir.F64Type.get(), 1.0)
    return "napkin.fill"


def _dead_exp(module: ir.Module) -> str:
    step = _step(module)
    scores = next(o for o in step if o.name == "napkin.scale")
    with ir.InsertionPoint(step[-1]), ir.Location.unknown():
        ir.Operation.create("napkin.exp", results=[scores.results[0].type], operands=[scores.results[0]])
    return "napkin.exp"


def _second_scale(module: ir.Module) -> str:
    step = _step(module)
    scale = next(o for o in step if o.name == "napkin.scale")
    with ir.InsertionPoint(scale), ir.Location.unknown():
        extra = ir.Operation.create(
            "napkin.scale",
            results=[scale.operands[0].type],
            operands=[scale.operands[0]],
            attributes={"factor": ir.FloatAttr.get(ir.F64Type.get(), 0.5)},
        )
    scale.operands[0] = extra.results[0]
    return "napkin.scale"


def _score_reads_the_state(module: ir.Module) -> str:
    """scores - m with m the carried row max: not an input the kernel reads at a score."""
    step = _step(module)
    scale = next(o for o in step if o.name == "napkin.scale")
    row_max = scale.parent.regions[1].blocks[0].arguments[-3]
    with ir.InsertionPoint(scale), ir.Location.unknown():
        extra = ir.Operation.create(
            "napkin.sub", results=[scale.operands[0].type], operands=[scale.operands[0], row_max]
        )
    scale.operands[0] = extra.results[0]
    return "napkin.sub"


#: One op changed, and what the refusal says about it.
MUTATIONS = {
    "row-sum-as-max": (_reduce_sum_to_max, "takes the sum over the key axis x"),
    "alpha-exp(m'-m)": (_alpha_reversed, "exp(m - m')"),
    "mask-offsets-swapped": (_mask_offsets_swapped, "the group's q and the chunk's x offsets"),
    "pv-reads-k": (_pv_reads_k, "reads V from the function's argument #2"),
    "row-sum-starts-at-1": (_row_sum_starts_at_one, "starts the row sum at 0.0"),
    "dead-op": (_dead_exp, "has no part that computes it"),
    "score-op-reads-the-state": (_score_reads_the_state, "is a region argument"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_program_changed_in_one_op_is_refused_naming_it(mutation: str) -> None:
    """Every op is checked for what it reads and its attributes, not counted: one op of the
    causal attention program changed (each is a different function) is refused by name."""
    with napkin_context(), ir.Location.unknown():
        module = _derived({"b": 1, "h": 2, "q": 64, "x": 64, "d": 32}, causal=True)
        AttentionPlan.from_partitioned(module)  # the program as derived is taken
        change, reason = MUTATIONS[mutation]
        op = change(module)
        assert module.operation.verify()
        with pytest.raises(TensorCoreRefusal, match=f"does not lower '{re.escape(op)}' \\(.*{re.escape(reason)}"):
            AttentionPlan.from_partitioned(module)


def test_two_scales_before_the_softmax_fold_into_one_factor() -> None:
    with napkin_context(), ir.Location.unknown():
        module = _derived({"b": 1, "h": 2, "q": 64, "x": 64, "d": 32}, causal=True)
        before = AttentionPlan.from_partitioned(module)
        _second_scale(module)
        after = AttentionPlan.from_partitioned(module)
    assert after.scale == pytest.approx(before.scale * 0.5) and len(after.skips) == 1
    assert [op.name for op in after.score_ops] == ["napkin.mask"]  # applied after the folded scales
    assert dataclasses.replace(after, scale=before.scale) == before


def test_commuted_operands_are_taken_with_the_same_plan() -> None:
    """max(rowmax, m) is max(m, rowmax): operands of a commutative op may come in either order."""
    with napkin_context(), ir.Location.unknown():
        module = _derived({"b": 1, "h": 2, "q": 64, "x": 64, "d": 32}, causal=True)
        before = AttentionPlan.from_partitioned(module)
        mx = next(o for o in _step(module) if o.name == "napkin.max")
        a, b = mx.operands
        mx.operands[0], mx.operands[1] = b, a
        assert AttentionPlan.from_partitioned(module) == before


# --- taken: plain, causal, grouped-query attention --------------------------------------------------


@pytest.mark.parametrize(
    "causal, kv_heads", [(False, None), (True, None), (True, 2)], ids=["plain", "causal", "gqa-causal"]
)
def test_attention_is_taken_and_every_op_has_its_part(causal: bool, kv_heads: int | None) -> None:
    dims = {"b": 2, "h": 4, "q": 100, "x": 77, "d": 64}
    with napkin_context(), ir.Location.unknown():
        module = _derived(dims, causal, kv_heads)
        match = match_attention(module)
        plan = AttentionPlan.from_partitioned(module)
        ops = _nested(module.body.operations[0].operation)
    assert len(match.parts) == len(ops) and all(part for _, _, part in match.parts)
    assert [name for name, _, _ in match.parts] == [op.name for op in ops]
    r = 4 // kv_heads if kv_heads else 1
    assert (len(plan.skips), plan.r, plan.h, plan.gq, plan.sx) == (int(causal), r, 4 // r, 32, 32)
    assert plan.scale == pytest.approx(1 / 8)
    assert sum(name == "napkin.mask" for name, _, _ in match.parts) == int(causal)


# --- the command line on files ------------------------------------------------------------------------


def _error_lines(r: CliResult) -> list[str]:
    assert r.rc != 0 and "Traceback" not in r.stderr + r.stdout, r.describe()
    return [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]


def test_emulate_sink_file_falls_back_to_simt_and_passes(seed: int) -> None:
    path = EXAMPLES / "sink_attention.mlir"
    r = run_cli_in_process("napkin", "emulate", str(path), "--dims", "q=40,x=40", "--seed", str(seed))
    assert r.rc == 0 and r.last_line().startswith("PASS"), r.describe()
    why = [ln for ln in r.stdout.splitlines() if "tensor-core rule" in ln]
    assert len(why) == 1 and why[0].startswith("kernel: simt"), r.describe()
    assert f"'napkin.stream' at {_stream_location(path)}" in why[0]
    assert "against the JAX interpretation of the diagram" in r.last_line()


def test_emulate_softcap_file_takes_the_tensor_cores_and_passes(seed: int) -> None:
    r = run_cli_in_process(
        "napkin", "emulate", str(EXAMPLES / "softcap_attention.mlir"), "--dims", "q=40,x=40", "--seed", str(seed)
    )
    assert r.rc == 0 and r.last_line().startswith("PASS"), r.describe()
    assert "kernel: mma-sync" in r.stdout and "tensor-core rule" not in r.stdout, r.describe()
    assert "against the JAX interpretation of the diagram" in r.last_line()


def test_emulate_swiglu_file_passes(seed: int) -> None:
    r = run_cli_in_process("napkin", "emulate", str(EXAMPLES / "swiglu_mlp.mlir"), "--seed", str(seed))
    assert r.rc == 0 and r.last_line().startswith("PASS"), r.describe()
    assert "kernel: simt" in r.stdout and "interpretation of the diagram" in r.last_line()


def test_compile_sink_file_to_ptx_and_tensorcore_refuses(run_cli, tmp_path: Path) -> None:
    path = EXAMPLES / "sink_attention.mlir"
    out = tmp_path / "sink.ptx"
    r = run_cli_in_process("napkin", "compile", str(path), "--target", "sm_80", "--emit", "ptx", "-o", str(out))
    assert r.rc == 0, r.describe()
    assert ".entry sink_attention" in out.read_text() and "mma.sync" not in out.read_text()
    side = gpu_runner.load_sidecar(out.with_suffix(".ptx.json"))
    assert side.problem["kernel"] == "simt" and '"napkin.max"' in side.problem["napkin"]
    refused = run_cli(
        "napkin", "compile", str(path), "--target", "sm_80", "--emit", "ptx", "--kernel", "tensorcore",
        "-o", str(tmp_path / "tc.ptx"),
    )  # fmt: skip
    errors = _error_lines(refused)
    assert len(errors) == 1 and errors[0].endswith("use --kernel simt"), refused.describe()
    assert errors[0].startswith(
        f"error: the tensor-core rule does not lower 'napkin.stream' at {_stream_location(path)} ("
    )
    assert not (tmp_path / "tc.ptx").exists()


def test_attention_file_takes_the_tensor_cores_like_the_builtin(tmp_path: Path, seed: int) -> None:
    """A plain causal attention written as a file: the tensor-core rule, the same tiles and the
    very kernel the built-in gives, and it passes on the emulator against the file's diagram."""
    dims = "b=1,h=2,q=100,x=77,d=64"
    att = tmp_path / "att.mlir"
    common = ["--target", "sm_80", "--emit", "gpu"]
    r = run_cli_in_process(
        "napkin", "build", "attention", "--dims", dims, "--dtype", "bf16", "--causal", "-o", str(att)
    )
    assert r.rc == 0, r.describe()
    r = run_cli_in_process("napkin", "compile", str(att), *common, "-o", str(tmp_path / "f.mlir"))
    assert r.rc == 0 and "kernel: mma-sync" in r.stdout, r.describe()
    r = run_cli_in_process(
        "napkin", "compile", "attention", "--dims", dims, "--dtype", "bf16", "--causal", *common,
        "-o", str(tmp_path / "b.mlir"),
    )  # fmt: skip
    assert r.rc == 0, r.describe()
    assert (tmp_path / "f.mlir").read_text() == (tmp_path / "b.mlir").read_text()
    r = run_cli_in_process("napkin", "emulate", str(tmp_path / "f.mlir.json"), "--seed", str(seed))
    assert r.rc == 0 and r.last_line().startswith("PASS"), r.describe()
    assert "interpretation of the diagram" in r.last_line()


def test_the_judge_tells_softcap_from_plain_attention(tmp_path: Path, seed: int) -> None:
    """Judged against a diagram, the emulator compares with that diagram's interpretation:
    the plain attention kernel passes against plain attention and fails against a soft cap
    of 1 (which changes the output well beyond the tolerance), and the tensor-core kernel of
    the soft-capped file passes against it."""
    softcap = tmp_path / "softcap1.mlir"
    text = (EXAMPLES / "softcap_attention.mlir").read_text()
    softcap.write_text(text.replace("2.000000e-02", "1.000000e+00").replace("5.000000e+01", "1.000000e+00"))
    with napkin_context(), ir.Location.unknown():
        plain = str(build(VerifyConfig("attention", {"b": 1, "h": 2, "q": 37, "x": 29, "d": 16}, "bf16")))
    att = tmp_path / "att.mlir"
    att.write_text(plain)
    kernel, gpu_text, plain_ir = compile_file_kernel(FileProblem(str(att)), "sm_80", "gpu", log=lambda _: None)
    assert kernel is not None and kernel.problem["kernel"] == "tensorcore"
    capped_kernel, capped_text, capped_ir = compile_file_kernel(
        FileProblem(str(softcap)), "sm_80", "gpu", log=lambda _: None
    )
    assert capped_kernel is not None and capped_kernel.problem["kernel"] == "tensorcore"
    # the two references differ by far more than the bf16 rule allows
    rng = np.random.default_rng(seed)
    bf16 = NUMPY_DTYPES["bf16"]
    q, k, v = (rng.standard_normal(s).astype(bf16) for s in ((1, 2, 37, 16), (1, 2, 29, 16), (1, 2, 29, 16)))
    with napkin_context(), ir.Location.unknown():
        a = np.asarray(interpret(ir.Module.parse(plain_ir), [q, k, v], "f64")[0])
        b = np.asarray(interpret(ir.Module.parse(capped_ir), [q, k, v], "f64")[0])
    assert np.max(np.abs(a - b)) > 0.1
    assert emulate_kernel(kernel, gpu_text, seed, diagram=plain_ir).passed
    assert not emulate_kernel(kernel, gpu_text, seed, diagram=capped_ir).passed
    assert emulate_kernel(capped_kernel, capped_text, seed).passed  # its sidecar carries the capped diagram


def test_sigmoid_attention_takes_the_accumulating_kernel(seed: int) -> None:
    """Sigmoid attention (no softmax: O = Σ_x sigmoid(s + b) V) is a stream of one accumulator,
    O += F·V with F the map rounded to bf16 (one MMA); it passes on the emulator against its
    diagram's interpretation at odd sizes."""
    from napkin_mlir.cli.compile import FileProblem, compile_file_kernel
    from napkin_mlir.emulator import emulate_kernel

    path = EXAMPLES / "sigmoid_attention.mlir"
    with napkin_context(), ir.Location.unknown():
        plan = AttentionPlan.from_partitioned(_derived_file(path), filename=str(path))
    assert (
        not plan.softmax
        and plan.score_pairs == ((0, 1),)
        and [op.name for op in plan.score_ops]
        == [
            "napkin.scale",
            "napkin.map",
        ]
    )
    assert [(chunk, split) for _, chunk, split in plan.accumulations] == [(2, False)]
    problem = FileProblem(str(path), dims={"q": 100, "x": 130})
    kernel, text, _ = compile_file_kernel(problem, "sm_80", "gpu", "tensorcore", log=lambda _: None)
    assert kernel is not None
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()
