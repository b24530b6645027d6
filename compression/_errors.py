"""The error tether.compression raises; a `TetherError` like every other part's."""

from __future__ import annotations

from tether.errors import TetherError

__all__ = ["CompressionError"]


class CompressionError(TetherError, ValueError):
    """A compression config or input is invalid; the message names the field or layer
    and the fix."""
