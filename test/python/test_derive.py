"""Automatic derivation and diagrams from files: `derive` decides groups, stream and tiles from
the program itself (reproducing the paper's choices for the built-ins), explains each choice,
refuses with a located diagnostic; files load, verify and re-size; `napkin derive` prints a
pipeline that napkin-opt accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_command, run_cli_in_process
from mlir import ir
from mlir.dialects import arith
from mlir.dialects import math as mmath

from napkin_mlir.derive.auto import derive
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.builders import DiagramBuilder
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import build_builtin
from napkin_mlir.ir.files import axis_sizes, load_diagram
from napkin_mlir.pipeline.passmanager import run_pipeline

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.mlir"))


def _derive_builtin(name: str, dims: dict[str, int], **options: object):
    with napkin_context(), ir.Location.unknown():
        return derive(build_builtin(name, dims, "f32", **options))


def test_builtins_get_the_papers_derivations() -> None:
    att = _derive_builtin("attention", {"b": 2, "h": 4, "q": 200, "x": 333, "d": 64}, causal=True)
    assert (att.woven, att.tiled, att.streamed) == (["b", "h"], ["q"], "x")
    mm = _derive_builtin("matmul", {"m": 300, "n": 200, "k": 100})
    assert (mm.woven, mm.tiled, mm.streamed) == ([], ["m", "n"], "k")
    mlp = _derive_builtin("mlp", {"m": 64, "k": 32, "f": 128, "n": 16})
    assert (mlp.tiled, mlp.streamed) == (["m"], "f")
    # n is not grouped: every group would recompute the first layer, which has no n
    assert any(r.startswith("n: not grouped") and "recompute" in r for r in mlp.reasons)
    # f (128) is the largest reduced axis outside the outputs, and it streams
    assert any(r.startswith("f: streamed") for r in mlp.reasons)


def test_grouped_query_axis_stays_whole_in_the_q_tile() -> None:
    """r (the query heads sharing a K/V head) is reused like q: one reuse of K and V, so the
    group tiles q, the innermost, and holds all of r (each K/V chunk is loaded once for all
    the query heads that share it, as the tensor-core kernel expects), even when q is
    shorter than r (decoding)."""
    d = _derive_builtin("attention", {"b": 1, "h": 4, "q": 50, "x": 70, "d": 16}, kv_heads=2)
    assert d.woven == ["b", "h"] and d.tiled == ["q"] and d.whole == ["r"] and d.streamed == "x"
    assert any(r.startswith("r: group tiles") for r in d.reasons)
    assert any(r.startswith("r: held whole in every group: a tile of q") for r in d.reasons)
    assert "napkin-group-partition{axes=b,h,q sizes=1,1,50 level=grid}" in d.pipeline()
    decode = _derive_builtin("attention", {"b": 2, "h": 16, "q": 1, "x": 300, "d": 16}, kv_heads=2)
    assert decode.tiled == ["q"] and decode.whole == ["r"]


@pytest.mark.parametrize(
    ("name", "dims", "options"),
    [
        ("matmul", {"m": 300, "n": 200, "k": 100}, {}),
        ("attention", {"b": 2, "h": 4, "q": 100, "x": 90, "d": 32}, {"causal": True}),
        ("attention", {"b": 1, "h": 8, "q": 3, "x": 90, "d": 32}, {"kv_heads": 2}),
        ("mlp", {"m": 100, "k": 64, "f": 128, "n": 32}, {}),
    ],
)
def test_builtins_take_the_same_path_as_files(name: str, dims: dict[str, int], options: dict, tmp_path: Path) -> None:
    """One path: a built-in's pipeline (`stages.derivation`, what verify/compile/draw use) is
    what `derive` gives the same diagram written to a file, at default and given tiles."""
    from napkin_mlir.ir.diagrams import diagram_sizes
    from napkin_mlir.pipeline.stages import PARTITIONS, derivation

    with napkin_context(), ir.Location.unknown():
        module = build_builtin(name, dims, "f32", **options)
        sizes = diagram_sizes(module)
        path = tmp_path / f"{name}.mlir"
        path.write_text(str(module))
        from_file = load_diagram(path)
        grouped, streamed = PARTITIONS[name]
        given = {a: 3 for a in (*grouped, streamed) if a in sizes}
        for tiles in ({}, given):
            assert derivation(name, sizes, tiles) == derive(from_file, tiles, filename=str(path)).pipeline()


def test_tiles_from_flag_and_model() -> None:
    with napkin_context(), ir.Location.unknown():
        module = build_builtin("attention", {"b": 1, "h": 2, "q": 1000, "x": 1000, "d": 64}, "bf16")
        fixed = derive(module, {"q": 32, "x": 16})
        assert fixed.tiles == {"q": 32, "x": 16}
        modelled = derive(module, {"q": 64}, gpu="h100", dtype="bf16")
        assert modelled.tiles["q"] == 64 and modelled.tiles["x"] % 16 == 0
        assert any("cost model for h100" in r for r in modelled.reasons)
        with pytest.raises(UsageError, match="axis 'b' is not tiled"):
            derive(module, {"b": 1})  # woven: one slice per group (d would nest a stream)
        with pytest.raises(UsageError, match="larger than the axis"):
            derive(module, {"q": 2000})


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_derives_and_its_pipeline_runs(path: Path) -> None:
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path)
        d = derive(module, filename=str(path))
        assert d.reasons and d.pipeline().startswith("builtin.module(napkin-verify,napkin-assign-levels")
        run_pipeline(module, d.pipeline())
        text = str(module)
    assert ('"napkin.group"' in text) == bool(d.woven or d.tiled)
    assert ('"napkin.stream"' in text) == (d.streamed is not None)


def test_refused_stream_is_reported_with_the_box_and_its_location(tmp_path: Path) -> None:
    """RMSNorm feeding a matmul streams k (its factor rsqrt(mean x² + eps) has no k, so it is
    applied after the sum); a near miss whose factor is computed per element from the row
    sum, rsqrt(Σ_k x² + x), has k and needs the whole axis: refused, naming that box."""
    path = REPO_ROOT / "examples" / "rmsnorm_matmul.mlir"
    with napkin_context(), ir.Location.unknown():
        d = derive(load_diagram(path), filename=str(path))
        assert d.streamed == "k" and any(r.startswith("k: streamed") for r in d.reasons)
        b = DiagramBuilder(
            "near_miss", X=ArrayType(("m", "k"), (45, 64), "f32"), W=ArrayType(("k", "n"), (64, 24), "f32")
        )
        ss = b.reduce(b.mul(b["X"], b["X"]), "k", "sum")
        factor = b.map(lambda x, v: mmath.rsqrt(arith.addf(v, x)), b["X"], ss)
        near = tmp_path / "near_miss.mlir"
        near.write_text(str(b.ret(b.contract(b.mul(b["X"], factor), b["W"], ("m", "n")))))
        refused = derive(load_diagram(near), filename=str(near))
    assert refused.streamed is None
    reason = next(r for r in refused.reasons if r.startswith("k: not streamed"))
    assert f"{near}:" in reason and "'napkin.map' works on chunks of 'k' but uses 'napkin.reduce'" in reason


def test_partitioned_input_is_refused_with_a_location(tmp_path: Path) -> None:
    src = REPO_ROOT / "examples" / "softcap_attention.mlir"
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(src)
        run_pipeline(module, derive(module).pipeline())
        out = tmp_path / "partitioned.mlir"
        out.write_text(str(module))
        with pytest.raises(NapkinError, match=r"partitioned.mlir:\d+:\d+: derive: 'napkin.group'"):
            derive(load_diagram(out), filename=str(out))
        with pytest.raises(UsageError, match="already partitioned"):
            load_diagram(out, {"q": 64})


def test_resize_by_axis_name() -> None:
    path = REPO_ROOT / "examples" / "gqa_bias_attention.mlir"
    with napkin_context(), ir.Location.unknown():
        small = axis_sizes(load_diagram(path))
        big = load_diagram(path, {"q": 130, "x": 257, "d": 32})
        sizes = axis_sizes(big)
        text = str(big)
    assert small["q"] != 130 and sizes["q"] == 130 and sizes["x"] == 257 and sizes["d"] == 32
    assert sizes["b"] == small["b"] and sizes["r"] == small["r"]
    assert "x37x" not in text  # no array kept the old q size
    with napkin_context(), ir.Location.unknown(), pytest.raises(UsageError, match="unknown axis 'z'"):
        load_diagram(path, {"z": 3})


def _napkin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli_command("napkin"), *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def test_napkin_derive_prints_a_pipeline_napkin_opt_accepts(tmp_path: Path) -> None:
    path = "examples/softcap_attention.mlir"
    # good runs, only their output checked: main() in this process
    proc = run_cli_in_process("napkin", "derive", path, "--dims", "q=100,x=90", "--tile", "q=32,x=16")
    assert proc.rc == 0, proc.describe()
    lines = proc.stdout.splitlines()
    pipeline = next(ln for ln in lines if ln.startswith("builtin.module("))
    assert "axes=b,h,q sizes=1,1,32" in pipeline and "axis=x size=16" in pipeline
    assert any(ln.startswith("// q: group tiles") for ln in lines)
    resized = tmp_path / "resized.mlir"
    with napkin_context(), ir.Location.unknown():
        resized.write_text(str(load_diagram(REPO_ROOT / path, {"q": 100, "x": 90})))
    opt = run_cli_in_process("napkin-opt", str(resized), f"--pass-pipeline={pipeline}")
    assert opt.rc == 0, opt.describe()
    assert '"napkin.stream"' in opt.stdout


def test_napkin_derive_takes_a_builtin() -> None:
    """`napkin derive attention --dims ... --kv-heads` explains the pipeline that `napkin
    pipeline` (what verify, compile and draw use) prints for the same built-in."""
    dims = ["--dims", "b=1,h=8,q=1,x=300,d=64", "--kv-heads", "2"]
    proc = run_cli_in_process("napkin", "derive", "attention", *dims)  # the good runs: in this process
    assert proc.rc == 0, proc.describe()
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("// r: held whole in every group") for ln in lines)
    named = run_cli_in_process("napkin", "pipeline", "attention", *dims)
    assert named.rc == 0, named.describe()
    assert lines[-1] == named.stdout.strip() and "axes=b,h,q sizes=1,1,1" in lines[-1]
    bad = _napkin("derive", "attention")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: attention: --dims is required for a built-in diagram"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'func.func @f(%a: tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}> {\n'
            '  %b = "napkin.nosuch"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>\n'
            '  return %b : tensor<4xf32, {axes = ["m"]}>\n}\n',
            "bad.mlir:2:",
        ),
        (
            'func.func @f(%a: tensor<4xf32, {axes = ["m"]}>) -> tensor<5xf32, {axes = ["m"]}> {\n'
            '  %b = "napkin.exp"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<5xf32, {axes = ["m"]}>\n'
            '  return %b : tensor<5xf32, {axes = ["m"]}>\n}\n',
            "bad.mlir:2:",
        ),
        ("this is not mlir\n", "bad.mlir:1:"),
    ],
    ids=["unknown-op", "mismatched-sizes", "not-mlir"],
)
def test_bad_files_give_one_located_error_line(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.mlir"
    bad.write_text(text)
    proc = _napkin("derive", str(bad))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


def test_python_api_without_the_cli() -> None:
    """The Python steps a user pastes: parse text, derive, run the pipeline."""
    text = (REPO_ROOT / "examples" / "swiglu_mlp.mlir").read_text()
    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(text)
        d = derive(module)
        run_pipeline(module, d.pipeline())
    assert d.tiled == ["m"] and d.streamed == "f"


@pytest.mark.parametrize(
    ("name", "dims", "tiles", "outer", "inner"),
    [
        ("mlp", {"m": 20, "k": 37, "f": 45, "n": 11}, {"f": 16, "k": 8}, "f", "k"),
        ("attention", {"b": 1, "h": 2, "q": 13, "x": 29, "d": 24}, {"x": 8, "d": 16}, "x", "d"),
    ],
)
def test_nested_stream_when_tile_names_both_axes(
    name: str, dims: dict[str, int], tiles: dict[str, int], outer: str, inner: str, seed: int
) -> None:
    """The first layer's k inside the mlp's f stream, Q Kᵀ's d inside attention's x stream
    (d is kept by the output, yet reduced inside the step): --tile naming the inner axis nests
    it; the interpretation is unchanged and the CPU result passes against the plain diagram."""
    import numpy as np

    from napkin_mlir.check import reference
    from napkin_mlir.check.diagram import verify_diagram
    from napkin_mlir.interpret import interpret

    with napkin_context(), ir.Location.unknown():
        plain = build_builtin(name, dims, "f32")
        flat = derive(plain)
        assert flat.nested is None and inner in flat.nestable
        d = derive(plain, tiles)
        assert (d.streamed, d.nested) == (outer, inner)
        assert any(r.startswith(f"{inner}: streamed inside the {outer} stream") for r in d.reasons)
        assert d.pipeline().endswith(
            f"napkin-stream-partition{{axis={outer} size={tiles[outer]}}},"
            f"napkin-stream-partition{{axis={inner} size={tiles[inner]}}},napkin-verify)"
        )
        args = [ArrayType.from_mlir(a.type) for a in plain.body.operations[0].regions[0].blocks[0].arguments]
        inputs = reference.random_inputs(tuple(args), seed)
        expected = np.asarray(interpret(plain, inputs)[0])
        relabeled = ir.Module.parse(str(plain))
        run_pipeline(relabeled, d.pipeline())
        text = str(relabeled)
        assert text.count('"napkin.stream"') == 2 and f'axis = "{inner}"' in text
        got = np.asarray(interpret(relabeled, inputs)[0])
        assert float(np.max(np.abs(got - expected))) <= 1e-12 * float(np.max(np.abs(expected)))
        result = verify_diagram(plain, seed, tiles=tiles)
    assert result.passed, result.summary()
    assert all(0 < o.comparison.rel_fro < 1e-5 for o in result.outputs)


def test_model_nests_a_stream_when_it_prices_it_lower() -> None:
    """With a GPU the model prices both: the mlp's k inside its f stream, and no nesting; the
    cheaper is chosen and the reason gives both prices. An attention whose d fits whole is
    priced the same either way and stays unnested."""
    import contextlib
    import dataclasses

    from napkin_mlir.derive import auto
    from napkin_mlir.pipeline.decide import decide

    with napkin_context(), ir.Location.unknown():
        module = build_builtin("mlp", {"m": 512, "k": 1024, "f": 512, "n": 64}, "bf16")
        d = derive(module, gpu="h100", dtype="bf16")
        (reason,) = [r for r in d.reasons if r.startswith("k: ") and "the model prices the nested stream" in r]
        flat = decide(module)
        nested = dataclasses.replace(flat, nested="k", tiles={**flat.tiles, "k": 64})
        seconds = {}
        for option in (flat, nested):
            with contextlib.suppress(UsageError):  # nothing fits
                seconds[option.nested] = auto._model_tiles(module, option, "h100", "bf16", {}).report.predicted_seconds
        assert "k" in seconds
        assert d.nested == ("k" if seconds["k"] < seconds.get(None, float("inf")) else None)
        assert ("streamed inside the f stream" in reason) == (d.nested == "k")
        att = derive(build_builtin("attention", {"b": 1, "h": 4, "q": 256, "x": 256, "d": 64}, "bf16"), gpu="h100")
        assert att.nested is None and att.streamed == "x"
