"""`napkin bench`: the generated kernel against a reference, side by side, medians and ratio."""

from __future__ import annotations

import argparse
from pathlib import Path

from napkin_mlir.bench import bench_attention_cpu, progress, write_results
from napkin_mlir.cli.common import parse_sizes
from napkin_mlir.cli.napkin import DTYPE_CHOICES
from napkin_mlir.errors import UsageError
from napkin_mlir.harness import VerifyConfig

#: The CPU sweep: sequence lengths at b=1, h=8, d=64 (the README's reference problem at 1024).
CPU_SWEEP = (256, 512, 1024)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.diagram != "attention":
        raise UsageError(f"napkin bench: only attention is benchmarked so far, not '{args.diagram}'")
    if args.target != "cpu":
        raise UsageError("napkin bench: --target gpu needs the GPU backend, which is not built yet")
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
    p.add_argument("diagram", help="attention")
    p.add_argument("--target", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--dims", default=None, help="axis sizes (default b=1,h=8,q=1024,x=1024,d=64)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="f32")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--tile", default=None, help="tile sizes, e.g. q=64,x=64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=10, help="timed calls of each (median reported)")
    p.add_argument("--sweep", action="store_true", help=f"sweep q=x over {CPU_SWEEP}")
    p.add_argument("-o", "--output", default=None, help="JSON file (default bench/results/...)")
    p.set_defaults(fn=cmd_bench)
