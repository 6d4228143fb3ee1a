"""The napkin pipeline, stage by stage, in one place.

    diagram      napkin ops built from Python or parsed from text
      | napkin-verify
    loops        linalg on memref buffers (napkin-lower-to-loops)
      | CPU_PIPELINE (upstream, pastes into mlir-opt)
    cpu          LLVM dialect, run by the ExecutionEngine

`STAGES` lists each stage with the pipeline text that produces it from the previous one;
`compile_to_loops` runs the napkin part. Every stage can be printed or dumped through
`napkin_mlir.passmanager.run_pipeline` (`--mlir-print-ir-after-all`, a dump directory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlir import ir

from napkin_mlir.cpu import CPU_PIPELINE
from napkin_mlir.errors import NapkinError
from napkin_mlir.passmanager import run_pipeline


@dataclass(frozen=True)
class Stage:
    name: str
    pipeline: str
    summary: str


STAGES: tuple[Stage, ...] = (
    Stage("diagram", "", "napkin ops: named-axis arrays and boxes"),
    Stage("loops", "builtin.module(napkin-verify,napkin-lower-to-loops,canonicalize,cse)", "linalg on memref buffers"),
    Stage("cpu", CPU_PIPELINE, "LLVM dialect for the host CPU"),
)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise NapkinError(f"unknown stage '{name}' (stages: {', '.join(s.name for s in STAGES)})")


def compile_to_loops(
    module: ir.Module,
    tiles: dict[str, int] | None = None,
    log: Callable[[str], None] = lambda _: None,
    print_after_all: bool = False,
    dump_dir: Path | None = None,
) -> None:
    """Run the napkin stages from `diagram` to `loops` on `module` in place."""
    if tiles:
        raise NapkinError("tiling (--tile) needs the partitioning passes, which are not built yet")
    text = stage("loops").pipeline
    log(f"pipeline: {text}")
    run_pipeline(module, text, print_after_all=print_after_all, dump_dir=dump_dir)
