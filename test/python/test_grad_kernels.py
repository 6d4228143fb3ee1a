"""The backward pass as GPU kernels: every diagram of the differentiated program (the forward
with its residuals, FlashAttention-2's pre-pass, the dQ and the dK/dV diagrams) compiled to a
kernel and emulated against its own diagram's interpretation (`napkin emulate ... --grad`),
and prepared with its references for the GPU runner (`napkin bench FILE --grad --target gpu
--prepare DIR`). That the diagrams compose to jax.vjp of the forward is test_gradients.py's.

The good runs need only what the commands compute and print: their main() is called in this
process (`run_cli_in_process`); the refusals exit 2 with an `error:` line in a subprocess."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import CliResult, run_cli_in_process

from napkin_mlir.backends.gpu.runner import file_inputs, judge, load_sidecar

KERNELS = ["attention", "attention_vjp_pre", "attention_vjp_dQ", "attention_vjp_dK_dV"]


def test_emulate_grad_runs_every_backward_kernel(seed: int) -> None:
    r = run_cli_in_process(
        "napkin",
        "emulate",
        "attention",
        "--dims",
        "b=1,h=2,q=20,x=17,d=8",
        "--dtype",
        "bf16",
        "--causal",
        "--grad",
        "--seed",
        str(seed % 1000),
    )
    assert r.rc == 0, r.describe()
    sections = [ln.removeprefix("== ") for ln in r.stdout.splitlines() if ln.startswith("== ")]
    assert sections == KERNELS
    verdicts = [ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith(("PASS max", "FAIL"))]
    assert len(verdicts) == len(KERNELS) and all(v.startswith("PASS") for v in verdicts), r.stdout
    assert r.last_line().startswith("PASS: every kernel")


def test_bench_grad_prepares_each_kernel_with_references(tmp_path: Path) -> None:
    r = run_cli_in_process(
        "napkin",
        "bench",
        "examples/softcap_attention.mlir",
        "--grad",
        "--target",
        "gpu",
        "--prepare",
        str(tmp_path),
        "--arch",
        "sm_80",
        "--dims",
        "q=24,x=19",
    )
    assert r.rc == 0, r.describe()
    names = sorted(p.name.removesuffix(".cubin.json") for p in tmp_path.glob("*.cubin.json"))
    stems = ["softcap_" + k for k in KERNELS]
    assert names == sorted(f"{s}-q24-x19" for s in stems)
    for path in tmp_path.glob("*.cubin.json"):
        side = load_sidecar(path)
        assert side.binary.exists() and side.problem["dims"]["q"] == 24
        assert json.loads(path.read_text())["ptxas"]["spill_stores_bytes"] == 0
        host, refs = file_inputs(side)
        for r64, same in refs.values():  # the shipped references agree with each other by the rule
            assert judge(same, r64, same, "bf16")[0]
        outputs = [a for a in side.args if a.role == "output"]
        assert outputs and all(host[a.name].shape == a.shape for a in outputs)


def test_grad_needs_a_file_on_the_gpu(run_cli: Callable[..., CliResult]) -> None:
    r = run_cli("napkin", "bench", "attention", "--grad", "--target", "gpu", "--prepare", "/tmp/x")
    assert r.rc == 2 and r.stderr.startswith("error:") and "--grad" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("napkin", "bench", "examples/softcap_attention.mlir", "--grad")
    assert r.rc == 2 and "--target gpu" in r.stderr and "Traceback" not in r.stderr


def test_draw_grad_draws_each_derived_backward_diagram(tmp_path: Path) -> None:
    out = tmp_path / "bwd.svg"
    r = run_cli_in_process(
        "napkin",
        "draw",
        "attention",
        "--grad",
        "--stage",
        "partitioned",
        "--dims",
        "b=1,h=2,q=64,x=64,d=16",
        "-o",
        str(out),
    )
    assert r.rc == 0, r.describe()
    pictures = {p.name: p.read_text() for p in tmp_path.glob("bwd-*.svg")}
    assert sorted(pictures) == sorted(f"bwd-{k}.svg" for k in KERNELS)
    # dK/dV: grouped over key tiles, streaming the queries (FlashAttention-2's backward)
    assert "stream partition  q:" in pictures["bwd-attention_vjp_dK_dV.svg"].replace("&#160;", " ")


def test_model_and_pseudocode_grad_price_each_backward_kernel() -> None:
    """`napkin model --grad` derives and prices each diagram of the differentiated program and
    sums the backward against the forward: with FlashAttention-2's D = rowsum(dO*O) the split
    dQ and dK/dV kernels recompute S and dP each, 7 matmuls against the forward's 2 (3.5x); and
    the model says why dQ is a kernel of its own rather than accumulated by the dK/dV kernel."""
    dims = "b=1,h=16,q=2048,x=2048,d=128"
    r = run_cli_in_process(
        "napkin", "model", "examples/softcap_attention.mlir", "--grad", "--rowsums", "output", "--dims", dims
    )
    assert r.rc == 0, r.describe()
    assert [ln[3:] for ln in r.stdout.splitlines() if ln.startswith("== ")] == ["softcap_" + k for k in KERNELS]
    total = next(ln for ln in r.stdout.splitlines() if ln.startswith("backward ("))
    ratio = float(total.split("FLOPs, ")[1].split("x")[0])
    assert 3.3 < ratio < 3.7, total
    # dQ's kernel against accumulating dQ in the dK/dV kernel (FlashAttention-2's atomic adds)
    choice = r.last_line()
    assert choice.startswith("dQ: a kernel of its own: its kernel "), choice
    separate, accumulated = (float(choice.split(part)[1].split(" us")[0]) for part in ("its kernel ", "dK/dV kernel "))
    assert 0 < separate < accumulated and "GB of f32 read-modify-write" in choice
    p = run_cli_in_process("napkin", "pseudocode", "examples/softcap_attention.mlir", "--grad")
    assert p.rc == 0, p.describe()
    headers = [ln for ln in p.stdout.splitlines() if ln.startswith("// == ")]
    assert headers == [f"// == softcap_{k}" for k in KERNELS] and "for q0 in" in p.stdout


def test_emulate_grad_kernels_selects_by_role_on_the_tensor_cores(seed: int, run_cli: Callable[..., CliResult]) -> None:
    """`--grad-kernels forward,dQ`: the forward with its log-sum-exp and dQ, both through the
    tensor-core rule (`--kernel tensorcore` refuses rather than falls back)."""
    r = run_cli_in_process(
        "napkin", "emulate", "attention", "--grad", "--grad-kernels", "forward,dQ", "--rowsums", "output",
        "--kernel", "tensorcore", "--dims", "b=1,h=2,q=40,x=45,d=32", "--dtype", "bf16", "--causal",
        "--seed", str(seed % 1000),
    )  # fmt: skip
    assert r.rc == 0, r.describe()
    sections = [ln.removeprefix("== ") for ln in r.stdout.splitlines() if ln.startswith("== ")]
    assert sections == ["attention", "attention_vjp_dQ"]
    kernels = [ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith("kernel: ")]
    assert len(kernels) == 2 and all(k.startswith("kernel: mma-sync") for k in kernels), r.stdout
    bad = run_cli("napkin", "emulate", "attention", "--grad", "--grad-kernels", "dq", "--dims", "b=1,h=1,q=8,x=8,d=8")
    assert bad.rc == 2 and bad.stderr.startswith("error: --grad-kernels") and "Traceback" not in bad.stderr
