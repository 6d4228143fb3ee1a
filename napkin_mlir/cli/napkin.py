"""`napkin`: the project's command line.

    napkin demo                      a short tour: diagram, passes, result vs JAX
    napkin verify matmul|attention|mlp --dims ... [--dtype f32|f16|bf16] [--seed N] ...
    napkin build attention --dims ... [-o FILE]   the diagram as napkin IR
    napkin pipeline attention --dims ...           its relabeling pipeline (for napkin-opt)
    napkin derive FILE.mlir [--gpu h100]           the relabelings chosen for any diagram, and why
    napkin compile attention --target sm_80 ...    a GPU kernel (PTX/cubin + sidecar)
    napkin emulate attention --dims ...            that kernel run on the CPU emulator vs JAX

`verify` ends with a line starting with PASS or FAIL and exits 0 only on PASS.
"""

from __future__ import annotations

import argparse

from napkin_mlir.cli import bench, demo, derive, draw, emulate, model, verify
from napkin_mlir.cli import compile as compile_command
from napkin_mlir.cli.common import ArgumentParser, run_main

#: The subcommand modules, in help order: each defines `add_commands(subparsers)`.
COMMAND_MODULES = (demo, verify, derive, model, draw, bench, compile_command, emulate)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="napkin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    args = parser.parse_args(argv)
    run_main(lambda: args.fn(args))


if __name__ == "__main__":
    main()
