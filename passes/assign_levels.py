"""napkin-assign-levels: recolour the diagram with memory levels (the paper's first relabeling).

Inputs and outputs live at the top level (`gmem`); inputs move down to the staging level
(`smem`) through explicit `napkin.transfer` ops; every box computes at the lowest level
(`reg`); results move back up to `gmem`. With `fuse=true` (default) intermediates stay at
the lowest level, which is the paper's fusion; with `fuse=false` every intermediate goes up to
`gmem` and back down, the unfused algorithm whose extra transfers the cost model counts.

Before:

    func.func @f(%A: tensor<4x8xf32, {axes = ["m", "k"]}>, %B: ...) -> ... {
      %0 = "napkin.contract"(%A, %B) : (...) -> tensor<4x5xf32, {axes = ["m", "n"]}>
      return %0

After:

    func.func @f(%A: tensor<4x8xf32, {axes = ["m", "k"], level = "gmem"}>, %B: ...) -> ... {
      %a = "napkin.transfer"(%A) : (... level = "gmem" ...) -> tensor<4x8xf32, {axes = ["m", "k"], level = "smem"}>
      %b = "napkin.transfer"(%B) : ...
      %0 = "napkin.contract"(%a, %b) : (...) -> tensor<4x5xf32, {axes = ["m", "n"], level = "reg"}>
      %1 = "napkin.transfer"(%0) : (...) -> tensor<4x5xf32, {axes = ["m", "n"], level = "gmem"}>
      return %1
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import is_array
from napkin_mlir.ir.regions import array, body_ops, create, diagram_functions, fail, terminator
from napkin_mlir.ir.regions import users as _users
from napkin_mlir.lowering.loops import LEVEL_MEMORY_SPACE
from passes import register


@dataclass(frozen=True)
class AssignLevelsOptions:
    """hierarchy: levels from the top (global memory) down to where boxes compute;
    fuse: keep intermediates at the lowest level (fusion) instead of storing them."""

    hierarchy: tuple[str, ...] = ("gmem", "smem", "reg")
    fuse: bool = True


def _set_level(v: ir.Value, level: str) -> None:
    v.set_type(array(v).with_level(level).to_mlir())


def assign(f: ir.Operation, options: AssignLevelsOptions) -> None:
    top, stage, low = options.hierarchy[0], options.hierarchy[min(1, len(options.hierarchy) - 1)], options.hierarchy[-1]
    block = next(iter(f.regions[0].blocks))
    ops = body_ops(block)
    for op in ops:
        if op.name in ("napkin.transfer", "napkin.group", "napkin.stream"):
            raise fail(op, "napkin-assign-levels runs on a plain diagram (before partitioning), found " + op.name)
    for op in ops:
        for r in op.results:
            if is_array(r.type):
                _set_level(r, low)
    first = ops[0] if ops else terminator(block)
    for arg in block.arguments:
        if not is_array(arg.type):
            continue
        _set_level(arg, top)
        users = _users(arg)
        if not users:
            continue
        with ir.InsertionPoint(first), first.location:
            moved = create("transfer", [arg], array(arg).with_level(stage))
        for user in users:
            user.replace_uses_of_with(arg, moved)
    ret = terminator(block)
    if not options.fuse:
        for op in ops:
            for r in op.results:
                users = [u for u in _users(r) if u != ret]
                if not users:
                    continue
                # right after the definition: users[0] need not be the first user in program order
                with ir.InsertionPoint.after(op), op.location:
                    up = create("transfer", [r], array(r).with_level(top))
                    down = create("transfer", [up], array(r).with_level(low))
                for user in users:
                    user.replace_uses_of_with(r, down)
    new_results = []
    with ir.InsertionPoint(ret), ret.location:
        for v in ret.operands:
            new_results.append(create("transfer", [v], array(v).with_level(top)) if array(v).level != top else v)
    for old, new in zip(list(ret.operands), new_results, strict=True):
        if old != new:
            ret.replace_uses_of_with(old, new)
    f.attributes["function_type"] = ir.TypeAttr.get(
        ir.FunctionType.get([a.type for a in block.arguments], [v.type for v in ret.operands])
    )


@register("napkin-assign-levels", AssignLevelsOptions, "recolour: place arrays at memory levels, insert transfers")
def run(module: ir.Operation, options: AssignLevelsOptions) -> None:
    unknown = [lvl for lvl in options.hierarchy if lvl not in LEVEL_MEMORY_SPACE]
    if unknown or len(options.hierarchy) < 2:
        raise NapkinError(
            f"napkin-assign-levels: hierarchy must list at least two known levels from {', '.join(LEVEL_MEMORY_SPACE)}, got {','.join(options.hierarchy)}"
        )
    for f in diagram_functions(module):
        assign(f, options)
