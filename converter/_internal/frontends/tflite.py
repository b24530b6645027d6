"""TFLite frontend: `.tflite` flatbuffers (fp32, and the int8 models TensorFlow's converter
writes) -> IR.

The flatbuffer is parsed with the schema module LiteRT ships (`ai_edge_litert.
schema_py_generated`, imported lazily). TFLite is NHWC and its weight layouts are the file
format's ([OC,KH,KW,IC], [1,KH,KW,C*M], [O,K]), so ops map one to one. Quantized tensors keep
TFLite's integers exactly: int8 data, int32 biases, scales and zero points as stored.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.frontends.keras import same_padding
from tether.converter._internal.frontends.onnx import depth_space_steps
from tether.converter._internal.ops import (PAD_MODES, Activation, AnyOp, DType, InternalOp,
                                            OpType)

from tether.errors import ConversionError, ModelFormatError

__all__ = ["SUPPORTED_TFLITE_OPS", "from_tflite"]

logger = logging.getLogger(__name__)

# TFLite TensorType -> (IR dtype, numpy dtype)
_TYPES: dict[int, tuple[DType, np.dtype]] = {
    0: (DType.FLOAT32, np.dtype("<f4")),
    9: (DType.INT8, np.dtype("i1")),
    3: (DType.UINT8, np.dtype("u1")),
    2: (DType.INT32, np.dtype("<i4")),
}
_RAW_TYPES: dict[int, np.dtype] = {**{k: v[1] for k, v in _TYPES.items()},
                                   4: np.dtype("<i8")}
# TFLite ActivationFunctionType -> IR fused activation
_ACTS = {0: Activation.NONE, 1: Activation.RELU, 2: Activation.RELU_N1_TO_1,
         3: Activation.RELU6, 4: Activation.TANH}


class _Fail(Exception):
    pass


def _read(src: Any) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>"
    where = os.fspath(src)
    with open(where, "rb") as f:
        return f.read(), where


def _parse(data: bytes, where: str) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError(f"tflite: {where}: not a TFLite flatbuffer (no 'TFL3' "
                               "identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # noqa: BLE001 - flatbuffers raises assorted errors on bad data
        raise ModelFormatError(f"tflite: {where}: malformed flatbuffer ({type(e).__name__}: "
                               f"{e})") from None
    if not model.subgraphs:
        raise ModelFormatError(f"tflite: {where}: the model has no subgraph")
    return model


def _op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


class _Importer:
    def __init__(self, model: Any, data: bytes, batch_size: int) -> None:
        self.model = model
        self.data = data
        self.batch_size = batch_size
        self.sg = model.subgraphs[0]
        self.graph = ir.GraphBuilder()
        self.tensors = self.graph.tensors
        self.nodes = self.graph.nodes
        self.names: dict[int, str] = {}
        self.named: set[str] = set()  # the values of `names`
        self.op: Any = None
        self.op_name = ""
        self.node_name = ""
        self.folded: dict[int, np.ndarray] = {}  # tensor index -> value computed at import
        # a dilated convolution's batched tensors, held at full resolution (_space_to_batch)
        self.dilated: dict[str, _Dilated] = {}

    def tname(self, i: int) -> str:
        if i not in self.names:
            t = self.sg.tensors[i]
            base = (t.name.decode() if isinstance(t.name, bytes) else t.name) or f"t{i}"
            self.names[i] = ir.unique_name(base, self.tensors, self.named)
            self.named.add(self.names[i])
        return self.names[i]

    def raw(self, i: int) -> np.ndarray | None:
        """The constant value of tensor i, or None if it is computed at run time."""
        if i in self.folded:
            return self.folded[i]
        t = self.sg.tensors[i]
        if t.buffer <= 0 or t.buffer >= len(self.model.buffers):
            return None
        buf = self.model.buffers[t.buffer]
        if buf.data is not None and len(buf.data):
            b = np.asarray(buf.data, np.uint8).tobytes()
        elif buf.offset > 1 and buf.size:
            if buf.offset + buf.size > len(self.data):
                raise ModelFormatError(f"tflite: buffer {t.buffer} of tensor '{self.tname(i)}' "
                                       "lies outside the file")
            b = self.data[buf.offset:buf.offset + buf.size]
        else:
            return None
        dt = _RAW_TYPES.get(t.type)
        if dt is None:
            raise _Fail(f"tensor '{self.tname(i)}' has unsupported TFLite type {t.type}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        if len(b) != math.prod(shape) * dt.itemsize:
            raise ModelFormatError(f"tflite: tensor '{self.tname(i)}': buffer of {len(b)} bytes "
                                   f"does not hold shape {list(shape)} of {dt}")
        return np.frombuffer(b, dt).reshape(shape)

    def quant(self, i: int) -> ir.Quantization | None:
        q = self.sg.tensors[i].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        scale = tuple(float(s) for s in q.scale)
        zp = tuple(int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [0] * len(scale)))
        axis = int(q.quantizedDimension) if len(scale) > 1 else None
        return ir.Quantization(scale, zp, axis)

    def dtype(self, i: int) -> DType:
        t = self.sg.tensors[i]
        if t.type not in _TYPES:
            raise _Fail(f"tensor '{self.tname(i)}' has unsupported TFLite type {t.type}")
        return _TYPES[t.type][0]

    def inp(self, k: int) -> str | None:
        """IR name of input slot k of the current op (constants materialized)."""
        ins = self.op.inputs if self.op.inputs is not None else []
        if k >= len(ins) or ins[k] < 0:
            return None
        i = int(ins[k])
        name = self.tname(i)
        if name in self.dilated and self.op_name not in self.dilated[name].readers():
            raise _Fail(f"input {k} '{name}' is SPACE_TO_BATCH_ND's batched tensor; only a "
                        "dilated convolution (SPACE_TO_BATCH_ND, CONV_2D or DEPTHWISE_CONV_2D, "
                        "BATCH_TO_SPACE_ND; reshapes of unit axes between) may read it")
        if name not in self.tensors:
            value = self.raw(i)
            if value is None:
                raise _Fail(f"input {k} '{name}' is used before it is computed")
            dt = self.dtype(i)
            self.tensors[name] = ir.Tensor(name, value.shape, dt, value, self.quant(i))
        return name

    def const(self, k: int, what: str) -> np.ndarray:
        ins = self.op.inputs
        if k >= len(ins) or ins[k] < 0:
            raise _Fail(f"input {k} ({what}) is missing")
        v = self.raw(int(ins[k]))
        if v is None:
            raise _Fail(f"input {k} ({what}) must be a constant")
        return v

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def emit(self, op: AnyOp, inputs: Sequence[str | None], attrs: dict | None = None,
             act: int = 0, declared: tuple[int, ...] | None = None, output: int | None = None,
             out_name: str | None = None) -> None:
        """Emits `op` writing the op's only output (or its output slot `output`; or, with
        `out_name`, an intermediate tensor of that name)."""
        if act not in _ACTS:
            raise _Fail(f"fused activation {act} is not supported")
        if output is not None:
            out_i = int(self.op.outputs[output])
        else:
            (out_i,) = [int(o) for o in self.op.outputs] if len(self.op.outputs) == 1 else (-1,)
        if out_i < 0:
            raise _Fail(f"{len(self.op.outputs)} outputs; expected one")
        if out_name is not None:
            x = self.tensors[inputs[0]] if inputs[0] is not None else None
            try:
                self.graph.emit(op, self.node_name, inputs, out_name, attrs=attrs,
                                declared=declared, dtype=x.dtype if x else DType.FLOAT32,
                                quant=x.quant if x else None, exact_name=True)
            except ir.ShapeError as e:
                raise _Fail(f"{op.name}: {e}") from None
            return
        try:
            self.graph.emit(op, self.node_name, inputs, self.tname(out_i), attrs=attrs,
                            activation=_ACTS[act], declared=declared, dtype=self.dtype(out_i),
                            quant=self.quant(out_i), exact_name=True)
        except ir.ShapeError as e:
            raise _Fail(f"{op.name}: {e}") from None


OpFn = Callable[[_Importer], None]


def _pads(im: _Importer, padding: int, x: tuple[int, ...], k: tuple[int, int],
          s: tuple[int, int], d: tuple[int, int]) -> tuple[int, int, int, int]:
    if padding == 1:  # VALID
        return (0, 0, 0, 0)
    if padding == 0:  # SAME
        pt, pb = same_padding(x[1], k[0], s[0], d[0])
        pl, pr = same_padding(x[2], k[1], s[1], d[1])
        return (pt, pl, pb, pr)
    raise _Fail(f"option padding={padding} is not supported")


def _conv(op: OpType) -> OpFn:
    def convert(im: _Importer) -> None:
        o = im.op.builtinOptions
        x, w, b = im.inp(0), im.inp(1), im.inp(2)
        assert x is not None and w is not None
        ws = im.shape(w)
        s, d = (o.strideH, o.strideW), (o.dilationHFactor, o.dilationWFactor)
        spaced = im.dilated.get(x)
        if spaced is not None:  # SPACE_TO_BATCH_ND before: the dilated convolution
            if s != (1, 1) or d != (1, 1) or o.padding != 1:
                raise _Fail(f"a convolution after SPACE_TO_BATCH_ND needs strides 1, "
                            f"dilations 1 and VALID padding (got {s}, {d}, {o.padding})")
            d = (spaced.block.get(1, 1), spaced.block.get(2, 1))
            (pt, pb), (pl, pr) = spaced.pads.get(1, (0, 0)), spaced.pads.get(2, (0, 0))
            pads = (pt, pl, pb, pr)
        else:
            pads = _pads(im, o.padding, im.shape(x), (ws[1], ws[2]), s, d)
        attrs: dict[str, tuple] = {"strides": s, "dilations": d, "pads": pads}
        if op == OpType.CONV_2D:
            if ws[3] < 1 or im.shape(x)[3] % ws[3]:
                raise _Fail(f"filter {list(ws)} does not fit input {list(im.shape(x))}")
            attrs["groups"] = (im.shape(x)[3] // ws[3],)
        else:
            attrs["depth_multiplier"] = (ws[3] // im.shape(x)[3],)
        im.emit(op, [x, w, b], attrs, o.fusedActivationFunction)
        if spaced is not None:
            im.dilated[im.node_name] = _Dilated({1: d[0], 2: d[1]}, {}, True, im.node_name,
                                                {a: a for a in range(4)})

    return convert


def _fc(im: _Importer) -> None:
    o = im.op.builtinOptions
    x, w, b = im.inp(0), im.inp(1), im.inp(2)
    assert x is not None and w is not None
    if o is not None and o.weightsFormat != 0:
        raise _Fail(f"option weightsFormat={o.weightsFormat} is not supported")
    k = im.shape(w)[1]
    xs = im.shape(x)
    keep = bool(o.keepNumDims) if o is not None else False
    if not keep and len(xs) != 2:  # TFLite flattens the input to [-1, K]
        rows = math.prod(xs) // k
        flat = f"{x}/flat"
        node = ir.Node(OpType.RESHAPE, im.node_name, (x,), (flat,))
        im.tensors[flat] = ir.Tensor(flat, (rows, k), im.tensors[x].dtype, None,
                                     im.tensors[x].quant)
        im.nodes.append(node)
        x = flat
    im.emit(OpType.FULLY_CONNECTED, [x, w, b], act=o.fusedActivationFunction if o else 0)


def _batch_matmul(im: _Importer) -> None:
    """BATCH_MATMUL (BatchMatMulOptions adj_x, adj_y): float32, or int8 (both operands and
    the output int8 per tensor, the stored integers and quantization)."""
    if len({im.dtype(im.op.inputs[0]), im.dtype(im.op.inputs[1])}) != 1:
        raise _Fail("BATCH_MATMUL of a float and an int8 operand (hybrid) is not supported; "
                    "quantize both operands (full-integer quantization) or neither")
    o = im.op.builtinOptions
    adj = (int(bool(o.adjX)), int(bool(o.adjY))) if o is not None else (0, 0)
    im.emit(OpType.BATCH_MATMUL, [im.inp(0), im.inp(1)], {"adjoint": adj})


def _pool(op: OpType) -> OpFn:
    def convert(im: _Importer) -> None:
        o = im.op.builtinOptions
        x = im.inp(0)
        assert x is not None
        k, s = (o.filterHeight, o.filterWidth), (o.strideH, o.strideW)
        attrs: dict[str, tuple] = {"kernel": k, "strides": s,
                                   "pads": _pads(im, o.padding, im.shape(x), k, s, (1, 1))}
        if op == OpType.AVERAGE_POOL_2D:
            attrs["count_include_pad"] = (0,)
        im.emit(op, [x], attrs, o.fusedActivationFunction)

    return convert


def _resize(bilinear: bool) -> OpFn:
    """RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR (align_corners, half_pixel_centers) -> RESIZE."""
    def convert(im: _Importer) -> None:
        o = im.op.builtinOptions
        x = im.inp(0)
        assert x is not None
        size = [int(v) for v in im.const(1, "size").reshape(-1)]
        xs = im.shape(x)
        if len(xs) != 4 or len(size) != 2 or min(size) < 1:
            raise _Fail(f"needs a 4-D NHWC input and a size of two values >= 1, got input "
                        f"{list(xs)} and size {size}")
        align = bool(getattr(o, "alignCorners", False)) if o is not None else False
        half = bool(getattr(o, "halfPixelCenters", False)) if o is not None else False
        if align and half:
            raise _Fail("align_corners and half_pixel_centers are both set; TFLite allows one")
        if bilinear:  # TFLite's (i + 0.5) * in/out - 0.5, i * (in-1)/(out-1) or i * in/out
            attrs = {"interpolation": (1,), "coordinate_mode": (0 if half else 2 if align else 3,)}
        elif align:  # round((i) * (in-1)/(out-1)), halves away from zero
            attrs = {"interpolation": (0,), "coordinate_mode": (2,), "nearest_mode": (1,)}
        else:  # floor((i + 0.5) * in/out) or floor(i * in/out)
            attrs = {"interpolation": (0,), "coordinate_mode": (4 if half else 3,),
                     "nearest_mode": (2,)}
        im.emit(OpType.RESIZE, [x], attrs, declared=(xs[0], size[0], size[1], xs[3]))

    return convert


def _binary(op: OpType) -> OpFn:
    def convert(im: _Importer) -> None:
        o = im.op.builtinOptions
        act = getattr(o, "fusedActivationFunction", 0) if o is not None else 0
        im.emit(op, [im.inp(0), im.inp(1)], act=act)

    return convert


def _unary(op: OpType) -> OpFn:
    def convert(im: _Importer) -> None:
        im.emit(op, [im.inp(0)])

    return convert


def _alpha_op(op: OpType) -> OpFn:
    """ELU, LEAKY_RELU (alpha from LeakyReluOptions), PRELU (x, slope); float32 or int8 (the
    stored integers and quantization, PRELU's slope an int8 tensor of its own)."""
    def convert(im: _Importer) -> None:
        if op == OpType.PRELU:
            im.emit(op, [im.inp(0), im.inp(1)])
        elif op == OpType.LEAKY_RELU:
            o = im.op.builtinOptions
            im.emit(op, [im.inp(0)], {"alpha": (float(o.alpha) if o is not None else 0.2,)})
        else:  # TFLite's ELU has no alpha: 1
            im.emit(op, [im.inp(0)], {"alpha": (1.0,)})

    return convert


def _expand_dims(im: _Importer) -> None:
    """EXPAND_DIMS (Conv1D's [N, W, C] -> [N, 1, W, C]): a RESHAPE."""
    x = im.inp(0)
    assert x is not None
    if x in im.dilated:
        _reshape_dilated(im, x)
        return
    xs = list(im.shape(x))
    axis = int(im.const(1, "axis").reshape(-1)[0])
    axis = axis + len(xs) + 1 if axis < 0 else axis
    if not 0 <= axis <= len(xs):
        raise _Fail(f"axis {axis} out of range for input {xs}")
    im.emit(OpType.RESHAPE, [x], declared=tuple(xs[:axis] + [1] + xs[axis:]))


def _softmax(im: _Importer) -> None:
    o = im.op.builtinOptions
    im.emit(OpType.SOFTMAX, [im.inp(0)], {"beta": (float(o.beta) if o else 1.0,)})


def _reshape(im: _Importer) -> None:
    x = im.inp(0)
    assert x is not None
    if x in im.dilated:
        _reshape_dilated(im, x)
        return
    out_i = int(im.op.outputs[0])
    t = im.sg.tensors[out_i]
    shape = [int(v) for v in (t.shape if t.shape is not None else [])]
    if len(im.op.inputs) > 1 and im.op.inputs[1] >= 0:
        shape = [int(v) for v in im.const(1, "shape").reshape(-1)]
    elif im.op.builtinOptions is not None and im.op.builtinOptions.newShape is not None:
        shape = [int(v) for v in im.op.builtinOptions.newShape]
    total = math.prod(im.shape(x))
    if shape.count(-1) == 1:
        known = math.prod(v for v in shape if v != -1)
        shape[shape.index(-1)] = total // max(known, 1)
    elif shape and math.prod(shape) != total and shape[0] != im.batch_size:
        shape[0] = total // max(math.prod(shape[1:]), 1)
    im.emit(OpType.RESHAPE, [x], declared=tuple(shape))


def _squeeze(im: _Importer) -> None:
    x = im.inp(0)
    assert x is not None
    if x in im.dilated:
        _reshape_dilated(im, x)
        return
    xs = im.shape(x)
    dims = im.op.builtinOptions.squeezeDims if im.op.builtinOptions is not None else None
    axes = ([a % len(xs) for a in dims] if dims is not None and len(dims)
            else [i for i, d in enumerate(xs) if d == 1])
    im.emit(OpType.RESHAPE, [x], declared=tuple(d for i, d in enumerate(xs) if i not in axes))


def _mean(im: _Importer) -> None:
    x = im.inp(0)
    assert x is not None
    r = len(im.shape(x))
    axes = tuple(sorted({int(a) % r for a in im.const(1, "axes").reshape(-1)}))
    keep = int(bool(im.op.builtinOptions.keepDims)) if im.op.builtinOptions else 0
    im.emit(OpType.MEAN, [x], {"axes": axes, "keepdims": (keep,)})


def _reduce_max(im: _Importer) -> None:
    x = im.inp(0)
    assert x is not None
    r = len(im.shape(x))
    axes = tuple(sorted({int(a) % r for a in im.const(1, "axes").reshape(-1)}))
    keep = int(bool(im.op.builtinOptions.keepDims)) if im.op.builtinOptions else 0
    im.emit(OpType.REDUCE_MAX, [x], {"axes": axes, "keepdims": (keep,)})


def _gelu(im: _Importer) -> None:
    o = im.op.builtinOptions
    approximate = int(bool(o.approximate)) if o is not None else 0
    im.emit(OpType.GELU, [im.inp(0)], {"approximate": (approximate,)})


def _float_arith(kind: str) -> OpFn:
    """NEG (x * -1), SQUARED_DIFFERENCE ((a - b) * (a - b)) and RSQRT (1 / SQRT(x)): the
    pieces of the layer norm TensorFlow writes for Keras's LayerNormalization, which
    recognize_layer_norm folds back into one LAYER_NORM (SQRT has no op of its own)."""
    def convert(im: _Importer) -> None:
        x = im.inp(0)
        assert x is not None
        if im.tensors[x].dtype != DType.FLOAT32:
            raise _Fail(f"int8 {im.op_name} is not supported (float32 only)")
        base = im.node_name
        if kind == "NEG":
            im.emit(OpType.MUL, [x, im.graph.const(f"{base}/minus_one", np.float32(-1.0))])
        elif kind == "SQUARED_DIFFERENCE":
            im.emit(OpType.SUB, [x, im.inp(1)], out_name=f"{base}/difference")
            im.emit(OpType.MUL, [f"{base}/difference", f"{base}/difference"])
        else:  # RSQRT
            im.emit(InternalOp.SQRT, [x], out_name=f"{base}/sqrt")
            im.emit(OpType.DIV, [im.graph.const(f"{base}/one", np.float32(1.0)), f"{base}/sqrt"])

    return convert


def _concat(im: _Importer) -> None:
    o = im.op.builtinOptions
    ins = [im.inp(k) for k in range(len(im.op.inputs))]
    r = len(im.shape(ins[0]))  # type: ignore[arg-type]
    im.emit(OpType.CONCATENATION, ins, {"axis": (int(o.axis) % r,)},
            o.fusedActivationFunction)


def _pad(im: _Importer) -> None:
    x = im.inp(0)
    p = im.const(1, "paddings").reshape(-1)
    value = 0.0
    if len(im.op.inputs) > 2 and im.op.inputs[2] >= 0:
        v = im.const(2, "constant_values").reshape(-1)
        if im.tensors[x].dtype != DType.FLOAT32:  # type: ignore[index]
            # the real value of the int8 pad constant (the engine quantizes it back exactly)
            q = im.tensors[x].quant  # type: ignore[index]
            if q is None or len(q.scale) != 1:
                raise _Fail("padding an int8 tensor needs per-tensor quantization")
            vq = im.quant(int(im.op.inputs[2]))
            if vq is not None and (vq.scale[0] != q.scale[0] or vq.zero_point[0] !=
                                   q.zero_point[0]):
                raise _Fail("the int8 pad constant is quantized unlike the input")
            value = q.scale[0] * (int(v[0]) - q.zero_point[0])
        else:
            value = float(v[0])
    im.emit(OpType.PAD, [x], {"paddings": tuple(int(v) for v in p), "value": (value,)})


def _mirror_pad(im: _Importer) -> None:
    x = im.inp(0)
    p = tuple(int(v) for v in im.const(1, "paddings").reshape(-1))
    o = im.op.builtinOptions
    tfl_mode = int(o.mode) if o is not None else 0  # MirrorPadMode: 0 REFLECT, 1 SYMMETRIC
    if tfl_mode not in (0, 1):
        raise _Fail(f"option mode={tfl_mode} is not supported (0 REFLECT, 1 SYMMETRIC)")
    mode = PAD_MODES.index("reflect" if tfl_mode == 0 else "symmetric")
    im.emit(OpType.PAD, [x], {"paddings": p, "mode": (mode,)})


def _gather(im: _Importer) -> None:
    o = im.op.builtinOptions
    x = im.inp(0)
    assert x is not None
    r = len(im.shape(x))
    axis = int(o.axis) if o is not None else 0
    if o is not None and int(getattr(o, "batchDims", 0)):
        raise _Fail(f"batch_dims={int(o.batchDims)} is not supported; only 0")
    if not -r <= axis < r:
        raise _Fail(f"axis={axis} is outside [{-r}, {r - 1}] for params of rank {r}")
    axis %= r
    size = im.shape(x)[axis]
    ids_i = int(im.op.inputs[1])
    value = im.raw(ids_i)
    if value is not None:  # constant indices: checked and stored as int32
        v = np.asarray(value, np.int64)
        bad = np.flatnonzero((v.reshape(-1) < -size) | (v.reshape(-1) >= size))
        if bad.size:
            raise _Fail(f"index {int(v.reshape(-1)[bad[0]])} is outside [0, {size - 1}] "
                        f"(axis {axis}, size {size})")
        v = np.where(v < 0, v + size, v).astype(np.int32)  # a 0-d index stays 0-d
        ids = im.graph.add(ir.Tensor(im.graph.unique(im.tname(ids_i)), v.shape, DType.INT32, v))
    else:
        ids = im.inp(1)
        assert ids is not None
        if im.tensors[ids].dtype != DType.INT32:
            raise _Fail(f"indices '{ids}' are {im.tensors[ids].dtype.name.lower()}; expected "
                        "int32")
    im.emit(OpType.GATHER, [x, ids], {"axis": (axis,)})


@dataclass(frozen=True)
class _Dilated:
    """A tensor of TensorFlow's dilated-convolution pattern, SPACE_TO_BATCH_ND -> conv ->
    BATCH_TO_SPACE_ND (its tf.nn.with_space_to_batch), kept at full resolution: the batch
    holds the input's `block` phases, which a convolution with dilations = block computes
    in one pass over the unbatched tensor.

    Attributes:
        block: the block size of each spatial axis of this tensor (axis -> size).
        pads: before the convolution, the padding SPACE_TO_BATCH_ND adds per spatial axis.
        convolved: whether the convolution has run (BATCH_TO_SPACE_ND reads it next).
        source: after it, the convolution's output, which BATCH_TO_SPACE_ND crops (so that
            the crop can fold into its padding, passes.fold_pad) ...
        axes: ... and this tensor's axes there (a reshape of unit axes may lie between).
    """

    block: dict[int, int]
    pads: dict[int, tuple[int, int]]
    convolved: bool
    source: str = ""
    axes: dict[int, int] = field(default_factory=dict)

    def readers(self) -> tuple[str, ...]:
        return ("BATCH_TO_SPACE_ND",) + _UNIT_RESHAPES if self.convolved else \
            ("CONV_2D", "DEPTHWISE_CONV_2D") + _UNIT_RESHAPES


_UNIT_RESHAPES = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")


def _space_to_batch(im: _Importer) -> None:
    """SPACE_TO_BATCH_ND: an IDENTITY of x, remembered as the batched tensor (_Dilated)."""
    x = im.inp(0)
    assert x is not None
    block = [int(v) for v in im.const(1, "block_shape").reshape(-1)]
    pads = im.const(2, "paddings").reshape(-1, 2)
    xs = im.shape(x)
    if not 1 <= len(block) <= len(xs) - 2 or len(pads) != len(block) or min(block) < 1 \
            or pads.min() < 0:
        raise _Fail(f"block_shape {block} and paddings {pads.tolist()} do not fit input "
                    f"{list(xs)}")
    im.emit(InternalOp.IDENTITY, [x], declared=xs)
    im.dilated[im.node_name] = _Dilated(
        {1 + k: b for k, b in enumerate(block)},
        {1 + k: (int(p[0]), int(p[1])) for k, p in enumerate(pads)}, False)


def _batch_to_space(im: _Importer) -> None:
    """BATCH_TO_SPACE_ND after the dilated convolution: its crops as a SLICE (a trailing
    crop of a stride-1 convolution folds into its padding, passes.fold_crops)."""
    y = im.inp(0)
    assert y is not None
    if y not in im.dilated:
        raise _Fail("BATCH_TO_SPACE_ND is supported only as the end of a dilated convolution "
                    "(SPACE_TO_BATCH_ND, CONV_2D or DEPTHWISE_CONV_2D, BATCH_TO_SPACE_ND)")
    d = im.dilated[y]
    block = [int(v) for v in im.const(1, "block_shape").reshape(-1)]
    crops = [(int(a), int(b)) for a, b in im.const(2, "crops").reshape(-1, 2)]
    if {1 + k: b for k, b in enumerate(block) if b > 1} != \
            {k: b for k, b in d.block.items() if b > 1} or len(crops) != len(block):
        raise _Fail(f"block_shape {block} is not SPACE_TO_BATCH_ND's "
                    f"({[d.block.get(1 + k, 1) for k in range(len(block))]})")
    ys, src = im.shape(y), im.shape(d.source)
    cropped = list(ys)
    begin, counts = [0] * len(src), list(src)
    for k, (lo, hi) in enumerate(crops):
        cropped[1 + k] -= lo + hi
        a = d.axes.get(1 + k)
        if a is None or min(lo, hi) < 0 or cropped[1 + k] < 1:
            raise _Fail(f"crops {crops} do not fit the convolution's output {list(ys)}")
        begin[a], counts[a] = lo, src[a] - lo - hi
    if counts == list(src):
        im.emit(InternalOp.IDENTITY, [y], declared=ys)
    elif tuple(src) == tuple(ys):
        _slice_of(im, d.source, begin, [1] * len(src), counts)
    else:  # crop the convolution's output, then the reshape again
        inner = f"{im.node_name}/crop"
        _slice_of(im, d.source, begin, [1] * len(src), counts, out_name=inner)
        im.emit(OpType.RESHAPE, [inner], declared=tuple(cropped))


def _reshape_dilated(im: _Importer, x: str) -> None:
    """A reshape inside the dilated pattern that inserts or removes unit axes (Conv1D's
    EXPAND_DIMS before the convolution and RESHAPE after it), applied at full resolution:
    the op's batched shapes (from the file) say which axes it keeps."""
    d = im.dilated[x]
    shape_in = [int(v) for v in im.sg.tensors[int(im.op.inputs[0])].shape]
    shape_out = [int(v) for v in im.sg.tensors[int(im.op.outputs[0])].shape]
    kept_in = [k for k in range(1, len(shape_in)) if shape_in[k] != 1]
    kept_out = [k for k in range(1, len(shape_out)) if shape_out[k] != 1]
    if [shape_in[k] for k in kept_in] != [shape_out[k] for k in kept_out] \
            or any(k not in kept_in for k in d.block if d.block[k] > 1):
        raise _Fail(f"reshape {shape_in} -> {shape_out} inside a dilated convolution "
                    "changes more than unit axes")
    axis = dict(zip(kept_in, kept_out))
    axis[0] = 0
    xs = im.shape(x)
    target = [1] * len(shape_out)
    for a, b in axis.items():
        target[b] = xs[a]
    im.emit(OpType.RESHAPE, [x], declared=tuple(target))
    im.dilated[im.node_name] = _Dilated(
        {axis[a]: b for a, b in d.block.items() if b > 1},
        {axis[a]: p for a, p in d.pads.items() if a in axis}, d.convolved, d.source,
        {axis[a]: s for a, s in d.axes.items() if a in axis})


def _depth_space(to_space: bool) -> OpFn:
    """DEPTH_TO_SPACE / SPACE_TO_DEPTH (NHWC, channels split as (row, column, channel)) as
    RESHAPE -> 6-D TRANSPOSE -> RESHAPE, as the ONNX frontend lowers DepthToSpace."""

    def convert(im: _Importer) -> None:
        x = im.inp(0)
        assert x is not None
        shape = im.shape(x)
        o = im.op.builtinOptions
        b = int(o.blockSize) if o is not None else 0
        if len(shape) != 4:
            raise _Fail(f"input '{x}' has shape {list(shape)}; expected 4-D NHWC")
        n, hh, ww, c = shape
        if b < 1 or (to_space and c % (b * b)) or (not to_space and (hh % b or ww % b)):
            raise _Fail(f"block_size={b} must be >= 1 and divide "
                        + (f"channels {c} by block_size²" if to_space
                           else f"height {hh} and width {ww}"))
        shape6, perm, out = depth_space_steps(shape, b, "DCR" if to_space else "S2D")
        base = im.node_name
        r6 = im.graph.unique(f"{base}/6d")
        im.emit(OpType.RESHAPE, [x], declared=shape6, out_name=r6)
        t6 = im.graph.unique(f"{base}/shuffled")
        im.emit(OpType.TRANSPOSE, [r6], {"perm": perm}, out_name=t6)
        im.emit(OpType.RESHAPE, [t6], declared=out)

    return convert


def _transpose(im: _Importer) -> None:
    im.emit(OpType.TRANSPOSE, [im.inp(0)],
            {"perm": tuple(int(v) for v in im.const(1, "perm").reshape(-1))})


def _slice_of(im: _Importer, x: str, begin: Sequence[int], steps: Sequence[int],
              counts: Sequence[int], output: int = 0, out_name: str | None = None) -> None:
    if any(c <= 0 for c in counts):
        raise _Fail(f"the slice of shape {list(im.shape(x))} is empty (counts {list(counts)})")
    im.emit(OpType.SLICE, [x], {"begin": tuple(int(b) for b in begin),
                                "steps": tuple(int(s) for s in steps)},
            declared=tuple(int(c) for c in counts), output=output, out_name=out_name)


def _slice(im: _Importer) -> None:
    x = im.inp(0)
    assert x is not None
    xs = im.shape(x)
    begin = [int(v) for v in im.const(1, "begin").reshape(-1)]
    size = [int(v) for v in im.const(2, "size").reshape(-1)]
    if len(begin) != len(xs) or len(size) != len(xs):
        raise _Fail(f"begin {begin} and size {size} need one value per axis of {list(xs)}")
    _slice_of(im, x, begin, [1] * len(xs),
              [d - b if s == -1 else s for d, b, s in zip(xs, begin, size)])


def _strided_slice_op(im: _Importer) -> None:
    x = im.inp(0)
    assert x is not None
    xs = im.shape(x)
    o = im.op.builtinOptions
    if o is not None and (o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False)):
        raise _Fail("STRIDED_SLICE with ellipsis/new-axis masks or offset is not supported")
    begin, end, strides = (im.const(k, w).reshape(-1) for k, w in
                           ((1, "begin"), (2, "end"), (3, "strides")))
    bm, em, sm = (o.beginMask, o.endMask, o.shrinkAxisMask) if o is not None else (0, 0, 0)
    b_out, s_out, counts = [0] * len(xs), [1] * len(xs), list(xs)
    for k in range(len(begin)):
        st = int(strides[k])
        if st == 0:
            raise _Fail(f"stride 0 on axis {k}")
        b = None if bm >> k & 1 else int(begin[k])
        e = None if em >> k & 1 or sm >> k & 1 else int(end[k])
        kept = range(xs[k])[b:e:st]  # clamped as TFLite clamps
        b_out[k], s_out[k] = kept.start, st
        counts[k] = 1 if sm >> k & 1 else len(kept)
    if not sm:
        _slice_of(im, x, b_out, s_out, counts)
        return
    inner = f"{im.node_name}/slice"  # then the shrunk axes dropped
    _slice_of(im, x, b_out, s_out, counts, out_name=inner)
    im.emit(OpType.RESHAPE, [inner], declared=tuple(c for k, c in enumerate(counts)
                                                    if not sm >> k & 1))


def _split(im: _Importer) -> None:
    # SPLIT: (axis, x), equal parts; SPLIT_V: (x, size_splits, axis)
    v = im.op_name == "SPLIT_V"
    x = im.inp(0 if v else 1)
    assert x is not None
    xs = im.shape(x)
    axis = int(im.const(2 if v else 0, "axis").reshape(-1)[0]) % len(xs)
    parts = len(im.op.outputs)
    if v:
        sizes = [int(s) for s in im.const(1, "size_splits").reshape(-1)]
        if sizes.count(-1) == 1:
            sizes[sizes.index(-1)] = xs[axis] - (sum(sizes) + 1)
    else:
        if xs[axis] % parts:
            raise _Fail(f"axis {axis} of size {xs[axis]} does not split into {parts} parts")
        sizes = [xs[axis] // parts] * parts
    if len(sizes) != parts or sum(sizes) != xs[axis]:
        raise _Fail(f"split sizes {sizes} do not cover axis {axis} of size {xs[axis]}")
    start = 0
    for i, size in enumerate(sizes):
        begin, counts = [0] * len(xs), list(xs)
        begin[axis], counts[axis] = start, size
        _slice_of(im, x, begin, [1] * len(xs), counts, output=i)
        start += size


def _strided_slice(x: np.ndarray, begin: np.ndarray, end: np.ndarray, strides: np.ndarray,
                   o: Any) -> np.ndarray:
    if o is not None and (o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False)):
        raise _Fail("STRIDED_SLICE with ellipsis/new-axis masks or offset is not supported")
    idx: list[Any] = []
    bm, em, sm = (o.beginMask, o.endMask, o.shrinkAxisMask) if o is not None else (0, 0, 0)
    for k in range(len(begin)):
        if sm >> k & 1:
            idx.append(int(begin[k]))
            continue
        b = None if bm >> k & 1 else int(begin[k])
        e = None if em >> k & 1 else int(end[k])
        idx.append(slice(b, e, int(strides[k])))
    return np.asarray(x[tuple(idx)])


def _fold(im: _Importer, name: str) -> bool:
    """Evaluates shape arithmetic (SHAPE, STRIDED_SLICE, PACK, ...) at import; True if done."""
    op = im.op
    ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
    if name == "SHAPE":
        x = im.inp(0)
        assert x is not None
        value = np.asarray(im.shape(x), np.int32)
    else:
        if name not in ("STRIDED_SLICE", "PACK", "CONCATENATION", "CAST", "GATHER", "RESHAPE",
                        "SQUEEZE", "TRANSPOSE", "REDUCE_PROD"):
            return False
        vals = [im.raw(i) if i >= 0 else None for i in ins]
        if not vals or any(v is None for v in vals):
            return False
        o = op.builtinOptions
        if name == "STRIDED_SLICE":
            value = _strided_slice(vals[0], vals[1], vals[2], vals[3], o)  # type: ignore[arg-type]
        elif name == "PACK":
            value = np.stack(vals, axis=int(o.axis) if o is not None else 0)  # type: ignore[arg-type]
        elif name == "CONCATENATION":
            value = np.concatenate(vals, axis=int(o.axis))  # type: ignore[arg-type]
        elif name == "GATHER":
            value = np.take(vals[0], vals[1], axis=int(o.axis) if o is not None else 0)  # type: ignore[arg-type]
        elif name == "TRANSPOSE":
            value = np.transpose(vals[0], vals[1])  # type: ignore[arg-type]
        elif name == "REDUCE_PROD":  # Keras Dense on rank > 2 (Tensordot) multiplies dims
            axes = tuple(int(a) for a in np.asarray(vals[1]).reshape(-1))
            keep = bool(o.keepDims) if o is not None else False
            value = np.prod(vals[0], axis=axes, keepdims=keep)  # type: ignore[arg-type]
        else:  # CAST, RESHAPE, SQUEEZE: the declared output shape and type
            return False
    out = int(op.outputs[0])
    dt = _RAW_TYPES.get(im.sg.tensors[out].type)
    if dt is None:
        raise _Fail(f"output type {im.sg.tensors[out].type} is not supported")
    declared = tuple(int(d) for d in (im.sg.tensors[out].shape if im.sg.tensors[out].shape
                                      is not None else ()))
    if math.prod(declared) == value.size:  # e.g. a shrunk slice stored as a scalar
        value = value.reshape(declared)
    im.folded[out] = np.array(value, dtype=dt, order="C")  # (ascontiguousarray makes 0-d 1-d)
    return True


_OPS: dict[str, OpFn] = {
    "CONV_2D": _conv(OpType.CONV_2D),
    "DEPTHWISE_CONV_2D": _conv(OpType.DEPTHWISE_CONV_2D),
    "FULLY_CONNECTED": _fc,
    "BATCH_MATMUL": _batch_matmul,
    "ADD": _binary(OpType.ADD),
    "SUB": _binary(OpType.SUB),
    "MUL": _binary(OpType.MUL),
    "DIV": _binary(OpType.DIV),
    "MAXIMUM": _binary(OpType.MAXIMUM),
    "MINIMUM": _binary(OpType.MINIMUM),
    "MAX_POOL_2D": _pool(OpType.MAX_POOL_2D),
    "AVERAGE_POOL_2D": _pool(OpType.AVERAGE_POOL_2D),
    "MEAN": _mean,
    "REDUCE_MAX": _reduce_max,
    "GELU": _gelu,
    "RESHAPE": _reshape,
    "SQUEEZE": _squeeze,
    "CONCATENATION": _concat,
    "PAD": _pad,
    "RESIZE_BILINEAR": _resize(True),
    "RESIZE_NEAREST_NEIGHBOR": _resize(False),
    "PADV2": _pad,
    "MIRROR_PAD": _mirror_pad,
    "SOFTMAX": _softmax,
    "RELU": _unary(OpType.RELU),
    "RELU6": _unary(OpType.RELU6),
    "LOGISTIC": _unary(OpType.LOGISTIC),
    "TANH": _unary(OpType.TANH),
    "HARD_SWISH": _unary(OpType.HARD_SWISH),
    "ELU": _alpha_op(OpType.ELU),
    "LEAKY_RELU": _alpha_op(OpType.LEAKY_RELU),
    "PRELU": _alpha_op(OpType.PRELU),
    "EXPAND_DIMS": _expand_dims,
    "QUANTIZE": _unary(OpType.QUANTIZE),
    "DEQUANTIZE": _unary(OpType.DEQUANTIZE),
    "TRANSPOSE": _transpose,
    "GATHER": _gather,
    "DEPTH_TO_SPACE": _depth_space(True),
    "SPACE_TO_DEPTH": _depth_space(False),
    "SLICE": _slice,
    "STRIDED_SLICE": _strided_slice_op,
    "SPLIT": _split,
    "SPLIT_V": _split,
    "SPACE_TO_BATCH_ND": _space_to_batch,
    "NEG": _float_arith("NEG"),
    "SQUARED_DIFFERENCE": _float_arith("SQUARED_DIFFERENCE"),
    "RSQRT": _float_arith("RSQRT"),
    "BATCH_TO_SPACE_ND": _batch_to_space,
}

SUPPORTED_TFLITE_OPS: tuple[str, ...] = tuple(sorted(_OPS))


def from_tflite(src: Any, *, batch_size: int = 1) -> ir.Graph:
    """Converts a TFLite model (path or bytes) to an IR graph.

    Args:
        src: the `.tflite` path or its bytes.
        batch_size: the batch of inputs whose first dimension is dynamic (-1); 1 by default.

    Raises:
        ConversionError: an op, option or tensor type is unsupported (the message names the
            op's output tensor, the op, the value and the frontend).
        ModelFormatError: `src` is not a valid TFLite flatbuffer.
    """
    data, where = _read(src)
    model = _parse(data, where)
    if len(model.subgraphs) != 1:
        raise ConversionError(f"tflite: {where}: {len(model.subgraphs)} subgraphs; only "
                              "single-subgraph models are supported")
    im = _Importer(model, data, batch_size)
    sg = im.sg
    codes = _op_names()
    n_tensors = len(sg.tensors or [])
    inputs: list[str] = []
    for i in sg.inputs if sg.inputs is not None else []:
        if not 0 <= i < n_tensors:
            raise ModelFormatError(f"tflite: {where}: input tensor index {i} out of range")
        t = sg.tensors[i]
        shape = [int(d) for d in t.shape]
        sig = [int(d) for d in t.shapeSignature] if t.shapeSignature is not None else shape
        if sig and sig[0] == -1:
            shape[0] = batch_size
        if any(d == -1 for d in sig[1:]):
            raise ConversionError(f"tflite: input '{im.tname(i)}' has a dynamic dimension "
                                  f"{sig}; convert with a fixed input shape")
        name = im.tname(i)
        try:  # int64 inputs (ids) are recorded as int32, the engine's integer dtype
            dtype = DType.INT32 if t.type == 4 else im.dtype(i)
        except _Fail as e:
            raise ConversionError(f"tflite: input '{name}': {e}") from None
        im.tensors[name] = ir.Tensor(name, tuple(shape), dtype, None, im.quant(i))
        inputs.append(name)
    for idx, op in enumerate(sg.operators or []):
        if not 0 <= op.opcodeIndex < len(model.operatorCodes or []):
            raise ModelFormatError(f"tflite: {where}: operator {idx} has opcode index "
                                   f"{op.opcodeIndex} out of range")
        oc = model.operatorCodes[op.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        name = codes.get(code, f"builtin {code}")
        if name == "CUSTOM":
            cc = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
            name = f"CUSTOM({cc})"
        for t_i in list(op.inputs if op.inputs is not None else []) + list(
                op.outputs if op.outputs is not None else []):
            if t_i >= n_tensors:
                raise ModelFormatError(f"tflite: {where}: operator {idx} ({name}) refers to "
                                       f"tensor {t_i}; the subgraph has {n_tensors}")
        out_name = im.tname(int(op.outputs[0])) if op.outputs is not None and len(op.outputs) \
            else f"op{idx}"
        im.op, im.op_name, im.node_name = op, name, out_name
        try:
            if _fold(im, name):
                continue
            fn = _OPS.get(name)
            if fn is None:
                raise _Fail(f"op {name} is not supported; supported ops: "
                            f"{', '.join(SUPPORTED_TFLITE_OPS)}")
            fn(im)
        except _Fail as e:
            raise ConversionError(f"tflite: node '{out_name}' ({name}): {e}") from None
    outputs: list[str] = []
    for i in sg.outputs if sg.outputs is not None else []:
        name = im.tname(int(i))
        if name not in im.tensors or name in inputs:
            raise ConversionError(f"tflite: output '{name}' is not computed by any op")
        outputs.append(name)
    graph = ir.Graph(im.tensors, tuple(im.nodes), tuple(inputs), tuple(outputs),
                     os.path.basename(where) if where != "<bytes>" else "tflite_model")
    graph = graph.rebuilt(graph.nodes)
    logger.debug("tflite model '%s': %d nodes", graph.name, len(graph.nodes))
    return graph
