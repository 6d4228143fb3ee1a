"""`napkin derive FILE.mlir`: the relabeling pipeline the compiler chooses for a diagram, with
one line of reason per decision, as a pipeline `napkin-opt --pass-pipeline=` accepts.

    napkin derive examples/softcap_attention.mlir
    napkin derive examples/swiglu_mlp.mlir --gpu h100 --dims m=4096,k=4096,f=11008,n=4096
    napkin derive my.mlir --tile q=64,x=32 -o my-partitioned.mlir
    napkin derive attention --dims b=1,h=8,q=1024,x=1024,d=64 --kv-heads 2

A built-in diagram (matmul, attention, mlp) is built at --dims and derived by the same rules,
so its reasons say why it gets the pipeline every other command uses for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlir import ir

from napkin_mlir.cli.common import parse_sizes
from napkin_mlir.cli.verify_grad import add_grad_arguments, cmd_derive_grad
from napkin_mlir.derive.auto import derive
from napkin_mlir.errors import UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import DIAGRAMS, build_builtin
from napkin_mlir.ir.files import load_diagram, low_precision_of
from napkin_mlir.pipeline.passmanager import run_pipeline


def cmd_derive(args: argparse.Namespace) -> int:
    if args.grad:
        return cmd_derive_grad(args)
    dims = parse_sizes(args.dims, "--dims") if args.dims else None
    tiles = parse_sizes(args.tile, "--tile") if args.tile else None
    out = Path(args.output) if args.output else None
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"-o {out}: directory {out.parent} does not exist")
    with napkin_context(), ir.Location.unknown():
        module, filename = _diagram(args, dims)
        derivation = derive(module, tiles, args.gpu, low_precision_of(module) or "f16", filename=filename)
        for reason in derivation.reasons:
            print(f"// {reason}")
        pipeline = derivation.pipeline()
        print(pipeline)
        if out is not None:
            run_pipeline(module, pipeline, filename=filename)
            out.write_text(str(module))
            print(f"// wrote {out} (the partitioned program)")
    return 0


def _diagram(args: argparse.Namespace, dims: dict[str, int] | None) -> tuple[ir.Module, str | None]:
    """The diagram to derive, and its file name (None for a built-in)."""
    builtin = args.file in DIAGRAMS and not Path(args.file).is_file()
    if not builtin:
        if args.causal or args.kv_heads is not None or args.dtype:
            raise UsageError("--causal, --kv-heads and --dtype apply to a built-in diagram (a file has its own)")
        return load_diagram(args.file, dims), args.file
    if dims is None:
        raise UsageError(f"{args.file}: --dims is required for a built-in diagram")
    if args.file != "attention" and (args.causal or args.kv_heads is not None):
        raise UsageError("--causal and --kv-heads apply to attention only")
    module = build_builtin(args.file, dims, args.dtype or "f32", causal=args.causal, kv_heads=args.kv_heads)
    return module, None


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("derive", help="choose the relabelings of a .mlir diagram (groups, stream, tiles) and say why")
    p.add_argument("file", help="a .mlir file holding one plain diagram, or a built-in: " + ", ".join(DIAGRAMS))
    p.add_argument("--dims", default=None, help="re-size named axes of the file, e.g. q=4096,x=4096")
    p.add_argument("--tile", default=None, help="tile sizes by axis, e.g. q=64,x=32")
    p.add_argument(
        "--gpu", choices=("a100", "h100", "h200"), default=None, help="tiles from the cost model for this GPU"
    )
    p.add_argument("-o", "--output", default=None, help="also write the partitioned program to FILE")
    p.add_argument("--causal", action="store_true", help="built-in attention: causal mask")
    p.add_argument("--kv-heads", type=int, default=None, help="built-in attention: key/value heads (grouped-query)")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), default=None, help="built-in: element type (default f32)")
    add_grad_arguments(p, verify=False)
    p.set_defaults(fn=cmd_derive)
