"""Peer runtimes run beside tether in one process: LiteRT and ONNX Runtime.

Each peer is a `Runner`: `run(x)` for one input array of the model's full input shape.
A runner is built from the same Keras model tether converts, through the peer's own
converter (TensorFlow's TFLite converter; tf2onnx), so a comparison is like for like.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["Runner", "ENGINES", "make_runner", "keras_to_tflite", "keras_to_onnx",
           "litert_arena_bytes", "litert_runner"]

logger = logging.getLogger(__name__)

ENGINES = ("tether", "litert", "onnxruntime", "keras")


@dataclass
class Runner:
    """One engine ready to run one model.

    Attributes:
        engine: Engine name (one of ENGINES).
        run: Maps one input array (the model's input shape, batch included) to the output.
        model_bytes: Size of the engine's model file.
        arena_bytes: Activation memory the engine planned (tether), or read back from its
            arena (LiteRT, `litert_arena_bytes`); None when the engine exposes neither.
    """

    engine: str
    run: Callable[[np.ndarray], np.ndarray]
    model_bytes: int
    arena_bytes: Optional[int] = None


@contextlib.contextmanager
def _quiet() -> Any:
    """Silences converters and runtimes that write to stdout/stderr, from Python or from C++
    (descriptor 2: `tether._internal.quiet`)."""
    from tether._internal.quiet import native_stderr_quiet

    with native_stderr_quiet(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        yield


def _fixed_signature(model: Any, batch_size: int) -> Any:
    import tensorflow as tf

    shape = (batch_size,) + tuple(model.inputs[0].shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def forward(x: Any) -> Any:
        return model(x, training=False)

    return forward, spec


def keras_to_tflite(model: Any,
                    representative: Optional[np.ndarray] = None) -> bytes:
    """TensorFlow's TFLite converter; full-integer int8 when `representative` is given.

    The batch dimension is left dynamic; runners resize it before allocation. (Converting
    a concrete function of a Keras 3 model instead gives NaN outputs in LiteRT.)
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def gen() -> Any:
            for x in representative:
                yield [x[None].astype(np.float32)]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with _quiet():
        return bytes(converter.convert())


def keras_to_onnx(model: Any, batch_size: int = 1, opset: int = 17) -> bytes:
    """tf2onnx over a frozen, fixed-shape tf.function of the model.

    Freezing first turns every captured variable and tensor (e.g. a Normalization layer's
    mean and variance) into a constant; converting the tf.function directly would leave
    those as extra graph inputs. The graph's input is named `input`, its outputs `output`,
    `output_1`, ...
    """
    import onnx
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    forward, _ = _fixed_signature(model, batch_size)
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    with _quiet():
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=inputs, output_names=outputs, opset=opset)
    rename = {inputs[0]: "input"}
    rename.update({name: "output" if i == 0 else f"output_{i}"
                   for i, name in enumerate(outputs)})
    graph = proto.graph
    for value in list(graph.input) + list(graph.output):
        value.name = rename.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def litert_arena_bytes(content: bytes, input_shape: tuple[int, ...]) -> int:
    """Bytes spanned by LiteRT's activation tensors in TFLite's arena (builtin kernels).

    LiteRT reports no arena size, so this reads it back: an interpreter without the default
    (XNNPACK) delegate plans every graph input and op output into one arena; the span from
    the lowest to the highest byte they occupy, op temporaries (im2col buffers) included where
    the interpreter lists them, is that plan's activation memory; unlisted temporaries make it
    a lower bound. With XNNPACK, LiteRT keeps a workspace of its own instead, which no API
    reports.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=content,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(inp, list(input_shape), strict=False)
    interp.allocate_tensors()
    # Arena tensors: graph inputs, op outputs, and the op temporaries the interpreter lists
    # (tensors no op reads); every other listed tensor is a constant in the model's buffers.
    ops = interp._get_ops_details()
    read = {int(i) for op in ops for i in op["inputs"] if i >= 0}
    planned = {d["index"] for d in interp.get_input_details()}
    planned.update(int(i) for op in ops for i in op["outputs"] if i >= 0)
    planned.update(d["index"] for d in interp.get_tensor_details() if d["index"] not in read)
    spans = []
    for index in sorted(planned):
        view = interp.tensor(index)()
        spans.append((view.ctypes.data, view.ctypes.data + view.nbytes))
    return max(end for _, end in spans) - min(start for start, _ in spans) if spans else 0


def litert_runner(content: bytes, input_shape: tuple[int, ...], threads: int = 1,
                  reference: bool = False) -> Runner:
    """LiteRT (default delegates, i.e. XNNPACK) on a .tflite, input resized to `input_shape`;
    `reference`: its reference kernels instead (BUILTIN_REF: TFLite's integers for int8)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    with _quiet():  # "Created TensorFlow Lite XNNPACK delegate", from C++
        interp = Interpreter(model_content=content, num_threads=threads,
                             experimental_op_resolver_type=kind)
        inp = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(inp, list(input_shape), strict=False)
        interp.allocate_tensors()
    out = interp.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp, x)
        interp.invoke()
        return np.array(interp.get_tensor(out))

    return Runner("litert", run, len(content), litert_arena_bytes(content, input_shape))


def _litert_runner(model: Any, threads: int) -> Runner:
    return litert_runner(keras_to_tflite(model), (1, *model.inputs[0].shape[1:]), threads)


def _onnxruntime_runner(model: Any, threads: int) -> Runner:
    return onnxruntime_runner(keras_to_onnx(model), threads)


def onnxruntime_runner(content: bytes, threads: int = 1) -> Runner:
    """ONNX Runtime (CPU execution provider, `threads` intra-op threads) on an .onnx."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(content, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x})[0]

    return Runner("onnxruntime", run, len(content))


def _tether_runner(model: Any, threads: int) -> Runner:
    from tether.converter import convert
    from tether.device import Engine

    data = convert(model).to_bytes()
    engine = Engine(data, threads=threads)

    def run(x: np.ndarray) -> np.ndarray:
        return engine.run(x)  # type: ignore[return-value]

    return Runner("tether", run, len(data), engine.arena_bytes)


def _keras_runner(model: Any, threads: int) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    return Runner("keras", run, 0)


_FACTORIES = {"tether": _tether_runner, "litert": _litert_runner,
              "onnxruntime": _onnxruntime_runner, "keras": _keras_runner}


def make_runner(engine: str, model: Any, threads: int = 1) -> Runner:
    """Builds `engine`'s runner for a Keras model (conversion included).

    Raises:
        ValueError: unknown engine name (the message lists the known ones).
    """
    if engine not in _FACTORIES:
        raise ValueError(f"unknown engine '{engine}'; choose from {', '.join(ENGINES)}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1. Received: threads={threads}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return _FACTORIES[engine](model, threads)
