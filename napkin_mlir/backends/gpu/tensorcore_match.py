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
chunked by the stream), the attributes the kernel relies on (one `napkin.scale` between the
score contraction and the softmax, whose factor the kernel folds into its `ex2`; a causal
`napkin.mask` at the group's q offset and the chunk's x offset; reductions over `x`; fills of
-inf and 0) and the element types (both contractions accumulate in f32, P and O are cast
from f32 to the inputs' bf16/f16). `AttentionMatch.parts` lists each op with its part of the
kernel, in program order.

The canonical program is what `napkin-stream-partition` makes of attention (with
`napkin-assign-levels` and `napkin-group-partition` over b, h and q); operands of the
commutative ops (add, mul, max, the contractions) may come in either order, and any number
of `napkin.transfer` (level changes: the kernel's cp.async and stores) may sit on the paths
of Q, K, V and O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NoReturn

from mlir import ir

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType
from napkin_mlir.ir.context import format_location


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
    }
)

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
    causal: bool
    scale: float
    names: tuple[str, str, str]  # the function's names of Q, K, V
    parts: list[tuple[str, str, str]] = field(default_factory=list)  # (op, location, part of the kernel)

    @property
    def dims(self) -> dict[str, int]:
        return {**self.q_type.sizes, **self.k_type.sizes}

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
    # every op's name first: an op the kernel has no code for at all is named at once
    for op in _nested(body):
        if op.name not in KERNEL_OPS:
            w.refuse(op)
    m = _Matcher(w, func, group, stream)
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
        self.causal = False
        self.traced: dict[str, ArrayType] = {}
        self.q_type: ArrayType | None = None

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
        w.take(stream, "the scf.for over the chunks of x (K/V double-buffered; causal: up to the diagonal chunk)")
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
        alpha = self._alpha(alpha_v, mul_o, m, m_new)
        w.take(add_o, "O = alpha·O + P V: the P V mma.sync accumulate into the rescaled accumulators")
        w.take(mul_o, "alpha·O: arith.mulf of the O accumulators (accumulate_pv)")
        contract_pv = w.expect(pv_v, "napkin.contract", add_o, "P·V")
        cast_v, v_v = self._split(contract_pv, "napkin.cast")
        cast_p = w.expect(cast_v, "napkin.cast", contract_pv, "P cast to the inputs' element type")
        p_v = cast_p.operands[0]
        exp_p = self._probabilities(p_v, cast_p, scores, m_new)
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
        """S' = mask(scale(Q K^T)): between the contraction and the row max at most one scale
        and one causal mask, in either order (a positive scale commutes with -inf)."""
        w = self.w
        v = scores
        scale: ir.Operation | None = None
        mask: ir.Operation | None = None
        while True:
            op = w.producer(v, user, "the scores")
            if op.name == "napkin.contract":
                break
            if op.name == "napkin.scale" and scale is None:
                scale = op
                self.scale = float(ir.FloatAttr(op.attributes["factor"]).value)
                w.take(op, "the softmax scale, folded into one fma and ex2 per score (c = scale·log2 e)")
            elif op.name == "napkin.mask" and mask is None:
                mask = op
                self._mask(op)
            else:
                w.refuse(
                    op,
                    "between the score contraction and the softmax the kernel applies one napkin.scale "
                    "and one causal napkin.mask only",
                )
            user, v = op, op.operands[0]
        self._contraction(op, "d", "S = Q·K^T")
        w.take(op, "S = Q K^T with mma.sync m16n8k16 (K fragments by ldmatrix.x4), unscaled in the accumulators")
        q_v, k_v = op.operands
        if self._source(q_v) == 1:  # an einsum by axis names: contract(K, Q) is the same scores
            q_v, k_v = k_v, q_v
        self._trace(q_v, 0, "Q", op)
        self._trace(k_v, 1, "K", op)

    def _mask(self, op: ir.Operation) -> None:
        w = self.w
        if _str(op, "kind") != "causal" or _str(op, "rows") != "q" or _str(op, "cols") != "x":
            w.refuse(op, "the kernel's mask is causal over rows q and columns x")
        axes = [ir.StringAttr(a).value for a in ir.ArrayAttr(self.group.attributes["axes"])]
        if len(op.operands) != 3 or "q" not in axes:
            w.refuse(
                op, "the kernel masks at global positions: the mask must take the group's q and the chunk's x offsets"
            )
        q_off = self.gbody.arguments[len(self.group.operands) + axes.index("q")]
        x_off = self.stepb.arguments[self.n_chunks]
        if op.operands[1] != q_off or op.operands[2] != x_off:
            w.refuse(
                op, "the kernel masks at global positions: the mask must take the group's q and the chunk's x offsets"
            )
        self.causal = True
        w.take(op, "the causal mask: scores with col > row (and past x) set to -inf (masked_scores)")

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
        if len(yld.operands) != 1 or len(self.stream.results) != 1:
            w.refuse(self.stream, "the kernel's stream gives one result, O / l")
        div = w.expect(yld.operands[0], "napkin.div", yld, "O / l")
        if div.operands[0] != fin[2] or div.operands[1] != fin[1]:
            w.refuse(div, "the kernel's result is the final O divided by the final row sum")
        w.take(div, "O / l: the row sums reduced over the quad, O multiplied by 1/l (normalize_to_shared)")
        w.take(yld, "the stream's result, O / l")

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
        if len(yld.operands) != 1:
            w.refuse(group, "the kernel writes one output")
        w.take(yld, "the CTA's tile of O")
        v = yld.operands[0]
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
            elif op == self.stream and cast is not None:
                break
            else:
                w.refuse(op, "the kernel stores O / l of the stream, cast to the inputs' element type, as the output")
            v = op.operands[0]
        w.take(group, "the grid: one CTA per (q tile, key/value head, batch), blockIdx (x, y, z)")

    def function_body(self) -> None:
        w, func = self.w, self.func
        block = func.regions[0].blocks[0]
        params = list(block.arguments)
        ret = _ops(block)[-1]
        if (
            len(params) != 3
            or len(self.group.operands) != 3
            or any(self.group.operands[i] != params[i] for i in range(3))
        ):
            w.refuse(
                self.group,
                f"the kernel takes the function's Q, K and V, in this order; this group takes {len(self.group.operands)} "
                f"arrays of a function of {len(params)}",
            )
        if len(ret.operands) != 1 or ret.operands[0] != self.group.results[0]:
            w.refuse(ret, "the kernel's output is the group's result")
        w.take(ret, "the kernel's output O (its fourth argument)")

    def layout(self) -> None:
        """Q (b, h[, r], q, d), K and V (b, h, x, d), O like Q: the kernel's memref layouts."""
        q, k, v = (self.traced[n] for n in ("Q", "K", "V"))
        out = _atype(_ops(self.func.regions[0].blocks[0])[-1].operands[0])
        ok = (
            q.axes in (("b", "h", "q", "d"), ("b", "h", "r", "q", "d"))
            and k.axes == v.axes == ("b", "h", "x", "d")
            and k.shape == v.shape
            and all(q.size(a) == k.size(a) for a in ("b", "h", "d"))
            and q.dtype == k.dtype == v.dtype == out.dtype
            and (out.axes, out.shape) == (q.axes, q.shape)
        )
        if not ok:
            raise TensorCoreRefusal(
                f"the tensor-core rule takes Q as (b, h[, r], q, d), K and V as (b, h, x, d) and writes O like Q, "
                f"all of one element type; '{ir.StringAttr(self.func.attributes['sym_name']).value}'"
                f"{self.w.at(self.func)} has Q {q}, K {k}, V {v}, O {out}; use --kernel simt"
            )
        self.q_type = q

    def result(self, parts: list[tuple[str, str, str]]) -> AttentionMatch:
        assert self.q_type is not None
        func = self.func
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
            self.causal,
            self.scale,
            (names[0], names[1], names[2]),
            parts,
        )
