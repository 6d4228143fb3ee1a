"""A JAX interpretation of the napkin dialect: evaluate any napkin program with jax.numpy.

It runs every stage of the relabeling pipeline: the plain diagram, after
`napkin-assign-levels` (transfers are identities), after `napkin-group-partition` (the body
of a `napkin.group` runs once per group on its tiles) and after `napkin-stream-partition`
(a `napkin.stream` runs init, the step on each chunk in order, then finish), so the output
of every pass can be checked against the plain diagram.

    from napkin_mlir.interpret import interpret
    [o] = interpret(module, [q, k, v])                     # float64 ground truth
    [o16] = interpret(module, [q, k, v], precision="same")  # in the declared element types

The rules are table-driven (`OP_TABLE`, one rule per op name, registered with `register`):
`napkin_ops` (napkin ops), `partitions` (group, stream), `scalar_ops` (arith/math in map
bodies and index arithmetic). An op without a rule raises NapkinError with its location.
"""

from __future__ import annotations

from napkin_mlir.interpret import napkin_ops, partitions, scalar_ops
from napkin_mlir.interpret.core import OP_TABLE, Interpreter, find_function, interpret, register
from napkin_mlir.interpret.values import PRECISIONS, Named, Precision

__all__ = [
    "OP_TABLE",
    "PRECISIONS",
    "Interpreter",
    "Named",
    "Precision",
    "find_function",
    "interpret",
    "napkin_ops",
    "partitions",
    "register",
    "scalar_ops",
]
