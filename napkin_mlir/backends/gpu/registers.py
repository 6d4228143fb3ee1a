"""Registers per thread of the tensor-core attention kernel, counted from its live fragments.

`estimate(plan, target)` adds up what one thread of the mma.sync kernel
(`tensorcore_emit.py`) holds at its peak, inside the stream over `x`. Per m16 tile of the
thread's warp (`plan.warp_rows // 16` of them):

* the O accumulators: d/8 tiles of 16x8 f32, 4 registers each (d/2);
* the Q fragments, loaded once before the stream: d/16 k-steps of 16x16 bf16/f16, 4
  registers each (d/4);
* the S accumulators: sx/8 tiles of 16x8 f32 (sx/2). The softmax exponentiates them in
  place and packs P into A fragments as the scores die, so P adds nothing to the peak;
* the row statistics: the running max and sum of the thread's two rows (4).

Once per thread:

* the K and V fragments in flight: ptxas issues `ldmatrix` ahead of the MMAs that consume
  them, about one register per key of the chunk, at most 32 (fitted);
* addresses, indices, loop counters and constants: 30 registers on sm_80, 34 on sm_90a
  (fitted);
* a block whose warps are not a power of two (3, 6, 12) takes more, about half its S and
  an eighth of its O accumulators again (fitted: ptxas's allocation for such blocks is not
  explained by their fragments, and varies more, within about 14%; the tile search takes
  them only when a short q leaves nothing else).

The fitted terms come from ptxas -O3 over 204 kernels: head dims 64, 128 and 256, q tiles
16-192, x chunks 16-128, 16 and 32 rows per warp, grouped-query and causal, on sm_80 and
sm_90a. Where the CTA has 4 or 8 warps and ptxas neither spills nor sits at its cap (54
kernels), the estimate is within 8.1% of ptxas (3.6% on average; test_tile_choice.py
checks a spread of them, 16 warps included). Smaller CTAs vary more: ptxas spends spare
registers on scheduling when a block has one or two warps (q=16, x=48, d=128 takes 253
where 186 are live), which the tile search no longer picks.

An estimate above `register_limit` means ptxas spills: each of the 35 kernels of that sweep
that spilled had an estimate over its block's limit. The tile search discards those tiles
(`tiles_registers` is its callback) and `napkin compile` refuses a kernel that spills.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from napkin_mlir.backends.gpu.fragments import MMA_K, MMA_M, MMA_N
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
from napkin_mlir.model.hardware import Hardware

#: Registers per accumulator fragment (16x8 f32 over 32 lanes) and per A fragment (16x16 16-bit).
ACC_REGISTERS = MMA_M * MMA_N // 32
A_REGISTERS = MMA_M * MMA_K * 2 // 4 // 32
#: The row statistics of one m16 tile: max and sum of rows g and g + 8.
ROW_STATE = 4
#: At most this many registers of K/V fragments loaded ahead (fitted to ptxas).
IN_FLIGHT_CAP = 32
#: Addresses, indices, loop counters and constants per target (fitted to ptxas).
BASE = {"sm_80": 30, "sm_90a": 34}


@dataclass(frozen=True)
class RegisterEstimate:
    """32-bit registers per thread by what they hold; `total` is the estimate."""

    o_accumulators: int
    q_fragments: int
    s_accumulators: int
    row_state: int
    in_flight: int
    addressing: int
    odd_block: int

    @property
    def total(self) -> int:
        return (
            self.o_accumulators
            + self.q_fragments
            + self.s_accumulators
            + self.row_state
            + self.in_flight
            + self.addressing
            + self.odd_block
        )


def estimate(plan: AttentionPlan, target: str) -> RegisterEstimate:
    """The registers per thread of the kernel for `plan` on `target` (sm_80 or sm_90a)."""
    tiles_m = plan.warp_rows // MMA_M
    o_acc = tiles_m * (plan.d // MMA_N) * ACC_REGISTERS
    s_acc = tiles_m * (plan.sx // MMA_N) * ACC_REGISTERS
    return RegisterEstimate(
        o_accumulators=o_acc,
        q_fragments=tiles_m * (plan.d // MMA_K if plan.q_in_registers else 1) * A_REGISTERS,
        s_accumulators=s_acc,
        row_state=tiles_m * ROW_STATE,
        in_flight=min(plan.sx, IN_FLIGHT_CAP),
        addressing=BASE[target],
        odd_block=0 if plan.warps & (plan.warps - 1) == 0 else s_acc // 2 + o_acc // 8,
    )


def register_limit(threads: int, hw: Hardware) -> int:
    """The most registers per thread a kernel of `threads` threads gets without spilling:
    the per-thread cap, and the SM's register file shared by the block's warps (allocated
    per warp in units of `register_alloc_unit`)."""
    warps = -(-threads // 32)
    per_warp = hw.registers_per_sm // warps // hw.register_alloc_unit * hw.register_alloc_unit
    return min(hw.registers_per_thread, per_warp // 32)


def tiles_registers(
    sizes: dict[str, int], dtype: str, target: str, warp_rows: int = MMA_M
) -> Callable[[dict[str, int]], int]:
    """For the tile search: tiles (q, x) -> the estimate for attention of `sizes`."""

    def registers(tiles: dict[str, int]) -> int:
        return estimate(AttentionPlan.of(sizes, tiles, dtype, warp_rows=warp_rows), target).total

    return registers
