"""ptxas: finding it, assembling PTX into a cubin and reading its resource report.

`ptxas` comes from the `nvidia-cuda-nvcc` wheel (or `NAPKIN_PTXAS`, or PATH). `assemble`
runs `ptxas -v` and returns the registers, spills, stack and shared memory it reports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from napkin_mlir.errors import ToolError
from napkin_mlir.knobs import knobs


def ptxas_path() -> str:
    """NAPKIN_PTXAS, else ptxas from the nvidia-cuda-nvcc wheel, else from PATH."""
    override = knobs().ptxas
    if override is not None:
        if not override.exists():
            raise ToolError(f"NAPKIN_PTXAS={override}: no such file")
        return str(override)
    try:
        import nvidia

        for base in nvidia.__path__:
            cand = Path(base) / "cu13" / "bin" / "ptxas"
            if cand.exists():
                return str(cand)
    except ImportError:
        pass
    found = shutil.which("ptxas")
    if not found:
        raise ToolError("ptxas not found: install the nvidia-cuda-nvcc wheel (make installs it) or put ptxas on PATH")
    return found


def assemble(ptx: str, target: str, cubin: Path) -> dict[str, object]:
    """Run ptxas -v on the PTX; write the cubin; return the resource report."""
    ptx_file = cubin.with_suffix(".ptx")
    ptx_file.write_text(ptx)
    proc = subprocess.run(
        [ptxas_path(), f"-arch={target}", "-v", "-O3", "-o", str(cubin), str(ptx_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"ptxas rejected the kernel for {target}:\n{proc.stderr.strip()}")
    return parse_ptxas_report(proc.stderr)


def parse_ptxas_report(text: str) -> dict[str, object]:
    """Registers, spills, shared memory and stack from `ptxas -v` output."""

    def num(pattern: str) -> int:
        m = re.search(pattern, text)
        return int(m.group(1)) if m else 0

    return {
        "registers": num(r"Used (\d+) registers"),
        "spill_stores_bytes": num(r"(\d+) bytes spill stores"),
        "spill_loads_bytes": num(r"(\d+) bytes spill loads"),
        "stack_frame_bytes": num(r"(\d+) bytes stack frame"),
        "static_smem_bytes": num(r"(\d+) bytes smem"),
        "barriers": num(r"used (\d+) barriers"),
        "raw": text.strip(),
    }
