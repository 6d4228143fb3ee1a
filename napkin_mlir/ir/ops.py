"""The napkin op table: one entry per op of `dialects/napkin.irdl.mlir`.

The IRDL file says what each op looks like; this table says what kind of box it is in the
paper's terms (a contraction, an elementwise function, a reduction, ...). The verifier, the
lowering rules and the cost model dispatch on `OpInfo.kind`, and `dialects/README.md` is
kept in step with both (test/python/test_dialect_docs.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpInfo:
    """What a napkin op is, in the paper's vocabulary."""

    name: str
    kind: str
    summary: str


_OPS = [
    OpInfo("contract", "contract", "contraction over the axes the output drops (einsum by axis name)"),
    OpInfo("exp", "unary", "elementwise e^x"),
    OpInfo("tanh", "unary", "elementwise tanh"),
    OpInfo("relu", "unary", "elementwise max(x, 0)"),
    OpInfo("gelu", "unary", "elementwise GELU (tanh approximation)"),
    OpInfo("silu", "unary", "elementwise x * sigmoid(x)"),
    OpInfo("scale", "unary", "elementwise multiplication by a constant `factor`"),
    OpInfo("cast", "cast", "elementwise conversion to the result's element type"),
    OpInfo("add", "binary", "elementwise sum, broadcasting missing axes"),
    OpInfo("sub", "binary", "elementwise difference, broadcasting missing axes"),
    OpInfo("mul", "binary", "elementwise product, broadcasting missing axes"),
    OpInfo("div", "binary", "elementwise quotient, broadcasting missing axes"),
    OpInfo("max", "binary", "elementwise maximum, broadcasting missing axes"),
    OpInfo("map", "map", "user-defined elementwise function given as a scalar region"),
    OpInfo("reduce", "reduce", "sum or max over one axis"),
    OpInfo("softmax", "softmax", "softmax along one axis"),
    OpInfo("mask", "mask", "causal mask: entries with col > row become -inf"),
    OpInfo("fill", "fill", "a constant array (the initial state of a stream)"),
    OpInfo("transfer", "transfer", "move an array between memory levels"),
    OpInfo("group", "group", "group partition: apply the body to independent tiles"),
    OpInfo("stream", "stream", "stream partition: a sequential loop over chunks carrying a state"),
]

#: Short name ("contract") -> OpInfo.
OPS: dict[str, OpInfo] = {info.name: info for info in _OPS}

UNARY_FUNCTIONS = tuple(info.name for info in _OPS if info.kind == "unary")
BINARY_FUNCTIONS = tuple(info.name for info in _OPS if info.kind == "binary")
REDUCE_KINDS = ("sum", "max")


def op_info(full_name: str) -> OpInfo | None:
    """OpInfo for `napkin.<name>`, or None for ops of other dialects."""
    if not full_name.startswith("napkin."):
        return None
    return OPS.get(full_name.removeprefix("napkin."))
