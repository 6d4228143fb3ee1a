"""`python -m napkin_mlir.fuzz`: a fuzzing campaign (`make fuzz`), or the replay of one
reproducer.

    python -m napkin_mlir.fuzz --seconds 300 --seed 0 --out fuzz-out/
    python -m napkin_mlir.fuzz --replay fuzz-out/failures/001-diagram-mismatch-after-pass.json
    python -m napkin_mlir.fuzz --shrink fuzz-out/failures/001-diagram-mismatch-after-pass.json

A campaign prints its counts (diagrams generated, pipelines run, comparisons made, refusals
by reason, mutated inputs, failures) and writes a minimized reproducer per distinct failure
to OUT/failures/ and the counts to OUT/summary.json; it exits 1 when anything failed. A
replay exits 1 while the reproducer still fails, 0 once it passes. Failures that match an
open reproducer of test/fuzz/regressions/ (`--known`) are counted apart and do not fail
the campaign. SIGINT (Ctrl-C) and SIGTERM stop a campaign the same way: it shrinks what
failed and writes its reproducers and summary (also when started in the background, where
the shell would have it ignore SIGINT).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from napkin_mlir.fuzz.campaign import Settings, known_failures, replay, run_campaign, shrink_file, summary_text

REGRESSIONS = Path(__file__).resolve().parents[2] / "test" / "fuzz" / "regressions"


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m napkin_mlir.fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=180.0, help="time to spend checking (default 180)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("fuzz-out"), help="output directory (default fuzz-out/)")
    p.add_argument("--diagrams", type=int, default=None, help="stop generating diagrams after this many")
    p.add_argument("--mutations", type=int, default=None, help="stop mutating after this many inputs")
    p.add_argument(
        "--mutation-share", type=float, default=0.2, help="share of the time for mutated inputs (default 0.2)"
    )
    p.add_argument("--cpu", type=float, default=0.5, help="chance a drawn pipeline also runs on the CPU (default 0.5)")
    p.add_argument(
        "--emulate", type=float, default=0.1, help="chance a small diagram also runs on the GPU emulator (default 0.1)"
    )
    p.add_argument(
        "--variants",
        type=float,
        default=0.2,
        help="share of diagrams that are attention variants, emulated through the tensor-core rules (default 0.2)",
    )
    p.add_argument(
        "--grad",
        type=float,
        default=0.5,
        help="share of the variants whose forward with residuals, dQ and dK/dV run through the tensor-core rule too "
        "(default 0.5)",
    )
    p.add_argument("--no-minimize", action="store_true", help="write failures as found")
    p.add_argument("--minimize-seconds", type=float, default=120.0, help="time to shrink each failure (default 120)")
    p.add_argument(
        "--known",
        type=Path,
        default=REGRESSIONS,
        metavar="DIR",
        help="reproducers of open bugs: failures matching them are counted apart (default test/fuzz/regressions)",
    )
    p.add_argument("--replay", type=Path, default=None, metavar="FILE.json", help="re-run one reproducer")
    p.add_argument("--shrink", type=Path, default=None, metavar="FILE.json", help="shrink one reproducer further")
    args = p.parse_args(argv)
    if args.shrink is not None:
        if not args.shrink.is_file():
            print(f"error: {args.shrink}: no such reproducer", file=sys.stderr)
            return 2
        files = shrink_file(args.shrink, Settings(out=args.out, minimize_seconds=args.minimize_seconds))
        print("wrote " + ", ".join(files))
        return 0
    if args.replay is not None:
        if not args.replay.is_file():
            print(f"error: {args.replay}: no such reproducer", file=sys.stderr)
            return 2
        fails, what = replay(args.replay, args.out / "work-replay")
        print(f"{'FAILS' if fails else 'PASSES'}: {what}")
        return 1 if fails else 0
    for stop in (signal.SIGINT, signal.SIGTERM):  # both end a campaign with its summary
        signal.signal(stop, _interrupted)
    if args.seconds <= 0 or args.seed < 0 or not 0 <= args.mutation_share < 1 or not 0 <= args.cpu <= 1:
        print(
            "error: --seconds must be positive, --seed non-negative, --mutation-share in [0, 1), --cpu in [0, 1]",
            file=sys.stderr,
        )
        return 2
    settings = Settings(
        seconds=args.seconds,
        seed=args.seed,
        out=args.out,
        diagrams=args.diagrams,
        mutations=args.mutations,
        mutation_share=args.mutation_share,
        minimize=not args.no_minimize,
        minimize_seconds=args.minimize_seconds,
        cpu=args.cpu,
        emulate=args.emulate,
        variants=args.variants,
        grad=args.grad,
        known=known_failures(args.known) if args.known.is_dir() else {},
    )
    campaign = run_campaign(settings, log=lambda s: print(s, flush=True))
    print(summary_text(campaign.counts, campaign.unique, settings))
    print(
        f"counts in {args.out / 'summary.json'}"
        + (f", reproducers in {args.out / 'failures'}/" if campaign.unique else "")
    )
    return 1 if campaign.unique else 0


if __name__ == "__main__":
    sys.exit(main())
