"""What `emulate` reports: the verdict against JAX, the errors, and the machine's counts.

`EmulationReport.lines()` is what `napkin emulate` prints (its last line starts with PASS or
FAIL); `to_json()` what `--json` writes. Counts are per CTA, averaged over the CTAs run,
except shared-memory wavefronts and global sectors, which are CTA 0's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from napkin_mlir.emulator.machine import Stats


@dataclass
class EmulationReport:
    """The outcome of emulating a kernel on fresh inputs and comparing it with JAX."""

    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    smem_bytes: int
    passed: bool
    errors: dict[str, float]
    criterion: str
    stats: Stats
    seconds: float

    def per_cta(self, value: int) -> float:
        return value / max(1, self.stats.ctas)

    def lines(self) -> list[str]:
        s = self.stats
        counts = ", ".join(f"{k} {self.per_cta(v):,.0f}" for k, v in s.warp_instructions.most_common())
        waves = s.bank_conflict_summary()
        conflicts = sum(v["wavefronts"] - v["ideal"] for v in waves.values())
        banks = ", ".join(f"{k} {v['wavefronts']:,} (ideal {v['ideal']:,})" for k, v in waves.items())
        coalescing = s.coalescing_summary()
        extra = sum(v["sectors"] - v["ideal"] for v in coalescing.values())
        sectors = ", ".join(f"{k} {v['sectors']:,} (ideal {v['ideal']:,})" for k, v in coalescing.items())
        verdict = "PASS" if self.passed else "FAIL"
        total = self.grid[0] * self.grid[1] * self.grid[2]
        share = f"{s.ctas} CTAs" if s.ctas == total else f"{s.ctas} of its {total:,} CTAs"
        return [
            f"kernel {self.entry}: grid {self.grid} x block {self.block}, {self.smem_bytes:,} B dynamic shared memory; "
            f"{share} emulated in {self.seconds:.1f} s",
            f"per CTA (warp instructions): {counts}",
            f"per CTA: global memory read {self.per_cta(s.global_read_bytes) / 1024:,.1f} KiB, "
            f"written {self.per_cta(s.global_write_bytes) / 1024:,.1f} KiB",
            f"shared-memory wavefronts, CTA 0: {banks}: "
            + ("no bank conflicts" if conflicts == 0 else f"{conflicts:,} extra wavefronts from bank conflicts"),
            f"global-memory sectors, CTA 0: {sectors}: "
            + ("fully coalesced" if extra == 0 else f"{extra:,} sectors more than fully coalesced accesses need"),
            "sanitizer: every access in bounds and aligned, no shared-memory race, each output element written once"
            + (f"; {s.unretired_copies} cp.async copies never waited for" if s.unretired_copies else ""),
            f"{verdict} max |error| {self.errors['max_abs']:.3g} (JAX in the same dtype: {self.errors['ref_max_abs']:.3g}), "
            f"relative Frobenius {self.errors['rel_fro']:.3g}; rule: {self.criterion}",
        ]

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "entry": self.entry,
            "grid": list(self.grid),
            "block": list(self.block),
            "dynamic_smem_bytes": self.smem_bytes,
            "passed": self.passed,
            "errors": self.errors,
            "criterion": self.criterion,
            "seconds": self.seconds,
            "ctas": s.ctas,
            "per_cta_warp_instructions": {k: self.per_cta(v) for k, v in s.warp_instructions.items()},
            "per_cta_global_read_bytes": self.per_cta(s.global_read_bytes),
            "per_cta_global_write_bytes": self.per_cta(s.global_write_bytes),
            "smem_wavefronts_cta0": s.bank_conflict_summary(),
            "global_sectors_cta0": s.coalescing_summary(),
            "unretired_copies": s.unretired_copies,
        }
