"""The Hopper rule (sm_90a): a bf16/f16 matmul on warpgroup MMA (`wgmma.mma_async`).

`compile_wgmma_matmul` takes a plain diagram `C = contract(A, B)` (optionally cast to the
inputs' type; `hopper_plan.py` reads it and refuses anything else by name), builds the kernel
with the MLIR Python bindings (`hopper_emit.py`: one warpgroup per 64 x tile_n block of C,
tiles copied into 128-byte swizzled shared memory by the threads, wgmma from shared-memory
descriptors, f32 accumulation in registers) and lowers it with the same upstream NVVM tail as
the mma.sync kernel (`KERNEL_PIPELINE` for sm_90a) to PTX.

`compile_wgmma` picks the kernel: the built-in attention, and a diagram from a file with a
softmax (an attention variant: masks of positions), go through their derivation at the
attention kernel's tiles to `hopper_attention.py` (warp-specialized: TMA and mbarriers
feeding both contractions on wgmma); every other diagram must be the matmul above (the
threads copy its tiles, no TMA or pipelining yet).

The CPU emulator runs these kernels (its rules decode wgmma descriptors and fragments, TMA
boxes and mbarrier phases by the PTX ISA: `napkin_mlir.emulator.ops_wgmma`, `ops_tma`); only a
GPU can confirm that reading of the ISA.
"""

from __future__ import annotations

from mlir import ir

from napkin_mlir.backends.gpu.hopper_attention import WG_ROWS, compile_wgmma_attention, wgmma_attention_tiles
from napkin_mlir.backends.gpu.hopper_emit import emit_matmul_kernel
from napkin_mlir.backends.gpu.hopper_plan import THREADS, MatmulPlan, WgmmaRefusal
from napkin_mlir.backends.gpu.nvvm import check_target, lower_built_kernel
from napkin_mlir.backends.gpu.sidecar import GpuKernel, KernelArg
from napkin_mlir.derive.auto import derive
from napkin_mlir.pipeline.passmanager import run_pipeline
from napkin_mlir.pipeline.stages import derivation

#: Targets with wgmma (the `a` features: sm_90a).
WGMMA_TARGETS = ("sm_90a",)
ENTRY = "matmul_wgmma"


def compile_wgmma(
    diagram: ir.Module,
    name: str | None,
    sizes: dict[str, int],
    target: str,
    stop_after: str = "ptx",
    tiles: dict[str, int] | None = None,
    filename: str | None = None,
) -> tuple[GpuKernel, str]:
    """The wgmma kernel of a plain diagram (`name`: the built-in diagram it is, if any): the
    built-in attention, or a diagram with a softmax, or an exponential and two contractions
    (an attention variant from a file, its softmax written out or not), derived at the attention kernel's tiles;
    else the matmul."""
    if name != "attention" and not _is_attention(diagram):
        return compile_wgmma_matmul(diagram, target, stop_after, tiles, filename)
    check_target(target)
    if "q" not in sizes:
        raise WgmmaRefusal(
            "the wgmma attention kernel tiles the axes q (queries) and x (keys); the diagram has no axis q"
        )
    if sizes["q"] < WG_ROWS:
        raise WgmmaRefusal(
            f"the wgmma attention kernel's consumer warpgroups take {WG_ROWS} query rows each; q={sizes['q']} is fewer"
        )
    want = wgmma_attention_tiles(sizes["q"])
    if tiles and any(tiles.get(a, t) != t for a, t in want.items()):
        raise WgmmaRefusal(f"the wgmma attention kernel's tiles are {want}, got --tile {tiles}")
    if name == "attention":
        run_pipeline(diagram, derivation("attention", sizes, want))
    else:
        missing = sorted(set(want) - set(sizes))
        if missing:
            raise WgmmaRefusal(
                f"the wgmma attention kernel tiles the axes {sorted(want)} (queries q, keys x); "
                f"the diagram has no axis {', '.join(missing)}"
            )
        run_pipeline(diagram, derive(diagram, want, filename=filename).pipeline(), filename=filename)
    return compile_wgmma_attention(diagram, target, stop_after, filename)


def _is_attention(diagram: ir.Module) -> bool:
    """Whether the diagram's functions hold a `napkin.softmax`, or an exponential and two
    contractions (attention with its softmax written out; not a matmul or an MLP)."""
    names = [
        inner.operation.name
        for op in diagram.body.operations
        if op.operation.name == "func.func"
        for block in op.operation.regions[0].blocks
        for inner in block.operations
    ]
    return "napkin.softmax" in names or ("napkin.exp" in names and names.count("napkin.contract") > 1)


def compile_wgmma_matmul(
    diagram: ir.Module,
    target: str,
    stop_after: str = "ptx",
    tiles: dict[str, int] | None = None,
    filename: str | None = None,
) -> tuple[GpuKernel, str]:
    """The wgmma matmul kernel of a plain diagram, to the stage `stop_after` (gpu | nvvm |
    ptx). Returns the launch description and the text of that stage (`kernel.ptx` is empty
    before the ptx stage). `tiles` may set the tile of n (64, 128 or 256; default 128)."""
    check_target(target)
    if target not in WGMMA_TARGETS:
        raise WgmmaRefusal(f"--kernel wgmma needs a Hopper target ({', '.join(WGMMA_TARGETS)}), got {target}")
    plan = MatmulPlan.from_diagram(diagram, tiles or {}, filename)
    m_ax, n_ax, k_ax = plan.axes
    args = [
        KernelArg(plan.arg_names[0], "input", plan.dtype, (plan.m, plan.k), (m_ax, k_ax)),
        KernelArg(
            plan.arg_names[1],
            "input",
            plan.dtype,
            (plan.n, plan.k) if plan.b_k_major else (plan.k, plan.n),
            (n_ax, k_ax) if plan.b_k_major else (k_ax, n_ax),
        ),
        KernelArg("out0", "output", plan.out_dtype, (plan.m, plan.n), (m_ax, n_ax)),
    ]
    kernel = GpuKernel(
        target,
        ENTRY,
        plan.grid,
        (THREADS, 1, 1),
        plan.smem_bytes,
        args,
        "",
        problem={
            "function": plan.name,
            "kernel": "wgmma",
            "tile": {m_ax: 64, n_ax: plan.tile_n, k_ax: 64},
            "flops": plan.flops,
            "b_layout": "k-major" if plan.b_k_major else "mn-major",
        },
    )
    module = emit_matmul_kernel(plan, ENTRY)
    text = lower_built_kernel(module, target, stop_after, "wgmma kernel")
    if stop_after == "ptx":
        kernel.ptx = text
    return kernel, text
