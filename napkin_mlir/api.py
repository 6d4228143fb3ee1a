"""The Python API: a diagram from a file, text or the builders, then derive, verify,
interpret, model, pseudocode and draw, with no MLIR context to manage.

    from napkin_mlir.api import Diagram

    d = Diagram.from_file("examples/softcap_attention.mlir", dims={"q": 256, "x": 256})
    print(d.derive(gpu="h100").pipeline())      # the relabelings chosen, with d.derive().reasons
    print(d.verify().summary())                 # CPU run vs the diagram's own JAX interpretation
    print(d.model("h100").table())              # the performance model of the derived program
    d.draw("softcap.png", partitioned=True)     # the picture after the relabelings

A `Diagram` keeps the program's text: each step parses it in a fresh context, so no MLIR
object outlives its context (the bindings abort on that), and steps never change the diagram.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
from mlir import ir

from napkin_mlir.check.diagram import DiagramResult, verify_diagram
from napkin_mlir.derive.auto import Derivation, derive
from napkin_mlir.draw.render import draw
from napkin_mlir.interpret import interpret
from napkin_mlir.ir.context import napkin_context, parse_module
from napkin_mlir.ir.files import change_dtype, load_diagram, low_precision_of, resize, verify_or_raise
from napkin_mlir.model.cost import CostReport, analyze
from napkin_mlir.model.pseudocode import pseudocode
from napkin_mlir.pipeline.passmanager import run_pipeline


@dataclass(frozen=True)
class Diagram:
    """A plain napkin diagram (its text) and the name errors should give its source."""

    text: str
    filename: str = "<diagram>"

    @staticmethod
    def from_file(path: str | Path, dims: dict[str, int] | None = None, dtype: str | None = None) -> Diagram:
        """The diagram in a `.mlir` file, re-sized by `dims` and re-typed to `dtype` if given."""
        with napkin_context(), ir.Location.unknown():
            return Diagram(str(load_diagram(path, dims, dtype)), str(path))

    @staticmethod
    def from_text(text: str, dims: dict[str, int] | None = None, filename: str = "<diagram>") -> Diagram:
        with napkin_context(), ir.Location.unknown():
            module = parse_module(text, filename)
            verify_or_raise(module, filename)
            if dims:
                resize(module, dims, filename)
                verify_or_raise(module, filename)
            return Diagram(str(module), filename)

    @staticmethod
    def build(builder: Callable[[], ir.Module]) -> Diagram:
        """The diagram a builder function makes with `napkin_mlir.ir.builders.DiagramBuilder`
        (or `napkin_mlir.ir.diagrams.build_builtin`); it runs inside a napkin context."""
        with napkin_context(), ir.Location.unknown():
            module = builder()
            verify_or_raise(module, "<builder>")
            return Diagram(str(module), "<builder>")

    def _module(self) -> ir.Module:
        return parse_module(self.text, self.filename)

    def with_dtype(self, dtype: str) -> Diagram:
        with napkin_context(), ir.Location.unknown():
            module = self._module()
            change_dtype(module, dtype, self.filename)
            return Diagram(str(module), self.filename)

    def derive(self, tiles: dict[str, int] | None = None, gpu: str | None = None) -> Derivation:
        """The relabelings the compiler chooses (`.pipeline()`, `.reasons`)."""
        with napkin_context(), ir.Location.unknown():
            module = self._module()
            return derive(module, tiles, gpu, low_precision_of(module), filename=self.filename)

    def partitioned(self, tiles: dict[str, int] | None = None, gpu: str | None = None) -> str:
        """The text of the program after its derivation."""
        with napkin_context(), ir.Location.unknown():
            module = self._module()
            d = derive(module, tiles, gpu, low_precision_of(module), filename=self.filename)
            run_pipeline(module, d.pipeline(), filename=self.filename)
            return str(module)

    def verify(self, seed: int = 0, tiles: dict[str, int] | None = None, gpu: str | None = None) -> DiagramResult:
        """Derive, compile for the CPU, run on fresh inputs and judge every output against the
        diagram's own JAX interpretation (`.passed`, `.summary()`)."""
        with napkin_context(), ir.Location.unknown():
            return verify_diagram(self._module(), seed, tiles, gpu, filename=self.filename)

    def interpret(self, inputs: Sequence[object], precision: str = "f64") -> list[jax.Array]:
        """The diagram evaluated with jax.numpy: float64 ground truth, or `"same"` dtypes."""
        with napkin_context(), ir.Location.unknown():
            return interpret(self._module(), inputs, precision, filename=self.filename)

    def model(self, gpu: str, tiles: dict[str, int] | None = None) -> CostReport:
        """The performance model of the derived program on `gpu` (a100, h100, h200)."""
        with napkin_context(), ir.Location.unknown():
            module = self._module()
            d = derive(module, tiles, gpu, low_precision_of(module), filename=self.filename)
            run_pipeline(module, d.pipeline(), filename=self.filename)
            return analyze(module, gpu, stages=2)

    def pseudocode(self, gpu: str, tiles: dict[str, int] | None = None) -> str:
        with napkin_context(), ir.Location.unknown():
            module = self._module()
            d = derive(module, tiles, gpu, low_precision_of(module), filename=self.filename)
            run_pipeline(module, d.pipeline(), filename=self.filename)
            return pseudocode(module, gpu)

    def draw(self, path: str | Path, partitioned: bool = False, gpu: str | None = "a100") -> Path:
        """A picture of the diagram (after its derivation with `partitioned=True`)."""
        with napkin_context(), ir.Location.unknown():
            module = self._module()
            if partitioned:
                d = derive(module, None, None, low_precision_of(module), filename=self.filename)
                run_pipeline(module, d.pipeline(), filename=self.filename)
            return draw(module, path, gpu=gpu)
