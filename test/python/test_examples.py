"""The diagrams users write (`examples/`): each is derived, compiled for the CPU and judged
against the JAX interpretation of its own diagram, in bf16 and f32, at odd sizes; the
interpretation is unchanged by every pass of its derivation; the files are what
`examples/build_examples.py` writes; `napkin verify FILE.mlir` ends with PASS."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, run_cli_in_process, run_cli_process
from mlir import ir

from napkin_mlir.check import reference
from napkin_mlir.check.diagram import verify_diagram
from napkin_mlir.derive.auto import derive
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.files import load_diagram
from napkin_mlir.pipeline.passmanager import parse_pipeline, run_pipeline

EXAMPLES = REPO_ROOT / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.mlir"))

#: Odd sizes per example, different from the file's (so re-sizing is exercised too).
ODD_SIZES = {
    "bias_attention": {"q": 53, "x": 41, "d": 24},
    "cross_attention": {"q": 45, "x": 67, "e": 40},
    "gqa_bias_attention": {"q": 31, "x": 19},
    "layernorm_matmul": {"m": 23, "k": 71, "n": 17},
    "rmsnorm_matmul": {"m": 23, "k": 71, "n": 17},
    "sigmoid_attention": {"q": 61, "x": 43},
    "sink_attention": {"q": 41, "x": 53},
    "softcap_attention": {"q": 33, "x": 75, "d": 8},
    "softmax_attention_by_hand": {"q": 29, "x": 47, "d": 24},
    "swiglu_mlp": {"m": 29, "f": 83, "n": 13},
    "sliding_window_attention": {"q": 59, "x": 59},
    "causal_bottom_right_attention": {"q": 27, "x": 61},
    "prefix_lm_attention": {"q": 51, "x": 51},
    "chunked_attention": {"q": 57, "x": 57},
    "document_attention": {"q": 63, "x": 63},
}


def test_every_example_has_odd_sizes_here() -> None:
    assert sorted(ODD_SIZES) == NAMES


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_example_passes_against_its_own_interpretation(name: str, dtype: str, seed: int) -> None:
    path = EXAMPLES / f"{name}.mlir"
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, ODD_SIZES[name], dtype)
        result = verify_diagram(module, seed, tiles=None, filename=str(path))
    assert result.passed, result.summary()
    for check in result.outputs:
        assert check.comparison.rel_fro > 0  # computed, not copied from the reference
        assert check.comparison.rel_fro < (1e-5 if dtype == "f32" else 2e-2)


@pytest.mark.parametrize("name", NAMES)
def test_interpretation_is_unchanged_by_every_pass(name: str, seed: int) -> None:
    path = EXAMPLES / f"{name}.mlir"
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, ODD_SIZES[name])
        args = [ArrayType.from_mlir(a.type) for a in module.body.operations[0].regions[0].blocks[0].arguments]
        inputs = reference.random_inputs(tuple(args), seed)
        expected = [np.asarray(r) for r in interpret(module, inputs)]
        d = derive(module, _small_tiles(name))
        for element in parse_pipeline(d.pipeline()):
            run_pipeline(module, f"builtin.module({element.text})")
            got = [np.asarray(r) for r in interpret(module, inputs)]
            for g, e in zip(got, expected, strict=True):
                scale = float(np.max(np.abs(e)))
                assert float(np.max(np.abs(g - e))) <= 1e-12 * scale, f"after {element.text}"
        assert '"napkin.group"' in str(module)


def _small_tiles(name: str) -> dict[str, int]:
    """Tiles that do not divide the odd sizes (partial groups and chunks)."""
    if "attention" in name:
        return {"q": 8, "x": 16}
    if name == "swiglu_mlp":
        return {"m": 8, "f": 16}
    return {"m": 8}


def test_files_are_what_the_builders_write() -> None:
    spec = importlib.util.spec_from_file_location("build_examples", EXAMPLES / "build_examples.py")
    assert spec and spec.loader
    builders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builders)
    assert sorted(builders.EXAMPLES) == NAMES
    for name in NAMES:
        assert builders.render(name) == (EXAMPLES / f"{name}.mlir").read_text(), name


def test_napkin_verify_a_file_from_the_command_line() -> None:
    """The good run needs only its output (main() in this process); the two bad command lines
    are run as processes: exit code 2 and the error line."""
    result = run_cli_in_process("napkin", "verify", "examples/softcap_attention.mlir", "--dims", "q=70,x=130")
    assert result.rc == 0, result.describe()
    assert result.last_line().startswith("PASS"), result.describe()
    assert "derive: x: streamed" in result.stdout
    bad = run_cli_process("napkin", "verify", "examples/softcap_attention.mlir", "--causal")
    assert bad.rc == 2 and bad.stderr.startswith("error: --causal describes a built-in diagram")
    resized = run_cli_process("napkin", "verify", "examples/softcap_attention.mlir", "--dims", "zz=3")
    assert resized.rc == 2 and "unknown axis 'zz'" in resized.stderr and "Traceback" not in resized.stderr


def test_a_wrong_result_fails(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file path judges: a CPU kernel whose output is perturbed is reported as FAIL."""
    from napkin_mlir.backends import cpu

    original = cpu.CpuKernel.__call__

    def perturbed(self, name, *inputs):
        outs = original(self, name, *inputs)
        outs[0].flat[0] += 1.0
        return outs

    monkeypatch.setattr(cpu.CpuKernel, "__call__", perturbed)
    path: Path = EXAMPLES / "swiglu_mlp.mlir"
    with napkin_context(), ir.Location.unknown():
        result = verify_diagram(load_diagram(path, dtype="f32"), seed)
    assert not result.passed and result.summary().splitlines()[-1].startswith("FAIL")


def test_model_pseudocode_and_draw_take_a_file(tmp_path: Path) -> None:
    path = "examples/softcap_attention.mlir"
    dims = "b=4,h=16,q=4096,x=4096,d=128"
    # the good runs need only their output: the commands' main() in this process; the bad
    # command line at the end exits 2 with its error line in a subprocess
    model = run_cli_in_process("napkin", "model", path, "--gpu", "h100", "--dims", dims, "--json")
    assert model.rc == 0, model.describe()
    import json

    report = json.loads(model.stdout)
    # the model prices the file's own program: 2 contractions of 2·b·h·q·x·d each, and the tanh
    assert report["tensor_flops"] == 4 * 4 * 16 * 4096 * 4096 * 128
    assert report["exp_ops"] > 4 * 16 * 4096 * 4096  # exp and tanh per score
    assert any("stream" in line for line in report["derivation"])
    pseudo = run_cli_in_process("napkin", "pseudocode", path, "--gpu", "a100", "--dims", "q=512,x=512")
    assert pseudo.rc == 0 and "tanh(" in pseudo.stdout and "for x0 in" in pseudo.stdout, pseudo.describe()
    out = tmp_path / "softcap.png"
    drawn = run_cli_in_process(
        "napkin", "draw", path, "--stage", "partitioned", "--dims", "q=256,x=256", "-o", str(out)
    )
    assert drawn.rc == 0 and out.stat().st_size > 10_000, drawn.describe()
    bad = run_cli_process("napkin", "model", path, "--gpu", "h100", "--dtype", "f32")
    assert bad.rc == 2 and bad.stderr.startswith("error: --dtype for a .mlir file"), bad.describe()


def test_a_hand_written_file_without_argument_names(tmp_path: Path) -> None:
    """The README's matmul.mlir: no arg_names attribute, sizes re-given by --dims."""
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("func.func @matmul(")
    text = readme[start : readme.index("```", start)]
    path = tmp_path / "matmul.mlir"
    path.write_text(text)
    result = run_cli_in_process("napkin", "verify", str(path), "--dims", "m=61,n=37,k=29")
    assert result.rc == 0 and result.last_line().startswith("PASS"), result.describe()


def test_bench_takes_a_file(tmp_path: Path) -> None:
    """`napkin bench FILE.mlir`: the derived CPU program beside XLA's compilation of the same
    diagram, medians and ratio in JSON, and the two agree."""
    import json

    out = tmp_path / "bench.json"
    dims = "q=64,x=64"
    result = run_cli_in_process(  # only the result: in this process; the refusal below in a subprocess
        "napkin",
        "bench",
        "examples/softcap_attention.mlir",
        "--dims",
        dims,
        "--dtype",
        "f32",
        "--repeats",
        "3",
        "-o",
        str(out),
    )
    assert result.rc == 0, result.describe()
    (m,) = json.loads(out.read_text())["measurements"]
    assert m["napkin_median_s"] > 0 and m["reference_median_s"] > 0
    assert m["ratio"] == pytest.approx(m["napkin_median_s"] / m["reference_median_s"])
    assert m["max_rel_diff"] < 1e-5 and "interpretation" in m["reference_name"]
    refused = run_cli_process("napkin", "bench", "examples/softcap_attention.mlir", "--target", "gpu")
    assert refused.rc == 2 and refused.stderr.startswith("error: napkin bench FILE.mlir --target gpu: give --prepare")


@pytest.mark.parametrize("name", NAMES)
def test_example_passes_on_the_emulator(name: str) -> None:
    """Each example compiled for sm_80 (tensor cores when the rule accepts it, else SIMT, and a
    line saying why) and run on the CPU emulator against its own interpretation (`napkin emulate`'s
    main() in this process: only its verdict is checked)."""
    result = run_cli_in_process("napkin", "emulate", f"examples/{name}.mlir")
    assert result.rc == 0 and result.last_line().startswith("PASS"), result.describe()
    assert "against the JAX interpretation of the diagram" in result.last_line()
