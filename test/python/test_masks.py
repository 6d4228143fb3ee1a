"""Masks as predicates of positions (`napkin_mlir/ir/masks.py`): the interpretation of each
kind against a hand-written numpy formula, the interval reasoning against the dense truth
on random tiles (sound: never "empty" where an entry is kept, never "full" where one is
dropped; and tight where the answer is plain), the CPU lowering skipping exactly the empty
chunks, and the cost model pricing exactly the chunks that run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from mlir import ir
from mlir.dialects import arith

from napkin_mlir.check import reference
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.builders import DiagramBuilder
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.files import load_diagram
from napkin_mlir.ir.masks import NUMPY, Predicate, evaluate, mask_parts, predicate_bounds, read_predicate, tile_class

EXAMPLES = REPO_ROOT / "examples"
IDX = arith.CmpIPredicate


def _c(v: int) -> ir.Value:
    return arith.ConstantOp(ir.IndexType.get(), v).result


def _cmp(p: arith.CmpIPredicate, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.cmpi(p, a, b)


#: Predicates by name, built with the arith builders: (i, j, n_rows, n_cols) -> i1, and the
#: numpy formula of the same mask.
PREDICATES: dict[str, tuple[Callable[..., ir.Value], Callable[..., np.ndarray]]] = {
    "causal": (lambda i, j, n, m: _cmp(IDX.sle, j, i), lambda i, j, n, m: j <= i),
    "bottom_right": (
        lambda i, j, n, m: _cmp(IDX.sle, arith.subi(j, m), arith.subi(i, n)),
        lambda i, j, n, m: j - m <= i - n,
    ),
    "window": (
        lambda i, j, n, m: arith.andi(_cmp(IDX.sle, j, i), _cmp(IDX.slt, arith.subi(i, j), _c(5))),
        lambda i, j, n, m: (j <= i) & (i - j < 5),
    ),
    "prefix": (
        lambda i, j, n, m: arith.ori(_cmp(IDX.slt, j, _c(6)), _cmp(IDX.sle, j, i)),
        lambda i, j, n, m: (j < 6) | (j <= i),
    ),
    "chunked": (
        lambda i, j, n, m: _cmp(IDX.eq, arith.floordivsi(i, _c(7)), arith.floordivsi(j, _c(7))),
        lambda i, j, n, m: i // 7 == j // 7,
    ),
    "dilated": (
        lambda i, j, n, m: _cmp(IDX.eq, arith.remsi(arith.subi(i, j), _c(3)), _c(0)),
        lambda i, j, n, m: np.fmod(i - j, 3) == 0,
    ),
    "band_not": (
        lambda i, j, n, m: arith.xori(
            _cmp(IDX.sgt, arith.maxsi(i, j), arith.addi(arith.minsi(i, j), _c(4))),
            arith.constant(ir.IntegerType.get_signless(1), 1),
        ),
        lambda i, j, n, m: ~(np.maximum(i, j) > np.minimum(i, j) + 4),
    ),
    "select": (
        lambda i, j, n, m: _cmp(
            IDX.sle, j, arith.select(_cmp(IDX.slt, i, _c(10)), arith.muli(i, _c(2)), arith.ceildivsi(i, _c(2)))
        ),
        lambda i, j, n, m: j <= np.where(i < 10, 2 * i, -(-i // 2)),
    ),
}


def _attention(name: str, q: int, x: int) -> ir.Module:
    build, _ = PREDICATES[name]
    d = DiagramBuilder(
        "masked",
        Q=ArrayType(("q", "d"), (q, 8), "f32"),
        K=ArrayType(("x", "d"), (x, 8), "f32"),
        V=ArrayType(("x", "d"), (x, 8), "f32"),
    )
    s = d.mask(d.contract(d["Q"], d["K"], ("q", "x")), "q", "x", build)
    return d.ret(d.contract(d.softmax(s, "x"), d["V"], ("q", "d")))


def _predicate(name: str, q: int, x: int) -> Predicate:
    module = _attention(name, q, x)
    mask = next(op for op in module.body.operations[0].regions[0].blocks[0].operations if op.name == "napkin.mask")
    return read_predicate(mask_parts(mask.operation).block)


@pytest.mark.parametrize("name", sorted(PREDICATES))
def test_interpretation_matches_the_numpy_formula(name: str, seed: int) -> None:
    q, x = 23, 31
    _, formula = PREDICATES[name]
    i, j = np.arange(q)[:, None], np.arange(x)[None, :]
    keep = np.broadcast_to(formula(i, j, q, x), (q, x))
    if not keep.any(axis=1).all():
        pytest.skip("a row without keys (NaN by definition)")
    rng = np.random.default_rng(seed)
    Q, K, V = (rng.standard_normal(s) for s in ((q, 8), (x, 8), (x, 8)))
    s = np.where(keep, Q @ K.T, -np.inf)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    expected = (p / p.sum(axis=1, keepdims=True)) @ V
    with napkin_context(), ir.Location.unknown():
        got = np.asarray(interpret(_attention(name, q, x), [Q, K, V])[0])
        dense = evaluate(_predicate(name, q, x), i, j, (q, x))
    np.testing.assert_array_equal(np.broadcast_to(dense, (q, x)), keep)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PREDICATES))
def test_interval_reasoning_is_sound_and_decides_plain_tiles(name: str, seed: int) -> None:
    """On 400 random tiles: "empty" only where the dense mask keeps nothing, "full" only where
    it keeps everything; and single-entry tiles are always decided exactly."""
    n = 64
    with napkin_context(), ir.Location.unknown():
        pred = _predicate(name, n, n)
    _, formula = PREDICATES[name]
    rng = np.random.default_rng(seed)
    decided = 0
    for _ in range(400):
        i0, j0 = rng.integers(0, n, 2)
        i1, j1 = i0 + rng.integers(0, 16), j0 + rng.integers(0, 16)
        truth = predicate_bounds(pred, NUMPY, (int(i0), int(i1)), (int(j0), int(j1)), (n, n))
        dense = np.broadcast_to(
            formula(np.arange(i0, i1 + 1)[:, None], np.arange(j0, j1 + 1)[None, :], n, n), (i1 - i0 + 1, j1 - j0 + 1)
        )
        kind = tile_class(truth)
        assert kind != "empty" or not dense.any(), (name, i0, i1, j0, j1)
        assert kind != "full" or dense.all(), (name, i0, i1, j0, j1)
        decided += kind != "partial"
        one = tile_class(predicate_bounds(pred, NUMPY, (int(i0), int(i0)), (int(j0), int(j0)), (n, n)))
        assert one == ("full" if formula(i0, j0, n, n) else "empty"), (name, i0, j0)
    assert decided > 0 or name == "dilated"  # periodic: a tile wider than its period is partial


def test_vectorized_bounds_equal_one_tile_at_a_time() -> None:
    """The cost model classifies every (row tile, chunk) at once with numpy arrays: the same
    answers as tile by tile."""
    with napkin_context(), ir.Location.unknown():
        pred = _predicate("window", 100, 100)
    t = np.arange(13)[:, None] * 8
    c = np.arange(7)[None, :] * 16
    many = predicate_bounds(pred, NUMPY, (t, t + 7), (c, c + 15), (100, 100))
    for a in range(13):
        for b in range(7):
            one = predicate_bounds(pred, NUMPY, (a * 8, a * 8 + 7), (b * 16, b * 16 + 15), (100, 100))
            assert bool(np.broadcast_to(many.may, (13, 7))[a, b]) == bool(one.may)
            assert bool(np.broadcast_to(many.must, (13, 7))[a, b]) == bool(one.must)


def _lowered(path: Path, dims: dict[str, int], tiles: dict[str, int]) -> tuple[str, float]:
    """The CPU lowering of the example's derivation, and the cost model's share of chunks."""
    from napkin_mlir.derive.auto import derive
    from napkin_mlir.lowering.loops import lower_module
    from napkin_mlir.model.cost import causal_skip
    from napkin_mlir.model.program import extract
    from napkin_mlir.pipeline.passmanager import run_pipeline

    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, dims, "f32")
        run_pipeline(module, derive(module, tiles).pipeline())
        _, share = causal_skip(extract(module))
        lower_module(module.operation)
        return str(module), share


@pytest.mark.parametrize(
    ("example", "formula"),
    [
        ("sliding_window_attention", lambda i, j, n, m: (j <= i) & (i - j < -(-m // 4))),
        ("chunked_attention", lambda i, j, n, m: (i // -(-m // 4) == j // -(-m // 4)) & (j <= i)),
        ("prefix_lm_attention", lambda i, j, n, m: (j < -(-m // 4)) | (j <= i)),
        ("causal_bottom_right_attention", lambda i, j, n, m: j - m <= i - n),
    ],
)
def test_model_prices_exactly_the_chunks_the_mask_needs(example: str, formula: Callable[..., np.ndarray]) -> None:
    """The share of (row tile, chunk) pairs the model prices equals the share of pairs whose
    dense mask keeps something (computed here densely, as ground truth), and the lowering
    guards each chunk with the interval test."""
    q = x = 200
    if example == "causal_bottom_right_attention":
        q = 120
    tq, tx = 16, 32
    text, share = _lowered(EXAMPLES / f"{example}.mlir", {"q": q, "x": x, "d": 16}, {"q": tq, "x": tx})
    keep = formula(np.arange(q)[:, None], np.arange(x)[None, :], q, x)
    runs = [keep[a : a + tq, c : c + tx].any() for a in range(0, q, tq) for c in range(0, x, tx)]
    assert share == pytest.approx(sum(runs) / len(runs))
    assert share < 0.9
    assert "scf.if" in text


def test_document_mask_reads_segment_ids(seed: int) -> None:
    """The document example against a numpy formula on the segment ids `verify` draws."""
    path = EXAMPLES / "document_attention.mlir"
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, {"q": 40, "x": 40}, "f32")
        args = [ArrayType.from_mlir(a.type) for a in module.body.operations[0].regions[0].blocks[0].arguments]
        inputs = reference.random_inputs(tuple(args), seed)
        got = np.asarray(interpret(module, inputs, precision="f64")[0])
    Q, K, V, dq, dx = (np.asarray(a, np.float64) if a.dtype != np.int32 else a for a in inputs)
    assert dq.dtype == np.int32 and len(np.unique(dq)) > 1  # several documents
    np.testing.assert_array_equal(dq, dx)  # same length: the same ids
    s = np.einsum("bhqd,bhxd->bhqx", Q, K) / 4.0
    keep = (dq[:, None, :, None] == dx[:, None, None, :]) & (
        np.arange(40)[None, None, None, :] <= np.arange(40)[None, None, :, None]
    )
    s = np.where(keep, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    expected = np.einsum("bhqx,bhxd->bhqd", p / p.sum(axis=-1, keepdims=True), V)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("example", ["sliding_window_attention", "chunked_attention", "prefix_lm_attention"])
def test_emulator_reads_exactly_the_kv_bytes_the_model_prices(example: str, seed: int) -> None:
    """The tensor-core kernel's global reads, counted by the emulator, equal the cost model's
    L2 loads at the same tiles: Q once, and K and V only for the chunks each CTA's mask may
    keep (fewer than every chunk), which is also the dense count of non-empty blocks."""
    from napkin_mlir.cli.compile import FileProblem, compile_file_kernel
    from napkin_mlir.derive.auto import derive
    from napkin_mlir.emulator import emulate_kernel
    from napkin_mlir.model.cost import analyze
    from napkin_mlir.pipeline.passmanager import run_pipeline

    path = EXAMPLES / f"{example}.mlir"
    dims, tiles = {"b": 1, "h": 2, "q": 256, "x": 256, "d": 32}, {"q": 32, "x": 32}
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, dims)
        run_pipeline(module, derive(module, tiles).pipeline())
        model = analyze(module, "a100", stages=2, tensor_cores=True)
    priced = sum(t["total_bytes"] for t in model.transfers if t["boundary"] == "L2" and t["direction"] == "load")
    kernel, text, _ = compile_file_kernel(FileProblem(str(path), dims=dims, tiles=tiles), "sm_80", "gpu", "tensorcore")
    assert kernel is not None
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()
    m = 256 // 4
    keep = {
        "sliding_window_attention": lambda i, j: (j <= i) & (i - j < m),
        "chunked_attention": lambda i, j: (i // m == j // m) & (j <= i),
        "prefix_lm_attention": lambda i, j: (j < m) | (j <= i),
    }[example](np.arange(256)[:, None], np.arange(256)[None, :])
    blocks = sum(keep[a : a + 32, c : c + 32].any() for a in range(0, 256, 32) for c in range(0, 256, 32))
    heads, kv_row = 2, 32 * 2 * 2  # K and V rows of d = 32 bf16
    expected = heads * 256 * 32 * 2 + heads * blocks * 32 * kv_row
    assert report.stats.global_read_bytes == priced == expected
    assert blocks < 64


@pytest.mark.parametrize(
    "example",
    [
        "sliding_window_attention",
        "chunked_attention",
        "prefix_lm_attention",
        "causal_bottom_right_attention",
        "document_attention",
    ],
)
def test_flex_attention_description_computes_the_same_mask(example: str, seed: int) -> None:
    """The sidecar's FlexAttention description (the GPU runner turns it into a `mask_mod` of
    torch ops, to time PyTorch's FlexAttention beside the kernel) evaluated with numpy in
    place of torch keeps exactly the entries the diagram's mask keeps (its predicate evaluated
    densely here, with the segment ids `verify` draws)."""
    from napkin_mlir.backends.gpu.runner import flex_predicate
    from napkin_mlir.cli.compile import FileProblem, compile_file_kernel

    path = EXAMPLES / f"{example}.mlir"
    kernel, _, _ = compile_file_kernel(FileProblem(str(path), tiles={"q": 16, "x": 16}), "sm_80", "gpu", "tensorcore")
    assert kernel is not None
    flex = kernel.problem["flex"]
    n_rows, n_cols = flex["extents"]
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, None, "f32")
        args = [ArrayType.from_mlir(a.type) for a in module.body.operations[0].regions[0].blocks[0].arguments]
        inputs = reference.random_inputs(tuple(args), seed)
        q_arg = inputs[0]
        mask = next(op for op in module.body.operations[0].regions[0].blocks[0].operations if op.name == "napkin.mask")
        pred = read_predicate(mask_parts(mask.operation).block)
    names = [a.name for a in kernel.args]
    by_name = dict(zip(names, inputs, strict=False))
    i, j = np.arange(n_rows)[:, None], np.arange(n_cols)[None, :]
    scalars = []
    for name, axes in flex["masks"][0]["arrays"]:
        where = {"b": 0, "q": i, "x": j}
        scalars.append(by_name[name][tuple(where[a] for a in axes)])
    got = flex_predicate(
        flex["masks"][0], [i, j, n_rows, n_cols, *scalars], np.where, lambda a, c: np.fix(a / c).astype(int)
    )
    dense = evaluate(pred, i, j, (n_rows, n_cols), scalars)
    np.testing.assert_array_equal(np.broadcast_to(got, (n_rows, n_cols)), np.broadcast_to(dense, (n_rows, n_cols)))
    assert 0 < np.broadcast_to(dense, (n_rows, n_cols)).mean() < 1 and q_arg.shape[2] == n_rows
    assert flex["scale"] == pytest.approx(0.25) and (flex["q"], flex["k"], flex["v"]) == ("Q", "K", "V")


def test_cpu_chunk_test_reads_the_segment_ids_of_the_tile() -> None:
    """A document mask's chunk test bounds the predicate over the least and greatest segment
    id of the query tile and of the key chunk (scans of the id tiles): the scf.if that guards
    each chunk depends on loads of the ids, not only on positions."""
    from napkin_mlir.derive.auto import derive
    from napkin_mlir.lowering.loops import lower_module
    from napkin_mlir.pipeline.passmanager import run_pipeline

    with napkin_context(), ir.Location.unknown():
        module = load_diagram(EXAMPLES / "document_attention.mlir", {"q": 64, "x": 64}, "f32")
        run_pipeline(module, derive(module, {"q": 16, "x": 16}).pipeline())
        lower_module(module.operation)
        guards: list[ir.Operation] = []

        def visit(op: ir.Operation) -> ir.WalkResult:
            if op.name == "scf.if":
                guards.append(op)
            return ir.WalkResult.ADVANCE

        module.operation.walk(visit)
        assert guards

        def reads(v: ir.Value, seen: set) -> set[str]:
            owner = v.owner
            if isinstance(owner, ir.Block) or owner in seen:
                return set()
            op = owner.operation if isinstance(owner, ir.OpView) else owner
            seen.add(owner)
            found: set[str] = set()

            def add(inner: ir.Operation) -> ir.WalkResult:
                found.add(inner.name)
                return ir.WalkResult.ADVANCE

            op.walk(add)  # the op and everything nested in it (a scan's loads)
            for o in op.operands:
                found |= reads(o, seen)
            return found

        names = reads(guards[0].operands[0], set())
    assert "memref.load" in names and "arith.maxsi" in names and "arith.cmpi" in names


_MAP_T = 'tensor<4xf32, {axes = ["x"], level = "reg"}>'


@pytest.mark.parametrize(
    ("body", "args", "expected"),
    [
        # the backward's dS = P ∘ (dP − D): 0 where P = exp(-inf) = 0, whatever dP and D are
        ("%s = arith.subf %b, %a : f32\n%r = arith.mulf %a, %s : f32", [0.0, None], 0.0),
        # its gradient mask: select(m == 1, dS, 0) is 0 where the mask made m = -inf
        (
            "%c = arith.constant 1.0 : f32\n%k = arith.cmpf oeq, %b, %c : f32\n%z = arith.constant 0.0 : f32\n"
            "%r = arith.select %k, %a, %z : f32",
            [None, float("-inf")],
            0.0,
        ),
        ("%r = math.exp %a : f32", [float("-inf"), None], 0.0),
        ("%r = arith.subf %a, %b : f32", [float("-inf"), None], float("-inf")),
        # undecided: 0 + 1, tanh(-inf) = -1, 0 x -inf = NaN, -inf - -inf, an op without a rule
        ("%c = arith.constant 1.0 : f32\n%r = arith.addf %a, %c : f32", [0.0, None], None),
        ("%r = math.tanh %a : f32", [float("-inf"), None], None),
        ("%r = arith.mulf %a, %b : f32", [0.0, float("-inf")], None),
        ("%r = arith.subf %a, %b : f32", [float("-inf"), float("-inf")], None),
        ("%r = arith.divf %a, %b : f32", [0.0, None], None),
    ],
    ids=["ds", "gradient-mask", "exp", "shift", "plus-one", "tanh", "zero-times-inf", "inf-minus-inf", "divf"],
)
def test_a_map_is_followed_through_its_body(body: str, args: list, expected: float | None) -> None:
    """`decides_stream` follows dropped entries (-inf, or 0 after exp) through a napkin.map's
    body op by op: a chunk is skipped only where the body is known to yield -inf or 0 there."""
    from mlir import ir

    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.masks import _map_result

    text = f"""func.func @f(%p: {_MAP_T}, %q: {_MAP_T}) -> {_MAP_T} {{
  %0 = "napkin.map"(%p, %q) ({{
  ^bb0(%a: f32, %b: f32):
{body}
    gpu.yield %r : f32
  }}) {{operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>}} : ({_MAP_T}, {_MAP_T}) -> {_MAP_T}
  return %0 : {_MAP_T}
}}"""
    with napkin_context():
        module = ir.Module.parse(text)
        op = module.body.operations[0].regions[0].blocks[0].operations[0].operation
        got = _map_result(op, args)
    assert got == expected if expected is not None else got is None
