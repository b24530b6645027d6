"""Writer and reader of the .tmodel format: layout, round trip and every validation error."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from tether.converter._internal import ir, tmodel
from tether.converter._internal.ops import Activation, AttrId, DType, InternalOp, OpType

from tether.errors import ConversionError, ModelFormatError


@pytest.fixture
def graph(gb) -> ir.Graph:
    rng = np.random.default_rng(0)
    x = gb.input("x", (1, 6, 6, 3))
    w = gb.const("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    c = gb.node(OpType.CONV_2D, [x, w, None], "conv",
                {"strides": (2, 2), "pads": (0, 0, 1, 1)}, Activation.RELU6)
    wq = gb.const("wq", rng.integers(-127, 128, (1, 3, 3, 4)).astype(np.int8), DType.INT8,
                  ir.Quantization((0.5, 0.25, 0.125, 1.0), (0, 0, 0, 0), axis=3))
    wf = gb.node(OpType.DEQUANTIZE, [wq], "wq_dequantized")  # a float op takes float32 only
    d = gb.node(OpType.DEPTHWISE_CONV_2D, [c, wf, None], "dw", {"pads": (1, 1, 1, 1)})
    m = gb.node(OpType.MEAN, [d], "mean", {"axes": (1, 2), "keepdims": (0,)})
    s = gb.node(OpType.SOFTMAX, [m], "probs", {"beta": (0.5,)})
    return gb.graph(s, d)


META = (("producer", "tether test"), ("source", "unit:graph"))


def _encode(g: ir.Graph) -> bytes:
    return tmodel.encode(tmodel.graph_to_file(g, META))


def _refresh_checksum(buf: bytearray) -> bytes:
    struct.pack_into("<I", buf, 24, 0)
    struct.pack_into("<I", buf, 24, zlib.crc32(buf) & 0xFFFFFFFF)
    return bytes(buf)


def _section(b: bytes, kind: int):
    count, off = struct.unpack_from("<I", b, 28)[0], struct.unpack_from("<Q", b, 32)[0]
    for i in range(count):
        k, _, o, s = struct.unpack_from("<IIQQ", b, off + 24 * i)
        if k == kind:
            return o, s
    raise KeyError(kind)


def test_header_and_layout(graph) -> None:
    b = _encode(graph)
    magic, major, minor, hsize, fsize, crc, count, dir_off = struct.unpack_from(
        "<8sHHIQIIQ", b, 0)
    assert magic == bytes([0x54, 0x4D, 0x4F, 0x44, 0x0D, 0x0A, 0x1A, 0x0A])
    assert (major, minor, hsize, fsize, count, dir_off) == (1, 0, 64, len(b), 8, 64)
    assert b[40:64] == bytes(24)
    zeroed = bytearray(b)
    zeroed[24:28] = bytes(4)
    assert crc == zlib.crc32(zeroed)
    for kind in range(1, 9):
        off, size = _section(b, kind)
        assert off % 8 == 0 and off + size <= len(b)
    data_off, _ = _section(b, 8)
    assert data_off % 64 == 0
    strings_off, _ = _section(b, 1)
    assert b[strings_off] == 0
    mf = tmodel.decode(b)
    t_off, _ = _section(b, 2)
    for i, t in enumerate(mf.tensors):
        q_off, d_off, d_size = struct.unpack_from("<QQQ", b, t_off + 64 * i + 40)
        assert d_off % 64 == 0 and q_off % 64 == 0
        if t.is_constant:
            assert d_size == t.data.nbytes and b[d_off:d_off + d_size] == t.data.tobytes()


def test_round_trip_bytes_and_records(graph) -> None:
    b = _encode(graph)
    mf = tmodel.decode(b)
    assert tmodel.encode(mf) == b  # write(read(b)) == b
    g2 = tmodel.file_to_graph(mf)
    assert tmodel.encode(tmodel.graph_to_file(g2, mf.metadata)) == b
    assert mf.metadata == META
    assert [t.name for t in mf.tensors][:1] == ["x"]
    ops = {op.name: op for op in mf.ops}
    conv = ops["conv"]
    assert conv.type == OpType.CONV_2D and conv.activation == Activation.RELU6
    assert conv.inputs[2] is None  # absent optional bias -> 0xFFFFFFFF
    assert conv.attr_values() == {"strides": (2, 2), "pads": (0, 0, 1, 1)}
    assert [a.id for a in conv.attrs] == [AttrId.STRIDES, AttrId.PADS]
    assert ops["probs"].attr_values() == {"beta": (0.5,)}
    w = mf.tensors[conv.inputs[1]]
    np.testing.assert_array_equal(w.data, graph.tensors["w"].data)
    wq = mf.tensors[ops["wq_dequantized"].inputs[0]]
    assert wq.dtype == DType.INT8 and wq.quant == graph.tensors["wq"].quant
    assert [mf.tensors[i].name for i in mf.outputs] == ["probs", "dw"]


def test_output_is_reproducible(graph) -> None:
    assert _encode(graph) == _encode(graph)


@pytest.mark.parametrize("eighth", range(8))
def test_truncated(graph, eighth: int) -> None:
    b = _encode(graph)
    with pytest.raises(ModelFormatError, match="truncated"):
        tmodel.decode(b[: len(b) * eighth // 8])


def test_every_flipped_header_byte_is_rejected(graph) -> None:
    b = _encode(graph)
    for i in range(64):
        buf = bytearray(b)
        buf[i] ^= 0x40
        with pytest.raises(ModelFormatError):
            tmodel.decode(bytes(buf))


def test_bad_magic(graph) -> None:
    buf = bytearray(_encode(graph))
    buf[4] = 0x0A  # CR LF -> LF: what a text-mode transfer does
    with pytest.raises(ModelFormatError, match="magic"):
        tmodel.decode(bytes(buf))


def test_bad_checksum(graph) -> None:
    buf = bytearray(_encode(graph))
    buf[-200] ^= 1  # a weight bit
    with pytest.raises(ModelFormatError, match="checksum"):
        tmodel.decode(bytes(buf))


def test_unknown_major_version(graph) -> None:
    buf = bytearray(_encode(graph))
    struct.pack_into("<H", buf, 8, 2)
    with pytest.raises(ModelFormatError, match="version_mismatch.*version_major is 2"):
        tmodel.decode(_refresh_checksum(buf))


def test_newer_minor_version_is_accepted(graph) -> None:
    buf = bytearray(_encode(graph))
    struct.pack_into("<H", buf, 10, 7)
    assert tmodel.decode(_refresh_checksum(buf)).version == (1, 7)


def test_file_size_mismatch(graph) -> None:
    b = _encode(graph)
    with pytest.raises(ModelFormatError, match="file_size"):
        tmodel.decode(b + bytes(8))


def test_operand_out_of_range(graph) -> None:
    b = _encode(graph)
    off, _ = _section(b, 4)
    buf = bytearray(b)
    struct.pack_into("<I", buf, off, 99)  # first operand: op 0 input 0
    with pytest.raises(ModelFormatError, match=r"op 0 'conv' \(CONV_2D\): input 0 is tensor 99"):
        tmodel.decode(_refresh_checksum(buf))


def test_operand_range_out_of_section(graph) -> None:
    b = _encode(graph)
    off, _ = _section(b, 3)
    buf = bytearray(b)
    struct.pack_into("<I", buf, off + 16, 10_000)  # op 0 first_operand
    with pytest.raises(ModelFormatError, match="op 0 'conv'.*operands"):
        tmodel.decode(_refresh_checksum(buf))


def test_unknown_op_id(graph) -> None:
    b = _encode(graph)
    off, _ = _section(b, 3)
    buf = bytearray(b)
    struct.pack_into("<H", buf, off, 200)
    with pytest.raises(ModelFormatError, match="unsupported_op.*type 200"):
        tmodel.decode(_refresh_checksum(buf))


def test_unknown_activation(graph) -> None:
    b = _encode(graph)
    off, _ = _section(b, 3)
    buf = bytearray(b)
    buf[off + 2] = 42
    with pytest.raises(ModelFormatError, match="unsupported_op.*fused_activation 42"):
        tmodel.decode(_refresh_checksum(buf))


def test_string_offset_out_of_range(graph) -> None:
    b = _encode(graph)
    off, _ = _section(b, 2)
    buf = bytearray(b)
    struct.pack_into("<I", buf, off, 1 << 20)  # tensor 0 name
    with pytest.raises(ModelFormatError, match="tensor 0 name: string offset"):
        tmodel.decode(_refresh_checksum(buf))


def test_shape_that_does_not_fit_op(graph) -> None:
    b = _encode(graph)
    mf = tmodel.decode(b)
    conv_out = mf.ops[0].outputs[0]
    off, _ = _section(b, 2)
    buf = bytearray(b)
    struct.pack_into("<i", buf, off + 64 * conv_out + 8 + 4, 5)  # conv output H 3 -> 5
    with pytest.raises(ModelFormatError, match="op 0 'conv' \\(CONV_2D\\)"):
        tmodel.decode(_refresh_checksum(buf))


def test_misaligned_constant(graph) -> None:
    b = _encode(graph)
    mf = tmodel.decode(b)
    w_index = mf.ops[0].inputs[1]
    off, _ = _section(b, 2)
    buf = bytearray(b)
    (d_off,) = struct.unpack_from("<Q", buf, off + 64 * w_index + 48)
    struct.pack_into("<Q", buf, off + 64 * w_index + 48, d_off + 4)
    with pytest.raises(ModelFormatError, match="tensor .* 'w' data.*64-aligned"):
        tmodel.decode(_refresh_checksum(buf))


def test_graph_io_out_of_range(graph) -> None:
    b = _encode(graph)
    off, _ = _section(b, 6)
    buf = bytearray(b)
    struct.pack_into("<I", buf, off + 8, 500)
    with pytest.raises(ModelFormatError, match="GRAPH_IO input 0 is tensor 500"):
        tmodel.decode(_refresh_checksum(buf))


def test_writer_rejects_internal_ops(gb) -> None:
    x = gb.input("x", (1, 4))
    y = gb.node(InternalOp.IDENTITY, [x], "y")
    with pytest.raises(ConversionError, match="internal op"):
        tmodel.graph_to_file(gb.graph(y))


def test_writer_rejects_too_many_attr_values(gb) -> None:
    x = gb.input("x", (1, 1, 1, 1, 2))
    y = gb.node(OpType.PAD, [x], "y", {"paddings": (0,) * 10})
    with pytest.raises(ConversionError, match="'paddings' has 10 values"):
        tmodel.graph_to_file(gb.graph(y))


def test_model_without_constants(gb) -> None:
    x = gb.input("x", (2, 3))
    y = gb.node(OpType.RELU, [x], "y")
    b = tmodel.encode(tmodel.graph_to_file(gb.graph(y)))
    mf = tmodel.decode(b)
    assert tmodel.encode(mf) == b and len(mf.ops) == 1
