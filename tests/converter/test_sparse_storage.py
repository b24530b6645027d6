"""Sparse constants in `.tmodel` (FORMAT.md, "Sparse constants"): the bitmask encoding,
the writer's choice, the Python reader's and the C loader's validation, and bit-exact engine
output against the dense conversion of the same magnitude-pruned model."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from tether.converter import convert, load
from tether.converter._internal import ir, tmodel
from tether.converter._internal.ops import Activation, OpType

from tether.errors import ConversionError, ModelFormatError

META = (("producer", "tether test"), ("source", "unit:sparse"))


def _prune(w: np.ndarray, fraction: float) -> np.ndarray:
    """Zeros the `fraction` smallest-magnitude entries of `w`."""
    cut = np.quantile(np.abs(w), fraction)
    return np.where(np.abs(w) <= cut, 0.0, w).astype(w.dtype)


@pytest.fixture
def sparse_graph(gb) -> ir.Graph:
    rng = np.random.default_rng(0)
    x = gb.input("x", (1, 6, 6, 3))
    w = gb.const("w", _prune(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), 0.8))
    b = gb.const("b", rng.standard_normal(8).astype(np.float32))  # dense: no zeros
    c = gb.node(OpType.CONV_2D, [x, w, b], "conv", {"pads": (1, 1, 1, 1)}, Activation.RELU)
    m = gb.node(OpType.MEAN, [c], "mean", {"axes": (1, 2), "keepdims": (0,)})
    fw = gb.const("fc/w", _prune(rng.standard_normal((5, 8)).astype(np.float32), 0.6))
    y = gb.node(OpType.FULLY_CONNECTED, [m, fw, None], "fc")
    return gb.graph(y)


def _reseal(buf: bytearray) -> bytes:
    struct.pack_into("<I", buf, 24, 0)
    struct.pack_into("<I", buf, 24, zlib.crc32(buf) & 0xFFFFFFFF)
    return bytes(buf)


def _tensor_record(data: bytes, name: str) -> tuple[int, int, int]:
    """(record offset, data_offset, data_size) of the tensor called `name`."""
    mf = tmodel.decode(data)
    index = [t.name for t in mf.tensors].index(name)
    (count,) = struct.unpack_from("<I", data, 28)
    for k in range(count):
        kind, _, off, _size = struct.unpack_from("<IIQQ", data, 64 + 24 * k)
        if kind == tmodel.SectionKind.TENSORS:
            rec = off + 64 * index
            return rec, *struct.unpack_from("<QQ", data, rec + 48)
    raise AssertionError("no TENSORS section")


# ---------------------------------------------------------------------------- the codec


@pytest.mark.parametrize("dtype", ["<f4", "<i4", "i1"])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1000])
def test_encode_decode_round_trip_is_exact(dtype: str, n: int) -> None:
    rng = np.random.default_rng(n)
    v = (rng.standard_normal(n) * 50).astype(dtype)
    v[rng.random(n) < 0.6] = 0
    raw = v.tobytes()
    blob = tmodel.sparse_encode(raw, v.itemsize)
    nnz = int(np.count_nonzero(v))
    assert len(blob) == tmodel.sparse_size(n, nnz, v.itemsize)
    assert tmodel.sparse_decode(blob, n, v.itemsize) == raw


def test_negative_zero_is_stored_bit_exact() -> None:
    raw = np.array([0.0, -0.0, 1.5, 0.0], "<f4").tobytes()
    blob = tmodel.sparse_encode(raw, 4)
    assert struct.unpack_from("<Q", blob, 8)[0] == 2  # -0.0 and 1.5
    assert tmodel.sparse_decode(blob, 4, 4) == raw


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda b: struct.pack_into("<I", b, 0, 2), "sparse encoding 2"),
    (lambda b: struct.pack_into("<I", b, 4, 1), "reserved field"),
    (lambda b: struct.pack_into("<Q", b, 8, 11), "nonzero_count 11 > element count 10"),
    (lambda b: struct.pack_into("<Q", b, 8, 3), "sparse data_size"),
    (lambda b: b.__setitem__(16, b[16] ^ 0x01), "bits set but nonzero_count"),
    (lambda b: b.__setitem__(17, b[17] | 0x80), "past element 9"),
])
def test_sparse_decode_rejects_corrupt_blobs(edit, needle: str) -> None:
    v = np.array([0, 1, 0, 2, 0, 0, 3, 0, 4, 0], "<f4")
    blob = bytearray(tmodel.sparse_encode(v.tobytes(), 4))
    edit(blob)
    with pytest.raises(ModelFormatError, match=needle):
        tmodel.sparse_decode(bytes(blob), 10, 4, "tensor 3 'w'")


# ---------------------------------------------------------------------------- the writer


def test_negative_zeros_count_as_zeros_in_the_writer(gb) -> None:
    w = np.zeros((4, 8), np.float32)
    w[:, 0] = 1.0
    w[:2, 1:] = -0.0  # a mask applied to negative weights, or BN folding with scale < 0
    x = gb.input("x", (1, 8))
    y = gb.node(OpType.FULLY_CONNECTED, [x, gb.const("w", w), None], "fc")
    back = tmodel.decode(tmodel.encode(tmodel.graph_to_file(gb.graph(y), META), sparse=0.3))
    assert len(back.sparse) == 1
    assert np.array_equal(back.tensors[next(iter(back.sparse))].data, w)
    assert not np.signbit(back.tensors[next(iter(back.sparse))].data).any()


def test_writer_stores_only_constants_that_gain(sparse_graph) -> None:
    mf = tmodel.graph_to_file(sparse_graph, META)
    dense = tmodel.encode(mf)
    sparse = tmodel.encode(mf, sparse=0.3)
    assert struct.unpack_from("<H", dense, 10)[0] == 0  # minor 0: nothing sparse
    assert struct.unpack_from("<H", sparse, 10)[0] == 1  # minor 1: uses the sparse flag
    back = tmodel.decode(sparse)
    names = {back.tensors[i].name for i in back.sparse}
    assert names == {"w", "fc/w"}  # b has no zeros
    for a, b in zip(tmodel.decode(dense).tensors, back.tensors):
        if a.data is not None:
            assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data), a.name
    # the canonical layout survives a decode/encode round trip
    assert tmodel.encode(back) == sparse
    stats = tmodel.sparse_stats(sparse)
    assert stats.sparse_tensors == 2 and stats.constants == 3
    assert stats.constant_bytes == tmodel.sparse_stats(dense).stored_bytes == (216 + 8 + 40) * 4
    w_nnz = int(np.count_nonzero(sparse_graph.tensors["w"].data))
    fc_nnz = int(np.count_nonzero(sparse_graph.tensors["fc/w"].data))
    assert stats.stored_bytes == (tmodel.sparse_size(216, w_nnz, 4) + 8 * 4
                                  + tmodel.sparse_size(40, fc_nnz, 4))
    # a threshold above the zero fraction keeps a tensor dense
    high = tmodel.decode(tmodel.encode(mf, sparse=0.7))
    assert {high.tensors[i].name for i in high.sparse} == {"w"}
    with pytest.raises(ConversionError, match="sparse=1.5"):
        tmodel.encode(mf, sparse=1.5)


def test_python_reader_names_the_tensor_of_a_corrupt_encoding(sparse_graph) -> None:
    data = tmodel.encode(tmodel.graph_to_file(sparse_graph, META), sparse=0.3)
    rec, off, _size = _tensor_record(data, "fc/w")
    buf = bytearray(data)
    buf[off + 16] ^= 0x01  # one mask bit: popcount no longer matches nonzero_count
    with pytest.raises(ModelFormatError, match="'fc/w': sparse mask has"):
        tmodel.decode(_reseal(buf))
    buf = bytearray(data)
    buf[rec + 7] = 2  # sparse without constant
    with pytest.raises(ModelFormatError, match="sparse .bit 1. without constant"):
        tmodel.decode(_reseal(buf))


# ---------------------------------------------------------------------------- the engine


def _engine():
    from tether.device import Engine

    return Engine


def test_engine_output_equals_dense_conversion_exactly(sparse_graph) -> None:
    Engine = _engine()
    mf = tmodel.graph_to_file(sparse_graph, META)
    dense, sparse = tmodel.encode(mf), tmodel.encode(mf, sparse=0.3)
    x = np.random.default_rng(1).standard_normal((1, 6, 6, 3)).astype(np.float32)
    a = Engine(dense).run(x)
    b = Engine(sparse).run(x)
    assert a.shape == b.shape == (1, 5) and a.dtype == b.dtype == np.float32
    assert np.array_equal(a, b), f"max abs diff {np.max(np.abs(a - b))}"


def test_engine_rejects_corrupt_encoding_naming_the_tensor(sparse_graph) -> None:
    from tether.device import EngineError

    Engine = _engine()
    data = tmodel.encode(tmodel.graph_to_file(sparse_graph, META), sparse=0.3)
    _rec, off, _size = _tensor_record(data, "w")
    buf = bytearray(data)
    struct.pack_into("<Q", buf, off + 8, struct.unpack_from("<Q", buf, off + 8)[0] + 1)
    with pytest.raises(EngineError, match="'w': sparse"):
        Engine(_reseal(buf))


@pytest.mark.slow
def test_pruned_keras_model_round_trip() -> None:
    """A magnitude-pruned Keras CNN: sparse .tmodel smaller, engine output identical."""
    import keras

    Engine = _engine()
    keras.utils.set_random_seed(0)
    x_in = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(x_in)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="c2")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(10, name="fc")(h)
    model = keras.Model(x_in, out)
    for name in ("c2", "fc"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([_prune(kernel, 0.8), bias])
    dense_tm = convert(model, sparse=None)
    sparse_tm = convert(model)
    r = sparse_tm.report
    assert dense_tm.report.sparse_tensors == 0
    assert dense_tm.report.stored_constant_bytes == dense_tm.report.constant_bytes
    assert r.constant_bytes == dense_tm.report.constant_bytes
    assert r.sparse_tensors >= 2 and r.stored_constant_bytes < 0.35 * r.constant_bytes
    assert len(sparse_tm.to_bytes()) < 0.4 * len(dense_tm.to_bytes())
    assert "stored" in str(r)
    reloaded = load(sparse_tm.to_bytes()).report
    assert (reloaded.stored_constant_bytes, reloaded.sparse_tensors) == (
        r.stored_constant_bytes, r.sparse_tensors)
    xs = np.random.default_rng(2).standard_normal((4, 1, 12, 12, 1)).astype(np.float32)
    e_dense, e_sparse = Engine(dense_tm.to_bytes()), Engine(sparse_tm.to_bytes())
    for x in xs:
        a, b = e_dense.run(x), e_sparse.run(x)
        assert np.array_equal(a, b), f"max abs diff {np.max(np.abs(a - b))}"
    with pytest.raises(ConversionError, match="sparse=-0.1"):
        convert(model, sparse=-0.1)
