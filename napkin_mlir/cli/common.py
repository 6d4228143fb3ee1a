"""Shared pieces of the command-line drivers: argument parsing, the problem arguments every
command takes (diagram, --dims, --dtype, ...), and clean error exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from napkin_mlir.check.harness import VerifyConfig
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.diagrams import DIAGRAMS
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


DTYPE_CHOICES = ("f32", "f16", "bf16")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh")


def _dtype(value: str) -> str:
    if value not in DTYPE_CHOICES:
        raise argparse.ArgumentTypeError(f"unsupported dtype '{value}' (expected one of {', '.join(DTYPE_CHOICES)})")
    return value


def add_problem_args(p: argparse.ArgumentParser, dims_required: bool = True) -> None:
    p.add_argument("diagram", help="built-in diagram (" + ", ".join(DIAGRAMS) + ") or a .mlir file")
    p.add_argument("--dims", required=dims_required, help="axis sizes by name, e.g. m=300,n=200,k=100")
    p.add_argument(
        "--dtype", type=_dtype, default=None, help="element type: f32, f16 or bf16 (default f32; a file: its own)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--causal", action="store_true", help="attention: causal mask")
    p.add_argument("--kv-heads", type=int, default=None, help="attention: key/value heads (grouped-query)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="gelu", help="mlp: activation (default gelu)")
    p.add_argument("--tile", default=None, help="tile sizes by axis, e.g. q=64,x=32")


def problem_config(args: argparse.Namespace) -> VerifyConfig:
    if args.diagram not in DIAGRAMS:
        raise UsageError(f"unknown diagram '{args.diagram}' (expected one of {', '.join(DIAGRAMS)})")
    if args.diagram != "attention" and (args.causal or args.kv_heads is not None):
        raise UsageError("--causal and --kv-heads apply to attention only")
    tiles = parse_sizes(args.tile, "--tile") if args.tile else {}
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    if not args.dims:
        raise UsageError(f"{args.diagram}: --dims is required for a built-in diagram")
    return VerifyConfig(
        diagram=args.diagram,
        dims=parse_sizes(args.dims, "--dims"),
        dtype=args.dtype or "f32",
        seed=args.seed,
        causal=args.causal,
        kv_heads=args.kv_heads,
        activation=args.activation,
        tiles=tiles,
    )


def file_options(args: argparse.Namespace) -> None:
    """Refuse the options that describe a built-in diagram when the diagram is a file."""
    given = [
        flag
        for flag, value in (
            ("--causal", getattr(args, "causal", False)),
            ("--kv-heads", getattr(args, "kv_heads", None)),
        )
        if value
    ]
    if given:
        raise UsageError(f"{given[0]} describes a built-in diagram; a .mlir file says it in its types")
    if getattr(args, "seed", 0) < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
