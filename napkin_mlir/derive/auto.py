"""Automatic derivation: the relabeling pipeline of any diagram, with one reason per decision.

The paper derives FlashAttention by hand: weave b and h, group q, stream x, keep the scores
low. `derive(module, ...)` makes the same decisions for any plain diagram (one function of
napkin ops), a user's file or a built-in alike, from the program itself: the rules are
`napkin_mlir.pipeline.decide` (levels, groups woven or tiled, the stream and a nested stream,
default tiles), and `pipeline.stages.derivation` is the same rules applied to a built-in.
With a GPU, `derive` adds the cost model's choices (`derive.tiles.search` over the derived
program): the tiles, and whether an axis that can stream inside the stream (a contraction
axis of the step) is streamed there, a nested stream, when that is priced lower.

The result is a pipeline string that `napkin-opt --pass-pipeline=` accepts unchanged.

Before (matmul):

    %c = "napkin.contract"(%a, %b) : (tensor<300x100xf32, {axes = ["m", "k"]}>, ...) -> tensor<300x200xf32, ...>

After `derive`: `builtin.module(napkin-verify,napkin-assign-levels,napkin-group-partition{axes=m,n
sizes=64,64 level=grid},napkin-stream-partition{axis=k size=64},napkin-verify)`.
"""

from __future__ import annotations

import dataclasses

from mlir import ir

from napkin_mlir.derive.tiles import TileChoice, search
from napkin_mlir.errors import UsageError
from napkin_mlir.model.cost import extract
from napkin_mlir.model.hardware import gpu as load_gpu
from napkin_mlir.pipeline.decide import (
    DEFAULT_TILE,
    GRID_DIMS,
    Derivation,
    decide,
    diagram_axis_sizes,
    format_tiles,
    the_diagram,
)
from napkin_mlir.pipeline.passmanager import run_pipeline

__all__ = ["DEFAULT_TILE", "GRID_DIMS", "Derivation", "derive"]


#: A nested stream is chosen over the unnested one only when the model prices it at most
#: this fraction of the unnested time. Nesting costs a second loop, and the tensor-core rule
#: takes one stream only; a smaller predicted gain is inside the model's error (on an H200 its
#: attention times were 1.8 to 4.8 times optimistic, bench/results/gpu-attention-nvidia-h200-*).
NEST_GAIN = 0.5


def derive(
    module: ir.Module,
    tiles: dict[str, int] | None = None,
    gpu: str | None = None,
    dtype: str | None = None,
    filename: str | None = None,
) -> Derivation:
    """Decide the relabelings of `module`'s diagram (needs its context active). `tiles` pins
    tile sizes by axis (naming an axis that can stream inside the stream nests it); `gpu` lets
    the cost model choose the other tiles, and whether to nest a stream."""
    tiles = dict(tiles or {})
    d = decide(module, tiles, filename)
    if not gpu or not d.tileable():
        if d.tileable():
            d.reasons.append(
                f"tiles: {format_tiles(d.tiles)} ({'given by --tile' if tiles else 'defaults'}; --gpu asks the model)"
            )
        return d
    sizes = diagram_axis_sizes(the_diagram(module, filename))
    options = [d]
    if d.nested is None and d.nestable:
        axis = d.nestable[0]
        options.append(dataclasses.replace(d, nested=axis, tiles={**d.tiles, axis: min(DEFAULT_TILE, sizes[axis])}))
    priced: list[tuple[Derivation, TileChoice]] = []
    refusals: list[UsageError] = []
    for option in options:
        try:
            priced.append((option, _model_tiles(module, option, gpu, dtype, tiles)))
        except UsageError as err:  # nothing fits
            refusals.append(err)
    if not priced:
        raise refusals[0]
    best, choice = priced[0]
    for option, option_choice in priced[1:]:  # a nested stream must be clearly cheaper
        if option_choice.report.predicted_seconds < NEST_GAIN * choice.report.predicted_seconds:
            best, choice = option, option_choice
    if len(options) > 1:
        seconds = {o.nested: c.report.predicted_seconds for o, c in priced}
        flat = f"{seconds[None]:.3g} s" if None in seconds else "nothing fits"
        axis = options[1].nested
        nested = f"{seconds[axis]:.3g} s" if axis in seconds else "nothing fits"
        verdict = f"streamed inside the {d.streamed} stream" if best.nested else "not nested"
        best.reasons.append(f"{axis}: {verdict}: the model prices the nested stream at {nested}, unnested {flat}")
    d = best
    d.tiles = {a: choice.tiles.get(a, d.tiles[a]) for a in d.tiles}
    d.reasons.append(
        f"tiles: {format_tiles(d.tiles)} chosen by the cost model for {gpu} ({format_tiles(tiles) or 'none'} fixed)"
    )
    return d


def _model_tiles(module: ir.Module, d: Derivation, gpu: str, dtype: str | None, fixed: dict[str, int]) -> TileChoice:
    copy = ir.Module.parse(str(module))
    run_pipeline(copy, d.pipeline())
    prog = extract(copy)
    hw = load_gpu(gpu)
    sizes = diagram_axis_sizes(the_diagram(module, d.filename))
    return search(prog, hw, dtype, "the diagram", sizes, fixed)
