"""Post-training int8 lowering from calibration ranges (FORMAT.md "Integer (int8) execution").

`quantize_int8(graph, ranges)` turns an optimized float graph into a mixed one:

- ops the int8 spec covers run on INT8 tensors: activations asymmetric per tensor from the
  calibrated min/max (widened to include 0); weights symmetric per output channel (axis 0
  for conv and fully connected, 3 for depthwise); biases INT32 with scale s_x * s_w[c];
  constant operands of ADD/SUB/MUL/CONCATENATION per tensor;
- MAX_POOL_2D, AVERAGE_POOL_2D, REDUCE_MAX, RESHAPE, PAD, TRANSPOSE, SLICE, GATHER (its int32 indices
  untouched; a float table quantized per tensor) and RESIZE (nearest; bilinear in TFLite's
  three coordinate modes without explicit scales, else it stays float) keep their input's quantization (the engine's int8 pools need it); SOFTMAX and LOGISTIC output s = 1/256, z = -128 and
  TANH s = 1/128, z = 0; HARD_SWISH, RELU, RELU6, CLAMP, HARD_SIGMOID, LEAKY_RELU, ELU (alpha
  1 only: TFLite's int8 ELU has none; another alpha stays float), GELU, PRELU and
  CONCATENATION take their calibrated output range (CONCATENATION requantizes inputs
  quantized otherwise); PRELU's constant slope is quantized as TensorFlow's converter does,
  symmetric per tensor (s = max|slope| / 127, z = 0), a computed slope as an activation;
- a fused RELU/RELU6/RELU_N1_TO_1 stays fused (a clamp in the quantized domain); a fused
  SIGMOID/TANH/HARD_SWISH is split off, as TensorFlow's quantizer does: the op writes an int8
  tensor quantized from the range calibrated before the activation
  (`calibrate.pre_activation_key`), then an int8 LOGISTIC/TANH/HARD_SWISH op follows; without
  that range the node stays float;
- BATCH_MATMUL (TFLite's int8 BatchMatMul) takes both operands as they come, each int8
  asymmetric per tensor: a computed one from its calibrated range, a constant one from its
  min/max (TensorFlow's converter quantizes a constant BATCH_MATMUL operand so, not
  symmetrically per channel as it does dense weights); the output its calibrated range;
- MAXIMUM and MINIMUM compare raw int8 values, so the inputs and the output share one
  quantization, the output's calibrated range, as TensorFlow's quantizer does (a same-scale op:
  its output's parameters are given to its operands). An input computed only for this op is
  written in that quantization directly, also through RESHAPE, TRANSPOSE, SLICE, MAX_POOL_2D
  or REDUCE_MAX ops between (a chain of them, e.g. ONNX's variadic Max, shares one); another
  input is requantized (int8 -> int8 QUANTIZE), a constant is quantized with it;
- every other op (DIV, or an op whose weights are not constant) stays float, with
  DEQUANTIZE before and QUANTIZE after it;
- QUANTIZE follows each float graph input and DEQUANTIZE precedes each graph output, so the
  interface keeps its names, shapes and float dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from tether.converter._internal import ir
from tether._internal.int8 import activation_qparams
from tether.converter._internal.calibrate import pre_activation_key, pre_activation_tensor
from tether.converter._internal.ops import Activation, DType, OpType

from tether.errors import ConversionError

__all__ = ["INT8_OPS", "quantize_int8"]

INT8_OPS = frozenset({
    OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED, OpType.ADD, OpType.SUB,
    OpType.MUL, OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D, OpType.MEAN, OpType.RESHAPE,
    OpType.CONCATENATION, OpType.PAD, OpType.TRANSPOSE, OpType.SOFTMAX, OpType.LOGISTIC,
    OpType.TANH, OpType.HARD_SWISH, OpType.RELU, OpType.RELU6, OpType.CLAMP,
    OpType.HARD_SIGMOID, OpType.SLICE, OpType.GATHER, OpType.RESIZE, OpType.REDUCE_MAX,
    OpType.LEAKY_RELU, OpType.ELU, OpType.GELU, OpType.PRELU, OpType.BATCH_MATMUL,
    OpType.MAXIMUM, OpType.MINIMUM,
})
# ops whose inputs and output share one quantization (the engine compares raw int8 values)
_SHARED = frozenset({OpType.MAXIMUM, OpType.MINIMUM})
_SHARE_THROUGH = frozenset({OpType.RESHAPE, OpType.TRANSPOSE, OpType.SLICE, OpType.MAX_POOL_2D,
                            OpType.REDUCE_MAX})
_PASSTHROUGH = frozenset({OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D, OpType.RESHAPE,
                          OpType.PAD, OpType.TRANSPOSE, OpType.SLICE, OpType.GATHER,
                          OpType.RESIZE, OpType.REDUCE_MAX})
_FIXED = {OpType.SOFTMAX: (1 / 256, -128), OpType.LOGISTIC: (1 / 256, -128),
          OpType.TANH: (1 / 128, 0)}
_INT8_ACTS = frozenset({Activation.NONE, Activation.RELU, Activation.RELU6,
                        Activation.RELU_N1_TO_1})
_WEIGHTED = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)
# fused activations that become a separate int8 op after the one they were fused into
_SPLIT = {Activation.SIGMOID: OpType.LOGISTIC, Activation.TANH: OpType.TANH,
          Activation.HARD_SWISH: OpType.HARD_SWISH}


def _resize_int8_ok(node: ir.Node) -> bool:
    """An int8 RESIZE fuses no activation; bilinear is TFLite's integer kernel: coordinate
    modes half_pixel, align_corners or asymmetric and no explicit scales (FORMAT.md)."""
    if node.activation != Activation.NONE:
        return False
    if int(node.attrs.get("interpolation", (0,))[0]) == 0:
        return True
    return (int(node.attrs.get("coordinate_mode", (0,))[0]) in (0, 2, 3)
            and "scales" not in node.attrs)


def _affine(lo: float, hi: float) -> ir.Quantization:
    """Asymmetric int8 parameters covering [lo, hi] and 0 exactly (the grid compression's
    simulation uses too: `tether._internal.int8.activation_qparams`)."""
    scale, zp = activation_qparams(lo, hi)
    return ir.Quantization((float(scale),), (zp,))


def _quantize_values(x: np.ndarray, q: ir.Quantization) -> np.ndarray:
    s = np.asarray(q.scale, np.float64)
    z = np.asarray(q.zero_point, np.float64)
    if q.axis is None:
        s, z = s.reshape(()), z.reshape(())
    else:
        shape = [1] * x.ndim
        shape[q.axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)


class _Lowering:
    """Walks the float graph once; node inputs keep referring to the float names.

    A float tensor computed by an int8 node exists as its int8 twin only; its float name is
    produced by a DEQUANTIZE the first time a float op or a graph output needs it.
    """

    def __init__(self, graph: ir.Graph, ranges: Mapping[str, tuple[float, float]],
                 bias_corrections: Mapping[str, np.ndarray] | None = None) -> None:
        self.g = graph
        self.ranges = ranges
        self.bias_corrections = dict(bias_corrections or {})
        self.graph = ir.GraphBuilder(graph.tensors)
        self.tensors = self.graph.tensors
        self.nodes = self.graph.nodes
        self.int8_of: dict[str, str] = {}      # float name -> int8 twin
        self.has_float: set[str] = set(graph.inputs)
        self.quant: dict[str, ir.Quantization] = {}
        self.requantized: dict[tuple[str, ir.Quantization], str] = {}  # (twin, q) -> tensor

    def unique(self, base: str) -> str:
        return self.graph.unique(base)

    def act_quant(self, name: str) -> ir.Quantization:
        if name not in self.quant:
            if name not in self.ranges:
                raise ConversionError(f"int8: no calibration range for tensor '{name}'")
            self.quant[name] = _affine(*self.ranges[name])
        return self.quant[name]

    def const_int8(self, name: str, q: ir.Quantization) -> str:
        """A new int8 constant: float constant `name` quantized with `q`."""
        t = self.tensors[name]
        new = ir.Tensor(self.unique(f"{name}/int8"), t.shape, DType.INT8,
                        _quantize_values(np.asarray(t.data, np.float64), q), q)
        self.tensors[new.name] = new
        return new.name

    def as_int8(self, name: str, node: ir.Node) -> str:
        """The int8 twin of float tensor `name` (a QUANTIZE or constant made once)."""
        if name in self.int8_of:
            return self.int8_of[name]
        t = self.tensors[name]
        if t.is_constant:
            q = _affine(float(np.min(t.data)), float(np.max(t.data)))
            new = self.tensors[self.const_int8(name, q)]
        else:
            new = ir.Tensor(self.unique(f"{name}/int8"), t.shape, DType.INT8, None,
                            self.act_quant(name))
            self.tensors[new.name] = new
            self.nodes.append(ir.Node(OpType.QUANTIZE, f"{node.name}/quantize", (name,),
                                      (new.name,)))
        self.int8_of[name] = new.name
        return new.name

    def slope(self, name: str, node: ir.Node) -> str:
        """PRELU's int8 slope: a constant symmetric per tensor, as TensorFlow's converter
        quantizes it (s = max|slope| / 127, z = 0); a computed one as any activation."""
        t = self.tensors[name]
        if not t.is_constant:
            return self.as_int8(name, node)
        v = np.asarray(t.data, np.float64)
        amax = float(np.max(np.abs(v))) if v.size else 0.0
        return self.const_int8(name, ir.Quantization((amax / 127.0 if amax > 0 else 1e-8,), (0,)))

    def shared(self, name: str, q: ir.Quantization, node: ir.Node) -> str:
        """Input `name` of a MAXIMUM/MINIMUM quantized with `q`, the op's shared quantization:
        a constant quantized with it, a computed tensor's twin as it is when already quantized
        so, else requantized (int8 -> int8 QUANTIZE)."""
        t = self.tensors[name]
        if t.is_constant:
            return self.const_int8(name, q)
        twin = self.as_int8(name, node)
        if self.tensors[twin].quant == q:
            return twin
        if (twin, q) not in self.requantized:
            new = ir.Tensor(self.unique(f"{name}/requantized"), t.shape, DType.INT8, None, q)
            self.tensors[new.name] = new
            self.nodes.append(ir.Node(OpType.QUANTIZE, f"{node.name}/requantize", (twin,),
                                      (new.name,)))
            self.requantized[(twin, q)] = new.name
        return self.requantized[(twin, q)]

    def share_quantization(self) -> None:
        """Gives an input of an int8 MAXIMUM/MINIMUM the op's output quantization where that
        input is computed for the op alone, as TensorFlow's quantizer propagates a same-scale
        op's parameters to its operands: its producer (or QUANTIZE) writes it so and no
        requantization is needed, through RESHAPE, TRANSPOSE, SLICE, MAX_POOL_2D and
        REDUCE_MAX producers read by nothing else. Walks the graph backwards, so a chain of
        them shares the last one's quantization."""
        uses: dict[str, int] = {}
        producer: dict[str, ir.Node] = {}
        for node in self.g.nodes:
            producer.update((o, node) for o in node.outputs)
            for n in node.inputs:
                if n is not None:
                    uses[n] = uses.get(n, 0) + 1
        for node in reversed(self.g.nodes):
            if node.op not in _SHARED or not self.int8_ok(node):
                continue
            q = self.act_quant(node.outputs[0])
            for name in node.inputs:
                n = name
                while (n is not None and not self.g.tensors[n].is_constant and uses[n] == 1
                       and n not in self.g.outputs and n not in self.quant
                       and n in self.ranges):
                    self.quant[n] = q
                    # through ops that keep their input's quantization and commute with the
                    # clamp to q's range (TensorFlow propagates through them too)
                    p = producer.get(n)
                    n = (p.inputs[0] if p is not None and p.op in _SHARE_THROUGH
                         and self.int8_ok(p) else None)

    def as_float(self, name: str, node_name: str) -> str:
        """Makes float tensor `name` exist (DEQUANTIZE of its int8 twin, once)."""
        t = self.tensors[name]
        if t.is_constant or name in self.has_float:
            return name
        self.nodes.append(ir.Node(OpType.DEQUANTIZE, f"{node_name}/dequantize",
                                  (self.int8_of[name],), (name,)))
        self.has_float.add(name)
        return name

    def weights(self, node: ir.Node, x_q: ir.Quantization) -> tuple[str, str | None]:
        w = self.tensors[node.inputs[1]]  # type: ignore[index]
        axis = 3 if node.op == OpType.DEPTHWISE_CONV_2D else 0
        wv = np.asarray(w.data, np.float64)
        other = tuple(i for i in range(wv.ndim) if i != axis)
        amax = np.max(np.abs(wv), axis=other)
        scale = np.where(amax > 0, amax / 127.0, 1e-8)
        wq = ir.Quantization(tuple(float(s) for s in scale), (0,) * len(scale), axis)
        w_new = ir.Tensor(self.unique(f"{w.name}/int8"), w.shape, DType.INT8,
                          _quantize_values(wv, wq), wq)
        self.tensors[w_new.name] = w_new
        b_name = node.inputs[2] if len(node.inputs) > 2 else None
        if b_name is None:
            return w_new.name, None
        b = self.tensors[b_name]
        bscale = x_q.scale[0] * np.asarray(wq.scale, np.float64)
        bf = np.asarray(b.data, np.float64)
        if node.name in self.bias_corrections:  # E[W_q x] - E[W x], per output channel
            bf = bf - np.asarray(self.bias_corrections[node.name], np.float64)
        bv = np.clip(np.round(bf / bscale), -2**31, 2**31 - 1)
        bq = ir.Quantization(tuple(float(s) for s in bscale), (0,) * len(bscale), 0)
        b_new = ir.Tensor(self.unique(f"{b.name}/int32"), b.shape, DType.INT32,
                          bv.astype(np.int32), bq)
        self.tensors[b_new.name] = b_new
        return w_new.name, b_new.name

    def output_quant(self, node: ir.Node, out: str, x_q: ir.Quantization) -> ir.Quantization:
        """The int8 quantization of `node`'s output `out` (FORMAT.md's constraints)."""
        if node.op in _PASSTHROUGH:
            return x_q
        if node.op in _FIXED:
            s, z = _FIXED[node.op]  # type: ignore[index]
            return ir.Quantization((s,), (z,))
        q = self.act_quant(out)
        if node.op == OpType.HARD_SWISH and q.scale[0] <= x_q.scale[0] / 128:
            # the engine's (TFLite's) fixed-point hard-swish needs s_y > s_x / 128: a
            # degenerate calibrated range (inputs all below -3) is widened to s_y = s_x / 64
            lo = min(self.ranges[out][0], 0.0)
            q = _affine(lo, lo + 255 * x_q.scale[0] / 64)
        return q

    def int8_ok(self, node: ir.Node) -> bool:
        if node.op not in INT8_OPS:
            return False
        if node.op == OpType.RESIZE and not _resize_int8_ok(node):
            return False
        if node.op == OpType.ELU and float(node.attrs.get("alpha", (1.0,))[0]) != 1.0:
            return False  # TFLite's int8 ELU (a table of expm1) has no alpha
        if node.op in _SHARED and node.activation not in _INT8_ACTS:
            return False  # its inputs share the quantization of the tensor it writes
        if node.activation not in _INT8_ACTS:
            if node.activation not in _SPLIT or node.op in _FIXED:
                return False
            if (node.op not in _PASSTHROUGH
                    and pre_activation_key(node.outputs[0]) not in self.ranges):
                return False
        if node.op in _WEIGHTED:
            w = self.g.tensors[node.inputs[1]]  # type: ignore[index]
            b = (self.g.tensors[node.inputs[2]]  # type: ignore[index]
                 if len(node.inputs) > 2 and node.inputs[2] is not None else None)
            if not w.is_constant or (b is not None and not b.is_constant):
                return False
        return True

    def run(self) -> ir.Graph:
        self.share_quantization()
        for node in self.g.nodes:
            if not self.int8_ok(node):
                for n in node.inputs:
                    if n is not None:
                        self.as_float(n, node.name)
                self.nodes.append(node)
                self.has_float.update(node.outputs)
                continue
            ins: tuple[str | None, ...]
            if node.op in _SHARED:  # one quantization, the output's, for inputs and output
                x_q = self.act_quant(node.outputs[0])
                ins = tuple(None if n is None else self.shared(n, x_q, node)
                            for n in node.inputs)
            else:
                x = self.as_int8(node.inputs[0], node)  # type: ignore[arg-type]
                x_quant = self.tensors[x].quant
                assert x_quant is not None
                x_q = x_quant
                if node.op in _WEIGHTED:
                    w, b = self.weights(node, x_q)
                    ins = (x, w, b)
                elif node.op == OpType.GATHER:  # the indices stay int32
                    ins = (x, node.inputs[1])
                elif node.op == OpType.PRELU:
                    ins = (x, self.slope(node.inputs[1], node))  # type: ignore[arg-type]
                else:
                    ins = (x,) + tuple(None if n is None else self.as_int8(n, node)
                                       for n in node.inputs[1:])
            out = node.outputs[0]
            split = _SPLIT.get(node.activation)
            if split is not None:  # op -> int8 pre-activation tensor -> int8 activation op
                mid_q = x_q if node.op in _PASSTHROUGH else self.act_quant(
                    pre_activation_key(out))
                mid = ir.Tensor(self.unique(f"{pre_activation_tensor(out)}/int8"),
                                self.tensors[out].shape, DType.INT8, None, mid_q)
                self.tensors[mid.name] = mid
                self.nodes.append(replace(node, inputs=ins, outputs=(mid.name,),
                                          activation=Activation.NONE))
                node = ir.Node(split, f"{node.name}/{split.name.lower()}", (mid.name,),
                               node.outputs)
                ins, x_q = (mid.name,), mid_q
            y = ir.Tensor(self.unique(f"{out}/int8"), self.tensors[out].shape, DType.INT8,
                          None, self.output_quant(node, out, x_q))
            self.tensors[y.name] = y
            self.nodes.append(replace(node, inputs=ins, outputs=(y.name,)))
            self.int8_of[out] = y.name
        for name in self.g.outputs:
            self.as_float(name, name)
        graph = ir.Graph(self.tensors, tuple(self.nodes), self.g.inputs, self.g.outputs,
                         self.g.name)
        return graph.rebuilt(graph.nodes)


def quantize_int8(graph: ir.Graph, ranges: Mapping[str, tuple[float, float]],
                  bias_corrections: Mapping[str, np.ndarray] | None = None) -> ir.Graph:
    """Returns the int8 version of an optimized float graph (see the module docstring).

    Args:
        graph: a lowered float graph (file ops only).
        ranges: tensor name -> (min, max) from calibration, for every non-constant tensor.
        bias_corrections: conv/depthwise/FC node name -> per-output-channel expected output
            error of its int8 weights, E[W_q x] - E[W x], subtracted from the float bias
            before it is quantized to int32 (bias correction, Nagel et al. 2019); a node
            that stays float ignores its entry. None (default): no correction.

    Raises:
        ConversionError: a range is missing, the graph is already quantized, or a bias
            correction names no conv/depthwise/FC node or has the wrong length.
    """
    if any(t.dtype in (DType.INT8, DType.UINT8) or t.quant is not None
           for t in graph.tensors.values()):  # int32 ids (GATHER's indices) are no quantization
        raise ConversionError(f"int8: graph '{graph.name}' already has quantized tensors; "
                              "quantize a float model")
    for name, corr in (bias_corrections or {}).items():
        nodes = [n for n in graph.nodes if n.name == name and n.op in _WEIGHTED]
        if not nodes:
            raise ConversionError(
                f"int8: bias correction for '{name}', which is no conv, depthwise or fully "
                f"connected node of graph '{graph.name}'; the plan was made for another model "
                "(calibrate this one)")
        for n in nodes:
            b = graph.tensors[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
            want = b.shape[0] if b is not None else None
            if want is None or np.shape(corr) != (want,):
                raise ConversionError(
                    f"int8: bias correction for node {n.describe()} has shape "
                    f"{np.shape(corr)}; its bias has shape {None if b is None else b.shape} "
                    "(one value per output channel); recalibrate this model")
    result = _Lowering(graph, ranges, bias_corrections).run()
    ir.validate(result, context="after int8 lowering")
    return result
