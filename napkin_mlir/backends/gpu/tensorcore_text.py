"""MLIR text for the tensor-core kernel, below the kernel's steps: SSA names, constants and
the fragment-level ops.

`TextEmitter` hands out fresh SSA names, writes indented lines and collects the constants
(which open the function body, in the order they were first used). `FragmentOps` writes
the warp-level instructions of `mma.sync.m16n8k16` for one element type through an
emitter: `ldmatrix.x4`, the B fragments of two n8 tiles from one `ldmatrix`, the MMA itself
(`nvgpu.mma.sync` for f16, `nvvm.mma.sync` on packed registers for bf16) and the reductions
across the 4 lanes of a quad. `tensorcore_emit.py` writes the kernel with both.
"""

from __future__ import annotations

import math
import struct


def _float_bits(value: float, t: str) -> str:
    """A non-finite float constant as MLIR writes it: the bits of its type, in hex."""
    if t == "f64":
        return "0x" + struct.pack(">d", value).hex().upper()
    if t == "f16":
        return "0x" + struct.pack(">e", value).hex().upper()
    bits = struct.pack(">f", value).hex().upper()
    return "0x" + (bits[:4] if t == "bf16" else bits)


class TextEmitter:
    """Builds MLIR text with fresh SSA names (the kernel is unrolled at the fragment level)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0
        self.consts: dict[tuple[str, str], str] = {}
        self.indent = 6

    def fresh(self, hint: str = "v") -> str:
        self.n += 1
        return f"%{hint}{self.n}"

    def emit(self, text: str) -> None:
        self.lines.append(" " * self.indent + text)

    def op(self, text: str, hint: str = "v") -> str:
        name = self.fresh(hint)
        self.emit(f"{name} = {text}")
        return name

    def idx(self, value: int) -> str:
        key = ("index", str(value))
        if key not in self.consts:
            self.consts[key] = f"%c{value}".replace("-", "m")
        return self.consts[key]

    def const(self, value: float | int, t: str) -> str:
        key = (t, repr(value))
        if key not in self.consts:
            tag = t.replace("<", "_").replace(">", "").replace("x", "_")
            self.consts[key] = f"%k{len(self.consts)}_{tag}"
        return self.consts[key]

    def const_lines(self) -> list[str]:
        out = []
        for (t, value), name in self.consts.items():
            if t == "index":
                out.append(f"{name} = arith.constant {value} : index")
            elif t.startswith("vector"):
                out.append(f"{name} = arith.constant dense<{value}> : {t}")
            else:
                v = float(value) if t.startswith(("f", "bf")) else int(value)
                lit = _float_bits(v, t) if isinstance(v, float) and not math.isfinite(v) else repr(v)
                out.append(f"{name} = arith.constant {lit} : {t}")
        return out

    # index arithmetic
    def add(self, a: str, b: str) -> str:
        return self.op(f"arith.addi {a}, {b} : index", "i")

    def mul(self, a: str, b: str) -> str:
        return self.op(f"arith.muli {a}, {b} : index", "i")

    def div(self, a: str, b: str) -> str:
        return self.op(f"arith.divui {a}, {b} : index", "i")

    def rem(self, a: str, b: str) -> str:
        return self.op(f"arith.remui {a}, {b} : index", "i")

    def minu(self, a: str, b: str) -> str:
        return self.op(f"arith.minui {a}, {b} : index", "i")


class FragmentOps:
    """The MMA-level ops of one element type (`el`, bf16 or f16), written through `e`."""

    def __init__(self, e: TextEmitter, el: str) -> None:
        self.e = e
        self.el = el
        self.acc_t = "vector<2x2xf32>"  # C/D fragment: 2 rows (g, g+8) x 2 columns
        self.a_t = f"vector<4x2x{el}>"  # A fragment (and the result of any ldmatrix.x4)
        self.b_t = f"vector<2x2x{el}>"  # B fragment

    def ldmatrix(self, buf: str, buf_t: str, index: list[str], transpose: bool) -> str:
        """One ldmatrix.x4: an A fragment (Q) or two B fragments (K, `.trans` for V)."""
        attrs = f"{{numTiles = 4 : i32, transpose = {'true' if transpose else 'false'}}}"
        return self.e.op(f"nvgpu.ldmatrix {buf}[{', '.join(index)}] {attrs} : {buf_t} -> {self.a_t}", "lm")

    def b_single(self, buf: str, buf_t: str, index: list[str], transpose: bool) -> str:
        """The B fragment of one n8 tile from one ldmatrix.x2 (lanes 0-15 give its rows)."""
        attrs = f"{{numTiles = 2 : i32, transpose = {'true' if transpose else 'false'}}}"
        return self.e.op(f"nvgpu.ldmatrix {buf}[{', '.join(index)}] {attrs} : {buf_t} -> {self.b_t}", "kb")

    def b_pair(self, buf: str, buf_t: str, index: list[str], transpose: bool) -> tuple[str, str]:
        """The B fragments of two neighbouring n8 tiles from one ldmatrix.x4 (lanes 0-15 give
        the rows of the first tile, lanes 16-31 those of the second)."""
        both = self.ldmatrix(buf, buf_t, index, transpose)
        return tuple(  # type: ignore[return-value]
            self.e.op(
                f"vector.extract_strided_slice {both} {{offsets = [{first}, 0], sizes = [2, 2], strides = [1, 1]}}"
                f" : {self.a_t} to {self.b_t}",
                "kb",
            )
            for first in (0, 2)
        )

    def mma(self, a: str, b: str, acc: str) -> str:
        """mma.sync m16n8k16, f32 accumulate. nvgpu.mma.sync lowers f16 only, so bf16 goes
        through nvvm.mma.sync on the packed 32-bit registers."""
        e, el, a_t, b_t, acc_t = self.e, self.el, self.a_t, self.b_t, self.acc_t
        if el == "f16":
            return e.op(
                f"nvgpu.mma.sync ({a}, {b}, {acc}) {{mmaShape = [16, 8, 16]}} : ({a_t}, {b_t}, {acc_t}) -> {acc_t}",
                "mm",
            )
        ra, rb = self._packed(a, 4), self._packed(b, 2)
        rc = [e.op(f"vector.extract {acc}[{i}, {k}] : f32 from {acc_t}", "pk") for i in range(2) for k in range(2)]
        res = e.op(
            f"nvvm.mma.sync A[{', '.join(ra)}] B[{', '.join(rb)}] C[{', '.join(rc)}] "
            "{layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, "
            f"multiplicandAPtxType = #nvvm.mma_type<{el}>, multiplicandBPtxType = #nvvm.mma_type<{el}>, "
            "shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>",
            "mm",
        )
        outs = [e.op(f"llvm.extractvalue {res}[{i}] : !llvm.struct<(f32, f32, f32, f32)>", "pk") for i in range(4)]
        return e.op(f"vector.from_elements {', '.join(outs)} : {acc_t}", "mm")

    def _packed(self, frag: str, rows: int) -> list[str]:
        """The 32-bit registers of a bf16 fragment: one per row of two elements."""
        e, el = self.e, self.el
        regs = []
        for i in range(rows):
            pair = e.op(f"vector.extract {frag}[{i}] : vector<2x{el}> from vector<{rows}x2x{el}>", "pk")
            word = e.op(f"vector.bitcast {pair} : vector<2x{el}> to vector<1xi32>", "pk")
            regs.append(e.op(f"vector.extract {word}[0] : i32 from vector<1xi32>", "pk"))
        return regs

    def quad_reduce(self, v: str, combine: str) -> str:
        """`combine` across the 4 lanes of a quad (the threads sharing a fragment row)."""
        e = self.e
        for off in (1, 2):
            sh = e.fresh("sh")
            e.emit(f"{sh}, {e.fresh('ok')} = gpu.shuffle xor {v}, {e.const(off, 'i32')}, {e.const(32, 'i32')} : f32")
            v = e.op(f"{combine} {v}, {sh} : f32", "r")
        return v
