"""Shrinking failing inputs while they still fail.

`shrink_spec(spec, steps, still_fails)` greedily tries smaller diagrams and pipelines and
keeps any that still fail (`still_fails(spec, steps) -> bool`), until none of its
candidates does or the budget runs out. Candidates, biggest cuts first:

* drop an output; make an output the operand of the box that computes it; drop a dead box;
* cut a box off its producers (its result becomes a new input);
* bypass a box (its users take one of its operands instead);
* shorten a map body; make the diagram f32 (casts bypassed);
* drop a step of the pipeline; shrink every axis (to 1, 2, 3, half, one less) and tile.

`shrink_text(data, still_fails)` is delta debugging on a mutated program: remove chunks of
lines, then of tokens, then of bytes, while the input still fails the same way.

Both are plain Python; the predicate runs the candidate in a worker process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from napkin_mlir.fuzz.generator import drop_dead, drop_unused_inputs, renumber
from napkin_mlir.fuzz.mutate import tokens
from napkin_mlir.fuzz.spec import Input, Op, Spec, SpecError, VType, infer_types

Steps = list[dict[str, Any]]


def _tidy(spec: Spec) -> Spec:
    """Without unused inputs and the axes nothing has any more."""
    spec = drop_unused_inputs(spec)
    used = {a for x in spec.inputs for a in x.axes}
    spec.sizes = {a: s for a, s in spec.sizes.items() if a in used}
    return spec


def _typed(spec: Spec) -> bool:
    try:
        infer_types(spec)
    except SpecError:
        return False
    return True


def _cut(spec: Spec, value: int, types: list[VType]) -> Spec:
    """`value` (a box's result) turned into a new input."""
    n = len(spec.inputs)
    i = value - n
    t = types[value]
    inputs = [*spec.inputs, Input("cut", list(t.axes), t.dtype)]
    # renumber: new input at n; ops before i shift by one, op i disappears, later ones keep
    mapping: dict[int, int] = {v: v for v in range(n)}
    mapping[value] = n
    out_ops: list[Op] = []
    for j, op in enumerate(spec.ops):
        if j == i:
            continue
        mapping[n + j] = n + 1 + len(out_ops)
        out_ops.append(Op(**{**op.__dict__, "operands": [mapping[v] for v in op.operands]}))
    new = Spec(spec.name, dict(spec.sizes), inputs, out_ops, [mapping[v] for v in spec.outputs])
    return drop_dead(new)


def _bypass(spec: Spec, value: int, operand: int) -> Spec:
    """Users of `value` use `operand` instead; the box goes."""
    n = len(spec.inputs)
    ops = [Op(**{**op.__dict__, "operands": [operand if v == value else v for v in op.operands]}) for op in spec.ops]
    outputs = [operand if v == value else v for v in spec.outputs]
    new = Spec(spec.name, dict(spec.sizes), list(spec.inputs), ops, outputs)
    keep = [j for j in range(len(ops)) if n + j != value]
    return drop_dead(renumber(new, list(range(n)), keep))


def _f32(spec: Spec) -> Spec:
    new = spec.copy()
    for x in new.inputs:
        x.dtype = "f32"
    for op in new.ops:
        if op.kind in ("contract", "cast"):
            op.dtype = "f32"
    while casts := [j for j, op in enumerate(new.ops) if op.kind == "cast"]:
        j = casts[-1]  # bypassing one may drop others (dead code goes): look again each time
        new = _bypass(new, len(new.inputs) + j, new.ops[j].operands[0])
    return new


def spec_candidates(spec: Spec, steps: Steps) -> Iterator[tuple[Spec, Steps, str]]:
    """Smaller versions of (spec, steps), biggest cuts first (may not type: filtered later)."""
    try:
        types = infer_types(spec)
    except SpecError:
        return
    n = len(spec.inputs)
    if len(spec.outputs) > 1:
        for k in range(len(spec.outputs)):
            s = spec.copy()
            s.outputs.pop(k)
            yield drop_dead(s), steps, f"drop output {k}"
    for k, v in enumerate(spec.outputs):
        for w in spec.ops[v - n].operands:
            if w >= n and w not in spec.outputs:
                s = spec.copy()
                s.outputs[k] = w
                yield drop_dead(s), steps, f"output {k} -> its operand"
    used = {w for op in spec.ops for w in op.operands} | set(spec.outputs)
    for v in range(spec.values - 1, n - 1, -1):  # dead boxes one at a time (a bug may need some)
        if v not in used:
            yield (
                _tidy(renumber(spec, list(range(n)), [j for j in range(len(spec.ops)) if n + j != v])),
                steps,
                f"drop dead box {v - n}",
            )
    for v in range(n, spec.values):
        if spec.ops[v - n].operands:
            yield _cut(spec, v, types), steps, f"cut box {v - n}"
    for v in range(n, spec.values):
        for w in dict.fromkeys(spec.ops[v - n].operands):
            yield _bypass(spec, v, w), steps, f"bypass box {v - n}"
    for j, op in enumerate(spec.ops):
        if op.kind == "map" and len(op.body) > 1:
            for k in range(1, len(op.body)):
                s = spec.copy()
                s.ops[j].body = s.ops[j].body[:k]
                yield s, steps, f"map {j}: body of {k}"
    if any(x.dtype != "f32" for x in spec.inputs):
        yield _f32(spec), steps, "all f32"
    partitions = [k for k, st in enumerate(steps) if st["pass"] in ("group", "stream")]
    if len(partitions) > 1:  # a single partition (dropping one at a time can get stuck)
        for k in partitions:
            yield spec, [st for j, st in enumerate(steps) if j == k or j not in partitions], f"only step {k}"
    for k in range(len(steps)):
        if steps[k]["pass"] != "verify" or k not in (0, len(steps) - 1):
            yield spec, steps[:k] + steps[k + 1 :], f"drop step {k}"
    for axis, size in spec.sizes.items():
        for new in sorted({1, 2, 3, size // 2, size - 1}):
            if 1 <= new < size:
                s = spec.copy()
                s.sizes[axis] = new
                yield s, steps, f"{axis}: {size} -> {new}"
    for k, step in enumerate(steps):
        if step["pass"] == "group":
            for i, t in enumerate(step["sizes"]):
                for new in sorted({1, 2, t // 2, t - 1}):
                    if 1 <= new < t:
                        st = [dict(x) for x in steps]
                        st[k]["sizes"] = list(step["sizes"])
                        st[k]["sizes"][i] = new
                        yield spec, st, f"step {k}: tile {i} -> {new}"
        elif step["pass"] == "stream":
            t = step["size"]
            for new in sorted({1, 2, t // 2, t - 1}):
                if 1 <= new < t:
                    st = [dict(x) for x in steps]
                    st[k]["size"] = new
                    yield spec, st, f"step {k}: chunk -> {new}"


def size_of(spec: Spec, steps: Steps) -> tuple[int, int, int, int, int]:
    """What shrinking makes smaller, in order: boxes (with map bodies), low-precision
    inputs, axis sizes, pipeline steps, tiles."""
    boxes = len(spec.ops) + len(spec.outputs) + sum(len(op.body) for op in spec.ops) + len(spec.inputs)
    low = sum(x.dtype != "f32" for x in spec.inputs)
    tiles = sum(sum(s.get("sizes", [])) + s.get("size", 0) for s in steps)
    return boxes, low, sum(spec.sizes.values()), len(steps), tiles


def shrink_spec(
    spec: Spec,
    steps: Steps,
    still_fails: Callable[[Spec, Steps], bool],
    seconds: float = 120.0,
    max_tries: int = 400,
) -> tuple[Spec, Steps, int]:
    """The smallest (spec, steps) found that still fails, and how many candidates were tried."""
    deadline = time.monotonic() + seconds
    tries = 0
    progress = True
    while progress and time.monotonic() < deadline and tries < max_tries:
        progress = False
        for cand, cand_steps, _why in spec_candidates(spec, steps):
            if time.monotonic() >= deadline or tries >= max_tries:
                break
            if size_of(cand, cand_steps) >= size_of(spec, steps) or not _typed(cand):
                continue
            tries += 1
            if still_fails(cand, cand_steps):
                spec, steps = cand, cand_steps
                progress = True
                break
    return spec, steps, tries


def _ddmin(parts: list[bytes], still_fails: Callable[[bytes], bool], budget: Callable[[], bool]) -> list[bytes]:
    """Delta debugging: remove chunks of `parts` while the joined rest still fails."""
    n = 2
    while len(parts) >= 2 and budget():
        chunk = max(1, len(parts) // n)
        removed = False
        for start in range(0, len(parts), chunk):
            if not budget():
                break
            rest = parts[:start] + parts[start + chunk :]
            if rest and still_fails(b"".join(rest)):
                parts = rest
                n = max(n - 1, 2)
                removed = True
                break
        if not removed:
            if chunk == 1:
                break
            n = min(len(parts), n * 2)
    return parts


def shrink_text(
    data: bytes, still_fails: Callable[[bytes], bool], seconds: float = 120.0, max_tries: int = 300
) -> tuple[bytes, int]:
    """The smallest input found (lines, then tokens, then bytes removed) that still fails."""
    deadline = time.monotonic() + seconds
    tries = [0]

    def budget() -> bool:
        return time.monotonic() < deadline and tries[0] < max_tries

    def check(candidate: bytes) -> bool:
        tries[0] += 1
        return still_fails(candidate)

    parts = _ddmin(data.splitlines(keepends=True), check, budget)
    data = b"".join(parts)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None and budget():
        toks = tokens(text)
        pieces: list[bytes] = []
        last = 0
        for m in toks:
            pieces.append(text[last : m.end()].encode())
            last = m.end()
        pieces.append(text[last:].encode())
        data = b"".join(_ddmin(pieces, check, budget))
    if len(data) <= 400 and budget():
        data = b"".join(_ddmin([bytes([c]) for c in data], check, budget))
    return data, tries[0]
