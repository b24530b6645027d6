"""tether.converter: Keras 3 models in, `.tmodel` files (FORMAT.md) out.

    >>> from tether.converter import convert, load          # doctest: +SKIP
    >>> tm = convert(keras_model)                             # doctest: +SKIP
    >>> tm.save("model.tmodel"); tm.report.actions[:2]        # doctest: +SKIP

The road: a frontend turns the source model into the graph IR, the passes fold batch norms,
fuse activations, fold pads and constants and drop no-ops, and the writer lays the graph out
as bytes. The C engine (`tether.device`) executes the result.
"""

from __future__ import annotations

from tether.converter._internal.convert import SUPPORTED_SOURCES, convert
from tether.converter._internal.dense import from_dense
from tether.converter._internal.join import join
from tether.converter._internal.model import ConversionReport, TensorInfo, TModel, load
from tether.converter._internal.parity import Parity

__all__ = [
    "SUPPORTED_SOURCES",
    "ConversionReport",
    "Parity",
    "TModel",
    "TensorInfo",
    "convert",
    "from_dense",
    "join",
    "load",
]
