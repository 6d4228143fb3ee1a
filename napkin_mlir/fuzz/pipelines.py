"""Relabeling pipelines for the fuzzer: steps as data, and random legal ones for a diagram.

A pipeline is a list of steps (JSON dicts): `{"pass": "levels", "fuse": true, "hierarchy":
"gmem,smem,reg"}`, `{"pass": "group", "axes": [...], "sizes": [...], "level": "grid"}`,
`{"pass": "stream", "axis": "x", "size": 5}`, `{"pass": "verify"}`. `render_step` writes one
as a `napkin-opt --pass-pipeline` element, clipping tiles to the axis sizes (the minimizer
shrinks axes under a fixed pipeline). `draw` makes random pipelines from what a diagram
maps and reduces (`DiagramFacts`): groups over axes every output keeps and nothing reduces,
with random tiles (dividing or not), a stream over a reduced axis no output keeps, sometimes
nested (a second group at `level=warp`, a second stream), sometimes in the other order, and
now and then an illegal request, which the pass must refuse with a located diagnostic.
`around` re-draws the tiles of the derived pipeline (`derive.auto.derive`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

Step = dict[str, Any]

#: Most group x chunk iterations a drawn pipeline may take (the interpreter runs each).
MAX_WORK = 32

HIERARCHIES = ("gmem,smem,reg", "gmem,smem,reg", "gmem,smem,reg", "gmem,smem", "gmem,reg")


@dataclass
class DiagramFacts:
    """What a plain diagram maps and reduces, read off its boxes."""

    sizes: dict[str, int]
    output_axes: list[set[str]]
    reduced: set[str]  # axes some box contracts, reduces or normalizes over
    softmax_axes: set[str] = field(default_factory=set)

    @property
    def mapped(self) -> list[str]:
        """Axes every output has and no box needs whole: the legal group axes."""
        common = set.intersection(*self.output_axes) if self.output_axes else set()
        return sorted(a for a in common if a not in self.reduced)

    @property
    def streamable(self) -> list[str]:
        """Reduced axes no output keeps: the stream candidates (the pass decides)."""
        kept = set().union(*self.output_axes) if self.output_axes else set()
        return sorted(a for a in self.reduced if a not in kept)


def render_step(step: Step, sizes: dict[str, int]) -> str:
    """One pipeline element; tiles clipped to [1, axis size]."""

    def clip(axis: str, size: int) -> int:
        return max(1, min(int(size), sizes.get(axis, int(size))))

    kind = step["pass"]
    if kind == "verify":
        return "napkin-verify"
    if kind == "levels":
        return f"napkin-assign-levels{{hierarchy={step.get('hierarchy', 'gmem,smem,reg')} fuse={'true' if step.get('fuse', True) else 'false'}}}"
    if kind == "group":
        tiles = [clip(a, s) for a, s in zip(step["axes"], step["sizes"], strict=True)]
        return (
            f"napkin-group-partition{{axes={','.join(step['axes'])} sizes={','.join(map(str, tiles))} "
            f"level={step.get('level', 'grid')}}}"
        )
    if kind == "stream":
        online = "" if step.get("online", True) else " online=false"
        return f"napkin-stream-partition{{axis={step['axis']} size={clip(step['axis'], step['size'])}{online}}}"
    raise ValueError(f"unknown step {step}")


def render(steps: list[Step], sizes: dict[str, int]) -> str:
    return "builtin.module(" + ",".join(render_step(s, sizes) for s in steps) + ")"


def work(steps: list[Step], sizes: dict[str, int]) -> int:
    """Group x chunk iterations of a pipeline (what interpreting it costs, roughly)."""
    total = 1
    outer: dict[str, int] = {}  # the tile a nested group cuts, per axis
    for s in steps:
        if s["pass"] == "group":
            for a, t in zip(s["axes"], s["sizes"], strict=True):
                whole = outer.get(a, sizes.get(a, 1))
                tile = max(1, min(t, whole))
                total *= math.ceil(whole / tile)
                outer[a] = tile
        elif s["pass"] == "stream":
            a = s["axis"]
            total *= math.ceil(sizes.get(a, 1) / max(1, min(s["size"], sizes.get(a, 1))))
    return total


def tile(rng: random.Random, size: int) -> int:
    """A tile for an axis of `size`: 1, the whole axis, a divisor, a non-divisor, any."""
    if size <= 1:
        return 1
    divisors = [d for d in range(2, size) if size % d == 0]
    others = [d for d in range(2, size) if size % d]
    pick = rng.random()
    if pick < 0.15:
        return 1 if size <= 16 else rng.randint(2, size)
    if pick < 0.3:
        return size
    if pick < 0.5 and divisors:
        return rng.choice(divisors)
    if pick < 0.85 and others:
        return rng.choice(others)
    return rng.randint(1, size)


def _fit(rng: random.Random, steps: list[Step], sizes: dict[str, int]) -> None:
    """Grow tiles (at random) until the pipeline's work is at most MAX_WORK."""
    for _ in range(64):
        _nest(steps, sizes)
        if work(steps, sizes) <= MAX_WORK:
            return
        parts = [(s, i) for s in steps if s["pass"] == "group" for i in range(len(s["axes"]))]
        parts += [(s, -1) for s in steps if s["pass"] == "stream"]
        s, i = rng.choice(parts)
        if i < 0:
            s["size"] = min(sizes[s["axis"]], max(s["size"] * 2, s["size"] + 1))
        else:
            s["sizes"][i] = min(sizes[s["axes"][i]], max(s["sizes"][i] * 2, s["sizes"][i] + 1))
    for s in steps:  # still too much: whole axes
        if s["pass"] == "group":
            s["sizes"] = [sizes[a] for a in s["axes"]]
        elif s["pass"] == "stream":
            s["size"] = sizes[s["axis"]]
    _nest(steps, sizes)


def draw(rng: random.Random, facts: DiagramFacts) -> list[Step]:
    """A random relabeling pipeline for a diagram with `facts` (see the module docstring)."""
    sizes = facts.sizes
    steps: list[Step] = [{"pass": "verify"}]
    if rng.random() < 0.9:
        steps.append({"pass": "levels", "fuse": rng.random() < 0.8, "hierarchy": rng.choice(HIERARCHIES)})
    mapped, streamable = facts.mapped, facts.streamable
    illegal = rng.random() < 0.08
    group: Step | None = None
    stream: Step | None = None
    partial = sorted(a for a in sizes if a not in facts.reduced and a not in mapped)  # an output lacks it
    if illegal:
        kinds = [k for k, ok in (("reduced", facts.reduced), ("mapped", mapped), ("partial", partial)) if ok]
        kind = rng.choice(kinds) if kinds else ""
        if kind == "reduced":
            a = rng.choice(sorted(facts.reduced))
            group = {"pass": "group", "axes": [a], "sizes": [tile(rng, sizes[a])], "level": "grid"}
        elif kind == "partial":
            a = rng.choice(partial)
            group = {"pass": "group", "axes": [a], "sizes": [tile(rng, sizes[a])], "level": "grid"}
        elif kind == "mapped":
            a = rng.choice(mapped)
            stream = {"pass": "stream", "axis": a, "size": tile(rng, sizes[a])}
    if group is None and mapped and rng.random() < 0.85:
        k = rng.randint(1, min(3, len(mapped)))
        axes = rng.sample(mapped, k)
        group = {"pass": "group", "axes": axes, "sizes": [tile(rng, sizes[a]) for a in axes], "level": "grid"}
    if stream is None and streamable and rng.random() < 0.85:
        a = rng.choice(streamable)
        stream = {"pass": "stream", "axis": a, "size": tile(rng, sizes[a])}
        if rng.random() < 0.05:
            stream["online"] = False
    order = [s for s in (group, stream) if s is not None]
    if len(order) == 2 and rng.random() < 0.1:
        order.reverse()
    steps += order
    if group is not None and group["axes"][0] in mapped and rng.random() < 0.25:
        sub = rng.sample(group["axes"], rng.randint(1, len(group["axes"])))
        warp_sizes = [tile(rng, group["sizes"][group["axes"].index(a)]) for a in sub]
        steps.append({"pass": "group", "axes": sub, "sizes": warp_sizes, "level": "warp"})
    if stream is not None and rng.random() < 0.2:
        others = [a for a in streamable if a != stream["axis"]]
        if others:
            a = rng.choice(others)
            steps.append({"pass": "stream", "axis": a, "size": tile(rng, sizes[a])})
    steps.append({"pass": "verify"})
    _fit(rng, steps, sizes)
    return steps


def _nest(steps: list[Step], sizes: dict[str, int]) -> None:
    """A group one level down tiles the tiles of the group above it: no warp tile larger
    than the grid tile of its axis (the pass refuses that request)."""
    outer: dict[str, int] = {}
    for s in steps:
        if s["pass"] != "group":
            continue
        clipped = [min(t, sizes.get(a, t), outer.get(a, t)) for a, t in zip(s["axes"], s["sizes"], strict=True)]
        s["sizes"] = clipped
        outer.update(zip(s["axes"], clipped, strict=True))


def around(rng: random.Random, derived: list[Step], sizes: dict[str, int]) -> list[Step]:
    """The derived pipeline with its tiles re-drawn (woven axes stay 1)."""
    steps = [dict(s) for s in derived]
    for s in steps:
        if s["pass"] == "group":
            s["sizes"] = [
                t if t == 1 and rng.random() < 0.7 else tile(rng, sizes[a])
                for a, t in zip(s["axes"], s["sizes"], strict=True)
            ]
        elif s["pass"] == "stream":
            s["size"] = tile(rng, sizes[s["axis"]])
    _fit(rng, steps, sizes)
    return steps
