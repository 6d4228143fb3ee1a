"""Fragment layouts of `mma.sync.m16n8k16` and `ldmatrix`, stated lane by lane.

The PTX ISA's layouts as plain functions of the lane (which matrix element each register
holds, which rows `ldmatrix` hands to which lane), and a one-warp `mma` built from them. They
are the independent statement of the ISA that the emulator's vectorised `mma.sync` and
`ldmatrix` (`napkin_mlir.emulator.ops_mma`) are tested against; the emulator then runs the real
tensor-core kernel. The kernel emitter takes the row each lane gives `ldmatrix` from the
`LaneAddress` patterns here (`A_TILE`, `B_PAIR`, `B_PAIR_T`), tested against `a_coords` and
`b_coords`, and uses `A_ROWS` to repack P into A fragments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MMA_M, MMA_N, MMA_K = 16, 8, 16

#: A fragment rows of vector<4x2>: (which 16x8 accumulator tile of the pair, which half).
#: Row 0: tile 0 rows g, row 1: tile 0 rows g+8, row 2: tile 1 rows g, row 3: tile 1 rows g+8.
A_ROWS = ((0, 0), (0, 1), (1, 0), (1, 1))


@dataclass(frozen=True)
class LaneAddress:
    """The (row, col) of the tile a lane hands `ldmatrix.x4` (the start of one 8-element row
    of one of its four 8x8 matrices), an affine function of the lane:
    row = lane % row_mod + (lane // row_div) * row_step, col = ((lane // col_div) % 2) * 8."""

    row_mod: int
    row_div: int
    row_step: int
    col_div: int

    def at(self, lane: int) -> tuple[int, int]:
        return lane % self.row_mod + (lane // self.row_div) * self.row_step, ((lane // self.col_div) % 2) * 8


#: A 16x16 A tile (Q, row-major; its k columns 0-7 from lanes 0-15, 8-15 from lanes 16-31).
A_TILE = LaneAddress(row_mod=16, row_div=32, row_step=0, col_div=16)
#: The B fragments of two neighbouring n8 tiles from a row-major [n, k] tile (K: rows are keys):
#: lanes 0-15 give n tile 0 (k 0-7, then 8-15), lanes 16-31 n tile 1.
B_PAIR = LaneAddress(row_mod=8, row_div=16, row_step=8, col_div=8)
#: The B fragments of two n8 tiles from a row-major [k, n] tile, with `.trans` (V: rows are
#: keys, the k of P V): lanes 0-15 give k rows 0-15 of n tile 0, lanes 16-31 of n tile 1.
B_PAIR_T = LaneAddress(row_mod=16, row_div=16, row_step=0, col_div=16)


def a_coords(lane: int) -> list[tuple[int, int]]:
    """(row, col) of the 8 A elements (16x16, row-major) a lane holds, in register order."""
    g, c = lane // 4, lane % 4
    return [(g + 8 * (i % 2), 2 * c + e + 8 * (i // 2)) for i in range(4) for e in range(2)]


def b_coords(lane: int) -> list[tuple[int, int]]:
    """(k, n) of the 4 B elements (16x8) a lane holds."""
    g, c = lane // 4, lane % 4
    return [(2 * c + e + 8 * i, g) for i in range(2) for e in range(2)]


def c_coords(lane: int) -> list[tuple[int, int]]:
    """(row, col) of the 4 accumulator elements (16x8) a lane holds."""
    g, c = lane // 4, lane % 4
    return [(g + 8 * i, 2 * c + e) for i in range(2) for e in range(2)]


def ldmatrix(smem: np.ndarray, addresses: list[tuple[int, int]], tiles: int, transpose: bool) -> np.ndarray:
    """What each lane receives from `ldmatrix.x{tiles}`: lanes 8i..8i+7 give the row starts
    (row, col) of matrix i (8 rows of 8 contiguous elements). Returns [lane, tiles, 2]."""
    out = np.zeros((32, tiles, 2), smem.dtype)
    for i in range(tiles):
        mat = np.stack([smem[r, c : c + 8] for r, c in addresses[8 * i : 8 * i + 8]])
        if transpose:
            mat = mat.T
        for lane in range(32):
            out[lane, i] = mat[lane // 4, 2 * (lane % 4) : 2 * (lane % 4) + 2]
    return out
