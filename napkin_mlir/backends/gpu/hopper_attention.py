"""The Hopper rule for attention (sm_90a): warp-specialized, TMA and wgmma, built with the bindings.

`compile_wgmma_attention` takes the partitioned attention program (the derivation at tiles
q = 128, x = 64; q = 64 below 128 query rows), reads it through the tensor-core rule's
matcher (`AttentionPlan`, which refuses by name every op it does not implement) and refuses
what this Hopper kernel does not hold: head dims other than 64, 128 and 256, other tiles.
The program's score ops and ops on the output are computed by their rules
(`tensorcore_scores.SCORE_RULES`, shared with the mma.sync kernel), the arrays they read (a
bias table, a slope per head, segment ids) are kernel arguments after V, read from global
memory at each element's coordinates. With grouped-query heads, the r query heads of a
key/value head each take their own CTAs (each loads the K/V chunks itself).

A CTA holds 128 query rows of one (batch, query head) and 384 threads in three warpgroups
with roles (FlashAttention-3's structure): warpgroup 0 is the producer, warpgroups 1 and 2
the consumers, 64 rows each (one consumer and 256 threads for a 64-row tile):

1. thread 0 initialises the mbarriers, `fence.mbarrier_init`, barrier: Q's (one arrival per
   consumer's tile), K's and V's of each of two stages (one: the producer's, with the bytes
   its loads bring), and each stage's release (one arrival per consumer warpgroup);
2. the chunks of 64 keys the CTA visits: all, or, where the program's masks decide the
   stream (`plan.skips`: causal, a sliding window, chunks, a prefix), the range [lower,
   upper) a scan over the chunks finds by interval reasoning on the masks' predicates over
   the CTA's rows and each chunk's keys (`ir.masks.predicate_bounds`, once per CTA);
3. the producer gives registers back (`setmaxnreg.dec` 24); its thread 0 announces the bytes
   of each tile on its barrier (`mbarrier.arrive.expect_tx`) and brings it by TMA
   (`cp.async.bulk.tensor`; tensor maps the runner encodes from the sidecar, kernel
   arguments after the outputs) in boxes of 64 rows x 64 head columns, 128-byte swizzled
   (K-major: d contiguous), rows past q or x filled with zeros by the TMA unit: each
   consumer's Q, then for each visited chunk t it waits until the consumers released stage
   t % 2 (parity ((t / 2) % 2) ^ 1: a fresh barrier's previous phase counts as complete)
   and brings K and V into it;
4. each consumer takes 240 registers (`setmaxnreg.inc`: 24 x 128 + 240 x 256 of the SM's
   65,536) and waits for its Q. Chunk 0: K's barrier, S = Q Kᵀ by d/16 `wgmma m64n64k16`
   (A = Q K-major, B = K K-major) waited for, its softmax, P into P buffer 0, published.
   Each later chunk t (stage t % 2, parity (t / 2) % 2), FlashAttention-3's overlap of the
   softmax with the tensor cores: K's barrier waited for; S = Q Kᵀ issued as one wgmma group;
   V of chunk t - 1 waited for; O += P V of chunk t - 1 (four `wgmma m64n{d}k16`, A = P
   from buffer (t - 1) % 2, B = V MN-major) issued as a second group; `wgmma.wait_group 1`
   (S done, P V still running); the online softmax of chunk t on the accumulator fragment
   (thread t holds rows 16 w + l/4 + 8 i and columns 8 j + 2 (l % 4) + c): the score ops on
   each element at its global (q, x) (a mask's predicate rebuilt op by op, -inf where
   false), keys past x masked to -inf, row max over the thread's 16 values and the quad
   (`shfl.xor` 1, 2), α = 2^((m − k)·c) and p = 2^(s·c − k·c) with c = scale·log2 e and the
   shift k = m', or 0 where m' = -inf (a row that has seen only masked keys: α = p = 0, not
   NaN), per-thread partial sums l = α l + Σ p, P (bf16/f16) into buffer t % 2 (K-major,
   swizzled); `wgmma.wait_group 0` (P V done: O may be read again, the stage of chunk t - 1
   is released by the warpgroup's thread 0); O *= α; P published to the warpgroup's wgmma
   (`fence.proxy.async`, the warpgroup's named barrier `bar.sync 1 + cw, 128`). After the
   loop, O += P V of the last chunk, waited for, its stage released;
5. l summed over the quad, the output ops on O / l, stored (pairs of columns), rows past q
   skipped.

Not yet: pingpong between the consumers (the emulator runs one role's warpgroups in
lockstep), register-A wgmma (P goes through shared memory), fp8.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mlir import ir
from mlir.dialects import arith, builtin, gpu, llvm, memref, nvgpu, nvvm, scf, vector
from mlir.dialects import math as math_d

from napkin_mlir.backends.gpu.hopper_emit import (
    A_LEADING_BYTE_OFFSET,
    B_LEADING_BYTE_OFFSET,
    SWIZZLE_BYTES,
    WGMMA_K,
    WgmmaBuilder,
    element_type,
    kernel_module,
)
from napkin_mlir.backends.gpu.hopper_plan import ELEMENT_BYTES, MAX_SMEM, SMEM_ALIGN, WgmmaRefusal
from napkin_mlir.backends.gpu.hopper_plan import THREADS as WARPGROUP
from napkin_mlir.backends.gpu.nvvm import check_target, lower_built_kernel
from napkin_mlir.backends.gpu.sidecar import GpuKernel, KernelArg
from napkin_mlir.backends.gpu.tensorcore import flex_description
from napkin_mlir.backends.gpu.tensorcore_ops import KernelBuilder, scalar_type
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.backends.gpu.tensorcore_scores import Element, ScoreOp, apply_ops, convert
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.masks import MlirDomain, visited_chunks

ENTRY = "attention_wgmma"
WG_ROWS = 64  # one consumer warpgroup's rows: wgmma's M
MAX_CONSUMERS = 2  # consumer warpgroups per CTA (after the producer), one per 64 query rows
#: Registers per thread after `setmaxnreg` (FlashAttention-3's split for two consumer
#: warpgroups fed by TMA): 24 x 128 + 240 x 256 = 64,512 of the SM's 65,536.
PRODUCER_REGISTERS, CONSUMER_REGISTERS = 24, 240
TILE_X = 64  # keys per chunk: one 128-byte swizzle row of P
HEAD_DIMS = (64, 128, 256)
BLOCK = 64  # 16-bit columns per 128-byte swizzled row: tiles are stored in 64-column blocks
BLOCK_BYTES = WG_ROWS * SWIZZLE_BYTES  # one 64 x 64 block (8192 B)
STAGES = 2  # K/V chunks in flight: the next one lands while this one computes
P_BUFFERS = 2  # each consumer's P tiles: P of chunk t is written while P V of chunk t - 1 runs
# mbarrier ids: Q's; K's, V's (full: the producer's loads landed) and the stage's release
# (empty: every consumer warpgroup is done with it), + the stage
Q_BARRIER, K_BARRIER, V_BARRIER, EMPTY_BARRIER = 0, 1, 1 + STAGES, 1 + 2 * STAGES
BARRIERS = 1 + 3 * STAGES
WAIT_TICKS = 10_000_000  # a hint to mbarrier.try_wait: how long one try may suspend the thread
LOG2E = 1.4426950408889634


def wgmma_attention_tiles(q: int) -> dict[str, int]:
    """The tiles the derivation must use for this kernel at `q` query rows."""
    return {"q": WG_ROWS * consumers(q), "x": TILE_X}


def consumers(q: int) -> int:
    """Consumer warpgroups for `q` query rows: two (128 rows per CTA, sharing each K/V
    chunk), or one below 128 rows (the derivation's tile may not exceed the axis)."""
    return MAX_CONSUMERS if q >= MAX_CONSUMERS * WG_ROWS else 1


def compile_wgmma_attention(
    partitioned: ir.Module, target: str, stop_after: str = "ptx", filename: str | None = None
) -> tuple[GpuKernel, str]:
    """The wgmma attention kernel of a partitioned attention program (derived at
    `wgmma_attention_tiles()`), to the stage `stop_after` (gpu | nvvm | ptx)."""
    check_target(target)
    if target != "sm_90a":
        raise WgmmaRefusal(f"--kernel wgmma needs a Hopper target (sm_90a), got {target}")
    plan = AttentionPlan.from_partitioned(partitioned, 16, filename, registers=False)  # ptxas counts them
    _check(plan)
    args = _kernel_args(partitioned, plan)
    cw = plan.gq // WG_ROWS
    smem = SMEM_ALIGN + (cw + 2 * STAGES) * WG_ROWS * plan.d * ELEMENT_BYTES + cw * P_BUFFERS * BLOCK_BYTES
    args += _tensor_maps(plan)
    if smem > MAX_SMEM:
        raise WgmmaRefusal(f"the wgmma attention kernel needs {smem} B of shared memory, over {MAX_SMEM}")
    kernel = GpuKernel(
        target,
        ENTRY,
        (-(-plan.q // plan.gq), plan.h * plan.r, plan.b),
        (WARPGROUP * (1 + cw), 1, 1),
        smem,
        args,
        "",
        problem={"kernel": "wgmma", "tile": {"q": plan.gq, "x": TILE_X}},
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
    maps = [llvm.PointerType.get()] * 3  # the tensor maps of Q, K and V (device pointers)
    module, body = kernel_module(ENTRY, [q_t, kv_t, kv_t, *input_t, *out_t, *maps], WARPGROUP * (1 + cw))
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
    want = wgmma_attention_tiles(plan.q)
    if (plan.gq, plan.sx) != (want["q"], want["x"]):
        problems.append(f"tiles q={want['q']}, x={want['x']} (got q={plan.gq}, x={plan.sx})")
    if problems:
        raise WgmmaRefusal("the wgmma attention kernel takes " + "; ".join(problems))


def _tensor_maps(plan: AttentionPlan) -> list[KernelArg]:
    """The TMA tensor maps of Q, K and V (kernel arguments after the outputs): boxes of 64
    rows by 64 head columns (one 128-byte swizzled row each), one (b, h[, r]) at a time."""
    args = []
    for name, rank in zip(plan.names, (len(_q_shape(plan)), 4, 4), strict=True):
        box = [BLOCK, WG_ROWS] + [1] * (rank - 2)
        spec: dict[str, object] = {"of": name, "box": box, "swizzle": SWIZZLE_BYTES}
        args.append(KernelArg(f"{name}_map", "tensormap", plan.dtype, (), (), spec))
    return args


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
        tile = WG_ROWS * plan.d  # elements of a 64-row Q, K or V tile
        self.tile = tile
        # each consumer's Q, then K and V in STAGES stages each, then each consumer's P
        self.consumers = cw = plan.gq // WG_ROWS
        self.k_elem, self.v_elem, self.p_elem = cw * tile, (cw + STAGES) * tile, (cw + 2 * STAGES) * tile
        self.elements = self.p_elem + cw * P_BUFFERS * WG_ROWS * TILE_X
        self.kb = KernelBuilder(entry)  # constants for the score and output ops' rules
        self.inputs = {i.arg: i for i in plan.inputs}

    def f(self, value: float) -> ir.Value:
        return arith.ConstantOp(self.f32, ir.FloatAttr.get(self.f32, value)).result

    def build(self, q: ir.Value, k: ir.Value, v: ir.Value, *rest: ir.Value) -> None:
        plan = self.plan
        inputs, outputs = rest[: len(plan.inputs)], rest[len(plan.inputs) : len(rest) - 3]
        maps = dict(zip("qkv", rest[len(rest) - 3 :], strict=True))
        self.row_args = [a for a, out in zip(outputs, plan.outputs, strict=True) if out is not None]
        self.input_args = {i.arg: a for i, a in zip(plan.inputs, inputs, strict=True)}
        self.tid = gpu.thread_id(gpu.Dimension.x)
        heads = gpu.block_id(gpu.Dimension.y)  # (key/value head, query head of its group)
        self.batch = gpu.block_id(gpu.Dimension.z)
        self.kv_index = [self.batch, self.div(heads, plan.r)]
        self.q_index = self.kv_index + ([self.rem(heads, plan.r)] if plan.r > 1 else [])
        self.axis_index = {"b": self.batch, "h": self.kv_index[1], "r": self.rem(heads, plan.r)}
        self.cta_q0 = self.mul(gpu.block_id(gpu.Dimension.x), self.plan.gq)
        self.tiles, self.base = self.shared_elements(self.elements)
        self.maps = {name: self.tensor_map(value, name) for name, value in maps.items()}
        self.issuer = arith.cmpi(arith.CmpIPredicate.eq, self.tid, self.c(0))
        self.barriers = self.init_barriers()
        self.lower, upper = self.stream_extent()
        self.visits = arith.minsi(arith.subi(upper, self.lower), self.c(-(-plan.x // TILE_X)))
        warpgroup = self.div(self.tid, WARPGROUP)
        role = scf.IfOp(arith.cmpi(arith.CmpIPredicate.eq, warpgroup, self.c(0)), [], has_else=True)
        with ir.InsertionPoint(role.then_block):
            nvvm.SetMaxRegisterOp(PRODUCER_REGISTERS, nvvm.SetMaxRegisterAction.decrease)
            self.produce()
            scf.YieldOp([])
        with ir.InsertionPoint(role.else_block):
            nvvm.SetMaxRegisterOp(CONSUMER_REGISTERS, nvvm.SetMaxRegisterAction.increase)
            self.consume(outputs[plan.o_position], arith.subi(warpgroup, self.c(1)))
            scf.YieldOp([])

    def produce(self) -> None:
        """The producer warpgroup: its thread 0 brings Q (each consumer's 64 rows), then, for
        each chunk the CTA visits, waits until the consumers released the chunk's stage
        (its `empty` barrier; on the first use of a stage, parity 1 passes at once) and
        brings K and V into it, each on its own barrier (S = Q Kᵀ waits for K only); rows
        past q and keys past x arrive as zeros."""
        issuing = scf.IfOp(self.issuer)
        with ir.InsertionPoint(issuing.then_block):
            for cw in range(self.consumers):
                q_coords = [self.add(self.cta_q0, cw * WG_ROWS), *reversed(self.q_index)]
                self.load_tile(self.maps["q"], q_coords, cw * self.tile, Q_BARRIER)
            kv_coords = list(reversed(self.kv_index))
            loop = scf.ForOp(self.c(0), self.visits, self.c(1))
            with ir.InsertionPoint(loop.body):
                t = loop.induction_variable
                stage = self.rem(t, STAGES)
                released = arith.xori(self.rem(self.div(t, STAGES), 2), self.c(1))
                self.wait(self.add(stage, EMPTY_BARRIER), released)
                x0 = self.mul(self.add(self.lower, t), TILE_X)
                offset = self.mul(stage, self.tile)
                for name, elem, barrier in (("k", self.k_elem, K_BARRIER), ("v", self.v_elem, V_BARRIER)):
                    self.load_tile(self.maps[name], [x0, *kv_coords], self.add(offset, elem), self.add(stage, barrier))
                scf.YieldOp([])
            scf.YieldOp([])

    def consume(self, o: ir.Value, cw: ir.Value) -> None:
        """Consumer warpgroup `cw` (0 or 1): rows 64 cw.. of the CTA's tile, with its own Q
        and P tiles; per visited chunk t, in stage t % STAGES at parity (t / STAGES) % 2: K
        waited for, S = Q Kᵀ, the online softmax, P published within the warpgroup (a named
        barrier), V waited for, O += P V, then its thread 0 releases the stage."""
        tid = self.rem(self.tid, WARPGROUP)
        warp, lane = self.div(tid, 32), self.rem(tid, 32)
        self.row_local = self.add(self.mul(warp, 16), self.div(lane, 4))  # and + 8
        self.col_pair = self.mul(self.rem(lane, 4), 2)
        self.q0 = self.add(self.cta_q0, arith.muli(cw, self.c(WG_ROWS)))
        self.first_thread = arith.cmpi(arith.CmpIPredicate.eq, tid, self.c(0))
        i32 = ir.IntegerType.get_signless(32)
        self.named_barrier = arith.index_cast(i32, self.add(cw, 1))  # id 0 is the CTA's
        self.p_start = self.add(arith.muli(cw, self.c(P_BUFFERS * WG_ROWS * TILE_X)), self.p_elem)  # buffer 0
        self.addr = {
            "q": self.add(self.base, arith.muli(cw, self.c(self.tile * ELEMENT_BYTES))),
            "k0": self.add(self.base, self.k_elem * ELEMENT_BYTES),  # stage 0; "k", "v": the current stage's
            "v0": self.add(self.base, self.v_elem * ELEMENT_BYTES),
        }
        ninf = self.f(-math.inf)
        zero = self.f(0.0)
        self.wait(self.c(Q_BARRIER), self.c(0))
        empty = [llvm.ZeroOp(self.o_t).result, ninf, ninf, zero, zero]  # O, m, l (a CTA without chunks)
        visited = scf.IfOp(
            arith.cmpi(arith.CmpIPredicate.sgt, self.visits, self.c(0)), [v.type for v in empty], has_else=True
        )
        with ir.InsertionPoint(visited.then_block):
            # chunk 0: S waited for, its softmax, P into buffer 0
            self.chunk(self.c(0))
            self.wait(self.add(self.stage, K_BARRIER), self.parity)
            s = self.scores(wait=True)
            _, m, l_part = self.softmax(s, self.x0, [ninf, ninf], [zero, zero], self.c(0))
            self.publish()
            loop = scf.ForOp(self.c(1), self.visits, self.c(1), [empty[0], *m, *l_part])
            with ir.InsertionPoint(loop.body):
                t = loop.induction_variable
                acc, m_old, l_old = loop.inner_iter_args[0], loop.inner_iter_args[1:3], loop.inner_iter_args[3:5]
                previous = arith.subi(t, self.c(1))
                # S of chunk t and O += P V of chunk t - 1 in flight together; the softmax of
                # chunk t runs while the tensor cores compute P V
                self.chunk(t)
                self.wait(self.add(self.stage, K_BARRIER), self.parity)
                s = self.scores(wait=False)
                acc = self.pv_of(previous, acc, wait=False)
                nvvm.WgmmaWaitGroupSyncOp(1)  # S is done (groups retire in order), P V may run on
                alphas, m_new, l_new = self.softmax(s, self.x0, list(m_old), list(l_old), self.rem(t, P_BUFFERS))
                nvvm.WgmmaWaitGroupSyncOp(0)  # P V of chunk t - 1 is done: its stage is free, O is ours
                self.release(self.rem(previous, STAGES))
                acc = self.rescale(acc, alphas)
                self.publish()  # P of chunk t: generic stores, read by the warpgroup's next wgmma
                scf.YieldOp([acc, *m_new, *l_new])
            last = arith.subi(self.visits, self.c(1))
            acc = self.pv_of(last, loop.results[0], wait=True)
            self.release(self.rem(last, STAGES))
            scf.YieldOp([acc, *loop.results[1:]])
        with ir.InsertionPoint(visited.else_block):
            scf.YieldOp(empty)
        self.store(o, visited.results[0], list(visited.results[1:3]), list(visited.results[3:5]))

    def chunk(self, t: ir.Value) -> None:
        """The chunk visited `t`-th: its stage (t % STAGES), the stage's phase parity
        ((t / STAGES) % 2: it flips at every reuse), its first key, K's and V's addresses."""
        self.stage = self.rem(t, STAGES)
        self.parity = self.rem(self.div(t, STAGES), 2)
        self.x0 = self.mul(self.add(self.lower, t), TILE_X)
        offset = self.mul(self.mul(self.stage, self.tile), ELEMENT_BYTES)
        self.addr["k"] = self.add(self.addr["k0"], offset)
        self.addr["v"] = self.add(self.addr["v0"], offset)

    def pv_of(self, t: ir.Value, acc: ir.Value, wait: bool) -> ir.Value:
        """O += P V of the chunk visited `t`-th (P in buffer t % P_BUFFERS), V waited for."""
        stage, parity = self.rem(t, STAGES), self.rem(self.div(t, STAGES), 2)
        self.wait(self.add(stage, V_BARRIER), parity)
        self.addr["v"] = self.add(self.addr["v0"], self.mul(self.mul(stage, self.tile), ELEMENT_BYTES))
        self.addr["p"] = self.p_address(self.rem(t, P_BUFFERS))
        self.stage = stage
        return self.pv(acc, wait)

    def p_element(self, buffer: ir.Value) -> ir.Value:
        """The first element of the consumer's P buffer `buffer`."""
        return self.add(self.p_start, arith.muli(buffer, self.c(WG_ROWS * TILE_X)))

    def p_address(self, buffer: ir.Value) -> ir.Value:
        """The shared address of the consumer's P buffer `buffer`."""
        return self.add(self.base, arith.muli(self.p_element(buffer), self.c(ELEMENT_BYTES)))

    def release(self, stage: ir.Value) -> None:
        """The consumer warpgroup's thread 0 arrives on `stage`'s release barrier: the
        producer may refill it."""
        first = scf.IfOp(self.first_thread)
        with ir.InsertionPoint(first.then_block):
            nvgpu.MBarrierArriveOp(self.barriers, self.add(stage, EMPTY_BARRIER))
            scf.YieldOp([])

    def tensor_map(self, pointer: ir.Value, name: str) -> ir.Value:
        """The kernel argument `pointer` (a device pointer to a CUtensorMap) as the TMA
        descriptor of Q, K or V: boxes of 64 rows of 64 head columns, 128-byte swizzle, zeros
        out of bounds."""
        rank = len(_q_shape(self.plan)) if name == "q" else 4
        box = "x".join(["1"] * (rank - 2) + [str(WG_ROWS), str(BLOCK)])
        desc_t = ir.Type.parse(
            f"!nvgpu.tensormap.descriptor<tensor = memref<{box}x{self.el}, 3>, swizzle = swizzle_128b, "
            "l2promo = none, oob = zero, interleave = none>"
        )
        return builtin.UnrealizedConversionCastOp([desc_t], [pointer]).results[0]

    def init_barriers(self) -> ir.Value:
        """The mbarriers, initialised by thread 0 and made visible to every thread and to the
        TMA unit before any use: Q's (one arrival per consumer's tile, by the producer, with
        the bytes its loads bring), K's and V's of each stage (one: the producer's), and each
        stage's release (one arrival per consumer warpgroup)."""
        group_t = ir.Type.parse(
            f"!nvgpu.mbarrier.group<memorySpace = #gpu.address_space<workgroup>, num_barriers = {BARRIERS}>"
        )
        barriers = nvgpu.MBarrierCreateOp(group_t).result
        for i in range(BARRIERS):
            arrivals = self.consumers if i == Q_BARRIER or i >= EMPTY_BARRIER else 1
            nvgpu.MBarrierInitOp(barriers, self.c(arrivals), self.c(i), predicate=self.issuer)
        nvvm.FenceMbarrierInitOp()
        gpu.BarrierOp()
        return barriers

    def load_tile(self, desc: ir.Value, coords: list[ir.Value], start: ir.Value | int, barrier: ir.Value | int) -> None:
        """TMA of a 64-row tile (`coords`: its first row's outermost-last coordinates after the
        head column) into the tile at element `start`, one box per 64 head columns (a 64 x 64
        block of 128-byte swizzled rows, 8192 bytes), by the one thread running this, which
        first announces the bytes on `barrier` (one arrival)."""
        barrier = self.c(barrier) if isinstance(barrier, int) else barrier
        start = self.c(start) if isinstance(start, int) else start
        blocks = self.d // BLOCK
        nvgpu.MBarrierArriveExpectTxOp(self.barriers, self.c(blocks * BLOCK_BYTES), barrier)
        rank = len(coords) + 1
        box_t = ir.MemRefType.get(
            [1] * (rank - 2) + [WG_ROWS, BLOCK],
            self.el,
            memory_space=ir.Attribute.parse("#gpu.address_space<workgroup>"),
        )
        for blk in range(blocks):
            at = self.add(self.smem_pad, self.mul(self.add(start, blk * BLOCK * WG_ROWS), ELEMENT_BYTES))
            dst = memref.ViewOp(box_t, self.smem_raw, at, []).result
            nvgpu.TmaAsyncLoadOp(dst, self.barriers, desc, [self.c(blk * BLOCK), *coords], barrier)

    def wait(self, barrier: ir.Value, parity: ir.Value) -> None:
        """Every thread waits until the phase of `barrier` with `parity` (0 or 1) completed."""
        bit = arith.cmpi(arith.CmpIPredicate.ne, parity, self.c(0))
        nvgpu.MBarrierTryWaitParityOp(self.barriers, bit, self.c(WAIT_TICKS), barrier)

    def stream_extent(self) -> tuple[ir.Value, ir.Value]:
        """The chunks of 64 keys this CTA visits, [lower, upper): every chunk, or where the
        program's masks decide the stream (`plan.skips`), from the first to the last chunk
        where each mask's predicate may be true over the CTA's 128 rows and the chunk's keys,
        bounded by interval reasoning (`ir.masks.predicate_bounds`) in a scan over the chunks
        once per CTA, as the mma.sync kernel does. Chunks outside are neither loaded nor
        computed (keys at or past upper * 64 are never read); a chunk inside that no key of
        survives is computed masked."""
        plan = self.plan
        chunks = self.c(-(-plan.x // TILE_X))
        if not plan.skips:
            return self.c(0), chunks
        rows = (self.cta_q0, self.add(self.cta_q0, plan.gq - 1))
        return visited_chunks(plan.skips, MlirDomain(), rows, -(-plan.x // TILE_X), TILE_X, (plan.q, plan.x))

    def publish(self) -> None:
        """The warpgroup's shared-memory stores made visible to its wgmma (async proxy): the
        proxy fence, then the warpgroup's named barrier (bar.sync 1 + cw, 128)."""
        nvvm.FenceProxyOp(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)
        i32 = ir.IntegerType.get_signless(32)
        threads = arith.ConstantOp(i32, ir.IntegerAttr.get(i32, WARPGROUP)).result
        nvvm.BarrierOp(None, barrierId=self.named_barrier, numberOfThreads=threads)

    def operand(self, name: str, s: int, leading: int) -> ir.Value:
        """The descriptor of k-step `s` (16 columns) of a K-major tile stored in 64-column blocks."""
        offset = (s * WGMMA_K // BLOCK) * BLOCK_BYTES + (s * WGMMA_K % BLOCK) * ELEMENT_BYTES
        return self.descriptor(self.add(self.addr[name], offset), leading)

    def scores(self, wait: bool) -> ir.Value:
        """S = Q Kᵀ (64 x 64, f32): one committed group of wgmma, waited for if `wait`."""
        nvvm.WgmmaFenceAlignedOp()
        s = None  # the first wgmma starts S with scale-d = 0
        for step in range(self.d // WGMMA_K):
            a = self.operand("q", step, A_LEADING_BYTE_OFFSET)
            b = self.operand("k", step, A_LEADING_BYTE_OFFSET)
            s = self.wgmma(s, a, b, TILE_X, b_mn_major=False)
        nvvm.WgmmaGroupSyncAlignedOp()
        if wait:
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
        self, s: ir.Value, x0: ir.Value, m_old: list[ir.Value], l_old: list[ir.Value], buffer: ir.Value
    ) -> tuple[list[ir.Value], list[ir.Value], list[ir.Value]]:
        """Mask and online softmax on the S fragment of the chunk at key `x0`, P into the
        consumer's P `buffer`: the rescale factors α of O's two row halves (O itself is not
        touched: a wgmma may still be writing it), the new row max and partial sums."""
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
        pair_t = ir.VectorType.get([2], self.el)
        start = self.p_element(buffer)
        for i in range(2):
            row = self.add(self.row_local, 8 * i)
            for j in range(TILE_X // 8):
                pair = vector.from_elements(ir.VectorType.get([2], self.f32), [probs[i][2 * j], probs[i][2 * j + 1]])
                at = self.add(self.swizzled(row, self.c(j), start), self.col_pair)
                vector.store(arith.truncf(pair_t, pair), self.tiles, [at], alignment=4)
        return alphas, m_new, l_new

    def rescale(self, acc: ir.Value, alphas: list[ir.Value]) -> ir.Value:
        """O *= α, per row half (once no wgmma writes O)."""
        for j in range(self.d // 8):
            for i in range(2):
                for c in range(2):
                    pos = 4 * j + 2 * i + c
                    val = arith.mulf(llvm.ExtractValueOp(self.f32, acc, [pos]).result, alphas[i])
                    acc = llvm.InsertValueOp(acc, val, [pos]).result
        return acc

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

    def pv(self, acc: ir.Value, wait: bool) -> ir.Value:
        """O += P V: one committed group of wgmma, waited for if `wait`."""
        nvvm.WgmmaFenceAlignedOp()
        for step in range(TILE_X // WGMMA_K):
            a = self.operand("p", step, A_LEADING_BYTE_OFFSET)
            b = self.descriptor(self.add(self.addr["v"], step * WGMMA_K * SWIZZLE_BYTES), B_LEADING_BYTE_OFFSET)
            acc = self.wgmma(acc, a, b, self.d, b_mn_major=True)
        nvvm.WgmmaGroupSyncAlignedOp()
        if wait:
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
