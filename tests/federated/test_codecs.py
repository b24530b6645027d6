"""What every codec keeps (Hypothesis, over all registered specs), the registry, and the wire
format's error handling; each codec's own properties are in test_codec_<name>.py."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from codecs_testlib import arrays, shapes
from tether.federated import codecs

ALL = ["none", "qsgd:4", "qsgd:2", "qsgd:8", "terngrad", "terngrad:0", "signsgd", "topk:0.1",
       "mask:0.3", "lowrank:2"]
STOCHASTIC = ["qsgd:4", "qsgd:2", "terngrad:0", "mask:0.3", "lowrank:2"]

@pytest.mark.parametrize("spec", ALL)
@settings(max_examples=40, deadline=None)
@given(x=arrays)
def test_shape_dtype_preserved_and_finite(spec: str, x: np.ndarray) -> None:
    # Prepare
    c = codecs.make(spec, seed=1)
    # Execute
    y = codecs.decode(c.encode(x))
    # Assert
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("spec", ALL)
@settings(max_examples=20, deadline=None)
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]))
def test_zero_encodes_to_zero(spec: str, shape: tuple[int, ...], dtype: type) -> None:
    x = np.zeros(shape, dtype)
    y = codecs.decode(codecs.make(spec, seed=0).encode(x))
    assert np.array_equal(y, x)


@pytest.mark.parametrize("spec", STOCHASTIC)
@settings(max_examples=6, deadline=None)
@given(x=hnp.arrays(np.float64, st.sampled_from([(7,), (5, 6), (3, 4, 2)]),
                    elements=st.floats(-10, 10)))
def test_stochastic_codecs_are_unbiased(spec: str, x: np.ndarray) -> None:
    # Prepare: T independent encodings; the mean's error must sit within 6 standard errors.
    c = codecs.make(spec, seed=123)
    t = 1000
    ys = np.stack([codecs.decode(c.encode(x)) for _ in range(t)])
    # Execute
    mean = ys.mean(axis=0)
    # Assert. Variance of a two-point rounding is <= M*|x| with M the largest decoded magnitude;
    # the empirical variance can be 0 for rare events, so take the larger of the two.
    var = np.maximum(ys.var(axis=0), np.abs(ys).max() * np.abs(x))
    tol = 6 * np.sqrt(var / t) + 1e-5 * (1 + np.abs(x).max())
    assert np.all(np.abs(mean - x) <= tol), (spec, np.abs(mean - x).max(), tol.min())


@pytest.mark.parametrize("spec,bits", [("qsgd:4", 4), ("qsgd:2", 2), ("qsgd:8", 8), ("terngrad", 2),
                                       ("signsgd", 1)])
@settings(max_examples=20, deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=40))
def test_encoded_size_within_budget(spec: str, bits: int, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    p = codecs.make(spec, seed=0).encode(x)
    n = x.size
    header = 6 + 4 * x.ndim
    extra = {"qsgd": 6 + 4 * (-(-n // 512)), "terngrad": 4, "signsgd": 4}[spec.split(":")[0]]
    assert len(p) <= header + extra + (n * bits + 7) // 8


def test_compression_ratios_on_a_layer() -> None:
    x = np.random.default_rng(0).standard_normal((784, 200)).astype(np.float32)
    raw = len(codecs.make("none").encode(x))
    assert raw / len(codecs.make("qsgd:4").encode(x)) >= 7.5
    assert raw / len(codecs.make("terngrad").encode(x)) >= 15.5
    assert raw / len(codecs.make("signsgd").encode(x)) >= 31
    assert raw / len(codecs.make("topk:0.01").encode(x)) >= 49


@pytest.mark.parametrize("bad", ["qsgd:1", "qsgd:x", "topk:0", "mask:2", "lowrank:0", "zip"])
def test_bad_specs_raise_with_the_value(bad: str) -> None:
    with pytest.raises(codecs.CodecError):
        codecs.make(bad)


def test_damaged_payloads_raise() -> None:
    p = codecs.make("qsgd:4", seed=0).encode(np.ones(100, np.float32))
    with pytest.raises(codecs.CodecError, match="magic"):
        codecs.decode(b"XX" + p[2:])
    with pytest.raises(codecs.CodecError, match="truncated"):
        codecs.decode(p[:20])
    with pytest.raises(codecs.CodecError, match="int"):
        codecs.make("none").encode(np.ones(3, np.int32))


def test_the_registry_is_the_one_table_of_names_ids_and_decoders() -> None:
    # make(), decode() and the wire ids all read @register's table: each registered name
    # builds its codec, whose payload carries the registered id and decodes back.
    assert sorted(codecs.CODEC_IDS.values()) == list(range(len(codecs.CODEC_IDS)))
    x = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6)
    for name, cid in codecs.CODEC_IDS.items():
        codec = codecs.make(name, seed=0)
        assert codec.codec_id == cid and codec.spec.split(":")[0] == name
        payload = codec.encode(x)
        assert payload[3] == cid  # MAGIC (2 bytes), VERSION, then the codec id
        assert codecs.decode(payload).shape == x.shape
    with pytest.raises(TypeError):
        codecs.CODEC_IDS["new"] = 99  # type: ignore[index]


def test_register_refuses_a_taken_name_or_id() -> None:
    with pytest.raises(ValueError, match="taken"):
        codecs.register("qsgd", 42)(type("Again", (codecs.Codec,), {}))
    with pytest.raises(ValueError, match="taken"):
        codecs.register("fresh", 1)(type("SameId", (codecs.Codec,), {}))
    assert "fresh" not in codecs.CODEC_IDS
