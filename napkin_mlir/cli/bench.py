"""`napkin bench`: the generated kernel against a reference, side by side, medians and ratio."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napkin_mlir.check.bench import RESULTS_DIR, bench_attention_cpu, progress, write_results
from napkin_mlir.check.harness import VerifyConfig
from napkin_mlir.cli.common import DTYPE_CHOICES, parse_sizes
from napkin_mlir.cli.compile import KERNELS
from napkin_mlir.cli.verify_grad import add_grad_arguments, differentiated_files
from napkin_mlir.emulator import EmulationReport
from napkin_mlir.errors import UsageError

#: The CPU sweep: sequence lengths at b=1, h=8, d=64 (the README's reference problem at 1024).
CPU_SWEEP = (256, 512, 1024)


#: The GPU sweep (issue 5): q = x from 512 to 16k with b*q = 16k and h*d = 2048. Each kernel
#: takes the cost model's tiles for the target, as `napkin compile` without --tile does.
GPU_SEQS = (512, 1024, 2048, 4096, 8192, 16384)
GPU_HEAD_DIMS = (64, 128)


def gpu_sweep() -> list[tuple[dict[str, int], bool]]:
    problems = []
    for d in GPU_HEAD_DIMS:
        for n in GPU_SEQS:
            for causal in (False, True):
                problems.append(({"b": 16384 // n, "h": 2048 // d, "q": n, "x": n, "d": d}, causal))
    return problems


Configuration = tuple[int, bool, tuple[tuple[str, int], ...]]  # head dim, causal, tiles


def _configuration(dims: dict[str, int], causal: bool, tiles: dict[str, int]) -> Configuration:
    return dims["d"], causal, tuple(sorted(tiles.items()))


def sweep_configurations(arch: str = "sm_90a", dtype: str = "bf16") -> dict[Configuration, list[int]]:
    """The distinct kernel configurations of the sweep (head dim, mask, the model's tiles for
    `arch`) and the sequence lengths that use each."""
    from mlir import ir

    from napkin_mlir.check.harness import build
    from napkin_mlir.cli.compile import _model_tiles
    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.diagrams import diagram_sizes

    configs: dict[Configuration, list[int]] = {}
    for dims, causal in gpu_sweep():
        config = VerifyConfig("attention", dims, dtype, causal=causal)
        with napkin_context(), ir.Location.unknown():
            sizes = diagram_sizes(build(config))
        tiles = _model_tiles(config, sizes, arch)
        configs.setdefault(_configuration(dims, causal, tiles), []).append(dims["q"])
    return configs


def emulate_configuration(config: Configuration, dtype: str = "bf16") -> EmulationReport:
    """One sweep configuration on the CPU emulator at a reduced size: b=1, h=2 and q = x of one
    and a half q tiles plus a few (partial tiles and chunks included)."""
    from napkin_mlir.cli.compile import compile_kernel
    from napkin_mlir.emulator import emulate_kernel

    d, causal, tiles = config
    n = dict(tiles)["q"] * 3 // 2 + 7
    problem = VerifyConfig(
        "attention", {"b": 1, "h": 2, "q": n, "x": n, "d": d}, dtype, causal=causal, tiles=dict(tiles)
    )
    kernel, text = compile_kernel(problem, "sm_80", "gpu", "tensorcore", log=lambda _: None)
    return emulate_kernel(kernel, text)


def preflight(configs: dict[Configuration, list[int]], dtype: str) -> None:
    """Run each kernel configuration of the sweep on the CPU emulator (`emulate_configuration`)
    before any device time is spent; UsageError if one fails."""
    for config, seqs in configs.items():
        d, causal, tiles = config
        label = f"d={d}{' causal' if causal else ''} tiles {dict(tiles)} (q = x in {seqs})"
        report = emulate_configuration(config, dtype)
        print(f"preflight on the emulator, {label}: {report.lines()[-1]}")
        if not report.passed:
            raise UsageError(f"the {label} kernel fails on the emulator: fix it first")


def prepare_gpu(directory: Path, arch: str, dtype: str) -> int:
    """Compile the sweep's kernels (cubin + sidecar each, the model's tiles) into `directory`,
    then check each distinct kernel configuration on the emulator (`preflight`)."""
    from napkin_mlir.cli.compile import compile_to_file

    directory.mkdir(parents=True, exist_ok=True)
    problems = gpu_sweep()
    configs: dict[Configuration, list[int]] = {}
    for i, (dims, causal) in enumerate(problems):
        label = f"d{dims['d']}-n{dims['q']}{'-causal' if causal else ''}"
        progress(i, len(problems), label)
        cubin = directory / f"attention-{label}.cubin"
        problem = VerifyConfig("attention", dims, dtype, causal=causal)
        compile_to_file(problem, arch, "cubin", "tensorcore", 16, cubin, log=lambda _: None)
        side = json.loads(cubin.with_suffix(".cubin.json").read_text())
        if side["ptxas"]["spill_stores_bytes"] or side["ptxas"]["spill_loads_bytes"]:
            raise UsageError(f"the {label} kernel spills registers (ptxas: {side['ptxas']['raw']})")
        configs.setdefault(_configuration(dims, causal, side["problem"]["tile"]), []).append(dims["q"])
    progress(len(problems), len(problems), "done")
    print(f"compiled {len(problems)} kernels ({len(configs)} configurations) into {directory}")
    preflight(configs, dtype)
    print(
        f"next, on the GPU machine: python -m napkin_mlir.backends.gpu.runner {directory} --json {directory}/results.json"
    )
    print(f"then here: napkin bench attention --target gpu --report {directory}/results.json")
    return 0


def read_gpu_results(results: Path) -> dict[str, Any]:
    """A GPU runner's results: its --json file, or its --jsonl log (the reports of every
    kernel, crashed ones included; progress records dropped)."""
    try:
        if results.suffix == ".jsonl":
            records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
            runs = [r for r in records if "sidecar" in r and not r.get("started")]
            device = next((r["device"] for r in runs if "device" in r), None)
            return {"device": device, "runs": runs}
        return dict(json.loads(results.read_text()))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {results}: {err}") from None


def _is_attention(run: dict[str, Any]) -> bool:
    """A report of the built-in attention (reports before diagram files had no 'diagram')."""
    p = run.get("problem", {})
    return p.get("diagram", "attention" if "dims" in p else None) == "attention"


def _label(run: dict[str, Any]) -> str:
    p = run.get("problem", {})
    if _is_attention(run):
        return ",".join(f"{k}={v}" for k, v in p["dims"].items()) + (" causal" if p.get("causal") else "")
    return Path(str(run.get("sidecar", "?"))).name.removesuffix(".cubin.json")


def report_gpu(results: Path, plot: Path | None) -> int:
    """Tabulate and plot a GPU runner's results (attention: TFLOP/s of napkin, cuDNN, XLA and
    PyTorch, speed relative to cuDNN; a diagram file's kernel: milliseconds beside XLA's
    compilation of the same diagram) and archive them under bench/results/ with the device's name."""
    data = read_gpu_results(results)
    runs = data["runs"]
    device = str(data.get("device") or "unknown-gpu")
    slug = "".join(ch if ch.isalnum() else "-" for ch in device.lower()).strip("-")
    kind = "attention" if all(_is_attention(r) for r in runs) else "diagrams"
    archive = RESULTS_DIR / f"gpu-{kind}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if results.resolve().parent != RESULTS_DIR.resolve() or results.suffix == ".jsonl":
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        archive.write_text(json.dumps(data, indent=2) + "\n")
        print(f"archived the results as {archive}")
    print(f"device: {device}")
    verdict = {True: "PASS", False: "FAIL"}
    attention = [r for r in runs if _is_attention(r) and "tflops" in r]
    others = [r for r in runs if r not in attention]
    nan = float("nan")
    if attention:
        impls = ("napkin", "cudnn", "xla", "torch", "torch_cudnn")
        print(f"{'problem':<40} {'check':>5} " + " ".join(f"{i:>11}" for i in impls) + f" {'vs cuDNN':>9}  (TFLOP/s)")
        for r in attention:
            t, ratio = r["tflops"], r.get("ratio_to_cudnn")
            print(
                f"{_label(r):<40} {verdict[bool(r['passed'])]:>5} "
                + " ".join(f"{t.get(i, nan):>11.1f}" for i in impls)
                + f" {(1 / ratio if ratio else nan):>9.2f}"
            )
    if others:
        print(f"{'kernel':<55} {'check':>5} {'napkin ms':>10} {'XLA ms':>10} {'vs XLA':>7}")
        for r in others:
            m = r.get("median_ms") or {}
            ratio = r.get("ratio_to_xla")
            state = "CRASH" if r.get("crashed") else "ERROR" if "error" in r else verdict[bool(r.get("passed"))]
            print(
                f"{_label(r):<55} {state:>5} {m.get('napkin', nan):>10.4f} {m.get('xla', nan):>10.4f} "
                f"{(1 / ratio if ratio else nan):>7.2f}"
            )
    if plot is not None or attention:
        plot = plot or archive.with_suffix(".png")
    if attention and plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 6))
        groups = sorted({(r["problem"]["dims"]["d"], r["problem"]["causal"]) for r in attention})
        for i, (d, causal) in enumerate(groups):
            ax = fig.add_subplot(2, 2, i + 1)
            sel = sorted(
                (r for r in attention if (r["problem"]["dims"]["d"], r["problem"]["causal"]) == (d, causal)),
                key=lambda r: r["problem"]["dims"]["q"],
            )
            n = [r["problem"]["dims"]["q"] for r in sel]
            for impl in ("napkin", "cudnn", "xla", "torch"):
                if any(impl in r["tflops"] for r in sel):
                    ax.plot(n, [r["tflops"].get(impl, nan) for r in sel], marker="o", label=impl)
            ax.set_xscale("log", base=2)
            ax.set_title(f"head dim {d}{', causal' if causal else ''}")
            ax.set_xlabel("sequence length")
            ax.set_ylabel("TFLOP/s")
            ax.legend()
        fig.suptitle(f"attention forward on {data.get('device')}")
        fig.tight_layout()
        fig.savefig(plot)
        print(f"wrote {plot}")
    return 0 if runs and all(r.get("passed") for r in runs) else 1


def has_cuda_device() -> bool:
    """CuPy installed and a CUDA device visible."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def prepare_file_gpu(
    path: str,
    dims: dict[str, int] | None,
    dtype: str | None,
    tiles: dict[str, int],
    arch: str,
    directory: Path,
    seed: int = 0,
    log: Callable[[str], None] = print,
    label: str | None = None,
    kernel_kind: str = "auto",
) -> Path:
    """Compile a diagram file's kernel for `arch` into `directory` with everything the GPU
    runner needs to judge and time it there without the MLIR wheels: fresh random inputs, the
    float64 and same-dtype results of the diagram's interpretation (`<stem>.ref.npz`), and
    that interpretation under jax.jit exported for CUDA and the CPU (`<stem>.xla`, XLA's compilation of
    the same diagram, the timing reference). `kernel_kind` is `napkin compile --kernel`'s.
    Returns the sidecar's path."""
    import jax
    import numpy as np
    from mlir import ir

    from napkin_mlir.check import reference
    from napkin_mlir.cli.compile import FileProblem, compile_to_file
    from napkin_mlir.interpret.core import interpret
    from napkin_mlir.ir.arrays import ArrayType
    from napkin_mlir.ir.context import napkin_context

    directory.mkdir(parents=True, exist_ok=True)
    problem = FileProblem(path, dims, dtype, tiles)
    if label is None:
        label = Path(path).stem + ("-" + "-".join(f"{k}{v}" for k, v in sorted(dims.items())) if dims else "")
    cubin = directory / f"{label}.cubin"
    kernel = compile_to_file(None, arch, "cubin", kernel_kind, 16, cubin, log=log, file_problem=problem)
    assert kernel is not None  # compile_to_file refuses a kernel that spills or needs too much shared memory
    with napkin_context(), ir.Location.unknown():
        module = ir.Module.parse(str(kernel.problem["napkin"]))
        f = next(op for op in module.body.operations if op.operation.name == "func.func")
        ftype = ir.FunctionType(ir.TypeAttr(f.attributes["function_type"]).value)
        inputs_t = [ArrayType.from_mlir(t) for t in ftype.inputs]
        outputs_t = [ArrayType.from_mlir(t) for t in ftype.results]
        inputs = reference.random_inputs(tuple(inputs_t), seed)
        ref64 = interpret(module, inputs, "f64")
        same = interpret(module, inputs, "same")
        xla = jax.jit(lambda *xs: interpret(module, xs, "same"))
        exported = jax.export.export(xla, platforms=["cuda", "cpu"])(
            *(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in inputs)
        )
    ins = [a for a in kernel.args if a.role == "input"]
    outs = [a for a in kernel.args if a.role == "output"]
    for a, t in zip(ins + outs, inputs_t + outputs_t, strict=True):
        if tuple(a.shape) != tuple(t.shape) or a.dtype != t.dtype:
            raise UsageError(f"kernel argument {a.name} {a.shape} {a.dtype} does not match the diagram's {t}")
    arrays: dict[str, np.ndarray] = {}
    for a, x in zip(ins, inputs, strict=True):
        arrays[f"in:{a.name}"] = x.view(np.uint16) if x.dtype.itemsize == 2 and x.dtype.kind == "V" else x
    for a, r64, r in zip(outs, ref64, same, strict=True):
        # float32 holds the float64 truth far inside any 16-bit rule; f32 kernels get float64.
        arrays[f"ref64:{a.name}"] = np.asarray(r64, np.float64 if a.dtype == "f32" else np.float32)
        r = np.asarray(r)
        arrays[f"same:{a.name}"] = r.view(np.uint16) if r.dtype.kind == "V" else r
    np.savez(directory / f"{label}.ref.npz", **arrays)
    (directory / f"{label}.xla").write_bytes(bytes(exported.serialize()))
    side_path = cubin.with_suffix(".cubin.json")
    side = json.loads(side_path.read_text())
    side["problem"]["reference"] = {"arrays": f"{label}.ref.npz", "xla": f"{label}.xla", "seed": seed}
    side["problem"].setdefault("flops", None)
    side_path.write_text(json.dumps(side, indent=2) + "\n")
    return side_path


def _bench_file(args: argparse.Namespace) -> int:
    """`napkin bench FILE.mlir`: the derived CPU program against XLA's compilation of the same
    diagram (its interpretation under jax.jit); with --target gpu --prepare DIR, the kernel and
    its references for the GPU runner."""
    from napkin_mlir.check.bench import bench_diagram_cpu

    if args.target == "gpu":
        if not args.prepare:
            raise UsageError(
                "napkin bench FILE.mlir --target gpu: give --prepare DIR (the kernel, its inputs and references), "
                "then run `python -m napkin_mlir.backends.gpu.runner DIR` on the GPU machine"
            )
        dims = parse_sizes(args.dims, "--dims") if args.dims else None
        tiles = parse_sizes(args.tile, "--tile") if args.tile else {}
        if args.grad:
            args.dtype = args.file_dtype
            suffix = "-" + "-".join(f"{k}{v}" for k, v in sorted(dims.items())) if dims else ""
            from mlir import ir

            from napkin_mlir.derive.auto import derive
            from napkin_mlir.ir.context import napkin_context
            from napkin_mlir.ir.files import load_diagram

            plain: dict[str, object] | None = None  # the forward as plain attention, for JAX's backward
            with tempfile.TemporaryDirectory(prefix="napkin-grad-") as tmp:
                for n, part in enumerate(differentiated_files(args, True, Path(tmp))):
                    with napkin_context(), ir.Location.unknown():
                        derived = derive(load_diagram(part), None, filename=str(part))
                    axes = {*derived.tiled, *([derived.streamed] if derived.streamed else [])}
                    mine = {a: t for a, t in tiles.items() if a in axes}  # --tile: the axes this part tiles
                    side = prepare_file_gpu(
                        str(part),
                        None,
                        None,
                        mine,
                        args.arch,
                        Path(args.prepare),
                        args.seed,
                        label=part.stem + suffix,
                        kernel_kind=args.kernel,
                    )
                    data = json.loads(side.read_text())
                    flex = data["problem"].get("flex")
                    if n == 0 and flex and not flex["masks"]:
                        plain = {k: flex[k] for k in ("q", "k", "v", "scale")}
                    elif n > 0 and plain is not None:  # timed beside cuDNN's and XLA's whole backward
                        data["problem"]["backward_of"] = {**plain, "role": part.stem.rpartition("_vjp_")[2]}
                        side.write_text(json.dumps(data, indent=2) + "\n")
                    print(f"wrote {side} with its inputs and references")
            return 0
        side = prepare_file_gpu(
            args.diagram,
            dims,
            args.file_dtype,
            tiles,
            args.arch,
            Path(args.prepare),
            args.seed,
            kernel_kind=args.kernel,
        )
        print(
            f"wrote {side} with its inputs and references; on the GPU machine: python -m napkin_mlir.backends.gpu.runner {side}"
        )
        return 0
    if args.grad:
        raise UsageError(
            "--grad: the kernels of the differentiated program are benchmarked on a GPU (--target gpu --prepare DIR)"
        )
    if args.causal or args.sweep:
        raise UsageError("--causal and --sweep describe the built-in attention; a .mlir file says it in its types")
    if args.repeats < 3:
        raise UsageError(f"--repeats must be at least 3, got {args.repeats}")
    dims = parse_sizes(args.dims, "--dims") if args.dims else None
    tiles = parse_sizes(args.tile, "--tile") if args.tile else None
    m = bench_diagram_cpu(args.diagram, dims, args.file_dtype, tiles, args.seed, args.repeats)
    label = ",".join(f"{k}={v}" for k, v in m.dims.items())
    print(f"{'problem':<40} {'napkin ms':>10} {'XLA ms':>10} {'ratio':>7} {'GFLOP/s':>8} {'XLA GFLOP/s':>11}")
    print(
        f"{label:<40} {m.napkin_median_s * 1e3:>10.2f} {m.reference_median_s * 1e3:>10.2f} "
        f"{m.ratio:>7.2f} {m.gflops_napkin:>8.2f} {m.gflops_reference:>11.2f}"
    )
    print(
        f"max |napkin - XLA| = {m.max_abs_diff:.3e}, {m.max_rel_diff:.1e} of max |XLA| (reference: {m.reference_name})"
    )
    stem = Path(args.diagram).stem
    path = write_results(f"cpu-{stem}-{m.dtype}", [m], Path(args.output) if args.output else None)
    print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from napkin_mlir.cli.verify import is_file_argument

    if is_file_argument(args.diagram):
        return _bench_file(args)
    if args.grad:
        raise UsageError(
            "--grad takes a .mlir file with --target gpu --prepare DIR (built-ins: write the diagram to a file)"
        )
    args.dtype = args.file_dtype or "f32"
    if args.diagram != "attention":
        raise UsageError(f"napkin bench: only attention is benchmarked so far, not '{args.diagram}'")
    if args.target == "gpu":
        if args.report:
            return report_gpu(Path(args.report), Path(args.plot) if args.plot else None)
        if args.prepare:
            return prepare_gpu(Path(args.prepare), args.arch, args.dtype if args.dtype != "f32" else "bf16")
        if has_cuda_device():
            directory = Path(tempfile.mkdtemp(prefix="napkin-sweep-"))
            prepare_gpu(directory, args.arch, args.dtype if args.dtype != "f32" else "bf16")
            from napkin_mlir.backends.gpu import runner as gpu_runner

            code = gpu_runner.main(
                [str(directory), "--json", str(directory / "results.json"), "--repeats", str(max(20, args.repeats))]
            )
            report_gpu(directory / "results.json", Path(args.plot) if args.plot else None)
            return code
        raise UsageError(
            "napkin bench --target gpu: no CUDA device here. The kernels are compiled here and run where the GPU is: "
            "--prepare DIR compiles the sweep, `python -m napkin_mlir.backends.gpu.runner DIR --json DIR/results.json` runs it "
            "on the GPU machine, --report DIR/results.json tabulates and plots it"
        )
    tiles = parse_sizes(args.tile, "--tile") if args.tile else {}
    if args.sweep:
        problems = [{"b": 1, "h": 8, "q": n, "x": n, "d": 64} for n in CPU_SWEEP]
    else:
        problems = [parse_sizes(args.dims or "b=1,h=8,q=1024,x=1024,d=64", "--dims")]
    if args.repeats < 3:
        raise UsageError(f"--repeats must be at least 3, got {args.repeats}")
    results = []
    for i, dims in enumerate(problems):
        label = ",".join(f"{k}={v}" for k, v in dims.items())
        progress(i, len(problems), label)
        config = VerifyConfig("attention", dims, args.dtype, args.seed, causal=args.causal, tiles=tiles)
        results.append(bench_attention_cpu(config, repeats=args.repeats))
    progress(len(problems), len(problems), "done")
    print(f"{'problem':<34} {'napkin ms':>10} {'XLA ms':>10} {'ratio':>7} {'GFLOP/s':>8} {'XLA GFLOP/s':>11}")
    for m in results:
        label = ",".join(f"{k}={v}" for k, v in m.dims.items()) + (" causal" if m.causal else "")
        print(
            f"{label:<34} {m.napkin_median_s * 1e3:>10.2f} {m.reference_median_s * 1e3:>10.2f} "
            f"{m.ratio:>7.2f} {m.gflops_napkin:>8.2f} {m.gflops_reference:>11.2f}"
        )
    path = write_results(f"cpu-attention-{args.dtype}", results, Path(args.output) if args.output else None)
    print(f"wrote {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark a derived kernel against JAX (medians, ratio, JSON)")
    p.add_argument("diagram", help="attention, or a .mlir file (CPU)")
    p.add_argument("--target", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--dims", default=None, help="axis sizes (default b=1,h=8,q=1024,x=1024,d=64)")
    p.add_argument(
        "--dtype", dest="file_dtype", choices=DTYPE_CHOICES, default=None, help="default f32; a file: its own"
    )
    p.add_argument("--causal", action="store_true")
    p.add_argument("--tile", default=None, help="tile sizes, e.g. q=64,x=64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=10, help="timed calls of each (median reported)")
    p.add_argument("--sweep", action="store_true", help=f"sweep q=x over {CPU_SWEEP}")
    p.add_argument("-o", "--output", default=None, help="JSON file (default bench/results/...)")
    p.add_argument("--prepare", default=None, help="gpu: compile the sweep's kernels into DIR")
    p.add_argument("--arch", choices=("sm_80", "sm_90a"), default="sm_90a", help="gpu: target of --prepare")
    p.add_argument(
        "--kernel",
        choices=KERNELS,
        default="auto",
        help="gpu, a diagram file: napkin compile's --kernel for --prepare (auto: wgmma first on sm_90a)",
    )
    p.add_argument("--report", default=None, help="gpu: tabulate a gpu_runner results JSON")
    p.add_argument("--plot", default=None, help="gpu: with --report, plot TFLOP/s per kernel to FILE.png")
    add_grad_arguments(
        p,
        verify=False,
        grad_help="a .mlir file with --target gpu --prepare: every kernel of the differentiated program "
        "(forward with residuals, backward), each with its references",
    )
    p.set_defaults(fn=cmd_bench)
