"""The .tmodel reader rules (converter/FORMAT.md, "Errors a reader reports") are one list: the
C engine's loader and `tether.converter.load()` each reject a file that breaks any of them, and
give the same verdict on randomly damaged files."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.converter import convert, load
from tether.converter._internal.ops import DType
from tether.device import Engine
from tether.errors import EngineError, ModelFormatError

FORMAT = Path(__file__).resolve().parents[1] / "converter" / "FORMAT.md"
STRINGS, TENSORS, OPS, OPERANDS, ATTRS, GRAPH_IO, METADATA, DATA = range(1, 9)
TENSOR, OP, ATTR = 64, 32, 40


class File:
    """A valid .tmodel's bytes and where its records are, to damage one field at a time."""

    def __init__(self, data: bytes) -> None:
        self.buf = bytearray(data)
        count, self.dir = struct.unpack_from("<IQ", data, 28)
        self.entries = {struct.unpack_from("<I", data, self.dir + 24 * i)[0]: self.dir + 24 * i
                        for i in range(count)}

    def section(self, kind: int) -> tuple[int, int]:
        return struct.unpack_from("<QQ", self.buf, self.entries[kind] + 8)

    def put(self, fmt: str, offset: int, *values: int) -> None:
        struct.pack_into(fmt, self.buf, offset, *values)

    def tensor(self, i: int) -> int:
        return self.section(TENSORS)[0] + TENSOR * i

    def op(self, i: int) -> int:
        return self.section(OPS)[0] + OP * i

    def io(self) -> tuple[list[int], list[int]]:
        off, _ = self.section(GRAPH_IO)
        n_in, n_out = struct.unpack_from("<II", self.buf, off)
        idx = list(struct.unpack_from(f"<{n_in + n_out}I", self.buf, off + 8))
        return idx[:n_in], idx[n_in:]

    def constant(self) -> int:
        n = self.section(TENSORS)[1] // TENSOR
        return next(i for i in range(n) if self.buf[self.tensor(i) + 7] & 1)

    def sealed(self) -> bytes:
        self.put("<I", 24, 0)
        self.put("<I", 24, zlib.crc32(bytes(self.buf)) & 0xFFFFFFFF)
        return bytes(self.buf)


def _op_with_attrs(f: File) -> int:
    n = f.section(OPS)[1] // OP
    return next(i for i in range(n) if struct.unpack_from("<I", f.buf, f.op(i) + 20)[0])


def _strings_end(f: File) -> None:
    off, size = f.section(STRINGS)
    f.buf[off + size - 1] = ord("x")


def _bad_utf8(f: File) -> None:
    name = struct.unpack_from("<I", f.buf, f.tensor(0))[0]
    f.buf[f.section(STRINGS)[0] + name] = 0xFF


def _graph_output_to_input(f: File) -> None:
    # op 0 writes the graph input: a tensor defined twice
    first, n_in = struct.unpack_from("<I", f.buf, f.op(0) + 16)[0], \
        struct.unpack_from("<I", f.buf, f.op(0) + 8)[0]
    f.put("<I", f.section(OPERANDS)[0] + 4 * (first + n_in), f.io()[0][0])


def _output_shape(f: File) -> None:
    first, n_in = struct.unpack_from("<II", f.buf, f.op(0) + 16)[0], \
        struct.unpack_from("<I", f.buf, f.op(0) + 8)[0]
    out = struct.unpack_from("<I", f.buf, f.section(OPERANDS)[0] + 4 * (first + n_in))[0]
    dim = struct.unpack_from("<i", f.buf, f.tensor(out) + 8 + 4)[0]
    f.put("<i", f.tensor(out) + 8 + 4, dim + 1)


def _float_op_output_int8(f: File) -> None:
    # op 0 (a float convolution) writes an int8 tensor
    first, n_in = struct.unpack_from("<II", f.buf, f.op(0) + 16)[0], \
        struct.unpack_from("<I", f.buf, f.op(0) + 8)[0]
    out = struct.unpack_from("<I", f.buf, f.section(OPERANDS)[0] + 4 * (first + n_in))[0]
    f.put("<B", f.tensor(out) + 4, int(DType.INT8))


# rule id -> the damage that breaks it (and nothing before it), on a sealed copy unless noted
DAMAGE: dict[str, Callable[[File], None]] = {
    "truncated": lambda f: f.put("<Q", 16, len(f.buf) + 8),
    "magic": lambda f: f.put("<B", 0, ord("X")),
    "version": lambda f: f.put("<H", 8, 2),
    "header_size": lambda f: f.put("<I", 12, 32),
    "checksum": None,  # a flipped byte with the checksum left as it was (below)
    "directory": lambda f: f.put("<Q", 32, len(f.buf) - 8),
    "section_bounds": lambda f: f.put("<Q", f.entries[TENSORS] + 16, len(f.buf)),
    "section_once": lambda f: f.put("<I", f.entries[METADATA], TENSORS),
    "section_required": lambda f: f.put("<I", f.entries[OPS], 99),
    "records": lambda f: f.put("<Q", f.entries[TENSORS] + 16, f.section(TENSORS)[1] - 8),
    "data_align": lambda f: f.put("<QQ", f.entries[DATA] + 8, f.section(DATA)[0] + 8,
                                  f.section(DATA)[1] - 8),
    "strings_nul": _strings_end,
    "string_index": lambda f: f.put("<I", f.tensor(0), f.section(STRINGS)[1] + 10),
    "utf8": _bad_utf8,
    "tensor_fields": lambda f: f.put("<B", f.tensor(0) + 4, 9),
    "tensor_data": lambda f: f.put("<Q", f.tensor(f.constant()) + 56,
                                   struct.unpack_from("<Q", f.buf, f.tensor(f.constant()) + 56)[0]
                                   + 4),
    "quant_fields": lambda f: f.put("<B", f.tensor(0) + 6, 3),
    "op_known": lambda f: f.put("<H", f.op(0), 999),
    "operand_index": lambda f: f.put("<I", f.op(0) + 16, 1 << 20),
    "attr_fields": lambda f: f.put("<B", f.section(ATTRS)[0] + ATTR * struct.unpack_from(
        "<I", f.buf, f.op(_op_with_attrs(f)) + 24)[0] + 3, 9),
    "graph_io_size": lambda f: f.put("<Q", f.entries[GRAPH_IO] + 16, f.section(GRAPH_IO)[1] + 4),
    "metadata_size": lambda f: f.put("<Q", f.entries[METADATA] + 16, f.section(METADATA)[1] + 8),
    "io_not_constant": lambda f: f.put("<I", f.section(GRAPH_IO)[0] + 8 + 4 * len(f.io()[0]),
                                       f.constant()),
    "order": _graph_output_to_input,
    "shapes": _output_shape,
    "dtypes": _float_op_output_int8,
}
STATUS = {"version": "version_mismatch", "op_known": "unsupported_op"}


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    from tether.models import demo_cnn

    return convert(demo_cnn()).to_bytes()


def _verdicts(data: bytes) -> tuple[str | None, str | None]:
    """(the C loader's error or None, converter.load()'s error or None)."""
    try:
        Engine(data).close()
        c = None
    except EngineError as e:
        c = str(e)
    try:
        load(data)
        py = None
    except ModelFormatError as e:
        py = str(e)
    return c, py


def test_every_rule_of_the_format_has_a_damage() -> None:
    table = FORMAT.read_text().split("## Errors a reader reports", 1)[1]
    ids = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert ids and sorted(ids) == sorted(DAMAGE)


@pytest.mark.parametrize("rule", sorted(DAMAGE))
def test_both_readers_reject_a_broken_rule(model_bytes, rule) -> None:
    assert _verdicts(model_bytes) == (None, None)
    f = File(model_bytes)
    if rule == "checksum":
        f.buf[f.section(DATA)[0] + 3] ^= 0x10
        data = bytes(f.buf)
    else:
        DAMAGE[rule](f)
        data = f.sealed()
    c, py = _verdicts(data)
    assert c is not None and py is not None, (rule, c, py)
    if rule in STATUS:
        assert STATUS[rule] in c and STATUS[rule] in py, (c, py)


@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True), value=st.integers(0, 255),
       width=st.sampled_from([1, 4]))
def test_both_readers_give_one_verdict_on_damaged_structure(model_bytes, where, value,
                                                            width) -> None:
    # Damage anywhere but the weights (a weight byte is any value); the file is resealed so
    # the checksum does not decide alone.
    f = File(model_bytes)
    data_off, data_size = f.section(DATA)
    spans = [(0, 24), (28, data_off)] + ([(data_off + data_size, len(f.buf))]
                                         if data_off + data_size < len(f.buf) else [])
    total = sum(b - a for a, b in spans)
    pos = int(where * total)
    for a, b in spans:
        if pos < b - a:
            pos += a
            break
        pos -= b - a
    for k in range(width):
        if pos + k < len(f.buf):
            f.buf[pos + k] = value if k == 0 else 0
    c, py = _verdicts(f.sealed())
    assert (c is None) == (py is None), (pos, value, c, py)
