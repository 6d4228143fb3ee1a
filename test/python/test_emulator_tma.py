"""The emulator runs Hopper's TMA loads and mbarriers with the PTX ISA's semantics.

Kernels are built here with the MLIR Python bindings (the gpu-stage IR the Hopper kernels
contain: a tensor map as an `!llvm.ptr` argument cast to a `!nvgpu.tensormap.descriptor`,
`nvgpu.mbarrier.*`, `nvgpu.tma.async.load`) and run with `load_kernel`/`run_kernel`:

* the shared-memory images of upstream MLIR's sm90 TMA integration tests (their CHECK lines);
* boxes at odd places (out of bounds on either side, 4-D, every swizzle) against numpy;
* a double-buffered pipeline (one thread issuing, the wait parity flipping at each wrap);
* TMA tiles read by wgmma straight after the wait (no proxy fence, no barrier);
* kernels broken on purpose, each caught by the check meant for it, next to a twin that
  differs only in the bug and passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from mlir import ir
from mlir.dialects import arith, builtin, gpu, llvm, memref, nvgpu, nvvm, scf, vector

from napkin_mlir.backends.gpu import runner
from napkin_mlir.backends.gpu.hopper_emit import kernel_module
from napkin_mlir.emulator import EmulationError, Stats, load_kernel, run_kernel
from napkin_mlir.ir.context import napkin_context

THREADS = 128
NUMPY = {"bf16": np.dtype(ml_dtypes.bfloat16), "f16": np.dtype(np.float16), "f32": np.dtype(np.float32)}
SWIZZLE_NAMES = {0: "none", 32: "swizzle_32b", 64: "swizzle_64b", 128: "swizzle_128b"}

# --- building kernels --------------------------------------------------------------------------------


def idx(value: int) -> ir.Value:
    return arith.ConstantOp(ir.IndexType.get(), value).result


def workgroup() -> ir.Attribute:
    return ir.Attribute.parse("#gpu.address_space<workgroup>")


def element(dtype: str) -> ir.Type:
    return {"bf16": ir.BF16Type.get(), "f16": ir.F16Type.get(), "f32": ir.F32Type.get()}[dtype]


def descriptor_type(box: Sequence[int], dtype: str, swizzle: int) -> ir.Type:
    """The descriptor of a box (outermost first)."""
    shape = "x".join(str(b) for b in box)
    return ir.Type.parse(
        f"!nvgpu.tensormap.descriptor<tensor = memref<{shape}x{dtype}, 3>, swizzle = {SWIZZLE_NAMES[swizzle]}, "
        "l2promo = none, oob = zero, interleave = none>"
    )


def barriers(n: int) -> ir.Value:
    t = ir.Type.parse(f"!nvgpu.mbarrier.group<memorySpace = #gpu.address_space<workgroup>, num_barriers = {n}>")
    return nvgpu.MBarrierCreateOp(t).result


def shared_bytes() -> ir.Value:
    t = ir.MemRefType.get([ir.ShapedType.get_dynamic_size()], ir.IntegerType.get_signless(8), memory_space=workgroup())
    return gpu.DynamicSharedMemoryOp(t).result


def view(raw: ir.Value, byte: ir.Value | int, shape: Sequence[int], dtype: str) -> ir.Value:
    t = ir.MemRefType.get(list(shape), element(dtype), memory_space=workgroup())
    return memref.ViewOp(t, raw, idx(byte) if isinstance(byte, int) else byte, []).result


def thread0() -> tuple[ir.Value, ir.Value]:
    tid = gpu.thread_id(gpu.Dimension.x)
    return tid, arith.cmpi(arith.CmpIPredicate.eq, tid, idx(0))


def init_barriers(bars: ir.Value, n: int, count: int, first: ir.Value | None, fence: bool, barrier: bool) -> None:
    for b in range(n):
        nvgpu.MBarrierInitOp(bars, idx(count), idx(b), predicate=first)
    if fence:
        nvvm.FenceMbarrierInitOp()
    if barrier:
        gpu.BarrierOp()


def wait(bars: ir.Value, b: ir.Value | int, parity: ir.Value | int) -> None:
    i1 = ir.IntegerType.get_signless(1)
    p = arith.ConstantOp(i1, parity).result if isinstance(parity, int) else parity
    nvgpu.MBarrierTryWaitParityOp(bars, p, idx(10_000_000), idx(b) if isinstance(b, int) else b)


def copy_out(flat: ir.Value, out: ir.Value, row: ir.Value, elements: int, dtype: str, tid: ir.Value) -> None:
    """Every thread copies 16-byte vectors of the shared `flat` view to out[row, :]."""
    width = 16 // NUMPY[dtype].itemsize
    loop = scf.ForOp(tid, idx(elements // width), idx(THREADS))
    with ir.InsertionPoint(loop.body):
        e = arith.muli(loop.induction_variable, idx(width))
        x = vector.load(ir.VectorType.get([width], element(dtype)), flat, [e])
        vector.store(x, out, [row, e])
        scf.YieldOp([])


def build(arg_types: list[str], body: Callable[[list[ir.Value]], None]) -> str:
    """The text of a module with one kernel taking `arg_types` (MLIR type syntax) whose body
    `body` builds (given the arguments)."""
    with napkin_context(), ir.Location.unknown():
        module, block = kernel_module("k", [ir.Type.parse(t) for t in arg_types], THREADS)
        with ir.InsertionPoint(block):
            body(list(block.arguments))
            gpu.ReturnOp([])
        assert module.operation.verify()
        return str(module)


def tensor_map(of: str, dtype: str, shape: Sequence[int], box: Sequence[int], swizzle: int) -> runner.TensorMap:
    """The runner's tensor map of a `shape` array (box innermost first), built as a sidecar's."""
    source = runner.Arg(of, "input", dtype, tuple(shape), ())
    spec = {"of": of, "box": list(box), "swizzle": swizzle}
    return runner.tensor_map(runner.Arg(f"{of}_map", "tensormap", dtype, (), (), spec), [source])


def run(text: str, grid: int, smem: int, arrays: list[Any], names: list[str], outputs: Sequence[int]) -> Stats:
    with napkin_context(), ir.Location.unknown():
        kernel = load_kernel(text, "tma.mlir")
    return run_kernel(kernel, (grid, 1, 1), (THREADS, 1, 1), smem, arrays, outputs, names)


def image(
    data: np.ndarray, coords: Sequence[int], box: Sequence[int], swizzle: int, base: int
) -> np.ndarray:  # the PTX ISA's tile-mode load, stated independently of the emulator
    """The shared-memory image (flat, `data`'s dtype) of the box (outermost first) at `coords`
    (innermost first) of `data` placed at shared byte `base`: the dense box with zeros
    outside the array, 16-byte chunk bits [4, 4+k) of each byte address XORed with bits
    [7, 7+k), 2^k = swizzle / 16."""
    starts = list(reversed(coords))
    dense = np.zeros(box, data.dtype)
    ranges = [np.arange(s, s + b) for s, b in zip(starts, box, strict=True)]
    ok = [(r >= 0) & (r < n) for r, n in zip(ranges, data.shape, strict=True)]
    dense[np.ix_(*[np.nonzero(k)[0] for k in ok])] = data[np.ix_(*[r[k] for r, k in zip(ranges, ok, strict=True)])]
    raw = dense.reshape(-1).view(np.uint8)
    addr = base + np.arange(raw.size)
    if swizzle:
        addr = addr ^ (((addr >> 7) % (swizzle // 16)) << 4)
    out = np.empty_like(raw)
    out[addr - base] = raw
    return out.view(data.dtype)


# --- 1. upstream goldens -------------------------------------------------------------------------------


def chunks(row: np.ndarray) -> list[int]:
    """A printed row as its 8-element chunks, each of which must hold one value."""
    c = row.astype(np.float32).reshape(-1, 8)
    assert np.all(c == c[:, :1])
    return [int(v) for v in c[:, 0]]


def test_golden_128x64_swizzle128b() -> None:
    """llvm/llvm-project `mlir/test/Integration/GPU/CUDA/sm90/tma_load_128x64_swizzle128b.mlir`:
    a 128x64 f16 array holding (64 r + c) / 8, one TMA load of the whole 128x64 box with the
    128-byte swizzle; the test prints shared memory as 128 rows of 64. Its CHECK lines say:
    printed row r, chunk p (8 equal values) holds 8 r + (p ^ (r % 8)) (that formula reproduces
    all 128 CHECK lines; the rows below are copied from them as they stand)."""
    data = ((np.arange(128 * 64) // 8).astype(np.float16)).reshape(128, 64)

    def body(args: list[ir.Value]) -> None:
        desc = builtin.UnrealizedConversionCastOp([descriptor_type((128, 64), "f16", 128)], [args[0]]).results[0]
        bars = barriers(1)
        tid, first = thread0()
        init_barriers(bars, 1, 1, first, fence=True, barrier=True)
        raw = shared_bytes()
        dst = view(raw, 1024, (128, 64), "f16")
        nvgpu.TmaAsyncLoadOp(dst, bars, desc, [idx(0), idx(0)], idx(0), predicate=first)
        nvgpu.MBarrierArriveExpectTxOp(bars, idx(16384), idx(0), predicate=first)
        wait(bars, 0, 0)
        copy_out(view(raw, 1024, (128 * 64,), "f16"), args[2], idx(0), 128 * 64, "f16", tid)

    text = build(["!llvm.ptr", "memref<128x64xf16>", "memref<1x8192xf16>"], body)
    out = np.full((1, 8192), np.nan, np.float16)
    tmap = tensor_map("A", "f16", (128, 64), (64, 128), 128)
    stats = run(text, 1, 1024 + 16384, [tmap, data, out], ["A_map", "A", "out"], [2])
    printed = out.reshape(128, 64)
    assert chunks(printed[0]) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert chunks(printed[1]) == [9, 8, 11, 10, 13, 12, 15, 14]
    assert chunks(printed[3]) == [27, 26, 25, 24, 31, 30, 29, 28]
    assert chunks(printed[6]) == [54, 55, 52, 53, 50, 51, 48, 49]
    assert chunks(printed[127]) == [1023, 1022, 1021, 1020, 1019, 1018, 1017, 1016]
    for r in range(128):
        assert chunks(printed[r]) == [8 * r + (p ^ (r % 8)) for p in range(8)], r
    assert stats.warp_instructions["cp.async.bulk.tensor"] == 1 and stats.global_read_bytes >= 16384
    assert stats.unretired_copies == 0


def test_golden_64x64_swizzle128b_two_boxes() -> None:
    """llvm/llvm-project `mlir/test/Integration/GPU/CUDA/sm90/tma_load_64x64_swizzle128b.mlir`:
    a 64x128 f16 array holding (128 i + j) / 8; two 64x64 boxes (128-byte swizzle) at
    coordinates (0, 0) and (64, 0) into subviews [0, 0] and [32, 0] of a 64x128 shared buffer:
    a box lands densely at its destination's address, whatever the subview's strides (the
    second subview runs past the buffer, which today's verifier refuses: a view at its
    address, byte 8192 of the buffer, stands in); the test prints the buffer as 64 rows of 128. Its CHECK lines say: printed row i, chunk P of 16
    holds 16 r + 8 s + ((P % 8) ^ (r % 8)) with k = 2 i + P / 8, r = k % 64, s = k / 64 (box
    row r of box s); the rows below are copied from them."""
    data = ((np.arange(64 * 128) // 8).astype(np.float16)).reshape(64, 128)
    base = 2048

    def body(args: list[ir.Value]) -> None:
        desc = builtin.UnrealizedConversionCastOp([descriptor_type((64, 64), "f16", 128)], [args[0]]).results[0]
        bars = barriers(1)
        tid, first = thread0()
        init_barriers(bars, 1, 1, first, fence=True, barrier=True)
        raw = shared_bytes()
        whole = view(raw, base, (64, 128), "f16")
        t = ir.Type.parse("memref<64x64xf16, strided<[128, 1]>, #gpu.address_space<workgroup>>")
        first_half = memref.SubViewOp(t, whole, [], [], [], [0, 0], [64, 64], [1, 1]).result
        nvgpu.TmaAsyncLoadOp(first_half, bars, desc, [idx(0), idx(0)], idx(0), predicate=first)
        second_half = view(raw, base + 8192, (64, 64), "f16")
        nvgpu.TmaAsyncLoadOp(second_half, bars, desc, [idx(64), idx(0)], idx(0), predicate=first)
        nvgpu.MBarrierArriveExpectTxOp(bars, idx(16384), idx(0), predicate=first)
        wait(bars, 0, 0)
        copy_out(view(raw, base, (64 * 128,), "f16"), args[2], idx(0), 64 * 128, "f16", tid)

    text = build(["!llvm.ptr", "memref<64x128xf16>", "memref<1x8192xf16>"], body)
    out = np.full((1, 8192), np.nan, np.float16)
    tmap = tensor_map("B", "f16", (64, 128), (64, 64), 128)
    run(text, 1, base + 16384, [tmap, data, out], ["B_map", "B", "out"], [2])
    printed = out.reshape(64, 128)
    copied = {
        0: [0, 1, 2, 3, 4, 5, 6, 7, 17, 16, 19, 18, 21, 20, 23, 22],
        1: [34, 35, 32, 33, 38, 39, 36, 37, 51, 50, 49, 48, 55, 54, 53, 52],
        39: [238, 239, 236, 237, 234, 235, 232, 233, 255, 254, 253, 252, 251, 250, 249, 248],
        40: [264, 265, 266, 267, 268, 269, 270, 271, 281, 280, 283, 282, 285, 284, 287, 286],
    }
    for i, expected in copied.items():
        assert chunks(printed[i]) == expected, i
    for i in range(64):
        rows = [(2 * i + p // 8) for p in range(16)]
        assert chunks(printed[i]) == [
            16 * (k % 64) + 8 * (k // 64) + ((p % 8) ^ (k % 64 % 8)) for p, k in enumerate(rows)
        ]


def test_golden_64x8_8x128_noswizzle() -> None:
    """llvm/llvm-project `mlir/test/Integration/GPU/CUDA/sm90/tma_load_64x8_8x128_noswizzle.mlir`:
    f32 lhs 64x8 with lhs[i][j] = j and rhs 8x128 of 3.0, loaded unswizzled (boxes 64x8 and
    8x128) on one barrier whose count is the block's 128 threads: thread 0 expects 6144 bytes,
    the others 0. CHECK: `TMA LOADED lhs[45][7] 7.000000`, `TMA LOADED rhs[7][0] 3.000000`
    (its BEFORE lines print the device's zeroed globals; shared memory starts as NaN here)."""
    lhs = np.tile(np.arange(8, dtype=np.float32), (64, 1))
    rhs = np.full((8, 128), 3.0, np.float32)

    def body(args: list[ir.Value]) -> None:
        d_lhs = builtin.UnrealizedConversionCastOp([descriptor_type((64, 8), "f32", 0)], [args[0]]).results[0]
        d_rhs = builtin.UnrealizedConversionCastOp([descriptor_type((8, 128), "f32", 0)], [args[1]]).results[0]
        bars = barriers(1)
        tid, first = thread0()
        init_barriers(bars, 1, THREADS, first, fence=True, barrier=True)
        raw = shared_bytes()
        s_lhs, s_rhs = view(raw, 0, (64, 8), "f32"), view(raw, 2048, (8, 128), "f32")
        tx = arith.select(first, idx(6144), idx(0))
        nvgpu.MBarrierArriveExpectTxOp(bars, tx, idx(0))
        nvgpu.TmaAsyncLoadOp(s_lhs, bars, d_lhs, [idx(0), idx(0)], idx(0), predicate=first)
        nvgpu.TmaAsyncLoadOp(s_rhs, bars, d_rhs, [idx(0), idx(0)], idx(0), predicate=first)
        wait(bars, 0, 0)
        with ir.InsertionPoint(scf.IfOp(first).then_block):
            memref.store(memref.load(s_lhs, [idx(45), idx(7)]), args[4], [idx(0)])
            memref.store(memref.load(s_rhs, [idx(7), idx(0)]), args[4], [idx(1)])
            scf.YieldOp([])
        copy_out(view(raw, 0, (1536,), "f32"), args[5], idx(0), 1536, "f32", tid)

    types = ["!llvm.ptr", "!llvm.ptr", "memref<64x8xf32>", "memref<8x128xf32>", "memref<2xf32>", "memref<1x1536xf32>"]
    text = build(types, body)
    loaded = np.full(2, np.nan, np.float32)
    whole = np.full((1, 1536), np.nan, np.float32)
    maps = [tensor_map("lhs", "f32", (64, 8), (8, 64), 0), tensor_map("rhs", "f32", (8, 128), (128, 8), 0)]
    names = ["lhs_map", "rhs_map", "lhs", "rhs", "loaded", "whole"]
    run(text, 1, 6144, [*maps, lhs, rhs, loaded, whole], names, [4, 5])
    assert loaded.tolist() == [7.0, 3.0]
    np.testing.assert_array_equal(whole[0], np.concatenate([lhs.reshape(-1), rhs.reshape(-1)]))


# --- 2. one load: odd places, every swizzle --------------------------------------------------------------


@dataclass(frozen=True)
class OneLoad:
    """A kernel in which thread 0 loads one box per CTA (coordinates from `coords`, per CTA)
    into shared memory and all threads copy the image out; the fields break it on purpose."""

    box: tuple[int, ...] = (1, 1, 64, 64)  # outermost first
    swizzle: int = 128
    shape: tuple[int, ...] = (2, 3, 100, 128)
    init_count: int = 1
    init_by_all: bool = False
    fence: bool = True
    barrier: bool = True
    arrive: str = "expect_tx"  # or "plain" (every thread arrives, count 128), "none"
    extra_tx: int = 0
    wait: str = "all"  # or "none", "warp0" (the others do not wait), "warp0+barrier"
    parity: int = 0
    dst_byte: int = 1024
    map_box: tuple[int, ...] | None = None  # the tensor map's box (innermost first), if not the descriptor's
    read: bool = True
    twice: bool = False  # a second load into the same bytes right after the first

    @property
    def elements(self) -> int:
        return int(np.prod(self.box))

    def kernel(self, ctas: int) -> str:
        rank = len(self.shape)

        def body(args: list[ir.Value]) -> None:
            desc = builtin.UnrealizedConversionCastOp([descriptor_type(self.box, "bf16", self.swizzle)], [args[0]])
            bars = barriers(1)
            tid, first = thread0()
            count = THREADS if self.arrive == "plain" else self.init_count
            init_barriers(bars, 1, count, None if self.init_by_all else first, self.fence, self.barrier)
            raw = shared_bytes()
            dst = view(raw, self.dst_byte, self.box, "bf16")
            bid = gpu.block_id(gpu.Dimension.x)
            coords = [arith.index_cast(ir.IndexType.get(), memref.load(args[2], [bid, idx(i)])) for i in range(rank)]
            nvgpu.TmaPrefetchOp(desc.results[0], predicate=first)
            for _ in range(1 + self.twice):
                nvgpu.TmaAsyncLoadOp(dst, bars, desc.results[0], coords, idx(0), predicate=first)
            if self.arrive == "expect_tx":
                tx = self.elements * 2 + self.extra_tx
                nvgpu.MBarrierArriveExpectTxOp(bars, idx(tx), idx(0), predicate=first)
            elif self.arrive == "plain":
                nvgpu.MBarrierArriveOp(bars, idx(0))
            if self.wait == "all":
                wait(bars, 0, self.parity)
            elif self.wait.startswith("warp0"):
                warp0 = arith.cmpi(arith.CmpIPredicate.ult, tid, idx(32))
                with ir.InsertionPoint(scf.IfOp(warp0).then_block):
                    wait(bars, 0, self.parity)
                    scf.YieldOp([])
                if self.wait.endswith("+barrier"):
                    gpu.BarrierOp()
            if self.read:
                copy_out(view(raw, self.dst_byte, (self.elements,), "bf16"), args[3], bid, self.elements, "bf16", tid)

        shape = "x".join(str(n) for n in self.shape)
        return build(
            [
                "!llvm.ptr",
                f"memref<{shape}xbf16>",
                f"memref<{ctas}x{rank}xi32>",
                f"memref<{ctas}x{self.elements}xbf16>",
            ],
            body,
        )

    def run(self, coords: Sequence[Sequence[int]], seed: int = 0) -> tuple[np.ndarray, np.ndarray, Stats]:
        """Run one CTA per coordinate tuple (innermost first): the array, the images, the stats."""
        rng = np.random.default_rng(seed)
        data = rng.standard_normal(self.shape).astype(NUMPY["bf16"])
        out = np.full((len(coords), self.elements), np.nan, NUMPY["bf16"])
        box = self.map_box or tuple(reversed(self.box))
        tmap = tensor_map("X", "bf16", self.shape, box, self.swizzle)
        arrays = [tmap, data, np.asarray(coords, np.int32), out]
        smem = self.dst_byte + self.elements * 2
        stats = run(self.kernel(len(coords)), len(coords), smem, arrays, ["X_map", "X", "coords", "out"], [3])
        return data, out, stats


#: Per CTA, innermost first: inside; rows past the end of 100; negative x and y; x past 128;
#: a whole box outside (b = 2 of 2); y = -64 (every row above the array).
PLACES = [(64, 36, 2, 1), (0, 60, 0, 0), (-16, -5, 1, 0), (96, 90, 0, 1), (0, 0, 0, 2), (32, -64, 1, 1)]


@pytest.mark.parametrize(
    ("box", "swizzle"),
    [((1, 1, 64, 64), 128), ((1, 2, 24, 16), 0), ((2, 1, 8, 32), 64), ((1, 1, 16, 16), 32), ((1, 3, 40, 64), 0)],
    ids=["64x64-swizzle128", "2x24x16-none", "2x8x32-swizzle64", "16x16-swizzle32", "3x40x64-none"],
)
def test_box_loads_with_zero_fill_match_numpy(box: tuple[int, ...], swizzle: int, seed: int) -> None:
    """Boxes of a (2, 3, 100, 128) bf16 array at coordinates inside, past either end and
    wholly outside, each CTA its own: the image is numpy's slice with zeros outside, swizzled;
    the transaction bytes count the zeros too (else the wait would deadlock)."""
    plan = OneLoad(box=box, swizzle=swizzle)
    data, out, stats = plan.run(PLACES, seed)
    for cta, coords in enumerate(PLACES):
        expected = image(data, coords, box, swizzle, plan.dst_byte)
        np.testing.assert_array_equal(out[cta].view(np.uint16), expected.view(np.uint16), err_msg=str(coords))
    assert stats.warp_instructions["cp.async.bulk.tensor"] == len(PLACES)
    assert stats.warp_instructions["prefetch.tensormap"] == len(PLACES)
    assert stats.warp_instructions["mbarrier.try_wait.parity"] == len(PLACES) * THREADS // 32
    assert stats.unretired_copies == 0
    inside = [image(np.ones(data.shape, NUMPY["bf16"]), c, box, 0, 0).astype(np.float32).sum() for c in PLACES]
    coordinates = len(PLACES) * THREADS * 4 * 4  # every thread reads its CTA's coordinates
    assert stats.global_read_bytes - coordinates == int(sum(inside)) * 2


def test_a_load_never_waited_for_is_counted_unretired() -> None:
    _, _, stats = OneLoad(wait="none", read=False).run([(0, 0, 0, 0)])
    assert stats.unretired_copies == 1


# --- 3. a double-buffered pipeline -------------------------------------------------------------------------

CHUNKS = 5


def pipeline_kernel(flip: bool = True, release_barrier: bool = True, first_parity: int = 0) -> str:
    """Two stages of 64x64 bf16 (128-byte swizzle), one mbarrier each; thread 0 issues chunk
    k + 2 into the stage chunk k used once every thread has read it (a gpu.barrier); the wait
    parity flips each time the stage index wraps. Every thread sums its 32 elements of each
    chunk's shared image."""

    def body(args: list[ir.Value]) -> None:
        bf16, f32 = element("bf16"), element("f32")
        vec = ir.VectorType.get([8], f32)
        desc = builtin.UnrealizedConversionCastOp([descriptor_type((64, 64), "bf16", 128)], [args[0]]).results[0]
        full = barriers(2)
        tid, first = thread0()
        init_barriers(full, 2, 1, first, fence=True, barrier=True)
        raw = shared_bytes()
        for s in range(2):
            stage = view(raw, 1024 + 8192 * s, (64, 64), "bf16")
            nvgpu.TmaAsyncLoadOp(stage, full, desc, [idx(0), idx(64 * s)], idx(s), predicate=first)
            nvgpu.MBarrierArriveExpectTxOp(full, idx(8192), idx(s), predicate=first)
        i1 = ir.IntegerType.get_signless(1)
        zeros = arith.ConstantOp(vec, ir.DenseElementsAttr.get_splat(vec, ir.FloatAttr.get(f32, 0.0))).result
        phase0 = arith.ConstantOp(i1, first_parity).result
        loop = scf.ForOp(idx(0), idx(CHUNKS), idx(1), [idx(0), phase0] + [zeros] * 4)
        with ir.InsertionPoint(loop.body):
            k = loop.induction_variable
            s, phase, *acc = loop.inner_iter_args
            wait(full, s, phase)
            shift = arith.addi(idx(1024), arith.muli(s, idx(8192)))
            flat = view(raw, shift, (4096,), "bf16")
            new = []
            for j, a in enumerate(acc):
                e = arith.muli(arith.addi(tid, idx(THREADS * j)), idx(8))
                x = vector.load(ir.VectorType.get([8], bf16), flat, [e])
                new.append(arith.addf(a, arith.extf(vec, x)))
            if release_barrier:
                gpu.BarrierOp()
            nxt = arith.addi(k, idx(2))
            issue = arith.andi(first, arith.cmpi(arith.CmpIPredicate.ult, nxt, idx(CHUNKS)))
            stage = view(raw, shift, (64, 64), "bf16")
            nvgpu.TmaAsyncLoadOp(stage, full, desc, [idx(0), arith.muli(nxt, idx(64))], s, predicate=issue)
            nvgpu.MBarrierArriveExpectTxOp(full, idx(8192), s, predicate=issue)
            s1 = arith.addi(s, idx(1))
            wrap = arith.cmpi(arith.CmpIPredicate.eq, s1, idx(2))
            flipped = arith.xori(phase, wrap) if flip else phase
            scf.YieldOp([arith.select(wrap, idx(0), s1), flipped, *new])
        for j, a in enumerate(loop.results[2:]):
            vector.store(a, args[2], [tid, idx(8 * j)])

    return build(["!llvm.ptr", f"memref<{64 * CHUNKS}x64xbf16>", f"memref<{THREADS}x32xf32>"], body)


def run_pipeline(text: str, seed: int) -> tuple[np.ndarray, np.ndarray, Stats]:
    data = np.random.default_rng(seed).standard_normal((64 * CHUNKS, 64)).astype(NUMPY["bf16"])
    out = np.full((THREADS, 32), np.nan, np.float32)
    tmap = tensor_map("A", "bf16", data.shape, (64, 64), 128)
    stats = run(text, 1, 1024 + 2 * 8192, [tmap, data, out], ["A_map", "A", "out"], [2])
    return data, out, stats


def test_double_buffered_pipeline_passes(seed: int) -> None:
    data, out, stats = run_pipeline(pipeline_kernel(), seed)
    total = np.zeros(4096, np.float32)
    for k in range(CHUNKS):  # stages 0 and 1 are both 1024-byte aligned: the same swizzled image
        total += image(data, (0, 64 * k), (64, 64), 128, 1024).astype(np.float32)
    expected = total.reshape(4, THREADS, 8).transpose(1, 0, 2).reshape(THREADS, 32)
    np.testing.assert_array_equal(out, expected)
    assert stats.warp_instructions["cp.async.bulk.tensor"] == CHUNKS
    assert stats.unretired_copies == 0


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        # never flipping: the third wait (parity 0 again) is satisfied by the first phase
        ({"flip": False}, "read before the mbarrier wait that delivers it"),
        # waiting on parity 1 of a fresh barrier passes at once
        ({"first_parity": 1}, "read before the mbarrier wait that delivers it"),
        # the stage is reloaded while the other warps may still read it
        ({"release_barrier": False}, r"tma.async.load\): shared-memory race .* which warp 1 read at .*vector.load"),
    ],
    ids=["parity-never-flips", "parity-1-first", "no-release-barrier"],
)
def test_broken_pipelines_are_caught(broken: dict[str, Any], message: str) -> None:
    with pytest.raises(EmulationError, match=message):
        run_pipeline(pipeline_kernel(**broken), 0)


# --- 4. kernels broken on purpose, each next to its passing twin ----------------------------------------------

BROKEN = [
    # (what breaks it, the message)
    ({"wait": "none"}, r"byte 1024 \(%view_\d+\) is read before the mbarrier wait that delivers it: the TMA load at"),
    ({"parity": 1}, "read before the mbarrier wait that delivers it"),
    ({"arrive": "plain"}, "read before the mbarrier wait that delivers it"),
    ({"extra_tx": 16}, r"deadlock: .* mbarrier %1\[0\] for the phase of parity 0.* 0 of 1 arrivals and 16 transaction"),
    ({"init_count": 2}, r"deadlock: .* mbarrier %1\[0\] .* 1 of 2 arrivals and 0 transaction bytes"),
    ({"arrive": "none"}, r"deadlock: .*%1\[0\] .* 1 of 1 arrivals and -8192 transaction bytes"),
    ({"barrier": False}, r"uses mbarrier %1\[0\] in the barrier interval of its mbarrier.init by thread 0"),
    ({"fence": False}, r"uses mbarrier %1\[0\] though no nvvm.fence.mbarrier.init by thread 0"),
    ({"init_by_all": True}, r"mbarrier %1\[0\] is initialized by 128 threads"),
    ({"map_box": (64, 32, 1, 1)}, r"descriptor type says box \[64, 64, 1, 1\] .* has box \[64, 32, 1, 1\]"),
    ({"dst_byte": 512}, "must be 1024-byte aligned"),
    ({"wait": "warp0"}, "thread 32 did not wait on mbarrier %1.0. for the phase the TMA load at"),
    ({"twice": True}, r"a TMA load into shared byte 1024 of CTA \(0, 0, 0\), which the TMA load at .* still in flight"),
]


@pytest.mark.parametrize(
    ("broken", "message"),
    BROKEN,
    ids=[
        "no-wait",
        "wrong-parity",
        "no-expect-tx",
        "expect-too-many-bytes",
        "missing-arrival",
        "no-arrival",
        "init-no-barrier",
        "init-no-fence",
        "init-by-every-thread",
        "box-mismatch",
        "misaligned-destination",
        "other-warps-do-not-wait",
        "two-loads-into-one-stage",
    ],
)
def test_broken_single_loads_are_caught(broken: dict[str, Any], message: str) -> None:
    with pytest.raises(EmulationError, match=message):
        replace(OneLoad(), **broken).run([(0, 0, 0, 0)])


def test_the_twin_of_every_broken_single_load_passes() -> None:
    """The kernel the broken ones break (and a wait by warp 0 only, published to the others
    by a gpu.barrier) runs and gives the box."""
    for plan in (OneLoad(), OneLoad(wait="warp0+barrier"), OneLoad(dst_byte=2048)):
        data, out, _ = plan.run([(0, 0, 0, 0)])
        np.testing.assert_array_equal(
            out[0].view(np.uint16), image(data, (0, 0, 0, 0), plan.box, 128, 0).view(np.uint16)
        )


def test_casts_other_than_a_tensor_map_are_refused() -> None:
    def body(args: list[ir.Value]) -> None:
        builtin.UnrealizedConversionCastOp([ir.IntegerType.get_signless(64)], [args[0]])

    text = build(["!llvm.ptr"], body)
    with napkin_context(), ir.Location.unknown(), pytest.raises(EmulationError, match=r"cast: !llvm.ptr to i64"):
        load_kernel(text)


@pytest.mark.parametrize("threads", [THREADS, 64])
def test_setmaxregister_needs_whole_warpgroups(threads: int) -> None:
    def body(args: list[ir.Value]) -> None:
        tid = gpu.thread_id(gpu.Dimension.x)
        with ir.InsertionPoint(scf.IfOp(arith.cmpi(arith.CmpIPredicate.ult, tid, idx(threads))).then_block):
            nvvm.setmaxregister(232, nvvm.SetMaxRegisterAction.increase)
            scf.YieldOp([])
        memref.store(arith.ConstantOp(element("f32"), 1.0).result, args[0], [tid])

    text = build([f"memref<{THREADS}xf32>"], body)
    out = np.zeros(THREADS, np.float32)
    if threads == THREADS:
        stats = run(text, 1, 0, [out], ["out"], [0])
        assert stats.warp_instructions["setmaxnreg.inc"] == 4
    else:
        with pytest.raises(EmulationError, match="only some threads of a warpgroup"):
            run(text, 1, 0, [out], ["out"], [0])


# --- 5. wgmma on TMA tiles ------------------------------------------------------------------------------------


def wgmma_kernel(reuse: str = "", a_by_threads: bool = False, proxy_fence: bool = False) -> str:
    """C = A B^T (64x64x64, bf16, f32 accumulate) with A and B (n x k, K-major) brought by TMA
    (128-byte swizzle) and read by four m64n64k16 wgmma straight after the mbarrier wait.
    `reuse`: after the wgmma, a second load into A's stage, after the wgmma's wait_group
    ("released") or while it is still in flight ("in-flight"). `a_by_threads`: A's stage is
    written by the threads' stores instead (zeros), with or without `proxy_fence`."""

    def descriptor(address: int) -> ir.Value:
        bits = (1 << 62) | ((1024 >> 4) << 32) | (1 << 16) | (address >> 4)
        return arith.ConstantOp(ir.IntegerType.get_signless(64), bits).result

    def body(args: list[ir.Value]) -> None:
        bf16, f32 = element("bf16"), element("f32")
        acc_t = llvm.StructType.get_literal([f32] * 32)
        desc = builtin.UnrealizedConversionCastOp([descriptor_type((64, 64), "bf16", 128)], [args[0]]).results[0]
        bars = barriers(1)
        tid, first = thread0()
        init_barriers(bars, 1, 1, first, fence=True, barrier=True)
        raw = shared_bytes()
        tile_a, tile_b = view(raw, 1024, (64, 64), "bf16"), view(raw, 1024 + 8192, (64, 64), "bf16")
        nvgpu.TmaAsyncLoadOp(tile_b, bars, desc, [idx(0), idx(64)], idx(0), predicate=first)
        if a_by_threads:
            flat = view(raw, 1024, (4096,), "bf16")
            zero = arith.ConstantOp(
                ir.VectorType.get([8], bf16),
                ir.DenseElementsAttr.get_splat(ir.VectorType.get([8], bf16), ir.FloatAttr.get(bf16, 0.0)),
            ).result
            for j in range(4):
                vector.store(zero, flat, [arith.muli(arith.addi(tid, idx(THREADS * j)), idx(8))])
            if proxy_fence:
                nvvm.FenceProxyOp(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
            gpu.BarrierOp()
        else:
            nvgpu.TmaAsyncLoadOp(tile_a, bars, desc, [idx(0), idx(0)], idx(0), predicate=first)
        nbytes = 8192 if a_by_threads else 16384
        nvgpu.MBarrierArriveExpectTxOp(bars, idx(nbytes), idx(0), predicate=first)
        wait(bars, 0, 0)
        nvvm.WgmmaFenceAlignedOp()
        acc = None
        for kk in range(4):
            shape = ir.Attribute.parse("#nvvm.shape<m = 64, n = 64, k = 16>")
            acc = nvvm.WgmmaMmaAsyncOp(
                acc_t,
                llvm.UndefOp(acc_t).result if acc is None else acc,
                descriptor(1024 + 32 * kk),
                descriptor(1024 + 8192 + 32 * kk),
                shape,
                nvvm.WGMMATypes.bf16,
                nvvm.WGMMATypes.bf16,
                nvvm.WGMMATypes.f32,
                nvvm.WGMMAScaleOut.zero if acc is None else nvvm.WGMMAScaleOut.one,
                nvvm.WGMMAScaleIn.one,
                nvvm.WGMMAScaleIn.one,
                nvvm.MMALayout.row,
                nvvm.MMALayout.col,
            ).result
        nvvm.WgmmaGroupSyncAlignedOp()
        if reuse != "in-flight":
            nvvm.WgmmaWaitGroupSyncOp(0)
        if reuse:
            gpu.BarrierOp()
            nvgpu.TmaAsyncLoadOp(tile_a, bars, desc, [idx(0), idx(0)], idx(0), predicate=first)
            nvgpu.MBarrierArriveExpectTxOp(bars, idx(8192), idx(0), predicate=first)
            wait(bars, 0, 1)
            if reuse == "in-flight":
                nvvm.WgmmaWaitGroupSyncOp(0)
        for v in range(32):
            memref.store(llvm.ExtractValueOp(f32, acc, [v]).result, args[2], [tid, idx(v)])

    return build(["!llvm.ptr", "memref<128x64xbf16>", f"memref<{THREADS}x32xf32>"], body)


def run_wgmma(text: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows 0-63 of the array are A, rows 64-127 are B; returns (A B^T in float64, the
    threads' registers assembled into the 64x64 C by the PTX ISA's accumulator layout)."""
    data = np.random.default_rng(seed).standard_normal((128, 64)).astype(NUMPY["bf16"])
    regs = np.full((THREADS, 32), np.nan, np.float32)
    tmap = tensor_map("AB", "bf16", data.shape, (64, 64), 128)
    run(text, 1, 1024 + 2 * 8192, [tmap, data, regs], ["AB_map", "AB", "regs"], [2])
    c = np.full((64, 64), np.nan, np.float32)
    for t in range(THREADS):
        w, lane = divmod(t, 32)
        for v in range(32):
            j, i, e = v // 4, (v // 2) % 2, v % 2
            c[16 * w + lane // 4 + 8 * i, 8 * j + 2 * (lane % 4) + e] = regs[t, v]
    a, b = data[:64].astype(np.float64), data[64:].astype(np.float64)
    return a @ b.T, c


def test_wgmma_reads_tma_tiles_right_after_the_wait(seed: int) -> None:
    """TMA-written bytes are async-proxy writes the mbarrier wait makes visible: no proxy fence
    and no CTA barrier between the wait and the wgmma; and a stage reloaded once the wgmma is
    retired and a barrier passed is fine."""
    for reuse in ("", "released"):
        expected, c = run_wgmma(wgmma_kernel(reuse), seed)
        np.testing.assert_allclose(c, expected, rtol=2e-3, atol=2e-3)


def test_tma_into_a_stage_an_in_flight_wgmma_reads_is_caught() -> None:
    with pytest.raises(EmulationError, match=r"a TMA load overwrites shared memory a wgmma in flight reads \(stage"):
        run_wgmma(wgmma_kernel("in-flight"), 0)


def test_generic_stores_read_by_wgmma_still_need_the_proxy_fence() -> None:
    with pytest.raises(EmulationError, match=r"no fence\.proxy\.async"):
        run_wgmma(wgmma_kernel(a_by_threads=True), 0)
    _, c = run_wgmma(wgmma_kernel(a_by_threads=True, proxy_fence=True), 0)
    assert np.all(c == 0)
