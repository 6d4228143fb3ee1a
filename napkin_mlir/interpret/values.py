"""The values the interpreter carries: arrays with their axis names, and index offsets.

A napkin array is interpreted as a `Named`: a `jax.Array` plus the name of each of its axes.
Ops relate their operands by axis name, so every rule aligns its operands by name
(`Named.aligned`) and puts its result in the order of its declared type
(`Named.transposed`). The sizes are those of the actual data, which are smaller than the
static type inside the last (partial) group or chunk of a partition. `index` values
(group and chunk offsets) are Python ints.

`Precision` fixes the element types: `"f64"` computes every array in float64 (casts to a
lower precision are identities: the ground truth), `"same"` stores every array in its
declared element type and computes elementwise math on f16/bf16 in f32 before rounding
back, as the loop lowering does (`napkin_mlir/lowering/loops.py`, `to_f32`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from napkin_mlir.errors import NapkinError

Precision = Literal["f64", "same"]
PRECISIONS: tuple[str, ...] = ("f64", "same")

#: napkin dtype names -> JAX dtypes.
JNP_DTYPES: dict[str, jnp.dtype] = {
    "f64": jnp.dtype(jnp.float64),
    "f32": jnp.dtype(jnp.float32),
    "f16": jnp.dtype(jnp.float16),
    "bf16": jnp.dtype(jnp.bfloat16),
    "i32": jnp.dtype(jnp.int32),
}


def storage_dtype(dtype: str, precision: str) -> jnp.dtype:
    """The JAX dtype an array of napkin dtype `dtype` is held in."""
    if dtype not in JNP_DTYPES:
        raise NapkinError(f"interpret: unsupported element type '{dtype}'")
    return JNP_DTYPES["f64"] if precision == "f64" and dtype != "i32" else JNP_DTYPES[dtype]


def compute_dtype(dtype: str, precision: str) -> jnp.dtype:
    """The JAX dtype elementwise math on `dtype` runs in (f16/bf16 widen to f32)."""
    if precision == "f64" and dtype != "i32":
        return JNP_DTYPES["f64"]
    return JNP_DTYPES["f32"] if dtype in ("f16", "bf16") else JNP_DTYPES[dtype]


@dataclass(frozen=True)
class Named:
    """An array with one name per axis (names unique, in the order of the data's axes)."""

    data: jax.Array
    axes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.data.ndim != len(self.axes):
            raise NapkinError(f"interpret: array of rank {self.data.ndim} named by axes {list(self.axes)}")

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.axes, self.data.shape, strict=True))

    def size(self, axis: str) -> int:
        return int(self.data.shape[self.axes.index(axis)])

    def astype(self, dtype: jnp.dtype) -> Named:
        return self if self.data.dtype == dtype else Named(self.data.astype(dtype), self.axes)

    def transposed(self, axes: Sequence[str]) -> Named:
        """The same array with its axes in the order `axes` (the same set of names)."""
        if sorted(axes) != sorted(self.axes):
            raise NapkinError(f"interpret: cannot lay out axes {list(self.axes)} as {list(axes)}")
        if tuple(axes) == self.axes:
            return self
        return Named(self.data.transpose([self.axes.index(a) for a in axes]), tuple(axes))

    def aligned(self, axes: Sequence[str]) -> jax.Array:
        """The data laid out along `axes` (a superset of this array's axes), with a size-1
        axis wherever this array lacks one: ready to broadcast against other aligned data."""
        missing = [a for a in self.axes if a not in axes]
        if missing:
            raise NapkinError(f"interpret: axis '{missing[0]}' of {list(self.axes)} is not among {list(axes)}")
        data = self.transposed([a for a in axes if a in self.axes]).data
        if len(axes) == len(self.axes):
            return data
        return data.reshape([self.size(a) if a in self.axes else 1 for a in axes])

    def cut(self, offsets: dict[str, int], extents: dict[str, int]) -> Named:
        """The tile starting at `offsets` with `extents` along the named axes it has."""
        if not any(a in offsets for a in self.axes):
            return self
        window = tuple(slice(offsets[a], offsets[a] + extents[a]) if a in offsets else slice(None) for a in self.axes)
        return Named(self.data[window], self.axes)


#: What a block argument or an op result is bound to while interpreting.
Value = Named | jax.Array | int | bool


def as_int(value: object, what: str) -> int:
    """An index value as a Python int."""
    if isinstance(value, Named):
        raise NapkinError(f"interpret: {what} must be an index, got an array with axes {list(value.axes)}")
    return int(np.asarray(value))
