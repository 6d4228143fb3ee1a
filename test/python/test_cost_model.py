"""The performance model (napkin_mlir.model.cost, .tiles, .hardware) against the paper's claims
(issue 4, "Must reproduce"), plus the `napkin model` / `napkin pseudocode` commands."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import run_cli_in_process

from napkin_mlir.derive.tiles import choose_tiles, optimal_transfer, partitioned
from napkin_mlir.model import hardware
from napkin_mlir.model.cost import evaluate, live_element_exprs

ATT = {"b": 1, "h": 1, "q": 4096, "x": 4096, "d": 128}
MM = {"m": 8192, "n": 8192, "k": 8192}


@pytest.fixture(scope="module")
def att():
    return partitioned("attention", ATT, {"q": 64, "x": 64}, "f16")


@pytest.fixture(scope="module")
def mm():
    return partitioned("matmul", MM, None, "f16")


def test_hardware_files_cite_every_number():
    assert hardware.available() == ["a100", "h100", "h200"]
    for name in hardware.available():
        hw = hardware.gpu(name)
        assert all(hw.source(k) for k in hw.entries)
    h100 = hardware.gpu("h100")
    assert h100.sm_count == 132 and h100.peak("bf16") == pytest.approx(989.4e12)
    assert h100.peak("fp8") == pytest.approx(1978.9e12)
    assert h100.exp_rate == pytest.approx(3.9e12, rel=0.02)
    assert hardware.gpu("h200").hbm_bandwidth == 4.8e12
    assert hardware.gpu("a100").smem_per_cta == 163 * 1024
    # the block limits a compiled kernel is held to (napkin compile refuses more)
    assert hardware.for_target("sm_80").smem_per_cta == 163 * 1024
    assert hardware.for_target("sm_90a").smem_per_cta == 227 * 1024
    assert all(hardware.gpu(n).mma_sync_shape("bf16") == (16, 8, 16) for n in hardware.available())


def test_symbolic_costs_read_off_the_ir(att, mm):
    r = evaluate(att, "h100")
    assert r.symbolic["H_L2_elements"] == "2·b·h·d·q·x/g_q + 2·b·h·d·q"
    assert r.symbolic["tensor_flops"] == "4·b·h·d·q·x"
    # the paper's attention memory M = 2 g_q d + 2 s_x d + g_q s_x + 2 g_q is a column of the liveness
    assert any(str(e) == "2·d·g_q + 2·d·s_x + g_q·s_x + 2·g_q" for e in live_element_exprs(att))
    assert evaluate(mm, "h100").symbolic["H_L2_elements"] == "k·m·n/g_m + k·m·n/g_n + m·n"
    assert "g_m·g_n + g_m·s_k + g_n·s_k" in [str(e) for e in live_element_exprs(mm)]


def test_matmul_square_tiles_and_h_at_optimum(mm):
    a = b = c = 8192
    m_budget = 116_224  # 227 KiB of fp16
    paper = 2 * a * b * c / math.sqrt(m_budget) + a * c
    assert paper == pytest.approx(3.29e9, rel=0.01)
    free = optimal_transfer(mm, m_budget, ("m", "n"), "k", divisor=1)
    assert abs(free.tiles["m"] - free.tiles["n"]) <= 0.05 * free.tiles["m"]  # square up to integer slack
    assert free.transfer_elements == pytest.approx(paper, rel=0.01)
    assert free.memory_elements <= m_budget
    mma = optimal_transfer(mm, m_budget, ("m", "n"), "k", divisor=16, stream_sizes=(16,))
    assert mma.tiles["m"] == mma.tiles["n"] == 320  # 336 would need 123,648 elements
    assert paper < mma.transfer_elements < 1.07 * paper


def test_memory_sensitivity(att, mm):
    a1 = optimal_transfer(att, 2**16, ("q",), "x", divisor=1)
    a2 = optimal_transfer(att, 2**17, ("q",), "x", divisor=1)
    assert a1.dependent_elements / a2.dependent_elements == pytest.approx(2.0, rel=0.03)  # beta = 1
    m1 = optimal_transfer(mm, 2**16, ("m", "n"), "k", divisor=1)
    m2 = optimal_transfer(mm, 2**17, ("m", "n"), "k", divisor=1)
    assert m1.dependent_elements / m2.dependent_elements == pytest.approx(math.sqrt(2), rel=0.02)  # beta = 1/2


def test_quantization_fp16_to_fp8(att, mm):
    """A fixed byte capacity holds twice the fp8 elements; H's M-dependent bytes scale as q^(1+beta)."""
    capacity = 227 * 1024
    for prog, grouped, streamed, expected in (
        (att, ("q",), "x", 4.0),
        (mm, ("m", "n"), "k", 2 * math.sqrt(2)),
    ):
        fp16 = optimal_transfer(prog, capacity / 2, grouped, streamed, divisor=1)
        fp8 = optimal_transfer(prog, capacity / 1, grouped, streamed, divisor=1)
        ratio = (fp16.dependent_elements * 2) / (fp8.dependent_elements * 1)
        assert ratio == pytest.approx(expected, rel=0.04)
        fixed16 = fp16.transfer_elements - fp16.dependent_elements
        fixed8 = fp8.transfer_elements - fp8.dependent_elements
        assert fixed16 * 2 / (fixed8 * 1) == pytest.approx(2.0)  # the M-independent term only 2x


def test_fused_attention_has_no_qx_term(att):
    dims = {"b": 1, "h": 1, "q": 1024, "x": 512, "d": 64}
    fused = partitioned("attention", dims, {"q": 64, "x": 64}, "f16")
    unfused = partitioned("attention", dims, {"q": 64, "x": 64}, "f16", fuse=False)
    h_fused = evaluate(fused, "a100").exprs["H_L2_elements"]
    assert all(
        {"q", "x"} - {s for s, p in key if p > 0}
        for key, _ in h_fused.terms
        if not any(s.startswith("g_") for s, _ in key)
    )
    assert "q·x " not in str(h_fused) + " "
    e_fused = evaluate(fused, "a100").levels[1]["transfer_elements"]
    e_unfused = evaluate(unfused, "a100").levels[1]["transfer_elements"]
    assert e_unfused - e_fused >= 4 * dims["q"] * dims["x"]


def test_flashattention2_a100_occupancy():
    prog = partitioned("attention", {"b": 16, "h": 16, "q": 2048, "x": 2048, "d": 128}, {"q": 128, "x": 64}, "f16")
    r = evaluate(prog, "a100", warps=4)
    assert r.smem_per_cta == (128 * 128 + 2 * 64 * 128) * 2 == 64 * 1024
    assert r.ctas_per_sm == 2
    assert r.warps_per_sm == 8


def test_choice_agrees_with_analyze_of_the_derived_program():
    dims = {"b": 2, "h": 8, "q": 1024, "x": 1024, "d": 64}
    choice = choose_tiles("attention", dims, "bf16", "h100")
    rederived = evaluate(partitioned("attention", dims, choice.tiles, "bf16"), "h100", stages=choice.stages)
    assert rederived.predicted_seconds == pytest.approx(choice.report.predicted_seconds)
    assert rederived.to_dict()["levels"] == choice.report.to_dict()["levels"]
    assert choice.report.fits and choice.tiles["q"] % 64 == 0  # wgmma m64
    assert "*" in choice.table()


def test_choose_tiles_prices_a_bounded_number_of_candidates():
    """The search stays analytic: one derivation, then a few hundred repricings of the same
    program at most (counted, not timed: timings belong in benchmarks)."""
    choice = choose_tiles("attention", {"b": 4, "h": 16, "q": 4096, "x": 4096, "d": 128}, "f16", "a100")
    assert 10 <= len(choice.candidates) <= 400


def _napkin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napkin_mlir.cli.napkin", *args], capture_output=True, text=True, timeout=120
    )


PROBLEMS = {
    "attention": "b=2,h=4,q=512,x=512,d=64",
    "matmul": "m=1024,n=512,k=256",
    "mlp": "m=512,k=128,f=512,n=128",
}


@pytest.mark.parametrize("gpu", ["a100", "h100", "h200"])
def test_napkin_model_cli(gpu):
    """`napkin model --json` and `napkin pseudocode` on every built-in: the commands' main()
    called in this process (only what they print is checked here; the exit codes and error
    lines of bad command lines are checked in a subprocess by the next test)."""
    for diagram, dims in PROBLEMS.items():
        out = run_cli_in_process("napkin", "model", diagram, "--gpu", gpu, "--dtype", "bf16", "--dims", dims, "--json")
        assert out.rc == 0, out.describe()
        data = json.loads(out.stdout)
        for key in ("flops", "predicted_seconds", "bound", "tiles", "warps_per_sm", "levels"):
            assert key in data
        assert data["flops"] > 0 and data["predicted_seconds"] > 0 and data["warps_per_sm"] > 0
        assert {lv["name"] for lv in data["levels"]} >= {"HBM", "L2", "SMEM"}
        assert all({"name", "transfer_bytes", "peak_bytes", "capacity_bytes"} <= set(lv) for lv in data["levels"])
        out = run_cli_in_process("napkin", "pseudocode", diagram, "--gpu", gpu, "--dtype", "bf16", "--dims", dims)
        assert out.rc == 0, out.describe()
        assert "for " in out.stdout and ("mma.sync" in out.stdout or "wgmma" in out.stdout)


def test_napkin_model_table_tile_and_errors(tmp_path):
    out = _napkin(
        "model", "attention", "--gpu", "a100", "--dtype", "f16", "--dims", PROBLEMS["attention"], "--tile", "q=128,x=64"
    )
    assert out.returncode == 0, out.stderr
    assert "q=128" in out.stdout and "warps per SM" in out.stdout
    bad = _napkin("model", "attention", "--gpu", "a100", "--dtype", "fp8", "--dims", PROBLEMS["attention"])
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    bad = _napkin("model", "attention", "--gpu", "b200", "--dims", PROBLEMS["attention"])
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_model_plot(tmp_path) -> None:
    """--plot draws transfer volume and time against the tile size and the roofline."""
    import matplotlib.image as mpimg

    from napkin_mlir.cli.napkin import main

    out = tmp_path / "model.png"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "model",
                "attention",
                "--gpu",
                "h100",
                "--dtype",
                "bf16",
                "--dims",
                "b=1,h=8,q=2048,x=2048,d=64",
                "--plot",
                str(out),
            ]
        )
    assert done.value.code == 0
    img = mpimg.imread(out)
    assert img.shape[0] > 200 and img.shape[1] > 600
    assert len({tuple(px) for px in img.reshape(-1, img.shape[-1])[::97]}) > 20, "the plot has curves, not a blank page"


def test_causal_attention_prices_only_the_chunks_it_runs():
    """A causal stream stops at its row tile's diagonal (the CPU lowering and the GPU kernels
    skip the masked chunks), so the model prices visited (row tile, chunk) pairs only:
    row tile i of 128 rows visits 2(i+1) of the 64 chunks of 64 keys."""
    sizes, tiles = {"b": 1, "h": 16, "q": 4096, "x": 4096, "d": 128}, {"q": 128, "x": 64}
    full = evaluate(partitioned("attention", sizes, tiles, "bf16"), "h100", tensor_cores=True, stages=2)
    causal = evaluate(partitioned("attention", sizes, tiles, "bf16", causal=True), "h100", tensor_cores=True, stages=2)
    fraction = sum(2 * (i + 1) for i in range(32)) / (32 * 64)
    assert causal.tensor_flops == pytest.approx(full.tensor_flops * fraction, rel=1e-12)
    assert causal.exp_ops == pytest.approx(full.exp_ops * fraction, rel=1e-12)

    def l2(report, direction: str, streamed: bool) -> float:
        return sum(
            t["total_bytes"]
            for t in report.transfers
            if t["boundary"] == "L2" and t["direction"] == direction and t["loop"].startswith("stream") == streamed
        )

    assert l2(causal, "load", True) == pytest.approx(l2(full, "load", True) * fraction, rel=1e-12)  # K, V
    assert l2(causal, "load", False) == l2(full, "load", False) > 0  # Q, once per row tile
    assert l2(causal, "store", False) == l2(full, "store", False) > 0  # O
    assert causal.predicted_seconds < 0.6 * full.predicted_seconds


def test_too_few_warps_per_sm_cannot_hide_latency():
    """An SM reaches its compute rates from 2 resident warps per scheduler (8): a CTA of one
    warp, alone on its SM (its SMEM allows one CTA), runs them at an eighth."""
    prog = partitioned("attention", {"b": 16, "h": 16, "q": 2048, "x": 2048, "d": 128}, {"q": 128, "x": 64}, "f16")
    times = {w: evaluate(prog, "a100", warps=w, tensor_cores=True, stages=2, registers=128) for w in (1, 4, 8)}
    assert all(r.ctas_per_sm == 1 and r.fits for r in times.values())
    for resource in ("tensor", "exp"):
        assert times[1].times[resource] == pytest.approx(8 * times[8].times[resource], rel=1e-9)
        assert times[4].times[resource] == pytest.approx(2 * times[8].times[resource], rel=1e-9)
    assert times[1].predicted_seconds > 4 * times[8].predicted_seconds


def test_latency_term_is_littles_law():
    """One CTA streaming K and V: its bytes in flight (one 64-key chunk of K and of V) per
    memory latency bound the bandwidth it draws, below the L2's."""
    hw = hardware.gpu("a100")
    prog = partitioned("attention", {"b": 1, "h": 1, "q": 64, "x": 4096, "d": 128}, {"q": 64, "x": 64}, "f16")
    r = evaluate(prog, hw, tensor_cores=True, stages=2)
    assert r.ctas == 1
    l2_bytes = r.level("L2")["transfer_bytes"]
    in_flight = 2 * 64 * 128 * 2
    assert r.times["latency"] == pytest.approx(l2_bytes * hw.memory_latency_cycles / hw.clock_hz / in_flight)
    assert r.times["latency"] > 10 * r.times["L2"]


def test_search_takes_the_kernels_registers_and_four_warps():
    """With the kernel's register estimate (backends.gpu.registers) the search discards
    tiles that would spill and CTAs of fewer than 4 warps; a short q that cannot fill 4
    warps still finds its tiles. The mma.sync mapping divides q by 16 on sm_90a too (not by
    wgmma's 64), so grouped-query attention with 4 query heads per K/V head fits."""
    from napkin_mlir.backends.gpu.registers import register_limit, tiles_registers
    from napkin_mlir.backends.gpu.tensorcore_plan import tiles_fit_kernel

    def choose(dims, gpu, target, **options):
        sizes = dict(dims)
        if options.get("kv_heads"):
            sizes = {**dims, "h": options["kv_heads"], "r": dims["h"] // options["kv_heads"]}
        return choose_tiles(
            "attention",
            dims,
            "bf16",
            gpu,
            feasible=lambda t: tiles_fit_kernel(t, sizes, "bf16"),
            tensor_cores=True,
            registers=tiles_registers(sizes, "bf16", target),
            **options,
        )

    for dims, gpu, target, options in (
        ({"b": 1, "h": 2, "q": 1000, "x": 1000, "d": 128}, "a100", "sm_80", {}),
        ({"b": 1, "h": 16, "q": 2048, "x": 2048, "d": 128}, "h100", "sm_90a", {"kv_heads": 4}),
    ):
        c = choose(dims, gpu, target, **options)
        assert c.warps >= 4 and c.report.fits
        assert c.report.registers_per_thread <= register_limit(32 * c.warps, hardware.gpu(gpu))
        assert c.divisors["q"] == 16
    short = choose({"b": 1, "h": 2, "q": 40, "x": 1000, "d": 64}, "a100", "sm_80")
    assert short.tiles["q"] == 40 and short.warps == 3  # the whole q: 48 rows, 3 warps
