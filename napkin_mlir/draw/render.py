"""Draw napkin programs as the paper's diagrams (matplotlib, no display needed).

`draw(module, path)` renders the first napkin function of a module at any napkin stage (the
plain diagram, after `napkin-assign-levels`, after the group and stream partitions):

* arrays are **wires**, labelled with their axis names and sizes (`q64 d32`) and coloured by
  their memory **level** (the paper's wire colours; legend: gmem, smem, reg);
* operations are **boxes** with a shape per kind: contractions are square boxes (`Σ d` names the
  contracted axes), elementwise functions rounded boxes, binary ones stadiums, reductions
  trapezoids, softmax a double-framed box, the causal mask a saw-edged box, user maps a
  round-toothed box, constants small dashed boxes;
* **weaving**: the axes a box is mapped over are written on a thin band that passes straight
  through the box (the function itself acts on the remaining axes);
* **transfers** (`napkin.transfer`) are two-coloured arrow boxes where a wire changes colour:
  `load` going down the hierarchy, `store` going up;
* **group partitions** are dashed purple frames titled with their axes and group sizes (and
  the number of groups); **stream partitions** are amber frames with three compartments
  (`init`, `step` per chunk, `finish`), the chunk size and step count, and the carried state
  looping back under the step;
* a caption with per-level transfer volume and peak memory from the cost model
  (`napkin_mlir.model.cost.analyze`) when it is available and succeeds.

`draw(..., pseudocode=True)` draws the pseudocode form instead: one column per step (each
napkin op in program order, loops marked above), and for every memory level the buffers live
at that step with their sizes, the total per step and the peak.

The picture is computed from a pure-Python model of the IR (`program.extract`), laid out
(`layout`) and painted (`paint.render_diagram`, `pseudocode.render_pseudocode`); this module
holds the entry point and the caption.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlir import ir

from napkin_mlir.draw.paint import FORMATS, render_diagram
from napkin_mlir.draw.program import extract, stage_of
from napkin_mlir.draw.pseudocode import render_pseudocode
from napkin_mlir.draw.style import format_bytes
from napkin_mlir.errors import NapkinError, UsageError

__all__ = ["cost_lines", "draw"]


def cost_lines(module: ir.Module, gpu: str | None, dtype: str | None) -> list[str]:
    """Per-level transfer volume and peak memory from `napkin_mlir.model.cost`, or [] when unavailable."""
    if gpu is None:
        return []
    try:
        from napkin_mlir.model import cost

        report = cost.analyze(module, gpu, dtype)
        levels = list(report.levels)
    except (ImportError, NapkinError):
        return []
    except Exception:  # the caption is optional: never let the model break a drawing
        return []
    lines = []
    for lv in levels:
        get = (lambda k, lv=lv: lv.get(k)) if isinstance(lv, dict) else (lambda k, lv=lv: getattr(lv, k, None))
        name = get("name")
        if name is None:
            continue
        parts = [f"{name}:"]
        if get("transfer_bytes") is not None:
            parts.append(f"H = {format_bytes(float(get('transfer_bytes')))} moved")
        if get("peak_bytes") is not None:
            peak = f"M = {format_bytes(float(get('peak_bytes')))} peak"
            cap = get("capacity_bytes")
            if cap:
                peak += f" of {format_bytes(float(cap))}"
            parts.append(peak)
        lines.append(" ".join(parts[:1]) + " " + ", ".join(parts[1:]))
    if not lines:
        return []
    return [f"cost model ({gpu}): " + "   ".join(lines)]


def draw(
    module: ir.Module,
    path: str | Path,
    *,
    title: str | None = None,
    pseudocode: bool = False,
    gpu: str | None = "a100",
    dtype: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Render the first napkin function of `module` to `path` (.png or .svg); returns the path."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise UsageError(f"output '{path}': unsupported extension (expected .png or .svg)")
    program = extract(module)
    stage = stage_of(program)
    title = title or f"{program.name}: {stage}"
    caption = cost_lines(module, gpu, dtype)
    if pseudocode:
        render_pseudocode(program, path, title + " — pseudocode", caption)
    else:
        render_diagram(program, path, title, caption)
    log(f"wrote {path}")
    return path
