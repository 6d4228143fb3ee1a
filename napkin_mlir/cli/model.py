"""`napkin model` and `napkin pseudocode`: the performance model and the looped algorithm.

    napkin model attention --gpu h100 --dtype bf16 --dims b=4,h=16,q=4096,x=4096,d=128 [--tile q=128] [--json] [--plot F.png]
    napkin pseudocode attention --gpu a100 --dtype f16 --dims ... [--tile q=128,x=64]
    napkin model examples/softcap_attention.mlir --gpu h100 --dims b=4,h=16,q=4096,x=4096,d=128
    napkin model attention --gpu h100 --dims b=4,h=16,q=4096,x=4096,d=128 --tensor-cores

Tiles not given with --tile are chosen by the model (`napkin_mlir.derive.tiles.choose_tiles`).
A .mlir file is derived like any diagram (`napkin_mlir.derive.auto.derive`, the model's tiles
for --gpu), then priced; its element types are its own (--dtype fp8 reprices it in fp8).
The estimate is the generic one, contractions at the GPU's native tensor-core family (wgmma
on Hopper); --tensor-cores prices the mma.sync mapping that `napkin compile` emits instead, at
the GPU's mma.sync peak. The report names the family and the peak it priced at.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlir import ir

from napkin_mlir.cli.common import parse_sizes
from napkin_mlir.errors import UsageError
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import DIAGRAMS
from napkin_mlir.model.hardware import DTYPE_ALIASES, available, canonical_dtype
from napkin_mlir.model.hardware import gpu as load_gpu

ACTIVATIONS = ("gelu", "relu", "silu", "tanh")


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("diagram", help="built-in diagram (" + ", ".join(DIAGRAMS) + ") or a .mlir file")
    p.add_argument("--gpu", default="h100", help="target: " + ", ".join(available()) + " (default h100)")
    p.add_argument("--dims", default=None, help="axis sizes by name, e.g. b=4,h=16,q=4096,x=4096,d=128")
    p.add_argument("--dtype", default=None, help="f32, f16/fp16, bf16 or fp8 (default bf16; a file: its own)")
    p.add_argument("--tile", default=None, help="pin tile sizes by axis, e.g. q=128,x=64 (others are chosen)")
    p.add_argument("--warps", type=int, default=None, help="warps per CTA (default: from the tile and registers)")
    p.add_argument("--stages", type=int, default=None, help="SMEM buffers per streamed array (default: 2 if it fits)")
    p.add_argument(
        "--tensor-cores",
        action="store_true",
        help="price the mma.sync mapping of `napkin compile` (one warp per 16 rows, the GPU's mma.sync peak) "
        "instead of the generic estimate at the native tensor-core family (wgmma on Hopper)",
    )
    p.add_argument("--causal", action="store_true", help="attention: causal mask")
    p.add_argument("--kv-heads", type=int, default=None, help="attention: key/value heads (grouped-query)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="gelu", help="mlp: activation (default gelu)")
    from napkin_mlir.cli.verify_grad import add_grad_arguments

    add_grad_arguments(
        p,
        verify=False,
        grad_help="each diagram of the differentiated program (forward with residuals, backward), derived and "
        "priced, and the backward's total against the forward",
    )


def _problem(args: argparse.Namespace) -> tuple[dict[str, int], dict[str, int], dict[str, Any]]:
    args.dtype = args.dtype or "bf16"
    if not args.dims:
        raise UsageError(f"{args.diagram}: --dims is required for a built-in diagram")
    if args.diagram not in DIAGRAMS:
        raise UsageError(f"unknown diagram '{args.diagram}' (expected one of {', '.join(DIAGRAMS)})")
    if args.dtype.lower() not in DTYPE_ALIASES:
        raise UsageError(f"unsupported dtype '{args.dtype}' (expected f32, f16, bf16 or fp8)")
    if args.diagram != "attention" and (args.causal or args.kv_heads is not None):
        raise UsageError("--causal and --kv-heads apply to attention only")
    if args.warps is not None and not 1 <= args.warps <= 32:
        raise UsageError(f"--warps must be between 1 and 32, got {args.warps}")
    if args.stages is not None and not 1 <= args.stages <= 8:
        raise UsageError(f"--stages must be between 1 and 8, got {args.stages}")
    hw = load_gpu(args.gpu)
    hw.peak(args.dtype, _instruction(args))
    dims = parse_sizes(args.dims, "--dims")
    tiles = parse_sizes(args.tile, "--tile") if args.tile else {}
    options: dict[str, Any] = {}
    if args.diagram == "attention":
        options = {"causal": args.causal, "kv_heads": args.kv_heads}
    elif args.diagram == "mlp":
        options = {"activation": args.activation}
    return dims, tiles, options


def _instruction(args: argparse.Namespace) -> str | None:
    """The tensor-core family the command prices: mma.sync with --tensor-cores, else the
    GPU's native one (None)."""
    return "mma.sync" if getattr(args, "tensor_cores", False) else None


def _model(args: argparse.Namespace):
    """(choice, report, program) for the command-line problem."""
    from napkin_mlir.derive.tiles import choose_tiles, partitioned
    from napkin_mlir.model.cost import evaluate

    dims, tiles, options = _problem(args)
    override = "fp8" if canonical_dtype(args.dtype) == "fp8" else None
    tc = getattr(args, "tensor_cores", False)
    try:
        choice = choose_tiles(args.diagram, dims, args.dtype, args.gpu, fixed=tiles, tensor_cores=tc, **options)
    except UsageError:
        if not tiles:
            raise
        choice = None  # the pinned tiles fit nowhere: report them anyway, with the violations
    prog = partitioned(args.diagram, dims, choice.tiles if choice else tiles, args.dtype, **options)
    stages = args.stages or (choice.stages if choice else 1)
    report = evaluate(prog, args.gpu, override, warps=args.warps, stages=stages, tensor_cores=tc)
    return choice, report, prog, dims, options


def _file_model(args: argparse.Namespace) -> tuple[ir.Module, Any, list[str]]:
    """(the derived module, its report, the derivation's reasons) for a .mlir file; needs an
    active context."""
    from napkin_mlir.cli.common import file_options
    from napkin_mlir.derive.auto import derive
    from napkin_mlir.ir.files import load_diagram, low_precision_of
    from napkin_mlir.model.cost import evaluate, extract
    from napkin_mlir.pipeline.passmanager import run_pipeline

    file_options(args)
    if args.dtype and canonical_dtype(args.dtype) != "fp8":
        raise UsageError("--dtype for a .mlir file only takes fp8 (a repricing); its types say the rest")
    hw = load_gpu(args.gpu)
    override = "fp8" if args.dtype else None
    dims = parse_sizes(args.dims, "--dims") if args.dims else None
    tiles = parse_sizes(args.tile, "--tile") if args.tile else None
    module = load_diagram(args.diagram, dims)
    low = low_precision_of(module) or "f32"
    hw.peak(override or low, _instruction(args))
    d = derive(module, tiles, args.gpu, override or low, filename=args.diagram)
    run_pipeline(module, d.pipeline(), filename=args.diagram)
    tc = getattr(args, "tensor_cores", False)
    report = evaluate(extract(module), hw, override, warps=args.warps, stages=args.stages or 2, tensor_cores=tc)
    if not report.fits and not args.stages:
        report = evaluate(extract(module), hw, override, warps=args.warps, stages=1, tensor_cores=tc)
    return module, report, [*d.reasons, d.pipeline()]


def _gradient_models(args: argparse.Namespace) -> list[tuple[str, ir.Module, Any, list[str]]]:
    """--grad: each diagram of the differentiated program (the forward with its residuals,
    then the backward diagrams), derived and priced as a file's: (name, module, report, reasons)."""
    import tempfile
    from pathlib import Path

    from napkin_mlir.cli.verify import is_file_argument
    from napkin_mlir.cli.verify_grad import differentiated_files

    is_file = is_file_argument(args.diagram)
    ns = argparse.Namespace(**vars(args))
    ns.seed = 0
    if is_file:
        ns.dtype = None  # the file's own; --dtype fp8 prices each part in fp8 below
    else:
        ns.dtype = storage_dtype_of(args.dtype or "bf16")
        ns.tile = None
    models = []
    with tempfile.TemporaryDirectory(prefix="napkin-grad-") as tmp:
        for part in differentiated_files(ns, is_file, Path(tmp)):
            one = argparse.Namespace(**vars(args))
            one.diagram, one.dims, one.causal, one.kv_heads = str(part), None, False, None
            one.dtype = "fp8" if args.dtype and canonical_dtype(args.dtype) == "fp8" else None
            with napkin_context(), ir.Location.unknown():
                module, report, reasons = _file_model(one)
                models.append((part.stem, ir.Module.parse(str(module)), report, reasons))
    return models


def storage_dtype_of(dtype: str) -> str:
    from napkin_mlir.derive.tiles import storage_dtype

    return storage_dtype(dtype)


def _cmd_model_gradients(args: argparse.Namespace) -> int:
    models = _gradient_models(args)
    for name, _, report, reasons in models:
        print(f"== {name}")
        print("\n".join(f"// {r}" for r in reasons))
        print(report.table())
    forward = models[0][2]
    flops = sum(r.flops for _, _, r, _ in models[1:])
    seconds = sum(r.predicted_seconds for _, _, r, _ in models[1:])
    print(
        f"backward ({len(models) - 1} kernels): {flops:.4g} FLOPs, {flops / forward.flops:.2f}x the forward's; "
        f"predicted {seconds * 1e6:.1f} us, {seconds / forward.predicted_seconds:.2f}x the forward's"
    )
    by_role = {name.rpartition("_vjp_")[2]: (module, report) for name, module, report, _ in models[1:]}
    if "dQ" in by_role and "dK_dV" in by_role:
        print(dq_choice(*by_role["dQ"], by_role["dK_dV"][1]))
    return 0


def dq_choice(dq_module: ir.Module, dq: Any, dkdv: Any) -> str:
    """Why dQ is a kernel of its own (`napkin-fission`) rather than accumulated by the dK/dV
    kernel (FlashAttention-2's atomic adds): the model's price of each. Accumulating saves
    the dQ kernel but adds its last contraction (dS·K, one of its contractions) to the dK/dV
    kernel, and every key tile's CTA adds its part of dQ in f32 into global memory: a read and
    a write of all of dQ per key tile, through L2 (`napkin-fission` writes each output
    element once, so the backends have no atomic adds either)."""
    from napkin_mlir.ir.files import axis_sizes

    sizes = axis_sizes(dq_module)
    elements = 1.0
    for axis in ("b", "h", "r", "q", "d"):
        elements *= sizes.get(axis, 1)
    key_tiles = -(-sizes["x"] // dkdv.tiles.get("x", sizes["x"]))
    atomics = key_tiles * elements * 4 * 2
    l2 = dkdv.level("L2")["bandwidth"]
    contraction = dq.times["tensor"] / max(1, dq_module_contractions(dq_module))
    separate = dq.predicted_seconds
    accumulated = contraction + atomics / l2
    choice = "a kernel of its own" if separate <= accumulated else "accumulation would be cheaper"
    return (
        f"dQ: {choice}: its kernel {separate * 1e6:.1f} us against accumulating it in the dK/dV kernel "
        f"{accumulated * 1e6:.1f} us ({contraction * 1e6:.1f} us more tensor time for dS·K and "
        f"{atomics / 1e9:.3g} GB of f32 read-modify-write of dQ through L2, {key_tiles} key tiles)"
    )


def dq_module_contractions(module: ir.Module) -> int:
    """The contractions of a (partitioned) diagram, in any region (dQ's: S, dP and dS·K)."""

    def count(op: ir.Operation) -> int:
        inner = sum(count(o.operation) for region in op.regions for block in region.blocks for o in block.operations)
        return inner + (op.name == "napkin.contract")

    return count(module.operation)


def cmd_model(args: argparse.Namespace) -> int:
    from napkin_mlir.cli.verify import is_file_argument

    if args.grad:
        if args.plot or args.json:
            raise UsageError("--grad prints a table per kernel (no --plot or --json)")
        return _cmd_model_gradients(args)
    if is_file_argument(args.diagram):
        if args.plot:
            raise UsageError("--plot takes a built-in diagram")
        with napkin_context(), ir.Location.unknown():
            _, report, reasons = _file_model(args)
        if args.json:
            print(json.dumps({**report.to_dict(), "derivation": reasons}, indent=2))
            return 0
        print("\n".join(f"// {r}" for r in reasons))
        print(report.table())
        for key, expr in report.symbolic.items():
            print(f"  {key:<24} {expr}")
        return 0
    choice, report, prog, _, _ = _model(args)
    if args.plot:
        _plot(args, choice, report, prog)
    if args.json:
        out = report.to_dict()
        out["choice"] = choice.to_json() if choice else None
        print(json.dumps(out, indent=2))
        return 0
    if choice:
        print(choice.table())
        print()
    print(report.table())
    for key, expr in report.symbolic.items():
        print(f"  {key:<24} {expr}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _plot(args: argparse.Namespace, choice, report, prog) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napkin_mlir.model.cost import evaluate

    hw = load_gpu(args.gpu)
    override = "fp8" if canonical_dtype(args.dtype) == "fp8" else None
    tiles = choice.tiles if choice else report.tiles
    axis = next(a for a in tiles if tiles[a] > 1)
    div = choice.divisors.get(axis, 1) if choice else 16
    full = next(p.full for p in prog.partitions() if p.axis == axis)
    sizes = sorted({min(full, div * k) for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)})
    xs, hbm, l2, times, fits = [], [], [], [], []
    for s in sizes:
        r = evaluate(
            prog.retile({**tiles, axis: s}),
            hw,
            override,
            stages=report.stages,
            tensor_cores=getattr(args, "tensor_cores", False),
        )
        xs.append(s)
        hbm.append(r.level("HBM")["transfer_bytes"] / 1e9)
        l2.append(r.level("L2")["transfer_bytes"] / 1e9)
        times.append(r.predicted_seconds * 1e6)
        fits.append(r.fits)
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.5))
    a1.plot(xs, l2, "o-", label="L2 <-> SM (H above SMEM)")
    a1.plot(xs, hbm, "s-", label="HBM")
    a1.set_xlabel(f"tile {axis}")
    a1.set_ylabel("transfer volume (GB)")
    a1.legend()
    a1.set_title("transfers vs tile")
    a2.plot(xs, times, "o-")
    for x, t, ok in zip(xs, times, fits, strict=True):
        if not ok:
            a2.plot([x], [t], "rx")
    a2.axvline(tiles[axis], color="gray", ls="--", label=f"chosen {axis}={tiles[axis]}")
    a2.set_xlabel(f"tile {axis} (x: does not fit)")
    a2.set_ylabel("predicted time (us)")
    a2.legend()
    a2.set_title("predicted time vs tile")
    peak = report.tensor_peak / 1e12
    bw = hw.hbm_bandwidth / 1e12
    import numpy as np

    ai = np.logspace(0, 4, 200)
    roof = f"roofline ({report.tensor_instruction} {peak:.0f} TFLOP/s, {bw:.2f} TB/s)"
    a3.loglog(ai, np.minimum(peak, ai * bw), label=roof)
    point_ai = report.tensor_flops / max(1.0, report.level("HBM")["transfer_bytes"])
    a3.loglog([point_ai], [report.achieved_tflops], "r*", ms=14, label=f"chosen: {report.achieved_tflops:.0f} TFLOP/s")
    a3.set_xlabel("arithmetic intensity (FLOP / HBM byte)")
    a3.set_ylabel("TFLOP/s")
    a3.legend()
    a3.set_title(f"{args.diagram} on {hw.title}")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    plt.close(fig)


def cmd_pseudocode(args: argparse.Namespace) -> int:
    from napkin_mlir.check.harness import VerifyConfig, build
    from napkin_mlir.cli.verify import is_file_argument
    from napkin_mlir.derive.tiles import storage_dtype
    from napkin_mlir.ir.diagrams import diagram_sizes
    from napkin_mlir.model.pseudocode import pseudocode
    from napkin_mlir.pipeline.passmanager import run_pipeline
    from napkin_mlir.pipeline.stages import PARTITIONS, derivation

    if args.grad:
        for name, module, report, _ in _gradient_models(args):
            print(f"// == {name}")
            with napkin_context(), ir.Location.unknown():
                print(pseudocode(ir.Module.parse(str(module)), args.gpu, None, report=report))
        return 0
    if is_file_argument(args.diagram):
        with napkin_context(), ir.Location.unknown():
            module, report, _ = _file_model(args)
            print(pseudocode(module, args.gpu, "fp8" if args.dtype else None, report=report))
        return 0
    _, report, _, dims, options = _model(args)
    override = "fp8" if canonical_dtype(args.dtype) == "fp8" else None
    with napkin_context(), ir.Location.unknown():
        module = build(VerifyConfig(args.diagram, dims, storage_dtype(args.dtype), **options))
        grouped, streamed = PARTITIONS[args.diagram]
        tileable = {a: t for a, t in report.tiles.items() if a in (*grouped, streamed)}
        run_pipeline(module, derivation(args.diagram, diagram_sizes(module), tileable))
        print(pseudocode(module, args.gpu, override, report=report))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `napkin` parser."""
    model = sub.add_parser("model", help="performance model: transfers, memory, time, occupancy, chosen tiles")
    _add_args(model)
    model.add_argument("--json", action="store_true", help="print the report as JSON")
    model.add_argument(
        "--plot", default=None, metavar="FILE.png", help="plot transfers and time vs tile, and a roofline"
    )
    model.set_defaults(fn=cmd_model)
    pseudo = sub.add_parser("pseudocode", help="the looped algorithm of the derived program, with hardware features")
    _add_args(pseudo)
    pseudo.set_defaults(fn=cmd_pseudocode)
