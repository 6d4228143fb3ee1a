"""napkin-erase-memory-spaces: drop memref memory spaces, for running a loop program on a CPU.

The loop program names each buffer's level by its memory space (workgroup memory for SMEM,
private memory for registers); a CPU has one flat memory, so the CPU backend erases them
before the upstream LLVM lowering (which cannot translate GPU address spaces on the host).

Before:

    %tile = memref.alloc() : memref<64x32xf32, #gpu.address_space<workgroup>>

After:

    %tile = memref.alloc() : memref<64x32xf32>
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.ir.regions import retype_memory_spaces
from passes import register


@dataclass(frozen=True)
class EraseMemorySpacesOptions:
    """napkin-erase-memory-spaces takes no options."""


@register("napkin-erase-memory-spaces", EraseMemorySpacesOptions, "drop memref memory spaces (CPU backend)")
def run(module: ir.Operation, options: EraseMemorySpacesOptions) -> None:
    retype_memory_spaces(module, None)
