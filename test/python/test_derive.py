"""Automatic derivation and diagrams from files: `derive` decides groups, stream and tiles from
the program itself (reproducing the paper's choices for the built-ins), explains each choice,
refuses with a located diagnostic; files load, verify and re-size; `napkin derive` prints a
pipeline that napkin-opt accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_command
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


def test_grouped_query_axis_reuses_kv_and_fits_the_grid() -> None:
    """r (the query heads sharing a K/V head) is reused like q; with b, h, r and q the grid
    would need 4 dimensions, so r, whose tile is the whole axis, stays whole in each group
    (as FlashAttention-2 keeps a K/V head's query heads together)."""
    d = _derive_builtin("attention", {"b": 1, "h": 4, "q": 50, "x": 70, "d": 16}, kv_heads=2)
    assert d.woven == ["b", "h"] and d.tiled == ["q"] and d.streamed == "x"
    assert any(r.startswith("r: group tiles") for r in d.reasons)
    assert any(r.startswith("r: left whole") for r in d.reasons)
    assert "napkin-group-partition{axes=b,h,q sizes=1,1,50 level=grid}" in d.pipeline()


def test_tiles_from_flag_and_model() -> None:
    with napkin_context(), ir.Location.unknown():
        module = build_builtin("attention", {"b": 1, "h": 2, "q": 1000, "x": 1000, "d": 64}, "bf16")
        fixed = derive(module, {"q": 32, "x": 16})
        assert fixed.tiles == {"q": 32, "x": 16}
        modelled = derive(module, {"q": 64}, gpu="h100", dtype="bf16")
        assert modelled.tiles["q"] == 64 and modelled.tiles["x"] % 16 == 0
        assert any("cost model for h100" in r for r in modelled.reasons)
        with pytest.raises(UsageError, match="axis 'd' is not tiled"):
            derive(module, {"d": 16})
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
    proc = _napkin("derive", path, "--dims", "q=100,x=90", "--tile", "q=32,x=16")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    pipeline = next(ln for ln in lines if ln.startswith("builtin.module("))
    assert "axes=b,h,q sizes=1,1,32" in pipeline and "axis=x size=16" in pipeline
    assert any(ln.startswith("// q: group tiles") for ln in lines)
    resized = tmp_path / "resized.mlir"
    with napkin_context(), ir.Location.unknown():
        resized.write_text(str(load_diagram(REPO_ROOT / path, {"q": 100, "x": 90})))
    opt = subprocess.run(
        [*cli_command("napkin-opt"), str(resized), f"--pass-pipeline={pipeline}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert opt.returncode == 0, opt.stderr
    assert '"napkin.stream"' in opt.stdout


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
