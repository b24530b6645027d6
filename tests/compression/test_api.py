"""The public names of tether.compression resolve, and errors are TetherErrors."""

import tether.compression as tc
from tether.errors import TetherError


def test_every_public_name_resolves():
    assert set(tc.__all__) == set(tc._WHERE)
    for name in tc.__all__:
        assert getattr(tc, name) is not None, name


def test_compression_error_is_a_tether_error_and_value_error():
    assert issubclass(tc.CompressionError, TetherError)
    assert issubclass(tc.CompressionError, ValueError)
