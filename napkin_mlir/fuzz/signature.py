"""Failure signatures: messages without what changes from one instance to the next.

Two failures are the same bug when their category, the pass they happen in and their
normalized message agree: `normalize` drops locations, pass options in braces, quoted
names, bracketed shapes and numbers. `located` is the rule for refusals: a message that
holds a `file:line:col` or names a napkin op says where.
"""

from __future__ import annotations

import re

_LOCATED = re.compile(r"\S+:\d+:\d+|napkin\.[a-z_]+")


def normalize(message: str) -> str:
    """The first line of `message` with locations, options, names, shapes and numbers blanked."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = re.sub(r"\S+:\d+:\d+:?\s*", "", first)
    first = re.sub(r"\{[^{}]*\}", "", first)
    first = re.sub(r"'[^']*'", "'_'", first)
    first = re.sub(r"\[[^\]]*\]", "[_]", first)
    first = re.sub(r"\b(bf16|f16|f32|f64)\b|\s*@(gmem|smem|reg)\b", "", first)
    first = re.sub(r"0x[0-9a-fA-F]+|[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "N", first)
    return first[:120]


def located(message: str) -> bool:
    """A refusal that says where: a `file:line:col` or a napkin op's name."""
    return bool(_LOCATED.search(message))
