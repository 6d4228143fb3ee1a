"""Rules for the tensor cores: `ldmatrix` and `mma.sync` m16n8k16, by the PTX ISA's layouts.

* `ldmatrix` x1/x2/x4 (and `.trans`): lanes 8i..8i+7 give the rows of matrix i; every lane
  receives its two elements per matrix; row addresses must be 16-byte aligned, in shared
  memory, and the whole warp must execute it;
* `mma.sync` m16n8k16 (`nvvm.mma.sync` with packed i32 registers, row.col, and
  `nvgpu.mma.sync` with vectors): each warp's 32 lanes' fragments are gathered into 16x16 A,
  16x8 B and C tiles, multiplied in float32 and scattered back by the ISA's fragment layout
  (`mma_m16n8k16`).

`napkin_mlir.backends.gpu.fragments` states the same layouts lane by lane; the tests check
these vectorised forms against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import EmulationError, Machine, MemRef, Step
from napkin_mlir.emulator.memory import address, check_alignment, count_wavefronts, gather, race_check_read
from napkin_mlir.emulator.program import Compiler, numpy_dtype, rule


@rule("nvgpu.ldmatrix")
def _ldmatrix(op: ir.Operation, c: Compiler) -> Step:
    base, *idx = (c.slot(v) for v in op.operands)
    tiles = ir.IntegerAttr(op.attributes["numTiles"]).value
    transpose = ir.BoolAttr(op.attributes["transpose"]).value
    out = c.slot(op.results[0])
    where, op_id = c.where(op), c.op_id(op)

    def step(m: Machine) -> None:
        m.whole_warps(where)
        ref: MemRef = m.env[base]
        if ref.itemsize != 2 or ref.space != "shared":
            raise EmulationError("ldmatrix reads 16-bit elements from shared memory", where)
        giving = m.mask & (np.broadcast_to(m.lane, (m.C, m.T)) < 8 * tiles)  # lanes that give row addresses
        lin = address(m, ref, [m.env[i] for i in idx], 8, where, giving)
        check_alignment(m, ref, lin, 16, giving, where)
        race_check_read(m, ref, lin, 8, giving, op_id)
        count_wavefronts(m, ref, lin, 8, giving, "ldmatrix")
        m.count("ldmatrix")
        rows = gather(m, ref, lin, 8).reshape(m.C, -1, 4, 8, 8)  # (C, W, matrix, row, col)
        m.env[out] = _ldmatrix_fragments(rows, transpose).reshape(m.C, m.T, 4, 2)[:, :, :tiles]

    return step


def _ldmatrix_fragments(rows: np.ndarray, transpose: bool) -> np.ndarray:
    """Each lane's two elements of each matrix M, from the rows (C, W, matrix, row, col) the
    warp's lanes pointed at: lane (g, t) = (lane // 4, lane % 4) of a warp."""
    C = rows.shape[0]
    if transpose:  # lane (g, t) gets M[2t + e, g]
        return rows.reshape(C, -1, 4, 4, 2, 8).transpose(0, 1, 5, 3, 2, 4)
    # lane (g, t) gets M[g, 2t + e]
    return rows.reshape(C, -1, 4, 8, 4, 2).transpose(0, 1, 3, 4, 2, 5)


def _mma_operands(op: ir.Operation, c: Compiler, where: str) -> tuple[Any, Any, Any, np.dtype | None]:
    """The slots of A, B and C (one vector each for nvgpu.mma.sync; 4, 2 and 4 registers for
    nvvm.mma.sync) and the element type packed in nvvm's i32 registers (None for nvgpu)."""
    if op.name == "nvgpu.mma.sync":
        shape = list(ir.ArrayAttr(op.attributes["mmaShape"]))
        if [ir.IntegerAttr(s).value for s in shape] != [16, 8, 16]:
            raise EmulationError("only mma.sync m16n8k16 is supported", where)
        a_s, b_s, c_s = (c.slot(v) for v in op.operands)
        return a_s, b_s, c_s, None
    text = str(op.attributes["shape"])
    if "m = 16, n = 8, k = 16" not in text:
        raise EmulationError(f"only mma.sync m16n8k16 is supported, got {text}", where)
    if "row" not in str(op.attributes["layoutA"]) or "col" not in str(op.attributes["layoutB"]):
        raise EmulationError("only the row.col mma.sync layout is supported", where)
    packed = numpy_dtype(ir.Type.parse(str(op.attributes["multiplicandAPtxType"]).split("<")[1].rstrip(">")))
    operands = [c.slot(v) for v in op.operands]
    return operands[:4], operands[4:6], operands[6:10], packed


@rule("nvvm.mma.sync", "nvgpu.mma.sync")
def _mma(op: ir.Operation, c: Compiler) -> Step:
    where = c.where(op)
    a_s, b_s, c_s, packed = _mma_operands(op, c, where)
    out = c.slot(op.results[0])

    def unpack(m: Machine, slots: list[int]) -> np.ndarray:
        regs = np.stack([np.ascontiguousarray(m.full(m.env[s], 0)).astype(np.int32) for s in slots], axis=-1)
        return regs[..., None].view(packed)  # (C, T, n, 2): the low half is element 0

    def step(m: Machine) -> None:
        m.whole_warps(where)
        m.count("mma.sync")
        if packed is None:
            a, b, acc = m.full(m.env[a_s], 2), m.full(m.env[b_s], 2), m.full(m.env[c_s], 2)
        else:
            a, b = unpack(m, a_s), unpack(m, b_s)
            acc = np.stack([m.full(m.env[s], 0) for s in c_s], axis=-1).reshape(m.C, m.T, 2, 2)
        d = mma_m16n8k16(a.astype(np.float32), b.astype(np.float32), acc.astype(np.float32))
        m.env[out] = d if packed is None else tuple(d.reshape(m.C, m.T, 4)[..., i] for i in range(4))

    return step


def mma_m16n8k16(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """D = A B + C for every warp, from and to the ISA's per-lane fragments.

    a: (C, T, 4, 2), lane (g, t) = (lane // 4, lane % 4) holds A[g + 8*(i%2), 8*(i//2) + 2t + e]
    in a[..., i, e]; b: (C, T, 2, 2) holds B[8j + 2t + e, g] in b[..., j, e]; acc and the result:
    (C, T, 2, 2) hold C[g + 8h, 2t + e] in [..., h, e]."""
    C, T = a.shape[:2]
    A = a.reshape(C, -1, 8, 4, 2, 2, 2).transpose(0, 1, 5, 2, 4, 3, 6).reshape(C, -1, 16, 16)
    B = b.reshape(C, -1, 8, 4, 2, 2).transpose(0, 1, 4, 3, 5, 2).reshape(C, -1, 16, 8)
    Cm = acc.reshape(C, -1, 8, 4, 2, 2).transpose(0, 1, 4, 2, 3, 5).reshape(C, -1, 16, 8)
    D = np.matmul(A, B) + Cm
    return D.reshape(C, -1, 2, 8, 4, 2).transpose(0, 1, 3, 4, 2, 5).reshape(C, T, 2, 2).astype(np.float32)
