"""The backward's dQ and dK/dV kernels on the tensor cores (sm_80 `mma.sync`, also assembled for
sm_90a).

FlashAttention-2's dQ = Σ_x dS K, dS = P ∘ (dP − D) scaled, P = exp(S − L), is what
`napkin-differentiate` and `napkin-fission` make of attention (`attention_vjp_dQ`). After the
relabelings it is a stream over x without a softmax: two score contractions (S = Q Kᵀ and
dP = dO Vᵀ, both row tiles held as A fragments), elementwise ops by their rules (reading the
tables L and D per row), and dS contracted with the K chunk, dS in f32 split into two bf16
MMA operands (hi + lo). Checked on the emulator against the diagram's own interpretation at
odd sizes (causal, grouped-query), with a kernel that drops an op caught there, the split
measured against a single rounding, and ptxas's report (0 spills).

dK/dV is the same kernel transposed: its CTA holds tiles of keys (K and V as A fragments) and
streams the queries (Q and dO chunks), Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, two accumulators, dV += Pᵀ dO
(P rounded to bf16, one MMA) and dK += dSᵀ Q (hi + lo), L and D read per column, the masks'
positions swapped (a causal mask: the key is the row)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from napkin_mlir.backends.gpu import tensorcore_emit, tensorcore_scores
from napkin_mlir.backends.gpu.sidecar import GpuKernel
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.cli.compile import FileProblem, compile_file_kernel, compile_to_file
from napkin_mlir.cli.verify_grad import differentiated_files
from napkin_mlir.emulator import emulate_kernel


def _quiet(line: str) -> None:
    pass


def _dq(tmp_path: Path, dims: str, causal: bool = False, kv_heads: int | None = None, role: str = "dQ") -> Path:
    """The dQ (or `role`) diagram of the built-in bf16 attention (FlashAttention-2's recomputation)."""
    args = argparse.Namespace(
        diagram="attention",
        dims=dims,
        dtype="bf16",
        causal=causal,
        kv_heads=kv_heads,
        activation="gelu",
        tile=None,
        seed=0,
        residuals="recompute",
        rowsums="output",
        target="sm_80",
    )
    files = {f.stem: f for f in differentiated_files(args, False, tmp_path)}
    return files[f"attention_vjp_{role}"]


def _kernel(path: Path, tiles: dict[str, int] | None = None) -> tuple[GpuKernel, str]:
    problem = FileProblem(str(path), tiles=tiles or {})
    kernel, text, _ = compile_file_kernel(problem, "sm_80", "gpu", "tensorcore", log=_quiet)
    assert kernel is not None and kernel.problem["kernel"] == "tensorcore"
    return kernel, text


DIMS = "b=1,h=2,q=100,x=130,d=64"


def test_the_dq_diagram_reads_as_a_stream_without_a_softmax(tmp_path: Path) -> None:
    from mlir import ir

    from napkin_mlir.derive.auto import derive
    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.files import load_diagram
    from napkin_mlir.pipeline.passmanager import run_pipeline

    path = _dq(tmp_path, DIMS)
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path)
        run_pipeline(module, derive(module, filename=str(path)).pipeline(), filename=str(path))
        plan = AttentionPlan.from_partitioned(module, filename=str(path))
    # arguments (Q, K, V, L, dO, D): dP = dO·V^T and S = Q·K^T, in program order; dQ += dS·K
    assert not plan.softmax and plan.score_pairs == ((4, 2), (0, 1)) and plan.accumulations == ((6, 1, True),)
    assert plan.row_tiles == (0, 4) and plan.chunk_args == (1, 2) and not plan.transposed
    assert [op.name for op in plan.score_ops] == [
        "napkin.scale",
        "napkin.sub",
        "napkin.exp",
        "napkin.map",
        "napkin.scale",
    ]


@pytest.mark.parametrize(("causal", "kv_heads"), [(True, 1), (False, None)])
def test_dq_passes_on_the_emulator(tmp_path: Path, seed: int, causal: bool, kv_heads: int | None) -> None:
    path = _dq(tmp_path, DIMS, causal, kv_heads)
    kernel, text = _kernel(path)
    assert [a.name for a in kernel.args] == ["Q", "K", "V", "L", "dO", "D", "out0"]
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()


def test_dq_without_its_map_fails_on_the_emulator(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """dS = P ∘ (dP − D) is a `napkin.map`: a kernel that passes P through instead fails."""
    path = _dq(tmp_path, "b=1,h=1,q=40,x=70,d=32")
    monkeypatch.setitem(tensorcore_scores.SCORE_RULES, "napkin.map", lambda b, op, args, at: args[0])
    kernel, text = _kernel(path)
    assert not emulate_kernel(kernel, text, seed).passed


def test_the_hi_lo_split_of_ds_beats_one_rounding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dS is f32: contracted as hi + lo (both bf16) the kernel's error is below the error of
    the same kernel with dS rounded to bf16 once (lo dropped), on the same inputs."""
    path = _dq(tmp_path, "b=1,h=2,q=128,x=256,d=64")
    kernel, text = _kernel(path, {"q": 64, "x": 64})
    split = emulate_kernel(kernel, text, 0)
    assert split.passed, split.lines()
    build = tensorcore_emit.build_attention_module

    def once(plan: AttentionPlan, name: str, max_registers: int | None):  # type: ignore[no-untyped-def]
        import dataclasses

        once = tuple((f, chunk, False) for f, chunk, _ in plan.accumulations)
        return build(dataclasses.replace(plan, accumulations=once), name, max_registers)

    monkeypatch.setattr(tensorcore_emit, "build_attention_module", once)
    kernel, text = _kernel(path, {"q": 64, "x": 64})
    rounded = emulate_kernel(kernel, text, 0)
    assert split.errors["rel_fro"] < rounded.errors["rel_fro"], (split.errors, rounded.errors)


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_dq_assembles_without_spills_at_head_dim_128(tmp_path: Path, target: str) -> None:
    path = _dq(tmp_path, "b=1,h=2,q=1024,x=1024,d=128")
    out = tmp_path / "dq.cubin"
    compile_to_file(None, target, "cubin", "tensorcore", 16, out, log=_quiet, file_problem=FileProblem(str(path)))
    side = json.loads(out.with_suffix(".cubin.json").read_text())
    assert side["problem"]["kernel"] == "tensorcore"
    assert side["ptxas"]["spill_stores_bytes"] == 0 and side["ptxas"]["spill_loads_bytes"] == 0


def _plan(path: Path, tiles: dict[str, int] | None = None) -> AttentionPlan:
    from mlir import ir

    from napkin_mlir.derive.auto import derive
    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.files import load_diagram
    from napkin_mlir.pipeline.passmanager import run_pipeline

    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path)
        run_pipeline(module, derive(module, tiles, filename=str(path)).pipeline(), filename=str(path))
        return AttentionPlan.from_partitioned(module, filename=str(path))


def test_the_dk_dv_diagram_reads_as_the_transposed_kernel(tmp_path: Path) -> None:
    plan = _plan(_dq(tmp_path, DIMS, role="dK_dV"), {"x": 64, "q": 16})
    # arguments (Q, K, V, L, dO, D): rows K and V, chunks Q and dO; S^T = K·Q^T, dP^T = V·dO^T
    assert plan.transposed and plan.row_args == (1, 2) and plan.chunk_args == (0, 4)
    assert sorted(plan.score_pairs) == [(1, 0), (2, 4)]
    # dK += dS^T·Q (f32 dS: hi + lo), dV += P^T·dO (P rounded to bf16 first: one MMA)
    chunks = {chunk: split for _, chunk, split in plan.accumulations}
    assert chunks == {0: True, 4: False} and sorted(plan.output_accs) == [0, 1]
    assert (plan.q, plan.x, plan.gq, plan.sx) == (130, 100, 64, 16)  # the kernel's rows are the keys


@pytest.mark.parametrize("causal", [True, False])
def test_dk_dv_passes_on_the_emulator(tmp_path: Path, seed: int, causal: bool) -> None:
    path = _dq(tmp_path, DIMS, causal, role="dK_dV")
    kernel, text = _kernel(path)
    assert [a.name for a in kernel.args if a.role == "output"] == ["out0", "out1"]
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()


def test_causal_dk_dv_skips_the_query_chunks_no_key_of_its_tile_sees(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Causal dK/dV: where the mask drops every entry of a chunk, P = exp(-inf) = 0, so dS =
    P ∘ (dP − D) and its gradient mask select(m == 1, dS, 0) are 0 there (followed through
    the maps' bodies) and both accumulations add nothing: each key tile skips the query chunks
    before its first key (interval reasoning with the rows and columns swapped). It passes on
    the emulator and reads about a third less than the same kernel visiting every chunk."""
    from napkin_mlir.backends.gpu import tensorcore_match

    path = _dq(tmp_path, "b=1,h=2,q=300,x=330,d=64", True, role="dK_dV")
    tiles = {"x": 128, "q": 48}
    assert len(_plan(path, tiles).skips) == 1
    kernel, text = _kernel(path, tiles)
    skipping = emulate_kernel(kernel, text, seed)
    assert skipping.passed, skipping.lines()
    monkeypatch.setattr(tensorcore_match, "decides_stream", lambda step, mask, axis: False)
    assert _plan(path, tiles).skips == ()
    kernel, text = _kernel(path, tiles)
    every = emulate_kernel(kernel, text, seed)
    assert every.passed, every.lines()
    ratio = skipping.stats.global_read_bytes / every.stats.global_read_bytes
    assert 0.5 < ratio < 0.75, ratio


def test_dk_dv_without_its_exponential_fails_on_the_emulator(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _dq(tmp_path, "b=1,h=1,q=40,x=70,d=32", role="dK_dV")
    monkeypatch.setitem(tensorcore_scores.SCORE_RULES, "napkin.exp", lambda b, op, args, at: args[0])
    kernel, text = _kernel(path)
    assert not emulate_kernel(kernel, text, seed).passed


def test_grouped_query_dk_dv_is_refused_by_name(tmp_path: Path) -> None:
    """With grouped query heads dK and dV also sum over the heads r sharing them: a
    contraction over two axes, which the transposed kernel does not take (SIMT does)."""
    from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal

    path = _dq(tmp_path, "b=1,h=2,q=40,x=70,d=32", kv_heads=1, role="dK_dV")
    with pytest.raises(TensorCoreRefusal, match="sums over"):
        _kernel(path)


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_dk_dv_assembles_without_spills_at_head_dim_128(tmp_path: Path, target: str) -> None:
    """At the cost model's tiles, priced with the kernel's own register estimate (two
    accumulators, K and V fragments from shared memory): the model's liveness alone finds no
    tiles at head dim 128."""
    path = _dq(tmp_path, "b=1,h=2,q=1024,x=1024,d=128", role="dK_dV")
    out = tmp_path / "dkdv.cubin"
    problem = FileProblem(str(path))
    compile_to_file(None, target, "cubin", "tensorcore", 16, out, log=_quiet, file_problem=problem)
    side = json.loads(out.with_suffix(".cubin.json").read_text())
    assert side["problem"]["kernel"] == "tensorcore" and side["problem"]["tiles"]["x"] >= 64
    assert side["ptxas"]["spill_stores_bytes"] == 0 and side["ptxas"]["spill_loads_bytes"] == 0


def test_the_wgmma_rule_refuses_a_stream_without_a_softmax(tmp_path: Path) -> None:
    """The Hopper rule computes the online softmax only: dQ is refused there, by reason."""
    from napkin_mlir.backends.gpu.hopper_plan import WgmmaRefusal

    path = _dq(tmp_path, DIMS)
    with pytest.raises(WgmmaRefusal, match="carries accumulators without one"):
        compile_file_kernel(FileProblem(str(path)), "sm_90a", "gpu", "wgmma", log=_quiet)
