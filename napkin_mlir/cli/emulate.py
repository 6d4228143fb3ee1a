"""`napkin emulate`: run a GPU kernel's IR on the CPU emulator and check it against JAX.

    napkin emulate attention --dims b=1,h=4,q=300,x=300,d=64 --dtype bf16 [--causal]
                   [--kv-heads N] [--tile q=64,x=64] [--warp-rows 16|32] [--kernel auto|tensorcore|simt]
                   [--target sm_80|sm_90a] [--ctas N] [--seed N] [--json F]
    napkin emulate matmul --dims m=300,n=200,k=100          (the SIMT rule's kernel)
    napkin emulate FILE.mlir [--dims q=40,x=40] [--dtype bf16] [--tile ...] [--kernel ...]
    napkin emulate kernel.mlir.json          (a sidecar `napkin compile --emit gpu` wrote)
    napkin emulate FILE.mlir|attention --grad [--residuals ...] [--rowsums ...] [--grad-kernels forward,dQ]

The first forms compile the kernel exactly as `napkin compile` does (--target sm_80 unless
given) and stop at the gpu stage; all of them then execute that IR thread by thread (`napkin_mlir.emulator`),
with memory and race checks, and compare the output with JAX by the project's rule (see the
README's "Correctness rule"); a diagram from a file is compiled as `napkin compile FILE.mlir`
does (the tensor-core rule when it takes the program, else the SIMT rule) and judged against
the JAX interpretation of the file's own diagram, in float64 and in its dtype. `--ctas N`
runs only N CTAs of the grid (the first, the last and evenly spaced ones) and checks the
output they write, so the kernel of a full-size problem is checked in seconds. With `--grad`
the diagram is differentiated as `napkin verify --grad` does (the forward with its residuals,
then FlashAttention-2's pre-pass and backward diagrams for attention) and every one of them is
compiled to a kernel and emulated against its own diagram's interpretation (that the diagrams
compose to `jax.vjp` of the forward is what `napkin verify --grad` checks). The last line
starts with PASS or FAIL; exit status 0 only on PASS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from napkin_mlir.cli.common import add_problem_args, parse_sizes, problem_config
from napkin_mlir.cli.compile import FileProblem, add_kernel_args, compile_file_kernel, compile_kernel, file_problem
from napkin_mlir.cli.verify import is_file_argument
from napkin_mlir.cli.verify_grad import add_grad_arguments, differentiated_files
from napkin_mlir.emulator import EmulationReport, emulate_kernel, emulate_sidecar
from napkin_mlir.errors import UsageError


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  emulating CTAs {done}/{total}" + ("\n" if done == total else ""))
        sys.stderr.flush()


#: The kernels of a differentiated program, by role (`--grad-kernels`).
GRAD_ROLES = ("forward", "pre", "dQ", "dK_dV")


def emulate_gradients(args: argparse.Namespace) -> int:
    """`--grad`: each kernel of the differentiated program, emulated against its own diagram."""
    if args.diagram.endswith(".json"):
        raise UsageError("--grad takes a diagram (a .mlir file or a built-in), not a kernel sidecar")
    tiles = parse_sizes(args.tile, "--tile") if args.tile else {}
    roles = {r.strip() for r in args.grad_kernels.split(",") if r.strip()} if args.grad_kernels else None
    if roles is not None and (not roles or roles - set(GRAD_ROLES)):
        raise UsageError(f"--grad-kernels: roles among {', '.join(GRAD_ROLES)}, got '{args.grad_kernels}'")
    passed = True
    with tempfile.TemporaryDirectory(prefix="napkin-grad-") as tmp:
        for n, path in enumerate(differentiated_files(args, is_file_argument(args.diagram), Path(tmp))):
            role = "forward" if n == 0 else path.stem.rpartition("_vjp_")[2]
            if roles is not None and role not in roles:
                continue
            print(f"== {path.stem}")
            problem = FileProblem(str(path), None, None, tiles)
            kernel, text, plain = compile_file_kernel(
                problem, args.target, "gpu", args.kernel, args.warp_rows, log=lambda s: print(f"  {s}")
            )
            assert kernel is not None
            report = emulate_kernel(kernel, text, args.seed, _progress, args.ctas, diagram=plain)
            print("\n".join(f"  {line}" for line in report.lines()))
            passed = passed and report.passed
    print(f"{'PASS' if passed else 'FAIL'}: every kernel of the differentiated program against its own diagram")
    return 0 if passed else 1


def cmd_emulate(args: argparse.Namespace) -> int:
    if args.grad:
        return emulate_gradients(args)
    if args.grad_kernels:
        raise UsageError("--grad-kernels selects kernels of --grad")
    if args.diagram.endswith(".json"):
        report: EmulationReport = emulate_sidecar(args.diagram, args.seed, _progress, args.ctas)
    elif is_file_argument(args.diagram):
        problem = file_problem(args)
        kernel, text, plain = compile_file_kernel(problem, args.target, "gpu", args.kernel, args.warp_rows)
        assert kernel is not None
        report = emulate_kernel(kernel, text, args.seed, _progress, args.ctas, diagram=plain)
    else:
        if args.dims is None:
            raise UsageError("--dims is required with a built-in diagram (or give a kernel sidecar FILE.json)")
        config = problem_config(args)
        kernel, text = compile_kernel(config, args.target, "gpu", args.kernel, args.warp_rows)
        assert kernel is not None
        report = emulate_kernel(kernel, text, args.seed, _progress, args.ctas)
    print("\n".join(report.lines()))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.passed else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulate", help="run the GPU kernel's IR on the CPU emulator and check it against JAX")
    add_problem_args(p, dims_required=False)
    add_kernel_args(p, target_default="sm_80")
    p.add_argument(
        "--ctas",
        type=int,
        default=None,
        help="run only N CTAs of the grid (first, last, evenly spaced) and check the output they write "
        "(built-in attention, or a diagram from a file)",
    )
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    add_grad_arguments(
        p,
        verify=False,
        grad_help="differentiate the diagram and emulate every kernel of the forward-with-residuals and backward "
        "program, each against its own diagram",
    )
    p.add_argument(
        "--grad-kernels",
        default=None,
        metavar="ROLES",
        help="with --grad: only these kernels of the differentiated program, by role: forward, pre, dQ, dK_dV "
        "(comma-separated; default all)",
    )
    p.set_defaults(fn=cmd_emulate)
