"""The commands mutated inputs are fed to, and the rule their answers must follow.

Every command that takes a file: `napkin-opt FILE` (with no pass, the relabelings, the
lowering, upstream passes, the cost model), `napkin verify FILE`, `napkin derive FILE` and
`napkin draw FILE`. `commands_for(stage)` lists the argument lists for a program of a stage
(`{input}` and `{out}` are replaced by the worker).

`judge(entry, answer)` is the rule (None when it holds, else (category, message)):

* never a traceback (`Traceback (most recent call last)` on stderr, or an exception that
  escaped the driver) and never an `internal error`;
* never an interpreter abort or a hang (the supervisor reports those);
* exit 0, or exit 1 or 2 with stderr starting with a line `error: ...`: exactly one such
  line for `napkin`, and one per diagnostic for `napkin-opt` (one line per error, as
  mlir-opt prints them; what follows an error line is its notes);
* `napkin verify` (and `napkin emulate`) on a file that verifies is judged against the
  file's own interpretation, so a `FAIL` verdict is a wrong result.
"""

from __future__ import annotations

import random
import re
from typing import Any

DIAGRAM_COMMANDS: list[tuple[str, list[str]]] = [
    ("napkin-opt", ["{input}"]),
    ("napkin-opt", ["{input}", "--napkin-verify", "--napkin-assign-levels"]),
    (
        "napkin-opt",
        [
            "{input}",
            "--pass-pipeline=builtin.module(napkin-verify,napkin-assign-levels,napkin-lower-to-loops,canonicalize,cse)",
        ],
    ),
    ("napkin-opt", ["{input}", "--napkin-assign-levels", "--napkin-cost-analysis"]),
    ("napkin", ["derive", "{input}"]),
    ("napkin", ["verify", "{input}"]),
    ("napkin", ["draw", "{input}", "-o", "{out}"]),
]
PARTITIONED_COMMANDS: list[tuple[str, list[str]]] = [
    ("napkin-opt", ["{input}"]),
    ("napkin-opt", ["{input}", "--napkin-lower-to-loops"]),
    ("napkin-opt", ["{input}", "--napkin-cost-analysis"]),
    ("napkin-opt", ["{input}", "--mlir-print-op-generic", "--napkin-verify"]),
    ("napkin", ["draw", "{input}", "-o", "{out}"]),
    ("napkin", ["derive", "{input}"]),
]
LOOPS_COMMANDS: list[tuple[str, list[str]]] = [
    ("napkin-opt", ["{input}"]),
    ("napkin-opt", ["{input}", "--pass-pipeline=builtin.module(canonicalize,cse)"]),
    ("napkin-opt", ["{input}", "--napkin-erase-memory-spaces"]),
    ("napkin-opt", ["{input}", "--napkin-lower-to-loops"]),
]
COMMANDS = {"diagram": DIAGRAM_COMMANDS, "partitioned": PARTITIONED_COMMANDS, "loops": LOOPS_COMMANDS}

#: Command weights: napkin-opt is fast; verify, derive and draw do more work per input.
_WEIGHTS = {"napkin-opt": 6.0, "verify": 1.0, "derive": 1.5, "draw": 0.4}

_PASS_OPTIONS = (
    "--napkin-group-partition=axes={a} sizes={n}",
    "--napkin-group-partition=axes={a},{a} sizes={n},{n}",
    "--napkin-group-partition=axes={a} sizes={n} level=warp",
    "--napkin-group-partition=axes={a} sizes={n} level=nowhere",
    "--napkin-stream-partition=axis={a} size={n}",
    "--napkin-stream-partition=axis={a} size={n} online=false",
    "--napkin-assign-levels=hierarchy={a} fuse=false",
    "--napkin-assign-levels=hierarchy=gmem,gmem",
    "--napkin-cost-analysis=gpu={a}",
    "--napkin-cost-analysis=gpu=h100 dtype={a} warps={n} stages={n}",
)


def _weight(entry: str, args: list[str]) -> float:
    if entry == "napkin-opt":
        return _WEIGHTS["napkin-opt"]
    return _WEIGHTS.get(args[0], 1.0)


def pick_command(rng: random.Random, stage: str, axes: list[str]) -> tuple[str, list[str]]:
    """A command for a mutated program of `stage`; now and then a pass with random options."""
    if rng.random() < 0.12:
        opt = rng.choice(_PASS_OPTIONS)
        a = rng.choice([*axes, "zz", "", "q,x", "gmem,reg"]) if axes else "q"
        n = rng.choice(("1", "2", "3", "0", "-1", "7", "64", "99999", "x", "1.5", ""))
        return "napkin-opt", ["{input}", opt.format(a=a, n=n)]
    table = COMMANDS[stage]
    weights = [_weight(e, a) for e, a in table]
    entry, args = rng.choices(table, weights)[0]
    return entry, list(args)


_TYPE_DIMS = re.compile(r"(?:tensor|memref)<((?:\d+x)+)")


def too_big_to_run(text: str, limit: int = 1 << 20) -> bool:
    """A program with an array of more than `limit` elements: `napkin verify` would spend
    minutes allocating and interpreting it (a size, not a bug), so it is not run."""
    for m in _TYPE_DIMS.finditer(text):
        n = 1
        for d in m.group(1)[:-1].split("x"):
            n *= int(d)
            if n > limit:
                return True
    return False


def judge(entry: str, args: list[str], answer: dict[str, Any]) -> tuple[str, str] | None:
    """The rule of the module docstring: None, or (category, message)."""
    if "died" in answer:
        kind = answer["died"]
        tail = [ln for ln in answer.get("stderr", "").splitlines() if ln.strip()][-3:]
        return kind, f"{kind}: {' | '.join(tail)[:400]}"
    rc, stderr, stdout = answer["rc"], answer["stderr"], answer["stdout"]
    if answer.get("escaped"):
        last = answer["escaped"].strip().splitlines()[-1]
        return "traceback", f"an exception escaped the driver: {last}"
    if "Traceback (most recent call last)" in stderr:
        last = [ln for ln in stderr.splitlines() if ln.strip()][-1]
        return "traceback", f"traceback on stderr: {last}"
    if "internal error" in stderr:
        line = next(ln for ln in stderr.splitlines() if "internal error" in ln)
        return "internal-error", line[:400]
    if rc == 0:
        return None
    # `napkin emulate` reports progress on stderr ("\r  emulating CTAs 3/8")
    lines = [
        ln
        for ln in stderr.replace("\r", "\n").splitlines()
        if ln.strip() and not ln.strip().startswith("emulating CTAs")
    ]
    judged = entry == "napkin" and args and args[0] in ("verify", "emulate")
    if judged and rc == 1 and not lines and any(ln.startswith("FAIL") for ln in stdout.splitlines()):
        verdict = next((ln for ln in stdout.splitlines() if ln.startswith("FAIL")), "FAIL")
        wrong = [ln.strip() for ln in stdout.splitlines() if "WRONG" in ln][:1]
        return "wrong-result", f"napkin {args[0]}: {verdict[:300]} {' '.join(wrong)[:300]}"
    if rc not in (1, 2):
        return "exit-code", f"exit {rc}: {(lines or [''])[0][:300]}"
    if not lines or not lines[0].startswith("error:"):
        return "no-error-line", f"exit {rc} and stderr starts {(lines or ['(empty)'])[0][:300]!r}"
    errors = [ln for ln in lines if ln.startswith("error:")]
    if entry == "napkin" and len(errors) != 1:
        return "error-lines", f"{len(errors)} 'error:' lines: {' | '.join(errors)[:300]}"
    return None
