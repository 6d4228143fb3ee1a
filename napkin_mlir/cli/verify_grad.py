"""`napkin verify ... --grad`: the gradients of a diagram (built-in or .mlir), derived as a
backward diagram (`napkin-differentiate`, `napkin-fission`), compiled for the CPU and judged
against `jax.vjp` of the diagram's JAX interpretation (`napkin_mlir.check.gradients`).

`napkin_mlir.cli.verify` adds the options below to `napkin verify` and hands `--grad` here;
`napkin_mlir.cli.derive` does the same for `napkin derive FILE.mlir --grad`, which prints the
derivation of every diagram of the differentiated program.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlir import ir

from napkin_mlir.check.gradients import differentiate, function_of, verify_gradients
from napkin_mlir.check.harness import build
from napkin_mlir.cli.common import file_options, parse_sizes, problem_config
from napkin_mlir.derive.auto import derive
from napkin_mlir.errors import UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.files import axis_sizes, load_diagram
from napkin_mlir.ir.regions import diagram_functions

ROWSUMS = ("exact", "output", "direct")


def add_grad_arguments(p: argparse.ArgumentParser, verify: bool = True, grad_help: str | None = None) -> None:
    """The options of `--grad`: for `napkin verify` (verify=True), `napkin derive`, and the
    commands that take each kernel of the differentiated program (`grad_help` says how)."""
    p.add_argument(
        "--grad",
        action="store_true",
        help=grad_help
        or (
            "check the gradients (the backward diagram, derived and run on the CPU) against jax.vjp"
            if verify
            else "derive the backward diagrams (napkin-differentiate, napkin-fission) instead"
        ),
    )
    if verify:
        p.add_argument("--wrt", default=None, help="with --grad: the inputs to differentiate, e.g. Q,K (default: all)")
    p.add_argument(
        "--residuals",
        choices=("recompute", "store"),
        default="recompute",
        help="with --grad: recompute intermediates in the backward from the outputs and each softmax's "
        "log-sum-exp (FlashAttention-2, default) or store them all",
    )
    p.add_argument(
        "--rowsums",
        choices=ROWSUMS,
        default="exact",
        help="with --grad: softmax's D = rowsum(dP*P) as rowsum(dO*O) where exact (default), "
        "also from a rounded output (FlashAttention-2's numerics), or never",
    )


def cmd_verify_grad(args: argparse.Namespace, is_file: bool) -> int:
    wrt = tuple(w.strip() for w in args.wrt.split(",") if w.strip()) if args.wrt else ()
    if args.wrt is not None and not wrt:
        raise UsageError("--wrt: no input named (give names like Q,K or positions like 0,1)")
    remat = args.residuals == "recompute"
    with napkin_context(), ir.Location.unknown():
        if is_file:
            file_options(args)
            dims = parse_sizes(args.dims, "--dims") if args.dims else None
            tiles = parse_sizes(args.tile, "--tile") if args.tile else None
            module = load_diagram(args.diagram, dims, args.dtype)
            filename: str | None = args.diagram
            sizes = ",".join(f"{k}={v}" for k, v in axis_sizes(module).items())
            print(f"verify gradients of {args.diagram} dims {sizes} seed {args.seed}")
        else:
            config = problem_config(args)
            module = build(config)
            tiles, filename = dict(config.tiles) or None, None
            dims_text = ",".join(f"{k}={v}" for k, v in config.dims.items())
            print(f"verify gradients of {config.diagram} dims {dims_text} dtype {config.dtype} seed {config.seed}")
        print(f"  residuals: {args.residuals}; softmax row sums: {args.rowsums}")
        result = verify_gradients(
            module,
            args.seed,
            tiles,
            args.gpu,
            filename=filename,
            wrt=wrt,
            remat=remat,
            rowsums=args.rowsums,
            log=lambda s: print(f"  {s}"),
        )
    print(f"  compiled in {result.compile_seconds:.2f} s, ran on the CPU in {result.run_seconds:.3f} s")
    print(result.summary())
    return 0 if result.passed else 1


def differentiated_files(args: argparse.Namespace, is_file: bool, directory: Path) -> list[Path]:
    """The command line's diagram (a file at --dims/--dtype, or a built-in) differentiated
    (`napkin-differentiate` with --residuals and --rowsums, `napkin-fission`): the forward
    with its residuals, then each backward diagram, written to `directory` one .mlir file
    each, in order. Each is a diagram like any user's file, for the commands that take one."""
    directory.mkdir(parents=True, exist_ok=True)
    with napkin_context(), ir.Location.unknown():
        if is_file:
            file_options(args)
            dims = parse_sizes(args.dims, "--dims") if args.dims else None
            module = load_diagram(args.diagram, dims, args.dtype)
            filename: str | None = args.diagram
        else:
            module, filename = build(problem_config(args)), None
        parts = differentiate(module, remat=args.residuals == "recompute", rowsums=args.rowsums, filename=filename)
        files = []
        for part in parts:
            name = function_of(diagram_functions(part.operation)[0]).name
            path = directory / f"{name}.mlir"
            path.write_text(str(part))
            files.append(path)
    return files


def cmd_derive_grad(args: argparse.Namespace) -> int:
    """`napkin derive FILE.mlir --grad`: the forward with its residuals and the backward
    diagrams, each derived (reasons and pipeline); `-o` writes the differentiated program."""
    dims = parse_sizes(args.dims, "--dims") if args.dims else None
    tiles = parse_sizes(args.tile, "--tile") if args.tile else {}
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(args.file, dims)
        parts = differentiate(module, remat=args.residuals == "recompute", rowsums=args.rowsums, filename=args.file)
        for part in parts:
            f = diagram_functions(part.operation)[0]
            fn = function_of(f)
            low = next((t.dtype for t in fn.inputs if t.dtype in ("f16", "bf16")), "f16")
            derivation = derive(part, None, args.gpu, low, filename=args.file)
            tileable = [*derivation.tiled, *([derivation.streamed] if derivation.streamed else [])]
            mine = {a: s for a, s in tiles.items() if a in tileable}
            if mine:
                derivation = derive(part, mine, args.gpu, low, filename=args.file)
            print(f"// @{fn.name}({', '.join(fn.arg_names)}) -> {', '.join(fn.result_names)}")
            for reason in derivation.reasons:
                print(f"//   {reason}")
            print(derivation.pipeline())
        if args.output:
            text = "\n".join(str(p) for p in parts)
            Path(args.output).write_text(text)
            print(f"// wrote {args.output} (the forward with its residuals and the backward diagrams, one module each)")
    return 0
