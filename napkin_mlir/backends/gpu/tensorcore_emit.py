"""The tensor-core attention kernel, built with the MLIR Python bindings' builders.

`emit_attention_kernel(plan)` builds the whole module: one `gpu.func` in a
`gpu.container_module`, unrolled at the fragment level (see `tensorcore.py` for what the
kernel does), with the constants, index helpers and fragment ops of `tensorcore_ops.py`.
`_AttentionKernel` builds the kernel step by step, each step creating its ops at the
current insertion point on typed values: shared-memory views and thread ids, the stream's
extent, the first copies, the Q fragments, the stream over `x` (an `scf.for` carrying the
online softmax's state: prefetch, S = Q Kᵀ, the score ops and the mask, online softmax,
O += P V), then O / l staged through shared memory and stored. The score ops (the
program's elementwise ops between the contraction and the softmax) are built element by
element at the accumulator fragments' global coordinates by their rules
(`tensorcore_scores.SCORE_RULES`); the inputs they read are the kernel's arguments after V,
read before S = Q Kᵀ of each chunk: 16-bit tables over q and x (x a multiple of 8) from a
tile that cp.async copies into shared memory with K and V, the others from global memory
(two neighbouring keys per load when x is last and even). The ops on O / l before its cast
run the same way on the O fragments (`output_fragment`).

The module is verified and returned as text (what the lowering, the emulator and the
register budget read). Values a reader of that text looks for carry name locations, which
the printer uses as their SSA names: the arguments (%Q, %K, %V, %A<position>, %O), the
shared-memory views (%qs, %ks, %vs, %os, %bs<position>), the thread and block ids, the
scan over the chunks (%ext<n>) and the stream (%j, and its state %m, %l, %o per m tile).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

from mlir import ir
from mlir.dialects import arith, gpu, memref, nvgpu, scf, vector
from mlir.dialects import math as math_d

from napkin_mlir.backends.gpu import tensorcore_scores
from napkin_mlir.backends.gpu.fragments import A_ROWS, A_TILE, B_PAIR, B_PAIR_T, MMA_K, MMA_M, MMA_N, LaneAddress
from napkin_mlir.backends.gpu.tensorcore_ops import FragmentOps, KernelBuilder, scalar_type
from napkin_mlir.backends.gpu.tensorcore_plan import ELEM, PAD, AttentionPlan
from napkin_mlir.backends.gpu.tensorcore_scores import Element, ScoreInput
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.masks import MlirDomain, visited_chunks

VEC = 8  # elements per cp.async and per output store: 16 bytes
LOG2E = 1.4426950408889634
F32 = "f32"
WG = "#gpu.address_space<workgroup>"

Value = ir.Value


def emit_attention_kernel(plan: AttentionPlan, name: str = "attention_tc", max_registers: int | None = None) -> str:
    """The whole module (gpu.container_module with one kernel) as MLIR text; `max_registers`
    bounds ptxas's registers per thread (`nvvm.maxnreg`). The kernel's arguments (%Q, %K,
    %V, %A<position> for the inputs after V, then the outputs in the function's order: %O
    and %R<position> for an output per query row) and shared-memory views (%qs, %ks, %vs, %os,
    %bs<position>) carry name locations, which the text uses as their SSA names."""
    with napkin_context(), ir.Location.unknown():
        module = build_attention_module(plan, name, max_registers)
        module.operation.verify()
        text = io.StringIO()
        module.operation.print(file=text, use_name_loc_as_prefix=True)
        return text.getvalue()


def build_attention_module(plan: AttentionPlan, name: str, max_registers: int | None) -> ir.Module:
    """The module, in the active context."""
    el = scalar_type(ELEM[plan.dtype])
    names = ["Q", "K", "V", *(f"A{i.arg}" for i in plan.inputs)]
    # transposed (dK/dV): the kernel's rows are keys (K, V: plan.q of them), its stream the queries
    queries, keys = (plan.x, plan.q) if plan.transposed else (plan.q, plan.x)
    q_shape = (plan.b, plan.h, queries, plan.d) if plan.transposed else (plan.b, plan.h, plan.r, plan.q, plan.d)
    types = [
        _memref(q_shape, el),
        _memref((plan.b, plan.h, keys, plan.d), el),
        _memref((plan.b, plan.h, keys, plan.dv), el),
        *(_memref(i.shape, scalar_type(i.dtype)) for i in plan.inputs),
    ]
    outputs = plan.outputs
    for n, out in enumerate(outputs):  # O (or accumulators), and the outputs per query row, in order
        names.append(("O" if len(outputs) == 1 else f"O{n}") if out is None else f"R{out.position}")
        shape = (plan.b, plan.h, plan.q) if plan.transposed else (plan.b, plan.h, plan.r, plan.q)
        types.append(_memref((*shape, plan.dv), el) if out is None else _memref(shape, scalar_type(out.dtype)))
    module, body = _kernel_module(name, types, names, plan.threads, max_registers)
    with ir.InsertionPoint(body):
        k = _AttentionKernel(plan, body)
        k.shared_views()
        k.thread_ids()
        k.stream_extent()
        first = k.load_first_tiles()
        wrow = k.b.mul(k.warp, plan.warp_rows)
        qfrag = k.q_fragments(wrow)
        k.thread_rows(wrow)
        if plan.softmax:
            k.normalize_to_shared(first, k.stream(qfrag))
            k.store_output(k.O)
        else:
            k.store_accumulators(first, k.contraction_stream(k.row_fragments(qfrag)))
        gpu.ReturnOp([])
        k.b.order_constants()
    return module


def _kernel_module(
    entry: str, types: list[ir.Type], names: list[str], threads: int, max_registers: int | None
) -> tuple[ir.Module, ir.Block]:
    """A `gpu.container_module` with one kernel `entry` (`threads` per block, at least one CTA
    per SM, at most `max_registers` per thread), its arguments named, and its entry block."""
    module = ir.Module.create()
    module.operation.attributes["gpu.container_module"] = ir.UnitAttr.get()
    with ir.InsertionPoint(module.body):
        gmod = gpu.GPUModuleOp(f"{entry}_module")
        gmod.regions[0].blocks.append()
    with ir.InsertionPoint(gmod.regions[0].blocks[0]):
        ftype = ir.FunctionType.get(types, [])
        func = gpu.GPUFuncOp(ir.TypeAttr.get(ftype), sym_name=entry, kernel=True, known_block_size=[threads, 1, 1])
        i32 = ir.IntegerType.get_signless(32)
        func.operation.attributes["nvvm.minctasm"] = ir.IntegerAttr.get(i32, 1)
        if max_registers:
            func.operation.attributes["nvvm.maxnreg"] = ir.IntegerAttr.get(i32, max_registers)
        body = func.regions[0].blocks.append(*types, arg_locs=[ir.Location.name(n) for n in names])
    return module, body


class _AttentionKernel:
    """One build of the kernel: the plan, the builder and fragment ops, the types and the
    values that the steps share (thread ids, the stream's extent, the buffers)."""

    # set by thread_ids
    tid: Value
    head: Value  # the key/value head (block y)
    batch: Value  # block z
    lane: Value
    warp: Value
    g: Value  # row of the fragment (and row + 8)
    c: Value  # column pair
    q0: Value  # first query row of the CTA
    # set by stream_extent
    lower: Value  # the chunks of x this CTA streams: [lower, upper)
    upper: Value
    kv_end: Value  # keys past this are never loaded
    # set by q_fragments: where this lane's ldmatrix reads the Q tile (its column, per m tile its row)
    a_col: Value
    a_rows: list[Value]
    # set by thread_rows
    my_rows: list[list[Value]]  # the thread's CTA rows per m tile: g and g + 8
    my_q: list[list[Value]]  # and their q

    def __init__(self, plan: AttentionPlan, entry: ir.Block) -> None:
        self.plan = plan
        self.b = KernelBuilder(entry)
        self.el_name = ELEM[plan.dtype]
        self.el = scalar_type(self.el_name)
        self.ops = FragmentOps(self.b, self.el_name)
        self.row_len = plan.d + PAD
        args = list(entry.arguments)
        self.Q, self.K, self.V = args[0], args[1], args[2]
        self.chunk_mem = [args[a] for a in plan.chunk_args]  # the stream's chunks: K, V (or Q, dO)
        outputs = args[3 + len(plan.inputs) :]
        self.outputs = outputs
        self.O = outputs[plan.o_position]
        self.row_args = [a for a, out in zip(outputs, plan.outputs, strict=True) if out is not None]
        # transposed: an input's q (the stream's queries) is the kernel's column, its x its row
        self.axis_of = {"q": "x", "x": "q"} if plan.transposed else {}
        #: kernel arguments after V, by argument position in the program
        self.inputs = {i.arg: i for i in plan.inputs}
        self.input_args = {i.arg: a for i, a in zip(plan.inputs, args[3 : 3 + len(plan.inputs)], strict=True)}
        self.staged: dict[int, Value] = {}  # arg -> its shared tile
        self.acc_t = self.ops.acc_t
        self.a_t = self.ops.a_t
        self.per_row = plan.d // VEC  # cp.async vectors per row of Q and K
        self.tiles_m = range(plan.warp_rows // MMA_M)  # m16 tiles of one warp
        self.n_o = plan.dv // MMA_N  # n8 tiles of O
        self.n_s = plan.sx // MMA_N  # n8 tiles of S

    # --- prologue: shared memory, thread ids, the stream's extent ---------------------------

    def shared_views(self) -> None:
        b, plan, el = self.b, self.plan, self.el
        wg = ir.Attribute.parse(WG)
        base = gpu.DynamicSharedMemoryOp(
            ir.MemRefType.get([ir.ShapedType.get_dynamic_size()], ir.IntegerType.get_signless(8), memory_space=wg),
            loc=ir.Location.name("smem"),
        ).result

        def view(name: str, shape: list[int], t: ir.Type, offset: int) -> Value:
            memref_t = ir.MemRefType.get(shape, t, memory_space=wg)
            return memref.ViewOp(memref_t, base, b.idx(offset), [], loc=ir.Location.name(name)).result

        k_bytes = 2 * plan.sx * self.row_len * 2
        self.qs = view("qs", [plan.rows, self.row_len], el, 0)
        self.ks = view("ks", [2, plan.sx, self.row_len], el, plan.q_bytes)
        self.vs = view("vs", [2, plan.sx, plan.dv + PAD], el, plan.q_bytes + k_bytes)
        # O is staged in the Q tile's buffer
        self.os = self.qs if plan.dv == plan.d else view("os", [plan.rows, plan.dv + PAD], el, 0)
        offset = plan.q_bytes + k_bytes + 2 * plan.sx * (plan.dv + PAD) * 2
        for i in plan.staged_inputs:
            self.staged[i.arg] = view(f"bs{i.arg}", [2, plan.rows, plan.sx + PAD], scalar_type(i.dtype), offset)
            offset += plan.input_tile_bytes
        self.row_bufs = {plan.row_tiles[0]: self.qs}  # the tiles of the CTA's rows: Q (or K), then others
        for arg in plan.row_tiles[1:]:
            self.row_bufs[arg] = view(f"rs{arg}", [plan.rows, self.row_len], el, offset)
            offset += plan.q_bytes

    def thread_ids(self) -> None:
        b = self.b
        self.tid = gpu.thread_id(gpu.Dimension.x, loc=ir.Location.name("tid"))
        bx = gpu.block_id(gpu.Dimension.x, loc=ir.Location.name("bx"))
        self.head = gpu.block_id(gpu.Dimension.y, loc=ir.Location.name("kvh"))
        self.batch = gpu.block_id(gpu.Dimension.z, loc=ir.Location.name("bat"))
        self.lane = b.rem(self.tid, 32)
        self.warp = b.div(self.tid, 32)
        self.g = b.div(self.lane, 4)  # row of the fragment (and row + 8)
        self.c = b.rem(self.lane, 4)  # column pair
        self.q0 = b.mul(bx, self.plan.gq)

    def stream_extent(self) -> None:
        """The chunks of x this CTA visits: every chunk, or where the program's masks decide
        the stream (`plan.skips`), from the first to the last chunk where each mask's
        predicate may be true over the CTA's rows and the chunk's keys. The predicate is
        bounded by interval reasoning (`ir.masks.predicate_bounds`) in a scalar scan over the
        chunks, once per CTA: no dense mask is evaluated. Chunks outside are neither loaded
        nor computed; a chunk inside that no key of survives is computed masked."""
        b, plan, sx = self.b, self.plan, self.plan.sx
        n_chunks = -(-plan.x // sx)
        self.lower, self.visits = b.idx(0), b.idx(n_chunks)
        self.kv_end = b.idx(plan.x)  # keys past this are never loaded (zero-filled)
        if not plan.skips:
            return
        rows = (self.q0, b.add(self.q0, plan.gq - 1))
        extents = (plan.x, plan.q) if plan.transposed else (plan.q, plan.x)  # the masks' (q, x)
        self.lower, upper = visited_chunks(plan.skips, _Domain(b), rows, n_chunks, sx, extents, plan.transposed)
        # how many chunks the loop visits, at most all of them (the known bound helps LLVM)
        self.visits = arith.minsi(arith.subi(upper, self.lower), b.idx(n_chunks), loc=b.fresh("n"))
        self.kv_end = b.minu(b.mul(upper, sx), self.kv_end)

    # --- cp.async copies: each thread moves 16-byte vectors (8 elements) --------------------

    def copy_tile(
        self,
        dst: Value,
        dst_prefix: list[Value],
        src: Value,
        nrows: int,
        src_index: Callable[[Value, Value], list[Value]],
        valid: Callable[[Value, Value], Value],
        per_row: int,
    ) -> list[Value]:
        """The CTA's threads move the tile in rounds of one 16-byte cp.async each (row `row`,
        columns `col`.. of the tile from `src_index(row, col)`); what is not `valid(row, col)`
        (past the end of q or x) reads zero bytes (zero fill). When the last round is partial, its
        copies sit in an `scf.if`: the idle threads issue nothing (a copy of theirs would
        write some other thread's bytes). Returns the tokens of the unconditional copies;
        the commit group takes every earlier cp.async of the thread either way."""
        b, plan = self.b, self.plan
        chunks = nrows * per_row
        tokens = []
        for it in range(-(-chunks // plan.threads)):
            chunk = b.add(self.tid, it * plan.threads)
            row = b.div(chunk, per_row)
            col = b.mul(b.rem(chunk, per_row), VEC)
            n = arith.select(valid(row, col), b.idx(VEC), b.idx(0))
            partial = (it + 1) * plan.threads > chunks
            if partial:
                inside = scf.IfOp(b.ult(chunk, chunks))
                with ir.InsertionPoint(inside.then_block):
                    self._async_copy(dst, [*dst_prefix, row, col], src, src_index(row, col), n)
                    scf.YieldOp([])
            else:
                tokens.append(self._async_copy(dst, [*dst_prefix, row, col], src, src_index(row, col), n))
        return tokens

    def _async_copy(self, dst: Value, dst_index: list[Value], src: Value, src_index: list[Value], n: Value) -> Value:
        return nvgpu.DeviceAsyncCopyOp(
            dst, dst_index, src, src_index, ir.IntegerAttr.get(self.b.index, VEC), srcElements=n, bypassL1=True
        ).result

    def arg_axes(self, arg: int) -> tuple[str, ...]:
        """The axes of the kernel's argument `arg` (its memref's)."""
        if arg == 0:
            return ("b", "h", "q", "d") if self.plan.transposed else ("b", "h", "r", "q", "d")
        if arg in (1, 2):
            return ("b", "h", "x", "d")
        return self.inputs[arg].axes

    def q_src(self, row: Value, col: Value) -> list[Value]:
        b, gq = self.b, self.plan.gq
        ri = b.div(row, gq)  # which of the r query heads
        qi = b.minu(b.add(self.q0, b.rem(row, gq)), self.plan.q - 1)
        return [self.batch, self.head, ri, qi, col]

    def q_valid(self, row: Value, col: Value) -> Value:
        b = self.b
        qi = b.add(self.q0, b.rem(row, self.plan.gq))
        return b.ult(qi, self.plan.q)

    def kv_loader(self, chunk: Value, stage: Value) -> Value:
        """cp.async of K and V chunk `chunk` into `stage`, and of the staged inputs' tiles
        (the CTA's rows, the chunk's keys); returns the commit group's token."""
        b, plan = self.b, self.plan
        x0 = b.mul(chunk, plan.sx)
        tokens: list[Value] = []
        chunks = ((self.ks, self.chunk_mem[0], self.per_row), (self.vs, self.chunk_mem[-1], plan.dv // VEC))
        for buf, src, per_row in chunks[: len(self.chunk_mem)]:

            def src_index(row: Value, col: Value) -> list[Value]:
                # clamped: stays in bounds
                return [self.batch, self.head, b.minu(b.add(x0, row), plan.x - 1), col]

            def valid(row: Value, col: Value) -> Value:
                return b.ult(b.add(x0, row), self.kv_end)

            tokens += self.copy_tile(buf, [stage], src, plan.sx, src_index, valid, per_row)
        for inp in plan.staged_inputs:

            def input_index(row: Value, col: Value, inp: ScoreInput = inp) -> list[Value]:
                index = {"b": self.batch, "h": self.head, "r": b.div(row, plan.gq)}
                index["q"] = b.minu(b.add(self.q0, b.rem(row, plan.gq)), plan.q - 1)
                index["x"] = b.minu(b.add(x0, col), plan.x - VEC)  # clamped: stays in bounds
                return [index[a] for a in inp.axes]

            def input_valid(row: Value, col: Value) -> Value:
                keys = b.ult(b.add(x0, col), self.kv_end)
                return arith.andi(self.q_valid(row, col), keys)

            src = self.input_args[inp.arg]
            tokens += self.copy_tile(
                self.staged[inp.arg], [stage], src, plan.rows, input_index, input_valid, plan.sx // VEC
            )
        return nvgpu.DeviceAsyncCreateGroupOp(tokens).result

    def load_first_tiles(self) -> Value:
        """Copy the Q tile and K/V chunk 0, wait for both; returns chunk 0's group token."""
        b = self.b
        q_tokens: list[Value] = []
        for arg in self.plan.row_tiles:
            if arg == 0 and not self.plan.transposed:  # Q as (b, h, r, q, d)
                src, row_src = self.Q, self.q_src
            else:
                axes = self.arg_axes(arg)

                def row_src(row: Value, col: Value, axes: tuple[str, ...] = axes) -> list[Value]:
                    b, h, ri, qi, _ = self.q_src(row, col)
                    index = {"b": b, "h": h, "r": ri, "q" if not self.plan.transposed else "x": qi}
                    return [index.get(a, col) for a in axes]  # the last axis: the head dim

                src = self.input_args[arg] if arg > 2 else (self.Q, self.K, self.V)[arg]
            rows = self.plan.rows
            q_tokens += self.copy_tile(self.row_bufs[arg], [], src, rows, row_src, self.q_valid, self.per_row)
        nvgpu.DeviceAsyncCreateGroupOp(q_tokens)
        first = self.kv_loader(self.lower, b.idx(0))  # the first chunk goes to stage 0
        nvgpu.DeviceAsyncWaitOp(first, numGroups=1)
        gpu.BarrierOp()
        return first

    # --- Q fragments and this thread's rows ---------------------------------------------------

    def lane_address(self, pattern: LaneAddress) -> tuple[Value, Value]:
        """This lane's (row, col) for `ldmatrix.x4` by `pattern` (`fragments.LaneAddress`)."""
        b, lane = self.b, self.lane
        row = b.rem(lane, pattern.row_mod)
        if pattern.row_step and pattern.row_div < 32:
            row = b.add(row, b.mul(b.div(lane, pattern.row_div), pattern.row_step))
        col = b.div(lane, pattern.col_div)
        return row, b.mul(col if pattern.col_div == 16 else b.rem(col, 2), 8)

    def q_fragments(self, wrow: Value) -> list[list[Value]] | None:
        """A operands for the d/16 k-steps of S = Q K^T, per m16 tile of the warp, loaded once
        (None when `plan.q_in_registers` is false: `q_fragment` loads each at its k-step)."""
        b = self.b
        a_row, self.a_col = self.lane_address(A_TILE)
        self.a_rows = [b.add(b.add(wrow, mi * MMA_M), a_row) for mi in self.tiles_m]
        if not self.plan.q_in_registers:
            return None
        return [[self.q_fragment(mi, kt) for kt in range(self.plan.d // MMA_K)] for mi in self.tiles_m]

    def q_fragment(self, mi: int, kt: int, buf: Value | None = None) -> Value:
        """The A operand of m tile `mi` at k-step `kt`: one ldmatrix.x4 from the Q tile (or the
        tile `buf` of other rows)."""
        col = self.b.add(self.a_col, kt * MMA_K)
        return self.ops.ldmatrix(self.qs if buf is None else buf, [self.a_rows[mi], col], False)

    def row_fragments(self, qfrag: list[list[Value]] | None) -> dict[int, list[list[Value]] | None]:
        """The A operands of every row tile (the first's are `qfrag`), per m tile and k-step,
        in registers; None each when `plan.q_in_registers` is false (read at every k-step)."""
        if qfrag is None:
            return dict.fromkeys(self.plan.row_tiles)
        frags: dict[int, list[list[Value]] | None] = {self.plan.row_tiles[0]: qfrag}
        for arg in self.plan.row_tiles[1:]:
            steps = range(self.plan.d // MMA_K)
            frags[arg] = [[self.q_fragment(mi, kt, self.row_bufs[arg]) for kt in steps] for mi in self.tiles_m]
        return frags

    def thread_rows(self, wrow: Value) -> None:
        """Rows of this thread (per m tile, rows g and g+8): flattened CTA rows, and their q."""
        b = self.b
        my_rows = []
        for mi in self.tiles_m:
            base = b.add(b.add(wrow, mi * MMA_M), self.g)
            my_rows.append([base, b.add(base, 8)])
        self.my_rows = my_rows
        self.my_q = [[b.add(self.q0, b.rem(rw, self.plan.gq)) for rw in pair] for pair in my_rows]
        self.positions = _Positions(self)

    # --- the stream over x --------------------------------------------------------------------

    def state_names(self) -> list[str]:
        """The loop's carried state, in order: per m tile, the row max m and row sum l of its
        two row halves, then its O accumulators."""
        names = []
        for mi in self.tiles_m:
            names += [f"m{mi}_0", f"m{mi}_1", f"l{mi}_0", f"l{mi}_1"] + [f"o{mi}_{nt}" for nt in range(self.n_o)]
        return names

    def stream(self, qfrag: list[list[Value]] | None) -> dict[str, Value]:
        """The `scf.for` over the chunks of x, carrying the row max m, the row sum l and the
        O accumulators of each m tile. Returns the loop's results by state name."""
        b, plan, acc_t = self.b, self.plan, self.acc_t
        self.ninf = b.const(-math.inf, F32)
        zero = b.const(0.0, F32)
        self.zacc = b.const(0.0, str(acc_t))
        names = self.state_names()
        init = []
        for _ in self.tiles_m:
            init += [self.ninf, self.ninf, zero, zero] + [self.zacc] * self.n_o
        # the loop counts the visited chunks from 0, at most all of them (a constant start and a
        # known bound keep the loop's index arithmetic small when the masks bound the chunks);
        # chunk j = lower + t is in stage t % 2
        loop = scf.ForOp(b.idx(0), self.visits, b.idx(1), init, loc=b.fresh("st"))
        _name_arguments(loop, ["t", *names])
        with ir.InsertionPoint(loop.body):
            t = loop.induction_variable
            j = b.add(self.lower, t)
            old = dict(zip(names, loop.inner_iter_args, strict=True))
            stage = b.rem(t, 2)
            # prefetch chunk j+1 into the other stage while chunk j computes (past this CTA's last
            # chunk the copies read nothing: every row is past kv_end, so they zero-fill an unused stage)
            group = self.kv_loader(b.add(j, 1), b.rem(b.add(t, 1), 2))
            nvgpu.DeviceAsyncWaitOp(group, numGroups=1)
            gpu.BarrierOp()
            x0 = b.mul(j, plan.sx)
            # the inputs the score ops read are loaded before S = Q K^T, which hides their latency
            read = sorted({o.ref for op in plan.score_ops for o in op.operands if o.kind == "input"})
            coords = _Coordinates(self, self.chunk_columns(x0), stage) if read else None
            for arg in read:
                assert coords is not None
                coords.read_all(self.inputs[arg])
            s = self.scores(stage, qfrag)
            # the scores stay unscaled: the scale (positive) goes into one fma per element with
            # the row max (exp(s*scale - m) = exp2(s*scale*log2e - m') with m' in log2 units)
            scl = b.const(plan.scale * LOG2E, F32)
            svals = self.masked_scores(s, x0, coords)
            new: dict[str, Value] = {}
            pfrag: list[list[Value]] = []
            alpha_v: list[Value] = []
            for mi in self.tiles_m:
                frags, alphas = self.online_softmax(mi, svals[mi], scl, old, new)
                pfrag.append(frags)
                alpha_v.append(vector.from_elements(acc_t, [alphas[0], alphas[0], alphas[1], alphas[1]]))
            o_acc = self.accumulate_pv(stage, pfrag, alpha_v, old)
            for mi in self.tiles_m:
                for nt in range(self.n_o):
                    new[f"o{mi}_{nt}"] = o_acc[mi][nt]
            gpu.BarrierOp()  # the next iteration's copy overwrites the stage read here
            scf.YieldOp([new[n] for n in names])
        return dict(zip(names, loop.results, strict=True))

    def contraction_stream(self, frags: dict[int, list[list[Value]]]) -> dict[str, Value]:
        """Without a softmax (`plan.softmax` false): the `scf.for` over the chunks of the stream
        carrying only accumulators, acc_a += F_a · C_a (`plan.accumulations`), with F_a a value
        of the program's ops on the score contractions (`plan.score_pairs`: each a row tile's
        fragments against a chunk), 0 past the stream's end, as A fragments (hi + lo for an f32
        F), and C_a a chunk (ldmatrix.trans). Returns the loop's results by state name
        (`a<accumulator>o<m tile>_<n tile>`)."""
        b, plan, acc_t = self.b, self.plan, self.acc_t
        self.ninf = b.const(-math.inf, F32)
        self.zacc = b.const(0.0, str(acc_t))
        accs = range(len(plan.accumulations))
        names = [f"a{a}o{mi}_{nt}" for a in accs for mi in self.tiles_m for nt in range(self.n_o)]
        loop = scf.ForOp(b.idx(0), self.visits, b.idx(1), [self.zacc] * len(names), loc=b.fresh("st"))
        _name_arguments(loop, ["t", *names])
        bufs = dict(zip(plan.chunk_args, (self.ks, self.vs), strict=False))
        p32_t = ir.VectorType.get(self.a_t.shape, b.f32)
        with ir.InsertionPoint(loop.body):
            t = loop.induction_variable
            j = b.add(self.lower, t)
            old = dict(zip(names, loop.inner_iter_args, strict=True))
            stage = b.rem(t, 2)
            group = self.kv_loader(b.add(j, 1), b.rem(b.add(t, 1), 2))
            nvgpu.DeviceAsyncWaitOp(group, numGroups=1)
            gpu.BarrierOp()
            x0 = b.mul(j, plan.sx)
            coords = _Coordinates(self, self.chunk_columns(x0), stage)
            read = sorted({o.ref for op in plan.score_ops for o in op.operands if o.kind == "input"})
            for arg in read:
                coords.read_all(self.inputs[arg])
            s = [self.scores(stage, frags[row], bufs[chunk], self.row_bufs[row]) for row, chunk in plan.score_pairs]
            zero = b.const(0.0, F32)
            past = [
                [arith.cmpi(arith.CmpIPredicate.uge, coords.cols[nt][k], b.idx(plan.x)) for k in range(2)]
                for nt in range(self.n_s)
            ]
            new: list[Value] = []
            for a, (f, chunk, split) in enumerate(plan.accumulations):
                afrags = []
                for mi in self.tiles_m:
                    values = {
                        (nt, i, k): self.score_values(
                            [vector.extract(x[mi][nt], [], [i, k]) for x in s], coords, mi, i, nt, k
                        )
                        for nt in range(self.n_s)
                        for i in range(2)
                        for k in range(2)
                    }
                    steps = []
                    for kt in range(plan.sx // MMA_K):
                        elems = [
                            arith.select(past[2 * kt + half][k], zero, values[(2 * kt + half, i, k)][f])
                            for half, i in A_ROWS
                            for k in range(2)
                        ]
                        whole = vector.from_elements(p32_t, elems)
                        hi = arith.truncf(self.a_t, whole)
                        parts = [hi]
                        if split:  # the rest of F, exactly representable as F - hi, rounded again
                            parts.append(arith.truncf(self.a_t, arith.subf(whole, arith.extf(p32_t, hi))))
                        steps.append(parts)
                    afrags.append(steps)
                acc = [[old[f"a{a}o{mi}_{nt}"] for nt in range(self.n_o)] for mi in self.tiles_m]
                acc = self.accumulate(stage, bufs[chunk], afrags, acc)
                new += [acc[mi][nt] for mi in self.tiles_m for nt in range(self.n_o)]
            gpu.BarrierOp()  # the next iteration's copy overwrites the stage read here
            scf.YieldOp(new)
        return dict(zip(names, loop.results, strict=True))

    def store_accumulators(self, first: Value, final: dict[str, Value]) -> None:
        """Without a softmax: each output, the accumulator `plan.output_accs` names, converted
        to the element type, staged through shared memory (the first row tile's buffer) and
        stored with 16-byte vectors."""
        b, plan = self.b, self.plan
        nvgpu.DeviceAsyncWaitOp(first, numGroups=0)  # the last (empty) prefetch
        o16_t = ir.VectorType.get(self.acc_t.shape, self.el)
        for out, a in zip(self.outputs, plan.output_accs, strict=True):
            for mi in self.tiles_m:
                for nt in range(self.n_o):
                    o16 = arith.truncf(o16_t, final[f"a{a}o{mi}_{nt}"])
                    col = b.add(b.mul(self.c, 2), nt * MMA_N)
                    for i in range(2):
                        vector.store(vector.extract(o16, [], [i]), self.os, [self.my_rows[mi][i], col])
            gpu.BarrierOp()
            self.store_output(out)
            gpu.BarrierOp()  # the next output is staged in the same buffer

    def scores(
        self, stage: Value, qfrag: list[list[Value]] | None, buf: Value | None = None, rows: Value | None = None
    ) -> list[list[Value]]:
        """S = Q K^T (or rows·chunk^T of another row tile and the chunk `buf`): n_s
        accumulators of 16x8 per m tile; each K fragment serves every m tile.
        One ldmatrix.x4 per k-step and pair of n tiles: lane l gives row 8(nt + l//16) + l%8 of
        the chunk, columns 16kt + 8((l//8)%2) .. +8."""
        b = self.b
        b_row, b_col = self.lane_address(B_PAIR)
        s = [[self.zacc] * self.n_s for _ in self.tiles_m]
        for nt in range(0, self.n_s, 2):
            krow = b.add(b_row, nt * MMA_N)
            for kt in range(self.plan.d // MMA_K):
                kbs = self.ops.b_pair(self.ks if buf is None else buf, [stage, krow, b.add(b_col, kt * MMA_K)], False)
                for mi in self.tiles_m:
                    a = qfrag[mi][kt] if qfrag is not None else self.q_fragment(mi, kt, rows)
                    for half, kb in enumerate(kbs):
                        s[mi][nt + half] = self.ops.mma(a, kb, s[mi][nt + half])
        return s

    def chunk_columns(self, x0: Value) -> list[list[Value]]:
        """The keys of this thread's scores in the chunk at x0: [n tile][element k], x0 + 8nt + 2c + k."""
        b = self.b
        return [[b.add(x0, b.add(b.mul(self.c, 2), nt * MMA_N + k)) for k in range(2)] for nt in range(self.n_s)]

    def masked_scores(
        self, s: list[list[Value]], x0: Value, coords: _Coordinates | None
    ) -> list[list[list[list[Value]]]]:
        """The scores as scalars [m tile][n tile][row half i][element k]: element (nt, i, k) is
        row my_rows[mi][i], col x0 + 8nt + 2c + k. The program's score ops run on each
        (`score_element`; `coords`: the chunk's coordinates and the inputs read so far), then
        the scores past x become -inf."""
        b, plan, n_s = self.b, self.plan, self.n_s
        coords = coords or _Coordinates(self, self.chunk_columns(x0), None)
        cols = coords.cols
        past_x = [
            [arith.cmpi(arith.CmpIPredicate.uge, cols[nt][k], b.idx(plan.x)) for k in range(2)] for nt in range(n_s)
        ]
        svals: list[list[list[list[Value]]]] = []
        for mi in self.tiles_m:
            per_tile = []
            for nt in range(n_s):
                tile = []
                for i in range(2):
                    pair = []
                    for k in range(2):
                        v = vector.extract(s[mi][nt], [], [i, k])
                        if plan.score_ops:
                            v = self.score_element(v, coords, mi, i, nt, k)
                        pair.append(arith.select(past_x[nt][k], self.ninf, v))
                    tile.append(pair)
                per_tile.append(tile)
            svals.append(per_tile)
        return svals

    def score_element(self, s: Value | list[Value], coords: _Coordinates, mi: int, i: int, nt: int, k: int) -> Value:
        """The program's score ops on one element `s` of S (value 0 of the ops; a list: one
        element of each score contraction), each by its rule; an input is read once per
        element at the element's global coordinates."""
        return self.score_values(s if isinstance(s, list) else [s], coords, mi, i, nt, k)[-1]

    def score_values(self, s: list[Value], coords: _Coordinates, mi: int, i: int, nt: int, k: int) -> list[Value]:
        """Every value of the program's score ops on one element (`s`: one element of each
        score contraction), numbered as the ops number them."""

        def read(arg: int, dtype: str) -> Value:
            inp = self.inputs[arg]
            return tensorcore_scores.convert(coords.read(inp, mi, i, nt, k), inp.dtype, dtype)

        row, col = self.positions.q(mi, i), self.positions.x(coords, nt, k)
        if self.plan.transposed:  # the masks' positions: the column is the query, the row the key
            at = Element(col, row, (self.plan.x, self.plan.q))
        else:
            at = Element(row, col, (self.plan.q, self.plan.x))
        return tensorcore_scores.apply_ops(self.b, self.plan.score_ops, s, read, at)

    def online_softmax(
        self,
        mi: int,
        svals: list[list[list[Value]]],
        scl: Value,
        old: dict[str, Value],
        new: dict[str, Value],
    ) -> tuple[list[Value], list[Value]]:
        """One m tile's online softmax step: the new row max and (per-thread) row sum go into
        `new`; returns P as A fragments and the rescale factors of the two row halves."""
        b, n_s = self.b, self.n_s
        alphas: list[Value] = []
        offsets: list[Value] = []  # the row max subtracted in the exponent
        for i in range(2):
            m_old = old[f"m{mi}_{i}"]
            mx = m_old
            for nt in range(n_s):
                for k in range(2):
                    mx = arith.maximumf(mx, svals[nt][i][k])
            mx = self.ops.quad_reduce(mx, "max")
            new[f"m{mi}_{i}"] = mx
            if self.plan.score_ops:
                # score ops may give a row -inf throughout a chunk: subtract 0 then (p = 0, alpha = 0)
                empty = arith.cmpf(arith.CmpFPredicate.OEQ, mx, self.ninf)
                mx = arith.select(empty, b.const(0.0, F32), mx)
            offsets.append(mx)
            drop = arith.mulf(arith.subf(m_old, mx), scl)
            alphas.append(math_d.exp2(drop))  # 2^((m - m')·scale)
        # p = 2^(s·scale - m'·scale): one fma and one ex2 per element
        neg_max = [arith.negf(arith.mulf(offsets[i], scl)) for i in range(2)]
        probs: list[list[list[Value]]] = []
        for nt in range(n_s):
            tile = []
            for i in range(2):
                args = [math_d.fma(svals[nt][i][k], scl, neg_max[i]) for k in range(2)]
                tile.append([math_d.exp2(x) for x in args])
            probs.append(tile)
        for i in range(2):
            total = arith.mulf(old[f"l{mi}_{i}"], alphas[i])
            for nt in range(n_s):
                for k in range(2):
                    total = arith.addf(total, probs[nt][i][k])
            new[f"l{mi}_{i}"] = total  # per-thread partial sum; the quad reduces it at the end
        # P as A fragments: tiles 2t and 2t+1 form the 16x16 A operand of k-step t
        p32_t = ir.VectorType.get(self.a_t.shape, b.f32)
        frags = []
        for t in range(self.plan.sx // MMA_K):
            elems = [probs[2 * t + half][i][k] for half, i in A_ROWS for k in range(2)]
            frags.append(arith.truncf(self.a_t, vector.from_elements(p32_t, elems)))
        return frags, alphas

    def accumulate_pv(
        self, stage: Value, pfrag: list[list[Value]], alpha_v: list[Value], old: dict[str, Value]
    ) -> list[list[Value]]:
        """Rescale O and accumulate P V (V fragments transposed by ldmatrix, shared by the m
        tiles): one ldmatrix.x4.trans per k-step and pair of n tiles, lane l giving row
        16t + l%16 of the chunk at columns 8(nt + l//16) .. +8 of the head dim."""
        o_acc = [[arith.mulf(old[f"o{mi}_{nt}"], alpha_v[mi]) for nt in range(self.n_o)] for mi in self.tiles_m]
        return self.accumulate(stage, self.vs, [[[f] for f in frags] for frags in pfrag], o_acc)

    def accumulate(
        self, stage: Value, buf: Value, afrags: list[list[list[Value]]], acc: list[list[Value]]
    ) -> list[list[Value]]:
        """acc += A · chunk with the chunk `buf` (V, or K) as the B operand over x, transposed
        by ldmatrix; `afrags[mi][t]` are the A fragments of m tile mi at k-step t, each
        accumulated (two for an f32 A split into hi + lo)."""
        b, n_o = self.b, self.n_o
        v_row, v_col = self.lane_address(B_PAIR_T)
        acc = [list(row) for row in acc]
        for nt in range(0, n_o, 2):
            for t in range(self.plan.sx // MMA_K):
                index = [stage, b.add(v_row, t * MMA_K), b.add(v_col, nt * MMA_N)]
                if nt + 1 < n_o:
                    vbs: tuple[Value, ...] = self.ops.b_pair(buf, index, True)
                else:  # an odd last n8 tile of V's head dim: one B fragment (ldmatrix.x2, lanes 0-15)
                    vbs = (self.ops.b_single(buf, index, True),)
                for mi in self.tiles_m:
                    for half, vb in enumerate(vbs):
                        for a in afrags[mi][t]:
                            acc[mi][nt + half] = self.ops.mma(a, vb, acc[mi][nt + half])
        return acc

    # --- finish: O / l, convert, store the valid rows ----------------------------------------

    def normalize_to_shared(self, first: Value, final: dict[str, Value]) -> None:
        """O / l in the element type, staged through shared memory (the Q tile's buffer, free
        since its fragments live in registers)."""
        b, acc_t = self.b, self.acc_t
        nvgpu.DeviceAsyncWaitOp(first, numGroups=0)  # the last (empty) prefetch
        o16_t = ir.VectorType.get(acc_t.shape, self.el)
        for mi in self.tiles_m:
            inv = []
            for i in range(2 if self.plan.softmax else 0):
                total = self.ops.quad_reduce(final[f"l{mi}_{i}"], "sum")
                inv.append(arith.divf(b.const(1.0, F32), total))
                if self.plan.row_outputs:
                    self.store_row_outputs(final[f"m{mi}_{i}"], total, mi, i)
            for nt in range(self.n_o):
                o = final[f"o{mi}_{nt}"]
                if inv:  # O / l
                    o = arith.mulf(o, vector.from_elements(acc_t, [inv[0], inv[0], inv[1], inv[1]]))
                if self.plan.output_ops:
                    o = self.output_fragment(o, mi, nt)
                o16 = arith.truncf(o16_t, o)
                col = b.add(b.mul(self.c, 2), nt * MMA_N)
                for i in range(2):
                    pair = vector.extract(o16, [], [i])
                    vector.store(pair, self.os, [self.my_rows[mi][i], col])
        gpu.BarrierOp()

    def store_row_outputs(self, m: Value, total: Value, mi: int, i: int) -> None:
        """The outputs per query row (`plan.row_outputs`, e.g. the row log-sum-exp m + log l)
        of the thread's row `my_rows[mi][i]`, from its row max (scaled back to the program's
        scores: the kernel's is taken before the folded positive scale) and the quad's row
        sum, each by its rules; the quad's first lane stores them, rows past q are skipped."""
        b, plan = self.b, self.plan
        row = self.my_rows[mi][i]
        q = self.my_q[mi][i]
        index = {"b": self.batch, "h": self.head, "r": b.div(row, plan.gq), "q": q}
        reader_index = {**index, "q": b.minu(q, plan.q - 1)}
        values = [arith.mulf(m, b.const(plan.scale, F32)), total]
        stores = arith.andi(arith.cmpi(arith.CmpIPredicate.eq, self.c, b.idx(0)), b.ult(q, plan.q))
        inside = scf.IfOp(stores)
        with ir.InsertionPoint(inside.then_block):
            for out, arg in zip(plan.row_outputs, self.row_args, strict=True):
                got = tensorcore_scores.apply_ops(
                    b, out.ops, values, self.global_reader(reader_index), Element(None, None)
                )
                v = tensorcore_scores.convert(got[out.result], F32, out.dtype)
                memref.store(v, arg, [index[a] for a in ("b", "h", "r", "q")])
            scf.YieldOp([])

    def output_fragment(self, o: Value, mi: int, nt: int) -> Value:
        """The program's ops on O / l before its cast, on each element of one accumulator
        fragment (rows my_rows[mi][i], head column 8nt + 2c + k), each by its rule; inputs are
        read from global memory at the element's (b, h, r, q, column)."""
        b, plan = self.b, self.plan
        out = []
        for i in range(2):
            index = {"b": self.batch, "h": self.head, "r": b.div(self.my_rows[mi][i], plan.gq)}
            index["q"] = b.minu(self.my_q[mi][i], plan.q - 1)  # rows past q are never stored
            for k in range(2):
                col = b.add(b.mul(self.c, 2), nt * MMA_N + k)  # along V's head axis
                value = vector.extract(o, [], [i, k])
                read = self.global_reader({**index, "": col})  # the one other axis: the head
                out.append(tensorcore_scores.apply_ops(b, plan.output_ops, [value], read, Element(None, None))[-1])
        return vector.from_elements(self.acc_t, out)

    def global_reader(self, index: dict[str, Value]) -> Callable[[int, str], Value]:
        """`read` for `apply_ops`: an input loaded from global memory at `index` by axis name
        (an axis not named there at `index[""]`), converted to the type the op reads."""

        def read(arg: int, dtype: str) -> Value:
            inp = self.inputs[arg]
            v = memref.load(self.input_args[arg], [index[a] if a in index else index[""] for a in inp.axes])
            return tensorcore_scores.convert(v, inp.dtype, dtype)

        return read

    def store_output(self, out: Value) -> None:
        """The staged O (or accumulator) to `out` in global memory with 16-byte vector stores,
        one 8-element row piece per thread, rows past q skipped."""
        b, plan, gq = self.b, self.plan, self.plan.gq
        per_row = plan.dv // VEC
        chunks = plan.rows * per_row
        piece_t = ir.VectorType.get([VEC], self.el)
        for it in range(-(-chunks // plan.threads)):
            chunk = b.add(self.tid, it * plan.threads)
            row = b.div(chunk, per_row)
            col = b.mul(b.rem(chunk, per_row), VEC)
            qi = b.add(self.q0, b.rem(row, gq))
            ok = arith.andi(b.ult(chunk, chunks), b.ult(qi, plan.q))
            inside = scf.IfOp(ok)
            with ir.InsertionPoint(inside.then_block):
                piece = vector.load(piece_t, self.os, [row, col])
                where = [qi, col] if plan.transposed else [b.div(row, gq), qi, col]
                vector.store(piece, out, [self.batch, self.head, *where], alignment=16)
                scf.YieldOp([])


class _Domain(MlirDomain):
    """`ir.masks.MlirDomain` with the kernel's cached index constants."""

    def __init__(self, b: KernelBuilder) -> None:
        self.b = b

    def const(self, v: int) -> Value:
        return self.b.idx(int(v))


def _name_arguments(loop: scf.ForOp, names: list[str]) -> None:
    """Name the induction variable and carried values of `loop` in the printed text."""
    for arg, name in zip(loop.body.arguments, names, strict=True):
        arg.set_location(ir.Location.name(name))


def _memref(shape: tuple[int, ...], el: ir.Type) -> ir.MemRefType:
    return ir.MemRefType.get(list(shape), el)


class _Positions:
    """The global (q, x) of a score element where the score ops read positions (the masks'
    predicates): index values, or i32 ones when every mask computes its positions in i32
    (`ScoreOp.positions`). In i32 the thread's rows are cast once and a chunk's keys are
    x0 + 2c + (8 nt + k) from one cast of x0: no 64-bit value per key lives across the loop."""

    def __init__(self, k: _AttentionKernel) -> None:
        self.k = k
        masks = [op for op in k.plan.score_ops if op.name == "napkin.mask"]
        self.narrow = bool(masks) and all(op.positions == "i32" for op in masks)
        self.rows = [[arith.index_cast(k.b.i32, q) for q in pair] for pair in k.my_q] if self.narrow else k.my_q

    def q(self, mi: int, i: int) -> Value:
        return self.rows[mi][i]

    def x(self, coords: _Coordinates, nt: int, k: int) -> Value:
        if not self.narrow:
            return coords.cols[nt][k]
        if coords.first32 is None:
            coords.first32 = arith.index_cast(self.k.b.i32, coords.cols[0][0])  # x0 + 2c
        return arith.addi(coords.first32, self.k.b.const(8 * nt + k, "i32"))


class _Coordinates:
    """The global index along each axis of the scores of one chunk's elements, and the inputs
    read there: b and h from the block, r and q from the thread's rows, x from the columns.
    Each index is built once, at its first use; q and x are clamped into the arrays where
    the tiles overrun them (rows past q are never stored, keys past x are masked). An input
    whose last axis is x, of even length, is read two neighbouring keys (the thread's
    columns 2c, 2c + 1) at a time with one vector load."""

    def __init__(self, k: _AttentionKernel, cols: list[list[Value]], stage: Value | None) -> None:
        self.k = k
        self.cols = cols
        self.stage = stage  # the K/V stage of the chunk, which holds the staged inputs' tiles too
        self.known: dict[tuple[str, int, int], Value] = {}
        self.pairs: dict[tuple[int, int, int, int], Value] = {}
        self.values: dict[tuple[int, int, int, int, int], Value] = {}
        self.first32: Value | None = None  # x0 + 2c in i32 (`_Positions`)

    def index(self, axis: str, mi: int, i: int, nt: int, k: int) -> Value:
        """The index along `axis` of element (mi, i, nt, k); axis "xp": of its pair's first key."""
        kernel, b, plan = self.k, self.k.b, self.k.plan
        if axis == "b":
            return kernel.batch
        if axis == "h":
            return kernel.head
        key = (axis, nt, k) if axis in ("x", "xp") else (axis, mi, i)
        if key not in self.known:
            if axis == "x":
                col = self.cols[nt][k]
                self.known[key] = col if plan.x % plan.sx == 0 else b.minu(col, plan.x - 1)
            elif axis == "xp":
                col = self.cols[nt][0]
                self.known[key] = col if plan.x % plan.sx == 0 else b.minu(col, plan.x - 2)
            elif axis == "q":
                row = kernel.my_q[mi][i]
                self.known[key] = row if plan.q % plan.gq == 0 else b.minu(row, plan.q - 1)
            else:  # r: which query head of the key/value head's group
                self.known[key] = b.div(kernel.my_rows[mi][i], plan.gq)
        return self.known[key]

    def read_all(self, inp: ScoreInput) -> None:
        """Read input `inp` at every score element of the chunk."""
        for mi in self.k.tiles_m:
            for nt in range(self.k.n_s):
                for i in range(2):
                    for k in range(2):
                        self.read(inp, mi, i, nt, k)

    def read(self, inp: ScoreInput, mi: int, i: int, nt: int, k: int) -> Value:
        """Input `inp` at element (mi, i, nt, k), in its own element type (read once: an
        input without a row axis once per key, without x once per row; transposed, q is the
        column and x the row)."""
        axes = self.roles(inp)
        if not {"q", "r"} & set(axes):
            mi = i = 0
        if "x" not in axes:
            nt = k = 0
        if (inp.arg, mi, i, nt, k) not in self.values:
            self.values[(inp.arg, mi, i, nt, k)] = self._load(inp, mi, i, nt, k)
        return self.values[(inp.arg, mi, i, nt, k)]

    def roles(self, inp: ScoreInput) -> tuple[str, ...]:
        """`inp`'s axes as the kernel's: q its rows, x its columns."""
        return tuple(self.k.axis_of.get(a, a) for a in inp.axes)

    def _load(self, inp: ScoreInput, mi: int, i: int, nt: int, k: int) -> Value:
        kernel, b = self.k, self.k.b
        pair_t = ir.VectorType.get([2], scalar_type(inp.dtype))
        if inp in kernel.plan.staged_inputs:  # from the chunk's tile in shared memory, a pair of keys
            key = (inp.arg, mi, i, nt)
            if key not in self.pairs:
                assert self.stage is not None
                col = b.add(b.mul(kernel.c, 2), nt * MMA_N)
                index = [self.stage, kernel.my_rows[mi][i], col]
                self.pairs[key] = vector.load(pair_t, kernel.staged[inp.arg], index)
            return vector.extract(self.pairs[key], [], [k])
        arg = kernel.input_args[inp.arg]
        axes = self.roles(inp)
        if axes[-1] != "x" or kernel.plan.x % 2:
            return memref.load(arg, [self.index(a, mi, i, nt, k) for a in axes])
        key = (inp.arg, mi, i, nt)
        if key not in self.pairs:
            index = [self.index(a, mi, i, nt, 0) for a in axes[:-1]] + [self.index("xp", mi, i, nt, 0)]
            self.pairs[key] = vector.load(pair_t, arg, index)
        return vector.extract(self.pairs[key], [], [k])
