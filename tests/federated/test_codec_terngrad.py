"""TernGrad and the wire header: properties (Hypothesis) and exact checks."""

from __future__ import annotations

import struct

import numpy as np
from tether.federated import codecs


def test_terngrad_with_clipping_is_unbiased_for_clipped_input() -> None:
    x = np.random.default_rng(0).standard_normal(50) * np.linspace(0.1, 5, 50)
    c = codecs.TernGrad(2.5, seed=0)
    ys = np.stack([codecs.decode(c.encode(x)) for _ in range(4000)])
    target = c.clipped(x)
    se = ys.std(axis=0) / np.sqrt(len(ys))
    assert np.all(np.abs(ys.mean(axis=0) - target) <= 6 * se + 1e-6)
    assert not np.allclose(target, x)  # clipping did something


def test_wire_format_header_and_terngrad_bits() -> None:
    x = np.array([[2.0, -2.0], [0.0, 2.0]], np.float32)
    p = codecs.TernGrad(0, seed=0).encode(x)  # |x| = s or 0: deterministic codes
    assert p[:6] == b"TC" + bytes([1, 2, 0, 2])  # magic, version, id terngrad, float32, ndim
    assert struct.unpack_from("<2I", p, 6) == (2, 2)
    assert struct.unpack_from("<f", p, 14) == (2.0,)
    # codes 1, 2, 0, 1 packed LSB first: 0b01_00_10_01
    assert p[18:] == bytes([0b01001001])
