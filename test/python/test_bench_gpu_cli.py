"""`napkin bench --target gpu` without a GPU: the sweep compiles here (--prepare), and a
runner's results file is tabulated and plotted (--report). Running needs the GPU machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napkin_mlir.backends.gpu.runner import load_sidecar
from napkin_mlir.cli import bench


def _run(argv: list[str]) -> int:
    from napkin_mlir.cli.napkin import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    return int(done.value.code or 0)


def test_sweep_shapes() -> None:
    problems = bench.gpu_sweep()
    assert len(problems) == len(bench.GPU_SEQS) * len(bench.GPU_HEAD_DIMS) * 2
    for dims, _causal in problems:
        assert dims["b"] * dims["q"] == 16384 and dims["h"] * dims["d"] == 2048 and dims["q"] == dims["x"]


def test_prepare_compiles_runnable_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "GPU_SEQS", (512,))
    monkeypatch.setattr(bench, "GPU_HEAD_DIMS", (64,))
    assert _run(["bench", "attention", "--target", "gpu", "--prepare", str(tmp_path), "--arch", "sm_80"]) == 0
    preflight = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("preflight on the emulator")]
    assert len(preflight) == 2 and all(": PASS " in ln for ln in preflight), preflight
    sidecars = sorted(tmp_path.glob("*.cubin.json"))
    assert [s.name for s in sidecars] == ["attention-d64-n512-causal.cubin.json", "attention-d64-n512.cubin.json"]
    side = load_sidecar(sidecars[0])
    assert side.binary.exists() and side.problem["causal"] is True and side.problem["kernel"] == "tensorcore"
    assert side.problem["dims"] == {"b": 32, "h": 32, "q": 512, "x": 512, "d": 64}


def test_gpu_without_prepare_or_report_explains_the_flow(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "has_cuda_device", lambda: False)
    assert _run(["bench", "attention", "--target", "gpu"]) == 2
    assert "--prepare" in capsys.readouterr().err


def test_report_tabulates_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path / "archive")
    runs = []
    for d in (64, 128):
        for n in (512, 1024):
            for causal in (False, True):
                ms = {"napkin": 1.0 + n / 1000, "cudnn": 0.5 + n / 2000, "xla": 2.0}
                runs.append(
                    {
                        "problem": {
                            "dims": {"b": 16384 // n, "h": 2048 // d, "q": n, "x": n, "d": d},
                            "causal": causal,
                        },
                        "passed": True,
                        "median_ms": ms,
                        "tflops": {k: 100.0 / v for k, v in ms.items()},
                        "ratio_to_cudnn": ms["napkin"] / ms["cudnn"],
                    }
                )
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"device": "test device", "runs": runs}))
    plot = tmp_path / "tflops.png"
    assert _run(["bench", "attention", "--target", "gpu", "--report", str(results), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "test device" in out and out.count("PASS") == len(runs)
    assert plot.stat().st_size > 10_000
    (archived,) = (tmp_path / "archive").glob("gpu-attention-test-device-*.json")
    assert json.loads(archived.read_text())["runs"] == runs
    runs[0]["passed"] = False
    results.write_text(json.dumps({"device": "test device", "runs": runs}))
    assert _run(["bench", "attention", "--target", "gpu", "--report", str(results)]) == 1
    assert list((tmp_path / "archive").glob("*.png")), "without --plot the plot goes beside the archived JSON"


def test_report_reads_the_runners_jsonl_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's --jsonl log: progress records dropped, a diagram file's kernel tabulated
    beside XLA, a crashed kernel shown and failing the report."""
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path / "archive")
    good = {
        "sidecar": "v/softcap_attention.cubin.json",
        "device": "test device",
        "problem": {"diagram": "examples/softcap_attention.mlir", "dims": {"q": 37}},
        "passed": True,
        "median_ms": {"napkin": 0.5, "xla": 0.25},
        "ratio_to_xla": 2.0,
    }
    lines = [
        {"sidecar": good["sidecar"], "started": True},
        good,
        {"sidecar": "v/sink.cubin.json", "started": True},
        {"sidecar": "v/sink.cubin.json", "passed": False, "crashed": True},
        {"all_done": True},
    ]
    log = tmp_path / "variants.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert _run(["bench", "attention", "--target", "gpu", "--report", str(log)]) == 1
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("softcap_attention "))
    assert "PASS" in row and "0.5000" in row and row.rstrip().endswith("0.50")
    assert any(ln.startswith("sink ") and "CRASH" in ln for ln in out.splitlines())
    (archived,) = (tmp_path / "archive").glob("gpu-diagrams-test-device-*.json")
    assert [r["sidecar"] for r in json.loads(archived.read_text())["runs"]] == [good["sidecar"], "v/sink.cubin.json"]
