"""napkin-lower-to-loops: turn each diagram into a loop program over memref buffers.

Each array becomes a buffer (memory space from its level), each box one or more
`linalg.generic` ops indexed by axis name (see `napkin_mlir.lowering.loops`); results become
output parameters so the function can be called from C, the ExecutionEngine or a GPU host.

Before:

    func.func @matmul(%A: tensor<4x8xf32, {axes = ["m", "k"]}>, %B: tensor<8x5xf32, {axes = ["k", "n"]}>)
        -> tensor<4x5xf32, {axes = ["m", "n"]}> {
      %0 = "napkin.contract"(%A, %B) : (...) -> tensor<4x5xf32, {axes = ["m", "n"]}>
      return %0 : tensor<4x5xf32, {axes = ["m", "n"]}>
    }

After:

    func.func @matmul(%A: memref<4x8xf32>, %B: memref<8x5xf32>, %C: memref<4x5xf32>)
        attributes {llvm.emit_c_interface, ...} {
      linalg.fill ins(%cst : f32) outs(%C : memref<4x5xf32>)
      linalg.generic {indexing_maps = [(m, n, k) -> (m, k), (m, n, k) -> (k, n), (m, n, k) -> (m, n)],
                      iterator_types = ["parallel", "parallel", "reduction"]} ...
      return
    }
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.lowering.loops import lower_module
from passes import register


@dataclass(frozen=True)
class LowerToLoopsOptions:
    """napkin-lower-to-loops takes no options."""


@register("napkin-lower-to-loops", LowerToLoopsOptions, "lower napkin diagrams to linalg on memref buffers")
def run(module: ir.Operation, options: LowerToLoopsOptions) -> None:
    lower_module(module)
