"""Integer mask data (segment or document ids): the dtypes, and the ids the checks draw for
them (`check.reference.random_inputs`, which also fills the reference arrays a GPU run of a
diagram file reads). Imports numpy only: `ir.arrays` takes its dtypes from here."""

from __future__ import annotations

import numpy as np

#: The integer dtypes of napkin arrays: data that only mask predicates read.
INTEGER_DTYPES = ("i32",)


def segment_ids(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Document ids along the last axis: non-decreasing, documents of random lengths (about
    an eighth of the axis each). The ids depend only on the seed and the axis length, so
    the ids of the queries and of the keys agree when their axes have the same length (a
    document mask over self-attention then leaves no query without keys)."""
    n = shape[-1] if shape else 1
    starts = np.random.default_rng([seed, n]).random(n) < 8.0 / max(n, 8)
    starts[0] = False
    return np.broadcast_to(np.cumsum(starts).astype(np.int32), shape).copy()
