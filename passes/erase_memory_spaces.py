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

from passes import register


@dataclass(frozen=True)
class EraseMemorySpacesOptions:
    """napkin-erase-memory-spaces takes no options."""


def _flat(t: ir.Type) -> ir.Type:
    if isinstance(t, ir.MemRefType) and t.memory_space is not None:
        return ir.MemRefType.get(t.shape, t.element_type, layout=t.layout)
    return t


@register("napkin-erase-memory-spaces", EraseMemorySpacesOptions, "drop memref memory spaces (CPU backend)")
def run(module: ir.Operation, options: EraseMemorySpacesOptions) -> None:
    def visit(op: ir.Operation) -> ir.WalkResult:
        for r in op.results:
            r.set_type(_flat(r.type))
        for region in op.regions:
            for block in region.blocks:
                for a in block.arguments:
                    a.set_type(_flat(a.type))
        if op.name == "func.func":
            ft = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
            flat = ir.FunctionType.get([_flat(t) for t in ft.inputs], [_flat(t) for t in ft.results])
            op.attributes["function_type"] = ir.TypeAttr.get(flat)
        return ir.WalkResult.ADVANCE

    module.walk(visit)
