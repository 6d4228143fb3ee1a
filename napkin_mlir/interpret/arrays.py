"""The array libraries the interpreter computes with: jax.numpy, or numpy.

The rules call array functions through the interpreter's namespace (`Interpreter.xp`), which
is one of two: `JAX` (jax.numpy: the default, traceable under `jax.jit` and `jax.vjp`, and
the only one for `"same"` precision, whose 16-bit arithmetic is JAX's) or `NUMPY` (numpy in
float64, for a caller that evaluates many small programs of ever-changing shapes: eager
jax.numpy compiles each op for each new shape, numpy does not; the fuzzer's float64
references take it). Both offer numpy's names plus `erf`, `rsqrt` and `einsum(spec, a, b,
preferred_element_type=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special


class Namespace:
    """`module`'s functions, with the names in `extra` overridden or added."""

    def __init__(self, name: str, module: ModuleType, **extra: Callable[..., Any]) -> None:
        self.name = name
        self._module = module
        self._extra = extra

    def __getattr__(self, attr: str) -> Any:
        extra = self.__dict__.get("_extra", {})
        if attr in extra:
            return extra[attr]
        return getattr(self.__dict__["_module"], attr)


def _jax_einsum(spec: str, a: Any, b: Any, preferred_element_type: Any = None) -> Any:
    return jnp.einsum(spec, a, b, preferred_element_type=preferred_element_type, precision=jax.lax.Precision.HIGHEST)


def _numpy_einsum(spec: str, a: Any, b: Any, preferred_element_type: Any = None) -> Any:
    out = np.einsum(spec, a, b)
    return out if preferred_element_type is None else out.astype(preferred_element_type)


JAX = Namespace("jax", jnp, erf=jax.lax.erf, rsqrt=jax.lax.rsqrt, einsum=_jax_einsum)
NUMPY = Namespace("numpy", np, erf=scipy.special.erf, rsqrt=lambda x: 1.0 / np.sqrt(x), einsum=_numpy_einsum)

#: Namespaces by the name `interpret(..., arrays=...)` takes.
NAMESPACES = {"jax": JAX, "numpy": NUMPY}
