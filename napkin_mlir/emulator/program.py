"""Loading a kernel: gpu-stage IR compiled into `Steps` the machine runs.

`load_kernel` parses the IR, finds the kernel (a `gpu.func`, or the host function holding a
`gpu.launch` for the SIMT rule's gpu stage) and hands its body to a `Compiler`. The compiler
gives every SSA value a slot of the machine's environment and turns each op into a step
(a closure over those slots) by the op's rule: `RULES` maps an op name to the function that
compiles it, registered with the `rule(...)` decorator. The rules live in one module per
instruction family (`ops_arith.py`, `ops_control.py`, `ops_sync.py`, `ops_memory.py`,
`ops_async.py`, `ops_mma.py`, `ops_wgmma.py`, `ops_tma.py`); the package's `__init__` imports
every family module, so the table is full whenever anything of the emulator is imported. A new
family is a new module of rules added to that import.

A kernel's arguments are memrefs (arrays) or `!llvm.ptr` (a TMA tensor map: a device pointer
to the 128-byte `CUtensorMap`; `run.run_kernel` binds a `machine.TensorMapRef` to it).

Also here: the numpy types of MLIR types (`numpy_dtype`, `element_type`, `vector_shape`),
which the rules use when compiling their ops.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import EmulationError, Step, Steps
from napkin_mlir.ir.context import format_location, parse_module

# --- MLIR types as numpy types ---------------------------------------------------------------------


def numpy_dtype(t: ir.Type) -> np.dtype:
    """The numpy dtype of an MLIR scalar type (index is int64, i1 is bool)."""
    import ml_dtypes

    if isinstance(t, ir.IndexType):
        return np.dtype(np.int64)
    if isinstance(t, ir.IntegerType):
        return np.dtype({1: np.bool_, 8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64}[t.width])
    if isinstance(t, ir.BF16Type):
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype({"f16": np.float16, "f32": np.float32, "f64": np.float64}[str(t)])


def is_pointer(t: ir.Type) -> bool:
    """Whether `t` is an `!llvm.ptr` (a kernel argument that is a TMA tensor map)."""
    return str(t) == "!llvm.ptr"


def element_type(t: ir.Type) -> ir.Type:
    return ir.ShapedType(t).element_type if isinstance(t, (ir.VectorType, ir.MemRefType)) else t


def vector_shape(t: ir.Type) -> tuple[int, ...]:
    return tuple(ir.VectorType(t).shape) if isinstance(t, ir.VectorType) else ()


# --- the rule table --------------------------------------------------------------------------------

#: Ops that end a block: not compiled (`Compiler.terminator` reads the values they yield).
TERMINATORS = {"scf.yield", "gpu.return", "gpu.terminator", "func.return"}
#: Ops that only structure the program: not counted as instructions.
STRUCTURAL = {"scf.for", "scf.if", "gpu.launch", "memref.view", "memref.subview", "gpu.dynamic_shared_memory"}

Rule = Callable[[ir.Operation, "Compiler"], Step]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the rule that compiles the ops `names`."""

    def register(fn: Rule) -> Rule:
        for n in names:
            if n in RULES:
                raise AssertionError(f"two emulator rules for '{n}'")
            RULES[n] = fn
        return fn

    return register


# --- compiling -------------------------------------------------------------------------------------


class Compiler:
    """Turns a region's ops into a list of closures over value slots (one rule per op)."""

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines = text.splitlines()
        self.slots: dict[ir.Value, int] = {}
        self.op_names: list[str] = []  # op id -> "file:line (name)", for diagnostics

    def slot(self, value: ir.Value) -> int:
        if value not in self.slots:
            self.slots[value] = len(self.slots)
        return self.slots[value]

    def where(self, op: ir.Operation) -> str:
        return f"{format_location(op.location, self.filename)} ({op.name})"

    def result_name(self, op: ir.Operation) -> str:
        """The name the source text gives the op's first result (for messages)."""
        line = re.search(r":(\d+):\d+", str(op.location))
        found = re.match(r"\s*(%[\w.$-]+)", self.lines[int(line.group(1)) - 1]) if line else None
        return found.group(1) if found else op.results[0].get_name()

    def op_id(self, op: ir.Operation) -> int:
        self.op_names.append(self.where(op))
        return len(self.op_names) - 1

    def block(self, block: ir.Block) -> Steps:
        steps = Steps()
        for view in block.operations:
            op = view.operation
            if op.name in TERMINATORS:
                continue
            compile_op = RULES.get(op.name)
            if compile_op is None:
                raise EmulationError(f"the emulator has no rule for '{op.name}'", self.where(op))
            steps.append(compile_op(op, self))
            steps.ops += op.name not in STRUCTURAL
        return steps

    def terminator(self, block: ir.Block) -> list[int]:
        last = list(block.operations)[-1].operation
        return [self.slot(v) for v in last.operands]


@dataclass
class Kernel:
    """A gpu.func compiled to steps, with its argument slots and types (memrefs, or
    `!llvm.ptr` for a TMA tensor map)."""

    name: str
    args: list[tuple[int, ir.Type]]
    body: Steps
    op_names: list[str]
    slots: int


def _enclosing_func(op: ir.Operation) -> ir.Operation | None:
    parent = op.parent
    while parent is not None and parent.name != "func.func":
        parent = parent.parent
    return parent


def _kernel_functions(module: ir.Module) -> list[ir.Operation]:
    """The module's kernels: its `gpu.func`s marked `gpu.kernel`, or else the host functions
    that hold a `gpu.launch` (the SIMT rule's gpu stage)."""
    funcs: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "gpu.func" and "gpu.kernel" in op.attributes:
            funcs.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    if funcs:
        return funcs
    launches: list[ir.Operation] = []
    module.operation.walk(lambda o: (launches.append(o) if o.name == "gpu.launch" else None) or ir.WalkResult.ADVANCE)
    return list({id(h): h for h in (_enclosing_func(o) for o in launches) if h is not None}.values())


def load_kernel(text: str, filename: str = "kernel.mlir", entry: str | None = None) -> Kernel:
    """Parse gpu-stage IR (a gpu.module holding a kernel gpu.func) and compile its body.
    Needs an active MLIR context."""
    module = parse_module(text, filename)  # held while compiling: the ops below live in it
    funcs = _kernel_functions(module)
    names = [ir.StringAttr(f.attributes["sym_name"]).value for f in funcs]
    if entry is not None:
        funcs = [f for f, n in zip(funcs, names, strict=True) if n == entry]
    if len(funcs) != 1:
        wanted = f"kernel '{entry}'" if entry else "exactly one kernel (a gpu.func, or a func.func with a gpu.launch)"
        raise EmulationError(f"expected {wanted} in the IR, found {names or 'none'}", filename)
    func = funcs[0]
    c = Compiler(filename, text)
    block = func.regions[0].blocks[0]
    args = []
    for a in block.arguments:
        if isinstance(a.type, ir.MemRefType):
            args.append((c.slot(a), ir.MemRefType(a.type)))
        elif is_pointer(a.type):
            args.append((c.slot(a), a.type))
        else:
            raise EmulationError(
                f"kernel argument of type {a.type}: the emulator takes memrefs and !llvm.ptr (a TMA tensor map)",
                filename,
            )
    body = c.block(block)
    return Kernel(ir.StringAttr(func.attributes["sym_name"]).value, args, body, c.op_names, len(c.slots))
