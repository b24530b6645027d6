"""`convert`: sniff the source, run its frontend, the passes, the optional int8 lowering and
the writer, and measure parity on request."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from tether.converter._internal import ir, passes, tmodel
from tether.converter._internal.model import ConversionReport, TModel, _io
from tether.converter._internal.ops import ACTIVATION_OF_OP, DType, OpType
from tether.converter._internal.plan_ranges import plan_ranges

from tether.errors import ConversionError

__all__ = ["SUPPORTED_SOURCES", "convert"]

logger = logging.getLogger("tether.converter")

SUPPORTED_SOURCES: tuple[str, ...] = (
    "keras.Model (Keras 3 Functional or Sequential)",
    "ONNX (.onnx path, onnx.ModelProto or bytes; any opset up to the installed onnx's, older than 13 upgraded)",
    "TFLite (.tflite path or bytes)",
)


def _producer() -> str:
    import tether

    return f"tether {tether.__version__}"


def _source_kind(model: Any) -> tuple[str, Any, str]:
    """Returns (frontend, source, label): frontend one of keras, onnx, tflite."""
    if _is_keras_model(model):
        return "keras", model, f"keras:{model.name}"
    mod = type(model).__module__
    if mod.startswith("onnx") and type(model).__name__ == "ModelProto":
        return "onnx", model, f"onnx:{model.graph.name or 'model'}"
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if data[4:8] == b"TFL3":
            return "tflite", data, "tflite:<bytes>"
        return "onnx", data, "onnx:<bytes>"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        ext = os.path.splitext(path)[1].lower()
        if ext == ".onnx":
            return "onnx", path, f"onnx:{os.path.basename(path)}"
        if ext == ".tflite":
            return "tflite", path, f"tflite:{os.path.basename(path)}"
        raise ConversionError(f"{path}: unknown model file type '{ext}'; supported: .onnx, "
                              ".tflite (load Keras models with keras.models.load_model)")
    raise ConversionError(
        f"cannot convert a {type(model).__module__}.{type(model).__name__}; supported "
        f"sources: {', '.join(SUPPORTED_SOURCES)}")


def _frontend_graph(kind: str, src: Any, batch_size: int,
                    origins: dict[str, str] | None = None,
                    notes: list[str] | None = None) -> ir.Graph:
    if kind == "keras":
        from tether.converter._internal.frontends.keras import from_keras

        return from_keras(src, batch_size=batch_size, origins=origins)
    if kind == "onnx":
        from tether.converter._internal.frontends.onnx import from_onnx

        return from_onnx(src, batch_size=batch_size, notes=notes)
    from tether.converter._internal.frontends.tflite import from_tflite

    return from_tflite(src, batch_size=batch_size)


def convert(model: Any, *, batch_size: int = 1, optimize: bool = True,
            quantize: str | None = None, calibration: np.ndarray | None = None,
            plan: Any = None, samples: np.ndarray | int | None = None,
            sparse: float | None = 0.3) -> TModel:
    """Converts a source model to a `.tmodel`.

    Args:
        model: a Keras 3 `keras.Model` (Functional or Sequential, nested models allowed),
            an ONNX model (a `.onnx` path, `onnx.ModelProto` or its bytes) or a TFLite model
            (a `.tflite` path or its bytes).
        batch_size: fixed batch dimension of every input whose batch is not fixed by the
            source; 1 by default.
        optimize: run the optimizing passes (fold batch norms, fuse activations, fold pads
            and constants, drop no-ops, simplify transposes); True by default. When False
            only the lowering the file format requires is done (batch norm -> MUL+ADD,
            no-ops -> RESHAPE copies).
        quantize: None (default) keeps the source's precision (an int8 TFLite model stays
            int8); "int8" quantizes a float model after the passes: per-tensor activation
            ranges from `calibration`, per-channel symmetric weights, int32 biases, with
            QUANTIZE/DEQUANTIZE at the float interface (FORMAT.md, int8 execution).
        calibration: representative inputs for quantize="int8": a stack of inputs, each of
            the model's input shape (with or without the batch axis of 1).
        plan: instead of `calibration`, for a Keras model: a `tether.compression`
            `QuantizationPlan` (from `calibrate` or `export_qat`) whose `activation_ranges`
            (Keras layer name -> (min, max)) give the int8 ranges. Each int8 tensor takes the
            range of the Keras layer whose output it carries: a fused chain (conv, BN, ReLU)
            the last layer's, the tensor before a softmax/sigmoid/tanh activation
            "<layer>:pre_activation", a model input its InputLayer's name. The plan's
            `bias_corrections` (conv/dense layer name -> per-channel E[W_q x] - E[W x]) are
            subtracted from those layers' (BN-folded) biases before int32 quantization.
            None (default) calibrates on `calibration`.
        samples: inputs to measure output parity on (engine vs the source runtime:
            Keras, onnxruntime or LiteRT), either one input of the model's input shape or a
            stack of them, or a count of random inputs (uniform in [-1, 1], seed 0); the
            result is `report.parity`. A float model ending in a softmax is compared on its
            logits (the softmax's input). None (default) skips the check.
        sparse: store a constant sparse (a bitmask of its nonzero elements, then their
            values; FORMAT.md, "Sparse constants") when at least this fraction of its
            elements is zero and the encoding is smaller; 0.3 by default, None stores every
            constant dense. The engine decodes at load, so outputs are bit-identical.
            `report.constant_bytes` / `stored_constant_bytes` say what it saved.

    Returns:
        The converted `TModel`.

    Raises:
        ConversionError: the source type, a layer/op, activation or attribute is
            unsupported (the message names the frontend, the node and its op), the
            engine cannot run the model for the parity check, or `plan` names a layer the
            model does not have or lacks a range the int8 graph needs (the message names
            the tensor and the layer).
        ModelFormatError: an ONNX or TFLite file is malformed.
    """
    if batch_size < 1:
        raise ConversionError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    kind, src, source = _source_kind(model)
    origins: dict[str, str] = {}
    notes: list[str] = []
    graph = _frontend_graph(kind, src, batch_size, origins, notes)
    # activation output -> its input, before the passes fuse activations into producers
    pre_fusion = {n.outputs[0]: n.inputs[0] for n in graph.nodes
                  if n.op in ACTIVATION_OF_OP and n.inputs[0] is not None}
    ops_before = graph.op_counts()
    pipeline = passes.OPTIMIZE_PIPELINE if optimize else passes.LOWER_PIPELINE
    try:
        graph, log = passes.run_passes(graph, pipeline)
    except ConversionError as exc:  # a pass refusing a node: named by frontend, as they are
        raise ConversionError(f"{kind}: {exc}") from None
    if plan is not None:
        if quantize != "int8":
            raise ConversionError(f"plan= needs quantize='int8'. Received: quantize={quantize!r}")
        if calibration is not None:
            raise ConversionError("give either calibration= (the converter calibrates) or "
                                  "plan= (ranges from tether.compression), not both")
        if kind != "keras":
            raise ConversionError(f"{source}: plan= keys ranges by Keras layer name and needs a "
                                  "keras.Model; pass calibration= for ONNX/TFLite sources")
        from tether.converter._internal.quantize import quantize_int8

        graph = quantize_int8(graph, plan_ranges(graph, origins, plan, src, pre_fusion),
                              plan.bias_corrections)
    elif quantize is not None:
        graph = _quantize(graph, quantize, calibration)
    elif calibration is not None:
        raise ConversionError("calibration data was given without quantize='int8'")
    metadata = (("producer", _producer()), ("source", source))
    if sparse is not None and not 0.0 <= sparse <= 1.0:
        raise ConversionError(f"sparse must be a fraction in [0, 1] or None. Received: "
                              f"sparse={sparse}")
    data = tmodel.encode(tmodel.graph_to_file(graph, metadata), sparse=sparse)
    parity = None
    if samples is not None:
        from tether.converter._internal.parity import logits_graph as parity_logits_graph
        from tether.converter._internal.parity import measure

        if isinstance(samples, (int, np.integer)):
            first = graph.tensors[graph.inputs[0]]
            rng = np.random.default_rng(0)
            if first.dtype == DType.INT32:  # ids: inside every table that the input indexes
                samples = rng.integers(0, _id_bound(graph, first.name),
                                       (int(samples), *first.shape))
            else:
                samples = rng.uniform(-1, 1, (int(samples), *first.shape))
        logits = parity_logits_graph(graph)
        logits_data = (None if logits is None else
                       tmodel.encode(tmodel.graph_to_file(logits, metadata), sparse=sparse))
        parity = measure(data, kind, src, np.asarray(samples), logits_data)
    stats = tmodel.sparse_stats(data)
    report = ConversionReport(source, ops_before, graph.op_counts(), log.actions, log.counts,
                              len(data), _io(graph, graph.inputs), _io(graph, graph.outputs),
                              parity, stats.constant_bytes, stats.stored_bytes,
                              stats.sparse_tensors, tuple(notes))
    logger.info("converted %s: %d -> %d ops, %d bytes", source, sum(ops_before.values()),
                len(graph.nodes), len(data))
    return TModel(graph, data, report, metadata)


def _id_bound(graph: ir.Graph, name: str) -> int:
    """The least table size along the axis of the GATHERs that index with `name` (2 if none):
    sample ids drawn below it are valid for every table."""
    sizes = [graph.tensors[n.inputs[0]].shape[int(n.attrs["axis"][0])]
             for n in graph.nodes if n.op == OpType.GATHER and n.inputs[1] == name]
    return min(sizes, default=2)


def _quantize(graph: ir.Graph, quantize: str, calibration: np.ndarray | None) -> ir.Graph:
    from tether.converter._internal.calibrate import tensor_ranges
    from tether.converter._internal.quantize import quantize_int8

    if quantize != "int8":
        raise ConversionError(f"quantize={quantize!r} is not supported; use 'int8' or None")
    if calibration is None or len(calibration) == 0:
        raise ConversionError("quantize='int8' needs calibration samples (representative "
                              "inputs), e.g. calibration=x_train[:100]")
    ranges = tensor_ranges(graph, np.asarray(calibration, np.float32))
    return quantize_int8(graph, ranges)


def _is_keras_model(model: Any) -> bool:
    import sys

    if "keras" not in sys.modules and not type(model).__module__.startswith(("keras", "tf_keras")):
        return False
    import keras

    return isinstance(model, keras.Model)
