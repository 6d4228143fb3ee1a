"""Symbolic expressions of the performance model: sums of monomials `coeff * prod(symbol ** power)`
in the axis sizes (`q`, `d`, ...) and the tile symbols `g_<axis>` (group) and `s_<axis>`
(stream), e.g. `2·b·h·d·q·x/g_q`. Small and exact enough for the model's sums, so no sympy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Expr:
    """A polynomial with rational exponents in named symbols (no sympy)."""

    terms: tuple[tuple[tuple[tuple[str, int], ...], float], ...] = ()

    @staticmethod
    def const(c: float) -> Expr:
        return Expr((((), float(c)),)) if c else Expr()

    @staticmethod
    def sym(name: str, power: int = 1) -> Expr:
        return Expr(((((name, power),), 1.0),))

    def _dict(self) -> dict[tuple[tuple[str, int], ...], float]:
        return dict(self.terms)

    @staticmethod
    def _from(d: dict[tuple[tuple[str, int], ...], float]) -> Expr:
        return Expr(tuple(sorted((k, v) for k, v in d.items() if v)))

    def __add__(self, other: Expr | float) -> Expr:
        other = other if isinstance(other, Expr) else Expr.const(other)
        d = self._dict()
        for k, v in other.terms:
            d[k] = d.get(k, 0.0) + v
        return Expr._from(d)

    __radd__ = __add__

    def __mul__(self, other: Expr | float) -> Expr:
        other = other if isinstance(other, Expr) else Expr.const(other)
        d: dict[tuple[tuple[str, int], ...], float] = {}
        for (k1, v1), (k2, v2) in itertools.product(self.terms, other.terms):
            powers: dict[str, int] = dict(k1)
            for s, p in k2:
                powers[s] = powers.get(s, 0) + p
            key = tuple(sorted((s, p) for s, p in powers.items() if p))
            d[key] = d.get(key, 0.0) + v1 * v2
        return Expr._from(d)

    __rmul__ = __mul__

    def symbols(self) -> set[str]:
        return {s for k, _ in self.terms for s, _ in k}

    def evaluate(self, env: dict[str, float]) -> float:
        total = 0.0
        for k, c in self.terms:
            v = c
            for s, p in k:
                v *= env[s] ** p
            total += v
        return total

    def split(self, symbol_prefixes: tuple[str, ...] = ("g_", "s_")) -> tuple[Expr, Expr]:
        """(terms independent of the tile symbols, terms that depend on them)."""
        fixed, dep = {}, {}
        for k, c in self.terms:
            (dep if any(s.startswith(symbol_prefixes) for s, _ in k) else fixed)[k] = c
        return Expr._from(fixed), Expr._from(dep)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        order = {"b": 0, "h": 1, "r": 2}
        parts = []
        for k, c in sorted(self.terms, key=lambda t: (-sum(p for _, p in t[0] if p > 0), str(t[0]))):
            num = sorted((s for s, p in k if p > 0 for _ in range(p)), key=lambda s: (order.get(s, 5), s))
            den = sorted((s for s, p in k if p < 0 for _ in range(-p)), key=lambda s: (order.get(s, 5), s))
            coeff = f"{c:g}" if c != 1 or not num else ""
            body = "·".join(([coeff] if coeff else []) + num)
            if den:
                body += "/" + ("·".join(den) if len(den) == 1 else "(" + "·".join(den) + ")")
            parts.append(body)
        return " + ".join(parts)
