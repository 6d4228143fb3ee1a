"""Every debug knob of napkin-mlir, in one typed place (documented in the README).

Knobs are environment variables so that they reach every command (`napkin`, `napkin-opt`)
and the test suite without new flags. `knobs()` reads them once per call; nothing else in the
package reads the environment.

    NAPKIN_DEBUG=1                 show Python tracebacks of internal errors (never for user errors)
    NAPKIN_PRINT_IR_AFTER_ALL=1    napkin verify/compile/bench print the IR after every pass (stderr)
    NAPKIN_DUMP_DIR=DIR            napkin verify/compile/bench write the IR after every pass to DIR
    NAPKIN_PTXAS=/path/to/ptxas    use this ptxas instead of the nvidia-cuda-nvcc wheel's
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Knobs:
    debug: bool
    print_ir_after_all: bool
    dump_dir: Path | None
    ptxas: Path | None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def knobs() -> Knobs:
    """The current knob settings."""
    dump = os.environ.get("NAPKIN_DUMP_DIR")
    ptxas = os.environ.get("NAPKIN_PTXAS")
    return Knobs(
        debug=_flag("NAPKIN_DEBUG"),
        print_ir_after_all=_flag("NAPKIN_PRINT_IR_AFTER_ALL"),
        dump_dir=Path(dump) if dump else None,
        ptxas=Path(ptxas) if ptxas else None,
    )
