"""What a conversion gives: the `TModel` (graph, bytes, report), its `ConversionReport` and
`TensorInfo`s, and `load`, the validating reader of `.tmodel` files."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tether.converter._internal import ir, tmodel
from tether.converter._internal.ops import DTYPE_NUMPY
from tether.converter._internal.parity import Parity

from tether.errors import ModelFormatError

__all__ = ["ConversionReport", "TModel", "TensorInfo", "load"]

logger = logging.getLogger("tether.converter")


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
        source_changes: what the frontend changed in the source before import, one line
            each (e.g. "onnx opset 9 -> 13 upgraded (onnx.version_converter)").
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
    source_changes: tuple[str, ...] = ()

    def __str__(self) -> str:
        def ops(d: Mapping[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

        lines = [f"source: {self.source}", *(f"source change: {c}" for c in self.source_changes),
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
