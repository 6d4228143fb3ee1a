"""`napkin draw` and napkin_mlir.draw: every built-in diagram renders at every stage.

PNGs are checked to be non-trivial (size, several distinct colours, the level colours once
levels exist); SVGs (text kept as text) to carry the labels: axis names and sizes, op names,
the level legend, partition sizes. Bad input gives one clean `error:` line, no traceback.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_in_process
from matplotlib import colors
from matplotlib import image as mpimg
from mlir import ir

from napkin_mlir.check.harness import VerifyConfig, build
from napkin_mlir.draw.program import extract, stage_of
from napkin_mlir.draw.render import draw
from napkin_mlir.draw.style import LEVEL_COLOURS
from napkin_mlir.ir.context import napkin_context
from napkin_mlir.ir.diagrams import diagram_sizes
from napkin_mlir.pipeline.passmanager import parse_pipeline, run_pipeline
from napkin_mlir.pipeline.stages import derivation

CONFIGS = {
    "attention": VerifyConfig("attention", {"b": 1, "h": 2, "q": 96, "x": 80, "d": 32}, "bf16", causal=True),
    "matmul": VerifyConfig("matmul", {"m": 300, "n": 200, "k": 100}),
    "mlp": VerifyConfig("mlp", {"m": 64, "k": 32, "f": 128, "n": 16}, "f16"),
}
STAGES = ("diagram", "napkin-assign-levels", "napkin-group-partition", "napkin-stream-partition")


def _render(name: str, stage: str, path: Path, pseudocode: bool = False) -> str:
    """Build `name`, run its derivation up to `stage`, draw it; returns the stage description."""
    config = CONFIGS[name]
    with napkin_context(), ir.Location.unknown():
        module = build(config)
        sizes = diagram_sizes(module)
        if stage != "diagram":
            steps = [e.text for e in parse_pipeline(derivation(name, sizes, config.tiles))]
            names = [s.split("{")[0] for s in steps]
            run_pipeline(module, f"builtin.module({','.join(steps[: names.index(stage) + 1])})")
        draw(module, path, pseudocode=pseudocode)
        return stage_of(extract(module))


def _colours(path: Path) -> np.ndarray:
    img = mpimg.imread(path)
    rgb = img[..., :3].reshape(-1, 3)
    return np.unique(np.round(rgb * 255).astype(np.int32), axis=0) / 255.0


def _has_colour(palette: np.ndarray, colour: str, tol: float = 0.08) -> bool:
    target = np.array(colors.to_rgb(colour))
    return bool((np.abs(palette - target).max(axis=1) < tol).any())


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("stage", STAGES)
def test_png_every_stage(tmp_path: Path, name: str, stage: str) -> None:
    path = tmp_path / f"{name}.png"
    described = _render(name, stage, path)
    assert path.stat().st_size > 5000, "the picture is suspiciously small"
    assert path.stat().st_size < 300_000, "the picture is too large for the gallery"
    palette = _colours(path)
    assert len(palette) >= 8, f"only {len(palette)} distinct colours"
    if stage == "diagram":
        assert described == "plain diagram"
        assert _has_colour(palette, LEVEL_COLOURS[None])
    else:
        for level in ("gmem", "smem", "reg"):
            assert _has_colour(palette, LEVEL_COLOURS[level]), f"no {level} wire colour"
    if stage in ("napkin-group-partition", "napkin-stream-partition"):
        assert "partitioned" in described


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pseudocode_png(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}-pc.png"
    _render(name, "napkin-stream-partition", path, pseudocode=True)
    assert path.stat().st_size > 5000
    palette = _colours(path)
    for level in ("gmem", "smem", "reg"):
        assert _has_colour(palette, LEVEL_COLOURS[level])


def _svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()
    return "\n".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text"))


def test_svg_plain_diagram_labels(tmp_path: Path) -> None:
    path = tmp_path / "attention.svg"
    _render("attention", "diagram", path)
    text = _svg_text(path)
    for label in ("contract", "softmax", "causal mask", "scale", "cast", "Q", "K", "V", "result"):
        assert label in text, f"'{label}' missing from the SVG text"
    for wire in ("q96 d32 bf16", "x80 d32 bf16", "q96 x80 f32"):  # axis names with sizes (b=1 left out)
        assert wire in text, f"wire label '{wire}' missing"
    assert "b h q x" in text  # the woven axes of the scores boxes
    assert "no level yet" in text


def test_svg_partitioned_labels(tmp_path: Path) -> None:
    path = tmp_path / "attention.svg"
    _render("attention", "napkin-stream-partition", path)
    text = _svg_text(path)
    for label in ("gmem (global / HBM)", "smem (shared)", "reg (registers)", "load ↓", "store ↑"):
        assert label in text, f"'{label}' missing"
    assert "group partition  b:1 h:1 q:64 @grid  (4 independent groups)" in text
    assert "stream partition  x:64  (2 sequential steps over x=80, last chunk 16)" in text
    for label in ("init (head)", "finish", "reduce", "exp", "q64 x64 f32"):
        assert label in text, f"'{label}' missing"


def test_svg_matmul_pseudocode(tmp_path: Path) -> None:
    path = tmp_path / "matmul.svg"
    _render("matmul", "napkin-stream-partition", path, pseudocode=True)
    text = _svg_text(path)
    assert "parallel: m:64 n:64 @grid  (20 independent groups)" in text
    assert "for each chunk: k:64  (2 sequential steps over k=100, last chunk 36)" in text
    assert "A m64 k64 f32" in text  # a streamed chunk of A, loaded into shared memory
    assert "peak" in text


def test_cli_draw_stage_and_file(tmp_path: Path) -> None:
    """`napkin draw`'s --stage, a file and --after/--pseudocode: main() in this process (only
    the pictures are checked; bad command lines exit 2 in a subprocess below)."""
    svg = tmp_path / "flash.svg"
    r = run_cli_in_process("napkin", "draw", "attention", "--dims", "b=1,h=2,q=128,x=128,d=64", "--tile", "q=64,x=32",
                "--stage", "partitioned", "-o", str(svg))  # fmt: skip
    assert r.rc == 0, r.describe()
    text = _svg_text(svg)
    assert "stream partition  x:32" in text and "q:64" in text
    # a file at the levels stage, drawn as it is
    with napkin_context(), ir.Location.unknown():
        module = build(CONFIGS["matmul"])
        run_pipeline(module, "builtin.module(napkin-assign-levels)")
        (tmp_path / "mm.mlir").write_text(str(module))
    png = tmp_path / "mm.png"
    r = run_cli_in_process("napkin", "draw", str(tmp_path / "mm.mlir"), "-o", str(png))
    assert r.rc == 0, r.describe()
    assert png.stat().st_size > 5000
    r = run_cli_in_process("napkin", "draw", "mlp", "--after", "napkin-group-partition", "--pseudocode", "-o", str(png))
    assert r.rc == 0, r.describe()


BAD = [
    ("unknown-diagram", ["nope", "-o", "{tmp}/x.png"], "unknown diagram"),
    ("bad-extension", ["attention", "-o", "{tmp}/x.pdf"], ".png or .svg"),
    ("missing-file", ["{tmp}/missing.mlir", "-o", "{tmp}/x.png"], "cannot read"),
    ("malformed-mlir", ["{tmp}/bad.mlir", "-o", "{tmp}/x.png"], "bad.mlir:1"),
    ("no-napkin-ops", ["{tmp}/empty.mlir", "-o", "{tmp}/x.png"], "no napkin diagram"),
    ("unknown-pass", ["attention", "--after", "napkin-foo", "-o", "{tmp}/x.png"], "napkin-foo"),
    ("unknown-stage", ["attention", "--stage", "loops", "-o", "{tmp}/x.png"], "loops"),
    ("missing-axis", ["matmul", "--dims", "m=2,n=2", "-o", "{tmp}/x.png"], "'k'"),
    ("causal-on-file", ["examples/softcap_attention.mlir", "--causal", "-o", "{tmp}/x.png"], "built-in"),
    (
        "stage-on-partitioned-file",
        ["{tmp}/part.mlir", "--stage", "partitioned", "-o", "{tmp}/x.png"],
        "already partitioned",
    ),
    ("no-directory", ["attention", "-o", "{tmp}/no/such/dir/x.png"], "does not exist"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_cli_draw_errors(run_cli, tmp_path: Path, case) -> None:
    _, args, expect = case
    (tmp_path / "bad.mlir").write_text("func.func @f(%a: tensor<4xf32>) {\n")
    (tmp_path / "empty.mlir").write_text("module {}\n")
    if "part.mlir" in " ".join(args):
        # the partitioned input is setup, not under test: `napkin derive`'s main() in this process
        made = run_cli_in_process("napkin", "derive", "examples/swiglu_mlp.mlir", "-o", str(tmp_path / "part.mlir"))
        assert made.rc == 0, made.describe()
    r = run_cli("napkin", "draw", *[a.format(tmp=tmp_path) for a in args])
    assert r.rc != 0, r.describe()
    assert "error:" in r.stderr and expect in r.stderr, r.describe()
    assert "Traceback" not in r.stderr + r.stdout, r.describe()
