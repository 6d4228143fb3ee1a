"""The description of a compiled kernel and its JSON sidecar.

A `GpuKernel` is what either GPU rule hands back: the PTX and everything a runner needs to
launch it (entry name, grid, block, dynamic shared memory bytes and the arguments in launch
order). `write_sidecar` puts that description next to the binary as `<binary>.json`; the
runner for the GPU machine (`runner.py`) reads it back without importing this module.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class KernelArg:
    """One kernel parameter in the launch order: a named array (a device pointer), or a TMA
    tensor map of one (role "tensormap": a device pointer to the 128-byte `CUtensorMap`
    the runner encodes from `tensor_map`, `{"of": array name, "box": box sizes innermost
    first, "swizzle": 0, 32, 64 or 128 bytes}`, over the whole array, out-of-bounds
    elements read as zeros; see `runner.TensorMap`)."""

    name: str
    role: str  # "input", "output" or "tensormap"
    dtype: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    tensor_map: dict[str, object] | None = None


@dataclass
class GpuKernel:
    """A compiled kernel and everything a runner needs to launch it."""

    target: str
    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dynamic_smem_bytes: int
    args: list[KernelArg]
    ptx: str
    problem: dict[str, object] = field(default_factory=dict)
    ptxas: dict[str, object] = field(default_factory=dict)

    def sidecar(self, binary: str) -> dict[str, object]:
        return {
            "format": 1,
            "binary": binary,
            "target": self.target,
            "entry": self.entry,
            "grid": list(self.grid),
            "block": list(self.block),
            "dynamic_smem_bytes": self.dynamic_smem_bytes,
            "args": [asdict(a) for a in self.args],
            "problem": self.problem,
            "ptxas": self.ptxas,
        }


def write_sidecar(kernel: GpuKernel, binary: Path) -> Path:
    """Write the kernel's sidecar next to `binary` (`<binary>.json`); return its path."""
    path = binary.with_suffix(binary.suffix + ".json")
    path.write_text(json.dumps(kernel.sidecar(binary.name), indent=2) + "\n")
    return path
