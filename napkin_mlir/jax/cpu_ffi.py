"""The CPU route: a compiled diagram called by XLA as a typed-FFI custom call, no C++ build.

XLA's typed FFI calls a handler `XLA_FFI_Error* handler(XLA_FFI_CallFrame*)` with the
operation's buffers. The handler is generated here in MLIR's LLVM dialect, in the same module
as the kernel, and JIT-compiled with it by the ExecutionEngine; `jax.ffi.register_ffi_target`
registers its address, and `jax.ffi.ffi_call` puts one custom call in the HLO. At run time
nothing passes through Python: the handler reads each buffer's data pointer out of the call
frame, builds the kernel's memref arguments from it (pointer, pointer, offset 0, the static
sizes and row-major strides) and calls the kernel, which writes its outputs straight into
XLA's output buffers. f16/bf16 buffers are bit patterns in memory on both sides, so nothing
is converted.

The handler also

* answers XLA's metadata query (a call frame whose extension chain holds the metadata
  extension: XLA sends it once, at registration) with FFI API version 0.1;
* returns at once, doing nothing, for any stage but execute;
* checks the number of buffers, and each buffer's element type, rank and dimensions, against
  what the kernel was compiled for, and returns an `XLA_FFI_Error` (INVALID_ARGUMENT) naming
  the kernel instead of running on buffers of another shape.

The byte offsets it uses come from ctypes mirrors of jaxlib's `xla/ffi/api/c_api.h` (the
`_CallFrame` family below), not from hand-counted numbers; `selftest_metadata` calls the
compiled handler from Python with a metadata call frame before it is registered, so a wrong
address or layout fails here with a clear error rather than inside XLA.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

from napkin_mlir.errors import NapkinError

# --- mirrors of xla/ffi/api/c_api.h (jaxlib 0.10.2; layouts unchanged since API 0.1) ----------


class _ExtensionBase(ctypes.Structure):
    _fields_ = (("struct_size", ctypes.c_size_t), ("type", ctypes.c_int), ("next", ctypes.c_void_p))


class _ApiVersion(ctypes.Structure):
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("major_version", ctypes.c_int),
        ("minor_version", ctypes.c_int),
    )


class _Metadata(ctypes.Structure):
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("api_version", _ApiVersion),
        ("traits", ctypes.c_uint32),
        ("state_type_id", ctypes.c_int64),
    )


class _MetadataExtension(ctypes.Structure):
    _fields_ = (("extension_base", _ExtensionBase), ("metadata", ctypes.c_void_p))


class _Buffer(ctypes.Structure):
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("rank", ctypes.c_int64),
        ("dims", ctypes.c_void_p),
    )


class _Args(ctypes.Structure):  # XLA_FFI_Args and XLA_FFI_Rets have the same layout
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.c_void_p),
        ("args", ctypes.c_void_p),
    )


class _Attrs(ctypes.Structure):
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.c_void_p),
        ("names", ctypes.c_void_p),
        ("attrs", ctypes.c_void_p),
    )


class _CallFrame(ctypes.Structure):
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("api", ctypes.c_void_p),
        ("ctx", ctypes.c_void_p),
        ("stage", ctypes.c_int),
        ("args", _Args),
        ("rets", _Args),
        ("attrs", _Attrs),
        ("future", ctypes.c_void_p),
    )


class _ErrorCreateArgs(ctypes.Structure):
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("message", ctypes.c_char_p),
        ("errc", ctypes.c_int),
    )


class _Api(ctypes.Structure):
    _fields_ = (
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("api_version", _ApiVersion),
        ("internal_api", ctypes.c_void_p),
        ("error_create", ctypes.c_void_p),
    )


#: XLA_FFI_Extension_Metadata, XLA_FFI_ExecutionStage_EXECUTE, XLA_FFI_Error_Code_INVALID_ARGUMENT.
_EXTENSION_METADATA = 1
_STAGE_EXECUTE = 3
_INVALID_ARGUMENT = 3

#: The FFI API version the handler declares (it uses nothing newer than 0.1).
HANDLER_API_VERSION = (0, 1)

#: napkin dtype -> XLA_FFI_DataType.
FFI_DTYPES = {"f16": 10, "f32": 11, "f64": 12, "bf16": 16}

_ERROR_ARGS_SIZE = _ErrorCreateArgs.errc.offset + ctypes.sizeof(ctypes.c_int)  # XLA_FFI_..._STRUCT_SIZE


def _off(field: object) -> int:
    return int(field.offset)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class BufferSpec:
    """One buffer the kernel takes: its napkin dtype and static shape (row-major)."""

    dtype: str
    shape: tuple[int, ...]


def memref_arg_types(rank: int) -> list[str]:
    """The LLVM types of one memref argument in the expanded calling convention."""
    return ["!llvm.ptr", "!llvm.ptr", "i64", *(["i64"] * rank), *(["i64"] * rank)]


def _row_major_strides(shape: Sequence[int]) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return list(reversed(strides))


class _Emitter:
    """SSA names and lines of one llvm.func body."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0

    def fresh(self) -> str:
        self.count += 1
        return f"%v{self.count}"

    def op(self, text: str) -> str:
        name = self.fresh()
        self.lines.append(f"    {name} = {text}")
        return name

    def stmt(self, text: str) -> None:
        self.lines.append(f"    {text}")

    def label(self, text: str) -> None:
        self.lines.append(f"  {text}")

    def const(self, value: int, ty: str = "i64") -> str:
        return self.op(f"llvm.mlir.constant({value} : {ty}) : {ty}")

    def gep(self, base: str, offset: int) -> str:
        return self.op(f"llvm.getelementptr {base}[{offset}] : (!llvm.ptr) -> !llvm.ptr, i8")

    def load(self, base: str, offset: int, ty: str) -> str:
        return self.op(f"llvm.load {self.gep(base, offset)} : !llvm.ptr -> {ty}")

    def eq(self, a: str, b: str, ty: str) -> str:
        return self.op(f'llvm.icmp "eq" {a}, {b} : {ty}')

    def all_of(self, flags: list[str]) -> str:
        acc = flags[0] if flags else self.op("llvm.mlir.constant(true) : i1")
        for f in flags[1:]:
            acc = self.op(f"llvm.and {acc}, {f} : i1")
        return acc


def _message_literal(text: str) -> tuple[str, int]:
    clean = "".join(c if c.isprintable() and c not in '"\\' else "?" for c in text).encode("ascii", "replace")
    return "".join(chr(b) for b in clean) + "\\00", len(clean) + 1


def handler_text(
    symbol: str, kernel: str, inputs: Sequence[BufferSpec], outputs: Sequence[BufferSpec], label: str
) -> str:
    """The LLVM-dialect text of the FFI handler `symbol` that checks the call frame's buffers
    against `inputs` and `outputs` and calls the lowered function `kernel` on them."""
    e = _Emitter()
    cf = "%cf"
    null = e.op("llvm.mlir.zero : !llvm.ptr")
    first_ext = e.load(cf, _off(_CallFrame.extension_start), "!llvm.ptr")
    e.stmt(f"llvm.br ^walk({first_ext} : !llvm.ptr)")

    # Walk the extension chain: the metadata extension asks for the handler's API version.
    e.label("^walk(%ext: !llvm.ptr):")
    done = e.eq("%ext", null, "!llvm.ptr")
    e.stmt(f"llvm.cond_br {done}, ^stage, ^look")
    e.label("^look:")
    kind = e.load("%ext", _off(_ExtensionBase.type), "i32")
    is_meta = e.eq(kind, e.const(_EXTENSION_METADATA, "i32"), "i32")
    e.stmt(f"llvm.cond_br {is_meta}, ^metadata, ^next")
    e.label("^next:")
    nxt = e.load("%ext", _off(_ExtensionBase.next), "!llvm.ptr")
    e.stmt(f"llvm.br ^walk({nxt} : !llvm.ptr)")
    e.label("^metadata:")
    meta = e.load("%ext", _off(_MetadataExtension.metadata), "!llvm.ptr")
    version = _off(_Metadata.api_version)
    major_at = e.gep(meta, version + _off(_ApiVersion.major_version))
    minor_at = e.gep(meta, version + _off(_ApiVersion.minor_version))
    e.stmt(f"llvm.store {e.const(HANDLER_API_VERSION[0], 'i32')}, {major_at} : i32, !llvm.ptr")
    e.stmt(f"llvm.store {e.const(HANDLER_API_VERSION[1], 'i32')}, {minor_at} : i32, !llvm.ptr")
    e.stmt(f"llvm.return {null} : !llvm.ptr")

    # Only the execute stage runs the kernel.
    e.label("^stage:")
    stage = e.load(cf, _off(_CallFrame.stage), "i32")
    is_exec = e.eq(stage, e.const(_STAGE_EXECUTE, "i32"), "i32")
    e.stmt(f"llvm.cond_br {is_exec}, ^counts, ^skip")
    e.label("^skip:")
    e.stmt(f"llvm.return {null} : !llvm.ptr")

    # Check the buffers: counts first, then element types and ranks, then dimensions.
    groups = ((_off(_CallFrame.args), inputs), (_off(_CallFrame.rets), outputs))
    e.label("^counts:")
    flags = [
        e.eq(e.load(cf, at + _off(_Args.size), "i64"), e.const(len(specs)), "i64")  # one size per group
        for at, specs in groups
    ]
    e.stmt(f"llvm.cond_br {e.all_of(flags)}, ^ranks, ^fail")
    e.label("^ranks:")
    buffers: list[tuple[str, BufferSpec]] = []
    for at, specs in groups:
        table = e.load(cf, at + _off(_Args.args), "!llvm.ptr")
        for i, spec in enumerate(specs):
            buffers.append((e.load(table, 8 * i, "!llvm.ptr"), spec))
    flags = []
    for buf, spec in buffers:
        flags.append(e.eq(e.load(buf, _off(_Buffer.dtype), "i32"), e.const(FFI_DTYPES[spec.dtype], "i32"), "i32"))
        flags.append(e.eq(e.load(buf, _off(_Buffer.rank), "i64"), e.const(len(spec.shape)), "i64"))
    e.stmt(f"llvm.cond_br {e.all_of(flags)}, ^dims, ^fail")
    e.label("^dims:")
    flags = []
    for buf, spec in buffers:
        dims = e.load(buf, _off(_Buffer.dims), "!llvm.ptr")
        for j, size in enumerate(spec.shape):
            flags.append(e.eq(e.load(dims, 8 * j, "i64"), e.const(size), "i64"))
    e.stmt(f"llvm.cond_br {e.all_of(flags)}, ^run, ^fail")

    # Call the kernel on the buffers' data: memref (ptr, ptr, 0, sizes..., strides...).
    e.label("^run:")
    zero = e.const(0)
    operands: list[str] = []
    types: list[str] = []
    for buf, spec in buffers:
        data = e.load(buf, _off(_Buffer.data), "!llvm.ptr")
        sizes = [e.const(s) for s in spec.shape]
        strides = [e.const(s) for s in _row_major_strides(spec.shape)]
        operands += [data, data, zero, *sizes, *strides]
        types += memref_arg_types(len(spec.shape))
    e.stmt(f"llvm.call @{kernel}({', '.join(operands)}) : ({', '.join(types)}) -> ()")
    e.stmt(f"llvm.return {null} : !llvm.ptr")

    # A mismatch: an XLA_FFI_Error made by the API's XLA_FFI_Error_Create.
    e.label("^fail:")
    api = e.load(cf, _off(_CallFrame.api), "!llvm.ptr")
    create = e.load(api, _off(_Api.error_create), "!llvm.ptr")
    one = e.const(1)
    args = e.op(
        f"llvm.alloca {one} x !llvm.array<{ctypes.sizeof(_ErrorCreateArgs)} x i8> {{alignment = 8 : i64}} : (i64) -> !llvm.ptr"
    )
    e.stmt(f"llvm.store {e.const(_ERROR_ARGS_SIZE)}, {args} : i64, !llvm.ptr")
    e.stmt(f"llvm.store {null}, {e.gep(args, _off(_ErrorCreateArgs.extension_start))} : !llvm.ptr, !llvm.ptr")
    message = e.op(f"llvm.mlir.addressof @{symbol}_message : !llvm.ptr")
    e.stmt(f"llvm.store {message}, {e.gep(args, _off(_ErrorCreateArgs.message))} : !llvm.ptr, !llvm.ptr")
    errc = e.const(_INVALID_ARGUMENT, "i32")
    e.stmt(f"llvm.store {errc}, {e.gep(args, _off(_ErrorCreateArgs.errc))} : i32, !llvm.ptr")
    error = e.op(f"llvm.call {create}({args}) : !llvm.ptr, (!llvm.ptr) -> !llvm.ptr")
    e.stmt(f"llvm.return {error} : !llvm.ptr")

    literal, length = _message_literal(
        f"napkin kernel {label}: the buffers XLA passed do not match the shapes and dtypes it was compiled for"
    )
    kernel_decl_types = ", ".join(t for spec in (*inputs, *outputs) for t in memref_arg_types(len(spec.shape)))
    body = "\n".join(e.lines)
    return (
        "module {\n"
        f"  llvm.func @{kernel}({kernel_decl_types})\n"
        f'  llvm.mlir.global internal constant @{symbol}_message("{literal}") {{addr_space = 0 : i32}} '
        f": !llvm.array<{length} x i8>\n"
        f"  llvm.func @{symbol}(%cf: !llvm.ptr) -> !llvm.ptr {{\n{body}\n  }}\n"
        "}\n"
    )


HandlerFn = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)


def selftest_metadata(address: int, label: str) -> None:
    """Call the compiled handler with XLA's metadata query, as XLA will at registration;
    NapkinError unless it answers HANDLER_API_VERSION and returns no error."""
    metadata = _Metadata()
    metadata.struct_size = ctypes.sizeof(_Metadata)
    extension = _MetadataExtension()
    extension.extension_base.struct_size = ctypes.sizeof(_MetadataExtension)
    extension.extension_base.type = _EXTENSION_METADATA
    extension.metadata = ctypes.addressof(metadata)
    frame = _CallFrame()
    frame.struct_size = ctypes.sizeof(_CallFrame)
    frame.extension_start = ctypes.addressof(extension)
    result = HandlerFn(address)(ctypes.addressof(frame))
    got = (metadata.api_version.major_version, metadata.api_version.minor_version)
    if result is not None or got != HANDLER_API_VERSION:
        raise NapkinError(f"napkin kernel {label}: the generated FFI handler failed its metadata self-test (got {got})")
