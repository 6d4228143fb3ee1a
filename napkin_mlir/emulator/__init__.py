"""The CPU emulator for GPU kernels: a kernel's gpu-stage IR run thread by thread on numpy,
with the PTX ISA's semantics and sanitizer-style checks.

Without a GPU the tensor-core kernel can still be *run*. `emulate` executes the kernel's
gpu-stage IR (what `napkin compile --emit gpu` writes, before the upstream NVVM tail) op by
op, every thread of a grid in lockstep, a batch of CTAs at a time. What the PTX ISA says is
modelled, not what the emitter intended (`mma.sync`, `ldmatrix`, `cp.async` groups,
shuffles, barriers). Outputs are poisoned with NaN and shared memory starts as NaN, so
anything read before it is written shows in the result. While running, the emulator checks
what compute-sanitizer would (memcheck, racecheck, barriers and warp-wide instructions
reached by only some threads, an output element written twice) and stops with an `error:`
naming the op's line in the kernel IR; it counts, per CTA, warp-level instructions by kind,
global bytes moved, and for CTA 0 shared-memory wavefronts (bank conflicts) and global
sectors (coalescing) against their ideals.

The modules, one concern each:

* `machine.py`: the machine and its memory model (`Machine`, `MemRef`, `Stats`,
  `PendingCopy`, `TensorMapRef`, `TmaShadow`, `EmulationError`, the warp and bank sizes);
* `memory.py`: addresses, gather and scatter, and the checks and counts of every access
  (bounds, alignment, shared-memory races with the happens-before edges of barriers and
  mbarriers, outputs written twice, bank wavefronts, sectors);
* `program.py`: loading IR into steps (`load_kernel`, `Compiler`, `Kernel`) and the rule
  table, one rule per op name, registered with the `rule(...)` decorator;
* `tasks.py`: warp specialization, the two sides of an `scf.if` run as cooperative tasks
  when either waits for the other's threads (mbarrier waits, named barriers), with
  deadlocks reported;
* the instruction families, each a module of rules: `ops_arith.py` (arith, math and vector
  values), `ops_control.py` (scf.for, scf.if, affine maps, gpu.launch), `ops_sync.py`
  (thread ids, CTA and named barriers, shuffles), `ops_memory.py` (shared memory, views,
  subviews, loads and stores), `ops_async.py` (cp.async, commit, wait), `ops_mma.py`
  (ldmatrix, mma.sync), `ops_wgmma.py` (Hopper's warpgroup MMA and its fences), `ops_tma.py`
  (Hopper's TMA loads through tensor maps, mbarriers and their phases, setmaxnreg);
* `report.py`: `EmulationReport`, what a check prints and writes as JSON;
* `run.py`: `run_kernel` (a grid on the machine) and `emulate`, `emulate_kernel`,
  `emulate_sidecar` (a kernel checked against JAX).

Every family module is imported here, once, which fills the rule table: a new instruction
family is a new module of rules added to `FAMILIES`.
"""

from __future__ import annotations

from napkin_mlir.emulator import ops_arith, ops_async, ops_control, ops_memory, ops_mma, ops_sync, ops_tma, ops_wgmma
from napkin_mlir.emulator.machine import EmulationError, Machine, MemRef, Stats
from napkin_mlir.emulator.ops_mma import mma_m16n8k16
from napkin_mlir.emulator.program import RULES, Kernel, load_kernel, rule
from napkin_mlir.emulator.report import EmulationReport
from napkin_mlir.emulator.run import LANES_PER_BATCH, emulate, emulate_kernel, emulate_sidecar, run_kernel

#: The instruction families whose rules fill `RULES` (importing them registers the rules).
FAMILIES = (ops_arith, ops_control, ops_sync, ops_memory, ops_async, ops_mma, ops_wgmma, ops_tma)

__all__ = [
    "FAMILIES",
    "LANES_PER_BATCH",
    "RULES",
    "EmulationError",
    "EmulationReport",
    "Kernel",
    "Machine",
    "MemRef",
    "Stats",
    "emulate",
    "emulate_kernel",
    "emulate_sidecar",
    "load_kernel",
    "mma_m16n8k16",
    "rule",
    "run_kernel",
]
