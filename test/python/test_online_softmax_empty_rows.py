"""The online softmax of napkin-stream-partition on rows that see only -inf in a chunk.

A bias (or a mask) may leave a row with no finite score in a chunk: in the first chunks (the
row's running max m' is still -inf, and the unguarded online form e^(s - m'), e^(m - m')
computes e^(-inf - (-inf)) = NaN), or in a middle one (m' is finite: nothing to guard). The
stream partition shifts the exponents by 0 where m' is -inf, so each form means what the
diagram means. Checked against the JAX interpretation of the plain diagram, on fresh random
Q, K, V and a bias that empties the first chunk of some rows, the first two chunks of others
and a middle chunk of one:

(a) the interpretation of the partitioned program: `napkin.softmax` (examples/bias_attention
    at tiles q=16, x=32: three chunks of x), a softmax written by hand and one with a sink
    logit in the max (the hand-written forms the pass carries online); a row that is -inf
    everywhere stays NaN exactly where the diagram's own softmax is NaN (0 / 0), and with a
    sink it is 0, as in the diagram;
(b) the program compiled for the CPU (`napkin verify`'s path);
(c) the tensor-core (mma.sync) kernel on the GPU emulator, which takes the guard as part of
    its online softmax, and the SIMT kernel (the loop program, lowered as it is).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from mlir import ir

from napkin_mlir.backends.cpu import NUMPY_DTYPES
from napkin_mlir.backends.gpu import runner as gpu_runner
from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal, match_attention
from napkin_mlir.check.diagram import compile_diagram
from napkin_mlir.cli.compile import FileProblem, compile_file_kernel
from napkin_mlir.derive.auto import derive
from napkin_mlir.emulator.program import load_kernel
from napkin_mlir.emulator.run import run_kernel
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.context import napkin_context, parse_module
from napkin_mlir.ir.files import load_diagram
from napkin_mlir.pipeline.passmanager import run_pipeline

BIAS_ATTENTION = REPO_ROOT / "examples" / "bias_attention.mlir"
DIMS = {"b": 1, "h": 2, "q": 32, "x": 96, "d": 16}
TILES = {"q": 16, "x": 32}  # three chunks of x
BF16 = NUMPY_DTYPES["bf16"]

#: bf16 inputs and output against the float64 interpretation (the output's own rounding is
#: 2^-8 relative; the kernels also round P to bf16 before P V)
ATOL, RTOL = 2e-2, 2e-2
#: the partitioned program interpreted in float64 against the diagram in float64
ATOL64, RTOL64 = 1e-9, 1e-9


def _inputs(seed: int, everywhere: bool) -> list[np.ndarray]:
    """Q, K, V (bf16, fresh) and a bias (h, q, x) that is -inf over: the first chunk of rows
    4-11 of both heads, the first two chunks of rows 20-23 of head 0, the middle chunk of row
    6 of head 1, the first chunk and the first key of the second chunk of row 14 of head 1;
    with `everywhere`, all of row 30 of head 1 too."""
    rng = np.random.default_rng(seed)
    b, h, q, x, d = (DIMS[a] for a in "bhqxd")
    qs, ks, vs = (rng.standard_normal(s).astype(BF16) for s in ((b, h, q, d), (b, h, x, d), (b, h, x, d)))
    bias = 0.5 * rng.standard_normal((h, q, x))
    bias[:, 4:12, :32] = -np.inf
    bias[0, 20:24, :64] = -np.inf
    bias[1, 6, 32:64] = -np.inf
    bias[1, 14, :33] = -np.inf
    if everywhere:
        bias[1, 30, :] = -np.inf
    return [qs, ks, vs, bias.astype(BF16)]


def _reference(inputs: list[np.ndarray]) -> np.ndarray:
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(BIAS_ATTENTION, DIMS)
        return np.asarray(interpret(module, inputs, "f64")[0], np.float64)


def _partitioned() -> ir.Module:
    """examples/bias_attention derived at TILES (needs a napkin context)."""
    module = load_diagram(BIAS_ATTENTION, DIMS)
    d = derive(module, TILES, None, "bf16", filename=str(BIAS_ATTENTION))
    run_pipeline(module, d.pipeline(), filename=str(BIAS_ATTENTION))
    return module


def _check(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> None:
    """NaN exactly where the diagram gives NaN (a row masked everywhere), close elsewhere."""
    out = np.asarray(out, np.float64)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isfinite(ref[:, :, :30]).all()  # every row with a finite score somewhere
    np.testing.assert_allclose(out, ref, atol=atol, rtol=rtol)


# --- (a) the interpretation of the partitioned program ---------------------------------------------


def test_interpretation_of_the_partitioned_softmax(seed: int) -> None:
    inputs = _inputs(seed, everywhere=True)
    ref = _reference(inputs)
    assert np.isnan(ref[0, 1, 30]).all()  # the diagram's own softmax of a row of -inf
    with napkin_context(), ir.Location.unknown():
        module = _partitioned()
        assert "napkin.stream" in str(module)
        out = np.asarray(interpret(module, inputs, "f64")[0])
    _check(out, ref, ATOL64, RTOL64)


#: Hand-written online forms over scores given as an input (h, q, x) = (2, 8, 10), V (h, x, d).
BY_HAND = """
func.func @softmax_by_hand(%S: tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, %V: tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}> {
  %m = "napkin.reduce"(%S) {axis = "x", kind = "max"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %c = "napkin.sub"(%S, %m) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %e = "napkin.exp"(%c) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %l = "napkin.reduce"(%e) {axis = "x", kind = "sum"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %p = "napkin.div"(%e, %l) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
  return %o : tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
}
"""

SINK_IN_MAX = """
func.func @sink_in_max(%S: tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, %V: tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>, %Sink: tensor<2xf32, {axes = ["h"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}> {
  %ms = "napkin.reduce"(%S) {axis = "x", kind = "max"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %m = "napkin.max"(%ms, %Sink) : (tensor<2x8xf32, {axes = ["h", "q"]}>, tensor<2xf32, {axes = ["h"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %c = "napkin.sub"(%S, %m) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %e = "napkin.exp"(%c) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %l = "napkin.reduce"(%e) {axis = "x", kind = "sum"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %ds = "napkin.sub"(%Sink, %m) : (tensor<2xf32, {axes = ["h"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %es = "napkin.exp"(%ds) : (tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %z = "napkin.add"(%l, %es) : (tensor<2x8xf32, {axes = ["h", "q"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %p = "napkin.div"(%e, %z) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
  return %o : tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
}
"""


@pytest.mark.parametrize("text", [BY_HAND, SINK_IN_MAX], ids=["softmax-by-hand", "sink-in-max"])
def test_interpretation_of_the_hand_written_online_forms(text: str, seed: int) -> None:
    """Chunks of 4 keys (the last one partial): rows 1-3 empty in the first chunk, row 4 in the
    first two, row 5 in the middle one, row 7 everywhere (NaN by hand; 0 with the sink, whose
    logit keeps the normalizer at least 1)."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((2, 8, 10)).astype(np.float32)
    s[:, 1:4, :4] = -np.inf
    s[:, 4, :8] = -np.inf
    s[:, 5, 4:8] = -np.inf
    s[:, 7, :] = -np.inf
    inputs = [s, rng.standard_normal((2, 10, 4)).astype(np.float32)]
    sink = "Sink" in text
    if sink:
        inputs.append(rng.standard_normal(2).astype(np.float32))
    with napkin_context(), ir.Location.unknown():
        module = parse_module(text, "<test>")
        ref = np.asarray(interpret(module, inputs, "f64")[0], np.float64)
        run_pipeline(module, "builtin.module(napkin-stream-partition{axis=x size=4})")
        assert "napkin.stream" in str(module)
        out = np.asarray(interpret(module, inputs, "f64")[0], np.float64)
    assert np.isfinite(ref[:, :7]).all() and (np.isfinite(ref[:, 7]).all() if sink else np.isnan(ref[:, 7]).all())
    if sink:
        np.testing.assert_array_equal(ref[:, 7], 0.0)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, atol=ATOL64, rtol=RTOL64)


# --- (b) the CPU-compiled program --------------------------------------------------------------------


def test_cpu_kernel(seed: int) -> None:
    inputs = _inputs(seed, everywhere=True)
    ref = _reference(inputs)
    with napkin_context(), ir.Location.unknown():
        kernel, name, derivation = compile_diagram(load_diagram(BIAS_ATTENTION, DIMS), TILES)
        assert "napkin-stream-partition{axis=x size=32}" in derivation.pipeline()
        out = kernel(name, *inputs)[0]
    _check(out, ref, ATOL, RTOL)


# --- (c) the GPU kernels on the emulator -------------------------------------------------------------


def _nested(op: ir.Operation) -> list[ir.Operation]:
    """`op`'s ops in its regions, at any depth."""
    found = []
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                found += [inner.operation, *_nested(inner.operation)]
    return found


def _emulated(kind: str, inputs: list[np.ndarray]) -> np.ndarray:
    """The `kind` kernel of bias_attention at DIMS and TILES run on the emulator on `inputs`."""
    problem = FileProblem(str(BIAS_ATTENTION), DIMS, None, TILES)
    kernel, text, _ = compile_file_kernel(problem, "sm_80", "gpu", kind, log=lambda _: None)
    assert kernel is not None and kernel.problem["kernel"] == kind
    side = gpu_runner.parse_sidecar(kernel.sidecar("k.mlir"), Path("k.mlir"))
    named = dict(zip(("Q", "K", "V", "Bias"), inputs, strict=True))
    out = np.full((DIMS["b"], DIMS["h"], DIMS["q"], DIMS["d"]), np.nan, BF16)  # poisoned
    arrays = [out if a.role == "output" else named[a.name] for a in side.args]
    with napkin_context(), ir.Location.unknown():
        program = load_kernel(text, "k.mlir", side.entry)
    outputs = [i for i, a in enumerate(side.args) if a.role == "output"]
    stats = run_kernel(program, side.grid, side.block, side.dynamic_smem_bytes, arrays, outputs=outputs)
    assert all(w.all() for w in stats.written.values())
    return out


def test_tensorcore_kernel_takes_the_guard_and_passes_on_the_emulator(seed: int) -> None:
    with napkin_context(), ir.Location.unknown():
        parts = match_attention(_partitioned()).parts
    guards = [part for name, _, part in parts if name == "napkin.map"]
    assert len(guards) == 1 and "-inf" in guards[0], parts
    assert sum(name in ("arith.cmpf", "arith.select") for name, _, _ in parts) == 2
    inputs = _inputs(seed, everywhere=False)
    _check(_emulated("tensorcore", inputs), _reference(inputs), ATOL, RTOL)


def test_tensorcore_rule_refuses_a_shift_that_is_not_the_guard() -> None:
    """The guard's 0 changed to 1: the exponents no longer subtract the kernel's shift."""
    with napkin_context(), ir.Location.unknown():
        module = _partitioned()
        (guard,) = [op for op in _nested(module.operation) if op.name == "napkin.map"]
        zero = next(o.operation for o in guard.regions[0].blocks[0].operations if "0.000000e+00" in str(o))
        zero.attributes["value"] = ir.FloatAttr.get(ir.F32Type.get(), 1.0)
        with pytest.raises(TensorCoreRefusal, match=re.escape("does not lower 'napkin.sub'")):
            match_attention(module)


def test_simt_kernel_passes_on_the_emulator(seed: int) -> None:
    inputs = _inputs(seed, everywhere=False)
    _check(_emulated("simt", inputs), _reference(inputs), ATOL, RTOL)
