"""A guard against an abort in upstream MLIR's parser.

Upstream MLIR (22.x, assertions on) aborts the whole process on malformed text where an SSA
name used before any definition (a forward reference) gets resolved to a block argument of a
later region and that region then fails to parse: destroying the region's block trips the
assertion "Cannot destroy a value that still has uses!" (test/fuzz/regressions/007-*). A
Python tool cannot catch an abort, so text that may contain such a forward reference is
parsed once in a child process first; if the child dies, the parent reports the child's
first diagnostic as a clean error instead of parsing it itself.

`forward_reference(text)` is the cheap textual pre-check: it is conservative (it may flag a
legal forward reference, e.g. across blocks of a CFG region, which only costs the child
parse) and tracks region scopes by braces, so a name defined in a closed sibling region does
not hide a later use of it. Napkin diagrams never contain forward references, so they never
pay for the child.
"""

from __future__ import annotations

import re
import subprocess
import sys

_STRIP = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*')
_NAME = r"%[A-Za-z_$.\-0-9]+"
_TOKEN = re.compile(r"\{|\}|\(|\)|" + _NAME + r"|[\^@][A-Za-z_$.\-0-9]+\s*\(")
#: `%a =`, `%a:2 =`, `%a, %b =`: op results (and custom loop variables such as scf.for's).
_RESULTS = re.compile(r"(?:" + _NAME + r"(?::\d+)?\s*,\s*)*" + _NAME + r"(?::\d+)?\s*=(?!=)")
_ARG = re.compile(_NAME + r"\s*:")
#: What follows the `{` of an attribute dictionary (a region's `{` starts an op or a block).
_DICT = re.compile(r"\s*(?:[A-Za-z_][\w.$\-]*\s*(?:=|,|\})|\})")


def forward_reference(text: str) -> tuple[str, int, int] | None:
    """The first `%name` that may be used before its definition in an enclosing scope, with
    its line and column (1-based), or None."""
    text = _STRIP.sub(lambda m: " " * len(m.group(0)), text)
    scopes: list[set[str]] = [set()]
    pending: set[str] = set()  # arguments of a block or function signature, visible in what follows
    arg_depth = -1  # paren depth of the open argument list (-1: none)
    depth = 0
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok == "{" and (arg_depth >= 0 or _DICT.match(text, m.end())):  # an attribute dictionary
            scopes.append(set())
        elif tok == "{":
            scopes.append(set(pending))
            pending = set()
        elif tok == "}":
            if len(scopes) > 1:
                scopes.pop()
        elif tok == "(":
            depth += 1
        elif tok == ")":
            if depth == arg_depth:
                arg_depth = -1
                if not text[m.end() :].lstrip().startswith(("{", "->", "attributes")):
                    scopes[-1] |= pending  # a block's arguments belong to the current region
                    pending = set()  # (a function's open with its body)
            depth -= 1
        elif tok[0] in "^@":
            depth += 1
            arg_depth = depth
        else:
            name = tok.split("#")[0]
            if arg_depth >= 0 and _ARG.match(text, m.start()):
                pending.add(name)
            elif _RESULTS.match(text, m.start()):
                scopes[-1].add(name)
            elif not any(name in s for s in scopes) and name not in pending:
                line = text.count("\n", 0, m.start()) + 1
                return name, line, m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return None


_CHILD = """
import sys
from mlir import ir
from napkin_mlir.ir.context import napkin_context
text = sys.stdin.read()
with napkin_context(), ir.Location.unknown():
    try:
        ir.Module.parse(text)
    except Exception:
        pass
"""


_INDEX_ARRAY = re.compile(r"array\s*<\s*index\b")


def index_dense_array(text: str) -> tuple[str, int, int] | None:
    """A dense array attribute of `index` elements (`array<index: 1>`): upstream's parser asks
    index for a bit width and aborts (an assertion), so such text is parsed in a child first."""
    m = _INDEX_ARRAY.search(text)
    if m is None:
        return None
    line = text.count("\n", 0, m.start()) + 1
    return (m.group(0), line, m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1)


def parser_abort(text: str) -> tuple[str, str] | None:
    """None when parsing `text` cannot abort this process; else (location, message) of the
    forward reference, when parsing it aborted a child process."""
    ref = forward_reference(text) or index_dense_array(text)
    if ref is None:
        return None
    name, line, col = ref
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD], input=text, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ("unknown", "could not check this input in a child process before parsing it")
    if proc.returncode == 0:
        return None
    return (
        f'loc("-":{line}:{col})',
        f"'{name}' is used before its definition and this input does not parse "
        "(upstream MLIR's parser aborts on it; fix the use or define the value first)"
        if name.startswith("%")
        else f"'{name}': a dense array of index elements does not parse (upstream MLIR's parser aborts on it; use i64)",
    )
