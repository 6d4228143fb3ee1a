"""Python builders for napkin diagrams.

`DiagramBuilder` creates a `func.func` whose arguments are named-axis arrays and appends
napkin ops to it; every method returns the result `ir.Value`, and result types (axes, sizes,
element type) are derived from the operands by the same rules the verifier checks:

    with napkin_context(), ir.Location.unknown():
        d = DiagramBuilder("matmul", A=ArrayType(("m", "k"), (300, 100), "f32"),
                                     B=ArrayType(("k", "n"), (100, 200), "f32"))
        c = d.contract(d["A"], d["B"], ("m", "n"))
        d.ret(c)
        module = d.module
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mlir import ir
from mlir.dialects import func, gpu

from napkin_mlir.errors import NapkinError
from napkin_mlir.ir.arrays import ArrayType, element_type
from napkin_mlir.ir.masks import causal, create_mask
from napkin_mlir.ir.ops import BINARY_FUNCTIONS, REDUCE_KINDS, UNARY_FUNCTIONS
from napkin_mlir.ir.regions import slot_attributes


def array_of(v: ir.Value) -> ArrayType:
    """The named-axis array type of a value."""
    return ArrayType.from_mlir(v.type)


class DiagramBuilder:
    """Builds one diagram (a func.func of napkin ops) in a fresh module.

    Needs an active context with the napkin dialect loaded and an active location.
    """

    def __init__(self, name: str, **inputs: ArrayType) -> None:
        self.module = ir.Module.create()
        self.name = name
        arg_types = [t.to_mlir() for t in inputs.values()]
        with ir.InsertionPoint(self.module.body):
            self.func = func.FuncOp(name, ir.FunctionType.get(arg_types, []))
        self.block = self.func.add_entry_block()
        self.inputs = dict(zip(inputs, self.block.arguments, strict=True))
        self.func.attributes["arg_names"] = ir.ArrayAttr.get([ir.StringAttr.get(n) for n in inputs])
        self._done = False

    def __getitem__(self, name: str) -> ir.Value:
        return self.inputs[name]

    def _op(self, name: str, operands: Sequence[ir.Value], result: ArrayType, **attrs: ir.Attribute) -> ir.Value:
        if self._done:
            raise NapkinError(f"diagram '{self.name}' is already finished")
        with ir.InsertionPoint(self.block):
            op = ir.Operation.create(
                f"napkin.{name}", results=[result.to_mlir()], operands=list(operands), attributes=attrs
            )
        return op.result

    # --- boxes ---------------------------------------------------------------------------
    def contract(self, lhs: ir.Value, rhs: ir.Value, out_axes: Sequence[str], dtype: str | None = None) -> ir.Value:
        """Sum of products over every axis of lhs/rhs not in `out_axes` (einsum by name)."""
        a, b = array_of(lhs), array_of(rhs)
        sizes = {**a.sizes, **b.sizes}
        for ax in out_axes:
            if ax not in sizes:
                raise NapkinError(f"contract: unknown output axis '{ax}' (inputs have {sorted(sizes)})")
        out = ArrayType(tuple(out_axes), tuple(sizes[ax] for ax in out_axes), dtype or a.dtype)
        return self._op("contract", [lhs, rhs], out)

    def unary(self, fn: str, x: ir.Value) -> ir.Value:
        if fn not in UNARY_FUNCTIONS or fn == "scale":
            raise NapkinError(f"unknown elementwise function '{fn}'")
        return self._op(fn, [x], array_of(x))

    def exp(self, x: ir.Value) -> ir.Value:
        return self.unary("exp", x)

    def scale(self, x: ir.Value, factor: float) -> ir.Value:
        return self._op("scale", [x], array_of(x), factor=ir.FloatAttr.get(ir.F64Type.get(), factor))

    def cast(self, x: ir.Value, dtype: str) -> ir.Value:
        t = array_of(x)
        if t.dtype == dtype:
            return x
        return self._op("cast", [x], t.with_dtype(dtype))

    def binary(self, fn: str, lhs: ir.Value, rhs: ir.Value) -> ir.Value:
        """Elementwise `fn`; the result has lhs's axes then rhs's new ones (broadcasting)."""
        if fn not in BINARY_FUNCTIONS:
            raise NapkinError(f"unknown binary function '{fn}'")
        a, b = array_of(lhs), array_of(rhs)
        axes = list(a.axes) + [ax for ax in b.axes if ax not in a.axes]
        sizes = {**b.sizes, **a.sizes}
        return self._op(fn, [lhs, rhs], ArrayType(tuple(axes), tuple(sizes[ax] for ax in axes), a.dtype))

    def map(self, fn: Callable[..., ir.Value], *xs: ir.Value) -> ir.Value:
        """A user-defined elementwise function; `fn` builds the scalar body from block args."""
        ts = [array_of(x) for x in xs]
        axes: list[str] = []
        sizes: dict[str, int] = {}
        for t in ts:
            axes += [ax for ax in t.axes if ax not in axes]
            sizes.update(t.sizes)
        out = ArrayType(tuple(axes), tuple(sizes[ax] for ax in axes), ts[0].dtype)
        with ir.InsertionPoint(self.block):
            op = ir.Operation.create(
                "napkin.map",
                results=[out.to_mlir()],
                operands=list(xs),
                attributes=slot_attributes(len(xs), None),
                regions=1,
            )
        body = op.regions[0].blocks.append(*[element_type(t.dtype) for t in ts])
        with ir.InsertionPoint(body):
            gpu.YieldOp([fn(*body.arguments)])
        return op.result

    def reduce(self, x: ir.Value, axis: str, kind: str) -> ir.Value:
        if kind not in REDUCE_KINDS:
            raise NapkinError(f"unknown reduction '{kind}' (expected one of {', '.join(REDUCE_KINDS)})")
        t = array_of(x)
        t.size(axis)
        return self._op("reduce", [x], t.without(axis), axis=ir.StringAttr.get(axis), kind=ir.StringAttr.get(kind))

    def softmax(self, x: ir.Value, axis: str) -> ir.Value:
        array_of(x).size(axis)
        return self._op("softmax", [x], array_of(x), axis=ir.StringAttr.get(axis))

    def mask(
        self, x: ir.Value, rows: str, cols: str, predicate: Callable[..., ir.Value], *arrays: ir.Value
    ) -> ir.Value:
        """Keep the entries where `predicate` is true, -inf elsewhere. `predicate` builds an
        i1 from (i, j, n_rows, n_cols, one scalar per array in `arrays`) with arith ops; the
        arrays broadcast by axis name (segment ids over the rows, over the cols, ...)."""
        t = array_of(x)
        t.size(rows)
        t.size(cols)
        for a in arrays:
            for axis, size in array_of(a).sizes.items():
                if t.sizes.get(axis) != size:
                    raise NapkinError(f"a mask's array has axis '{axis}' of size {size}, not one of {t}")
        if self._done:
            raise NapkinError(f"diagram '{self.name}' is already finished")
        with ir.InsertionPoint(self.block):
            return create_mask(x, rows, cols, predicate, arrays).result

    def causal_mask(self, x: ir.Value, rows: str, cols: str) -> ir.Value:
        """The causal mask (top-left aligned): the predicate j <= i."""
        return self.mask(x, rows, cols, causal)

    def transfer(self, x: ir.Value, level: str) -> ir.Value:
        return self._op("transfer", [x], array_of(x).with_level(level))

    def ret(self, *results: ir.Value) -> ir.Module:
        """Finish the diagram: return `results` and fix the function type."""
        with ir.InsertionPoint(self.block):
            func.ReturnOp(list(results))
        self.func.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get([a.type for a in self.block.arguments], [r.type for r in results])
        )
        self._done = True
        return self.module


for _fn in BINARY_FUNCTIONS:

    def _method(self: DiagramBuilder, lhs: ir.Value, rhs: ir.Value, _fn: str = _fn) -> ir.Value:
        return self.binary(_fn, lhs, rhs)

    setattr(DiagramBuilder, _fn, _method)

for _fn in UNARY_FUNCTIONS:
    if _fn not in ("scale", "exp"):

        def _umethod(self: DiagramBuilder, x: ir.Value, _fn: str = _fn) -> ir.Value:
            return self.unary(_fn, x)

        setattr(DiagramBuilder, _fn, _umethod)
