"""Ids shared with the C engine: ops, fused activations, dtypes and attributes.

The numbers are the ones of `converter/FORMAT.md` and `device/runtime/include/tether/tether.h`
(`tether_op`, `tether_activation`, `tether_dtype`); `tests/converter/test_format_contract.py`
checks that all three agree. Ids are append-only. `OpType` is generated from tether.h's
`TETHER_OP_LIST` into `opcodes.py` (`python -m tether.converter._internal.gen_opcodes`).

What each op takes and computes (attributes, shape rule, float reference) is its `OpDef` in
`opdefs.py`. Besides the file's ops, the IR knows a few `InternalOp`s that frontends emit and passes lower
away before writing (their ids are >= 1000 and never reach a file).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .opcodes import OpType

__all__ = [
    "ACTIVATION_OF_OP",
    "ATTRS",
    "DTYPE_NUMPY",
    "DTYPE_SIZE",
    "Activation",
    "AnyOp",
    "AttrId",
    "AttrSpec",
    "AttrType",
    "DType",
    "InternalOp",
    "OpType",
    "op_name",
]


class InternalOp(enum.IntEnum):
    """Ops that exist only inside the converter and are lowered before writing.

    BATCH_NORM: inputs x, gamma, beta, mean, variance (constants, shape [C]);
        attr `epsilon`; y = (x - mean) / sqrt(variance + epsilon) * gamma + beta over the
        last axis.
    IDENTITY: y = x (inference no-ops such as Dropout).
    ERF: y = erf(x) (ONNX Erf); only as part of GELU (recognize_gelu), refused otherwise.
    SQRT: y = sqrt(x) (ONNX Sqrt, Pow(x, 0.5)); only inside a decomposed layer norm, which
        `recognize_layer_norm` folds into LAYER_NORM; one left over is refused.
    """

    BATCH_NORM = 1001
    IDENTITY = 1002
    ERF = 1003
    SQRT = 1010


AnyOp = OpType | InternalOp


class Activation(enum.IntEnum):
    """Fused activation ids (FORMAT.md, `tether_activation`)."""

    NONE = 0
    RELU = 1
    RELU6 = 2
    RELU_N1_TO_1 = 3
    TANH = 4
    SIGMOID = 5
    HARD_SWISH = 6


class DType(enum.IntEnum):
    """Element type ids (FORMAT.md, `tether_dtype`)."""

    FLOAT32 = 0
    INT8 = 1
    UINT8 = 2
    INT32 = 3


DTYPE_NUMPY: Mapping[DType, np.dtype] = {
    DType.FLOAT32: np.dtype("<f4"),
    DType.INT8: np.dtype("i1"),
    DType.UINT8: np.dtype("u1"),
    DType.INT32: np.dtype("<i4"),
}

DTYPE_SIZE: Mapping[DType, int] = {d: DTYPE_NUMPY[d].itemsize for d in DType}


class AttrId(enum.IntEnum):
    """Attribute ids of the op table (FORMAT.md, "attributes" column)."""

    STRIDES = 1
    DILATIONS = 2
    PADS = 3
    GROUPS = 4
    DEPTH_MULTIPLIER = 5
    KERNEL = 6
    COUNT_INCLUDE_PAD = 7
    AXES = 8
    KEEPDIMS = 9
    AXIS = 10
    PADDINGS = 11
    VALUE = 12
    BETA = 13
    PERM = 14
    MIN = 15
    MAX = 16
    ALPHA = 17
    OFFSET = 18
    SIZE = 19
    BEGIN = 20
    STEPS = 21
    INTERPOLATION = 22
    COORDINATE_MODE = 23
    NEAREST_MODE = 24
    SCALES = 25
    EPSILON = 26
    ADJOINT = 27
    APPROXIMATE = 28
    MODE = 29


class AttrType(enum.IntEnum):
    """Value type of an attribute record (`tmodel_attr.type`)."""

    INT32 = 1
    FLOAT32 = 2


@dataclass(frozen=True)
class AttrSpec:
    """One attribute: file id, value type and default (None = required).

    Attributes:
        id: the `AttrId`.
        type: the `AttrType` of its values.
        default: the value a reader assumes when the attribute is missing; None when the
            attribute is required.
    """

    id: AttrId
    type: AttrType
    default: tuple[int, ...] | tuple[float, ...] | None


# IR attributes are keyed by these names; values are tuples of int or float.
ATTRS: Mapping[str, AttrSpec] = {
    "strides": AttrSpec(AttrId.STRIDES, AttrType.INT32, (1, 1)),
    "dilations": AttrSpec(AttrId.DILATIONS, AttrType.INT32, (1, 1)),
    "pads": AttrSpec(AttrId.PADS, AttrType.INT32, (0, 0, 0, 0)),
    "groups": AttrSpec(AttrId.GROUPS, AttrType.INT32, (1,)),
    "depth_multiplier": AttrSpec(AttrId.DEPTH_MULTIPLIER, AttrType.INT32, (1,)),
    "kernel": AttrSpec(AttrId.KERNEL, AttrType.INT32, None),
    "count_include_pad": AttrSpec(AttrId.COUNT_INCLUDE_PAD, AttrType.INT32, (0,)),
    "axes": AttrSpec(AttrId.AXES, AttrType.INT32, None),
    "keepdims": AttrSpec(AttrId.KEEPDIMS, AttrType.INT32, (0,)),
    "axis": AttrSpec(AttrId.AXIS, AttrType.INT32, None),
    "paddings": AttrSpec(AttrId.PADDINGS, AttrType.INT32, None),
    "value": AttrSpec(AttrId.VALUE, AttrType.FLOAT32, (0.0,)),
    "beta": AttrSpec(AttrId.BETA, AttrType.FLOAT32, (1.0,)),
    "perm": AttrSpec(AttrId.PERM, AttrType.INT32, None),
    "min": AttrSpec(AttrId.MIN, AttrType.FLOAT32, None),
    "max": AttrSpec(AttrId.MAX, AttrType.FLOAT32, None),
    "alpha": AttrSpec(AttrId.ALPHA, AttrType.FLOAT32, None),
    "offset": AttrSpec(AttrId.OFFSET, AttrType.FLOAT32, None),
    "size": AttrSpec(AttrId.SIZE, AttrType.INT32, None),
    "begin": AttrSpec(AttrId.BEGIN, AttrType.INT32, None),
    "steps": AttrSpec(AttrId.STEPS, AttrType.INT32, (1,)),  # one per axis; (1,): all 1
    "interpolation": AttrSpec(AttrId.INTERPOLATION, AttrType.INT32, (0,)),  # 0 nearest, 1 bilinear
    "coordinate_mode": AttrSpec(AttrId.COORDINATE_MODE, AttrType.INT32, (0,)),  # 0 half_pixel
    "nearest_mode": AttrSpec(AttrId.NEAREST_MODE, AttrType.INT32, (0,)),  # 0 round_prefer_floor
    "scales": AttrSpec(AttrId.SCALES, AttrType.FLOAT32, ()),  # (): OH/H, OW/W from shapes
    "epsilon": AttrSpec(AttrId.EPSILON, AttrType.FLOAT32, (1e-5,)),  # LAYER_/INSTANCE_NORM
    "approximate": AttrSpec(AttrId.APPROXIMATE, AttrType.INT32, (0,)),  # GELU: 0 erf, 1 tanh
    "mode": AttrSpec(AttrId.MODE, AttrType.INT32, (0,)),  # PAD: PAD_MODES
    "adjoint": AttrSpec(AttrId.ADJOINT, AttrType.INT32, (0, 0)),  # BATCH_MATMUL: adj_a, adj_b
}

# PAD's attribute `mode`: its value is the index (FORMAT.md, op 11).
PAD_MODES: tuple[str, ...] = ("constant", "reflect", "edge", "symmetric")

ATTR_NAME_OF_ID: Mapping[AttrId, str] = {spec.id: name for name, spec in ATTRS.items()}

# Standalone activation op -> the fused activation with the same math.
ACTIVATION_OF_OP: Mapping[OpType, Activation] = {
    OpType.RELU: Activation.RELU,
    OpType.RELU6: Activation.RELU6,
    OpType.LOGISTIC: Activation.SIGMOID,
    OpType.TANH: Activation.TANH,
    OpType.HARD_SWISH: Activation.HARD_SWISH,
}


def op_name(op: AnyOp) -> str:
    """Returns the table name of an op id, e.g. "CONV_2D" (internal ops included)."""
    return op.name
