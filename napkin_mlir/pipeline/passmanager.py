"""Mixed pass pipelines: napkin passes (Python) and upstream MLIR passes in one PassManager.

A pipeline is written the way `mlir-opt --pass-pipeline` takes it:

    builtin.module(napkin-verify,canonicalize,func.func(cse),napkin-foo{axis=q size=64})

The outer `builtin.module(...)` is optional. Top-level elements whose name is a registered
napkin pass (`passes.load_all()`) become Python passes added with
`PassManager.add(callable, name=flag)`; every other element is handed to `PassManager.add`
as text, unchanged, so any upstream pass, pass option or nested pipeline works. Napkin
passes run on the whole module and cannot be nested inside `func.func(...)`.

Napkin pass options go in braces, space separated, mlir-opt style: `{key=value key2=value2}`.
Values are converted to the field types of the pass's frozen options dataclass: `int`,
`float`, `bool` (`true/false/1/0/yes/no/on/off`; a bare `key` means true), `str`,
`tuple[int, ...]`/`tuple[str, ...]` written as comma lists (`sizes=64,32`), `X | None`
(`none`), `Literal[...]` and enums. Quotes (`'...'`, `"..."`) and one pair of braces around a
value are stripped.

A napkin pass reports a problem by raising `NapkinError`. The Python callback catches it (and
any other exception), remembers it and signals a pass failure; after `PassManager.run` fails,
`NapkinPassManager.run` raises `PassFailure` (a `NapkinError`) carrying the pass name, the
original exception and the located diagnostics, so drivers print `error: ...` cleanly.

Never pass `op_name=` to `PassManager.add`: on a module pass manager it aborts the process.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlir import ir
from mlir.passmanager import PassManager

from napkin_mlir.errors import NapkinError, UsageError
from passes import PassInfo, load_all

__all__ = [
    "NapkinPassManager",
    "PassFailure",
    "PipelineDiagnostic",
    "PipelineElement",
    "build_pass_manager",
    "describe_options",
    "format_options",
    "parse_pass_options",
    "parse_pipeline",
    "run_pipeline",
]

# --------------------------------------------------------------------------------------
# Diagnostics


_LOC_RE = re.compile(r'"(?P<file>[^"]*)":(?P<line>\d+):(?P<col>\d+)')
_LOCATED_LINE_RE = re.compile(
    r"^(?P<file>[^\s:]*):(?P<line>\d+):(?P<col>\d+): (?:(?P<sev>error|warning|note|remark): )?(?P<msg>.*)$"
)


@dataclass(frozen=True)
class PipelineDiagnostic:
    """A diagnostic detached from its MLIR context: severity, position and message."""

    message: str
    severity: str = "error"
    file: str | None = None
    line: int | None = None
    col: int | None = None

    @staticmethod
    def from_location(loc: ir.Location | str, message: str, severity: str = "error") -> PipelineDiagnostic:
        """Read file/line/col out of a location (file locations, possibly nested in names or fusions)."""
        m = _LOC_RE.search(str(loc))
        if m is None:
            return PipelineDiagnostic(message, severity)
        return PipelineDiagnostic(message, severity, m["file"], int(m["line"]), int(m["col"]))

    @staticmethod
    def from_info(info: ir.DiagnosticInfo) -> list[PipelineDiagnostic]:
        """The diagnostic and its notes, flattened (notes follow their diagnostic)."""
        severity = str(info.severity).rsplit(".", 1)[-1].lower()
        out = [PipelineDiagnostic.from_location(info.location, info.message, severity)]
        for note in info.notes:
            out.extend(PipelineDiagnostic.from_info(note))
        return out

    def where(self, filename: str | None = None) -> str | None:
        """`file:line:col` (the parser's buffer name `-` replaced by `filename`), or None if unknown."""
        if self.line is None:
            return None
        file = filename if filename is not None and self.file in (None, "-", "") else self.file
        return f"{file}:{self.line}:{self.col}"

    def format(self, filename: str | None = None) -> str:
        """`<severity>: <file>:<line>:<col>: <message>` (the location left out when unknown)."""
        where = self.where(filename)
        return f"{self.severity}: {where}: {self.message}" if where else f"{self.severity}: {self.message}"


def _located_lines(message: str) -> list[PipelineDiagnostic] | None:
    """Diagnostics from text made of `file:line:col: [error: ]msg` lines (the verifier's format), else None."""
    lines = [ln for ln in message.splitlines() if ln.strip()]
    if not lines:
        return None
    found: list[PipelineDiagnostic] = []
    for ln in lines:
        m = _LOCATED_LINE_RE.match(ln)
        if m is None:
            return None
        found.append(PipelineDiagnostic(m["msg"], m["sev"] or "error", m["file"], int(m["line"]), int(m["col"])))
    return found


class PassFailure(NapkinError):
    """A pass of a pipeline failed.

    `pass_name` is the napkin pass flag (None when an upstream pass failed), `cause` the
    exception the napkin pass raised (None for upstream failures), `diagnostics` every located
    diagnostic known (emitted through MLIR, or read from the napkin error's `file:line:col:`
    lines). The exit code is the cause's when it is a NapkinError.
    """

    def __init__(
        self,
        message: str,
        *,
        pass_name: str | None,
        diagnostics: Sequence[PipelineDiagnostic] = (),
        cause: BaseException | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(message, where)
        self.pass_name = pass_name
        self.diagnostics = list(diagnostics)
        self.cause = cause
        if isinstance(cause, NapkinError):
            self.exit_code = cause.exit_code


# --------------------------------------------------------------------------------------
# Pipeline text


@dataclass(frozen=True)
class PipelineElement:
    """One element of a textual pipeline: `name`, `name{options}` or `anchor(elements)`."""

    name: str
    options: str | None
    nested: tuple[PipelineElement, ...] | None
    text: str

    def names(self) -> Iterable[str]:
        """This element's name and every nested name, depth first."""
        yield self.name
        for child in self.nested or ():
            yield from child.names()


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _read_braces(text: str, pos: int) -> int:
    """`text[pos]` is `{`; return the index just past its matching `}` (quotes respected)."""
    depth, quote = 0, None
    for i in range(pos, len(text)):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    raise UsageError(f"invalid pass pipeline '{text}': unbalanced '{{' at column {pos + 1}")


def _parse_elements(text: str, pos: int, closer: str | None) -> tuple[list[PipelineElement], int]:
    elements: list[PipelineElement] = []
    pos = _skip_ws(text, pos)
    if pos < len(text) and closer is not None and text[pos] == closer:
        return elements, pos
    while True:
        pos = _skip_ws(text, pos)
        start = pos
        while pos < len(text) and not text[pos].isspace() and text[pos] not in "{}(),":
            pos += 1
        name = text[start:pos]
        if not name:
            what = f"'{text[pos]}'" if pos < len(text) else "the end"
            raise UsageError(f"invalid pass pipeline '{text}': expected a pass name at column {pos + 1}, found {what}")
        pos = _skip_ws(text, pos)
        options = None
        if pos < len(text) and text[pos] == "{":
            end = _read_braces(text, pos)
            options = text[pos + 1 : end - 1]
            pos = _skip_ws(text, end)
        nested = None
        if pos < len(text) and text[pos] == "(":
            children, pos = _parse_elements(text, pos + 1, ")")
            if pos >= len(text) or text[pos] != ")":
                raise UsageError(f"invalid pass pipeline '{text}': unbalanced '(' after '{name}'")
            nested = tuple(children)
            pos += 1
        elements.append(PipelineElement(name, options, nested, text[start:pos].strip()))
        pos = _skip_ws(text, pos)
        if pos >= len(text):
            if closer is not None:
                raise UsageError(f"invalid pass pipeline '{text}': missing '{closer}'")
            return elements, pos
        if text[pos] == ",":
            pos += 1
            continue
        if closer is not None and text[pos] == closer:
            return elements, pos
        raise UsageError(f"invalid pass pipeline '{text}': unexpected '{text[pos]}' at column {pos + 1}")


def parse_pipeline(text: str) -> list[PipelineElement]:
    """Split a pipeline into its top-level elements (the `builtin.module(...)` wrapper removed).

    Only the structure is checked here (balanced `{}`/`()`, names); pass names and options are
    checked when the pass manager is built. An empty pipeline gives no elements.
    """
    if not text.strip():
        return []
    elements, _ = _parse_elements(text, 0, None)
    if len(elements) == 1 and elements[0].name == "builtin.module" and elements[0].nested is not None:
        if elements[0].options:
            raise UsageError(f"invalid pass pipeline '{text}': builtin.module takes no options")
        return list(elements[0].nested)
    return elements


# --------------------------------------------------------------------------------------
# Napkin pass options


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _split_options(text: str) -> list[str]:
    """Split `a=1 b='x y' c={1,2}` at top-level whitespace."""
    items: list[str] = []
    cur: list[str] = []
    depth, quote = 0, None
    for c in text:
        if quote:
            cur.append(c)
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
            cur.append(c)
        elif c == "{":
            depth += 1
            cur.append(c)
        elif c == "}":
            depth -= 1
            cur.append(c)
        elif c.isspace() and depth == 0:
            if cur:
                items.append("".join(cur))
                cur = []
        else:
            cur.append(c)
    if quote or depth:
        raise ValueError("unbalanced quotes or braces")
    if cur:
        items.append("".join(cur))
    return items


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == "{" and value[-1] == "}":
        return value[1:-1].strip()
    return value


def _type_name(tp: Any) -> str:
    """A short human name for an option type (`int`, `list of int`, `int | none`, `one of a|b`)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return "(" + ", ".join(_type_name(a) for a in args) + ")"
    if origin in (typing.Union, types.UnionType):
        return " | ".join("none" if a is type(None) else _type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + "|".join(str(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + "|".join(m.name for m in tp)
    return getattr(tp, "__name__", str(tp))


def _convert(value: str, tp: Any) -> Any:
    """Convert option text to `tp`; raises ValueError with what was expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is bool:
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true or false")
    if tp is int:
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if tp is float:
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if tp is str:
        return value
    if origin is tuple:
        items = [_unquote(v) for v in value.split(",")] if value.strip() else []
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(item, args[0]) for item in items)
        if len(items) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values")
        return tuple(_convert(item, t) for item, t in zip(items, args, strict=True))
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value.strip().lower() in ("none", ""):
            return None
        errors = []
        for t in args:
            if t is type(None):
                continue
            try:
                return _convert(value, t)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(" or ".join(errors) if errors else "no value allowed")
    if origin is typing.Literal:
        for a in args:
            if str(a) == value.strip():
                return a
        raise ValueError("expected one of " + ", ".join(str(a) for a in args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value.strip() in (member.name, str(member.value)):
                return member
        raise ValueError("expected one of " + ", ".join(m.name for m in tp))
    raise ValueError(f"options of type {tp!r} cannot be given on the command line")


def _field_types(options: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(options)
    except Exception:  # unresolvable annotations: fall back to what the dataclass recorded
        return {f.name: f.type for f in dataclasses.fields(options)}


def parse_pass_options(info: PassInfo, text: str | None) -> Any:
    """Build `info.options` from `key=value key2=value2` text (None or empty: the defaults).

    Raises UsageError naming the pass and the option for an unknown option, a bad value, a
    repeated option or a missing required one.
    """
    hints = _field_types(info.options)
    fields = {f.name: f for f in dataclasses.fields(info.options)}
    # Flags are kebab-case on the command line, fields snake_case in Python: accept both.
    by_key = {**{n.replace("_", "-"): n for n in fields}, **{n: n for n in fields}}
    try:
        items = _split_options(text or "")
    except ValueError as e:
        raise UsageError(f"pass '{info.flag}': bad options '{text}': {e}") from None
    values: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if key not in by_key:
            known = ", ".join(n.replace("_", "-") for n in fields) or "none"
            raise UsageError(f"pass '{info.flag}' has no option '{key}' (its options: {known})")
        name = by_key[key]
        if name in values:
            raise UsageError(f"pass '{info.flag}': option '{key}' given twice")
        tp = hints.get(name, str)
        if not eq:
            if tp is not bool:
                raise UsageError(f"pass '{info.flag}': option '{key}' needs a value ({key}=<{_type_name(tp)}>)")
            values[name] = True
            continue
        try:
            values[name] = _convert(_unquote(raw), tp)
        except ValueError as e:
            raise UsageError(f"pass '{info.flag}': bad value '{_unquote(raw)}' for option '{key}': {e}") from None
    missing = [
        n
        for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UsageError(f"pass '{info.flag}' needs option(s) {', '.join(m.replace('_', '-') for m in missing)}")
    try:
        return info.options(**values)
    except NapkinError as e:  # an options dataclass may validate itself in __post_init__
        raise UsageError(f"pass '{info.flag}': {e.message}") from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"pass '{info.flag}': bad options: {e}") from None


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple):
        return ",".join(_format_value(v) for v in value)
    text = str(value)
    return f"'{text}'" if (not text or any(c.isspace() or c in "{}" for c in text)) else text


def format_options(options: Any) -> str:
    """`key=value key2=value2` for an options instance (parse_pass_options reads it back)."""
    return " ".join(
        f"{f.name.replace('_', '-')}={_format_value(getattr(options, f.name))}" for f in dataclasses.fields(options)
    )


def describe_options(info: PassInfo) -> list[tuple[str, str, str | None, str]]:
    """(option flag, type name, default text or None if required, help) for each option of a pass."""
    hints = _field_types(info.options)
    out = []
    for f in dataclasses.fields(info.options):
        if f.default is not dataclasses.MISSING:
            default: str | None = _format_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _format_value(f.default_factory())
        else:
            default = None
        out.append(
            (f.name.replace("_", "-"), _type_name(hints.get(f.name, str)), default, str(f.metadata.get("help", "")))
        )
    return out


# --------------------------------------------------------------------------------------
# The pass manager


def _clean_pipeline_error(message: str) -> str:
    lines = [ln for ln in message.splitlines() if ln.strip()]
    first = lines[0] if lines else message
    first = re.sub(r"^MLIR Textual PassPipeline Parser:\d+:\d+: error: ", "", first)
    first = re.sub(r"^<Pass-Options-Parser>: ", "", first)
    return first


class NapkinPassManager:
    """One MLIR PassManager on `builtin.module` for a mixed napkin/upstream pipeline.

    Build it with `build_pass_manager`; `run(op)` raises `PassFailure` when a pass fails.
    `pm` is the underlying `mlir.passmanager.PassManager` (`str(pm)` prints the pipeline).
    """

    def __init__(
        self,
        elements: Sequence[PipelineElement],
        *,
        print_after_all: bool = False,
        context: ir.Context | None = None,
    ) -> None:
        self.elements = list(elements)
        self.registry = load_all()
        self.pm = PassManager("builtin.module", context=context)
        self._failure: tuple[str, BaseException] | None = None
        for element in self.elements:
            self._add(element)
        if print_after_all:
            self.pm.enable_ir_printing(print_after_all=True)

    def _add(self, element: PipelineElement) -> None:
        info = self.registry.get(element.name)
        if info is not None:
            if element.nested is not None:
                raise UsageError(f"napkin pass '{element.name}' takes no nested pipeline")
            options = parse_pass_options(info, element.options)
            # Never op_name=: on a module pass manager that aborts the process.
            self.pm.add(self._callback(info, options), name=info.flag, argument=info.flag, description=info.summary)
            return
        nested_napkin = [n for n in element.names() if n in self.registry]
        if nested_napkin:
            raise UsageError(
                f"napkin pass '{nested_napkin[0]}' cannot be nested in '{element.name}(...)': "
                "napkin passes run on the whole module, put it at the top level"
            )
        try:
            self.pm.add(element.text)
        except ValueError as e:
            message = _clean_pipeline_error(str(e))
            if "does not refer to a registered pass" in message:
                names = ", ".join(sorted(self.registry))
                message = f"unknown pass '{element.name}' (neither a napkin pass [{names}] nor an upstream MLIR pass)"
            raise UsageError(f"invalid pass pipeline element '{element.text}': {message}") from None

    def _callback(self, info: PassInfo, options: Any) -> Callable[[ir.Operation, Any], None]:
        def run(op: ir.Operation, pass_: Any) -> None:
            try:
                info.run(op, options)
            except BaseException as e:  # remembered, re-raised by NapkinPassManager.run
                self._failure = (info.flag, e)
                pass_.signal_pass_failure()

        run.__name__ = info.flag.replace("-", "_")
        return run

    def run(self, op: ir.Operation | ir.Module, filename: str | None = None) -> None:
        """Run the pipeline on `op` (a module); raise PassFailure if a pass fails.

        `filename` replaces the parser's buffer name `-` in the failure's message.
        """
        operation = op.operation if isinstance(op, ir.Module) else op
        self._failure = None
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            with operation.context, ir.Location.unknown(operation.context):
                self.pm.run(operation)
        except ir.MLIRError as err:
            emitted = [d for info in err.error_diagnostics for d in PipelineDiagnostic.from_info(info)]
            error = self._failure_error(emitted, filename)
            raise error from error.__cause__  # set for internal errors only (keeps their traceback)
        finally:
            sys.stderr.flush()
        if self._failure is not None:  # the pass signalled failure but MLIR did not report it
            error = self._failure_error([], filename)
            raise error from error.__cause__

    def _failure_error(self, emitted: list[PipelineDiagnostic], filename: str | None) -> BaseException:
        failure, self._failure = self._failure, None
        if failure is None:  # an upstream pass (or the verifier after a pass) failed
            if not emitted:
                return PassFailure("pass pipeline failed", pass_name=None, diagnostics=emitted)
            text = "\n".join(_strip_severity(d.format(filename)) for d in emitted if d.severity == "error")
            return PassFailure(text or emitted[0].message, pass_name=None, diagnostics=emitted)
        flag, exc = failure
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: let them through
            return exc
        if isinstance(exc, NapkinError):
            located = _located_lines(exc.message)
            if located is not None:
                message = "\n".join(_strip_severity(d.format(filename)) for d in located)
                return PassFailure(message, pass_name=flag, diagnostics=emitted + located, cause=exc)
            errors = [d for d in emitted if d.severity == "error"]
            if errors:  # the pass emitted located diagnostics before raising: show them first
                named = exc.where is None and exc.message.startswith(f"{flag}:")
                last = exc.message if named else f"{exc.where or flag}: {exc.message}"
                lines = [_strip_severity(d.format(filename)) for d in errors] + [last]
                return PassFailure("\n".join(lines), pass_name=flag, diagnostics=emitted, cause=exc)
            named = exc.message.startswith(f"{flag}:")  # the pass already names itself
            where = exc.where or (None if named else flag)
            return PassFailure(exc.message, pass_name=flag, diagnostics=emitted, cause=exc, where=where)
        message = f"internal error in pass '{flag}': {type(exc).__name__}: {exc}"
        error = PassFailure(message, pass_name=flag, diagnostics=emitted, cause=exc)
        error.__cause__ = exc
        return error


def _strip_severity(text: str) -> str:
    return text.split(": ", 1)[1] if text.startswith(("error: ", "warning: ", "note: ", "remark: ")) else text


def build_pass_manager(
    pipeline: str | Sequence[PipelineElement],
    *,
    print_after_all: bool = False,
    context: ir.Context | None = None,
) -> NapkinPassManager:
    """A NapkinPassManager for a textual pipeline (or parsed elements); raises UsageError if invalid."""
    elements = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
    return NapkinPassManager(elements, print_after_all=print_after_all, context=context)


def _slug(element: PipelineElement) -> str:
    def flat(e: PipelineElement) -> str:
        return e.name + ("-" + "-".join(flat(c) for c in e.nested) if e.nested else "")

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", flat(element))
    return slug[:80]


def run_pipeline(
    module: ir.Module | ir.Operation,
    pipeline_text: str,
    *,
    print_after_all: bool = False,
    dump_dir: str | Path | None = None,
    filename: str | None = None,
) -> None:
    """Run a mixed napkin/upstream pipeline on `module` in place.

    `print_after_all` prints the IR after every pass to stderr (`// -----// IR Dump After ...`,
    as `mlir-opt --mlir-print-ir-after-all`). `dump_dir` writes `00-input.mlir` and then the
    module after each top-level element as `NN-<pass>.mlir` (each element then runs in its own
    PassManager; nothing is written for a failing element). `filename` names the input in
    error messages. Raises UsageError for a bad pipeline (before anything runs) and
    PassFailure when a pass fails.
    """
    operation = module.operation if isinstance(module, ir.Module) else module
    context = operation.context
    elements = parse_pipeline(pipeline_text)
    if dump_dir is None:
        build_pass_manager(elements, print_after_all=print_after_all, context=context).run(operation, filename)
        return
    managers = [
        build_pass_manager([e], print_after_all=print_after_all, context=context) for e in elements
    ]  # built first: a typo late in the pipeline fails before anything runs
    out = Path(dump_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "00-input.mlir").write_text(str(operation))
    for i, (element, manager) in enumerate(zip(elements, managers, strict=True), start=1):
        manager.run(operation, filename)
        (out / f"{i:02d}-{_slug(element)}.mlir").write_text(str(operation))
