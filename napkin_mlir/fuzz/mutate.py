"""Mutations of valid napkin programs: token, structure and byte edits (`mutate`).

The inputs are programs at every stage (a plain diagram, a partitioned program, a loop
program); a mutation makes 1 to 3 edits of one family:

* **token**: replace a token (an SSA name, a number, a string, a type, an op or attribute
  name) with another of the same file or with an interesting one (`INTERESTING`), delete,
  duplicate or swap tokens;
* **structure**: delete, duplicate, swap or move lines, splice a line of another program in,
  change one size of a tensor type, rename, drop or repeat an axis in an `axes` list, drop an
  attribute, change `operandSegmentSizes`, drop a `gpu.yield`, truncate the text;
* **byte**: flip bits, insert random bytes (NUL, invalid UTF-8, non-ASCII), delete or
  duplicate a range.

Everything here is plain Python on bytes and text (no MLIR): the mutated inputs run in a
worker process (`napkin_mlir.fuzz.worker`), since the MLIR bindings can abort the process.
"""

from __future__ import annotations

import random
import re

TOKEN_RE = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|%[\w.$-]+|\^[\w]+|@[\w.$-]+|#[\w.$-]+|0x[0-9A-Fa-f]+|[-+]?\d+\.\d*(?:[eE][-+]?\d+)?|[-+]?\d+|[A-Za-z_][\w.$]*|->|\S'
)

INTERESTING: dict[str, tuple[str, ...]] = {
    "number": (
        "0",
        "1",
        "-1",
        "2",
        "3",
        "7",
        "64",
        "65536",
        "2147483647",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "1.0e308",
        "0x7FC00000",
        "0xFF800000",
        "1e-45",
    ),
    "string": (
        '""',
        '"q"',
        '"x"',
        '"zz"',
        '"gmem"',
        '"smem"',
        '"reg"',
        '"grid"',
        '"warp"',
        '"thread"',
        '"sum"',
        '"max"',
        '"min"',
        '"causal"',
        '"q x"',
        '"\\00"',
        '"' + "a" * 300 + '"',
    ),
    "type": (
        "f32",
        "bf16",
        "f16",
        "f64",
        "i1",
        "i32",
        "i64",
        "index",
        "f8E4M3FN",
        "none",
        "tensor<4xf32>",
        "memref<4xf32>",
        "vector<4xf32>",
    ),
    "op": (
        *tuple(
            f'"napkin.{n}"'
            for n in (
                "contract",
                "exp",
                "tanh",
                "relu",
                "gelu",
                "silu",
                "scale",
                "cast",
                "add",
                "sub",
                "mul",
                "div",
                "max",
                "map",
                "reduce",
                "softmax",
                "mask",
                "fill",
                "transfer",
                "group",
                "stream",
                "nonexistent",
            )
        ),
        '"gpu.yield"',
        '"func.return"',
        '"arith.addf"',
        '"scf.yield"',
    ),
    "name": (
        "axes",
        "axis",
        "kind",
        "rows",
        "cols",
        "level",
        "sizes",
        "size",
        "factor",
        "value",
        "online",
        "operandSegmentSizes",
        "resultSegmentSizes",
        "arg_names",
        "napkin.outputs",
        "mapping",
        "gpu.yield",
        "func.return",
        "arith.constant",
        "math.exp",
        "scf.for",
        "scf.forall",
        "memref.alloc",
        "linalg.generic",
        "array",
        "dense",
        "tensor",
        "memref",
        "loc",
        "true",
        "false",
        "unit",
    ),
    "punct": ("(", ")", "{", "}", "[", "]", "<", ">", ",", ":", "=", "->", "^bb0", "%0", "%arg0", "@f", "x"),
}


def tokens(text: str) -> list[re.Match[str]]:
    return list(TOKEN_RE.finditer(text))


def token_class(tok: str) -> str:
    if tok.startswith('"'):
        return "op" if re.fullmatch(r'"[a-z_]+\.[\w.]+"', tok) else "string"
    if re.fullmatch(r"[-+]?\d[\w.+-]*", tok) or tok.startswith("0x"):
        return "number"
    if tok in ("f32", "bf16", "f16", "f64", "i1", "i32", "i64", "index"):
        return "type"
    if tok[0].isalpha() or tok[0] == "_":
        return "name"
    if tok[0] in "%^@#":
        return tok[0]
    return "punct"


# --- token mutations -----------------------------------------------------------------------------


def _token_edit(rng: random.Random, text: str) -> tuple[str, str]:
    toks = tokens(text)
    if not toks:
        return text + rng.choice(INTERESTING["punct"]), "append a token"
    m = rng.choice(toks)
    tok, cls = m.group(0), token_class(m.group(0))
    choice = rng.random()
    if choice < 0.55:
        same = [t.group(0) for t in toks if token_class(t.group(0)) == cls and t.group(0) != tok]
        pool = list(INTERESTING.get(cls, ())) + same
        if cls == "number" and rng.random() < 0.4:
            new = str(rng.choice((0, 1, -1, rng.randint(-5, 200), 2**31, 2**32 + 1, 10**12)))
        elif pool:
            new = rng.choice(pool)
        else:
            new = rng.choice(INTERESTING[rng.choice(list(INTERESTING))])
        return text[: m.start()] + new + text[m.end() :], f"token {tok!r} -> {new!r} at {m.start()}"
    if choice < 0.7:
        return text[: m.start()] + text[m.end() :], f"delete token {tok!r} at {m.start()}"
    if choice < 0.8:
        return text[: m.end()] + " " + tok + text[m.end() :], f"duplicate token {tok!r} at {m.start()}"
    same = [t for t in toks if token_class(t.group(0)) == cls and t.start() != m.start()]
    if not same:
        return text[: m.start()] + text[m.end() :], f"delete token {tok!r} at {m.start()}"
    o = rng.choice(same)
    a, b = (m, o) if m.start() < o.start() else (o, m)
    if a.end() > b.start():
        return text, "no-op"
    swapped = text[: a.start()] + b.group(0) + text[a.end() : b.start()] + a.group(0) + text[b.end() :]
    return swapped, f"swap tokens {a.group(0)!r} and {b.group(0)!r}"


# --- structure mutations --------------------------------------------------------------------------

_TENSOR_DIMS = re.compile(r"(tensor|memref|vector)<((?:\d+x)+)")
_AXES = re.compile(r"axes = \[([^\]]*)\]")
_ATTR = re.compile(r"(?<=[{,] )[A-Za-z_][\w.]* = [^,{}]+?(?=[,}])")
_SEGMENTS = re.compile(r"(operandSegmentSizes|resultSegmentSizes) = array<i32: ([\d, ]+)>")


def _structure_edit(rng: random.Random, text: str, donors: list[str]) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    kind = rng.choice(
        ("delete", "duplicate", "swap", "move", "splice", "dims", "axes", "attr", "segments", "yield", "truncate")
    )
    if kind in ("delete", "duplicate", "swap", "move") and len(lines) >= 2:
        i = rng.randrange(len(lines))
        j = rng.randrange(len(lines))
        if kind == "delete":
            return "".join(lines[:i] + lines[i + 1 :]), f"delete line {i + 1}"
        if kind == "duplicate":
            return "".join([*lines[: i + 1], lines[i], *lines[i + 1 :]]), f"duplicate line {i + 1}"
        if kind == "swap":
            lines[i], lines[j] = lines[j], lines[i]
            return "".join(lines), f"swap lines {i + 1} and {j + 1}"
        line = lines.pop(i)
        lines.insert(j, line)
        return "".join(lines), f"move line {i + 1} to {j + 1}"
    if kind == "splice" and donors:
        donor = rng.choice(donors).splitlines(keepends=True)
        if donor:
            k = rng.randrange(len(donor))
            i = rng.randrange(len(lines) + 1)
            return "".join([*lines[:i], donor[k], *lines[i:]]), f"splice a donor line before line {i + 1}"
    if kind == "dims":
        found = list(_TENSOR_DIMS.finditer(text))
        if found:
            m = rng.choice(found)
            dims = m.group(2)[:-1].split("x")
            k = rng.randrange(len(dims))
            new = rng.choice(("0", "1", str(int(dims[k]) + 1), str(max(1, int(dims[k]) - 1)), "4096", "?"))
            dims[k] = new
            rebuilt = f"{m.group(1)}<{'x'.join(dims)}x"
            return text[: m.start()] + rebuilt + text[m.end() :], f"size {k} of a type -> {new}"
    if kind == "axes":
        found = list(_AXES.finditer(text))
        if found:
            m = rng.choice(found)
            names = [n.strip() for n in m.group(1).split(",") if n.strip()]
            op = rng.choice(("rename", "drop", "repeat", "add", "reverse"))
            if op == "rename" and names:
                names[rng.randrange(len(names))] = rng.choice(('"zz"', '"q"', '""', '"x"', "1", "[]"))
            elif op == "drop" and names:
                names.pop(rng.randrange(len(names)))
            elif op == "repeat" and names:
                names.append(rng.choice(names))
            elif op == "add":
                names.insert(rng.randrange(len(names) + 1), rng.choice(('"zz"', '"w"')))
            else:
                names.reverse()
            new = f"axes = [{', '.join(names)}]"
            return text[: m.start()] + new + text[m.end() :], f"axes list: {op}"
    if kind == "attr":
        found = list(_ATTR.finditer(text))
        if found:
            m = rng.choice(found)
            return text[: m.start()] + text[m.end() :], f"drop attribute {m.group(0)[:40]!r}"
    if kind == "segments":
        found = list(_SEGMENTS.finditer(text))
        if found:
            m = rng.choice(found)
            vals = [v.strip() for v in m.group(2).split(",")]
            k = rng.randrange(len(vals))
            vals[k] = rng.choice(("0", "1", "2", "-1"))
            new = f"{m.group(1)} = array<i32: {', '.join(vals)}>"
            return text[: m.start()] + new + text[m.end() :], f"{m.group(1)}[{k}] -> {vals[k]}"
    if kind == "yield":
        idx = [i for i, ln in enumerate(lines) if "yield" in ln or "return" in ln]
        if idx:
            i = rng.choice(idx)
            return "".join(lines[:i] + lines[i + 1 :]), f"drop terminator line {i + 1}"
    cut = rng.randrange(len(text) + 1)
    return text[:cut], f"truncate at {cut}"


# --- byte mutations ---------------------------------------------------------------------------------


def _byte_edit(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return bytes([rng.randrange(256)]), "one random byte"
    b = bytearray(data)
    i = rng.randrange(len(b))
    kind = rng.choice(("flip", "insert", "delete", "duplicate", "set"))
    if kind == "flip":
        b[i] ^= 1 << rng.randrange(8)
        return bytes(b), f"flip a bit of byte {i}"
    if kind == "insert":
        junk = rng.choice(
            (
                b"\x00",
                b"\xff",
                b"\xc3",
                b"\xe2\x82",
                "é∑".encode(),
                b"\n",
                b"}",
                b"{",
                b'"',
                bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))),
            )
        )
        return bytes(b[:i] + junk + b[i:]), f"insert {junk!r} at {i}"
    if kind == "delete":
        n = rng.randint(1, min(64, len(b) - i))
        return bytes(b[:i] + b[i + n :]), f"delete bytes {i}..{i + n}"
    if kind == "duplicate":
        n = rng.randint(1, min(200, len(b) - i))
        return bytes(b[: i + n] + b[i : i + n] + b[i + n :]), f"duplicate bytes {i}..{i + n}"
    b[i] = rng.randrange(256)
    return bytes(b), f"set byte {i} to {b[i]}"


FAMILIES = ("token", "structure", "byte")


def mutate(
    rng: random.Random, text: str, donors: list[str] | None = None, family: str | None = None
) -> tuple[bytes, str]:
    """A mutant of `text` (as bytes) and a description of the edits."""
    family = family or rng.choices(FAMILIES, (5, 4, 2))[0]
    edits = rng.choices((1, 2, 3), (6, 3, 1))[0]
    notes: list[str] = []
    if family == "byte":
        data = text.encode()
        for _ in range(edits):
            data, note = _byte_edit(rng, data)
            notes.append(note)
        return data, f"byte: {'; '.join(notes)}"
    for _ in range(edits):
        if family == "token":
            text, note = _token_edit(rng, text)
        else:
            text, note = _structure_edit(rng, text, donors or [])
        notes.append(note)
    return text.encode(), f"{family}: {'; '.join(notes)}"
