"""`napkin compile`: a built-in diagram through the derivation to a GPU kernel and its sidecar.

    napkin compile attention --target sm_80|sm_90a --dims ... --dtype bf16 [--causal]
                   [--tile q=64,x=32] [--emit gpu|nvvm|ptx|cubin] -o FILE

`--emit ptx` and `--emit cubin` also write `FILE.json`, the sidecar a runner needs (entry,
grid, block, dynamic shared memory, arguments in order, ptxas's resource report); so does
`--emit gpu`, whose IR `napkin emulate FILE.json` runs on the CPU emulator.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from mlir import ir

from napkin_mlir.backends.gpu.nvvm import TARGETS
from napkin_mlir.backends.gpu.ptxas import assemble
from napkin_mlir.backends.gpu.sidecar import GpuKernel, write_sidecar
from napkin_mlir.backends.gpu.simt import compile_gpu
from napkin_mlir.backends.gpu.tensorcore import compile_tensorcore_attention
from napkin_mlir.backends.gpu.tensorcore_plan import tiles_fit_kernel
from napkin_mlir.check.harness import VerifyConfig, build, model_tiles
from napkin_mlir.cli.common import add_problem_args, problem_config
from napkin_mlir.errors import UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import PARTITIONS, compile_to_loops, derivation

EMIT = ("gpu", "nvvm", "ptx", "cubin")

#: The cost model's description of each target.
GPU_OF = {"sm_80": "a100", "sm_90a": "h100"}


def _model_tiles(config: VerifyConfig, sizes: dict[str, int], target: str, warp_rows: int = 16) -> dict[str, int]:
    """The given tiles, completed by the cost model's choice among those the tensor-core
    kernel can take (registers, shared memory, MMA shapes)."""
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
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        sizes = diagram_sizes(module)
        if kernel_kind == "auto":
            tensor = config.diagram == "attention" and config.dtype in ("bf16", "f16") and sizes["d"] % 16 == 0
            kernel_kind = "tensorcore" if tensor else "simt"
            log(
                f"kernel: {kernel_kind}"
                + ("" if tensor else " (the tensor-core rule takes attention in bf16/f16 with d % 16 == 0)")
            )
        if kernel_kind == "tensorcore":
            if config.diagram != "attention":
                raise UsageError("--kernel tensorcore: only attention has a tensor-core rule so far")
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


def cmd_compile(args: argparse.Namespace) -> int:
    config = problem_config(args)
    compile_to_file(config, args.target, args.emit, args.kernel, args.warp_rows, Path(args.output))
    return 0


def compile_to_file(
    config: VerifyConfig,
    target: str,
    emit: str,
    kernel_kind: str,
    warp_rows: int,
    out: Path,
    log: Callable[[str], None] = print,
) -> GpuKernel | None:
    """Compile `config` for `target` and write the `emit` stage to `out`, with its sidecar
    (for gpu, ptx and cubin); returns the kernel (None for the SIMT rule's gpu stage)."""
    if emit in ("ptx", "cubin") and out.suffix != f".{emit}":
        raise UsageError(f"-o {out}: --emit {emit} writes a .{emit} file")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: directory {out.parent} does not exist")
    stop = "ptx" if emit == "cubin" else emit
    kernel, text = compile_kernel(config, target, stop, kernel_kind, warp_rows)
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
    if emit == "ptx":
        out.write_text(kernel.ptx)
        cubin.unlink(missing_ok=True)
    sidecar = write_sidecar(kernel, out)
    report = {k: v for k, v in kernel.ptxas.items() if k != "raw"}
    log(f"wrote {out} and {sidecar}")
    log(f"entry {kernel.entry}: grid {kernel.grid}, block {kernel.block}, dynamic smem {kernel.dynamic_smem_bytes} B")
    log(f"ptxas ({target}): {json.dumps(report)}")
    return kernel


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
        choices=("auto", "tensorcore", "simt"),
        default="auto",
        help="tensorcore: the mma.sync rule for attention (bf16/f16); simt: every diagram, CUDA cores (default auto)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a built-in diagram to a GPU kernel (PTX/cubin + sidecar)")
    add_problem_args(p)
    add_kernel_args(p)
    p.add_argument("--emit", choices=EMIT, default="cubin", help="stage to write (default cubin)")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.set_defaults(fn=cmd_compile)
