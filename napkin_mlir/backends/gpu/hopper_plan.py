"""What the Hopper (sm_90a) wgmma matmul kernel takes, read from a plain diagram.

`MatmulPlan.from_diagram` walks the diagram's one function and accepts exactly
`C = contract(A, B)` in f32 over the one axis A and B share, optionally cast to the inputs'
16-bit type, with A laid out (m, k) row-major (k contiguous) and B (k, n) or (n, k)
(the wgmma's B MN-major or K-major). Every other op, layout, dtype, size or tile is refused with a `WgmmaRefusal` naming it
(and the op's location in `filename`): the kernel never approximates a program it does not
implement.

The tile: one warpgroup (128 threads) computes a 64 x `tile_n` block of C with
`wgmma.mma_async.m64n{tile_n}k16`, walking k in chunks of 64 elements (128 bytes of 16-bit
data: one row of the 128-byte swizzle pattern).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_location

TILE_M = 64  # wgmma's M: one warpgroup
TILE_K = 64  # 16-bit elements per 128-byte swizzle row
TILES_N = (64, 128, 256)
DEFAULT_TILE_N = 128
THREADS = 128  # one warpgroup
INPUT_DTYPES = ("bf16", "f16")
ELEMENT_BYTES = 2
SWIZZLE_BYTES = 128
#: Dynamic shared memory is rounded up to this alignment at run time (the swizzle pattern
#: repeats every 8 rows of 128 bytes and is applied to absolute addresses).
SMEM_ALIGN = 1024
#: Shared memory one block may take on sm_90.
MAX_SMEM = 227 * 1024


class WgmmaRefusal(NapkinError):
    """The wgmma kernel does not take this program (an op, layout, dtype, size or tile)."""


@dataclass(frozen=True)
class MatmulPlan:
    """C[m, n] = sum_k A[m, k] B[k, n] on one warpgroup per 64 x tile_n block of C."""

    name: str  # the diagram function's name
    arg_names: tuple[str, str]
    axes: tuple[str, str, str]  # the diagram's names of m, n, k
    m: int
    n: int
    k: int
    dtype: str  # A and B: bf16 or f16
    out_dtype: str  # C: f32, or the inputs' dtype
    tile_n: int
    b_k_major: bool = False  # B laid out (n, k): k contiguous (else (k, n): n contiguous)

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.n // self.tile_n, self.m // TILE_M, 1)

    @property
    def a_tile_bytes(self) -> int:
        return TILE_M * TILE_K * ELEMENT_BYTES

    @property
    def b_tile_bytes(self) -> int:
        return TILE_K * self.tile_n * ELEMENT_BYTES

    @property
    def smem_bytes(self) -> int:
        """The A and B tiles, plus the slack that lets the kernel align them to SMEM_ALIGN."""
        return SMEM_ALIGN + self.a_tile_bytes + self.b_tile_bytes

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @staticmethod
    def from_diagram(module: ir.Module, tiles: dict[str, int], filename: str | None = None) -> MatmulPlan:
        funcs = [op.operation for op in module.body.operations if op.operation.name == "func.func"]
        if len(funcs) != 1:
            raise WgmmaRefusal(f"the wgmma matmul kernel takes a diagram with one function, got {len(funcs)}")
        func = funcs[0]
        block = func.regions[0].blocks[0]
        name = ir.StringAttr(func.attributes["sym_name"]).value
        ops = [op.operation for op in block.operations]

        def where(op: ir.Operation) -> str:
            text = format_location(op.location, filename)
            return "" if text == "unknown" else f" at {text}"

        for op in ops:
            if op.name not in ("napkin.contract", "napkin.cast", "func.return"):
                raise WgmmaRefusal(
                    f"the wgmma matmul kernel does not implement {op.name}{where(op)} (--kernel wgmma takes "
                    "C = contract(A, B) in f32, optionally cast to the inputs' type, or attention: a diagram with a softmax, or an exponential and two contractions)"
                )
        if len(block.arguments) != 2:
            raise WgmmaRefusal(f"the wgmma matmul kernel takes two inputs (A, B); @{name} has {len(block.arguments)}")
        contract = ops[0]
        if contract.name != "napkin.contract" or list(contract.operands) != list(block.arguments):
            raise WgmmaRefusal(f"the wgmma matmul kernel takes contract(A, B) of the two inputs first{where(contract)}")
        if len(contract.attributes):
            raise WgmmaRefusal(f"napkin.contract{where(contract)}: attributes the wgmma kernel does not take")
        result = contract.results[0]
        ret = ops[-1]
        if len(ops) == 3:
            cast = ops[1]
            if cast.name != "napkin.cast" or cast.operands[0] != result:
                raise WgmmaRefusal(f"{cast.name}{where(cast)}: the wgmma kernel takes one cast of the contraction")
            result = cast.results[0]
        elif len(ops) != 2:
            raise WgmmaRefusal(f"@{name}: the wgmma kernel takes contract, an optional cast and return")
        if len(ret.operands) != 1 or ret.operands[0] != result:
            raise WgmmaRefusal(f"func.return{where(ret)}: the wgmma kernel returns the contraction (or its cast)")

        a_t, b_t = (ArrayType.from_mlir(a.type) for a in block.arguments)
        acc_t = ArrayType.from_mlir(contract.results[0].type)
        out_t = ArrayType.from_mlir(result.type)
        if len(a_t.axes) != 2 or len(b_t.axes) != 2:
            raise WgmmaRefusal(f"the wgmma matmul kernel takes 2-d A and B, got {a_t} and {b_t}")
        m_ax, k_ax = a_t.axes
        if k_ax not in b_t.axes:
            raise WgmmaRefusal(
                f"napkin.contract{where(contract)}: the wgmma kernel takes A ({m_ax}, {k_ax}) with B ({k_ax}, n) "
                f"or (n, {k_ax}) (k contiguous in A), got B {b_t.axes}"
            )
        b_k_major = b_t.axes[1] == k_ax
        n_ax = b_t.axes[0] if b_k_major else b_t.axes[1]
        if acc_t.axes != (m_ax, n_ax) or out_t.axes != (m_ax, n_ax):
            raise WgmmaRefusal(
                f"napkin.contract{where(contract)}: the wgmma kernel writes C ({m_ax}, {n_ax}), got {out_t.axes}"
            )
        if a_t.dtype != b_t.dtype or a_t.dtype not in INPUT_DTYPES:
            raise WgmmaRefusal(f"the wgmma matmul kernel takes bf16 or f16 A and B, got {a_t.dtype} and {b_t.dtype}")
        if acc_t.dtype != "f32":
            raise WgmmaRefusal(
                f"napkin.contract{where(contract)}: the wgmma kernel accumulates in f32, got {acc_t.dtype}"
            )
        if out_t.dtype not in ("f32", a_t.dtype):
            raise WgmmaRefusal(f"the wgmma matmul kernel writes f32 or {a_t.dtype}, got {out_t.dtype}")
        m, k = a_t.shape
        n = b_t.shape[0] if b_k_major else b_t.shape[1]
        unknown = sorted(set(tiles) - {m_ax, n_ax, k_ax})
        if unknown:
            raise WgmmaRefusal(f"--tile {','.join(unknown)}: not an axis of @{name} ({m_ax}, {n_ax}, {k_ax})")
        if tiles.get(m_ax, TILE_M) != TILE_M or tiles.get(k_ax, TILE_K) != TILE_K:
            raise WgmmaRefusal(f"the wgmma matmul kernel's tiles are {m_ax}={TILE_M} and {k_ax}={TILE_K}")
        tile_n = tiles.get(n_ax, DEFAULT_TILE_N)
        if tile_n not in TILES_N:
            raise WgmmaRefusal(f"the wgmma matmul kernel takes a tile of {n_ax} in {TILES_N}, got {tile_n}")
        for ax, size, tile in ((m_ax, m, TILE_M), (n_ax, n, tile_n), (k_ax, k, TILE_K)):
            if size % tile:
                raise WgmmaRefusal(
                    f"the wgmma matmul kernel takes {ax} a multiple of its tile {tile}, got {ax}={size} "
                    "(no partial tiles yet)"
                )
        names = tuple(ir.StringAttr(x).value for x in ir.ArrayAttr(func.attributes["arg_names"]))
        axes = (m_ax, n_ax, k_ax)
        plan = MatmulPlan(name, (names[0], names[1]), axes, m, n, k, a_t.dtype, out_t.dtype, tile_n, b_k_major)
        if plan.smem_bytes > MAX_SMEM:
            raise WgmmaRefusal(f"the wgmma matmul kernel needs {plan.smem_bytes} B of shared memory, over {MAX_SMEM}")
        return plan
