"""The tensor-core attention kernel as MLIR text, from an `AttentionPlan`.

`emit_attention_kernel(plan)` writes the whole module: one `gpu.func` in a
`gpu.container_module`, unrolled at the fragment level (see `tensorcore.py` for what the
kernel does), through the text emitter and fragment ops of `tensorcore_text.py`.
`_AttentionKernel` writes the kernel step by step, in the order the text comes out:
shared-memory views and thread ids, the stream's extent, the first copies, the Q fragments,
the stream over `x` (prefetch, S = Q Kᵀ, the score ops and the mask, online softmax,
O += P V), then O / l staged through shared memory and stored. The score ops (the program's
elementwise ops between the contraction and the softmax) are written element by element at
the accumulator fragments' global coordinates by their rules (`tensorcore_scores.py`); the
inputs they read are the kernel's arguments after V, read before S = Q Kᵀ of each chunk:
16-bit tables over q and x (x a multiple of 8) from a tile that cp.async copies into shared
memory with K and V, the others from global memory (two neighbouring keys per load when x is
last and even). The ops on O / l before its cast run the same way on the O fragments
(`output_fragment`). For plain
attention every step keeps its order of SSA names and first uses of constants, so the text
stays the same byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from napkin_mlir.backends.gpu.fragments import A_ROWS, MMA_K, MMA_M, MMA_N
from napkin_mlir.backends.gpu.tensorcore_plan import ELEM, PAD, AttentionPlan
from napkin_mlir.backends.gpu.tensorcore_scores import SCORE_RULES, Element, Operand, ScoreInput
from napkin_mlir.backends.gpu.tensorcore_text import FragmentOps, TextEmitter
from napkin_mlir.ir.masks import predicate_bounds

VEC = 8  # elements per cp.async and per output store: 16 bytes
LOG2E = 1.4426950408889634
F32 = "f32"
WG = "#gpu.address_space<workgroup>"


def emit_attention_kernel(plan: AttentionPlan, name: str = "attention_tc", max_registers: int | None = None) -> str:
    """The whole module (gpu.container_module with one kernel) as MLIR text; `max_registers`
    bounds ptxas's registers per thread (`nvvm.maxnreg`)."""
    k = _AttentionKernel(plan)
    k.shared_views()
    k.thread_ids()
    k.stream_extent()
    first = k.load_first_tiles()
    wrow = k.e.mul(k.warp, k.e.idx(plan.warp_rows))
    qfrag = k.q_fragments(wrow)
    my_rows, my_q = k.thread_rows(wrow)
    loop_res, state = k.stream(qfrag, my_q)
    k.normalize_to_shared(first, loop_res, state, my_rows)
    k.store_output()
    k.e.emit("gpu.return")
    return k.module_text(name, max_registers)


class _AttentionKernel:
    """One emission of the kernel: the plan, the emitter and fragment ops, the types and the
    SSA names that the steps share (thread ids, the stream's extent, the stream's constants)."""

    # set by thread_ids
    tid: str
    head: str  # the key/value head (block y)
    batch: str  # block z
    lane: str
    warp: str
    g: str  # row of the fragment (and row + 8)
    c: str  # column pair
    q0: str  # first query row of the CTA
    # set by stream_extent
    lower: str  # the chunks of x this CTA streams: [lower, upper)
    upper: str
    kv_end: str  # keys past this are never loaded
    # set by q_fragments: where this lane's ldmatrix reads the Q tile (its column, per m tile its row)
    a_col: str
    a_rows: list[str]
    # set by thread_rows
    my_rows: list[list[str]]  # the thread's CTA rows per m tile: g and g + 8
    my_q: list[list[str]]  # and their q
    # set by stream
    ninf: str
    zacc: str

    def __init__(self, plan: AttentionPlan) -> None:
        self.plan = plan
        self.e = TextEmitter()
        self.el = el = ELEM[plan.dtype]
        self.ops = FragmentOps(self.e, el)
        self.row_len = plan.d + PAD
        self.qt = _memref((plan.b, plan.h, plan.r, plan.q, plan.d), el)
        self.kvt = _memref((plan.b, plan.h, plan.x, plan.d), el)
        self.vt = _memref((plan.b, plan.h, plan.x, plan.dv), el)
        self.ot = _memref((plan.b, plan.h, plan.r, plan.q, plan.dv), el)
        self.qs_t = f"memref<{plan.rows}x{self.row_len}x{el}, {WG}>"
        self.kvs_t = f"memref<2x{plan.sx}x{self.row_len}x{el}, {WG}>"
        self.vs_t = f"memref<2x{plan.sx}x{plan.dv + PAD}x{el}, {WG}>"
        self.os_t = f"memref<{plan.rows}x{plan.dv + PAD}x{el}, {WG}>"
        self.os = "%qs" if plan.dv == plan.d else "%os"  # O is staged in the Q tile's buffer
        #: memref type of each buffer a copy or store names
        self.types = {"%Q": self.qt, "%K": self.kvt, "%V": self.vt, "%O": self.ot}
        self.types.update({"%qs": self.qs_t, "%ks": self.kvs_t, "%vs": self.vs_t, self.os: self.os_t})
        self.acc_t = self.ops.acc_t
        self.a_t = self.ops.a_t
        self.per_row = plan.d // VEC  # cp.async vectors per row of Q and K
        self.tiles_m = range(plan.warp_rows // MMA_M)  # m16 tiles of one warp
        self.n_o = plan.dv // MMA_N  # n8 tiles of O
        self.n_s = plan.sx // MMA_N  # n8 tiles of S
        self.inputs = {f"%A{i.arg}": i for i in plan.inputs}  # kernel arguments after V
        for i in plan.inputs:
            self.types[f"%A{i.arg}"] = _memref(i.shape, i.dtype)
        for i in plan.staged_inputs:  # a tile of the CTA's rows by the chunk's keys, double-buffered
            self.types[f"%bs{i.arg}"] = f"memref<2x{plan.rows}x{plan.sx + PAD}x{i.dtype}, {WG}>"

    # --- prologue: shared memory, thread ids, the stream's extent ---------------------------

    def shared_views(self) -> None:
        e, plan = self.e, self.plan
        base = e.op(f"gpu.dynamic_shared_memory : memref<?xi8, {WG}>", "smem")
        k_bytes = 2 * plan.sx * self.row_len * 2
        e.emit(f"%qs = memref.view {base}[{e.idx(0)}][] : memref<?xi8, {WG}> to {self.qs_t}")
        e.emit(f"%ks = memref.view {base}[{e.idx(plan.q_bytes)}][] : memref<?xi8, {WG}> to {self.kvs_t}")
        e.emit(f"%vs = memref.view {base}[{e.idx(plan.q_bytes + k_bytes)}][] : memref<?xi8, {WG}> to {self.vs_t}")
        if self.os != "%qs":
            e.emit(f"{self.os} = memref.view {base}[{e.idx(0)}][] : memref<?xi8, {WG}> to {self.os_t}")
        offset = plan.q_bytes + k_bytes + 2 * plan.sx * (plan.dv + PAD) * 2
        for i in plan.staged_inputs:
            buf = f"%bs{i.arg}"
            e.emit(f"{buf} = memref.view {base}[{e.idx(offset)}][] : memref<?xi8, {WG}> to {self.types[buf]}")
            offset += plan.input_tile_bytes

    def thread_ids(self) -> None:
        e = self.e
        self.tid = e.op("gpu.thread_id x", "tid")
        bx = e.op("gpu.block_id x", "bx")
        self.head = e.op("gpu.block_id y", "kvh")
        self.batch = e.op("gpu.block_id z", "bat")
        self.lane = e.rem(self.tid, e.idx(32))
        self.warp = e.div(self.tid, e.idx(32))
        self.g = e.div(self.lane, e.idx(4))  # row of the fragment (and row + 8)
        self.c = e.rem(self.lane, e.idx(4))  # column pair
        self.q0 = e.mul(bx, e.idx(self.plan.gq))

    def stream_extent(self) -> None:
        """The chunks of x this CTA visits: every chunk, or where the program's masks decide
        the stream (`plan.skips`), from the first to the last chunk where each mask's
        predicate may be true over the CTA's rows and the chunk's keys. The predicate is
        bounded by interval reasoning (`ir.masks.predicate_bounds`) in a scalar scan over the
        chunks, once per CTA: no dense mask is evaluated. Chunks outside are neither loaded
        nor computed; a chunk inside that no key of survives is computed masked."""
        e, plan, sx = self.e, self.plan, self.plan.sx
        n_chunks = -(-plan.x // sx)
        self.lower, self.upper = e.idx(0), e.idx(n_chunks)
        self.kv_end = e.idx(plan.x)  # keys past this are never loaded (zero-filled)
        if not plan.skips:
            return
        domain = _TextDomain(e)
        res, c, lo, hi = e.fresh("ext"), e.fresh("ch"), e.fresh("lo"), e.fresh("hi")
        e.emit(
            f"{res}:2 = scf.for {c} = {e.idx(0)} to {e.idx(n_chunks)} step {e.idx(1)} "
            f"iter_args({lo} = {e.idx(n_chunks)}, {hi} = {e.idx(0)}) -> (index, index) {{"
        )
        e.indent += 2
        rows = (self.q0, e.add(self.q0, e.idx(plan.gq - 1)))
        first = e.mul(c, e.idx(sx))
        cols = (first, e.add(first, e.idx(sx - 1)))
        may: bool | str = True
        for pred in plan.skips:
            bound = predicate_bounds(pred, domain, rows, cols, (plan.q, plan.x)).may
            if bound is False or may is False:
                may = False
            elif bound is not True:
                may = bound if may is True else domain.and_(str(may), bound)
        if isinstance(may, bool):
            may = domain.boolean(may)
        lo2 = e.op(f"arith.select {may}, {e.op(f'arith.minsi {lo}, {c} : index', 'i')}, {lo} : index", "i")
        hi2 = e.op(f"arith.select {may}, {e.add(c, e.idx(1))}, {hi} : index", "i")
        e.emit(f"scf.yield {lo2}, {hi2} : index, index")
        e.indent -= 2
        e.emit("}")
        self.upper = f"{res}#1"
        self.lower = e.op(f"arith.minsi {res}#0, {self.upper} : index", "i")  # no chunk: an empty loop
        self.kv_end = e.minu(e.mul(self.upper, e.idx(sx)), self.kv_end)

    # --- cp.async copies: each thread moves 16-byte vectors (8 elements) --------------------

    def copy_tile(
        self,
        dst: str,
        dst_prefix: list[str],
        src: str,
        nrows: int,
        src_index: Callable[[str, str], list[str]],
        valid: Callable[[str, str], str],
        per_row: int,
    ) -> list[str]:
        """The CTA's threads move the tile in rounds of one 16-byte cp.async each (row `row`,
        columns `col`.. of the tile from `src_index(row, col)`); what is not `valid(row, col)`
        (past the end of q or x) reads zero bytes (zero fill). When the last round is partial, its
        copies sit in an `scf.if`: the idle threads issue nothing (a copy of theirs would
        write some other thread's bytes). Returns the tokens of the unconditional copies;
        the commit group takes every earlier cp.async of the thread either way."""
        e, plan = self.e, self.plan
        chunks = nrows * per_row
        tokens = []
        for it in range(-(-chunks // plan.threads)):
            chunk = e.add(self.tid, e.idx(it * plan.threads))
            row = e.div(chunk, e.idx(per_row))
            col = e.mul(e.rem(chunk, e.idx(per_row)), e.idx(VEC))
            n = e.op(f"arith.select {valid(row, col)}, {e.idx(VEC)}, {e.idx(0)} : index", "n")
            dst_idx = ", ".join([*dst_prefix, row, col])
            partial = (it + 1) * plan.threads > chunks
            if partial:
                inb = e.op(f"arith.cmpi ult, {chunk}, {e.idx(chunks)} : index", "p")
                e.emit(f"scf.if {inb} {{")
                e.indent += 2
            token = e.op(
                f"nvgpu.device_async_copy {src}[{', '.join(src_index(row, col))}], {dst}[{dst_idx}], {VEC}, {n}"
                f" {{bypassL1}} : {self.types[src]} to {self.types[dst]}",
                "cp",
            )
            if partial:
                e.indent -= 2
                e.emit("}")
            else:
                tokens.append(token)
        return tokens

    def q_src(self, row: str, col: str) -> list[str]:
        e, gq = self.e, self.plan.gq
        ri = e.div(row, e.idx(gq))  # which of the r query heads
        qi = e.minu(e.add(self.q0, e.rem(row, e.idx(gq))), e.idx(self.plan.q - 1))
        return [self.batch, self.head, ri, qi, col]

    def q_valid(self, row: str, col: str) -> str:
        e = self.e
        qi = e.add(self.q0, e.rem(row, e.idx(self.plan.gq)))
        return e.op(f"arith.cmpi ult, {qi}, {e.idx(self.plan.q)} : index", "p")

    def kv_loader(self, chunk: str, stage: str) -> str:
        """cp.async of K and V chunk `chunk` into `stage`, and of the staged inputs' tiles
        (the CTA's rows, the chunk's keys); returns the commit group's token."""
        e, plan = self.e, self.plan
        x0 = e.mul(chunk, e.idx(plan.sx))
        tokens: list[str] = []
        for buf, src, per_row in (("%ks", "%K", self.per_row), ("%vs", "%V", plan.dv // VEC)):

            def src_index(row: str, col: str, x0: str = x0) -> list[str]:
                # clamped: stays in bounds
                return [self.batch, self.head, e.minu(e.add(x0, row), e.idx(plan.x - 1)), col]

            def valid(row: str, col: str, x0: str = x0) -> str:
                return e.op(f"arith.cmpi ult, {e.add(x0, row)}, {self.kv_end} : index", "p")

            tokens += self.copy_tile(buf, [stage], src, plan.sx, src_index, valid, per_row)
        for inp in plan.staged_inputs:

            def input_index(row: str, col: str, inp: ScoreInput = inp, x0: str = x0) -> list[str]:
                index = {"b": self.batch, "h": self.head, "r": e.div(row, e.idx(plan.gq))}
                index["q"] = e.minu(e.add(self.q0, e.rem(row, e.idx(plan.gq))), e.idx(plan.q - 1))
                index["x"] = e.minu(e.add(x0, col), e.idx(plan.x - VEC))  # clamped: stays in bounds
                return [index[a] for a in inp.axes]

            def input_valid(row: str, col: str, x0: str = x0) -> str:
                keys = e.op(f"arith.cmpi ult, {e.add(x0, col)}, {self.kv_end} : index", "p")
                return e.op(f"arith.andi {self.q_valid(row, col)}, {keys} : i1", "p")

            buf = f"%bs{inp.arg}"
            tokens += self.copy_tile(buf, [stage], f"%A{inp.arg}", plan.rows, input_index, input_valid, plan.sx // VEC)
        return e.op(f"nvgpu.device_async_create_group {', '.join(tokens)}", "grp")

    def load_first_tiles(self) -> str:
        """Copy the Q tile and K/V chunk 0, wait for both; returns chunk 0's group token."""
        e = self.e
        q_tokens = self.copy_tile("%qs", [], "%Q", self.plan.rows, self.q_src, self.q_valid, self.per_row)
        e.op(f"nvgpu.device_async_create_group {', '.join(q_tokens)}", "grp")
        first = self.kv_loader(self.lower, e.rem(self.lower, e.idx(2)))
        e.emit(f"nvgpu.device_async_wait {first} {{numGroups = 1 : i32}}")
        e.emit("gpu.barrier")
        return first

    # --- Q fragments and this thread's rows ---------------------------------------------------

    def q_fragments(self, wrow: str) -> list[list[str]] | None:
        """A operands for the d/16 k-steps of S = Q K^T, per m16 tile of the warp, loaded once
        (None when `plan.q_in_registers` is false: `q_fragment` loads each at its k-step)."""
        e = self.e
        self.a_col = e.mul(e.div(self.lane, e.idx(16)), e.idx(8))
        self.a_rows = [e.add(e.add(wrow, e.idx(mi * MMA_M)), e.rem(self.lane, e.idx(16))) for mi in self.tiles_m]
        if not self.plan.q_in_registers:
            return None
        return [[self.q_fragment(mi, kt) for kt in range(self.plan.d // MMA_K)] for mi in self.tiles_m]

    def q_fragment(self, mi: int, kt: int) -> str:
        """The A operand of m tile `mi` at k-step `kt`: one ldmatrix.x4 from the Q tile."""
        col = self.e.add(self.a_col, self.e.idx(kt * MMA_K))
        return self.ops.ldmatrix("%qs", self.qs_t, [self.a_rows[mi], col], False)

    def thread_rows(self, wrow: str) -> tuple[list[list[str]], list[list[str]]]:
        """Rows of this thread (per m tile, rows g and g+8): flattened CTA rows, and their q."""
        e = self.e
        my_rows = []
        for mi in self.tiles_m:
            base = e.add(e.add(wrow, e.idx(mi * MMA_M)), self.g)
            my_rows.append([base, e.add(base, e.idx(8))])
        my_q = [[e.add(self.q0, e.rem(rw, e.idx(self.plan.gq))) for rw in pair] for pair in my_rows]
        self.my_rows, self.my_q = my_rows, my_q
        return my_rows, my_q

    # --- the stream over x --------------------------------------------------------------------

    def stream(self, qfrag: list[list[str]] | None, my_q: list[list[str]]) -> tuple[str, list[str]]:
        """The `scf.for` over the chunks of x, carrying the row max m, the row sum l and the
        O accumulators of each m tile. Returns the loop's results and the state's names."""
        e, plan, acc_t = self.e, self.plan, self.acc_t
        self.ninf = e.const(-math.inf, F32)
        zero = e.const(0.0, F32)
        self.zacc = e.const(0.0, acc_t)
        state, init, types = [], [], []
        for mi in self.tiles_m:
            state += [f"%m{mi}_0", f"%m{mi}_1", f"%l{mi}_0", f"%l{mi}_1"] + [f"%o{mi}_{nt}" for nt in range(self.n_o)]
            init += [self.ninf, self.ninf, zero, zero] + [self.zacc] * self.n_o
            types += [F32] * 4 + [acc_t] * self.n_o
        loop_res = e.fresh("st")
        e.emit(
            f"{loop_res}:{len(state)} = scf.for %j = {self.lower} to {self.upper} step {e.idx(1)} iter_args("
            + ", ".join(f"{s} = {i}" for s, i in zip(state, init, strict=True))
            + f") -> ({', '.join(types)}) {{"
        )
        e.indent += 2
        stage = e.rem("%j", e.idx(2))
        nxt = e.add("%j", e.idx(1))
        # prefetch chunk j+1 into the other stage while chunk j computes (past this CTA's last
        # chunk the copies read nothing: every row is past kv_end, so they zero-fill an unused stage)
        group = self.kv_loader(nxt, e.rem(nxt, e.idx(2)))
        e.emit(f"nvgpu.device_async_wait {group} {{numGroups = 1 : i32}}")
        e.emit("gpu.barrier")
        x0 = e.mul("%j", e.idx(plan.sx))
        # the inputs the score ops read are loaded before S = Q K^T, which hides their latency
        read = sorted({o.ref for op in plan.score_ops for o in op.operands if o.kind == "input"})
        coords = _Coordinates(self, self.chunk_columns(x0), my_q, stage) if read else None
        for arg in read:
            assert coords is not None
            coords.read_all(self.inputs[f"%A{arg}"])

        s = self.scores(stage, qfrag)
        # the scores stay unscaled: the scale (positive) goes into one fma per element with
        # the row max (exp(s*scale - m) = exp2(s*scale*log2e - m') with m' in log2 units)
        scl = e.const(plan.scale * LOG2E, F32)
        svals = self.masked_scores(s, x0, my_q, coords)
        new_state: dict[str, str] = {}
        pfrag: list[list[str]] = []
        alpha_v: list[str] = []
        for mi in self.tiles_m:
            frags, alphas = self.online_softmax(mi, svals[mi], scl, new_state)
            pfrag.append(frags)
            alpha_v.append(
                e.op(f"vector.from_elements {alphas[0]}, {alphas[0]}, {alphas[1]}, {alphas[1]} : {acc_t}", "av")
            )
        o_acc = self.accumulate_pv(stage, pfrag, alpha_v)
        for mi in self.tiles_m:
            for nt in range(self.n_o):
                new_state[f"%o{mi}_{nt}"] = o_acc[mi][nt]
        e.emit("gpu.barrier")  # the next iteration's copy overwrites the stage read here
        e.emit(f"scf.yield {', '.join(new_state[s_] for s_ in state)} : {', '.join(types)}")
        e.indent -= 2
        e.emit("}")
        return loop_res, state

    def scores(self, stage: str, qfrag: list[list[str]] | None) -> list[list[str]]:
        """S = Q K^T: n_s accumulators of 16x8 per m tile; each K fragment serves every m tile.
        One ldmatrix.x4 per k-step and pair of n tiles: lane l gives row 8(nt + l//16) + l%8 of
        the chunk, columns 16kt + 8((l//8)%2) .. +8."""
        e, lane = self.e, self.lane
        b_row = e.add(e.rem(lane, e.idx(8)), e.mul(e.div(lane, e.idx(16)), e.idx(MMA_N)))
        b_col = e.mul(e.rem(e.div(lane, e.idx(8)), e.idx(2)), e.idx(8))
        s = [[self.zacc] * self.n_s for _ in self.tiles_m]
        for nt in range(0, self.n_s, 2):
            krow = e.add(b_row, e.idx(nt * MMA_N))
            for kt in range(self.plan.d // MMA_K):
                kbs = self.ops.b_pair("%ks", self.kvs_t, [stage, krow, e.add(b_col, e.idx(kt * MMA_K))], False)
                for mi in self.tiles_m:
                    a = qfrag[mi][kt] if qfrag is not None else self.q_fragment(mi, kt)
                    for half, kb in enumerate(kbs):
                        s[mi][nt + half] = self.ops.mma(a, kb, s[mi][nt + half])
        return s

    def chunk_columns(self, x0: str) -> list[list[str]]:
        """The keys of this thread's scores in the chunk at x0: [n tile][element k], x0 + 8nt + 2c + k."""
        e = self.e
        return [
            [e.add(x0, e.add(e.mul(self.c, e.idx(2)), e.idx(nt * MMA_N + k))) for k in range(2)]
            for nt in range(self.n_s)
        ]

    def masked_scores(
        self, s: list[list[str]], x0: str, my_q: list[list[str]], coords: _Coordinates | None
    ) -> list[list[list[list[str]]]]:
        """The scores as scalars [m tile][n tile][row half i][element k]: element (nt, i, k) is
        row my_rows[mi][i], col x0 + 8nt + 2c + k. The program's score ops run on each
        (`score_element`; `coords`: the chunk's coordinates and the inputs read so far), then
        the scores past x and (causal) past the row's q become -inf."""
        e, plan, n_s = self.e, self.plan, self.n_s
        coords = coords or _Coordinates(self, self.chunk_columns(x0), my_q, "")
        cols = coords.cols
        past_x = [
            [e.op(f"arith.cmpi uge, {cols[nt][k]}, {e.idx(plan.x)} : index", "p") for k in range(2)]
            for nt in range(n_s)
        ]
        svals: list[list[list[list[str]]]] = []
        for mi in self.tiles_m:
            per_tile = []
            for nt in range(n_s):
                tile = []
                for i in range(2):
                    pair = []
                    for k in range(2):
                        v = e.op(f"vector.extract {s[mi][nt]}[{i}, {k}] : f32 from {self.acc_t}", "e")
                        if plan.score_ops:
                            v = self.score_element(v, coords, mi, i, nt, k)
                        bad = past_x[nt][k]
                        pair.append(e.op(f"arith.select {bad}, {self.ninf}, {v} : f32", "e"))
                    tile.append(pair)
                per_tile.append(tile)
            svals.append(per_tile)
        return svals

    def score_element(self, s: str, coords: _Coordinates, mi: int, i: int, nt: int, k: int) -> str:
        """The program's score ops on one element `s` of S (value 0 of the ops), each by its
        rule; an input is read once per element at the element's global coordinates."""
        e = self.e
        values = [s]
        loaded: dict[tuple[int, str], str] = {}

        def operand(o: Operand) -> str:
            if o.kind == "score":
                return values[o.ref]
            if o.kind == "const":
                return e.const(o.value, o.dtype)
            if (o.ref, o.dtype) not in loaded:
                inp = self.inputs[f"%A{o.ref}"]
                loaded[(o.ref, o.dtype)] = _convert(e, coords.read(inp, mi, i, nt, k), inp.dtype, o.dtype)
            return loaded[(o.ref, o.dtype)]

        at = Element(coords.my_q[mi][i], coords.cols[nt][k], (self.plan.q, self.plan.x))
        for op in self.plan.score_ops:
            values.append(SCORE_RULES[op.name](e, op, [operand(o) for o in op.operands], at))
        return values[-1]

    def online_softmax(
        self, mi: int, svals: list[list[list[str]]], scl: str, new_state: dict[str, str]
    ) -> tuple[list[str], list[str]]:
        """One m tile's online softmax step: the new row max and (per-thread) row sum go into
        `new_state`; returns P as A fragments and the rescale factors of the two row halves."""
        e, n_s = self.e, self.n_s
        alphas: list[str] = []
        offsets: list[str] = []  # the row max subtracted in the exponent
        for i in range(2):
            mx = f"%m{mi}_{i}"
            for nt in range(n_s):
                for k in range(2):
                    mx = e.op(f"arith.maximumf {mx}, {svals[nt][i][k]} : f32", "mx")
            mx = self.ops.quad_reduce(mx, "arith.maximumf")
            new_state[f"%m{mi}_{i}"] = mx
            if self.plan.score_ops:
                # score ops may give a row -inf throughout a chunk: subtract 0 then (p = 0, alpha = 0)
                empty = e.op(f"arith.cmpf oeq, {mx}, {self.ninf} : f32", "p")
                mx = e.op(f"arith.select {empty}, {e.const(0.0, F32)}, {mx} : f32", "mx")
            offsets.append(mx)
            drop = e.op(f"arith.mulf {e.op(f'arith.subf %m{mi}_{i}, {mx} : f32', 'd')}, {scl} : f32", "d")
            alphas.append(e.op(f"math.exp2 {drop} : f32", "al"))  # 2^((m - m')·scale)
        # p = 2^(s·scale - m'·scale): one fma and one ex2 per element
        neg_max = []
        for i in range(2):
            scaled = e.op(f"arith.mulf {offsets[i]}, {scl} : f32", "ms")
            neg_max.append(e.op(f"arith.negf {scaled} : f32", "ms"))
        probs: list[list[list[str]]] = []
        for nt in range(n_s):
            tile = []
            for i in range(2):
                args = [e.op(f"math.fma {svals[nt][i][k]}, {scl}, {neg_max[i]} : f32", "d") for k in range(2)]
                tile.append([e.op(f"math.exp2 {x} : f32", "p") for x in args])
            probs.append(tile)
        for i in range(2):
            total = e.op(f"arith.mulf %l{mi}_{i}, {alphas[i]} : f32", "l")
            for nt in range(n_s):
                for k in range(2):
                    total = e.op(f"arith.addf {total}, {probs[nt][i][k]} : f32", "l")
            new_state[f"%l{mi}_{i}"] = total  # per-thread partial sum; the quad reduces it at the end
        # P as A fragments: tiles 2t and 2t+1 form the 16x16 A operand of k-step t
        frags = []
        for t in range(self.plan.sx // MMA_K):
            elems = [probs[2 * t + half][i][k] for half, i in A_ROWS for k in range(2)]
            pv = e.op(f"vector.from_elements {', '.join(elems)} : vector<4x2xf32>", "pf")
            frags.append(e.op(f"arith.truncf {pv} : vector<4x2xf32> to {self.a_t}", "pa"))
        return frags, alphas

    def accumulate_pv(self, stage: str, pfrag: list[list[str]], alpha_v: list[str]) -> list[list[str]]:
        """Rescale O and accumulate P V (V fragments transposed by ldmatrix, shared by the m
        tiles): one ldmatrix.x4.trans per k-step and pair of n tiles, lane l giving row
        16t + l%16 of the chunk at columns 8(nt + l//16) .. +8 of the head dim."""
        e, lane, n_o = self.e, self.lane, self.n_o
        v_row = e.rem(lane, e.idx(16))
        v_col = e.mul(e.div(lane, e.idx(16)), e.idx(MMA_N))
        o_acc = [
            [e.op(f"arith.mulf %o{mi}_{nt}, {alpha_v[mi]} : {self.acc_t}", "o") for nt in range(n_o)]
            for mi in self.tiles_m
        ]
        for nt in range(0, n_o, 2):
            for t in range(self.plan.sx // MMA_K):
                index = [stage, e.add(v_row, e.idx(t * MMA_K)), e.add(v_col, e.idx(nt * MMA_N))]
                if nt + 1 < n_o:
                    vbs = self.ops.b_pair("%vs", self.vs_t, index, True)
                else:  # an odd last n8 tile of V's head dim: one B fragment (ldmatrix.x2, lanes 0-15)
                    vbs = (self.ops.b_single("%vs", self.vs_t, index, True),)
                for mi in self.tiles_m:
                    for half, vb in enumerate(vbs):
                        o_acc[mi][nt + half] = self.ops.mma(pfrag[mi][t], vb, o_acc[mi][nt + half])
        return o_acc

    # --- finish: O / l, convert, store the valid rows ----------------------------------------

    def normalize_to_shared(self, first: str, loop_res: str, state: list[str], my_rows: list[list[str]]) -> None:
        """O / l in the element type, staged through shared memory (the Q tile's buffer, free
        since its fragments live in registers)."""
        e, el, acc_t = self.e, self.el, self.acc_t
        e.emit(f"nvgpu.device_async_wait {first} {{numGroups = 0 : i32}}")  # the last (empty) prefetch
        final = {s_: f"{loop_res}#{i}" for i, s_ in enumerate(state)}
        for mi in self.tiles_m:
            inv = []
            for i in range(2):
                total = self.ops.quad_reduce(final[f"%l{mi}_{i}"], "arith.addf")
                inv.append(e.op(f"arith.divf {e.const(1.0, F32)}, {total} : f32", "inv"))
            inv_v = e.op(f"vector.from_elements {inv[0]}, {inv[0]}, {inv[1]}, {inv[1]} : {acc_t}", "iv")
            for nt in range(self.n_o):
                o = e.op(f"arith.mulf {final[f'%o{mi}_{nt}']}, {inv_v} : {acc_t}", "fo")
                if self.plan.output_ops:
                    o = self.output_fragment(o, mi, nt)
                o16 = e.op(f"arith.truncf {o} : {acc_t} to vector<2x2x{el}>", "fo")
                col = e.add(e.mul(self.c, e.idx(2)), e.idx(nt * MMA_N))
                for i in range(2):
                    pair = e.op(f"vector.extract {o16}[{i}] : vector<2x{el}> from vector<2x2x{el}>", "pr")
                    e.emit(f"vector.store {pair}, {self.os}[{my_rows[mi][i]}, {col}] : {self.os_t}, vector<2x{el}>")
        e.emit("gpu.barrier")

    def output_fragment(self, o: str, mi: int, nt: int) -> str:
        """The program's ops on O / l before its cast, on each element of one accumulator
        fragment (rows my_rows[mi][i], head column 8nt + 2c + k), each by its rule; inputs are
        read from global memory at the element's (b, h, r, q, column)."""
        e, plan = self.e, self.plan
        out = []
        for i in range(2):
            index = {"b": self.batch, "h": self.head, "r": e.div(self.my_rows[mi][i], e.idx(plan.gq))}
            index["q"] = e.minu(self.my_q[mi][i], e.idx(plan.q - 1))  # rows past q are never stored
            for k in range(2):
                col = e.add(e.mul(self.c, e.idx(2)), e.idx(nt * MMA_N + k))  # along V's head axis
                values = [e.op(f"vector.extract {o}[{i}, {k}] : f32 from {self.acc_t}", "fo")]

                def operand(op: Operand, values: list[str] = values, col: str = col, index: dict = index) -> str:
                    if op.kind == "score":
                        return values[op.ref]
                    if op.kind == "const":
                        return e.const(op.value, op.dtype)
                    inp = self.inputs[f"%A{op.ref}"]
                    at = ", ".join(index.get(a, col) for a in inp.axes)  # the one other axis: the head
                    v = e.op(f"memref.load %A{op.ref}[{at}] : {_memref(inp.shape, inp.dtype)}", "in")
                    return _convert(e, v, inp.dtype, op.dtype)

                for op in plan.output_ops:
                    values.append(SCORE_RULES[op.name](e, op, [operand(x) for x in op.operands], Element("", "")))
                out.append(values[-1])
        return e.op(f"vector.from_elements {', '.join(out)} : {self.acc_t}", "fo")

    def store_output(self) -> None:
        """The staged O to global memory with 16-byte vector stores, one 8-element row piece
        per thread, rows past q skipped."""
        e, plan, el, gq = self.e, self.plan, self.el, self.plan.gq
        per_row = plan.dv // VEC
        chunks = plan.rows * per_row
        for it in range(-(-chunks // plan.threads)):
            chunk = e.add(self.tid, e.idx(it * plan.threads))
            row = e.div(chunk, e.idx(per_row))
            col = e.mul(e.rem(chunk, e.idx(per_row)), e.idx(VEC))
            qi = e.add(self.q0, e.rem(row, e.idx(gq)))
            inb = e.op(f"arith.cmpi ult, {chunk}, {e.idx(chunks)} : index", "p")
            valid = e.op(f"arith.cmpi ult, {qi}, {e.idx(plan.q)} : index", "p")
            ok = e.op(f"arith.andi {inb}, {valid} : i1", "p")
            e.emit(f"scf.if {ok} {{")
            e.indent += 2
            piece = e.op(f"vector.load {self.os}[{row}, {col}] : {self.os_t}, vector<{VEC}x{el}>", "w")
            e.emit(
                f"vector.store {piece}, %O[{self.batch}, {self.head}, {e.div(row, e.idx(gq))}, {qi}, {col}] "
                f"{{alignment = 16 : i64}} : {self.ot}, vector<{VEC}x{el}>"
            )
            e.indent -= 2
            e.emit("}")

    def module_text(self, name: str, max_registers: int | None = None) -> str:
        """The module around the body: the constants first, then the emitted lines."""
        body = [" " * 6 + line for line in self.e.const_lines()] + self.e.lines
        inputs = "".join(f"{a}: {_memref(i.shape, i.dtype)}, " for a, i in self.inputs.items())
        bound = f", nvvm.maxnreg = {max_registers} : i32" if max_registers else ""
        return (
            "module attributes {gpu.container_module} {\n"
            f"  gpu.module @{name}_module {{\n"
            f"    gpu.func @{name}(%Q: {self.qt}, %K: {self.kvt}, %V: {self.vt}, {inputs}%O: {self.ot})\n"
            f"        kernel attributes {{known_block_size = array<i32: {self.plan.threads}, 1, 1>, nvvm.minctasm = 1 : i32{bound}}} {{\n"
            + "\n".join(body)
            + "\n    }\n  }\n}\n"
        )


def _memref(shape: tuple[int, ...], el: str) -> str:
    return f"memref<{'x'.join(map(str, shape))}x{el}>"


def _convert(e: TextEmitter, v: str, src: str, dst: str) -> str:
    """A float scalar from type `src` to `dst` (bf16 and f16 meet in f32)."""
    width = {"bf16": 16, "f16": 16, "f32": 32}
    if src == dst:
        return v
    if width[src] < width[dst]:
        return e.op(f"arith.extf {v} : {src} to {dst}", "in")
    if width[src] > width[dst]:
        return e.op(f"arith.truncf {v} : {src} to {dst}", "in")
    return _convert(e, _convert(e, v, src, F32), F32, dst)


class _TextDomain:
    """`ir.masks.Domain` over the kernel's text: integers are index values, booleans i1."""

    def __init__(self, e: TextEmitter) -> None:
        self.e = e
        self.bools: set[str] = set()  # the i1 values made here (the rest are index values)

    def _b(self, text: str) -> str:
        name = self.e.op(text, "p")
        self.bools.add(name)
        return name

    def const(self, v: int) -> str:
        return self.e.idx(int(v))

    def boolean(self, v: bool) -> str:
        return self._b(f"arith.constant {'true' if v else 'false'}")

    def _i(self, name: str, a: str, b: str) -> str:
        return self.e.op(f"arith.{name} {a}, {b} : index", "i")

    def add(self, a: str, b: str) -> str:
        return self._i("addi", a, b)

    def sub(self, a: str, b: str) -> str:
        return self._i("subi", a, b)

    def mul(self, a: str, b: str) -> str:
        return self._i("muli", a, b)

    def floordiv(self, a: str, c: int) -> str:
        return self._i("floordivsi", a, self.e.idx(c))

    def min(self, a: str, b: str) -> str:
        return self._i("minsi", a, b)

    def max(self, a: str, b: str) -> str:
        return self._i("maxsi", a, b)

    def lt(self, a: str, b: str) -> str:
        return self._b(f"arith.cmpi slt, {a}, {b} : index")

    def le(self, a: str, b: str) -> str:
        return self._b(f"arith.cmpi sle, {a}, {b} : index")

    def eq(self, a: str, b: str) -> str:
        return self._b(f"arith.cmpi eq, {a}, {b} : index")

    def and_(self, a: str, b: str) -> str:
        return self._b(f"arith.andi {a}, {b} : i1")

    def or_(self, a: str, b: str) -> str:
        return self._b(f"arith.ori {a}, {b} : i1")

    def not_(self, a: str) -> str:
        return self._b(f"arith.xori {a}, {self.boolean(True)} : i1")

    def select(self, c: str, a: str, b: str) -> str:
        if a in self.bools:
            return self._b(f"arith.select {c}, {a}, {b} : i1")
        return self.e.op(f"arith.select {c}, {a}, {b} : index", "i")


class _Coordinates:
    """The global index along each axis of the scores of one chunk's elements, and the inputs
    read there: b and h from the block, r and q from the thread's rows, x from the columns.
    Each index is written once, at its first use; q and x are clamped into the arrays where
    the tiles overrun them (rows past q are never stored, keys past x are masked). An input
    whose last axis is x, of even length, is read two neighbouring keys (the thread's
    columns 2c, 2c + 1) at a time with one vector load."""

    def __init__(self, k: _AttentionKernel, cols: list[list[str]], my_q: list[list[str]], stage: str) -> None:
        self.k = k
        self.cols = cols
        self.my_q = my_q
        self.stage = stage  # the K/V stage of the chunk, which holds the staged inputs' tiles too
        self.known: dict[tuple[str, int, int], str] = {}
        self.pairs: dict[tuple[int, int, int, int], str] = {}
        self.values: dict[tuple[int, int, int, int, int], str] = {}

    def index(self, axis: str, mi: int, i: int, nt: int, k: int) -> str:
        """The index along `axis` of element (mi, i, nt, k); axis "xp": of its pair's first key."""
        kernel, e, plan = self.k, self.k.e, self.k.plan
        if axis == "b":
            return kernel.batch
        if axis == "h":
            return kernel.head
        key = (axis, nt, k) if axis in ("x", "xp") else (axis, mi, i)
        if key not in self.known:
            if axis == "x":
                col = self.cols[nt][k]
                self.known[key] = col if plan.x % plan.sx == 0 else e.minu(col, e.idx(plan.x - 1))
            elif axis == "xp":
                col = self.cols[nt][0]
                self.known[key] = col if plan.x % plan.sx == 0 else e.minu(col, e.idx(plan.x - 2))
            elif axis == "q":
                row = self.my_q[mi][i]
                self.known[key] = row if plan.q % plan.gq == 0 else e.minu(row, e.idx(plan.q - 1))
            else:  # r: which query head of the key/value head's group
                self.known[key] = e.div(kernel.my_rows[mi][i], e.idx(plan.gq))
        return self.known[key]

    def read_all(self, inp: ScoreInput) -> None:
        """Read input `inp` at every score element of the chunk."""
        for mi in self.k.tiles_m:
            for nt in range(self.k.n_s):
                for i in range(2):
                    for k in range(2):
                        self.read(inp, mi, i, nt, k)

    def read(self, inp: ScoreInput, mi: int, i: int, nt: int, k: int) -> str:
        """Input `inp` at element (mi, i, nt, k), in its own element type (read once)."""
        if (inp.arg, mi, i, nt, k) not in self.values:
            self.values[(inp.arg, mi, i, nt, k)] = self._load(inp, mi, i, nt, k)
        return self.values[(inp.arg, mi, i, nt, k)]

    def _load(self, inp: ScoreInput, mi: int, i: int, nt: int, k: int) -> str:
        e, memref = self.k.e, _memref(inp.shape, inp.dtype)
        if inp in self.k.plan.staged_inputs:  # from the chunk's tile in shared memory, a pair of keys
            key = (inp.arg, mi, i, nt)
            if key not in self.pairs:
                buf = f"%bs{inp.arg}"
                col = e.add(e.mul(self.k.c, e.idx(2)), e.idx(nt * MMA_N))
                index = f"{self.stage}, {self.k.my_rows[mi][i]}, {col}"
                self.pairs[key] = e.op(f"vector.load {buf}[{index}] : {self.k.types[buf]}, vector<2x{inp.dtype}>", "in")
            return e.op(f"vector.extract {self.pairs[key]}[{k}] : {inp.dtype} from vector<2x{inp.dtype}>", "in")
        if inp.axes[-1] != "x" or self.k.plan.x % 2:
            index = ", ".join(self.index(a, mi, i, nt, k) for a in inp.axes)
            return e.op(f"memref.load %A{inp.arg}[{index}] : {memref}", "in")
        key = (inp.arg, mi, i, nt)
        if key not in self.pairs:
            index = (
                ", ".join(self.index(a, mi, i, nt, 0) for a in inp.axes[:-1]) + ", " + self.index("xp", mi, i, nt, 0)
            )
            self.pairs[key] = e.op(
                f"vector.load %A{inp.arg}[{index.removeprefix(', ')}] : {memref}, vector<2x{inp.dtype}>", "in"
            )
        return e.op(f"vector.extract {self.pairs[key]}[{k}] : {inp.dtype} from vector<2x{inp.dtype}>", "in")
