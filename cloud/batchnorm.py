"""Batch-norm recalibration: set every BatchNormalization layer's moving statistics from data.

A subnet taken out of a weight-sharing supernet inherits moving statistics that were
accumulated over many different subnets, so they do not describe its own activations; Once-for-
All resets them on a sample of training images before measuring or deploying a subnet. The
same pass gives an untrained network (``weights=None``) statistics under which its activations
keep their scale through depth, instead of shrinking towards zero layer after layer.

The statistics are the exact mean over the batches of each layer's batch mean and batch
variance, taken in the forward pass where every earlier layer normalizes with its batch's own
statistics (training mode), as OFA does: batch ``i`` (from 1) runs with momentum
``(i - 1) / i``, so the moving value after ``n`` batches is the running average of the ``n``
batch values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["recalibrate_batchnorm"]


def _batchnorm_layers(model: Any) -> list[Any]:
    import keras

    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def recalibrate_batchnorm(model: Any, images: np.ndarray, batch_size: int = 100) -> int:
    """Replaces the moving mean and variance of every BatchNormalization layer of `model`
    (nested models included) with the statistics of `images`; other weights are unchanged.

    Args:
        model: a Keras 3 model.
        images: inputs of the model's input shape, stacked (N, ...), N >= 2.
        batch_size: images per forward pass (the last batch may be smaller; a batch of one
            image is folded into the one before it, since one sample has no variance).

    Returns:
        The number of BatchNormalization layers recalibrated.

    Raises:
        ValueError: fewer than two images, or `batch_size` < 2.
    """
    x = np.asarray(images, np.float32)
    if x.ndim < 2 or len(x) < 2:
        raise ValueError(f"recalibrate_batchnorm needs at least 2 images stacked on axis 0. "
                         f"Received: shape={list(x.shape)}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2. Received: batch_size={batch_size}")
    layers = _batchnorm_layers(model)
    if not layers:
        return 0
    starts = list(range(0, len(x), batch_size))
    if len(x) - starts[-1] == 1:
        starts.pop()
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True  # a frozen BN layer ignores training=True
        for i, start in enumerate(starts, 1):
            stop = starts[i] if i < len(starts) else len(x)
            for layer in layers:
                layer.momentum = (i - 1) / i
            model(x[start:stop], training=True)
    finally:
        for layer, (momentum, trainable) in zip(layers, saved):
            layer.momentum = momentum
            layer.trainable = trainable
    return len(layers)
