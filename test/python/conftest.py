"""Shared fixtures for the Python tests.

* `seed`: a seed of its own for every test (derived from the test's id, so a failure
  reproduces by rerunning the same test; set NAPKIN_TEST_SEED=N to draw other inputs).
* `run_cli(program, *args, timeout=...)`: run one of the installed command-line drivers in
  a subprocess and return a `CliResult(rc, stdout, stderr)`. Subprocesses keep a crash or
  abort in the MLIR bindings from taking the test session down.
* `run_cli_in_process(program, *args)`: the same driver's `main` called in this process (the
  repository root as working directory, stdout and stderr captured), for tests that need only
  what a good run computes and prints: it saves the interpreter start and the imports of a
  subprocess. Tests of the process itself (exit codes of bad input, `error:` lines, no
  traceback) keep `run_cli`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Module run with `python -m` when the console script is not installed next to the interpreter.
_MODULES = {"napkin": "napkin_mlir.cli.napkin", "napkin-opt": "napkin_mlir.cli.opt"}


@dataclass(frozen=True)
class CliResult:
    rc: int
    stdout: str
    stderr: str

    def __iter__(self):  # allows `rc, out, err = run_cli(...)`
        return iter((self.rc, self.stdout, self.stderr))

    def last_line(self) -> str:
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def describe(self) -> str:
        """For assertion messages: everything the command printed."""
        return f"exit code {self.rc}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def cli_command(program: str) -> list[str]:
    """argv prefix that runs `program` with this test session's interpreter and packages."""
    script = Path(sys.executable).parent / program
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", _MODULES[program]]


def run_cli_process(program: str, *args: str, timeout: float = 120, cwd: Path | None = None) -> CliResult:
    proc = subprocess.run(
        [*cli_command(program), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    return run_cli_process


def _main_of(program: str) -> Callable[[list[str]], None]:
    if program == "napkin":
        from napkin_mlir.cli.napkin import main
    elif program == "napkin-opt":
        from napkin_mlir.cli.opt import main
    else:
        raise ValueError(f"unknown program {program!r}")
    return main


def run_cli_in_process(program: str, *args: str) -> CliResult:
    """`program`'s main(args) in this process, run from the repository root like `run_cli`;
    the exit code is the SystemExit code (0 when main returns)."""
    main = _main_of(program)
    out, err = io.StringIO(), io.StringIO()
    cwd = Path.cwd()
    os.chdir(REPO_ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
                rc = 0
            except SystemExit as done:
                code = done.code
                rc = code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        os.chdir(cwd)
    return CliResult(rc, out.getvalue(), err.getvalue())


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A seed that differs between tests (and between parametrisations of one test)."""
    offset = int(os.environ.get("NAPKIN_TEST_SEED", "0"))
    return (zlib.crc32(request.node.nodeid.encode()) + offset) % (2**31)


def has_gpu() -> bool:
    """True when CuPy is installed and sees a CUDA device (GPU tests skip otherwise)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
