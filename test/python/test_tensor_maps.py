"""TMA tensor maps from the kernel's sidecar to the device: the wgmma attention kernel names a
map per Q, K and V (boxes of 64 rows by 64 head columns, 128-byte swizzle); the runner checks
each description as the driver and the PTX ISA require and encodes it with
`cuTensorMapEncodeTiled` over the array's device copy (checked here with a stand-in for
cuda-python's driver: the real encoding needs a GPU)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from napkin_mlir.backends.gpu import runner


def _attention_sidecar(dims: dict[str, int], kv_heads: int | None = None) -> runner.Sidecar:
    from napkin_mlir.check.harness import VerifyConfig
    from napkin_mlir.cli.compile import compile_kernel

    config = VerifyConfig("attention", dims, "bf16", causal=False, kv_heads=kv_heads)
    kernel, _ = compile_kernel(config, "sm_90a", "gpu", "wgmma", log=lambda _: None)
    return runner.parse_sidecar(kernel.sidecar("att.mlir"), Path("att.mlir.json"))


def test_the_kernel_names_a_map_per_operand_and_the_geometry_follows_the_array() -> None:
    side = _attention_sidecar({"b": 2, "h": 4, "q": 100, "x": 130, "d": 128}, kv_heads=2)
    maps = {a.name: runner.tensor_map(a, side.args) for a in side.args if a.role == "tensormap"}
    assert list(maps) == ["Q_map", "K_map", "V_map"]
    q, k = maps["Q_map"], maps["K_map"]
    # Q is (b, h, r, q, d) with two query heads per key/value head: five dims, innermost first
    assert q.dims == (128, 100, 2, 2, 2) and q.box == (64, 64, 1, 1, 1)
    assert q.strides == (256, 256 * 100, 256 * 100 * 2, 256 * 100 * 2 * 2)
    assert k.dims == (128, 130, 2, 2) and k.box == (64, 64, 1, 1) and k.swizzle == 128
    assert k.box_bytes == 8192
    # the launch order: Q, K, V, the output, then the maps
    assert [a.role for a in side.args] == ["input"] * 3 + ["output"] + ["tensormap"] * 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"of": "nothing", "box": [64, 64, 1, 1], "swizzle": 128}, "names no array"),
        ({"of": "K", "box": [64, 64, 1], "swizzle": 128}, "one size per dimension"),
        ({"of": "K", "box": [64, 300, 1, 1], "swizzle": 128}, "box sizes in 1..256"),
        ({"of": "K", "box": [32, 64, 1, 1], "swizzle": 128}, "swizzled: of 128"),
        ({"of": "K", "box": [64, 64, 1, 1], "swizzle": 96}, "a swizzle of 0, 32, 64 or 128"),
    ],
    ids=["unknown-array", "rank", "box-size", "inner-box-vs-swizzle", "swizzle-mode"],
)
def test_a_bad_map_description_is_refused_by_name(spec: dict, message: str) -> None:
    side = _attention_sidecar({"b": 1, "h": 1, "q": 64, "x": 64, "d": 64})
    data = {
        "format": 1,
        "binary": "att.mlir",
        "target": side.target,
        "entry": side.entry,
        "grid": list(side.grid),
        "block": list(side.block),
        "dynamic_smem_bytes": side.dynamic_smem_bytes,
        "args": [
            {"name": a.name, "role": a.role, "dtype": a.dtype, "shape": list(a.shape), "axes": list(a.axes)}
            | ({"tensor_map": spec if a.name == "K_map" else a.tensor_map} if a.role == "tensormap" else {})
            for a in side.args
        ],
    }
    with pytest.raises(runner.RunnerError, match=f"tensor map K_map: .*{message}"):
        runner.parse_sidecar(data, Path("att.mlir.json"))


def test_maps_are_encoded_over_the_device_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    side = _attention_sidecar({"b": 1, "h": 2, "q": 70, "x": 90, "d": 64})
    calls = []

    class Encoded:
        def __init__(self, tag: int) -> None:
            self.buffer = np.full(128, tag, np.uint8)

        def getPtr(self) -> int:
            return self.buffer.ctypes.data

    def encode(*args: object) -> tuple[int, Encoded]:
        calls.append(args)
        return 0, Encoded(len(calls))

    driver = types.SimpleNamespace(
        cuTensorMapEncodeTiled=encode,
        CUtensorMapDataType=int,
        CUtensorMapInterleave=int,
        CUtensorMapSwizzle=int,
        CUtensorMapL2promotion=int,
        CUtensorMapFloatOOBfill=int,
    )
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.driver = driver  # type: ignore[attr-defined]
    cuda.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)

    class DeviceArray:
        def __init__(self, ptr: int) -> None:
            self.data = types.SimpleNamespace(ptr=ptr)

    device = {"Q": DeviceArray(0x1000), "K": DeviceArray(0x2000), "V": DeviceArray(0x3000)}
    cp = types.SimpleNamespace(asarray=lambda a: a.copy())
    maps = runner.device_tensor_maps(cp, side, device)
    assert list(maps) == ["Q_map", "K_map", "V_map"]
    # each map's 128 bytes are what the driver encoded for it, in a device buffer of its own
    assert [int(m[0]) for m in maps.values()] == [1, 2, 3] and all(m.size == 128 for m in maps.values())
    dtype, rank, address, dims, strides, box, elem, interleave, swizzle, l2, oob = calls[1]
    assert (dtype, rank, address) == (9, 4, 0x2000)  # bf16, (d, x, h, b), K's device pointer
    assert dims == [64, 90, 2, 1] and strides == [128, 128 * 90, 128 * 90 * 2] and box == [64, 64, 1, 1]
    assert elem == [1, 1, 1, 1] and (interleave, swizzle, l2, oob) == (0, 3, 0, 0)  # 128-byte swizzle, zeros OOB
