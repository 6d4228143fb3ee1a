"""`napkin`: the project's command line.

    napkin demo                      a short tour: diagram, passes, result vs JAX
    napkin verify matmul|attention|mlp --dims ... [--dtype f32|f16|bf16] [--seed N] ...
    napkin build attention --dims ... [-o FILE]   the diagram as napkin IR
    napkin pipeline attention --dims ...           its relabeling pipeline (for napkin-opt)
    napkin compile attention --target sm_80 ...    a GPU kernel (PTX/cubin + sidecar)
    napkin emulate attention --dims ...            that kernel run on the CPU emulator vs JAX

`verify` ends with a line starting with PASS or FAIL and exits 0 only on PASS.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path

from mlir import ir

from napkin_mlir.arrays import ArrayType
from napkin_mlir.cli.common import ArgumentParser, parse_sizes, run_main
from napkin_mlir.context import napkin_context
from napkin_mlir.diagrams import DIAGRAMS, diagram_sizes
from napkin_mlir.errors import UsageError
from napkin_mlir.harness import VerifyConfig, build, model_tiles, verify
from napkin_mlir.passmanager import parse_pipeline, run_pipeline
from napkin_mlir.pipeline import derivation

#: Modules that add more subcommands: each defines `add_commands(subparsers)`.
COMMAND_MODULES = (
    "napkin_mlir.cli.model",
    "napkin_mlir.cli.draw",
    "napkin_mlir.cli.bench",
    "napkin_mlir.cli.compile",
    "napkin_mlir.cli.emulate",
)

DTYPE_CHOICES = ("f32", "f16", "bf16")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh")


def _dtype(value: str) -> str:
    if value not in DTYPE_CHOICES:
        raise argparse.ArgumentTypeError(f"unsupported dtype '{value}' (expected one of {', '.join(DTYPE_CHOICES)})")
    return value


def add_problem_args(p: argparse.ArgumentParser, dims_required: bool = True) -> None:
    p.add_argument("diagram", help="built-in diagram: " + ", ".join(DIAGRAMS))
    p.add_argument("--dims", required=dims_required, help="axis sizes by name, e.g. m=300,n=200,k=100")
    p.add_argument("--dtype", type=_dtype, default="f32", help="element type: f32, f16 or bf16 (default f32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--causal", action="store_true", help="attention: causal mask")
    p.add_argument("--kv-heads", type=int, default=None, help="attention: key/value heads (grouped-query)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="gelu", help="mlp: activation (default gelu)")
    p.add_argument("--tile", default=None, help="tile sizes by axis, e.g. q=64,x=32")


def problem_config(args: argparse.Namespace) -> VerifyConfig:
    if args.diagram not in DIAGRAMS:
        raise UsageError(f"unknown diagram '{args.diagram}' (expected one of {', '.join(DIAGRAMS)})")
    if args.diagram != "attention" and (args.causal or args.kv_heads is not None):
        raise UsageError("--causal and --kv-heads apply to attention only")
    tiles = parse_sizes(args.tile, "--tile") if args.tile else {}
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    return VerifyConfig(
        diagram=args.diagram,
        dims=parse_sizes(args.dims, "--dims"),
        dtype=args.dtype,
        seed=args.seed,
        causal=args.causal,
        kv_heads=args.kv_heads,
        activation=args.activation,
        tiles=tiles,
    )


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


def cmd_verify(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
    print("napkin-mlir demo: the paper's attention diagram, relabeled into FlashAttention, checked against JAX.\n")
    dims = {"b": 1, "h": 2, "q": 77, "x": 77, "d": 32}
    config = VerifyConfig("attention", dims, "f32", args.seed, causal=True, tiles={"q": 32, "x": 16})
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        print("1. The plain diagram (causal attention, b=1 h=2 q=x=77 d=32), one line per box:")
        print("\n".join(_outline(module)), "\n")
        sizes = {**dims}
        steps = [e for e in parse_pipeline(derivation("attention", sizes, config.tiles)) if e.name != "napkin-verify"]
        for i, element in enumerate(steps, start=2):
            text = element.text
            run_pipeline(module, f"builtin.module({text})")
            print(f"{i}. after {text}:")
            print("\n".join(_outline(module)), "\n")
    print("(napkin-opt --mlir-print-ir-after-all shows the full IR of every step.)\n")
    ok = True
    checks = [
        (
            "The derived program (scf.forall over tiles, scf.for over chunks) run on the CPU vs jax.nn.dot_product_attention:",
            config,
        ),
        (
            "The same derivation in bf16, judged by FlashAttention's rule (at most 2x JAX's own bf16 error):",
            VerifyConfig("attention", dims, "bf16", args.seed, causal=True, tiles={"q": 32, "x": 16}),
        ),
        (
            "Matmul 300x200x100 (group m, n; stream k) vs jax.numpy:",
            VerifyConfig("matmul", {"m": 300, "n": 200, "k": 100}, "f32", args.seed),
        ),
    ]
    for title, cfg in checks:
        print(title)
        result = verify(cfg, log=lambda s: None)
        print(f"   {result.summary()}\n")
        ok = ok and result.passed
    _demo_model()
    _demo_pictures(dims, config)
    ok = _demo_gpu(dims) and ok
    print("demo finished: all results match JAX" if ok else "demo finished: a result did NOT match JAX")
    return 0 if ok else 1


DEMO_DIR = Path("out/demo")


def _demo_model() -> None:
    """The cost model's tile choice and prediction for attention on each GPU, and pseudocode."""
    from napkin_mlir.pseudocode import pseudocode
    from napkin_mlir.tiles import choose_tiles

    dims = {"b": 4, "h": 16, "q": 4096, "x": 4096, "d": 128}
    print("The performance model: attention bf16, b=4 h=16 q=x=4096 d=128, tiles chosen analytically (no autotuning):")
    useful = 4.0 * dims["b"] * dims["h"] * dims["q"] * dims["x"] * dims["d"]  # TFLOP/s as FlashAttention counts
    for gpu in ("a100", "h100", "h200"):
        c = choose_tiles("attention", dims, "bf16", gpu)
        r = c.report
        hbm = r.level("HBM")["transfer_bytes"] / 1e6
        print(
            f"   {gpu}: tiles {c.tiles}, {c.warps} warps/CTA, {r.warps_per_sm} warps/SM, "
            f"HBM {hbm:.0f} MB, predicted {r.predicted_seconds * 1e6:.0f} us = {useful / r.predicted_seconds / 1e12:.0f} TFLOP/s "
            f"({r.bound}-bound)"
        )
    choice = choose_tiles("attention", dims, "bf16", "a100")
    with napkin_context(), ir.Location.unknown():
        module = build(VerifyConfig("attention", dims, "bf16"))
        run_pipeline(module, derivation("attention", diagram_sizes(module), choice.tiles))
        text = pseudocode(module, "a100", report=choice.report)
    print("\n   Its pseudocode on the A100 (napkin pseudocode attention --gpu a100 ...):")
    print("\n".join("   " + line for line in text.splitlines()))
    print()


def _demo_pictures(dims: dict[str, int], config: VerifyConfig) -> None:
    """The plain and the derived attention diagram as pictures (napkin draw)."""
    from napkin_mlir.draw import draw

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        plain = draw(module, DEMO_DIR / "attention-plain.png", title="attention: the plain diagram")
        run_pipeline(module, derivation("attention", dict(dims), config.tiles))
        derived = draw(module, DEMO_DIR / "attention-derived.png", title="attention after the relabelings")
    print(f"Pictures of the diagram before and after the relabelings: {plain} and {derived}\n")


def _demo_gpu(dims: dict[str, int]) -> bool:
    """Compile the derived attention kernel (tensor cores) for both targets, run it on the CPU
    emulator, and on the GPU if one is here. True when every run matched JAX."""
    from napkin_mlir.cost import analyze
    from napkin_mlir.gpu import assemble, compile_tensorcore_attention, write_sidecar
    from napkin_mlir.tensorcore import AttentionPlan

    problem = {"b": 2, "h": 8, "q": 1000, "x": 1000, "d": 64}
    tiles = {"q": 64, "x": 64}
    print("The derived attention kernel for the GPU (bf16, causal, b=2 h=8 q=x=1000 d=64, tiles q=64 x=64):")
    for target in ("sm_80", "sm_90a"):
        with napkin_context(), ir.Location.unknown():
            module = build(VerifyConfig("attention", problem, "bf16", causal=True))
            run_pipeline(module, derivation("attention", diagram_sizes(module), tiles))
            plan = AttentionPlan.from_partitioned(module)
            model = analyze(module, {"sm_80": "a100", "sm_90a": "h100"}[target], stages=2, tensor_cores=True)
            kernel, ptx = compile_tensorcore_attention(module, target)
        cubin = DEMO_DIR / f"attention-{target}.cubin"
        kernel.ptxas = assemble(ptx, target, cubin)
        kernel.problem.update(
            {"diagram": "attention", "dims": problem, "dtype": "bf16", "causal": True, "tiles": tiles}
        )
        write_sidecar(kernel, cubin)
        r = kernel.ptxas
        print(
            f"   {target}: {cubin}  mma.sync x{ptx.count('mma.sync.aligned')}, ldmatrix x{ptx.count('ldmatrix.sync')}, "
            f"cp.async x{ptx.count('cp.async.cg')}\n"
            f"      ptxas: {r['registers']} registers/thread, {r['spill_stores_bytes']} B spilled, "
            f"{kernel.dynamic_smem_bytes} B shared memory/CTA, {plan.warps} warps/CTA\n"
            f"      model: {model.registers_per_thread} registers/thread, {model.smem_per_cta} B shared memory/CTA, "
            f"{model.warps_per_cta} warps/CTA, {model.warps_per_sm} warps/SM, "
            f"predicted {model.predicted_seconds * 1e6:.1f} us ({model.bound}-bound)"
        )
    ok = _demo_emulator(tiles)
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        from napkin_mlir import gpu_runner

        rep = gpu_runner.run(DEMO_DIR / "attention-sm_80.cubin.json", repeats=10)
        print(
            f"   on {rep['device']}: {'PASS' if rep['passed'] else 'FAIL'} {rep['errors']}; median ms {rep['median_ms']}"
        )
        ok = ok and bool(rep["passed"])
    else:
        print("   (no GPU here: python -m napkin_mlir.gpu_runner out/demo/attention-sm_80.cubin.json runs it on one)")
    print()
    return ok


def _demo_emulator(tiles: dict[str, int]) -> bool:
    """The same kernel (tiles, warps, causal mask) on a smaller problem, run thread by thread
    on the CPU emulator and compared with JAX."""
    from napkin_mlir.cli.compile import compile_kernel
    from napkin_mlir.emulator import emulate_kernel

    config = VerifyConfig("attention", {"b": 1, "h": 2, "q": 300, "x": 300, "d": 64}, "bf16", causal=True, tiles=tiles)
    kernel, text = compile_kernel(config, "sm_80", "gpu", "tensorcore", log=lambda _: None)
    report = emulate_kernel(kernel, text)
    print("   The same kernel on the CPU emulator (napkin emulate), b=1 h=2 q=x=300, every thread in lockstep:")
    print("\n".join("      " + line for line in report.lines()))
    return report.passed


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="napkin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    demo = sub.add_parser("demo", help="a short tour of the compiler")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(fn=cmd_demo)
    ver = sub.add_parser("verify", help="compile a built-in diagram, run it on the CPU, compare with JAX")
    add_problem_args(ver)
    ver.add_argument(
        "--gpu",
        choices=("a100", "h100", "h200"),
        default=None,
        help="choose the tiles with the cost model for this GPU",
    )
    ver.set_defaults(fn=cmd_verify)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    emit = sub.add_parser("build", help="print a built-in diagram as napkin IR")
    add_problem_args(emit)
    emit.add_argument("-o", "--output", default=None, help="write to FILE instead of stdout")
    emit.set_defaults(fn=cmd_build)
    pipe = sub.add_parser("pipeline", help="print the relabeling pipeline of a built-in diagram")
    add_problem_args(pipe)
    pipe.set_defaults(fn=cmd_pipeline)
    args = parser.parse_args(argv)
    run_main(lambda: args.fn(args))


if __name__ == "__main__":
    main()
