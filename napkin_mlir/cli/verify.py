"""`napkin verify`, `napkin build` and `napkin pipeline`: a built-in diagram checked on the
CPU against JAX, written as napkin IR, or its relabeling pipeline printed for napkin-opt."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from mlir import ir

from napkin_mlir.check.harness import build, model_tiles, verify
from napkin_mlir.cli.common import add_problem_args, file_options, parse_sizes, problem_config
from napkin_mlir.cli.verify_grad import add_grad_arguments, cmd_verify_grad
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.pipeline.stages import derivation


def cmd_build(args: argparse.Namespace) -> int:
    """Print (or write) the built-in diagram as napkin IR, ready for napkin-opt."""
    config = problem_config(args)
    with napkin_context(), ir.Location.unknown():
        text = str(build(config))
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Print the relabeling pipeline of a built-in diagram (for napkin-opt --pass-pipeline)."""
    config = problem_config(args)
    with napkin_context(), ir.Location.unknown():
        sizes = diagram_sizes(build(config))
    print(derivation(config.diagram, sizes, config.tiles))
    return 0


def is_file_argument(name: str) -> bool:
    """A diagram argument names a file when it ends in .mlir or is an existing file."""
    return name.endswith(".mlir") or Path(name).is_file()


def cmd_verify(args: argparse.Namespace) -> int:
    if args.grad:
        return cmd_verify_grad(args, is_file_argument(args.diagram))
    if is_file_argument(args.diagram):
        return _verify_file(args)
    config = problem_config(args)
    if args.gpu:
        config = dataclasses.replace(config, gpu=args.gpu)
        print(f"tiles chosen by the cost model for {args.gpu}: {model_tiles(config)}")
    dims = ",".join(f"{k}={v}" for k, v in config.dims.items())
    print(f"verify {config.diagram} dims {dims} dtype {config.dtype} seed {config.seed}")
    result = verify(config, log=lambda s: print(f"  {s}"))
    print(f"  compiled in {result.compile_seconds:.2f} s, ran on the CPU in {result.run_seconds:.3f} s")
    print(result.summary())
    return 0 if result.passed else 1


def _verify_file(args: argparse.Namespace) -> int:
    """`napkin verify FILE.mlir`: the file's diagram derived, run on the CPU and judged against
    its own JAX interpretation."""
    from napkin_mlir.check.diagram import verify_diagram
    from napkin_mlir.ir.files import axis_sizes, load_diagram

    file_options(args)
    dims = parse_sizes(args.dims, "--dims") if args.dims else None
    tiles = parse_sizes(args.tile, "--tile") if args.tile else None
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(args.diagram, dims, args.dtype)
        sizes = ",".join(f"{k}={v}" for k, v in axis_sizes(module).items())
        print(f"verify {args.diagram} dims {sizes} seed {args.seed}")
        result = verify_diagram(
            module, args.seed, tiles, args.gpu, filename=args.diagram, log=lambda s: print(f"  {s}")
        )
    print(f"  compiled in {result.compile_seconds:.2f} s, ran on the CPU in {result.run_seconds:.3f} s")
    print(result.summary())
    return 0 if result.passed else 1


def _outline(module: ir.Module) -> list[str]:
    """One line per napkin op (nested regions indented): name, axes and sizes of its result."""
    lines: list[str] = []

    def visit(block: ir.Block, depth: int) -> None:
        for op in block.operations:
            op = op.operation
            if not op.name.startswith("napkin."):
                continue
            res = ", ".join(str(ArrayType.from_mlir(r.type)) for r in op.results)
            extra = ""
            if op.name == "napkin.group":
                extra = f" axes={[ir.StringAttr(a).value for a in ir.ArrayAttr(op.attributes['axes'])]} sizes={list(ir.DenseI64ArrayAttr(op.attributes['sizes']))}"
            if op.name == "napkin.stream":
                extra = f" axis={ir.StringAttr(op.attributes['axis']).value} size={ir.IntegerAttr(op.attributes['size']).value}"
            lines.append(f"{'  ' * depth}{op.name}{extra} -> {res}")
            for i, region in enumerate(op.regions):
                if op.name == "napkin.stream":
                    lines.append(f"{'  ' * (depth + 1)}[{('init', 'step', 'finish')[i]}]")
                for b in region.blocks:
                    visit(b, depth + 2 if op.name == "napkin.stream" else depth + 1)

    func_op = module.body.operations[0].operation
    visit(func_op.regions[0].blocks[0], 1)
    return lines


def add_commands(sub: argparse._SubParsersAction) -> None:
    ver = sub.add_parser("verify", help="compile a diagram (built-in or .mlir), run it on the CPU, compare with JAX")
    add_problem_args(ver, dims_required=False)
    ver.add_argument(
        "--gpu",
        choices=("a100", "h100", "h200"),
        default=None,
        help="choose the tiles with the cost model for this GPU",
    )
    add_grad_arguments(ver)
    ver.set_defaults(fn=cmd_verify)
    emit = sub.add_parser("build", help="print a built-in diagram as napkin IR")
    add_problem_args(emit)
    emit.add_argument("-o", "--output", default=None, help="write to FILE instead of stdout")
    emit.set_defaults(fn=cmd_build)
    pipe = sub.add_parser("pipeline", help="print the relabeling pipeline of a built-in diagram")
    add_problem_args(pipe)
    pipe.set_defaults(fn=cmd_pipeline)
