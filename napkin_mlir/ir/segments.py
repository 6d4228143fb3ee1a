"""Integer mask data (segment or document ids): the dtypes, and the ids the checks draw for
them (`check.reference.random_inputs`, which also fills the reference arrays a GPU run of a
diagram file reads). Imports numpy only: `ir.arrays` takes its dtypes from here."""

from __future__ import annotations

import numpy as np

#: The integer dtypes of napkin arrays: data that only mask predicates read.
INTEGER_DTYPES = ("i32",)


def segment_ids(shape: tuple[int, ...], seed: int, span: int | None = None) -> np.ndarray:
    """Document ids along the last axis: non-decreasing, documents of random lengths (about an
    eighth of `span`, the longest id axis of the problem; default this one). The ids of a
    position depend only on the seed, the position and `span`: arrays of several lengths
    drawn with one `span` are prefixes of one sequence, so the ids of the queries and of the
    keys agree where both exist (a causal document mask then leaves no query without keys
    when there are at most as many queries as keys)."""
    n = shape[-1] if shape else 1
    span = max(span or n, n)
    starts = np.random.default_rng([seed, 7]).random(span) < 8.0 / max(span, 8)
    starts[0] = False
    ids = np.cumsum(starts).astype(np.int32)[:n]
    return np.broadcast_to(ids, shape).copy()
