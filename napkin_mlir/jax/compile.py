"""Compiling a diagram for `napkin_mlir.jax`: the one module of the package that needs MLIR.

`prepare(text, inputs)` parses a diagram, verifies it and fits it to the arrays it will be
called on: each axis takes the size the inputs give it (an axis named by several inputs must
agree), and a diagram written in f16/bf16 runs in the inputs' dtype (`change_dtype`: its f32
accumulators stay f32). Then

* `compile_cpu` takes the fitted diagram through its derivation (`derive.auto.derive`), the
  loop lowering and the CPU tail, appends the FFI handler (`cpu_ffi.handler_text`) and returns
  the LLVM-dialect text the ExecutionEngine JIT-compiles (the disk cache stores it);
* `compile_gpu` makes the PTX and its launch description: attention in bf16/f16 with a head
  dim that is a multiple of 16 takes the tensor-core rule (tiles from the cost model for the
  target, as `napkin compile` chooses them), everything else the SIMT rule on the derived loop
  program.

Every function here needs a napkin context; `compile_cpu`/`compile_gpu` open their own.
Nothing here imports `napkin_mlir.check`, whose references switch on JAX's float64 mode for
the whole process: a user's program must not change precision because it called a kernel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mlir import ir
from mlir.passmanager import PassManager

from napkin_mlir.backends.cpu import signature_of
from napkin_mlir.backends.gpu.simt import compile_gpu as compile_simt
from napkin_mlir.backends.gpu.tensorcore import compile_tensorcore_attention
from napkin_mlir.backends.gpu.tensorcore_plan import tiles_fit_kernel
from napkin_mlir.derive.auto import derive
from napkin_mlir.derive.tiles import choose_tiles
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.arrays import ArrayType, is_array
from napkin_mlir.ir.context import format_diagnostics, napkin_context, parse_module
from napkin_mlir.ir.files import change_dtype, resize, verify_or_raise
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.jax.cpu_ffi import BufferSpec, handler_text, memref_arg_types
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import CPU_PIPELINE, LOOPS_PIPELINE, PARTITIONS, derivation

#: The cost model's GPU for each target (as `napkin compile` uses it).
GPU_OF = {"sm_80": "a100", "sm_90a": "h100"}


def _signature(module: ir.Module) -> tuple[list[str], list[ArrayType], list[ArrayType]]:
    f = diagram_functions(module.operation)[0]
    ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
    block = f.regions[0].blocks[0]
    if "arg_names" in f.attributes:
        names = [ir.StringAttr(n).value for n in ir.ArrayAttr(f.attributes["arg_names"])]
    else:
        names = [f"%arg{i}" for i in range(len(block.arguments))]
    ins = [ArrayType.from_mlir(a.type) for a in block.arguments]
    outs = [ArrayType.from_mlir(t) for t in ftype.results if is_array(t)]
    return names, ins, outs


def signature(module: ir.Module) -> tuple[list[str], list[BufferSpec], list[BufferSpec]]:
    """Argument names, inputs and outputs of the module's diagram."""
    names, ins, outs = _signature(module)
    return names, [BufferSpec(t.dtype, t.shape) for t in ins], [BufferSpec(t.dtype, t.shape) for t in outs]


def prepare(text: str, filename: str, inputs: Sequence[BufferSpec]) -> ir.Module:
    """The diagram in `text`, verified and fitted to `inputs` (needs an active napkin context)."""
    module = parse_module(text, filename)
    functions = diagram_functions(module.operation)
    if len(functions) != 1:
        raise UsageError(f"{filename}: expected one function of napkin arrays, found {len(functions)}")
    for arg in functions[0].regions[0].blocks[0].arguments:
        if not is_array(arg.type):
            raise UsageError(f"{filename}: argument of type {arg.type} is not a napkin array (a JAX input must be one)")
    verify_or_raise(module, filename)
    f = functions[0]
    if "arg_names" not in f.attributes:  # the lowering's signature reads them (backends/cpu.py signature_of)
        count = len(f.regions[0].blocks[0].arguments)
        f.attributes["arg_names"] = ir.ArrayAttr.get([ir.StringAttr.get(f"arg{i}") for i in range(count)])
    names, declared, _ = _signature(module)
    if len(inputs) != len(declared):
        raise UsageError(
            f"{filename}: the diagram takes {len(declared)} inputs ({', '.join(names)}), got {len(inputs)}"
        )
    dims: dict[str, int] = {}
    origin: dict[str, str] = {}
    for name, t, spec in zip(names, declared, inputs, strict=True):
        if len(spec.shape) != len(t.axes):
            raise UsageError(
                f"{filename}: input {name} has axes ({', '.join(t.axes)}), got an array of rank {len(spec.shape)} "
                f"with shape {spec.shape}"
            )
        for axis, size in zip(t.axes, spec.shape, strict=True):
            if axis in dims and dims[axis] != size:
                raise UsageError(
                    f"{filename}: axis '{axis}' is {dims[axis]} in input {origin[axis]} but {size} in input {name}"
                )
            dims[axis], origin[axis] = size, name
    if any(t.sizes.get(a, s) != s for t in declared for a, s in dims.items()):
        resize(module, dims, filename)
        verify_or_raise(module, filename)
    wanted = {spec.dtype for spec in inputs}
    _, now, _ = _signature(module)
    if [t.dtype for t in now] != [spec.dtype for spec in inputs]:
        if len(wanted) != 1:
            given = ", ".join(f"{n}: {s.dtype}" for n, s in zip(names, inputs, strict=True))
            raise UsageError(f"{filename}: inputs of mixed dtypes ({given}) for a diagram declared in one")
        change_dtype(module, next(iter(wanted)), filename)
        verify_or_raise(module, filename)
        _, now, _ = _signature(module)
    for name, t, spec in zip(names, now, inputs, strict=True):
        if t.dtype != spec.dtype:
            raise UsageError(f"{filename}: input {name} is {spec.dtype}, the diagram takes {t.dtype}")
    return module


def _low_precision(inputs: Sequence[BufferSpec]) -> str | None:
    return next((s.dtype for s in inputs if s.dtype in ("f16", "bf16")), None)


def _lowered_function(module: ir.Module, name: str) -> ir.Operation:
    for op in module.body.operations:
        if op.operation.name == "llvm.func" and ir.StringAttr(op.operation.attributes["sym_name"]).value == name:
            return op.operation
    raise NapkinError(f"internal error: the CPU lowering left no llvm.func @{name}")


def compile_cpu(
    text: str, filename: str, inputs: Sequence[BufferSpec], tiles: dict[str, int] | None, symbol: str, label: str
) -> tuple[str, list[BufferSpec]]:
    """The diagram for the host CPU with its FFI handler `symbol`: (LLVM-dialect text, outputs)."""
    from passes.erase_memory_spaces import EraseMemorySpacesOptions
    from passes.erase_memory_spaces import run as erase_memory_spaces

    with napkin_context(), ir.Location.unknown():
        module = prepare(text, filename, inputs)
        d = derive(module, tiles, None, _low_precision(inputs), filename=filename)
        run_pipeline(module, d.pipeline(), filename=filename)
        run_pipeline(module, f"builtin.module(napkin-verify,{LOOPS_PIPELINE})", filename=filename)
        funcs = [op.operation for op in module.body.operations if "napkin.outputs" in op.operation.attributes]
        if len(funcs) != 1:
            raise NapkinError(f"internal error: the loop program has {len(funcs)} kernel functions, expected one")
        sig = signature_of(funcs[0])
        ins = [BufferSpec(t.dtype, t.shape) for t in sig.inputs]
        outs = [BufferSpec(t.dtype, t.shape) for t in sig.outputs]
        if ins != list(inputs):
            raise NapkinError(f"internal error: the kernel takes {ins}, the inputs are {list(inputs)}")
        try:
            erase_memory_spaces(module.operation, EraseMemorySpacesOptions())
            PassManager.parse(CPU_PIPELINE).run(module.operation)
        except ir.MLIRError as err:
            raise NapkinError(f"CPU lowering failed:\n{format_diagnostics(err)}") from None
        kernel = _lowered_function(module, sig.name)
        expected = "!llvm.func<void (" + ", ".join(
            t.removeprefix("!llvm.") for s in (*ins, *outs) for t in memref_arg_types(len(s.shape))
        )
        expected += ")>"
        actual = str(ir.TypeAttr(kernel.attributes["function_type"]).value)
        if actual != expected:
            raise NapkinError(
                f"internal error: the lowered kernel has type {actual}, the FFI handler expects {expected}"
            )
        handler = ir.Module.parse(handler_text(symbol, sig.name, ins, outs, label))
        last = module.body.operations[len(module.body.operations) - 1].operation
        for op in list(handler.body.operations)[1:]:  # the first is the kernel's declaration
            op.operation.move_after(last)
            last = op.operation
        if not module.operation.verify():
            raise NapkinError("internal error: the module with the FFI handler does not verify")
        return str(module), outs


@dataclasses.dataclass(frozen=True)
class AttentionProblem:
    """Attention in the napkin layout, for the tensor-core rule (`dims`: b, h, q, x, d)."""

    dims: dict[str, int]
    causal: bool
    kv_heads: int | None


def _tensorcore_tiles(
    problem: AttentionProblem, dtype: str, sizes: dict[str, int], target: str, tiles: dict[str, int]
) -> dict[str, int]:
    """The given tiles, completed by the cost model's choice among those the tensor-core kernel
    can take (as `napkin compile` chooses them)."""
    grouped, streamed = PARTITIONS["attention"]
    if all(a in tiles for a in (*grouped, streamed)):
        return dict(tiles)
    choice = choose_tiles(
        "attention",
        problem.dims,
        dtype,
        GPU_OF[target],
        fixed=dict(tiles),
        feasible=lambda t: tiles_fit_kernel(t, sizes, dtype),
        tensor_cores=True,
        warp_rows=16,
        causal=problem.causal,
        kv_heads=problem.kv_heads,
    )
    return {a: choice.tiles[a] for a in (*grouped, streamed) if a in choice.tiles}


def compile_gpu(
    text: str,
    filename: str,
    inputs: Sequence[BufferSpec],
    tiles: dict[str, int] | None,
    target: str,
    attention: AttentionProblem | None,
) -> dict[str, Any]:
    """PTX and launch description (a JSON-able dict, the GPU cache entry) for `target`."""
    if target not in GPU_OF:
        raise UsageError(f"unknown GPU target '{target}' (expected {', '.join(GPU_OF)})")
    tiles = dict(tiles or {})
    with napkin_context(), ir.Location.unknown():
        module = prepare(text, filename, inputs)
        names, _, _ = signature(module)
        low = _low_precision(inputs)
        sizes = {a: s for t in _signature(module)[1] for a, s in t.sizes.items()}
        use_tc = attention is not None and low is not None and tiles_fit_kernel({"q": 16, "x": 16}, sizes, low)
        if use_tc:
            assert attention is not None and low is not None
            chosen = _tensorcore_tiles(attention, low, sizes, target, tiles)
            run_pipeline(module, derivation("attention", sizes, chosen), filename=filename)
            kernel, _ = compile_tensorcore_attention(module, target, stop_after="ptx")
        else:
            d = derive(module, tiles, GPU_OF[target], low, filename=filename)
            run_pipeline(module, d.pipeline(), filename=filename)
            run_pipeline(module, f"builtin.module(napkin-verify,{LOOPS_PIPELINE})", filename=filename)
            found, _ = compile_simt(module, target, stop_after="ptx")
            if found is None:
                raise NapkinError("internal error: the SIMT rule returned no kernel")
            kernel = found
    return {
        "target": target,
        "kind": "tensorcore" if use_tc else "simt",
        "entry": kernel.entry,
        "grid": list(kernel.grid),
        "block": list(kernel.block),
        "dynamic_smem_bytes": kernel.dynamic_smem_bytes,
        "args": [dataclasses.asdict(a) for a in kernel.args],
        "ptx": kernel.ptx,
        "input_names": names,
        "problem": kernel.problem,
    }


def attention_diagram(layout: str, sizes: dict[str, int], kv_heads: int, dtype: str, causal: bool, scale: float) -> str:
    """The text of `O = softmax(scale * Q K^T [causal]) V`, the built-in attention diagram with
    a free scale, in `layout` "jax" (Q: b q h [r] d, K/V: b x h d, as jax.nn.dot_product_attention
    lays them out) or "napkin" (Q: b h [r] q d, K/V: b h x d, what the tensor-core rule takes).
    `sizes` gives b, h (query heads), q, x, d; grouped-query when kv_heads < h."""
    from napkin_mlir.ir.builders import DiagramBuilder
    from napkin_mlir.ir.diagrams import ACCUMULATOR

    b, h, q, x, d = (sizes[a] for a in ("b", "h", "q", "x", "d"))
    grouped = kv_heads != h
    size = {"b": b, "h": kv_heads, "r": h // kv_heads, "q": q, "x": x, "d": d}
    heads = ("h", "r") if grouped else ("h",)
    if layout == "jax":
        q_axes, kv_axes = ("b", "q", *heads, "d"), ("b", "x", "h", "d")
    else:
        q_axes, kv_axes = ("b", *heads, "q", "d"), ("b", "h", "x", "d")
    with napkin_context(), ir.Location.unknown():
        builder = DiagramBuilder(
            "attention",
            Q=ArrayType(q_axes, tuple(size[a] for a in q_axes), dtype),
            K=ArrayType(kv_axes, tuple(size[a] for a in kv_axes), dtype),
            V=ArrayType(kv_axes, tuple(size[a] for a in kv_axes), dtype),
        )
        s_axes = tuple("x" if a == "d" else a for a in q_axes)
        s = builder.contract(builder["Q"], builder["K"], s_axes, dtype=ACCUMULATOR)
        s = builder.scale(s, scale)
        if causal:
            s = builder.causal_mask(s, rows="q", cols="x")
        p = builder.cast(builder.softmax(s, "x"), dtype)
        o = builder.contract(p, builder["V"], q_axes, dtype=ACCUMULATOR)
        module = builder.ret(builder.cast(o, dtype))
        verify_or_raise(module, "<attention>")
        return str(module)
