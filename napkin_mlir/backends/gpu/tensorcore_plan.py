"""The plan of the tensor-core attention kernel: what it needs, and whether it can take it.

`AttentionPlan` holds the sizes, tiles, dtype, mask and scale of one attention problem, read
off the partitioned program (`AttentionPlan.from_partitioned`: a grid group over (b, h,
q-tile) whose body streams `x` with the online softmax between two contractions) or built
from sizes and tiles (`AttentionPlan.of`). From them it derives the launch (grid, warps,
threads), the shared memory and a register estimate, and `check` refuses what the kernel
cannot take. `tiles_fit_kernel` asks the same question for the tile search. The kernel
itself is written by `tensorcore_emit.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.backends.gpu.fragments import MMA_K, MMA_M
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
