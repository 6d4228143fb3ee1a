"""The tensor-core kernel's builders, below the kernel's steps: constants, index arithmetic
and the fragment-level ops, on typed values at the current insertion point.

`KernelBuilder` makes the constants (once per value and type, at the start of the kernel's
entry block, so every use is dominated) and the index arithmetic. `FragmentOps` builds the
warp-level instructions of `mma.sync.m16n8k16` for one element type: `ldmatrix.x4`, the B
fragments of two n8 tiles from one `ldmatrix`, the MMA itself (`nvgpu.mma.sync` for f16,
`nvvm.mma.sync` on packed registers for bf16) and the reductions across the 4 lanes of a
quad. The fragment shapes are those of `fragments.py` (the layouts the emulator shares).
`tensorcore_emit.py` builds the kernel with both.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, gpu, llvm, nvgpu, nvvm, vector

from napkin_mlir.backends.gpu.fragments import A_ROWS, MMA_K, MMA_M, MMA_N

#: Registers of one lane's fragments (rows x 2 elements): A (16x16), B (16x8), C/D (16x8).
A_REGS, B_REGS, C_REGS = len(A_ROWS), MMA_K * MMA_N // 64, MMA_M * MMA_N // 64


def scalar_type(name: str) -> ir.Type:
    """An MLIR scalar type by its name (f32, bf16, f16, i32, i1, index)."""
    return ir.Type.parse(name)


class KernelBuilder:
    """Constants cached per value and type (made at the start of the kernel's `entry`
    block) and index arithmetic, at the current insertion point."""

    def __init__(self, entry: ir.Block) -> None:
        self.entry = entry
        self.index = ir.IndexType.get()
        self.i1 = ir.IntegerType.get_signless(1)
        self.i32 = ir.IntegerType.get_signless(32)
        self.f32 = ir.F32Type.get()
        self._consts: dict[tuple[str, str], ir.Value] = {}
        self._names = 0

    def fresh(self, hint: str) -> ir.Location:
        """A name location `hint<n>` (n counts up): the printed kernel's SSA name of a value
        made under it (`use_name_loc_as_prefix`), where a name helps a reader of the text."""
        self._names += 1
        return ir.Location.name(f"{hint}{self._names}")

    def _constant(self, key: tuple[str, str], attr: ir.Attribute, t: ir.Type) -> ir.Value:
        if key not in self._consts:
            with ir.InsertionPoint.at_block_begin(self.entry):
                self._consts[key] = arith.ConstantOp(t, attr).result
        return self._consts[key]

    def order_constants(self) -> None:
        """Put the constants in the order of their first use (each was made at the start of
        the entry block, so they stand in reverse)."""
        previous = None
        for value in self._consts.values():
            if previous is not None:
                value.owner.move_after(previous)
            previous = value.owner

    def idx(self, value: int) -> ir.Value:
        """An index constant."""
        return self._constant(("index", str(value)), ir.IntegerAttr.get(self.index, value), self.index)

    def const(self, value: float | int, t: str) -> ir.Value:
        """A constant of scalar type `t` (a float type, or an integer type), or of a vector
        type `t` with every element `value`."""
        key = (t, repr(value))
        if key in self._consts:
            return self._consts[key]
        typ = ir.Type.parse(t)
        if isinstance(typ, ir.VectorType):
            el = ir.VectorType(typ).element_type
            attr = ir.DenseElementsAttr.get_splat(typ, _scalar_attr(value, el))
        else:
            attr = _scalar_attr(value, typ)
        return self._constant(key, attr, typ)

    def boolean(self, value: bool) -> ir.Value:
        return self._constant(("i1", repr(bool(value))), ir.IntegerAttr.get(self.i1, int(value)), self.i1)

    # index arithmetic
    def _i(self, v: ir.Value | int) -> ir.Value:
        return self.idx(v) if isinstance(v, int) else v

    def add(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return arith.addi(a, self._i(b))

    def mul(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return arith.muli(a, self._i(b))

    def div(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return arith.divui(a, self._i(b))

    def rem(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return arith.remui(a, self._i(b))

    def minu(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return arith.minui(a, self._i(b))

    def ult(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return arith.cmpi(arith.CmpIPredicate.ult, a, self._i(b))


def _scalar_attr(value: float | int, t: ir.Type) -> ir.Attribute:
    if isinstance(t, (ir.IntegerType, ir.IndexType)):
        return ir.IntegerAttr.get(t, int(value))
    return ir.FloatAttr.get(t, float(value))


class FragmentOps:
    """The MMA-level ops of one element type (`el`, bf16 or f16), built through `b`."""

    def __init__(self, b: KernelBuilder, el: str) -> None:
        self.b = b
        self.el_name = el
        self.el = scalar_type(el)
        f32 = b.f32
        self.acc_t = ir.VectorType.get([C_REGS, 2], f32)  # C/D fragment: 2 rows (g, g+8) x 2 columns
        self.a_t = ir.VectorType.get([A_REGS, 2], self.el)  # A fragment (and any ldmatrix.x4)
        self.b_t = ir.VectorType.get([B_REGS, 2], self.el)  # B fragment
        self.pair_t = ir.VectorType.get([2], self.el)
        self.mma_t = llvm.StructType.get_literal([f32] * 4)

    def ldmatrix(self, buf: ir.Value, index: list[ir.Value], transpose: bool) -> ir.Value:
        """One ldmatrix.x4: an A fragment (Q) or two B fragments (K, `.trans` for V)."""
        return nvgpu.LdMatrixOp(self.a_t, buf, index, transpose, 4).result

    def b_single(self, buf: ir.Value, index: list[ir.Value], transpose: bool) -> ir.Value:
        """The B fragment of one n8 tile from one ldmatrix.x2 (lanes 0-15 give its rows)."""
        return nvgpu.LdMatrixOp(self.b_t, buf, index, transpose, 2).result

    def b_pair(self, buf: ir.Value, index: list[ir.Value], transpose: bool) -> tuple[ir.Value, ir.Value]:
        """The B fragments of two neighbouring n8 tiles from one ldmatrix.x4 (lanes 0-15 give
        the rows of the first tile, lanes 16-31 those of the second)."""
        both = self.ldmatrix(buf, index, transpose)
        first, second = (
            vector.ExtractStridedSliceOp(self.b_t, both, [row, 0], [B_REGS, 2], [1, 1]).result for row in (0, B_REGS)
        )
        return first, second

    def mma(self, a: ir.Value, b: ir.Value, acc: ir.Value) -> ir.Value:
        """mma.sync m16n8k16, f32 accumulate. nvgpu.mma.sync lowers f16 only, so bf16 goes
        through nvvm.mma.sync on the packed 32-bit registers."""
        if self.el_name == "f16":
            return nvgpu.MmaSyncOp(self.acc_t, a, b, acc, [MMA_M, MMA_N, MMA_K]).result
        ra, rb = self._packed(a, A_REGS), self._packed(b, B_REGS)
        rc = [vector.extract(acc, [], [i, k]) for i in range(C_REGS) for k in range(2)]
        res = nvvm.MmaOp(
            self.mma_t,
            ir.Attribute.parse(f"#nvvm.shape<m = {MMA_M}, n = {MMA_N}, k = {MMA_K}>"),
            ir.Attribute.parse("#nvvm.mma_layout<row>"),
            ir.Attribute.parse("#nvvm.mma_layout<col>"),
            ra,
            rb,
            rc,
            multiplicandAPtxType=ir.Attribute.parse(f"#nvvm.mma_type<{self.el_name}>"),
            multiplicandBPtxType=ir.Attribute.parse(f"#nvvm.mma_type<{self.el_name}>"),
        ).result
        outs = [llvm.ExtractValueOp(self.b.f32, res, [i]).result for i in range(4)]
        return vector.from_elements(self.acc_t, outs)

    def _packed(self, frag: ir.Value, rows: int) -> list[ir.Value]:
        """The 32-bit registers of a bf16 fragment: one per row of two elements."""
        word_t = ir.VectorType.get([1], self.b.i32)
        regs = []
        for i in range(rows):
            pair = vector.extract(frag, [], [i])
            word = vector.BitCastOp(word_t, pair).result
            regs.append(vector.extract(word, [], [0]))
        return regs

    def quad_reduce(self, v: ir.Value, combine: str) -> ir.Value:
        """`combine` ("max" or "sum") across the 4 lanes of a quad (the threads sharing a
        fragment row)."""
        b = self.b
        for off in (1, 2):
            other = gpu.ShuffleOp(v, b.const(off, "i32"), b.const(32, "i32"), gpu.ShuffleMode.XOR).results[0]
            v = arith.maximumf(v, other) if combine == "max" else arith.addf(v, other)
        return v
