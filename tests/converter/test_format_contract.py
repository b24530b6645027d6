"""The C op enum, the Python op enum and FORMAT.md's tables must agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tether.converter._internal import gen_opcodes
from tether.converter._internal.opdefs import OP_ATTRS
from tether.converter._internal.ops import Activation, AttrId, DType, OpType

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "device" / "runtime" / "include" / "tether" / "tether.h"
FORMAT = ROOT / "converter" / "FORMAT.md"


def _c_enum(text: str, enum: str, prefix: str) -> dict[str, int]:
    m = re.search(r"typedef enum " + enum + r" \{(.*?)\}", text, re.DOTALL)
    assert m, f"enum {enum} not found in {HEADER}"
    return {k: int(v) for k, v in re.findall(prefix + r"(\w+)\s*=\s*(\d+)", m.group(1))}


def _md_section(text: str, title: str) -> str:
    m = re.search(r"^#+ " + re.escape(title) + r"\s*$(.*?)(?=^#+ |\Z)", text, re.DOTALL | re.MULTILINE)
    assert m, f"section '{title}' not found in {FORMAT}"
    return m.group(1)


def _md_op_rows(text: str):
    return re.findall(r"^\| (\d+) \| `(\w+)` \|[^|]*\|[^|]*\| ([^|]*) \|\s*$",
                      _md_section(text, "Op table"), re.MULTILINE)


@pytest.fixture(scope="module")
def header() -> str:
    return HEADER.read_text()


@pytest.fixture(scope="module")
def spec() -> str:
    return FORMAT.read_text()


def test_ops_agree(header: str, spec: str) -> None:
    # tether.h's enum tether_op is built from the X-macro TETHER_OP_LIST.
    c_ops = {name: i for i, name in gen_opcodes.op_list(header)}
    md_ops = {name: int(i) for i, name, _ in _md_op_rows(spec)}
    py_ops = {o.name: int(o) for o in OpType}
    assert md_ops, "op table is empty"
    assert c_ops == md_ops == py_ops


def test_opcodes_is_generated_from_header(header: str) -> None:
    # Regenerating opcodes.py from TETHER_OP_LIST gives exactly the committed file.
    assert gen_opcodes.HEADER == HEADER
    assert gen_opcodes.OUTPUT.read_text() == gen_opcodes.render(gen_opcodes.op_list(header))


def test_format_op_rows_equal_op_list(header: str, spec: str) -> None:
    # FORMAT.md's op table rows (id, name), in order, are TETHER_OP_LIST.
    rows = [(int(i), name) for i, name, _ in _md_op_rows(spec)]
    assert rows == gen_opcodes.op_list(header)
    assert [(int(o), o.name) for o in OpType] == rows


def test_activations_agree(header: str, spec: str) -> None:
    c_acts = _c_enum(header, "tether_activation", "TETHER_ACT_")
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", _md_section(spec, "Fused activations"), re.MULTILINE)
    md_acts = {name: int(i) for i, name in rows}
    assert c_acts == md_acts == {a.name: int(a) for a in Activation}


def test_dtypes_agree(header: str, spec: str) -> None:
    c_dtypes = _c_enum(header, "tether_dtype", "TETHER_DTYPE_")
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| \d+ \|", _md_section(spec, "Tensors"), re.MULTILINE)
    assert c_dtypes == {n: int(i) for n, i in rows} == {d.name: int(d) for d in DType}


def test_attribute_ids_agree(spec: str) -> None:
    seen: dict[str, int] = {}
    for _, op_name, attrs in _md_op_rows(spec):
        names = []
        for aid, aname in re.findall(r"(\d+) ([a-z_]+)", attrs):
            assert AttrId[aname.upper()] == int(aid), (op_name, aname)
            assert seen.setdefault(aname, int(aid)) == int(aid)
            names.append(aname)
        assert sorted(names) == sorted(OP_ATTRS[OpType[op_name]]), op_name
    assert set(seen) == {a.name.lower() for a in AttrId}
