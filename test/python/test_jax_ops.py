"""napkin kernels as JAX operations (`napkin_mlir.jax`): inside `jax.jit`, with gradients.

* `attention` equals `jax.nn.dot_product_attention` by the project's correctness rule
  (`judge_dtype`: f32 relative Frobenius error against float64 at most 1e-5; bf16 max error
  at most twice JAX's own in bf16) at odd sizes, causal and not, grouped-query and not;
* `jax.grad` through it equals JAX's own gradient (f32, relative Frobenius 1e-5);
* the lowered HLO holds exactly one custom call, the kernel's, and no dot or exp;
* a diagram from examples/ runs as a function inside a small jitted model, and its
  gradient matches the same model written in jax.numpy;
* the cache is hit in memory on the second call and from disk in a fresh process;
* the GPU route's launch is built from the kernel's sidecar, and a cached GPU kernel loads
  where MLIR cannot be imported (no GPU needed); running it is test_jax_gpu.py's, which
  skips without a GPU.

Inputs are fresh standard-normal draws from the per-test `seed`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from napkin_mlir import jax as nj
from napkin_mlir.check import reference
from napkin_mlir.check.harness import judge_dtype
from napkin_mlir.errors import NapkinError, UsageError
from napkin_mlir.jax.cache import compiler_version, read_entry
from napkin_mlir.jax.cpu_ffi import BufferSpec
from napkin_mlir.jax.gpu_call import GpuLaunch

ROOT = Path(__file__).resolve().parents[2]
JNP = {"f32": jnp.float32, "bf16": jnp.bfloat16}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes its kernels to a cache directory of its own."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPKIN_JAX_CACHE_DIR", str(cache))
    return cache


def _draw(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape).astype(np.float32), JNP[dtype])


def attention64(q: jax.Array, k: jax.Array, v: jax.Array, causal: bool, scale: float) -> np.ndarray:
    """Attention in float64 on the exact input values, JAX's layout (the ground truth)."""
    q64, k64, v64 = (np.asarray(t.astype(jnp.float32), np.float64) for t in (q, k, v))
    groups = q64.shape[2] // k64.shape[2]
    k64, v64 = np.repeat(k64, groups, axis=2), np.repeat(v64, groups, axis=2)
    s = np.einsum("bqnd,bxnd->bnqx", q64, k64) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("bnqx,bxnd->bqnd", p, v64)


def rel_fro(a: object, b: object) -> float:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))


# (dtype, causal, batch, q_seq, kv_seq, heads, kv_heads, head_dim): every feature in both dtypes.
CASES = [
    ("f32", True, 2, 37, 53, 6, 2, 24),
    ("f32", False, 1, 45, 29, 3, 3, 20),
    ("bf16", True, 2, 41, 33, 4, 4, 16),
    ("bf16", False, 1, 29, 47, 6, 3, 24),
]


@pytest.mark.parametrize(("dtype", "causal", "b", "t", "s", "n", "kv", "h"), CASES)
def test_attention_in_jit_matches_dot_product_attention(
    dtype: str, causal: bool, b: int, t: int, s: int, n: int, kv: int, h: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    q, k, v = _draw(rng, (b, t, n, h), dtype), _draw(rng, (b, s, kv, h), dtype), _draw(rng, (b, s, kv, h), dtype)
    out = jax.jit(lambda q, k, v: nj.attention(q, k, v, causal=causal))(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    same = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")
    comparison = reference.compare(np.asarray(out.astype(jnp.float32)), attention64(q, k, v, causal, h**-0.5), same)
    passed, rule = judge_dtype(dtype, comparison)
    assert passed, f"{dtype} causal={causal}: {comparison} ({rule})"


def test_attention_scale_is_honoured(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, k, v = _draw(rng, (1, 19, 2, 8), "f32"), _draw(rng, (1, 23, 2, 8), "f32"), _draw(rng, (1, 23, 2, 8), "f32")
    out = jax.jit(lambda q, k, v: nj.attention(q, k, v, scale=0.7))(q, k, v)
    assert rel_fro(out, attention64(q, k, v, False, 0.7)) <= 1e-5
    assert rel_fro(out, attention64(q, k, v, False, 8**-0.5)) > 1e-2  # the default scale gives another answer


def test_attention_gradient_matches_jax(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, k, v = _draw(rng, (2, 21, 4, 16), "f32"), _draw(rng, (2, 27, 2, 16), "f32"), _draw(rng, (2, 27, 2, 16), "f32")
    w = _draw(rng, (2, 21, 4, 16), "f32")  # a random cotangent direction

    def ours(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return jnp.sum(w * nj.attention(q, k, v, causal=True))

    def theirs(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return jnp.sum(w * jax.nn.dot_product_attention(q, k, v, is_causal=True))

    got = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(theirs, argnums=(0, 1, 2))(q, k, v)
    for name, g, r in zip("qkv", got, want, strict=True):
        assert g.shape == r.shape and g.dtype == r.dtype
        assert rel_fro(g, r) <= 1e-5, f"d{name}: relative Frobenius {rel_fro(g, r):.3e}"


def test_lowered_hlo_is_one_custom_call_of_the_kernel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, k, v = _draw(rng, (1, 33, 4, 16), "f32"), _draw(rng, (1, 40, 2, 16), "f32"), _draw(rng, (1, 40, 2, 16), "f32")
    text = jax.jit(lambda q, k, v: nj.attention(q, k, v, causal=True)).lower(q, k, v).as_text()
    calls = [line for line in text.splitlines() if "stablehlo.custom_call" in line]
    assert len(calls) == 1, text
    assert "@napkin_cpu_" in calls[0], calls[0]
    for op in ("dot_general", "stablehlo.dot", "exponential", "stablehlo.exp", "reduce"):
        assert op not in text, f"the HLO computes attention itself ({op}):\n{text}"


def test_vmap_over_attention(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, k, v = (
        _draw(rng, (3, 1, 9, 2, 8), "f32"),
        _draw(rng, (3, 1, 11, 2, 8), "f32"),
        _draw(rng, (3, 1, 11, 2, 8), "f32"),
    )
    out = jax.jit(jax.vmap(lambda q, k, v: nj.attention(q, k, v, causal=True)))(q, k, v)
    for i in range(3):
        assert rel_fro(out[i], attention64(q[i], k[i], v[i], True, 8**-0.5)) <= 1e-5


SWIGLU = ROOT / "examples" / "swiglu_mlp.mlir"


def swiglu_block(mlp: nj.NapkinFunction | None, x: jax.Array, w1: jax.Array, w3: jax.Array, w2: jax.Array) -> jax.Array:
    """A residual block around the SwiGLU MLP (the napkin kernel, or jax.numpy when mlp is None)."""
    if mlp is None:
        hidden = (jax.nn.silu(x @ w1) * (x @ w3)).astype(x.dtype)
        y = hidden @ w2
    else:
        out = mlp(x, w1, w3, w2)
        assert isinstance(out, jax.Array)
        y = out
    return jnp.tanh(x + y)


def swiglu64(x: jax.Array, w1: jax.Array, w3: jax.Array, w2: jax.Array) -> np.ndarray:
    x64, a, c, b = (np.asarray(t.astype(jnp.float32), np.float64) for t in (x, w1, w3, w2))
    xa = x64 @ a
    return x64 + (xa / (1 + np.exp(-xa)) * (x64 @ c)) @ b


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_example_diagram_inside_a_jitted_model(dtype: str, seed: int) -> None:
    """examples/swiglu_mlp.mlir (written at m=45, k=32, f=96, n=24 in bf16), re-sized and
    re-typed by the arrays it is called on, inside a jitted residual block."""
    rng = np.random.default_rng(seed)
    m, d, f = 33, 40, 72
    x, w1, w3 = _draw(rng, (m, d), dtype), _draw(rng, (d, f), dtype) / 6, _draw(rng, (d, f), dtype) / 6
    w2 = _draw(rng, (f, d), dtype) / 8
    mlp = nj.kernel(SWIGLU)
    out = jax.jit(lambda *a: swiglu_block(mlp, *a))(x, w1, w3, w2)
    assert out.shape == (m, d) and out.dtype == x.dtype
    # The kernel's own output, and the model's, each by the rule against float64.
    inner = jax.jit(lambda *a: mlp(*a))(x, w1, w3, w2)
    same = jax.jit(lambda x, w1, w3, w2: (jax.nn.silu(x @ w1) * (x @ w3)).astype(x.dtype) @ w2)(x, w1, w3, w2)
    model64 = swiglu64(x, w1, w3, w2)
    ref64 = model64 - np.asarray(x.astype(jnp.float32), np.float64)
    passed, rule = judge_dtype(dtype, reference.compare(np.asarray(inner.astype(jnp.float32)), ref64, same))
    assert passed, f"the kernel: {rule}"
    same_model = jax.jit(lambda *a: swiglu_block(None, *a))(x, w1, w3, w2)
    comparison = reference.compare(np.asarray(out.astype(jnp.float32)), np.tanh(model64), same_model)
    passed, rule = judge_dtype(dtype, comparison)
    assert passed, f"the model: {comparison} ({rule})"


def test_example_diagram_gradient_in_a_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, d, f = 17, 24, 40
    x, w1, w3 = _draw(rng, (m, d), "f32"), _draw(rng, (d, f), "f32") / 5, _draw(rng, (d, f), "f32") / 5
    w2 = _draw(rng, (f, d), "f32") / 6
    mlp = nj.kernel(SWIGLU)

    def loss(kernel: nj.NapkinFunction | None, *a: jax.Array) -> jax.Array:
        return jnp.mean(swiglu_block(kernel, *a) ** 2)

    got = jax.jit(jax.grad(lambda *a: loss(mlp, *a), argnums=(0, 1, 2, 3)))(x, w1, w3, w2)
    want = jax.grad(lambda *a: loss(None, *a), argnums=(0, 1, 2, 3))(x, w1, w3, w2)
    for name, g, r in zip(("x", "w1", "w3", "w2"), got, want, strict=True):
        assert rel_fro(g, r) <= 1e-5, f"d{name}: relative Frobenius {rel_fro(g, r):.3e}"


MATMUL = """func.func @matmul(%a: tensor<8x4xf32, {axes = ["m", "k"]}>, %b: tensor<4x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}> {
  %c = "napkin.contract"(%a, %b) : (tensor<8x4xf32, {axes = ["m", "k"]}>, tensor<4x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}>
  return %c : tensor<8x6xf32, {axes = ["m", "n"]}>
}
"""

FRESH_PROCESS = """
import json, sys
import numpy as np, jax
from napkin_mlir import jax as nj
text, a, b = open(sys.argv[1]).read(), np.load(sys.argv[2]), np.load(sys.argv[3])
y = jax.jit(nj.kernel(text))(a, b)
s = nj.cache_stats()
print(json.dumps({"cold": s.cold_compiles, "disk": s.disk_hits, "err": float(np.abs(np.asarray(y) - a @ b).max())}))
"""


def test_cache_hits_in_memory_then_on_disk_in_a_fresh_process(
    _private_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], seed: int
) -> None:
    monkeypatch.setenv("NAPKIN_JAX_LOG", "1")
    compiler_version.cache_clear()  # hash the sources now: the subprocess hashes them a few seconds later
    text = MATMUL + f"// cache test {uuid.uuid4()}\n"  # a diagram no other test compiled
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((13, 7)).astype(np.float32), rng.standard_normal((7, 11)).astype(np.float32)
    mlp = nj.kernel(text)
    before = nj.cache_stats()
    first = mlp(a, b)
    middle = nj.cache_stats()
    second = jax.jit(mlp)(a, b)
    after = nj.cache_stats()
    assert middle.cold_compiles == before.cold_compiles + 1 and middle.disk_hits == before.disk_hits
    assert after.cold_compiles == middle.cold_compiles and after.memory_hits == middle.memory_hits + 1
    log = capfd.readouterr().err
    assert "napkin.jax: cold compile: <text> on cpu" in log and "napkin.jax: memory hit: <text> on cpu" in log
    for y in (first, second):
        np.testing.assert_allclose(np.asarray(y), a @ b, rtol=1e-5, atol=1e-5)
    entries = list(_private_cache.rglob("*.json"))
    assert len(entries) == 1 and read_entry(entries[0].stem) is not None

    paths = [tmp_path / "diagram.mlir", tmp_path / "a.npy", tmp_path / "b.npy"]
    paths[0].write_text(text)
    np.save(paths[1], a)
    np.save(paths[2], b)
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, *map(str, paths)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"cold": 0, "disk": 1, "err": report["err"]} and report["err"] <= 1e-4, report
    assert "napkin.jax: disk hit: <text> on cpu" in proc.stderr


def test_an_unreadable_disk_entry_is_a_miss(_private_cache: Path) -> None:
    key = "ab" + "0" * 62
    path = _private_cache / "ab" / f"{key}.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "key": "ab')  # cut short, as by a crash
    assert read_entry(key) is None
    path.write_text(json.dumps({"format": 1, "key": "another"}))
    assert read_entry(key) is None


def test_the_handler_refuses_buffers_of_another_shape(seed: int) -> None:
    """Called on buffers other than those it was compiled for, the FFI handler returns an
    error naming the kernel instead of running."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    compiled = nj.kernel(MATMUL).compiled(a, b)
    np.testing.assert_allclose(np.asarray(compiled(jnp.asarray(a), jnp.asarray(b))[0]), a @ b, rtol=1e-5, atol=1e-5)
    wrong = jax.ffi.ffi_call(compiled.call_target, jax.ShapeDtypeStruct((8, 6), jnp.float32))
    with pytest.raises(Exception, match="do not match the shapes and dtypes it was compiled for"):
        jax.block_until_ready(wrong(jnp.ones((8, 5), jnp.float32), jnp.ones((5, 6), jnp.float32)))


def test_clear_errors() -> None:
    q = jnp.ones((1, 8, 5, 16), jnp.float32)
    kv = jnp.ones((1, 8, 2, 16), jnp.float32)
    with pytest.raises(UsageError, match="5 query heads are not a multiple of 2"):
        nj.attention(q, kv, kv)
    with pytest.raises(UsageError, match=r"query must be \(batch, seq, heads, head_dim\)"):
        nj.attention(q[0], kv, kv)
    q = jnp.ones((1, 8, 4, 16), jnp.float32)
    with pytest.raises(UsageError, match="share a dtype"):
        nj.attention(q, kv.astype(jnp.bfloat16), kv)
    with pytest.raises(UsageError, match="dtype int32"):
        nj.attention(q.astype(jnp.int32), kv.astype(jnp.int32), kv.astype(jnp.int32))
    with pytest.raises(UsageError, match="scale must be finite"):
        nj.attention(q, kv, kv, scale=float("inf"))
    mlp = nj.kernel(SWIGLU)
    x, w = jnp.ones((4, 8), jnp.float32), jnp.ones((9, 16), jnp.float32)
    with pytest.raises(UsageError, match="axis 'k' is 8 in input X but 9 in input W1"):
        mlp(x, w, w, jnp.ones((16, 8), jnp.float32))
    with pytest.raises(UsageError, match="takes 4 inputs"):
        mlp(x, w)
    with pytest.raises(UsageError, match="cannot read diagram"):
        nj.kernel("no/such/diagram.mlir")
    with pytest.raises(UsageError, match="unknown target"):
        nj.kernel(SWIGLU, target="sm_70")(x, *(jnp.ones(s, jnp.float32) for s in ((8, 16), (8, 16), (16, 8))))


def test_importable_without_the_mlir_wheels() -> None:
    """The package imports (and picks its target) where only JAX is installed, as on the GPU
    machine, where a kernel found in the disk cache needs no MLIR."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mlir' or name.startswith('mlir.'):\n"
        "            raise ImportError('mlir is blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from napkin_mlir import jax as nj\n"
        "print(nj.default_target(), len(nj.compiler_version()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cpu", "64"]


def test_a_builder_module_and_an_api_diagram_are_kernels(seed: int) -> None:
    from mlir import ir

    from napkin_mlir.api import Diagram
    from napkin_mlir.ir.context import napkin_context
    from napkin_mlir.ir.diagrams import build_builtin

    rng = np.random.default_rng(seed)
    with napkin_context(), ir.Location.unknown():
        matmul = nj.kernel(build_builtin("matmul", {"m": 5, "n": 6, "k": 7}))
    mlp = nj.kernel(Diagram.build(lambda: build_builtin("mlp", {"m": 4, "k": 6, "f": 8, "n": 3}, activation="silu")))
    a, b = _draw(rng, (11, 9), "f32"), _draw(rng, (9, 7), "f32")
    assert rel_fro(jax.jit(matmul)(a, b), np.asarray(a, np.float64) @ np.asarray(b, np.float64)) <= 1e-5
    x, w1, w2 = _draw(rng, (10, 6), "f32"), _draw(rng, (6, 12), "f32"), _draw(rng, (12, 5), "f32")
    h = np.asarray(x, np.float64) @ np.asarray(w1, np.float64)
    assert rel_fro(jax.jit(mlp)(x, w1, w2), (h / (1 + np.exp(-h))) @ np.asarray(w2, np.float64)) <= 1e-5


LEAVES_PRECISION_ALONE = """
import json, os
os.environ["NAPKIN_JAX_CACHE_DIR"] = "off"
import jax, jax.numpy as jnp
from napkin_mlir import jax as nj
a = jnp.ones((3, 5), jnp.float32)
y = jax.jit(nj.kernel(os.environ["DIAGRAM"]))(a, jnp.ones((5, 2), jnp.float32))
q, kv = jax.ShapeDtypeStruct((1, 20, 2, 16), jnp.bfloat16), jax.ShapeDtypeStruct((1, 20, 1, 16), jnp.bfloat16)
nj.attention_kernel(q, kv, kv, target="sm_80")
print(json.dumps({"x64": bool(jax.config.jax_enable_x64), "y": float(y.sum()), "dtype": str(jnp.ones(1).dtype)}))
"""


def test_compiling_leaves_the_callers_precision_alone(tmp_path: Path) -> None:
    """Compiling kernels (CPU and GPU) does not switch JAX to float64 in the caller's process."""
    diagram = tmp_path / "matmul.mlir"
    diagram.write_text(MATMUL)
    env = {**os.environ, "DIAGRAM": str(diagram)}
    proc = subprocess.run(
        [sys.executable, "-c", LEAVES_PRECISION_ALONE], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"x64": False, "y": 30.0, "dtype": "float32"}


# --- the GPU route -----------------------------------------------------------------------------


def _gpu_entry(dtype: str, target: str, tiles: dict[str, int] | None = None) -> dict:
    from napkin_mlir.jax.compile import AttentionProblem, compile_gpu
    from napkin_mlir.jax.ops import _attention_source

    dims = {"b": 2, "h": 4, "q": 100, "x": 77, "d": 64}
    source = _attention_source("napkin", dims, 2, dtype, True, 0.125)
    inputs = [
        BufferSpec(dtype, (2, 2, 2, 100, 64)),
        BufferSpec(dtype, (2, 2, 77, 64)),
        BufferSpec(dtype, (2, 2, 77, 64)),
    ]
    problem = AttentionProblem(dims, True, 2) if source.attention else None
    return compile_gpu(source.text, "attention", inputs, tiles, target, problem)


def test_kernel_call_launch_built_from_the_sidecar() -> None:
    """The tensor-core kernel fits jaxlib's kernel call: a (32 * warps, 1, 1) block, the
    sidecar's grid and dynamic shared memory, one array parameter per PTX parameter, inputs
    then the output. A SIMT kernel (2-D block) goes to the CuPy route, and says why. (The f32
    SIMT kernel is compiled at q=1, x=24, the tiles the cost model picks for it on sm_80: the
    same entry, PTX included, without the model's search over ~2000 tilings, which is
    test_tile_choice.py's and test_derive.py's subject, not this test's.)"""
    entry = _gpu_entry("bf16", "sm_90a")
    launch = GpuLaunch.from_entry(json.loads(json.dumps(entry)))  # as read back from the disk cache
    assert launch.kind == "tensorcore" and launch.triton_shaped() is None
    assert launch.block == (launch.num_warps * 32, 1, 1) and launch.num_warps >= 1
    assert launch.grid == (math.ceil(100 / entry["problem"]["tile"]["q"]), 2, 2)  # (q tiles, kv heads, batch)
    assert launch.num_warps * 16 == entry["problem"]["tile"]["q"] * 2  # 16 rows per warp of the (r, q) rows
    assert [(p.name, p.role) for p in launch.params] == [
        ("Q", "input"),
        ("K", "input"),
        ("V", "input"),
        ("out0", "output"),
    ]
    assert launch.ptx_params() == 4 and f".visible .entry {launch.entry}(" in launch.ptx
    assert launch.dynamic_smem_bytes == entry["dynamic_smem_bytes"] > 0
    simt = GpuLaunch.from_entry(_gpu_entry("f32", "sm_80", {"q": 1, "x": 24}))
    assert simt.kind == "simt" and simt.block == (32, 4, 1)
    assert simt.triton_shaped() == "block (32, 4, 1) is not (num_warps * 32, 1, 1)"
    bad = dict(entry, grid=[0, 1, 1])
    with pytest.raises(NapkinError, match="'grid' must be three positive integers"):
        GpuLaunch.from_entry(bad)


def test_kernel_call_proto_builds_where_jaxlib_has_cuda() -> None:
    from jax._src.lib import gpu_triton

    if not hasattr(gpu_triton, "TritonKernel"):
        pytest.skip("jaxlib has no CUDA plugin here: gpu_triton.TritonKernel exists only with jax's CUDA plugin")
    launch = GpuLaunch.from_entry(_gpu_entry("bf16", "sm_90a"))
    kernel = gpu_triton.TritonKernel(launch.entry, launch.num_warps, 1, launch.dynamic_smem_bytes, launch.ptx, "", 90)
    call = gpu_triton.TritonKernelCall(kernel, *launch.grid, [gpu_triton.create_array_parameter(0, 0)] * 4)
    assert len(call.to_proto(launch.entry, b"")) > len(launch.ptx)


CACHED_GPU_KERNEL = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "mlir" or name.startswith("mlir."):
            raise ImportError("mlir is blocked for this test")
sys.meta_path.insert(0, Block())
import jax, jax.numpy as jnp
from napkin_mlir import jax as nj
from napkin_mlir.errors import NapkinError
q, kv = jax.ShapeDtypeStruct((1, 40, 4, 32), jnp.bfloat16), jax.ShapeDtypeStruct((1, 40, 2, 32), jnp.bfloat16)
compiled = nj.attention_kernel(q, kv, kv, causal=True, target="sm_80")
try:
    jax.eval_shape(lambda q, k, v: nj.attention(q, k, v, causal=True, target="sm_80"), q, kv, kv)
    error = ""
except NapkinError as err:
    error = str(err)
s = nj.cache_stats()
mlir = any(m == "mlir" or m.startswith("mlir.") for m in sys.modules)
print(json.dumps({"cold": s.cold_compiles, "disk": s.disk_hits, "memory": s.memory_hits, "call": compiled.call_target, "error": error, "mlir": mlir}))
"""


def test_a_cached_gpu_kernel_loads_without_the_mlir_wheels(_private_cache: Path) -> None:
    """Compiled here (PTX needs no GPU), a GPU kernel is found in the disk cache by a process
    that cannot import MLIR, as on the GPU machine; without a GPU its launch then fails with a
    clear error, after the cache hit (test_jax_gpu.py runs it where there is one)."""
    compiler_version.cache_clear()
    q, kv = jax.ShapeDtypeStruct((1, 40, 4, 32), jnp.bfloat16), jax.ShapeDtypeStruct((1, 40, 2, 32), jnp.bfloat16)
    compiled = nj.attention_kernel(q, kv, kv, causal=True, target="sm_80")
    assert compiled.call_target == "triton_kernel_call_ffi" and compiled.outputs == (
        BufferSpec("bf16", (1, 2, 2, 40, 32)),
    )
    [path] = _private_cache.rglob("*.json")
    entry = read_entry(path.stem)
    assert entry is not None and entry["kind"] == "tensorcore" and entry["target"] == "sm_80"
    proc = subprocess.run(
        [sys.executable, "-c", CACHED_GPU_KERNEL], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cold"] == 0 and report["disk"] == 1 and report["memory"] == 1 and not report["mlir"], report
    assert report["call"] == "triton_kernel_call_ffi", report
    assert "compute capability" in report["error"], report  # no GPU here: the launch fails, clearly
