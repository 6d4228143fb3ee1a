"""The GPU backends: PTX and cubins from the partitioned program, with their sidecars.

Two rules (see docs/gpu.md). Attention in bf16/f16 goes to the tensor-core kernel of
`napkin_mlir.backends.gpu.tensorcore` (`compile_tensorcore_attention`). Every other program takes the SIMT
rule here (`compile_gpu`): the same loop program the CPU runs, mapped with upstream transforms:

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
   `gpu-module-to-binary{format=isa}` give PTX; `ptxas` from the `nvidia-cuda-nvcc` wheel
   assembles the cubin and reports registers, spills and shared memory.

`compile_gpu` returns a `GpuKernel` whose sidecar (JSON) tells a runner how to launch it:
entry name, grid, block, dynamic shared memory bytes and the arguments in order.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlir import ir
from mlir.dialects import arith, memref
from mlir.dialects import gpu as gpu_d
from mlir.dialects.transform import interpreter
from mlir.passmanager import PassManager

from napkin_mlir.backends.cpu import signature_of
from napkin_mlir.errors import NapkinError, ToolError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_diagnostics
from napkin_mlir.ir.regions import retype_memory_spaces
from napkin_mlir.knobs import knobs
from napkin_mlir.pipeline.stages import GPU_PIPELINE, KERNEL_PIPELINE

TARGETS = {"sm_80": "+ptx80", "sm_90a": "+ptx80"}

#: Threads per CTA of the SIMT mapping: 32 along x (the contiguous axis), 4 along y.
BLOCK = (32, 4, 1)


@dataclass(frozen=True)
class KernelArg:
    """One kernel parameter: a named array (a device pointer) in the launch order."""

    name: str
    role: str  # "input" or "output"
    dtype: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]


@dataclass
class GpuKernel:
    """A compiled kernel and everything a runner needs to launch it."""

    target: str
    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dynamic_smem_bytes: int
    args: list[KernelArg]
    ptx: str
    problem: dict[str, object] = field(default_factory=dict)
    ptxas: dict[str, object] = field(default_factory=dict)

    def sidecar(self, binary: str) -> dict[str, object]:
        return {
            "format": 1,
            "binary": binary,
            "target": self.target,
            "entry": self.entry,
            "grid": list(self.grid),
            "block": list(self.block),
            "dynamic_smem_bytes": self.dynamic_smem_bytes,
            "args": [asdict(a) for a in self.args],
            "problem": self.problem,
            "ptxas": self.ptxas,
        }


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


def map_to_threads(module: ir.Module) -> None:
    """Tile every linalg op over the CTA's threads, then map groups to blocks and threads."""
    ops: list[ir.Operation] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        if op.name in ("linalg.generic", "linalg.fill"):
            ops.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
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


# --- shared memory --------------------------------------------------------------------------


def registers_to_shared(module: ir.Module) -> None:
    """Retype register-level (private) buffers as shared: the SIMT mapping shares tiles."""
    retype_memory_spaces(module.operation, "#gpu.address_space<workgroup>")


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


def _kernel_args(module: ir.Module) -> tuple[str, list[KernelArg]]:
    func = next(op.operation for op in module.body.operations if op.operation.name == "func.func")
    sig = signature_of(func)
    names = list(sig.input_names) + [f"out{i}" for i in range(len(sig.outputs))]
    arrays: list[ArrayType] = [*sig.inputs, *sig.outputs]
    roles = ["input"] * len(sig.inputs) + ["output"] * len(sig.outputs)
    args = [KernelArg(n, r, a.dtype, a.shape, a.axes) for n, r, a in zip(names, roles, arrays, strict=True)]
    return sig.name, args


def compile_gpu(module: ir.Module, target: str, stop_after: str = "ptx") -> tuple[GpuKernel | None, str]:
    """Map a loop program to the GPU and lower it. Returns the kernel description (None at the
    nvvm stage) and the IR (or PTX) text at `stop_after` (gpu | nvvm | ptx). At the gpu stage
    the kernel is the host function holding the `gpu.launch`, its entry the function's name."""
    if target not in TARGETS:
        raise NapkinError(f"unknown GPU target '{target}' (expected {', '.join(TARGETS)})")
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
    pipeline = GPU_PIPELINE.format(chip=target, features=TARGETS[target])
    outline, rest = pipeline.split("gpu-kernel-outlining,")
    if stop_after == "nvvm":
        rest = rest.replace(",gpu-module-to-binary{format=isa})", ")")
    try:
        PassManager.parse(outline + "gpu-kernel-outlining)").run(module.operation)
        _one_cta_per_sm_is_enough(module)
        PassManager.parse("builtin.module(" + rest).run(module.operation)
    except ir.MLIRError as err:
        raise NapkinError(f"GPU lowering failed:\n{format_diagnostics(err)}") from None
    if stop_after == "nvvm":
        return None, str(module)
    ptx = _ptx_of(module)
    entry = re.search(r"\.visible \.entry (\w+)\(", ptx)
    if not entry:
        raise NapkinError("the PTX has no kernel entry")
    order = _launch_arg_order(module)
    kernel = GpuKernel(
        target, entry.group(1), launch[0], launch[1], smem, [args[i] for i in order], ptx, problem={"function": name}
    )
    return kernel, ptx


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


def compile_tensorcore_attention(
    partitioned: ir.Module, target: str, stop_after: str = "ptx", warp_rows: int = 16
) -> tuple[GpuKernel, str]:
    """The tensor-core rule: a partitioned attention program -> the mma.sync kernel
    (`warp_rows` rows of the CTA tile per warp, a multiple of 16). Returns the kernel's launch
    description and the text at `stop_after` (gpu | nvvm | ptx); `kernel.ptx` is empty
    before the ptx stage."""
    from napkin_mlir.backends.gpu.tensorcore import AttentionPlan, emit_attention_kernel

    if target not in TARGETS:
        raise NapkinError(f"unknown GPU target '{target}' (expected {', '.join(TARGETS)})")
    plan = AttentionPlan.from_partitioned(partitioned, warp_rows)
    name, args = _kernel_args_from_diagram(partitioned)
    text = emit_attention_kernel(plan)
    kernel = GpuKernel(
        target,
        "attention_tc",
        plan.grid,
        (plan.threads, 1, 1),
        plan.smem_bytes,
        args,
        "",
        problem={
            "function": name,
            "kernel": "tensorcore",
            "warps": plan.warps,
            "warp_rows": plan.warp_rows,
            "tile": {"q": plan.gq, "x": plan.sx},
        },
    )
    if stop_after == "gpu":
        return kernel, text
    module = ir.Module.parse(text)
    pipeline = KERNEL_PIPELINE.format(chip=target, features=TARGETS[target])
    if stop_after == "nvvm":
        pipeline = pipeline.replace(",gpu-module-to-binary{format=isa})", ")")
    try:
        PassManager.parse(pipeline).run(module.operation)
    except ir.MLIRError as err:
        raise NapkinError(f"GPU lowering failed:\n{format_diagnostics(err)}") from None
    if stop_after == "nvvm":
        return kernel, str(module)
    kernel.ptx = _ptx_of(module)
    return kernel, kernel.ptx


def _kernel_args_from_diagram(partitioned: ir.Module) -> tuple[str, list[KernelArg]]:
    """Arguments of a diagram function (inputs, then one output per result), in order."""
    func = next(op.operation for op in partitioned.body.operations if op.operation.name == "func.func")
    block = func.regions[0].blocks[0]
    names = [ir.StringAttr(n).value for n in ir.ArrayAttr(func.attributes["arg_names"])]
    args = [
        KernelArg(n, "input", t.dtype, t.shape, t.axes)
        for n, t in zip(names, (ArrayType.from_mlir(a.type) for a in block.arguments), strict=True)
    ]
    ret = list(block.operations)[-1]
    for i, v in enumerate(ret.operands):
        t = ArrayType.from_mlir(v.type)
        args.append(KernelArg(f"out{i}", "output", t.dtype, t.shape, t.axes))
    return ir.StringAttr(func.attributes["sym_name"]).value, args


def _ptx_of(module: ir.Module) -> str:
    binary = next(op for op in module.body.operations if op.operation.name == "gpu.binary")
    obj = gpu_d.ObjectAttr(ir.ArrayAttr(binary.attributes["objects"])[0])
    return obj.object.decode() if isinstance(obj.object, bytes) else str(obj.object)


def _launch_shape(module: ir.Module) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
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


# --- ptxas ------------------------------------------------------------------------------------


def ptxas_path() -> str:
    """NAPKIN_PTXAS, else ptxas from the nvidia-cuda-nvcc wheel, else from PATH."""
    override = knobs().ptxas
    if override is not None:
        if not override.exists():
            raise ToolError(f"NAPKIN_PTXAS={override}: no such file")
        return str(override)
    try:
        import nvidia

        for base in nvidia.__path__:
            cand = Path(base) / "cu13" / "bin" / "ptxas"
            if cand.exists():
                return str(cand)
    except ImportError:
        pass
    found = shutil.which("ptxas")
    if not found:
        raise ToolError("ptxas not found: install the nvidia-cuda-nvcc wheel (make installs it) or put ptxas on PATH")
    return found


def assemble(ptx: str, target: str, cubin: Path) -> dict[str, object]:
    """Run ptxas -v on the PTX; write the cubin; return the resource report."""
    ptx_file = cubin.with_suffix(".ptx")
    ptx_file.write_text(ptx)
    proc = subprocess.run(
        [ptxas_path(), f"-arch={target}", "-v", "-O3", "-o", str(cubin), str(ptx_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"ptxas rejected the kernel for {target}:\n{proc.stderr.strip()}")
    return parse_ptxas_report(proc.stderr)


def parse_ptxas_report(text: str) -> dict[str, object]:
    """Registers, spills, shared memory and stack from `ptxas -v` output."""

    def num(pattern: str) -> int:
        m = re.search(pattern, text)
        return int(m.group(1)) if m else 0

    return {
        "registers": num(r"Used (\d+) registers"),
        "spill_stores_bytes": num(r"(\d+) bytes spill stores"),
        "spill_loads_bytes": num(r"(\d+) bytes spill loads"),
        "stack_frame_bytes": num(r"(\d+) bytes stack frame"),
        "static_smem_bytes": num(r"(\d+) bytes smem"),
        "barriers": num(r"used (\d+) barriers"),
        "raw": text.strip(),
    }


def write_sidecar(kernel: GpuKernel, binary: Path) -> Path:
    path = binary.with_suffix(binary.suffix + ".json")
    path.write_text(json.dumps(kernel.sidecar(binary.name), indent=2) + "\n")
    return path
