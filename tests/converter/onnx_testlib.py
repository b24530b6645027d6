"""Helpers for the ONNX/TFLite frontend tests: tiny ONNX graphs and reference runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def model(nodes: Sequence[onnx.NodeProto], x_shape: Sequence[int], y_shape: Sequence[int] | None,
          inits: dict[str, np.ndarray] | None = None, opset: int = 17, x: str = "x",
          y: str = "y") -> onnx.ModelProto:
    """One float input `x`, one float output `y` (shape None: from onnx shape inference)."""
    g = helper.make_graph(
        list(nodes), "g", [helper.make_tensor_value_info(x, TensorProto.FLOAT, list(x_shape))],
        [] if y_shape is None else [helper.make_tensor_value_info(y, TensorProto.FLOAT,
                                                                  list(y_shape))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if y_shape is None:
        inferred = onnx.shape_inference.infer_shapes(m)
        (vi,) = [v for v in inferred.graph.value_info if v.name == y]
        m.graph.output.append(vi)
    return m


def ort_run(m: onnx.ModelProto | bytes | str, x: np.ndarray) -> np.ndarray:
    """onnxruntime with graph optimizations disabled (the source runtime's own math)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = m.SerializeToString() if isinstance(m, onnx.ModelProto) else m
    s = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def litert_run(content: bytes, x: np.ndarray, reference: bool = False) -> np.ndarray:
    """LiteRT on one input (quantized inputs/outputs handled by the caller); `reference`:
    TFLite's reference kernels (BUILTIN_REF), the integers the engine reproduces exactly
    (the default resolver's XNNPACK requantizes in float, off by one step at times)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    it = Interpreter(model_content=content, experimental_op_resolver_type=kind)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], list(x.shape), strict=False)
    it.allocate_tensors()
    it.set_tensor(d["index"], x.astype(d["dtype"]))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def engine_run(data: bytes, x: np.ndarray) -> np.ndarray:
    from tether.device import Engine

    return np.asarray(Engine(data).run(x))


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - ref| / max |ref| (the issue's relative max error)."""
    y = np.asarray(y, np.float64)
    ref = np.asarray(ref, np.float64)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-12))


def rand(shape: Sequence[int], seed: int = 0, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, tuple(shape)).astype(np.float32)


def convert_and_compare(m: onnx.ModelProto, x: np.ndarray, label: str = "",
                        parity: dict[str, float] | None = None
                        ) -> tuple[object, np.ndarray, np.ndarray, float]:
    """`m` converted and run in the engine and in onnxruntime on `x`: (the TModel, the
    engine's output, onnxruntime's, their rel_err). Asserts equal shapes and a float32 output;
    records the worst error per `label` in `parity` (a test file's report figures). The caller
    asserts its own tolerance."""
    from tether.converter import convert

    ref = ort_run(m, x)
    tm = convert(m)
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape and y.dtype == np.float32, (label, y.shape, ref.shape)
    err = rel_err(y, ref)
    if parity is not None:
        parity[label] = max(parity.get(label, 0.0), err)
    return tm, y, ref, err
