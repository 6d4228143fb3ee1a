"""GPU descriptions for the performance model, one JSON data file per target.

Each file (`a100.json`, `h100.json`, `h200.json`) holds `entries`: every number with its
`unit` and the `source` it comes from (NVIDIA datasheets and whitepapers, the CUDA C++
Programming Guide, the PTX ISA; the few measured figures say "estimate"). Adding a GPU is
adding a file. `gpu(name)` loads one as a `Hardware`: the memory levels from the top
(HBM, L2, SMEM, registers) with their capacities and bandwidths, peak rates per dtype and
tensor-core instruction family, exponent (MUFU) throughput, occupancy limits, the latencies
the resident warps must hide and the tensor-core instruction shapes. `for_target("sm_80")`
is the GPU the compiler models a target with (`TARGET_GPU`).

Tensor-core rates depend on the instruction that issues the work, not only on the dtype:
Hopper's dense peak is reached through the warpgroup `wgmma`, while the warp-level
`mma.sync` it keeps from Ampere runs far below it. A file lists its families in
`tensor_instructions`, native first; `peak_<dtype>` holds the native family's rate and
`peak_<family>_<dtype>` (`peak_mma_sync_bf16`) another family's. `Hardware.peak(dtype,
instruction)` reads them; without `instruction` it is the native family's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from napkin_mlir.errors import UsageError

DATA_DIR = Path(__file__).parent

#: dtype spellings accepted by the model -> canonical name used in the data files.
DTYPE_ALIASES: dict[str, str] = {
    "f64": "fp64",
    "fp64": "fp64",
    "f32": "fp32",
    "fp32": "fp32",
    "tf32": "tf32",
    "f16": "fp16",
    "fp16": "fp16",
    "bf16": "bf16",
    "fp8": "fp8",
    "f8": "fp8",
    "e4m3": "fp8",
    "e5m2": "fp8",
    "i32": "i32",
}

#: The GPU whose data describes each compile target (its limits and the cost model's rates).
TARGET_GPU: dict[str, str] = {"sm_80": "a100", "sm_90a": "h100"}

#: Bytes per element of each canonical dtype (tf32 is stored as 32-bit).
DTYPE_BYTES: dict[str, float] = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "i32": 4}

#: Tensor-core instruction families the model prices: the asynchronous warpgroup `wgmma`
#: (sm_90a) and the synchronous warp-level `mma.sync` (sm_80, kept on sm_90a).
INSTRUCTIONS: tuple[str, ...] = ("wgmma", "mma.sync")

#: dtypes whose contractions the model prices on the CUDA cores (`peak_fp32`, `peak_fp64`),
#: the same rate whichever tensor-core family a kernel uses for its other contractions.
CUDA_CORE_DTYPES: tuple[str, ...] = ("fp32", "fp64")


def canonical_dtype(dtype: str) -> str:
    try:
        return DTYPE_ALIASES[dtype.lower()]
    except KeyError:
        raise UsageError(f"unknown dtype '{dtype}' (expected one of {', '.join(sorted(DTYPE_ALIASES))})") from None


@dataclass(frozen=True)
class Level:
    """A memory level: `capacity_bytes` per processor of that level (whole device for HBM
    and L2, one CTA for SMEM, one thread for registers), `bandwidth` of reads from it (B/s,
    whole device)."""

    name: str
    capacity_bytes: float
    bandwidth: float
    per: str


@dataclass(frozen=True)
class Hardware:
    name: str
    title: str
    arch: str
    entries: dict[str, Any] = field(repr=False)
    sources: dict[str, str] = field(repr=False)

    def __getattr__(self, key: str) -> Any:
        entries = self.__dict__.get("entries", {})
        if key in entries:
            return entries[key]
        raise AttributeError(key)

    def source(self, key: str) -> str:
        return self.sources[key]

    @property
    def smem_bandwidth(self) -> float:
        """Device-wide shared-memory bandwidth (B/s)."""
        return self.smem_bandwidth_per_sm_clk * self.sm_count * self.clock_hz

    @property
    def exp_rate(self) -> float:
        """Device-wide exponent (MUFU ex2) throughput, results per second."""
        return self.exp_per_sm_clk * self.sm_count * self.clock_hz

    @property
    def levels(self) -> list[Level]:
        """HBM, L2, SMEM, registers, from the top."""
        return [
            Level("HBM", self.hbm_bytes, self.hbm_bandwidth, "device"),
            Level("L2", self.l2_bytes, self.l2_bandwidth, "device"),
            Level("SMEM", self.smem_per_cta, self.smem_bandwidth, "CTA"),
            Level("REG", self.registers_per_thread * 4, float("inf"), "thread"),
        ]

    @property
    def instructions(self) -> tuple[str, ...]:
        """The GPU's tensor-core instruction families, native (fastest) first."""
        return tuple(self.tensor_instructions)

    def instruction_family(self, instruction: str | None = None) -> str:
        """`instruction` checked against the families the model knows and this GPU has;
        None is the native one (wgmma on Hopper, mma.sync on Ampere)."""
        if instruction is None:
            return self.instructions[0]
        if instruction not in INSTRUCTIONS:
            raise UsageError(
                f"unknown tensor-core instruction family '{instruction}' (expected one of {', '.join(INSTRUCTIONS)})"
            )
        if instruction not in self.instructions:
            raise UsageError(
                f"{self.title} ({self.arch}) has no {instruction} (its tensor-core instructions: "
                f"{', '.join(self.instructions)})"
            )
        return instruction

    def peak(self, dtype: str, instruction: str | None = None) -> float:
        """Dense peak (FLOP/s) for contractions on `dtype` inputs issued by the tensor-core
        family `instruction` ("wgmma" or "mma.sync"; default the GPU's native family, its
        datasheet peak). f32 and f64 contractions run on the CUDA cores at one rate whatever
        the family (the model does not silently round f32 to tf32). Raises UsageError for an
        unknown family, one the GPU lacks (wgmma on Ampere), or a dtype the family has no
        rate for (fp8 on Ampere, fp8 through mma.sync on Hopper)."""
        dt = canonical_dtype(dtype)
        family = self.instruction_family(instruction)
        if family == self.instructions[0] or dt in CUDA_CORE_DTYPES:
            key = f"peak_{dt}"
        else:
            key = f"peak_{family.replace('.', '_')}_{dt}"
        value = self.entries.get(key)
        if value is None:
            on = "" if family == self.instructions[0] else f" through {family}"
            raise UsageError(f"{self.title} has no {dt} tensor cores{on}")
        return float(value)

    def contraction_unit(self, dtype: str, instruction: str | None = None) -> str:
        """What runs contractions on `dtype` inputs: the tensor-core family, or "CUDA cores"."""
        family = self.instruction_family(instruction)
        return "CUDA cores" if canonical_dtype(dtype) in CUDA_CORE_DTYPES else family

    @property
    def scalar_peak(self) -> float:
        """CUDA-core fp32 rate (FLOP/s, an FMA counted as 2): elementwise work."""
        return float(self.peak_fp32)

    def mma_instruction(self, dtype: str) -> str | None:
        return self.mma.get(canonical_dtype(dtype))

    def mma_shape(self, dtype: str) -> tuple[int, int, int]:
        return tuple(self.entries["mma_shape"].get(canonical_dtype(dtype), (1, 1, 1)))  # type: ignore[return-value]

    def mma_sync_shape(self, dtype: str) -> tuple[int, int, int]:
        """The warp-level `mma.sync` shape (m16n8k16 for 16-bit inputs), on every target."""
        m, n, k = self.entries["mma_sync_shape"].get(canonical_dtype(dtype), (1, 1, 1))
        return m, n, k

    @property
    def latency_warps_per_sm(self) -> int:
        """Resident warps an SM needs to reach its compute rates (every scheduler has a warp
        to issue while another waits on its own dependencies)."""
        return int(self.schedulers_per_sm * self.latency_warps_per_scheduler)

    @property
    def memory_latency_s(self) -> float:
        """Seconds from a global load's issue to its data (HBM)."""
        return float(self.memory_latency_cycles) / self.clock_hz

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "arch": self.arch,
            "entries": {k: {"value": v, "source": self.sources[k]} for k, v in self.entries.items()},
        }


def for_target(target: str) -> Hardware:
    """The GPU the compiler models `target` (sm_80, sm_90a) with."""
    if target not in TARGET_GPU:
        raise UsageError(f"no GPU data for target '{target}' (expected one of {', '.join(TARGET_GPU)})")
    return gpu(TARGET_GPU[target])


def available() -> list[str]:
    """Names of the GPUs with a data file."""
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


@cache
def gpu(name: str) -> Hardware:
    """Load `<name>.json` (case-insensitive: a100, h100, h200)."""
    key = name.lower()
    path = DATA_DIR / f"{key}.json"
    if not path.exists():
        raise UsageError(f"unknown GPU '{name}' (expected one of {', '.join(available())})")
    data = json.loads(path.read_text())
    entries = {k: e["value"] for k, e in data["entries"].items()}
    sources = {k: e["source"] for k, e in data["entries"].items()}
    missing = [k for k, s in sources.items() if not s]
    if missing:
        raise UsageError(f"{path.name}: entries without a source: {', '.join(missing)}")
    return Hardware(data["name"], data["title"], data["arch"], entries, sources)
