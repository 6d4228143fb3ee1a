"""The GPU runner's flow on this machine, with a stand-in for CuPy whose "kernel" writes a
chosen result: a diagram file's kernel is judged against the interpretation's references and
timed beside the exported XLA function; a wrong result fails; `--jsonl` records every report,
resumes after a crash (the kernel that was running is recorded as crashed) and skips kernels
already reported. The real launch needs a GPU (test_gpu_backend.py, test_tensorcore.py)."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from napkin_mlir.backends.gpu import runner
from napkin_mlir.cli import bench


class FakeArray:
    def __init__(self, data: np.ndarray) -> None:
        self.data = np.array(data, copy=True)


def fake_cupy(write: Callable[[runner.Sidecar, list[FakeArray]], None], side: runner.Sidecar) -> types.ModuleType:
    cp = types.ModuleType("cupy")

    class Kernel:
        max_dynamic_shared_size_bytes = 0

        def __call__(self, grid: tuple, block: tuple, params: tuple, shared_mem: int = 0) -> None:
            assert grid == side.grid and block == side.block and shared_mem == side.dynamic_smem_bytes
            write(side, list(params))

    class Module:
        def __init__(self, path: str) -> None:
            assert Path(path).exists()

        def get_function(self, entry: str) -> Kernel:
            assert entry == side.entry
            return Kernel()

    class Device:
        def synchronize(self) -> None:
            pass

    cp.RawModule = Module
    cp.asarray = FakeArray
    cp.asnumpy = lambda a: np.array(a.data, copy=True)
    cp.cuda = types.SimpleNamespace(
        Device=Device,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"Fake GPU"}),
    )
    return cp


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("variants")
    return bench.prepare_file_gpu(
        "examples/softcap_attention.mlir", None, None, {}, "sm_80", directory, seed=3, log=lambda _: None
    )


def _writer(offset: float) -> Callable[[runner.Sidecar, list[FakeArray]], None]:
    """A kernel that writes the interpretation's same-dtype result plus `offset`."""

    def write(side: runner.Sidecar, params: list[FakeArray]) -> None:
        _, refs = runner.file_inputs(side)
        for a, p in zip(side.args, params, strict=True):
            if a.role == "output":
                value = refs[a.name][1] + offset
                p.data[...] = value.astype(runner.numpy_dtype(a.dtype)).view(p.data.dtype)

    return write


def test_prepared_file_kernel_carries_inputs_and_references(prepared: Path) -> None:
    side = runner.load_sidecar(prepared)
    ref = side.problem["reference"]
    assert (prepared.parent / ref["arrays"]).exists() and (prepared.parent / ref["xla"]).stat().st_size > 100
    host, refs = runner.file_inputs(side)
    inputs = [host[a.name] for a in side.args if a.role == "input"]
    assert all(np.asarray(x, np.float32).std() > 0.5 for x in inputs)
    assert all(np.isnan(np.asarray(host[a.name], np.float32)).all() for a in side.args if a.role == "output")
    ((r64, same),) = refs.values()
    assert r64.dtype == np.float32 and 0 < np.abs(r64 - np.asarray(same, np.float32)).max() < 0.05


@pytest.mark.parametrize(("offset", "passes"), [(0.0, True), (0.05, False)])
def test_file_kernel_is_judged_and_timed(
    prepared: Path, monkeypatch: pytest.MonkeyPatch, offset: float, passes: bool
) -> None:
    side = runner.load_sidecar(prepared)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(_writer(offset), side))
    report = runner.run(prepared, repeats=3, warmup=1)
    assert report["passed"] is passes, report["errors"]
    assert report["device"] == "Fake GPU" and set(report["median_ms"]) >= {"napkin", "xla"}
    assert report["ratio_to_xla"] > 0


def test_jsonl_resumes_after_a_crash(prepared: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    side = runner.load_sidecar(prepared)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(_writer(0.0), side))
    log = tmp_path / "run.jsonl"
    log.write_text(json.dumps({"sidecar": "gone.cubin.json", "started": True}) + "\n")
    assert runner.main([str(prepared), "--jsonl", str(log), "--repeats", "0"]) == 1  # the crash counts
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"sidecar": "gone.cubin.json", "passed": False, "crashed": True} in records
    assert any(r.get("sidecar") == str(prepared) and r.get("passed") for r in records)
    assert records[-1] == {"all_done": True}
    before = log.read_text()
    runner.main([str(prepared), "--jsonl", str(log), "--repeats", "0"])
    after = log.read_text()[len(before) :].splitlines()
    assert after == [json.dumps({"all_done": True})], "a kernel already reported runs again"


def test_backward_kernels_are_timed_beside_jax_whole_backward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`napkin bench FILE --grad` of plain attention marks each backward kernel with the
    forward's Q, K, V and scale (`backward_of`); the runner times JAX's whole backward (dQ, dK
    and dV by jax.vjp of dot_product_attention) beside it: XLA's here, cuDNN's on a GPU."""
    from conftest import run_cli_in_process

    r = run_cli_in_process(
        "napkin", "bench", "examples/softmax_attention_by_hand.mlir", "--grad", "--target", "gpu",
        "--prepare", str(tmp_path), "--arch", "sm_80", "--dims", "q=24,x=19",
    )  # fmt: skip
    assert r.rc == 0, r.describe()
    marked = {}
    for path in tmp_path.glob("*.cubin.json"):
        problem = json.loads(path.read_text())["problem"]
        marked[path.name.split("-")[0]] = problem.get("backward_of")
    forward = "softmax_attention_by_hand"
    assert marked[forward] is None and marked[f"{forward}_vjp_dQ"]["role"] == "dQ"
    assert marked[f"{forward}_vjp_dQ"]["q"] == "Q" and marked[f"{forward}_vjp_dK_dV"]["role"] == "dK_dV"
    dq = next(tmp_path.glob(f"{forward}_vjp_dQ-*.cubin.json"))
    side = runner.load_sidecar(dq)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(_writer(0.0), side))
    report = runner.run(dq, repeats=2, warmup=1)
    assert report["passed"], report["errors"]
    assert {"napkin", "xla", "xla_backward"} <= set(report["median_ms"])
    assert report["tflops_backward"]["xla_backward"] > 0 and report["backward_flops"] == 2.5 * 4 * 2 * 24 * 19 * 16
