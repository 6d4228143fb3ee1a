"""The tensor-core peak of each instruction family (napkin_mlir.model.hardware) and the cost
model's use of it: Hopper's warp-level mma.sync runs well below the wgmma datasheet peak
(Luo et al., arXiv 2402.13499), so the mma.sync mapping that `napkin compile` emits is priced
at the mma.sync rate, while Ampere, whose native family mma.sync is, keeps its figures."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import run_cli_in_process

from napkin_mlir.derive.tiles import choose_tiles, partitioned
from napkin_mlir.errors import UsageError
from napkin_mlir.model import hardware
from napkin_mlir.model.cost import evaluate

#: The attention problem the README quotes: b=4, h=16, q=x=4096, d=128, bf16.
DIMS = {"b": 4, "h": 16, "q": 4096, "x": 4096, "d": 128}
HOPPER = ("h100", "h200")


@pytest.mark.parametrize("name", HOPPER)
def test_hopper_mma_sync_peak_is_below_the_wgmma_peak(name: str) -> None:
    hw = hardware.gpu(name)
    assert hw.instructions == ("wgmma", "mma.sync")
    assert hw.instruction_family() == "wgmma"
    for dt in ("bf16", "f16", "tf32"):
        wgmma = hw.peak(dt, "wgmma")
        assert hw.peak(dt) == wgmma  # the native family is the default
        assert hw.peak(dt, "mma.sync") == pytest.approx(0.629 * wgmma, rel=1e-3)
    assert hw.peak("bf16", "mma.sync") == pytest.approx(622.3e12)
    # f32 and f64 run on the CUDA cores: one rate whatever the family
    for dt in ("f32", "f64"):
        assert hw.peak(dt, "mma.sync") == hw.peak(dt, "wgmma") == hw.peak(dt)
        assert hw.contraction_unit(dt, "mma.sync") == "CUDA cores"
    assert hw.contraction_unit("bf16", "mma.sync") == "mma.sync"


def test_ampere_mma_sync_is_its_native_family() -> None:
    hw = hardware.gpu("a100")
    assert hw.instructions == ("mma.sync",)
    for dt in ("bf16", "f16", "tf32", "f32"):
        assert hw.peak(dt, "mma.sync") == hw.peak(dt)
    assert hw.peak("bf16", "mma.sync") == 312e12


def test_unknown_or_absent_families_are_refused() -> None:
    h100, a100 = hardware.gpu("h100"), hardware.gpu("a100")
    with pytest.raises(UsageError, match=r"unknown tensor-core instruction family 'hmma' \(expected one of wgmma"):
        h100.peak("bf16", "hmma")
    with pytest.raises(UsageError, match="unknown tensor-core instruction family"):
        a100.instruction_family("mma")
    with pytest.raises(UsageError, match=r"A100.*has no wgmma"):
        a100.peak("bf16", "wgmma")
    with pytest.raises(UsageError, match=r"no fp8 tensor cores through mma\.sync"):
        h100.peak("fp8", "mma.sync")
    with pytest.raises(UsageError, match="no fp8 tensor cores"):
        a100.peak("fp8", "mma.sync")
    assert h100.peak("fp8") == pytest.approx(1978.9e12)


@pytest.mark.parametrize("name", ["a100", *HOPPER])
def test_family_entries_cite_their_sources(name: str) -> None:
    """Every family entry has a source; Hopper's mma.sync rates name the microbenchmark paper
    and say that they are derived from its measured ratio (or that no rate exists)."""
    hw = hardware.gpu(name)
    data = json.loads((hardware.DATA_DIR / f"{name}.json").read_text())["entries"]
    assert hw.source("tensor_instructions").strip()
    mma_sync = {k: e for k, e in data.items() if k.startswith("peak_mma_sync_")}
    if name == "a100":
        assert not mma_sync  # the native family: the peak_* entries are mma.sync's
        return
    assert set(mma_sync) == {"peak_mma_sync_fp16", "peak_mma_sync_bf16", "peak_mma_sync_tf32", "peak_mma_sync_fp8"}
    for key, entry in mma_sync.items():
        assert "Luo et al." in entry["source"] and "2402.13499" in entry["source"], key
        assert entry["source"].startswith("derived" if entry["value"] is not None else "no rate"), key
        if entry["value"] is not None:
            assert "0.629" in entry["source"] and "62.9%" in entry["source"], key


@pytest.fixture(scope="module")
def choices() -> dict[tuple[str, bool], object]:
    """The model's tile choice for the attention problem, generic and with the mma.sync mapping."""
    return {
        (g, tc): choose_tiles("attention", DIMS, "bf16", g, tensor_cores=tc)
        for g in ("a100", "h100")
        for tc in (False, True)
    }


def test_mma_sync_attention_on_hopper_is_priced_at_the_mma_sync_peak(choices) -> None:
    """With `tensor_cores` (the mma.sync kernel) the prediction on an H100 stays under the
    mma.sync peak and far under the generic estimate at the wgmma peak (959 TFLOP/s); the
    tensor term is the one at the wgmma peak scaled by the ratio of the peaks."""
    h100 = hardware.gpu("h100")
    generic, mma = choices[("h100", False)].report, choices[("h100", True)].report
    assert (generic.tensor_instruction, generic.tensor_peak) == ("wgmma", h100.peak("bf16"))
    assert (mma.tensor_instruction, mma.tensor_peak) == ("mma.sync", h100.peak("bf16", "mma.sync"))
    assert generic.achieved_tflops == pytest.approx(959.4, rel=1e-3)
    assert mma.achieved_tflops < h100.peak("bf16", "mma.sync") / 1e12
    assert mma.achieved_tflops < 0.75 * generic.achieved_tflops

    # both ways: the same program on an H100 whose mma.sync ran at the wgmma peak
    fast = dataclasses.replace(
        h100, entries={**h100.entries, "peak_mma_sync_bf16": h100.peak("bf16")}, sources=h100.sources
    )
    prog = partitioned("attention", DIMS, choices[("h100", True)].tiles, "bf16")
    slow = evaluate(prog, h100, tensor_cores=True, stages=mma.stages)
    quick = evaluate(prog, fast, tensor_cores=True, stages=mma.stages)
    assert slow.times["tensor"] == pytest.approx(quick.times["tensor"] * 989.4 / 622.3, rel=1e-9)


def test_ampere_figures_are_unchanged(choices) -> None:
    """On an A100 mma.sync is the native family: the mapping and the generic estimate price
    contractions at the same 312 TFLOP/s, and the predictions are those the model gave before
    the families existed (287.1 and 295.8 TFLOP/s)."""
    generic, mma = choices[("a100", False)].report, choices[("a100", True)].report
    assert generic.tensor_instruction == mma.tensor_instruction == "mma.sync"
    assert generic.tensor_peak == mma.tensor_peak == 312e12
    assert mma.achieved_tflops == pytest.approx(287.1457509416785, rel=1e-9)
    assert generic.achieved_tflops == pytest.approx(295.82222222222225, rel=1e-9)


def test_napkin_model_names_the_family_and_its_peak() -> None:
    args = ("napkin", "model", "attention", "--gpu", "h100", "--dtype", "bf16", "--dims", "b=1,h=4,q=1024,x=1024,d=64")
    out = run_cli_in_process(*args)
    assert out.rc == 0, out.describe()
    assert "contractions: wgmma at 989.4 TFLOP/s (bf16 dense peak on h100)" in out.stdout
    out = run_cli_in_process(*args, "--tensor-cores", "--json")
    assert out.rc == 0, out.describe()
    data = json.loads(out.stdout)
    assert data["tensor_instruction"] == "mma.sync" and data["tensor_peak"] == pytest.approx(622.3e12)
    out = run_cli_in_process(*args[:6], "fp8", *args[7:], "--tensor-cores")
    assert out.rc == 2 and "no fp8 tensor cores through mma.sync" in out.stderr
