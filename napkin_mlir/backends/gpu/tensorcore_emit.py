"""The tensor-core attention kernel as MLIR text, from an `AttentionPlan`.

`emit_attention_kernel(plan)` writes the whole module: one `gpu.func` in a
`gpu.container_module`, unrolled at the fragment level (see `tensorcore.py` for what the
kernel does), through the text emitter and fragment ops of `tensorcore_text.py`.
`_AttentionKernel` writes the kernel step by step, in the order the text comes out:
shared-memory views and thread ids, the stream's extent, the first copies, the Q fragments,
the stream over `x` (prefetch, S = Q Kᵀ, mask, online softmax, O += P V), then O / l staged
through shared memory and stored. Every step must keep its order of SSA names and first
uses of constants: the text is compared byte for byte against earlier output.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from napkin_mlir.backends.gpu.fragments import A_ROWS, MMA_K, MMA_M, MMA_N
from napkin_mlir.backends.gpu.tensorcore_plan import ELEM, PAD, AttentionPlan
from napkin_mlir.backends.gpu.tensorcore_text import FragmentOps, TextEmitter

VEC = 8  # elements per cp.async and per output store: 16 bytes
LOG2E = 1.4426950408889634
F32 = "f32"
WG = "#gpu.address_space<workgroup>"


def emit_attention_kernel(plan: AttentionPlan, name: str = "attention_tc") -> str:
    """The whole module (gpu.container_module with one kernel) as MLIR text."""
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
    return k.module_text(name)


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
    upper: str  # chunks of x this CTA streams
    kv_end: str  # keys past this are never loaded
    # set by stream
    ninf: str
    zacc: str

    def __init__(self, plan: AttentionPlan) -> None:
        self.plan = plan
        self.e = TextEmitter()
        self.el = el = ELEM[plan.dtype]
        self.ops = FragmentOps(self.e, el)
        self.row_len = plan.d + PAD
        q_shape = (plan.b, plan.h, plan.r, plan.q, plan.d)
        kv_shape = (plan.b, plan.h, plan.x, plan.d)
        self.qt = f"memref<{'x'.join(map(str, q_shape))}x{el}>"
        self.kvt = f"memref<{'x'.join(map(str, kv_shape))}x{el}>"
        self.qs_t = f"memref<{plan.rows}x{self.row_len}x{el}, {WG}>"
        self.kvs_t = f"memref<2x{plan.sx}x{self.row_len}x{el}, {WG}>"
        self.acc_t = self.ops.acc_t
        self.a_t = self.ops.a_t
        self.per_row = plan.d // VEC  # cp.async vectors per row
        self.tiles_m = range(plan.warp_rows // MMA_M)  # m16 tiles of one warp
        self.n_o = plan.d // MMA_N  # n8 tiles of O
        self.n_s = plan.sx // MMA_N  # n8 tiles of S

    # --- prologue: shared memory, thread ids, the stream's extent ---------------------------

    def shared_views(self) -> None:
        e, plan = self.e, self.plan
        base = e.op(f"gpu.dynamic_shared_memory : memref<?xi8, {WG}>", "smem")
        q_bytes = plan.rows * self.row_len * 2
        kv_bytes = 2 * plan.sx * self.row_len * 2
        e.emit(f"%qs = memref.view {base}[{e.idx(0)}][] : memref<?xi8, {WG}> to {self.qs_t}")
        e.emit(f"%ks = memref.view {base}[{e.idx(q_bytes)}][] : memref<?xi8, {WG}> to {self.kvs_t}")
        e.emit(f"%vs = memref.view {base}[{e.idx(q_bytes + kv_bytes)}][] : memref<?xi8, {WG}> to {self.kvs_t}")

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
        """The stream's extent: every chunk, or for a causal CTA those up to its last row."""
        e, plan, sx = self.e, self.plan, self.plan.sx
        n_chunks = -(-plan.x // sx)
        self.upper = e.idx(n_chunks)
        self.kv_end = e.idx(plan.x)  # keys past this are never loaded (zero-filled)
        if plan.causal:
            last = e.div(e.add(self.q0, e.idx(plan.gq + sx - 1)), e.idx(sx))
            self.upper = e.minu(last, e.idx(n_chunks))
            self.kv_end = e.minu(e.mul(self.upper, e.idx(sx)), self.kv_end)

    # --- cp.async copies: each thread moves 16-byte vectors (8 elements) --------------------

    def copy_tile(
        self,
        dst: str,
        dst_prefix: list[str],
        src: str,
        nrows: int,
        src_row: Callable[[str], list[str]],
        valid: Callable[[str], str],
    ) -> list[str]:
        """The CTA's threads move the tile in rounds of one 16-byte cp.async each; rows past
        the end of q or x read zero bytes (zero fill). When the last round is partial, its
        copies sit in an `scf.if`: the idle threads issue nothing (a copy of theirs would
        write some other thread's bytes). Returns the tokens of the unconditional copies;
        the commit group takes every earlier cp.async of the thread either way."""
        e, plan, per_row = self.e, self.plan, self.per_row
        chunks = nrows * per_row
        tokens = []
        for it in range(-(-chunks // plan.threads)):
            chunk = e.add(self.tid, e.idx(it * plan.threads))
            row = e.div(chunk, e.idx(per_row))
            col = e.mul(e.rem(chunk, e.idx(per_row)), e.idx(VEC))
            n = e.op(f"arith.select {valid(row)}, {e.idx(VEC)}, {e.idx(0)} : index", "n")
            dst_idx = ", ".join([*dst_prefix, row, col])
            partial = (it + 1) * plan.threads > chunks
            if partial:
                inb = e.op(f"arith.cmpi ult, {chunk}, {e.idx(chunks)} : index", "p")
                e.emit(f"scf.if {inb} {{")
                e.indent += 2
            token = e.op(
                f"nvgpu.device_async_copy {src}[{', '.join([*src_row(row), col])}], {dst}[{dst_idx}], {VEC}, {n}"
                f" {{bypassL1}} : {self.qt if src == '%Q' else self.kvt} to {self.qs_t if dst == '%qs' else self.kvs_t}",
                "cp",
            )
            if partial:
                e.indent -= 2
                e.emit("}")
            else:
                tokens.append(token)
        return tokens

    def q_src(self, row: str) -> list[str]:
        e, gq = self.e, self.plan.gq
        ri = e.div(row, e.idx(gq))  # which of the r query heads
        qi = e.minu(e.add(self.q0, e.rem(row, e.idx(gq))), e.idx(self.plan.q - 1))
        return [self.batch, self.head, ri, qi]

    def q_valid(self, row: str) -> str:
        e = self.e
        qi = e.add(self.q0, e.rem(row, e.idx(self.plan.gq)))
        return e.op(f"arith.cmpi ult, {qi}, {e.idx(self.plan.q)} : index", "p")

    def kv_loader(self, chunk: str, stage: str) -> str:
        """cp.async of K and V chunk `chunk` into `stage`; returns the commit group's token."""
        e, plan = self.e, self.plan
        x0 = e.mul(chunk, e.idx(plan.sx))
        tokens: list[str] = []
        for buf, src in (("%ks", "%K"), ("%vs", "%V")):

            def src_row(row: str, x0: str = x0) -> list[str]:
                return [self.batch, self.head, e.minu(e.add(x0, row), e.idx(plan.x - 1))]  # clamped: stays in bounds

            def valid(row: str, x0: str = x0) -> str:
                return e.op(f"arith.cmpi ult, {e.add(x0, row)}, {self.kv_end} : index", "p")

            tokens += self.copy_tile(buf, [stage], src, plan.sx, src_row, valid)
        return e.op(f"nvgpu.device_async_create_group {', '.join(tokens)}", "grp")

    def load_first_tiles(self) -> str:
        """Copy the Q tile and K/V chunk 0, wait for both; returns chunk 0's group token."""
        e = self.e
        q_tokens = self.copy_tile("%qs", [], "%Q", self.plan.rows, self.q_src, self.q_valid)
        e.op(f"nvgpu.device_async_create_group {', '.join(q_tokens)}", "grp")
        first = self.kv_loader(e.idx(0), e.idx(0))
        e.emit(f"nvgpu.device_async_wait {first} {{numGroups = 1 : i32}}")
        e.emit("gpu.barrier")
        return first

    # --- Q fragments and this thread's rows ---------------------------------------------------

    def q_fragments(self, wrow: str) -> list[list[str]]:
        """A operands for the d/16 k-steps of S = Q K^T, per m16 tile of the warp."""
        e = self.e
        a_col = e.mul(e.div(self.lane, e.idx(16)), e.idx(8))
        qfrag: list[list[str]] = []
        for mi in self.tiles_m:
            a_row = e.add(e.add(wrow, e.idx(mi * MMA_M)), e.rem(self.lane, e.idx(16)))
            frags = []
            for kt in range(self.plan.d // MMA_K):
                col = e.add(a_col, e.idx(kt * MMA_K))
                frags.append(self.ops.ldmatrix("%qs", self.qs_t, [a_row, col], False))
            qfrag.append(frags)
        return qfrag

    def thread_rows(self, wrow: str) -> tuple[list[list[str]], list[list[str]]]:
        """Rows of this thread (per m tile, rows g and g+8): flattened CTA rows, and their q."""
        e = self.e
        my_rows = []
        for mi in self.tiles_m:
            base = e.add(e.add(wrow, e.idx(mi * MMA_M)), self.g)
            my_rows.append([base, e.add(base, e.idx(8))])
        my_q = [[e.add(self.q0, e.rem(rw, e.idx(self.plan.gq))) for rw in pair] for pair in my_rows]
        return my_rows, my_q

    # --- the stream over x --------------------------------------------------------------------

    def stream(self, qfrag: list[list[str]], my_q: list[list[str]]) -> tuple[str, list[str]]:
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
            f"{loop_res}:{len(state)} = scf.for %j = {e.idx(0)} to {self.upper} step {e.idx(1)} iter_args("
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

        s = self.scores(stage, qfrag)
        # the scores stay unscaled: the scale (positive) goes into one fma per element with
        # the row max (exp(s*scale - m) = exp2(s*scale*log2e - m') with m' in log2 units)
        scl = e.const(plan.scale * LOG2E, F32)
        svals = self.masked_scores(s, x0, my_q)
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

    def scores(self, stage: str, qfrag: list[list[str]]) -> list[list[str]]:
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
                    for half, kb in enumerate(kbs):
                        s[mi][nt + half] = self.ops.mma(qfrag[mi][kt], kb, s[mi][nt + half])
        return s

    def masked_scores(self, s: list[list[str]], x0: str, my_q: list[list[str]]) -> list[list[list[list[str]]]]:
        """The scores as scalars [m tile][n tile][row half i][element k], -inf past x and (causal)
        past the row's q: element (nt, i, k) is row my_rows[mi][i], col x0 + 8nt + 2c + k."""
        e, plan, n_s = self.e, self.plan, self.n_s
        cols = [
            [e.add(x0, e.add(e.mul(self.c, e.idx(2)), e.idx(nt * MMA_N + k))) for k in range(2)] for nt in range(n_s)
        ]
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
                        bad = past_x[nt][k]
                        if plan.causal:
                            late = e.op(f"arith.cmpi ugt, {cols[nt][k]}, {my_q[mi][i]} : index", "p")
                            bad = e.op(f"arith.ori {bad}, {late} : i1", "p")
                        pair.append(e.op(f"arith.select {bad}, {self.ninf}, {v} : f32", "e"))
                    tile.append(pair)
                per_tile.append(tile)
            svals.append(per_tile)
        return svals

    def online_softmax(
        self, mi: int, svals: list[list[list[str]]], scl: str, new_state: dict[str, str]
    ) -> tuple[list[str], list[str]]:
        """One m tile's online softmax step: the new row max and (per-thread) row sum go into
        `new_state`; returns P as A fragments and the rescale factors of the two row halves."""
        e, n_s = self.e, self.n_s
        alphas = []
        for i in range(2):
            mx = f"%m{mi}_{i}"
            for nt in range(n_s):
                for k in range(2):
                    mx = e.op(f"arith.maximumf {mx}, {svals[nt][i][k]} : f32", "mx")
            mx = self.ops.quad_reduce(mx, "arith.maximumf")
            drop = e.op(f"arith.mulf {e.op(f'arith.subf %m{mi}_{i}, {mx} : f32', 'd')}, {scl} : f32", "d")
            alphas.append(e.op(f"math.exp2 {drop} : f32", "al"))  # 2^((m - m')·scale)
            new_state[f"%m{mi}_{i}"] = mx
        # p = 2^(s·scale - m'·scale): one fma and one ex2 per element
        neg_max = []
        for i in range(2):
            scaled = e.op(f"arith.mulf {new_state[f'%m{mi}_{i}']}, {scl} : f32", "ms")
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
                vbs = self.ops.b_pair(
                    "%vs", self.kvs_t, [stage, e.add(v_row, e.idx(t * MMA_K)), e.add(v_col, e.idx(nt * MMA_N))], True
                )
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
                o16 = e.op(f"arith.truncf {o} : {acc_t} to vector<2x2x{el}>", "fo")
                col = e.add(e.mul(self.c, e.idx(2)), e.idx(nt * MMA_N))
                for i in range(2):
                    pair = e.op(f"vector.extract {o16}[{i}] : vector<2x{el}> from vector<2x2x{el}>", "pr")
                    e.emit(f"vector.store {pair}, %qs[{my_rows[mi][i]}, {col}] : {self.qs_t}, vector<2x{el}>")
        e.emit("gpu.barrier")

    def store_output(self) -> None:
        """The staged O to global memory with 16-byte vector stores, one 8-element row piece
        per thread, rows past q skipped."""
        e, plan, el, per_row, gq = self.e, self.plan, self.el, self.per_row, self.plan.gq
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
            piece = e.op(f"vector.load %qs[{row}, {col}] : {self.qs_t}, vector<{VEC}x{el}>", "w")
            e.emit(
                f"vector.store {piece}, %O[{self.batch}, {self.head}, {e.div(row, e.idx(gq))}, {qi}, {col}] "
                f"{{alignment = 16 : i64}} : {self.qt}, vector<{VEC}x{el}>"
            )
            e.indent -= 2
            e.emit("}")

    def module_text(self, name: str) -> str:
        """The module around the body: the constants first, then the emitted lines."""
        body = [" " * 6 + line for line in self.e.const_lines()] + self.e.lines
        return (
            "module attributes {gpu.container_module} {\n"
            f"  gpu.module @{name}_module {{\n"
            f"    gpu.func @{name}(%Q: {self.qt}, %K: {self.kvt}, %V: {self.kvt}, %O: {self.qt})\n"
            f"        kernel attributes {{known_block_size = array<i32: {self.plan.threads}, 1, 1>, nvvm.minctasm = 1 : i32}} {{\n"
            + "\n".join(body)
            + "\n    }\n  }\n}\n"
        )
