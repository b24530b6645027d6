"""ONNX frontend (any opset; below 13 upgraded to 13 first) -> IR, with the NCHW -> NHWC layout handling.

Layout: every ONNX tensor is held in the IR as `(ir_name, perm)` where the IR tensor is the
ONNX tensor transposed by `perm` (`ir = onnx_value.transpose(perm)`). Ops that need channels
last (Conv, pools, BatchNormalization) ask for perm (0, 2, 3, 1) of their 4-D input; element-
wise ops run in whatever layout their first non-constant operand has; an ONNX `Transpose`
only relabels the perm and emits nothing. A `TRANSPOSE` node is emitted only where a layout
must really change (at most once per tensor and layout), so an NCHW graph becomes NHWC once:
at its inputs and outputs, which keep the source's names, shapes and layout.

Nodes whose inputs are all constants are evaluated at import by `onnx.reference` (shape
arithmetic that exporters leave behind); `Shape` of a statically shaped tensor is a constant.

`onnx` is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.frontends.keras import same_padding
from tether.converter._internal.ops import PAD_MODES, AnyOp, DType, InternalOp, OpType

from tether.errors import ConversionError, ModelFormatError

__all__ = ["SUPPORTED_ONNX_OPS", "depth_space_steps", "from_onnx", "load_onnx"]

logger = logging.getLogger(__name__)

Perm = tuple[int, ...]
NHWC: Perm = (0, 2, 3, 1)


def _ident(rank: int) -> Perm:
    return tuple(range(rank))


def _inverse(p: Perm) -> Perm:
    inv = [0] * len(p)
    for k, v in enumerate(p):
        inv[v] = k
    return tuple(inv)


# ops whose int8 output has the input's quantization (FORMAT.md, int8 execution)
_SAME_QUANT = (OpType.TRANSPOSE, OpType.RESHAPE, OpType.MAX_POOL_2D, OpType.PAD,
               OpType.SLICE, OpType.GATHER, OpType.RESIZE, InternalOp.IDENTITY)


class _Fail(Exception):
    """Raised inside an op converter; turned into a ConversionError naming the node."""


def load_onnx(src: Any) -> Any:
    """Returns a ModelProto from a path, bytes or a ModelProto (ModelFormatError if bad)."""
    import onnx

    if isinstance(src, onnx.ModelProto):
        return src
    where = "<bytes>"
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            model = onnx.load_from_string(bytes(src))
        else:
            import os

            where = os.fspath(src)
            with open(where, "rb") as f:
                model = onnx.load_from_string(f.read())
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends
        raise ModelFormatError(f"onnx: {where}: not a valid ONNX model ({e})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelFormatError(f"onnx: {where}: not a valid ONNX model (empty graph)")
    return model


class _Importer:
    def __init__(self, model: Any, batch_size: int) -> None:
        import onnx
        from onnx import numpy_helper

        self.onnx = onnx
        self.numpy_helper = numpy_helper
        self.model = model
        self.batch_size = batch_size
        self.graph = ir.GraphBuilder()
        self.tensors = self.graph.tensors
        self.nodes = self.graph.nodes
        self.values: dict[str, tuple[str, Perm]] = {}   # onnx name -> (ir name, perm)
        self.consts: dict[str, np.ndarray] = {}          # onnx name -> value (any dtype)
        self.shapes: dict[str, tuple[int, ...]] = {}     # onnx name -> logical shape
        self.layouts: dict[tuple[str, Perm], str] = {}   # (onnx name, perm) -> ir name
        self.node: Any = None
        self.qconst: dict[str, tuple[np.ndarray, ir.Quantization]] = {}  # DQ of constants
        self.used: set[str] = set()  # onnx names some node or the graph output reads
        self.legacy_resize: set[str] = set()  # outputs of Upsample / Resize-10 nodes
        self.opset = 13
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = int(imp.version)

    # -- naming and emission

    def unique(self, base: str) -> str:
        return self.graph.unique(base)

    def fail(self, msg: str) -> _Fail:
        return _Fail(msg)

    def emit(self, op: AnyOp, inputs: Sequence[str | None], out_base: str,
             attrs: dict[str, tuple] | None = None,
             declared: tuple[int, ...] | None = None) -> str:
        # Ops that move int8 values keep their input's dtype and quantization.
        x = self.tensors[inputs[0]] if inputs and inputs[0] is not None else None
        same = x is not None and x.dtype != DType.FLOAT32 and op in _SAME_QUANT
        try:
            return self.graph.emit(op, self.node.name or self.node.op_type, inputs, out_base,
                                   attrs=attrs, declared=declared,
                                   dtype=x.dtype if same and x else DType.FLOAT32,
                                   quant=x.quant if same and x else None)
        except ir.ShapeError as e:
            raise _Fail(f"{op.name}: {e}") from None

    def const_ir(self, base: str, value: np.ndarray) -> str:
        return self.graph.const(base, value)

    def int_const(self, base: str, value: np.ndarray, dtype: DType,
                  quant: ir.Quantization | None) -> str:
        return self.graph.const(base, value, dtype, quant)

    def dequantized_const(self, base: str, value: np.ndarray, quant: ir.Quantization) -> str:
        """DEQUANTIZE node over an integer constant (kept for `fuse_qdq`)."""
        dt = DType.INT8 if value.dtype == np.int8 else DType.INT32
        c = self.int_const(f"{base}_quantized", value, dt, quant)
        return self.emit(OpType.DEQUANTIZE, [c], base)

    def define(self, onnx_name: str, ir_name: str, perm: Perm) -> None:
        self.values[onnx_name] = (ir_name, perm)
        self.layouts[(onnx_name, perm)] = ir_name
        shape = self.tensors[ir_name].shape
        inv = _inverse(perm)
        self.shapes[onnx_name] = tuple(shape[inv[k]] for k in range(len(perm)))

    # -- inputs

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise self.fail(f"input '{name}' ({what}) must be a constant")
        return self.consts[name]

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        return self.shapes[name]

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def perm_of(self, name: str) -> Perm:
        if name in self.consts:
            return _ident(self.consts[name].ndim)
        return self.values[name][1]

    def get(self, name: str, perm: Perm | None = None) -> str:
        """IR name of ONNX tensor `name` in layout `perm` (default: as it is held)."""
        if name in self.consts:
            value = self.consts[name]
            if value.dtype.kind not in "fiub":
                raise self.fail(f"constant '{name}' has unsupported dtype {value.dtype}")
            if perm is not None:
                value = np.transpose(value, perm)
            key = (name, perm or _ident(value.ndim))
            if key not in self.layouts:
                self.layouts[key] = self.const_ir(name, value)
            return self.layouts[key]
        if name not in self.values:
            raise self.fail(f"input '{name}' is not defined")
        ir_name, have = self.values[name]
        if perm is None or perm == have:
            return ir_name
        if (name, perm) in self.layouts:
            return self.layouts[(name, perm)]
        inv = _inverse(have)
        t = tuple(inv[p] for p in perm)
        out = self.emit(OpType.TRANSPOSE, [ir_name], f"{name}/{''.join(map(str, perm))}",
                        {"perm": t})
        self.layouts[(name, perm)] = out
        return out

    def attrs(self) -> dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in self.node.attribute}

    def check_attrs(self, allowed: Sequence[str]) -> dict[str, Any]:
        a = self.attrs()
        for k, v in a.items():
            if k not in allowed:
                raise self.fail(f"attribute {k}={_show(v)} is not supported")
        return a

    def out(self, idx: int = 0) -> str:
        return self.node.output[idx]

    def unused_outputs_from(self, idx: int, what: str) -> None:
        """Fails when an output at or after `idx` (named `what`) is read by the model."""
        for k, o in enumerate(self.node.output[idx:], start=idx):
            if o and o in self.used:
                raise self.fail(f"output {k} '{o}' ({what}) is used; only an unused {what} "
                                "output is supported")


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return repr(v.decode("utf-8", "replace"))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return repr(v)


def _inp(node: Any, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


# --------------------------------------------------------------------------- op converters

OpFn = Callable[[_Importer], None]


def _window_attrs(im: _Importer, x_shape: tuple[int, ...], kernel: tuple[int, int],
                  a: dict[str, Any]) -> dict[str, tuple]:
    """strides, dilations and pads (top, left, bottom, right); ceil_mode's extra output cells
    extend the bottom/right pads (`_pool` keeps them out of count_include_pad's divisor)."""
    strides = tuple(int(v) for v in a.get("strides", (1, 1)))
    dil = tuple(int(v) for v in a.get("dilations", (1, 1)))
    if len(strides) != 2 or len(dil) != 2:
        raise im.fail(f"only 2-D windows are supported (strides={list(strides)})")
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    h, w = x_shape[2], x_shape[3]
    if auto in ("NOTSET",):
        p = tuple(int(v) for v in a.get("pads", (0, 0, 0, 0)))
        if len(p) != 4:
            raise im.fail(f"attribute pads={list(p)} needs 4 values")
        pads = (p[0], p[1], p[2], p[3])  # onnx: h_begin, w_begin, h_end, w_end
    elif auto == "VALID":
        pads = (0, 0, 0, 0)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pt, pb = same_padding(h, kernel[0], strides[0], dil[0])
        pl, pr = same_padding(w, kernel[1], strides[1], dil[1])
        if auto == "SAME_LOWER":
            pt, pb, pl, pr = pb, pt, pr, pl
        pads = (pt, pl, pb, pr)
    else:
        raise im.fail(f"attribute auto_pad={auto!r} is not supported")
    if int(a.get("ceil_mode", 0)):
        extra = []
        for size, k, s, d, pb_, pe_ in ((h, kernel[0], strides[0], dil[0], pads[0], pads[2]),
                                        (w, kernel[1], strides[1], dil[1], pads[1], pads[3])):
            span = size + pb_ + pe_ - d * (k - 1) - 1
            out = -(-span // s) + 1
            if (out - 1) * s >= size + pb_:  # the last window must start inside
                out -= 1
            extra.append(max((out - 1) * s + d * (k - 1) + 1 - (size + pb_ + pe_), 0))
        pads = (pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1])
    return {"strides": strides, "dilations": dil, "pads": pads}


def _conv(im: _Importer) -> None:
    n = im.node
    a = im.check_attrs(("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
    x, w_name, b_name = n.input[0], n.input[1], _inp(n, 2)
    if im.rank(x) != 4:
        raise im.fail(f"only 2-D convolutions (4-D input) are supported; input rank is "
                      f"{im.rank(x)}")
    if w_name in im.qconst:
        return _conv_qdq(im, a)
    w = im.const(w_name, "weights").astype(np.float32)
    oc, icg, kh, kw = w.shape
    groups = int(a.get("group", 1))
    c = im.shape(x)[1]
    wa = _window_attrs(im, im.shape(x), (kh, kw), a)
    bias = (im.const(b_name, "bias").astype(np.float32) if b_name
            else np.zeros(oc, np.float32))
    xin = im.get(x, NHWC)
    base = n.output[0]
    if groups == c and icg == 1 and groups > 1:
        w_ir = im.const_ir(f"{base}/kernel", np.transpose(w, (1, 2, 3, 0)))
        y = im.emit(OpType.DEPTHWISE_CONV_2D, [xin, w_ir, im.const_ir(f"{base}/bias", bias)],
                    base, {**wa, "depth_multiplier": (oc // c,)})
    else:
        w_ir = im.const_ir(f"{base}/kernel", np.transpose(w, (0, 2, 3, 1)))
        y = im.emit(OpType.CONV_2D, [xin, w_ir, im.const_ir(f"{base}/bias", bias)], base,
                    {**wa, "groups": (groups,)})
    im.define(base, y, NHWC)


def _conv_qdq(im: _Importer, a: dict[str, Any]) -> None:
    """Conv whose weights (and bias) are DequantizeLinear of integer constants: the integer
    weights are kept, re-laid out, behind a DEQUANTIZE node that `fuse_qdq` folds away."""
    n = im.node
    x, w_name, b_name = n.input[0], n.input[1], _inp(n, 2)
    wq, wquant = im.qconst[w_name]
    oc, icg, kh, kw = wq.shape
    groups = int(a.get("group", 1))
    c = im.shape(x)[1]
    wa = _window_attrs(im, im.shape(x), (kh, kw), a)
    depthwise = groups == c and icg == 1 and groups > 1
    base = n.output[0]
    if wquant.axis not in (None, 0):
        raise im.fail(f"weights quantized along axis {wquant.axis} are not supported (only 0)")
    if depthwise:
        data = np.transpose(wq, (1, 2, 3, 0))
        q = wquant if wquant.axis is None else ir.Quantization(wquant.scale, wquant.zero_point, 3)
    else:
        data = np.transpose(wq, (0, 2, 3, 1))
        q = wquant
    w_ir = im.dequantized_const(f"{base}/kernel", data, q)
    ins: list[str | None] = [im.get(x, NHWC), w_ir]
    if b_name is None:
        ins.append(None)
    elif b_name in im.qconst:
        bq, bquant = im.qconst[b_name]
        ins.append(im.dequantized_const(f"{base}/bias", bq, bquant))
    else:
        ins.append(im.const_ir(f"{base}/bias", im.const(b_name, "bias")))
    if depthwise:
        y = im.emit(OpType.DEPTHWISE_CONV_2D, ins, base,
                    {**wa, "depth_multiplier": (oc // c,)})
    else:
        y = im.emit(OpType.CONV_2D, ins, base, {**wa, "groups": (groups,)})
    im.define(base, y, NHWC)


def _qparams(im: _Importer, s_name: str, z_name: str | None, axis: int | None,
             rank: int) -> tuple[ir.Quantization, np.dtype]:
    scale = np.asarray(im.const(s_name, "scale"), np.float64).reshape(-1)
    if z_name:
        zv = im.const(z_name, "zero_point")
        zdt = zv.dtype
        zp = np.asarray(zv, np.int64).reshape(-1)
    else:
        zdt, zp = np.dtype(np.uint8), np.zeros(len(scale), np.int64)
    if zdt not in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)):
        raise im.fail(f"zero point type {zdt} is not supported (int8, uint8, int32)")
    if zdt == np.dtype(np.uint8):
        zp = zp - 128  # uint8 data is re-read as int8: q8 = q_u8 - 128, same real values
    ax = None if scale.size == 1 else (axis if axis is not None else 1) % rank
    try:
        q = ir.Quantization(tuple(float(v) for v in scale), tuple(int(v) for v in zp), ax)
    except ValueError as e:
        raise im.fail(str(e)) from None
    return q, zdt


def _quantize_linear(im: _Importer) -> None:
    a = im.check_attrs(("axis", "saturate", "block_size", "output_dtype"))
    n = im.node
    x = n.input[0]
    q, zdt = _qparams(im, n.input[1], _inp(n, 2), a.get("axis"), im.rank(x))
    if q.axis is not None:
        raise im.fail("per-axis QuantizeLinear of activations is not supported")
    if zdt == np.dtype(np.int32):
        raise im.fail("QuantizeLinear to int32 is not supported")
    if im.is_const(x):
        raise im.fail("QuantizeLinear of a constant is not supported")
    xi = im.get(x)
    if im.tensors[xi].dtype != DType.FLOAT32:
        raise im.fail("QuantizeLinear of a quantized tensor is not supported")
    y = im.emit(OpType.QUANTIZE, [xi], im.out())
    im.tensors[y] = ir.Tensor(y, im.tensors[y].shape, DType.INT8, None, q)
    im.define(im.out(), y, im.perm_of(x))


def _dequantize_linear(im: _Importer) -> None:
    a = im.check_attrs(("axis", "block_size"))
    n = im.node
    x = n.input[0]
    rank = im.rank(x)
    q, _zdt = _qparams(im, n.input[1], _inp(n, 2), a.get("axis"), rank)
    if im.is_const(x):
        data = im.consts[x]
        if data.dtype == np.uint8:
            data = (data.astype(np.int16) - 128).astype(np.int8)
        if data.dtype not in (np.int8, np.int32):
            raise im.fail(f"constant of type {data.dtype} is not supported (int8, uint8, int32)")
        im.qconst[im.out()] = (data, q)
        # the float value, for any consumer that is not fused with it
        s = np.asarray(q.scale, np.float64)
        z = np.asarray(q.zero_point, np.float64)
        if q.axis is not None:
            shape = [1] * data.ndim
            shape[q.axis] = -1
            s, z = s.reshape(shape), z.reshape(shape)
        im.consts[im.out()] = ((data.astype(np.float64) - z) * s).astype(np.float32)
        return
    xi = im.get(x)
    t = im.tensors[xi]
    if t.dtype != DType.INT8 or q.axis is not None:
        raise im.fail("only per-tensor DequantizeLinear of an int8/uint8 tensor is supported")
    if t.quant != q:
        raise im.fail(f"DequantizeLinear parameters {q} differ from the tensor's {t.quant}")
    y = im.emit(OpType.DEQUANTIZE, [xi], im.out())
    im.define(im.out(), y, im.perm_of(x))


def _qlinear_out(im: _Importer, s_idx: int, z_idx: int, rank: int) -> ir.Quantization:
    q, zdt = _qparams(im, im.node.input[s_idx], _inp(im.node, z_idx), None, rank)
    if q.axis is not None or zdt == np.dtype(np.int32):
        raise im.fail("the output must be quantized per tensor to int8/uint8")
    return q


def _int8_input(im: _Importer, k_x: int, k_s: int, k_z: int, perm: Perm | None) -> str:
    n = im.node
    x = n.input[k_x]
    xi = im.get(x, perm)
    t = im.tensors[xi]
    q, _ = _qparams(im, n.input[k_s], _inp(n, k_z), None, im.rank(x))
    if t.dtype != DType.INT8 or t.quant != q:
        raise im.fail(f"input '{x}' must be an int8/uint8 tensor quantized as {q}")
    return xi


def _qlinear_conv(im: _Importer) -> None:
    a = im.check_attrs(("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
    n = im.node
    x = n.input[0]
    if im.rank(x) != 4:
        raise im.fail(f"only 2-D convolutions are supported; input rank {im.rank(x)}")
    xi = _int8_input(im, 0, 1, 2, NHWC)
    x_q = im.tensors[xi].quant
    w = im.const(n.input[3], "w")
    if w.dtype == np.uint8:
        raise im.fail("uint8 weights are not supported (symmetric int8 only)")
    w_q, _ = _qparams(im, n.input[4], _inp(n, 5), 0, 4)
    if any(w_q.zero_point):
        raise im.fail(f"weight zero points {w_q.zero_point[:4]} must be 0 (symmetric)")
    y_q = _qlinear_out(im, 6, 7, 4)
    oc, icg, kh, kw = w.shape
    groups = int(a.get("group", 1))
    c = im.shape(x)[1]
    wa = _window_attrs(im, im.shape(x), (kh, kw), a)
    base = n.output[0]
    depthwise = groups == c and icg == 1 and groups > 1
    if w_q.axis is None:
        w_q = ir.Quantization(w_q.scale * oc, w_q.zero_point * oc, 0)
    if depthwise:
        data = np.transpose(w, (1, 2, 3, 0))
        w_q = ir.Quantization(w_q.scale, w_q.zero_point, 3)
    else:
        data = np.transpose(w, (0, 2, 3, 1))
    w_ir = im.int_const(f"{base}/kernel", data, DType.INT8, w_q)
    ins: list[str | None] = [xi, w_ir, None]
    if _inp(n, 8):
        bias = im.const(n.input[8], "B").astype(np.int32)
        b_scale = tuple(x_q.scale[0] * s for s in w_q.scale)  # type: ignore[union-attr]
        ins[2] = im.int_const(f"{base}/bias", bias, DType.INT32,
                              ir.Quantization(b_scale, (0,) * oc, 0))
    op = OpType.DEPTHWISE_CONV_2D if depthwise else OpType.CONV_2D
    extra = {"depth_multiplier": (oc // c,)} if depthwise else {"groups": (groups,)}
    y = im.emit(op, ins, base, {**wa, **extra})
    im.tensors[y] = ir.Tensor(y, im.tensors[y].shape, DType.INT8, None, y_q)
    im.define(base, y, NHWC)


def _qlinear_matmul(im: _Importer) -> None:
    im.check_attrs(())
    n = im.node
    a_name = n.input[0]
    xi = _int8_input(im, 0, 1, 2, _ident(im.rank(a_name)))
    b = im.const(n.input[3], "b")
    if b.ndim != 2 or b.dtype != np.int8:
        raise im.fail("only a constant 2-D int8 second input is supported")
    b_q, _ = _qparams(im, n.input[4], _inp(n, 5), 1, 2)
    if any(b_q.zero_point):
        raise im.fail("weight zero points must be 0 (symmetric)")
    w_q = ir.Quantization(b_q.scale, b_q.zero_point, None if b_q.axis is None else 0)
    y_q = _qlinear_out(im, 6, 7, 2)
    base = n.output[0]
    w_ir = im.int_const(f"{base}/kernel", np.ascontiguousarray(b.T), DType.INT8, w_q)
    y = im.emit(OpType.FULLY_CONNECTED, [xi, w_ir], base)
    im.tensors[y] = ir.Tensor(y, im.tensors[y].shape, DType.INT8, None, y_q)
    im.define(base, y, _ident(len(im.tensors[y].shape)))


def _pool(op: OpType) -> OpFn:
    """MaxPool / AveragePool (dilations: MaxPool 10+, AveragePool 19+).

    AveragePool with count_include_pad=1 and ceil_mode=1 divides, as ONNX Runtime does, by
    the window's cells inside the explicitly padded input: the explicit pads count, the cells
    ceil_mode adds past them do not. Where ceil_mode adds cells, the explicit pads become a
    zero PAD and the pool counts real cells only (its pads: the ceil-mode cells alone).
    """
    def convert(im: _Importer) -> None:
        allowed = ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"]
        allowed += ["count_include_pad"] if op == OpType.AVERAGE_POOL_2D else ["storage_order"]
        a = im.check_attrs(allowed)
        x = im.node.input[0]
        if len(im.node.output) > 1 and im.node.output[1]:
            raise im.fail("the Indices output of MaxPool is not supported")
        if im.rank(x) != 4:
            raise im.fail(f"only 2-D pooling (4-D input) is supported; rank {im.rank(x)}")
        ks = [int(v) for v in a["kernel_shape"]]
        if len(ks) != 2:
            raise im.fail(f"attribute kernel_shape={ks} needs 2 values")
        k = (ks[0], ks[1])
        include = int(a.get("count_include_pad", 0))
        wa = _window_attrs(im, im.shape(x), k, a)
        xin = im.get(x, NHWC)
        if include and int(a.get("ceil_mode", 0)):
            pt, pl, pb, pr = _window_attrs(im, im.shape(x), k, {**a, "ceil_mode": 0})["pads"]
            ceil_h, ceil_w = wa["pads"][2] - pb, wa["pads"][3] - pr
            if ceil_h or ceil_w:  # else ceil_mode changes nothing
                if pt or pl or pb or pr:
                    xin = im.emit(OpType.PAD, [xin], f"{im.out()}/pads",
                                  {"paddings": (0, 0, pt, pb, pl, pr, 0, 0), "value": (0.0,)})
                wa["pads"], include = (0, 0, ceil_h, ceil_w), 0
        if wa["dilations"] == (1, 1):
            del wa["dilations"]  # the default: undilated pools keep their former bytes
        attrs: dict[str, tuple] = {"kernel": k, **wa}
        if op == OpType.AVERAGE_POOL_2D:
            attrs["count_include_pad"] = (include,)
        y = im.emit(op, [xin], im.out(), attrs)
        im.define(im.out(), y, NHWC)

    return convert


def _global_pool(op: OpType) -> OpFn:
    def convert(im: _Importer) -> None:
        im.check_attrs(())
        x = im.node.input[0]
        if im.rank(x) != 4:
            raise im.fail(f"only 4-D inputs are supported; rank {im.rank(x)}")
        xs = im.get(x, NHWC)
        if op == OpType.MEAN:
            y = im.emit(OpType.MEAN, [xs], im.out(), {"axes": (1, 2), "keepdims": (1,)})
        else:
            s = im.tensors[xs].shape
            y = im.emit(OpType.MAX_POOL_2D, [xs], im.out(),
                        {"kernel": (s[1], s[2]), "strides": (1, 1), "pads": (0, 0, 0, 0)})
        im.define(im.out(), y, NHWC)

    return convert


_RESIZE_MODES = {"nearest": 0, "linear": 1}
_RESIZE_COORDS = {"half_pixel": 0, "pytorch_half_pixel": 1, "align_corners": 2,
                  "asymmetric": 3, "tf_half_pixel_for_nn": 4}
_RESIZE_NEAREST = {"round_prefer_floor": 0, "round_prefer_ceil": 1, "floor": 2, "ceil": 3}


def _resize(im: _Importer) -> None:
    """Resize (and Upsample, upgraded to it): 2-D nearest/linear over the spatial axes of NCHW."""
    n = im.node
    a = im.check_attrs(("mode", "coordinate_transformation_mode", "nearest_mode", "antialias",
                        "axes", "keep_aspect_ratio_policy", "cubic_coeff_a", "exclude_outside",
                        "extrapolation_value"))

    def text(key: str, default: str) -> str:
        v = a.get(key, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    mode = text("mode", "nearest")
    if mode not in _RESIZE_MODES:
        raise im.fail(f"attribute mode={mode!r} is not supported; supported: 'nearest', "
                      "'linear'")
    coord = text("coordinate_transformation_mode", "half_pixel")
    if coord not in _RESIZE_COORDS:
        hint = " (it reads the roi input)" if coord == "tf_crop_and_resize" else ""
        raise im.fail(f"attribute coordinate_transformation_mode={coord!r} is not supported"
                      f"{hint}; supported: {', '.join(map(repr, _RESIZE_COORDS))}")
    nearest = text("nearest_mode", "round_prefer_floor")
    if nearest not in _RESIZE_NEAREST:
        raise im.fail(f"attribute nearest_mode={nearest!r} is not supported; supported: "
                      f"{', '.join(map(repr, _RESIZE_NEAREST))}")
    if int(a.get("antialias", 0)):
        raise im.fail("attribute antialias=1 is not supported; only antialias=0")
    policy = text("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise im.fail(f"attribute keep_aspect_ratio_policy={policy!r} is not supported; only "
                      "'stretch'")
    if int(a.get("exclude_outside", 0)):
        raise im.fail("attribute exclude_outside=1 is not supported (cubic only)")
    x = n.input[0]
    shape = im.shape(x)
    if len(shape) != 4:
        raise im.fail(f"input '{x}' has rank {len(shape)}; only 4-D NCHW inputs are supported")
    axes = [int(v) % 4 for v in a.get("axes", (0, 1, 2, 3))]
    scales_in, sizes_in = _inp(n, 2), _inp(n, 3)
    if n.op_type == "Resize" and len(n.input) == 2:  # opset 10 form: X, scales
        scales_in = _inp(n, 1)
    full_scales = [1.0] * 4
    out = list(shape)
    given: tuple[float, float] | None = None
    if sizes_in is not None and im.const(sizes_in, "sizes").size:
        sz = [int(v) for v in im.const(sizes_in, "sizes").reshape(-1)]
        if len(sz) != len(axes):
            raise im.fail(f"sizes {sz} need one value per axis {axes}")
        for ax, v in zip(axes, sz):
            out[ax] = v
        full_scales = [float(np.float32(o) / np.float32(i)) for o, i in zip(out, shape)]
    elif scales_in is not None and im.const(scales_in, "scales").size:
        sc = [float(v) for v in im.const(scales_in, "scales").astype(np.float32).reshape(-1)]
        if len(sc) != len(axes):
            raise im.fail(f"scales {sc} need one value per axis {axes}")
        for ax, scale in zip(axes, sc):
            if not (math.isfinite(scale) and scale > 0):
                raise im.fail(f"scale {scale} of axis {ax} must be finite and > 0")
            full_scales[ax] = scale
            out[ax] = int(np.float32(scale) * np.float32(shape[ax]))
        given = (full_scales[2], full_scales[3])
    else:
        raise im.fail("needs a constant scales or sizes input")
    if out[0] != shape[0] or out[1] != shape[1]:
        raise im.fail(f"resizes {list(shape)} to {out}; only the two spatial axes of a 4-D "
                      "NCHW tensor can be scaled (batch and channel scale 1)")
    if min(out) < 1:
        raise im.fail(f"output shape {out} has an empty axis")
    legacy = n.output[0] in im.legacy_resize
    attrs: dict[str, tuple] = {
        "interpolation": (_RESIZE_MODES[mode],),
        # Upsample and Resize-10 map coordinates asymmetrically; their nearest rounds up
        # when downscaling and down otherwise (ONNX Runtime's opset < 11 rule)
        "coordinate_mode": (_RESIZE_COORDS["asymmetric" if legacy else coord],),
        "nearest_mode": (4 if legacy else _RESIZE_NEAREST[nearest],),
    }
    f32 = np.float32
    if given is not None and (f32(given[0]) != f32(out[2]) / f32(shape[2])
                              or f32(given[1]) != f32(out[3]) / f32(shape[3])):
        attrs["scales"] = given
    xs = im.get(x, NHWC)
    y = im.emit(OpType.RESIZE, [xs], im.out(), attrs,
                declared=(out[0], out[2], out[3], out[1]))
    im.define(im.out(), y, NHWC)


def _batch_norm(im: _Importer) -> None:
    a = im.check_attrs(("epsilon", "momentum", "training_mode"))
    if int(a.get("training_mode", 0)):
        raise im.fail("attribute training_mode=1 is not supported")
    n = im.node
    if any(n.output[1:]):
        # Opsets 7-13 read the outputs' count as the mode: five outputs is training, where
        # ONNX Runtime normalizes with the batch's own statistics (even with them unused).
        raise im.fail(f"{len(n.output)} outputs mean training mode (the batch's statistics, "
                      "not the running ones); export the model in inference mode (one output)")
    x = n.input[0]
    r = im.rank(x)
    if r < 2:
        raise im.fail(f"input rank {r} < 2")
    perm = (0,) + tuple(range(2, r)) + (1,)
    params = [im.const_ir(f"{im.out()}/{k}", im.const(n.input[i], k).astype(np.float32))
              for i, k in enumerate(("scale", "bias", "mean", "var"), start=1)]
    y = im.emit(InternalOp.BATCH_NORM, [im.get(x, perm), *params], im.out(),
                {"epsilon": (float(a.get("epsilon", 1e-5)),)})
    im.define(im.out(), y, perm)


def _norm_param(im: _Importer, name: str | None, what: str, shape: tuple[int, ...]) -> str | None:
    """A normalization's scale or bias as an IR tensor of `shape` (in ONNX axis order): a
    constant broadcast to it, or a computed tensor of exactly that shape; None if absent."""
    if name is None:
        return None
    if im.is_const(name):
        value = im.const(name, what).astype(np.float32)
        try:
            value = np.ascontiguousarray(np.broadcast_to(value, shape))
        except ValueError:
            raise im.fail(f"input '{name}' ({what}) of shape {list(value.shape)} does not "
                          f"broadcast to the normalized shape {list(shape)}") from None
        return im.const_ir(f"{im.out()}/{what}", value)
    if im.shape(name) != shape:
        raise im.fail(f"input '{name}' ({what}) has shape {list(im.shape(name))}; a computed "
                      f"{what} needs the normalized shape {list(shape)} (or make it a constant)")
    return im.get(name, _ident(len(shape)))


def _trimmed(inputs: list[str | None]) -> list[str | None]:
    """`inputs` without its trailing absent (None) optional inputs."""
    while inputs and inputs[-1] is None:
        inputs.pop()
    return inputs


def _layer_norm(im: _Importer) -> None:
    a = im.check_attrs(("axis", "epsilon", "stash_type"))
    if int(a.get("stash_type", 1)) != 1:
        raise im.fail(f"attribute stash_type={a['stash_type']} is not supported (only 1: float)")
    im.unused_outputs_from(1, "Mean / InvStdDev")
    n = im.node
    x = n.input[0]
    r = im.rank(x)
    axis = int(a.get("axis", -1))
    if not -r <= axis < r:
        raise im.fail(f"attribute axis={axis} is outside [{-r}, {r}) of input rank {r}")
    axis %= r
    # The normalized axes, in order, last in the IR; the others keep their held order.
    have = im.perm_of(x)
    perm = tuple(v for v in have if v < axis) + tuple(range(axis, r))
    tail = im.shape(x)[axis:]
    inputs = _trimmed([im.get(x, perm), _norm_param(im, _inp(n, 1), "scale", tail),
                       _norm_param(im, _inp(n, 2), "bias", tail)])
    y = im.emit(OpType.LAYER_NORM, inputs, im.out(),
                {"axis": (axis,), "epsilon": (float(a.get("epsilon", 1e-5)),)})
    im.define(im.out(), y, perm)


def _instance_norm(im: _Importer) -> None:
    a = im.check_attrs(("epsilon",))
    n = im.node
    x = n.input[0]
    r = im.rank(x)
    if r < 3:
        raise im.fail(f"input rank {r} < 3 (InstanceNormalization needs [N, C, spatial...])")
    c = (im.shape(x)[1],)
    perm = (0,) + tuple(range(2, r)) + (1,)  # channels last
    inputs = _trimmed([im.get(x, perm), _norm_param(im, _inp(n, 1), "scale", c),
                       _norm_param(im, _inp(n, 2), "B", c)])
    y = im.emit(OpType.INSTANCE_NORM, inputs, im.out(),
                {"epsilon": (float(a.get("epsilon", 1e-5)),)})
    im.define(im.out(), y, perm)


def _unary(op: OpType | InternalOp) -> OpFn:
    def convert(im: _Importer) -> None:
        im.check_attrs(("seed", "ratio", "training_mode") if op == InternalOp.IDENTITY else ())
        x = im.node.input[0]
        ir_x = im.get(x)
        y = im.emit(op, [ir_x], im.out())
        im.define(im.out(), y, im.perm_of(x))

    return convert


def _gelu(im: _Importer) -> None:
    a = im.check_attrs(("approximate",))
    mode = a.get("approximate", b"none")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("none", "tanh"):
        raise im.fail(f"attribute approximate={mode!r} is not supported; use 'none' or 'tanh'")
    x = im.node.input[0]
    y = im.emit(OpType.GELU, [im.get(x)], im.out(), {"approximate": (int(mode == "tanh"),)})
    im.define(im.out(), y, im.perm_of(x))


def _reciprocal(im: _Importer) -> None:
    """Reciprocal(x) = DIV(1, x)."""
    im.check_attrs(())
    x = im.node.input[0]
    one = im.const_ir(f"{im.out()}/one", np.ones((), np.float32))
    y = im.emit(OpType.DIV, [one, im.get(x)], im.out())
    im.define(im.out(), y, im.perm_of(x))


def _neg(im: _Importer) -> None:
    """Neg(x) = MUL(x, -1) (tf2onnx's layer norm: recognize_layer_norm folds it)."""
    im.check_attrs(())
    x = im.node.input[0]
    minus_one = im.const_ir(f"{im.out()}/minus_one", np.full((), -1.0, np.float32))
    y = im.emit(OpType.MUL, [im.get(x), minus_one], im.out())
    im.define(im.out(), y, im.perm_of(x))


def _pow(im: _Importer) -> None:
    """Pow with a constant exponent 2 (x * x), 1 (x) or 0.5 (sqrt: decomposed layer norms)."""
    im.check_attrs(())
    x, e = im.node.input[0], im.node.input[1]
    if im.is_const(x):
        raise im.fail("a constant base is not supported")
    exps = np.unique(np.asarray(im.const(e, "exponent"), np.float64))
    if exps.size != 1 or float(exps[0]) not in (2.0, 1.0, 0.5):
        raise im.fail(f"exponent {exps.tolist()} is not supported (only 2, 1 or 0.5)")
    ir_x = im.get(x)
    ex = float(exps[0])
    if ex == 2.0:
        y = im.emit(OpType.MUL, [ir_x, ir_x], im.out())
    else:
        y = im.emit(InternalOp.IDENTITY if ex == 1.0 else InternalOp.SQRT, [ir_x], im.out())
    im.define(im.out(), y, im.perm_of(x))


def _dropout(im: _Importer) -> None:
    n = im.node
    im.unused_outputs_from(1, "mask")
    if _inp(n, 2) and bool(np.asarray(im.const(n.input[2], "training_mode")).item()):
        raise im.fail("training_mode=True is not supported")
    _unary(InternalOp.IDENTITY)(im)


def _clip(im: _Importer) -> None:
    n = im.node
    a = im.check_attrs(("min", "max"))
    lo = float(a.get("min", -np.inf))
    hi = float(a.get("max", np.inf))
    if _inp(n, 1):
        lo = float(im.const(n.input[1], "min").reshape(()))
    if _inp(n, 2):
        hi = float(im.const(n.input[2], "max").reshape(()))
    x = n.input[0]
    xi = im.get(x)
    if lo == 0.0 and hi == 6.0:
        y = im.emit(OpType.RELU6, [xi], im.out())
    elif lo == 0.0 and hi == np.inf:
        y = im.emit(OpType.RELU, [xi], im.out())
    else:
        fmax = float(np.finfo(np.float32).max)
        y = im.emit(OpType.CLAMP, [xi], im.out(),
                    {"min": (max(lo, -fmax),), "max": (min(hi, fmax),)})
    im.define(im.out(), y, im.perm_of(x))


def _hard_sigmoid(im: _Importer) -> None:
    a = im.check_attrs(("alpha", "beta"))
    x = im.node.input[0]
    y = im.emit(OpType.HARD_SIGMOID, [im.get(x)], im.out(),
                {"alpha": (float(a.get("alpha", 0.2)),), "offset": (float(a.get("beta", 0.5)),)})
    im.define(im.out(), y, im.perm_of(x))


def _binary(op: OpType) -> OpFn:
    def convert(im: _Importer) -> None:
        im.check_attrs(())
        _emit_binary(im, op, im.node.input[0], im.node.input[1], im.out())

    return convert


def _emit_binary(im: _Importer, op: OpType, a: str, b: str, out: str) -> None:
    """Defines ONNX tensor `out` = op(a, b) with numpy broadcasting."""
    r = max(im.rank(a), im.rank(b))
    variables = [v for v in (a, b) if not im.is_const(v)]
    if any(im.rank(v) != r for v in variables):
        return _binary_logical(im, op, a, b, out)  # broadcasting over ranks: logical layout
    # layout of the result: that of the first non-constant operand
    perm = im.perm_of(variables[0]) if variables else _ident(r)
    ins = []
    for v in (a, b):
        if im.is_const(v):
            c = im.consts[v].astype(np.float32).reshape((1,) * (r - im.rank(v))
                                                        + tuple(im.shape(v)))
            c = c.reshape(()) if c.size == 1 else np.transpose(c, perm)
            ins.append(im.const_ir(f"{out}/const", c))
        else:
            ins.append(im.get(v, perm))
    y = im.emit(op, ins, out)
    im.define(out, y, perm)


def _binary_logical(im: _Importer, op: OpType, a: str, b: str, out: str) -> None:
    ins = []
    for v in (a, b):
        if im.is_const(v):
            ins.append(im.const_ir(f"{out}/const", im.consts[v].astype(np.float32)))
        else:
            ins.append(im.get(v, _ident(im.rank(v))))
    y = im.emit(op, ins, out)
    im.define(out, y, _ident(len(im.tensors[y].shape)))


def _variadic(op: OpType, mean: bool = False) -> OpFn:
    """Sum / Max / Min / Mean of 1..N inputs: a chain of binary ops, left to right (Mean then
    divides by N)."""

    def convert(im: _Importer) -> None:
        im.check_attrs(())
        ins = [v for v in im.node.input if v]
        if not ins:
            raise im.fail("needs at least one input")
        out = im.out()
        acc = ins[0]
        last = len(ins) - (0 if mean else 1)
        for k, v in enumerate(ins[1:], start=1):
            step = out if k == last else f"{out}/{im.node.op_type.lower()}{k}"
            _emit_binary(im, op, acc, v, step)
            acc = step
        if mean:
            im.consts[f"{out}/count"] = np.asarray(len(ins), np.float32)
            _emit_binary(im, OpType.DIV, acc, f"{out}/count", out)
        elif len(ins) == 1:
            _unary(InternalOp.IDENTITY)(im)

    return convert


def _alpha_unary(op: OpType, default: float) -> OpFn:
    def convert(im: _Importer) -> None:
        a = im.check_attrs(("alpha",))
        x = im.node.input[0]
        y = im.emit(op, [im.get(x)], im.out(), {"alpha": (float(a.get("alpha", default)),)})
        im.define(im.out(), y, im.perm_of(x))

    return convert


def _lrn(im: _Importer) -> None:
    a = im.check_attrs(("alpha", "beta", "bias", "size"))
    x = im.node.input[0]
    r = im.rank(x)
    if r < 2:
        raise im.fail(f"input rank {r} < 2 (LRN normalizes over axis 1)")
    if "size" not in a or int(a["size"]) < 1:
        raise im.fail(f"attribute size={a.get('size')} must be given and >= 1")
    perm = (0,) + tuple(range(2, r)) + (1,)  # channels last
    y = im.emit(OpType.LRN, [im.get(x, perm)], im.out(),
                {"size": (int(a["size"]),), "alpha": (float(a.get("alpha", 1e-4)),),
                 "beta": (float(a.get("beta", 0.75)),), "offset": (float(a.get("bias", 1.0)),)})
    im.define(im.out(), y, perm)


def _selu(im: _Importer) -> None:
    # y = gamma * elu(x, alpha)
    a = im.check_attrs(("alpha", "gamma"))
    x = im.node.input[0]
    alpha = float(a.get("alpha", 1.67326319217681884765625))
    gamma = float(a.get("gamma", 1.05070102214813232421875))
    e = im.emit(OpType.ELU, [im.get(x)], f"{im.out()}/elu", {"alpha": (alpha,)})
    y = im.emit(OpType.MUL, [e, im.const_ir(f"{im.out()}/gamma", np.asarray(gamma, np.float32))],
                im.out())
    im.define(im.out(), y, im.perm_of(x))


def _matmul_like(im: _Importer, a_name: str, w: np.ndarray, bias: np.ndarray | None) -> None:
    """y = a @ w.T + bias (w [O, K]) as FULLY_CONNECTED over the logical layout of a."""
    x = im.get(a_name, _ident(im.rank(a_name)))
    base = im.out()
    ins = [x, im.const_ir(f"{base}/kernel", w)]
    if bias is not None:
        ins.append(im.const_ir(f"{base}/bias", bias))
    y = im.emit(OpType.FULLY_CONNECTED, ins, base)
    im.define(base, y, _ident(len(im.tensors[y].shape)))


def _gemm(im: _Importer) -> None:
    a = im.check_attrs(("alpha", "beta", "transA", "transB"))
    n = im.node
    if int(a.get("transA", 0)):
        raise im.fail(f"attribute transA={a['transA']} is not supported")
    if im.rank(n.input[0]) != 2:
        raise im.fail(f"input A must be 2-D, got rank {im.rank(n.input[0])}")
    if n.input[1] in im.qconst and int(a.get("transB", 0)) and float(a.get("alpha", 1.0)) == 1.0 \
            and float(a.get("beta", 1.0)) == 1.0 and im.qconst[n.input[1]][1].axis in (None, 0):
        # quantized weights [O, K]: keep the integers behind a DEQUANTIZE for fuse_qdq
        wq, q = im.qconst[n.input[1]]
        base = im.out()
        ins = [im.get(n.input[0], (0, 1)), im.dequantized_const(f"{base}/kernel", wq, q)]
        c_name = _inp(n, 2)
        if c_name in im.qconst:
            cq, cquant = im.qconst[c_name]  # type: ignore[index]
            ins.append(im.dequantized_const(f"{base}/bias", cq, cquant))
        elif c_name:
            ins.append(im.const_ir(f"{base}/bias", im.const(c_name, "C").reshape(-1)))
        y = im.emit(OpType.FULLY_CONNECTED, ins, base)
        im.define(base, y, (0, 1))
        return
    w = im.const(n.input[1], "B").astype(np.float64)
    if not int(a.get("transB", 0)):
        w = w.T
    w = w * float(a.get("alpha", 1.0))
    bias = None
    if _inp(n, 2):
        c = im.const(n.input[2], "C").astype(np.float64) * float(a.get("beta", 1.0))
        try:
            bias = np.broadcast_to(c, (w.shape[0],)) if c.ndim <= 1 else None
        except ValueError:
            bias = None
        if bias is None:
            raise im.fail(f"input C of shape {list(c.shape)} is not supported (only [N] or "
                          "scalar)")
    _matmul_like(im, n.input[0], w.astype(np.float32),
                 None if bias is None else np.asarray(bias, np.float32))


def _matmul_operand(im: _Importer, name: str) -> tuple[str, int]:
    """A MatMul operand in its logical order, or (as held, adjoint 1) when only its last two
    axes are swapped: a Transpose feeding MatMul (attention's K^T) costs no TRANSPOSE."""
    r = im.rank(name)
    if not im.is_const(name) and r >= 2 and im.perm_of(name) == _ident(r - 2) + (r - 1, r - 2):
        return im.get(name), 1
    return im.get(name, _ident(r)), 0


def _matmul(im: _Importer) -> None:
    """MatMul: FULLY_CONNECTED when B is a constant matrix, else BATCH_MATMUL (numpy matmul:
    a 1-D A gets a leading 1 and a 1-D B a trailing 1, both dropped from the result)."""
    im.check_attrs(())
    n = im.node
    a_name, b_name = n.input[0], n.input[1]
    if im.is_const(b_name) and im.consts[b_name].ndim == 2:
        _matmul_like(im, a_name, im.consts[b_name].astype(np.float32).T, None)
        return
    sa, sb = im.shape(a_name), im.shape(b_name)
    if not sa or not sb:
        raise im.fail(f"MatMul of a scalar is not defined (A {list(sa)}, B {list(sb)})")
    if max(len(sa), len(sb)) > 6:
        raise im.fail(f"inputs of rank {max(len(sa), len(sb))} are not supported (at most 6)")
    base = im.out()
    if len(sa) == 1:
        a, adj_a = im.emit(OpType.RESHAPE, [im.get(a_name, (0,))], f"{base}/a",
                           declared=(1, sa[0])), 0
    else:
        a, adj_a = _matmul_operand(im, a_name)
    if len(sb) == 1:
        b, adj_b = im.emit(OpType.RESHAPE, [im.get(b_name, (0,))], f"{base}/b",
                           declared=(sb[0], 1)), 0
    else:
        b, adj_b = _matmul_operand(im, b_name)
    k_a = sa[-1]
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if k_a != k_b:
        raise im.fail(f"A {list(sa)} has K={k_a} but B {list(sb)} has K={k_b} (MatMul needs "
                      "A's last dim equal to B's second to last)")
    attrs = {"adjoint": (adj_a, adj_b)} if adj_a or adj_b else None
    if len(sa) > 1 and len(sb) > 1:
        y = im.emit(OpType.BATCH_MATMUL, [a, b], base, attrs)
    else:
        full = im.emit(OpType.BATCH_MATMUL, [a, b], f"{base}/matmul", attrs)
        shape = im.tensors[full].shape
        keep = shape[:-2] + (() if len(sa) == 1 else shape[-2:-1]) \
            + (() if len(sb) == 1 else shape[-1:])
        y = im.emit(OpType.RESHAPE, [full], base, declared=keep)
    im.define(base, y, _ident(len(im.tensors[y].shape)))


def _pad(im: _Importer) -> None:
    n = im.node
    a = im.check_attrs(("mode",))
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect", "edge"):
        raise im.fail(f"attribute mode={mode!r} is not supported (use 'constant', 'reflect' "
                      "or 'edge')")
    x = n.input[0]
    r = im.rank(x)
    pads = [int(v) for v in im.const(n.input[1], "pads").reshape(-1)]
    if _inp(n, 3):
        axes = [int(v) % r for v in im.const(n.input[3], "axes").reshape(-1)]
        full = [0] * (2 * r)
        for i, ax in enumerate(axes):
            full[ax], full[r + ax] = pads[i], pads[len(axes) + i]
        pads = full
    if min(pads) < 0:
        raise im.fail(f"negative pads {pads} are not supported")
    if mode == "reflect":  # one mirror image about the end cells, as ONNX Runtime allows
        shape = im.shape(x)
        for ax in range(r):
            if max(pads[ax], pads[r + ax]) >= shape[ax]:
                raise im.fail(f"mode='reflect' pads ({pads[ax]}, {pads[r + ax]}) on axis {ax} "
                              f"must each be < its size {shape[ax]}")
    value = float(im.const(n.input[2], "constant_value").reshape(())) if _inp(n, 2) else 0.0
    perm = im.perm_of(x)
    paddings = tuple(v for k in range(r) for v in (pads[perm[k]], pads[r + perm[k]]))
    attrs: dict[str, tuple] = {"paddings": paddings, "value": (value,)}
    if mode != "constant":
        attrs = {"paddings": paddings, "mode": (PAD_MODES.index(mode),)}
    y = im.emit(OpType.PAD, [im.get(x)], im.out(), attrs)
    im.define(im.out(), y, perm)


def _concat(im: _Importer) -> None:
    a = im.check_attrs(("axis",))
    ins = list(im.node.input)
    r = im.rank(ins[0])
    axis = int(a["axis"]) % r
    perm = next((im.perm_of(v) for v in ins if not im.is_const(v)), _ident(r))
    irs = [im.get(v, perm) for v in ins]
    y = im.emit(OpType.CONCATENATION, irs, im.out(), {"axis": (perm.index(axis),)})
    im.define(im.out(), y, perm)


def _emit_slice(im: _Importer, x: str, out: str, begin: Sequence[int], steps: Sequence[int],
                counts: Sequence[int]) -> None:
    """SLICE of ONNX tensor `x` (logical begin, steps and counts per axis) in the layout
    `x` is held in, defining ONNX output `out`."""
    if any(c <= 0 for c in counts):
        raise im.fail(f"the slice of shape {list(im.shape(x))} is empty (counts {list(counts)})")
    perm = im.perm_of(x)
    y = im.emit(OpType.SLICE, [im.get(x)], out,
                {"begin": tuple(int(begin[p]) for p in perm),
                 "steps": tuple(int(steps[p]) for p in perm)},
                declared=tuple(int(counts[p]) for p in perm))
    im.define(out, y, perm)


def _slice(im: _Importer) -> None:
    im.check_attrs(())
    n = im.node
    x = n.input[0]
    shape = im.shape(x)
    r = len(shape)
    starts = [int(v) for v in im.const(n.input[1], "starts").reshape(-1)]
    ends = [int(v) for v in im.const(n.input[2], "ends").reshape(-1)]
    axes = ([int(v) for v in im.const(n.input[3], "axes").reshape(-1)] if _inp(n, 3)
            else list(range(len(starts))))
    steps = ([int(v) for v in im.const(n.input[4], "steps").reshape(-1)] if _inp(n, 4)
             else [1] * len(starts))
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise im.fail(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ "
                      "in length")
    begin, step, count = [0] * r, [1] * r, list(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        if not -r <= a < r:
            raise im.fail(f"axis {a} is outside rank {r}")
        a %= r
        if st == 0:
            raise im.fail(f"step 0 on axis {a}")
        kept = range(shape[a])[s:e:st]  # clamped as ONNX clamps (backwards too)
        begin[a], step[a], count[a] = kept.start, st, len(kept)
    _emit_slice(im, x, im.out(), begin, step, count)


def _split(im: _Importer) -> None:
    a = im.check_attrs(("axis", "split", "num_outputs"))
    n = im.node
    x = n.input[0]
    shape = im.shape(x)
    axis = int(a.get("axis", 0))
    if not -len(shape) <= axis < len(shape):
        raise im.fail(f"axis {axis} is outside rank {len(shape)}")
    axis %= len(shape)
    dim, parts = shape[axis], len(n.output)
    if "split" in a:
        sizes = [int(v) for v in a["split"]]
    elif _inp(n, 1):
        sizes = [int(v) for v in im.const(n.input[1], "split").reshape(-1)]
    elif "num_outputs" in a:  # opset 18: equal parts, the last one smaller
        chunk = -(-dim // int(a["num_outputs"]))
        sizes = [min(chunk, dim - i * chunk) for i in range(parts)]
    else:
        if dim % parts:
            raise im.fail(f"axis {axis} of size {dim} does not split into {parts} equal parts")
        sizes = [dim // parts] * parts
    if len(sizes) != parts or sum(sizes) != dim or min(sizes) < 1:
        raise im.fail(f"split sizes {sizes} do not cover axis {axis} of size {dim} in "
                      f"{parts} outputs")
    start = 0
    for out, size in zip(n.output, sizes):
        begin = [0] * len(shape)
        begin[axis] = start
        counts = list(shape)
        counts[axis] = size
        if out:
            _emit_slice(im, x, out, begin, [1] * len(shape), counts)
        start += size


def _reshape_to(im: _Importer, x: str, shape: tuple[int, ...]) -> None:
    y = im.emit(OpType.RESHAPE, [im.get(x, _ident(im.rank(x)))], im.out(), declared=shape)
    im.define(im.out(), y, _ident(len(shape)))


def _reshape(im: _Importer) -> None:
    a = im.check_attrs(("allowzero",))
    x = im.node.input[0]
    target = [int(v) for v in im.const(im.node.input[1], "shape").reshape(-1)]
    src = im.shape(x)
    if int(a.get("allowzero", 0)) and 0 in target:
        raise im.fail("attribute allowzero=1 with a 0 in the shape is not supported")
    target = [src[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) == 1:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(src) // max(known, 1)
    _reshape_to(im, x, tuple(target))


def _flatten(im: _Importer) -> None:
    a = im.check_attrs(("axis",))
    x = im.node.input[0]
    s = im.shape(x)
    axis = int(a.get("axis", 1)) % (len(s) + 1) if s else 0
    _reshape_to(im, x, (math.prod(s[:axis]), math.prod(s[axis:])))


def _squeeze_axes(im: _Importer, attr: str) -> list[int] | None:
    a = im.check_attrs((attr,) if im.opset < 13 else ())
    n = im.node
    if attr in a:
        return [int(v) for v in a[attr]]
    if _inp(n, 1):
        return [int(v) for v in im.const(n.input[1], "axes").reshape(-1)]
    return None


def _squeeze(im: _Importer) -> None:
    x = im.node.input[0]
    s = im.shape(x)
    axes = _squeeze_axes(im, "axes")
    axes = [i for i, d in enumerate(s) if d == 1] if axes is None else [v % len(s) for v in axes]
    if any(s[i] != 1 for i in axes):
        raise im.fail(f"cannot squeeze axes {axes} of shape {list(s)}")
    # keep the storage order of the remaining dims: a free RESHAPE
    perm = im.perm_of(x)
    kept = [p for p in perm if p not in axes]
    renum = {p: i for i, p in enumerate(sorted(kept))}
    new_perm = tuple(renum[p] for p in kept)
    logical = tuple(d for i, d in enumerate(s) if i not in axes)
    stored = tuple(logical[p] for p in new_perm)
    y = im.emit(OpType.RESHAPE, [im.get(x)], im.out(), declared=stored)
    im.define(im.out(), y, new_perm)


def _unsqueeze(im: _Importer) -> None:
    x = im.node.input[0]
    s = list(im.shape(x))
    axes = _squeeze_axes(im, "axes")
    if axes is None:
        raise im.fail("axes are required")
    r = len(s) + len(axes)
    for ax in sorted(v % r for v in axes):
        s.insert(ax, 1)
    _reshape_to(im, x, tuple(s))


def _transpose(im: _Importer) -> None:
    a = im.check_attrs(("perm",))
    x = im.node.input[0]
    r = im.rank(x)
    q = tuple(int(v) for v in a.get("perm", tuple(reversed(range(r)))))
    if sorted(q) != list(range(r)):
        raise im.fail(f"attribute perm={list(q)} is not a permutation")
    p = im.perm_of(x)
    qinv = _inverse(q)
    im.define(im.out(), im.get(x), tuple(qinv[v] for v in p))  # a relabeling: no op


def _int32_values(im: _Importer, what: str, value: np.ndarray) -> np.ndarray:
    """An integer constant as int32, refusing values int32 cannot hold."""
    v = np.asarray(value)
    if v.dtype.kind not in "iu":
        raise im.fail(f"{what} has dtype {v.dtype}; expected integers")
    info = np.iinfo(np.int32)
    if v.size and (v.min() < info.min or v.max() > info.max):
        bad = v.reshape(-1)[np.flatnonzero((v.reshape(-1) < info.min)
                                           | (v.reshape(-1) > info.max))[0]]
        raise im.fail(f"{what} holds {int(bad)}, outside int32's range")
    return v.astype(np.int32)


def _gather(im: _Importer) -> None:
    n = im.node
    a = im.check_attrs(("axis",))
    x, ids = n.input[0], n.input[1]
    r = im.rank(x)
    axis = int(a.get("axis", 0))
    if not -r <= axis < r:
        raise im.fail(f"attribute axis={axis} is outside [{-r}, {r - 1}] for data of rank {r}")
    axis %= r
    size = im.shape(x)[axis]
    if im.is_const(ids):
        v = _int32_values(im, f"indices '{ids}'", im.const(ids, "indices")).astype(np.int64)
        outside = np.flatnonzero((v.reshape(-1) < -size) | (v.reshape(-1) >= size))
        if outside.size:
            raise im.fail(f"index {int(v.reshape(-1)[outside[0]])} of '{ids}' is outside "
                          f"[{-size}, {size - 1}] (axis {axis} of '{x}', size {size})")
        v = np.where(v < 0, v + size, v).astype(np.int32)  # a 0-d index stays 0-d
        ids_ir = im.graph.add(ir.Tensor(im.unique(ids), v.shape, DType.INT32, v))
    else:
        ids_ir = im.get(ids)
        if im.tensors[ids_ir].dtype != DType.INT32:
            raise im.fail(f"indices '{ids}' are {im.tensors[ids_ir].dtype.name.lower()}; only "
                          "constant indices or int32/int64 graph inputs are supported")
    if im.is_const(x) and im.consts[x].dtype.kind in "iu":
        x_ir = im.int_const(x, _int32_values(im, f"data '{x}'", im.consts[x]), DType.INT32,
                            None)
        perm = _ident(r)
    elif im.is_const(x) or im.rank(ids) != 1:
        x_ir, perm = im.get(x, _ident(r)), _ident(r)
    else:  # one index axis replaces `axis`: gather in the layout x is held in
        x_ir, perm = im.get(x), im.perm_of(x)
    out_rank = r - 1 + im.rank(ids)
    y = im.emit(OpType.GATHER, [x_ir, ids_ir], im.out(), {"axis": (perm.index(axis),)})
    im.define(im.out(), y, perm if out_rank == r and perm != _ident(r) else _ident(out_rank))


def depth_space_steps(shape: Sequence[int], block: int, mode: str
                      ) -> tuple[tuple[int, ...], Perm, tuple[int, ...]]:
    """DepthToSpace / SpaceToDepth on NHWC `shape` as RESHAPE -> 6-D TRANSPOSE -> RESHAPE:
    (the 6-D shape, the permutation, the output shape). `mode`: "DCR" or "CRD" (depth to
    space; a channel splits as (row, column, channel) or (channel, row, column)) or "S2D"
    (space to depth, TFLite's and ONNX's channel order (row, column, channel)).

    >>> depth_space_steps((1, 2, 3, 8), 2, "DCR")
    ((1, 2, 3, 2, 2, 2), (0, 1, 3, 2, 4, 5), (1, 4, 6, 2))
    """
    n, hh, ww, c = shape
    b = block
    if mode == "S2D":
        return (n, hh // b, b, ww // b, b, c), (0, 1, 3, 2, 4, 5), (n, hh // b, ww // b, c * b * b)
    out = (n, hh * b, ww * b, c // (b * b))
    if mode == "DCR":  # y[n, h·b+i, w·b+j, k] = x[n, h, w, (i·b + j)·C' + k]
        return (n, hh, ww, b, b, c // (b * b)), (0, 1, 3, 2, 4, 5), out
    # CRD: y[n, h·b+i, w·b+j, k] = x[n, h, w, k·b² + i·b + j]
    return (n, hh, ww, c // (b * b), b, b), (0, 1, 4, 2, 5, 3), out


def _depth_space(to_space: bool) -> OpFn:
    """DepthToSpace (DCR or CRD) / SpaceToDepth, lowered channels-last to RESHAPE, a 6-D
    TRANSPOSE and RESHAPE (the ops the engine has; PixelShuffle exports lower the same way)."""

    def convert(im: _Importer) -> None:
        a = im.check_attrs(("blocksize", "mode") if to_space else ("blocksize",))
        x = im.node.input[0]
        shape = im.shape(x)
        b = int(a.get("blocksize", 0))
        mode = (a.get("mode", b"DCR") if to_space else b"S2D")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if len(shape) != 4:
            raise im.fail(f"input '{x}' has shape {list(shape)}; only 4-D NCHW is supported")
        if mode not in ("DCR", "CRD", "S2D"):
            raise im.fail(f"attribute mode={mode!r} is not supported; use 'DCR' or 'CRD'")
        n, c, hh, ww = shape
        if b < 1 or (to_space and c % (b * b)) or (not to_space and (hh % b or ww % b)):
            what = f"channels {c}" if to_space else f"height {hh} and width {ww}"
            raise im.fail(f"attribute blocksize={b} must be >= 1 and divide {what}"
                          + (" by blocksize²" if to_space else ""))
        nhwc = (n, hh, ww, c)
        shape6, perm, out = depth_space_steps(nhwc, b, mode)
        base = im.out()
        r6 = im.emit(OpType.RESHAPE, [im.get(x, NHWC)], f"{base}/6d", declared=shape6)
        t6 = im.emit(OpType.TRANSPOSE, [r6], f"{base}/shuffled", {"perm": perm})
        y = im.emit(OpType.RESHAPE, [t6], base, declared=out)
        im.define(base, y, NHWC)

    return convert


def _softmax(im: _Importer) -> None:
    a = im.check_attrs(("axis",))
    x = im.node.input[0]
    r = im.rank(x)
    axis = int(a.get("axis", -1 if im.opset >= 13 else 1)) % r
    if im.opset < 13 and axis != r - 1:
        raise im.fail(f"attribute axis={a.get('axis', 1)} with opset {im.opset} (flattening "
                      "softmax) is not supported unless it is the last axis")
    perm = im.perm_of(x)
    if perm[-1] != axis:
        perm = tuple(v for v in range(r) if v != axis) + (axis,)
    y = im.emit(OpType.SOFTMAX, [im.get(x, perm)], im.out(), {"beta": (1.0,)})
    im.define(im.out(), y, perm)


def _reduce(op: OpType) -> OpFn:
    """ReduceMean / ReduceMax: axes as an attribute (before opset 18) or input 1 (18 on)."""
    def convert(im: _Importer) -> None:
        n = im.node
        a = im.check_attrs(("axes", "keepdims", "noop_with_empty_axes"))
        x = n.input[0]
        r = im.rank(x)
        given: list[int] = []
        if "axes" in a:
            given = [int(v) for v in a["axes"]]
        elif _inp(n, 1):
            given = [int(v) for v in im.const(n.input[1], "axes").reshape(-1)]
        if any(v < -r or v >= r for v in given):
            raise im.fail(f"axes {given} out of range for rank {r}")
        axes = [v % r for v in given]
        if not axes:
            if int(a.get("noop_with_empty_axes", 0)):  # empty axes with noop: y = x
                y = im.emit(InternalOp.IDENTITY, [im.get(x)], im.out())
                im.define(im.out(), y, im.perm_of(x))
                return
            axes = list(range(r))
        keep = int(a.get("keepdims", 1))
        perm = im.perm_of(x)
        st_axes = tuple(sorted(perm.index(v) for v in set(axes)))
        y = im.emit(op, [im.get(x)], im.out(), {"axes": st_axes, "keepdims": (keep,)})
        if keep:
            im.define(im.out(), y, perm)
        else:
            kept = [p for p in perm if p not in axes]
            renum = {p: i for i, p in enumerate(sorted(kept))}
            im.define(im.out(), y, tuple(renum[p] for p in kept))

    return convert


def _shape_op(im: _Importer) -> None:
    a = im.check_attrs(("start", "end"))
    s = np.asarray(im.shape(im.node.input[0]), np.int64)
    start = int(a.get("start", 0))
    end = a.get("end")
    im.consts[im.out()] = s[start:None if end is None else int(end)]


def _constant(im: _Importer) -> None:
    attrs = im.node.attribute
    if len(attrs) != 1 or attrs[0].name not in ("value", "value_float", "value_floats",
                                                "value_int", "value_ints"):
        names = [f"{x.name}" for x in attrs]
        raise im.fail(f"attributes {names} are not supported (only value*)")
    v = im.onnx.helper.get_attribute_value(attrs[0])
    if attrs[0].name == "value":
        im.consts[im.out()] = im.numpy_helper.to_array(v)
    else:
        im.consts[im.out()] = np.asarray(v, np.float32 if "float" in attrs[0].name else np.int64)


_OPS: dict[str, OpFn] = {
    "Conv": _conv,
    "MaxPool": _pool(OpType.MAX_POOL_2D),
    "AveragePool": _pool(OpType.AVERAGE_POOL_2D),
    "Resize": _resize,
    "GlobalAveragePool": _global_pool(OpType.MEAN),
    "GlobalMaxPool": _global_pool(OpType.MAX_POOL_2D),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "InstanceNormalization": _instance_norm,
    "Relu": _unary(OpType.RELU),
    "Sigmoid": _unary(OpType.LOGISTIC),
    "Tanh": _unary(OpType.TANH),
    "HardSwish": _unary(OpType.HARD_SWISH),
    "HardSigmoid": _hard_sigmoid,
    "Clip": _clip,
    "Identity": _unary(InternalOp.IDENTITY),
    "Sqrt": _unary(InternalOp.SQRT),
    "Reciprocal": _reciprocal,
    "Neg": _neg,
    "Pow": _pow,
    "Dropout": _dropout,
    "Add": _binary(OpType.ADD),
    "Sub": _binary(OpType.SUB),
    "Mul": _binary(OpType.MUL),
    "Div": _binary(OpType.DIV),
    "LeakyRelu": _alpha_unary(OpType.LEAKY_RELU, 0.01),
    "Elu": _alpha_unary(OpType.ELU, 1.0),
    "Selu": _selu,
    "LRN": _lrn,
    "PRelu": _binary(OpType.PRELU),
    "Sum": _variadic(OpType.ADD),
    "Max": _variadic(OpType.MAXIMUM),
    "Min": _variadic(OpType.MINIMUM),
    "Mean": _variadic(OpType.ADD, mean=True),
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Pad": _pad,
    "Concat": _concat,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Slice": _slice,
    "Split": _split,
    "Softmax": _softmax,
    "Gather": _gather,
    "DepthToSpace": _depth_space(True),
    "SpaceToDepth": _depth_space(False),
    "ReduceMean": _reduce(OpType.MEAN),
    "ReduceMax": _reduce(OpType.REDUCE_MAX),
    "Gelu": _gelu,
    "Erf": _unary(InternalOp.ERF),
    "Shape": _shape_op,
    "Constant": _constant,
    "QuantizeLinear": _quantize_linear,
    "DequantizeLinear": _dequantize_linear,
    "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul,
}

SUPPORTED_ONNX_OPS: tuple[str, ...] = tuple(sorted(_OPS))


def _fold_node(im: _Importer) -> bool:
    """Evaluates a node whose inputs are all constants with onnx.reference; True if done."""
    n = im.node
    if n.op_type in ("Constant", "Shape", "DequantizeLinear", "QuantizeLinear") or not all(
            (not x) or im.is_const(x) for x in n.input) or not n.input:
        return False
    from onnx.reference import ReferenceEvaluator

    helper = im.onnx.helper
    feeds = {x: im.consts[x] for x in n.input if x}
    graph = helper.make_graph(
        [n], "fold",
        [helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for x, v in feeds.items()],
        [helper.make_tensor_value_info(o, 0, None) for o in n.output if o])
    model = helper.make_model(graph, opset_imports=list(im.model.opset_import))
    try:
        results = ReferenceEvaluator(model).run(None, feeds)
    except Exception as e:  # noqa: BLE001 - anything the evaluator cannot do is our error
        raise im.fail(f"could not evaluate it on constant inputs ({type(e).__name__}: {e})")
    for o, v in zip([o for o in n.output if o], results):
        im.consts[o] = np.asarray(v)
    return True


def _value_shape(vi: Any, batch_size: int) -> tuple[int | None, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims: list[int | None] = []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(batch_size if i == 0 else None)
    return tuple(dims)


MIN_OPSET = 13  # older models are upgraded to this opset before import


def _default_opset(model: Any) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _check_old_forms(model: Any, opset: int) -> None:
    """Refuses, before the upgrade, the forms of old opsets that have no opset-13 meaning."""
    import onnx

    for idx, n in enumerate(model.graph.node):
        if n.domain not in ("", "ai.onnx"):
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        label = (f"onnx: node '{n.name}' ({n.op_type})" if n.name
                 else f"onnx: node #{idx} ({n.op_type}, outputs {list(n.output)})")
        if n.op_type == "BatchNormalization" and opset < 9 and int(a.get("spatial", 1)) == 0:
            raise ConversionError(f"{label}: attribute spatial=0 (per-activation statistics, "
                                  f"opset {opset}) is not supported; only spatial=1")
        if n.op_type == "BatchNormalization" and opset < 7 and int(a.get("is_test", 0)) == 0:
            raise ConversionError(f"{label}: attribute is_test=0 (training, opset {opset}) is "
                                  "not supported")


def _upgraded(model: Any, notes: list[str] | None) -> Any:
    """`model` checked, read as IR >= 4 and upgraded to opset >= MIN_OPSET."""
    import onnx
    from onnx import version_converter

    opset = _default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and opset > newest:
        raise ConversionError(
            f"onnx: the model's opset {opset} is newer than the installed onnx "
            f"{onnx.__version__} supports (opset {newest} at most); upgrade the onnx package "
            "(pip install -U onnx)")
    if model.ir_version > onnx.IR_VERSION:
        raise ConversionError(
            f"onnx: the model's IR version {model.ir_version} is newer than the installed onnx "
            f"{onnx.__version__} supports (IR version {onnx.IR_VERSION} at most); upgrade the "
            "onnx package (pip install -U onnx)")
    if model.ir_version < 4:
        # IR 3 lists every initializer as a graph input; exporters often did not
        listed = {vi.name for vi in model.graph.input}
        missing = [t for t in model.graph.initializer if t.name not in listed]
        if missing:
            model = _copy(model)
            for t in missing:
                model.graph.input.append(onnx.helper.make_tensor_value_info(
                    t.name, t.data_type, list(t.dims)))
            if notes is not None:
                notes.append(f"onnx IR version {model.ir_version}: {len(missing)} initializers "
                             "not listed as graph inputs, read as inputs")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - onnx raises several types
        raise ModelFormatError(f"onnx: invalid model: {e}") from None
    if opset is None or opset >= MIN_OPSET:
        return model
    _check_old_forms(model, opset)
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
        upgraded.ir_version = max(upgraded.ir_version, 7)  # opset 13 needs IR version 7
        onnx.checker.check_model(upgraded)
    except Exception as e:  # noqa: BLE001 - the converter raises several types
        raise ConversionError(f"onnx: could not upgrade opset {opset} to {MIN_OPSET} with "
                              f"onnx.version_converter ({type(e).__name__}: {e})") from None
    if notes is not None:
        notes.append(f"onnx opset {opset} -> {MIN_OPSET} upgraded (onnx.version_converter)")
    logger.info("onnx: opset %s upgraded to %s", opset, MIN_OPSET)
    return upgraded


def _copy(model: Any) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


# ONNX element types a graph input may have -> the IR dtype it is recorded as
_INPUT_DTYPES = {1: DType.FLOAT32, 6: DType.INT32, 7: DType.INT32}  # FLOAT, INT32, INT64


def from_onnx(src: Any, *, batch_size: int = 1, notes: list[str] | None = None) -> ir.Graph:
    """Converts an ONNX model (path, bytes or ModelProto) to an IR graph in NHWC layout.

    A model below opset 13 is first upgraded to opset 13 with `onnx.version_converter`
    (Softmax's 2-D coercion becomes Flatten/Softmax/Reshape, Clip's and Pad's attributes
    become inputs, Upsample becomes Resize, ...); an IR version 3 file whose initializers
    are not graph inputs is read as if they were.

    Args:
        src: the model.
        batch_size: the value of a symbolic first input dimension; 1 by default.
        notes: when given, receives one line per change made to the source before import
            (e.g. "onnx opset 9 -> 13 upgraded (onnx.version_converter)").

    Returns:
        The graph before any pass; inputs and outputs keep the ONNX names, shapes and layout.

    Raises:
        ConversionError: an op, attribute or dtype is unsupported (the message names the
            node, the op, the attribute value and the frontend), the model's opset or IR
            version is newer than the installed onnx package knows, or the upgrade failed.
        ModelFormatError: `src` is not a valid ONNX model.
    """
    import onnx

    source = load_onnx(src)
    legacy = {nd.output[0] for nd in source.graph.node
              if nd.domain in ("", "ai.onnx") and nd.output and (
                  nd.op_type == "Upsample" or (nd.op_type == "Resize" and
                                               (_default_opset(source) or 13) < 11))}
    model = _upgraded(source, notes)
    im = _Importer(model, batch_size)
    im.legacy_resize = legacy
    im.used = {i for n in model.graph.node for i in n.input if i} | {
        o.name for o in model.graph.output}
    g = model.graph
    for init in g.initializer:
        im.consts[init.name] = onnx.numpy_helper.to_array(init)
    inputs: list[str] = []
    for vi in g.input:
        if vi.name in im.consts:
            continue
        et = vi.type.tensor_type.elem_type
        if et not in _INPUT_DTYPES:
            raise ConversionError(f"onnx: input '{vi.name}' has element type "
                                  f"{onnx.TensorProto.DataType.Name(et)}; only FLOAT, INT32 "
                                  "and INT64 inputs are supported")
        shape = _value_shape(vi, batch_size)
        if shape is None or any(d is None for d in shape):
            raise ConversionError(f"onnx: input '{vi.name}' has shape "
                                  f"{None if shape is None else list(shape)} with an unknown "
                                  "dimension besides the first; export a fixed shape")
        # int64 inputs (ids) are recorded as int32: the engine's integer dtype (FORMAT.md)
        im.tensors[vi.name] = ir.Tensor(vi.name, shape,  # type: ignore[arg-type]
                                        _INPUT_DTYPES[et])
        im.define(vi.name, vi.name, _ident(len(shape)))
        inputs.append(vi.name)
    for idx, node in enumerate(g.node):
        im.node = node
        label = (f"onnx: node '{node.name}' ({node.op_type})" if node.name else
                 f"onnx: node #{idx} ({node.op_type}, outputs {list(node.output)})")
        try:
            if node.domain not in ("", "ai.onnx"):
                raise _Fail(f"domain '{node.domain}' is not supported")
            if _fold_node(im):
                continue
            fn = _OPS.get(node.op_type)
            if fn is None:
                raise _Fail(f"op {node.op_type} is not supported; supported ops: "
                            f"{', '.join(SUPPORTED_ONNX_OPS)}")
            fn(im)
        except _Fail as e:
            raise ConversionError(f"{label}: {e}") from None
    outputs: list[str] = []
    im.node = type("N", (), {"name": "output", "op_type": "output"})()
    for vi in g.output:
        name = vi.name
        if name in im.consts:
            raise ConversionError(f"onnx: output '{name}' is a constant; nothing to compute")
        ir_name = im.get(name, _ident(im.rank(name)))
        if ir_name in inputs or ir_name in outputs:  # an output must be computed, once
            ir_name = im.emit(InternalOp.IDENTITY, [ir_name], f"{name}/copy")
        if ir_name != name and name not in inputs:
            if name in im.tensors:  # the name holds another layout of the value
                _rename(im, name, im.unique(f"{name}/internal"))
            ir_name = _rename(im, ir_name, name)
        outputs.append(ir_name)
    graph = ir.Graph(im.tensors, tuple(im.nodes), tuple(inputs), tuple(outputs),
                     g.name or "onnx_model")
    graph = graph.rebuilt(graph.nodes)
    for vi in g.output:  # the declared output shapes must match what we computed
        shape = _value_shape(vi, batch_size)
        got = graph.tensors[outputs[list(g.output).index(vi)]].shape
        if shape is not None and all(d is not None for d in shape) and tuple(shape) != got:
            raise ConversionError(f"onnx: output '{vi.name}' has shape {list(got)} after "
                                  f"conversion but the model declares {list(shape)}")
    logger.debug("onnx model '%s': %d nodes", graph.name, len(graph.nodes))
    return graph


def _rename(im: _Importer, old: str, new: str) -> str:
    """Renames IR tensor `old` (a node output) to `new` (the ONNX output name)."""
    from dataclasses import replace

    t = im.tensors.pop(old)
    im.tensors[new] = replace(t, name=new)
    im.nodes = [replace(n, outputs=tuple(new if o == old else o for o in n.outputs),
                        inputs=tuple(new if i == old else i for i in n.inputs))
                for n in im.nodes]
    for k, v in list(im.values.items()):
        if v[0] == old:
            im.values[k] = (new, v[1])
    for k2, v2 in list(im.layouts.items()):
        if v2 == old:
            im.layouts[k2] = new
    return new
