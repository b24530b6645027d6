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
from tether.converter._internal import ir, passes, tmodel
from tether.converter._internal.ops import DTYPE_NUMPY

from tether.errors import ConversionError, ModelFormatError

__all__ = [
    "SUPPORTED_SOURCES",
    "ConversionReport",
    "TModel",
    "TensorInfo",
    "convert",
    "load",
]

logger = logging.getLogger(__name__)

SUPPORTED_SOURCES: tuple[str, ...] = ("keras.Model (Keras 3 Functional or Sequential)",)


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
    """

    source: str
    ops_before: Mapping[str, int]
    ops_after: Mapping[str, int]
    actions: tuple[str, ...]
    action_counts: Mapping[str, int]
    size_bytes: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


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


def convert(model: Any, *, batch_size: int = 1, optimize: bool = True) -> TModel:
    """Converts a source model to a `.tmodel`.

    Args:
        model: a Keras 3 `keras.Model` (Functional or Sequential, nested models allowed).
        batch_size: fixed batch dimension of every input; 1 by default.
        optimize: run the optimizing passes (fold batch norms, fuse activations, fold pads
            and constants, drop no-ops); True by default. When False only the lowering the
            file format requires is done (batch norm -> MUL+ADD, no-ops -> RESHAPE copies).

    Returns:
        The converted `TModel`.

    Raises:
        ConversionError: the source type, a layer, activation or attribute is unsupported;
            the message names the layer and its class.
    """
    if batch_size < 1:
        raise ConversionError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if not _is_keras_model(model):
        raise ConversionError(
            f"cannot convert a {type(model).__module__}.{type(model).__name__}; supported "
            f"sources: {', '.join(SUPPORTED_SOURCES)}")
    from tether.converter._internal.frontends.keras import from_keras

    graph = from_keras(model, batch_size=batch_size)
    source = f"keras:{model.name}"
    ops_before = graph.op_counts()
    pipeline = passes.OPTIMIZE_PIPELINE if optimize else passes.LOWER_PIPELINE
    graph, log = passes.run_passes(graph, pipeline)
    metadata = (("producer", _producer()), ("source", source))
    data = tmodel.encode(tmodel.graph_to_file(graph, metadata))
    report = ConversionReport(source, ops_before, graph.op_counts(), log.actions, log.counts,
                              len(data), _io(graph, graph.inputs), _io(graph, graph.outputs))
    logger.info("converted %s: %d -> %d ops, %d bytes", source, sum(ops_before.values()),
                len(graph.nodes), len(data))
    return TModel(graph, data, report, metadata)


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
    report = ConversionReport(meta.get("source", ""), counts, counts, (), {}, len(data),
                              _io(graph, graph.inputs), _io(graph, graph.outputs))
    tm = TModel(graph, data, report, mf.metadata)
    tm._file = mf
    return tm
