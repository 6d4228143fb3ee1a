"""The Hopper wgmma matmul kernel, built with the MLIR Python bindings' builders.

`emit_matmul_kernel(plan, entry)` returns a `gpu.container_module` holding one `gpu.func`.
One warpgroup (128 threads) computes a 64 x tile_n block of C = A B; per chunk of 64 k:

1. every thread copies 16-byte vectors of the A tile (64 x 64) and the B tile (64 x tile_n)
   from global memory into shared memory, in the 128-byte swizzled layouts below;
2. `fence.proxy.async.shared::cta` (the generic-proxy stores become visible to wgmma's async
   proxy), then a CTA barrier;
3. `wgmma.fence`, four `wgmma.mma_async.m64n{tile_n}k16.f32` (one per 16 k) with both
   operands from shared-memory descriptors, `wgmma.commit_group`, `wgmma.wait_group 0`;
4. a CTA barrier, so no thread overwrites the tiles while a wgmma may still read them.

The f32 accumulator (tile_n / 2 registers per thread) is an `!llvm.struct` threaded through
the wgmma ops and the k loop, started by the first chunk's first wgmma with scale-d = 0 (so
no other instruction writes those registers after a `wgmma.fence`); at the end each thread stores its fragment: register
v = 4j + 2i + c holds row 16 w + l/4 + 8 i and column 8 j + 2 (l % 4) + c (w the warp, l the
lane: the PTX ISA's m64nNk16 accumulator layout), as pairs of adjacent columns.

Shared-memory layouts (128-byte swizzle: the 16-byte chunk c of a 128-byte row at absolute
address a lands at chunk c ^ ((a >> 7) % 8); the tiles start 1024-byte aligned, so that is
c ^ (row % 8)):

* A, K-major: row m (of 64) holds its 64 k (128 bytes) at byte 128 m. The descriptor's
  stride byte offset (8 rows) is 1024; the leading byte offset is unused for K-major swizzled
  operands (1, as CUTLASS writes it). The k-step s starts 32 s bytes further.
* B, MN-major (`B` stored k-rows of n, so the wgmma's B is "transposed", imm-trans-b = 1):
  n is cut into 64-wide halves of 8192 bytes; in each, k-row r holds its 64 n at byte 128 r.
  Leading byte offset (next 64 n) 8192, stride byte offset (next 8 k-rows) 1024; the k-step s
  starts 16 s rows = 2048 s bytes further.

* B, K-major (`B` stored n-rows of k, a diagram's B laid out (n, k); imm-trans-b = 0): like A,
  row n (of tile_n) holds its 64 k at byte 128 n; the k-step s starts 32 s bytes further.

The first two are the layouts upstream MLIR's `nvgpu.warpgroup.generate.descriptor` builds for TMA
boxes of [64 x 64] 16-bit elements with SWIZZLE_128B (mlir/test/Examples/NVGPU/Ch3), written
here by the threads instead of TMA; the descriptor is assembled with `arith` on i64
(start >> 4 in bits 0-13, LBO >> 4 in 16-29, SBO >> 4 in 32-45, layout 1 = 128B in 62-63).
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, gpu, llvm, memref, nvvm, scf, vector

from napkin_mlir.backends.gpu.hopper_plan import (
    ELEMENT_BYTES,
    SMEM_ALIGN,
    SWIZZLE_BYTES,
    THREADS,
    TILE_K,
    TILE_M,
    MatmulPlan,
)

WGMMA_K = 16  # k of one wgmma for 16-bit inputs
VECTOR = 8  # 16-bit elements per 16-byte copy
SWIZZLE_ROWS = 8  # the 128-byte swizzle pattern repeats every 8 rows
HALF_N = SWIZZLE_BYTES // ELEMENT_BYTES  # n per 128-byte row of MN-major B (64)
STRIDE_BYTE_OFFSET = SWIZZLE_ROWS * SWIZZLE_BYTES  # 1024: the next 8 rows (A) or k-rows (B)
B_LEADING_BYTE_OFFSET = TILE_K * SWIZZLE_BYTES  # 8192: the next 64 n of B
A_LEADING_BYTE_OFFSET = 16  # unused for K-major swizzled operands
LAYOUT_SWIZZLE_128B = 1


def descriptor_bits(leading: int, stride: int) -> int:
    """The constant part of a wgmma shared-memory descriptor (128-byte swizzle)."""
    return (LAYOUT_SWIZZLE_128B << 62) | ((stride >> 4) << 32) | ((leading >> 4) << 16)


def kernel_module(entry: str, arg_types: list[ir.Type], threads: int) -> tuple[ir.Module, ir.Block]:
    """A `gpu.container_module` with one kernel `entry` (`threads` per block, and
    `nvvm.minctasm = 1`, without which ptxas for sm_90a caps the registers) and its entry block."""
    module = ir.Module.create()
    module.operation.attributes["gpu.container_module"] = ir.UnitAttr.get()
    with ir.InsertionPoint(module.body):
        gmod = gpu.GPUModuleOp(f"{entry}_module")
        gmod.regions[0].blocks.append()
    with ir.InsertionPoint(gmod.regions[0].blocks[0]):
        ftype = ir.FunctionType.get(arg_types, [])
        func = gpu.GPUFuncOp(ir.TypeAttr.get(ftype), sym_name=entry, kernel=True, known_block_size=[threads, 1, 1])
        func.operation.attributes["nvvm.minctasm"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(32), 1)
        body = func.regions[0].blocks.append(*arg_types)
    return module, body


def element_type(dtype: str) -> ir.Type:
    return {"bf16": ir.BF16Type.get(), "f16": ir.F16Type.get(), "f32": ir.F32Type.get()}[dtype]


def emit_matmul_kernel(plan: MatmulPlan, entry: str) -> ir.Module:
    """The whole module (gpu.container_module with one kernel), in the active context."""
    el, out_el = element_type(plan.dtype), element_type(plan.out_dtype)
    a_t = ir.MemRefType.get([plan.m, plan.k], el)
    b_t = ir.MemRefType.get([plan.n, plan.k] if plan.b_k_major else [plan.k, plan.n], el)
    c_t = ir.MemRefType.get([plan.m, plan.n], out_el)
    module, body = kernel_module(entry, [a_t, b_t, c_t], THREADS)
    with ir.InsertionPoint(body):
        _MatmulKernel(plan, body).build(*body.arguments)
        gpu.ReturnOp([])
    return module


class WgmmaBuilder:
    """What the wgmma kernels share: index arithmetic with a cache of constants (made at the
    start of the kernel's `entry` block, so every use is dominated), dynamic shared memory
    aligned for the swizzle, swizzled element indices, descriptors, and one wgmma."""

    def __init__(self, entry: ir.Block, dtype: str) -> None:
        self.entry = entry
        self.dtype = dtype
        self.el = element_type(dtype)
        self.index = ir.IndexType.get()
        self.i64 = ir.IntegerType.get_signless(64)
        self.f32 = ir.F32Type.get()
        self._consts: dict[tuple[str, int], ir.Value] = {}

    def c(self, value: int, i64: bool = False) -> ir.Value:
        key = ("i64" if i64 else "index", value)
        if key not in self._consts:
            t = self.i64 if i64 else self.index
            with ir.InsertionPoint.at_block_begin(self.entry):
                self._consts[key] = arith.ConstantOp(t, ir.IntegerAttr.get(t, value)).result
        return self._consts[key]

    def add(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return arith.addi(a, self.c(b) if isinstance(b, int) else b)

    def mul(self, a: ir.Value, b: int) -> ir.Value:
        return arith.muli(a, self.c(b))

    def div(self, a: ir.Value, b: int) -> ir.Value:
        return arith.divui(a, self.c(b))

    def rem(self, a: ir.Value, b: int) -> ir.Value:
        return arith.remui(a, self.c(b))

    def accumulator_type(self, n: int) -> ir.Type:
        """The f32 accumulator of one m64nN wgmma: n / 2 registers per thread."""
        return llvm.StructType.get_literal([self.f32] * (n // 2))

    def shared_elements(self, elements: int) -> tuple[ir.Value, ir.Value]:
        """A view of `elements` 16-bit elements at the first SMEM_ALIGN boundary of dynamic
        shared memory (which must hold SMEM_ALIGN bytes more), and its shared address; the
        raw byte buffer and the view's byte offset in it stay as `smem_raw`, `smem_pad` (for
        views of other shapes, such as TMA boxes)."""
        wg = ir.Attribute.parse("#gpu.address_space<workgroup>")
        raw = gpu.DynamicSharedMemoryOp(
            ir.MemRefType.get([ir.ShapedType.get_dynamic_size()], ir.IntegerType.get_signless(8), memory_space=wg)
        ).result
        base = memref.ExtractAlignedPointerAsIndexOp(raw).result
        pad = self.rem(arith.subi(self.c(SMEM_ALIGN), self.rem(base, SMEM_ALIGN)), SMEM_ALIGN)
        view = memref.ViewOp(ir.MemRefType.get([elements], self.el, memory_space=wg), raw, pad, []).result
        self.smem_raw, self.smem_pad = raw, pad
        return view, arith.addi(base, pad)

    def swizzled(self, row: ir.Value, chunk: ir.Value, start: ir.Value | int) -> ir.Value:
        """The element index of 16-byte chunk `chunk` of 128-byte row `row` of a 1024-byte
        aligned region starting at element `start`: chunk ^ (row % 8)."""
        phys = arith.xori(chunk, self.rem(row, SWIZZLE_ROWS))
        elem = self.add(self.mul(row, SWIZZLE_BYTES // ELEMENT_BYTES), self.mul(phys, VECTOR))
        return self.add(elem, start)

    def descriptor(self, addr: ir.Value, leading: int) -> ir.Value:
        """The i64 wgmma descriptor of the swizzled operand starting at shared address `addr`."""
        start = arith.andi(arith.divui(arith.index_cast(self.i64, addr), self.c(16, True)), self.c(0x3FFF, True))
        return arith.ori(start, self.c(descriptor_bits(leading, STRIDE_BYTE_OFFSET), True))

    def wgmma(self, acc: ir.Value | None, desc_a: ir.Value, desc_b: ir.Value, n: int, b_mn_major: bool) -> ir.Value:
        """acc += A B for one m64nNk16 step (A K-major; B MN-major or K-major). Without `acc`
        the result is A B (scale-d = 0, the accumulator registers undefined before)."""
        wtype = {"bf16": nvvm.WGMMATypes.bf16, "f16": nvvm.WGMMATypes.f16}[self.dtype]
        shape = ir.Attribute.parse(f"#nvvm.shape<m = {TILE_M}, n = {n}, k = {WGMMA_K}>")
        acc_t = self.accumulator_type(n)
        return nvvm.WgmmaMmaAsyncOp(
            acc_t,
            llvm.UndefOp(acc_t).result if acc is None else acc,
            desc_a,
            desc_b,
            shape,
            wtype,
            wtype,
            nvvm.WGMMATypes.f32,
            nvvm.WGMMAScaleOut.zero if acc is None else nvvm.WGMMAScaleOut.one,
            nvvm.WGMMAScaleIn.one,
            nvvm.WGMMAScaleIn.one,
            nvvm.MMALayout.row,  # A K-major: imm-trans-a 0
            nvvm.MMALayout.row if b_mn_major else nvvm.MMALayout.col,  # imm-trans-b 1 (MN-major) or 0
        ).result


class _MatmulKernel(WgmmaBuilder):
    """One emission of the matmul kernel."""

    def __init__(self, plan: MatmulPlan, entry: ir.Block) -> None:
        super().__init__(entry, plan.dtype)
        self.plan = plan
        self.out_el = element_type(plan.out_dtype)
        self.acc_t = self.accumulator_type(plan.tile_n)

    def build(self, a: ir.Value, b: ir.Value, c: ir.Value) -> None:
        plan = self.plan
        self.tid = gpu.thread_id(gpu.Dimension.x)
        m0 = self.mul(gpu.block_id(gpu.Dimension.y), TILE_M)
        n0 = self.mul(gpu.block_id(gpu.Dimension.x), plan.tile_n)
        tiles, a_addr, b_addr = self.shared_tiles()

        def chunk(acc: ir.Value | None, k0: ir.Value) -> ir.Value:
            self.copy_tiles(a, b, tiles, m0, n0, k0)
            nvvm.FenceProxyOp(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
            gpu.BarrierOp()
            acc = self.mma_chunk(acc, a_addr, b_addr)
            gpu.BarrierOp()
            return acc

        # The first chunk starts the accumulator with scale-d = 0 (no instruction writes its
        # registers between the wgmma.fence and the wgmma, as a zeroed struct would).
        loop = scf.ForOp(self.c(TILE_K), self.c(plan.k), self.c(TILE_K), [chunk(None, self.c(0))])
        with ir.InsertionPoint(loop.body):
            scf.YieldOp([chunk(loop.inner_iter_args[0], loop.induction_variable)])
        self.store_accumulator(loop.results[0], c, m0, n0)

    def shared_tiles(self) -> tuple[ir.Value, ir.Value, ir.Value]:
        """A view of the A and B tiles (A first), and the shared addresses of both."""
        plan = self.plan
        tiles, a_addr = self.shared_elements((plan.a_tile_bytes + plan.b_tile_bytes) // ELEMENT_BYTES)
        return tiles, a_addr, self.add(a_addr, plan.a_tile_bytes)

    def copy_tiles(self, a: ir.Value, b: ir.Value, tiles: ir.Value, m0: ir.Value, n0: ir.Value, k0: ir.Value) -> None:
        """Global -> shared, 16 bytes per copy, consecutive threads along a row (coalesced);
        all loads first, then the swizzled shared stores."""
        plan = self.plan
        vec_t = ir.VectorType.get([VECTOR], self.el)
        row_chunks = SWIZZLE_BYTES // 16  # 16-byte chunks per 128-byte row (8)
        copies: list[tuple[ir.Value, ir.Value]] = []
        for it in range(TILE_M * TILE_K // VECTOR // THREADS):  # A: row r, chunk ch
            q = self.add(self.tid, it * THREADS)
            r, ch = self.div(q, row_chunks), self.rem(q, row_chunks)
            x = vector.load(vec_t, a, [self.add(m0, r), self.add(k0, self.mul(ch, VECTOR))], alignment=16)
            copies.append((x, self.swizzled(r, ch, 0)))
        b_start = plan.a_tile_bytes // ELEMENT_BYTES
        if plan.b_k_major:  # B (n, k): row n of B is a 128-byte row, like A's rows
            for it in range(plan.tile_n * TILE_K // VECTOR // THREADS):
                q = self.add(self.tid, it * THREADS)
                r, ch = self.div(q, row_chunks), self.rem(q, row_chunks)
                x = vector.load(vec_t, b, [self.add(n0, r), self.add(k0, self.mul(ch, VECTOR))], alignment=16)
                copies.append((x, self.swizzled(r, ch, b_start)))
        b_row_chunks = plan.tile_n // VECTOR
        for it in range(0 if plan.b_k_major else TILE_K * plan.tile_n // VECTOR // THREADS):  # B (k, n)
            q = self.add(self.tid, it * THREADS)
            r, cn = self.div(q, b_row_chunks), self.rem(q, b_row_chunks)
            x = vector.load(vec_t, b, [self.add(k0, r), self.add(n0, self.mul(cn, VECTOR))], alignment=16)
            half = self.div(cn, row_chunks)
            half_start = self.add(self.mul(half, TILE_K * HALF_N), b_start)
            copies.append((x, self.swizzled(r, self.rem(cn, row_chunks), half_start)))
        for x, at in copies:
            vector.store(x, tiles, [at], alignment=16)

    def mma_chunk(self, acc: ir.Value | None, a_addr: ir.Value, b_addr: ir.Value) -> ir.Value:
        """acc += A_tile B_tile (acc None: = A_tile B_tile): TILE_K / 16 wgmma in one group,
        waited for."""
        nvvm.WgmmaFenceAlignedOp()
        for s in range(TILE_K // WGMMA_K):
            desc_a = self.descriptor(self.add(a_addr, s * WGMMA_K * ELEMENT_BYTES), A_LEADING_BYTE_OFFSET)
            if self.plan.b_k_major:  # like A: the k-step starts 32 bytes further
                desc_b = self.descriptor(self.add(b_addr, s * WGMMA_K * ELEMENT_BYTES), A_LEADING_BYTE_OFFSET)
            else:  # the k-step starts 16 k-rows further
                desc_b = self.descriptor(self.add(b_addr, s * WGMMA_K * SWIZZLE_BYTES), B_LEADING_BYTE_OFFSET)
            acc = self.wgmma(acc, desc_a, desc_b, self.plan.tile_n, b_mn_major=not self.plan.b_k_major)
        nvvm.WgmmaGroupSyncAlignedOp()
        nvvm.WgmmaWaitGroupSyncOp(0)
        return acc

    def store_accumulator(self, acc: ir.Value, c: ir.Value, m0: ir.Value, n0: ir.Value) -> None:
        """Each thread's fragment to C, two adjacent columns per store."""
        plan = self.plan
        warp, lane = self.div(self.tid, 32), self.rem(self.tid, 32)
        row0 = self.add(self.add(m0, self.mul(warp, 16)), self.div(lane, 4))
        col0 = self.add(n0, self.mul(self.rem(lane, 4), 2))
        pair_f32 = ir.VectorType.get([2], self.f32)
        pair_out = ir.VectorType.get([2], self.out_el)
        out_bytes = 2 * (4 if self.out_el == self.f32 else 2)
        for j in range(plan.tile_n // 8):
            for i in range(2):
                v = 4 * j + 2 * i
                xs = [llvm.ExtractValueOp(self.f32, acc, [v + e]).result for e in range(2)]
                pair = vector.from_elements(pair_f32, xs)
                if self.out_el != self.f32:
                    pair = arith.truncf(pair_out, pair)
                vector.store(pair, c, [self.add(row0, 8 * i), self.add(col0, 8 * j)], alignment=out_bytes)
