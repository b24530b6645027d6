"""Op ids of the `.tmodel` op table (FORMAT.md, `tether_op`).

Generated from device/runtime/include/tether/tether.h (TETHER_OP_LIST) by
converter/_internal/gen_opcodes.py; do not edit.
"""

from __future__ import annotations

import enum

__all__ = ["OpType"]


class OpType(enum.IntEnum):
    """Op ids of the `.tmodel` op table (FORMAT.md, `tether_op`)."""

    CONV_2D = 1
    DEPTHWISE_CONV_2D = 2
    FULLY_CONNECTED = 3
    ADD = 4
    MUL = 5
    MAX_POOL_2D = 6
    AVERAGE_POOL_2D = 7
    MEAN = 8
    RESHAPE = 9
    CONCATENATION = 10
    PAD = 11
    SOFTMAX = 12
    RELU = 13
    RELU6 = 14
    LOGISTIC = 15
    TANH = 16
    HARD_SWISH = 17
    QUANTIZE = 18
    DEQUANTIZE = 19
    SUB = 20
    DIV = 21
    TRANSPOSE = 22
    CLAMP = 23
    HARD_SIGMOID = 24
    LEAKY_RELU = 25
    ELU = 26
    PRELU = 27
    MAXIMUM = 28
    MINIMUM = 29
    LRN = 30
    SLICE = 31
    RESIZE = 32
    GATHER = 33
    LAYER_NORM = 34
    INSTANCE_NORM = 35
    GELU = 36
    REDUCE_MAX = 37
    BATCH_MATMUL = 38
