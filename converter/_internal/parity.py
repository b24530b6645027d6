"""Output parity of a converted model against its source runtime, for the conversion report.

The source runs in its own runtime (Keras; onnxruntime with graph optimizations disabled;
LiteRT) and the `.tmodel` in the C engine (`tether.device.Engine`). Heavy imports are lazy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tether.errors import ConversionError

__all__ = ["Parity", "measure", "source_runner"]


@dataclass(frozen=True)
class Parity:
    """Engine vs source runtime on sample inputs.

    Attributes:
        runtime: the source runtime ("keras", "onnxruntime", "litert").
        samples: inputs compared.
        max_rel_error: max over samples of max|y - ref| / max|ref|.
        max_abs_error: max over samples of max|y - ref|.
        top1_agreement: fraction of samples whose argmax agrees.
    """

    runtime: str
    samples: int
    max_rel_error: float
    max_abs_error: float
    top1_agreement: float

    def __str__(self) -> str:
        return (f"parity vs {self.runtime} on {self.samples} inputs: max rel error "
                f"{self.max_rel_error:.3g}, max abs error {self.max_abs_error:.3g}, top-1 "
                f"agreement {self.top1_agreement:.1%}")


Run = Callable[[np.ndarray], np.ndarray]


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
        name = sess.get_inputs()[0].name
        return "onnxruntime", lambda x: sess.run(None, {name: x})[0]
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


def measure(model_bytes: bytes, kind: str, src: Any, samples: np.ndarray) -> Parity:
    """Runs `samples` (each of the model's input shape, batch included, or a stack of
    per-sample arrays without the batch axis) through the engine and the source runtime.

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
    xs = np.asarray(samples, np.float32)
    if xs.shape == want:
        xs = xs[None]
    elif xs.shape[1:] == want[1:] and want[0] == 1:
        xs = xs[:, None]
    elif xs.shape[1:] != want:
        raise ConversionError(f"parity samples of shape {list(xs.shape)} do not fit the input "
                              f"shape {list(want)}")
    runtime, run_src = source_runner(kind, src)
    rel = absolute = 0.0
    agree = 0
    for x in xs:
        y = np.asarray(engine.run(x), np.float64)
        ref = np.asarray(run_src(x), np.float64).reshape(y.shape)
        diff = float(np.abs(y - ref).max()) if y.size else 0.0
        absolute = max(absolute, diff)
        rel = max(rel, diff / max(float(np.abs(ref).max()), 1e-12))
        agree += int(np.argmax(y) == np.argmax(ref))
    return Parity(runtime, len(xs), rel, absolute, agree / max(len(xs), 1))
