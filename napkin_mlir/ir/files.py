"""Diagrams from files: read, parse and verify a user's `.mlir` file, and re-size its axes.

`load_diagram(path, dims)` is the one door through which every command takes a file: the
text is read with clean errors, parsed (located diagnostics), checked by the Python verifier
before anything else touches it (the bindings abort on some malformed programs, never on a
verified one), and, with `dims`, re-sized: a diagram written once at small sizes runs at any
size. Re-sizing retypes every array whose axes include a named axis (arguments, results of
every op, region arguments, the function type) and verifies again.
"""

from __future__ import annotations

from pathlib import Path

from mlir import ir

from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.arrays import ArrayType, is_array
from napkin_mlir.ir.context import format_location, parse_module
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.ir.verifier import verify_napkin

PARTITION_OPS = ("napkin.group", "napkin.stream")


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise UsageError(f"cannot read '{path}': {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"cannot read '{path}': not UTF-8 text ({err.reason})") from None


def verify_or_raise(module: ir.Module, filename: str) -> None:
    """The Python verifier's first finding as a located NapkinError."""
    found = verify_napkin(module.operation)
    if found:
        first = found[0]
        raise NapkinError(f"{format_location(first.location, filename)}: {first.message}")


def load_diagram(path: str | Path, dims: dict[str, int] | None = None, dtype: str | None = None) -> ir.Module:
    """Parse and verify the napkin program in `path` (needs an active napkin context), re-sized
    by `dims` (axis name -> size) and its inputs' element type changed to `dtype` when given."""
    filename = str(path)
    module = parse_module(read_text(path), filename)
    if not diagram_functions(module.operation):
        raise UsageError(f"{filename}: no napkin diagram (a function of napkin arrays) in the file")
    verify_or_raise(module, filename)
    if dims:
        resize(module, dims, filename)
        verify_or_raise(module, filename)
    if dtype:
        change_dtype(module, dtype, filename)
        verify_or_raise(module, filename)
    return module


def axis_sizes(module: ir.Module) -> dict[str, int]:
    """Axis name -> size over the arguments and results of the module's first diagram."""
    f = diagram_functions(module.operation)[0]
    sizes: dict[str, int] = {}
    for arg in f.regions[0].blocks[0].arguments:
        if is_array(arg.type):
            sizes.update(ArrayType.from_mlir(arg.type).sizes)
    ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
    for t in ftype.results:
        if is_array(t):
            sizes.update(ArrayType.from_mlir(t).sizes)
    return sizes


def low_precision_of(module: ir.Module) -> str | None:
    """The 16-bit element type (f16, bf16) of the first diagram's inputs, if any: the dtype the
    cost model and tensor cores price the program in."""
    f = diagram_functions(module.operation)[0]
    dtypes = [ArrayType.from_mlir(a.type).dtype for a in f.regions[0].blocks[0].arguments if is_array(a.type)]
    return next((d for d in dtypes if d in LOW_PRECISION), None)


def _retyped(t: ir.Type, dims: dict[str, int], dtypes: dict[str, str] | None = None) -> ir.Type:
    if not is_array(t):
        return t
    array = ArrayType.from_mlir(t)
    for axis, size in dims.items():
        if axis in array.axes:
            array = array.with_size(axis, size)
    if dtypes and array.dtype in dtypes:
        array = array.with_dtype(dtypes[array.dtype])
    return array.to_mlir()


def _retype_block(block: ir.Block, dims: dict[str, int], dtypes: dict[str, str] | None = None) -> None:
    for arg in block.arguments:
        arg.set_type(_retyped(arg.type, dims, dtypes))
    for op in block.operations:
        for result in op.results:
            result.set_type(_retyped(result.type, dims, dtypes))
        if op.operation.name == "napkin.map":
            continue  # its scalar region keeps its own types: a map's operands are converted to them
        for region in op.operation.regions:
            for inner in region.blocks:
                _retype_block(inner, dims, dtypes)


def _fix_function_type(f: ir.Operation, dims: dict[str, int], dtypes: dict[str, str] | None = None) -> None:
    block = f.regions[0].blocks[0]
    ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
    results = [_retyped(t, dims, dtypes) for t in ftype.results]
    f.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get([a.type for a in block.arguments], results))


LOW_PRECISION = ("f16", "bf16")


def change_dtype(module: ir.Module, dtype: str, filename: str = "<input>") -> None:
    """Every f16/bf16 array of the diagram becomes `dtype` (a bf16 diagram, with its f32
    accumulators, run in f32 or f16); accumulators and other f32 arrays are unchanged."""
    if dtype not in ("f32", *LOW_PRECISION):
        raise UsageError(f"--dtype: unsupported dtype '{dtype}' (expected f32, f16 or bf16)")
    for f in diagram_functions(module.operation):
        block = f.regions[0].blocks[0]
        found = {ArrayType.from_mlir(a.type).dtype for a in block.arguments if is_array(a.type)}
        low = sorted(found & set(LOW_PRECISION))
        if not low:
            if dtype in found:
                continue
            raise UsageError(
                f"{filename}: --dtype {dtype}: the diagram's inputs are {', '.join(sorted(found))}; "
                "write it in f16 or bf16 (with its f32 accumulators) to run it in other precisions"
            )
        mapping = {d: dtype for d in low}
        _retype_block(block, {}, mapping)
        _fix_function_type(f, {}, mapping)


def resize(module: ir.Module, dims: dict[str, int], filename: str = "<input>") -> None:
    """Give the named axes of every diagram in `module` new sizes (plain diagrams only)."""
    known = axis_sizes(module)
    unknown = sorted(set(dims) - set(known))
    if unknown:
        raise UsageError(f"--dims: unknown axis '{unknown[0]}' (the diagram's axes are {', '.join(known)})")
    for f in diagram_functions(module.operation):
        block = f.regions[0].blocks[0]
        for op in block.operations:
            if op.operation.name in PARTITION_OPS:
                raise UsageError(
                    f"{format_location(op.operation.location, filename)}: --dims re-sizes plain diagrams; this one "
                    f"is already partitioned ('{op.operation.name}')"
                )
        _retype_block(block, dims)
        _fix_function_type(f, dims)
