"""napkin-verify: check the diagram rules IRDL cannot express.

Runs IRDL verification and the Python verifier (`napkin_mlir.ir.verifier`): every wire is a
named-axis array, shared axes agree in size, element types match, region bodies have the
right shape. It changes nothing; on a finding the pipeline fails with every diagnostic.

Before and after (unchanged when valid):

    %s = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>,
        tensor<8x5xf32, {axes = ["k", "n"]}>) -> tensor<4x5xf32, {axes = ["m", "n"]}>

With `tensor<9x5xf32, {axes = ["k", "n"]}>` as `%b`, it fails with
`'napkin.contract' op axis 'k' has size 8 in lhs but 9 in rhs`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.ir.verifier import check_napkin
from passes import register


@dataclass(frozen=True)
class VerifyOptions:
    """napkin-verify takes no options."""


@register("napkin-verify", VerifyOptions, "check axis names, sizes and element types of napkin ops")
def run(module: ir.Operation, options: VerifyOptions) -> None:
    check_napkin(module)
