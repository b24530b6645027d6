"""tether.converter: Keras 3 models in, `.tmodel` files (FORMAT.md) out.

    >>> from tether.converter import convert, load          # doctest: +SKIP
    >>> tm = convert(keras_model)                             # doctest: +SKIP
    >>> tm.save("model.tmodel"); tm.report.actions[:2]        # doctest: +SKIP

The road: a frontend turns the source model into the graph IR, the passes fold batch norms,
fuse activations, fold pads and constants and drop no-ops, and the writer lays the graph out
as bytes. The C engine (`tether.device`) executes the result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tether._internal.int8 import QuantizationPlanSpec
from tether.converter._internal import ir, passes, tmodel
from tether.converter._internal.calibrate import (
    PRE_ACTIVATION_SUFFIX,
    pre_activation_key,
    pre_activation_tensor,
)
from tether.converter._internal.ops import ACTIVATION_OF_OP, DTYPE_NUMPY
from tether.converter._internal.parity import Parity

from tether.errors import ConversionError, ModelFormatError

__all__ = [
    "SUPPORTED_SOURCES",
    "ConversionReport",
    "Parity",
    "TModel",
    "TensorInfo",
    "convert",
    "load",
]

logger = logging.getLogger(__name__)

SUPPORTED_SOURCES: tuple[str, ...] = (
    "keras.Model (Keras 3 Functional or Sequential)",
    "ONNX (.onnx path, onnx.ModelProto or bytes; opset >= 13)",
    "TFLite (.tflite path or bytes)",
)


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output.

    Attributes:
        name: tensor name in the file (Keras: the InputLayer or layer name).
        shape: dims, batch first.
        dtype: numpy dtype (float32 for every float model).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion did.

    Attributes:
        source: where the model came from, e.g. "keras:mobilenetv2_0.35_96".
        ops_before: op name -> count straight out of the frontend (internal ops included).
        ops_after: op name -> count in the file.
        actions: one line per rewrite ("folded bn1 into conv1"), in order.
        action_counts: rewrite kind -> count.
        size_bytes: size of the `.tmodel` bytes.
        inputs: graph inputs.
        outputs: graph outputs.
        parity: engine vs source runtime on sample inputs (`convert(..., samples=...)`);
            None when not measured.
        constant_bytes: bytes of the constants (weights, biases) stored dense.
        stored_constant_bytes: bytes they take in the file, sparse ones encoded
            (FORMAT.md, "Sparse constants"); equal to `constant_bytes` when none is sparse.
        sparse_tensors: constants stored sparse.
    """

    source: str
    ops_before: Mapping[str, int]
    ops_after: Mapping[str, int]
    actions: tuple[str, ...]
    action_counts: Mapping[str, int]
    size_bytes: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    parity: Parity | None = None
    constant_bytes: int = 0
    stored_constant_bytes: int = 0
    sparse_tensors: int = 0

    def __str__(self) -> str:
        def ops(d: Mapping[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

        lines = [f"source: {self.source}",
                 f"ops before ({sum(self.ops_before.values())}): {ops(self.ops_before)}",
                 f"ops after ({sum(self.ops_after.values())}): {ops(self.ops_after)}",
                 f"rewrites: {ops(self.action_counts)}",
                 f"size: {self.size_bytes:,} bytes",
                 (f"constants: {self.constant_bytes:,} bytes dense, "
                  f"{self.stored_constant_bytes:,} stored ({self.sparse_tensors} sparse)")]
        for kind, infos in (("input", self.inputs), ("output", self.outputs)):
            lines += [f"{kind}: {t.name} {list(t.shape)} {t.dtype}" for t in infos]
        if self.parity is not None:
            lines.append(str(self.parity))
        lines += [f"  {a}" for a in self.actions]
        return "\n".join(lines)


def _io(graph: ir.Graph, names: tuple[str, ...]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(n, graph.tensors[n].shape, DTYPE_NUMPY[graph.tensors[n].dtype])
                 for n in names)


class TModel:
    """A converted (or loaded) model: its graph, its `.tmodel` bytes and a report.

    Build one with `convert` or `load`, not directly.
    """

    def __init__(self, graph: ir.Graph, data: bytes, report: ConversionReport,
                 metadata: tuple[tuple[str, str], ...]) -> None:
        self._graph = graph
        self._bytes = data
        self._report = report
        self._metadata = metadata
        self._file: tmodel.ModelFile | None = None

    @property
    def report(self) -> ConversionReport:
        """The conversion report (for a loaded file: no actions, ops before = after)."""
        return self._report

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        """Graph inputs: name, shape and dtype."""
        return self._report.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        """Graph outputs: name, shape and dtype."""
        return self._report.outputs

    @property
    def metadata(self) -> dict[str, str]:
        """The file's metadata ("producer", "source")."""
        return dict(self._metadata)

    @property
    def graph(self) -> ir.Graph:
        """The IR graph the file was written from (read-only)."""
        return self._graph

    @property
    def file(self) -> tmodel.ModelFile:
        """The decoded file records: tensors (constants as numpy arrays), ops, attributes."""
        if self._file is None:
            self._file = tmodel.decode(self._bytes)
        return self._file

    def to_bytes(self) -> bytes:
        """Returns the `.tmodel` bytes."""
        return self._bytes

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the `.tmodel` to `path` atomically.

        The bytes go to a temporary file in the same folder, which then replaces `path`;
        on failure `path` is left as it was and no partial file remains.
        """
        from tether._internal.files import atomic_write_bytes

        atomic_write_bytes(path, self._bytes)
        logger.info("wrote %s (%d bytes)", os.fspath(path), len(self._bytes))

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{list(t.shape)}" for t in self.inputs)
        outs = ", ".join(f"{t.name}{list(t.shape)}" for t in self.outputs)
        return (f"TModel({self._report.source or 'model'}: {len(self._graph.nodes)} ops, "
                f"{len(self._bytes)} bytes, inputs: {ins}; outputs: {outs})")


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
                    origins: dict[str, str] | None = None) -> ir.Graph:
    if kind == "keras":
        from tether.converter._internal.frontends.keras import from_keras

        return from_keras(src, batch_size=batch_size, origins=origins)
    if kind == "onnx":
        from tether.converter._internal.frontends.onnx import from_onnx

        return from_onnx(src, batch_size=batch_size)
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
            result is `report.parity`. None (default) skips the check.
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
    graph = _frontend_graph(kind, src, batch_size, origins)
    # activation output -> its input, before the passes fuse activations into producers
    pre_fusion = {n.outputs[0]: n.inputs[0] for n in graph.nodes
                  if n.op in ACTIVATION_OF_OP and n.inputs[0] is not None}
    ops_before = graph.op_counts()
    pipeline = passes.OPTIMIZE_PIPELINE if optimize else passes.LOWER_PIPELINE
    graph, log = passes.run_passes(graph, pipeline)
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

        graph = quantize_int8(graph, _plan_ranges(graph, origins, plan, src, pre_fusion),
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
        from tether.converter._internal.parity import measure

        if isinstance(samples, (int, np.integer)):
            shape = graph.tensors[graph.inputs[0]].shape
            samples = np.random.default_rng(0).uniform(-1, 1, (int(samples), *shape))
        parity = measure(data, kind, src, np.asarray(samples, np.float32))
    stats = tmodel.sparse_stats(data)
    report = ConversionReport(source, ops_before, graph.op_counts(), log.actions, log.counts,
                              len(data), _io(graph, graph.inputs), _io(graph, graph.outputs),
                              parity, stats.constant_bytes, stats.stored_bytes,
                              stats.sparse_tensors)
    logger.info("converted %s: %d -> %d ops, %d bytes", source, sum(ops_before.values()),
                len(graph.nodes), len(data))
    return TModel(graph, data, report, metadata)


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


class _PlanRanges(Mapping[str, tuple[float, float]]):
    """IR tensor name -> (min, max) read from a plan keyed by Keras layer name.

    Lookups resolve lazily so that only the tensors the int8 lowering asks for must have a
    range; a tensor it asks for and the plan lacks raises a ConversionError naming the
    tensor, the node that makes it and the Keras layer (so `in` is True for every tensor).
    "<tensor>:pre_activation" (the value before a fused activation the lowering splits off)
    is the range of the Keras layer whose output fed that activation; `in` is False when
    the plan has none, and the lowering then keeps the op float.
    """

    def __init__(self, graph: ir.Graph, keys: Mapping[str, str],
                 ranges: Mapping[str, tuple[float, float]], model_name: str,
                 pre_fusion: Mapping[str, str]) -> None:
        self._graph, self._keys, self._ranges, self._model = graph, keys, ranges, model_name
        self._makers = {o: n for n in graph.nodes for o in n.outputs}
        self._pre = pre_fusion

    def _pre_key(self, name: str) -> str | None:
        """Plan key of "<tensor>:pre_activation", or None."""
        out = name.removesuffix(PRE_ACTIVATION_SUFFIX)
        if out in self._pre:
            return self._keys.get(self._pre[out])
        return self._keys.get(pre_activation_tensor(out))

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name.endswith(PRE_ACTIVATION_SUFFIX):
            return self._pre_key(name) in self._ranges
        return name in self._graph.tensors

    def __getitem__(self, name: str) -> tuple[float, float]:
        if name.endswith(PRE_ACTIVATION_SUFFIX) and name in self:
            return self._checked(self._pre_key(name))  # type: ignore[arg-type]
        key = self._keys.get(name)
        made = self._makers.get(name)
        where = (f"tensor '{name}' (output of node {made.describe()})" if made is not None
                 else f"input tensor '{name}'")
        if key is None:
            raise ConversionError(
                f"int8 with plan: {where} of model '{self._model}' carries no Keras layer's "
                "output (it is made inside a layer or by a rewrite), so the plan cannot give "
                "its range; convert with calibration= instead")
        if key not in self._ranges:
            raise ConversionError(
                f"int8 with plan: no range for Keras layer '{key}' ({where}) of model "
                f"'{self._model}'; calibrate this model with tether.compression.calibrate, or "
                f"add activation_ranges['{key}']")
        return self._checked(key)

    def _checked(self, key: str) -> tuple[float, float]:
        lo, hi = self._ranges[key]
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise ConversionError(f"int8 with plan: range of Keras layer '{key}' is "
                                  f"({lo}, {hi}); need finite min <= max")
        return float(lo), float(hi)

    def __iter__(self) -> Any:
        return (n for n, k in self._keys.items() if k in self._ranges
                and n in self._graph.tensors)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _plan_ranges(graph: ir.Graph, origins: Mapping[str, str], plan: Any,
                 model: Any, pre_fusion: Mapping[str, str]) -> _PlanRanges:
    """Checks `plan` against the Keras `model` and maps its ranges onto IR tensors."""
    ranges = getattr(plan, "activation_ranges", None)
    if not isinstance(plan, QuantizationPlanSpec) or not isinstance(ranges, Mapping):
        raise ConversionError(f"plan must be a tether.compression.QuantizationPlan (with "
                              f"activation_ranges). Received: {type(plan).__name__}")
    import keras

    known: set[str] = set()

    def walk(m: Any, prefix: str) -> None:
        for layer in m.layers:
            known.update({prefix + layer.name, pre_activation_key(prefix + layer.name)})
            if isinstance(layer, keras.Model):
                walk(layer, prefix + layer.name + "/")

    walk(model, "")
    inputs = [kt._keras_history.operation.name for kt in model.inputs]
    known.update(inputs)
    keys = dict(origins)
    if isinstance(model, keras.Sequential):  # tether.compression names it "<model>_input"
        known.add(f"{model.name}_input")
        for t in graph.inputs:
            if keys.get(t) not in ranges and f"{model.name}_input" in ranges:
                keys[t] = f"{model.name}_input"
    unknown = sorted(k for k in ranges if k not in known)
    if unknown:
        raise ConversionError(
            f"plan names {len(unknown)} layer(s) model '{model.name}' does not have: "
            f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}; the plan was made for "
            "another model (calibrate this one, or convert the model export_qat returned)")
    return _PlanRanges(graph, keys, ranges, model.name, pre_fusion)


def _is_keras_model(model: Any) -> bool:
    import sys

    if "keras" not in sys.modules and not type(model).__module__.startswith(("keras", "tf_keras")):
        return False
    import keras

    return isinstance(model, keras.Model)


def load(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> TModel:
    """Reads and validates a `.tmodel` from a path or from bytes.

    Raises:
        ModelFormatError: the file is truncated, damaged or of an unknown major version.
        OSError: the path cannot be read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        where = "<bytes>"
    else:
        where = os.fspath(source)
        with open(where, "rb") as f:
            data = f.read()
    try:
        mf = tmodel.decode(data)
    except ModelFormatError as e:
        raise ModelFormatError(f"{where}: {e}") from None
    meta = mf.metadata_dict()
    graph = tmodel.file_to_graph(mf, meta.get("source", ""))
    counts = graph.op_counts()
    stats = tmodel.sparse_stats(data)
    report = ConversionReport(meta.get("source", ""), counts, counts, (), {}, len(data),
                              _io(graph, graph.inputs), _io(graph, graph.outputs), None,
                              stats.constant_bytes, stats.stored_bytes, stats.sparse_tensors)
    tm = TModel(graph, data, report, mf.metadata)
    tm._file = mf
    return tm
