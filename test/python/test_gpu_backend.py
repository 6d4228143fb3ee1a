"""The GPU backend without a GPU: kernels compile to PTX that ptxas accepts for sm_80 and
sm_90a, without spills; sidecars describe them; the runner's CPU-side parts work. Running
a kernel needs a GPU: that test skips with a reason when none is present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import has_gpu

from napkin_mlir.backends.gpu import runner as gpu_runner
from napkin_mlir.backends.gpu.ptxas import parse_ptxas_report, ptxas_path

ATTENTION = ["--dims", "b=1,h=2,q=100,x=77,d=32", "--tile", "q=32,x=16"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    """One attention kernel per target (causal, bf16, grouped-query), compiled once."""
    from napkin_mlir.cli.napkin import main

    out = tmp_path_factory.mktemp("kernels")
    paths = {}
    for target in ("sm_80", "sm_90a"):
        path = out / f"attention_{target}.cubin"
        argv = [
            "compile",
            "attention",
            *ATTENTION,
            "--dtype",
            "bf16",
            "--causal",
            "--kv-heads",
            "1",
            "--kernel",
            "simt",
        ]
        with pytest.raises(SystemExit) as done:
            main([*argv, "--target", target, "-o", str(path)])
        assert done.value.code == 0
        paths[target] = path
    return paths


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_ptxas_accepts_without_spills(compiled: dict[str, Path], target: str) -> None:
    path = compiled[target]
    side = json.loads(path.with_suffix(".cubin.json").read_text())
    report = side["ptxas"]
    assert path.stat().st_size > 1000, "the cubin is empty"
    assert report["registers"] > 0 and report["spill_stores_bytes"] == 0 and report["spill_loads_bytes"] == 0
    assert f"for '{target}'" in report["raw"]
    assert side["target"] == target and side["entry"] == "attention_kernel"


def test_sidecar_describes_the_launch(compiled: dict[str, Path]) -> None:
    side = gpu_runner.load_sidecar(compiled["sm_80"].with_suffix(".cubin.json"))
    # the launch order (outlining's) is recorded; the runner passes pointers in that order
    assert sorted(a.name for a in side.args) == ["K", "Q", "V", "out0"]
    args = {a.name: a for a in side.args}
    # one key/value head shared by r=2 query heads
    assert args["Q"].shape == (1, 1, 2, 100, 32) and args["Q"].axes == ("b", "h", "r", "q", "d")
    assert args["K"].shape == (1, 1, 77, 32) and args["out0"].role == "output"
    # grid: one CTA per (q tile, kv head, batch) = (ceil(100/32), 1, 1); the r heads share it
    assert side.grid == (4, 1, 1) and side.block == (32, 4, 1)
    assert 0 < side.dynamic_smem_bytes <= 227 * 1024
    assert side.problem["causal"] is True and side.problem["dtype"] == "bf16"


def test_ptx_for_matmul(tmp_path: Path) -> None:
    from napkin_mlir.cli.napkin import main

    path = tmp_path / "mm.ptx"
    with pytest.raises(SystemExit) as done:
        main(["compile", "matmul", "--dims", "m=96,n=80,k=40", "--target", "sm_80", "--emit", "ptx", "-o", str(path)])
    assert done.value.code == 0
    ptx = path.read_text()
    assert ".target sm_80" in ptx and ".visible .entry matmul_kernel(" in ptx and "bar.sync" in ptx
    assert ptx.count(".param .u64") == 3, "bare pointers: A, B, C"


def test_ptxas_report_parsing() -> None:
    text = (
        "ptxas info    : Compiling entry function 'k' for 'sm_80'\n"
        "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 168 registers, used 1 barriers, 1024 bytes smem, 384 bytes cmem[0]\n"
    )
    r = parse_ptxas_report(text)
    assert (r["registers"], r["spill_stores_bytes"], r["spill_loads_bytes"], r["static_smem_bytes"]) == (
        168,
        4,
        4,
        1024,
    )
    assert Path(ptxas_path()).exists()


def test_runner_rejects_bad_sidecars(tmp_path: Path, compiled: dict[str, Path]) -> None:
    good = json.loads(compiled["sm_80"].with_suffix(".cubin.json").read_text())
    for broken, needle in [
        ({**good, "format": 7}, "format"),
        ({k: v for k, v in good.items() if k != "entry"}, "entry"),
        ({**good, "grid": [4, 0, 1]}, "grid"),
        ({**good, "args": [{**good["args"][0], "dtype": "f8"}]}, "dtype"),
    ]:
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(broken))
        with pytest.raises(gpu_runner.RunnerError, match=needle):
            gpu_runner.load_sidecar(p)


def test_runner_inputs_layout_and_judge(compiled: dict[str, Path]) -> None:
    side = gpu_runner.load_sidecar(compiled["sm_80"].with_suffix(".cubin.json"))
    arrays = gpu_runner.make_inputs(side, seed=3)
    assert np.isnan(arrays["out0"].astype(np.float32)).all(), "the output starts poisoned"
    q = arrays["Q"].astype(np.float32)
    assert q.std() > 0.5 and arrays["Q"].dtype.itemsize == 2
    back = gpu_runner.from_jax_layout(gpu_runner.to_jax_layout(q), q.shape)
    assert np.array_equal(back, q)
    ref64, same, _, index = gpu_runner.attention_references(arrays, side)
    assert ref64.shape == arrays["out0"][index].shape == arrays["out0"].shape, "small problems are checked whole"
    ok, errs = gpu_runner.judge(same, ref64, same, "bf16")
    assert ok and errs["ref_max_abs"] > 0
    bad_ok, _ = gpu_runner.judge(same + 0.1, ref64, same, "bf16")
    nan_ok, _ = gpu_runner.judge(arrays["out0"], ref64, same, "bf16")
    assert not bad_ok and not nan_ok


@pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU (CuPy with a device) on this machine")
def test_kernel_runs_and_matches_jax_on_gpu(compiled: dict[str, Path]) -> None:
    report = gpu_runner.run(compiled["sm_80"].with_suffix(".cubin.json"), repeats=5, warmup=2)
    assert report["passed"], report["errors"]


def test_missing_ptxas_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import napkin_mlir.backends.gpu.ptxas as g
    from napkin_mlir.errors import ToolError

    monkeypatch.setattr(g, "ptxas_path", lambda: str(tmp_path / "no-ptxas"))
    with pytest.raises((ToolError, FileNotFoundError)):
        g.assemble(".version 8.0\n.target sm_80\n.address_size 64\n", "sm_80", tmp_path / "x.cubin")
    assert shutil.which("true")


def test_huge_problems_check_a_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 16k tokens the float64 score matrices do not fit a GPU: the check covers as many
    heads of batch 0 as fit the budget (the whole output is still checked for finiteness)."""

    def arg(name: str, role: str, shape: list[int], axes: list[str]) -> dict:
        return {"name": name, "role": role, "dtype": "bf16", "shape": shape, "axes": axes}

    side_file = tmp_path / "k.cubin.json"
    side_file.write_text(
        json.dumps(
            {
                "format": 1,
                "binary": "k.cubin",
                "target": "sm_90a",
                "entry": "attention_tc",
                "grid": [2, 4, 2],
                "block": [128, 1, 1],
                "dynamic_smem_bytes": 1024,
                "args": [
                    arg("Q", "input", [2, 4, 40, 16], ["b", "h", "q", "d"]),
                    arg("K", "input", [2, 4, 30, 16], ["b", "h", "x", "d"]),
                    arg("V", "input", [2, 4, 30, 16], ["b", "h", "x", "d"]),
                    arg("out0", "output", [2, 4, 40, 16], ["b", "h", "q", "d"]),
                ],
                "problem": {"diagram": "attention", "causal": True},
            }
        )
    )
    side = gpu_runner.load_sidecar(side_file)
    assert gpu_runner.check_slice(side) == 4
    monkeypatch.setattr(gpu_runner, "REFERENCE_BUDGET", 2 * 40 * 30)  # two heads' score matrices
    assert gpu_runner.check_slice(side) == 2
    arrays = gpu_runner.make_inputs(side, seed=5)
    ref64, same, _, index = gpu_runner.attention_references(arrays, side)
    assert ref64.shape == same.shape == (1, 2, 40, 16) == arrays["Q"][index].shape
    ok, _ = gpu_runner.judge(same, ref64, same, "bf16")
    assert ok


def test_runner_without_a_gpu_is_a_clean_error(compiled: dict[str, Path]) -> None:
    """Here (no CuPy or no device) the runner says why in one line and exits 1."""
    import subprocess
    import sys

    if has_gpu():
        pytest.skip("a GPU is present: the runner runs instead")
    side = compiled["sm_80"].with_suffix(".cubin.json")
    proc = subprocess.run(
        [sys.executable, "-m", "napkin_mlir.backends.gpu.runner", str(side)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert any(line.startswith("error:") for line in proc.stderr.splitlines()), proc.stderr
    # the runner must work where the MLIR wheels are absent: it never imports them
    probe = "import sys, napkin_mlir.backends.gpu.runner; print(any(m == 'mlir' or m.startswith('mlir.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
