"""napkin-mlir: the diagrams of *FlashAttention on a Napkin* as an MLIR compiler.

Public entry points: `napkin_context` (a context with the dialect loaded), `ArrayType`
(named-axis arrays), the diagram builders in `napkin_mlir.diagrams`, and the pipeline in
`napkin_mlir.pipeline`.
"""

from napkin_mlir.arrays import ArrayType
from napkin_mlir.context import napkin_context
from napkin_mlir.errors import NapkinError

__all__ = ["ArrayType", "NapkinError", "napkin_context"]
