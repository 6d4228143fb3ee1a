"""The package's layers: data flows one way, and no module imports one above it or itself
back through a cycle.

`LAYERS` is the one list of the layers, lowest first (docs/architecture.md draws it). A
module belongs to the layer of the longest prefix that names it. Every `import` and
`from ... import` in a file counts, including those inside functions: a lazy import is
still a dependency. The GPU runner is checked apart: it must import nothing of the
compiler and run where the MLIR wheels are absent.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Lowest first. A module may import modules of its own layer or of layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("napkin_mlir.errors", "napkin_mlir.knobs")),
    ("ir", ("napkin_mlir.ir",)),
    ("interpret", ("napkin_mlir.interpret",)),
    ("model", ("napkin_mlir.model",)),
    ("draw", ("napkin_mlir.draw",)),
    ("lowering", ("napkin_mlir.lowering",)),
    ("passes", ("passes",)),
    ("pipeline", ("napkin_mlir.pipeline",)),
    ("derive", ("napkin_mlir.derive",)),
    ("backends", ("napkin_mlir.backends",)),
    ("check", ("napkin_mlir.check",)),
    ("emulator", ("napkin_mlir.emulator",)),
    ("jax", ("napkin_mlir.jax",)),
    ("fuzz", ("napkin_mlir.fuzz",)),
    ("cli", ("napkin_mlir.cli",)),
    ("api", ("napkin_mlir",)),
]

#: Modules that must import nothing of the project (they run on the GPU machine alone).
STANDALONE = ("napkin_mlir.backends.gpu.runner",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("napkin_mlir").rglob("*.py"), *ROOT.joinpath("passes").rglob("*.py")]
    return {module_name(p): p for p in files}


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (a `from package import name` names the submodule
    when `name` is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in project_modules() if layer_of(m) < 0)
    assert not unplaced, f"modules outside every layer of LAYERS: {unplaced}"


def test_no_upward_imports() -> None:
    upward = [
        f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})"
        for src, targets in sorted(import_graph().items())
        for dst in sorted(targets)
        if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_catch_what_they_are_for() -> None:
    """The cycle finder and the layer order flag a planted cycle and an upward import."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert layer_of("napkin_mlir.ir.arrays") < layer_of("napkin_mlir.check.harness")
    assert layer_of("napkin_mlir.cli.napkin") < layer_of("napkin_mlir")
    assert layer_of("passes.stream_partition") < layer_of("napkin_mlir.pipeline.passmanager")


@pytest.mark.parametrize("module", STANDALONE)
def test_standalone_modules_import_nothing_of_the_project(module: str) -> None:
    assert not import_graph()[module], f"{module} imports {sorted(import_graph()[module])}"


def test_gpu_runner_imports_without_the_mlir_wheels() -> None:
    """With `mlir` made unimportable, the runner still imports and shows its help."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mlir' or name.startswith('mlir.'):\n"
        "            raise ImportError('mlir is blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import napkin_mlir.backends.gpu.runner as r\n"
        "sys.argv = ['runner', '--help']\n"
        "r.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()


def test_the_docs_draw_the_tree() -> None:
    """docs/architecture.md names every layer and every subpackage; the README's layout table
    names every subpackage (a new package without its line in both fails here)."""
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    readme = (ROOT / "README.md").read_text()
    packages = sorted(
        p.parent.relative_to(ROOT).as_posix() + "/"
        for p in ROOT.joinpath("napkin_mlir").glob("*/__init__.py")
        if p.parent.name != "__pycache__"
    )
    assert packages
    for package in packages:
        assert package in architecture, f"docs/architecture.md does not mention {package}"
        assert f"`{package}" in readme, f"README.md's layout table does not list {package}"
    for name, _ in LAYERS:
        assert re.search(rf"^  {name}\s", architecture, re.M), f"docs/architecture.md does not draw layer '{name}'"
