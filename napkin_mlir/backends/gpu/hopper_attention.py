"""The Hopper rule for attention (sm_90a): both contractions on wgmma, built with the bindings.

`compile_wgmma_attention` takes the partitioned attention program (the derivation at tiles
q = 64, x = 64), reads it through the tensor-core rule's matcher (`AttentionPlan`, which
refuses by name every op it does not implement) and refuses what this first Hopper kernel
does not hold yet: head dims other than 64 and 128, other tiles. The program's score ops and
ops on the output are computed by their rules (`tensorcore_scores.SCORE_RULES`, shared with
the mma.sync kernel), the arrays they read (a bias table, a slope per head, segment ids) are
kernel arguments after V, read from global memory at each element's coordinates. One
warpgroup (128 threads) per
64 query rows of one (batch, query head); with grouped-query heads, the r query heads of a
key/value head each take their own CTAs (each loads the K/V chunks itself):

1. the Q tile is copied once into shared memory (16-byte loads, rows past q zero-filled), in
   64 x 64 blocks of 128-byte swizzled rows (K-major: d contiguous);
2. the chunks of 64 keys the CTA visits: all, or, where the program's masks decide the
   stream (`plan.skips`: causal, a sliding window, chunks, a prefix), the range [lower,
   upper) a scan over the chunks finds by interval reasoning on the masks' predicates over
   the CTA's rows and each chunk's keys (`ir.masks.predicate_bounds`, once per CTA);
3. for each of them (a loop counted from 0): the K and V chunks of the next one are copied
   with `cp.async` into the other of two stages (same swizzle, keys past the last visited
   chunk zero-filled and never read) while this one computes; `cp.async.wait_group 1` (this
   chunk's copies have landed), `fence.proxy.async`, barrier;
   S = Q Kᵀ by d/16 `wgmma m64n64k16` (A = Q K-major, B = K K-major), waited for;
   the online softmax on the accumulator fragment (thread t holds rows 16 w + l/4 + 8 i and
   columns 8 j + 2 (l % 4) + c): the score ops on each element at its global (q, x) (a
   mask's predicate rebuilt op by op, -inf where false), keys past x masked to -inf, row
   max over the thread's 16 values and the quad (`shfl.xor` 1, 2), α = 2^((m − k)·c) and
   p = 2^(s·c − k·c) with c = scale·log2 e and the shift k = m', or 0 where m' = -inf (a row
   that has seen only masked keys: α = p = 0, not NaN), per-thread partial sums
   l = α l + Σ p, O *= α;
   P (bf16/f16) stored into shared memory as a K-major swizzled A tile; `fence.proxy.async`,
   barrier; O += P V by four `wgmma m64n{d}k16` (A = P, B = V MN-major), waited for; barrier;
4. l summed over the quad, the output ops on O / l, stored (pairs of columns), rows past q
   skipped.

No TMA, mbarriers, warp specialization or register-A wgmma yet (P goes through shared memory).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mlir import ir
from mlir.dialects import arith, gpu, llvm, memref, nvgpu, nvvm, scf, vector
from mlir.dialects import math as math_d

from napkin_mlir.backends.gpu.hopper_emit import (
    A_LEADING_BYTE_OFFSET,
    B_LEADING_BYTE_OFFSET,
    SWIZZLE_BYTES,
    VECTOR,
    WGMMA_K,
    WgmmaBuilder,
    element_type,
    kernel_module,
)
from napkin_mlir.backends.gpu.hopper_plan import ELEMENT_BYTES, MAX_SMEM, SMEM_ALIGN, THREADS, WgmmaRefusal
from napkin_mlir.backends.gpu.nvvm import check_target, lower_built_kernel
from napkin_mlir.backends.gpu.sidecar import GpuKernel, KernelArg
from napkin_mlir.backends.gpu.tensorcore import flex_description
from napkin_mlir.backends.gpu.tensorcore_ops import KernelBuilder, scalar_type
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.backends.gpu.tensorcore_scores import Element, ScoreOp, apply_ops, convert
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.masks import MlirDomain, visited_chunks

ENTRY = "attention_wgmma"
TILE_Q = 64  # one warpgroup's wgmma M
TILE_X = 64  # keys per chunk: one 128-byte swizzle row of P
HEAD_DIMS = (64, 128)
BLOCK = 64  # 16-bit columns per 128-byte swizzled row: tiles are stored in 64-column blocks
BLOCK_BYTES = TILE_Q * SWIZZLE_BYTES  # one 64 x 64 block (8192 B)
TILES = 5  # 64-row tiles of shared memory: Q, and K and V in two stages each
LOG2E = 1.4426950408889634


def wgmma_attention_tiles() -> dict[str, int]:
    """The tiles the derivation must use for this kernel."""
    return {"q": TILE_Q, "x": TILE_X}


def compile_wgmma_attention(
    partitioned: ir.Module, target: str, stop_after: str = "ptx", filename: str | None = None
) -> tuple[GpuKernel, str]:
    """The wgmma attention kernel of a partitioned attention program (derived at
    `wgmma_attention_tiles()`), to the stage `stop_after` (gpu | nvvm | ptx)."""
    check_target(target)
    if target != "sm_90a":
        raise WgmmaRefusal(f"--kernel wgmma needs a Hopper target (sm_90a), got {target}")
    plan = AttentionPlan.from_partitioned(partitioned, 16, filename)
    _check(plan)
    args = _kernel_args(partitioned, plan)
    smem = SMEM_ALIGN + TILES * TILE_Q * plan.d * ELEMENT_BYTES + BLOCK_BYTES
    if smem > MAX_SMEM:
        raise WgmmaRefusal(f"the wgmma attention kernel needs {smem} B of shared memory, over {MAX_SMEM}")
    kernel = GpuKernel(
        target,
        ENTRY,
        (-(-plan.q // TILE_Q), plan.h * plan.r, plan.b),
        (THREADS, 1, 1),
        smem,
        args,
        "",
        problem={"kernel": "wgmma", "tile": {"q": TILE_Q, "x": TILE_X}},
    )
    flex = flex_description(plan, args)  # for the GPU runner: FlexAttention beside the kernel
    if flex is not None:
        kernel.problem["flex"] = flex
    el = element_type(plan.dtype)
    q_t = ir.MemRefType.get([*_q_shape(plan)], el)
    kv_t = ir.MemRefType.get([plan.b, plan.h, plan.x, plan.d], el)
    input_t = [ir.MemRefType.get(list(a.shape), scalar_type(a.dtype)) for a in args[3 : 3 + len(plan.inputs)]]
    row_shape = list(_q_shape(plan)[:-1])
    out_t = [q_t if out is None else ir.MemRefType.get(row_shape, scalar_type(out.dtype)) for out in plan.outputs]
    module, body = kernel_module(ENTRY, [q_t, kv_t, kv_t, *input_t, *out_t], THREADS)
    with ir.InsertionPoint(body):
        _AttentionKernel(plan, body).build(*body.arguments)
        gpu.ReturnOp([])
    text = lower_built_kernel(module, target, stop_after, "wgmma attention kernel")
    if stop_after == "ptx":
        kernel.ptx = text
    return kernel, text


def _check(plan: AttentionPlan) -> None:
    if not plan.softmax:
        raise WgmmaRefusal(
            "the wgmma attention kernel computes an online softmax; this stream carries accumulators without one "
            "(the backward's dQ and dK/dV, sigmoid attention): --kernel tensorcore takes it"
        )
    problems = []
    if plan.dtype not in ("bf16", "f16"):
        problems.append(f"bf16 or f16 inputs (got {plan.dtype})")
    if plan.d != plan.dv or plan.d not in HEAD_DIMS:
        problems.append(f"a head dim in {HEAD_DIMS} for Q, K and V (got {plan.d} and {plan.dv})")
    if (plan.gq, plan.sx) != (TILE_Q, TILE_X):
        problems.append(f"tiles q={TILE_Q}, x={TILE_X} (got q={plan.gq}, x={plan.sx})")
    if problems:
        raise WgmmaRefusal("the wgmma attention kernel takes " + "; ".join(problems))


def _q_shape(plan: AttentionPlan) -> tuple[int, ...]:
    """Q's and O's shape: (b, h, q, d), or (b, h, r, q, d) with r query heads per K/V head."""
    return (plan.b, plan.h, plan.r, plan.q, plan.d) if plan.r > 1 else (plan.b, plan.h, plan.q, plan.d)


def _kernel_args(partitioned: ir.Module, plan: AttentionPlan) -> list[KernelArg]:
    """Q, K, V, the arrays the score and output ops read (`plan.inputs`), and the outputs (O,
    and outputs per query row such as the log-sum-exp), in the diagram function's order
    (which must be that one)."""
    func = next(op.operation for op in partitioned.body.operations if op.operation.name == "func.func")
    block = func.regions[0].blocks[0]
    names = [ir.StringAttr(n).value for n in ir.ArrayAttr(func.attributes["arg_names"])]
    types = [ArrayType.from_mlir(a.type) for a in block.arguments]
    if tuple(names[:3]) != plan.names or [i.arg for i in plan.inputs] != list(range(3, len(names))):
        raise WgmmaRefusal(
            f"the wgmma attention kernel takes the arguments (Q, K, V) = {plan.names}, then the arrays its "
            f"score and output ops read, got {names}"
        )
    ret = list(block.operations)[-1]
    out = [ArrayType.from_mlir(v.type) for v in ret.operands]
    want = [_q_shape(plan), (plan.b, plan.h, plan.x, plan.d), (plan.b, plan.h, plan.x, plan.d)]
    outs = [want[0] if o is None else want[0][:-1] for o in plan.outputs]
    if [t.shape for t in types[:3]] != want or [t.shape for t in out] != outs:
        raise WgmmaRefusal(
            f"the wgmma attention kernel takes Q {want[0]}, K and V {want[1]} and writes {outs}, got "
            f"{[t.shape for t in types]} -> {[t.shape for t in out]}"
        )
    args = [KernelArg(n, "input", t.dtype, t.shape, t.axes) for n, t in zip(names, types, strict=True)]
    return [*args, *(KernelArg(f"out{i}", "output", t.dtype, t.shape, t.axes) for i, t in enumerate(out))]


class _AttentionKernel(WgmmaBuilder):
    """One emission: the plan, and the values the steps share."""

    def __init__(self, plan: AttentionPlan, entry: ir.Block) -> None:
        super().__init__(entry, plan.dtype)
        self.plan = plan
        self.d = plan.d
        self.s_t = self.accumulator_type(TILE_X)
        self.o_t = self.accumulator_type(plan.d)
        tile = TILE_Q * plan.d  # elements of the Q, K and V tiles
        self.tile = tile
        # Q, then K and V in two stages each (the next chunk is copied while this one computes)
        self.k_elem, self.v_elem, self.p_elem = tile, 3 * tile, TILES * tile
        self.elements = TILES * tile + TILE_Q * TILE_X
        self.kb = KernelBuilder(entry)  # constants for the score and output ops' rules
        self.inputs = {i.arg: i for i in plan.inputs}

    def f(self, value: float) -> ir.Value:
        return arith.ConstantOp(self.f32, ir.FloatAttr.get(self.f32, value)).result

    def build(self, q: ir.Value, k: ir.Value, v: ir.Value, *rest: ir.Value) -> None:
        plan = self.plan
        inputs, outputs = rest[: len(plan.inputs)], rest[len(plan.inputs) :]
        o = outputs[plan.o_position]
        self.row_args = [a for a, out in zip(outputs, plan.outputs, strict=True) if out is not None]
        self.input_args = {i.arg: a for i, a in zip(plan.inputs, inputs, strict=True)}
        self.tid = gpu.thread_id(gpu.Dimension.x)
        heads = gpu.block_id(gpu.Dimension.y)  # (key/value head, query head of its group)
        self.batch = gpu.block_id(gpu.Dimension.z)
        self.kv_index = [self.batch, self.div(heads, plan.r)]
        self.q_index = self.kv_index + ([self.rem(heads, plan.r)] if plan.r > 1 else [])
        self.axis_index = {"b": self.batch, "h": self.kv_index[1], "r": self.rem(heads, plan.r)}
        self.q0 = self.mul(gpu.block_id(gpu.Dimension.x), TILE_Q)
        warp, lane = self.div(self.tid, 32), self.rem(self.tid, 32)
        self.row_local = self.add(self.mul(warp, 16), self.div(lane, 4))  # and + 8
        self.col_pair = self.mul(self.rem(lane, 4), 2)
        self.tiles, base = self.shared_elements(self.elements)
        self.addr = {
            "q": base,
            "k0": self.add(base, self.k_elem * ELEMENT_BYTES),  # stage 0; "k", "v": the current stage's
            "v0": self.add(base, self.v_elem * ELEMENT_BYTES),
            "p": self.add(base, self.p_elem * 2),
        }
        self.copy_tile(q, self.q_index, 0, self.q0, plan.q)
        lower, upper = self.stream_extent()
        chunks = -(-plan.x // TILE_X)
        visits = arith.minsi(arith.subi(upper, lower), self.c(chunks))
        kv_end = arith.minui(self.mul(upper, TILE_X), self.c(plan.x))  # keys past it are never read
        k_stage = [self.k_elem, self.k_elem + self.tile]
        v_stage = [self.v_elem, self.v_elem + self.tile]

        def prefetch(chunk: ir.Value, stage: ir.Value) -> ir.Value:
            """cp.async of K and V chunk `chunk` into `stage` (zero-filled past kv_end)."""
            offset = self.mul(stage, self.tile)
            x0 = self.mul(chunk, TILE_X)
            tokens = self.copy_tile_async(k, self.kv_index, self.add(offset, k_stage[0]), x0, kv_end)
            tokens += self.copy_tile_async(v, self.kv_index, self.add(offset, v_stage[0]), x0, kv_end)
            return nvgpu.DeviceAsyncCreateGroupOp(tokens).result

        prefetch(lower, self.c(0))
        ninf = self.f(-math.inf)
        zero = self.f(0.0)
        o0 = llvm.ZeroOp(self.o_t).result
        loop = scf.ForOp(self.c(0), visits, self.c(1), [o0, ninf, ninf, zero, zero])
        with ir.InsertionPoint(loop.body):
            t = loop.induction_variable
            j = self.add(lower, t)
            stage = self.rem(t, 2)
            x0 = self.mul(j, TILE_X)
            acc, m_old, l_old = loop.inner_iter_args[0], loop.inner_iter_args[1:3], loop.inner_iter_args[3:5]
            group = prefetch(self.add(j, 1), self.rem(self.add(t, 1), 2))  # the next chunk, while this one computes
            nvgpu.DeviceAsyncWaitOp(group, numGroups=1)  # this chunk's copies are done
            self.publish()
            offset = self.mul(self.mul(stage, self.tile), ELEMENT_BYTES)
            self.addr["k"] = self.add(self.addr["k0"], offset)
            self.addr["v"] = self.add(self.addr["v0"], offset)
            s = self.scores()
            acc, m_new, l_new = self.softmax(s, x0, acc, list(m_old), list(l_old))
            self.publish()
            acc = self.pv(acc)
            gpu.BarrierOp()  # every warp is done with this stage before the next prefetch refills it
            scf.YieldOp([acc, *m_new, *l_new])
        self.store(o, loop.results[0], list(loop.results[1:3]), list(loop.results[3:5]))

    def stream_extent(self) -> tuple[ir.Value, ir.Value]:
        """The chunks of 64 keys this CTA visits, [lower, upper): every chunk, or where the
        program's masks decide the stream (`plan.skips`), from the first to the last chunk
        where each mask's predicate may be true over the CTA's 64 rows and the chunk's keys,
        bounded by interval reasoning (`ir.masks.predicate_bounds`) in a scan over the chunks
        once per CTA, as the mma.sync kernel does. Chunks outside are neither loaded nor
        computed (keys at or past upper * 64 are never read); a chunk inside that no key of
        survives is computed masked."""
        plan = self.plan
        chunks = self.c(-(-plan.x // TILE_X))
        if not plan.skips:
            return self.c(0), chunks
        rows = (self.q0, self.add(self.q0, TILE_Q - 1))
        return visited_chunks(plan.skips, MlirDomain(), rows, -(-plan.x // TILE_X), TILE_X, (plan.q, plan.x))

    def publish(self) -> None:
        """The threads' shared-memory stores made visible to the wgmma (async proxy) of all warps."""
        nvvm.FenceProxyOp(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
        gpu.BarrierOp()

    def copy_tile(self, src: ir.Value, prefix: list[ir.Value], start: int, row0: ir.Value, rows: int) -> None:
        """Rows row0.. row0+63 of `src`[prefix] into the tile at element `start`, in
        64-column blocks of swizzled 128-byte rows; rows past `rows` are zeros (read clamped)."""
        vec_t = ir.VectorType.get([VECTOR], self.el)
        zeros = arith.ConstantOp(vec_t, ir.DenseElementsAttr.get_splat(vec_t, ir.FloatAttr.get(self.el, 0.0))).result
        per_row = self.d // VECTOR
        copies = []
        for it in range(TILE_Q * per_row // THREADS):
            q = self.add(self.tid, it * THREADS)
            r, cn = self.div(q, per_row), self.rem(q, per_row)
            row = self.add(row0, r)
            valid = arith.cmpi(arith.CmpIPredicate.ult, row, self.c(rows))
            clamped = arith.minui(row, self.c(rows - 1))
            x = vector.load(vec_t, src, [*prefix, clamped, self.mul(cn, VECTOR)], alignment=16)
            block = self.add(self.mul(self.div(cn, 8), BLOCK * TILE_Q), start)
            copies.append((arith.select(valid, x, zeros), self.swizzled(r, self.rem(cn, 8), block)))
        for x, at in copies:
            vector.store(x, self.tiles, [at], alignment=16)

    def copy_tile_async(
        self, src: ir.Value, prefix: list[ir.Value], start: ir.Value, row0: ir.Value, end: ir.Value
    ) -> list[ir.Value]:
        """cp.async of rows row0.. row0+63 of `src`[prefix] into the tile at element `start`, in
        64-column blocks of swizzled 128-byte rows, 16 bytes per copy; rows at or past `end`
        read nothing and are zero-filled (their address clamped into the array). Returns the
        copies' tokens."""
        per_row = self.d // VECTOR
        rows = ir.ShapedType(src.type).shape[len(prefix)]
        tokens = []
        for it in range(TILE_Q * per_row // THREADS):
            q = self.add(self.tid, it * THREADS)
            r, cn = self.div(q, per_row), self.rem(q, per_row)
            row = self.add(row0, r)
            n = arith.select(arith.cmpi(arith.CmpIPredicate.ult, row, end), self.c(VECTOR), self.c(0))
            clamped = arith.minui(row, self.c(rows - 1))
            block = self.add(self.mul(self.div(cn, 8), BLOCK * TILE_Q), start)
            at = self.swizzled(r, self.rem(cn, 8), block)
            tokens.append(
                nvgpu.DeviceAsyncCopyOp(
                    self.tiles,
                    [at],
                    src,
                    [*prefix, clamped, self.mul(cn, VECTOR)],
                    ir.IntegerAttr.get(self.index, VECTOR),
                    srcElements=n,
                    bypassL1=True,
                ).result
            )
        return tokens

    def operand(self, name: str, s: int, leading: int) -> ir.Value:
        """The descriptor of k-step `s` (16 columns) of a K-major tile stored in 64-column blocks."""
        offset = (s * WGMMA_K // BLOCK) * BLOCK_BYTES + (s * WGMMA_K % BLOCK) * ELEMENT_BYTES
        return self.descriptor(self.add(self.addr[name], offset), leading)

    def scores(self) -> ir.Value:
        """S = Q Kᵀ (64 x 64, f32), waited for."""
        nvvm.WgmmaFenceAlignedOp()
        s = None  # the first wgmma starts S with scale-d = 0
        for step in range(self.d // WGMMA_K):
            a = self.operand("q", step, A_LEADING_BYTE_OFFSET)
            b = self.operand("k", step, A_LEADING_BYTE_OFFSET)
            s = self.wgmma(s, a, b, TILE_X, b_mn_major=False)
        nvvm.WgmmaGroupSyncAlignedOp()
        nvvm.WgmmaWaitGroupSyncOp(0)
        return s

    def quad(self, value: ir.Value, combine: str) -> ir.Value:
        """`value` combined over the 4 lanes of a quad (the threads holding one row)."""
        for off in (1, 2):
            i32 = ir.IntegerType.get_signless(32)
            other = gpu.ShuffleOp(
                value,
                arith.ConstantOp(i32, ir.IntegerAttr.get(i32, off)).result,
                arith.ConstantOp(i32, ir.IntegerAttr.get(i32, 32)).result,
                gpu.ShuffleMode.XOR,
            ).results[0]
            value = arith.maximumf(value, other) if combine == "max" else arith.addf(value, other)
        return value

    def softmax(
        self, s: ir.Value, x0: ir.Value, acc: ir.Value, m_old: list[ir.Value], l_old: list[ir.Value]
    ) -> tuple[ir.Value, list[ir.Value], list[ir.Value]]:
        """Mask, online softmax and O rescale on the S fragment; P into shared memory."""
        plan = self.plan
        scale = self.f(plan.scale * LOG2E)
        ninf = self.f(-math.inf)
        zero = self.f(0.0)
        rows = [self.add(self.add(self.q0, self.row_local), 8 * i) for i in range(2)]
        values: list[list[ir.Value]] = [[], []]  # per row half i: (j, c) in order
        for j in range(TILE_X // 8):
            for i in range(2):
                for c in range(2):
                    val = llvm.ExtractValueOp(self.f32, s, [4 * j + 2 * i + c]).result
                    col = self.add(self.add(x0, self.col_pair), 8 * j + c)
                    val = self.score_element(val, rows[i], col)
                    bad = arith.cmpi(arith.CmpIPredicate.uge, col, self.c(plan.x))
                    values[i].append(arith.select(bad, ninf, val))
        m_new, l_new, alphas, neg = [], [], [], []
        for i in range(2):
            mx = values[i][0]
            for val in values[i][1:]:
                mx = arith.maximumf(mx, val)
            m = arith.maximumf(m_old[i], self.quad(mx, "max"))
            # a row that has seen only -inf so far shifts by 0: alpha = p = 0 there, not NaN
            # (the guard napkin-stream-partition puts in every online form)
            shift = arith.select(arith.cmpf(arith.CmpFPredicate.OEQ, m, ninf), zero, m)
            alphas.append(math_d.exp2(arith.mulf(arith.subf(m_old[i], shift), scale)))
            neg.append(arith.negf(arith.mulf(shift, scale)))
            m_new.append(m)
        probs: list[list[ir.Value]] = [[math_d.fma(val, scale, neg[i]) for val in values[i]] for i in range(2)]
        probs = [[math_d.exp2(x) for x in probs[i]] for i in range(2)]
        for i in range(2):
            total = probs[i][0]
            for p in probs[i][1:]:
                total = arith.addf(total, p)
            l_new.append(arith.addf(arith.mulf(alphas[i], l_old[i]), total))
        for j in range(self.d // 8):
            for i in range(2):
                for c in range(2):
                    pos = 4 * j + 2 * i + c
                    val = arith.mulf(llvm.ExtractValueOp(self.f32, acc, [pos]).result, alphas[i])
                    acc = llvm.InsertValueOp(acc, val, [pos]).result
        pair_t = ir.VectorType.get([2], self.el)
        for i in range(2):
            row = self.add(self.row_local, 8 * i)
            for j in range(TILE_X // 8):
                pair = vector.from_elements(ir.VectorType.get([2], self.f32), [probs[i][2 * j], probs[i][2 * j + 1]])
                at = self.add(self.swizzled(row, self.c(j), self.p_elem), self.col_pair)
                vector.store(arith.truncf(pair_t, pair), self.tiles, [at], alignment=4)
        return acc, m_new, l_new

    def score_element(self, score: ir.Value, row: ir.Value, col: ir.Value) -> ir.Value:
        """The program's score ops (`plan.score_ops`) on one score at global query `row` and
        key `col`, each by its rule (`tensorcore_scores.SCORE_RULES`: a soft cap's tanh, a
        bias, a mask's predicate rebuilt op by op, ...); an input is read from global memory
        at the score's (b, h, r, q, x), clamped into the array (rows past q are never stored,
        keys past x are masked)."""
        plan = self.plan
        index = {"q": arith.minui(row, self.c(plan.q - 1)), "x": arith.minui(col, self.c(plan.x - 1))}
        at = Element(row, col, (plan.q, plan.x))
        return self.apply_ops(plan.score_ops, score, index, at)

    def apply_ops(self, ops: tuple[ScoreOp, ...], value: ir.Value, index: dict[str, ir.Value], at: Element) -> ir.Value:
        """`ops` in order on `value` (value 0), each by its rule; an input is read once, at
        `index` (with the CTA's b, h, r) in the type the op reads."""
        return apply_ops(self.kb, ops, [value], self.reader(index), at)[-1]

    def reader(self, index: dict[str, ir.Value]) -> Callable[[int, str], ir.Value]:
        """`read` for `apply_ops`: an input loaded from global memory at `index` (with the
        CTA's b, h, r), converted to the type the op reads."""

        def read(arg: int, dtype: str) -> ir.Value:
            inp = self.inputs[arg]
            where = [index[a] if a in index else self.axis_index[a] for a in inp.axes]
            return convert(memref.load(self.input_args[arg], where), inp.dtype, dtype)

        return read

    def output_element(self, value: ir.Value, row: ir.Value, col: ir.Value) -> ir.Value:
        """The program's ops on O / l before its cast (`plan.output_ops`) on one element at
        global query `row` and head column `col`; an input's one axis other than b, h, r and
        q is V's head axis."""
        index = {"q": row}
        for inp in self.plan.inputs:
            for a in inp.axes:
                if a not in ("b", "h", "r", "q"):
                    index[a] = col
        return self.apply_ops(self.plan.output_ops, value, index, Element(None, None))

    def pv(self, acc: ir.Value) -> ir.Value:
        """O += P V, waited for."""
        nvvm.WgmmaFenceAlignedOp()
        for step in range(TILE_X // WGMMA_K):
            a = self.operand("p", step, A_LEADING_BYTE_OFFSET)
            b = self.descriptor(self.add(self.addr["v"], step * WGMMA_K * SWIZZLE_BYTES), B_LEADING_BYTE_OFFSET)
            acc = self.wgmma(acc, a, b, self.d, b_mn_major=True)
        nvvm.WgmmaGroupSyncAlignedOp()
        nvvm.WgmmaWaitGroupSyncOp(0)
        return acc

    def store(self, o: ir.Value, acc: ir.Value, m: list[ir.Value], l_part: list[ir.Value]) -> None:
        """O / l, pairs of columns per store, and the outputs per row (`plan.row_outputs`,
        from the row max scaled back to the program's scores and the quad's row sum, stored
        by the quad's first lane); rows past q skipped."""
        one = self.f(1.0)
        pair_f = ir.VectorType.get([2], self.f32)
        pair_t = ir.VectorType.get([2], self.el)
        for i in range(2):
            total = self.quad(l_part[i], "sum")
            inv = arith.divf(one, total)
            row = self.add(self.add(self.q0, self.row_local), 8 * i)
            inside = scf.IfOp(arith.cmpi(arith.CmpIPredicate.ult, row, self.c(self.plan.q)))
            with ir.InsertionPoint(inside.then_block):
                for j in range(self.d // 8):
                    xs = [
                        arith.mulf(llvm.ExtractValueOp(self.f32, acc, [4 * j + 2 * i + c]).result, inv)
                        for c in range(2)
                    ]
                    if self.plan.output_ops:  # the program's ops on O / l, at (b, h, r, q, head column)
                        xs = [self.output_element(xs[c], row, self.add(self.col_pair, 8 * j + c)) for c in range(2)]
                    pair = arith.truncf(pair_t, vector.from_elements(pair_f, xs))
                    col = self.add(self.col_pair, 8 * j)
                    vector.store(pair, o, [*self.q_index, row, col], alignment=4)
                if self.plan.row_outputs:
                    self.store_row_outputs(arith.mulf(m[i], self.f(self.plan.scale)), total, row)
                scf.YieldOp([])

    def store_row_outputs(self, m: ir.Value, total: ir.Value, row: ir.Value) -> None:
        """The outputs per query row at `row` from its row max `m` and row sum `total`, by
        the quad's first lane."""
        first = arith.cmpi(arith.CmpIPredicate.eq, self.col_pair, self.c(0))
        inside = scf.IfOp(first)
        with ir.InsertionPoint(inside.then_block):
            for out, arg in zip(self.plan.row_outputs, self.row_args, strict=True):
                values = apply_ops(self.kb, out.ops, [m, total], self.reader({"q": row}), Element(None, None))
                memref.store(convert(values[out.result], "f32", out.dtype), arg, [*self.q_index, row])
            scf.YieldOp([])
