"""The Hopper wgmma matmul rule (issue 13) without a GPU: the kernel builds with the MLIR
bindings, ptxas assembles it for sm_90a without spills or warnings, its PTX has the wgmma
instructions, fences and waits in the right order, its launch description is consistent, it
passes on the CPU emulator (whose wgmma rule decodes the descriptors and fragments by the PTX
ISA) against the diagram's JAX interpretation, and the emulator catches kernels broken on
purpose. Its numbers on a real H100/H200 come from bench/run_hopper_check.sh (skipped here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, has_gpu, run_cli_in_process
from mlir import ir

from napkin_mlir.backends.gpu import hopper_emit
from napkin_mlir.backends.gpu.hopper import compile_wgmma_matmul
from napkin_mlir.backends.gpu.hopper_emit import B_LEADING_BYTE_OFFSET, STRIDE_BYTE_OFFSET, descriptor_bits
from napkin_mlir.backends.gpu.hopper_plan import MAX_SMEM, SMEM_ALIGN, MatmulPlan, WgmmaRefusal
from napkin_mlir.backends.gpu.ptxas import assemble
from napkin_mlir.backends.gpu.sidecar import GpuKernel
from napkin_mlir.emulator import emulate_kernel
from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.files import load_diagram

BF16_OUT = str(REPO_ROOT / "bench" / "hopper_matmul.mlir")
F32_OUT = str(REPO_ROOT / "bench" / "hopper_matmul_f32.mlir")
B_K_MAJOR = str(REPO_ROOT / "bench" / "hopper_matmul_nt.mlir")  # B laid out (n, k)


def _compile(path: str, dims: dict[str, int], tile_n: int, stop: str) -> tuple[GpuKernel, str, str]:
    """The kernel, its text at `stop`, and the plain diagram (napkin IR)."""
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, dims)
        plain = str(module)
        kernel, text = compile_wgmma_matmul(module, "sm_90a", stop, {"n": tile_n}, path)
    return kernel, text, plain


VARIANTS = [
    # file, dims, tile of n
    (F32_OUT, {"m": 128, "n": 192, "k": 64}, 64),
    (BF16_OUT, {"m": 192, "n": 384, "k": 320}, 128),
    (BF16_OUT, {"m": 64, "n": 512, "k": 128}, 256),
    (B_K_MAJOR, {"m": 128, "n": 256, "k": 192}, 128),
]
IDS = ["f32-out-n64", "bf16-n128", "bf16-n256", "b-k-major-n128"]


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_kernel_assembles_without_spills(variant: tuple, tmp_path: Path) -> None:
    path, dims, tile_n = variant
    kernel, ptx, _ = _compile(path, dims, tile_n, "ptx")
    report = assemble(ptx, "sm_90a", tmp_path / "mm.cubin")
    assert report["spill_stores_bytes"] == 0 and report["spill_loads_bytes"] == 0, report["raw"]
    assert report["stack_frame_bytes"] == 0, report["raw"]
    assert "warning" not in str(report["raw"]).lower(), report["raw"]  # e.g. C7515, wgmma serialized
    assert 0 < int(report["registers"]) <= 255
    assert kernel.block == (128, 1, 1)
    assert kernel.grid == (dims["n"] // tile_n, dims["m"] // 64, 1)
    assert kernel.dynamic_smem_bytes == SMEM_ALIGN + 64 * 64 * 2 + 64 * tile_n * 2 <= MAX_SMEM
    assert [a.name for a in kernel.args] == ["A", "B", "out0"]
    assert kernel.args[1].shape == ((dims["n"], dims["k"]) if path == B_K_MAJOR else (dims["k"], dims["n"]))
    assert kernel.problem["flops"] == 2 * dims["m"] * dims["n"] * dims["k"]
    assert re.search(r"\.reqntid 128, 1, 1|\.maxntid 128, 1, 1", ptx) and ".minnctapersm 1" in ptx


#: One k chunk of the kernel, in the PTX's order: the stores made visible to the async proxy,
#: a barrier, wgmma.fence, four wgmma (k = 4 x 16), commit, wait for all, a barrier.
TOKENS = {
    "fence.proxy.async.shared::cta": "P",
    "bar.sync": "B",
    "wgmma.fence.sync.aligned": "F",
    "wgmma.mma_async.sync.aligned": "M",
    "wgmma.commit_group.sync.aligned": "C",
    "wgmma.wait_group.sync.aligned": "W",
}


def test_ptx_orders_fences_waits_and_barriers() -> None:
    _, ptx, _ = _compile(BF16_OUT, {"m": 64, "n": 128, "k": 320}, 128, "ptx")
    seq = "".join(TOKENS[k] for line in ptx.splitlines() for k in TOKENS if line.strip().startswith(k))
    assert re.fullmatch(r"(PBFMMMMCWB)+", seq), seq
    mmas = [ln for ln in ptx.splitlines() if ln.startswith("wgmma.mma_async")]
    assert mmas and all("m64n128k16.f32.bf16.bf16" in ln for ln in mmas)
    # scale-d from the predicate, scale-a = scale-b = 1, A K-major (trans 0), B MN-major (trans 1)
    assert all(re.search(r"p, 1,\s*1, 0,\s*1;$", ln) for ln in mmas), mmas[0][-40:]
    assert re.findall(r"wgmma.wait_group.sync.aligned\s+(\d+)", ptx) and set(
        re.findall(r"wgmma.wait_group.sync.aligned\s+(\d+)", ptx)
    ) == {"0"}


def test_descriptor_fields_follow_the_ptx_isa() -> None:
    bits = descriptor_bits(B_LEADING_BYTE_OFFSET, STRIDE_BYTE_OFFSET)
    assert bits >> 62 == 1  # 128-byte swizzle
    assert (bits >> 32) & 0x3FFF == 1024 >> 4  # stride byte offset: 8 rows of 128 bytes
    assert (bits >> 16) & 0x3FFF == 8192 >> 4  # leading byte offset: the next 64 n of B
    assert bits & 0x3FFF == 0 and (bits >> 49) & 7 == 0  # start address added per tile, base offset 0
    _, ptx, _ = _compile(BF16_OUT, {"m": 64, "n": 128, "k": 64}, 128, "ptx")
    assert str(bits) in ptx


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_kernel_passes_on_the_emulator(variant: tuple, seed: int) -> None:
    path, dims, tile_n = variant
    kernel, text, plain = _compile(path, dims, tile_n, "gpu")
    report = emulate_kernel(kernel, text, seed, diagram=plain)
    assert report.passed, report.lines()
    assert report.stats.warp_instructions["wgmma.mma_async"] == 4 * 4 * (dims["k"] // 64) * report.stats.ctas


def _drop(text: str, pattern: str, nth: int = 0) -> str:
    """The kernel's text without the `nth` line containing `pattern`."""
    lines = text.splitlines()
    hits = [i for i, ln in enumerate(lines) if pattern in ln]
    assert len(hits) > nth, pattern
    del lines[hits[nth]]
    return "\n".join(lines) + "\n"


BROKEN = [
    # what is removed (pattern, which occurrence), what the emulator says
    (("nvvm.fence.proxy", 0), "no fence.proxy.async"),
    (("gpu.barrier", 0), "same barrier interval"),
    (("gpu.barrier", 1), "race"),
    (("nvvm.wgmma.fence.aligned", 0), "no wgmma.fence"),
    # the first chunk's group left in flight: the next chunk's stores overwrite its operands
    (("nvvm.wgmma.wait.group.sync.aligned", 0), "overwritten before a wgmma.wait_group"),
    # the last chunk's group left in flight: the epilogue reads the accumulator
    (("nvvm.wgmma.wait.group.sync.aligned", 1), "read before a wgmma.wait_group"),
]


@pytest.mark.parametrize(
    "broken",
    BROKEN,
    ids=["no-proxy-fence", "no-barrier-before", "no-barrier-after", "no-wgmma-fence", "no-first-wait", "no-last-wait"],
)
def test_emulator_catches_a_broken_kernel(broken: tuple) -> None:
    (pattern, nth), message = broken
    kernel, text, plain = _compile(BF16_OUT, {"m": 64, "n": 128, "k": 192}, 128, "gpu")
    with pytest.raises(NapkinError, match=message):
        emulate_kernel(kernel, _drop(text, pattern, nth), 0, diagram=plain)


def test_emulator_catches_a_wrong_swizzle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles stored without the XOR while the descriptors say 128-byte swizzle: wrong numbers."""

    def unswizzled(self: hopper_emit._MatmulKernel, row: ir.Value, chunk: ir.Value, start: ir.Value | int) -> ir.Value:
        elem = self.add(self.mul(row, 64), self.mul(chunk, 8))
        return self.add(elem, start)

    monkeypatch.setattr(hopper_emit._MatmulKernel, "swizzled", unswizzled)
    kernel, text, plain = _compile(BF16_OUT, {"m": 64, "n": 128, "k": 64}, 128, "gpu")
    assert not emulate_kernel(kernel, text, 0, diagram=plain).passed


@pytest.mark.parametrize(
    "case",
    [
        ({"m": 100, "n": 128, "k": 64}, {}, "m a multiple of its tile 64"),
        ({"m": 64, "n": 128, "k": 96}, {}, "k a multiple of its tile 64"),
        ({"m": 64, "n": 128, "k": 64}, {"n": 96}, "tile of n in"),
        ({"m": 64, "n": 128, "k": 64}, {"m": 128}, "tiles are m=64 and k=64"),
    ],
    ids=["m", "k", "tile-n", "tile-m"],
)
def test_plan_refuses_shapes_it_does_not_take(case: tuple) -> None:
    dims, tiles, message = case
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(BF16_OUT, dims)
        with pytest.raises(WgmmaRefusal, match=message):
            MatmulPlan.from_diagram(module, tiles)


def test_cli_compiles_the_wgmma_kernel_and_refuses_one_line(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "mm.cubin"
    # the good run needs only its kernel: main() in this process; the refusals in a subprocess
    r = run_cli_in_process(
        "napkin", "compile", "matmul", "--target", "sm_90a", "--kernel", "wgmma",
        "--dims", "m=128,n=256,k=128", "--dtype", "bf16", "-o", str(out),
    )  # fmt: skip
    assert r.rc == 0, r.describe()
    side = json.loads(out.with_suffix(".cubin.json").read_text())
    assert side["entry"] == "matmul_wgmma" and side["block"] == [128, 1, 1] and side["grid"] == [2, 2, 1]
    assert side["problem"]["kernel"] == "wgmma" and side["ptxas"]["spill_stores_bytes"] == 0
    for args, says in (
        (("matmul", "--target", "sm_80", "--dims", "m=128,n=256,k=128", "--dtype", "bf16"), "Hopper target"),
        (("mlp", "--target", "sm_90a", "--dims", "m=64,k=64,f=64,n=64", "--dtype", "bf16"), "napkin."),
    ):
        r = run_cli("napkin", "compile", *args, "--kernel", "wgmma", "-o", str(out))
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert r.rc != 0 and len(errors) == 1 and says in errors[0], r.describe()
        assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU (CuPy with a device) on this machine")
def test_kernel_passes_on_the_gpu(tmp_path: Path) -> None:
    from napkin_mlir.backends.gpu import runner
    from napkin_mlir.cli.bench import prepare_file_gpu

    side = prepare_file_gpu(
        BF16_OUT, {"m": 192, "n": 384, "k": 320}, None, {}, "sm_90a", tmp_path, kernel_kind="wgmma", log=lambda _: None
    )
    report = runner.run(side, repeats=0)
    assert report["passed"], report
    assert np.isfinite(report["errors"]["out0"]["max_abs"])


# --- attention: S = Q Kᵀ and O += P V on wgmma --------------------------------------------------

ATTENTION = [
    # dims, dtype, causal, key/value heads
    ({"b": 1, "h": 2, "q": 100, "x": 70, "d": 64}, "bf16", True, None),
    ({"b": 2, "h": 1, "q": 130, "x": 170, "d": 128}, "f16", False, None),
    ({"b": 1, "h": 4, "q": 70, "x": 100, "d": 64}, "bf16", True, 2),  # grouped-query: r = 2
    ({"b": 1, "h": 1, "q": 150, "x": 150, "d": 256}, "bf16", False, None),
]
ATTENTION_IDS = ["hd64-causal-rem", "hd128-f16-rem", "gqa-causal", "hd256-rem"]


def _attention(dims: dict[str, int], dtype: str, causal: bool, stop: str, kv_heads: int | None = None) -> tuple:
    from napkin_mlir.check.harness import VerifyConfig
    from napkin_mlir.cli.compile import compile_kernel

    config = VerifyConfig("attention", dims, dtype, causal=causal, kv_heads=kv_heads)
    return compile_kernel(config, "sm_90a", stop, "wgmma", log=lambda _: None)


@pytest.mark.parametrize("variant", ATTENTION, ids=ATTENTION_IDS)
def test_attention_kernel_assembles_and_orders_its_waits(variant: tuple, tmp_path: Path) -> None:
    dims, dtype, causal, kv_heads = variant
    kernel, ptx = _attention(dims, dtype, causal, "ptx", kv_heads)
    report = assemble(ptx, "sm_90a", tmp_path / "att.cubin")
    assert report["spill_stores_bytes"] == 0 and report["spill_loads_bytes"] == 0, report["raw"]
    assert "warning" not in str(report["raw"]).lower(), report["raw"]
    consumers = 2 if dims["q"] >= 128 else 1  # warpgroups of 64 query rows, after the producer
    rows = 64 * consumers
    assert kernel.block == (128 * (1 + consumers), 1, 1)
    assert kernel.grid == (-(-dims["q"] // rows), dims["h"], dims["b"])
    # each consumer's Q, K and V x 2 stages, each consumer's P x 2 buffers
    assert kernel.dynamic_smem_bytes == SMEM_ALIGN + (consumers + 4) * 64 * dims["d"] * 2 + consumers * 2 * 64 * 64 * 2
    assert kernel.dynamic_smem_bytes <= MAX_SMEM
    tokens = {
        "wgmma.wait_group.sync.aligned 1": "V",  # before TOKENS' prefix of every wait_group
        **TOKENS,
        "mbarrier.try_wait.parity": "T",
        "cp.async.bulk.tensor": "L",
        "mbarrier.init": "I",
        "mbarrier.arrive.expect_tx": "E",
        "mbarrier.arrive.shared": "R",
        "setmaxnreg.inc.sync.aligned.u32 240": "U",
        "setmaxnreg.dec.sync.aligned.u32 24": "D",
        "ex2.approx": "X",
    }
    lines = [re.sub(r"\s+", " ", re.sub(r"^@%p\d+\s+", "", line.strip())) for line in ptx.splitlines()]
    seq = re.sub("X+", "X", "".join(next((v for k, v in tokens.items() if line.startswith(k)), "") for line in lines))
    # seven barriers initialised and published; the consumers take 240 registers, wait for Q
    # and K of chunk 0, S = Q Kᵀ (d/16 wgmma) waited for, its softmax; each later chunk: K
    # waited for, S issued, V of the chunk before waited for, O += P V (4) issued, wait_group 1
    # (S done), the softmax while P V runs, wait_group 0, the stage released; after the loop the
    # last P V waited for and its stage released. The producer gives registers back (24),
    # announces and loads Q (a tile per consumer), then per chunk waits for the stage's release
    # and loads K and V (LLVM unrolls that loop by the chunk count it can bound)
    s_steps, boxes = dims["d"] // 16, dims["d"] // 64
    assert seq.startswith("I" * 7 + "B"), seq
    assert f"UTTFM{'M' * (s_steps - 1)}CWX" in seq, seq  # chunk 0
    assert re.search(rf"TFM{{{s_steps}}}CTFM{{4}}CVXWR", seq), seq  # chunk t: S and P V of t - 1 in flight
    assert re.search(r"TFM{4}CWR", seq) and seq.count("V") == 1, seq  # the last P V
    assert re.search(rf"D(EL{{{boxes}}}){{{consumers}}}(T?(EL{{{boxes}}}){{2}})+(U|$)", seq), seq  # either block order
    named = r"bar.sync\s+%r\d+, 128;" if consumers > 1 else r"bar.sync\s+1, 128;"
    assert re.search(named, ptx), "the consumers' named barrier (id 1 + warpgroup, 128 threads)"
    assert ".maxntid" in ptx and ".minnctapersm 1" in ptx  # what setmaxnreg needs from ptxas
    el = dtype
    assert f"m64n64k16.f32.{el}.{el}" in ptx and f"m64n{dims['d']}k16.f32.{el}.{el}" in ptx


@pytest.mark.parametrize("variant", ATTENTION, ids=ATTENTION_IDS)
def test_attention_kernel_passes_on_the_emulator(variant: tuple, seed: int) -> None:
    dims, dtype, causal, kv_heads = variant
    kernel, text = _attention(dims, dtype, causal, "gpu", kv_heads)
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()


@pytest.mark.parametrize(
    "case",
    [
        ({"b": 1, "h": 1, "q": 64, "x": 64, "d": 96}, None, "head dim in (64, 128, 256)"),
        ({"b": 1, "h": 1, "q": 40, "x": 64, "d": 64}, None, "take 64 query rows each; q=40 is fewer"),
    ],
    ids=["hd96", "q-below-a-warpgroup"],
)
def test_attention_refuses_what_it_does_not_take(case: tuple) -> None:
    dims, kv_heads, message = case
    with pytest.raises(NapkinError, match=re.escape(message)):
        _attention(dims, "bf16", False, "gpu", kv_heads)


# --- the program's masks: predicates of positions, chunks skipped by interval reasoning ----------

MASKED_DIMS = {"b": 1, "h": 1, "q": 320, "x": 320, "d": 64}  # windows, chunks and prefixes of x / 4 = 80 keys
MASKED = [
    ("sliding_window_attention", MASKED_DIMS),
    ("chunked_attention", MASKED_DIMS),
    ("prefix_lm_attention", MASKED_DIMS),
    ("causal_bottom_right_attention", {**MASKED_DIMS, "q": 192}),  # the last query sees every key
]


def _file_attention(name: str, dims: dict[str, int], stop: str) -> tuple[GpuKernel, str, str]:
    """An attention variant from examples/ through the wgmma rule: kernel, text, plain diagram."""
    from napkin_mlir.cli.compile import FileProblem, compile_file_kernel

    path = str(REPO_ROOT / "examples" / f"{name}.mlir")
    kernel, text, plain = compile_file_kernel(FileProblem(path, dims), "sm_90a", stop, "wgmma", log=lambda _: None)
    assert kernel is not None
    return kernel, text, plain


def _visited_chunks(plain: str, q: int, x: int, rows: int) -> int:
    """The chunks of 64 keys the CTAs must visit: per tile of `rows` query rows, from the
    first to the last chunk where the diagram's mask keeps some entry (its predicate
    evaluated densely)."""
    from napkin_mlir.ir.masks import evaluate, mask_parts, read_predicate

    with napkin_context():
        module = ir.Module.parse(plain)
        func = next(op.operation for op in module.body.operations if op.operation.name == "func.func")
        mask = next(op.operation for op in func.regions[0].blocks[0].operations if op.operation.name == "napkin.mask")
        keep = evaluate(read_predicate(mask_parts(mask).block), np.arange(q)[:, None], np.arange(x)[None, :], (q, x))
    total = 0
    for r0 in range(0, q, rows):
        chunks = np.nonzero(keep[r0 : r0 + rows].reshape(-1, x).any(axis=0))[0] // 64
        total += int(chunks.max() - chunks.min() + 1) if chunks.size else 0
    return total


@pytest.mark.parametrize("case", MASKED, ids=[name.removesuffix("_attention") for name, _ in MASKED])
def test_masked_attention_passes_on_the_emulator_and_skips_chunks(case: tuple, seed: int) -> None:
    """The mask's predicate runs per element (judged against the diagram's interpretation) and
    the chunks it drops everywhere in a CTA's rows (128, two consumer warpgroups) are never
    read: the global reads are the Q tiles plus 16 KiB (K and V) per visited chunk, against
    every chunk for plain attention."""
    name, dims = case
    kernel, text, plain = _file_attention(name, dims, "gpu")
    report = emulate_kernel(kernel, text, seed, diagram=plain)
    assert report.passed, report.lines()
    plain_kernel, plain_text = _attention(dims, "bf16", False, "gpu")
    unmasked = emulate_kernel(plain_kernel, plain_text, seed)
    assert unmasked.passed, unmasked.lines()
    rows = 128 if dims["q"] >= 128 else 64
    ctas, chunks = -(-dims["q"] // rows), dims["x"] // 64
    q_bytes, chunk_bytes = dims["q"] * dims["d"] * 2, 2 * 64 * dims["d"] * 2
    assert unmasked.stats.global_read_bytes == q_bytes + ctas * chunks * chunk_bytes
    visited = _visited_chunks(plain, dims["q"], dims["x"], rows)
    assert visited < ctas * chunks
    assert report.stats.global_read_bytes == q_bytes + visited * chunk_bytes
    warps = 4 * rows // 64  # the consumers' warps each issue d/16 wgmma for S and 4 for P V per chunk
    assert report.stats.warp_instructions["wgmma.mma_async"] == warps * visited * (dims["d"] // 16 + 4)


def test_masked_attention_assembles(tmp_path: Path) -> None:
    _, ptx, _ = _file_attention("sliding_window_attention", MASKED_DIMS, "ptx")
    report = assemble(ptx, "sm_90a", tmp_path / "window.cubin")
    assert report["spill_stores_bytes"] == 0 and report["spill_loads_bytes"] == 0, report["raw"]
    assert "warning" not in str(report["raw"]).lower(), report["raw"]


VARIANT_DIMS = {"q": 100, "x": 130, "d": 64}  # partial tiles on both axes
VARIANTS = ["softcap_attention", "bias_attention", "gqa_bias_attention", "document_attention", "cross_attention"]


@pytest.mark.parametrize("name", VARIANTS)
def test_score_ops_and_inputs_by_rule_pass_on_the_emulator(name: str, seed: int) -> None:
    """Every score op by its rule on the wgmma accumulator (a soft cap's tanh, a bias table
    or a per-head table read at each score's (b, h, r, q, x), segment ids read by a mask's
    predicate), judged against the example's own interpretation."""
    dims = {**VARIANT_DIMS, "e": 64} if name == "cross_attention" else VARIANT_DIMS
    kernel, text, plain = _file_attention(name, dims, "gpu")
    assert [a.name for a in kernel.args][:3] == ["Q", "K", "V"]
    report = emulate_kernel(kernel, text, seed, diagram=plain)
    assert report.passed, report.lines()


def test_a_bypassed_score_rule_fails_on_the_emulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seed: int
) -> None:
    """The soft cap's tanh replaced by the identity: the kernel no longer computes the
    diagram, and the emulator says so (so the passing test above sees the tanh)."""
    from napkin_mlir.backends.gpu import tensorcore_scores

    path = REPO_ROOT / "examples" / "softcap_attention.mlir"  # with a cap of 1: tanh matters
    text = path.read_text().replace("2.000000e-02", "1.000000e+00").replace("5.000000e+01", "1.000000e+00")
    target = tmp_path / "softcap1.mlir"
    target.write_text(text)
    from napkin_mlir.cli.compile import FileProblem, compile_file_kernel

    def run() -> bool:
        kernel, gpu, plain = compile_file_kernel(
            FileProblem(str(target), VARIANT_DIMS), "sm_90a", "gpu", "wgmma", log=lambda _: None
        )
        assert kernel is not None
        return emulate_kernel(kernel, gpu, seed, diagram=plain).passed

    assert run()
    monkeypatch.setitem(tensorcore_scores.SCORE_RULES, "napkin.tanh", lambda b, op, args, at: args[0])
    assert not run()


def test_ops_on_the_output_are_computed_not_dropped(tmp_path: Path, seed: int) -> None:
    """tanh(O) before its cast: the Hopper rule once stored O and dropped the tanh (wrong
    code); now each element of O / l goes through the output ops' rules."""
    import math

    from napkin_mlir.cli.compile import FileProblem, compile_file_kernel
    from napkin_mlir.ir.arrays import ArrayType
    from napkin_mlir.ir.builders import DiagramBuilder

    q, x, d = 100, 130, 64
    with napkin_context(), ir.Location.unknown():
        b = DiagramBuilder(
            "tanh_out",
            Q=ArrayType(("b", "h", "q", "d"), (1, 2, q, d), "bf16"),
            K=ArrayType(("b", "h", "x", "d"), (1, 2, x, d), "bf16"),
            V=ArrayType(("b", "h", "x", "d"), (1, 2, x, d), "bf16"),
        )
        s = b.scale(b.contract(b["Q"], b["K"], ("b", "h", "q", "x"), dtype="f32"), 1 / math.sqrt(d))
        o = b.contract(b.cast(b.softmax(s, "x"), "bf16"), b["V"], ("b", "h", "q", "d"), dtype="f32")
        text = str(b.ret(b.cast(b.tanh(b.scale(o, 4.0)), "bf16")))
    path = tmp_path / "tanh_out.mlir"
    path.write_text(text)
    kernel, gpu, plain = compile_file_kernel(FileProblem(str(path)), "sm_90a", "gpu", "wgmma", log=lambda _: None)
    assert kernel is not None and gpu.count("math.tanh") == 2 * 2 * (d // 8)  # one per element of O a thread holds
    report = emulate_kernel(kernel, gpu, seed, diagram=plain)
    assert report.passed, report.lines()


@pytest.mark.parametrize("name", ["softcap_attention", "document_attention", "gqa_bias_attention"])
def test_variants_assemble_without_spills(name: str, tmp_path: Path) -> None:
    _, ptx, _ = _file_attention(name, {"q": 1024, "x": 1024, "d": 128}, "ptx")
    report = assemble(ptx, "sm_90a", tmp_path / f"{name}.cubin")
    assert report["spill_stores_bytes"] == 0 and report["spill_loads_bytes"] == 0, report["raw"]
    assert "warning" not in str(report["raw"]).lower(), report["raw"]


@pytest.mark.parametrize(
    ("broken", "caught"),
    [
        ("no-mbarrier-wait", "read before the mbarrier wait|in flight|more arrivals"),
        ("wrong-parity", "read before the mbarrier wait|deadlock"),
        ("no-stage-release", "deadlock"),
        ("early-release", "shared-memory race.*mma_async|stage reused before it was released"),
        ("no-named-barrier", "wgmma reads shared memory written in the same barrier interval"),
        ("no-proxy-fence", "fence.proxy.async"),
        ("no-wgmma-wait", "read before a wgmma.wait_group retired"),
        ("one-p-buffer", "overwritten before a wgmma.wait_group retired|shared-memory race"),
    ],
)
def test_pipelined_attention_without_its_wait_or_fence_fails(
    broken: str, caught: str, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The producer brings K and V of the next chunks by TMA while the consumers compute: a
    kernel that reads a stage without waiting on its mbarrier, or at the other parity (the
    previous phase, which has completed), reads bytes a load has not delivered; consumers that
    never release a stage leave the producer waiting forever (a deadlock, named, not a hang);
    a release before the wgmma reading the stage was waited for lets the producer overwrite
    what it reads; P's generic stores without the warpgroup's named barrier race with the
    wgmma of the other warps, and without the proxy fence are invisible to it; an accumulator
    read before its wait_group, or P of chunk t written into the buffer the still running
    P V of chunk t - 1 reads, is caught too. The emulator names each."""
    from mlir.dialects import arith

    from napkin_mlir.backends.gpu import hopper_attention

    kernel_class = hopper_attention._AttentionKernel
    if broken == "no-mbarrier-wait":
        monkeypatch.setattr(kernel_class, "wait", lambda self, barrier, parity: None)
    elif broken == "wrong-parity":
        real_wait = kernel_class.wait
        monkeypatch.setattr(
            kernel_class, "wait", lambda self, barrier, parity: real_wait(self, barrier, arith.xori(parity, self.c(1)))
        )
    elif broken == "no-stage-release":
        monkeypatch.setattr(hopper_attention.nvgpu, "MBarrierArriveOp", lambda *a, **k: None)
    elif broken == "early-release":  # the stage released before O += P V reads V
        real_pv, real_release = kernel_class.pv, kernel_class.release

        def pv(self: hopper_attention._AttentionKernel, acc: ir.Value, wait: bool) -> ir.Value:
            real_release(self, self.stage)
            return real_pv(self, acc, wait)

        monkeypatch.setattr(kernel_class, "pv", pv)
        monkeypatch.setattr(kernel_class, "release", lambda self, stage: None)
    elif broken == "no-named-barrier":
        monkeypatch.setattr(hopper_attention.nvvm, "BarrierOp", lambda *a, **k: None)
    elif broken == "no-wgmma-wait":  # every wgmma.wait_group dropped
        monkeypatch.setattr(hopper_attention.nvvm, "WgmmaWaitGroupSyncOp", lambda *a, **k: None)
    elif broken == "one-p-buffer":  # P of chunk t written into the tile P V of chunk t - 1 reads
        monkeypatch.setattr(hopper_attention, "P_BUFFERS", 1)
    else:
        monkeypatch.setattr(hopper_attention.nvvm, "FenceProxyOp", lambda *a, **k: None)
    dims = {"q": 200, "x": 300, "d": 64}
    kernel, text, plain = _file_attention("softcap_attention", dims, "gpu")
    with pytest.raises(NapkinError, match=caught):
        emulate_kernel(kernel, text, seed, diagram=plain)


def test_swizzle_matches_the_upstream_tma_golden() -> None:
    """The emulator's 128-byte swizzle puts 16-byte chunk c of row r at chunk c ^ (r % 8): the
    shared-memory image upstream's sm90 `tma_load_128x64_swizzle128b.mlir` prints (rows 1, 2
    and 3 hold chunks 1,0,3,2,... / 2,3,0,1,... / 3,2,1,0,...)."""
    from napkin_mlir.emulator.ops_wgmma import _swizzle

    golden = {1: [1, 0, 3, 2, 5, 4, 7, 6], 2: [2, 3, 0, 1, 6, 7, 4, 5], 3: [3, 2, 1, 0, 7, 6, 5, 4]}
    for row, chunks in golden.items():
        logical = np.array([row * 128 + c * 16 for c in range(8)])
        physical = (_swizzle(logical, 128) - row * 128) // 16
        assert [int(np.nonzero(physical == p)[0][0]) for p in range(8)] == chunks


@pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU (CuPy with a device) on this machine")
def test_attention_kernel_passes_on_the_gpu(tmp_path: Path) -> None:
    from napkin_mlir.backends.gpu import runner
    from napkin_mlir.check.harness import VerifyConfig
    from napkin_mlir.cli.compile import compile_to_file

    config = VerifyConfig("attention", {"b": 1, "h": 4, "q": 300, "x": 500, "d": 128}, "bf16", causal=True)
    cubin = tmp_path / "att.cubin"
    compile_to_file(config, "sm_90a", "cubin", "wgmma", 16, cubin, log=lambda _: None)
    report = runner.run(cubin.with_suffix(".cubin.json"), repeats=0)
    assert report["passed"], report
