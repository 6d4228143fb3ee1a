"""The emulator runs warp-specialized kernels: roles that wait on each other through mbarriers.

A CTA of 384 threads splits by warpgroup in an `scf.if`: warpgroup 0 is the producer (its
thread 0 waits for a stage's "empty" barrier, announces the bytes on the stage's "full"
barrier and brings a 64x64 bf16 tile by TMA), warpgroups 1 and 2 are the consumers (wait
on "full", read the tile with vector loads or wgmma, a named barrier per warpgroup, then the
warpgroup's thread 0 arrives on "empty"). Run in lockstep the first side would block
forever; the emulator runs the two sides as cooperative tasks. Kernels are built with the
MLIR Python bindings and compared with numpy on fresh random data:

* the pipeline passes, with more chunks than stages, fewer, and a different count per CTA,
  with either consumer (vector loads, wgmma), with the consumers split again per warpgroup
  (nested tasks), and with no race reported although no CTA barrier orders a stage's
  refill after the consumers' reads (the empty barrier's arrive and wait do);
* pipelines broken on purpose, each caught by the check meant for it (a deadlock naming the
  barrier, the threads and the op; a load into a stage still in use; a wrong parity; a named
  barrier given the wrong thread count; too many arrivals; too many registers claimed; a
  release before the wgmma reading the stage retired; a missing named barrier) with no
  thread left running;
* named barriers across tasks (`bar.arrive` by one role, `bar.sync` by the other) order
  shared-memory accesses; a named barrier of the whole block is a CTA barrier.
"""

from __future__ import annotations

import threading
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

THREADS = 384  # warpgroup 0: the producer; 1 and 2: the consumers
CONSUMERS = 256
STAGES = 2
ROWS = COLS = 64  # one tile: 64 x 64 bf16, 128-byte swizzled rows
TILE_BYTES = ROWS * COLS * 2
STAGE0 = 1024  # stage s at STAGE0 + s * TILE_BYTES (1024-byte aligned: one swizzle pattern)
MOST = 5  # chunks a CTA may take: CTA c reads rows 64 (MOST c + t) of the array
BF16 = np.dtype(ml_dtypes.bfloat16)


# --- building kernels ----------------------------------------------------------------------------------


def idx(value: int) -> ir.Value:
    return arith.ConstantOp(ir.IndexType.get(), value).result


def i32(value: int) -> ir.Value:
    t = ir.IntegerType.get_signless(32)
    return arith.ConstantOp(t, ir.IntegerAttr.get(t, value)).result


def is_odd(value: ir.Value) -> ir.Value:
    return arith.cmpi(arith.CmpIPredicate.ne, arith.remui(value, idx(2)), idx(0))


def mbarriers(n: int) -> ir.Value:
    t = ir.Type.parse(f"!nvgpu.mbarrier.group<memorySpace = #gpu.address_space<workgroup>, num_barriers = {n}>")
    return nvgpu.MBarrierCreateOp(t).result


def smem_view(raw: ir.Value, byte: ir.Value, shape: Sequence[int]) -> ir.Value:
    t = ir.MemRefType.get(
        list(shape), ir.BF16Type.get(), memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>")
    )
    return memref.ViewOp(t, raw, byte, []).result


def wait(bars: ir.Value, b: ir.Value, parity: ir.Value) -> None:
    nvgpu.MBarrierTryWaitParityOp(bars, parity, idx(10_000_000), b)


def named_barrier(ident: ir.Value, threads: int, arrive: bool = False) -> None:
    if arrive:
        nvvm.BarrierArriveOp(i32(threads), barrierId=ident)
    else:
        nvvm.BarrierOp(None, barrierId=ident, numberOfThreads=i32(threads))


def if_then(cond: ir.Value, body: Callable[[], None]) -> None:
    with ir.InsertionPoint(scf.IfOp(cond).then_block):
        body()
        scf.YieldOp([])


def if_else(cond: ir.Value, then: Callable[[], None], otherwise: Callable[[], None]) -> None:
    op = scf.IfOp(cond, [], has_else=True)
    with ir.InsertionPoint(op.then_block):
        then()
        scf.YieldOp([])
    with ir.InsertionPoint(op.else_block):
        otherwise()
        scf.YieldOp([])


def build(arg_types: list[str], body: Callable[[list[ir.Value]], None]) -> str:
    with napkin_context(), ir.Location.unknown():
        module, block = kernel_module("k", [ir.Type.parse(t) for t in arg_types], THREADS)
        with ir.InsertionPoint(block):
            body(list(block.arguments))
            gpu.ReturnOp([])
        assert module.operation.verify()
        return str(module)


def run(text: str, ctas: int, smem: int, arrays: list[Any], names: list[str], outputs: Sequence[int]) -> Stats:
    with napkin_context(), ir.Location.unknown():
        kernel = load_kernel(text, "ws.mlir")
    return run_kernel(kernel, (ctas, 1, 1), (THREADS, 1, 1), smem, arrays, outputs, names)


def swizzled(tile: np.ndarray) -> np.ndarray:
    """The shared-memory image (flat bf16) of a 64 x 64 bf16 tile stored at a 1024-byte aligned
    address with the 128-byte swizzle: the 16-byte chunk c of 128-byte row r lands at chunk
    c ^ (r % 8) of that row."""
    chunks = tile.reshape(ROWS, 8, 8)  # row, 16-byte chunk, element
    image = np.empty_like(chunks)
    for r in range(ROWS):
        image[r, np.arange(8) ^ (r % 8)] = chunks[r]
    return image.reshape(-1)


def wgmma_descriptor(address: ir.Value) -> ir.Value:
    """The shared-memory descriptor of a K-major 64-row operand with 128-byte swizzle at the
    byte `address` (an index): layout 1 (bits 62-63), stride byte offset 1024 (8 rows of 128
    bytes), leading byte offset 16, start address / 16."""
    i64 = ir.IntegerType.get_signless(64)
    fixed = arith.ConstantOp(i64, (1 << 62) | ((1024 >> 4) << 32) | (1 << 16)).result
    start = arith.index_cast(i64, arith.divui(address, idx(16)))
    return arith.ori(fixed, start)


# --- the pipeline -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """The warp-specialized kernel; each field other than `consumer` and `nested` breaks it
    on purpose when changed from its default."""

    consumer: str = "loads"  # "loads": vector loads of the whole tile per warpgroup; "wgmma": C += A Aᵀ
    nested: bool = False  # the consumers split again, one task per warpgroup
    producer_waits: bool = True  # the producer waits for the stage's empty barrier
    release: bool = True  # the consumer warpgroups' threads 0 arrive on the empty barrier
    empty_count: int = 2  # arrivals the empty barriers expect
    parity_flip: int = 0  # XORed into the consumers' parity
    named_threads: int = 128  # the consumers' named barrier's thread count (0: none)
    producer_registers: tuple[int, str] = (24, "decrease")
    lookahead: bool = False  # (wgmma) wait for the next chunk's full barrier before the wait_group
    release_early: bool = False  # (wgmma) arrive on empty before the wait_group retired the stage's wgmma

    def kernel(self, ctas: int) -> str:
        def body(args: list[ir.Value]) -> None:
            desc_t = ir.Type.parse(
                "!nvgpu.tensormap.descriptor<tensor = memref<64x64xbf16, 3>, swizzle = swizzle_128b, "
                "l2promo = none, oob = zero, interleave = none>"
            )
            desc = builtin.UnrealizedConversionCastOp([desc_t], [args[0]]).results[0]
            full, empty = mbarriers(STAGES), mbarriers(STAGES)
            tid = gpu.thread_id(gpu.Dimension.x)
            first = arith.cmpi(arith.CmpIPredicate.eq, tid, idx(0))
            for s in range(STAGES):
                nvgpu.MBarrierInitOp(full, idx(1), idx(s), predicate=first)
                nvgpu.MBarrierInitOp(empty, idx(self.empty_count), idx(s), predicate=first)
            nvvm.FenceMbarrierInitOp()
            gpu.BarrierOp()
            raw = gpu.DynamicSharedMemoryOp(
                ir.MemRefType.get(
                    [ir.ShapedType.get_dynamic_size()],
                    ir.IntegerType.get_signless(8),
                    memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>"),
                )
            ).result
            bid = gpu.block_id(gpu.Dimension.x)
            chunks = arith.index_cast(ir.IndexType.get(), memref.load(args[2], [bid]))
            warpgroup = arith.divui(tid, idx(128))

            def stage_of(t: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
                """Stage t % S, its byte address, and the parity (t / S) % 2 of its barriers."""
                s = arith.remui(t, idx(STAGES))
                return s, arith.addi(idx(STAGE0), arith.muli(s, idx(TILE_BYTES))), is_odd(arith.divui(t, idx(STAGES)))

            def produce() -> None:
                count, action = self.producer_registers
                nvvm.SetMaxRegisterOp(count, getattr(nvvm.SetMaxRegisterAction, action))

                def issue() -> None:
                    loop = scf.ForOp(idx(0), chunks, idx(1))
                    with ir.InsertionPoint(loop.body):
                        t = loop.induction_variable
                        s, byte, parity = stage_of(t)
                        if self.producer_waits:  # a fresh barrier's phase of parity 1 counts as complete
                            wait(empty, s, arith.xori(parity, arith.ConstantOp(parity.type, 1).result))
                        row = arith.muli(arith.addi(arith.muli(bid, idx(MOST)), t), idx(ROWS))
                        nvgpu.TmaAsyncLoadOp(smem_view(raw, byte, (ROWS, COLS)), full, desc, [idx(0), row], s)
                        nvgpu.MBarrierArriveExpectTxOp(full, idx(TILE_BYTES), s)
                        scf.YieldOp([])

                if_then(first, issue)

            def consume(cw: ir.Value) -> None:
                nvvm.SetMaxRegisterOp(240, nvvm.SetMaxRegisterAction.increase)
                local = arith.remui(tid, idx(128))  # the thread in its warpgroup
                leader = arith.cmpi(arith.CmpIPredicate.eq, local, idx(0))
                f32 = ir.F32Type.get()
                if self.consumer == "wgmma":
                    acc_t = llvm.StructType.get_literal([f32] * 32)
                    init = [llvm.ZeroOp(acc_t).result]
                else:
                    vec = ir.VectorType.get([8], f32)
                    zeros = arith.ConstantOp(vec, ir.DenseElementsAttr.get_splat(vec, ir.FloatAttr.get(f32, 0.0)))
                    init = [zeros.result] * 4
                loop = scf.ForOp(idx(0), chunks, idx(1), init)
                with ir.InsertionPoint(loop.body):
                    t = loop.induction_variable
                    s, byte, parity = stage_of(t)
                    if self.parity_flip:
                        parity = arith.xori(parity, arith.ConstantOp(parity.type, 1).result)
                    wait(full, s, parity)
                    if self.consumer == "wgmma":
                        new = [self.wgmma(loop.inner_iter_args[0], byte)]
                    else:
                        flat = smem_view(raw, byte, (ROWS * COLS,))
                        new = []
                        for j, acc in enumerate(loop.inner_iter_args):
                            e = arith.muli(arith.addi(local, idx(128 * j)), idx(8))
                            x = vector.load(ir.VectorType.get([8], ir.BF16Type.get()), flat, [e])
                            new.append(arith.addf(acc, arith.extf(ir.VectorType.get([8], f32), x)))
                    if self.named_threads:  # the warpgroup is done with the stage (id 1 + its index)
                        named_barrier(
                            arith.index_cast(ir.IntegerType.get_signless(32), arith.addi(cw, idx(1))),
                            self.named_threads,
                        )

                    def arrive() -> None:
                        nvgpu.MBarrierArriveOp(empty, s)

                    if self.consumer == "wgmma":
                        if self.release and self.release_early:
                            if_then(leader, arrive)
                        if self.lookahead:  # the next chunk's tile, before this chunk's wgmma is retired

                            def peek() -> None:
                                s1, _, parity1 = stage_of(arith.addi(t, idx(1)))
                                wait(full, s1, parity1)

                            if_then(arith.cmpi(arith.CmpIPredicate.ult, arith.addi(t, idx(1)), chunks), peek)
                        nvvm.WgmmaWaitGroupSyncOp(0)
                    if self.release and not self.release_early:
                        if_then(leader, arrive)
                    scf.YieldOp(new)
                row = arith.addi(arith.muli(bid, idx(CONSUMERS)), arith.subi(tid, idx(128)))
                if self.consumer == "wgmma":
                    for v in range(32):
                        memref.store(llvm.ExtractValueOp(f32, loop.results[0], [v]).result, args[3], [row, idx(v)])
                else:
                    for j, acc in enumerate(loop.results):
                        vector.store(acc, args[3], [row, idx(8 * j)])

            def consumers() -> None:
                cw = arith.subi(warpgroup, idx(1))
                if self.nested:
                    first_consumer = arith.cmpi(arith.CmpIPredicate.eq, cw, idx(0))
                    if_else(first_consumer, lambda: consume(cw), lambda: consume(cw))
                else:
                    consume(cw)

            if_else(arith.cmpi(arith.CmpIPredicate.eq, warpgroup, idx(0)), produce, consumers)

        return build(
            [
                "!llvm.ptr",
                f"memref<{ROWS * MOST * ctas}x{COLS}xbf16>",
                f"memref<{ctas}xi32>",
                f"memref<{ctas * CONSUMERS}x32xf32>",
            ],
            body,
        )

    @staticmethod
    def wgmma(acc: ir.Value, byte: ir.Value) -> ir.Value:
        """C += A Aᵀ for the 64 x 64 tile A at `byte` (A and B both the tile, K-major), in four
        k-steps of 16, committed and left in flight."""
        f32 = ir.F32Type.get()
        acc_t = llvm.StructType.get_literal([f32] * 32)
        nvvm.WgmmaFenceAlignedOp()
        for kk in range(4):
            operand = wgmma_descriptor(arith.addi(byte, idx(32 * kk)))
            acc = nvvm.WgmmaMmaAsyncOp(
                acc_t,
                acc,
                operand,
                operand,
                ir.Attribute.parse("#nvvm.shape<m = 64, n = 64, k = 16>"),
                nvvm.WGMMATypes.bf16,
                nvvm.WGMMATypes.bf16,
                nvvm.WGMMATypes.f32,
                nvvm.WGMMAScaleOut.one,
                nvvm.WGMMAScaleIn.one,
                nvvm.WGMMAScaleIn.one,
                nvvm.MMALayout.row,
                nvvm.MMALayout.col,
            ).result
        nvvm.WgmmaGroupSyncAlignedOp()
        return acc

    def run(self, counts: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray, Stats]:
        """One CTA per entry of `counts` (its chunks): the array and the consumers' outputs."""
        ctas = len(counts)
        data = np.random.default_rng(seed).standard_normal((ROWS * MOST * ctas, COLS)).astype(BF16)
        out = np.full((ctas * CONSUMERS, 32), np.nan, np.float32)
        source = runner.Arg("A", "input", "bf16", data.shape, ())
        spec = {"of": "A", "box": [COLS, ROWS], "swizzle": 128}
        tmap = runner.tensor_map(runner.Arg("A_map", "tensormap", "bf16", (), (), spec), [source])
        arrays = [tmap, data, np.asarray(counts, np.int32), out]
        smem = STAGE0 + STAGES * TILE_BYTES
        stats = run(self.kernel(ctas), ctas, smem, arrays, ["A_map", "A", "counts", "out"], [3])
        return data, out, stats


def expected_loads(data: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Consumer thread (warpgroup w, thread l) holds, for j < 4, the sum over the CTA's chunks
    of elements 8 (l + 128 j) .. + 8 of each chunk's swizzled shared-memory image."""
    out = np.zeros((len(counts) * CONSUMERS, 32), np.float32)
    for c, n in enumerate(counts):
        total = np.zeros(ROWS * COLS, np.float32)
        for t in range(n):
            row = ROWS * (MOST * c + t)
            total += swizzled(data[row : row + ROWS]).astype(np.float32)
        per_thread = total.reshape(4, 128, 8).transpose(1, 0, 2).reshape(128, 32)
        out[c * CONSUMERS : (c + 1) * CONSUMERS] = np.tile(per_thread, (2, 1))
    return out


def expected_wgmma(data: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Per CTA the 64 x 64 sum over its chunks of A Aᵀ (float64), for both consumers."""
    out = []
    for c, n in enumerate(counts):
        rows = [data[ROWS * (MOST * c + t) : ROWS * (MOST * c + t + 1)].astype(np.float64) for t in range(n)]
        out.append(sum((a @ a.T for a in rows), np.zeros((ROWS, ROWS))))
    return np.stack(out)


def accumulators(registers: np.ndarray) -> np.ndarray:
    """Each consumer warpgroup's 128 x 32 registers as its 64 x 64 C (the PTX ISA's
    accumulator layout): (CTAs, 2, 64, 64)."""
    ctas = registers.shape[0] // CONSUMERS
    c = np.full((ctas, 2, ROWS, ROWS), np.nan, np.float32)
    for t in range(128):
        w, lane = divmod(t, 32)
        for v in range(32):
            j, i, e = v // 4, (v // 2) % 2, v % 2
            row, col = 16 * w + lane // 4 + 8 * i, 8 * j + 2 * (lane % 4) + e
            c[:, :, row, col] = registers.reshape(ctas, 2, 128, 32)[:, :, t, v]
    return c


def group_name(text: str, nth: int) -> str:
    """The SSA name the IR gives the `nth` mbarrier group (the emulator's name for it)."""
    lines = [line for line in text.splitlines() if "nvgpu.mbarrier.create" in line]
    return lines[nth].split("=")[0].strip()


# --- the pipeline passes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts",
    [(5,), (1,), (5, 2, 0, 3)],
    ids=["more-chunks-than-stages", "fewer-chunks-than-stages", "per-cta-chunks"],
)
def test_warp_specialized_pipeline_passes(counts: tuple[int, ...], seed: int) -> None:
    """The producer refills a stage once both consumer warpgroups released it (no CTA
    barrier in the loop): the sums are numpy's and no race is reported."""
    before = threading.active_count()
    data, out, stats = Pipeline().run(counts, seed)
    np.testing.assert_array_equal(out, expected_loads(data, counts))
    assert stats.warp_instructions["cp.async.bulk.tensor"] == sum(counts)
    assert stats.warp_instructions["mbarrier.arrive"] == 2 * sum(counts)
    assert stats.warp_instructions["bar.sync"] == 12 * len(counts) + 8 * sum(counts)  # setup, then per chunk
    assert stats.warp_instructions["setmaxnreg.dec"] == 4 * len(counts)
    assert stats.unretired_copies == 0
    assert threading.active_count() == before


@pytest.mark.parametrize("counts", [(5, 3), (1,)], ids=["per-cta-chunks", "one-chunk"])
def test_warp_specialized_wgmma_pipeline_passes(counts: tuple[int, ...], seed: int) -> None:
    """The consumers read the stage with wgmma (each warpgroup its own async state) and release
    it once a wait_group retired the wgmma; with the next chunk's wait before that retire (the
    producer then refills the other stage while a wgmma is in flight), too."""
    for plan in (Pipeline(consumer="wgmma"), Pipeline(consumer="wgmma", lookahead=True)):
        data, out, _ = plan.run(counts, seed)
        expected = expected_wgmma(data, counts)
        got = accumulators(out)
        for consumer in range(2):
            np.testing.assert_allclose(got[:, consumer], expected, rtol=2e-3, atol=2e-2)


def test_nested_tasks_pass(seed: int) -> None:
    """The consumer side splits again (one task per warpgroup, each waiting on the barriers):
    nested tasks run, and block their enclosing task while all of theirs are blocked."""
    counts = (4, 1)
    data, out, _ = Pipeline(nested=True).run(counts, seed)
    np.testing.assert_array_equal(out, expected_loads(data, counts))


def test_the_schedule_is_deterministic(seed: int) -> None:
    plan = Pipeline(consumer="wgmma", lookahead=True)
    first, second = plan.run((3,), seed), plan.run((3,), seed)
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2].warp_instructions == second[2].warp_instructions


# --- broken pipelines ----------------------------------------------------------------------------------------


def test_consumers_that_never_release_deadlock() -> None:
    """The producer waits for the empty barrier of stage 0 (parity 0) and the consumers for
    the third chunk: a deadlock naming both waits, their threads and ops, with no thread left."""
    plan = Pipeline(release=False)
    text = plan.kernel(1)
    empty, full = group_name(text, 1), group_name(text, 0)
    before = threading.active_count()
    with pytest.raises(EmulationError) as caught:
        plan.run((5,), 0)
    message = str(caught.value)
    assert "deadlock: every task of the warp-specialized scf.if is blocked" in message
    assert "then-branch (thread 0 of CTA (0, 0, 0)) waits at ws.mlir:" in message
    assert f"on mbarrier {empty}[0] for the phase of parity 0 in CTA (0, 0, 0): 2 of 2 arrivals" in message
    assert "else-branch (threads 128-383 of CTA (0, 0, 0)) waits at ws.mlir:" in message
    assert f"on mbarrier {full}[0] for the phase of parity 1" in message
    assert "(nvgpu.mbarrier.try_wait.parity)" in message
    assert threading.active_count() == before


def test_nested_deadlock_names_every_task() -> None:
    with pytest.raises(
        EmulationError, match=r"else-branch .* is a split scf.if at .* whose tasks are all blocked: the then"
    ):
        Pipeline(release=False, nested=True).run((3,), 0)


BROKEN = [
    # the producer reloads a stage without waiting for its release: the stage's previous load is in flight
    (
        {"producer_waits": False},
        r"a TMA load into shared byte 1024 of CTA \(0, 0, 0\), which the TMA load at .* still in flight",
    ),
    # parity 1 on a fresh full barrier passes at once: the tile is read before it lands
    ({"parity_flip": 1}, r"is read before the mbarrier wait that delivers it: the TMA load at .* has not landed"),
    # 128 threads of each consumer warpgroup arrive at a barrier of 256
    (
        {"named_threads": 256},
        r"deadlock: .* waits at .*\(nvvm.barrier\) on named barrier 1 of CTA \(0, 0, 0\) \(bar.sync 1, 256\): 128 of 256 threads",
    ),
    # both consumer warpgroups release a stage whose empty barrier expects one arrival
    ({"empty_count": 1}, r"more arrivals on mbarrier %\w+\[0\] of CTA \(0, 0, 0\) than its count 1"),
    # three warpgroups of 240 registers: 92,160 of the 65,536
    (
        {"producer_registers": (240, "increase")},
        r"claim 240 x 128 \+ 240 x 128 \+ 240 x 128 = 92160 registers .* 65536",
    ),
    # no named barrier: thread 0 releases the stage while the other warps of its warpgroup may read it
    (
        {"named_threads": 0},
        r"tma.async.load\): shared-memory race .* warp 0 accesses .* which several other warps read at .*vector.load",
    ),
    # the release comes before the wait_group that retires the wgmma reading the stage: the
    # refill is not ordered after the wgmma's reads (or the wgmma is still in flight)
    (
        {"consumer": "wgmma", "lookahead": True, "release_early": True},
        r"tma.async.load\): (shared-memory race .* which several other warps read at .*wgmma.mma_async|"
        r"a TMA load overwrites shared memory a wgmma in flight reads)",
    ),
]


@pytest.mark.parametrize(
    ("broken", "message"),
    BROKEN,
    ids=[
        "producer-skips-empty-wait",
        "consumer-wrong-parity",
        "named-barrier-wrong-count",
        "too-many-arrivals",
        "registers-over-the-file",
        "no-named-barrier",
        "release-before-retire",
    ],
)
def test_broken_pipelines_are_caught(broken: dict[str, Any], message: str) -> None:
    before = threading.active_count()
    with pytest.raises(EmulationError, match=message):
        replace(Pipeline(), **broken).run((5,), 0)
    assert threading.active_count() == before


# --- named barriers, on their own ------------------------------------------------------------------------------


def handoff_kernel(sync: str) -> str:
    """Warpgroup 0 stores its thread ids into shared memory and arrives at named barrier 5
    (bar.arrive 5, 256); warpgroup 1 syncs on it (bar.sync 5, 256) and copies them out, from
    a different thread each (a cross-warp read). `sync`: "named", "none" (no barrier) or
    "short" (warpgroup 1 syncs with 128)."""

    def body(args: list[ir.Value]) -> None:
        tid = gpu.thread_id(gpu.Dimension.x)
        raw = gpu.DynamicSharedMemoryOp(
            ir.MemRefType.get(
                [ir.ShapedType.get_dynamic_size()],
                ir.IntegerType.get_signless(8),
                memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>"),
            )
        ).result
        f32 = ir.F32Type.get()
        t = ir.MemRefType.get([128], f32, memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>"))
        buf = memref.ViewOp(t, raw, idx(0), []).result
        warpgroup = arith.divui(tid, idx(128))
        local = arith.remui(tid, idx(128))

        def producer() -> None:
            value = arith.uitofp(f32, arith.index_cast(ir.IntegerType.get_signless(32), local))
            memref.store(value, buf, [local])
            if sync != "none":
                named_barrier(i32(5), 256, arrive=True)

        def consumer() -> None:
            if sync != "none":
                named_barrier(i32(5), 128 if sync == "short" else 256)
            other = arith.remui(arith.addi(local, idx(37)), idx(128))
            memref.store(memref.load(buf, [other]), args[0], [local])

        def idle() -> None:
            pass

        first_two = arith.cmpi(arith.CmpIPredicate.ult, warpgroup, idx(2))

        def roles() -> None:
            if_else(arith.cmpi(arith.CmpIPredicate.eq, warpgroup, idx(0)), producer, consumer)

        if_else(first_two, roles, idle)

    return build(["memref<128xf32>"], body)


def test_a_named_barrier_across_tasks_orders_the_handoff() -> None:
    out = np.full(128, np.nan, np.float32)
    stats = run(handoff_kernel("named"), 1, 512, [out], ["out"], [0])
    np.testing.assert_array_equal(out, (np.arange(128) + 37) % 128)
    assert stats.warp_instructions["bar.arrive"] == 4 and stats.warp_instructions["bar.sync"] == 4


def test_a_handoff_without_its_named_barrier_is_a_race() -> None:
    out = np.full(128, np.nan, np.float32)
    with pytest.raises(EmulationError, match=r"shared-memory race .* warp 4 accesses .* which warp \d wrote"):
        run(handoff_kernel("none"), 1, 512, [out], ["out"], [0])


def test_a_named_barrier_given_a_different_count_is_refused() -> None:
    out = np.full(128, np.nan, np.float32)
    with pytest.raises(
        EmulationError, match=r"named barrier 5 of CTA \(0, 0, 0\): threads arrive with differing thread counts"
    ):
        run(handoff_kernel("short"), 1, 512, [out], ["out"], [0])


@pytest.mark.parametrize("form", ["id0-all-threads", "no-operands"])
def test_a_named_barrier_of_the_whole_block_is_a_cta_barrier(form: str) -> None:
    """Every thread stores, `bar.sync 0, 384` (or `nvvm.barrier`), then reads another warp's
    value: no race, outside any task."""

    def body(args: list[ir.Value]) -> None:
        tid = gpu.thread_id(gpu.Dimension.x)
        raw = gpu.DynamicSharedMemoryOp(
            ir.MemRefType.get(
                [ir.ShapedType.get_dynamic_size()],
                ir.IntegerType.get_signless(8),
                memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>"),
            )
        ).result
        f32 = ir.F32Type.get()
        t = ir.MemRefType.get([THREADS], f32, memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>"))
        buf = memref.ViewOp(t, raw, idx(0), []).result
        memref.store(arith.uitofp(f32, arith.index_cast(ir.IntegerType.get_signless(32), tid)), buf, [tid])
        if form == "no-operands":
            nvvm.BarrierOp(None)
        else:
            named_barrier(i32(0), THREADS)
        other = arith.remui(arith.addi(tid, idx(100)), idx(THREADS))
        memref.store(memref.load(buf, [other]), args[0], [gpu.block_id(gpu.Dimension.x), tid])

    out = np.full((2, THREADS), np.nan, np.float32)
    stats = run(build([f"memref<2x{THREADS}xf32>"], body), 2, THREADS * 4, [out], ["out"], [0])
    np.testing.assert_array_equal(out, np.tile((np.arange(THREADS) + 100) % THREADS, (2, 1)))
    assert stats.warp_instructions["bar.sync"] == 2 * THREADS // 32


def test_a_cta_barrier_inside_a_task_is_refused() -> None:
    def body(args: list[ir.Value]) -> None:
        tid = gpu.thread_id(gpu.Dimension.x)
        bars = mbarriers(1)
        first = arith.cmpi(arith.CmpIPredicate.eq, tid, idx(0))
        nvgpu.MBarrierInitOp(bars, idx(1), idx(0), predicate=first)
        nvvm.FenceMbarrierInitOp()
        gpu.BarrierOp()

        def producer() -> None:
            nvgpu.MBarrierArriveOp(bars, idx(0))

        def consumer() -> None:
            gpu.BarrierOp()
            wait(bars, idx(0), arith.ConstantOp(ir.IntegerType.get_signless(1), 0).result)

        if_else(first, producer, consumer)

    with pytest.raises(EmulationError, match=r"gpu\.barrier reached by some threads of a CTA but not by others"):
        run(build([f"memref<{THREADS}xf32>"], body), 1, 0, [np.zeros(THREADS, np.float32)], ["out"], [0])


@pytest.mark.parametrize(
    ("ids", "threads", "message"),
    [
        # every warp at barrier 1 of 128: 384 arrive
        (
            "one",
            128,
            r"more threads arrive at named barrier 1 of CTA \(0, 0, 0\) than its 128: 384 \(bar.sync 1, 128\)",
        ),
        # one barrier per warpgroup, each given 256: 128 arrive, and no other thread can
        (
            "per-warpgroup",
            256,
            r"deadlock: named barrier 1 of CTA \(0, 0, 0\) \(bar.sync 1, 256\): 128 of 256 threads arrived, and no "
            "other thread can arrive",
        ),
        # a count that is not whole warps
        ("one", 100, r"bar.sync 1, 100: .* a multiple of 32"),
    ],
    ids=["too-many-threads", "too-few-threads", "not-whole-warps"],
)
def test_named_barrier_counts_are_checked_in_lockstep(ids: str, threads: int, message: str) -> None:
    def body(args: list[ir.Value]) -> None:
        tid = gpu.thread_id(gpu.Dimension.x)
        ident = (
            i32(1)
            if ids == "one"
            else arith.index_cast(ir.IntegerType.get_signless(32), arith.addi(arith.divui(tid, idx(128)), idx(1)))
        )
        named_barrier(ident, threads)
        memref.store(arith.ConstantOp(ir.F32Type.get(), 1.0).result, args[0], [tid])

    out = np.zeros(THREADS, np.float32)
    with pytest.raises(EmulationError, match=message):
        run(build([f"memref<{THREADS}xf32>"], body), 1, 0, [out], ["out"], [0])
