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

`derivation(diagram, sizes, tiles)` is the relabeling pipeline of a built-in diagram, derived
by the same rules as any file (`pipeline.decide`; for attention FlashAttention-2's: weave b,
h; group q; stream x online; fused).
Every stage can be printed or dumped through `napkin_mlir.pipeline.passmanager.run_pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mlir import ir

from napkin_mlir.errors import UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import DIAGRAMS, build_builtin
from napkin_mlir.knobs import knobs
from napkin_mlir.pipeline.decide import DEFAULT_TILE, decide
from napkin_mlir.pipeline.passmanager import run_pipeline

#: Loop program (linalg/scf/memref/arith/math) -> LLVM dialect, for the host CPU.
CPU_PIPELINE = (
    "builtin.module("
    "func.func(scf-forall-to-parallel,convert-linalg-to-loops),"
    "convert-scf-to-cf,"
    "arith-expand{include-bf16=true include-f8e8m0=false include-f4e2m1=false},"
    "func.func(math-extend-to-supported-types),"
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
    "gpu.module(convert-scf-to-cf,arith-expand,expand-strided-metadata,lower-affine,"
    "convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=true}},canonicalize,cse,reconcile-unrealized-casts),"
    "gpu-module-to-binary{{format=isa}})"
)


#: The NVVM tail for a module that already holds a gpu.module (pastes into mlir-opt unchanged).
KERNEL_PIPELINE = (
    "builtin.module(nvvm-attach-target{{chip={chip} features={features} O=3}},"
    "gpu.module(convert-vector-to-scf,arith-expand,expand-strided-metadata,lower-affine,convert-scf-to-cf,"
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


class _BuiltinPartitions(Mapping[str, tuple[tuple[str, ...], str]]):
    """Per built-in diagram: the axes its derivation tiles and the axis it streams, as
    `decide` finds them on the diagram (a thin name: the rules are `pipeline.decide`'s)."""

    def __getitem__(self, diagram: str) -> tuple[tuple[str, ...], str]:
        if diagram not in DIAGRAMS:
            raise KeyError(diagram)
        return _partitions(diagram)

    def __iter__(self) -> Iterator[str]:
        return iter(DIAGRAMS)

    def __len__(self) -> int:
        return len(DIAGRAMS)


@cache
def _partitions(diagram: str) -> tuple[tuple[str, ...], str]:
    with napkin_context(), ir.Location.unknown():
        d = decide(build_builtin(diagram, dict.fromkeys(DIAGRAMS[diagram].axes, 4 * DEFAULT_TILE)))
    return tuple(d.tiled), d.streamed or ""


PARTITIONS = _BuiltinPartitions()


def derivation(diagram: str, sizes: dict[str, int], tiles: dict[str, int] | None = None) -> str:
    """The relabeling pipeline (diagram -> partitioned) of a built-in diagram: the diagram
    built at `sizes` (as built: `h` key/value heads and `r` query heads per key/value head for
    grouped-query attention) and derived by `decide` like any file, at `tiles` by axis name
    (the others at their defaults). A thin name: the rules are `pipeline.decide`'s."""
    if diagram not in DIAGRAMS:
        raise UsageError(f"no derivation for diagram '{diagram}'")
    dims = {a: sizes[a] for a in DIAGRAMS[diagram].axes if a in sizes}
    kv_heads = None
    if diagram == "attention" and "r" in sizes:
        kv_heads, dims["h"] = sizes["h"], sizes["h"] * sizes["r"]
    with napkin_context(), ir.Location.unknown():
        return decide(build_builtin(diagram, dims, kv_heads=kv_heads), tiles).pipeline()


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
