"""Running kernels: a grid on the machine (`run_kernel`), and a kernel checked against JAX.

`run_kernel` binds arrays to a loaded kernel's memref arguments, and TMA tensor maps
(`runner.TensorMap`, over one of those arrays) to its `!llvm.ptr` arguments, and runs the grid
in batches of whole CTAs (`LANES_PER_BATCH` lanes at a time), each batch a fresh `Machine`.

`emulate` checks a kernel the way the GPU runner does: the launch its sidecar describes, on
fresh random inputs and NaN-poisoned outputs, judged against JAX by the project's rule for
the problem the sidecar names (or, with `ctas`, on the output rows a sample of CTAs wrote).
The references come from one of two places: a built-in problem (the sidecar's diagram name,
dims and options: `check.harness.references`), or a plain diagram as napkin IR (the
`diagram` argument, or the sidecar's `problem.napkin`, which `napkin compile FILE.mlir`
writes), whose JAX interpretation (`napkin_mlir.interpret`, float64 and same-dtype) judges
every output. `emulate_kernel` and `emulate_sidecar` take the kernel as `napkin compile`
builds it or as `napkin compile --emit gpu` writes it.

Speed: the interpreter costs a few microseconds per op for a whole batch of CTAs, so
problems of a few thousand query rows take seconds. It is a correctness tool; timings come
from the GPU runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mlir import ir

from napkin_mlir.emulator.machine import WARP, EmulationError, Machine, MemRef, Stats, TensorMapRef, row_major
from napkin_mlir.emulator.program import Kernel, is_pointer, load_kernel, numpy_dtype
from napkin_mlir.emulator.report import EmulationReport
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.segments import INTEGER_DTYPES, segment_ids

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
    arrays: Sequence[Any],
    outputs: Sequence[int] = (),
    names: Sequence[str] = (),
    lanes_per_batch: int = LANES_PER_BATCH,
    progress: Callable[[int, int], None] | None = None,
    cta_ids: Sequence[int] | None = None,
) -> Stats:
    """Run `kernel` over the grid with `arrays` bound to its memref arguments (in order;
    modified in place; only their element count must match the memref's, as for a device
    pointer; `names` name them in diagnostics) and, for an `!llvm.ptr` argument, a
    `runner.TensorMap` (a TMA tensor map over the array of the argument `names` calls its
    `of`). `outputs` are the argument positions whose
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
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inactive lanes compute too
            m.run(kernel.body)
        stats.unretired_copies += sum(len(g) for g in m.groups) + len(m.open_copies)
        stats.unretired_copies += m.tma.in_flight if m.tma is not None else 0  # TMA loads never waited for
        if progress is not None:
            progress(min(first + per_batch, ctas), ctas)
    stats.ctas = ctas
    stats.written = {i: writers[id(bound[i].data)] >= 0 for i in outputs}
    return stats


def _bind_arguments(
    kernel: Kernel, arrays: Sequence[Any], outputs: Sequence[int], names: Sequence[str]
) -> tuple[list[MemRef | TensorMapRef], dict[int, np.ndarray]]:
    """The global memrefs the kernel's arguments are bound to (views of the caller's arrays)
    and the tensor maps over them, and for each output buffer its writer per element (-1:
    none yet)."""
    bound: list[Any] = [None] * len(arrays)
    writers: dict[int, np.ndarray] = {}
    for i, ((_, t), a) in enumerate(zip(kernel.args, arrays, strict=True)):
        if is_pointer(t):
            continue  # tensor maps, once the arrays they read are bound
        if not isinstance(a, np.ndarray):
            raise EmulationError(f"argument #{i}: the kernel takes {t}, got {type(a).__name__}", kernel.name)
        shape = tuple(t.shape)
        if int(np.prod(shape)) != a.size or numpy_dtype(t.element_type) != a.dtype:
            raise EmulationError(
                f"argument #{i}: the kernel takes {t}, got an array {a.shape} of {a.dtype}", kernel.name
            )
        if not a.flags.c_contiguous:
            raise EmulationError(f"argument #{i} must be a contiguous array (a device buffer)", kernel.name)
        flat = a.reshape(-1)  # a view: the kernel writes into the caller's array
        bound[i] = MemRef(names[i] if i < len(names) else f"arg{i}", "global", flat, 0, shape, row_major(shape))
        if i in outputs:
            writers[id(flat)] = np.full(flat.size, -1, np.int64)
    for i, ((_, t), a) in enumerate(zip(kernel.args, arrays, strict=True)):
        if is_pointer(t):
            bound[i] = _bind_tensor_map(kernel, i, a, bound, names)
    return bound, writers


def _bind_tensor_map(kernel: Kernel, i: int, tmap: Any, bound: list[Any], names: Sequence[str]) -> TensorMapRef:
    """The tensor map `tmap` (a `runner.TensorMap`) of argument #i, over the bound array its
    `of` names; its sizes and strides must fit that array."""
    from napkin_mlir.backends.gpu import runner as gpu_runner

    name = names[i] if i < len(names) else f"arg{i}"
    if not isinstance(tmap, gpu_runner.TensorMap):
        raise EmulationError(
            f"argument #{i} ({name}) is a tensor map (!llvm.ptr): got {type(tmap).__name__}", kernel.name
        )
    source = next((b for n, b in zip(names, bound, strict=False) if n == tmap.of and isinstance(b, MemRef)), None)
    if source is None:
        raise EmulationError(f"tensor map {name}: no array argument named {tmap.of!r}", kernel.name)
    item = source.itemsize
    strides = (1, *(s // item for s in tmap.strides))
    extent = sum((d - 1) * s for d, s in zip(tmap.dims, strides, strict=True)) + 1
    if (
        gpu_runner.numpy_dtype(tmap.dtype) != source.data.dtype
        or len(tmap.box) != len(tmap.dims)
        or any(s % item for s in tmap.strides)
        or extent > source.data.size
    ):
        raise EmulationError(
            f"tensor map {name} ({tmap.dtype}, dims {list(tmap.dims)}, byte strides {list(tmap.strides)}) does not "
            f"fit {source.name} ({source.data.dtype}, {source.data.size} elements)",
            kernel.name,
        )
    return TensorMapRef(name, source, tuple(tmap.dims), strides, tuple(tmap.box), int(tmap.swizzle))


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
    diagram: str | None = None,
) -> EmulationReport:
    """Run a kernel's gpu-stage IR with the launch its sidecar (a `gpu_runner.Sidecar`)
    describes, on fresh random inputs and NaN-poisoned outputs, and judge the result against
    JAX by the project's rule (`harness.judge`) for the problem the sidecar names, or, given
    `diagram` (the plain diagram as napkin IR; by default the sidecar's `problem.napkin`),
    against that diagram's JAX interpretation, every output by `harness.judge_dtype`.

    `ctas` runs only that many CTAs of the grid (the first, the last and evenly spaced ones
    between) and judges the output they write (built-in attention: its rows, referenced for
    those rows only; a diagram: the elements written, against the whole interpretation): the
    kernel of a full-size problem checked in seconds."""
    import time

    from napkin_mlir.backends.gpu import runner as gpu_runner

    if diagram is None:
        diagram = side.problem.get("napkin")
    config = _problem_config(side) if diagram is None else None
    with napkin_context(), ir.Location.unknown():
        kernel = load_kernel(text, filename, side.entry)
    span = max((a.shape[-1] for a in side.args if a.role == "input" and a.dtype in INTEGER_DTYPES), default=1)
    inputs = gpu_runner.make_inputs(side, seed, lambda shape: segment_ids(shape, seed, span))
    arrays: list[Any] = [
        gpu_runner.tensor_map(a, side.args) if a.role == "tensormap" else inputs[a.name] for a in side.args
    ]
    outputs = [i for i, a in enumerate(side.args) if a.role == "output"]
    total = side.grid[0] * side.grid[1] * side.grid[2]
    if ctas is not None and (ctas < 1 or (config is not None and config.diagram != "attention")):
        raise EmulationError(
            "--ctas takes a positive count, and attention kernels only (or kernels of a diagram from a file)"
        )
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
    if config is None:
        assert diagram is not None
        passed, errors, criterion = _judge_diagram(
            diagram,
            side,
            inputs_only,
            [(side.args[i], arrays[i], stats.written[i]) for i in outputs],
            chosen is not None,
        )
    else:
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


def _judge_diagram(
    diagram: str,
    side: Any,
    input_arrays: list[np.ndarray],
    outs: list[tuple[Any, np.ndarray, np.ndarray]],
    sampled: bool,
) -> tuple[bool, dict[str, float], str]:
    """Every output against the JAX interpretation of the plain `diagram` (napkin IR text):
    float64 and in the declared element types, each judged by the project's rule for its
    dtype (`harness.judge_dtype`); `sampled`: only the elements the emulated CTAs wrote.
    Returns the verdict, the errors of the worst output and the rules as stated."""
    from napkin_mlir.check import harness, reference
    from napkin_mlir.interpret import interpret
    from napkin_mlir.ir.arrays import ArrayType
    from napkin_mlir.ir.context import parse_module
    from napkin_mlir.ir.regions import diagram_functions

    with napkin_context(), ir.Location.unknown():
        module = parse_module(diagram, "the kernel's diagram")
        functions = diagram_functions(module.operation)
        if not functions:
            raise EmulationError("the kernel's diagram has no function of napkin arrays: no reference to compare with")
        ftype = ir.FunctionType(ir.TypeAttr(functions[0].attributes["function_type"]).value)
        ins = [ArrayType.from_mlir(t) for t in ftype.inputs]
        results = [ArrayType.from_mlir(t) for t in ftype.results]
        if [t.shape for t in ins] != [a.shape for a in input_arrays] or len(results) != len(outs):
            raise EmulationError(
                f"the kernel's arguments do not match its diagram: inputs {[a.shape for a in input_arrays]} and "
                f"{len(outs)} outputs, the diagram takes {[t.shape for t in ins]} and gives {len(results)}"
            )
        ref64 = interpret(module, input_arrays, "f64")
        same = interpret(module, input_arrays, "same")
    checks = []
    for k, ((arg, out, written), t) in enumerate(zip(outs, results, strict=True)):
        if tuple(arg.shape) != t.shape or arg.dtype != t.dtype:
            raise EmulationError(f"output {arg.name} is {arg.shape} {arg.dtype}, the diagram's result #{k} is {t}")
        y, r64, r_same = out, np.asarray(ref64[k]), np.asarray(same[k])
        if sampled:
            mask = written.reshape(out.shape)
            if not mask.any():
                raise EmulationError(f"the emulated CTAs wrote nothing of output {arg.name}")
            y, r64, r_same = y[mask], r64[mask], r_same[mask]
        with np.errstate(invalid="ignore"):
            c = reference.compare(y, r64, r_same)
        passed, rule = harness.judge_dtype(t.dtype, c)
        finite = bool(np.all(np.isfinite(y.astype(np.float32))))
        errors = {
            "max_abs": c.max_abs,
            "rel_fro": c.rel_fro,
            "ref_max_abs": c.jax_max_abs,
            "ref_rel_fro": c.jax_rel_fro,
        }
        if not finite:
            errors.update(max_abs=float("inf"), rel_fro=float("inf"))
        scope = f" on the {y.size} elements the emulated CTAs wrote" if sampled else ""
        checks.append((passed and finite, errors, f"{arg.name}: {rule}{scope}"))
    worst = next((c for c in checks if not c[0]), max(checks, key=lambda c: c[1]["rel_fro"]))
    criterion = "; ".join(c[2] for c in checks) + ", against the JAX interpretation of the diagram"
    return all(c[0] for c in checks), worst[1], criterion


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
    diagram: str | None = None,
) -> EmulationReport:
    """`emulate` the gpu-stage `text` of a `gpu.GpuKernel` (as `napkin compile` builds them);
    `diagram`, the plain diagram as napkin IR, judges it against that diagram's interpretation
    (without it: the problem the kernel names, a built-in's references or its `napkin` text)."""
    from pathlib import Path

    from napkin_mlir.backends.gpu import runner as gpu_runner

    filename = f"{kernel.entry}.mlir"
    side = gpu_runner.parse_sidecar(kernel.sidecar(filename), Path(filename))
    return emulate(text, side, seed, filename, progress, ctas, diagram)


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
