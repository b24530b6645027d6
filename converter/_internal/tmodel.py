"""The `.tmodel` codec: IR <-> `ModelFile` records <-> bytes, exactly per FORMAT.md.

`encode` lays a `ModelFile` out canonically (sections in kind order, strings deduplicated in
first-use order, blobs 64-byte aligned in tensor order, zero padding), so that
`encode(decode(b)) == b` for every `b` that `encode` wrote. `decode` validates what the C
engine validates and raises `ModelFormatError` naming the field at fault.

Constants with many zeros may be stored *sparse* (FORMAT.md, "Sparse constants"): a
16-byte header, a bitmask of the elements stored, then the stored elements' bytes.
`encode(..., sparse=0.3)` picks that form for every constant with at least 30% zero
elements whose encoding is smaller than its dense bytes.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.opdefs import OP_ATTRS
from tether.converter._internal.ops import (
    ATTR_NAME_OF_ID,
    ATTRS,
    DTYPE_NUMPY,
    DTYPE_SIZE,
    Activation,
    AttrId,
    AttrType,
    DType,
    OpType,
)

from tether.errors import ConversionError, ModelFormatError

__all__ = [
    "MAGIC",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "AttrRecord",
    "ModelFile",
    "OpRecord",
    "SectionKind",
    "SparseStats",
    "decode",
    "encode",
    "file_to_graph",
    "graph_to_file",
    "sparse_decode",
    "sparse_encode",
    "sparse_stats",
]

MAGIC = b"TMOD\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 0
VERSION_MINOR_SPARSE = 1  # written when a tensor uses the sparse flag (FORMAT.md)
TENSOR_CONSTANT = 1
TENSOR_SPARSE = 2
SPARSE_BITMASK = 1
SPARSE_HEADER = struct.Struct("<IIQ")
HEADER_SIZE = 64
CHECKSUM_OFFSET = 24
ABSENT = 0xFFFFFFFF
BLOB_ALIGN = 64
MAX_ATTR_VALUES = 8

_HEADER = struct.Struct("<8sHHIQIIQ24s")
_SECTION = struct.Struct("<IIQQ")
_TENSOR = struct.Struct("<IBBBB6iIIQQQ")
_OP = struct.Struct("<HBBIIIIIII")
_ATTR_HEAD = struct.Struct("<HBBI")
_ATTR_SIZE = 40
assert _HEADER.size == 64 and _SECTION.size == 24 and _TENSOR.size == 64 and _OP.size == 32


class SectionKind:
    """Section kinds of the section directory."""

    STRINGS = 1
    TENSORS = 2
    OPS = 3
    OPERANDS = 4
    ATTRS = 5
    GRAPH_IO = 6
    METADATA = 7
    DATA = 8

    REQUIRED = (1, 2, 3, 4, 5, 6, 8)
    NAMES: ClassVar[dict[int, str]] = {1: "STRINGS", 2: "TENSORS", 3: "OPS", 4: "OPERANDS", 5: "ATTRS", 6: "GRAPH_IO",
             7: "METADATA", 8: "DATA"}


@dataclass(frozen=True)
class AttrRecord:
    """One `tmodel_attr`: id, value type and 1..8 values (ints or float32-exact floats)."""

    id: AttrId
    type: AttrType
    values: tuple[float, ...] | tuple[int, ...]


@dataclass(frozen=True)
class OpRecord:
    """One `tmodel_op` with its operands and attributes resolved.

    Attributes:
        type: the op id.
        activation: fused activation.
        name: source node name.
        inputs: tensor indices; None for an absent optional input (0xFFFFFFFF).
        outputs: tensor indices.
        attrs: attribute records in file order.
    """

    type: OpType
    activation: Activation
    name: str
    inputs: tuple[int | None, ...]
    outputs: tuple[int, ...]
    attrs: tuple[AttrRecord, ...] = ()

    def attr_values(self) -> dict[str, tuple]:
        """Returns attribute name -> values (only those present in the file)."""
        return {ATTR_NAME_OF_ID[a.id]: tuple(a.values) for a in self.attrs}


@dataclass(frozen=True)
class ModelFile:
    """A decoded `.tmodel`: the records of every section, by index.

    Attributes:
        tensors: the tensor table; constants carry read-only numpy `data`.
        ops: in execution order.
        inputs: tensor indices of the graph inputs.
        outputs: tensor indices of the graph outputs.
        metadata: (key, value) pairs in file order.
        version: (major, minor).
        sparse: indices of the constants stored sparse (FORMAT.md, "Sparse constants");
            `encode` stores these sparse whatever its `sparse` threshold.
    """

    tensors: tuple[ir.Tensor, ...]
    ops: tuple[OpRecord, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    metadata: tuple[tuple[str, str], ...] = ()
    version: tuple[int, int] = (VERSION_MAJOR, VERSION_MINOR)
    sparse: frozenset[int] = frozenset()

    def metadata_dict(self) -> dict[str, str]:
        """Returns the metadata as a dict (the last value wins for a repeated key)."""
        return dict(self.metadata)


# ---------------------------------------------------------------------------- writing


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def graph_to_file(graph: ir.Graph, metadata: Sequence[tuple[str, str]] = ()) -> ModelFile:
    """Turns a fully lowered graph into file records.

    Tensors are numbered in first-reference order: graph inputs, then each node's inputs
    and outputs, then graph outputs. Attributes are written in id order.

    Raises:
        ConversionError: an internal op is left, or an attribute does not fit the file.
    """
    ir.validate(graph, context="writing .tmodel")
    index: dict[str, int] = {}
    order: list[ir.Tensor] = []

    def number(name: str) -> int:
        if name not in index:
            index[name] = len(order)
            order.append(graph.tensors[name])
        return index[name]

    for name in graph.inputs:
        number(name)
    ops: list[OpRecord] = []
    for node in graph.nodes:
        if not isinstance(node.op, OpType):
            raise ConversionError(
                f"node {node.describe()}: internal op left in the graph; it must be lowered "
                "before writing (run the converter with its default passes)"
            )
        inputs = tuple(None if n is None else number(n) for n in node.inputs)
        outputs = tuple(number(n) for n in node.outputs)
        allowed = OP_ATTRS[node.op]
        attrs: list[AttrRecord] = []
        for name, values in node.attrs.items():
            if name not in allowed:
                raise ConversionError(
                    f"node {node.describe()}: attribute '{name}' is not one of {list(allowed)}"
                )
            spec = ATTRS[name]
            if not 1 <= len(values) <= MAX_ATTR_VALUES:
                raise ConversionError(
                    f"node {node.describe()}: attribute '{name}' has {len(values)} values; "
                    f"a .tmodel attribute holds 1..{MAX_ATTR_VALUES}"
                )
            if spec.type == AttrType.INT32:
                vals: tuple = tuple(int(v) for v in values)
            else:
                vals = tuple(float(np.float32(v)) for v in values)
            attrs.append(AttrRecord(spec.id, spec.type, vals))
        attrs.sort(key=lambda a: int(a.id))
        ops.append(OpRecord(node.op, node.activation, node.name, inputs, outputs, tuple(attrs)))
    for name in graph.outputs:
        number(name)
    return ModelFile(
        tensors=tuple(order),
        ops=tuple(ops),
        inputs=tuple(index[n] for n in graph.inputs),
        outputs=tuple(index[n] for n in graph.outputs),
        metadata=tuple(metadata),
    )


# ---------------------------------------------------------------------------- sparse


@dataclass(frozen=True)
class SparseStats:
    """How a `.tmodel` stores its constants.

    Attributes:
        constant_bytes: bytes of every constant stored dense (element count x dtype size).
        stored_bytes: bytes the constants take in the file (sparse ones encoded, without
            the 64-byte alignment padding).
        sparse_tensors: constants stored sparse.
        constants: constants in the file.
    """

    constant_bytes: int
    stored_bytes: int
    sparse_tensors: int
    constants: int

    @property
    def saved_bytes(self) -> int:
        """constant_bytes - stored_bytes."""
        return self.constant_bytes - self.stored_bytes


def sparse_size(elements: int, stored: int, itemsize: int) -> int:
    """Bytes of the bitmask encoding: 16 + align8(ceil(elements / 8)) + stored x itemsize.

    >>> sparse_size(100, 20, 4)
    112
    """
    return SPARSE_HEADER.size + _align((elements + 7) // 8, 8) + stored * itemsize


def sparse_encode(raw: bytes, itemsize: int) -> bytes:
    """Encodes a constant's dense bytes as FORMAT.md's bitmask form.

    An element is stored when any of its bytes is nonzero (-0.0 is stored, so decoding is
    bit-exact); bit i % 8 of mask byte i // 8 says whether element i is stored.

    >>> blob = sparse_encode(np.array([0, 2, 0, 0, 3], "<f4").tobytes(), 4)
    >>> len(blob), blob[16], np.frombuffer(blob[24:], "<f4").tolist()
    (32, 18, [2.0, 3.0])
    """
    if itemsize < 1 or len(raw) % itemsize:
        raise ConversionError(f"sparse_encode: {len(raw)} bytes are not a whole number of "
                              f"{itemsize}-byte elements")
    elems = np.frombuffer(raw, np.uint8).reshape(-1, itemsize)
    keep = elems.any(axis=1)
    mask = np.packbits(keep, bitorder="little").tobytes()
    return (SPARSE_HEADER.pack(SPARSE_BITMASK, 0, int(keep.sum())) + mask
            + bytes(_align(len(mask), 8) - len(mask)) + elems[keep].tobytes())


def sparse_decode(blob: bytes, elements: int, itemsize: int, what: str = "tensor") -> bytes:
    """Decodes FORMAT.md's bitmask form back to dense bytes, validating it as the C loader
    does (encoding id, reserved field, size, mask popcount, bits past the last element).

    >>> raw = np.array([0, 2, 0, 0, 3], "<f4").tobytes()
    >>> sparse_decode(sparse_encode(raw, 4), 5, 4) == raw
    True

    Raises:
        ModelFormatError: naming `what` and the field at fault.
    """
    if len(blob) < SPARSE_HEADER.size:
        raise _fail(f"{what}: sparse data_size {len(blob)} < the {SPARSE_HEADER.size}-byte "
                    "sparse header")
    encoding, reserved, count = SPARSE_HEADER.unpack_from(blob, 0)
    if encoding != SPARSE_BITMASK:
        raise _fail(f"{what}: sparse encoding {encoding} unknown (1 = bitmask)")
    if reserved:
        raise _fail(f"{what}: sparse header reserved field is {reserved}, must be 0")
    if count > elements:
        raise _fail(f"{what}: sparse nonzero_count {count} > element count {elements}")
    want = sparse_size(elements, count, itemsize)
    if len(blob) != want:
        raise _fail(f"{what}: sparse data_size {len(blob)} != 16 + align8(ceil({elements} / "
                    f"8)) + nonzero_count {count} x {itemsize} = {want}")
    mask_bytes = (elements + 7) // 8
    bits = np.unpackbits(np.frombuffer(blob, np.uint8, mask_bytes, SPARSE_HEADER.size),
                         bitorder="little")
    if bits[elements:].any():
        raise _fail(f"{what}: sparse mask has bits set past element {elements - 1}")
    keep = bits[:elements].astype(bool)
    if int(keep.sum()) != count:
        raise _fail(f"{what}: sparse mask has {int(keep.sum())} bits set but nonzero_count "
                    f"is {count}")
    start = SPARSE_HEADER.size + _align(mask_bytes, 8)
    out = np.zeros((elements, itemsize), np.uint8)
    out[keep] = np.frombuffer(blob, np.uint8, count * itemsize, start).reshape(-1, itemsize)
    return out.tobytes()


def _use_sparse(raw: bytes, itemsize: int, threshold: float) -> bool:
    elems = np.frombuffer(raw, np.uint8).reshape(-1, itemsize)
    stored = int(elems.any(axis=1).sum())
    n = len(elems)
    return (n - stored) >= threshold * n and sparse_size(n, stored, itemsize) < len(raw)


def sparse_stats(data: bytes) -> SparseStats:
    """Dense vs stored bytes of the constants of `.tmodel` bytes (header and tensor table
    checked; use `decode` to validate the whole file)."""
    r = _Reader(bytes(data))
    r.header()
    off, count = r.records(SectionKind.TENSORS, _TENSOR.size)
    dense = stored = constants = sparse = 0
    for i in range(count):
        (_name, dtype, ndim, _quant, flags, *rest) = _TENSOR.unpack_from(r.buf,
                                                                        off + i * _TENSOR.size)
        if not flags & TENSOR_CONSTANT:
            continue
        if dtype not in DType._value2member_map_ or ndim > ir.MAX_DIMS:
            raise _fail(f"tensor {i}: dtype {dtype} / ndim {ndim} invalid")
        constants += 1
        sparse += bool(flags & TENSOR_SPARSE)
        dense += math.prod(rest[:ndim]) * DTYPE_SIZE[DType(dtype)]
        stored += rest[-1]
    return SparseStats(dense, stored, sparse, constants)


class _Strings:
    def __init__(self) -> None:
        self.buf = bytearray(b"\0")
        self.offsets: dict[str, int] = {"": 0}

    def add(self, s: str) -> int:
        if s not in self.offsets:
            raw = s.encode("utf-8")
            if b"\0" in raw:
                raise ConversionError(f"name {s!r} contains a NUL character")
            self.offsets[s] = len(self.buf)
            self.buf += raw + b"\0"
        return self.offsets[s]


def encode(model: ModelFile, *, sparse: float | None = None) -> bytes:
    """Lays `model` out as `.tmodel` bytes (FORMAT.md, version 1.0; 1.1 when a constant is
    stored sparse).

    Args:
        model: the records.
        sparse: None (default) stores constants dense, except those in `model.sparse`; a
            threshold t in [0, 1] also stores sparse every constant with at least a
            fraction t of zero elements whose bitmask encoding is smaller than its dense
            bytes. A float -0.0 counts as zero and a sparse tensor stores it as +0.0 (equal
            values; only an exactly-zero result's sign can differ).

    Raises:
        ConversionError: a record cannot be represented (e.g. rank > 6), or `sparse` is
            not in [0, 1].
    """
    if sparse is not None and not 0.0 <= sparse <= 1.0:
        raise ConversionError(f"sparse threshold must be in [0, 1] or None. Received: "
                              f"sparse={sparse}")
    strings = _Strings()
    tensor_names = [strings.add(t.name) for t in model.tensors]
    op_names = [strings.add(op.name) for op in model.ops]
    meta = [(strings.add(k), strings.add(v)) for k, v in model.metadata]

    operands: list[int] = []
    attr_bytes = bytearray()
    op_bytes = bytearray()
    attr_index = 0
    for op, name_off in zip(model.ops, op_names):
        first = len(operands)
        operands += [ABSENT if i is None else i for i in op.inputs]
        operands += list(op.outputs)
        for a in op.attrs:
            vals = list(a.values) + [0] * (MAX_ATTR_VALUES - len(a.values))
            fmt = "<8i" if a.type == AttrType.INT32 else "<8f"
            attr_bytes += _ATTR_HEAD.pack(int(a.id), int(a.type), len(a.values), 0)
            attr_bytes += struct.pack(fmt, *vals)
        op_bytes += _OP.pack(int(op.type), int(op.activation), 0, name_off, len(op.inputs),
                             len(op.outputs), first, len(op.attrs), attr_index, 0)
        attr_index += len(op.attrs)
    operand_bytes = struct.pack(f"<{len(operands)}I", *operands)
    io_bytes = struct.pack(f"<II{len(model.inputs) + len(model.outputs)}I", len(model.inputs),
                           len(model.outputs), *model.inputs, *model.outputs)
    meta_bytes = struct.pack("<I", len(meta)) + b"".join(struct.pack("<II", k, v)
                                                        for k, v in meta)

    # Section layout up to DATA; TENSORS is filled in once blob offsets are known.
    kinds = (SectionKind.STRINGS, SectionKind.TENSORS, SectionKind.OPS, SectionKind.OPERANDS,
             SectionKind.ATTRS, SectionKind.GRAPH_IO, SectionKind.METADATA, SectionKind.DATA)
    sizes = {
        SectionKind.STRINGS: len(strings.buf),
        SectionKind.TENSORS: _TENSOR.size * len(model.tensors),
        SectionKind.OPS: len(op_bytes),
        SectionKind.OPERANDS: len(operand_bytes),
        SectionKind.ATTRS: len(attr_bytes),
        SectionKind.GRAPH_IO: len(io_bytes),
        SectionKind.METADATA: len(meta_bytes),
    }
    offsets: dict[int, int] = {}
    pos = HEADER_SIZE + _SECTION.size * len(kinds)
    for kind in kinds[:-1]:
        pos = _align(pos, 8)
        offsets[kind] = pos
        pos += sizes[kind]
    data_start = _align(pos, BLOB_ALIGN)
    offsets[SectionKind.DATA] = data_start

    blobs: list[tuple[int, bytes]] = []
    tensor_bytes = bytearray()
    pos = data_start
    any_sparse = False
    for index, (t, name_off) in enumerate(zip(model.tensors, tensor_names)):
        if len(t.shape) > ir.MAX_DIMS:
            raise ConversionError(f"tensor '{t.name}': rank {len(t.shape)} > {ir.MAX_DIMS}")
        data_off = data_size = 0
        flags = 0
        if t.data is not None:
            flags = TENSOR_CONSTANT
            arr = np.ascontiguousarray(t.data, dtype=DTYPE_NUMPY[t.dtype])
            raw = arr.tobytes()
            size = DTYPE_SIZE[t.dtype]
            if index in model.sparse or sparse is not None:
                # -0.0 (what BN folding or a mask makes of a negative weight) counts as 0
                canon = np.where(arr == 0, 0, arr).astype(arr.dtype).tobytes() \
                    if arr.dtype.kind == "f" else raw
                if index in model.sparse or _use_sparse(canon, size, float(sparse or 0.0)):
                    raw = sparse_encode(canon, size)
                    flags |= TENSOR_SPARSE
                    any_sparse = True
            data_off, data_size = pos, len(raw)
            blobs.append((pos, raw))
            pos = _align(pos + len(raw), BLOB_ALIGN)
        quant = quant_axis = quant_count = quant_off = 0
        if t.quant is not None:
            quant = 1 if t.quant.axis is None else 2
            quant_axis = 0 if t.quant.axis is None else t.quant.axis
            quant_count = len(t.quant.scale)
            raw = (np.asarray(t.quant.scale, "<f4").tobytes()
                   + np.asarray(t.quant.zero_point, "<i4").tobytes())
            quant_off = pos
            blobs.append((pos, raw))
            pos = _align(pos + len(raw), BLOB_ALIGN)
        shape = list(t.shape) + [0] * (ir.MAX_DIMS - len(t.shape))
        tensor_bytes += _TENSOR.pack(name_off, int(t.dtype), len(t.shape), quant,
                                     flags, *shape, quant_axis,
                                     quant_count, quant_off, data_off, data_size)
    file_size = pos
    sizes[SectionKind.DATA] = file_size - data_start

    buf = bytearray(file_size)
    contents = {
        SectionKind.STRINGS: bytes(strings.buf),
        SectionKind.TENSORS: bytes(tensor_bytes),
        SectionKind.OPS: bytes(op_bytes),
        SectionKind.OPERANDS: operand_bytes,
        SectionKind.ATTRS: bytes(attr_bytes),
        SectionKind.GRAPH_IO: io_bytes,
        SectionKind.METADATA: meta_bytes,
    }
    for kind, content in contents.items():
        buf[offsets[kind]:offsets[kind] + len(content)] = content
    for off, raw in blobs:
        buf[off:off + len(raw)] = raw
    directory = b"".join(_SECTION.pack(k, 0, offsets[k], sizes[k]) for k in kinds)
    buf[HEADER_SIZE:HEADER_SIZE + len(directory)] = directory
    minor = VERSION_MINOR_SPARSE if any_sparse else VERSION_MINOR
    buf[0:HEADER_SIZE] = _HEADER.pack(MAGIC, VERSION_MAJOR, minor, HEADER_SIZE,
                                      file_size, 0, len(kinds), HEADER_SIZE, bytes(24))
    struct.pack_into("<I", buf, CHECKSUM_OFFSET, zlib.crc32(buf) & 0xFFFFFFFF)
    return bytes(buf)


# ---------------------------------------------------------------------------- reading


def _fail(msg: str) -> ModelFormatError:
    return ModelFormatError(f".tmodel: {msg}")


class _Reader:
    """Validating decoder; every check raises ModelFormatError naming the field."""

    def __init__(self, buf: bytes) -> None:
        self.buf = memoryview(buf).cast("B")
        self.size = len(self.buf)
        self.sections: dict[int, tuple[int, int]] = {}

    def header(self) -> tuple[int, int]:
        if self.size < HEADER_SIZE:
            raise _fail(f"truncated: buffer has {self.size} bytes, the header needs "
                        f"{HEADER_SIZE}")
        (magic, major, minor, header_size, file_size, checksum, count, dir_off,
         _reserved) = _HEADER.unpack_from(self.buf, 0)
        if magic != MAGIC:
            raise _fail(f"bad magic {magic.hex(' ')}; expected {MAGIC.hex(' ')} "
                        "(not a .tmodel file, or mangled by a text-mode transfer)")
        if major != VERSION_MAJOR:
            raise _fail(f"version_mismatch: version_major is {major}; this reader reads "
                        f"{VERSION_MAJOR} (convert the model again with this tether)")
        if header_size < HEADER_SIZE:
            raise _fail(f"header_size is {header_size}; must be at least {HEADER_SIZE}")
        if file_size > self.size:
            raise _fail(f"truncated: file_size is {file_size} but the buffer has "
                        f"{self.size} bytes")
        if file_size != self.size:
            raise _fail(f"file_size is {file_size} but the buffer has {self.size} bytes")
        scratch = bytearray(self.buf)
        scratch[CHECKSUM_OFFSET:CHECKSUM_OFFSET + 4] = b"\0\0\0\0"
        actual = zlib.crc32(scratch) & 0xFFFFFFFF
        if actual != checksum:
            raise _fail(f"checksum mismatch: header says {checksum:#010x}, contents give "
                        f"{actual:#010x} (the file is damaged)")
        if dir_off % 8 or dir_off < header_size or dir_off + count * _SECTION.size > self.size:
            raise _fail(f"section directory (section_offset={dir_off}, section_count={count}) "
                        f"does not lie inside the file of {self.size} bytes at a multiple of 8")
        for i in range(count):
            kind, _res, off, size = _SECTION.unpack_from(self.buf, dir_off + i * _SECTION.size)
            name = SectionKind.NAMES.get(kind, f"kind {kind}")
            if kind not in SectionKind.NAMES:
                continue  # unknown kinds are skipped (added by later minor versions)
            if kind in self.sections:
                raise _fail(f"section {name} appears twice in the directory")
            if off % 8 or off + size > self.size or off < header_size:
                raise _fail(f"section {name} (offset {off}, size {size}) does not lie inside "
                            f"the file of {self.size} bytes at a multiple of 8")
            if kind == SectionKind.DATA and off % BLOB_ALIGN:
                raise _fail(f"section DATA offset {off} is not a multiple of {BLOB_ALIGN}")
            self.sections[kind] = (off, size)
        for kind in SectionKind.REQUIRED:
            if kind not in self.sections:
                raise _fail(f"required section {SectionKind.NAMES[kind]} is missing")
        return major, minor

    def records(self, kind: int, record_size: int) -> tuple[int, int]:
        off, size = self.sections[kind]
        if size % record_size:
            raise _fail(f"section {SectionKind.NAMES[kind]} size {size} is not a whole number "
                        f"of {record_size}-byte records")
        return off, size // record_size

    def string(self, offset: int, what: str) -> str:
        off, size = self.sections[SectionKind.STRINGS]
        if size < 1 or self.buf[off] != 0 or self.buf[off + size - 1] != 0:
            raise _fail("section STRINGS must start and end with a NUL byte")
        if offset >= size:
            raise _fail(f"{what}: string offset {offset} out of range [0, {size})")
        end = bytes(self.buf[off + offset:off + size]).find(b"\0")
        if end < 0:
            raise _fail(f"{what}: string at offset {offset} is not NUL-terminated")
        try:
            return bytes(self.buf[off + offset:off + offset + end]).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(f"{what}: string at offset {offset} is not UTF-8") from None

    def blob(self, offset: int, size: int, what: str) -> bytes:
        doff, dsize = self.sections[SectionKind.DATA]
        if offset % BLOB_ALIGN or offset < doff or offset + size > doff + dsize:
            raise _fail(f"{what}: bytes [{offset}, {offset + size}) are not a "
                        f"{BLOB_ALIGN}-aligned range inside section DATA "
                        f"[{doff}, {doff + dsize})")
        return bytes(self.buf[offset:offset + size])

    def tensors(self) -> list[ir.Tensor]:
        off, count = self.records(SectionKind.TENSORS, _TENSOR.size)
        result = []
        self.sparse: set[int] = set()
        for i in range(count):
            (name_off, dtype, ndim, quant, flags, *rest) = _TENSOR.unpack_from(
                self.buf, off + i * _TENSOR.size)
            dims = rest[:6]
            quant_axis, quant_count, quant_off, data_off, data_size = rest[6:]
            name = self.string(name_off, f"tensor {i} name")
            label = f"tensor {i} '{name}'"
            if dtype not in DType._value2member_map_:
                raise _fail(f"{label}: dtype {dtype} unknown (0..{len(DType) - 1})")
            dt = DType(dtype)
            if ndim > ir.MAX_DIMS:
                raise _fail(f"{label}: ndim {ndim} > {ir.MAX_DIMS}")
            shape = tuple(dims[:ndim])
            if any(d < 1 for d in shape):
                raise _fail(f"{label}: shape {list(shape)} has a dim < 1")
            if flags & ~(TENSOR_CONSTANT | TENSOR_SPARSE):
                raise _fail(f"{label}: flags {flags:#x} has unknown bits")
            if flags & TENSOR_SPARSE and not flags & TENSOR_CONSTANT:
                raise _fail(f"{label}: flags {flags:#x}: sparse (bit 1) without constant "
                            "(bit 0)")
            data = None
            if flags & TENSOR_SPARSE:
                raw = sparse_decode(self.blob(data_off, data_size, f"{label} data"),
                                    math.prod(shape), DTYPE_SIZE[dt], label)
                data = np.frombuffer(raw, dtype=DTYPE_NUMPY[dt]).reshape(shape)
                self.sparse.add(i)
            elif flags & 1:
                want = math.prod(shape) * DTYPE_SIZE[dt]
                if data_size != want:
                    raise _fail(f"{label}: data_size {data_size} != element count x dtype size "
                                f"= {want}")
                raw = self.blob(data_off, data_size, f"{label} data")
                data = np.frombuffer(raw, dtype=DTYPE_NUMPY[dt]).reshape(shape)
            elif data_off or data_size:
                raise _fail(f"{label}: not constant but data_offset/data_size are "
                            f"{data_off}/{data_size} (must be 0)")
            q = None
            if quant == 0:
                if quant_axis or quant_count or quant_off:
                    raise _fail(f"{label}: quant is 0 but quant fields are set")
            elif quant in (1, 2):
                if quant == 1 and (quant_count != 1 or quant_axis != 0):
                    raise _fail(f"{label}: per-tensor quant needs quant_count 1, quant_axis 0")
                if quant == 2 and (quant_axis >= ndim or quant_count != shape[quant_axis]):
                    raise _fail(f"{label}: per-channel quant_axis {quant_axis} / quant_count "
                                f"{quant_count} do not fit shape {list(shape)}")
                raw = self.blob(quant_off, 8 * quant_count, f"{label} quantization")
                scale = np.frombuffer(raw[:4 * quant_count], "<f4")
                zp = np.frombuffer(raw[4 * quant_count:], "<i4")
                if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
                    raise _fail(f"{label}: quantization scales must be finite and > 0")
                q = ir.Quantization(tuple(float(s) for s in scale), tuple(int(z) for z in zp),
                                    None if quant == 1 else int(quant_axis))
            else:
                raise _fail(f"{label}: quant {quant} unknown (0, 1 or 2)")
            result.append(ir.Tensor(name, shape, dt, data, q))
        return result

    def ops(self, tensors: Sequence[ir.Tensor]) -> list[OpRecord]:
        off, count = self.records(SectionKind.OPS, _OP.size)
        opnd_off, opnd_count = self.records(SectionKind.OPERANDS, 4)
        attr_off, attr_count_total = self.records(SectionKind.ATTRS, _ATTR_SIZE)
        operands = struct.unpack_from(f"<{opnd_count}I", self.buf, opnd_off)
        n_tensors = len(tensors)
        result = []
        for i in range(count):
            (typ, act, _r, name_off, n_in, n_out, first, n_attr, first_attr,
             _r2) = _OP.unpack_from(self.buf, off + i * _OP.size)
            name = self.string(name_off, f"op {i} name")
            if typ not in OpType._value2member_map_:
                raise _fail(f"unsupported_op: op {i} '{name}' has type {typ}, unknown to "
                            "this reader")
            op = OpType(typ)
            label = f"op {i} '{name}' ({op.name})"
            if act not in Activation._value2member_map_:
                raise _fail(f"unsupported_op: {label}: fused_activation {act} unknown")
            if first + n_in + n_out > opnd_count:
                raise _fail(f"{label}: operands [{first}, {first + n_in + n_out}) out of range "
                            f"[0, {opnd_count})")
            ins: list[int | None] = []
            for slot in range(n_in):
                t = operands[first + slot]
                if t == ABSENT:
                    ins.append(None)
                    continue
                if t >= n_tensors:
                    raise _fail(f"{label}: input {slot} is tensor {t}, out of range "
                                f"[0, {n_tensors})")
                ins.append(t)
            outs: list[int] = []
            for slot in range(n_out):
                t = operands[first + n_in + slot]
                if t >= n_tensors:
                    raise _fail(f"{label}: output {slot} is tensor {t}, out of range "
                                f"[0, {n_tensors})")
                outs.append(t)
            if first_attr + n_attr > attr_count_total:
                raise _fail(f"{label}: attributes [{first_attr}, {first_attr + n_attr}) out "
                            f"of range [0, {attr_count_total})")
            attrs: list[AttrRecord] = []
            for j in range(first_attr, first_attr + n_attr):
                aid, atype, acount, _res = _ATTR_HEAD.unpack_from(self.buf,
                                                                  attr_off + j * _ATTR_SIZE)
                if aid not in AttrId._value2member_map_ or \
                        ATTR_NAME_OF_ID[AttrId(aid)] not in OP_ATTRS[op]:
                    raise _fail(f"{label}: attribute {j} has id {aid}, not an attribute of "
                                f"{op.name}")
                spec = ATTRS[ATTR_NAME_OF_ID[AttrId(aid)]]
                if any(a.id == aid for a in attrs):
                    raise _fail(f"{label}: attribute {j - first_attr}: "
                                f"{spec.id.name.lower()} given twice")
                if atype != spec.type:
                    raise _fail(f"{label}: attribute {j} ({spec.id.name.lower()}) has type "
                                f"{atype}; expected {int(spec.type)}")
                if not 1 <= acount <= MAX_ATTR_VALUES:
                    raise _fail(f"{label}: attribute {j} count {acount} not in 1..8")
                fmt = "<8i" if atype == AttrType.INT32 else "<8f"
                vals = struct.unpack_from(fmt, self.buf, attr_off + j * _ATTR_SIZE + 8)[:acount]
                attrs.append(AttrRecord(spec.id, spec.type, tuple(vals)))
            result.append(OpRecord(op, Activation(act), name, tuple(ins), tuple(outs),
                                   tuple(attrs)))
        return result

    def graph_io(self, n_tensors: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        off, size = self.sections[SectionKind.GRAPH_IO]
        if size < 8:
            raise _fail(f"section GRAPH_IO size {size} < 8")
        n_in, n_out = struct.unpack_from("<II", self.buf, off)
        if size != 8 + 4 * (n_in + n_out):
            raise _fail(f"section GRAPH_IO size {size} != 8 + 4 x (input_count {n_in} + "
                        f"output_count {n_out})")
        idx = struct.unpack_from(f"<{n_in + n_out}I", self.buf, off + 8)
        for k, t in enumerate(idx):
            if t >= n_tensors:
                side = f"input {k}" if k < n_in else f"output {k - n_in}"
                raise _fail(f"GRAPH_IO {side} is tensor {t}, out of range [0, {n_tensors})")
        return tuple(idx[:n_in]), tuple(idx[n_in:])

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if SectionKind.METADATA not in self.sections:
            return ()
        off, size = self.sections[SectionKind.METADATA]
        if size < 4:
            raise _fail(f"section METADATA size {size} < 4")
        (count,) = struct.unpack_from("<I", self.buf, off)
        if size != 4 + 8 * count:
            raise _fail(f"section METADATA size {size} != 4 + 8 x count {count}")
        pairs = struct.unpack_from(f"<{2 * count}I", self.buf, off + 4)
        return tuple((self.string(pairs[2 * k], f"metadata {k} key"),
                      self.string(pairs[2 * k + 1], f"metadata {k} value"))
                     for k in range(count))


# Ops that move values of any dtype: the output's dtype is the input's.
_MOVES = frozenset({OpType.RESHAPE, OpType.TRANSPOSE, OpType.SLICE, OpType.GATHER})


def _check_dtypes(label: str, tensors: Sequence[ir.Tensor], op: OpRecord) -> None:
    """The dtype rules the engine's ops share: a float op (its first input float32) takes and
    gives float32 only; an op that moves values keeps its input's dtype."""
    if op.type in (OpType.QUANTIZE, OpType.DEQUANTIZE) or not op.inputs or op.inputs[0] is None:
        return
    first = tensors[op.inputs[0]]
    ids = op.inputs[1] if op.type == OpType.GATHER and len(op.inputs) > 1 else None
    if ids is not None and tensors[ids].dtype != DType.INT32:
        raise _fail(f"{label}: input 1 (tensor {ids} '{tensors[ids].name}') is "
                    f"{tensors[ids].dtype.name.lower()}, expected int32 indices")
    if op.type in _MOVES:
        for slot, out in enumerate(op.outputs):
            if tensors[out].dtype != first.dtype:
                raise _fail(f"{label}: output {slot} (tensor {out} '{tensors[out].name}') is "
                            f"{tensors[out].dtype.name.lower()}, input 0 is "
                            f"{first.dtype.name.lower()}")
        return
    if first.dtype != DType.FLOAT32:
        return
    slots: list[tuple[str, int, int | None]] = [
        ("input", k, t) for k, t in enumerate(op.inputs)] + [
        ("output", k, t) for k, t in enumerate(op.outputs)]
    for kind, k, t in slots:
        if t is not None and tensors[t].dtype != DType.FLOAT32:
            raise _fail(f"{label}: {kind} {k} (tensor {t} '{tensors[t].name}') is "
                        f"{tensors[t].dtype.name.lower()}, expected float32")


def _check_gather_indices(label: str, tensors: Sequence[ir.Tensor], op: OpRecord) -> None:
    """A constant GATHER index lies in [-n, n) of the table's axis (the engine's load check)."""
    table, ids = op.inputs[0], op.inputs[1]
    assert table is not None and ids is not None  # GATHER's two inputs are required
    x, idx = tensors[table], tensors[ids]
    (axis,) = op.attr_values()["axis"]
    n = x.shape[int(axis)]
    flat = np.asarray(idx.data).reshape(-1)
    bad = np.flatnonzero((flat < -n) | (flat >= n))
    if bad.size:
        raise _fail(f"{label}: constant index {int(flat[bad[0]])} at position {int(bad[0])} of "
                    f"'{idx.name}' is outside [{-n}, {n}) (axis {int(axis)} of '{x.name}')")


def _check_graph(tensors: Sequence[ir.Tensor], ops: Sequence[OpRecord],
                 inputs: Sequence[int], outputs: Sequence[int]) -> None:
    defined = set()
    for t_in in inputs:
        if tensors[t_in].is_constant:
            raise _fail(f"GRAPH_IO input tensor {t_in} '{tensors[t_in].name}' is a constant")
        defined.add(t_in)
    for i, op in enumerate(ops):
        label = f"op {i} '{op.name}' ({op.type.name})"
        for slot, t in enumerate(op.inputs):
            if t is not None and not tensors[t].is_constant and t not in defined:
                raise _fail(f"{label}: input {slot} is tensor {t} '{tensors[t].name}', which "
                            "is neither a constant, a graph input nor an earlier op's output")
        for slot, t in enumerate(op.outputs):
            if tensors[t].is_constant or t in defined:
                raise _fail(f"{label}: output {slot} is tensor {t} '{tensors[t].name}', which "
                            "is a constant or already defined")
            defined.add(t)
        _check_dtypes(label, tensors, op)
        node = ir.Node(op.type, op.name, tuple(f"#{t}" if t is not None else None
                                              for t in op.inputs),
                       tuple(f"#{t}" for t in op.outputs), op.attr_values(), op.activation)
        declared = [tensors[t].shape for t in op.outputs]
        try:
            inferred = ir.infer_output_shapes(
                node, [None if t is None else tensors[t].shape for t in op.inputs], declared)
        except ir.ShapeError as e:
            raise _fail(f"{label}: {e}") from None
        if [tuple(s) for s in inferred] != declared:
            raise _fail(f"{label}: output shapes {[list(s) for s in declared]} do not fit the "
                        f"op (expected {[list(s) for s in inferred]})")
        ids = op.inputs[1] if op.type == OpType.GATHER else None
        if ids is not None and tensors[ids].data is not None:
            _check_gather_indices(label, tensors, op)
    for k, t in enumerate(outputs):
        if tensors[t].is_constant:
            raise _fail(f"GRAPH_IO output {k} is tensor {t} '{tensors[t].name}', a constant")
        if t not in defined:
            raise _fail(f"GRAPH_IO output {k} is tensor {t} '{tensors[t].name}', which no op "
                        "computes")


def decode(data: bytes) -> ModelFile:
    """Parses and validates `.tmodel` bytes.

    Checks, in order: size against the header, magic, major version, file_size, checksum,
    the section directory, every string/tensor/operand/attribute index, op and activation
    ids, execution order, and each op's output shapes.

    Raises:
        ModelFormatError: naming the field at fault ("truncated", "checksum",
            "version_mismatch", "unsupported_op", or the op and slot).
    """
    r = _Reader(bytes(data))
    version = r.header()
    tensors = r.tensors()
    ops = r.ops(tensors)
    inputs, outputs = r.graph_io(len(tensors))
    metadata = r.metadata()
    _check_graph(tensors, ops, inputs, outputs)
    return ModelFile(tuple(tensors), tuple(ops), inputs, outputs, metadata, version,
                     frozenset(r.sparse))


def file_to_graph(model: ModelFile, name: str = "") -> ir.Graph:
    """Rebuilds an IR graph from file records.

    Tensor names that are empty or repeated are replaced by "tensor_<index>".
    """
    names: list[str] = []
    seen: set[str] = set()
    for i, t in enumerate(model.tensors):
        n = t.name if t.name and t.name not in seen else ir.unique_name(f"tensor_{i}", seen)
        seen.add(n)
        names.append(n)
    tensors = {}
    for t, n in zip(model.tensors, names):
        tensors[n] = t if t.name == n else ir.Tensor(n, t.shape, t.dtype, t.data, t.quant)
    nodes = [
        ir.Node(op.type, op.name, tuple(None if i is None else names[i] for i in op.inputs),
                tuple(names[i] for i in op.outputs), op.attr_values(), op.activation)
        for op in model.ops
    ]
    return ir.Graph(tensors, tuple(nodes), tuple(names[i] for i in model.inputs),
                    tuple(names[i] for i in model.outputs), name)
