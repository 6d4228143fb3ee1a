"""The interpreter proper: the op table, frames of bound values, and running blocks.

`OP_TABLE` maps an op name (`napkin.contract`, `arith.addf`, ...) to its rule, a function
`rule(interp, op, args) -> results` registered with `@register(name)`. `Interpreter.run_block`
binds a block's arguments, applies the rule of each op in order and returns what the
terminator (`gpu.yield` or `func.return`) yields; region-holding ops (`napkin.map`,
`napkin.group`, `napkin.stream`) drive their regions through it. An op without a rule is a
`NapkinError` naming the op and its location.

Frames nest like the regions: a region may use values of the blocks around it (a stream step
uses the offset of the group it is in), and each frame holds the current size of every axis
(`Interpreter.axis_size`): inside a partial tile that is the tile's actual size, which ops
without operands (`napkin.fill`) take instead of their static type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import numpy as np
from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.interpret.arrays import NAMESPACES
from napkin_mlir.interpret.values import PRECISIONS, Named, Value, as_int, storage_dtype
from napkin_mlir.ir.arrays import ArrayType, dtype_name, is_array
from napkin_mlir.ir.context import format_location

Rule = Callable[["Interpreter", ir.Operation, list[Value]], list[Value]]

#: Op name -> rule. Filled by the rule modules (napkin_ops, scalar_ops, partitions) on import.
OP_TABLE: dict[str, Rule] = {}

#: Ops that end a block, returning their operands.
TERMINATORS = ("gpu.yield", "func.return")


def register(*names: str) -> Callable[[Rule], Rule]:
    """Register a rule under each op name in `names`."""

    def add(rule: Rule) -> Rule:
        for name in names:
            OP_TABLE[name] = rule
        return rule

    return add


@dataclass
class Frame:
    """The values bound in one block, and the current axis sizes there."""

    values: dict[ir.Value, Value]
    sizes: dict[str, int]
    parent: Frame | None = None

    def lookup(self, v: ir.Value) -> Value | None:
        frame: Frame | None = self
        while frame is not None:
            if v in frame.values:
                return frame.values[v]
            frame = frame.parent
        return None


class Interpreter:
    """Evaluates napkin programs at one precision (`"f64"` or `"same"`) with jax.numpy, or
    numpy in float64 (`arrays`, see `interpret.arrays`)."""

    def __init__(
        self,
        precision: str = "f64",
        filename: str | None = None,
        table: dict[str, Rule] | None = None,
        arrays: str = "jax",
    ):
        if precision not in PRECISIONS:
            raise NapkinError(f"interpret: unknown precision '{precision}' (expected {' or '.join(PRECISIONS)})")
        if arrays not in NAMESPACES or (arrays != "jax" and precision != "f64"):
            raise NapkinError(f"interpret: arrays '{arrays}' (jax, or numpy at precision f64)")
        self.precision = precision
        self.xp = NAMESPACES[arrays]  # the array library the rules compute with
        self.filename = filename
        self.table = OP_TABLE if table is None else table
        self.frame = Frame({}, {})

    # --- helpers for rules -----------------------------------------------------------------

    def fail(self, op: ir.Operation, message: str) -> NapkinError:
        """A NapkinError located at `op` (file:line:col)."""
        where = format_location(op.location, self.filename)
        return NapkinError(message, where=where if where != "unknown" else "unknown location")

    def dtype(self, t: ir.Type | ArrayType) -> np.dtype:
        """The JAX dtype that holds values of the napkin array type `t`."""
        array = t if isinstance(t, ArrayType) else ArrayType.from_mlir(t)
        return storage_dtype(array.dtype, self.precision)

    def scalar_dtype(self, t: ir.Type, op: ir.Operation) -> np.dtype:
        """The dtype of a scalar of type `t` (a map body's values): floats at the
        interpreter's precision, i1 as bool, other integers and index as int64."""
        if isinstance(t, ir.IndexType):
            return np.dtype(np.int64)
        if isinstance(t, ir.IntegerType):
            return np.dtype(np.bool_) if ir.IntegerType(t).width == 1 else np.dtype(np.int64)
        try:
            return storage_dtype(dtype_name(t), self.precision)
        except NapkinError:
            raise self.fail(op, f"interpret: unsupported scalar type '{t}' in '{op.name}'") from None

    def axis_size(self, axis: str, static: int) -> int:
        """The current size of `axis` (the actual tile size inside a partition), else `static`."""
        return self.frame.sizes.get(axis, static)

    # --- running blocks ---------------------------------------------------------------------

    def run_block(self, block: ir.Block, args: Sequence[Value], sizes: dict[str, int] | None = None) -> list[Value]:
        """Run `block` with its arguments bound to `args`; return what its terminator yields.
        The block sees the values of the enclosing frames; `sizes` updates the axis sizes."""
        params = list(block.arguments)
        if len(params) != len(args):
            raise NapkinError(f"interpret: a block takes {len(params)} arguments, got {len(args)}")
        current = dict(self.frame.sizes)
        for a in args:
            if isinstance(a, Named):
                current.update(a.sizes)
        current.update(sizes or {})
        outer, self.frame = self.frame, Frame(dict(zip(params, args, strict=True)), current, self.frame)
        try:
            for view in block.operations:
                op = view.operation
                if op.name in TERMINATORS:
                    return [self.operand(op, v) for v in op.operands]
                self.apply(op)
        finally:
            self.frame = outer
        raise NapkinError("interpret: a block ends without gpu.yield or func.return")

    def operand(self, op: ir.Operation, v: ir.Value) -> Value:
        found = self.frame.lookup(v)
        if found is None:
            raise self.fail(op, f"interpret: operand of '{op.name}' has no value")
        return found

    def apply(self, op: ir.Operation) -> None:
        """Apply the rule of `op` and bind its results."""
        rule = self.table.get(op.name)
        if rule is None:
            raise self.fail(op, f"interpret: no rule for op '{op.name}'")
        args = [self.operand(op, v) for v in op.operands]
        try:
            results = rule(self, op, args)
        except NapkinError:
            raise
        except (TypeError, ValueError, IndexError) as err:  # JAX shape or dtype errors
            raise self.fail(op, f"interpret: '{op.name}' failed: {err}") from err
        if len(results) != len(op.results):
            raise self.fail(op, f"interpret: '{op.name}' gave {len(results)} results, expected {len(op.results)}")
        for r, value in zip(op.results, results, strict=True):
            self.check(op, r.type, value)
            self.frame.values[r] = value

    def check(self, op: ir.Operation, t: ir.Type, value: Value) -> None:
        """A result array has its type's axes, in order, and at most its type's sizes."""
        if not is_array(t):
            return
        array = ArrayType.from_mlir(t)
        if not isinstance(value, Named) or value.axes != array.axes:
            got = list(value.axes) if isinstance(value, Named) else type(value).__name__
            raise self.fail(op, f"interpret: '{op.name}' gave {got}, its type has axes {list(array.axes)}")
        if any(value.size(a) > s for a, s in array.sizes.items()):
            raise self.fail(op, f"interpret: '{op.name}' gave sizes {value.sizes}, larger than its type {array}")


def find_function(program: ir.Module | ir.Operation | ir.OpView, name: str | None = None) -> ir.Operation:
    """The func.func to interpret: `program` itself, or its first (or `name`d) function."""
    op = program.operation
    if op.name == "func.func":
        return op
    functions = [v.operation for v in op.regions[0].blocks[0].operations if v.operation.name == "func.func"]
    if name is not None:
        functions = [f for f in functions if ir.StringAttr(f.attributes["sym_name"]).value == name]
    if not functions:
        raise NapkinError(f"interpret: no function @{name} in the module" if name else "interpret: no function")
    return functions[0]


def _input(interp: Interpreter, i: int, x: object, t: ir.Type) -> Value:
    """Input `i` bound to an argument of type `t`: an index (int) or a named array."""
    if isinstance(t, ir.IndexType):
        return as_int(x, f"input {i}")
    array = ArrayType.from_mlir(t)
    data = interp.xp.asarray(x, interp.dtype(array))
    if tuple(data.shape) != array.shape:
        raise NapkinError(f"interpret: input {i} has shape {tuple(data.shape)}, its type is {array}")
    return Named(data, array.axes)


def interpret(
    program: ir.Module | ir.Operation | ir.OpView,
    inputs: Sequence[object],
    precision: str = "f64",
    function: str | None = None,
    filename: str | None = None,
    arrays: str = "jax",
) -> list[jax.Array]:
    """Evaluate a napkin function on `inputs` (arrays in the layout of its argument types).

    `program` is a module (its first function, or the one named `function`) or a func.func.
    Index arguments take ints. `precision="f64"` is the float64 ground truth; `"same"`
    computes in the declared element types. Returns one array per result, in the layout of
    the result types. `filename` names the source in error locations. `arrays="numpy"`
    (precision f64 only) computes with numpy instead of jax.numpy: the same float64 values
    to rounding, without compiling each op for each new shape, and numpy arrays back.
    """
    f = find_function(program, function)
    block = f.regions[0].blocks[0]
    params = list(block.arguments)
    if len(inputs) != len(params):
        raise NapkinError(f"interpret: the function takes {len(params)} inputs, got {len(inputs)}")
    with jax.enable_x64(True), np.errstate(all="ignore"):
        interp = Interpreter(precision, filename, arrays=arrays)
        args = [_input(interp, i, x, p.type) for i, (x, p) in enumerate(zip(inputs, params, strict=True))]
        results = interp.run_block(block, args)
    out: list[jax.Array] = []
    for r in results:
        if not isinstance(r, Named):
            raise NapkinError("interpret: the function returns a value that is not an array")
        out.append(r.data)
    return out
