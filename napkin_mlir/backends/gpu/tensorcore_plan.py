"""The plan of the tensor-core attention kernel: what it needs, and whether it can take it.

`AttentionPlan` holds the sizes (V's head dim `dv` may differ from Q's and K's `d`), tiles,
dtype, mask, scale and score ops (the elementwise ops between the score contraction and the
softmax, and the inputs they read) of one attention problem, read off the partitioned
program (`AttentionPlan.from_partitioned`: a grid group over (b, h, q-tile) whose body
streams `x` with the online softmax between two contractions, every op of it matched to the
part of the kernel that implements it by `tensorcore_match.py`) or built from sizes and
tiles (`AttentionPlan.of`). From them it derives the launch (grid, warps, threads), the
shared memory and a register estimate, and `check` refuses what the kernel cannot take. `tiles_fit_kernel` asks the same question for the tile search. The kernel
itself is written by `tensorcore_emit.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.backends.gpu.fragments import MMA_K, MMA_M, MMA_N
from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal, match_attention
from napkin_mlir.backends.gpu.tensorcore_scores import RowOutput, ScoreInput, ScoreOp
from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.masks import Predicate

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
    d: int  # Q's and K's head dim
    dv: int  # V's and O's head dim
    gq: int  # query rows per CTA (per query head)
    sx: int  # keys per stream chunk
    dtype: str
    skips: tuple[Predicate, ...]  # masks that decide the chunks a CTA visits (interval reasoning)
    scale: float
    names: tuple[str, str, str]  # Q, K, V argument names
    warp_rows: int = MMA_M  # rows of the CTA tile per warp: a multiple of 16 (m16 MMA tiles)
    score_ops: tuple[ScoreOp, ...] = ()  # elementwise ops on the scores, before the folded scale and mask
    output_ops: tuple[ScoreOp, ...] = ()  # elementwise ops on O / l, before its cast
    inputs: tuple[ScoreInput, ...] = ()  # the function arguments after V (the kernel's too)
    row_outputs: tuple[RowOutput, ...] = ()  # outputs per query row (the row log-sum-exp)
    o_position: int = 0  # O's position among the outputs
    softmax: bool = True  # False: acc += f(S_1, ...) · C, no running max and sum (the backward's dQ)
    score_pairs: tuple[tuple[int, int], ...] = ((0, 1),)  # per score contraction: (row arg, chunk arg)
    # without a softmax: per accumulator (F's value number, chunk argument, F in f32: hi + lo)
    accumulations: tuple[tuple[int, int, bool], ...] = ()
    chunk_args: tuple[int, ...] = (1, 2)  # the two arrays chunked by the stream (K, V; Q, dO)
    row_args: tuple[int, ...] = (0,)  # the arrays whose tiles of the CTA's rows the kernel holds
    transposed: bool = False  # rows of keys, streaming the queries (dK/dV): q and x here are rows and stream
    output_accs: tuple[int, ...] = ()  # without a softmax: the accumulator each output stores

    @property
    def row_tiles(self) -> tuple[int, ...]:
        """The arguments whose tiles of the CTA's rows the kernel holds: Q (or K), then others."""
        return self.row_args

    @property
    def outputs(self) -> list[RowOutput | None]:
        """The kernel's outputs in order (after its inputs): None for O, else an output per row."""
        if not self.softmax:  # each an accumulator, like O
            return [None] * len(self.output_accs)
        found: list[RowOutput | None] = list(self.row_outputs)
        found.insert(self.o_position, None)
        return found

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
    def q_bytes(self) -> int:
        """The Q tile's shared memory, which later stages O (rows of the wider head dim)."""
        return self.rows * (max(self.d, self.dv) + PAD) * 2

    @property
    def staged_inputs(self) -> tuple[ScoreInput, ...]:
        """The inputs of the score ops that are copied chunk by chunk into shared memory with K
        and V (cp.async, 16 bytes at a time): 16-bit tables over q and x (x last, a multiple of
        8 keys); the others are read from global memory at each score."""
        read = {o.ref for op in self.score_ops for o in op.operands if o.kind == "input"}
        if self.transposed:
            return ()
        return tuple(
            i
            for i in self.inputs
            if i.arg in read and i.dtype in ELEM and i.axes[-1] == "x" and "q" in i.axes and self.x % 8 == 0
        )

    @property
    def input_tile_bytes(self) -> int:
        """One staged input's tile: the CTA's rows by the chunk's keys (padded), double-buffered."""
        return 2 * self.rows * (self.sx + PAD) * 2

    @property
    def smem_bytes(self) -> int:
        """The Q tile, K and V chunks and the staged inputs' tiles, double-buffered (16-bit
        elements, padded rows)."""
        kv = 2 * self.sx * (self.d + PAD) * 2 + 2 * self.sx * (self.dv + PAD) * 2
        return len(self.row_tiles) * self.q_bytes + kv + len(self.staged_inputs) * self.input_tile_bytes

    @property
    def registers_estimate(self) -> int:
        """32-bit registers per thread: S and O accumulators, Q and P fragments, softmax state
        and addressing (ptxas lands within about 20% of this)."""
        q = self.d // 4 if self.q_in_registers else 4
        scores = (3 * self.sx) // 4 + (len(self.score_pairs) - 1) * self.sx // 2
        accumulators = max(1, len(self.accumulations)) * self.dv // 2
        return (self.warp_rows // MMA_M) * (scores + len(self.row_tiles) * q + accumulators) + 40

    @property
    def q_in_registers(self) -> bool:
        """Whether each warp holds its Q fragments in registers through the stream (head dims
        up to 128); wider heads (256) read them from the Q tile in shared memory at every
        k-step of S = Q K^T, so that the O accumulators fit; so do kernels with two
        accumulators (dK and dV) past head dim 64."""
        return self.d <= 128 and (len(self.accumulations) <= 1 or self.d <= 64)

    def fits_registers(self) -> bool:
        """1.25x the estimate must fit both the 255-register cap and the SM's 64K registers."""
        need = int(self.registers_estimate * 1.25)
        return need <= 255 and need * self.threads <= 65536

    def check(self, registers: bool = True) -> None:
        """A `TensorCoreRefusal` naming every limit of the mma.sync kernel the plan exceeds
        (without `registers`: all but the mma.sync kernel's register estimate, for a rule that
        holds its accumulators otherwise, such as wgmma's)."""
        problems = []
        if self.dtype not in ELEM:
            problems.append(f"dtype {self.dtype} (tensor cores take bf16 or f16)")
        if self.d % 16 or self.d > 256:
            problems.append(f"head dim d={self.d} (a multiple of 16, at most 256)")
        if not self.softmax and (self.d != self.dv or self.d > 128):
            problems.append(f"head dims {self.d} and {self.dv} without a softmax (one head dim, at most 128)")
        if self.dv % MMA_N or self.dv > 256:
            problems.append(f"V's head dim {self.dv} (a multiple of {MMA_N}, at most 256)")
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
        if registers and not self.fits_registers():
            problems.append(
                f"about {self.registers_estimate} registers per thread for {self.threads} threads "
                "(the accumulators of x chunk and head dim must stay in registers)"
            )
        if problems:
            raise TensorCoreRefusal("the tensor-core attention kernel cannot take " + "; ".join(problems))

    @staticmethod
    def of(
        sizes: dict[str, int],
        tiles: dict[str, int],
        dtype: str,
        skips: tuple[Predicate, ...] = (),
        scale: float = 1.0,
        names: tuple[str, str, str] = ("Q", "K", "V"),
        warp_rows: int = MMA_M,
        score_ops: tuple[ScoreOp, ...] = (),
        output_ops: tuple[ScoreOp, ...] = (),
        inputs: tuple[ScoreInput, ...] = (),
        row_outputs: tuple[RowOutput, ...] = (),
        o_position: int = 0,
        softmax: bool = True,
        score_pairs: tuple[tuple[int, int], ...] = ((0, 1),),
        accumulations: tuple[tuple[int, int, bool], ...] = (),
        chunk_args: tuple[int, ...] = (1, 2),
        row_args: tuple[int, ...] = (0,),
        transposed: bool = False,
        output_accs: tuple[int, ...] = (),
    ) -> AttentionPlan:
        """A plan from axis sizes (b, h, [r,] q, x, d and, when V's head dim differs from d,
        dv) and tiles (q, x; whole axis if absent).

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
            dv=sizes.get("dv", sizes["d"]),
            gq=cover("q", warp_rows),
            sx=cover("x", MMA_K),
            dtype=dtype,
            skips=skips,
            scale=scale,
            names=names,
            warp_rows=warp_rows,
            score_ops=score_ops,
            output_ops=output_ops,
            inputs=inputs,
            row_outputs=row_outputs,
            o_position=o_position,
            softmax=softmax,
            score_pairs=score_pairs,
            accumulations=accumulations,
            chunk_args=chunk_args,
            row_args=row_args,
            transposed=transposed,
            output_accs=output_accs,
        )

    @staticmethod
    def from_partitioned(
        module: ir.Module, warp_rows: int = MMA_M, filename: str | None = None, registers: bool = True
    ) -> AttentionPlan:
        """The plan of the partitioned attention program in `module`. Every op of the program
        is matched to the part of the kernel that implements it (`match_attention`); a
        `TensorCoreRefusal` names the first op the kernel does not implement (at its location
        in `filename`), or the limit the tiles exceed (`registers`: `check`'s)."""
        match = match_attention(module, filename)
        plan = AttentionPlan.of(
            match.dims,
            {"q": match.group_sizes.get("q", match.dims["q"]), "x": match.sx},
            match.dtype,
            skips=match.skips,
            scale=match.scale,
            names=match.names,
            warp_rows=warp_rows,
            score_ops=match.score_ops,
            output_ops=match.output_ops,
            inputs=match.inputs,
            row_outputs=match.row_outputs,
            o_position=match.o_position,
            softmax=match.softmax,
            score_pairs=match.score_pairs,
            accumulations=match.accumulations,
            chunk_args=match.chunk_args,
            row_args=match.row_args,
            transposed=match.transposed,
            output_accs=match.output_accs,
        )
        plan.check(registers)
        return plan


def tiles_fit_kernel(
    tiles: dict[str, int],
    sizes: dict[str, int],
    dtype: str,
    warp_rows: int = MMA_M,
    softmax: bool = True,
    score_pairs: tuple[tuple[int, int], ...] = ((0, 1),),
    accumulations: tuple[tuple[int, int, bool], ...] = (),
    row_args: tuple[int, ...] = (0,),
) -> bool:
    """Whether the tensor-core kernel can take `tiles` (q, x) for attention of `sizes` (or,
    with `softmax` false, the kernel without a softmax of `score_pairs`)."""
    plan = AttentionPlan.of(
        sizes,
        tiles,
        dtype,
        warp_rows=warp_rows,
        softmax=softmax,
        score_pairs=score_pairs,
        accumulations=accumulations,
        row_args=row_args,
    )
    try:
        plan.check()
    except NapkinError:
        return False
    return True
