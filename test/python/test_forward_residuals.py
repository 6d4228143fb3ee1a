"""The forward that keeps its residuals for the backward (O and the row log-sum-exp L = m + log l,
`napkin-differentiate` with FlashAttention-2's recomputation) on the tensor-core kernels.

The pass writes the softmax out as e / l of the same row max m, exponentials e and row sum l
that L is taken of, so the stream carries one running max and sum, and both tensor-core
rules write L from the kernel's own m and l (`RowOutput`): the mma.sync rule (sm_80) and
the wgmma rule (sm_90a), checked on the emulator against the forward's own interpretation at
odd sizes (causal, grouped-query), with a kernel that gets L wrong caught there, an op on a
row output that has no rule refused by name, and the kernel's registers within 10% of plain
attention's."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from napkin_mlir.backends.gpu import tensorcore_emit
from napkin_mlir.backends.gpu.sidecar import GpuKernel
from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal
from napkin_mlir.cli.compile import FileProblem, compile_file_kernel, compile_to_file
from napkin_mlir.cli.verify_grad import differentiated_files
from napkin_mlir.emulator import emulate_kernel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _quiet(line: str) -> None:
    pass


def _forward(tmp_path: Path, dims: str, causal: bool = False, kv_heads: int | None = None) -> Path:
    """The forward with its residuals of the built-in bf16 attention (`napkin verify attention
    --grad`'s first diagram), written as a file."""
    args = argparse.Namespace(
        diagram="attention",
        dims=dims,
        dtype="bf16",
        causal=causal,
        kv_heads=kv_heads,
        activation="gelu",
        tile=None,
        seed=0,
        residuals="recompute",
        rowsums="output",
        target="sm_80",
    )
    files = differentiated_files(args, False, tmp_path)
    assert files[0].name == "attention.mlir"
    return files[0]


def _kernel(path: Path, target: str, kind: str) -> tuple[GpuKernel, str]:
    kernel, text, _ = compile_file_kernel(FileProblem(str(path)), target, "gpu", kind, log=_quiet)
    assert kernel is not None and kernel.problem["kernel"] == kind
    return kernel, text


def test_the_forward_writes_the_softmax_out_with_the_statistics_of_l(tmp_path: Path) -> None:
    text = _forward(tmp_path, "b=1,h=2,q=40,x=50,d=16").read_text()
    assert '"napkin.softmax"' not in text and text.count('kind = "max"') == 1 and text.count('kind = "sum"') == 1
    assert 'result_names = ["O", "L"]' in text


@pytest.mark.parametrize(
    ("target", "kind", "causal", "kv_heads"),
    [("sm_80", "tensorcore", True, 1), ("sm_80", "tensorcore", False, None), ("sm_90a", "wgmma", True, None)],
)
def test_the_forward_with_its_log_sum_exp_passes_on_the_emulator(
    tmp_path: Path, seed: int, target: str, kind: str, causal: bool, kv_heads: int | None
) -> None:
    """O and L of causal / grouped-query attention at odd lengths, each judged against the
    forward's interpretation (L in f32 by the 1e-5 rule)."""
    path = _forward(tmp_path, "b=1,h=2,q=100,x=130,d=64", causal, kv_heads)
    kernel, text = _kernel(path, target, kind)
    assert [a.name for a in kernel.args if a.role == "output"] == ["out0", "out1"]
    report = emulate_kernel(kernel, text, seed)
    assert report.passed, report.lines()
    assert "out1: rel. Frobenius <= 1e-05" in report.criterion


def test_a_log_sum_exp_without_the_folded_scale_fails_on_the_emulator(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's row max is taken before the positive scale it folds into the exponent:
    a kernel that forgets to scale it back writes a wrong L, and the emulator says so."""
    path = _forward(tmp_path, "b=1,h=1,q=40,x=70,d=32")
    store = tensorcore_emit._AttentionKernel.store_row_outputs

    def unscaled(self: tensorcore_emit._AttentionKernel, m, total, mi, i) -> None:  # type: ignore[no-untyped-def]
        plan = self.plan
        self.plan = dataclasses.replace(plan, scale=1.0)
        try:
            store(self, m, total, mi, i)
        finally:
            self.plan = plan

    kernel, text = _kernel(path, "sm_80", "tensorcore")
    assert emulate_kernel(kernel, text, seed).passed
    monkeypatch.setattr(tensorcore_emit._AttentionKernel, "store_row_outputs", unscaled)
    kernel, text = _kernel(path, "sm_80", "tensorcore")
    report = emulate_kernel(kernel, text, seed)
    assert not report.passed and "out1" in "\n".join(report.lines())


def test_a_row_output_without_a_rule_is_refused_by_name(tmp_path: Path) -> None:
    """A row sum of O (over d, after the stream) is not an op the kernel computes per row: the
    tensor-core rule names it; `auto` falls back to the SIMT rule."""
    text = (EXAMPLES / "softmax_attention_by_hand.mlir").read_text()
    o32 = re.search(r'%8 = "napkin.contract".* -> (tensor<[^>]*>)', text).group(1)  # type: ignore[union-attr]
    o16 = re.search(r"return %9 : (tensor<[^>]*>)", text).group(1)  # type: ignore[union-attr]
    shape = re.match(r"tensor<((?:\d+x)+)", o32).group(1).split("x")[:-2]  # type: ignore[union-attr]
    row_t = f'tensor<{"x".join(shape)}xf32, {{axes = ["b", "h", "q"]}}>'
    text = text.replace(
        f"return %9 : {o16}",
        f'%10 = "napkin.reduce"(%8) {{axis = "d", kind = "sum"}} : ({o32}) -> {row_t}\n'
        f"    return %9, %10 : {o16}, {row_t}",
    ).replace(f") -> {o16} attributes", f") -> ({o16}, {row_t}) attributes")
    path = tmp_path / "rowsum.mlir"
    path.write_text(text)
    with pytest.raises(TensorCoreRefusal, match=r"'napkin\.reduce'"):
        compile_file_kernel(FileProblem(str(path)), "sm_80", "gpu", "tensorcore", log=_quiet)
    kernel, _, _ = compile_file_kernel(FileProblem(str(path)), "sm_80", "gpu", "auto", log=_quiet)
    assert kernel is not None and kernel.problem["kernel"] == "simt"


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_the_forward_with_its_log_sum_exp_keeps_plain_registers(tmp_path: Path, target: str) -> None:
    """At head dim 128 the forward that also writes L assembles without spills and within
    10% of the registers of plain attention at the same tiles."""
    dims = "b=1,h=2,q=1024,x=1024,d=128"
    path = _forward(tmp_path, dims)
    reports = []
    for name, problem in (("lse", FileProblem(str(path))), ("plain", None)):
        if problem is None:
            sizes = dict(kv.split("=") for kv in dims.split(","))
            problem = FileProblem(
                str(EXAMPLES / "softmax_attention_by_hand.mlir"),
                dims={a: int(s) for a, s in sizes.items()},
                tiles=reports[0]["problem"]["tiles"],
            )
        out = tmp_path / f"{name}.cubin"
        compile_to_file(None, target, "cubin", "tensorcore", 16, out, log=_quiet, file_problem=problem)
        reports.append(json.loads(out.with_suffix(".cubin.json").read_text()))
    lse, plain = reports
    assert lse["problem"]["tile"] == plain["problem"]["tile"]
    assert lse["ptxas"]["spill_stores_bytes"] == 0 and lse["ptxas"]["spill_loads_bytes"] == 0
    assert lse["ptxas"]["registers"] <= int(1.1 * plain["ptxas"]["registers"]), (lse["ptxas"], plain["ptxas"])
