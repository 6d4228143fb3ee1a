"""napkin-mlir: the diagrams of *FlashAttention on a Napkin* as an MLIR compiler.

Public entry points: `napkin_context` (a context with the dialect loaded), `ArrayType`
(named-axis arrays), the diagram builders in `napkin_mlir.ir.diagrams`, and the pipeline in
`napkin_mlir.pipeline.stages`. Importing the package itself loads nothing heavy, so
`napkin_mlir.backends.gpu.runner` runs on machines without the MLIR wheels.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ArrayType", "NapkinError", "napkin_context"]


def __getattr__(name: str) -> Any:
    if name == "ArrayType":
        from napkin_mlir.ir.arrays import ArrayType

        return ArrayType
    if name == "napkin_context":
        from napkin_mlir.ir.context import napkin_context

        return napkin_context
    if name == "NapkinError":
        from napkin_mlir.errors import NapkinError

        return NapkinError
    raise AttributeError(name)
