"""A seeded generator of random napkin diagrams (`generate(seed) -> Spec`).

Every diagram is a DAG of boxes over random named axes with random sizes (1 and primes
among them), in f32 or in bf16 (bf16 inputs contracted with f32 accumulation and cast back,
as the built-ins do): contractions (any result axes, in any order, including axes summed
out of one operand only), elementwise functions, scales, casts, binary ops broadcasting by
axis name, maps with random scalar bodies, sum/max reductions, softmaxes, causal masks,
and one to three outputs. Besides single boxes the generator plants the motifs the passes
exist for (attention with and without a mask, a normalized contraction, an MLP, an
RMS-normalization) so that the stream partition sees its streamable forms often.

The diagrams must be numerically sound, or the correctness rule could not tell a bug from
a badly conditioned program: every value carries an estimate of its magnitude and of a
bound on it (`Num`); an `exp` is only applied to bounded values, a division only by
positive values (no cancellation in the divisor, no overflow in the quotient), a mask's -inf
entries only reach a softmax, a max-reduction or an `exp` along the masked columns, and map
bodies are continuous (no floor, no sign discontinuity; `select` only in the continuous
forms max and leaky-relu). About a third of the diagrams keep dead boxes (the passes must
cope with boxes no output needs).

Every spec `generate` returns types (`spec.infer_types`) and passes `napkin-verify`; one the
verifier rejects is a generator bug (the differential check counts it as a failure).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from napkin_mlir.fuzz.spec import MASK_KINDS, Input, Instr, Op, Spec, VType, infer_types

#: Axis names to draw from (diagrams use 2 to 5 of them).
AXIS_NAMES = ("a", "b", "c", "d", "e", "h", "i", "j", "k", "m", "n", "p", "q", "r", "s", "t", "x", "y", "z", "k2")
#: Axis sizes, with their weights: 1, primes, powers of two and others.
SIZES = (1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 17, 24, 29, 31, 32, 37, 48, 64)
SIZE_WEIGHTS = (6, 4, 5, 3, 5, 6, 3, 5, 5, 3, 5, 2, 4, 3, 2, 3, 1, 1)
#: Most elements one array may hold, and most iterations one contraction may take.
MAX_ELEMENTS = 4096
MAX_CONTRACT = 40_000

UNARY = ("exp", "tanh", "relu", "gelu", "silu")
BINARY = ("add", "sub", "mul", "div", "max")
MOTIFS = ("attention", "normalized", "mlp", "rmsnorm")
#: Largest argument an exp gets (e^30 ~ 1e13 is far from f32's overflow; its relative error
#: is about 30 ulp, inside the f32 rule).
EXP_MAX = 30.0


@dataclass(frozen=True)
class Num:
    """What is known of a value's numbers: typical magnitude, a bound on |v|, a positive
    lower bound (None when the value may be <= 0) and whether it holds -inf (a mask)."""

    mag: float
    bound: float
    lo: float | None = None
    masked: bool = False


class Generator:
    """Builds one spec from one `random.Random`."""

    def __init__(self, rng: random.Random, dtype: str) -> None:
        self.rng = rng
        self.dtype = dtype
        self.max_elements = MAX_ELEMENTS  # most elements of one array
        self.max_contract = MAX_CONTRACT  # most iterations of one contraction
        n_axes = rng.randint(2, 5)
        names = rng.sample(AXIS_NAMES, n_axes)
        self.sizes = {a: rng.choices(SIZES, SIZE_WEIGHTS)[0] for a in names}
        self.inputs: list[Input] = []
        self.ops: list[Op] = []
        self.types: list[VType | None] = []  # per value; None until placed (inputs come first)
        self.nums: list[Num] = []
        self.kinds: list[str] = []  # "in" or "op" per value, in creation order
        self.uses: list[int] = []
        self.hidden: set[int] = set()  # values only their planned consumer may use (masks)

    # --- values -----------------------------------------------------------------------------

    def elements(self, axes: tuple[str, ...] | list[str]) -> int:
        return math.prod(self.sizes[a] for a in axes)

    def new_input(self, axes: tuple[str, ...], dtype: str | None = None) -> int:
        dtype = dtype or self.dtype
        self.inputs.append(Input(f"A{len(self.inputs)}", list(axes), dtype))
        self.kinds.append("in")
        self.types.append(VType(tuple(axes), dtype))
        self.nums.append(Num(1.0, 5.0))
        self.uses.append(0)
        return len(self.kinds) - 1

    def add(self, op: Op, t: VType, num: Num) -> int:
        self.ops.append(op)
        self.kinds.append("op")
        self.types.append(t)
        self.nums.append(num)
        self.uses.append(0)
        for v in op.operands:
            self.uses[v] += 1
        return len(self.kinds) - 1

    def t(self, v: int) -> VType:
        t = self.types[v]
        assert t is not None
        return t

    def pool(self) -> list[int]:
        return [v for v in range(len(self.kinds)) if v not in self.hidden and not self.nums[v].masked]

    def pick(self, pred: Callable[[int], bool] | None = None) -> int | None:
        """A value, recent ones and unused ones more likely."""
        cands = [v for v in self.pool() if pred is None or pred(v)]
        if not cands:
            return None
        weights = [1.0 + 2.0 * (i / len(cands)) + (1.5 if self.uses[v] == 0 else 0.0) for i, v in enumerate(cands)]
        return self.rng.choices(cands, weights)[0]

    def random_axes(self, lo: int = 1, hi: int = 3) -> tuple[str, ...]:
        names = list(self.sizes)
        for _ in range(20):
            k = self.rng.randint(lo, min(hi, len(names)))
            axes = tuple(self.rng.sample(names, k))
            if self.elements(axes) <= self.max_elements:
                return axes
        return (min(names, key=lambda a: self.sizes[a]),)

    def ensure_inputs(self) -> None:
        for _ in range(self.rng.randint(1, 3)):
            self.new_input(self.random_axes())

    # --- dtype helpers ----------------------------------------------------------------------

    def cast(self, v: int, dtype: str) -> int:
        t = self.t(v)
        if t.dtype == dtype:
            return v
        return self.add(Op("cast", [v], dtype=dtype), VType(t.axes, dtype), self.nums[v])

    def low(self, v: int) -> int:
        """`v` in the diagram's storage dtype (bf16 diagrams cast f32 values down)."""
        return self.cast(v, self.dtype)

    def acc(self) -> str:
        return "f32"

    # --- boxes ------------------------------------------------------------------------------

    def contract(self, lhs: int, rhs: int, out: tuple[str, ...] | None = None) -> int | None:
        a, b = self.t(lhs), self.t(rhs)
        if a.dtype != b.dtype:
            lhs, rhs = self.low(lhs), self.low(rhs)
            a, b = self.t(lhs), self.t(rhs)
        union = list(dict.fromkeys([*a.axes, *b.axes]))
        if self.elements(union) > self.max_contract:
            return None
        if out is None:
            k = self.rng.randint(1, max(1, min(3, len(union))))
            out = tuple(self.rng.sample(union, k))
        if not out or self.elements(out) > self.max_elements:
            return None
        summed = self.elements([x for x in union if x not in out])
        na, nb = self.nums[lhs], self.nums[rhs]
        mag = na.mag * nb.mag * math.sqrt(summed)
        num = Num(mag, min(na.bound * nb.bound * summed, 6.0 * mag + na.bound * nb.bound))
        dtype = self.acc() if a.dtype in ("bf16", "f16") else a.dtype
        return self.add(Op("contract", [lhs, rhs], axes=list(out), dtype=dtype), VType(out, dtype), num)

    def normalize(self, v: int) -> int:
        """Scale `v` down when it is large, as attention scales its scores by 1/sqrt(d)."""
        n = self.nums[v]
        if n.mag <= 2.0:
            return v
        f = 1.0 / n.mag
        return self.add(Op("scale", [v], factor=f), self.t(v), Num(n.mag * f, n.bound * f, None))

    def unary(self, v: int, fn: str | None = None) -> int | None:
        n = self.nums[v]
        choices = [f for f in UNARY if f != "exp" or n.bound <= EXP_MAX]
        fn = fn or self.rng.choice(choices)
        if fn == "exp" and n.bound > EXP_MAX:
            return None
        if fn == "exp":
            num = Num(math.exp(min(n.mag, n.bound)), math.exp(n.bound), math.exp(-n.bound))
        elif fn == "tanh":
            num = Num(min(n.mag, 1.0), min(n.bound, 1.0))
        else:  # relu, gelu, silu: |f(x)| <= |x|, gelu/silu dip to about -0.28
            num = Num(n.mag, n.bound)
        return self.add(Op("unary", [v], fn=fn), self.t(v), num)

    def scale(self, v: int) -> int:
        f = self.rng.choice((0.5, -1.25, 0.125, 3.0, 1.0 / math.sqrt(max(2, self.elements(self.t(v).axes)))))
        n = self.nums[v]
        lo = n.lo * f if n.lo is not None and f > 0 else None
        return self.add(Op("scale", [v], factor=f), self.t(v), Num(n.mag * abs(f), n.bound * abs(f), lo))

    def binary(self, lhs: int, rhs: int, fn: str | None = None) -> int | None:
        if self.t(lhs).dtype != self.t(rhs).dtype:
            target = self.t(lhs).dtype if self.rng.random() < 0.5 else self.t(rhs).dtype
            lhs, rhs = self.cast(lhs, target), self.cast(rhs, target)
        a, b = self.t(lhs), self.t(rhs)
        axes = tuple(dict.fromkeys([*a.axes, *b.axes]))
        if self.elements(axes) > self.max_elements:
            return None
        na, nb = self.nums[lhs], self.nums[rhs]
        # a quotient is as accurate as its operands when the divisor is positive (no cancellation)
        choices = [
            f for f in BINARY if f != "div" or (nb.lo is not None and nb.lo >= 1e-20 and na.bound / nb.lo < 1e20)
        ]
        fn = fn or self.rng.choice(choices)
        if fn == "div" and fn not in choices:
            return None
        if fn in ("add", "sub"):
            lo = na.lo + nb.lo if fn == "add" and na.lo is not None and nb.lo is not None else None
            num = Num(na.mag + nb.mag, na.bound + nb.bound, lo)
        elif fn == "mul":
            lo = na.lo * nb.lo if na.lo is not None and nb.lo is not None else None
            num = Num(na.mag * nb.mag, na.bound * nb.bound, lo)
        elif fn == "div":
            assert nb.lo is not None
            lo = na.lo / nb.bound if na.lo is not None else None
            num = Num(na.mag / nb.lo if nb.lo < 1 else na.mag, na.bound / nb.lo, lo)
        else:
            lo = max(x for x in (na.lo, nb.lo) if x is not None) if (na.lo or nb.lo) else None
            num = Num(max(na.mag, nb.mag), max(na.bound, nb.bound), lo)
        if num.bound > 1e12:
            return None
        return self.add(Op("binary", [lhs, rhs], fn=fn), VType(axes, a.dtype), num)

    def reduce(self, v: int, kind: str | None = None, axis: str | None = None) -> int | None:
        t = self.t(v)
        if len(t.axes) < 2:
            return None
        axis = axis or self.rng.choice(t.axes)
        kind = kind or self.rng.choice(("sum", "max"))
        n = self.nums[v]
        size = self.sizes[axis]
        if kind == "sum":
            lo = n.lo * size if n.lo is not None else None
            num = Num(n.mag * math.sqrt(size) if n.lo is None else n.mag * size, n.bound * size, lo)
        else:
            num = Num(n.mag, n.bound, n.lo)
        axes = tuple(a for a in t.axes if a != axis)
        return self.add(Op("reduce", [v], fn=kind, axis=axis), VType(axes, t.dtype), num)

    def softmax(self, v: int, axis: str | None = None) -> int:
        t = self.t(v)
        axis = axis or self.rng.choice(t.axes)
        lo = math.exp(-2.0 * min(self.nums[v].bound, 50.0)) / self.sizes[axis]
        return self.add(Op("softmax", [v], axis=axis), t, Num(1.0 / self.sizes[axis], 1.0, lo))

    def mask_kind(self, rows: str, cols: str) -> dict[str, Any]:
        """A random mask predicate (`spec.MASK_KINDS`) that keeps a key in every row."""
        n, m = self.sizes[rows], self.sizes[cols]
        kinds = [k for k in MASK_KINDS if n <= m or k in ("causal", "prefix")]
        return {"mask": self.rng.choice(kinds), "width": self.rng.randint(1, max(1, m))}

    def masked(self, v: int) -> int | None:
        """A causal mask and its consumer: softmax or max along the columns, or exp."""
        t = self.t(v)
        if len(t.axes) < 2:
            return None
        rows, cols = self.rng.sample(list(t.axes), 2)
        n = self.nums[v]
        m = self.add(
            Op("mask", [v], rows=rows, cols=cols, **self.mask_kind(rows, cols)),
            t,
            Num(n.mag, n.bound, None, masked=True),
        )
        choice = self.rng.choice(("softmax", "softmax", "max", "exp") if n.bound <= EXP_MAX else ("softmax", "max"))
        if choice == "softmax":
            return self.add(Op("softmax", [m], axis=cols), t, Num(1.0 / self.sizes[cols], 1.0))
        if choice == "max":
            axes = tuple(a for a in t.axes if a != cols)
            return self.add(Op("reduce", [m], fn="max", axis=cols), VType(axes, t.dtype), Num(n.mag, n.bound))
        return self.add(Op("unary", [m], fn="exp"), t, Num(math.exp(n.mag), math.exp(n.bound)))

    def map(self, xs: list[int]) -> int | None:
        types = [self.t(v) for v in xs]
        dtype = types[0].dtype
        xs = [self.cast(v, dtype) for v in xs]
        axes = tuple(dict.fromkeys(a for v in xs for a in self.t(v).axes))
        if self.elements(axes) > self.max_elements:
            return None
        bounds = [(-self.nums[v].bound, self.nums[v].bound) for v in xs]
        body, (lo, hi) = random_body(self.rng, bounds)
        mag = max(abs(lo), abs(hi))
        num = Num(min(mag, max(self.nums[v].mag for v in xs) + 1.0), mag, lo if lo > 0 else None)
        return self.add(Op("map", xs, body=body), VType(axes, dtype), num)

    # --- attention variants -----------------------------------------------------------------

    def score_op(self, s: int) -> int | None:
        """One random elementwise op on the scores (see `generate_variant`)."""
        kind = self.rng.choice(("softcap", "unary", "table", "map"))
        if kind == "softcap":
            cap = self.rng.choice((1.0, 2.5, 30.0))
            inner = self.add(
                Op("scale", [s], factor=1.0 / cap), self.t(s), Num(self.nums[s].mag / cap, self.nums[s].bound / cap)
            )
            capped = self.unary(inner, "tanh")
            if capped is None:
                return None
            n = self.nums[capped]
            return self.add(Op("scale", [capped], factor=cap), self.t(capped), Num(n.mag * cap, n.bound * cap))
        if kind == "unary":
            return self.unary(s, self.rng.choice(("tanh", "relu", "gelu", "silu")))
        axes = tuple(a for a in ("b", "h", "q", "x") if self.rng.random() < 0.5) or ("x",)
        table = self.new_input(axes, self.rng.choice(("f32", "bf16")))
        if kind == "table":
            return self.binary(self.cast(s, "f32"), self.cast(table, "f32"), self.rng.choice(("add", "mul", "sub")))
        return self.map([s, self.cast(table, "f32")] if self.rng.random() < 0.5 else [s])

    def output_op(self, o: int) -> int | None:
        """One random elementwise op on O before its cast (see `generate_variant`)."""
        kind = self.rng.choice(("scale", "unary", "gate"))
        if kind == "scale":
            return self.scale(o)
        if kind == "unary":
            return self.unary(o, self.rng.choice(("tanh", "relu", "silu")))
        axes = tuple(a for a in ("b", "h", "q") if self.rng.random() < 0.6) or ("q",)
        gate = self.new_input(axes, "f32")
        return self.binary(o, gate, "mul")

    # --- motifs -----------------------------------------------------------------------------

    def motif(self, name: str) -> int | None:
        """A pattern the passes know (attention, a normalized contraction, an MLP, RMSNorm)."""
        names = list(self.sizes)
        if len(names) < 3:
            return None
        q, x, d = self.rng.sample(names, 3)
        rest = [a for a in names if a not in (q, x, d)]
        batch = tuple(self.rng.sample(rest, self.rng.randint(0, min(2, len(rest)))))
        e = self.rng.choice([d, *[a for a in rest if a not in batch]])
        if self.elements((*batch, q, x)) > self.max_elements or self.elements((*batch, q, x, d)) > self.max_contract:
            return None
        if self.elements((*batch, q, x, e)) > self.max_contract:
            return None
        if name == "attention" or name == "normalized":
            Q = self.new_input(self._perm((*batch, q, d)))
            K = self.new_input(self._perm((*batch, x, d)))
            V = self.new_input(self._perm((*batch, x, e)))
            s = self.contract(Q, K, (*batch, q, x))
            if s is None:
                return None
            s = self.normalize(s)
            if name == "attention":
                if self.rng.random() < 0.4:
                    m = self.add(
                        Op("mask", [s], rows=q, cols=x, **self.mask_kind(q, x)),
                        self.t(s),
                        Num(self.nums[s].mag, self.nums[s].bound, None, masked=True),
                    )
                    p = self.add(Op("softmax", [m], axis=x), self.t(s), Num(1.0 / self.sizes[x], 1.0))
                else:
                    p = self.softmax(s, x)
            else:
                ex = self.unary(s, "exp") if self.nums[s].bound <= EXP_MAX else self.map([s])
                if ex is None:
                    return None
                den = self.reduce(ex, "sum", x)
                if den is None or self.nums[den].lo is None:
                    return None
                p = self.binary(ex, den, "div")
                if p is None:
                    return None
            return self.contract(self.low(p), V, self._perm((*batch, q, e)))
        if name == "mlp":
            X = self.new_input(self._perm((*batch, q, d)))
            W1 = self.new_input(self._perm((d, x)))
            W2 = self.new_input(self._perm((x, e)))
            h = self.contract(X, W1, (*batch, q, x))
            if h is None:
                return None
            h = self.unary(self.normalize(h), self.rng.choice(("gelu", "relu", "silu", "tanh")))
            if h is None:
                return None
            return self.contract(self.low(h), W2, self._perm((*batch, q, e)))
        # rmsnorm
        X = self.new_input(self._perm((*batch, q, d)))
        xf = self.cast(X, "f32")
        sq = self.binary(xf, xf, "mul")
        if sq is None:
            return None
        ms = self.reduce(sq, "sum", d)
        if ms is None:
            return None
        inv = self.add(
            Op(
                "map",
                [ms],
                body=[
                    Instr("const", [], 1.0 / self.sizes[d]),
                    Instr("arith.mulf", [0, 1]),
                    Instr("const", [], 1e-3),
                    Instr("arith.addf", [2, 3]),
                    Instr("math.rsqrt", [4]),
                ],
            ),
            self.t(ms),
            Num(1.0, 40.0, 0.01),
        )
        return self.binary(xf, inv, "mul")

    def _perm(self, axes: tuple[str, ...]) -> tuple[str, ...]:
        axes = tuple(dict.fromkeys(axes))
        return tuple(self.rng.sample(list(axes), len(axes))) if self.rng.random() < 0.5 else axes

    # --- the whole diagram ------------------------------------------------------------------

    def step(self) -> None:
        kind = self.rng.choices(
            ("contract", "unary", "scale", "cast", "binary", "map", "reduce", "softmax", "mask", "motif", "input"),
            (5, 3, 1.5, 1, 4, 3, 2.5, 2, 1.2, 1.5, 1),
        )[0]
        pick = self.pick
        if kind == "input":
            self.new_input(self.random_axes())
        elif kind == "contract":
            lhs = pick()
            rhs = pick(lambda v: v != lhs or self.rng.random() < 0.1) if lhs is not None else None
            if lhs is not None and rhs is not None:
                self.contract(lhs, rhs)
        elif kind == "unary":
            v = pick()
            if v is not None:
                self.unary(v)
        elif kind == "scale":
            v = pick()
            if v is not None:
                self.scale(v)
        elif kind == "cast":
            v = pick()
            if v is not None:
                other = "f32" if self.t(v).dtype == "bf16" else "bf16"
                self.cast(v, other)
        elif kind == "binary":
            positive = pick(lambda v: self.nums[v].lo is not None) if self.rng.random() < 0.5 else None
            lhs, rhs = pick(), positive if positive is not None else pick()
            if lhs is not None and rhs is not None:
                self.binary(lhs, rhs, "div" if positive is not None else None)
        elif kind == "map":
            k = self.rng.choices((1, 2, 3), (5, 3, 1))[0]
            xs = [pick() for _ in range(k)]
            if all(v is not None for v in xs):
                self.map([v for v in xs if v is not None])
        elif kind == "reduce":
            v = pick(lambda v: len(self.t(v).axes) >= 2)
            if v is not None:
                self.reduce(v)
        elif kind == "softmax":
            v = pick()
            if v is not None:
                self.softmax(self.normalize(v) if self.nums[v].bound > 1e6 else v)
        elif kind == "mask":
            v = pick(lambda v: len(self.t(v).axes) >= 2)
            if v is not None:
                self.masked(v)
        else:
            self.motif(self.rng.choice(MOTIFS))

    def spec(self, name: str, outputs: list[int]) -> Spec:
        """The spec, values renumbered inputs first (the generator interleaves them)."""
        order = [v for v, k in enumerate(self.kinds) if k == "in"] + [v for v, k in enumerate(self.kinds) if k == "op"]
        number = {v: i for i, v in enumerate(order)}
        ops = [Op(**{**op.__dict__, "operands": [number[v] for v in op.operands]}) for op in self.ops]
        return Spec(name, dict(self.sizes), list(self.inputs), ops, [number[v] for v in outputs])

    def outputs(self) -> list[int]:
        ops = [v for v in self.pool() if self.kinds[v] == "op"]
        if not ops:
            return []
        sinks = [v for v in ops if self.uses[v] == 0]
        k = self.rng.choices((1, 2, 3), (5, 3, 2))[0]
        chosen = list(dict.fromkeys(self.rng.sample(sinks, min(k, len(sinks))) if sinks else [ops[-1]]))
        if len(chosen) < k and self.rng.random() < 0.5:
            extra = [v for v in ops if v not in chosen]
            chosen += self.rng.sample(extra, min(k - len(chosen), len(extra)))
        out = []
        for v in chosen:
            if self.dtype != "f32" and self.t(v).dtype != self.dtype and self.rng.random() < 0.8:
                v = self.cast(v, self.dtype)
            out.append(v)
        return list(dict.fromkeys(out))


def random_body(rng: random.Random, bounds: list[tuple[float, float]]) -> tuple[list[Instr], tuple[float, float]]:
    """A continuous scalar program of the block arguments (with `bounds` as their ranges):
    the instructions and an interval holding the yielded value."""
    body: list[Instr] = []
    ranges = list(bounds)
    nargs = len(bounds)
    steps = rng.randint(1, 6)
    for _ in range(steps):
        n = len(ranges)
        a = rng.randrange(n)
        b = rng.randrange(n)
        lo_a, hi_a = ranges[a]
        lo_b, hi_b = ranges[b]
        op = rng.choice(
            (
                "arith.addf",
                "arith.subf",
                "arith.mulf",
                "arith.divf",
                "arith.maximumf",
                "arith.minimumf",
                "arith.negf",
                "math.absf",
                "math.tanh",
                "math.sin",
                "math.cos",
                "math.exp",
                "math.erf",
                "math.atan",
                "math.sqrt",
                "math.log1p",
                "math.rsqrt",
                "math.fma",
                "select.gt",
                "const",
            )
        )
        span = max(abs(lo_a), abs(hi_a))
        if op == "const":
            value = rng.choice((0.5, -1.5, 2.0, 0.1, 3.0))
            body.append(Instr("const", [], value))
            ranges.append((value, value))
            continue
        if op in ("arith.addf", "arith.subf", "arith.maximumf", "arith.minimumf"):
            if op == "arith.addf":
                r = (lo_a + lo_b, hi_a + hi_b)
            elif op == "arith.subf":
                r = (lo_a - hi_b, hi_a - lo_b)
            elif op == "arith.maximumf":
                r = (max(lo_a, lo_b), max(hi_a, hi_b))
            else:
                r = (min(lo_a, lo_b), min(hi_a, hi_b))
            body.append(Instr(op, [a, b]))
            ranges.append(r)
        elif op == "arith.mulf":
            ps = (lo_a * lo_b, lo_a * hi_b, hi_a * lo_b, hi_a * hi_b)
            if max(abs(p) for p in ps) > 1e6:
                continue
            body.append(Instr(op, [a, b]))
            ranges.append((min(ps), max(ps)))
        elif op == "arith.divf":
            # a / (c + |b|) with c = 1: bounded away from zero
            body += [Instr("math.absf", [b]), Instr("const", [], 1.0), Instr("arith.addf", [n, n + 1])]
            body.append(Instr("arith.divf", [a, n + 2]))
            hb = max(abs(lo_b), abs(hi_b))
            ranges += [(0.0, hb), (1.0, 1.0), (1.0, 1.0 + hb), (-span, span)]
        elif op == "arith.negf":
            body.append(Instr(op, [a]))
            ranges.append((-hi_a, -lo_a))
        elif op == "math.absf":
            body.append(Instr(op, [a]))
            ranges.append((0.0 if lo_a <= 0 <= hi_a else min(abs(lo_a), abs(hi_a)), span))
        elif op in ("math.tanh", "math.erf"):
            body.append(Instr(op, [a]))
            ranges.append((max(-1.0, lo_a) if lo_a > -1 else -1.0, min(1.0, hi_a) if hi_a < 1 else 1.0))
        elif op in ("math.sin", "math.cos"):
            if span > 1e4:
                continue
            body.append(Instr(op, [a]))
            ranges.append((-1.0, 1.0))
        elif op == "math.atan":
            body.append(Instr(op, [a]))
            ranges.append((-math.pi / 2, math.pi / 2))
        elif op == "math.exp":
            if hi_a > EXP_MAX or lo_a < -60:
                continue
            body.append(Instr(op, [a]))
            ranges.append((math.exp(lo_a), math.exp(hi_a)))
        elif op == "math.sqrt":  # sqrt(|a| + 0.5)
            body += [Instr("math.absf", [a]), Instr("const", [], 0.5), Instr("arith.addf", [n, n + 1])]
            body.append(Instr("math.sqrt", [n + 2]))
            ranges += [(0.0, span), (0.5, 0.5), (0.5, span + 0.5), (math.sqrt(0.5), math.sqrt(span + 0.5))]
        elif op == "math.log1p":  # log1p(|a|)
            body += [Instr("math.absf", [a]), Instr("math.log1p", [n])]
            ranges += [(0.0, span), (0.0, math.log1p(span))]
        elif op == "math.rsqrt":  # rsqrt(a*a + 1)
            if span > 1e3:
                continue
            body += [Instr("arith.mulf", [a, a]), Instr("const", [], 1.0), Instr("arith.addf", [n, n + 1])]
            body.append(Instr("math.rsqrt", [n + 2]))
            ranges += [(0.0, span * span), (1.0, 1.0), (1.0, span * span + 1), (1.0 / math.sqrt(span * span + 1), 1.0)]
        elif op == "math.fma":
            c = rng.randrange(n)
            ps = (lo_a * lo_b, lo_a * hi_b, hi_a * lo_b, hi_a * hi_b)
            if max(abs(p) for p in ps) > 1e6:
                continue
            lo_c, hi_c = ranges[c]
            body.append(Instr(op, [a, b, c]))
            ranges.append((min(ps) + lo_c, max(ps) + hi_c))
        else:  # select.gt, continuous forms only
            if rng.random() < 0.5:  # max(a, b)
                body.append(Instr("select.gt", [a, b, a, b]))
                ranges.append((max(lo_a, lo_b), max(hi_a, hi_b)))
            else:  # leaky relu: a > 0 ? a : 0.1 a
                body += [Instr("const", [], 0.0), Instr("const", [], 0.1), Instr("arith.mulf", [n + 1, a])]
                body.append(Instr("select.gt", [a, n, a, n + 2]))
                ranges += [(0.0, 0.0), (0.1, 0.1), (min(0.0, 0.1 * lo_a), 0.1 * hi_a), (min(0.0, 0.1 * lo_a), hi_a)]
    if len(ranges) == nargs:  # every draw was skipped: yield a tanh of the first argument
        body.append(Instr("math.tanh", [0]))
        ranges.append((-1.0, 1.0))
    return body, ranges[-1]


def generate(seed: int, dtype: str | None = None, ops: int | None = None) -> Spec:
    """The random diagram of `seed` (a typed spec; see the module docstring)."""
    rng = random.Random(seed)
    for _attempt in range(50):
        g = Generator(rng, dtype or rng.choice(("f32", "f32", "bf16")))
        g.ensure_inputs()
        target = ops if ops is not None else rng.randint(1, 10)
        guard = 0
        while len(g.ops) < target and guard < 200:
            guard += 1
            g.step()
        outputs = g.outputs()
        if not outputs:
            continue
        spec = g.spec(f"fuzz{seed}", outputs)
        spec = drop_dead(spec) if rng.random() < 0.7 else drop_unused_inputs(spec)
        infer_types(spec)
        return spec
    raise RuntimeError(f"generator: no diagram for seed {seed}")


#: Head dims of the attention variants (64: the wgmma rule's too) and their lengths.
VARIANT_HEAD_DIMS = (16, 32, 64)
VARIANT_LENGTHS = (1, 5, 7, 13, 16, 17, 29, 31, 37, 48, 64)
#: Lengths of the variants shaped for the wgmma rule (tiles of 64), and their largest score tile.
HOPPER_LENGTHS = (64, 67, 100, 128)
HOPPER_ELEMENTS = 128 * 128


def generate_variant(seed: int) -> Spec:
    """A random attention variant in the kernel rules' roles (bf16): Q over (b, h, q, d), K and
    V over (b, h, x, d), the scores S = Q Kᵀ scaled, then 0 to 3 random score ops (a soft cap
    scale-tanh-scale, a unary, a bias or factor over a random subset of (b, h, q, x) in f32 or
    bf16, a map of S and maybe a table), maybe a mask of a random kind just before the
    softmax over x, P cast to bf16, O = P V, 0 to 2 random ops on O (a scale, a unary, a gate
    over a subset of (b, h, q)), cast to bf16. What the tensor-core rules are fuzzed with:
    `napkin emulate --kernel tensorcore|wgmma` must pass on it or refuse by name."""
    rng = random.Random(seed)
    for _attempt in range(50):
        g = Generator(rng, "bf16")
        if rng.random() < 0.35:  # the wgmma rule's shapes: d = 64, tiles of 64 (partial ones too)
            g.max_elements, g.max_contract = HOPPER_ELEMENTS, HOPPER_ELEMENTS * 64
            b, h, d = 1, 1, 64
            q, x = rng.choice(HOPPER_LENGTHS), rng.choice(HOPPER_LENGTHS)
        else:
            d = rng.choice(VARIANT_HEAD_DIMS)
            b, h = rng.choice((1, 1, 2)), rng.choice((1, 2, 3))
            fits = [(q, x) for q in VARIANT_LENGTHS for x in VARIANT_LENGTHS if b * h * q * x * d <= MAX_CONTRACT]
            q, x = rng.choice(fits)
        g.sizes = {"b": b, "h": h, "q": q, "x": x, "d": d}
        Q, K, V = (
            g.new_input(("b", "h", "q", "d")),
            g.new_input(("b", "h", "x", "d")),
            g.new_input(("b", "h", "x", "d")),
        )
        s = g.contract(Q, K, ("b", "h", "q", "x"))
        if s is None:
            continue
        s = g.normalize(s)
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            s = g.score_op(s) or s
        if rng.random() < 0.4:
            s = g.add(
                Op("mask", [s], rows="q", cols="x", **g.mask_kind("q", "x")),
                g.t(s),
                Num(g.nums[s].mag, g.nums[s].bound, None, masked=True),
            )
            p = g.add(Op("softmax", [s], axis="x"), g.t(s), Num(1.0 / x, 1.0))
        else:
            p = g.softmax(s, "x")
        o = g.contract(g.low(p), V, ("b", "h", "q", "d"))
        if o is None:
            continue
        for _ in range(rng.choice((0, 0, 1, 2))):
            o = g.output_op(o) or o
        out = g.low(o)
        spec = g.spec(f"variant{seed}", [out])
        infer_types(spec)
        return spec
    raise RuntimeError(f"generator: no attention variant for seed {seed}")


def live_values(spec: Spec) -> set[int]:
    """Values the outputs depend on."""
    n = len(spec.inputs)
    live = set(spec.outputs)
    for i in range(len(spec.ops) - 1, -1, -1):
        if n + i in live:
            live.update(spec.ops[i].operands)
    return live


def renumber(spec: Spec, keep_inputs: list[int], keep_ops: list[int]) -> Spec:
    """The spec with only the inputs and boxes kept (by index), values renumbered."""
    n = len(spec.inputs)
    mapping: dict[int, int] = {}
    for new, old in enumerate(keep_inputs):
        mapping[old] = new
    for j, i in enumerate(keep_ops):
        mapping[n + i] = len(keep_inputs) + j
    inputs = [spec.inputs[i] for i in keep_inputs]
    for k, x in enumerate(inputs):
        inputs[k] = Input(f"A{k}", list(x.axes), x.dtype)
    ops = []
    for i in keep_ops:
        op = spec.ops[i]
        ops.append(Op(**{**op.__dict__, "operands": [mapping[v] for v in op.operands]}))
    return Spec(spec.name, dict(spec.sizes), inputs, ops, [mapping[v] for v in spec.outputs])


def drop_unused_inputs(spec: Spec) -> Spec:
    used = {v for op in spec.ops for v in op.operands} | set(spec.outputs)
    keep = [i for i in range(len(spec.inputs)) if i in used]
    if not keep:
        keep = [0]
    return renumber(spec, keep, list(range(len(spec.ops))))


def drop_dead(spec: Spec) -> Spec:
    """Without the boxes and inputs no output depends on (and axes nothing uses)."""
    live = live_values(spec)
    n = len(spec.inputs)
    keep_inputs = [i for i in range(n) if i in live] or [0]
    keep_ops = [i for i in range(len(spec.ops)) if n + i in live]
    out = renumber(spec, keep_inputs, keep_ops)
    used = {a for x in out.inputs for a in x.axes}
    out.sizes = {a: s for a, s in out.sizes.items() if a in used}
    return out
