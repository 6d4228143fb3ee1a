"""MLIR contexts with the napkin dialect loaded, and parsing with clean diagnostics.

The dialect lives in one IRDL file (`dialects/napkin.irdl.mlir`). Loading it twice into the
same context aborts the process (an assertion in the bindings), so `load_napkin` checks
whether the dialect is already registered first. Use `napkin_context()` everywhere.
"""

from __future__ import annotations

from pathlib import Path

from mlir import ir
from mlir.dialects import irdl

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.parse_guard import parser_abort

REPO_ROOT = Path(__file__).resolve().parents[2]
DIALECT_FILE = REPO_ROOT / "dialects" / "napkin.irdl.mlir"


def load_napkin(ctx: ir.Context) -> None:
    """Register the napkin dialect in `ctx` (once; a second load would abort)."""
    if ctx.is_registered_operation("napkin.contract"):
        return
    with ctx, ir.Location.unknown():
        irdl.load_dialects(ir.Module.parse(DIALECT_FILE.read_text()))


def napkin_context() -> ir.Context:
    """A fresh context with the napkin dialect and every upstream dialect available."""
    ctx = ir.Context()
    load_napkin(ctx)
    return ctx


def format_location(loc: ir.Location | str, filename: str | None = None) -> str:
    """`loc("-":3:10)` -> `file.mlir:3:10` (the parser names its buffer "-")."""
    text = str(loc)
    if text.startswith("loc(") and text.endswith(")"):
        text = text[4:-1].replace('"', "")
    if filename and text.startswith("-:"):
        text = filename + text[1:]
    return text


def format_diagnostics(err: ir.MLIRError, filename: str | None = None) -> str:
    """Turn an MLIRError's diagnostics into `loc: message` lines (notes indented)."""
    lines: list[str] = []

    def emit(diag: ir.DiagnosticInfo, depth: int) -> None:
        loc = format_location(diag.location, filename)
        prefix = "  " * depth
        lines.append(f"{prefix}{loc}: {diag.message}" if loc != "unknown" else f"{prefix}{diag.message}")
        for note in diag.notes:
            emit(note, depth + 1)

    for diag in err.error_diagnostics:
        emit(diag, 0)
    return "\n".join(lines) if lines else str(err)


def parse_module(text: str, filename: str = "<input>") -> ir.Module:
    """Parse MLIR text in the current context; raise NapkinError with located diagnostics."""
    aborted = parser_abort(text)
    if aborted is not None:
        loc, message = aborted
        where = format_location(loc, filename)
        raise NapkinError(message, where=None if where == "unknown" else where)
    try:
        return ir.Module.parse(text)
    except ir.MLIRError as err:
        raise NapkinError(format_diagnostics(err, filename)) from None
