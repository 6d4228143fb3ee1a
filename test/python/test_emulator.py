"""The CPU emulator runs the tensor-core kernel's gpu-stage IR thread by thread.

Its instruction semantics are checked against the PTX ISA layouts stated independently in
`tensorcore_layout`; the kernel variants the tensor-core rule accepts must then pass the GPU
runner's check (FlashAttention's rule against a float64 reference) with no sanitizer
finding; and kernels broken on purpose (a missing barrier, an early wait, a wrong layout,
a bad launch) must be caught, each by the check that should catch it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_in_process
from mlir import ir

from napkin_mlir import emulator
from napkin_mlir.backends.gpu import runner as gpu_runner
from napkin_mlir.backends.gpu.fragments import a_coords, b_coords, c_coords, ldmatrix
from napkin_mlir.check.harness import VerifyConfig, build
from napkin_mlir.cli.bench import GPU_HEAD_DIMS, emulate_configuration, sweep_configurations
from napkin_mlir.cli.compile import compile_kernel
from napkin_mlir.emulator import EmulationError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.model.cost import analyze
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import derivation


def test_mma_follows_the_isa_fragment_layouts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    warps = 3
    A, B, C = (
        rng.standard_normal((warps, 16, 16)),
        rng.standard_normal((warps, 16, 8)),
        rng.standard_normal((warps, 16, 8)),
    )
    a, b, c = np.zeros((1, 32 * warps, 4, 2)), np.zeros((1, 32 * warps, 2, 2)), np.zeros((1, 32 * warps, 2, 2))
    for w in range(warps):
        for lane in range(32):
            t = 32 * w + lane
            a[0, t] = np.array([A[w][rc] for rc in a_coords(lane)]).reshape(4, 2)
            b[0, t] = np.array([B[w][kn] for kn in b_coords(lane)]).reshape(2, 2)
            c[0, t] = np.array([C[w][rc] for rc in c_coords(lane)]).reshape(2, 2)
    d = emulator.mma_m16n8k16(a.astype(np.float32), b.astype(np.float32), c.astype(np.float32))
    for w in range(warps):
        expect = A[w] @ B[w] + C[w]
        for lane in range(32):
            got = d[0, 32 * w + lane].reshape(4)
            np.testing.assert_allclose(got, [expect[rc] for rc in c_coords(lane)], rtol=1e-5, atol=1e-5)


#: A two-warp kernel: copy a 32x16 tile to shared memory with 16-byte accesses (thread t:
#: row t % 32, column 8 * (t // 32)), then each warp w loads rows 16w.. with ldmatrix.x4
#: (A-fragment addressing: lane l gives row 16w + l % 16, column 8 * (l // 16)).
LDMATRIX_KERNEL = """
module attributes {gpu.container_module} {
  gpu.module @m {
    gpu.func @k(%A: memref<32x16xf16>, %OUT: memref<64x4x2xf16>) kernel attributes {known_block_size = array<i32: 64, 1, 1>} {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c8 = arith.constant 8 : index
      %c16 = arith.constant 16 : index
      %c32 = arith.constant 32 : index
      %smem = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
      %tile = memref.view %smem[%c0][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<32x16xf16, #gpu.address_space<workgroup>>
      %t = gpu.thread_id x
      %row = arith.remui %t, %c32 : index
      %half = arith.divui %t, %c32 : index
      %col = arith.muli %half, %c8 : index
      %v = vector.load %A[%row, %col] : memref<32x16xf16>, vector<8xf16>
      vector.store %v, %tile[%row, %col] : memref<32x16xf16, #gpu.address_space<workgroup>>, vector<8xf16>
      gpu.barrier
      %lane = arith.remui %t, %c32 : index
      %in16 = arith.remui %lane, %c16 : index
      %base = arith.muli %half, %c16 : index
      %lrow = arith.addi %base, %in16 : index
      %lhalf = arith.divui %lane, %c16 : index
      %lcol = arith.muli %lhalf, %c8 : index
      %frag = nvgpu.ldmatrix %tile[%lrow, %lcol] {numTiles = 4 : i32, transpose = TRANSPOSE} : memref<32x16xf16, #gpu.address_space<workgroup>> -> vector<4x2xf16>
      %f0 = vector.extract %frag[0] : vector<2xf16> from vector<4x2xf16>
      %f1 = vector.extract %frag[1] : vector<2xf16> from vector<4x2xf16>
      %f2 = vector.extract %frag[2] : vector<2xf16> from vector<4x2xf16>
      %f3 = vector.extract %frag[3] : vector<2xf16> from vector<4x2xf16>
      vector.store %f0, %OUT[%t, %c0, %c0] : memref<64x4x2xf16>, vector<2xf16>
      vector.store %f1, %OUT[%t, %c1, %c0] : memref<64x4x2xf16>, vector<2xf16>
      vector.store %f2, %OUT[%t, %c2, %c0] : memref<64x4x2xf16>, vector<2xf16>
      vector.store %f3, %OUT[%t, %c3, %c0] : memref<64x4x2xf16>, vector<2xf16>
      gpu.return
    }
  }
}
"""


def _run_ldmatrix(text: str, a: np.ndarray, smem: int = 1024) -> tuple[np.ndarray, emulator.Stats]:
    out = np.full((64, 4, 2), np.nan, np.float16)
    with napkin_context(), ir.Location.unknown():
        kernel = emulator.load_kernel(text, "ldmatrix.mlir")
    stats = emulator.run_kernel(kernel, (1, 1, 1), (64, 1, 1), smem, [a, out], outputs=[1], names=["A", "OUT"])
    return out, stats


@pytest.mark.parametrize("transpose", [False, True])
def test_ldmatrix_follows_the_isa(transpose: bool, seed: int) -> None:
    a = np.random.default_rng(seed).standard_normal((32, 16)).astype(np.float16)
    out, stats = _run_ldmatrix(LDMATRIX_KERNEL.replace("TRANSPOSE", str(transpose).lower()), a)
    addresses = [(lane % 16, 8 * (lane // 16)) for lane in range(32)]
    for w in range(2):
        expect = ldmatrix(a[16 * w : 16 * w + 16].astype(np.float64), addresses, 4, transpose)
        np.testing.assert_array_equal(
            out[32 * w : 32 * w + 32].astype(np.float64).reshape(32, -1), expect.reshape(32, -1)
        )
    assert stats.warp_instructions["ldmatrix"] == 2 and stats.warp_instructions["bar.sync"] == 2
    # unpadded 32-byte rows: the 8 rows of an ldmatrix phase fall on 4 bank groups, twice each
    assert stats.smem_wavefronts["ldmatrix"] == 2 * stats.smem_ideal_wavefronts["ldmatrix"] == 16


DIVISION_KERNEL = """
module attributes {gpu.container_module} {
  gpu.module @m {
    gpu.func @k(%A: memref<64xi32>, %B: memref<64xi32>, %OUT: memref<6x64xi32>) kernel attributes {known_block_size = array<i32: 64, 1, 1>} {
      %t = gpu.thread_id x
      %a = memref.load %A[%t] : memref<64xi32>
      %b = memref.load %B[%t] : memref<64xi32>
      %q = arith.divsi %a, %b : i32
      %r = arith.remsi %a, %b : i32
      %f = arith.floordivsi %a, %b : i32
      %c = arith.ceildivsi %a, %b : i32
      %qu = arith.divui %a, %b : i32
      %ru = arith.remui %a, %b : i32
      %i0 = arith.constant 0 : index
      %i1 = arith.constant 1 : index
      %i2 = arith.constant 2 : index
      %i3 = arith.constant 3 : index
      %i4 = arith.constant 4 : index
      %i5 = arith.constant 5 : index
      memref.store %q, %OUT[%i0, %t] : memref<6x64xi32>
      memref.store %r, %OUT[%i1, %t] : memref<6x64xi32>
      memref.store %f, %OUT[%i2, %t] : memref<6x64xi32>
      memref.store %c, %OUT[%i3, %t] : memref<6x64xi32>
      memref.store %qu, %OUT[%i4, %t] : memref<6x64xi32>
      memref.store %ru, %OUT[%i5, %t] : memref<6x64xi32>
      gpu.return
    }
  }
}
"""


def test_signed_division_rounds_as_arith_says(seed: int) -> None:
    """divsi and remsi round toward zero, floordivsi down, ceildivsi up (negative operands
    included); divui and remui on non-negative operands."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-50, 50, 64).astype(np.int32)
    b = rng.choice([-7, -3, -1, 1, 2, 5, 8], 64).astype(np.int32)
    out = np.zeros((6, 64), np.int32)
    with napkin_context(), ir.Location.unknown():
        kernel = emulator.load_kernel(DIVISION_KERNEL, "division.mlir")
    emulator.run_kernel(kernel, (1, 1, 1), (64, 1, 1), 0, [a, b, out], outputs=[2], names=["A", "B", "OUT"])
    trunc = [int(x / y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    np.testing.assert_array_equal(out[0], trunc)
    np.testing.assert_array_equal(out[1], [x - y * q for x, y, q in zip(a.tolist(), b.tolist(), trunc, strict=True)])
    np.testing.assert_array_equal(out[2], a // b)
    np.testing.assert_array_equal(out[3], -(-a // b))
    both = (a >= 0) & (b > 0)
    np.testing.assert_array_equal(out[4][both], (a // b)[both])
    np.testing.assert_array_equal(out[5][both], (a % b)[both])


def test_missing_barrier_is_a_race() -> None:
    text = LDMATRIX_KERNEL.replace("TRANSPOSE", "false").replace("      gpu.barrier\n", "")
    with pytest.raises(EmulationError, match=r"ldmatrix.mlir:\d+:\d+ \(nvgpu.ldmatrix\): shared-memory race") as err:
        _run_ldmatrix(text, np.ones((32, 16), np.float16))
    assert "%tile" in str(err.value) and "vector.store" in str(err.value)


def test_launch_without_enough_shared_memory_is_refused() -> None:
    with pytest.raises(EmulationError, match=r"view %tile covers bytes \[0, 1024\) but the launch gives 512 B"):
        _run_ldmatrix(LDMATRIX_KERNEL.replace("TRANSPOSE", "false"), np.ones((32, 16), np.float16), smem=512)


def test_misaligned_ldmatrix_row_is_refused() -> None:
    text = LDMATRIX_KERNEL.replace("TRANSPOSE", "false").replace(
        "%tile[%lrow, %lcol] {numTiles", "%tile[%lrow, %c1] {numTiles"
    )
    with pytest.raises(EmulationError, match="misaligned access: shared %tile byte offset 2 is not a multiple of 16"):
        _run_ldmatrix(text, np.ones((32, 16), np.float16))


def test_unknown_op_is_named() -> None:
    text = LDMATRIX_KERNEL.replace("TRANSPOSE", "false").replace("arith.remui %lane, %c16", "arith.shrui %lane, %c16")
    with pytest.raises(EmulationError, match=r"ldmatrix.mlir:\d+:\d+ \(arith.shrui\): the emulator has no rule"):
        _run_ldmatrix(text, np.ones((32, 16), np.float16))


# --- the tensor-core attention kernel ------------------------------------------------------------


def _kernel(
    dims: dict[str, int], dtype: str, causal: bool, kv_heads: int | None, tiles: dict[str, int], warp_rows: int = 16
) -> tuple[str, gpu_runner.Sidecar]:
    config = VerifyConfig("attention", dims, dtype, causal=causal, kv_heads=kv_heads, tiles=tiles)
    kernel, text = compile_kernel(config, "sm_80", "gpu", "tensorcore", warp_rows, log=lambda _: None)
    return text, gpu_runner.parse_sidecar(kernel.sidecar("k.mlir"), Path("k.mlir"))


VARIANTS = {
    # dims, dtype, causal, kv_heads, tiles, warp_rows
    "hd64-bf16-causal-remainders": (
        {"b": 2, "h": 2, "q": 200, "x": 200, "d": 64},
        "bf16",
        True,
        None,
        {"q": 64, "x": 32},
        16,
    ),
    "hd128-f16": ({"b": 1, "h": 2, "q": 256, "x": 256, "d": 128}, "f16", False, None, {"q": 64, "x": 64}, 16),
    "hd128-bf16-causal": ({"b": 1, "h": 1, "q": 256, "x": 256, "d": 128}, "bf16", True, None, {"q": 64, "x": 64}, 16),
    "gqa-bf16-causal": ({"b": 1, "h": 4, "q": 150, "x": 150, "d": 64}, "bf16", True, 2, {"q": 32, "x": 64}, 16),
    "cross-q<x-f16": ({"b": 1, "h": 2, "q": 70, "x": 300, "d": 64}, "f16", False, None, {"q": 32, "x": 64}, 16),
    "partial-copy-round": ({"b": 1, "h": 2, "q": 300, "x": 40, "d": 64}, "bf16", True, None, {"q": 128, "x": 16}, 16),
    "decode-q1": ({"b": 2, "h": 4, "q": 1, "x": 200, "d": 128}, "bf16", False, 2, {"q": 1, "x": 64}, 16),
    "short-q5-x7-causal": ({"b": 1, "h": 2, "q": 5, "x": 7, "d": 64}, "f16", True, None, {"q": 5, "x": 7}, 16),
    "warp-rows-32": ({"b": 1, "h": 2, "q": 256, "x": 192, "d": 64}, "bf16", False, None, {"q": 64, "x": 32}, 32),
    "hd96-bf16-causal": ({"b": 1, "h": 2, "q": 150, "x": 130, "d": 96}, "bf16", True, None, {"q": 64, "x": 64}, 16),
    # head dim 256: the Q fragments are read from shared memory at each k-step (not held)
    "hd256-bf16-causal": ({"b": 1, "h": 1, "q": 130, "x": 150, "d": 256}, "bf16", True, None, {"q": 64, "x": 32}, 16),
}


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_kernel_variants_pass_on_the_emulator(variant: tuple, seed: int) -> None:
    dims, dtype, causal, kv_heads, tiles, warp_rows = variant
    text, side = _kernel(dims, dtype, causal, kv_heads, tiles, warp_rows)
    report = emulator.emulate(text, side, seed)
    assert report.passed, report.lines()
    assert 0 < report.errors["max_abs"] <= 2 * report.errors["ref_max_abs"] + 1e-6
    s = report.stats
    assert s.unretired_copies == 0
    # padded rows: every shared-memory request takes the conflict-free number of wavefronts,
    # and every global access touches the fewest 32-byte sectors its bytes fit in
    for kind, w in s.bank_conflict_summary().items():
        if dims["d"] == 96:
            # rows of 96 + 8 padding elements: the 16-byte copies into them and the reads of
            # O take up to 4/3 of the ideal wavefronts (the padding suits powers of two)
            assert w["ideal"] <= w["wavefronts"] and w["wavefronts"] * 3 <= w["ideal"] * 4, kind
            continue
        assert w["wavefronts"] == w["ideal"] > 0, kind
    assert set(s.coalescing_summary()) == {"cp.async", "st.global"}
    for kind, v in s.coalescing_summary().items():
        assert v["sectors"] == v["ideal"] > 0, kind
    warps = side.block[0] // 32
    gq, sx = side.problem["tile"]["q"], side.problem["tile"]["x"]  # a tile spanning its axis is rounded up to 16
    assert (gq, sx) == tuple(-(-dims[a] // 16) * 16 if tiles[a] >= dims[a] else tiles[a] for a in ("q", "x"))
    per_chunk = (warp_rows // 16) * ((sx // 8) * (dims["d"] // 16) + (dims["d"] // 8) * (sx // 16))
    chunks = math.ceil(dims["x"] / sx)
    if causal:  # chunk j runs for a CTA whose last row is at least j * x-tile
        chunks_per_cta = [min(chunks, (min(i * gq + gq, dims["q"]) - 1) // sx + 1) for i in range(side.grid[0])]
        expected = sum(chunks_per_cta) * side.grid[1] * side.grid[2] * warps * per_chunk
    else:
        expected = s.ctas * chunks * warps * per_chunk
    assert s.warp_instructions["mma.sync"] == expected


@pytest.mark.parametrize("draw", range(3))
def test_random_configurations_pass_on_the_emulator(draw: int, seed: int) -> None:
    """Whatever shape, mask, grouping, dtype and tiles the rule accepts must run correctly:
    configurations drawn at random (from the test's seed) until the kernel takes one."""
    import random

    from napkin_mlir.errors import NapkinError

    rng = random.Random(seed)
    for _ in range(20):
        kv, r = rng.choice([1, 2]), rng.choice([1, 2, 4])
        dims = {
            "b": rng.choice([1, 2]),
            "h": kv * r,
            "q": rng.choice([1, 3, 16, 17, 50, 100, 129]),
            "x": rng.choice([1, 5, 16, 31, 77, 150]),
            "d": rng.choice([16, 32, 64, 128]),
        }
        tiles = {"q": min(rng.choice([16, 32, 64, 128]), dims["q"]), "x": min(rng.choice([16, 32, 64]), dims["x"])}
        dtype, causal, warp_rows = rng.choice(["bf16", "f16"]), rng.random() < 0.5, rng.choice([16, 32])
        try:
            text, side = _kernel(dims, dtype, causal, kv if r > 1 else None, tiles, warp_rows)
        except NapkinError as err:
            assert "cannot take" in str(err)  # registers, warps or shared memory: drawn again
            continue
        report = emulator.emulate(text, side, seed)
        assert report.passed, (dims, dtype, causal, kv, tiles, warp_rows, report.lines())
        return
    pytest.fail("no configuration the kernel takes in 20 draws")


def test_the_benchmark_sweep_kernels_pass_at_a_reduced_size() -> None:
    """Every kernel configuration of the GPU sweep (head dim, mask, the cost model's tiles for
    H100) runs correctly on the emulator at a reduced size; the sweep's kernels differ from
    these only in the bounds of q and x. (One test for every head dim of the sweep, once a
    parametrization by it: the sweep's configurations, a cost-model search per problem, are
    computed once instead of once per head dim.)"""
    sweep = sweep_configurations()
    assert {c[0] for c in sweep} == set(GPU_HEAD_DIMS)
    for d in GPU_HEAD_DIMS:
        configs = [c for c in sweep if c[0] == d]
        assert {c[1] for c in configs} == {False, True}, d
        for config in configs:
            report = emulate_configuration(config)
            assert report.passed, (config, report.lines())
            assert all(w["wavefronts"] == w["ideal"] for w in report.stats.bank_conflict_summary().values()), config


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_global_traffic_is_what_the_model_prices(causal: bool, seed: int) -> None:
    """Bytes the kernel moves to and from global memory, counted by the emulator, equal the
    cost model's L2 transfers; with the causal mask both read K/V only up to each CTA's
    diagonal chunk (the kernel prefetches nothing past it, the model prices the skip)."""
    dims, tiles = {"b": 2, "h": 4, "q": 256, "x": 256, "d": 64}, {"q": 64, "x": 64}
    config = VerifyConfig("attention", dims, "bf16", causal=causal, kv_heads=2, tiles=tiles)
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        run_pipeline(module, derivation("attention", diagram_sizes(module), tiles))
        model = analyze(module, "a100", stages=2, tensor_cores=True)
    priced = {
        direction: sum(
            t["total_bytes"] for t in model.transfers if t["boundary"] == "L2" and t["direction"] == direction
        )
        for direction in ("load", "store")
    }
    text, side = _kernel(dims, "bf16", causal, 2, tiles)
    stats = emulator.emulate(text, side, seed).stats
    q_bytes = dims["b"] * dims["h"] * dims["q"] * dims["d"] * 2  # Q and O: bf16
    assert stats.global_write_bytes == priced["store"] == q_bytes
    assert stats.global_read_bytes == priced["load"]
    slices = dims["b"] * 2  # (batch, key/value head) pairs
    keys = (
        sum(min(dims["x"], (i + 1) * tiles["q"]) for i in range(dims["q"] // tiles["q"])) if causal else 4 * dims["x"]
    )
    assert stats.global_read_bytes == q_bytes + slices * keys * dims["d"] * 2 * 2


SMALL = ({"b": 1, "h": 2, "q": 100, "x": 100, "d": 64}, "bf16", False, None, {"q": 32, "x": 32})


def _mutated(edit) -> tuple[str, gpu_runner.Sidecar]:
    text, side = _kernel(*SMALL)
    return edit(text), side


def _drop_line(text: str, pick) -> str:
    lines = text.splitlines()
    index = pick(lines)
    return "\n".join(line for i, line in enumerate(lines) if i != index)


def test_the_unbroken_small_kernel_passes(seed: int) -> None:
    text, side = _kernel(*SMALL)
    assert emulator.emulate(text, side, seed).passed


def test_v_fragments_without_transpose_fail_the_check(seed: int) -> None:
    text, side = _mutated(lambda t: t.replace("transpose = true", "transpose = false"))
    report = emulator.emulate(text, side, seed)
    assert not report.passed and report.errors["max_abs"] > 10 * report.errors["ref_max_abs"]


def test_prefetch_without_the_barrier_that_ends_a_chunk_is_a_race(seed: int) -> None:
    def drop(lines: list[str]) -> int:
        end = next(i for i, line in enumerate(lines) if "scf.yield" in line)
        assert "gpu.barrier" in lines[end - 1]
        return end - 1

    text, side = _mutated(lambda t: _drop_line(t, drop))
    with pytest.raises(
        EmulationError, match=r"\(nvgpu.device_async_copy\): shared-memory race .* \(%ks\), .*nvgpu.ldmatrix"
    ):
        emulator.emulate(text, side, seed)


def test_reading_a_chunk_before_its_wait_is_a_race(seed: int) -> None:
    text, side = _mutated(lambda t: t.replace("{numGroups = 1 : i32}", "{numGroups = 2 : i32}"))
    with pytest.raises(EmulationError, match=r"shared-memory race .*landing at a device_async_wait"):
        emulator.emulate(text, side, seed)


def test_a_grid_larger_than_the_batch_reads_out_of_bounds(seed: int) -> None:
    text, side = _kernel(*SMALL)
    side = dataclasses.replace(side, grid=(side.grid[0], side.grid[1], 2))
    with pytest.raises(EmulationError, match=r"out of bounds: Q\[1, 0, 0, \d+, \d+\] .* of shape \[1, 2, 1, 100, 64\]"):
        emulator.emulate(text, side, seed)


def test_every_cta_writing_the_first_tile_is_caught(seed: int) -> None:
    text, side = _mutated(lambda t: re.sub(r"(%\w+) = gpu.block_id\s+x", r"\1 = arith.constant 0 : index", t))
    with pytest.raises(EmulationError, match="is written by two threads"):
        emulator.emulate(text, side, seed)


def test_an_output_never_stored_stays_poisoned(seed: int) -> None:
    text, side = _mutated(
        lambda t: "\n".join(ln for ln in t.splitlines() if not ("vector.store" in ln and "%O[" in ln))
    )
    report = emulator.emulate(text, side, seed)
    assert not report.passed and report.errors["max_abs"] == float("inf")
    assert report.stats.warp_instructions["st.global"] == 0


def test_sampled_ctas_check_the_rows_they_write(seed: int) -> None:
    """--ctas runs a few CTAs of a problem too large to emulate whole and judges their rows."""
    dims, tiles = {"b": 2, "h": 4, "q": 1000, "x": 1000, "d": 64}, {"q": 64, "x": 64}
    text, side = _kernel(dims, "bf16", True, 2, tiles)
    report = emulator.emulate(text, side, seed, ctas=3)
    assert report.passed, report.lines()
    assert report.stats.ctas == 3 and "3 of its 64 CTAs" in report.lines()[0]
    # CTAs 0, 32 and 63 of the (16, 2, 2) grid: rows 0-63 of batch 0 and of batch 1, and rows
    # 960-999 of batch 1, each for the two query heads sharing a key/value head
    assert "on the 336 rows" in report.criterion
    broken = text.replace("transpose = true", "transpose = false")
    assert not emulator.emulate(broken, side, seed, ctas=3).passed
    with pytest.raises(EmulationError, match="attention kernels only"):
        emulator.emulate(*_simt(SIMT["matmul-remainders"]), seed, ctas=2)


# --- the SIMT rule's kernels (every other diagram) ------------------------------------------------


def _simt(config: VerifyConfig) -> tuple[str, gpu_runner.Sidecar]:
    kernel, text = compile_kernel(config, "sm_80", "gpu", "simt")
    assert kernel is not None and "gpu.launch" in text
    return text, gpu_runner.parse_sidecar(kernel.sidecar("k.mlir"), Path("k.mlir"))


SIMT = {
    "matmul-remainders": VerifyConfig("matmul", {"m": 100, "n": 80, "k": 60}),
    "mlp-silu": VerifyConfig("mlp", {"m": 40, "n": 64, "k": 30, "f": 20}, activation="silu"),
    "attention-f32-causal": VerifyConfig("attention", {"b": 1, "h": 2, "q": 50, "x": 70, "d": 16}, causal=True),
}


@pytest.mark.parametrize("config", list(SIMT.values()), ids=list(SIMT))
def test_simt_kernels_pass_on_the_emulator(config: VerifyConfig, seed: int) -> None:
    text, side = _simt(config)
    report = emulator.emulate(text, side, seed)
    assert report.passed, report.lines()
    out = next(a for a in side.args if a.role == "output")
    # every output element stored exactly once (a second store would have been an error)
    assert report.stats.global_write_bytes == math.prod(out.shape) * 4
    assert report.stats.warp_instructions["mma.sync"] == 0 < report.stats.warp_instructions["bar.sync"]
    # consecutive threads of a warp take consecutive output columns: with output rows a whole
    # number of 32-byte sectors long the stores are fully coalesced (matmul and mlp are also
    # free of bank conflicts; attention's K tile is read down its rows, d floats apart)
    stores = report.stats.coalescing_summary()["st.global"]
    assert stores["sectors"] == stores["ideal"]
    if config.diagram != "attention":
        assert all(w["wavefronts"] == w["ideal"] for w in report.stats.bank_conflict_summary().values())


def test_simt_kernel_without_barriers_races(seed: int) -> None:
    text, side = _simt(SIMT["matmul-remainders"])
    text = "\n".join(line for line in text.splitlines() if "gpu.barrier" not in line)
    with pytest.raises(
        EmulationError, match=r"\(memref.load\): shared-memory race .* wrote at kernel.mlir:\d+:\d+ \(memref.store\)"
    ):
        emulator.emulate(text, side, seed)


# --- the command line ------------------------------------------------------------------------------
# (good runs need only their output: main() in this process; the errors exit non-zero in a subprocess)


def test_cli_emulates_the_kernel_the_model_picks(tmp_path) -> None:
    report = tmp_path / "report.json"
    r = run_cli_in_process(
        "napkin", "emulate", "attention", "--dims", "b=1,h=2,q=160,x=160,d=64", "--dtype", "f16", "--causal",
        "--json", str(report),
    )  # fmt: skip
    assert r.rc == 0, r.describe()
    assert "chosen by the cost model" in r.stdout and "no bank conflicts" in r.stdout
    assert r.last_line().startswith("PASS")
    data = json.loads(report.read_text())
    assert data["passed"] and data["per_cta_warp_instructions"]["mma.sync"] > 0


def test_cli_emulates_a_compiled_sidecar(tmp_path) -> None:
    ir_file = tmp_path / "k.mlir"
    r = run_cli_in_process(
        "napkin", "compile", "attention", "--target", "sm_90a", "--dims", "b=1,h=2,q=96,x=130,d=128",
        "--dtype", "bf16", "--tile", "q=32,x=32", "--emit", "gpu", "-o", str(ir_file),
    )  # fmt: skip
    assert r.rc == 0, r.describe()
    side = json.loads((tmp_path / "k.mlir.json").read_text())
    assert side["binary"] == "k.mlir" and side["grid"] == [3, 2, 1] and side["problem"]["tile"] == {"q": 32, "x": 32}
    r = run_cli_in_process("napkin", "emulate", str(tmp_path / "k.mlir.json"))
    assert r.rc == 0 and r.last_line().startswith("PASS"), r.describe()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attention"], "--dims is required"),
        (["matmul", "--dims", "m=64,n=64,k=64", "--kernel", "tensorcore"], "only attention has an mma.sync rule"),
        (["attention", "--dims", "b=1,h=1,q=64,x=64,d=64", "--kernel", "tensorcore"], "takes bf16/f16"),
        (["missing.json"], "cannot read sidecar missing.json"),
    ],
)
def test_cli_errors_are_clean(run_cli, args: list[str], message: str) -> None:
    r = run_cli("napkin", "emulate", *args)
    assert r.rc != 0 and "Traceback" not in r.stderr and r.stderr.startswith("error:"), r.describe()
    assert message in r.stderr, r.describe()


def test_cli_emulates_a_simt_sidecar(tmp_path) -> None:
    ir_file = tmp_path / "mm.mlir"
    r = run_cli_in_process(
        "napkin",
        "compile",
        "matmul",
        "--target",
        "sm_80",
        "--dims",
        "m=70,n=40,k=33",
        "--emit",
        "gpu",
        "-o",
        str(ir_file),
    )
    assert r.rc == 0 and (tmp_path / "mm.mlir.json").exists(), r.describe()
    r = run_cli_in_process("napkin", "emulate", str(tmp_path / "mm.mlir.json"))
    assert r.rc == 0 and r.last_line().startswith("PASS") and "kernel matmul" in r.stdout, r.describe()


def test_ldmatrix_lane_patterns_of_the_emitter_give_the_isa_fragments() -> None:
    """The rows the kernel's lanes hand `ldmatrix.x4` (`fragments.A_TILE`, `B_PAIR`,
    `B_PAIR_T`, the data the emitter builds its addresses from) give each lane the A and B
    fragment elements the PTX ISA assigns it (`a_coords`, `b_coords`)."""
    from napkin_mlir.backends.gpu.fragments import A_TILE, B_PAIR, B_PAIR_T

    smem = np.arange(32 * 32).reshape(32, 32)
    a = ldmatrix(smem, [A_TILE.at(lane) for lane in range(32)], 4, False)
    k = ldmatrix(smem, [B_PAIR.at(lane) for lane in range(32)], 4, False)  # K: rows n, columns k
    v = ldmatrix(smem, [B_PAIR_T.at(lane) for lane in range(32)], 4, True)  # V: rows k, columns n
    for lane in range(32):
        assert list(a[lane].reshape(-1)) == [smem[r, c] for r, c in a_coords(lane)]
        for t in range(2):  # the two n8 tiles of a pair
            assert list(k[lane, 2 * t : 2 * t + 2].reshape(-1)) == [smem[8 * t + n, kk] for kk, n in b_coords(lane)]
            assert list(v[lane, 2 * t : 2 * t + 2].reshape(-1)) == [smem[kk, 8 * t + n] for kk, n in b_coords(lane)]
