"""napkin-opt: an mlir-opt style driver for the napkin dialect and its passes.

    napkin-opt [INPUT|-] [--pass-pipeline='builtin.module(napkin-verify,canonicalize)']
               [--napkin-verify] [--<napkin-pass>='opt=v opt2=v'] [--<upstream-pass>[='opts']]
               [--split-input-file] [--verify-diagnostics] [--mlir-print-ir-after-all]
               [--mlir-print-op-generic] [--dump-dir DIR] [-o FILE] [--list-passes]

The input (a file, or stdin for `-` or no argument) is parsed with the napkin dialect loaded,
verified (IRDL and the Python verifier, `napkin_mlir.ir.verifier`), run through the pipeline and
printed as the bindings print it (napkin ops in generic form). Pass flags run in command-line
order; they cannot be mixed with `--pass-pipeline`.

`--split-input-file` processes each `// -----` chunk on its own and joins the outputs with
`// -----`; diagnostics keep their line numbers in the original file. `--verify-diagnostics`
checks the `// expected-error {{...}}` comments (`@+N`, `@-N`, `@above`, `@below`; also
expected-warning/remark/note) against the diagnostics of parsing, verification and the passes.

Errors print as `error: <file>:<line>:<col>: <message>` and exit 1; usage errors (unknown flag,
bad pipeline, unreadable input) exit 2. Set NAPKIN_DEBUG=1 to see tracebacks of internal errors.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from mlir import ir
from mlir.passmanager import PassManager

from napkin_mlir.cli.common import ArgumentParser, run_main
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.parse_guard import parser_abort
from napkin_mlir.ir.verifier import verify_napkin
from napkin_mlir.knobs import knobs
from napkin_mlir.pipeline.passmanager import (
    PassFailure,
    PipelineDiagnostic,
    build_pass_manager,
    describe_options,
    parse_pipeline,
    run_pipeline,
)
from passes import PassInfo, load_all

SPLIT_MARKER = "// -----"
_SPLIT_RE = re.compile(r"^\s*// -----")
_PASS_FLAG_RE = re.compile(r"^--(?P<name>[A-Za-z][A-Za-z0-9._-]*)(?:=(?P<value>.*))?$", re.S)
_EXPECT_RE = re.compile(
    r"expected-(?P<sev>error|warning|remark|note)\s*(?:@(?P<where>[+-]\d+|above|below))?\s*\{\{(?P<msg>.*?)\}\}"
)
_DESIGNATOR_RE = re.compile(r"expected-(?:error|warning|remark|note)\b")


# --------------------------------------------------------------------------------------
# Command line


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="napkin-opt",
        description="Parse, verify, transform and print napkin MLIR (an mlir-opt for the napkin dialect).",
        epilog=(
            "Every napkin pass is also a flag: --<pass> or --<pass>='opt=value opt2=value' "
            "(see --list-passes); upstream passes work the same way (--canonicalize)."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("input", nargs="?", default="-", help="input file, '-' for stdin (the default)")
    parser.add_argument("-o", dest="output", default="-", metavar="FILE", help="output file ('-' for stdout)")
    parser.add_argument("--pass-pipeline", metavar="PIPELINE", help="e.g. 'builtin.module(napkin-verify,cse)'")
    parser.add_argument("--split-input-file", action="store_true", help="process each '// -----' chunk separately")
    parser.add_argument("--verify-diagnostics", action="store_true", help="check expected-error comments")
    parser.add_argument("--mlir-print-ir-after-all", action="store_true", help="print the IR after each pass to stderr")
    parser.add_argument("--mlir-print-op-generic", action="store_true", help="print every op in generic form")
    parser.add_argument(
        "--dump-dir", metavar="DIR", help="write the IR after each pipeline element as DIR/NN-<pass>.mlir"
    )
    parser.add_argument("--list-passes", action="store_true", help="list the napkin passes and their options")
    return parser


def _is_upstream_pass(name: str) -> bool:
    with ir.Context():
        try:
            PassManager("builtin.module").add(name)
        except ValueError as e:
            return "does not refer to a registered pass" not in str(e)
    return True


def _flag_options(value: str) -> str:
    """`axis=q,size=64` (no spaces) -> `axis=q size=64`; space-separated text is kept."""
    if any(c.isspace() for c in value):
        return value
    return re.sub(r",(?=[A-Za-z_][A-Za-z0-9_-]*=)", " ", value)


def _split_pass_flags(
    argv: list[str], parser: ArgumentParser, registry: dict[str, PassInfo]
) -> tuple[list[str], list[str]]:
    """Take the pass flags (`--<pass>[=options]`) out of argv; return (rest, pipeline elements)."""
    driver = {s for action in parser._actions for s in action.option_strings}
    rest: list[str] = []
    elements: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest.extend(argv[i:])
            break
        m = _PASS_FLAG_RE.match(arg)
        if m is None or f"--{m['name']}" in driver:
            rest.append(arg)
            continue
        name, value = m["name"], m["value"]
        if name in registry:
            elements.append(name + (f"{{{_flag_options(value)}}}" if value else ""))
        elif _is_upstream_pass(name):
            elements.append(name + (f"{{{value}}}" if value else ""))
        else:
            rest.append(arg)  # argparse reports it as unrecognized
    return rest, elements


def _list_passes(registry: dict[str, PassInfo]) -> str:
    lines = [
        "napkin passes (a flag --<pass>[='opt=value ...'], or an element <pass>{opt=value ...} of --pass-pipeline):"
    ]
    width = max((len(flag) for flag in registry), default=0) + 2
    for flag, info in registry.items():
        lines.append(f"  --{flag.ljust(width)}{info.summary}")
        options = describe_options(info)
        if not options:
            lines.append(f"      {'(no options)'}")
            continue
        doc = inspect.getdoc(info.options) or ""
        if doc and not doc.startswith(f"{info.options.__name__}("):  # dataclasses invent a docstring
            lines.extend(f"      {ln}" if ln else "" for ln in doc.splitlines())
        column = max(len(opt) + len(type_name) + 3 for opt, type_name, _, _ in options) + 2
        for opt, type_name, default, help_text in options:
            head = f"{opt}=<{type_name}>"
            tail = "required" if default is None else f"default: {default if default else '(empty)'}"
            extra = f"; {help_text}" if help_text else ""
            lines.append(f"      {head.ljust(column)}{tail}{extra}")
    lines.append("Upstream MLIR passes (see mlir-opt --help) work as flags and in --pass-pipeline too.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Input chunks and expected diagnostics


@dataclass(frozen=True)
class Chunk:
    """A piece of the input and the line (1-based) of the original file it starts on."""

    first_line: int
    text: str

    def padded(self) -> str:
        """The text preceded by blank lines, so that parser line numbers are the file's."""
        return "\n" * (self.first_line - 1) + self.text


def split_input(text: str, split: bool) -> list[Chunk]:
    """The whole input, or its `// -----` separated chunks."""
    if not split:
        return [Chunk(1, text)]
    chunks: list[Chunk] = []
    start, current = 1, []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if _SPLIT_RE.match(line):
            chunks.append(Chunk(start, "".join(current)))
            start, current = number + 1, []
        else:
            current.append(line)
    chunks.append(Chunk(start, "".join(current)))
    return chunks


@dataclass
class Expected:
    """One `expected-<severity> {{message}}` comment."""

    severity: str
    message: str
    line: int  # the line the diagnostic must be on
    comment_line: int
    comment_col: int
    seen: bool = False


def parse_expected(text: str) -> list[Expected]:
    """Every expected-* designator of the input, with the line it refers to."""
    lines = text.splitlines()
    designated = [bool(_DESIGNATOR_RE.search(ln)) for ln in lines]
    found: list[Expected] = []
    for index, line in enumerate(lines):
        for m in _EXPECT_RE.finditer(line):
            where = m["where"]
            target = index
            if where is None:
                pass
            elif where == "above":
                target = index - 1
                while target >= 0 and designated[target]:
                    target -= 1
            elif where == "below":
                target = index + 1
                while target < len(lines) and designated[target]:
                    target += 1
            else:
                target = index + int(where)
            found.append(Expected(m["sev"], m["msg"], target + 1, index + 1, m.start() + 1))
    return found


def check_expected(expected: list[Expected], produced: list[PipelineDiagnostic], filename: str) -> list[str]:
    """Match diagnostics to expectations; return the problems (empty when all is as expected)."""
    problems: list[str] = []
    unmatched: list[PipelineDiagnostic] = []
    for diag in produced:
        match = next(
            (
                e
                for e in expected
                if not e.seen and e.severity == diag.severity and e.line == diag.line and e.message in diag.message
            ),
            None,
        )
        if match is not None:
            match.seen = True
        elif diag.severity in ("error", "warning"):
            unmatched.append(diag)
    for e in expected:
        if not e.seen:
            problems.append(
                f"error: {filename}:{e.comment_line}:{e.comment_col}: expected {e.severity} "
                f'"{e.message}" was not produced (on line {e.line})'
            )
    for diag in unmatched:
        where = diag.where(filename)
        problems.append(f"error: {where + ': ' if where else ''}unexpected {diag.severity}: {diag.message}")
    return problems


# --------------------------------------------------------------------------------------
# Processing


def _failure_diagnostics(err: PassFailure) -> list[PipelineDiagnostic]:
    """Everything a failing pipeline has to say, as diagnostics (unlocated ones name the pass)."""
    diags = list(err.diagnostics)
    cause = err.cause
    if any(d.severity == "error" for d in diags):
        if isinstance(cause, NapkinError) and not any(cause.message in d.message for d in diags):
            named = cause.where is None and cause.message.startswith(f"{err.pass_name}:")
            diags.append(
                PipelineDiagnostic(cause.message if named else f"{cause.where or err.pass_name}: {cause.message}")
            )
        return diags
    located = re.fullmatch(r"(?P<file>[^\s:]*):(?P<line>\d+):(?P<col>\d+)", err.where or "")
    if located:
        diags.append(
            PipelineDiagnostic(err.message, "error", located["file"], int(located["line"]), int(located["col"]))
        )
    else:
        diags.append(PipelineDiagnostic(str(err)))
    return diags


@dataclass
class ChunkResult:
    output: str | None
    diagnostics: list[PipelineDiagnostic]


def process_chunk(
    chunk: Chunk,
    pipeline: str,
    filename: str,
    *,
    print_after_all: bool = False,
    generic: bool = False,
    dump_dir: str | None = None,
) -> ChunkResult:
    """Parse, verify, transform and print one chunk in a fresh context (never raises for bad IR)."""
    ctx = napkin_context()
    with ctx, ir.Location.unknown():
        aborted = parser_abort(chunk.padded())  # upstream's parser aborts on some bad text
        if aborted is not None:
            return ChunkResult(None, [PipelineDiagnostic.from_location(*aborted)])
        try:
            module = ir.Module.parse(chunk.padded())
        except ir.MLIRError as err:
            diags = [d for info in err.error_diagnostics for d in PipelineDiagnostic.from_info(info)]
            return ChunkResult(None, diags or [PipelineDiagnostic(str(err))])
        found = verify_napkin(module.operation)
        if found:
            return ChunkResult(None, [PipelineDiagnostic.from_location(d.location, d.message) for d in found])
        if pipeline.strip() or dump_dir:
            try:
                run_pipeline(
                    module,
                    pipeline,
                    print_after_all=print_after_all,
                    dump_dir=dump_dir,
                    filename=filename,
                )
            except PassFailure as err:
                if isinstance(err.cause, Exception) and not isinstance(err.cause, NapkinError) and knobs().debug:
                    traceback.print_exception(err.cause)
                return ChunkResult(None, _failure_diagnostics(err))
        text = module.operation.get_asm(print_generic_op_form=True) if generic else str(module)
        return ChunkResult(text if text.endswith("\n") else text + "\n", [])


def _read_input(path: str) -> tuple[str, str]:
    if path == "-":
        try:
            return "<stdin>", sys.stdin.read()
        except UnicodeDecodeError as e:
            raise UsageError(f"cannot read stdin: {e}") from None
    try:
        return path, Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read '{path}': {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read '{path}': not UTF-8 text ({e.reason})") from None


def _write_output(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise NapkinError(f"cannot write '{path}': {e.strerror or e}") from None


def _body(argv: list[str]) -> int:
    registry = load_all()
    parser = _parser()
    rest, flag_elements = _split_pass_flags(argv, parser, registry)
    args = parser.parse_args(rest)
    if args.list_passes:
        sys.stdout.write(_list_passes(registry))
        return 0
    if args.pass_pipeline is not None and flag_elements:
        raise UsageError("--pass-pipeline cannot be combined with pass flags (" + ", ".join(flag_elements) + ")")
    pipeline = args.pass_pipeline if args.pass_pipeline is not None else ",".join(flag_elements)
    build_pass_manager(parse_pipeline(pipeline), context=napkin_context())  # a bad pipeline fails before any work

    filename, text = _read_input(args.input)
    chunks = split_input(text, args.split_input_file)
    outputs: list[str] = []
    produced: list[PipelineDiagnostic] = []
    failed = False
    for index, chunk in enumerate(chunks):
        dump_dir = args.dump_dir
        if dump_dir and len(chunks) > 1:
            dump_dir = os.path.join(dump_dir, f"split-{index:02d}")
        result = process_chunk(
            chunk,
            pipeline,
            filename,
            print_after_all=args.mlir_print_ir_after_all,
            generic=args.mlir_print_op_generic,
            dump_dir=dump_dir,
        )
        if result.output is not None:
            outputs.append(result.output)
        produced.extend(result.diagnostics)
        if any(d.severity == "error" for d in result.diagnostics):
            failed = True
        if not args.verify_diagnostics:
            for diag in result.diagnostics:
                sys.stderr.write(diag.format(filename) + "\n")

    if args.verify_diagnostics:
        problems = check_expected(parse_expected(text), produced, filename)
        if outputs:
            _write_output(args.output, f"{SPLIT_MARKER}\n".join(outputs))
        for problem in problems:
            sys.stderr.write(problem + "\n")
        return 1 if problems else 0
    if outputs and (not failed or args.split_input_file):
        _write_output(args.output, f"{SPLIT_MARKER}\n".join(outputs))
    return 1 if failed else 0


def _guarded(argv: list[str]) -> int:
    try:
        return _body(argv)
    except (NapkinError, KeyboardInterrupt, BrokenPipeError, SystemExit):
        raise
    except Exception as e:  # never a traceback for users; NAPKIN_DEBUG=1 shows it
        if knobs().debug:
            traceback.print_exc()
        sys.stderr.write(f"error: internal error: {type(e).__name__}: {e}\n")
        return 1


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `napkin-opt` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    run_main(lambda: _guarded(arguments))


if __name__ == "__main__":
    main()
