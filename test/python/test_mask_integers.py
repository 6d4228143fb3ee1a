"""What interval reasoning proves about a mask predicate's integers, and the kernel using it.

`ir.masks.integer_facts` over the positions a kernel evaluates a predicate at: every index
value fits in i32 (the kernel computes the predicate in i32, one register per position
instead of two), and which signed divisions and remainders have a non-negative dividend
and a positive divisor (computed unsigned: a shift for a power of two, no sign fix-up). A
product that can pass 2^31 keeps 64-bit positions; a remainder of a difference that can be
negative stays signed. The chunked example's tensor-core kernel computes its predicate in
i32 with unsigned divisions and passes on the emulator against its own diagram.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from mlir import ir
from mlir.dialects import arith
from test_masks import _predicate

from napkin_mlir.cli.compile import FileProblem, compile_file_kernel
from napkin_mlir.emulator import emulate_kernel
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.builders import DiagramBuilder
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.masks import SIGNED_TO_UNSIGNED, integer_facts, mask_parts, read_predicate

PAST_END = 1024

#: Predicate name -> the numbers of its steps that are signed divisions proven unsigned.
UNSIGNED = {"chunked": 2, "select": 1, "dilated": 0, "causal": 0, "window": 0}


@pytest.mark.parametrize("name", sorted(UNSIGNED))
def test_small_predicates_fit_i32_and_divide_unsigned_where_non_negative(name: str) -> None:
    q, x = 37, 53
    with napkin_context(), ir.Location.unknown():
        pred = _predicate(name, q, x)
    facts = integer_facts(pred, (0, q + PAST_END), (0, x + PAST_END), (q, x))
    assert facts.fits_i32
    assert len(facts.unsigned) == UNSIGNED[name]
    assert all(pred.steps[k].name in SIGNED_TO_UNSIGNED for k in facts.unsigned)


def _scaled_causal(factor: int, q: int) -> ir.Module:
    """j * factor <= i * factor: the products pass 2^31 when factor * q does."""
    d = DiagramBuilder(
        "scaled",
        Q=ArrayType(("q", "d"), (q, 8), "f32"),
        K=ArrayType(("x", "d"), (q, 8), "f32"),
        V=ArrayType(("x", "d"), (q, 8), "f32"),
    )
    c = lambda v: arith.ConstantOp(ir.IndexType.get(), v).result  # noqa: E731
    s = d.mask(
        d.contract(d["Q"], d["K"], ("q", "x")),
        "q",
        "x",
        lambda i, j, n, m: arith.cmpi(arith.CmpIPredicate.sle, arith.muli(j, c(factor)), arith.muli(i, c(factor))),
    )
    return d.ret(d.contract(d.softmax(s, "x"), d["V"], ("q", "d")))


@pytest.mark.parametrize(("factor", "fits"), [(1000, True), (100_000, False)])
def test_a_product_past_two_to_the_31_keeps_64_bit_positions(factor: int, fits: bool) -> None:
    q = 30_000
    with napkin_context(), ir.Location.unknown():
        module = _scaled_causal(factor, q)
        mask = next(op for op in module.body.operations[0].regions[0].blocks[0].operations if op.name == "napkin.mask")
        pred = read_predicate(mask_parts(mask.operation).block)
    assert integer_facts(pred, (0, q + PAST_END), (0, q + PAST_END), (q, q)).fits_i32 is fits


def test_chunked_kernel_computes_its_predicate_in_i32_unsigned(seed: int) -> None:
    path = Path(REPO_ROOT / "examples" / "chunked_attention.mlir")
    kernel, text, _ = compile_file_kernel(FileProblem(str(path)), "sm_80", "gpu", "tensorcore", log=lambda _: None)
    assert kernel is not None and kernel.problem["kernel"] == "tensorcore"
    stream = text.split("scf.for %t")[1]  # the loop over the chunks, where each score is masked
    assert "arith.divui" in stream and "arith.floordivsi" not in stream
    assert re.search(r"arith\.cmpi eq, %\S+, %\S+ : i32", stream)
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()
