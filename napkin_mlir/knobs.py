"""Every debug knob of napkin-mlir, in one typed place (documented in the README).

Knobs are environment variables so that they reach every command (`napkin`, `napkin-opt`)
and the test suite without new flags. `knobs()` reads them once per call; nothing else in the
package reads the environment.

    NAPKIN_DEBUG=1                 show Python tracebacks of internal errors (never for user errors)
    NAPKIN_PRINT_IR_AFTER_ALL=1    napkin verify/compile/bench print the IR after every pass (stderr)
    NAPKIN_DUMP_DIR=DIR            napkin verify/compile/bench write the IR after every pass to DIR
    NAPKIN_PTXAS=/path/to/ptxas    use this ptxas instead of the nvidia-cuda-nvcc wheel's
    NAPKIN_JAX_LOG=1               napkin_mlir.jax reports each kernel's cold compile and cache hit (stderr)
    NAPKIN_JAX_CACHE_DIR=DIR       napkin_mlir.jax's disk cache of compiled kernels (default
                                   ~/.cache/napkin-mlir/jax; `off` keeps kernels in memory only)
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
    jax_log: bool = False
    jax_cache_dir: Path | None = None


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
        jax_log=_flag("NAPKIN_JAX_LOG"),
        jax_cache_dir=_jax_cache_dir(),
    )


def _jax_cache_dir() -> Path | None:
    value = os.environ.get("NAPKIN_JAX_CACHE_DIR", "").strip()
    if value.lower() in ("off", "0", "none"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "napkin-mlir" / "jax"
