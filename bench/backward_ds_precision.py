"""How precise must dS be in a tensor-core attention backward? A study on the CPU (issue 14).

The backward diagram (`napkin-differentiate`) keeps dS = P ∘ (dP − D) in f32 and contracts
it with Q (dK) and K (dQ) in f32. mma.sync and wgmma take 16-bit operands, so a tensor-core
kernel must either round dS to bf16 (FlashAttention-2's numerics) or split it into two bf16
parts, hi = bf16(dS) and lo = bf16(dS − hi), and run two MMAs (their products are exact in
f32). This script draws random attention problems (bf16, odd and power-of-two sizes), computes
dQ, dK, dV the three ways and judges each against the float64 VJP by the project's 16-bit
rule (max error at most twice that of `jax.vjp` of the bf16 interpretation).

    .venv/bin/python bench/backward_ds_precision.py [trials] [-o bench/results/FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
F32 = jnp.float32
FORMS = ("f32", "bf16", "split")


def forward(q: jax.Array, k: jax.Array, v: jax.Array, low: bool) -> jax.Array:
    """The attention diagram's interpretation: bf16 inputs, f32 scores and softmax, P cast to
    bf16, O accumulated in f32 and cast to bf16 (`low`), or everything in float64."""
    t = F32 if low else jnp.float64
    s = jnp.einsum("qd,xd->qx", q.astype(t), k.astype(t)) / np.sqrt(q.shape[-1])
    p = jax.nn.softmax(s, axis=-1)
    if not low:
        return p @ v
    o = p.astype(jnp.bfloat16).astype(F32) @ v.astype(F32)
    return o.astype(jnp.bfloat16)


def backward(q: jax.Array, k: jax.Array, v: jax.Array, do: jax.Array, form: str) -> list[jax.Array]:
    """dQ, dK, dV as a kernel computes them, dS in f32, rounded to bf16, or split hi + lo."""
    qf, kf, vf, dof = (a.astype(F32) for a in (q, k, v, do))
    scale = 1 / np.sqrt(q.shape[-1])
    p = jax.nn.softmax(qf @ kf.T * scale, axis=-1)
    pb = p.astype(jnp.bfloat16).astype(F32)
    dv = pb.T @ dof
    dp = dof @ vf.T
    ds = p * (dp - jnp.sum(dp * pb, axis=-1, keepdims=True))
    parts = [ds]
    if form == "bf16":
        parts = [ds.astype(jnp.bfloat16).astype(F32)]
    elif form == "split":
        hi = ds.astype(jnp.bfloat16).astype(F32)
        parts = [hi, (ds - hi).astype(jnp.bfloat16).astype(F32)]
    dq = sum(part @ kf for part in parts) * scale
    dk = sum(part.T @ qf for part in parts) * scale
    return [x.astype(jnp.bfloat16) for x in (dq, dk, dv)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trials", type=int, nargs="?", default=60)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    fails = dict.fromkeys(FORMS, 0)
    worst = dict.fromkeys(FORMS, 0.0)
    judged = 0
    for _ in range(args.trials):
        n_q, n_x, d = rng.choice([37, 64, 128, 200]), rng.choice([29, 64, 128, 300]), rng.choice([16, 64, 128])
        shapes = [(n_q, d), (n_x, d), (n_x, d), (n_q, d)]
        q, k, v, do = (jnp.asarray(rng.standard_normal(s)).astype(jnp.bfloat16) for s in shapes)
        wide = [a.astype(jnp.float64) for a in (q, k, v, do)]
        ref = jax.vjp(lambda a, b, c: forward(a, b, c, False), *wide[:3])[1](wide[3])
        same = jax.vjp(lambda a, b, c: forward(a, b, c, True), q, k, v)[1](do)
        for form in FORMS:
            for ours, j, r in zip(backward(q, k, v, do, form), same, ref, strict=True):
                r64 = np.asarray(r, np.float64)
                err = float(np.max(np.abs(np.asarray(ours, np.float64) - r64)))
                jax_err = float(np.max(np.abs(np.asarray(j, np.float64) - r64)))
                worst[form] = max(worst[form], err / jax_err)
                fails[form] += err > 2 * jax_err + 1e-6
        judged += 3
    result = {
        "study": "attention backward: precision of dS on tensor cores",
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "outputs_judged": judged,
        "fails_of_the_2x_jax_rule": fails,
        "worst_error_over_jax": worst,
    }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
