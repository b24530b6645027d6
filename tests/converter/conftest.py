"""Fixtures of the converter tests (helpers live in converter_testlib.py)."""

import pytest
from converter_testlib import GraphBuilder


@pytest.fixture
def gb() -> GraphBuilder:
    """A fresh hand-built-graph builder."""
    return GraphBuilder()
