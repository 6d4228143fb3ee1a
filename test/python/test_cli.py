"""The `napkin` command line, run as a subprocess the way a user runs it.

A good run ends with a line starting with PASS and exits 0. Every bad input exits non-zero
with a line starting with `error:` on stderr and no Python traceback; command-line usage
errors exit 2.
"""

from __future__ import annotations

import json

import pytest
from conftest import CliResult


def assert_clean_error(r: CliResult, rc: int | None = 2, mentions: str | None = None) -> None:
    """Non-zero exit (exactly `rc` when given), an `error:` line on stderr, no traceback."""
    assert r.rc != 0, r.describe()
    if rc is not None:
        assert r.rc == rc, r.describe()
    assert "Traceback" not in r.stderr + r.stdout, r.describe()
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors, f"no line starting with 'error:' on stderr\n{r.describe()}"
    if mentions is not None:
        assert any(mentions in ln for ln in errors), f"expected an error mentioning {mentions!r}\n{r.describe()}"
    assert not r.last_line().startswith("PASS"), r.describe()


def test_verify_matmul_passes(run_cli, seed: int) -> None:
    r = run_cli("napkin", "verify", "matmul", "--dims", "m=300,n=200,k=100", "--seed", str(seed))
    assert r.rc == 0, r.describe()
    assert r.last_line().startswith("PASS"), r.describe()
    assert "Traceback" not in r.stderr, r.describe()


def test_verify_attention_gqa_bf16_passes(run_cli, seed: int) -> None:
    r = run_cli(
        "napkin",
        "verify",
        "attention",
        "--dims",
        "b=1,h=4,q=40,x=56,d=16",
        "--dtype",
        "bf16",
        "--causal",
        "--kv-heads",
        "2",
        "--seed",
        str(seed),
    )
    assert r.rc == 0, r.describe()
    assert r.last_line().startswith("PASS"), r.describe()


BAD_INPUTS = [
    # (id, argv after `napkin`, text the error line must contain)
    ("malformed-dims", ["verify", "matmul", "--dims", "m300"], "m300"),
    ("non-integer-size", ["verify", "matmul", "--dims", "m=3.5,n=2,k=3"], "integer"),
    ("non-integer-word", ["verify", "matmul", "--dims", "m=big,n=2,k=3"], "integer"),
    ("zero-size", ["verify", "matmul", "--dims", "m=0,n=2,k=3"], "positive"),
    ("negative-size", ["verify", "matmul", "--dims", "m=-4,n=2,k=3"], "positive"),
    ("repeated-axis", ["verify", "matmul", "--dims", "m=2,m=3,n=2,k=3"], "twice"),
    ("unknown-axis", ["verify", "matmul", "--dims", "z=3,m=2,n=2,k=3"], "'z'"),
    ("missing-axis", ["verify", "matmul", "--dims", "m=2,n=2"], "'k'"),
    ("missing-axis-attention", ["verify", "attention", "--dims", "b=1,h=2,q=4,x=4"], "'d'"),
    ("bad-dtype", ["verify", "matmul", "--dims", "m=2,n=2,k=3", "--dtype", "f8"], "f8"),
    ("unknown-diagram", ["verify", "conv2d", "--dims", "m=2,n=2,k=3"], "conv2d"),
    ("causal-on-matmul", ["verify", "matmul", "--dims", "m=2,n=2,k=3", "--causal"], "--causal"),
    ("kv-heads-on-mlp", ["verify", "mlp", "--dims", "m=2,k=2,f=2,n=2", "--kv-heads", "1"], "--kv-heads"),
    ("kv-heads-not-dividing", ["verify", "attention", "--dims", "b=1,h=6,q=4,x=4,d=4", "--kv-heads", "4"], "kv-heads"),
    ("kv-heads-zero", ["verify", "attention", "--dims", "b=1,h=2,q=4,x=4,d=4", "--kv-heads", "0"], "kv-heads"),
    ("bad-activation", ["verify", "mlp", "--dims", "m=2,k=2,f=2,n=2", "--activation", "softplus"], "softplus"),
    ("tile-larger-than-axis", ["verify", "matmul", "--dims", "m=8,n=8,k=8", "--tile", "m=40"], "m=40"),
    ("tile-not-tileable", ["verify", "matmul", "--dims", "m=8,n=8,k=8", "--tile", "b=4"], "'b'"),
    ("tile-zero", ["verify", "matmul", "--dims", "m=8,n=8,k=8", "--tile", "m=0"], "positive"),
    ("tile-malformed", ["verify", "matmul", "--dims", "m=8,n=8,k=8", "--tile", "m4"], "m4"),
    ("bad-seed", ["verify", "matmul", "--dims", "m=2,n=2,k=3", "--seed", "x"], "--seed"),
]


@pytest.mark.parametrize(("argv", "mentions"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_clean_error(run_cli, argv: list[str], mentions: str) -> None:
    assert_clean_error(run_cli("napkin", *argv, timeout=60), rc=2, mentions=mentions)


# Inputs that once ended in a Python traceback: they must give a clean error.
TRACEBACK_BUGS = [
    pytest.param(
        ["verify", "matmul", "--dims", "m=2,n=2,k=2", "--seed", "-1"],
        id="negative-seed",
    ),
    pytest.param(
        # the inputs are small (2 x 1e7 elements) but the 1e7 x 1e7 output cannot be allocated
        ["verify", "matmul", "--dims", "m=10000000,n=10000000,k=1"],
        id="output-too-large",
    ),
]


@pytest.mark.parametrize("argv", TRACEBACK_BUGS)
def test_input_that_cannot_run_is_a_clean_error(run_cli, argv: list[str]) -> None:
    assert_clean_error(run_cli("napkin", *argv, timeout=120), rc=None)


USAGE_ERRORS = [
    ("no-command", []),
    ("unknown-command", ["frobnicate"]),
    ("verify-without-diagram", ["verify"]),
    ("verify-without-dims", ["verify", "matmul"]),
    ("unknown-flag", ["verify", "matmul", "--dims", "m=2,n=2,k=3", "--no-such-flag"]),
]


@pytest.mark.parametrize("argv", [c[1] for c in USAGE_ERRORS], ids=[c[0] for c in USAGE_ERRORS])
def test_usage_error_exits_2(run_cli, argv: list[str]) -> None:
    assert_clean_error(run_cli("napkin", *argv, timeout=60), rc=2)


def test_verify_with_tiles_passes(run_cli, seed: int) -> None:
    """Tiles that do not divide the axes: partial last tiles, fully masked key chunks."""
    r = run_cli(
        "napkin", "verify", "attention", "--dims", "b=1,h=2,q=45,x=38,d=16", "--causal", "--tile", "q=16,x=8",
        "--seed", str(seed),
    )  # fmt: skip
    assert r.rc == 0, r.describe()
    assert r.last_line().startswith("PASS"), r.describe()


def test_help(run_cli) -> None:
    r = run_cli("napkin", "verify", "--help", timeout=60)
    assert r.rc == 0, r.describe()
    for flag in ("--dims", "--dtype", "--causal", "--kv-heads", "--seed"):
        assert flag in r.stdout, f"{flag} missing from --help\n{r.describe()}"


def test_demo(run_cli) -> None:
    r = run_cli("napkin", "demo", timeout=300)
    assert r.rc == 0, r.describe()
    assert "PASS" in r.stdout, r.describe()
    assert "FAIL" not in r.stdout, r.describe()
    assert "Traceback" not in r.stderr, r.describe()


def test_build_then_napkin_opt_derivation(run_cli, tmp_path) -> None:
    """`napkin build` writes the diagram; `napkin pipeline` gives the relabeling pipeline that
    napkin-opt runs on it, printing the IR after every relabeling."""
    diagram = tmp_path / "attention.mlir"
    dims = ["--dims", "b=1,h=2,q=40,x=56,d=16", "--causal"]
    r = run_cli("napkin", "build", "attention", *dims, "-o", str(diagram))
    assert r.rc == 0 and '"napkin.softmax"' in diagram.read_text(), r.describe()
    p = run_cli("napkin", "pipeline", "attention", *dims, "--tile", "q=16,x=8")
    assert p.rc == 0, p.describe()
    pipeline = p.stdout.strip()
    assert "napkin-stream-partition{axis=x size=8}" in pipeline, pipeline
    o = run_cli("napkin-opt", str(diagram), f"--pass-pipeline={pipeline}", "--mlir-print-ir-after-all")
    assert o.rc == 0, o.describe()
    for step in ("napkin-assign-levels", "napkin-group-partition", "napkin-stream-partition"):
        assert f"IR Dump After {step}" in o.stderr, o.describe()
    assert '"napkin.stream"' in o.stdout and '"napkin.softmax"' not in o.stdout, o.describe()


def test_bench_cpu_writes_json(run_cli, tmp_path) -> None:
    out = tmp_path / "bench.json"
    r = run_cli(
        "napkin",
        "bench",
        "attention",
        "--target",
        "cpu",
        "--dims",
        "b=1,h=2,q=64,x=64,d=16",
        "--repeats",
        "3",
        "-o",
        str(out),
        timeout=300,
    )
    assert r.rc == 0, r.describe()
    data = json.loads(out.read_text())
    (m,) = data["measurements"]
    assert m["napkin_median_s"] > 0 and m["reference_median_s"] > 0
    assert abs(m["ratio"] - m["napkin_median_s"] / m["reference_median_s"]) < 1e-9
    assert m["max_abs_diff"] < 1e-4, "the benchmarked kernel must agree with XLA"
    assert len(m["napkin_times_s"]) == 3 and "cpu_count" in data["machine"]
