"""The proofs of `napkin-stream-partition` (a helper module of the pass: it registers no pass).

The pass streams an axis k of a block: the boxes that touch k and lead to a reduction over it
(the *region*) run on chunks of k, and each reduction over k is carried as state. This module
decides from the ops alone whether every reduction the block needs can be computed chunk by
chunk, and how: `prove(...)` returns a `Plan` that `passes/stream_partition.py` builds the
stream from, or raises a NapkinError located at the box that breaks the proof.

A value is a *chunk value* when the boxes of one chunk compute it (it depends on no reduction
over k), and it *needs the whole axis* when it depends on one. What streams:

* a reduction (sum or max) or a contraction over k of chunk values: the state is the
  partial result (head 0 or -inf, body add or max);
* a sum over k (`napkin.reduce` sum, or a contraction, in each operand) is linear. Its
  operand is expanded, through add, sub, mul, div by a value without k, scale and cast,
  into terms  c · Π(chunk values) · Π(factors without k), and

      Σ_k Σ_t c_t F_t X_t(k) = Σ_t c_t F_t Σ_k X_t(k):

  each Σ_k X_t is a partial sum in the state (equal ones shared), and the factors F_t, which
  may need the whole axis (a row sum, a mean, rsqrt(mean x² + eps) through a `napkin.map`),
  are applied in `finish` from the final state. A term without chunk values is constant
  along k: Σ_k F = |k| F. This proves the normalized contraction a1(s)/b(Σ a2(s)), RMSNorm
  feeding a matmul (x · r · g contracted with w is r · Σ x g w) and LayerNorm feeding a
  matmul ((x - μ) · r · g + β contracted with w is r · Σ (x - μ) g w + Σ β w);
* a difference u - μ from the *mean* of a chunk value u (μ = Σ_k u / |k|) is not distributed
  (Σ u² - |k| μ², the one-pass variance, cancels catastrophically when |μ| is large against
  the spread): it is u - μ = (u - M) + (M - μ) with M the running mean of u, updated per chunk
  as Welford's (n' = n + |chunk|, M' = M + Σ_chunk (u - M) / n'); the state holds the partial
  sums of powers of u - M, re-centered when M moves by δ = M - M',

      Σ (u - M')^p Y = Σ_i C(p, i) δ^(p-i) Σ (u - M)^i Y   (for p = 2, Y = 1: Chan's combine),

  and finish adds the powers of M - μ (zero up to rounding). A term with differences from
  two means, or with an online exponential, is expanded as before (`Uncentered`);
* an *online exponential* e^(s - c), where s is a chunk value and c is proven an upper bound
  of s along k (the `napkin.reduce` max of that same s over k, or a `napkin.max` of such a
  bound with anything else, e.g. a per-head sink logit), entering a sum linearly (at most
  once per term): with the running maximum m of s,

      Σ_k e^(s_k - c) X_k = e^(M - c) · o,   o' = e^(m - m') · o + Σ_chunk e^(s - m') X,

  where M is the final m; the state holds m, and o per sum, rescaled at each step, and
  e^(M - c) ≤ 1 is applied in `finish` (left out when c is M). A softmax written by hand
  (max, sub, exp, sum, div, then contractions) is this with the sum as a factor 1/l;
  `napkin.softmax` followed by contractions has its own online form (the same state).

`finish` computes, from the final state, the value of every reduction that the boxes after
the stream use; the factors are recomputed there from the reductions they need, and values
from outside the stream that they use (a sink logit) ride along in the state. Everything
else, a function of a value that needs the whole axis applied per chunk (tanh(x - μ), a
division by such a value, a max over k of it, an exponential whose shift is not proven to be
a maximum), is refused with a diagnostic naming the box.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, is_array
from napkin_mlir.ir.regions import array, fail, has_axis, owner, str_attr, users

#: Most terms the expansion of one reduction may have (each costs a partial sum in the state).
MAX_TERMS = 16


def reduces(op: ir.Operation, axis: str) -> bool:
    """A contraction or reduction that consumes `axis`."""
    return (
        op.name in ("napkin.contract", "napkin.reduce")
        and any(has_axis(v, axis) for v in op.operands)
        and not has_axis(op.results[0], axis)
    )


@dataclass(frozen=True)
class Leaf:
    """A factor of a term: `value` to the power +1 or -1. With a `center` (the mean μ of
    `value` over the axis): a chunk leaf is `value - M`, M the running mean of `value`, and a
    constant leaf is `M - μ` (≈ 0), so `value - μ` = (value - M) + (M - μ) (see `centered`)."""

    value: ir.Value
    power: int = 1
    center: ir.Value | None = None


@dataclass(frozen=True)
class Term:
    """coeff · Π chunk · Π consts · online: `chunk` are chunk values (computed per chunk),
    `consts` values without the axis that need the whole axis, `online` an e^(s - c)."""

    coeff: float
    chunk: tuple[Leaf, ...] = ()
    consts: tuple[Leaf, ...] = ()
    online: ir.Value | None = None

    def key(self) -> tuple:
        return (frozenset(Counter(self.chunk).items()), frozenset(Counter(self.consts).items()), self.online)


@dataclass(frozen=True)
class Online:
    """An online exponential e^(s - shift): `maximum` is the napkin.reduce max of s over the
    axis that `shift` is proven to bound from above."""

    scores: ir.Value
    shift: ir.Value
    maximum: ir.Operation


@dataclass(eq=False)
class Slot:
    """One piece of state. `kind`: "sum" or "max" (a monoid partial), "online" (a sum of
    e^(s - m) · ... rescaled by the running max of `maximum`'s slot), "carry" (a value from
    outside the stream that finish needs, set by every step).

    A partial is `form` ("reduce" or "contract") over the products of `sides` (one product
    per operand), each cast to its `targets` dtype, computed in `work`; `online_side` is the
    side the online exponential multiplies. `plain`: the partial is `reduction` itself."""

    kind: str
    type: ArrayType
    anchor: tuple[int, int]
    reduction: ir.Operation | None = None
    form: str = "reduce"
    sides: tuple[tuple[Leaf, ...], ...] = ()
    orders: tuple[tuple[str, ...], ...] = ()
    targets: tuple[str | None, ...] = ()
    work: str = "f32"
    online_side: int = -1
    maximum: ir.Operation | None = None
    plain: bool = False
    carried: ir.Value | None = None
    center: ir.Value | None = None  # centered partials: Σ (u - M)^p Y; "count"/"mean": of this μ
    lower: tuple[tuple[int, Slot | None], ...] = ()  # (i, Σ (u - M)^i Y) for i < p; None: the count


#: 16-bit element types: their sums are carried in f32.
HALF = ("f16", "bf16")


@dataclass(frozen=True)
class Summand:
    """coeff · slot · Π consts · e^(M - c): one term of a reduction's value in finish. No
    slot: a constant term (the consts alone). `rescale` = (M, c) of an online exponential."""

    coeff: float
    slot: Slot | None
    consts: tuple[Leaf, ...] = ()
    rescale: tuple[ir.Value, ir.Value] | None = None


@dataclass
class SoftmaxGroup:
    """`napkin.softmax` along the axis and the contractions over it that consume it."""

    softmax: ir.Operation
    reducers: list[ir.Operation] = field(default_factory=list)
    casts: dict[ir.Operation, ir.Operation | None] = field(default_factory=dict)


@dataclass
class Plan:
    """What the stream is made of."""

    region: list[ir.Operation]  # the boxes that move into the stream (then are erased)
    chunk_ops: list[ir.Operation]  # region boxes the step recomputes on every chunk
    softmax: list[SoftmaxGroup]
    slots: list[Slot]  # the state after the softmax groups' (m, l, o...), in order
    exprs: dict[ir.Operation, list[Summand]]  # reduction -> its value from the final state
    results: list[ir.Operation]  # reductions whose values leave the stream, in program order
    inputs: list[ir.Value]  # stream operands (chunked where they have the axis), carried last
    derived: set[ir.Value]  # values that need the whole axis
    doomed: list[ir.Operation]  # the region and the boxes outside that only served it
    centers: dict[ir.Value, tuple[Slot, Slot]] = field(default_factory=dict)  # μ -> (count, running mean)


class Uncentered(NapkinError):
    """A reduction whose centered terms the Welford update does not combine (`Prover.expr`
    plans it again with its differences from means expanded)."""


def product_axes(leaves: list[ArrayType], order: tuple[str, ...]) -> tuple[str, ...]:
    """The axis order of a product of `leaves` (shared by the plan and the builder): one
    leaf keeps its own, several are multiplied in `order` (the reduced operand's)."""
    if len(leaves) == 1:
        return leaves[0].axes
    present = {a for t in leaves for a in t.axes}
    return tuple(a for a in order if a in present)


class Prover:
    """Builds the `Plan` of streaming `axis` over `ops` (a block without its terminator)."""

    def __init__(self, ops: list[ir.Operation], outputs: list[ir.Value], axis: str, online: bool) -> None:
        self.ops, self.outputs, self.axis, self.online_ok = ops, outputs, axis, online
        self.index = {op: i for i, op in enumerate(ops)}
        self.derived: set[ir.Value] = set()
        self.reductions: set[ir.Operation] = set()
        self.softmax_reducers: set[ir.Operation] = set()
        self.exprs: dict[ir.Operation, list[Summand]] = {}
        self.slots: dict[tuple, Slot] = {}
        self.onlines: dict[ir.Value, Online] = {}
        self.carries: list[ir.Value] = []
        self.needed: set[ir.Value] = set()
        self.centers: dict[ir.Value, tuple[Slot, Slot]] = {}
        self.centering = True
        self._sub = 0

    # --- messages ------------------------------------------------------------------------
    def output_site(self, v: ir.Value) -> ir.Operation:
        """The box producing output `v`, else the terminator returning it (to locate a refusal)."""
        op = owner(v)
        if op is not None and op in self.index:
            return op
        return next(u for u in users(v) if u not in self.index and u.name in ("func.return", "gpu.yield"))

    def origin(self, v: ir.Value) -> str:
        """The box whose result needs the whole axis that `v` depends on."""
        while has_axis(v, self.axis) and (op := owner(v)) is not None:
            nxt = [x for x in op.operands if x in self.derived]
            if not nxt:
                break
            v = nxt[0]
        op = owner(v)
        return op.name if op is not None else "a value"

    def needs_whole(self, op: ir.Operation, v: ir.Value, why: str = "") -> NapkinError:
        hint = why or (
            f"a sum over '{self.axis}' streams when each term is a product of chunk values, "
            f"factors without '{self.axis}' and at most one e^(s - max s)"
        )
        return fail(
            op,
            f"cannot stream axis '{self.axis}': '{op.name}' works on chunks of '{self.axis}' but uses "
            f"'{self.origin(v)}', which needs the whole axis ({hint})",
        )

    # --- the region ----------------------------------------------------------------------
    def classify(self) -> list[ir.Operation]:
        """The region: the boxes that touch the axis and lead to a reduction over it (boxes
        woven over it but independent of that reduction stay where they are)."""
        axis, ops = self.axis, self.ops
        touching = [op for op in ops if any(has_axis(v, axis) for v in [*op.operands, *op.results])]
        if not touching:
            raise NapkinError(f"napkin-stream-partition: no box uses axis '{axis}'")
        feeds: set[ir.Operation] = {op for op in touching if reduces(op, axis)}
        for op in reversed(ops):
            if op in touching and any(u in feeds for r in op.results for u in users(r)):
                feeds.add(op)
        region = [op for op in touching if op in feeds] or touching
        produced = {r for op in region for r in op.results}
        for i, v in enumerate(self.outputs):
            if has_axis(v, axis) and (v in produced or not feeds):
                site = self.output_site(v)
                raise fail(
                    site,
                    f"cannot stream axis '{axis}': output #{i} ({array(v)}) of '{site.name}' keeps it; "
                    "a stream partition needs an axis the function reduces",
                )
        self.reductions = {op for op in region if reduces(op, axis)}
        for op in ops:
            if op in self.reductions or any(v in self.derived for v in op.operands):
                self.derived.update(op.results)
        return region

    def softmax_groups(self, region: list[ir.Operation]) -> list[SoftmaxGroup]:
        axis = self.axis
        groups = []
        for op in region:
            if op.name != "napkin.softmax" or str_attr(op, "axis") != axis:
                continue
            if not self.online_ok:
                raise fail(
                    op,
                    f"softmax along '{axis}' is not streamable as it stands: its normalizer needs the whole axis; allow the online (max-rescaled) form with online=true",
                )
            if op.operands[0] in self.derived:
                raise self.needs_whole(op, op.operands[0])
            group = SoftmaxGroup(op)
            for user in users(op.results[0]):
                cast, targets = None, [user]
                if user.name == "napkin.cast" and users(user.results[0]):
                    cast, targets = user, users(user.results[0])
                for t in targets:
                    if t.name != "napkin.contract" or not reduces(t, axis):
                        raise fail(
                            t,
                            f"cannot stream axis '{axis}': the softmax along it feeds '{t.name}', which is not a contraction over '{axis}' (only softmax followed by contractions is streamable)",
                        )
                    varying = set(array(op.results[0]).axes) - {axis}  # the running max varies along these
                    summed = {a for v in t.operands for a in array(v).axes} - set(array(t.results[0]).axes)
                    if varying & summed:
                        raise fail(
                            t,
                            f"cannot stream axis '{axis}': this contraction also sums over {sorted(varying & summed)}, "
                            f"along which the softmax's running maximum varies (its rescale cannot reach inside that sum)",
                        )
                    prob = op.results[0] if cast is None else cast.results[0]
                    for v in t.operands:
                        if v != prob and v in self.derived:
                            raise self.needs_whole(t, v)
                    group.reducers.append(t)
                    group.casts[t] = cast
                    self.softmax_reducers.add(t)
            groups.append(group)
        return groups

    # --- expansion into terms ------------------------------------------------------------
    def leaf(self, v: ir.Value, power: int = 1) -> Term:
        if v in self.derived and not has_axis(v, self.axis):
            return Term(1.0, consts=(Leaf(v, power),))
        return Term(1.0, chunk=(Leaf(v, power),))

    def times(self, a: Term, b: Term, op: ir.Operation) -> Term:
        if a.online is not None and b.online is not None:
            raise fail(
                op,
                f"cannot stream axis '{self.axis}': '{op.name}' multiplies two exponentials shifted by a maximum over "
                f"'{self.axis}'; the online form rescales a sum that has one such factor per term",
            )
        return Term(a.coeff * b.coeff, a.chunk + b.chunk, a.consts + b.consts, a.online or b.online)

    def merge(self, terms: list[Term], op: ir.Operation) -> list[Term]:
        """Equal products added up (a term whose coefficients cancel stays: 0 times a factor
        that is not finite is NaN in the diagram too)."""
        merged: dict[tuple, Term] = {}
        for t in terms:
            k = t.key()
            merged[k] = replace(merged[k], coeff=merged[k].coeff + t.coeff) if k in merged else t
        out = list(merged.values())
        if len(out) > MAX_TERMS:
            raise fail(
                op,
                f"cannot stream axis '{self.axis}': '{op.name}' expands into {len(out)} terms (at most {MAX_TERMS}, each a partial sum in the state)",
            )
        return out

    def expand(self, v: ir.Value) -> list[Term]:
        """`v` as a sum of terms (see the module docstring); refuses what is not linear."""
        if v not in self.derived or not has_axis(v, self.axis):
            return [self.leaf(v)]
        op = owner(v)
        assert op is not None  # derived values are op results
        name = op.name
        if name == "napkin.cast":
            return self.expand(op.operands[0])
        if name == "napkin.scale":
            factor = ir.FloatAttr(op.attributes["factor"]).value
            return self.merge([replace(t, coeff=t.coeff * factor) for t in self.expand(op.operands[0])], op)
        if name == "napkin.sub" and self.centers_on_mean(op):
            return self.centered(op)
        if name in ("napkin.add", "napkin.sub"):
            rhs = self.expand(op.operands[1])
            if name == "napkin.sub":
                rhs = [replace(t, coeff=-t.coeff) for t in rhs]
            return self.merge(self.expand(op.operands[0]) + rhs, op)
        if name == "napkin.mul":
            lhs, rhs = self.expand(op.operands[0]), self.expand(op.operands[1])
            return self.merge([self.times(a, b, op) for a in lhs for b in rhs], op)
        if name == "napkin.div":
            num, den = op.operands
            if den in self.derived and has_axis(den, self.axis):
                raise self.needs_whole(op, den)
            d = self.leaf(den, -1)
            return self.merge([self.times(t, d, op) for t in self.expand(num)], op)
        if name == "napkin.exp":
            return [self.online(op)]
        raise self.needs_whole(op, next(x for x in op.operands if x in self.derived))

    def mean_of(self, c: ir.Value) -> ir.Value | None:
        """u when `c` is the mean of u over the axis (`napkin.scale` by 1/|axis| of the
        `napkin.reduce` sum of u), u an f32 chunk value; else None."""
        op = owner(c)
        if op is None or op.name != "napkin.scale" or has_axis(c, self.axis):
            return None
        total = owner(op.operands[0])
        if total is None or total.name != "napkin.reduce" or not reduces(total, self.axis):
            return None
        u = total.operands[0]
        if str_attr(total, "kind") != "sum" or u in self.derived or array(u).dtype != "f32":
            return None
        factor = ir.FloatAttr(op.attributes["factor"]).value
        return u if abs(factor * array(u).size(self.axis) - 1.0) < 1e-9 else None

    def centers_on_mean(self, sub: ir.Operation) -> bool:
        """`sub` is u - μ with μ the mean of u over the axis."""
        u = self.mean_of(sub.operands[1]) if self.centering else None
        return u is not None and u == sub.operands[0]

    def centered(self, sub: ir.Operation) -> list[Term]:
        """u - μ with μ the mean of u over the axis, as (u - M) + (M - μ): M is the running
        mean of u (Welford's update, `Builder.step`), and the partial sums of the powers of
        u - M are re-centered when M moves (Σ (u - M')^p Y = Σ_i C(p, i) (M - M')^(p-i) Σ (u - M)^i Y).
        Expanding u - μ into Σ u and μ instead (the one-pass variance Σ u² - |k| μ²) cancels
        catastrophically when |μ| is large against the spread; the centered sums do not."""
        u, mu = sub.operands
        return [Term(1.0, chunk=(Leaf(u, 1, mu),)), Term(1.0, consts=(Leaf(mu, 1, mu),))]

    def center(self, mu: ir.Value, r: ir.Operation) -> tuple[Slot, Slot]:
        """The (count, running mean) state of the mean `mu`."""
        if mu not in self.centers:
            u = owner(owner(mu).operands[0]).operands[0]  # mean_of: scale(reduce(u))
            row = array(u).without(self.axis).with_dtype("f32")
            anchor = (self.index[owner(mu)], 0)
            self.centers[mu] = (
                Slot("count", row, anchor, center=mu),
                Slot("mean", row, anchor, sides=((Leaf(u),),), center=mu),
            )
        return self.centers[mu]

    def recentered(self, r: ir.Operation, slot: Slot, sides: list[list[Leaf]], summed: set[str]) -> None:
        """Plan the lower powers that re-center `slot` (a partial with centered leaves)."""
        mus = {leaf.center for side in sides for leaf in side if leaf.center is not None}
        if len(mus) > 1 or slot.kind != "sum":  # a product of differences from two means, or online
            raise Uncentered(f"{r}")
        (mu,) = mus
        mean = self.center(mu, r)[1]
        slot.center = mu
        if not set(mean.type.axes) <= set(slot.type.axes):  # the centered value is summed over another axis
            raise Uncentered(f"{r}")
        centered = Leaf(mean.sides[0][0].value, 1, mu)
        power = sum(side.count(centered) for side in sides)
        lower: list[tuple[int, Slot | None]] = []
        for i in range(power):
            drop, rest = power - i, []
            for side in sides:
                kept = []
                for leaf in side:
                    if leaf == centered and drop:
                        drop -= 1
                    else:
                        kept.append(leaf)
                rest.append(kept)
            if all(not side for side in rest):
                lower.append((i, None))  # Σ 1: the count
            else:
                lower.append((i, self.partial(r, rest, -1, None, summed)))
        slot.lower = tuple(lower)

    def online(self, exp: ir.Operation) -> Term:
        """e^(s - c) with s a chunk value and c a proven upper bound of s along the axis."""
        axis = self.axis
        arg = exp.operands[0]
        sub = owner(arg)
        if (
            sub is None
            or sub.name != "napkin.sub"
            or sub.operands[0] in self.derived
            or not has_axis(sub.operands[0], axis)
            or has_axis(sub.operands[1], axis)
        ):
            raise self.needs_whole(exp, arg)
        s, c = sub.operands
        if not self.online_ok:
            raise self.needs_whole(sub, c, "online=false: the online (max-rescaled) form is not allowed")
        maximum = self.upper_bound(s, c)
        if maximum is None:
            raise fail(
                sub,
                f"cannot stream axis '{axis}': the exponential of this difference subtracts '{self.origin(c)}', "
                f"which is not proven to be at least the maximum over '{axis}' of what it is subtracted from "
                "(the napkin.reduce max of that same value, or a napkin.max of it with anything), so the online "
                "rescaling does not apply",
            )
        self.onlines[exp.results[0]] = Online(s, c, maximum)
        return Term(1.0, online=exp.results[0])

    def upper_bound(self, s: ir.Value, c: ir.Value) -> ir.Operation | None:
        """The napkin.reduce max of `s` over the axis that proves c >= max s, or None."""
        op = owner(c)
        if op is None:
            return None
        if (
            op.name == "napkin.reduce"
            and str_attr(op, "kind") == "max"
            and str_attr(op, "axis") == self.axis
            and op.operands[0] == s
        ):
            return op
        if op.name == "napkin.max":
            for x in op.operands:
                found = self.upper_bound(s, x)
                if found is not None:
                    return found
        return None

    # --- reductions ----------------------------------------------------------------------
    def expr(self, r: ir.Operation) -> None:
        """Plan the value of region reduction `r` from the final state (and what it needs)."""
        if r in self.exprs or r in self.softmax_reducers:
            return
        self._sub = 0
        slots, centers = dict(self.slots), dict(self.centers)
        try:
            summands = self.summands(r)
        except Uncentered:  # plan this reduction with the differences from means expanded
            self.slots, self.centers, self.centering = slots, centers, False
            try:
                summands = self.summands(r)
            finally:
                self.centering = True
        self.exprs[r] = summands
        for s in summands:
            for leaf in s.consts:
                self.need(leaf.value)
            if s.rescale is not None:
                self.need(s.rescale[0])
                self.need(s.rescale[1])
            if s.slot is not None and s.slot.maximum is not None:
                self.expr(s.slot.maximum)

    def summands(self, r: ir.Operation) -> list[Summand]:
        """The summands of region reduction `r`'s value from the final state."""
        axis = self.axis
        if r.name == "napkin.reduce":
            kind, u = str_attr(r, "kind"), r.operands[0]
            if u not in self.derived:
                summands = [Summand(1.0, self.plain(r, kind))]
            elif kind == "max":
                raise fail(
                    r,
                    f"cannot stream axis '{axis}': the maximum over '{axis}' of a value that uses "
                    f"'{self.origin(u)}', which needs the whole axis",
                )
            else:
                summands = [self.summand(r, [t]) for t in self.expand(u)]
        else:
            lhs, rhs = r.operands
            if lhs not in self.derived and rhs not in self.derived:
                summands = [Summand(1.0, self.plain(r, "sum"))]
            else:
                pairs = [[a, b] for a in self.expand(lhs) for b in self.expand(rhs)]
                if len(pairs) > MAX_TERMS:
                    raise fail(
                        r,
                        f"cannot stream axis '{axis}': this contraction expands into {len(pairs)} terms (at most {MAX_TERMS})",
                    )
                summands = [self.summand(r, p) for p in pairs]
        return summands

    def anchor(self, r: ir.Operation) -> tuple[int, int]:
        self._sub += 1
        return (self.index[r], self._sub)

    def plain(self, r: ir.Operation, kind: str) -> Slot:
        sides = tuple((Leaf(v),) for v in r.operands)
        form = "reduce" if r.name == "napkin.reduce" else "contract"
        out = array(r.results[0])
        key = (kind, form, sides, tuple(array(v).dtype for v in r.operands), out.dtype, str(out), -1, None)
        state = out.with_dtype("f32") if kind == "sum" and out.dtype in HALF else out  # 16-bit sums carried in f32
        if key not in self.slots:
            self.slots[key] = Slot(kind, state, self.anchor(r), r, form, sides, plain=True)
        slot = self.slots[key]
        slot.anchor = min(slot.anchor, self.anchor(r))  # shared: where the diagram first needs it
        return slot

    def summand(self, r: ir.Operation, terms: list[Term]) -> Summand:
        """The summand of reduction `r` for one term per operand (reduce: 1, contract: 2)."""
        axis = self.axis
        out = array(r.results[0])
        coeff = math.prod(t.coeff for t in terms)
        consts = tuple(leaf for t in terms for leaf in t.consts)
        onlines = [(i, t.online) for i, t in enumerate(terms) if t.online is not None]
        if len(onlines) > 1:
            raise fail(
                r,
                f"cannot stream axis '{axis}': this contraction multiplies two exponentials shifted by a maximum over '{axis}'",
            )
        ins = [array(v) for v in r.operands]
        sizes = {a: s for t in ins for a, s in t.sizes.items()}
        contracted = {a for t in ins for a in t.axes} - set(out.axes)
        sides = [list(t.chunk) for t in terms]
        online = onlines[0] if onlines else None
        with_axis = online is not None or any(has_axis(leaf.value, axis) for side in sides for leaf in side)
        if not with_axis:  # constant along the axis: the sum is the constant times the sizes
            consts += tuple(leaf for side in sides for leaf in side)
            sides = [[] for _ in sides]
        for leaf in consts:
            bad = set(array(leaf.value).axes) & contracted
            if bad:
                raise fail(
                    r,
                    f"cannot stream axis '{axis}': a factor of this sum ('{self.origin(leaf.value)}') has the summed axis '{sorted(bad)[0]}'",
                )
        present: set[str] = set()
        for side in sides:
            present |= {a for leaf in side for a in array(leaf.value).axes}
        if online is not None:
            info = self.onlines[online[1]]
            present |= set(array(info.scores).axes)
        coeff *= math.prod(sizes[a] for a in contracted - present)
        if not with_axis:
            return Summand(coeff, None, consts)
        rescale = None
        maximum = None
        if online is not None:
            info = self.onlines[online[1]]
            maximum = info.maximum
            if info.shift != maximum.results[0]:
                rescale = (maximum.results[0], info.shift)
        slot = self.partial(r, sides, online[0] if online else -1, maximum, present & contracted)
        return Summand(coeff, slot, consts, rescale)

    def partial(
        self,
        r: ir.Operation,
        sides: list[list[Leaf]],
        online_side: int,
        maximum: ir.Operation | None,
        summed: set[str],
    ) -> Slot:
        """The state slot of one partial sum (shared with an equal one)."""
        axis = self.axis
        out = array(r.results[0])
        operands = list(r.operands)
        if any(not side for side in sides) and len(sides) == 2:  # one side is all factors
            keep = [i for i, side in enumerate(sides) if side or online_side == i]
            if len(keep) == 1:
                if summed != {axis}:
                    raise fail(
                        r,
                        f"cannot stream axis '{axis}': a term of this contraction sums over {sorted(summed)} "
                        "from one operand alone",
                    )
                i = keep[0]
                sides, operands = [sides[i]], [operands[i]]
                online_side = 0 if online_side == i else -1
        for i, side in enumerate(sides):
            if online_side != i and not any(leaf.power > 0 for leaf in side):
                raise fail(
                    r,
                    f"cannot stream axis '{axis}': a term of this sum divides by chunk values and multiplies none",
                )
        form = "contract" if len(sides) == 2 else "reduce"
        orders = tuple(array(v).axes for v in operands)
        if form == "contract":
            targets: tuple[str | None, ...] = tuple(array(v).dtype for v in operands)
            present = set()
            for i, side in enumerate(sides):
                present |= {a for leaf in side for a in array(leaf.value).axes}
                if online_side == i and maximum is not None:
                    present |= set(array(maximum.operands[0]).axes)
            t = ArrayType(
                tuple(a for a in out.axes if a in present),
                tuple(out.size(a) for a in out.axes if a in present),
                out.dtype,
                out.level,
            )
        else:
            targets = (None,)
            leaves = [array(leaf.value) for leaf in sides[0]]
            if online_side == 0 and maximum is not None:
                leaves.append(array(maximum.operands[0]))
            axes = product_axes(leaves, orders[0])
            sizes = {a: s for lt in leaves for a, s in lt.sizes.items()}
            # a 16-bit sum keeps its state in f32 (finish rounds it once); online states stay
            # in the dtype of their running max
            dtype = "f32" if out.dtype in HALF and maximum is None else out.dtype
            t = ArrayType(
                tuple(a for a in axes if a != axis), tuple(sizes[a] for a in axes if a != axis), dtype, out.level
            )
        kind = "online" if maximum is not None else "sum"
        key = (kind, form, tuple(tuple(s) for s in sides), tuple(array(v).dtype for v in operands), out.dtype, str(t))
        key += (online_side, maximum)
        if key not in self.slots:
            self.slots[key] = Slot(
                kind,
                t,
                self.anchor(r),
                r,
                form,
                tuple(tuple(s) for s in sides),
                orders,
                targets,
                out.dtype,
                online_side,
                maximum,
            )
            if any(leaf.center is not None for side in sides for leaf in side):
                self.recentered(r, self.slots[key], sides, summed)
        slot = self.slots[key]
        slot.anchor = min(slot.anchor, self.anchor(r))
        return slot

    def need(self, v: ir.Value) -> None:
        """Plan what finish needs to compute `v` (a factor without the axis)."""
        if v in self.needed:
            return
        self.needed.add(v)
        op = owner(v)
        if op is not None and op in self.reductions:
            self.expr(op)
            return
        if v in self.derived:
            assert op is not None
            if op.regions and op.name != "napkin.map":
                raise fail(op, f"cannot stream axis '{self.axis}': finish cannot recompute '{op.name}'")
            for x in op.operands:
                if not is_array(x.type):
                    raise fail(
                        op,
                        f"cannot stream axis '{self.axis}': finish cannot recompute '{op.name}' (it uses a non-array value)",
                    )
                self.need(x)
            return
        if not is_array(v.type):
            raise NapkinError(f"cannot stream axis '{self.axis}': finish needs a non-array value")
        self.carries.append(v)

    # --- the plan ------------------------------------------------------------------------
    def prove(self) -> Plan:
        region = self.classify()
        in_region = set(region)
        groups = self.softmax_groups(region)
        skip = {g.softmax for g in groups} | {c for g in groups for c in g.casts.values() if c}
        for op in region:
            if op in self.reductions:
                continue
            for r in op.results:
                for u in users(r):
                    if u not in in_region:
                        raise fail(
                            op,
                            f"cannot stream axis '{self.axis}': this value is computed per chunk of '{self.axis}' but '{u.name}' "
                            "outside the stream needs it whole",
                        )
        # boxes outside the region that the rest of the block still needs
        in_block = set(self.ops)
        live: set[ir.Operation] = set()

        def used_later(v: ir.Value) -> bool:
            return any(u in live or u not in in_block for u in users(v))

        for op in reversed(self.ops):
            if op not in in_region and any(used_later(r) for r in op.results):
                live.add(op)
        results = [op for op in region if op in self.reductions and used_later(op.results[0])]
        if not results:  # dead code: stream its reductions all the same, as written
            results = [op for op in region if op in self.reductions]
        if not results:  # the boxes that have the axis are dead and reduce nothing
            raise fail(
                region[0],
                f"cannot stream axis '{self.axis}': no box reduces it ('{region[0].name}' has it, but no output "
                "depends on it): nothing to stream",
            )
        for r in results:
            self.expr(r)
        slots = sorted(
            [*self.slots.values(), *(s for pair in self.centers.values() for s in pair)], key=lambda s: s.anchor
        )
        slots += [Slot("carry", array(v), (len(self.ops), i), carried=v) for i, v in enumerate(self.carries)]
        # chunk values the step needs, and the operands of the stream
        wanted: set[ir.Value] = set()
        for s in slots:
            for side in s.sides:
                wanted |= {leaf.value for leaf in side}
            if s.maximum is not None:
                wanted.add(s.maximum.operands[0])
        for g in groups:
            wanted.add(g.softmax.operands[0])
            for t in g.reducers:
                wanted |= set(t.operands)
        chunk_ops = []
        for op in reversed(region):
            if op in self.reductions or op in skip or not any(r in wanted for r in op.results):
                continue
            chunk_ops.append(op)
            wanted |= set(op.operands)
        chunk_ops.reverse()
        defined = {r for op in region for r in op.results}
        inputs: list[ir.Value] = []
        for op in region:
            for v in op.operands:
                if is_array(v.type) and v in wanted and v not in defined and v not in inputs:
                    inputs.append(v)
        inputs += [v for v in self.carries if v not in inputs]
        doomed = [
            op for op in self.ops if op in in_region or (op not in live and any(r in self.derived for r in op.results))
        ]
        return Plan(region, chunk_ops, groups, slots, self.exprs, results, inputs, self.derived, doomed, self.centers)


def prove(ops: list[ir.Operation], outputs: list[ir.Value], axis: str, online: bool) -> Plan:
    """The plan of streaming `axis` over `ops`, or a NapkinError naming the box that is not
    streamable."""
    return Prover(ops, outputs, axis, online).prove()
