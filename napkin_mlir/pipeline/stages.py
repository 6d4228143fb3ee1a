"""The napkin pipeline, stage by stage, in one place.

    diagram       napkin ops built from Python or parsed from text
      | napkin-verify, napkin-assign-levels, napkin-group-partition, napkin-stream-partition
    partitioned   the relabeled diagram: levels, transfers, napkin.group / napkin.stream regions
      | napkin-lower-to-loops, canonicalize, cse
    loops         scf.forall (groups, GPU mapping attributes) + scf.for (streams) + linalg on
                  memref buffers whose memory space names the level
      | napkin-erase-memory-spaces, then CPU_PIPELINE (upstream; pastes into mlir-opt)
    cpu           LLVM dialect, run by the ExecutionEngine

    GPU, from `partitioned` (napkin_mlir.backends.gpu; `napkin compile --emit gpu|nvvm|ptx|cubin`):
    gpu           tensor-core rule (attention): one gpu.func with nvgpu/nvvm ops
                  (napkin_mlir.backends.gpu.tensorcore); SIMT rule (any program; backends.gpu.simt): `loops` mapped with
                  transform.gpu.map_forall_to_blocks / map_nested_forall_to_threads
      | KERNEL_PIPELINE / GPU_PIPELINE (upstream; paste into mlir-opt)
    nvvm, ptx     NVVM/LLVM dialect, then PTX from gpu-module-to-binary
      | ptxas (nvidia-cuda-nvcc wheel)
    cubin         the kernel, with its JSON sidecar for the runner

`derivation(diagram, sizes, tiles)` is the named relabeling pipeline of each built-in
diagram (attention -> FlashAttention-2: weave b, h; group q; stream x online; fused).
Every stage can be printed or dumped through `napkin_mlir.pipeline.passmanager.run_pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlir import ir

from napkin_mlir.errors import UsageError
from napkin_mlir.knobs import knobs
from napkin_mlir.pipeline.passmanager import run_pipeline

#: Loop program (linalg/scf/memref/arith/math) -> LLVM dialect, for the host CPU.
CPU_PIPELINE = (
    "builtin.module("
    "func.func(scf-forall-to-parallel,convert-linalg-to-loops),"
    "convert-scf-to-cf,"
    "arith-expand{include-bf16=true include-f8e8m0=false include-f4e2m1=false},"
    "convert-math-to-llvm,"
    "convert-math-to-libm,"
    "expand-strided-metadata,"
    "lower-affine,"
    "finalize-memref-to-llvm,"
    "convert-arith-to-llvm,"
    "convert-cf-to-llvm,"
    "convert-func-to-llvm,"
    "reconcile-unrealized-casts)"
)

#: Loop program inside gpu.launch -> PTX (upstream passes; pastes into mlir-opt unchanged).
GPU_PIPELINE = (
    "builtin.module("
    "gpu-launch-sink-index-computations,gpu-kernel-outlining,"
    "nvvm-attach-target{{chip={chip} features={features} O=3}},"
    "gpu.module(convert-scf-to-cf,expand-strided-metadata,lower-affine,"
    "convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=true}},canonicalize,cse,reconcile-unrealized-casts),"
    "gpu-module-to-binary{{format=isa}})"
)


#: The NVVM tail for a module that already holds a gpu.module (pastes into mlir-opt unchanged).
KERNEL_PIPELINE = (
    "builtin.module(nvvm-attach-target{{chip={chip} features={features} O=3}},"
    "gpu.module(convert-vector-to-scf,expand-strided-metadata,lower-affine,convert-scf-to-cf,"
    "convert-nvgpu-to-nvvm,convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=true}},convert-vector-to-llvm,"
    "canonicalize,cse),gpu.module(convert-to-llvm,reconcile-unrealized-casts),gpu-module-to-binary{{format=isa}})"
)


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str


STAGES: tuple[Stage, ...] = (
    Stage("diagram", "napkin ops: named-axis arrays and boxes"),
    Stage("partitioned", "levels, transfers, group and stream partitions (the paper's relabelings)"),
    Stage("loops", "scf.forall / scf.for / linalg on memref buffers in level memory spaces"),
    Stage("cpu", "LLVM dialect for the host CPU: " + CPU_PIPELINE),
    Stage("gpu", "a gpu.func: the tensor-core rule (attention) or the loops mapped to CTAs and threads"),
    Stage("nvvm", "NVVM/LLVM dialect inside gpu.module (KERNEL_PIPELINE / GPU_PIPELINE below)"),
    Stage("ptx", "PTX text from gpu-module-to-binary{format=isa}"),
    Stage("cubin", "ptxas output plus the JSON sidecar a runner launches it with"),
)

LOOPS_PIPELINE = "napkin-lower-to-loops,canonicalize,cse"

#: Tile sizes when none are given and no GPU is named (`napkin verify` without --gpu); with a
#: GPU (`napkin verify --gpu`, `napkin compile`) the cost model chooses them.
DEFAULT_TILES: dict[str, dict[str, int]] = {
    "attention": {"q": 64, "x": 64},
    "matmul": {"m": 64, "n": 64, "k": 32},
    "mlp": {"m": 32, "f": 64},
}

#: Per diagram: the group-partitioned axes (tiled by --tile) and the streamed axis.
PARTITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "attention": (("q",), "x"),
    "matmul": (("m", "n"), "k"),
    "mlp": (("m",), "f"),
}


def derivation(diagram: str, sizes: dict[str, int], tiles: dict[str, int] | None = None) -> str:
    """The relabeling pipeline (diagram -> partitioned) of a built-in diagram.

    `sizes` are the diagram's axis sizes (as built: with `r` for grouped-query attention);
    `tiles` overrides the default group/stream sizes by axis name. Axes that are woven but
    not tiled (batch, heads) are grouped with size 1: one group per slice.
    """
    if diagram not in PARTITIONS:
        raise UsageError(f"no derivation for diagram '{diagram}'")
    grouped, streamed = PARTITIONS[diagram]
    tiles = dict(tiles or {})
    allowed = set(grouped) | {streamed}
    for axis in tiles:
        if axis not in allowed:
            raise UsageError(
                f"--tile: axis '{axis}' cannot be tiled in {diagram} (tileable axes: {', '.join(sorted(allowed))})"
            )
        if tiles[axis] > sizes[axis]:
            raise UsageError(f"--tile: tile {axis}={tiles[axis]} is larger than the axis ({axis}={sizes[axis]})")
    chosen = {a: min(tiles.get(a, DEFAULT_TILES[diagram][a]), sizes[a]) for a in (*grouped, streamed)}
    # batch and (key/value) heads: one group per slice. With grouped-query attention the `r`
    # query heads sharing a key/value head stay together in one group, so each K/V chunk is
    # loaded once for all of them.
    woven = [a for a in ("b", "h") if a in sizes and diagram == "attention"]
    axes = [*woven, *grouped]
    group_sizes = [1] * len(woven) + [chosen[a] for a in grouped]
    return (
        "builtin.module(napkin-verify,napkin-assign-levels,"
        f"napkin-group-partition{{axes={','.join(axes)} sizes={','.join(map(str, group_sizes))} level=grid}},"
        f"napkin-stream-partition{{axis={streamed} size={chosen[streamed]}}},napkin-verify)"
    )


def compile_to_loops(
    module: ir.Module,
    diagram: str | None,
    sizes: dict[str, int],
    tiles: dict[str, int] | None = None,
    tiled: bool = True,
    log: Callable[[str], None] = lambda _: None,
    print_after_all: bool = False,
    dump_dir: Path | None = None,
) -> None:
    """Run the napkin stages from `diagram` to `loops` on `module` in place (the
    NAPKIN_PRINT_IR_AFTER_ALL and NAPKIN_DUMP_DIR knobs apply when the arguments are unset)."""
    settings = knobs()
    print_after_all = print_after_all or settings.print_ir_after_all
    dump_dir = dump_dir or settings.dump_dir
    if tiled and diagram is not None:
        partition = derivation(diagram, sizes, tiles)
        log(f"relabel: {partition}")
        run_pipeline(module, partition, print_after_all=print_after_all, dump_dir=dump_dir)
    elif tiles:
        raise UsageError("--tile needs the tiled derivation")
    loops = f"builtin.module(napkin-verify,{LOOPS_PIPELINE})"
    log(f"lower:   {loops}")
    run_pipeline(module, loops, print_after_all=print_after_all, dump_dir=dump_dir / "loops" if dump_dir else None)
