"""`napkin bench`: the generated kernel against a reference, side by side, medians and ratio."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from napkin_mlir.check.bench import RESULTS_DIR, bench_attention_cpu, progress, write_results
from napkin_mlir.check.harness import VerifyConfig
from napkin_mlir.cli.common import DTYPE_CHOICES, parse_sizes
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


def report_gpu(results: Path, plot: Path | None) -> int:
    """Tabulate and plot a GPU runner's results (TFLOP/s per kernel, ratio to cuDNN) and
    archive them under bench/results/ with the device's name."""
    try:
        data = json.loads(results.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {results}: {err}") from None
    runs = data["runs"]
    device = str(data.get("device") or "unknown-gpu")
    slug = "".join(ch if ch.isalnum() else "-" for ch in device.lower()).strip("-")
    archive = RESULTS_DIR / f"gpu-attention-{slug}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if results.resolve().parent != RESULTS_DIR.resolve():
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        archive.write_text(json.dumps(data, indent=2) + "\n")
        print(f"archived the results as {archive}")
    plot = plot or archive.with_suffix(".png")
    print(f"device: {device}")
    print(f"{'problem':<40} {'check':>5} {'napkin':>8} {'cuDNN':>8} {'XLA':>8} {'vs cuDNN':>9}  (TFLOP/s)")
    for r in runs:
        p = r["problem"]
        label = ",".join(f"{k}={v}" for k, v in p["dims"].items()) + (" causal" if p["causal"] else "")
        t = r["tflops"]
        ratio = r.get("ratio_to_cudnn")
        print(
            f"{label:<40} {'PASS' if r['passed'] else 'FAIL':>5} {t['napkin']:>8.1f} {t.get('cudnn', float('nan')):>8.1f} "
            f"{t.get('xla', float('nan')):>8.1f} {(1 / ratio if ratio else float('nan')):>9.2f}"
        )
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 6))
        groups = sorted({(r["problem"]["dims"]["d"], r["problem"]["causal"]) for r in runs})
        for i, (d, causal) in enumerate(groups):
            ax = fig.add_subplot(2, 2, i + 1)
            sel = sorted(
                (r for r in runs if (r["problem"]["dims"]["d"], r["problem"]["causal"]) == (d, causal)),
                key=lambda r: r["problem"]["dims"]["q"],
            )
            n = [r["problem"]["dims"]["q"] for r in sel]
            for impl in ("napkin", "cudnn", "xla"):
                ax.plot(n, [r["tflops"].get(impl, float("nan")) for r in sel], marker="o", label=impl)
            ax.set_xscale("log", base=2)
            ax.set_title(f"head dim {d}{', causal' if causal else ''}")
            ax.set_xlabel("sequence length")
            ax.set_ylabel("TFLOP/s")
            ax.legend()
        fig.suptitle(f"attention forward on {data.get('device')}")
        fig.tight_layout()
        fig.savefig(plot)
        print(f"wrote {plot}")
    return 0 if all(r["passed"] for r in runs) else 1


def has_cuda_device() -> bool:
    """CuPy installed and a CUDA device visible."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _bench_file(args: argparse.Namespace) -> int:
    """`napkin bench FILE.mlir`: the derived CPU program against XLA's compilation of the same
    diagram (its interpretation under jax.jit)."""
    from napkin_mlir.check.bench import bench_diagram_cpu

    if args.target != "cpu":
        raise UsageError("napkin bench FILE.mlir: --target cpu only (the GPU sweep is attention's)")
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
    p.add_argument("--report", default=None, help="gpu: tabulate a gpu_runner results JSON")
    p.add_argument("--plot", default=None, help="gpu: with --report, plot TFLOP/s per kernel to FILE.png")
    p.set_defaults(fn=cmd_bench)
