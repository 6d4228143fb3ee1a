"""napkin kernels as JAX operations: `attention`, `kernel(diagram)`, with gradients.

Calling a napkin operation on arrays (or tracers, inside `jax.jit`) fits its diagram to the
inputs' shapes and dtypes, fetches the compiled kernel from the cache (`cache.py`: memory,
then disk, then a cold compile) and emits one custom call:

* on the CPU (`target="cpu"`) a typed-FFI call of a handler generated in MLIR's LLVM dialect
  and JIT-compiled with the kernel (`cpu_ffi.py`): XLA's buffers go straight to the kernel;
* on a CUDA GPU (`target="sm_80"` or `"sm_90a"`) the PTX launched by jaxlib's kernel-call
  custom call, or by CuPy inside `buffer_callback` when the block shape does not fit it
  (`gpu_call.py`).

The target defaults to JAX's default backend (a GPU of compute capability 9.0 gets sm_90a,
8.x and newer ones sm_80).

**Gradients.** Each kernel is wrapped in `jax.custom_vjp`. The forward runs the kernel and
saves its inputs; the backward is, until derived backward kernels exist, **the VJP of the JAX
interpretation of the same diagram** (`napkin_mlir.interpret`, in the diagram's own element
types): it recomputes the forward in jax.numpy and differentiates it, so it costs what
differentiating the plain jax.numpy program costs (for attention, the score matrix is
materialised in the backward pass).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.jax.cache import DISTRIBUTIONS, entry_path, kernel_key, log, read_entry, write_entry
from napkin_mlir.jax.cpu_ffi import BufferSpec, selftest_metadata
from napkin_mlir.jax.gpu_call import GpuLaunch, compute_capability, gpu_call

#: JAX dtype name -> napkin dtype.
NAPKIN_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
JAX_DTYPES = {v: k for k, v in NAPKIN_DTYPES.items()}

#: The targets: the host CPU and the GPU architectures the GPU backend emits.
TARGETS = ("cpu", "sm_80", "sm_90a")


def default_target() -> str:
    """The target of JAX's default backend: "cpu", or the GPU architecture of device 0."""
    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu"
    if backend in ("gpu", "cuda"):
        cc = compute_capability(jax.devices()[0])
        if cc < 80:
            raise NapkinError(f"napkin kernels need a GPU of compute capability 8.0 or newer, found {cc / 10:.1f}")
        return "sm_90a" if cc == 90 else "sm_80"
    raise NapkinError(f"no napkin backend for JAX platform '{backend}' (the CPU or a CUDA GPU)")


# --- what a kernel is compiled from ------------------------------------------------------------


class DiagramSource:
    """A diagram's text (given, or built on first use), the name messages give it, what
    identifies it in the cache key and, for attention built here, the problem the tensor-core
    rule needs."""

    def __init__(
        self,
        filename: str,
        text: str | None = None,
        build: Callable[[], str] | None = None,
        identity: dict[str, Any] | None = None,
        attention: dict[str, Any] | None = None,
        label: str | None = None,
    ) -> None:
        if text is None and build is None:
            raise ValueError("a diagram source needs its text or a builder")
        self.filename = filename
        self.label = label or Path(filename).name
        self._text = text
        self._build = build
        self._identity = identity
        self.attention = attention

    @property
    def text(self) -> str:
        if self._text is None:
            assert self._build is not None
            self._text = self._build()
        return self._text

    def identity(self) -> dict[str, Any]:
        """What the cache key says of the diagram: its text, or the problem it is built from."""
        return self._identity if self._identity is not None else {"text": self.text}


def source_of(diagram: object) -> DiagramSource:
    """A diagram given as a path, MLIR text, an `ir.Module` or an object with `.text` (the
    `napkin_mlir.api.Diagram`)."""
    if isinstance(diagram, os.PathLike) or (isinstance(diagram, str) and "\n" not in diagram and "{" not in diagram):
        path = Path(diagram)  # type: ignore[arg-type]
        try:
            return DiagramSource(str(path), path.read_text())
        except OSError as err:
            raise UsageError(f"cannot read diagram '{path}': {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read diagram '{path}': not UTF-8 text") from None
    if isinstance(diagram, str):
        return DiagramSource("<text>", diagram)
    text = getattr(diagram, "text", None)
    if isinstance(text, str):
        return DiagramSource(str(getattr(diagram, "filename", "<diagram>")), text)
    operation = getattr(diagram, "operation", None)
    if operation is not None and getattr(operation, "name", None) == "builtin.module":
        return DiagramSource("<module>", str(diagram))
    raise UsageError(
        f"kernel: cannot take a diagram of type {type(diagram).__name__} "
        "(give a .mlir path, MLIR text, an MLIR module or a napkin_mlir.api.Diagram)"
    )


def _spec(x: jax.Array, what: str) -> BufferSpec:
    name = jnp.dtype(x.dtype).name
    if name not in NAPKIN_DTYPES:
        raise UsageError(f"{what} has dtype {name}; napkin kernels take float32, float16 or bfloat16")
    return BufferSpec(NAPKIN_DTYPES[name], tuple(int(s) for s in x.shape))


# --- compiled kernels --------------------------------------------------------------------------


@dataclass(eq=False)
class CompiledKernel:
    """One diagram compiled for one target at one set of input shapes and dtypes."""

    key: str
    target: str
    label: str
    inputs: tuple[BufferSpec, ...]
    outputs: tuple[BufferSpec, ...]
    source: DiagramSource
    launch: Callable[[Sequence[jax.Array]], list[jax.Array]]
    #: The custom call's target in the HLO: `napkin_cpu_<key>` (the FFI handler), jaxlib's
    #: `triton_kernel_call_ffi`, or `xla_buffer_python_gpu_callback` (CuPy in buffer_callback).
    call_target: str
    apply: Callable[..., tuple[jax.Array, ...]] = field(init=False)

    def __post_init__(self) -> None:
        self.apply = _differentiable(self)

    def __call__(self, *arrays: jax.Array) -> list[jax.Array]:
        """The kernel's custom call on `arrays` (not differentiable: use `apply`)."""
        return self.launch(arrays)

    def interpretation(self, *arrays: jax.Array) -> tuple[jax.Array, ...]:
        """The JAX interpretation of the fitted diagram, in its own element types."""
        compiler = _compiler(f"the gradient of {self.label} (the VJP of its JAX interpretation)")
        from mlir import ir

        from napkin_mlir.interpret import interpret
        from napkin_mlir.ir.context import napkin_context

        with napkin_context(), ir.Location.unknown():
            module = compiler.prepare(self.source.text, self.source.filename, self.inputs)
            return tuple(interpret(module, list(arrays), "same", filename=self.source.filename))


def _compiler(what: str) -> Any:
    """`napkin_mlir.jax.compile`, or a NapkinError saying `what` needs the MLIR wheels."""
    try:
        from napkin_mlir.jax import compile as compiler
    except ImportError as err:
        raise NapkinError(
            f"{what} needs the MLIR wheels (xtc-mlir-python-bindings), which do not import here ({err}); "
            "compile the kernel where they do (napkin_mlir.jax.attention_kernel, NapkinFunction.compiled) "
            "and carry its disk cache (NAPKIN_JAX_CACHE_DIR)"
        ) from None
    return compiler


def _differentiable(kernel: CompiledKernel) -> Callable[..., tuple[jax.Array, ...]]:
    @jax.custom_vjp
    def apply(*xs: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(kernel(*xs))

    def forward(*xs: jax.Array) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        return tuple(kernel(*xs)), xs

    def backward(saved: tuple[jax.Array, ...], cotangents: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        # Until derived backward kernels exist: the VJP of the diagram's JAX interpretation.
        _, pullback = jax.vjp(kernel.interpretation, *saved)
        return tuple(pullback(tuple(cotangents)))

    apply.defvjp(forward, backward)
    return apply


_KERNELS: dict[str, CompiledKernel] = {}
_LOCK = threading.RLock()
#: Every JIT-compiled CPU module stays alive: XLA's FFI registry holds its handler's address forever.
_ENGINES: list[tuple[object, ...]] = []


def _jax_dtype(dtype: str) -> jnp.dtype:
    return jnp.dtype(JAX_DTYPES[dtype])


def _load_cpu(key: str, entry: dict[str, Any], label: str) -> Callable[[Sequence[jax.Array]], list[jax.Array]]:
    """JIT-compile a CPU entry's LLVM-dialect text, check its handler, register it with XLA."""
    from mlir import ir
    from mlir.execution_engine import ExecutionEngine

    from napkin_mlir.backends.cpu import FLOAT16_UTILS

    context = ir.Context()
    with context:
        try:
            module = ir.Module.parse(entry["llvm"])
        except ir.MLIRError as err:
            raise NapkinError(f"napkin kernel {label}: its LLVM text does not parse: {err}") from None
        libs = [str(FLOAT16_UTILS)] if FLOAT16_UTILS.exists() else []
        engine = ExecutionEngine(module, opt_level=3, shared_libs=libs)
        address = engine.raw_lookup(entry["symbol"].removeprefix("_mlir_"))
    if not address:
        raise NapkinError(f"napkin kernel {label}: the JIT-compiled module has no handler {entry['symbol']}")
    selftest_metadata(address, label)
    name = entry["ffi_target"]
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(address), platform="cpu")
    _ENGINES.append((context, module, engine))
    outs = [jax.ShapeDtypeStruct(tuple(shape), _jax_dtype(dtype)) for dtype, shape in entry["outputs"]]
    call = jax.ffi.ffi_call(name, outs, vmap_method="sequential")

    def launch(arrays: Sequence[jax.Array]) -> list[jax.Array]:
        return list(call(*arrays))

    return launch


def _load_gpu(entry: dict[str, Any]) -> Callable[[Sequence[jax.Array]], list[jax.Array]]:
    launch_description = GpuLaunch.from_entry(entry)

    def launch(arrays: Sequence[jax.Array]) -> list[jax.Array]:
        return gpu_call(launch_description, arrays, compute_capability(jax.devices()[0]))

    return launch


def _compile(
    source: DiagramSource,
    inputs: tuple[BufferSpec, ...],
    target: str,
    tiles: dict[str, int] | None,
    key: str,
    label: str,
) -> dict[str, Any]:
    compiler = _compiler(f"compiling {label} for {target} (it is not in the disk cache {entry_path(key)})")
    if target == "cpu":
        symbol = f"_mlir_napkin_ffi_{key[:24]}"
        text, outs = compiler.compile_cpu(source.text, source.filename, inputs, tiles, symbol, label)
        return {
            "target": "cpu",
            "symbol": symbol,
            "ffi_target": f"napkin_cpu_{key[:24]}",
            "outputs": [[o.dtype, list(o.shape)] for o in outs],
            "llvm": text,
        }
    problem = None
    if source.attention is not None:
        a = source.attention
        problem = compiler.AttentionProblem(dict(a["dims"]), bool(a["causal"]), a["kv_heads"])
    return compiler.compile_gpu(source.text, source.filename, inputs, tiles, target, problem)


def _call_target(entry: dict[str, Any]) -> str:
    if entry["target"] == "cpu":
        return str(entry["ffi_target"])
    if GpuLaunch.from_entry(entry).triton_shaped() is None:
        return "triton_kernel_call_ffi" if jax.__version_info__ >= (0, 10, 1) else "triton_kernel_call"
    return "xla_buffer_python_gpu_callback"


def _outputs_of(entry: dict[str, Any]) -> tuple[BufferSpec, ...]:
    if entry["target"] == "cpu":
        return tuple(BufferSpec(d, tuple(s)) for d, s in entry["outputs"])
    return tuple(BufferSpec(p.dtype, p.shape) for p in GpuLaunch.from_entry(entry).outputs)


def get_kernel(
    source: DiagramSource, inputs: Sequence[BufferSpec], target: str, tiles: dict[str, int] | None, label: str
) -> CompiledKernel:
    """The compiled kernel for these inputs and target: from memory, from disk, or compiled."""
    if target not in TARGETS:
        raise UsageError(f"unknown target '{target}' (expected {', '.join(TARGETS)})")
    inputs = tuple(inputs)
    parts = {
        "target": target,
        "source": source.identity(),
        "inputs": [[s.dtype, list(s.shape)] for s in inputs],
        "tiles": dict(sorted((tiles or {}).items())),
    }
    # A GPU entry must be found on a GPU machine without the MLIR wheels: its key leaves out
    # the installed toolchain versions (requirements.lock, hashed with the sources, pins them).
    key = kernel_key(parts, DISTRIBUTIONS if target == "cpu" else ())
    what = f"{label} on {target}"
    with _LOCK:
        found = _KERNELS.get(key)
        if found is not None:
            log("memory hit", what, key)
            return found
        entry = read_entry(key)
        loaded = None
        if entry is not None and entry.get("target") == target:
            try:
                launch = _load_cpu(key, entry, label) if target == "cpu" else _load_gpu(entry)
                loaded = (entry, launch)
                log("disk hit", what, key, f"from {entry_path(key)}")
            except (NapkinError, KeyError, TypeError, ValueError):
                loaded = None  # an unusable entry: compile again and overwrite it
        if loaded is None:
            start = time.perf_counter()
            entry = _compile(source, inputs, target, tiles, key, label)
            written = write_entry(key, entry)
            launch = _load_cpu(key, entry, label) if target == "cpu" else _load_gpu(entry)
            loaded = (entry, launch)
            where = f"written to {written}" if written else "disk cache off or not writable"
            log("cold compile", what, key, f"{time.perf_counter() - start:.2f} s; {where}")
        entry, launch = loaded
        kernel = CompiledKernel(key, target, label, inputs, _outputs_of(entry), source, launch, _call_target(entry))
        _KERNELS[key] = kernel
        return kernel


# --- the public operations ---------------------------------------------------------------------


class NapkinFunction:
    """A diagram as a JAX function of its inputs (see `kernel`)."""

    def __init__(self, source: DiagramSource, target: str | None = None, tiles: dict[str, int] | None = None):
        self.source = source
        self.target = target
        self.tiles = dict(tiles) if tiles else None

    def compiled(self, *inputs: Any) -> CompiledKernel:
        """The compiled kernel these inputs (arrays, tracers or ShapeDtypeStructs) call."""
        specs = [_spec(x, f"{self.source.filename}: input #{i}") for i, x in enumerate(inputs)]
        return get_kernel(self.source, specs, self.target or default_target(), self.tiles, self.source.label)

    def __call__(self, *inputs: Any) -> jax.Array | tuple[jax.Array, ...]:
        arrays = [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in inputs]
        outs = self.compiled(*arrays).apply(*arrays)
        return outs[0] if len(outs) == 1 else outs


def kernel(diagram: object, *, target: str | None = None, tiles: dict[str, int] | None = None) -> NapkinFunction:
    """A napkin diagram as a JAX function of its inputs, usable inside `jax.jit` and `jax.grad`.

    `diagram` is a path to a `.mlir` file, MLIR text, an `ir.Module` made with the builders or
    a `napkin_mlir.api.Diagram`. The function takes one array per diagram input, in order, and
    returns the output (a tuple for several). Axis sizes come from the arrays (a diagram
    written at small sizes runs at any size; an axis named by several inputs must agree) and a
    diagram written in f16/bf16 runs in the arrays' dtype (f32, f16 or bf16; its f32
    accumulators stay f32). The kernel is compiled once per shapes, dtypes and target, then
    cached in memory and on disk. `target` is "cpu", "sm_80" or "sm_90a" (default: JAX's
    default backend); `tiles` pins tile sizes by axis (else the derivation's defaults on the
    CPU, the cost model's choice on a GPU). The gradient is the VJP of the diagram's JAX
    interpretation (module docstring).
    """
    return NapkinFunction(source_of(diagram), target, tiles)


def attention(
    query: Any,
    key: Any,
    value: Any,
    *,
    causal: bool = False,
    scale: float | None = None,
    target: str | None = None,
    tiles: dict[str, int] | None = None,
) -> jax.Array:
    """`softmax(scale * Q K^T) V` by the derived FlashAttention kernel, in the layout of
    `jax.nn.dot_product_attention`.

    `query` is (batch, q_seq, heads, head_dim); `key` and `value` are (batch, kv_seq,
    kv_heads, head_dim), with `heads` a multiple of `kv_heads` (grouped-query attention when
    they differ: query head n uses key/value head n // (heads // kv_heads), as in JAX).
    `causal` masks key j > query i (the top-left-aligned mask of `is_causal=True`); `scale`
    defaults to 1/sqrt(head_dim). All three arrays share one dtype: float32, float16 or
    bfloat16 (16-bit inputs are contracted with f32 accumulation, the probabilities cast to the
    input dtype before the second contraction, as FlashAttention does). `target` and `tiles`
    (axes q and x) as for `kernel`. On the CPU the kernel reads JAX's layout directly; on a GPU
    the arrays are transposed to (batch, heads, seq, head_dim) around the kernel. The gradient
    is the VJP of the attention diagram's JAX interpretation (module docstring).
    """
    q, k, v = (x if isinstance(x, jax.Array) else jnp.asarray(x) for x in (query, key, value))
    fn, layout = _attention_function(q, k, v, causal, scale, target, tiles)
    b, t, n, h = q.shape
    kv = k.shape[2]
    if layout == "jax":
        out = fn(q.reshape(b, t, kv, n // kv, h) if n != kv else q, k, v)
        assert isinstance(out, jax.Array)
        return out.reshape(b, t, n, h)
    qn = jnp.transpose(q, (0, 2, 1, 3))
    qn = qn.reshape(b, kv, n // kv, t, h) if n != kv else qn
    out = fn(qn, jnp.transpose(k, (0, 2, 1, 3)), jnp.transpose(v, (0, 2, 1, 3)))
    assert isinstance(out, jax.Array)
    return jnp.transpose(out.reshape(b, n, t, h), (0, 2, 1, 3))


def attention_kernel(
    query: Any,
    key: Any,
    value: Any,
    *,
    causal: bool = False,
    scale: float | None = None,
    target: str | None = None,
    tiles: dict[str, int] | None = None,
) -> CompiledKernel:
    """The kernel `attention` calls for these arrays (or `jax.ShapeDtypeStruct`s), compiled
    and cached but not run: a GPU kernel can be compiled here and its disk cache carried to a
    GPU machine, where it loads without the MLIR wheels."""
    fn, layout = _attention_function(query, key, value, causal, scale, target, tiles)
    b, t, n, h = query.shape
    kv = key.shape[2]
    if layout == "jax":
        shapes = [(b, t, kv, n // kv, h) if n != kv else (b, t, n, h), key.shape, key.shape]
    else:
        shapes = [
            (b, kv, n // kv, t, h) if n != kv else (b, n, t, h),
            (b, kv, key.shape[1], h),
            (b, kv, key.shape[1], h),
        ]
    return fn.compiled(*(jax.ShapeDtypeStruct(tuple(s), query.dtype) for s in shapes))


def _attention_function(
    q: Any, k: Any, v: Any, causal: bool, scale: float | None, target: str | None, tiles: dict[str, int] | None
) -> tuple[NapkinFunction, str]:
    """Check the arrays' shapes and dtypes; the attention diagram's function and its layout."""
    where = "napkin_mlir.jax.attention"
    if len(q.shape) != 4:
        raise UsageError(f"{where}: query must be (batch, seq, heads, head_dim), got shape {tuple(q.shape)}")
    if len(k.shape) != 4 or tuple(k.shape) != tuple(v.shape):
        raise UsageError(
            f"{where}: key and value must both be (batch, kv_seq, kv_heads, head_dim), got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    b, t, n, h = (int(s) for s in q.shape)
    kb, s, kv, kh = (int(x) for x in k.shape)
    if kb != b or kh != h:
        raise UsageError(f"{where}: query {tuple(q.shape)} and key {tuple(k.shape)} differ in batch or head_dim")
    if kv <= 0 or n % kv:
        raise UsageError(f"{where}: {n} query heads are not a multiple of {kv} key/value heads")
    if not (q.dtype == k.dtype == v.dtype):
        raise UsageError(f"{where}: query, key and value must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    dtype = _spec(q, f"{where}: query").dtype
    if scale is None:
        factor = 1.0 / math.sqrt(h)
    else:
        try:
            factor = float(scale)
        except TypeError:  # a tracer (ConcretizationTypeError is a TypeError)
            raise UsageError(f"{where}: scale must be a Python number (it is compiled into the kernel)") from None
        if not math.isfinite(factor):
            raise UsageError(f"{where}: scale must be finite, got {factor}")
    chosen = target or default_target()
    layout = "jax" if chosen == "cpu" else "napkin"
    dims = {"b": b, "h": n, "q": t, "x": s, "d": h}
    source = _attention_source(layout, dims, kv, dtype, bool(causal), factor)
    return NapkinFunction(source, chosen, tiles), layout


def _attention_source(
    layout: str, dims: dict[str, int], kv: int, dtype: str, causal: bool, scale: float
) -> DiagramSource:
    """The attention diagram for these sizes. Its identity in the cache key is the problem, not
    the text, so a cached GPU kernel is found without building the text (which needs MLIR)."""
    problem = {"layout": layout, "dims": dims, "kv_heads": kv, "dtype": dtype, "causal": causal, "scale": scale}

    def build() -> str:
        from napkin_mlir.jax.compile import attention_diagram

        return attention_diagram(layout, dims, kv, dtype, causal, scale)

    # The tensor-core rule takes the napkin layout and a positive scale (it scales after the row max).
    tensorcore = layout == "napkin" and scale > 0
    problem_tc = {"dims": dims, "causal": causal, "kv_heads": kv if kv != dims["h"] else None}
    shape = ",".join(f"{a}={s}" for a, s in dims.items())
    label = f"attention({shape},kv_heads={kv}{',causal' if causal else ''},scale={scale:.4g}) {dtype}"
    return DiagramSource(
        "attention",
        build=build,
        identity={"attention": problem},
        attention=problem_tc if tensorcore else None,
        label=label,
    )
