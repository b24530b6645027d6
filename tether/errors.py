"""The one small error hierarchy every part of tether raises from.

Each message names what is at fault (file, node, op, shape or field) and, where there is
one, the fix.
"""

from __future__ import annotations

__all__ = [
    "TetherError",
    "DataError",
    "ConversionError",
    "ModelFormatError",
    "EngineError",
]


class TetherError(Exception):
    """Base class of every error tether raises on purpose."""


class DataError(TetherError, ValueError):
    """A dataset or user data file is missing, malformed or unusable."""


class ConversionError(TetherError):
    """A source model cannot be converted (unsupported layer, op or attribute)."""


class ModelFormatError(TetherError):
    """A `.tmodel` file is damaged, truncated or of an unknown version."""


class EngineError(TetherError):
    """The C engine refused to load or run a model; carries the engine's own message."""

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status
