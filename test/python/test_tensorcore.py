"""The tensor-core attention rule without a GPU: every variant it accepts assembles with ptxas
for sm_80 and sm_90a without spills, with the shared memory and launch shape the plan
predicts (the kernel's numbers are checked by running it on the emulator, test_emulator.py)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import has_gpu
from mlir import ir

from napkin_mlir.backends.gpu.fragments import a_coords, b_coords, c_coords
from napkin_mlir.backends.gpu.ptxas import assemble
from napkin_mlir.backends.gpu.tensorcore import compile_tensorcore_attention
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.check.harness import VerifyConfig, build
from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import derivation


def test_fragment_layouts_cover_each_element_once() -> None:
    for coords, shape, per_lane in ((a_coords, (16, 16), 8), (b_coords, (16, 8), 4), (c_coords, (16, 8), 4)):
        seen = [rc for lane in range(32) for rc in coords(lane)]
        assert len(seen) == 32 * per_lane == shape[0] * shape[1] and len(set(seen)) == len(seen)


def _partitioned(
    dims: dict[str, int], dtype: str, causal: bool, kv_heads: int | None, tiles: dict[str, int]
) -> ir.Module:
    module = build(VerifyConfig("attention", dims, dtype, causal=causal, kv_heads=kv_heads))
    sizes = diagram_sizes(module)
    run_pipeline(module, derivation("attention", sizes, tiles))
    return module


VARIANTS = [
    # dims, dtype, causal, kv_heads, tiles
    ({"b": 2, "h": 4, "q": 200, "x": 333, "d": 64}, "bf16", True, None, {"q": 64, "x": 32}),
    ({"b": 1, "h": 16, "q": 4096, "x": 4096, "d": 128}, "bf16", False, None, {"q": 64, "x": 64}),
    ({"b": 1, "h": 16, "q": 4096, "x": 4096, "d": 128}, "f16", True, None, {"q": 128, "x": 32}),
    ({"b": 1, "h": 8, "q": 1000, "x": 777, "d": 64}, "bf16", True, 2, {"q": 32, "x": 64}),
    # 8 warps, 16x64 K/V chunks: the last copy round is partial (its cp.async sit in an scf.if)
    ({"b": 1, "h": 2, "q": 300, "x": 40, "d": 64}, "bf16", True, None, {"q": 128, "x": 16}),
]


@pytest.mark.parametrize(("target", "gpu"), [("sm_80", "a100"), ("sm_90a", "h100")])
@pytest.mark.parametrize(
    "variant", VARIANTS, ids=["hd64-causal-rem", "hd128", "hd128-f16-causal", "gqa", "partial-copy-round"]
)
def test_kernel_assembles_without_spills(variant: tuple, target: str, gpu: str, tmp_path) -> None:
    """The kernel assembles without spills and fits an SM; and the model of the tensor-core
    mapping agrees with ptxas on it: SMEM per CTA and warps per CTA exactly, registers per
    thread within 25%, and the same occupancy (warps per SM). (Once two tests of the same
    variants and targets, each compiling and assembling the same kernel: merged, so each
    kernel is compiled and assembled once.)"""
    from napkin_mlir.model.cost import analyze
    from napkin_mlir.model.hardware import gpu as load_gpu

    dims, dtype, causal, kv_heads, tiles = variant
    with napkin_context(), ir.Location.unknown():
        module = _partitioned(dims, dtype, causal, kv_heads, tiles)
        model = analyze(module, gpu, stages=2, tensor_cores=True)
        plan = AttentionPlan.from_partitioned(module)
        kernel, ptx = compile_tensorcore_attention(module, target)
    report = assemble(ptx, target, tmp_path / "k.cubin")
    # the cost model's resources against ptxas's
    warps = kernel.block[0] // 32
    assert model.smem_per_cta == kernel.dynamic_smem_bytes
    assert model.warps_per_cta == warps
    assert abs(model.registers_per_thread - report["registers"]) <= 0.25 * report["registers"], (
        model.registers_per_thread,
        report,
    )
    assert model.warps_per_sm == _occupancy(load_gpu(gpu), report["registers"], kernel.dynamic_smem_bytes, warps)
    # the kernel itself
    assert report["spill_stores_bytes"] == 0 and report["spill_loads_bytes"] == 0, report["raw"]
    assert 0 < report["registers"] <= 255
    # one CTA's registers must fit the SM (64K) and its shared memory the per-CTA limit
    assert report["registers"] * plan.threads <= 65536
    assert kernel.dynamic_smem_bytes == plan.smem_bytes <= 227 * 1024
    r = plan.r
    assert plan.warps == r * tiles["q"] // 16 and kernel.block == (32 * plan.warps, 1, 1)
    assert kernel.grid == (-(-dims["q"] // tiles["q"]), dims["h"] // r, dims["b"])
    mma = re.findall(r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.(\w+)\.\w+\.f32", ptx)
    assert mma and set(mma) == {dtype}
    # per chunk and warp: (x/8)(d/16) MMAs for S and (d/8)(x/16) for O
    assert len(mma) == (tiles["x"] // 8) * (dims["d"] // 16) + (dims["d"] // 8) * (tiles["x"] // 16)
    # every fragment load is an x4: Q's A fragments, and K's and V's B fragments in pairs of n8 tiles
    assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in ptx and "cp.async.cg.shared.global" in ptx
    assert "m8n8.x2" not in ptx and "m8n8.x1" not in ptx
    assert ("setp" in ptx) and (kernel.args[0].name, kernel.args[-1].role) == ("Q", "output")


def test_tiles_the_tensor_cores_cannot_take_are_refused() -> None:
    with napkin_context(), ir.Location.unknown():
        module = _partitioned({"b": 1, "h": 1, "q": 100, "x": 100, "d": 64}, "bf16", False, None, {"q": 24, "x": 32})
        with pytest.raises(NapkinError, match="q tile 24"):
            AttentionPlan.from_partitioned(module)
        module = _partitioned({"b": 1, "h": 1, "q": 100, "x": 100, "d": 64}, "f32", False, None, {"q": 32, "x": 32})
        with pytest.raises(NapkinError, match="bf16 or f16"):
            AttentionPlan.from_partitioned(module)


def test_only_the_attention_pattern_matches() -> None:
    with napkin_context(), ir.Location.unknown():
        module = build(VerifyConfig("matmul", {"m": 64, "n": 64, "k": 64}, "bf16"))
        run_pipeline(module, derivation("matmul", {"m": 64, "n": 64, "k": 64}, {}))
        with pytest.raises(NapkinError, match=r"does not lower 'napkin\.stream'.* this stream is over 'k'"):
            AttentionPlan.from_partitioned(module)


@pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU (CuPy with a device) on this machine")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_tensorcore_kernel_matches_jax_on_gpu(causal: bool, tmp_path) -> None:
    from napkin_mlir.backends.gpu import runner as gpu_runner
    from napkin_mlir.cli.napkin import main

    out = tmp_path / "att.cubin"
    argv = ["compile", "attention", "--dims", "b=2,h=4,q=200,x=333,d=64", "--dtype", "bf16", "--tile", "q=64,x=32"]
    with pytest.raises(SystemExit) as done:
        main([*argv, *(["--causal"] if causal else []), "--target", "sm_80", "-o", str(out)])
    assert done.value.code == 0
    report = gpu_runner.run(out.with_suffix(".cubin.json"), repeats=5, warmup=2)
    assert report["passed"], report["errors"]


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_compile_without_tiles_takes_the_models_choice(
    target: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --tile: the cost model picks the tiles among those the kernel can take; the kernel
    then assembles without spills."""
    from napkin_mlir.backends.gpu.tensorcore_plan import tiles_fit_kernel
    from napkin_mlir.cli.compile import GPU_OF
    from napkin_mlir.cli.napkin import main
    from napkin_mlir.derive.tiles import choose_tiles

    dims = {"b": 4, "h": 16, "q": 4096, "x": 4096, "d": 128}
    out = tmp_path / "k.cubin"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "compile",
                "attention",
                "--dims",
                "b=4,h=16,q=4096,x=4096,d=128",
                "--dtype",
                "bf16",
                "--target",
                target,
                "--kernel",
                "mma-sync",
                "-o",
                str(out),
            ]
        )
    assert done.value.code == 0
    side = json.loads(out.with_suffix(".cubin.json").read_text())
    expect = choose_tiles(
        "attention",
        dims,
        "bf16",
        GPU_OF[target],
        feasible=lambda t: tiles_fit_kernel(t, dims, "bf16"),
        tensor_cores=True,
    )
    assert side["problem"]["tile"] == {"q": expect.tiles["q"], "x": expect.tiles["x"]}
    assert side["ptxas"]["spill_stores_bytes"] == 0 and "chosen by the cost model" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "dims", "said", "kind"),
    [
        ("sm_90a", "b=1,h=2,q=300,x=200,d=128", "kernel: wgmma", "wgmma"),
        ("sm_90a", "b=1,h=2,q=300,x=200,d=96", "kernel: mma-sync (wgmma: ", "tensorcore"),
        ("sm_80", "b=1,h=2,q=300,x=200,d=128", "kernel: mma-sync", "tensorcore"),
    ],
    ids=["hopper-wgmma", "hopper-falls-back", "ampere"],
)
def test_auto_picks_wgmma_on_hopper_and_mma_sync_elsewhere(
    target: str, dims: str, said: str, kind: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --kernel, sm_90a takes the warp-specialized wgmma kernel where it takes the
    program and says why it does not elsewhere (head dim 96: the mma.sync rule), sm_80 the
    mma.sync rule."""
    from napkin_mlir.cli.napkin import main

    out = tmp_path / "k.mlir"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "compile",
                "attention",
                "--dims",
                dims,
                "--dtype",
                "bf16",
                "--target",
                target,
                "--emit",
                "gpu",
                "-o",
                str(out),
            ]
        )
    assert done.value.code == 0
    assert said in capsys.readouterr().out
    assert json.loads(out.with_suffix(".mlir.json").read_text())["problem"]["kernel"] == kind


def _occupancy(hw, registers: int, smem: int, warps: int) -> int:
    """Warps per SM from a kernel's real resources (CUDA's occupancy rules)."""
    unit = hw.register_alloc_unit
    regs_per_warp = -(-registers * 32 // unit) * unit
    ctas = min(
        hw.max_ctas_per_sm,
        hw.max_warps_per_sm // warps,
        hw.registers_per_sm // (regs_per_warp * warps),
        hw.smem_per_sm // (smem + hw.smem_reserved_per_cta),
    )
    return ctas * warps


# (the model of each variant's resources against ptxas: test_kernel_assembles_without_spills)


@pytest.mark.parametrize(
    "variant", VARIANTS, ids=["hd64-causal-rem", "hd128", "hd128-f16-causal", "gqa", "partial-copy-round"]
)
def test_same_tiles_verify_on_the_cpu(variant: tuple, seed: int) -> None:
    """The tiled program each kernel comes from, at the kernel's tile configuration, runs on
    the CPU and matches JAX (smaller sequences, partial last tiles on q and x)."""
    from napkin_mlir.check.harness import verify

    dims, dtype, causal, kv_heads, tiles = variant
    small = {**dims, "b": 1, "q": tiles["q"] + 13, "x": tiles["x"] * 2 + 5, "h": 2 if kv_heads else 1}
    result = verify(VerifyConfig("attention", small, dtype, seed, causal=causal, kv_heads=kv_heads, tiles=tiles))
    assert result.passed, result.summary()


@pytest.mark.parametrize(("target", "gpu"), [("sm_80", "a100"), ("sm_90a", "h100")])
@pytest.mark.parametrize(
    ("dims", "tiles"),
    [
        ({"b": 2, "h": 8, "q": 1000, "x": 1000, "d": 64}, {"q": 64, "x": 32}),
        ({"b": 1, "h": 4, "q": 300, "x": 333, "d": 64}, {"q": 128, "x": 16}),
    ],
    ids=["q64x32", "q128x16-rem"],
)
def test_two_m_tiles_per_warp(dims: dict[str, int], tiles: dict[str, int], target: str, gpu: str, tmp_path) -> None:
    """32 rows per warp: every K and V fragment feeds two MMAs (fewer ldmatrix per MMA), no
    spills; the model with warp_rows=32 predicts SMEM and warps exactly, registers within 25%
    and occupancy within one CTA per SM (these tiles sit near a register-allocation step)."""
    from napkin_mlir.model.cost import analyze
    from napkin_mlir.model.hardware import gpu as load_gpu

    with napkin_context(), ir.Location.unknown():
        module = _partitioned(dims, "bf16", True, None, tiles)
        wide, wide_ptx = compile_tensorcore_attention(module, target, warp_rows=32)
        _, narrow_ptx = compile_tensorcore_attention(module, target)
        report = analyze(module, gpu, stages=2, tensor_cores=True, warp_rows=32)
    real = assemble(wide_ptx, target, tmp_path / "k.cubin")
    assert real["spill_stores_bytes"] == 0 and wide.block == (32 * tiles["q"] // 32, 1, 1)
    mma_wide, ld_wide = wide_ptx.count("mma.sync.aligned"), wide_ptx.count("ldmatrix.sync")
    mma_narrow, ld_narrow = narrow_ptx.count("mma.sync.aligned"), narrow_ptx.count("ldmatrix.sync")
    assert mma_wide == 2 * mma_narrow and ld_wide / mma_wide < ld_narrow / mma_narrow
    warps = wide.block[0] // 32
    assert report.smem_per_cta == wide.dynamic_smem_bytes and report.warps_per_cta == warps
    assert abs(report.registers_per_thread - real["registers"]) <= 0.25 * real["registers"]
    assert (
        abs(report.warps_per_sm - _occupancy(load_gpu(gpu), real["registers"], wide.dynamic_smem_bytes, warps)) <= warps
    )
