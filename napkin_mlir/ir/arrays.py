"""Named-axis arrays: the wires of a napkin diagram.

A napkin array is a builtin ranked tensor whose encoding is a dictionary naming its axes
and, once the level-assignment pass has run, its memory level:

    tensor<2x4x200x64xbf16, {axes = ["b", "h", "q", "d"], level = "gmem"}>

`ArrayType` is the Python view of such a type; every field is read from builtin attributes,
never by parsing printed text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from mlir import ir

from napkin_mlir.errors import NapkinError

#: dtype names accepted on the command line and in builders -> MLIR element type builders
#: (each name is also how MLIR spells the type). `i32` arrays are integer data that only
#: mask predicates read (segment or document ids); every other op computes on floats.
DTYPES: dict[str, Callable[[], ir.Type]] = {
    "f32": ir.F32Type.get,
    "f16": ir.F16Type.get,
    "bf16": ir.BF16Type.get,
    "f64": ir.F64Type.get,
    "i32": lambda: ir.IntegerType.get_signless(32),
}

#: Bytes per element of each dtype (the cost model converts element counts with this).
DTYPE_BYTES: dict[str, int] = {"f64": 8, "f32": 4, "f16": 2, "bf16": 2, "i32": 4}


def element_type(dtype: str) -> ir.Type:
    """The MLIR element type for a dtype name (`f32`, `f16`, `bf16`, `f64`, `i32`)."""
    if dtype not in DTYPES:
        raise NapkinError(f"unsupported dtype '{dtype}' (expected one of {', '.join(DTYPES)})")
    return DTYPES[dtype]()


def dtype_name(elem: ir.Type) -> str:
    """The dtype name of an MLIR element type; raises NapkinError for unsupported types."""
    name = str(elem)
    if name in DTYPES:
        return name
    raise NapkinError(f"unsupported element type '{elem}'")


@dataclass(frozen=True)
class ArrayType:
    """An array with named axes: sizes, element dtype and an optional memory level."""

    axes: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    level: str | None = None

    def __post_init__(self) -> None:
        if len(self.axes) != len(self.shape):
            raise NapkinError(f"axes {list(self.axes)} and shape {list(self.shape)} differ in rank")
        if len(set(self.axes)) != len(self.axes):
            raise NapkinError(f"repeated axis name in {list(self.axes)}")

    @property
    def sizes(self) -> dict[str, int]:
        """Axis name -> size."""
        return dict(zip(self.axes, self.shape, strict=True))

    def size(self, axis: str) -> int:
        if axis not in self.axes:
            raise NapkinError(f"unknown axis '{axis}' (array has axes {list(self.axes)})")
        return self.shape[self.axes.index(axis)]

    @property
    def elements(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def with_level(self, level: str | None) -> ArrayType:
        return replace(self, level=level)

    def with_dtype(self, dtype: str) -> ArrayType:
        return replace(self, dtype=dtype)

    def with_size(self, axis: str, size: int) -> ArrayType:
        shape = list(self.shape)
        shape[self.axes.index(axis)] = size
        return replace(self, shape=tuple(shape))

    def without(self, axis: str) -> ArrayType:
        i = self.axes.index(axis)
        return replace(self, axes=self.axes[:i] + self.axes[i + 1 :], shape=self.shape[:i] + self.shape[i + 1 :])

    def to_mlir(self) -> ir.RankedTensorType:
        """The tensor type (needs an active context)."""
        entries: dict[str, ir.Attribute] = {"axes": ir.ArrayAttr.get([ir.StringAttr.get(a) for a in self.axes])}
        if self.level is not None:
            entries["level"] = ir.StringAttr.get(self.level)
        return ir.RankedTensorType.get(list(self.shape), element_type(self.dtype), ir.DictAttr.get(entries))

    @staticmethod
    def from_mlir(t: ir.Type) -> ArrayType:
        """Read a napkin array type; raises NapkinError if `t` is not one."""
        if not isinstance(t, ir.RankedTensorType):
            raise NapkinError(f"expected a napkin array (ranked tensor with named axes), got '{t}'")
        rt = ir.RankedTensorType(t)
        enc = rt.encoding
        if enc is None or not isinstance(enc, ir.DictAttr) or "axes" not in ir.DictAttr(enc):
            raise NapkinError(f"tensor type '{t}' has no axis names (expected encoding {{axes = [...]}})")
        d = ir.DictAttr(enc)
        axes_attr = d["axes"]
        if not isinstance(axes_attr, ir.ArrayAttr) or not all(
            isinstance(a, ir.StringAttr) for a in ir.ArrayAttr(axes_attr)
        ):
            raise NapkinError(f"tensor type '{t}': 'axes' must be an array of strings")
        axes = tuple(ir.StringAttr(a).value for a in ir.ArrayAttr(axes_attr))
        level = ir.StringAttr(d["level"]).value if "level" in d and isinstance(d["level"], ir.StringAttr) else None
        if any(s == ir.ShapedType.get_dynamic_size() for s in rt.shape):
            raise NapkinError(f"tensor type '{t}' has a dynamic size; napkin arrays have static sizes")
        return ArrayType(axes, tuple(rt.shape), dtype_name(rt.element_type), level)

    def __str__(self) -> str:
        dims = ", ".join(f"{a}={s}" for a, s in zip(self.axes, self.shape, strict=True))
        lvl = f" @{self.level}" if self.level else ""
        return f"[{dims}] {self.dtype}{lvl}"


def is_array(t: ir.Type) -> bool:
    """True when `t` is a tensor type carrying napkin axis names."""
    try:
        ArrayType.from_mlir(t)
    except NapkinError:
        return False
    return True
