"""Hand-written diagrams (DiagramBuilder, not the built-ins) through the relabeling passes.

Each diagram is grouped over q, streamed over x, lowered to loops, run on the CPU and
compared with a float64 JAX function written here; the refused ones must fail in
napkin-stream-partition with a diagnostic naming the axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mlir import ir

from napkin_mlir.backends.cpu import CpuKernel
from napkin_mlir.check import reference
from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.builders import DiagramBuilder
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import LOOPS_PIPELINE

jax.config.update("jax_enable_x64", True)

Q, X, D = 13, 29, 8


def _qkv() -> DiagramBuilder:
    return DiagramBuilder(
        "custom",
        Q=ArrayType(("q", "d"), (Q, D), "f32"),
        K=ArrayType(("x", "d"), (X, D), "f32"),
        V=ArrayType(("x", "d"), (X, D), "f32"),
    )


def _relabel(qt: int, xt: int, online: bool = True) -> str:
    return (
        "builtin.module(napkin-verify,napkin-assign-levels,"
        f"napkin-group-partition{{axes=q sizes={qt}}},"
        f"napkin-stream-partition{{axis=x size={xt} online={str(online).lower()}}},napkin-verify)"
    )


def _run(build, inputs: list[np.ndarray], qt: int, xt: int) -> np.ndarray:
    with napkin_context(), ir.Location.unknown():
        module = build()
        run_pipeline(module, _relabel(qt, xt))
        run_pipeline(module, f"builtin.module({LOOPS_PIPELINE})")
        kernel = CpuKernel(module)
        (out,) = kernel("custom", *inputs)
    return out


def _inputs(seed: int) -> list[np.ndarray]:
    t = ArrayType(("q", "d"), (Q, D), "f32"), ArrayType(("x", "d"), (X, D), "f32"), ArrayType(("x", "d"), (X, D), "f32")
    return reference.random_inputs(t, seed)


def _rel(out: np.ndarray, ref: jax.Array) -> float:
    r = np.asarray(ref, np.float64)
    return float(np.linalg.norm(out.astype(np.float64) - r) / np.linalg.norm(r))


CAP = 2.5


def _softcap_attention() -> ir.Module:
    d = _qkv()
    s = d.contract(d["Q"], d["K"], ("q", "x"))
    s = d.scale(d.tanh(d.scale(s, 1.0 / CAP)), CAP)
    o = d.contract(d.softmax(s, "x"), d["V"], ("q", "d"))
    return d.ret(o)


@pytest.mark.parametrize("tiles", [(4, 8), (13, 29), (5, 3)], ids=lambda t: f"q{t[0]}x{t[1]}")
def test_softcapped_attention(tiles: tuple[int, int], seed: int) -> None:
    inputs = _inputs(seed)
    inputs[0] = inputs[0] * 2  # scores beyond the cap, so tanh saturates
    out = _run(_softcap_attention, inputs, *tiles)
    q, k, v = (jnp.asarray(a, jnp.float64) for a in inputs)
    s = CAP * jnp.tanh(jnp.einsum("qd,xd->qx", q, k) / CAP)
    ref = jax.nn.softmax(s, axis=-1) @ v
    assert _rel(out, ref) <= 1e-5


def _relu_normalized() -> ir.Module:
    d = _qkv()
    r = d.relu(d.contract(d["Q"], d["K"], ("q", "x")))
    p = d.div(r, d.reduce(r, "x", "sum"))
    return d.ret(d.contract(p, d["V"], ("q", "d")))


@pytest.mark.parametrize("tiles", [(4, 8), (5, 3)], ids=lambda t: f"q{t[0]}x{t[1]}")
def test_relu_normalizer(tiles: tuple[int, int], seed: int) -> None:
    inputs = _inputs(seed)
    # Make every row's score positive somewhere: K row 0 = Q-aligned direction.
    inputs[1][0] = np.abs(inputs[0]).mean(axis=0) * np.sign(inputs[0].sum(axis=0))
    inputs[0] = np.abs(inputs[0]) * np.sign(inputs[0].sum(axis=0))
    out = _run(_relu_normalized, inputs, *tiles)
    q, k, v = (jnp.asarray(a, jnp.float64) for a in inputs)
    r = jax.nn.relu(jnp.einsum("qd,xd->qx", q, k))
    assert bool(jnp.all(r.sum(-1) > 0))
    ref = (r / r.sum(-1, keepdims=True)) @ v
    assert _rel(out, ref) <= 1e-5


def _decomposed_softmax() -> ir.Module:
    d = _qkv()
    s = d.contract(d["Q"], d["K"], ("q", "x"))
    e = d.exp(d.sub(s, d.reduce(s, "x", "max")))
    p = d.div(e, d.reduce(e, "x", "sum"))
    return d.ret(d.contract(p, d["V"], ("q", "d")))


@pytest.mark.parametrize("tiles", [(4, 8), (5, 3)], ids=lambda t: f"q{t[0]}x{t[1]}")
def test_decomposed_softmax_streams_online(tiles: tuple[int, int], seed: int) -> None:
    """max, sub, exp, sum, div written as boxes: streamed in the online form (a shift by the
    row max), equal to softmax attention."""
    inputs = _inputs(seed)
    inputs[0] = inputs[0] * 4  # large scores: without the max shift e^s would lose precision
    out = _run(_decomposed_softmax, inputs, *tiles)
    q, k, v = (jnp.asarray(a, jnp.float64) for a in inputs)
    ref = jax.nn.softmax(jnp.einsum("qd,xd->qx", q, k), axis=-1) @ v
    assert _rel(out, ref) <= 1e-5


def _shifted_by_mean() -> ir.Module:
    """A near miss of the decomposed softmax: e^(s - mean s) is not shifted by a maximum."""
    d = _qkv()
    s = d.contract(d["Q"], d["K"], ("q", "x"))
    e = d.exp(d.sub(s, d.scale(d.reduce(s, "x", "sum"), 1.0 / X)))
    p = d.div(e, d.reduce(e, "x", "sum"))
    return d.ret(d.contract(p, d["V"], ("q", "d")))


def _plain_attention() -> ir.Module:
    d = _qkv()
    s = d.contract(d["Q"], d["K"], ("q", "x"))
    return d.ret(d.contract(d.softmax(s, "x"), d["V"], ("q", "d")))


@pytest.mark.parametrize(
    ("build", "online", "message"),
    [
        (_shifted_by_mean, True, "cannot stream axis 'x': the exponential of this difference subtracts"),
        (_decomposed_softmax, False, "cannot stream axis 'x': 'napkin.sub' works on chunks of 'x'"),
        (_plain_attention, False, "softmax along 'x' is not streamable"),
    ],
    ids=["shifted-by-mean", "decomposed-softmax-offline", "softmax-offline"],
)
def test_refused(build, online: bool, message: str) -> None:
    with napkin_context(), ir.Location.unknown():
        module = build()
        before = str(module)
        with pytest.raises(NapkinError) as err:
            run_pipeline(module, _relabel(4, 8, online))
    assert message in str(err.value)
    assert "napkin" in before
