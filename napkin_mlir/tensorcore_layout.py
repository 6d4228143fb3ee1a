"""Fragment layouts of `mma.sync.m16n8k16` and `ldmatrix`, and a numpy model of one warp.

The tensor-core kernel (`napkin_mlir.tensorcore`) computes, per lane, which shared-memory row
each `ldmatrix` reads and which matrix element each register holds. This module states the
PTX ISA's layouts as functions of the lane and simulates a warp with them, so the kernel's
addressing is checked on any machine: loading fragments the way the kernel does and
multiplying them the way `mma.sync` does must give the plain matrix product.
"""

from __future__ import annotations

import numpy as np

MMA_M, MMA_N, MMA_K = 16, 8, 16

#: A fragment rows of vector<4x2>: (which 16x8 accumulator tile of the pair, which half).
#: Row 0: tile 0 rows g, row 1: tile 0 rows g+8, row 2: tile 1 rows g, row 3: tile 1 rows g+8.
A_ROWS = ((0, 0), (0, 1), (1, 0), (1, 1))


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


def mma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """One warp's mma.sync m16n8k16 on per-lane fragments: a [32,4,2], b [32,2,2], c [32,2,2]."""
    A = np.zeros((MMA_M, MMA_K))
    B = np.zeros((MMA_K, MMA_N))
    C = np.zeros((MMA_M, MMA_N))
    for lane in range(32):
        for (r, k), v in zip(a_coords(lane), a[lane].reshape(-1), strict=True):
            A[r, k] = v
        for (k, n), v in zip(b_coords(lane), b[lane].reshape(-1), strict=True):
            B[k, n] = v
        for (r, n), v in zip(c_coords(lane), c[lane].reshape(-1), strict=True):
            C[r, n] = v
    D = A @ B + C
    return np.stack([np.array([D[r, n] for r, n in c_coords(lane)]).reshape(2, 2) for lane in range(32)])


# --- the kernel's addressing (the same formulas napkin_mlir.tensorcore emits) ----------------


def q_fragment_address(lane: int, warp_row: int, kstep: int) -> tuple[int, int]:
    """ldmatrix.x4 row start for the A fragment of Q rows [warp_row, +16), cols [16 kstep, +16)."""
    return (warp_row + lane % 16, (lane // 16) * 8 + kstep * MMA_K)


def k_fragment_address(lane: int, ntile: int, kstep: int) -> tuple[int, int]:
    """ldmatrix.x2 row start for the B fragment of K rows [8 ntile, +8), cols [16 kstep, +16)."""
    return (lane % 8 + ntile * MMA_N, ((lane // 8) % 2) * 8 + kstep * MMA_K)


def v_fragment_address(lane: int, kstep: int, ntile: int) -> tuple[int, int]:
    """ldmatrix.x2.trans row start for the B fragment of V rows [16 kstep, +16), cols [8 ntile, +8)."""
    return (lane % 16 + kstep * MMA_K, ntile * MMA_N)


def p_as_a(s_tiles: np.ndarray, t: int) -> np.ndarray:
    """Repack accumulator tiles 2t, 2t+1 ([ntiles, 32, 2, 2]) into the A fragment of k-step t."""
    return np.stack([np.stack([s_tiles[2 * t + half, lane, i] for half, i in A_ROWS]) for lane in range(32)])


def simulate_warp_attention_step(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S = Q Kᵀ and O = S V for one warp (Q: 16 x d, K/V: sx x d) through fragments.
    Returns S [16, sx] and O [16, d] reassembled from the lanes' accumulators."""
    d, sx = q.shape[1], k.shape[0]
    qf = [ldmatrix(q, [q_fragment_address(lane, 0, t) for lane in range(32)], 4, False) for t in range(d // MMA_K)]
    s_tiles = []
    for nt in range(sx // MMA_N):
        acc = np.zeros((32, 2, 2))
        for t in range(d // MMA_K):
            kb = ldmatrix(k, [k_fragment_address(lane % 16, nt, t) for lane in range(32)], 2, False)
            acc = mma(qf[t], kb, acc)
        s_tiles.append(acc)
    s_arr = np.stack(s_tiles)
    o_tiles = []
    for nt in range(d // MMA_N):
        acc = np.zeros((32, 2, 2))
        for t in range(sx // MMA_K):
            vb = ldmatrix(v, [v_fragment_address(lane % 16, t, nt) for lane in range(32)], 2, True)
            acc = mma(p_as_a(s_arr, t), vb, acc)
        o_tiles.append(acc)
    s_full = np.zeros((MMA_M, sx))
    o_full = np.zeros((MMA_M, d))
    for lane in range(32):
        for nt in range(sx // MMA_N):
            for (r, n), val in zip(c_coords(lane), s_arr[nt, lane].reshape(-1), strict=True):
                s_full[r, nt * MMA_N + n] = val
        for nt in range(d // MMA_N):
            for (r, n), val in zip(c_coords(lane), o_tiles[nt][lane].reshape(-1), strict=True):
                o_full[r, nt * MMA_N + n] = val
    return s_full, o_full
