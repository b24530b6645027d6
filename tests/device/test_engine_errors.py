"""A damaged .tmodel is rejected with a clear error, never a crash."""

import struct
import zlib

import numpy as np
import pytest

from tether.device import Engine, EngineError

HEADER = 64
OPERANDS = 4


def reseal(buf: bytearray) -> bytes:
    """Recomputes the header CRC so that only the deliberate damage is left to find."""
    buf[24:28] = b"\0\0\0\0"
    buf[24:28] = struct.pack("<I", zlib.crc32(bytes(buf)) & 0xFFFFFFFF)
    return bytes(buf)


def section(buf: bytes, kind: int) -> tuple[int, int]:
    count, offset = struct.unpack_from("<IQ", buf, 28)
    for i in range(count):
        k, _, off, size = struct.unpack_from("<IIQQ", buf, offset + 24 * i)
        if k == kind:
            return off, size
    raise AssertionError(f"no section {kind}")


@pytest.mark.parametrize("eighth", range(8))
def test_truncated_files_are_rejected(demo_tmodel_bytes, eighth):
    cut = demo_tmodel_bytes[: len(demo_tmodel_bytes) * eighth // 8]
    with pytest.raises(EngineError) as err:
        Engine(cut)
    assert err.value.status in ("format_error", "invalid_argument")
    assert str(err.value)


@pytest.mark.parametrize("offset", range(HEADER))
def test_any_flipped_header_byte_is_rejected(demo_tmodel_bytes, offset):
    buf = bytearray(demo_tmodel_bytes)
    buf[offset] ^= 0x5A
    with pytest.raises(EngineError) as err:
        Engine(bytes(buf))
    assert err.value.status in ("format_error", "version_mismatch")


def test_flipped_weight_byte_fails_the_checksum(demo_tmodel_bytes):
    buf = bytearray(demo_tmodel_bytes)
    buf[len(buf) - 70] ^= 0x01
    with pytest.raises(EngineError, match="checksum"):
        Engine(bytes(buf))


def test_out_of_range_op_input_names_the_op(demo_tmodel_bytes):
    buf = bytearray(demo_tmodel_bytes)
    off, size = section(buf, OPERANDS)
    assert size >= 4
    struct.pack_into("<I", buf, off, 0x7FFFFFF0)
    with pytest.raises(EngineError) as err:
        Engine(reseal(buf))
    assert err.value.status == "format_error"
    assert "op 0" in str(err.value) and "out of range" in str(err.value)


def test_unknown_major_version(demo_tmodel_bytes):
    buf = bytearray(demo_tmodel_bytes)
    struct.pack_into("<H", buf, 8, 2)
    with pytest.raises(EngineError) as err:
        Engine(reseal(buf))
    assert err.value.status == "version_mismatch"


def test_missing_file_and_not_a_model(tmp_path):
    with pytest.raises(EngineError, match="no such file"):
        Engine(tmp_path / "absent.tmodel")
    p = tmp_path / "junk.tmodel"
    p.write_bytes(b"definitely not a model" * 10)
    with pytest.raises(EngineError, match=str(p)):
        Engine(p)


def test_run_input_checks(demo_tmodel_bytes, digits):
    engine = Engine(demo_tmodel_bytes)
    name = engine.inputs[0].name
    assert engine.inputs[0].shape == (1, 8, 8, 1)
    one = engine.run(digits.x_test[0])               # unbatched image
    assert one.shape == (10,)
    batch = engine.run({name: digits.x_test[:3]})    # dict of name -> stacked batch
    assert batch.shape == (3, 10)
    np.testing.assert_allclose(batch[0], one, rtol=0, atol=0)
    with pytest.raises(EngineError, match=r"expects shape \(1, 8, 8, 1\)"):
        engine.run(np.zeros((2, 7, 8, 1), np.float32))
    with pytest.raises(EngineError, match="missing"):
        engine.run({"nope": digits.x_test[:1]})
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.run(digits.x_test[0])
