"""`model_memory` reports what loading asks of the allocator, before loading.

The figures are checked against the engine itself: a ctypes allocator counts the requests
of `tether_model_load`, and a never-freeing pool of exactly `total_bytes` loads the model
while one byte less does not.
"""

import ctypes
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tether.device import Engine, EngineError, ModelMemory, model_memory
from tether.device import _binding as B

SEEDS = Path(__file__).resolve().parents[2] / "device" / "runtime" / "tests" / "fuzz" / "regressions"
# A float model with sparse (format 1.1) constants and two int8 models (GEMM, depthwise,
# ADD, pools, FULLY_CONNECTED; HARD_SWISH, LOGISTIC, TANH, CONCATENATION, PAD).
MODELS = ["seed-sparse-bitmask-constants.tmodel", "seed-int8-conv-dw-add-pool-fc.tmodel",
          "seed-int8-hardswish-sigmoid-tanh-concat-pad.tmodel"]

ALLOCATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
DEALLOCATE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class Allocator(ctypes.Structure):
    """`tether_allocator` (tether.h), for these tests only: the binding passes NULL."""

    _fields_ = [("context", ctypes.c_void_p), ("allocate", ALLOCATE),
                ("deallocate", DEALLOCATE)]


def aligned(nbytes: int) -> tuple[np.ndarray, int]:
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    return raw, raw.ctypes.data + (-raw.ctypes.data) % 64


def load_with(data: bytes, allocate, deallocate) -> int:
    """tether_model_load of `data` through the given callbacks; the model is destroyed."""
    lib = B.lib()
    buf, address = aligned(len(data))
    buf[address - buf.ctypes.data:][:len(data)] = np.frombuffer(data, dtype=np.uint8)
    alloc = Allocator(None, ALLOCATE(allocate), DEALLOCATE(deallocate))
    model = ctypes.c_void_p()
    status = lib.tether_model_load(address, len(data), ctypes.byref(alloc), ctypes.byref(model))
    if status == 0:
        lib.tether_model_destroy(model)
    return status


def counted_load(data: bytes) -> dict[str, int]:
    """Every request tether_model_load makes: sum, most held at once, held after, largest."""
    blocks: dict[int, tuple[np.ndarray, int]] = {}
    seen = {"total": 0, "live": 0, "peak": 0, "largest": 0, "odd": 0}

    def allocate(_context, size, alignment):
        raw, address = aligned(size)
        blocks[address] = (raw, size)
        seen["total"] += size
        seen["live"] += size
        seen["peak"] = max(seen["peak"], seen["live"])
        seen["largest"] = max(seen["largest"], size)
        seen["odd"] += size % 64 != 0 or alignment > 64
        return address

    def deallocate(_context, address):
        if address:
            seen["live"] -= blocks.pop(address)[1]

    lib = B.lib()
    buf, address = aligned(len(data))
    buf[address - buf.ctypes.data:][:len(data)] = np.frombuffer(data, dtype=np.uint8)
    alloc = Allocator(None, ALLOCATE(allocate), DEALLOCATE(deallocate))
    model = ctypes.c_void_p()
    assert lib.tether_model_load(address, len(data), ctypes.byref(alloc), ctypes.byref(model)) == 0
    seen["resident"] = seen["live"]
    lib.tether_model_destroy(model)
    assert seen["live"] == 0 and not blocks
    return seen


def pool_load(data: bytes, capacity: int) -> int:
    """Status of loading `data` from a never-freeing pool of `capacity` bytes."""
    pool, base = aligned(capacity)
    used = [0]

    def allocate(_context, size, alignment):
        at = -(-used[0] // alignment) * alignment
        if at + size > capacity:
            return None
        used[0] = at + size
        return base + at

    status = load_with(data, allocate, lambda _context, _address: None)
    del pool
    return status


@pytest.mark.parametrize("name", MODELS)
def test_figures_are_the_requests_of_the_load(name):
    # Prepare
    data = (SEEDS / name).read_bytes()
    # Execute
    mem = model_memory(data)
    seen = counted_load(data)
    # Assert
    assert isinstance(mem, ModelMemory) and mem.isa == B.isa()
    assert (mem.total_bytes, mem.peak_bytes, mem.resident_bytes, mem.largest_block_bytes) == \
        (seen["total"], seen["peak"], seen["resident"], seen["largest"])
    assert seen["odd"] == 0 and mem.total_bytes % 64 == 0
    assert mem.largest_block_bytes <= mem.peak_bytes <= mem.total_bytes
    assert model_memory(SEEDS / name) == mem == model_memory(str(SEEDS / name))


@pytest.mark.parametrize("name", MODELS)
def test_a_pool_of_exactly_total_bytes_loads(name):
    data = (SEEDS / name).read_bytes()
    total = model_memory(data).total_bytes
    assert pool_load(data, total) == 0
    assert B.status_name(pool_load(data, total - 1)) == "out_of_memory"


def reseal(buf: bytearray) -> bytes:
    buf[24:28] = b"\0\0\0\0"
    buf[24:28] = struct.pack("<I", zlib.crc32(bytes(buf)) & 0xFFFFFFFF)
    return bytes(buf)


@pytest.mark.parametrize("damage", ["truncated", "checksum", "version", "tensor_dtype"])
def test_a_damaged_file_gives_the_error_loading_gives(damage):
    # Prepare
    buf = bytearray((SEEDS / MODELS[1]).read_bytes())
    if damage == "truncated":
        data = bytes(buf[: len(buf) // 2])
    elif damage == "checksum":
        buf[-70] ^= 0x01
        data = bytes(buf)
    elif damage == "version":
        struct.pack_into("<H", buf, 8, 2)
        data = reseal(buf)
    else:
        count, offset = struct.unpack_from("<IQ", buf, 28)
        tensors = next(off for k, _, off, _ in
                       (struct.unpack_from("<IIQQ", buf, offset + 24 * i) for i in range(count))
                       if k == 2)
        buf[tensors + 4] = 9  # dtype 9 does not exist
        data = reseal(buf)
    # Execute
    with pytest.raises(EngineError) as loading:
        Engine(data)
    with pytest.raises(EngineError) as asking:
        model_memory(data)
    # Assert
    assert asking.value.status == loading.value.status != "success"
    assert str(asking.value) == str(loading.value)


def test_missing_file(tmp_path):
    with pytest.raises(EngineError) as err:
        model_memory(tmp_path / "absent.tmodel")
    assert err.value.status == "io_error" and "absent.tmodel" in str(err.value)
