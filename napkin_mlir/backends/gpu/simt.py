"""The SIMT rule: any loop program on the GPU's CUDA cores, mapped with upstream transforms.

Every program that the tensor-core rule (`tensorcore.py`) does not take comes here
(`compile_gpu`): the same loop program the CPU runs, mapped in four steps (see docs/gpu.md):

1. every linalg op is cut into chunks of 32 along its last parallel axis
   (`transform.structured.tile_using_for`), and each chunk tiled over the CTA's threads
   (`transform.structured.tile_using_forall`, that axis over `#gpu.thread<x>`, the one before
   over `#gpu.thread<y>`): consecutive threads of a warp take consecutive elements, so global
   accesses coalesce and shared-memory rows are read without bank conflicts;
2. the group loop becomes the grid (`transform.gpu.map_forall_to_blocks`) and the thread
   loops are mapped with barriers between them (`transform.gpu.map_nested_forall_to_threads`);
3. the tile buffers become views of one dynamic shared-memory buffer. In this SIMT mapping
   the register-level tiles are shared by the CTA's threads, so they live in shared memory
   too (the tensor-core rule keeps them in registers as MMA fragments);
4. `gpu-kernel-outlining`, the upstream NVVM tail (`GPU_PIPELINE`, pastes into mlir-opt) and
   `gpu-module-to-binary{format=isa}` give PTX (`nvvm.py`); `ptxas.py` assembles the cubin.

`compile_gpu` returns a `GpuKernel` (`sidecar.py`) that tells a runner how to launch it:
entry name, grid, block, dynamic shared memory bytes and the arguments in order.
"""

from __future__ import annotations

import re

from mlir import ir
from mlir.dialects import arith, memref
from mlir.dialects import gpu as gpu_d
from mlir.dialects.transform import interpreter
from mlir.passmanager import PassManager

from napkin_mlir.backends.cpu import signature_of
from napkin_mlir.backends.gpu.nvvm import check_target, nvvm_pipeline, ptx_of
from napkin_mlir.backends.gpu.sidecar import GpuKernel, KernelArg
from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_diagnostics
from napkin_mlir.ir.regions import retype_memory_spaces
from napkin_mlir.pipeline.stages import GPU_PIPELINE

#: Threads per CTA of the SIMT mapping: 32 along x (the contiguous axis), 4 along y.
BLOCK = (32, 4, 1)


# --- mapping to threads ------------------------------------------------------------------------


def _iterators(op: ir.Operation) -> list[str]:
    if op.name == "linalg.fill":
        return ["parallel"] * ir.MemRefType(op.operands[1].type).rank
    return [str(a).split("<")[1].rstrip(">") for a in ir.ArrayAttr(op.attributes["iterator_types"])]


def _thread_tiling(op: ir.Operation) -> tuple[list[int], list[str]]:
    """num_threads per loop (0 = not split) and the thread mapping of the split loops."""
    iters = _iterators(op)
    parallel = [i for i, t in enumerate(iters) if t == "parallel"]
    counts = [0] * len(iters)
    mapping: list[str] = []
    if parallel:
        counts[parallel[-1]] = BLOCK[0]
        mapping.append("#gpu.thread<x>")
        if len(parallel) > 1:
            counts[parallel[-2]] = BLOCK[1]
            mapping.insert(0, "#gpu.thread<y>")
    return counts, mapping


def _check_one_grid_loop(module: ir.Module) -> None:
    """Refuse (NapkinError) unless the program has exactly one outermost scf.forall, the
    group partition that becomes the grid (`map_forall_to_blocks` needs a unique one)."""
    outer: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "scf.forall":
            outer.append(op)
            return ir.WalkResult.SKIP
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit, ir.WalkOrder.PRE_ORDER)
    if len(outer) != 1:
        found = "none" if not outer else f"{len(outer)}"
        raise NapkinError(
            "the SIMT rule maps one group partition (an outermost scf.forall from a napkin.group) onto the grid, "
            f"and this program has {found}: group-partition a mapped axis first (napkin-group-partition)"
        )


def map_to_threads(module: ir.Module) -> None:
    """Tile every linalg op over the CTA's threads, then map groups to blocks and threads."""
    ops: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name in ("linalg.generic", "linalg.fill"):
            ops.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    _check_one_grid_loop(module)
    steps = []
    for i, op in enumerate(ops):
        op.attributes["napkin.thread_tile"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), i)
        counts, mapping = _thread_tiling(op)
        if not mapping:
            continue
        # chunks of BLOCK[0] along the loop mapped to thread x first, so that consecutive threads
        # of a warp take consecutive elements (coalesced, conflict-free), not a block each
        x_loop = max(k for k, c in enumerate(counts) if c)
        chunk = [BLOCK[0] if k == x_loop else 0 for k in range(len(counts))]
        steps.append(
            f"    %m{i} = transform.structured.match attributes{{napkin.thread_tile = {i} : i64}} in %root"
            " : (!transform.any_op) -> !transform.any_op\n"
            f"    %c{i}, %l{i} = transform.structured.tile_using_for %m{i} tile_sizes [{', '.join(map(str, chunk))}]"
            " : (!transform.any_op) -> (!transform.any_op, !transform.any_op)\n"
            f"    %t{i}, %f{i} = transform.structured.tile_using_forall %c{i} num_threads [{', '.join(map(str, counts))}]"
            f" (mapping = [{', '.join(mapping)}]) : (!transform.any_op) -> (!transform.any_op, !transform.any_op)\n"
        )
    script = (
        "module attributes {transform.with_named_sequence} {\n"
        "  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {\n"
        + "".join(steps)
        + '    %fn = transform.structured.match ops{["func.func"]} in %root : (!transform.any_op) -> !transform.any_op\n'
        "    %g = transform.gpu.map_forall_to_blocks %fn generate_gpu_launch : (!transform.any_op) -> !transform.any_op\n"
        f"    %h = transform.gpu.map_nested_forall_to_threads %g block_dims = [{', '.join(map(str, BLOCK))}]"
        " : (!transform.any_op) -> !transform.any_op\n"
        "    transform.yield\n  }\n}\n"
    )
    seq = ir.Module.parse(script)
    try:
        interpreter.apply_named_sequence(module.operation, seq.body.operations[0], seq.operation)
    except ir.MLIRError as err:
        raise NapkinError(f"mapping the loop program to GPU threads failed:\n{format_diagnostics(err)}") from None
    except ValueError as err:  # the transform interpreter's failures come as ValueError
        reason = next((ln for ln in str(err).splitlines() if "Diagnostic message" in ln), str(err))
        raise NapkinError(f"mapping the loop program to GPU threads failed: {reason.strip()}") from None


# --- shared memory --------------------------------------------------------------------------


#: Ops whose memref result is a view of their first operand: it lives where the operand does.
VIEW_OPS = (
    "memref.subview",
    "memref.expand_shape",
    "memref.collapse_shape",
    "memref.cast",
    "memref.reinterpret_cast",
    "memref.transpose",
)


def registers_to_shared(module: ir.Module) -> None:
    """Retype register-level (private) buffers as shared: the SIMT mapping shares tiles. The
    lowering's own temporaries inside the group loop (a softmax's row maximum and sum, with no
    level and so no memory space) are per-CTA tiles too: they become shared, with every view
    of them."""
    retype_memory_spaces(module.operation, "#gpu.address_space<workgroup>")
    space = ir.Attribute.parse("#gpu.address_space<workgroup>")
    temporaries: list[ir.Value] = []

    def in_group(op: ir.Operation) -> bool:
        parent = op.parent
        while parent is not None and parent.name != "func.func":
            if parent.name == "scf.forall":
                return True
            parent = parent.parent
        return False

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "memref.alloc" and ir.MemRefType(op.results[0].type).memory_space is None and in_group(op):
            temporaries.append(op.results[0])
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    while temporaries:
        value = temporaries.pop()
        t = ir.MemRefType(value.type)
        value.set_type(ir.MemRefType.get(t.shape, t.element_type, layout=t.layout, memory_space=space))
        for use in value.uses:
            user = use.owner.operation if isinstance(use.owner, ir.OpView) else use.owner
            if user.name in VIEW_OPS and use.operand_number == 0:
                temporaries.extend(user.results)


def promote_allocs(module: ir.Module) -> int:
    """Replace every workgroup `memref.alloc` by a view into dynamic shared memory; drop the
    deallocs. Returns the bytes of dynamic shared memory the kernel needs."""
    allocs: list[ir.Operation] = []
    deallocs: list[ir.Operation] = []
    launch: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "gpu.launch":
            launch.append(op)
        elif op.name == "memref.alloc":
            allocs.append(op)
        elif op.name == "memref.dealloc":
            deallocs.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    if len(launch) != 1:
        raise NapkinError(f"expected one gpu.launch after mapping, found {len(launch)}")
    for op in deallocs:
        op.erase()
    body = launch[0].regions[0].blocks[0]
    first = body.operations[0]
    i8 = ir.IntegerType.get_signless(8)
    space = ir.Attribute.parse("#gpu.address_space<workgroup>")
    offset = 0
    with ir.InsertionPoint(first), launch[0].location:
        base = gpu_d.dynamic_shared_memory(
            ir.MemRefType.get([ir.ShapedType.get_dynamic_size()], i8, memory_space=space)
        )
        for op in allocs:
            t = ir.MemRefType(op.results[0].type)
            size = t.element_type.width // 8
            for s in t.shape:
                size *= s
            view = memref.view(t, base, arith.constant(ir.IndexType.get(), offset), [])
            op.results[0].replace_all_uses_with(view)
            op.erase()
            offset += -(-size // 16) * 16
    return offset


# --- compile ----------------------------------------------------------------------------------


def compile_gpu(module: ir.Module, target: str, stop_after: str = "ptx") -> tuple[GpuKernel | None, str]:
    """Map a loop program to the GPU and lower it. Returns the kernel description (None at the
    nvvm stage) and the IR (or PTX) text at `stop_after` (gpu | nvvm | ptx). At the gpu stage
    the kernel is the host function holding the `gpu.launch`, its entry the function's name."""
    check_target(target)
    name, args = _kernel_args(module)
    try:
        PassManager.parse("builtin.module(canonicalize,cse)").run(module.operation)
    except ir.MLIRError as err:
        raise NapkinError(format_diagnostics(err)) from None
    registers_to_shared(module)
    map_to_threads(module)
    smem = promote_allocs(module)
    launch = _launch_shape(module)
    try:
        PassManager.parse("builtin.module(func.func(convert-linalg-to-loops),canonicalize,cse)").run(module.operation)
    except ir.MLIRError as err:
        raise NapkinError(format_diagnostics(err)) from None
    if stop_after == "gpu":  # before outlining the launch takes the function's arguments in order
        return GpuKernel(target, name, launch[0], launch[1], smem, args, "", problem={"function": name}), str(module)
    outline, rest = nvvm_pipeline(GPU_PIPELINE, target, stop_after).split("gpu-kernel-outlining,")
    try:
        PassManager.parse(outline + "gpu-kernel-outlining)").run(module.operation)
        _one_cta_per_sm_is_enough(module)
        PassManager.parse("builtin.module(" + rest).run(module.operation)
    except ir.MLIRError as err:
        raise NapkinError(f"GPU lowering failed:\n{format_diagnostics(err)}") from None
    if stop_after == "nvvm":
        return None, str(module)
    ptx = ptx_of(module)
    entry = re.search(r"\.visible \.entry (\w+)\(", ptx)
    if not entry:
        raise NapkinError("the PTX has no kernel entry")
    order = _launch_arg_order(module)
    kernel = GpuKernel(
        target, entry.group(1), launch[0], launch[1], smem, [args[i] for i in order], ptx, problem={"function": name}
    )
    return kernel, ptx


def _kernel_args(module: ir.Module) -> tuple[str, list[KernelArg]]:
    """The loop function's name and its arrays as kernel arguments (inputs, then outputs)."""
    func = next(op.operation for op in module.body.operations if op.operation.name == "func.func")
    sig = signature_of(func)
    names = list(sig.input_names) + [f"out{i}" for i in range(len(sig.outputs))]
    arrays: list[ArrayType] = [*sig.inputs, *sig.outputs]
    roles = ["input"] * len(sig.inputs) + ["output"] * len(sig.outputs)
    args = [KernelArg(n, r, a.dtype, a.shape, a.axes) for n, r, a in zip(names, roles, arrays, strict=True)]
    return sig.name, args


def _one_cta_per_sm_is_enough(module: ir.Module) -> None:
    """Mark kernels `nvvm.minctasm = 1` (PTX `.minnctapersm 1`): without it ptxas for sm_90a
    caps a 128-thread kernel at 128 registers and spills; occupancy is the model's decision."""

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "gpu.func" and "gpu.kernel" in op.attributes:
            op.attributes["nvvm.minctasm"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(32), 1)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)


def _launch_arg_order(module: ir.Module) -> list[int]:
    """Indices (into the function's arguments) of the kernel's parameters, in launch order."""
    func = next(op.operation for op in module.body.operations if op.operation.name == "func.func")
    params = list(func.regions[0].blocks[0].arguments)
    found: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name == "gpu.launch_func":
            found.append(op)
        return ir.WalkResult.ADVANCE

    func.walk(visit)
    order = [params.index(v) for v in found[0].operands if v in params]
    if sorted(order) != list(range(len(params))):
        raise NapkinError("every kernel argument must be one of the function's arrays")
    return order


def _launch_shape(module: ir.Module) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Grid and block of the (one) `gpu.launch`; NapkinError unless they are constants."""
    found: list[ir.Operation] = []
    module.operation.walk(lambda op: (found.append(op) if op.name == "gpu.launch" else None) or ir.WalkResult.ADVANCE)
    launch = found[0]
    dims = []
    for v in list(launch.operands)[:6]:
        owner = v.owner
        if getattr(owner, "name", "") != "arith.constant":
            raise NapkinError("the launch grid must be static")
        dims.append(ir.IntegerAttr(owner.attributes["value"]).value)
    return (dims[0], dims[1], dims[2]), (dims[3], dims[4], dims[5])
