"""Run the docstring examples of tether.federated's pure modules."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["codecs", "secagg", "dp", "partition", "model", "strategy", "apps",
                                  "records", "deployment", "__init__"])
def test_doctests(name: str) -> None:
    mod = importlib.import_module("tether.federated" + ("" if name == "__init__" else f".{name}"))
    res = doctest.testmod(mod)
    assert res.failed == 0 and (res.attempted > 0 or name == "strategy")
