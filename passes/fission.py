"""napkin-fission: split a diagram into one diagram per class of outputs, hoisting what they share.

A diagram whose outputs have different axes cannot be grouped as one: attention's backward
returns dQ over (b, h, q, d) and dK, dV over (b, h, x, d); no grouping of q or of x fits all
three, so `derive` would group b and h only. Fission cuts it:

  * outputs with the same axes form a class; each class becomes a diagram of its own holding
    the boxes its outputs need (a box two classes need is recomputed in each, as
    FlashAttention-2's deterministic backward recomputes S and dP for dQ);
  * a box of a class whose result lacks an axis of the class's outputs would be recomputed
    by every group along that axis, and keeps `derive` from grouping it. Where such boxes
    meet the rest, their values are hoisted if none is larger than the class's smallest
    output (a row statistic, not a matrix that would have to be stored whole): they become
    the outputs of a diagram that runs first (`@<f>_pre`, FlashAttention-2's preprocessing
    of D = rowsum(dO ∘ O)) and inputs of every class diagram that needs them. A class diagram
    that would then take more arrays than a partition has operand slots (8) recomputes them
    itself instead (it can be partitioned, less finely).

Every new diagram names its arguments (`arg_names`: the original's, then the hoisted values
`D`, `D1`, ...) and results (`result_names`), so a caller passes values by name. The
composition computes what the original computed, op for op.

Before (`func=attention_vjp`):

    func.func @attention_vjp(%Q, %K, %V, %O, %L, %dO) -> (dQ, dK, dV) {
      %D = "napkin.reduce"("napkin.mul"(%dO, %O)) {axis = "d", kind = "sum"}  -> [b, h, q]
      %dS = ... uses %D ...                                                    -> [b, h, q, x]
      %dQ = "napkin.contract"(%dS, %K) ...   %dK = "napkin.contract"(%dS, %Q) ...
      return %dQ, %dK, %dV

After:

    func.func @attention_vjp_pre(%O, %dO) -> [b, h, q] {result_names = ["D"]}
    func.func @attention_vjp_dQ(%Q, %K, %V, %L, %dO, %D) -> dQ
    func.func @attention_vjp_dK_dV(%Q, %K, %V, %L, %dO, %D) -> (dK, dV)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import func

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.regions import SLOTS, array, body_ops, diagram_functions, fail, owner, str_attr, terminator
from napkin_mlir.ir.regions import users as _users
from passes import register
from passes.differentiate import closed_region

PARTITIONS = ("napkin.group", "napkin.stream")

#: Boxes that only change an array's type or level: computed from inputs alone they are
#: input-like (recomputing them in every group costs no more than loading the input).
PASS_THROUGH = ("napkin.cast", "napkin.scale", "napkin.transfer")


@dataclass(frozen=True)
class FissionOptions:
    """func: the diagram to split (empty: every diagram function of the module)."""

    func: str = ""


def _reduced_axes(op: ir.Operation) -> set[str]:
    """Axes a box needs whole: contracted, reduced or normalized over."""
    if op.name == "napkin.contract":
        return {a for v in op.operands for a in array(v).axes} - set(array(op.results[0]).axes)
    if op.name in ("napkin.reduce", "napkin.softmax"):
        return {str_attr(op, "axis")}
    return set()


def _input_like(op: ir.Operation) -> bool:
    """A fill, or a pass-through box or a mask of inputs and input-like boxes: as cheap to
    recompute in every group as loading an input."""
    if op.name == "napkin.fill":
        return True
    if op.name not in (*PASS_THROUGH, "napkin.mask"):
        return False
    sources = [owner(v) for v in op.operands[:1]]
    return all(src is None or _input_like(src) for src in sources)


def _cone(values: Sequence[ir.Value], ops: list[ir.Operation], stop: set[ir.Value]) -> list[ir.Operation]:
    """The ops of `ops` that computing `values` needs (not through `stop`), in block order."""
    needed: set[ir.Operation] = set()
    work = [v for v in values if v not in stop]
    while work:
        op = owner(work.pop())
        if op is None or op in needed:
            continue
        needed.add(op)
        work += [v for v in op.operands if v not in stop]
    return [op for op in ops if op in needed]


def _names(f: ir.Operation, attr: str, count: int, prefix: str) -> list[str]:
    if attr in f.attributes:
        names = [ir.StringAttr(a).value for a in ir.ArrayAttr(f.attributes[attr])]
        if len(names) == count:
            return names
    return [f"{prefix}{i}" for i in range(count)]


def _strings(names: Sequence[str]) -> ir.ArrayAttr:
    return ir.ArrayAttr.get([ir.StringAttr.get(n) for n in names])


class Fission:
    def __init__(self, f: ir.Operation) -> None:
        self.f = f
        self.name = str_attr(f, "sym_name")
        self.block = next(iter(f.regions[0].blocks))
        self.ops = body_ops(self.block)
        for op in self.ops:
            if op.name in PARTITIONS:
                raise fail(op, f"napkin-fission: takes a plain diagram (before partitioning), found {op.name}")
            if op.regions and not closed_region(op):
                raise fail(op, f"napkin-fission: the body of '{op.name}' uses values defined outside it")
        self.results = list(terminator(self.block).operands)
        self.arg_names = _names(f, "arg_names", len(self.block.arguments), "arg")
        self.result_names = _names(f, "result_names", len(self.results), "result")

    def classes(self) -> list[list[int]]:
        found: dict[frozenset[str], list[int]] = {}
        for i, v in enumerate(self.results):
            found.setdefault(frozenset(array(v).axes), []).append(i)
        return list(found.values())

    def hoisted(self, classes: list[list[int]]) -> list[ir.Value]:
        """For each class and each axis of its outputs, the boxes whose results lack the axis
        (fills and casts of inputs aside) block grouping it. Where they meet the rest, their
        values are hoisted, when none is larger than the class's smallest output: a row
        statistic such as D, not a matrix such as P (which would be stored whole)."""
        found: set[ir.Value] = set()
        for members in classes:
            outs = [self.results[i] for i in members]
            cone = _cone(outs, self.ops, set())
            budget = min(array(v).elements for v in outs)
            for axis in array(outs[0]).axes:
                blockers = {op for op in cone if not _input_like(op) and axis not in array(op.results[0]).axes}
                edge = [
                    op.results[0]
                    for op in blockers
                    if any(u in cone and u not in blockers for u in _users(op.results[0]))
                ]
                if edge and all(array(v).elements <= budget for v in edge):
                    found.update(edge)
        return [r for op in self.ops for r in op.results if r in found]

    def arity(self, outs: list[ir.Value], given: dict[ir.Value, str]) -> int:
        """The number of arguments of a diagram computing `outs` given the values `given`."""
        cone = _cone(outs, self.ops, set(given))
        used = {v for op in cone for v in op.operands} | set(outs)
        return sum(a in used for a in self.block.arguments) + sum(v in used for v in given)

    def emit(self, name: str, outs: list[ir.Value], out_names: list[str], given: dict[ir.Value, str]) -> None:
        """A new diagram `@name` computing `outs` from the original's arguments and the values
        in `given` (value -> argument name), inserted before the original."""
        cone = _cone(outs, self.ops, set(given))
        used = {v for op in cone for v in op.operands} | set(outs)
        params: list[tuple[ir.Value, str]] = [
            (a, n) for a, n in zip(self.block.arguments, self.arg_names, strict=True) if a in used
        ]
        params += [(v, n) for v, n in given.items() if v in used]
        with ir.InsertionPoint(self.f), self.f.location:
            new = func.FuncOp(name, ir.FunctionType.get([v.type for v, _ in params], [v.type for v in outs]))
        entry = new.add_entry_block()
        mapping = {v: a for (v, _), a in zip(params, entry.arguments, strict=True)}
        with ir.InsertionPoint(entry):
            for op in cone:
                clone = op.clone().operation
                for old in set(op.operands):
                    clone.replace_uses_of_with(old, mapping[old])
                for r_old, r_new in zip(op.results, clone.results, strict=True):
                    mapping[r_old] = r_new
            func.ReturnOp([mapping[v] for v in outs])
        new.attributes["arg_names"] = _strings([n for _, n in params])
        new.attributes["result_names"] = _strings(out_names)

    def run(self) -> bool:
        """Split; False (nothing done) when one class has nothing to hoist."""
        classes = self.classes()
        hoisted = self.hoisted(classes)
        if len(classes) == 1 and not hoisted:
            return False
        # a class diagram with more arguments than a partition has operand slots could not be
        # partitioned at all: it recomputes the hoisted values itself instead
        fits = [
            self.arity([self.results[i] for i in members], dict.fromkeys(hoisted, "")) <= SLOTS for members in classes
        ]
        needed = [
            {r for op in _cone([self.results[i] for i in members], self.ops, set()) for r in op.results}
            for members in classes
        ]
        hoisted = [v for v in hoisted if any(ok and v in n for ok, n in zip(fits, needed, strict=True))]
        taken = set(self.arg_names) | set(self.result_names)
        given: dict[ir.Value, str] = {}
        for k, v in enumerate(hoisted):
            base = "D" if len(hoisted) == 1 else f"D{k}"
            n, j = base, 1
            while n in taken:
                n, j = f"{base}_{j}", j + 1
            taken.add(n)
            given[v] = n
        uses = [given if ok else {} for ok in fits]
        symbols = {
            str_attr(op.operation, "sym_name")
            for op in self.f.block.operations
            if "sym_name" in op.operation.attributes
        }
        if hoisted:
            self.emit(self._symbol(f"{self.name}_pre", symbols), hoisted, [given[v] for v in hoisted], {})
        elif len(classes) == 1:
            return False
        for members, use in zip(classes, uses, strict=True):
            names = [self.result_names[i] for i in members]
            symbol = self._symbol(f"{self.name}_{'_'.join(names)}", symbols)
            self.emit(symbol, [self.results[i] for i in members], names, use)
        self.f.erase()
        return True

    @staticmethod
    def _symbol(name: str, taken: set[str]) -> str:
        symbol = "".join(c if c.isalnum() or c in "_$." else "_" for c in name)
        base, j = symbol, 1
        while symbol in taken:
            symbol, j = f"{base}_{j}", j + 1
        taken.add(symbol)
        return symbol


@register("napkin-fission", FissionOptions, "split a diagram by output axes, hoisting boxes groups would recompute")
def run(module: ir.Operation, options: FissionOptions) -> None:
    functions = diagram_functions(module)
    if options.func:
        functions = [f for f in functions if str_attr(f, "sym_name") == options.func]
        if not functions:
            raise NapkinError(f"napkin-fission: no diagram function @{options.func} in the module")
    for f in functions:
        Fission(f).run()
