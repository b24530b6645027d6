"""Output parity of a converted model against its source runtime, for the conversion report.

The source runs in its own runtime (Keras; onnxruntime with graph optimizations disabled;
LiteRT) and the `.tmodel` in the C engine (`tether.device.Engine`). Heavy imports are lazy.

A float model that ends in a softmax is compared on the softmax's input (the logits): near-
uniform probabilities hide large errors before them (an untrained classifier's outputs all
read 1/classes whatever its weights), and saturated ones hide errors in the losing classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tether.errors import ConversionError

__all__ = ["Parity", "logits_graph", "measure", "source_logits_runner", "source_runner"]


@dataclass(frozen=True)
class Parity:
    """Engine vs source runtime on sample inputs.

    Attributes:
        runtime: the source runtime ("keras", "onnxruntime", "litert").
        samples: inputs compared.
        compared: "logits" (the input of the model's final softmax, engine vs source) or
            "outputs".
        max_rel_error: max over samples of max|y - ref| / max|ref|.
        max_abs_error: max over samples of max|y - ref|.
        top1_agreement: fraction of samples whose argmax agrees.
    """

    runtime: str
    samples: int
    max_rel_error: float
    max_abs_error: float
    top1_agreement: float
    compared: str = "outputs"

    def __str__(self) -> str:
        what = "logits (pre-softmax)" if self.compared == "logits" else "outputs"
        return (f"parity vs {self.runtime} on {self.samples} inputs, {what}: max rel error "
                f"{self.max_rel_error:.3g}, max abs error {self.max_abs_error:.3g}, top-1 "
                f"agreement {self.top1_agreement:.1%}")


Run = Callable[[np.ndarray], np.ndarray]
# onnxruntime input types -> the numpy dtype samples are handed over in
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32,
               "tensor(int64)": np.int64}


def source_runner(kind: str, src: Any) -> tuple[str, Run]:
    """Returns (runtime name, run(x) -> first output) for a source model."""
    if kind == "keras":
        def run_keras(x: np.ndarray) -> np.ndarray:
            y = src(x, training=False)
            y = y[0] if isinstance(y, (list, tuple)) else y
            return np.asarray(y)

        return "keras", run_keras
    if kind == "onnx":
        import onnxruntime as ort
        from tether.converter._internal.frontends.onnx import load_onnx

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(load_onnx(src).SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        first = sess.get_inputs()[0]
        dtype = _ORT_DTYPES.get(first.type, np.float32)
        return "onnxruntime", lambda x: sess.run(None, {first.name: x.astype(dtype)})[0]
    from ai_edge_litert.interpreter import Interpreter

    from tether._internal.quiet import native_stderr_quiet

    with native_stderr_quiet():  # LiteRT announces its XNNPACK delegate from C++
        if isinstance(src, (bytes, bytearray, memoryview)):
            interp = Interpreter(model_content=bytes(src))
        else:
            interp = Interpreter(model_path=str(src))
    d_in = interp.get_input_details()[0]
    d_out = interp.get_output_details()[0]
    shape: list[tuple[int, ...]] = []

    def run_litert(x: np.ndarray) -> np.ndarray:
        if shape != [x.shape]:
            interp.resize_tensor_input(d_in["index"], list(x.shape), strict=False)
            interp.allocate_tensors()
            shape[:] = [x.shape]
        scale, zp = d_in["quantization"]
        if d_in["dtype"] != np.float32 and scale:
            x = np.clip(np.round(x / scale) + zp, -128, 127)
        interp.set_tensor(d_in["index"], x.astype(d_in["dtype"]))
        interp.invoke()
        y = interp.get_tensor(d_out["index"])
        scale, zp = d_out["quantization"]
        if d_out["dtype"] != np.float32 and scale:
            y = (y.astype(np.float32) - zp) * scale
        return y

    return "litert", run_litert


def logits_graph(graph: Any) -> Any:
    """`graph` with its final softmax removed (its output is the softmax's input), or None
    when the first output is not a float softmax's."""
    from tether.converter._internal.ops import DType, OpType

    out = graph.outputs[0]
    producer = graph.producers().get(out)
    if producer is None:
        return None
    node = graph.nodes[producer]
    logits = node.inputs[0]
    if (node.op != OpType.SOFTMAX or logits in graph.inputs
            or graph.tensors[logits].dtype != DType.FLOAT32):
        return None
    nodes = [n for i, n in enumerate(graph.nodes) if i != producer]
    return graph.rebuilt(nodes, outputs=(logits, *graph.outputs[1:]))


def _keras_logits(model: Any) -> Run | None:
    import keras

    history = getattr(model.outputs[0], "_keras_history", None)
    layer = history[0] if history else None
    if layer is None:
        return None
    softmax = keras.activations.softmax
    if getattr(layer, "activation", None) is softmax:
        def run_linear(x: np.ndarray) -> np.ndarray:
            layer.activation = keras.activations.linear
            try:
                y = model(x, training=False)
            finally:
                layer.activation = softmax
            return np.asarray(y[0] if isinstance(y, (list, tuple)) else y)

        return run_linear
    is_softmax_layer = isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and layer.activation is softmax)
    if is_softmax_layer and len(layer._inbound_nodes) == 1:
        head = keras.Model(model.inputs, layer.input)
        return lambda x: np.asarray(head(x, training=False))
    return None


def _onnx_logits(src: Any) -> Run | None:
    import onnx
    import onnxruntime as ort
    from tether.converter._internal.frontends.onnx import load_onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(load_onnx(src))
    out = proto.graph.output[0].name
    node = next((n for n in proto.graph.node if out in n.output), None)
    if node is None or node.op_type != "Softmax":
        return None
    logits = node.input[0]
    proto.graph.output.append(onnx.ValueInfoProto(name=logits))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run([logits], {name: x})[0]


def _litert_logits(src: Any) -> Run | None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tether._internal.quiet import native_stderr_quiet

    with native_stderr_quiet():
        # Intermediate tensors are readable only outside delegates: the builtin kernels
        kwargs: dict[str, Any] = {
            "experimental_preserve_all_tensors": True,
            "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        if isinstance(src, (bytes, bytearray, memoryview)):
            interp = Interpreter(model_content=bytes(src), **kwargs)
        else:
            interp = Interpreter(model_path=str(src), **kwargs)
    d_in = interp.get_input_details()[0]
    out = interp.get_output_details()[0]["index"]
    op = next((o for o in interp._get_ops_details() if out in list(o["outputs"])), None)
    if op is None or op["op_name"] != "SOFTMAX" or d_in["dtype"] != np.float32:
        return None
    logits = int(op["inputs"][0])
    shape: list[tuple[int, ...]] = []

    def run(x: np.ndarray) -> np.ndarray:
        if shape != [x.shape]:
            interp.resize_tensor_input(d_in["index"], list(x.shape), strict=False)
            interp.allocate_tensors()
            shape[:] = [x.shape]
        interp.set_tensor(d_in["index"], x.astype(np.float32))
        interp.invoke()
        return np.array(interp.get_tensor(logits))

    return run


def source_logits_runner(kind: str, src: Any) -> Run | None:
    """run(x) -> the input of the source model's final softmax, or None when its first
    output is not a softmax's (or the runtime cannot show that tensor)."""
    if kind == "keras":
        return _keras_logits(src)
    if kind == "onnx":
        return _onnx_logits(src)
    return _litert_logits(src)


def measure(model_bytes: bytes, kind: str, src: Any, samples: np.ndarray,
            logits_bytes: bytes | None = None) -> Parity:
    """Runs `samples` (each of the model's input shape, batch included, or a stack of
    per-sample arrays without the batch axis) through the engine and the source runtime.

    `logits_bytes` (the model without its final softmax, from `logits_graph`) makes the
    comparison one of logits, when the source runtime can give its softmax's input too.

    Raises:
        ConversionError: the engine cannot run the model (its message is kept).
    """
    from tether.device import Engine

    from tether.errors import EngineError

    try:
        engine = Engine(model_bytes)
    except EngineError as e:
        raise ConversionError(f"parity check: the engine rejected the model ({e})") from None
    want = tuple(engine.inputs[0].shape)
    ids = engine.inputs[0].dtype == np.int32  # integer samples stay integers (ids)
    xs = np.asarray(samples, np.int64 if ids else np.float32)
    if xs.shape == want:
        xs = xs[None]
    elif xs.shape[1:] == want[1:] and want[0] == 1:
        xs = xs[:, None]
    elif xs.shape[1:] != want:
        raise ConversionError(f"parity samples of shape {list(xs.shape)} do not fit the input "
                              f"shape {list(want)}")
    runtime, run_src = source_runner(kind, src)
    compared = "outputs"
    if logits_bytes is not None:
        run_logits = source_logits_runner(kind, src)
        if run_logits is not None:
            engine = Engine(logits_bytes)
            run_src, compared = run_logits, "logits"
    rel = absolute = 0.0
    agree = 0
    for x in xs:
        y = np.asarray(engine.run(x), np.float64)
        ref = np.asarray(run_src(x), np.float64).reshape(y.shape)
        diff = float(np.abs(y - ref).max()) if y.size else 0.0
        absolute = max(absolute, diff)
        rel = max(rel, diff / max(float(np.abs(ref).max()), 1e-12))
        agree += int(np.argmax(y) == np.argmax(ref))
    return Parity(runtime, len(xs), rel, absolute, agree / max(len(xs), 1), compared)
