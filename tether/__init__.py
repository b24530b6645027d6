"""tether: a device–cloud collaboration SDK.

The road: `tether.cloud` (supernet, search) → `tether.compression` → `tether.converter`
(`.tmodel`) → `tether.device` (C engine) → `tether.federated` (Flower).
"""

from tether.errors import (
    ConversionError,
    DataError,
    EngineError,
    ModelFormatError,
    TetherError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "TetherError",
    "DataError",
    "ConversionError",
    "ModelFormatError",
    "EngineError",
]
