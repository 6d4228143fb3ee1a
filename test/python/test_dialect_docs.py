"""dialects/README.md (and the round-trip lit test) stay in step with the dialect.

Every `irdl.operation @X` of dialects/napkin.irdl.mlir has a `### napkin.X` section in the
README and an entry in the op table `napkin_mlir.ir.ops.OPS`, and nothing else does; every
```mlir example of the README parses and verifies (IRDL and the Python verifier), each in a
fresh context (loading the dialect twice into one context would abort the process).
"""

from __future__ import annotations

import re

import pytest
from mlir import ir

from napkin_mlir.ir.context import DIALECT_FILE, napkin_context, parse_module
from napkin_mlir.ir.ops import OPS
from napkin_mlir.ir.verifier import verify_napkin

README = DIALECT_FILE.parent / "README.md"


def irdl_ops() -> list[str]:
    return re.findall(r"^\s*irdl\.operation\s+@(\w+)", DIALECT_FILE.read_text(), flags=re.M)


def readme_sections() -> list[str]:
    return re.findall(r"^### napkin\.(\w+)\s*$", README.read_text(), flags=re.M)


def readme_examples() -> list[tuple[int, str]]:
    """(line number, text) of every ```mlir block of the README."""
    text = README.read_text()
    found = []
    for m in re.finditer(r"^```mlir\n(.*?)^```", text, flags=re.M | re.S):
        found.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def test_irdl_file_defines_ops() -> None:
    assert len(irdl_ops()) >= 20
    assert len(set(irdl_ops())) == len(irdl_ops()), "an op is defined twice"


def test_every_op_has_a_section_and_no_more() -> None:
    ops, sections = irdl_ops(), readme_sections()
    assert sorted(set(ops) - set(sections)) == [], "ops of the IRDL file without a '### napkin.<op>' README section"
    assert sorted(set(sections) - set(ops)) == [], "README sections for ops the IRDL file does not define"
    assert len(sections) == len(set(sections)), "a README section appears twice"


def test_sections_follow_the_irdl_order() -> None:
    assert readme_sections() == irdl_ops()


def test_op_table_matches_the_irdl_file() -> None:
    ops = irdl_ops()
    assert sorted(set(ops) - set(OPS)) == [], "ops of the IRDL file missing from napkin_mlir.ir.ops.OPS"
    assert sorted(set(OPS) - set(ops)) == [], "napkin_mlir.ir.ops.OPS entries the IRDL file does not define"


def test_every_section_has_an_example() -> None:
    text = README.read_text()
    parts = re.split(r"^### napkin\.(\w+)\s*$", text, flags=re.M)
    bodies = dict(zip(parts[1::2], parts[2::2], strict=True))
    missing = [name for name, body in bodies.items() if f'"napkin.{name}"' not in body or "```mlir" not in body]
    assert missing == [], "sections without an ```mlir example using their op"


@pytest.mark.parametrize(("line", "source"), readme_examples(), ids=[f"line{line}" for line, _ in readme_examples()])
def test_example_parses_and_verifies(line: int, source: str) -> None:
    # verify_napkin builds types, which needs a location in scope.
    with napkin_context(), ir.Location.unknown():
        module = parse_module(source, f"{README.name}:{line}")
        findings = verify_napkin(module.operation)
        assert findings == [], "\n".join(d.format(f"README.md example at line {line}") for d in findings)


def test_examples_exist() -> None:
    assert len(readme_examples()) >= len(irdl_ops())


def test_round_trip_test_covers_every_op() -> None:
    """test/Dialect/ops.mlir (the lit round trip) uses every op of the IRDL file."""
    ops_test = DIALECT_FILE.parent.parent / "test" / "Dialect" / "ops.mlir"
    used = set(re.findall(r'"napkin\.(\w+)"', ops_test.read_text()))
    assert sorted(set(irdl_ops()) - used) == [], "ops missing from test/Dialect/ops.mlir"
