"""Running kernels: a grid on the machine (`run_kernel`), and a kernel checked against JAX.

`run_kernel` binds arrays to a loaded kernel's memref arguments and runs the grid in batches
of whole CTAs (`LANES_PER_BATCH` lanes at a time), each batch a fresh `Machine`.

`emulate` checks a kernel the way the GPU runner does: the launch its sidecar describes, on
fresh random inputs and NaN-poisoned outputs, judged against JAX by the project's rule for
the problem the sidecar names (or, with `ctas`, on the output rows a sample of CTAs wrote).
`emulate_kernel` and `emulate_sidecar` take the kernel as `napkin compile` builds it or as
`napkin compile --emit gpu` writes it.

Speed: the interpreter costs a few microseconds per op for a whole batch of CTAs, so
problems of a few thousand query rows take seconds. It is a correctness tool; timings come
from the GPU runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import WARP, EmulationError, Machine, MemRef, Stats, row_major
from napkin_mlir.emulator.program import Kernel, load_kernel, numpy_dtype
from napkin_mlir.emulator.report import EmulationReport
from napkin_mlir.ir.context import napkin_context

if TYPE_CHECKING:
    from napkin_mlir.check.harness import VerifyConfig

#: Lanes (CTAs x threads) emulated at once; a grid runs in batches of whole CTAs.
LANES_PER_BATCH = 8192

# --- running a grid --------------------------------------------------------------------------------


def run_kernel(
    kernel: Kernel,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    smem_bytes: int,
    arrays: Sequence[np.ndarray],
    outputs: Sequence[int] = (),
    names: Sequence[str] = (),
    lanes_per_batch: int = LANES_PER_BATCH,
    progress: Callable[[int, int], None] | None = None,
    cta_ids: Sequence[int] | None = None,
) -> Stats:
    """Run `kernel` over the grid with `arrays` bound to its memref arguments (in order;
    modified in place; only their element count must match the memref's, as for a device
    pointer; `names` name them in diagnostics). `outputs` are the argument positions whose
    elements may be written by one thread each (`Stats.written` says which were). `cta_ids`
    (linear, x fastest) runs only those CTAs of the grid. Returns per-CTA statistics."""
    if len(arrays) != len(kernel.args):
        raise EmulationError(f"the kernel takes {len(kernel.args)} arrays, got {len(arrays)}", kernel.name)
    threads = block[0] * block[1] * block[2]
    if threads % WARP:
        raise EmulationError(f"a block of {threads} threads is not a whole number of warps", kernel.name)
    bound, writers = _bind_arguments(kernel, arrays, outputs, names)
    stats = Stats()
    chosen = _chosen_ctas(grid, cta_ids, kernel.name)
    ctas = len(chosen)
    per_batch = max(1, lanes_per_batch // threads)
    for first in range(0, ctas, per_batch):
        ids = chosen[first : first + per_batch]
        m = Machine(kernel.slots, kernel.op_names, block, grid, ids, smem_bytes, stats, writers)
        for (slot, _), ref in zip(kernel.args, bound, strict=True):
            m.env[slot] = ref
        with np.errstate(over="ignore", invalid="ignore"):
            m.run(kernel.body)
        stats.unretired_copies += sum(len(g) for g in m.groups) + len(m.open_copies)
        if progress is not None:
            progress(min(first + per_batch, ctas), ctas)
    stats.ctas = ctas
    stats.written = {i: writers[id(bound[i].data)] >= 0 for i in outputs}
    return stats


def _bind_arguments(
    kernel: Kernel, arrays: Sequence[np.ndarray], outputs: Sequence[int], names: Sequence[str]
) -> tuple[list[MemRef], dict[int, np.ndarray]]:
    """The global memrefs the kernel's arguments are bound to (views of the caller's arrays),
    and for each output buffer its writer per element (-1: none yet)."""
    bound = []
    writers: dict[int, np.ndarray] = {}
    for i, ((_, t), a) in enumerate(zip(kernel.args, arrays, strict=True)):
        shape = tuple(t.shape)
        if int(np.prod(shape)) != a.size or numpy_dtype(t.element_type) != a.dtype:
            raise EmulationError(
                f"argument #{i}: the kernel takes {t}, got an array {a.shape} of {a.dtype}", kernel.name
            )
        if not a.flags.c_contiguous:
            raise EmulationError(f"argument #{i} must be a contiguous array (a device buffer)", kernel.name)
        flat = a.reshape(-1)  # a view: the kernel writes into the caller's array
        bound.append(MemRef(names[i] if i < len(names) else f"arg{i}", "global", flat, 0, shape, row_major(shape)))
        if i in outputs:
            writers[id(flat)] = np.full(flat.size, -1, np.int64)
    return bound, writers


def _chosen_ctas(grid: tuple[int, int, int], cta_ids: Sequence[int] | None, name: str) -> np.ndarray:
    """The linear ids of the CTAs to run, ascending: all of the grid's, or `cta_ids`."""
    total = grid[0] * grid[1] * grid[2]
    chosen = np.arange(total) if cta_ids is None else np.unique(np.asarray(cta_ids, np.int64))
    if chosen.size == 0 or chosen[0] < 0 or chosen[-1] >= total:
        raise EmulationError(f"CTAs to run must lie in [0, {total})", name)
    return chosen


# --- checking a kernel the way the GPU runner does ---------------------------------------------------


def emulate(
    text: str,
    side: Any,
    seed: int = 0,
    filename: str = "kernel.mlir",
    progress: Callable[[int, int], None] | None = None,
    ctas: int | None = None,
) -> EmulationReport:
    """Run a kernel's gpu-stage IR with the launch its sidecar (a `gpu_runner.Sidecar`)
    describes, on fresh random inputs and NaN-poisoned outputs, and judge the result against
    JAX by the project's rule (`harness.judge`) for the problem the sidecar names.

    `ctas` runs only that many CTAs of the grid (the first, the last and evenly spaced ones
    between) and judges the output rows they write (attention): the kernel of a full-size
    problem checked in seconds."""
    import time

    from napkin_mlir.backends.gpu import runner as gpu_runner

    config = _problem_config(side)
    with napkin_context(), ir.Location.unknown():
        kernel = load_kernel(text, filename, side.entry)
    inputs = gpu_runner.make_inputs(side, seed)
    arrays = [inputs[a.name] for a in side.args]
    outputs = [i for i, a in enumerate(side.args) if a.role == "output"]
    total = side.grid[0] * side.grid[1] * side.grid[2]
    if ctas is not None and (ctas < 1 or config.diagram != "attention"):
        raise EmulationError("--ctas takes a positive count, and attention kernels only")
    chosen = None if ctas is None or ctas >= total else np.unique(np.linspace(0, total - 1, ctas).round())
    start = time.perf_counter()
    stats = run_kernel(
        kernel,
        side.grid,
        side.block,
        side.dynamic_smem_bytes,
        arrays,
        outputs=outputs,
        names=[a.name for a in side.args],
        progress=progress,
        cta_ids=chosen,
    )
    seconds = time.perf_counter() - start
    inputs_only = [arrays[i] for i, a in enumerate(side.args) if a.role == "input"]
    passed, errors, criterion = _judge(
        config, inputs, inputs_only, arrays[outputs[0]], stats.written[outputs[0]], chosen
    )
    return EmulationReport(
        kernel.name,
        side.grid,
        side.block,
        side.dynamic_smem_bytes,
        passed,
        errors,
        criterion,
        stats,
        seconds,
    )


def _problem_config(side: Any) -> VerifyConfig:
    """The problem the sidecar names, as the check harness states problems."""
    from napkin_mlir.check import harness

    problem = side.problem
    if not {"diagram", "dims", "dtype"} <= problem.keys():
        raise EmulationError(
            "the sidecar does not name its problem (diagram, dims, dtype): no reference to compare with"
        )
    return harness.VerifyConfig(
        problem["diagram"],
        dict(problem["dims"]),
        problem["dtype"],
        causal=bool(problem.get("causal", False)),
        kv_heads=problem.get("kv_heads"),
        activation=problem.get("activation", "gelu"),
    )


def _judge(
    config: VerifyConfig,
    inputs: dict[str, np.ndarray],
    input_arrays: list[np.ndarray],
    out: np.ndarray,
    written: np.ndarray,
    chosen: np.ndarray | None,
) -> tuple[bool, dict[str, float], str]:
    """Whether the output passes the project's rule against JAX (the whole output, or the rows
    the `chosen` CTAs wrote), the errors, and the rule as stated. A non-finite output fails."""
    from napkin_mlir.check import harness, reference

    if chosen is None:
        y, scope = out, ""
        ref64, same = harness.references(config, input_arrays)
    else:
        y, ref64, same = _written_rows(inputs, out, written.reshape(out.shape), config.causal)
        scope = f", on the {len(y)} rows the emulated CTAs wrote"
    with np.errstate(invalid="ignore"):
        c = reference.compare(y, ref64, same)
    passed, criterion = harness.judge(config, c)
    criterion += scope
    finite = bool(np.all(np.isfinite(y.astype(np.float32))))
    errors = {"max_abs": c.max_abs, "rel_fro": c.rel_fro, "ref_max_abs": c.jax_max_abs, "ref_rel_fro": c.jax_rel_fro}
    if not finite:
        errors.update(max_abs=float("inf"), rel_fro=float("inf"))
    return passed and finite, errors, criterion


def _written_rows(
    inputs: dict[str, np.ndarray], out: np.ndarray, written: np.ndarray, causal: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The attention rows some CTAs wrote, with float64 and same-dtype JAX references computed
    for those rows only (the whole problem may be far too large to reference)."""
    import jax
    import jax.numpy as jnp

    rows = written.any(axis=-1)  # (b, h, [r,] q)
    if not rows.any() or not np.array_equal(written, np.broadcast_to(rows[..., None], written.shape)):
        raise EmulationError("the emulated CTAs wrote no output rows, or rows only in part")
    q, k, v = (inputs[n] for n in ("Q", "K", "V"))
    got, ref64, same = [], [], []
    for head in zip(*np.nonzero(rows.any(axis=-1)), strict=True):  # (b, h[, r]) with written rows
        idx = np.nonzero(rows[head])[0]
        qs, ks, vs = q[head][idx], k[head[0], head[1]], v[head[0], head[1]]
        s = qs.astype(np.float64) @ ks.astype(np.float64).T / np.sqrt(q.shape[-1])
        keep = np.arange(ks.shape[0])[None, :] <= idx[:, None] if causal else np.ones(s.shape, bool)
        s = np.where(keep, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        ref64.append((p / p.sum(axis=1, keepdims=True)) @ vs.astype(np.float64))
        one = (jnp.asarray(t)[None, :, None, :] for t in (qs, ks, vs))
        jax_rows = jax.nn.dot_product_attention(*one, mask=jnp.asarray(keep)[None, None], implementation="xla")
        same.append(np.asarray(jax_rows)[0, :, 0])
        got.append(out[head][idx])
    return np.concatenate(got), np.concatenate(ref64), np.concatenate(same)


# --- kernels as napkin compile builds and writes them -----------------------------------------------


def emulate_kernel(
    kernel: Any,
    text: str,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    ctas: int | None = None,
) -> EmulationReport:
    """`emulate` the gpu-stage `text` of a `gpu.GpuKernel` (as `napkin compile` builds them)."""
    from pathlib import Path

    from napkin_mlir.backends.gpu import runner as gpu_runner

    filename = f"{kernel.entry}.mlir"
    side = gpu_runner.parse_sidecar(kernel.sidecar(filename), Path(filename))
    return emulate(text, side, seed, filename, progress, ctas)


def emulate_sidecar(
    path: str | Any, seed: int = 0, progress: Callable[[int, int], None] | None = None, ctas: int | None = None
) -> EmulationReport:
    """`emulate` the gpu-stage IR a sidecar names (as `napkin compile --emit gpu` writes them)."""
    from pathlib import Path

    from napkin_mlir.backends.gpu import runner as gpu_runner

    try:
        side = gpu_runner.load_sidecar(Path(path))
    except gpu_runner.RunnerError as err:
        raise EmulationError(str(err)) from None
    if side.binary.suffix != ".mlir":
        raise EmulationError(
            f"{path} describes {side.binary.name}; the emulator runs gpu-stage IR (napkin compile --emit gpu -o FILE.mlir)"
        )
    try:
        text = side.binary.read_text()
    except OSError as err:
        raise EmulationError(f"cannot read the kernel IR: {err}") from None
    return emulate(text, side, seed, side.binary.name, progress, ctas)
