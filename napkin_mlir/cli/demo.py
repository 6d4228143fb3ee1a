"""`napkin demo`: the tour `make demo` runs. The attention diagram through the relabelings one
pass at a time, the derived program checked on the CPU against JAX, the cost model's choice
and pseudocode, pictures, and the tensor-core kernel compiled and run on the CPU emulator."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlir import ir

from napkin_mlir.check.harness import VerifyConfig, build, verify
from napkin_mlir.cli.verify import _outline
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.pipeline.passmanager import parse_pipeline, run_pipeline
from napkin_mlir.pipeline.stages import derivation


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
    ok = _demo_user_diagram(args.seed) and ok
    _demo_model()
    _demo_pictures(dims, config)
    ok = _demo_gpu(dims) and ok
    print("demo finished: all results match JAX" if ok else "demo finished: a result did NOT match JAX")
    return 0 if ok else 1


DEMO_DIR = Path("out/demo")


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "softcap_attention.mlir"


def _demo_user_diagram(seed: int) -> bool:
    """A diagram a user writes (Gemma 2's soft-capped attention, a .mlir file): the compiler
    derives its relabelings, explains them, and checks the result against the diagram's own
    JAX interpretation."""
    from napkin_mlir.check.diagram import verify_diagram
    from napkin_mlir.ir.files import load_diagram

    print("A diagram users write: examples/softcap_attention.mlir (Gemma 2: softmax(50·tanh(s/50)) V), q=x=333:")
    with napkin_context(), ir.Location.unknown():
        module = load_diagram(EXAMPLE, {"q": 333, "x": 333})
        result = verify_diagram(module, seed, filename="examples/softcap_attention.mlir")
    for reason in result.derivation.reasons:
        print(f"   derive: {reason}")
    print("\n".join("   " + line for line in result.summary().splitlines()), "\n")
    return result.passed


def _demo_model() -> None:
    """The cost model's tile choice and prediction for attention on each GPU, and pseudocode."""
    from napkin_mlir.derive.tiles import choose_tiles
    from napkin_mlir.model.pseudocode import pseudocode

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
    from napkin_mlir.draw.render import draw

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
    from napkin_mlir.backends.gpu.ptxas import assemble
    from napkin_mlir.backends.gpu.sidecar import write_sidecar
    from napkin_mlir.backends.gpu.tensorcore import compile_tensorcore_attention
    from napkin_mlir.backends.gpu.tensorcore_plan import AttentionPlan
    from napkin_mlir.model.cost import analyze

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
        from napkin_mlir.backends.gpu import runner as gpu_runner

        rep = gpu_runner.run(DEMO_DIR / "attention-sm_80.cubin.json", repeats=10)
        print(
            f"   on {rep['device']}: {'PASS' if rep['passed'] else 'FAIL'} {rep['errors']}; median ms {rep['median_ms']}"
        )
        ok = ok and bool(rep["passed"])
    else:
        print(
            "   (no GPU here: python -m napkin_mlir.backends.gpu.runner out/demo/attention-sm_80.cubin.json runs it on one)"
        )
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="a short tour of the compiler")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(fn=cmd_demo)
