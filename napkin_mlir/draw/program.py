"""The drawing program: a pure-Python copy of the napkin IR that the pictures are made from.

`extract(module)` reads the first napkin function of a module into a `Program`: arrays become
`Wire`s (types read with `ArrayType.from_mlir`), operations `Box`es (attributes read from
builtin attributes, never from printed text), regions `Block`s (a group's body; a stream's
init, step and finish). `stage_of` says which stage of the derivation a program is at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import DTYPE_BYTES, ArrayType, is_array
from napkin_mlir.ir.ops import op_info
from napkin_mlir.ir.regions import diagram_functions

__all__ = ["Block", "Box", "Program", "Wire", "extract", "stage_of"]


@dataclass
class Wire:
    """An array value (a wire of the diagram)."""

    id: int
    array: ArrayType
    name: str | None = None

    @property
    def level(self) -> str | None:
        return self.array.level

    def label(self, drop_unit: bool = True) -> str:
        """`q64 d32 bf16`: axis names with sizes, then the element type (size-1 axes left out)."""
        pairs = list(zip(self.array.axes, self.array.shape, strict=True))
        kept = [(a, n) for a, n in pairs if not (drop_unit and n == 1)] or pairs
        return " ".join(f"{a}{n}" for a, n in kept) + f" {self.array.dtype}"

    @property
    def nbytes(self) -> int:
        return self.array.elements * DTYPE_BYTES.get(self.array.dtype, 4)


@dataclass
class Box:
    """An operation (a box), possibly holding regions (group: body; stream: init, step, finish)."""

    id: int
    name: str
    kind: str
    attrs: dict[str, object]
    inputs: list[int]
    outputs: list[int]
    regions: list[Block] = field(default_factory=list)


@dataclass
class Block:
    """A region's block: argument wires, boxes in program order, yielded wires."""

    args: list[int]
    boxes: list[Box]
    results: list[int]
    role: str = "body"


@dataclass
class Program:
    """A napkin function: its wires by id and its body."""

    name: str
    wires: dict[int, Wire]
    body: Block

    def walk(self) -> list[Box]:
        """Every box, nested ones included, in program order (a container before its contents)."""
        found: list[Box] = []

        def visit(block: Block) -> None:
            for box in block.boxes:
                found.append(box)
                for r in box.regions:
                    visit(r)

        visit(self.body)
        return found


def attr_value(attr: ir.Attribute) -> object:
    """A builtin attribute as a Python value (strings, numbers, lists); None for other kinds."""
    if isinstance(attr, ir.StringAttr):
        return attr.value
    if isinstance(attr, ir.FloatAttr):
        return attr.value
    if isinstance(attr, ir.IntegerAttr):
        return attr.value
    if isinstance(attr, ir.DenseI64ArrayAttr):
        return list(attr)
    if isinstance(attr, ir.ArrayAttr):
        return [attr_value(a) for a in attr]
    return None


class _Extractor:
    """Numbers the values of one function as wires and copies its blocks."""

    def __init__(self) -> None:
        self.ids: dict[ir.Value, int] = {}
        self.wires: dict[int, Wire] = {}
        self.counter = 0

    def wire(self, value: ir.Value, name: str | None = None) -> int | None:
        """The wire id of an array value (numbered on first sight); None for non-arrays."""
        if value in self.ids:
            return self.ids[value]
        if not is_array(value.type):
            return None
        self.counter += 1
        self.ids[value] = self.counter
        self.wires[self.counter] = Wire(self.counter, ArrayType.from_mlir(value.type), name)
        return self.counter

    def block(self, block: ir.Block, role: str, names: list[str] | None = None) -> Block:
        args = _arrays(
            [self.wire(a, names[i] if names and i < len(names) else None) for i, a in enumerate(block.arguments)]
        )
        ops = [op.operation for op in block.operations]
        boxes: list[Box] = []
        results: list[int] = []
        for i, op in enumerate(ops):
            operands = [self.wire(v) for v in op.operands]
            if i == len(ops) - 1 and op.name in ("func.return", "gpu.yield"):
                results = _arrays(operands)
                continue
            box = self.box(op, _arrays(operands))
            if box is not None:
                boxes.append(box)
        return Block(args, boxes, results, role)

    def box(self, op: ir.Operation, ins: list[int]) -> Box | None:
        """The box of an op (its regions copied too); None for scalar bookkeeping."""
        info = op_info(op.name)
        outs = _arrays([self.wire(r) for r in op.results])
        if info is None and not ins and not outs:
            return None  # index constants and other scalar bookkeeping
        self.counter += 1
        attrs = {str(k): attr_value(op.attributes[str(k)]) for k in op.attributes}
        name = info.name if info else op.name
        box = Box(self.counter, name, info.kind if info else "other", attrs, ins, outs)
        if name == "group":
            box.regions = [self.block(op.regions[0].blocks[0], "group")]
        elif name == "stream":
            box.regions = [
                self.block(op.regions[k].blocks[0], role) for k, role in enumerate(("init", "step", "finish"))
            ]
        return box


def _arrays(values: list[int | None]) -> list[int]:
    return [v for v in values if v is not None]


def extract(module: ir.Module | ir.Operation) -> Program:
    """The first napkin function of `module` as a Program; NapkinError if there is none."""
    operation = module.operation if isinstance(module, ir.Module) else module
    funcs = diagram_functions(operation)
    if not funcs:
        raise NapkinError(
            "no napkin diagram in the module (draw takes the diagram and partitioned stages: "
            "a func.func holding napkin ops)"
        )
    func = funcs[0]
    names: list[str] = []
    if "arg_names" in func.attributes:
        names = [str(n) for n in (attr_value(func.attributes["arg_names"]) or [])]
    extractor = _Extractor()
    body = extractor.block(func.regions[0].blocks[0], "function", names)
    name = str(attr_value(func.attributes["sym_name"])) if "sym_name" in func.attributes else "diagram"
    return Program(name, extractor.wires, body)


def stage_of(program: Program) -> str:
    """A short description of the stage a program is at."""
    boxes = program.walk()
    kinds = {b.name for b in boxes}
    if "group" in kinds or "stream" in kinds:
        parts = [p for p in ("group", "stream") if p in kinds]
        return "partitioned (levels, " + " + ".join(parts) + " partition)"
    if any(w.level for w in program.wires.values()):
        return "levels assigned (transfers, fusion)"
    return "plain diagram"
