"""The napkin pass registry: one pass per file, one kebab-case flag per pass.

Each pass module defines a frozen dataclass of options and a `run(module, options)`
function, and registers them here with `register(...)`. `napkin-opt` exposes every
registered pass as `--<flag>` and inside `--pass-pipeline`; `napkin_mlir.pipeline.passmanager` turns
a mixed pipeline (napkin passes and upstream passes) into one MLIR PassManager.

A pass reports a user-facing problem by raising `napkin_mlir.errors.NapkinError`; the pass
manager turns it into a pass failure and the drivers print it as `error: ...`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlir import ir


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its flag, options dataclass, entry point and one-line summary."""

    flag: str
    options: type
    run: Callable[[ir.Operation, Any], None]
    summary: str

    def option_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.options))


REGISTRY: dict[str, PassInfo] = {}

#: Every pass module, in the order `--list-passes` shows them.
PASS_MODULES = [
    "passes.verify",
    "passes.assign_levels",
    "passes.group_partition",
    "passes.stream_partition",
    "passes.differentiate",
    "passes.fission",
    "passes.lower_to_loops",
    "passes.erase_memory_spaces",
    "passes.cost_analysis",
]


def register(flag: str, options: type, summary: str) -> Callable[[Callable], Callable]:
    """Decorator for a pass's `run(module, options)`: registers it under `flag`."""
    if not dataclasses.is_dataclass(options) or not options.__dataclass_params__.frozen:
        raise TypeError(f"options of {flag} must be a frozen dataclass")

    def wrap(fn: Callable) -> Callable:
        REGISTRY[flag] = PassInfo(flag, options, fn, summary)
        return fn

    return wrap


def load_all() -> dict[str, PassInfo]:
    """Import every pass module (registering it) and return the registry."""
    for name in PASS_MODULES:
        importlib.import_module(name)
    return REGISTRY
