"""The interpretation with numpy (`interpret(..., arrays="numpy")`, float64 only) gives the
float64 values of the jax.numpy interpretation, to rounding: on every example (plain and
after its derived relabelings: groups, streams, masks, maps, segment ids) and on random
fuzz diagrams; it is refused at the declared precision ("same"), whose 16-bit arithmetic is
JAX's. The fuzzer takes it for its float64 references (no XLA compilation per op and shape).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT
from mlir import ir

from napkin_mlir.check import reference
from napkin_mlir.derive.auto import derive
from napkin_mlir.errors import NapkinError
from napkin_mlir.fuzz.differential import signature
from napkin_mlir.fuzz.generator import generate
from napkin_mlir.fuzz.spec import render
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.files import load_diagram
from napkin_mlir.pipeline.passmanager import run_pipeline

EXAMPLES = sorted(p.stem for p in (REPO_ROOT / "examples").glob("*.mlir"))


def _same_f64(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y))
        fin = np.isfinite(x)
        scale = float(np.max(np.abs(x[fin]), initial=0.0)) or 1.0
        assert float(np.max(np.abs(x[fin] - y[fin]), initial=0.0)) <= 1e-12 * scale


@pytest.mark.parametrize("example", EXAMPLES)
def test_numpy_equals_jax_on_each_example_before_and_after_its_relabelings(example: str, seed: int) -> None:
    path = REPO_ROOT / "examples" / f"{example}.mlir"
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path)
        ins_t, _ = signature(module)
        inputs = reference.random_inputs(tuple(ins_t), seed)
        plain = interpret(module, inputs, "f64", arrays="numpy")
        assert all(isinstance(o, np.ndarray) for o in plain)
        _same_f64(interpret(module, inputs, "f64"), plain)
        run_pipeline(module, derive(module, filename=str(path)).pipeline(), filename=str(path))
        _same_f64(interpret(module, inputs, "f64"), interpret(module, inputs, "f64", arrays="numpy"))
        _same_f64(plain, interpret(module, inputs, "f64", arrays="numpy"))


@pytest.mark.parametrize("draw", range(12))
def test_numpy_equals_jax_on_random_diagrams(draw: int, seed: int) -> None:
    s = seed % 100_000 + draw
    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(render(generate(s)))
        ins_t, _ = signature(module)
        inputs = reference.random_inputs(tuple(ins_t), s)
        _same_f64(interpret(module, inputs, "f64"), interpret(module, inputs, "f64", arrays="numpy"))


def test_numpy_is_refused_at_the_declared_precision() -> None:
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(REPO_ROOT / "examples" / "softcap_attention.mlir")
        ins_t, _ = signature(module)
        with pytest.raises(NapkinError, match="numpy at precision f64"):
            interpret(module, reference.random_inputs(tuple(ins_t), 0), "same", arrays="numpy")
