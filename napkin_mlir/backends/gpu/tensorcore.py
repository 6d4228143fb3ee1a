"""Tensor-core lowering (sm_80 `mma.sync`) of the FlashAttention-shaped partition.

The relabeling passes turn attention into: a grid group over (b, h, q-tile), and inside it a
stream over `x` whose step is the online softmax of a contraction (`napkin-stream-partition`
derives it). This module is the GPU rule for that pattern. It reads the tile sizes, axes,
mask and dtypes from the partitioned program (`AttentionPlan.from_partitioned`), refuses
anything else, and emits one `gpu.func` in which

* each warp owns 16 query rows (one m16 MMA tile) of the CTA's rows, which are the group's
  (r, q) rows flattened (grouped-query heads sharing a K/V head share the CTA and its K/V);
* Q, K and V tiles are copied global -> shared with 16-byte `cp.async`
  (`nvgpu.device_async_copy`, zero-filled past the end of q and x), K/V double-buffered so
  chunk j+1 loads while chunk j computes;
* fragments come from shared memory with `ldmatrix` (`.trans` for V);
* S = Q Kᵀ and O += P V run on `mma.sync.m16n8k16` (bf16/f16 in, f32 accumulate);
* the online softmax stays in registers: row max and sums across the 4 lanes of a quad with
  `shfl.xor`, the running sum kept per thread and reduced once at the end;
* P is repacked from the S accumulator layout into A fragments without touching memory.

Shared-memory rows are padded by 8 elements (16 bytes) so `ldmatrix` reads are free of bank
conflicts. The fragment layouts used here are those of the PTX ISA for m16n8k16 and
ldmatrix; `napkin emulate` runs the emitted kernel on the CPU (`napkin_mlir.emulator.machine`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir

from napkin_mlir.backends.gpu.fragments import A_ROWS, MMA_K, MMA_M, MMA_N
from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType

ELEM = {"bf16": "bf16", "f16": "f16"}
PAD = 8  # elements of padding per shared-memory row (16 bytes)


@dataclass(frozen=True)
class AttentionPlan:
    """What the tensor-core kernel needs, read off the partitioned attention program."""

    b: int
    h: int  # key/value heads
    r: int  # query heads per key/value head
    q: int
    x: int
    d: int
    gq: int  # query rows per CTA (per query head)
    sx: int  # keys per stream chunk
    dtype: str
    causal: bool
    scale: float
    names: tuple[str, str, str]  # Q, K, V argument names
    warp_rows: int = MMA_M  # rows of the CTA tile per warp: a multiple of 16 (m16 MMA tiles)

    @property
    def rows(self) -> int:
        """Query rows of one CTA: the r heads times the q tile."""
        return self.r * self.gq

    @property
    def warps(self) -> int:
        return self.rows // self.warp_rows

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def grid(self) -> tuple[int, int, int]:
        return (-(-self.q // self.gq), self.h, self.b)

    @property
    def smem_bytes(self) -> int:
        row = (self.d + PAD) * 2
        return self.rows * row + 2 * 2 * self.sx * row

    @property
    def registers_estimate(self) -> int:
        """32-bit registers per thread: S and O accumulators, Q and P fragments, softmax state
        and addressing (ptxas lands within about 20% of this)."""
        return (self.warp_rows // MMA_M) * ((3 * self.sx) // 4 + (3 * self.d) // 4) + 40

    def fits_registers(self) -> bool:
        """1.25x the estimate must fit both the 255-register cap and the SM's 64K registers."""
        need = int(self.registers_estimate * 1.25)
        return need <= 255 and need * self.threads <= 65536

    def check(self) -> None:
        problems = []
        if self.dtype not in ELEM:
            problems.append(f"dtype {self.dtype} (tensor cores take bf16 or f16)")
        if self.d % 16 or self.d > 256:
            problems.append(f"head dim d={self.d} (a multiple of 16, at most 256)")
        if self.gq % MMA_M:
            problems.append(f"q tile {self.gq} (a multiple of {MMA_M}: one m16 tile per warp)")
        if self.warp_rows % MMA_M or self.gq % self.warp_rows:
            problems.append(f"{self.warp_rows} rows per warp (a multiple of {MMA_M} dividing the q tile {self.gq})")
        if self.scale <= 0:
            problems.append(f"score scale {self.scale} (the row max is taken before scaling: it must be positive)")
        if self.sx % MMA_K:
            problems.append(f"x chunk {self.sx} (a multiple of {MMA_K})")
        if self.warps > 16:
            problems.append(f"{self.warps} warps per CTA (at most 16)")
        if self.smem_bytes > 227 * 1024:
            problems.append(f"{self.smem_bytes} bytes of shared memory (at most 227 KiB)")
        if not self.fits_registers():
            problems.append(
                f"about {self.registers_estimate} registers per thread for {self.threads} threads "
                "(the accumulators of x chunk and head dim must stay in registers)"
            )
        if problems:
            raise NapkinError("the tensor-core attention kernel cannot take " + "; ".join(problems))

    @staticmethod
    def of(
        sizes: dict[str, int],
        tiles: dict[str, int],
        dtype: str,
        causal: bool = False,
        scale: float = 1.0,
        names: tuple[str, str, str] = ("Q", "K", "V"),
        warp_rows: int = MMA_M,
    ) -> AttentionPlan:
        """A plan from axis sizes (b, h, [r,] q, x, d) and tiles (q, x; whole axis if absent).

        A tile that covers its whole axis is rounded up to whole MMA tiles (`warp_rows` rows,
        16 keys), so short sequences (decoding with q=1, a handful of keys) take the same
        kernel: rows past q are never stored and keys past x are zero-filled and masked."""

        def cover(axis: str, unit: int) -> int:
            tile = tiles.get(axis, sizes[axis])
            return -(-sizes[axis] // unit) * unit if tile >= sizes[axis] else tile

        return AttentionPlan(
            b=sizes["b"],
            h=sizes["h"],
            r=sizes.get("r", 1),
            q=sizes["q"],
            x=sizes["x"],
            d=sizes["d"],
            gq=cover("q", warp_rows),
            sx=cover("x", MMA_K),
            dtype=dtype,
            causal=causal,
            scale=scale,
            names=names,
            warp_rows=warp_rows,
        )

    @staticmethod
    def from_partitioned(module: ir.Module, warp_rows: int = MMA_M) -> AttentionPlan:
        """Match grid group -> stream(online softmax) and read the plan; NapkinError if the
        program does not have that shape."""
        func = next(op.operation for op in module.body.operations if op.operation.name == "func.func")
        body = func.regions[0].blocks[0]
        groups = [op.operation for op in body.operations if op.operation.name == "napkin.group"]
        if len(groups) != 1:
            raise NapkinError("tensor-core attention needs one grid group partition (run the derivation first)")
        group = groups[0]
        axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(group.attributes["axes"])]
        sizes = dict(zip(axes, ir.DenseI64ArrayAttr(group.attributes["sizes"]), strict=True))
        gbody = group.regions[0].blocks[0]
        streams = [op.operation for op in gbody.operations if op.operation.name == "napkin.stream"]
        if len(streams) != 1:
            raise NapkinError("tensor-core attention needs one stream partition inside the group")
        stream = streams[0]
        step = stream.regions[1].blocks[0]
        names = [op.operation.name for op in step.operations]
        if names.count("napkin.contract") != 2 or "napkin.exp" not in names or "napkin.reduce" not in names:
            raise NapkinError("the stream step is not an online softmax between two contractions")
        args = [ArrayType.from_mlir(a.type) for a in body.arguments]
        qa, ka = args[0], args[1]
        dims = {**qa.sizes, **ka.sizes}
        if set(qa.axes) - {"b", "h", "r", "q", "d"} or ka.axes != ("b", "h", "x", "d"):
            raise NapkinError(f"unexpected attention layout: Q {qa.axes}, K {ka.axes}")
        scales = [
            ir.FloatAttr(op.attributes["factor"]).value for op in step.operations if op.operation.name == "napkin.scale"
        ]
        causal = any(op.operation.name == "napkin.mask" for op in step.operations)
        arg_names = [ir.StringAttr(n).value for n in ir.ArrayAttr(func.attributes["arg_names"])]
        if any(sizes.get(a, 1) != 1 for a in ("b", "h")) or "r" in sizes:
            raise NapkinError("tensor-core attention needs one (b, h) slice per CTA with all r heads in it")
        plan = AttentionPlan.of(
            dims,
            {"q": sizes["q"], "x": ir.IntegerAttr(stream.attributes["size"]).value},
            qa.dtype,
            causal=causal,
            scale=scales[0] if scales else 1.0,
            names=(arg_names[0], arg_names[1], arg_names[2]),
            warp_rows=warp_rows,
        )
        plan.check()
        return plan


def tiles_fit_kernel(tiles: dict[str, int], sizes: dict[str, int], dtype: str, warp_rows: int = MMA_M) -> bool:
    """Whether the tensor-core kernel can take `tiles` (q, x) for attention of `sizes`."""
    plan = AttentionPlan.of(sizes, tiles, dtype, warp_rows=warp_rows)
    try:
        plan.check()
    except NapkinError:
        return False
    return True


class _Emitter:
    """Builds MLIR text with fresh SSA names (the kernel is unrolled at the fragment level)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0
        self.consts: dict[tuple[str, str], str] = {}
        self.indent = 6

    def fresh(self, hint: str = "v") -> str:
        self.n += 1
        return f"%{hint}{self.n}"

    def emit(self, text: str) -> None:
        self.lines.append(" " * self.indent + text)

    def op(self, text: str, hint: str = "v") -> str:
        name = self.fresh(hint)
        self.emit(f"{name} = {text}")
        return name

    def idx(self, value: int) -> str:
        key = ("index", str(value))
        if key not in self.consts:
            self.consts[key] = f"%c{value}".replace("-", "m")
        return self.consts[key]

    def const(self, value: float | int, t: str) -> str:
        key = (t, repr(value))
        if key not in self.consts:
            tag = t.replace("<", "_").replace(">", "").replace("x", "_")
            self.consts[key] = f"%k{len(self.consts)}_{tag}"
        return self.consts[key]

    def const_lines(self) -> list[str]:
        out = []
        for (t, value), name in self.consts.items():
            if t == "index":
                out.append(f"{name} = arith.constant {value} : index")
            elif t.startswith("vector"):
                out.append(f"{name} = arith.constant dense<{value}> : {t}")
            else:
                v = float(value) if t.startswith("f") else int(value)
                lit = "0xFF800000" if v == -math.inf else repr(v)
                out.append(f"{name} = arith.constant {lit} : {t}")
        return out

    # index arithmetic
    def add(self, a: str, b: str) -> str:
        return self.op(f"arith.addi {a}, {b} : index", "i")

    def mul(self, a: str, b: str) -> str:
        return self.op(f"arith.muli {a}, {b} : index", "i")

    def div(self, a: str, b: str) -> str:
        return self.op(f"arith.divui {a}, {b} : index", "i")

    def rem(self, a: str, b: str) -> str:
        return self.op(f"arith.remui {a}, {b} : index", "i")

    def minu(self, a: str, b: str) -> str:
        return self.op(f"arith.minui {a}, {b} : index", "i")


def emit_attention_kernel(plan: AttentionPlan, name: str = "attention_tc") -> str:
    """The whole module (gpu.container_module with one kernel) as MLIR text."""
    e = _Emitter()
    el = ELEM[plan.dtype]
    d, sx, rows, gq = plan.d, plan.sx, plan.rows, plan.gq
    row_len = d + PAD
    q_shape = (plan.b, plan.h, plan.r, plan.q, d)
    kv_shape = (plan.b, plan.h, plan.x, d)
    qt = f"memref<{'x'.join(map(str, q_shape))}x{el}>"
    kvt = f"memref<{'x'.join(map(str, kv_shape))}x{el}>"
    wg = "#gpu.address_space<workgroup>"
    qs_t = f"memref<{rows}x{row_len}x{el}, {wg}>"
    kvs_t = f"memref<2x{sx}x{row_len}x{el}, {wg}>"
    f32 = "f32"
    acc_t = "vector<2x2xf32>"
    a_t = f"vector<4x2x{el}>"
    b_t = f"vector<2x2x{el}>"
    log2e = 1.4426950408889634
    scale2 = plan.scale * log2e  # exp(s*scale - m) = exp2(s*scale*log2e - m') with m' in log2 units

    base = e.op(f"gpu.dynamic_shared_memory : memref<?xi8, {wg}>", "smem")
    q_bytes = rows * row_len * 2
    kv_bytes = 2 * sx * row_len * 2
    e.emit(f"%qs = memref.view {base}[{e.idx(0)}][] : memref<?xi8, {wg}> to {qs_t}")
    e.emit(f"%ks = memref.view {base}[{e.idx(q_bytes)}][] : memref<?xi8, {wg}> to {kvs_t}")
    e.emit(f"%vs = memref.view {base}[{e.idx(q_bytes + kv_bytes)}][] : memref<?xi8, {wg}> to {kvs_t}")
    tid = e.op("gpu.thread_id x", "tid")
    bx = e.op("gpu.block_id x", "bx")
    head = e.op("gpu.block_id y", "kvh")
    batch = e.op("gpu.block_id z", "bat")
    lane = e.rem(tid, e.idx(32))
    warp = e.div(tid, e.idx(32))
    g = e.div(lane, e.idx(4))  # row of the fragment (and row + 8)
    c = e.rem(lane, e.idx(4))  # column pair
    q0 = e.mul(bx, e.idx(gq))

    def ldmatrix(buf: str, buf_t: str, index: list[str], transpose: bool) -> str:
        """One ldmatrix.x4: an A fragment (Q) or two B fragments (K, `.trans` for V)."""
        attrs = f"{{numTiles = 4 : i32, transpose = {'true' if transpose else 'false'}}}"
        return e.op(f"nvgpu.ldmatrix {buf}[{', '.join(index)}] {attrs} : {buf_t} -> {a_t}", "lm")

    def b_pair(buf: str, index: list[str], transpose: bool) -> tuple[str, str]:
        """The B fragments of two neighbouring n8 tiles from one ldmatrix.x4 (lanes 0-15 give
        the rows of the first tile, lanes 16-31 those of the second)."""
        both = ldmatrix(buf, kvs_t, index, transpose)
        return tuple(  # type: ignore[return-value]
            e.op(
                f"vector.extract_strided_slice {both} {{offsets = [{first}, 0], sizes = [2, 2], strides = [1, 1]}}"
                f" : {a_t} to {b_t}",
                "kb",
            )
            for first in (0, 2)
        )

    def mma(a: str, b: str, acc: str) -> str:
        """mma.sync m16n8k16, f32 accumulate. nvgpu.mma.sync lowers f16 only, so bf16 goes
        through nvvm.mma.sync on the packed 32-bit registers."""
        if el == "f16":
            return e.op(
                f"nvgpu.mma.sync ({a}, {b}, {acc}) {{mmaShape = [16, 8, 16]}} : ({a_t}, {b_t}, {acc_t}) -> {acc_t}",
                "mm",
            )

        def packed(frag: str, rows: int) -> list[str]:
            regs = []
            for i in range(rows):
                pair = e.op(f"vector.extract {frag}[{i}] : vector<2x{el}> from vector<{rows}x2x{el}>", "pk")
                word = e.op(f"vector.bitcast {pair} : vector<2x{el}> to vector<1xi32>", "pk")
                regs.append(e.op(f"vector.extract {word}[0] : i32 from vector<1xi32>", "pk"))
            return regs

        ra, rb = packed(a, 4), packed(b, 2)
        rc = [e.op(f"vector.extract {acc}[{i}, {k}] : f32 from {acc_t}", "pk") for i in range(2) for k in range(2)]
        res = e.op(
            f"nvvm.mma.sync A[{', '.join(ra)}] B[{', '.join(rb)}] C[{', '.join(rc)}] "
            "{layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, "
            f"multiplicandAPtxType = #nvvm.mma_type<{el}>, multiplicandBPtxType = #nvvm.mma_type<{el}>, "
            "shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>",
            "mm",
        )
        outs = [e.op(f"llvm.extractvalue {res}[{i}] : !llvm.struct<(f32, f32, f32, f32)>", "pk") for i in range(4)]
        return e.op(f"vector.from_elements {', '.join(outs)} : {acc_t}", "mm")

    # --- cp.async copies: each thread moves 16-byte vectors (8 elements) --------------------
    vec = 8
    per_row = d // vec

    def copy_tile(
        dst: str, dst_prefix: list[str], src: str, nrows: int, src_row: Callable, valid: Callable
    ) -> list[str]:
        """The CTA's threads move the tile in rounds of one 16-byte cp.async each; rows past
        the end of q or x read zero bytes (zero fill). When the last round is partial, its
        copies sit in an `scf.if`: the idle threads issue nothing (a copy of theirs would
        write some other thread's bytes). Returns the tokens of the unconditional copies;
        the commit group takes every earlier cp.async of the thread either way."""
        chunks = nrows * per_row
        tokens = []
        for it in range(-(-chunks // plan.threads)):
            chunk = e.add(tid, e.idx(it * plan.threads))
            row = e.div(chunk, e.idx(per_row))
            col = e.mul(e.rem(chunk, e.idx(per_row)), e.idx(vec))
            n = e.op(f"arith.select {valid(row)}, {e.idx(vec)}, {e.idx(0)} : index", "n")
            dst_idx = ", ".join([*dst_prefix, row, col])
            partial = (it + 1) * plan.threads > chunks
            if partial:
                inb = e.op(f"arith.cmpi ult, {chunk}, {e.idx(chunks)} : index", "p")
                e.emit(f"scf.if {inb} {{")
                e.indent += 2
            token = e.op(
                f"nvgpu.device_async_copy {src}[{', '.join([*src_row(row), col])}], {dst}[{dst_idx}], {vec}, {n}"
                f" {{bypassL1}} : {qt if src == '%Q' else kvt} to {qs_t if dst == '%qs' else kvs_t}",
                "cp",
            )
            if partial:
                e.indent -= 2
                e.emit("}")
            else:
                tokens.append(token)
        return tokens

    def q_src(row: str) -> list[str]:
        ri = e.div(row, e.idx(gq))  # which of the r query heads
        qi = e.minu(e.add(q0, e.rem(row, e.idx(gq))), e.idx(plan.q - 1))
        return [batch, head, ri, qi]

    def q_valid(row: str) -> str:
        qi = e.add(q0, e.rem(row, e.idx(gq)))
        return e.op(f"arith.cmpi ult, {qi}, {e.idx(plan.q)} : index", "p")

    # --- the stream's extent: every chunk, or for a causal CTA those up to its last row -----
    n_chunks = -(-plan.x // sx)
    upper = e.idx(n_chunks)
    kv_end = e.idx(plan.x)  # keys past this are never loaded (zero-filled)
    if plan.causal:
        last = e.div(e.add(q0, e.idx(gq + sx - 1)), e.idx(sx))
        upper = e.minu(last, e.idx(n_chunks))
        kv_end = e.minu(e.mul(upper, e.idx(sx)), kv_end)

    def kv_loader(chunk: str, stage: str) -> str:
        x0 = e.mul(chunk, e.idx(sx))
        tokens: list[str] = []
        for buf, src in (("%ks", "%K"), ("%vs", "%V")):

            def src_row(row: str, x0: str = x0) -> list[str]:
                return [batch, head, e.minu(e.add(x0, row), e.idx(plan.x - 1))]  # clamped: stays in bounds

            def valid(row: str, x0: str = x0) -> str:
                return e.op(f"arith.cmpi ult, {e.add(x0, row)}, {kv_end} : index", "p")

            tokens += copy_tile(buf, [stage], src, sx, src_row, valid)
        return e.op(f"nvgpu.device_async_create_group {', '.join(tokens)}", "grp")

    e.op(f"nvgpu.device_async_create_group {', '.join(copy_tile('%qs', [], '%Q', rows, q_src, q_valid))}", "grp")
    first = kv_loader(e.idx(0), e.idx(0))
    e.emit(f"nvgpu.device_async_wait {first} {{numGroups = 1 : i32}}")
    e.emit("gpu.barrier")

    # --- Q fragments: A operands for the d/16 k-steps of S = Q K^T, per m16 tile of the warp --
    mt = plan.warp_rows // MMA_M
    tiles_m = range(mt)
    wrow = e.mul(warp, e.idx(plan.warp_rows))
    a_col = e.mul(e.div(lane, e.idx(16)), e.idx(8))
    qfrag: list[list[str]] = []
    for mi in tiles_m:
        a_row = e.add(e.add(wrow, e.idx(mi * MMA_M)), e.rem(lane, e.idx(16)))
        frags = []
        for kt in range(d // MMA_K):
            col = e.add(a_col, e.idx(kt * MMA_K))
            frags.append(ldmatrix("%qs", qs_t, [a_row, col], False))
        qfrag.append(frags)

    # rows of this thread (per m tile, rows g and g+8): flattened CTA rows -> (r, q)
    my_rows = []
    for mi in tiles_m:
        base = e.add(e.add(wrow, e.idx(mi * MMA_M)), g)
        my_rows.append([base, e.add(base, e.idx(8))])
    my_q = [[e.add(q0, e.rem(rw, e.idx(gq))) for rw in pair] for pair in my_rows]

    # --- the stream over x --------------------------------------------------------------------
    ninf = e.const(-math.inf, f32)
    zero = e.const(0.0, f32)
    zacc = e.const(0.0, acc_t)
    n_o = d // MMA_N
    n_s = sx // MMA_N
    state, init, types = [], [], []
    for mi in tiles_m:
        state += [f"%m{mi}_0", f"%m{mi}_1", f"%l{mi}_0", f"%l{mi}_1"] + [f"%o{mi}_{nt}" for nt in range(n_o)]
        init += [ninf, ninf, zero, zero] + [zacc] * n_o
        types += [f32] * 4 + [acc_t] * n_o
    loop_res = e.fresh("st")
    e.emit(
        f"{loop_res}:{len(state)} = scf.for %j = {e.idx(0)} to {upper} step {e.idx(1)} iter_args("
        + ", ".join(f"{s} = {i}" for s, i in zip(state, init, strict=True))
        + f") -> ({', '.join(types)}) {{"
    )
    e.indent += 2
    stage = e.rem("%j", e.idx(2))
    nxt = e.add("%j", e.idx(1))
    # prefetch chunk j+1 into the other stage while chunk j computes (past this CTA's last
    # chunk the copies read nothing: every row is past kv_end, so they zero-fill an unused stage)
    group = kv_loader(nxt, e.rem(nxt, e.idx(2)))
    e.emit(f"nvgpu.device_async_wait {group} {{numGroups = 1 : i32}}")
    e.emit("gpu.barrier")
    x0 = e.mul("%j", e.idx(sx))

    # S = Q K^T: n_s accumulators of 16x8 per m tile; each K fragment serves every m tile.
    # One ldmatrix.x4 per k-step and pair of n tiles: lane l gives row 8(nt + l//16) + l%8 of
    # the chunk, columns 16kt + 8((l//8)%2) .. +8.
    b_row = e.add(e.rem(lane, e.idx(8)), e.mul(e.div(lane, e.idx(16)), e.idx(MMA_N)))
    b_col = e.mul(e.rem(e.div(lane, e.idx(8)), e.idx(2)), e.idx(8))
    s = [[zacc] * n_s for _ in tiles_m]
    for nt in range(0, n_s, 2):
        krow = e.add(b_row, e.idx(nt * MMA_N))
        for kt in range(d // MMA_K):
            kbs = b_pair("%ks", [stage, krow, e.add(b_col, e.idx(kt * MMA_K))], False)
            for mi in tiles_m:
                for half, kb in enumerate(kbs):
                    s[mi][nt + half] = mma(qfrag[mi][kt], kb, s[mi][nt + half])

    # mask (element (nt, half i, e) is row my_rows[mi][i], col x0 + 8nt + 2c + e); the scores
    # stay unscaled: the scale (positive) goes into one fma per element with the row max below
    scl = e.const(scale2, f32)
    cols = [[e.add(x0, e.add(e.mul(c, e.idx(2)), e.idx(nt * MMA_N + k))) for k in range(2)] for nt in range(n_s)]
    past_x = [
        [e.op(f"arith.cmpi uge, {cols[nt][k]}, {e.idx(plan.x)} : index", "p") for k in range(2)] for nt in range(n_s)
    ]
    svals: list[list[list[list[str]]]] = []
    for mi in tiles_m:
        per_tile = []
        for nt in range(n_s):
            tile = []
            for i in range(2):
                pair = []
                for k in range(2):
                    v = e.op(f"vector.extract {s[mi][nt]}[{i}, {k}] : f32 from {acc_t}", "e")
                    bad = past_x[nt][k]
                    if plan.causal:
                        late = e.op(f"arith.cmpi ugt, {cols[nt][k]}, {my_q[mi][i]} : index", "p")
                        bad = e.op(f"arith.ori {bad}, {late} : i1", "p")
                    pair.append(e.op(f"arith.select {bad}, {ninf}, {v} : f32", "e"))
                tile.append(pair)
            per_tile.append(tile)
        svals.append(per_tile)

    def quad_reduce(v: str, combine: str) -> str:
        for off in (1, 2):
            sh = e.fresh("sh")
            e.emit(f"{sh}, {e.fresh('ok')} = gpu.shuffle xor {v}, {e.const(off, 'i32')}, {e.const(32, 'i32')} : f32")
            v = e.op(f"{combine} {v}, {sh} : f32", "r")
        return v

    new_state: dict[str, str] = {}
    pfrag: list[list[str]] = []
    alpha_v: list[str] = []
    for mi in tiles_m:
        alphas = []
        for i in range(2):
            mx = f"%m{mi}_{i}"
            for nt in range(n_s):
                for k in range(2):
                    mx = e.op(f"arith.maximumf {mx}, {svals[mi][nt][i][k]} : f32", "mx")
            mx = quad_reduce(mx, "arith.maximumf")
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
                args = [e.op(f"math.fma {svals[mi][nt][i][k]}, {scl}, {neg_max[i]} : f32", "d") for k in range(2)]
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
        for t in range(sx // MMA_K):
            elems = [probs[2 * t + half][i][k] for half, i in A_ROWS for k in range(2)]
            pv = e.op(f"vector.from_elements {', '.join(elems)} : vector<4x2xf32>", "pf")
            frags.append(e.op(f"arith.truncf {pv} : vector<4x2xf32> to {a_t}", "pa"))
        pfrag.append(frags)
        alpha_v.append(e.op(f"vector.from_elements {alphas[0]}, {alphas[0]}, {alphas[1]}, {alphas[1]} : {acc_t}", "av"))
    # rescale O and accumulate P V (V fragments transposed by ldmatrix, shared by the m tiles):
    # one ldmatrix.x4.trans per k-step and pair of n tiles, lane l giving row 16t + l%16 of
    # the chunk at columns 8(nt + l//16) .. +8 of the head dim.
    v_row = e.rem(lane, e.idx(16))
    v_col = e.mul(e.div(lane, e.idx(16)), e.idx(MMA_N))
    o_acc = [[e.op(f"arith.mulf %o{mi}_{nt}, {alpha_v[mi]} : {acc_t}", "o") for nt in range(n_o)] for mi in tiles_m]
    for nt in range(0, n_o, 2):
        for t in range(sx // MMA_K):
            vbs = b_pair("%vs", [stage, e.add(v_row, e.idx(t * MMA_K)), e.add(v_col, e.idx(nt * MMA_N))], True)
            for mi in tiles_m:
                for half, vb in enumerate(vbs):
                    o_acc[mi][nt + half] = mma(pfrag[mi][t], vb, o_acc[mi][nt + half])
    for mi in tiles_m:
        for nt in range(n_o):
            new_state[f"%o{mi}_{nt}"] = o_acc[mi][nt]
    e.emit("gpu.barrier")  # the next iteration's copy overwrites the stage read here
    e.emit(f"scf.yield {', '.join(new_state[s_] for s_ in state)} : {', '.join(types)}")
    e.indent -= 2
    e.emit("}")

    # --- finish: O / l, convert, store the valid rows ----------------------------------------
    e.emit(f"nvgpu.device_async_wait {first} {{numGroups = 0 : i32}}")  # the last (empty) prefetch
    final = {s_: f"{loop_res}#{i}" for i, s_ in enumerate(state)}
    # stage O through shared memory (the Q tile's buffer, free since its fragments live in
    # registers), then write it with 16-byte vector stores, one 8-element row piece per thread
    for mi in tiles_m:
        inv = []
        for i in range(2):
            total = quad_reduce(final[f"%l{mi}_{i}"], "arith.addf")
            inv.append(e.op(f"arith.divf {e.const(1.0, f32)}, {total} : f32", "inv"))
        inv_v = e.op(f"vector.from_elements {inv[0]}, {inv[0]}, {inv[1]}, {inv[1]} : {acc_t}", "iv")
        for nt in range(n_o):
            o = e.op(f"arith.mulf {final[f'%o{mi}_{nt}']}, {inv_v} : {acc_t}", "fo")
            o16 = e.op(f"arith.truncf {o} : {acc_t} to vector<2x2x{el}>", "fo")
            col = e.add(e.mul(c, e.idx(2)), e.idx(nt * MMA_N))
            for i in range(2):
                pair = e.op(f"vector.extract {o16}[{i}] : vector<2x{el}> from vector<2x2x{el}>", "pr")
                e.emit(f"vector.store {pair}, %qs[{my_rows[mi][i]}, {col}] : {qs_t}, vector<2x{el}>")
    e.emit("gpu.barrier")
    chunks = rows * per_row
    for it in range(-(-chunks // plan.threads)):
        chunk = e.add(tid, e.idx(it * plan.threads))
        row = e.div(chunk, e.idx(per_row))
        col = e.mul(e.rem(chunk, e.idx(per_row)), e.idx(vec))
        qi = e.add(q0, e.rem(row, e.idx(gq)))
        inb = e.op(f"arith.cmpi ult, {chunk}, {e.idx(chunks)} : index", "p")
        valid = e.op(f"arith.cmpi ult, {qi}, {e.idx(plan.q)} : index", "p")
        ok = e.op(f"arith.andi {inb}, {valid} : i1", "p")
        e.emit(f"scf.if {ok} {{")
        e.indent += 2
        piece = e.op(f"vector.load %qs[{row}, {col}] : {qs_t}, vector<{vec}x{el}>", "w")
        e.emit(
            f"vector.store {piece}, %O[{batch}, {head}, {e.div(row, e.idx(gq))}, {qi}, {col}] "
            f"{{alignment = 16 : i64}} : {qt}, vector<{vec}x{el}>"
        )
        e.indent -= 2
        e.emit("}")
    e.emit("gpu.return")

    body = [" " * 6 + line for line in e.const_lines()] + e.lines
    return (
        "module attributes {gpu.container_module} {\n"
        f"  gpu.module @{name}_module {{\n"
        f"    gpu.func @{name}(%Q: {qt}, %K: {kvt}, %V: {kvt}, %O: {qt})\n"
        f"        kernel attributes {{known_block_size = array<i32: {plan.threads}, 1, 1>, nvvm.minctasm = 1 : i32}} {{\n"
        + "\n".join(body)
        + "\n    }\n  }\n}\n"
    )
