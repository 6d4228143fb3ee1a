"""napkin_mlir.pipeline.passmanager: pipeline splitting, option conversion and pass failures (in process).

Nothing here can abort the process: no `op_name=`, one dialect load per fresh context.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from mlir import ir

import passes
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.pipeline.passmanager import (
    PassFailure,
    build_pass_manager,
    describe_options,
    format_options,
    parse_pass_options,
    parse_pipeline,
    run_pipeline,
)
from passes import PassInfo


@dataclass(frozen=True)
class DemoOptions:
    axis: str = "q"
    size: int = 64
    scale: float = 1.0
    fast: bool = False
    tiles: tuple[int, ...] = (16, 16)
    names: tuple[str, ...] = ()
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    need_me: str = field(default="x", metadata={"help": "a documented option"})


PassRun = Callable[[ir.Operation, DemoOptions], None]


def demo_info(run: PassRun = lambda module, options: None) -> PassInfo:
    return PassInfo("napkin-demo", DemoOptions, run, "a pass for tests")


def test_split_top_level_elements() -> None:
    text = "builtin.module(napkin-verify, canonicalize{max-iterations=2},func.func(cse,canonicalize),napkin-demo{axis=q size=64})"
    elements = parse_pipeline(text)
    assert [e.name for e in elements] == ["napkin-verify", "canonicalize", "func.func", "napkin-demo"]
    assert elements[1].options == "max-iterations=2"
    assert elements[1].text == "canonicalize{max-iterations=2}"
    assert [c.name for c in elements[2].nested or ()] == ["cse", "canonicalize"]
    assert elements[3].options == "axis=q size=64"
    assert parse_pipeline("cse , napkin-verify") == parse_pipeline("builtin.module(cse,napkin-verify)")
    assert parse_pipeline("  ") == []


@pytest.mark.parametrize("text", ["cse)", "func.func(cse", "cse,", "napkin-demo{axis=q", "a b"])
def test_malformed_pipelines(text: str) -> None:
    with pytest.raises(UsageError):
        parse_pipeline(text)


def test_option_conversion() -> None:
    opts = parse_pass_options(
        demo_info(), "axis=k size=32 scale=0.5 fast tiles=1,2,3 names='a,b' mode=b limit=7 need-me={hello world}"
    )
    assert opts == DemoOptions("k", 32, 0.5, True, (1, 2, 3), ("a", "b"), "b", 7, "hello world")
    assert parse_pass_options(demo_info(), None) == DemoOptions()
    assert parse_pass_options(demo_info(), "fast=false limit=none tiles=") == DemoOptions(
        fast=False, limit=None, tiles=()
    )
    assert parse_pass_options(demo_info(), "need_me=y").need_me == "y"


def test_format_options_reads_back() -> None:
    opts = DemoOptions("k", 32, 0.5, True, (1, 2), ("a",), "b", None, "two words")
    assert parse_pass_options(demo_info(), format_options(opts)) == opts


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("colour=red", "has no option 'colour'"),
        ("size=big", "option 'size': expected an integer"),
        ("scale=x", "option 'scale': expected a number"),
        ("fast=perhaps", "option 'fast': expected true or false"),
        ("tiles=1,x", "option 'tiles': expected an integer"),
        ("mode=c", "option 'mode': expected one of a, b"),
        ("size", "option 'size' needs a value"),
        ("size=1 size=2", "given twice"),
        ("axis='q", "unbalanced"),
    ],
)
def test_option_errors_name_pass_and_option(text: str, mentions: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_pass_options(demo_info(), text)
    assert "napkin-demo" in str(err.value)
    assert mentions in str(err.value)


def test_describe_options() -> None:
    rows = {
        name: (type_name, default, help_text) for name, type_name, default, help_text in describe_options(demo_info())
    }
    assert rows["size"] == ("int", "64", "")
    assert rows["tiles"] == ("list of int", "16,16", "")
    assert rows["limit"] == ("int | none", "none", "")
    assert rows["need-me"] == ("str", "x", "a documented option")


MODULE = "func.func @f(%a: f32) -> f32 {\n  %0 = arith.addf %a, %a : f32\n  %1 = arith.addf %a, %a : f32\n  %2 = arith.mulf %0, %1 : f32\n  return %2 : f32\n}\n"


def run_demo(
    monkeypatch: pytest.MonkeyPatch, run: PassRun, pipeline: str = "cse,napkin-demo{size=3},canonicalize"
) -> str:
    """Run `pipeline` on MODULE with `napkin-demo` (calling `run`) registered for the test."""
    monkeypatch.setitem(passes.REGISTRY, "napkin-demo", demo_info(run))
    with napkin_context() as ctx, ir.Location.unknown():
        module = ir.Module.parse(MODULE)
        build_pass_manager(pipeline, context=ctx).run(module, filename="demo.mlir")
        return str(module)


def test_python_pass_runs_between_upstream_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, DemoOptions]] = []
    text = run_demo(monkeypatch, lambda module, options: seen.append((module.name, options)))
    assert seen == [("builtin.module", DemoOptions(size=3))]
    assert text.count("arith.addf") == 1  # cse ran


def test_napkin_error_becomes_pass_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(module: ir.Operation, options: DemoOptions) -> None:
        raise NapkinError("axis 'z' is not in the diagram")

    with pytest.raises(PassFailure) as err:
        run_demo(monkeypatch, fail)
    assert err.value.pass_name == "napkin-demo"
    assert str(err.value) == "napkin-demo: axis 'z' is not in the diagram"
    assert isinstance(err.value.cause, NapkinError)


def test_located_diagnostics_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(module: ir.Operation, options: DemoOptions) -> None:
        func = module.regions[0].blocks[0].operations[0]
        func.location.emit_error("this function is wrong")
        raise NapkinError("see the diagnostic")

    with pytest.raises(PassFailure) as err:
        run_demo(monkeypatch, fail)
    assert [(d.line, d.col, d.message) for d in err.value.diagnostics] == [(1, 1, "this function is wrong")]
    assert "demo.mlir:1:1: this function is wrong" in str(err.value)


def test_unexpected_exception_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(module: ir.Operation, options: DemoOptions) -> None:
        raise ZeroDivisionError("boom")

    with pytest.raises(PassFailure) as err:
        run_demo(monkeypatch, crash)
    assert "internal error in pass 'napkin-demo': ZeroDivisionError: boom" in str(err.value)
    assert isinstance(err.value.__cause__, ZeroDivisionError)


def test_unknown_and_nested_passes_are_usage_errors() -> None:
    with napkin_context() as ctx, ir.Location.unknown():
        module = ir.Module.parse(MODULE)
        with pytest.raises(UsageError, match="unknown pass 'napkin-nope'"):
            run_pipeline(module, "napkin-nope")
        with pytest.raises(UsageError, match="cannot be nested"):
            run_pipeline(module, "func.func(napkin-verify)")
        with pytest.raises(UsageError, match=re.escape("restricted to 'func.func'")):
            run_pipeline(module, "affine-scalrep")
        assert ctx is module.context


def test_dump_dir_numbers_the_elements(tmp_path: Path) -> None:
    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(MODULE)
        run_pipeline(module, "builtin.module(napkin-verify,func.func(cse,canonicalize))", dump_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00-input.mlir", "01-napkin-verify.mlir", "02-func.func-cse-canonicalize.mlir"]
    assert (tmp_path / "02-func.func-cse-canonicalize.mlir").read_text().count("arith.addf") == 1
