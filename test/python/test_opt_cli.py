"""napkin-opt run as a subprocess, the way lit and users run it.

Good input exits 0 and prints MLIR that reads back to the same text. Bad input exits 1 with
`error: <file>:<line>:<col>: <message>` on stderr; bad command lines (unknown flag or pass, bad
pass options, unreadable input) exit 2; never a Python traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, CliResult, cli_command

MATMUL = """\
func.func @matmul(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<8x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<8x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}>
  return %0 : tensor<4x6xf32, {axes = ["m", "n"]}>
}
"""

BAD_AXIS = MATMUL.replace("tensor<8x6xf32", "tensor<9x6xf32")


def opt(*args: str, stdin: str | None = None) -> CliResult:
    proc = subprocess.run(
        [*cli_command("napkin-opt"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_error(r: CliResult, rc: int, *mentions: str) -> None:
    assert r.rc == rc, r.describe()
    assert "Traceback" not in r.stdout + r.stderr, r.describe()
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert errors, r.describe()
    for text in mentions:
        assert any(text in ln for ln in errors), f"no error line mentions {text!r}\n{r.describe()}"


@pytest.fixture
def matmul(tmp_path: Path) -> Path:
    path = tmp_path / "matmul.mlir"
    path.write_text(MATMUL)
    return path


def test_list_passes() -> None:
    r = opt("--list-passes")
    assert r.rc == 0, r.describe()
    assert "--napkin-verify" in r.stdout
    assert "check axis names" in r.stdout


def test_round_trip_is_stable(matmul: Path) -> None:
    first = opt(str(matmul))
    assert first.rc == 0, first.describe()
    assert '"napkin.contract"' in first.stdout
    second = opt("-", stdin=first.stdout)
    assert second.rc == 0, second.describe()
    assert second.stdout == first.stdout


def test_pipeline_with_napkin_and_upstream_passes(matmul: Path) -> None:
    r = opt(str(matmul), "--pass-pipeline=builtin.module(napkin-verify,canonicalize,func.func(cse))")
    assert r.rc == 0, r.describe()
    assert '"napkin.contract"' in r.stdout


def test_output_file(matmul: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mlir"
    r = opt(str(matmul), "-o", str(out), "--napkin-verify")
    assert r.rc == 0, r.describe()
    assert r.stdout == ""
    assert '"napkin.contract"' in out.read_text()


def test_malformed_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.mlir"
    path.write_text("func.func @f() {\n  %0 = frob\n}\n")
    r = opt(str(path))
    assert_error(r, 1, f"{path}:2:8:")


def test_verifier_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bad_axis.mlir"
    path.write_text(BAD_AXIS)
    r = opt(str(path))
    assert_error(r, 1, f"{path}:2:8: 'napkin.contract' op axis 'k' has size 8 in lhs but 9 in rhs")
    assert r.stdout == ""


def test_stdin_errors_name_stdin() -> None:
    r = opt(stdin=BAD_AXIS)
    assert_error(r, 1, "<stdin>:2:8:")


def test_garbage_input_never_tracebacks() -> None:
    for junk in ["\x00\x01\x02", "}}}}", '"napkin.contract"(', "module {", "// -----\n// -----"]:
        r = opt("--split-input-file", stdin=junk)
        assert "Traceback" not in r.stdout + r.stderr, r.describe()
        assert r.rc in (0, 1), r.describe()


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert_error(opt(str(tmp_path / "nope.mlir")), 2, "cannot read")


def test_unknown_flag_is_a_usage_error(matmul: Path) -> None:
    assert_error(opt(str(matmul), "--no-such-flag"), 2, "unrecognized arguments: --no-such-flag")


def test_unknown_pass_is_a_usage_error(matmul: Path) -> None:
    r = opt(str(matmul), "--pass-pipeline=builtin.module(napkin-verify,napkin-frobnicate)")
    assert_error(r, 2, "unknown pass 'napkin-frobnicate'")


@pytest.mark.parametrize(
    ("pipeline", "mentions"),
    [
        ("napkin-group-partition{axes=m sizes=two}", "bad value 'two' for option 'sizes': expected an integer"),
        ("napkin-group-partition{colour=red}", "pass 'napkin-group-partition' has no option 'colour'"),
        ("napkin-group-partition{level}", "option 'level' needs a value"),
        ("napkin-group-partition{axes=m axes=n}", "option 'axes' given twice"),
        ("napkin-stream-partition{online=maybe}", "bad value 'maybe' for option 'online': expected true or false"),
        ("napkin-verify{strict=1}", "pass 'napkin-verify' has no option 'strict'"),
        ("napkin-verify{", "unbalanced '{'"),
        ("builtin.module(cse", "missing ')'"),
        ("cse,,cse", "expected a pass name"),
        ("canonicalize{no-such-option=1}", "no such option no-such-option"),
        ("func.func(napkin-verify)", "cannot be nested"),
    ],
)
def test_pipeline_option_errors(matmul: Path, pipeline: str, mentions: str) -> None:
    assert_error(opt(str(matmul), f"--pass-pipeline={pipeline}"), 2, mentions)


def test_pass_flag_options(matmul: Path) -> None:
    r = opt(str(matmul), "--napkin-group-partition=axes=m sizes=2")
    assert r.rc == 0, r.describe()
    assert '"napkin.group"' in r.stdout and "sizes = array<i64: 2>" in r.stdout
    assert_error(opt(str(matmul), "--napkin-group-partition=sizes=x"), 2, "option 'sizes'")


def test_failing_pass_reports_the_pass(matmul: Path) -> None:
    r = opt(str(matmul), "--napkin-group-partition=axes=z sizes=2")
    assert_error(r, 1, "napkin-group-partition", "unknown axis 'z'")


def test_verify_diagnostics(tmp_path: Path) -> None:
    good = tmp_path / "good.mlir"
    good.write_text("// expected-error @+2 {{axis 'k' has size 8 in lhs but 9 in rhs}}\n" + BAD_AXIS)
    assert opt(str(good), "--verify-diagnostics").rc == 0
    wrong = tmp_path / "wrong.mlir"
    wrong.write_text("// expected-error @+2 {{some other message}}\n" + BAD_AXIS)
    r = opt(str(wrong), "--verify-diagnostics")
    assert_error(r, 1, 'expected error "some other message" was not produced', "unexpected error")


def test_split_input_file_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "split.mlir"
    path.write_text(MATMUL + "// -----\n" + BAD_AXIS)
    r = opt(str(path), "--split-input-file")
    assert_error(r, 1, f"{path}:7:8:")
    assert r.stdout.count("func.func @matmul") == 1  # the good chunk is still printed


def test_dump_dir(matmul: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    r = opt(str(matmul), "--pass-pipeline=builtin.module(napkin-verify,canonicalize)", "--dump-dir", str(dump))
    assert r.rc == 0, r.describe()
    assert sorted(p.name for p in dump.iterdir()) == ["00-input.mlir", "01-napkin-verify.mlir", "02-canonicalize.mlir"]


def test_print_ir_after_all(matmul: Path) -> None:
    r = opt(str(matmul), "--napkin-verify", "--cse", "--mlir-print-ir-after-all")
    assert r.rc == 0, r.describe()
    assert "// -----// IR Dump After napkin-verify (napkin-verify) //----- //" in r.stderr
    assert "// -----// IR Dump After CSE (cse) //----- //" in r.stderr
