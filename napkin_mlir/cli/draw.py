"""`napkin draw`: render napkin programs as the paper's diagrams.

    napkin draw attention -o attention.png                      the plain diagram
    napkin draw attention --stage partitioned -o flash.svg      after every relabeling
    napkin draw attention --after napkin-assign-levels -o levels.png
    napkin draw matmul --dims m=512,n=512,k=256 --stage partitioned --pseudocode -o mm.png
    napkin draw diagram.mlir -o diagram.png                     a file, drawn as it is
    napkin draw examples/swiglu_mlp.mlir --stage partitioned -o swiglu.png   after its derivation
    napkin draw attention --grad --stage partitioned -o bwd.png    one picture per kernel of the
                                                                  differentiated program (bwd-NAME.png)

A built-in diagram is built with `--dims` (default sizes when left out) and taken through its
derivation (`napkin_mlir.pipeline.stages.derivation`) up to `--after PASS` or to `--stage`. A .mlir file
is verified and drawn at the stage it is in; a plain diagram in a file can be re-sized with
`--dims` and taken through its automatic derivation (`napkin derive`) with `--after`/`--stage`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlir import ir

from napkin_mlir.errors import UsageError
from napkin_mlir.ir.diagrams import diagram_sizes

#: Sizes used when --dims is left out (drawings only need labels).
DEFAULT_DIMS: dict[str, str] = {
    "attention": "b=2,h=8,q=1024,x=1024,d=64",
    "matmul": "m=1024,n=1024,k=512",
    "mlp": "m=256,k=512,f=2048,n=512",
}
STAGE_CHOICES = ("diagram", "partitioned")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `napkin` parser."""
    p = sub.add_parser(
        "draw",
        help="draw a diagram (built-in or .mlir) as the paper does: wires, boxes, levels, partitions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("diagram", help="a built-in diagram (attention, matmul, mlp) or a .mlir file")
    p.add_argument("-o", "--output", required=True, help="the picture to write: FILE.png or FILE.svg")
    p.add_argument("--dims", default=None, help="axis sizes by name (default: sizes for a readable picture)")
    p.add_argument("--dtype", default="f32", help="element type: f32, f16 or bf16 (default f32)")
    p.add_argument("--causal", action="store_true", help="attention: causal mask")
    p.add_argument("--kv-heads", type=int, default=None, help="attention: key/value heads (grouped-query)")
    p.add_argument("--activation", default="gelu", help="mlp: activation gelu|relu|silu|tanh (default gelu)")
    p.add_argument("--tile", default=None, help="tile sizes by axis, e.g. q=64,x=32")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--after", default=None, metavar="PASS", help="run the derivation up to and including PASS")
    where.add_argument("--stage", default=None, help="diagram (default) or partitioned (the whole derivation)")
    p.add_argument(
        "--pseudocode", action="store_true", help="draw the pseudocode: one column per step, buffers per level"
    )
    p.add_argument("--gpu", default="a100", help="GPU of the cost-model caption (default a100; 'none' leaves it out)")
    p.add_argument("--title", default=None, help="title of the picture (default: diagram name and stage)")
    from napkin_mlir.cli.verify_grad import add_grad_arguments

    add_grad_arguments(
        p,
        verify=False,
        grad_help="draw every diagram of the differentiated program (the forward with its residuals, the backward "
        "diagrams), each taken through its own derivation, to OUTPUT-NAME.png",
    )
    p.set_defaults(fn=cmd_draw)


def _output(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"-o {path}: unsupported picture format (expected a .png or .svg file name)")
    if out.parent and not out.parent.exists():
        raise UsageError(f"-o {path}: directory '{out.parent}' does not exist")
    return out


def derivation_steps(diagram: str, sizes: dict[str, int], tiles: dict[str, int]) -> list[str]:
    """The relabeling pipeline of a built-in diagram, one element (text) per pass."""
    from napkin_mlir.pipeline.passmanager import parse_pipeline
    from napkin_mlir.pipeline.stages import derivation

    return [e.text for e in parse_pipeline(derivation(diagram, sizes, tiles))]


def select_steps(steps: list[str], after: str | None, stage: str | None) -> list[str]:
    """The pipeline elements to run for `--after PASS` or `--stage STAGE`."""
    if after is not None:
        names = [s.split("{", 1)[0] for s in steps]
        if after not in names:
            known = ", ".join(dict.fromkeys(names))
            raise UsageError(f"--after: '{after}' is not a pass of this derivation (passes: {known})")
        return steps[: names.index(after) + 1]
    if stage is None or stage == "diagram":
        return []
    if stage == "partitioned":
        return steps
    raise UsageError(f"--stage: unknown stage '{stage}' (expected one of {', '.join(STAGE_CHOICES)})")


def _check_options(args: argparse.Namespace) -> None:
    if args.stage is not None and args.stage not in STAGE_CHOICES:
        raise UsageError(f"--stage: unknown stage '{args.stage}' (expected one of {', '.join(STAGE_CHOICES)})")


def _draw_file(args: argparse.Namespace, out: Path) -> int:
    """A .mlir file: drawn as it is, or (a plain diagram) re-sized by --dims and taken through
    its automatic derivation (`napkin_mlir.derive.auto.derive`, --tile) up to --after/--stage."""
    from napkin_mlir.cli.common import parse_sizes
    from napkin_mlir.derive.auto import derive
    from napkin_mlir.draw.render import draw
    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.files import load_diagram
    from napkin_mlir.pipeline.passmanager import parse_pipeline, run_pipeline

    if args.causal or args.kv_heads is not None:
        raise UsageError("--causal and --kv-heads describe a built-in diagram; a .mlir file says it in its types")
    dims = parse_sizes(args.dims, "--dims") if args.dims else None
    tiles = parse_sizes(args.tile, "--tile") if args.tile else None
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(args.diagram, dims)
        if args.after is not None or (args.stage not in (None, "diagram")) or tiles:
            derivation = derive(module, tiles, None, None, filename=args.diagram)
            steps = select_steps([e.text for e in parse_pipeline(derivation.pipeline())], args.after, args.stage)
            if steps:
                run_pipeline(module, f"builtin.module({','.join(steps)})", filename=args.diagram)
        gpu = None if args.gpu == "none" else args.gpu
        draw(module, out, title=args.title, pseudocode=args.pseudocode, gpu=gpu)
    print(f"wrote {out}")
    return 0


def _draw_gradients(args: argparse.Namespace, out: Path) -> int:
    """--grad: each diagram of the differentiated program drawn as a file's, to OUT-NAME.ext."""
    import tempfile

    from napkin_mlir.cli.verify_grad import differentiated_files

    is_file = args.diagram.endswith(".mlir") or Path(args.diagram).is_file()
    ns = argparse.Namespace(**vars(args))
    if not is_file:
        ns.dims = args.dims or DEFAULT_DIMS.get(args.diagram)
        ns.seed = 0
    with tempfile.TemporaryDirectory(prefix="napkin-grad-") as tmp:
        for part in differentiated_files(ns, is_file, Path(tmp)):
            one = argparse.Namespace(**vars(args))
            one.diagram, one.dims, one.causal, one.kv_heads = str(part), None, False, None
            _draw_file(one, out.with_name(f"{out.stem}-{part.stem}{out.suffix}"))
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    out = _output(args.output)
    _check_options(args)
    if args.grad:
        return _draw_gradients(args, out)
    if args.diagram.endswith(".mlir") or Path(args.diagram).is_file():
        return _draw_file(args, out)

    from napkin_mlir.check.harness import build
    from napkin_mlir.cli.common import ACTIVATIONS, DTYPE_CHOICES, problem_config
    from napkin_mlir.draw.render import draw
    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.diagrams import DIAGRAMS
    from napkin_mlir.pipeline.passmanager import run_pipeline

    if args.diagram not in DIAGRAMS:
        raise UsageError(f"unknown diagram '{args.diagram}' (expected one of {', '.join(DIAGRAMS)}, or a .mlir file)")
    if args.dtype not in DTYPE_CHOICES:
        raise UsageError(f"unsupported dtype '{args.dtype}' (expected one of {', '.join(DTYPE_CHOICES)})")
    if args.activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation '{args.activation}' (expected one of {', '.join(ACTIVATIONS)})")
    ns = argparse.Namespace(**vars(args))
    ns.dims = args.dims or DEFAULT_DIMS[args.diagram]
    ns.seed = 0
    config = problem_config(ns)
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        sizes = diagram_sizes(module)
        steps = select_steps(derivation_steps(config.diagram, sizes, config.tiles), args.after, args.stage)
        if steps:
            run_pipeline(module, f"builtin.module({','.join(steps)})")
        gpu = None if args.gpu == "none" else args.gpu
        draw(module, out, title=args.title, pseudocode=args.pseudocode, gpu=gpu)
    print(f"wrote {out}")
    return 0
