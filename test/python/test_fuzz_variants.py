"""Attention variants for fuzzing the tensor-core rules (`generator.generate_variant`).

Over many seeds the generator draws every kind of score op (soft caps, unary functions,
tables over subsets of (b, h, q, x), maps, masks of each kind) and of output op (scales,
unary functions, gates), in shapes for the mma.sync rule (head dims 16 to 64, odd lengths)
and for the wgmma rule (d = 64, lengths from 64); every variant passes `napkin-verify`. A
few, drawn from the test's seed, go through `napkin emulate --kernel tensorcore` (and wgmma
where the shape fits) and pass against their own interpretation. The campaign makes a share
of its diagrams variants, decided by the seed alone.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from mlir import ir

from napkin_mlir.fuzz.campaign import Campaign, Settings
from napkin_mlir.fuzz.generator import generate_variant
from napkin_mlir.fuzz.spec import MASK_KINDS, build_module, render
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.verifier import verify_napkin


def test_variants_cover_every_kind_of_op_and_both_rules_shapes() -> None:
    kinds: Counter[str] = Counter()
    hopper = 0
    for seed in range(300):
        spec = generate_variant(seed)
        assert [i.axes for i in spec.inputs[:3]] == [["b", "h", "q", "d"], ["b", "h", "x", "d"], ["b", "h", "x", "d"]]
        hopper += spec.sizes["d"] == 64 and spec.sizes["q"] >= 64 and spec.sizes["x"] >= 64
        kinds.update(op.kind if op.kind != "unary" else f"unary {op.fn}" for op in spec.ops)
        kinds.update(f"mask {op.mask}" for op in spec.ops if op.kind == "mask")
    for kind in ("map", "binary", "unary tanh", "unary gelu", "scale", *(f"mask {k}" for k in MASK_KINDS)):
        assert kinds[kind] > 0, kinds
    assert 50 < hopper < 200


@pytest.mark.parametrize("seed_offset", range(0, 40, 8))
def test_variants_pass_napkin_verify(seed_offset: int) -> None:
    with napkin_context(), ir.Location.unknown():
        for seed in range(seed_offset, seed_offset + 8):
            module = build_module(generate_variant(seed))
            assert not verify_napkin(module.operation), seed


@pytest.mark.parametrize("draw", range(3))
def test_drawn_variants_pass_on_the_tensor_core_rules(draw: int, seed: int, tmp_path: Path, run_cli) -> None:
    spec = generate_variant(seed % 10_000 + 7919 * draw)
    path = tmp_path / "variant.mlir"
    path.write_text(render(spec))
    rules = [("tensorcore", "sm_80")]
    if spec.sizes["d"] == 64 and spec.sizes["q"] >= 64 and spec.sizes["x"] >= 64:
        rules.append(("wgmma", "sm_90a"))
    for kernel, target in rules:
        result = run_cli("napkin", "emulate", str(path), "--kernel", kernel, "--target", target, "--seed", "3")
        last = result.last_line()
        if result.rc != 0 and "error:" in result.stderr and "emulator has no rule" not in result.stderr:
            assert len([ln for ln in result.stderr.splitlines() if ln.startswith("error:")]) == 1
            continue  # a refusal by name (the shape or an op the rule does not take)
        assert result.rc == 0 and last.startswith("PASS"), result.describe()


def test_the_campaign_makes_a_fifth_of_its_diagrams_variants(tmp_path: Path) -> None:
    campaign = Campaign(Settings(seed=5, out=tmp_path, variants=0.2), log=lambda _: None)
    share = sum(campaign.is_variant(campaign.diagram_seed(i)) for i in range(2000)) / 2000
    assert 0.17 < share < 0.23


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_an_interrupted_campaign_writes_its_counts(tmp_path: Path, stop: str) -> None:
    """Ctrl-C (SIGINT) or SIGTERM ends a campaign early with its counts in summary.json; SIGINT
    also when the campaign started with it ignored, as a shell starts a background job."""
    import json
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "fuzz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "napkin_mlir.fuzz", "--seconds", "600", "--seed", "3", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    started = time.monotonic()
    while not (out / "work").exists() and time.monotonic() - started < 120:  # the campaign has begun
        time.sleep(0.5)
    time.sleep(5)
    proc.send_signal(getattr(signal, stop))
    stdout, stderr = proc.communicate(timeout=300)
    assert "interrupted" in stdout and "Traceback" not in stderr, stdout + stderr
    counts = json.loads((out / "summary.json").read_text())["counts"]
    assert counts["diagrams"] >= 1
