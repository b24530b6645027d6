"""One definition per op: the converter's OpDef table, the engine's registry rows and the
rooms an op's name may appear in."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tether.converter._internal import calibrate, ir, passes
from tether.converter._internal.opdefs import OP_ATTRS, OPDEFS, apply_activation
from tether.converter._internal.ops import ATTRS, Activation, DType, InternalOp, OpType

ROOT = Path(__file__).resolve().parents[2]
C_OPS = ROOT / "device" / "runtime" / "src" / "ops"


def test_every_op_has_one_definition() -> None:
    assert set(OPDEFS) == set(OpType) | set(InternalOp)
    assert set(OP_ATTRS) == set(OpType)
    for d in OPDEFS.values():
        assert all(a in ATTRS for a in d.attrs), d
        assert 1 <= d.inputs[0] <= d.inputs[1]


def _c_rows() -> dict[str, set[str]]:
    """NAME -> the attribute names of its TETHER_OP_DEF row in the engine's op files."""
    window = {"STRIDES", "DILATIONS", "PADS"}
    rows: dict[str, set[str]] = {}
    for path in sorted(C_OPS.glob("*.c")):
        for name, body in re.findall(r"TETHER_OP_DEF\((\w+)\) = \{(.*?)\};", path.read_text(),
                                     re.DOTALL):
            fields = [f.strip() for f in body.split(",")]
            accepted = fields[3]  # min, max, optional_from, attrs, required, hooks
            names = set(re.findall(r"TETHER_ATTR\((\w+)\)", accepted))
            if "TETHER_WINDOW_ATTRS" in accepted:
                names |= window
            assert name not in rows, f"{name} has two registry rows"
            rows[name] = names
    return rows


def test_engine_registry_rows_take_the_converter_attributes() -> None:
    # Each op's C registry row (in its op file) accepts exactly the attributes its OpDef
    # lists: the writer never emits one the engine would reject.
    rows = _c_rows()
    assert set(rows) == {o.name for o in OpType}
    for op, names in OP_ATTRS.items():
        assert rows[op.name] == {n.upper() for n in names}, op.name


# Files outside tests where an op's name may appear: its definition (tether.h's list, the
# generated opcodes.py, opdefs.py), FORMAT.md, its C op file, and the converter's lowerings
# into it (frontends, rewrite rules, int8 lowering).
_ROOMS = (
    "device/runtime/include/tether/tether.h",
    "converter/_internal/opcodes.py",
    "converter/_internal/opdefs.py",
    "converter/FORMAT.md",
    "device/runtime/src/ops/",
    "converter/_internal/frontends/",
    "converter/_internal/passes/",
    "converter/_internal/quantize.py",
)


@pytest.mark.parametrize("name", ["HARD_SIGMOID", "CLAMP"])
def test_an_op_name_lives_in_its_rooms_only(name: str) -> None:
    word = re.compile(r"\b" + name + r"\b")
    found = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if (not path.is_file() or path.suffix not in {".py", ".c", ".h", ".md", ".java", ".kt"}
                or rel.startswith(("tests/", "device/runtime/tests/", ".venv/", ".git/"))
                or "/build" in rel):
            continue
        if word.search(path.read_text(errors="replace")):
            found.append(rel)
    strays = [f for f in found if not f.startswith(_ROOMS)]
    assert not strays, f"{name} is named outside its definition and lowerings: {strays}"
    assert "device/runtime/include/tether/tether.h" in found


_FOLDABLE = [d.op for d in OPDEFS.values()
             if d.fold and d.reference is not None and d.inputs == (1, 1)
             and d.op not in (OpType.RESHAPE, OpType.TRANSPOSE, OpType.MEAN, OpType.PAD,
                              OpType.SLICE, OpType.REDUCE_MAX)]
_ATTRS_OF = {OpType.CLAMP: {"min": (-0.5,), "max": (2.0,)},
             OpType.HARD_SIGMOID: {"alpha": (0.2,), "offset": (0.5,)},
             OpType.LEAKY_RELU: {"alpha": (0.1,)}, OpType.ELU: {"alpha": (1.3,)},
             OpType.LRN: {"size": (3,), "alpha": (0.5,), "beta": (0.75,), "offset": (1.0,)}}


@pytest.mark.parametrize("op", _FOLDABLE, ids=lambda o: o.name)
@settings(max_examples=15, deadline=None)
@given(values=st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=1, max_size=12),
       act=st.sampled_from(list(Activation)))
def test_folding_and_calibration_compute_one_definition(op, values, act) -> None:
    # The same node with a constant input folds to what calibration evaluates for a fed input.
    x = np.asarray(values, np.float32)
    node = ir.Node(op, "n", ("x",), ("y",), _ATTRS_OF.get(op, {}), activation=act)
    fed = ir.Graph({"x": ir.Tensor("x", x.shape, DType.FLOAT32),
                    "y": ir.Tensor("y", x.shape, DType.FLOAT32)},
                   (node,), ("x",), ("y",), "g")
    evaluated = calibrate.evaluate(fed, {"x": x})["y"]
    const = ir.Graph({"x": ir.Tensor("x", x.shape, DType.FLOAT32, x),
                      "y": ir.Tensor("y", x.shape, DType.FLOAT32),
                      "z": ir.Tensor("z", x.shape, DType.FLOAT32)},
                     (node, ir.Node(OpType.RELU6, "out", ("y",), ("z",))), (), ("z",), "g")
    folded = passes.fold_constants(const)
    assert not any(n.name == "n" for n in folded.nodes)
    np.testing.assert_allclose(folded.tensors["y"].data, evaluated.astype(np.float32),
                               rtol=1e-6, atol=1e-6)
    expected = OPDEFS[op].reference(node, [x.astype(np.float64)], x.shape)
    np.testing.assert_allclose(evaluated, apply_activation(expected, act))
