"""The GPU route: a napkin kernel's PTX launched from inside `jax.jit`, with no C++ build.

A GPU cache entry (`compile.compile_gpu`) holds the PTX and the sidecar's launch description:
entry, grid, block, dynamic shared memory and the arguments in launch order. `GpuLaunch`
reads it (no MLIR needed, so a cached kernel runs on a machine with only JAX) and picks one
of two routes:

* **jaxlib's kernel-call custom call** (`jax._src.lib.gpu_triton`, the one jax-triton and
  Pallas use): `TritonKernel(entry, num_warps, 1, dynamic_smem, ptx, "", cc)` in a
  `TritonKernelCall(kernel, grid_x, grid_y, grid_z, params)`, one array parameter per buffer,
  serialised and zlib-compressed into the `opaque` attribute of `triton_kernel_call_ffi`
  (jax >= 0.10.1; `triton_kernel_call` with API version 2 before). XLA launches it on its own
  stream, assembles the PTX with ptxas for the device, and can capture it in a CUDA graph.
  It launches blocks of `(num_warps * 32, 1, 1)` threads and passes XLA's buffers in order,
  operands then results (plus two trailing null pointers, which our kernels never read: the
  driver passes only the parameters the PTX declares). So it takes a kernel only when its
  block is one-dimensional and a whole number of warps and its parameters are the inputs in
  order, then the outputs (`triton_shaped`). The tensor-core attention kernel is: block
  `(32 * warps, 1, 1)`, parameters Q, K, V, O.
* **`jax.experimental.buffer_callback` + CuPy** for every other kernel. The SIMT rule's
  kernels have 2-D blocks (`simt.BLOCK = (32, 4, 1)`) and may take their arrays in another
  order, which the kernel-call route cannot express. The callback receives XLA's device
  buffers in place and launches the PTX with CuPy (`RawModule`) on XLA's stream
  (`ctx.stream`), passing the buffers' device pointers in the kernel's own parameter order;
  nothing is copied. It holds the GIL for each launch and needs CuPy installed.

Neither route is differentiable by itself; `napkin_mlir.jax` wraps both in `jax.custom_vjp`.
"""

from __future__ import annotations

import re
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from napkin_mlir.errors import NapkinError

#: napkin dtype -> the numpy/JAX dtype name.
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class KernelParam:
    """One kernel parameter in launch order: a named array, an input or an output."""

    name: str
    role: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GpuLaunch:
    """A GPU kernel as the cache entry describes it, ready to be launched from JAX."""

    target: str
    kind: str
    entry: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dynamic_smem_bytes: int
    params: tuple[KernelParam, ...]
    input_names: tuple[str, ...]
    ptx: str

    @staticmethod
    def from_entry(entry: dict[str, Any]) -> GpuLaunch:
        """Read and check a GPU cache entry (`compile.compile_gpu`'s dict plus input names)."""

        def triple(key: str) -> tuple[int, int, int]:
            value = entry.get(key)
            if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and v > 0 for v in value)):
                raise NapkinError(f"GPU kernel entry: '{key}' must be three positive integers, got {value!r}")
            return (value[0], value[1], value[2])

        for key in ("target", "kind", "entry", "dynamic_smem_bytes", "args", "ptx", "input_names"):
            if key not in entry:
                raise NapkinError(f"GPU kernel entry: missing '{key}'")
        params = tuple(
            KernelParam(a["name"], a["role"], a["dtype"], tuple(a["shape"]))
            for a in entry["args"]
            if a.get("role") in ("input", "output") and a.get("dtype") in DTYPES
        )
        if len(params) != len(entry["args"]):
            raise NapkinError("GPU kernel entry: an argument has a bad role or dtype")
        return GpuLaunch(
            target=entry["target"],
            kind=entry["kind"],
            entry=entry["entry"],
            grid=triple("grid"),
            block=triple("block"),
            dynamic_smem_bytes=int(entry["dynamic_smem_bytes"]),
            params=params,
            input_names=tuple(entry["input_names"]),
            ptx=entry["ptx"],
        )

    @property
    def outputs(self) -> list[KernelParam]:
        """The outputs, in the order of the diagram's results (out0, out1, ...)."""
        outs = [p for p in self.params if p.role == "output"]
        return sorted(outs, key=lambda p: int(p.name.removeprefix("out")))

    def ptx_params(self) -> int:
        """How many parameters the PTX entry declares."""
        found = re.search(rf"\.visible \.entry {re.escape(self.entry)}\((.*?)\)", self.ptx, re.S)
        if not found:
            raise NapkinError(f"the PTX has no entry '{self.entry}'")
        return len(re.findall(r"\.param\s", found.group(1)))

    def triton_shaped(self) -> str | None:
        """None if jaxlib's kernel call can launch this kernel, else why it cannot."""
        x, y, z = self.block
        if y != 1 or z != 1 or x % 32:
            return f"block {self.block} is not (num_warps * 32, 1, 1)"
        order = [p.role for p in self.params]
        names = [p.name for p in self.params if p.role == "input"]
        if order != sorted(order, key=lambda r: r == "output") or names != list(self.input_names):
            return "its parameters are not the inputs in order, then the outputs"
        if [p.name for p in self.params if p.role == "output"] != [p.name for p in self.outputs]:
            return "its outputs are not in the order of the diagram's results"
        if self.ptx_params() != len(self.params):
            return f"the PTX declares {self.ptx_params()} parameters, the kernel has {len(self.params)} arrays"
        return None

    @property
    def num_warps(self) -> int:
        return self.block[0] // 32


def _out_shapes(launch: GpuLaunch) -> list[jax.ShapeDtypeStruct]:
    return [jax.ShapeDtypeStruct(p.shape, jax.numpy.dtype(DTYPES[p.dtype])) for p in launch.outputs]


def compute_capability(device: Any) -> int:
    """major * 10 + minor of a JAX CUDA device."""
    text = getattr(device, "compute_capability", None)
    if not text:
        raise NapkinError(f"cannot read the compute capability of {device}")
    major, _, minor = str(text).partition(".")
    return int(major) * 10 + int(minor or 0)


def triton_call(launch: GpuLaunch, inputs: Sequence[jax.Array], cc: int) -> list[jax.Array]:
    """The kernel through jaxlib's `triton_kernel_call_ffi` custom call."""
    reason = launch.triton_shaped()
    if reason is not None:
        raise NapkinError(f"kernel {launch.entry} cannot take jaxlib's kernel call: {reason}")
    from jax._src.lib import gpu_triton

    if not hasattr(gpu_triton, "TritonKernel"):
        raise NapkinError("jaxlib has no CUDA kernel-call support here (install jax with its CUDA plugin)")
    kernel = gpu_triton.TritonKernel(launch.entry, launch.num_warps, 1, launch.dynamic_smem_bytes, launch.ptx, "", cc)
    params = [gpu_triton.create_array_parameter(0, 0) for _ in launch.params]
    call = gpu_triton.TritonKernelCall(kernel, *launch.grid, params)
    opaque = zlib.compress(call.to_proto(launch.entry, b""))
    outs = _out_shapes(launch)
    if jax.__version_info__ < (0, 10, 1):
        fn = jax.ffi.ffi_call(
            "triton_kernel_call",
            outs,
            custom_call_api_version=2,
            legacy_backend_config=opaque,
            vmap_method="sequential",
        )
        return list(fn(*inputs))
    return list(jax.ffi.ffi_call("triton_kernel_call_ffi", outs, vmap_method="sequential")(*inputs, opaque=opaque))


_CUPY_FUNCTIONS: dict[str, Any] = {}


def _cupy_function(launch: GpuLaunch) -> Any:
    """The launch's kernel loaded by CuPy (once per process)."""
    if launch.entry + launch.ptx in _CUPY_FUNCTIONS:
        return _CUPY_FUNCTIONS[launch.entry + launch.ptx]
    try:
        import cupy as cp
    except ImportError:
        raise NapkinError(
            f"kernel {launch.entry} ({launch.triton_shaped()}) is launched through CuPy, which is not installed"
        ) from None
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(launch.ptx)
    function = cp.RawModule(path=f.name).get_function(launch.entry)
    Path(f.name).unlink(missing_ok=True)
    if launch.dynamic_smem_bytes > 48 * 1024:
        function.max_dynamic_shared_size_bytes = launch.dynamic_smem_bytes
    _CUPY_FUNCTIONS[launch.entry + launch.ptx] = function
    return function


def cupy_call(launch: GpuLaunch, inputs: Sequence[jax.Array]) -> list[jax.Array]:
    """The kernel through `buffer_callback`, launched by CuPy on XLA's stream, in place."""
    from jax.experimental.buffer_callback import buffer_callback

    out_index = {p.name: i for i, p in enumerate(launch.outputs)}
    in_index = {n: i for i, n in enumerate(launch.input_names)}
    missing = [p.name for p in launch.params if p.role == "input" and p.name not in in_index]
    if missing:
        raise NapkinError(f"kernel {launch.entry}: parameter {missing[0]} is none of the inputs")

    def callback(ctx: Any, outs: Any, *ins: Any) -> None:
        import cupy as cp

        function = _cupy_function(launch)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        pointers = []
        for p in launch.params:
            buffer = ins[in_index[p.name]] if p.role == "input" else outs[out_index[p.name]]
            pointers.append(np.uint64(buffer.__cuda_array_interface__["data"][0]))
        stream = cp.cuda.ExternalStream(int(ctx.stream))
        function(launch.grid, launch.block, tuple(pointers), shared_mem=launch.dynamic_smem_bytes, stream=stream)

    return list(buffer_callback(callback, _out_shapes(launch), vmap_method="sequential")(*inputs))


def gpu_call(launch: GpuLaunch, inputs: Sequence[jax.Array], cc: int) -> list[jax.Array]:
    """The kernel on the inputs, by the kernel-call route when it fits, else CuPy's."""
    if launch.triton_shaped() is None:
        return triton_call(launch, inputs, cc)
    return cupy_call(launch, inputs)
