"""The plan of the tensor-core attention kernel: what it needs, and whether it can take it.

`AttentionPlan` holds the sizes, tiles, dtype, mask and scale of one attention problem, read
off the partitioned program (`AttentionPlan.from_partitioned`: a grid group over (b, h,
q-tile) whose body streams `x` with the online softmax between two contractions, every op
of it matched to the part of the kernel that implements it by `tensorcore_match.py`) or
built from sizes and tiles (`AttentionPlan.of`). From them it derives the launch (grid, warps,
threads), the shared memory and a register estimate, and `check` refuses what the kernel
cannot take. `tiles_fit_kernel` asks the same question for the tile search. The kernel
itself is written by `tensorcore_emit.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.backends.gpu.fragments import MMA_K, MMA_M
from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal, match_attention
from napkin_mlir.errors import NapkinError

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
            raise TensorCoreRefusal("the tensor-core attention kernel cannot take " + "; ".join(problems))

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
    def from_partitioned(module: ir.Module, warp_rows: int = MMA_M, filename: str | None = None) -> AttentionPlan:
        """The plan of the partitioned attention program in `module`. Every op of the program
        is matched to the part of the kernel that implements it (`match_attention`); a
        `TensorCoreRefusal` names the first op the kernel does not implement (at its location
        in `filename`), or the limit the tiles exceed."""
        match = match_attention(module, filename)
        plan = AttentionPlan.of(
            match.dims,
            {"q": match.group_sizes.get("q", match.dims["q"]), "x": match.sx},
            match.dtype,
            causal=match.causal,
            scale=match.scale,
            names=match.names,
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
