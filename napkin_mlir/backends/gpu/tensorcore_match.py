"""Which part of the tensor-core attention kernel implements each op of a partitioned program.

The kernel (`tensorcore_emit.py`) is fixed code: FlashAttention's online softmax between two
`mma.sync` contractions. A partitioned program is lowered to it only when every one of its
ops is something that code does. `match_attention(module)` walks EVERY op of the program it
is given (the function body, the group body, the stream's init, step and finish regions) and
gives each one the part of the kernel that implements it, or refuses with a
`TensorCoreRefusal` naming the op and its location:

    the tensor-core rule does not lower 'napkin.tanh' at softcap.mlir:8:10; use --kernel simt

It checks the dataflow, not op counts: which value each op reads (the row max is taken of
the very scores the exponent subtracts it from; the rescale factor is exp(m - m'), and the
same one rescales the row sum and O; K and V are the function's second and third arguments,
chunked by the stream), the attributes the kernel relies on (positive `napkin.scale`s just
before the softmax, whose factor the kernel folds into its `ex2`; a causal `napkin.mask` at
the group's q offset and the chunk's x offset; reductions over `x`; fills of -inf and 0) and
the element types (both contractions accumulate in f32, P and O are cast from f32 to the
inputs' bf16/f16).

Between the score contraction and the softmax the program may compute any elementwise ops
of the scores that have a rule in `tensorcore_scores.SCORE_RULES` (scale, tanh, exp, relu,
gelu, silu, add/sub/mul/div/max, `napkin.map` bodies of arith and math ops, a causal mask):
they are read off in program order as `ScoreOp`s, whose other operands are constants
(`napkin.fill`) or function arguments broadcast by axis name over the scores (a bias table
over (h, q, x), a slope per head), which the kernel takes as extra arguments and reads at
each score's global coordinates. The same goes for elementwise ops of O / l before its cast
(a gate per row, a scale), read off as `AttentionMatch.output_ops` (`OUTPUT_RULES`: the
rules but the mask). V's head dim may differ from Q's and K's.
`AttentionMatch.parts` lists each op with its part of the kernel, in program order.

The canonical program is what `napkin-stream-partition` makes of attention (with
`napkin-assign-levels` and `napkin-group-partition` over b, h and q); operands of the
commutative ops (add, mul, max, the contractions) may come in either order, and any number
of `napkin.transfer` (level changes: the kernel's cp.async and stores) may sit on the paths
of Q, K, V and O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import NoReturn

from mlir import ir

from napkin_mlir.backends.gpu.tensorcore_scores import (
    SCORE_RULES,
    MapBody,
    Operand,
    RowOutput,
    ScalarOp,
    ScoreInput,
    ScoreOp,
    specialized,
)
from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_location
from napkin_mlir.ir.masks import (
    Predicate,
    decides_stream,
    integer_facts,
    mask_parts,
    predicate_arg_types,
    read_predicate,
)


class TensorCoreRefusal(NapkinError):
    """The tensor-core rule does not take this program (an op it does not implement, a shape,
    dtype or tile it cannot hold): `--kernel auto` falls back to the SIMT rule."""


#: Op names the kernel implements somewhere (anything else is refused at once, by name).
KERNEL_OPS = frozenset(
    {
        "func.return",
        "gpu.yield",
        "arith.constant",
        "napkin.group",
        "napkin.stream",
        "napkin.transfer",
        "napkin.fill",
        "napkin.contract",
        "napkin.scale",
        "napkin.mask",
        "napkin.reduce",
        "napkin.max",
        "napkin.sub",
        "napkin.exp",
        "napkin.mul",
        "napkin.add",
        "napkin.div",
        "napkin.cast",
        *SCORE_RULES,
    }
)

#: The ops the kernel computes on O / l before the cast (the mask is about scores).
OUTPUT_RULES = frozenset(SCORE_RULES) - {"napkin.mask"}

#: How far past q and x a kernel evaluates a mask's predicate (its padded last tiles, whose
#: scores past the lengths are dropped anyway): a bound on every tile of both rules.
TILE_PAST_END = 1024

#: The element types the kernel's mma.sync takes.
KERNEL_DTYPES = ("bf16", "f16")


@dataclass
class AttentionMatch:
    """The attention problem read off a partitioned program, and each op's part of the kernel."""

    q_type: ArrayType
    k_type: ArrayType
    v_type: ArrayType
    group_sizes: dict[str, int]  # grouped axis -> group size
    sx: int  # keys per stream chunk
    skips: tuple[Predicate, ...]  # the masks that decide which chunks of x a CTA visits
    scale: float
    names: tuple[str, str, str]  # the function's names of Q, K, V
    parts: list[tuple[str, str, str]] = field(default_factory=list)  # (op, location, part of the kernel)
    score_ops: tuple[ScoreOp, ...] = ()  # the elementwise ops on the scores, in program order
    output_ops: tuple[ScoreOp, ...] = ()  # the elementwise ops on O / l before its cast
    inputs: tuple[ScoreInput, ...] = ()  # the function arguments after V, by position
    row_outputs: tuple[RowOutput, ...] = ()  # outputs per query row, from the final m and l
    o_position: int = 0  # O's position among the function's results
    softmax: bool = True  # False: acc += f(S_1, ...) · C without a softmax (the backward's dQ)
    score_pairs: tuple[tuple[int, int], ...] = ((0, 1),)  # per score contraction: (row arg, chunk arg)
    # without a softmax: per carried accumulator (F's value number, chunk argument, F in f32: hi + lo)
    accumulations: tuple[tuple[int, int, bool], ...] = ()
    chunk_args: tuple[int, ...] = (1, 2)  # the arguments the stream chunks (K, V; Q, dO for dK/dV)
    row_args: tuple[int, ...] = (0,)  # the arguments whose tiles of the CTA's rows the kernel holds
    transposed: bool = False  # rows of keys x, streaming the queries q (the backward's dK/dV)
    output_accs: tuple[int, ...] = ()  # without a softmax: the accumulator each output stores

    @property
    def dims(self) -> dict[str, int]:
        """The axis sizes of Q and K, and V's head dim as `dv`; transposed, the kernel's rows
        (keys x) as `q` and its stream (queries q) as `x`."""
        sizes = {**self.q_type.sizes, **self.k_type.sizes, "dv": self.v_type.shape[-1]}
        if self.transposed:
            sizes["q"], sizes["x"] = sizes["x"], sizes["q"]
        return sizes

    @property
    def dtype(self) -> str:
        return self.q_type.dtype


def _blocks(op: ir.Operation) -> list[ir.Block]:
    return [b for region in op.regions for b in region.blocks]


def _ops(block: ir.Block) -> list[ir.Operation]:
    return [o.operation for o in block.operations]


def _nested(block: ir.Block) -> list[ir.Operation]:
    """Every op in `block` and in the regions of its ops, in program order (pre-order)."""
    found: list[ir.Operation] = []
    for op in _ops(block):
        found.append(op)
        for inner in _blocks(op):
            found += _nested(inner)
    return found


def _atype(v: ir.Value | ir.Type) -> ArrayType:
    return ArrayType.from_mlir(v if isinstance(v, ir.Type) else v.type)


def _str(op: ir.Operation, name: str) -> str | None:
    return ir.StringAttr(op.attributes[name]).value if name in op.attributes else None


def _factor(op: ir.Operation) -> float:
    return float(ir.FloatAttr(op.attributes["factor"]).value)


def _single_use(v: ir.Value) -> bool:
    return sum(1 for _ in v.uses) == 1


class _Walk:
    """One walk of a partitioned program: the ops accounted for so far, and refusals."""

    def __init__(self, func: ir.Operation, filename: str | None) -> None:
        self.func = func
        self.filename = filename
        self.parts: dict[ir.Operation, str] = {}

    def where(self, op: ir.Operation) -> str:
        return format_location(op.location, self.filename)

    def at(self, op: ir.Operation) -> str:
        """` at FILE:LINE:COL`, or nothing for a program without locations."""
        where = self.where(op)
        return f" at {where}" if where != "unknown" else ""

    def refuse(self, op: ir.Operation, why: str = "") -> NoReturn:
        detail = f" ({why})" if why else ""
        raise TensorCoreRefusal(
            f"the tensor-core rule does not lower '{op.name}'{self.at(op)}{detail}; use --kernel simt"
        )

    def take(self, op: ir.Operation, part: str) -> None:
        self.parts[op] = part

    def producer(self, v: ir.Value, user: ir.Operation, what: str) -> ir.Operation:
        """The op defining `v`; a refusal naming `user` when `v` is a block argument."""
        if isinstance(v, ir.BlockArgument):
            self.refuse(user, f"{what} is a region argument, not the value the kernel computes there")
        return v.owner.operation

    def expect(self, v: ir.Value, name: str, user: ir.Operation, what: str) -> ir.Operation:
        """The op defining `v`, which must be a `name`; else a refusal naming the op found."""
        op = self.producer(v, user, what)
        if op.name != name:
            self.refuse(op, f"the kernel needs {what} here, a '{name}'")
        return op


def _pair(a: ir.Value, b: ir.Value, first: ir.Value) -> ir.Value | None:
    """For a commutative op with operands (a, b): the other operand when one of them is
    `first`, else None."""
    if a == first:
        return b
    if b == first:
        return a
    return None


def match_attention(module: ir.Module, filename: str | None = None) -> AttentionMatch:
    """Match the partitioned attention program in `module` op by op (module docstring);
    `TensorCoreRefusal` naming the first op the kernel does not implement."""
    funcs = [op.operation for op in module.body.operations if op.operation.name == "func.func"]
    if not funcs:
        raise TensorCoreRefusal("the tensor-core rule needs a function (the partitioned diagram)")
    func = funcs[0]
    body = func.regions[0].blocks[0]
    w = _Walk(func, filename)
    groups = [op for op in _ops(body) if op.name == "napkin.group"]
    if len(groups) != 1:
        raise TensorCoreRefusal("tensor-core attention needs one grid group partition (run the derivation first)")
    group = groups[0]
    gbody = group.regions[0].blocks[0]
    streams = [op for op in _ops(gbody) if op.name == "napkin.stream"]
    if len(streams) != 1:
        raise TensorCoreRefusal("tensor-core attention needs one stream partition inside the group")
    stream = streams[0]
    args = [_atype(a) for a in body.arguments]
    if args and args[0].dtype not in KERNEL_DTYPES:
        raise TensorCoreRefusal(
            f"the tensor-core attention kernel cannot take dtype {args[0].dtype} (tensor cores take bf16 or f16)"
        )
    # every op's name first: an op the kernel has no code for at all is named at once (the
    # bodies of napkin.map and the masks' predicates are checked op by op by the score ops' match)
    in_maps = {
        inner for op in _nested(body) if op.name in ("napkin.map", "napkin.mask") for inner in _nested(_blocks(op)[0])
    }
    for op in _nested(body):
        if op.name not in KERNEL_OPS and op not in in_maps:
            w.refuse(op)
    m = _Matcher(w, func, group, stream)
    if _accumulates(stream):  # no softmax: acc_k += F_k · C_k
        m.contraction_step()
        m.contraction_init_and_finish()
        m.contraction_group_body()
        m.function_body()
        m.input_sizes()
    else:
        m.step()
        m.init_and_finish()
        m.group_body()
        m.function_body()
        m.layout()
    # whatever the dataflow did not reach is not computed by the kernel
    for op in _nested(body):
        if op in w.parts:
            continue
        if op.name == "arith.constant" and not any(True for r in op.results for _ in r.uses):
            w.take(op, "nothing: an unused constant")
            continue
        w.refuse(op, "the kernel has no part that computes it")
    return m.result([(op.name, w.where(op), w.parts[op]) for op in _nested(body)])


def _accumulates(stream: ir.Operation) -> bool:
    """Whether every value the stream carries is updated as carried + something (napkin.add):
    a stream of accumulators without a softmax (the online softmax carries a running max)."""
    step = stream.regions[1].blocks[0]
    carried = list(step.arguments)[len(stream.operands) + 1 :]
    updates = list(_ops(step)[-1].operands)
    return bool(carried) and all(
        isinstance(v, ir.OpResult) and v.owner.name == "napkin.add" and acc in list(v.owner.operands)
        for acc, v in zip(carried, updates, strict=True)
    )


class _Matcher:
    """The dataflow of the online-softmax attention program, matched backwards from each
    region's yield (the step first: it is where programs differ)."""

    def __init__(self, w: _Walk, func: ir.Operation, group: ir.Operation, stream: ir.Operation) -> None:
        self.w = w
        self.func = func
        self.group = group
        self.stream = stream
        self.gbody = group.regions[0].blocks[0]
        self.init, self.stepb, self.finish = (stream.regions[i].blocks[0] for i in range(3))
        self.n_chunks = len(stream.operands)
        self.scale = 1.0
        self.late_masks: list[ir.Operation] = []  # masks among the folded scales, applied last
        self.skips: list[Predicate] = []
        self.traced: dict[str, ArrayType] = {}
        self.q_type: ArrayType | None = None
        self.score_ops: tuple[ScoreOp, ...] = ()
        self.output_ops: tuple[ScoreOp, ...] = ()
        self.inputs: dict[int, ScoreInput] = {}
        self.softmax = True
        self.score_pairs: tuple[tuple[int, int], ...] = ((0, 1),)
        self.accumulations: tuple[tuple[int, int, bool], ...] = ()
        self.chunk_args: tuple[int, ...] = (1, 2)
        self.row_args: tuple[int, ...] = (0,)
        self.transposed = False
        self.col_axis = "x"
        self.output_accs: tuple[int, ...] = ()

    # --- the stream step: S = Q K^T, the online softmax, O = alpha O + P V -----------------

    def step(self) -> None:
        w, stream, step = self.w, self.stream, self.stepb
        state = list(step.arguments)[self.n_chunks + 1 :]
        yld = _ops(step)[-1]
        if len(state) != 3 or len(yld.operands) != 3:
            w.refuse(
                stream,
                "its step is not an online softmax between two contractions: the kernel carries a row max, "
                f"a row sum and O, this stream carries {len(state)} values",
            )
        if _str(stream, "axis") != "x":
            w.refuse(stream, f"the kernel streams the key axis x, this stream is over '{_str(stream, 'axis')}'")
        w.take(stream, "the scf.for over the chunks of x (K/V double-buffered; masked: the chunks the masks may keep)")
        w.take(yld, "the loop's carried state: row max m, row sum l and the O accumulators")
        m, l_, o = state
        m_new, l_new, o_new = yld.operands
        # m' = max(m, rowmax(S')): the row max over the thread's scores and the quad (shfl.xor)
        mx = w.expect(m_new, "napkin.max", yld, "the new row max max(m, rowmax(scores))")
        rowmax_v = _pair(mx.operands[0], mx.operands[1], m)
        if rowmax_v is None:
            w.refuse(mx, "the kernel's new row max is max(m, row max of the chunk) with m the carried row max")
        w.take(mx, "the running row max m' = max(m, row max) (online_softmax: arith.maximumf)")
        rmax = self._reduce(rowmax_v, "max", mx, "the row max of the chunk's scores")
        scores = rmax.operands[0]
        w.take(rmax, "the row max of the chunk: arith.maximumf over the thread's scores and shfl.xor over the quad")
        self._scores(scores, rmax)
        # O' = alpha O + P V
        add_o = w.expect(o_new, "napkin.add", yld, "the new O = alpha·O + P·V")
        pv_v, scaled_o_v = self._split(add_o, "napkin.contract")
        mul_o = w.expect(scaled_o_v, "napkin.mul", add_o, "the rescaled O, alpha·O")
        alpha_v = _pair(mul_o.operands[0], mul_o.operands[1], o)
        if alpha_v is None:
            w.refuse(mul_o, "the kernel rescales the carried O by alpha")
        shift = self._empty_row_guard(m_new)  # m', or 0 where m' is -inf (see _empty_row_guard)
        alpha = self._alpha(alpha_v, mul_o, m, shift)
        w.take(add_o, "O = alpha·O + P V: the P V mma.sync accumulate into the rescaled accumulators")
        w.take(mul_o, "alpha·O: arith.mulf of the O accumulators (accumulate_pv)")
        contract_pv = w.expect(pv_v, "napkin.contract", add_o, "P·V")
        cast_v, v_v = self._split(contract_pv, "napkin.cast")
        cast_p = w.expect(cast_v, "napkin.cast", contract_pv, "P cast to the inputs' element type")
        p_v = cast_p.operands[0]
        exp_p = self._probabilities(p_v, cast_p, scores, shift)
        self._contraction(contract_pv, "x", "P·V")
        if _atype(p_v).dtype != "f32" or _atype(cast_p.results[0]).dtype not in KERNEL_DTYPES:
            w.refuse(cast_p, "the kernel truncates P from f32 to the inputs' bf16/f16")
        w.take(cast_p, "P repacked from the S accumulators into A fragments (arith.truncf)")
        w.take(contract_pv, "O += P V with mma.sync m16n8k16 (V fragments by ldmatrix.x4.trans)")
        self._trace(v_v, 2, "V", contract_pv)
        # l' = alpha l + rowsum(p)
        add_l = w.expect(l_new, "napkin.add", yld, "the new row sum alpha·l + rowsum(p)")
        rsum_v, scaled_l_v = self._split(add_l, "napkin.reduce")
        mul_l = w.expect(scaled_l_v, "napkin.mul", add_l, "the rescaled row sum alpha·l")
        if _pair(mul_l.operands[0], mul_l.operands[1], l_) != alpha:
            w.refuse(mul_l, "the kernel rescales the carried row sum by the same alpha = exp(m - m') as O")
        rsum = self._reduce(rsum_v, "sum", add_l, "the row sum of p")
        if rsum.operands[0] != exp_p.results[0]:
            w.refuse(rsum, "the kernel sums the f32 probabilities p = exp(scores - m') of the chunk")
        w.take(add_l, "l = alpha·l + rowsum(p): per-thread partial sums (online_softmax), the quad's at the end")
        w.take(mul_l, "alpha·l: arith.mulf (online_softmax)")
        w.take(rsum, "the row sum of p: arith.addf over the thread's probabilities")
        # the state's shapes: m and l per row (the scores without x), O per row and column of d
        rows = set(_atype(rmax.results[0]).axes)
        for v, axes, what in ((m, rows, "row max"), (l_, rows, "row sum"), (o, set(_atype(pv_v).axes), "O")):
            t = _atype(v)
            if set(t.axes) != axes or t.dtype != "f32":
                w.refuse(stream, f"the kernel carries the {what} in f32 over {sorted(axes)}, this stream carries {t}")

    # --- the shift of a row that has seen only -inf (napkin-stream-partition's guard) ---------

    def _empty_row_guard(self, m_new: ir.Value) -> ir.Value:
        """The value the exponents subtract from: the `napkin.map` of m' that gives 0 where m'
        is -inf and m' elsewhere (arith.cmpf oeq with -inf, arith.select of 0), which
        napkin-stream-partition puts in every online form; m' itself in a program without it.
        The kernel computes the same guard (`online_softmax`: cmpf oeq, select of 0) whenever
        the program has score ops (masks and biases among them: what can make a score -inf);
        without them every score of the first chunk is finite (its first key is within x)."""
        users = [u.owner.operation if isinstance(u.owner, ir.OpView) else u.owner for u in m_new.uses]
        guards = [op for op in users if op.name == "napkin.map" and self._guard_body(op, m_new) is not None]
        if not guards:
            return m_new
        if len(guards) > 1:
            self.w.refuse(guards[1], "the kernel computes one shift per row: this guard of the row max is a second")
        guard = guards[0]
        body = self._guard_body(guard, m_new)
        assert body is not None
        for inner in body:
            self.w.take(inner, f"the shift of a row that has seen only -inf: {inner.name} (online_softmax)")
        self.w.take(guard, "the shift m', or 0 where m' is -inf: arith.cmpf oeq and arith.select (online_softmax)")
        return guard.results[0]

    @staticmethod
    def _guard_body(op: ir.Operation, m_new: ir.Value) -> list[ir.Operation] | None:
        """The ops of `op`'s body when `op` is exactly the guard `x == -inf ? 0 : x` of
        `m_new` in f32, else None."""
        if list(op.operands) != [m_new] or _atype(op.results[0]).dtype != "f32" or len(op.regions) != 1:
            return None
        blocks = _blocks(op)
        if len(blocks) != 1 or len(blocks[0].arguments) != 1 or str(blocks[0].arguments[0].type) != "f32":
            return None
        x = blocks[0].arguments[0]
        inner = _ops(blocks[0])
        consts: dict[ir.Value, float] = {}
        for c in inner:
            if c.name == "arith.constant" and isinstance(c.attributes["value"], ir.FloatAttr):
                consts[c.results[0]] = float(ir.FloatAttr(c.attributes["value"]).value)
        rest = [c for c in inner if c.results and c.results[0] not in consts]
        if len(inner) != len(consts) + 3 or [c.name for c in rest] != ["arith.cmpf", "arith.select"]:
            return None
        cmp, sel = rest
        yld = inner[-1]
        if yld.name != "gpu.yield" or list(yld.operands) != [sel.results[0]]:
            return None
        if ir.IntegerAttr(cmp.attributes["predicate"]).value != 1:  # oeq
            return None
        a, b = cmp.operands
        other = b if a == x else a if b == x else None
        if other is None or consts.get(other) != -math.inf:
            return None
        cond, yes, no = sel.operands
        if cond != cmp.results[0] or consts.get(yes) != 0.0 or no != x:
            return None
        return inner

    def _split(self, op: ir.Operation, name: str) -> tuple[ir.Value, ir.Value]:
        """The two operands of commutative `op` as (the one a `name` op defines, the other)."""
        a, b = op.operands

        def made_by(v: ir.Value) -> bool:
            return isinstance(v, ir.OpResult) and v.owner.name == name

        if made_by(a) and not made_by(b):
            return a, b
        if made_by(b) and not made_by(a):
            return b, a
        self.w.refuse(op, f"the kernel computes this from one '{name}' and one other term; these operands are not that")

    def _reduce(self, v: ir.Value, kind: str, user: ir.Operation, what: str) -> ir.Operation:
        op = self.w.expect(v, "napkin.reduce", user, what)
        if _str(op, "kind") != kind or _str(op, "axis") != "x":
            self.w.refuse(op, f"the kernel takes the {kind} over the key axis x here")
        return op

    def _scores(self, scores: ir.Value, user: ir.Operation) -> None:
        """S' from S = Q K^T: positive `napkin.scale`s just before the softmax fold into the
        exponent's factor, and a causal `napkin.mask` among them (it commutes with a positive
        scale) is the kernel's mask, which also bounds the stream; every op before them is an
        elementwise op of the scores that the kernel computes in registers (`_score_ops`)."""
        w = self.w
        v = scores
        while True:
            op = w.producer(v, user, "the scores")
            alone = v == scores or _single_use(v)
            if alone and op.name == "napkin.scale" and _factor(op) > 0:
                self.scale *= _factor(op)
                w.take(op, "a positive score scale, folded into one fma and ex2 per score (c = scale·log2 e)")
            elif alone and op.name == "napkin.mask":
                self.late_masks.append(op)  # it commutes with a positive scale: applied last
            else:
                break
            user, v = op, op.operands[0]
        op = self._score_ops(v, user)
        for mask in reversed(self.late_masks):  # in program order, each on the value before it
            self.score_ops += (self._mask_op(mask, len(self.score_ops)),)
        self._contraction(op, "d", "S = Q·K^T")
        w.take(op, "S = Q K^T with mma.sync m16n8k16 (K fragments by ldmatrix.x4), unscaled in the accumulators")
        q_v, k_v = op.operands
        if self._source(q_v) == 1:  # an einsum by axis names: contract(K, Q) is the same scores
            q_v, k_v = k_v, q_v
        self._trace(q_v, 0, "Q", op)
        self._trace(k_v, 1, "K", op)

    def _score_ops(self, out: ir.Value, user: ir.Operation) -> ir.Operation:
        """The elementwise ops from S = Q K^T to `out` (`self.score_ops`); returns the score
        contraction."""
        contract, self.score_ops = self._elementwise_ops(
            out, user, lambda op: op.name == "napkin.contract", self.stepb, SCORE_RULES, "scores"
        )
        return contract

    def _elementwise_ops(
        self,
        out: ir.Value,
        user: ir.Operation,
        is_root: Callable[[ir.Operation], bool],
        block: ir.Block,
        rules: Collection[str],
        what: str,
        leaves: dict[ir.Value, int] | None = None,
    ) -> tuple[ir.Operation | None, tuple[ScoreOp, ...]]:
        """The elementwise ops of `block` from the result of one root op (`is_root`: the score
        contraction, the stream) to `out`, in program order, as `ScoreOp`s: each must have a
        rule (`rules`), and each of its operands is a value computed from the root's or an
        input (`_input`). Returns the root op and the ops. With `leaves` (values already
        numbered: the stream's final row max and sum) the ops start from those instead of
        from a root op, and the root returned is None."""
        roots, ops, _ = self._elementwise_dag([out], user, is_root, block, rules, what, leaves)
        if leaves is None and len(roots) != 1:
            w = self.w
            w.refuse(roots[1] if roots else user, f"the kernel computes the {what} from one contraction, S = Q·K^T")
        return (roots[0] if roots else None), ops

    def _elementwise_dag(
        self,
        outs: list[ir.Value],
        user: ir.Operation,
        is_root: Callable[[ir.Operation], bool],
        block: ir.Block,
        rules: Collection[str],
        what: str,
        leaves: dict[ir.Value, int] | None = None,
    ) -> tuple[list[ir.Operation], tuple[ScoreOp, ...], dict[ir.Value, int]]:
        """`_elementwise_ops` to any number of values `outs`, from any number of root ops (in
        program order, their results numbered 0, 1, ... before the ops): the score
        contractions of a kernel without a softmax (S = Q·K^T and dP = dO·V^T of the backward).
        Returns the roots, the ops and the number of every value."""
        w = self.w
        found: dict[ir.Operation, None] = {}
        found_roots: dict[ir.Operation, None] = {}
        todo = [(out, user) for out in outs]
        while todo:
            v, u = todo.pop()
            if leaves is not None and v in leaves:
                continue
            op = w.producer(v, u, f"the {what}")
            if is_root(op):
                found_roots[op] = None
                continue
            if op in found:
                continue
            if op.name not in rules:
                w.refuse(
                    op,
                    f"the kernel computes elementwise ops of the {what} that have a rule here "
                    f"({', '.join(n.removeprefix('napkin.') for n in rules)})",
                )
            found[op] = None
            operands = [mask_parts(op).input, *mask_parts(op).arrays] if op.name == "napkin.mask" else list(op.operands)
            todo += [(o, op) for o in operands if self._input(o) is None]
        if not found_roots and leaves is None:
            w.refuse(user, f"the kernel's {what} come from a contraction, S = Q·K^T")
        order = {o: i for i, o in enumerate(_ops(block))}
        for op in [*found, *found_roots]:
            if op not in order:
                w.refuse(op, f"the kernel computes the ops of the {what} where the {what} are")
        roots = sorted(found_roots, key=order.__getitem__)
        numbers: dict[ir.Value, int] = dict(leaves) if leaves is not None else {}
        for root in roots:
            numbers[root.results[0]] = len(numbers)
        root_type = _atype(next(iter(numbers)))
        ops: list[ScoreOp] = []
        for op in sorted(found, key=order.__getitem__):
            ops.append(self._score_op(op, numbers, root_type))
            numbers[op.results[0]] = len(numbers)
        return roots, tuple(ops), numbers

    def _score_op(self, op: ir.Operation, numbers: dict[ir.Value, int], root_type: ArrayType) -> ScoreOp:
        """One elementwise op as data (over the axes of `root_type`, the scores or O), its
        operands numbered (`numbers`: the values defined so far); its inputs' paths are taken."""
        w = self.w
        res = _atype(op.results[0])
        if res.dtype != "f32" or res.sizes != root_type.sizes:
            w.refuse(op, f"the kernel computes these ops in f32 over {root_type}, this gives {res}")
        if op.name == "napkin.mask":
            return self._mask_op(op, numbers[op.operands[0]])
        operands = []
        for v in op.operands:
            if v in numbers:
                operands.append(Operand("score", numbers[v]))
                continue
            found = self._input(v)
            if found is None:
                w.refuse(op, "the kernel computes it from its values and inputs read at each element's coordinates")
            operand, path = found
            if operand.dtype != "f32" and op.name != "napkin.map":
                w.refuse(op, f"the kernel computes these ops in f32, this one reads {operand.dtype}")
            self._take_input(operand, path, op, root_type)
            operands.append(operand)
        factor = _factor(op) if op.name == "napkin.scale" else 1.0
        body = self._map_body(op, operands) if op.name == "napkin.map" else None
        w.take(op, f"'{op.name}' on each element in registers, at the accumulator fragments (its rule)")
        return ScoreOp(op.name, tuple(operands), factor, body)

    def _input(self, v: ir.Value) -> tuple[Operand, list[ir.Operation]] | None:
        """`v` as an operand the kernel reads rather than computes, with the ops on its path:
        a constant (`napkin.fill`), or a function argument through the group's tiles, the
        stream's chunks, transfers and at most one cast (anywhere on the way); None for
        anything else."""
        dtype = _atype(v).dtype
        if isinstance(v, ir.OpResult) and v.owner.name == "napkin.fill":
            fill = v.owner.operation
            return Operand("const", dtype=dtype, value=float(ir.FloatAttr(fill.attributes["value"]).value)), [fill]
        path: list[ir.Operation] = []
        while True:
            if isinstance(v, ir.BlockArgument):
                n = v.arg_number
                if v.owner == self.stepb and n < self.n_chunks:
                    v = self.stream.operands[n]
                elif v.owner == self.gbody and n < len(self.group.operands):
                    v = self.group.operands[n]
                elif v.owner == self.func.regions[0].blocks[0]:
                    return Operand("input", n, dtype), path
                else:
                    return None
            elif v.owner.name == "napkin.transfer" or (
                v.owner.name == "napkin.cast" and not any(op.name == "napkin.cast" for op in path)
            ):
                path.append(v.owner.operation)
                v = v.owner.operands[0]
            else:
                return None

    def _take_input(self, operand: Operand, path: list[ir.Operation], user: ir.Operation, over: ArrayType) -> None:
        """Record an input the ops over `over` (the scores or O) read (a function argument over
        some of its axes, in a float type) and give the ops on its path their parts."""
        w = self.w
        if operand.kind == "const":
            w.take(path[0], f"a constant operand of the score ops ({operand.value})")
            return
        arg = self.func.regions[0].blocks[0].arguments[operand.ref]
        t = _atype(arg)
        name = self._arg_name(operand.ref)
        kinds = ("f32", "f16", "bf16", "i32") if user.name == "napkin.mask" else ("f32", "f16", "bf16")
        if set(t.axes) - set(over.axes) or t.dtype not in kinds:
            w.refuse(
                user,
                f"the kernel reads '{name}' {t} at each element's coordinates: its axes must be among "
                f"({', '.join(over.axes)}) and its type {'/'.join(kinds)}",
            )
        self.inputs[operand.ref] = ScoreInput(operand.ref, t.axes, t.shape, t.dtype)
        for op in path:
            if op.name == "napkin.cast":
                w.take(op, f"'{name}' converted to {operand.dtype} as it is read (arith.extf)")
            else:
                w.take(op, f"'{name}' read at each element's coordinates (from global memory or its staged tile)")

    def _map_body(self, op: ir.Operation, operands: list[Operand]) -> MapBody:
        """The scalar body of a `napkin.map` on the scores: arith and math ops on its
        arguments, one f32 yielded."""
        return self._region_body(op, [o.dtype for o in operands], "f32", "map body")

    def _region_body(self, op: ir.Operation, arg_types: list[str], yields: str, what: str) -> MapBody:
        """The scalar region of `op` (a map's body, a mask's predicate) as text parts: arith
        and math ops on its arguments (of `arg_types`), one value of type `yields` yielded."""
        w = self.w
        block = _blocks(op)[0]
        values: list[ir.Value] = list(block.arguments)
        if [str(a.type) for a in values] != arg_types:
            w.refuse(op, f"the kernel's {what} takes ({', '.join(arg_types)})")
        ops: list[ScalarOp] = []
        inner_ops = _ops(block)
        for inner in inner_ops[:-1]:
            if not inner.name.startswith(("arith.", "math.")) or _blocks(inner) or len(inner.results) > 1:
                w.refuse(inner, f"the kernel computes a {what} of arith and math ops on scalars")
            refs = [next((i for i, x in enumerate(values) if x == v), -1) for v in inner.operands]
            if -1 in refs:
                w.refuse(inner, f"the kernel's {what} reads only its arguments and its own values")
            result_types = tuple(str(r.type) for r in inner.results)
            constant = None
            if inner.name == "arith.constant" and isinstance(inner.attributes["value"], ir.FloatAttr):
                constant = float(ir.FloatAttr(inner.attributes["value"]).value)
            ops.append(
                ScalarOp(
                    inner.name,
                    tuple(refs),
                    tuple((k, str(inner.attributes[k])) for k in inner.attributes),
                    tuple(str(v.type) for v in inner.operands),
                    result_types,
                    constant,
                )
            )
            values += list(inner.results)
            w.take(inner, f"the {what} on each score in registers: {inner.name}")
        yld = inner_ops[-1]
        if len(yld.operands) != 1 or str(yld.operands[0].type) != yields:
            w.refuse(yld, f"the kernel's {what} yields one {yields}")
        w.take(yld, f"the {what}'s value for each score")
        return MapBody(tuple(ops), next(i for i, x in enumerate(values) if x == yld.operands[0]))

    def _arg_name(self, n: int) -> str:
        if "arg_names" in self.func.attributes:
            return ir.StringAttr(ir.ArrayAttr(self.func.attributes["arg_names"])[n]).value
        return f"#{n}"

    def _mask_op(self, op: ir.Operation, score: int) -> ScoreOp:
        """A mask on the scores (value number `score`): its predicate runs in registers at
        each element's global (q, x), reading its arrays (segment ids) there; a mask that
        decides the stream's chunks (`ir.masks.decides_stream`) also bounds the chunks the
        CTA visits (`AttentionPlan.skips`)."""
        w = self.w
        parts = mask_parts(op)
        if parts.rows != "q" or parts.cols != "x":
            w.refuse(
                op, f"the kernel masks rows q and columns x, this mask has rows {parts.rows} and cols {parts.cols}"
            )
        axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(self.group.attributes["axes"])]
        row_axis = "x" if self.transposed else "q"  # the group's axis; the stream's is the other
        offsets = {self.col_axis: self.stepb.arguments[self.n_chunks]}
        if row_axis in axes:
            offsets[row_axis] = self.gbody.arguments[len(self.group.operands) + axes.index(row_axis)]
        q_off, x_off = offsets.get("q"), offsets.get("x")
        if parts.offsets is None or q_off is None or parts.offsets != (q_off, x_off):
            w.refuse(
                op, "the kernel masks at global positions: the mask must take the group's q and the chunk's x offsets"
            )
        operands = [Operand("score", score)]
        root_type = _atype(op.results[0])
        for a in parts.arrays:
            found = self._input(a)
            if found is None:
                w.refuse(op, "the kernel reads a mask's arrays (function arguments) at each element's coordinates")
            operand, path = found
            self._take_input(operand, path, op, root_type)
            operands.append(operand)
        try:
            predicate = read_predicate(parts.block, f"'{op.name}'")
        except NapkinError as err:
            w.refuse(op, err.message)
        body = self._region_body(op, [str(t) for t in predicate_arg_types(parts.arrays)], "i1", "the mask's predicate")
        q, x = parts.extents
        facts = integer_facts(predicate, (0, q + TILE_PAST_END), (0, x + TILE_PAST_END), (q, x))
        wide = specialized(body, replace(facts, fits_i32=False))
        body, positions = specialized(body, facts), "i32" if facts.fits_i32 else "index"
        if decides_stream(self.stepb, op, self.col_axis):
            self.skips.append(predicate)
            w.take(
                op,
                "a mask: its predicate at each element's (q, x) in registers, -inf where false (arith.select); "
                "the chunks where it is false everywhere are skipped (interval reasoning per CTA)",
            )
        else:
            w.take(op, "a mask: its predicate at each element's (q, x) in registers, -inf where false (arith.select)")
        return ScoreOp(op.name, tuple(operands), body=body, positions=positions, wide=wide if facts.fits_i32 else None)

    def _alpha(self, v: ir.Value, user: ir.Operation, m: ir.Value, m_new: ir.Value) -> ir.Value:
        """alpha = exp(m - m')."""
        w = self.w
        exp = w.expect(v, "napkin.exp", user, "the rescale factor alpha = exp(m - m')")
        sub = w.expect(exp.operands[0], "napkin.sub", exp, "m - m'")
        if sub.operands[0] != m or sub.operands[1] != m_new:
            w.refuse(sub, "the kernel's rescale factor is exp(m - m') of the carried and the new row max")
        w.take(exp, "alpha = 2^((m - m')·c) (math.exp2)")
        w.take(sub, "m - m' (arith.subf, then scaled by c)")
        return v

    def _probabilities(self, p: ir.Value, user: ir.Operation, scores: ir.Value, m_new: ir.Value) -> ir.Operation:
        """p = exp(S' - m') of the very scores the row max was taken of."""
        w = self.w
        exp = w.expect(p, "napkin.exp", user, "the probabilities p = exp(scores - m')")
        sub = w.expect(exp.operands[0], "napkin.sub", exp, "scores - m'")
        if sub.operands[0] != scores or sub.operands[1] != m_new:
            w.refuse(sub, "the kernel subtracts the new row max from the scores it took the max of")
        w.take(exp, "p = 2^(s·c - m'·c): one math.fma and one math.exp2 per score (online_softmax)")
        w.take(sub, "s - m' (folded into the fma)")
        return exp

    def _contraction(self, op: ir.Operation, axis: str, what: str) -> None:
        w = self.w
        ins = [_atype(v) for v in op.operands]
        out = _atype(op.results[0])
        summed = (set(ins[0].axes) | set(ins[1].axes)) - set(out.axes)
        if summed != {axis}:
            w.refuse(op, f"the kernel's {what} sums over {axis} alone, this contraction sums over {sorted(summed)}")
        if out.dtype != "f32":
            w.refuse(op, f"the kernel's {what} accumulates in f32, this contraction gives {out.dtype}")

    def _source(self, v: ir.Value) -> int | None:
        """The function argument `v` is, through stream chunks, group tiles and transfers
        (None: a value computed some other way)."""
        while True:
            if isinstance(v, ir.BlockArgument):
                n = v.arg_number
                if v.owner == self.stepb and n < self.n_chunks:
                    v = self.stream.operands[n]
                elif v.owner == self.gbody and n < len(self.group.operands):
                    v = self.group.operands[n]
                elif v.owner == self.func.regions[0].blocks[0]:
                    return n
                else:
                    return None
            elif v.owner.name == "napkin.transfer":
                v = v.owner.operands[0]
            else:
                return None

    def _trace(self, v: ir.Value, arg: int, what: str, user: ir.Operation) -> None:
        """`v` must be function argument `arg` (Q, K or V) as the kernel loads it: group tile,
        stream chunk (K and V: chunked along x), any transfers between."""
        w = self.w
        chunked = False
        while True:
            if isinstance(v, ir.BlockArgument):
                n = v.arg_number
                if v.owner == self.stepb and n < self.n_chunks:
                    chunked = chunked or "x" in _atype(self.stream.operands[n]).axes
                    v = self.stream.operands[n]
                    continue
                if v.owner == self.gbody and n < len(self.group.operands):
                    v = self.group.operands[n]
                    continue
                if v.owner == self.func.regions[0].blocks[0] and n == arg and (chunked or what == "Q"):
                    break
                w.refuse(
                    user, f"the kernel reads {what} from the function's argument #{arg}, chunked along x for K and V"
                )
            op = v.owner.operation
            if op.name != "napkin.transfer":
                w.refuse(op, f"the kernel loads {what} as it is in global memory, with nothing computed on the way")
            part = {
                "Q": "the Q tile copied into shared memory by cp.async (load_first_tiles), fragments by ldmatrix.x4",
                "K": "the K chunk copied into shared memory by cp.async, double-buffered (kv_loader)",
                "V": "the V chunk copied into shared memory by cp.async, double-buffered (kv_loader)",
            }[what]
            w.take(op, part)
            v = op.operands[0]
        self.traced[what] = _atype(v)

    # --- a stream without a softmax: acc += f(S_1, ..., S_n) · C (the backward's dQ) ---------

    def contraction_step(self) -> None:
        """The step of a stream that carries accumulators and no softmax: acc_k' = acc_k +
        F_k · C_k, where the F_k are values of one DAG of elementwise ops (by their rules, with
        tables per row or per column such as L and D) of score contractions S_i, each of a tile
        of the CTA's rows (held as A fragments) with a chunk of the stream over d, and C_k is a
        chunk. FlashAttention-2's backward: dQ = Σ_x dS K (rows q, one accumulator), and dK =
        Σ_q dSᵀ Q, dV = Σ_q Pᵀ dO (rows x, streaming q: the kernel transposed), with dS = P ∘
        (dP − D), P = exp(S − L). An f32 F is split into two 16-bit MMA operands (hi + lo, each
        product exact; the sum's error about 2^-17 of each term, under the 16-bit output's
        rounding); one cast to bf16/f16 first (P for dV) makes it one."""
        w, stream, step = self.w, self.stream, self.stepb
        self.softmax = False
        self.col_axis = _str(stream, "axis") or ""
        if self.col_axis not in ("x", "q"):
            w.refuse(stream, f"the kernel streams the keys x or the queries q, this stream is over '{self.col_axis}'")
        self.transposed = self.col_axis == "q"
        w.take(stream, f"the scf.for over the chunks of {self.col_axis} (double-buffered)")
        yld = _ops(step)[-1]
        w.take(yld, "the loop's carried state: the accumulators of the results")
        carried = list(step.arguments)[self.n_chunks + 1 :]
        f_values: list[ir.Value] = []
        found_accs: list[tuple[int, bool]] = []
        for acc, new in zip(carried, yld.operands, strict=True):
            if _atype(acc).dtype != "f32":
                w.refuse(stream, f"the kernel accumulates in f32, this stream carries {_atype(acc)}")
            add = w.expect(new, "napkin.add", yld, "a new accumulator acc + F·C")
            term = _pair(add.operands[0], add.operands[1], acc)
            if term is None:
                w.refuse(add, "the kernel adds the chunk's contraction to the carried accumulator")
            w.take(add, "acc += F·C: the mma.sync accumulate into the carried accumulators")
            contract = w.expect(term, "napkin.contract", add, "the chunk's contraction F·C")
            self._contraction(contract, self.col_axis, "accumulated contraction")
            found = [(v, self._loaded(v)) for v in contract.operands]
            chunk = [(v, src[0]) for v, src in found if src is not None and src[1]]
            if len(chunk) != 1:
                w.refuse(
                    contract,
                    f"the kernel contracts values of the chunk with a chunk of an argument along {self.col_axis}",
                )
            c_v, c_arg = chunk[0]
            f_v = next(v for v in contract.operands if v != c_v)
            self._take_loaded(
                c_v, "the chunk in shared memory (cp.async, double-buffered), fragments by ldmatrix.x4.trans"
            )
            w.take(contract, "F·C with mma.sync m16n8k16, F from the accumulator fragments (no memory)")
            f_v, split = self._accumulated_operand(f_v, contract)
            f_values.append(f_v)
            found_accs.append((c_arg, split))
        roots, self.score_ops, numbers = self._elementwise_dag(
            f_values, yld, lambda o: o.name == "napkin.contract", step, SCORE_RULES, "scores", None
        )
        if not roots:
            w.refuse(yld, "the kernel computes F from contractions of the rows with chunks")
        self.accumulations = tuple(
            (numbers[f], c_arg, split) for f, (c_arg, split) in zip(f_values, found_accs, strict=True)
        )
        pairs = []
        for root in roots:
            self._contraction(root, "d", "score contraction")
            srcs = [self._loaded(v) for v in root.operands]
            rows = [src[0] for src in srcs if src is not None and not src[1]]
            cols = [src[0] for src in srcs if src is not None and src[1]]
            if len(rows) != 1 or len(cols) != 1:
                w.refuse(root, "the kernel contracts a tile of the rows with a chunk of the stream over d")
            for v, src in zip(root.operands, srcs, strict=True):
                assert src is not None
                self._take_loaded(
                    v,
                    "the chunk in shared memory (cp.async, double-buffered), fragments by ldmatrix.x4"
                    if src[1]
                    else "the rows' tile copied into shared memory once, fragments by ldmatrix.x4 in registers",
                )
            w.take(root, "a score contraction with mma.sync m16n8k16 into f32 accumulators")
            pairs.append((rows[0], cols[0]))
        self.score_pairs = tuple(pairs)
        chunks = sorted({c for _, c in pairs} | {c for _, c, _ in self.accumulations})
        rows_args = sorted({r for r, _ in pairs})
        if len(chunks) > 2 or set(chunks) & set(rows_args):
            w.refuse(
                stream, f"the kernel double-buffers at most two arrays chunked along {self.col_axis}, got {len(chunks)}"
            )
        self.chunk_args = tuple(chunks)
        self.contraction_layout(rows_args)

    def _accumulated_operand(self, f_v: ir.Value, contract: ir.Operation) -> tuple[ir.Value, bool]:
        """F of an accumulated contraction before its casts, and whether it stays f32 (two
        MMAs: hi + lo) or is rounded to the inputs' 16-bit type first (one)."""
        w = self.w
        split = True
        for _ in range(2):
            op = f_v.owner.operation if isinstance(f_v, ir.OpResult) else None
            if op is None or op.name != "napkin.cast":
                break
            src, dst = _atype(op.operands[0]).dtype, _atype(op.results[0]).dtype
            if (src, dst) in (("bf16", "f32"), ("f16", "f32")) and split:
                w.take(op, "a 16-bit value widened to f32: exact (the MMA takes the 16-bit one)")
            elif src == "f32" and dst in KERNEL_DTYPES and dst == self.w_dtype():
                split = False
                w.take(op, f"F rounded to {dst}: the MMA's A fragments (arith.truncf)")
            else:
                break
            f_v = op.operands[0]
        if _atype(f_v).dtype != "f32":
            w.refuse(contract, f"the kernel computes F in f32, this contraction reads {_atype(f_v)}")
        if split:
            w.take(contract, "F·C as F_hi·C + F_lo·C: F split into two 16-bit A fragments, two mma.sync")
        return f_v, split

    def contraction_layout(self, rows_args: list[int]) -> None:
        """Tiles of the rows (b, h[, r], R, d) with R the group's axis, chunks (b, h, C, d)
        along the stream's axis C, one 16-bit type and one head dim; what `layout` needs."""
        args = [_atype(a) for a in self.func.regions[0].blocks[0].arguments]
        row_axis = "x" if self.transposed else "q"
        first = args[rows_args[0]]
        for n in [*rows_args, *self.chunk_args]:
            t = args[n]
            axis = row_axis if n in rows_args else self.col_axis
            want = [("b", "h", axis, "d")] + ([("b", "h", "r", axis, "d")] if axis == "q" and n in rows_args else [])
            if t.axes not in want or t.dtype != first.dtype or t.shape[-1] != first.shape[-1]:
                self.w.refuse(
                    self.stream,
                    f"the kernel takes tiles of the rows and chunks as (b, h, {row_axis} or {self.col_axis}, d) of "
                    f"one 16-bit type; '{self._arg_name(n)}' is {t}",
                )
        self.row_args = tuple(rows_args)
        q_like = first if not self.transposed else args[self.chunk_args[0]]
        chunk = args[self.chunk_args[0]] if not self.transposed else first
        self.traced = {"Q": q_like, "K": chunk, "V": chunk}

    def w_dtype(self) -> str:
        return _atype(self.func.regions[0].blocks[0].arguments[0]).dtype

    def _loaded(self, v: ir.Value) -> tuple[int, bool] | None:
        """The function argument `v` is, loaded through the group's tiles, the stream's
        operands, transfers and at most one exact widening cast (16-bit to f32), and whether
        the stream chunks it along its axis; None for a value computed some other way."""
        widened = False
        chunked = False
        while True:
            if isinstance(v, ir.BlockArgument):
                outer = self._outer(v)
                if outer is None:
                    return (v.arg_number, chunked) if v.owner == self.func.regions[0].blocks[0] else None
                chunked = chunked or (v.owner == self.stepb and self.col_axis in _atype(outer).axes)
                v = outer
                continue
            op = v.owner.operation
            widening = op.name == "napkin.cast" and (
                _atype(op.operands[0]).dtype in KERNEL_DTYPES and _atype(op.results[0]).dtype == "f32"
            )
            if op.name != "napkin.transfer" and not (widening and not widened):
                return None
            widened = widened or widening
            v = op.operands[0]

    def _outer(self, v: ir.BlockArgument) -> ir.Value | None:
        """The value a stream step's or the group body's block argument stands for (the
        stream's or the group's operand), None for any other block argument."""
        n = v.arg_number
        if v.owner == self.stepb and n < self.n_chunks:
            return self.stream.operands[n]
        if v.owner == self.gbody and n < len(self.group.operands):
            return self.group.operands[n]
        return None

    def _take_loaded(self, v: ir.Value, part: str) -> None:
        """Give the ops on the path of a loaded operand (`_loaded`) their part."""
        while True:
            if isinstance(v, ir.BlockArgument):
                outer = self._outer(v)
                if outer is None:
                    return
                v = outer
                continue
            op = v.owner.operation
            cast = op.name == "napkin.cast"
            self.w.take(op, "a 16-bit operand widened to f32: exact (the MMA takes the 16-bit one)" if cast else part)
            v = op.operands[0]

    def contraction_init_and_finish(self) -> None:
        w = self.w
        yld = _ops(self.init)[-1]
        w.take(yld, "the loop's initial state (scf.for iter_args)")
        fill = w.expect(yld.operands[0], "napkin.fill", yld, "the initial accumulator")
        if float(ir.FloatAttr(fill.attributes["value"]).value) != 0.0:
            w.refuse(fill, "the kernel starts the accumulator at 0")
        w.take(fill, "the initial accumulators: 0 (scf.for iter_args)")
        for v in _ops(self.init)[-1].operands[1:]:
            fill = w.expect(v, "napkin.fill", yld, "an initial accumulator")
            if float(ir.FloatAttr(fill.attributes["value"]).value) != 0.0:
                w.refuse(fill, "the kernel starts the accumulators at 0")
            w.take(fill, "the initial accumulators: 0 (scf.for iter_args)")
        yld = _ops(self.finish)[-1]
        if list(yld.operands) != list(self.finish.arguments):
            w.refuse(yld, "the kernel's results are the final accumulators")
        w.take(yld, "the stream's results: the accumulators")
        self.stream_roles = ["o"] * len(yld.operands)

    def contraction_group_body(self) -> None:
        """The grid group of a kernel without a softmax: over (b, h, rows), each output an
        accumulator of the stream cast to the inputs' 16-bit type (staged through shared
        memory, stored with 16-byte vectors)."""
        w, group = self.w, self.group
        row_axis = "x" if self.transposed else "q"
        if _str(group, "level") != "grid":
            w.refuse(group, "the kernel maps a group partition at level grid onto its CTAs")
        axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(group.attributes["axes"])]
        sizes = dict(zip(axes, ir.DenseI64ArrayAttr(group.attributes["sizes"]), strict=True))
        if set(axes) - {"b", "h", row_axis} or any(sizes.get(a, 1) != 1 for a in ("b", "h")):
            w.refuse(group, f"the kernel's CTA holds one (b, h) slice and a tile of {row_axis}")
        self.group_sizes = {"q": sizes[row_axis]} if row_axis in sizes else {}
        w.take(group, f"the grid: one CTA per ({row_axis} tile, head, batch), blockIdx (x, y, z)")
        yld = _ops(self.gbody)[-1]
        w.take(yld, "the CTA's tiles of its outputs")
        accs = []
        for v in yld.operands:
            cast = None
            while True:
                op = w.producer(v, yld, "an output tile")
                if op.name == "napkin.transfer":
                    w.take(op, "staged through shared memory and stored with 16-byte st.global.v4")
                elif op.name == "napkin.cast" and cast is None:
                    cast = op
                    if _atype(op.operands[0]).dtype != "f32" or _atype(op.results[0]).dtype != self.w_dtype():
                        w.refuse(op, "the kernel converts its accumulators from f32 to the inputs' bf16/f16")
                    w.take(op, "the accumulators converted to bf16/f16 (arith.truncf)")
                elif op == self.stream and cast is not None:
                    break
                else:
                    w.refuse(op, "the kernel stores each accumulator of the stream cast to the inputs' type")
                v = op.operands[0]
            accs.append(list(self.stream.results).index(v))
        self.output_accs = tuple(accs)
        self.outputs = ["O"] * len(accs)

    def input_sizes(self) -> None:
        """Each input the ops read has the problem's sizes along its axes."""
        args = [_atype(a) for a in self.func.regions[0].blocks[0].arguments]
        self.q_type = self.traced["Q"]
        sizes = {**self.traced["Q"].sizes, **self.traced["K"].sizes}
        for inp in self.inputs.values():
            if any(sizes.get(a) != n for a, n in zip(inp.axes, inp.shape, strict=True)):
                raise TensorCoreRefusal(
                    f"the tensor-core rule reads '{self._arg_name(inp.arg)}' at each element's coordinates, so its "
                    f"axes must have the problem's sizes; it has {args[inp.arg]}; use --kernel simt"
                )

    # --- init and finish: the state's head and O / l -----------------------------------------

    def init_and_finish(self) -> None:
        w = self.w
        yld = _ops(self.init)[-1]
        w.take(yld, "the loop's initial state (scf.for iter_args)")
        for v, value, what in zip(yld.operands, (-math.inf, 0.0, 0.0), ("row max", "row sum", "O"), strict=True):
            fill = w.expect(v, "napkin.fill", yld, f"the initial {what}")
            got = float(ir.FloatAttr(fill.attributes["value"]).value)
            if got != value or _atype(fill.results[0]).dtype != "f32":
                w.refuse(fill, f"the kernel starts the {what} at {value} in f32, this fill is {got}")
            w.take(fill, f"the initial {what}: {value} (scf.for iter_args)")
        fin = list(self.finish.arguments)
        yld = _ops(self.finish)[-1]
        # the stream's results: O / l, and the final row max m and row sum l themselves
        self.stream_roles: list[str] = []
        for v in yld.operands:
            role = "m" if v == fin[0] else "l" if v == fin[1] else "o"
            if role in self.stream_roles:
                w.refuse(self.stream, "the kernel's stream gives O / l, the final row max and the row sum once each")
            if role != "o":
                self.stream_roles.append(role)
                continue
            div = w.expect(v, "napkin.div", yld, "O / l")
            if div.operands[0] != fin[2] or div.operands[1] != fin[1]:
                w.refuse(div, "the kernel's result is the final O divided by the final row sum")
            w.take(div, "O / l: the row sums reduced over the quad, O multiplied by 1/l (normalize_to_shared)")
            self.stream_roles.append("o")
        if "o" not in self.stream_roles:
            w.refuse(self.stream, "the kernel's stream gives O / l (and may give the final row max and row sum)")
        w.take(
            yld,
            f"the stream's results: {', '.join({'o': 'O / l', 'm': 'the row max', 'l': 'the row sum'}[r] for r in self.stream_roles)}",
        )

    # --- the group: the Q tile, the stream, O cast and stored -----------------------------------

    def group_body(self) -> None:
        w, group = self.w, self.group
        if _str(group, "level") != "grid":
            w.refuse(group, "the kernel maps a group partition at level grid onto its CTAs")
        axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(group.attributes["axes"])]
        sizes = dict(zip(axes, ir.DenseI64ArrayAttr(group.attributes["sizes"]), strict=True))
        if set(axes) - {"b", "h", "q"} or any(sizes.get(a, 1) != 1 for a in ("b", "h")):
            w.refuse(
                group,
                f"the kernel's CTA holds one (b, h) slice and a tile of q with all r heads in it; "
                f"this group is over {', '.join(f'{a}={s}' for a, s in sizes.items())}",
            )
        self.group_sizes = sizes
        yld = _ops(self.gbody)[-1]
        w.take(yld, "the CTA's tiles of its outputs")
        o_result = self.stream.results[self.stream_roles.index("o")]
        self.outputs: list[str | RowOutput] = []  # per group result: "O", or an output per row
        for position, v in enumerate(yld.operands):
            user = yld
            while isinstance(v, ir.OpResult) and v.owner.name == "napkin.transfer":
                user = v.owner.operation
                v = user.operands[0]
            if set(_atype(v).axes) == set(_atype(o_result).axes):
                self._o_output(yld.operands[position], yld)
                self.outputs.append("O")
            else:
                self.outputs.append(self._row_output(yld.operands[position], yld, position))
        if self.outputs.count("O") != 1:
            w.refuse(group, "the kernel writes O / l once (and outputs per query row from the row max and sum)")
        w.take(group, "the grid: one CTA per (q tile, key/value head, batch), blockIdx (x, y, z)")

    def _o_output(self, v: ir.Value, yld: ir.Operation) -> None:
        """O / l of the stream, the ops on it, its cast to the inputs' type, its transfers."""
        w = self.w
        cast: ir.Operation | None = None
        while True:
            op = w.producer(v, yld, "the output tile")
            if op.name == "napkin.transfer":
                w.take(op, "O staged through shared memory and stored with 16-byte st.global.v4 (store_output)")
            elif op.name == "napkin.cast" and cast is None:
                cast = op
                src, dst = _atype(op.operands[0]), _atype(op.results[0])
                if src.dtype != "f32" or dst.dtype not in KERNEL_DTYPES:
                    w.refuse(op, "the kernel converts O / l from f32 to the inputs' bf16/f16")
                w.take(op, "O / l converted to bf16/f16 (arith.truncf, normalize_to_shared)")
                # elementwise ops of O / l before the cast (a per-row scale, a gate), by their rules
                v, user = op.operands[0], op
                while isinstance(v, ir.OpResult) and v.owner.name == "napkin.transfer":
                    user = v.owner.operation
                    w.take(user, "O / l in registers (a level change)")
                    v = user.operands[0]
                o_result = self.stream.results[self.stream_roles.index("o")]
                _, self.output_ops = self._elementwise_ops(
                    v, user, lambda o: False, self.gbody, OUTPUT_RULES, "output", {o_result: 0}
                )
                return
            else:
                w.refuse(op, "the kernel stores O / l of the stream, cast to the inputs' element type, as the output")
            v = op.operands[0]

    def _row_output(self, v: ir.Value, yld: ir.Operation, position: int) -> RowOutput:
        """An output per query row (the row log-sum-exp m + log l of a forward that keeps it
        for the backward): elementwise ops, by their rules, of the stream's final row max
        (value 0, scaled as the program's scores are) and row sum (value 1) and of inputs per
        row, then at most one cast; each thread of a quad's first lane stores its rows."""
        w = self.w
        numbers = {
            r: {"m": 0, "l": 1}[role]
            for role, r in zip(self.stream_roles, self.stream.results, strict=True)
            if role != "o"
        }
        out = v
        while True:
            op = w.producer(v, yld, "an output") if v not in numbers else None
            if op is not None and op.name == "napkin.transfer":
                w.take(op, "the row's value stored to global memory by the quad's first lane")
                v = op.operands[0]
                continue
            break
        stored = _atype(v).dtype
        if op is not None and op.name == "napkin.cast":
            if _atype(op.operands[0]).dtype != "f32" or stored not in ("f32", "bf16", "f16"):
                w.refuse(op, "the kernel converts an output per row from f32 to a float type")
            w.take(op, f"the row's value converted to {stored} (arith.truncf)")
            v = op.operands[0]
        rows = _atype(self.stream.results[self.stream_roles.index("o")]).axes[:-1]
        if tuple(_atype(out).axes) != tuple(rows) or _atype(v).dtype != "f32":
            w.refuse(
                yld,
                f"the kernel writes O and outputs over the query rows ({', '.join(rows)}) in f32 or cast from it; "
                f"output #{position} is {_atype(out)}",
            )
        if v in numbers:
            return RowOutput(position, (), numbers[v], stored)
        _, ops = self._elementwise_ops(v, yld, lambda o: False, self.gbody, OUTPUT_RULES, "row outputs", numbers)
        return RowOutput(position, ops, len(numbers) + len(ops) - 1, stored)

    def function_body(self) -> None:
        w, func = self.w, self.func
        block = func.regions[0].blocks[0]
        params = list(block.arguments)
        ret = _ops(block)[-1]
        if len(params) < 3 or list(self.group.operands) != params:
            w.refuse(
                self.group,
                "the kernel takes the function's Q, K and V, then the inputs of the score ops, in this order; "
                f"this group takes {len(self.group.operands)} arrays of a function of {len(params)}",
            )
        if list(ret.operands) != list(self.group.results):
            w.refuse(ret, "the kernel's outputs are the group's results, in order")
        w.take(ret, "the kernel's outputs, after its inputs: O and the outputs per row")

    def layout(self) -> None:
        """Q (b, h[, r], q, d), K (b, h, x, d), V (b, h, x, e) with e any head axis (d too),
        O like Q with V's head axis: the kernel's memref layouts; each input of the score ops
        over axes of the scores, of their sizes."""
        q, k, v = (self.traced[n] for n in ("Q", "K", "V"))
        results = [_atype(r) for r in _ops(self.func.regions[0].blocks[0])[-1].operands]
        out = results[self.outputs.index("O")]
        head = v.axes[-1]
        ok = (
            q.axes in (("b", "h", "q", "d"), ("b", "h", "r", "q", "d"))
            and k.axes == ("b", "h", "x", "d")
            and v.axes == ("b", "h", "x", head)
            and head not in ("b", "h", "r", "q", "x")
            and all(v.size(a) == k.size(a) for a in ("b", "h", "x"))
            and all(q.size(a) == k.size(a) for a in ("b", "h", "d"))
            and q.dtype == k.dtype == v.dtype == out.dtype
            and (out.axes, out.shape) == ((*q.axes[:-1], head), (*q.shape[:-1], v.shape[-1]))
            and all(
                (results[o.position].axes, results[o.position].shape) == (q.axes[:-1], q.shape[:-1])
                for o in self.outputs
                if isinstance(o, RowOutput)
            )
        )
        name = ir.StringAttr(self.func.attributes["sym_name"]).value
        if not ok:
            raise TensorCoreRefusal(
                f"the tensor-core rule takes Q as (b, h[, r], q, d), K as (b, h, x, d), V as (b, h, x, e) and "
                f"writes O like Q with V's head axis, all of one element type, and outputs per row over Q's "
                f"axes but d; '{name}'"
                f"{self.w.at(self.func)} has Q {q}, K {k}, V {v}, O {out}; use --kernel simt"
            )
        sizes = {**q.sizes, "x": k.size("x"), head: v.size(head)}
        for inp in self.inputs.values():
            if any(sizes.get(a) != n for a, n in zip(inp.axes, inp.shape, strict=True)):
                raise TensorCoreRefusal(
                    f"the tensor-core rule reads '{self._arg_name(inp.arg)}' at each element's coordinates, so its axes "
                    f"must have the problem's sizes ({', '.join(f'{a}={n}' for a, n in sizes.items() if a != 'd')}); "
                    f"'{name}'{self.w.at(self.func)} has {ArrayType(inp.axes, inp.shape, inp.dtype)}; use --kernel simt"
                )
        self.q_type = q

    def result(self, parts: list[tuple[str, str, str]]) -> AttentionMatch:
        assert self.q_type is not None
        func = self.func
        args = [_atype(a) for a in func.regions[0].blocks[0].arguments]  # after V: the kernel takes each
        if "arg_names" in func.attributes:
            names = [ir.StringAttr(n).value for n in ir.ArrayAttr(func.attributes["arg_names"])]
        else:
            names = ["Q", "K", "V"]
        return AttentionMatch(
            self.q_type,
            self.traced["K"],
            self.traced["V"],
            self.group_sizes,
            int(ir.IntegerAttr(self.stream.attributes["size"]).value),
            tuple(self.skips),
            self.scale,
            (names[0], names[1], names[2]),
            parts,
            self.score_ops,
            self.output_ops,
            tuple(self.inputs.get(n, ScoreInput(n, t.axes, t.shape, t.dtype)) for n, t in enumerate(args) if n > 2),
            tuple(o for o in self.outputs if isinstance(o, RowOutput)),
            self.outputs.index("O"),
            self.softmax,
            self.score_pairs,
            self.accumulations,
            self.chunk_args,
            self.row_args,
            self.transposed,
            self.output_accs,
        )
