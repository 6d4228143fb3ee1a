"""`napkin compile`: a diagram through the derivation to a GPU kernel and its sidecar.

    napkin compile attention --target sm_80|sm_90a --dims ... --dtype bf16 [--causal]
                   [--tile q=64,x=32] [--emit gpu|nvvm|ptx|cubin] -o FILE
    napkin compile FILE.mlir --target sm_80 [--dims q=4096,...] [--dtype bf16] [--tile ...]
                   [--kernel auto|tensorcore|simt] [--emit ...] -o FILE

A file's diagram is derived by `derive.auto.derive` (the cost model of the target's GPU:
sm_80 -> a100, sm_90a -> h100); `--kernel auto` then tries the tensor-core rule and, when it
refuses (it names the op it does not lower), says so in one line and takes the SIMT rule;
`--kernel tensorcore` makes that refusal the error. The sidecar of a file's kernel carries
the plain diagram (`problem.napkin`), so `napkin emulate FILE.json` judges the kernel against
the diagram's own JAX interpretation.

`--emit ptx` and `--emit cubin` also write `FILE.json`, the sidecar a runner needs (entry,
grid, block, dynamic shared memory, arguments in order, ptxas's resource report); so does
`--emit gpu`, whose IR `napkin emulate FILE.json` runs on the CPU emulator.

Without --tile the tensor-core kernel's tiles are the cost model's, priced with the kernel's
register estimate (`backends.gpu.registers`), and the SIMT rule's are shrunk until its
buffers fit one block's shared memory. A kernel that needs more shared memory than a block
of the target may have, or that spills registers (ptxas's report), is refused with one error
line naming the figures and the limit; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from mlir import ir

from napkin_mlir.backends.gpu.hopper import WGMMA_TARGETS, compile_wgmma
from napkin_mlir.backends.gpu.nvvm import TARGETS
from napkin_mlir.backends.gpu.ptxas import assemble
from napkin_mlir.backends.gpu.registers import tiles_registers
from napkin_mlir.backends.gpu.sidecar import GpuKernel, write_sidecar
from napkin_mlir.backends.gpu.simt import compile_gpu
from napkin_mlir.backends.gpu.tensorcore import compile_tensorcore_attention
from napkin_mlir.backends.gpu.tensorcore_match import TensorCoreRefusal, match_attention
from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan, tiles_fit_kernel
from napkin_mlir.check.harness import VerifyConfig, build, model_tiles
from napkin_mlir.cli.common import add_problem_args, file_options, parse_sizes, problem_config
from napkin_mlir.cli.verify import is_file_argument
from napkin_mlir.derive.auto import Derivation, derive
from napkin_mlir.derive.tiles import search, simt_feasible
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.ir.files import axis_sizes, load_diagram
from napkin_mlir.ir.regions import diagram_functions
from napkin_mlir.model.hardware import TARGET_GPU, for_target
from napkin_mlir.model.hardware import gpu as load_gpu
from napkin_mlir.model.program import extract
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import LOOPS_PIPELINE, PARTITIONS, compile_to_loops, derivation

EMIT = ("gpu", "nvvm", "ptx", "cubin")
#: `--kernel` choices; `tensorcore` is the older name of `mma-sync`.
KERNELS = ("auto", "wgmma", "mma-sync", "tensorcore", "simt")


def kernel_rule(kind: str) -> str:
    """`--kernel`'s value with `tensorcore` read as `mma-sync` (one name per rule inside)."""
    return "mma-sync" if kind == "tensorcore" else kind


#: The cost model's description of each target.
GPU_OF = TARGET_GPU


def _model_tiles(config: VerifyConfig, sizes: dict[str, int], target: str, warp_rows: int = 16) -> dict[str, int]:
    """The given tiles, completed by the cost model's choice among those the tensor-core
    kernel can take (registers, shared memory, MMA shapes), priced with the kernel's own
    register estimate (`backends.gpu.registers`)."""
    grouped, streamed = PARTITIONS["attention"]
    if all(a in config.tiles for a in (*grouped, streamed)):
        return dict(config.tiles)
    if not tiles_fit_kernel({"q": 16, "x": 16}, sizes, config.dtype):  # d or the dtype rule it out at any tile
        raise UsageError(
            f"the tensor-core attention kernel takes bf16/f16 with a head dim that is a multiple of 16 (at most 256), "
            f"got {config.dtype} with d={sizes['d']}; use --kernel simt"
        )
    return model_tiles(
        dataclasses.replace(config, gpu=GPU_OF[target]),
        feasible=lambda t: tiles_fit_kernel(t, sizes, config.dtype, warp_rows),
        tensor_cores=True,
        warp_rows=warp_rows,
        registers=tiles_registers(sizes, config.dtype, target, warp_rows),
    )


def compile_kernel(
    config: VerifyConfig,
    target: str,
    stop: str,
    kernel_kind: str = "auto",
    warp_rows: int = 16,
    log: Callable[[str], None] = print,
) -> tuple[GpuKernel | None, str]:
    """A built-in diagram through the derivation to the GPU stage `stop` (gpu | nvvm | ptx).
    Returns the kernel's launch description (None for the SIMT rule's nvvm stage) and the text
    of that stage."""
    kernel_kind = kernel_rule(kernel_kind)
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        sizes = diagram_sizes(module)
        kernel = None
        if kernel_kind == "auto":
            tensor = config.diagram == "attention" and config.dtype in ("bf16", "f16") and sizes["d"] % 16 == 0
            kernel_kind = "mma-sync" if tensor else "simt"
            why = "" if tensor else " (the tensor-core rules take attention in bf16/f16 with d % 16 == 0)"
            if tensor and target in WGMMA_TARGETS:  # Hopper: wgmma first, mma.sync where it refuses
                try:
                    kernel, text = compile_wgmma(module, config.diagram, sizes, target, stop, config.tiles)
                    kernel_kind = "wgmma"
                except NapkinError as err:
                    why = f" (wgmma: {err})"
                    module = build(config)
            log(f"kernel: {kernel_kind}{why}")
        if kernel is not None:
            pass  # auto: the wgmma rule took it above
        elif kernel_kind == "wgmma":  # the Hopper rule reads the plain diagram
            kernel, text = compile_wgmma(module, config.diagram, sizes, target, stop, config.tiles)
        elif kernel_kind == "mma-sync":
            if config.diagram != "attention":
                raise UsageError("--kernel mma-sync: only attention has an mma.sync rule so far")
            tiles = _model_tiles(config, sizes, target, warp_rows)
            log(
                f"tiles {tiles} ({'given' if tiles == config.tiles else 'chosen by the cost model for ' + GPU_OF[target]})"
            )
            run_pipeline(module, derivation(config.diagram, sizes, tiles))
            kernel, text = compile_tensorcore_attention(module, target, stop_after=stop, warp_rows=warp_rows)
        else:
            compile_to_loops(module, config.diagram, sizes, config.tiles)
            kernel, text = compile_gpu(module, target, stop_after=stop)
    if kernel is not None:
        kernel.problem.setdefault("kernel", "simt")
        kernel.problem.update(
            {
                "diagram": config.diagram,
                "dims": config.dims,
                "dtype": config.dtype,
                "causal": config.causal,
                "kv_heads": config.kv_heads,
                "activation": config.activation,
                "tiles": config.tiles,
            }
        )
    return kernel, text


@dataclasses.dataclass(frozen=True)
class FileProblem:
    """A diagram from a .mlir file: its path, re-sizing (`--dims`), dtype and pinned tiles."""

    path: str
    dims: dict[str, int] | None = None
    dtype: str | None = None
    tiles: dict[str, int] = dataclasses.field(default_factory=dict)


def file_problem(args: argparse.Namespace) -> FileProblem:
    """The file problem the command line names (the built-in options refused)."""
    file_options(args)
    return FileProblem(
        args.diagram,
        parse_sizes(args.dims, "--dims") if args.dims else None,
        args.dtype,
        parse_sizes(args.tile, "--tile") if args.tile else {},
    )


def _low_dtype(module: ir.Module) -> str | None:
    """The 16-bit element type of the diagram's inputs, if any (what the cost model prices)."""
    f = diagram_functions(module.operation)[0]
    types = [ArrayType.from_mlir(a.type) for a in f.regions[0].blocks[0].arguments]
    return next((t.dtype for t in types if t.dtype in ("f16", "bf16")), None)


def compile_file_kernel(
    problem: FileProblem,
    target: str,
    stop: str,
    kernel_kind: str = "auto",
    warp_rows: int = 16,
    log: Callable[[str], None] = print,
) -> tuple[GpuKernel | None, str, str]:
    """A diagram from a file through its automatic derivation to the GPU stage `stop`.
    `kernel_kind` auto tries the tensor-core rules (on sm_90a wgmma, then mma.sync) and falls
    back to the SIMT rule, logging each refusal in one line; a named rule raises its refusal.
    Returns the kernel's launch description
    (None for the SIMT rule's nvvm stage), the text of that stage, and the plain diagram as
    napkin IR (the reference the kernel is judged against)."""
    path = problem.path
    gpu = GPU_OF[target]
    kernel_kind = kernel_rule(kernel_kind)
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(path, problem.dims, problem.dtype)
        plain = str(module)
        sizes = axis_sizes(module)
        low = _low_dtype(module)
        if kernel_kind == "wgmma" or (kernel_kind == "auto" and target in WGMMA_TARGETS and low is not None):
            try:  # the Hopper rule reads the plain diagram
                kernel, text = compile_wgmma(module, None, sizes, target, stop, problem.tiles, path)
            except NapkinError as err:
                if kernel_kind == "wgmma":
                    raise
                log(f"wgmma: {err}")
                module = load_diagram(path, problem.dims, problem.dtype)
            else:
                log("kernel: wgmma")
                kernel.problem.update({"diagram": path, "dims": sizes, "dtype": low, "napkin": plain})
                return kernel, text, plain
        d = derive(module, problem.tiles, gpu, low, filename=path)
        run_pipeline(module, d.pipeline(), filename=path)
        kernel: GpuKernel | None = None
        tiles = dict(d.tiles)
        if kernel_kind in ("auto", "mma-sync"):
            try:
                kernel, text, tiles = _file_tensorcore(problem, module, d.tiles, target, stop, warp_rows, low)
                log(f"kernel: mma-sync, tiles {tiles}")
            except TensorCoreRefusal as err:
                if kernel_kind == "mma-sync":
                    raise
                log(f"kernel: simt ({str(err).removesuffix('; use --kernel simt')})")
                kernel_kind = "simt"
        elif kernel_kind == "simt":
            log("kernel: simt (--kernel simt)")
        if kernel_kind == "simt":
            module, d = _simt_tiles(problem, module, d, target, low)
            tiles = dict(d.tiles)
            log(f"tiles {tiles}: {d.pipeline()}")
            run_pipeline(module, f"builtin.module(napkin-verify,{LOOPS_PIPELINE})", filename=path)
            kernel, text = compile_gpu(module, target, stop_after=stop)
    if kernel is not None:
        kernel.problem.setdefault("kernel", "simt")
        dtype = problem.dtype or low or "f32"
        kernel.problem.update({"diagram": path, "dims": sizes, "dtype": dtype, "tiles": tiles, "napkin": plain})
    return kernel, text, plain


def _simt_tiles(
    problem: FileProblem, module: ir.Module, d: Derivation, target: str, low: str | None
) -> tuple[ir.Module, Derivation]:
    """The SIMT rule keeps every tile below global memory in shared memory: unless --tile
    pins them all, the tiles are the cost model's choice among those whose buffers fit one
    block (`derive.tiles.simt_feasible`), and the program is derived again at those tiles."""
    if not d.tiles or all(a in problem.tiles for a in d.tiles):
        return module, d
    prog = extract(module)
    hw = for_target(target)
    try:
        choice = search(prog, hw, low, "the diagram", axis_sizes(module), problem.tiles, simt_feasible(prog, hw))
    except UsageError:  # nothing fits: keep the derivation's tiles, which compile_to_file refuses with the figures
        return module, d
    tiles = {a: choice.tiles.get(a, s) for a, s in d.tiles.items()}
    if tiles == d.tiles:
        return module, d
    module = load_diagram(problem.path, problem.dims, problem.dtype)
    d = derive(module, tiles, None, low, filename=problem.path)
    run_pipeline(module, d.pipeline(), filename=problem.path)
    return module, d


def _kernel_tiles(tiles: dict[str, int], transposed: bool) -> dict[str, int]:
    """The tiles of the diagram's axes as the tensor-core kernel's (q: its rows, x: its
    stream): the same, or swapped for a kernel whose rows are keys (the backward's dK/dV)."""
    if not transposed:
        return tiles
    swapped = {"q": tiles["x"]} if "x" in tiles else {}
    return {**swapped, **({"x": tiles["q"]} if "q" in tiles else {})}


def _file_tensorcore(
    problem: FileProblem,
    module: ir.Module,
    derived: dict[str, int],
    target: str,
    stop: str,
    warp_rows: int,
    low: str | None,
) -> tuple[GpuKernel, str, dict[str, int]]:
    """The tensor-core rule on a file's partitioned diagram (`TensorCoreRefusal` names the
    first op it does not lower). Unless --tile pins them all, the tiles are the cost model's
    choice among those the kernel can take (as for the built-in attention), so the program
    is derived again at those tiles."""
    path = problem.path
    match = match_attention(module, path)
    tiles = dict(derived)

    def plan_at(t: dict[str, int]) -> AttentionPlan:
        return AttentionPlan.of(
            match.dims,
            _kernel_tiles(t, match.transposed),
            match.dtype,
            warp_rows=warp_rows,
            softmax=match.softmax,
            score_pairs=match.score_pairs,
            accumulations=match.accumulations,
            row_args=match.row_args,
        )

    # a stream of accumulators (dQ, dK/dV) keeps row fragments in shared memory where its
    # accumulators need the registers: the model's liveness cannot see that, the kernel's
    # own estimate can
    registers = None if match.softmax else (lambda t: plan_at(t).registers_estimate)
    if not all(a in problem.tiles for a in derived):
        try:
            choice = search(
                extract(module),
                load_gpu(GPU_OF[target]),
                low,
                "attention",
                axis_sizes(module),
                problem.tiles,
                feasible=lambda t: tiles_fit_kernel(
                    _kernel_tiles(t, match.transposed),
                    match.dims,
                    match.dtype,
                    warp_rows,
                    match.softmax,
                    match.score_pairs,
                    match.accumulations,
                    match.row_args,
                ),
                tensor_cores=True,
                warp_rows=warp_rows,
                registers=registers,
            )
        except UsageError as err:  # no tiles (with those --tile pins) that the kernel can take
            raise TensorCoreRefusal(f"the tensor-core attention kernel cannot take this problem: {err}") from None
        tiles = {a: choice.tiles.get(a, s) for a, s in derived.items()}
    if tiles != derived:
        module = load_diagram(path, problem.dims, problem.dtype)
        run_pipeline(module, derive(module, tiles, None, low, filename=path).pipeline(), filename=path)
    kernel, text = compile_tensorcore_attention(module, target, stop_after=stop, warp_rows=warp_rows, filename=path)
    return kernel, text, tiles


def cmd_compile(args: argparse.Namespace) -> int:
    if is_file_argument(args.diagram):
        problem = file_problem(args)
        compile_to_file(
            None, args.target, args.emit, args.kernel, args.warp_rows, Path(args.output), file_problem=problem
        )
        return 0
    config = problem_config(args)
    compile_to_file(config, args.target, args.emit, args.kernel, args.warp_rows, Path(args.output))
    return 0


def compile_to_file(
    config: VerifyConfig | None,
    target: str,
    emit: str,
    kernel_kind: str,
    warp_rows: int,
    out: Path,
    log: Callable[[str], None] = print,
    file_problem: FileProblem | None = None,
) -> GpuKernel | None:
    """Compile `config` (or the diagram of `file_problem`) for `target` and write the `emit`
    stage to `out`, with its sidecar (for gpu, ptx and cubin); returns the kernel (None for
    the SIMT rule's nvvm stage). A kernel that needs more shared memory than a block of the
    target may have, or (ptx, cubin: ptxas's report) spills registers, is refused with a
    UsageError and nothing is written."""
    if emit in ("ptx", "cubin") and out.suffix != f".{emit}":
        raise UsageError(f"-o {out}: --emit {emit} writes a .{emit} file")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: directory {out.parent} does not exist")
    stop = "ptx" if emit == "cubin" else emit
    if file_problem is not None:
        kernel, text, _ = compile_file_kernel(file_problem, target, stop, kernel_kind, warp_rows, log)
    else:
        assert config is not None
        kernel, text = compile_kernel(config, target, stop, kernel_kind, warp_rows)
    if kernel is not None:
        _refuse_shared_memory(kernel, target)
    if emit in ("gpu", "nvvm"):
        out.write_text(text)
        log(f"wrote {out} ({emit} stage)")
        if kernel is not None and emit == "gpu":
            sidecar = write_sidecar(kernel, out)
            log(f"wrote {sidecar}: `napkin emulate {sidecar}` runs this kernel on the CPU emulator")
        return kernel
    assert kernel is not None
    cubin = out.with_suffix(".cubin")
    kernel.ptxas = assemble(kernel.ptx, target, cubin)
    try:
        _refuse_spills(kernel, target)
    except UsageError:
        cubin.unlink(missing_ok=True)
        cubin.with_suffix(".ptx").unlink(missing_ok=True)
        raise
    if emit == "ptx":
        out.write_text(kernel.ptx)
        cubin.unlink(missing_ok=True)
    sidecar = write_sidecar(kernel, out)
    report = {k: v for k, v in kernel.ptxas.items() if k != "raw"}
    log(f"wrote {out} and {sidecar}")
    log(f"entry {kernel.entry}: grid {kernel.grid}, block {kernel.block}, dynamic smem {kernel.dynamic_smem_bytes} B")
    log(f"ptxas ({target}): {json.dumps(report)}")
    return kernel


def _tiles_of(kernel: GpuKernel) -> str:
    tiles = kernel.problem.get("tile") or kernel.problem.get("tiles") or {}
    return ",".join(f"{a}={s}" for a, s in tiles.items()) if isinstance(tiles, dict) else str(tiles)


def _refuse_shared_memory(kernel: GpuKernel, target: str) -> None:
    """A kernel whose dynamic shared memory is over the block limit of `target` cannot launch."""
    limit = for_target(target).smem_per_cta
    if kernel.dynamic_smem_bytes > limit:
        raise UsageError(
            f"the {kernel.problem.get('kernel', 'simt')} kernel at tiles {_tiles_of(kernel)} needs "
            f"{kernel.dynamic_smem_bytes} bytes of shared memory per block, over {target}'s limit of {limit}: "
            "give smaller tiles with --tile, or none to take the cost model's"
        )


def _refuse_spills(kernel: GpuKernel, target: str) -> None:
    """A kernel that spills registers to local memory is refused (ptxas's report)."""
    report = kernel.ptxas
    if report.get("spill_stores_bytes") or report.get("spill_loads_bytes"):
        raise UsageError(
            f"the {kernel.problem.get('kernel', 'simt')} kernel at tiles {_tiles_of(kernel)} spills registers on "
            f"{target}: ptxas uses {report.get('registers')} registers per thread "
            f"(limit {for_target(target).registers_per_thread}) with {report.get('spill_stores_bytes')} bytes of "
            f"spill stores and {report.get('spill_loads_bytes')} bytes of spill loads: give other tiles with --tile "
            "(a smaller x chunk, more rows per CTA) or none, to take the cost model's"
        )


def add_kernel_args(p: argparse.ArgumentParser, target_default: str | None = None) -> None:
    """--target, --warp-rows and --kernel: which kernel `compile_kernel` builds (shared with
    `napkin emulate`; without a default the target is required)."""
    p.add_argument(
        "--target",
        choices=tuple(TARGETS),
        required=target_default is None,
        default=target_default,
        help="GPU architecture; without --tile the cost model picks tiles for it (A100 or H100)",
    )
    p.add_argument(
        "--warp-rows", type=int, default=16, help="tensorcore: rows of the tile per warp, a multiple of 16 (default 16)"
    )
    p.add_argument(
        "--kernel",
        choices=KERNELS,
        default="auto",
        help="wgmma: Hopper's warp-specialized TMA/wgmma rule (sm_90a) for attention (bf16/f16, a file with a "
        "softmax) or a bf16/f16 matmul; mma-sync (or tensorcore): the mma.sync rule for attention, its variants "
        "and its backward (sm_80 and sm_90a); simt: every diagram, CUDA cores; auto: the first rule that takes "
        "the program, wgmma first on sm_90a (default auto)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a diagram (built-in or .mlir) to a GPU kernel (PTX/cubin + sidecar)")
    add_problem_args(p, dims_required=False)
    add_kernel_args(p)
    p.add_argument("--emit", choices=EMIT, default="cubin", help="stage to write (default cubin)")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.set_defaults(fn=cmd_compile)
