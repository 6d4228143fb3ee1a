"""Shared pieces of the command-line drivers: argument parsing and clean error exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.knobs import knobs


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors print `error: ...` and exit 2 like every other error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n(see '{self.prog} --help')\n")
        raise SystemExit(2)


def parse_sizes(text: str, flag: str) -> dict[str, int]:
    """`m=300,n=200` -> {"m": 300, "n": 200}; UsageError naming the bad piece."""
    sizes: dict[str, int] = {}
    for piece in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = piece.partition("=")
        name = name.strip()
        if not eq or not name.strip().isidentifier():
            raise UsageError(f"{flag}: expected axis=size pairs like m=300,n=200, got '{piece}'")
        try:
            size = int(value)
        except ValueError:
            raise UsageError(f"{flag}: size of axis '{name}' must be an integer, got '{value}'") from None
        if size <= 0:
            raise UsageError(f"{flag}: size of axis '{name}' must be positive, got {size}")
        if name in sizes:
            raise UsageError(f"{flag}: axis '{name}' given twice")
        sizes[name] = size
    if not sizes:
        raise UsageError(f"{flag}: no sizes given")
    return sizes


def run_main(body: Callable[[], int]) -> NoReturn:
    """Run a CLI body; NapkinError -> `error: ...` and its exit code, never a traceback."""
    try:
        code = body()
    except NapkinError as err:
        sys.stderr.write(f"error: {err}\n")
        code = err.exit_code
    except MemoryError:
        sys.stderr.write("error: out of memory (the problem is too large for this machine)\n")
        code = 1
    except Exception:  # an internal error: one line, unless NAPKIN_DEBUG asks for the traceback
        if knobs().debug:
            raise
        err = sys.exc_info()[1]
        sys.stderr.write(f"error: internal error: {type(err).__name__}: {err} (NAPKIN_DEBUG=1 shows the traceback)\n")
        code = 70
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        code = 130
    except BrokenPipeError:
        code = 0
    sys.stdout.flush()
    raise SystemExit(code)
