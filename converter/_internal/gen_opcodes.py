"""Writes `opcodes.py`, the Python `OpType` enum, from tether.h's `TETHER_OP_LIST`.

Run from the repository root: `python -m tether.converter._internal.gen_opcodes`
(`--check` exits 1 when the committed file differs). tether.h is the one op table;
`tests/converter/test_format_contract.py` checks the committed file is current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["HEADER", "OUTPUT", "op_list", "render"]

_ROOT = Path(__file__).resolve().parents[2]
HEADER = _ROOT / "device" / "runtime" / "include" / "tether" / "tether.h"
OUTPUT = Path(__file__).resolve().with_name("opcodes.py")


def op_list(header_text: str) -> list[tuple[int, str]]:
    """Returns the `(id, NAME)` rows of `#define TETHER_OP_LIST(X)`, in order.

    >>> op_list("#define TETHER_OP_LIST(X) X(1, CONV_2D) X(2, ADD)")
    [(1, 'CONV_2D'), (2, 'ADD')]
    """
    m = re.search(r"#define TETHER_OP_LIST\(X\)((?:[^\n]*\\\n)*[^\n]*)", header_text)
    if m is None:
        raise ValueError("tether.h: `#define TETHER_OP_LIST(X)` not found; restore the X-macro op table")
    return [(int(i), name) for i, name in re.findall(r"X\(\s*(\d+)\s*,\s*(\w+)\s*\)", m.group(1))]


def render(ops: list[tuple[int, str]]) -> str:
    """Returns the text of `opcodes.py` for `ops`."""
    lines = [
        '"""Op ids of the `.tmodel` op table (FORMAT.md, `tether_op`).',
        "",
        "Generated from device/runtime/include/tether/tether.h (TETHER_OP_LIST) by",
        "converter/_internal/gen_opcodes.py; do not edit.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import enum",
        "",
        '__all__ = ["OpType"]',
        "",
        "",
        "class OpType(enum.IntEnum):",
        '    """Op ids of the `.tmodel` op table (FORMAT.md, `tether_op`)."""',
        "",
    ]
    lines += [f"    {name} = {i}" for i, name in ops]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render(op_list(HEADER.read_text()))
    if "--check" in argv:
        return 0 if OUTPUT.read_text() == text else 1
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
