"""Helpers shared by the compression modules (private)."""

from __future__ import annotations

from typing import Any

import numpy as np


def outputs_probabilities(model: Any) -> bool:
    """True when the model's last layer ends in a softmax (so outputs are probabilities)."""
    last = model.layers[-1]
    while hasattr(last, "layers") and last.layers:  # nested model: look at its last layer
        last = last.layers[-1]
    if type(last).__name__ == "FakeQuantRange":
        inbound = last._inbound_nodes[0].parent_nodes if last._inbound_nodes else []
        last = inbound[0].operation if inbound else last
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", None) or (act if isinstance(act, str) else None)
    if name == "softmax":
        return True
    return type(last).__name__ == "Softmax"


def accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier on (x, y)."""
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(pred, axis=-1) == y))
