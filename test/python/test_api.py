"""The Python API (`napkin_mlir.api.Diagram`): the README's example runs as printed, and each
step agrees with the lower-level functions it stands for."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

from napkin_mlir.api import Diagram
from napkin_mlir.errors import NapkinError, UsageError


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "napkin_mlir.api" in b)
    monkeypatch.chdir(REPO_ROOT)
    code = block.replace('"softcap.png"', repr(str(tmp_path / "softcap.png")))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "PASS: 1/1 outputs match JAX" in out
    assert "napkin-stream-partition{axis=x" in out
    assert (tmp_path / "softcap.png").stat().st_size > 10_000


def test_steps_agree_with_the_interpretation(seed: int) -> None:
    d = Diagram.from_file(REPO_ROOT / "examples" / "swiglu_mlp.mlir", dims={"m": 19}, dtype="f32")
    assert "tensor<19x32xf32" in d.text
    rng = np.random.default_rng(seed)
    x, w1, w3, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((19, 32), (32, 96), (32, 96), (96, 24)))
    (y,) = d.interpret([x, w1, w3, w2])
    h = x.astype(np.float64) @ w1
    expected = (h / (1 + np.exp(-h)) * (x.astype(np.float64) @ w3)) @ w2
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-10, atol=1e-10)
    result = d.verify(seed)
    assert result.passed and result.outputs[0].comparison.rel_fro < 1e-5
    assert '"napkin.stream"' in d.partitioned() and '"napkin.stream"' not in d.text  # steps leave d alone


def test_bad_input_is_a_clean_error() -> None:
    with pytest.raises(NapkinError, match=r"bad.mlir:1:"):
        Diagram.from_text("not mlir", filename="bad.mlir")
    with pytest.raises(UsageError, match="unknown axis 'zz'"):
        Diagram.from_file(REPO_ROOT / "examples" / "swiglu_mlp.mlir", dims={"zz": 3})
