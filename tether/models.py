"""Models tether builds itself: the demo CNN and the `keras.applications` benchmarks.

All are built with `weights=None`: nothing is downloaded. The MobileNetV2s' batch-norm statistics
are then set from a seeded batch of random images (`tether.cloud.batchnorm`): untrained, with the
default statistics, the network's activations shrink layer after layer until every class gets
the same probability for any input, and a parity check on such a model cannot fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

__all__ = ["demo_cnn", "BUILTIN_MODELS", "load_model"]


def demo_cnn(input_shape: tuple[int, int, int] = (8, 8, 1), num_classes: int = 10,
             seed: int = 0) -> Any:
    """A small CNN of the ops a phone model uses: conv+BN+ReLU, depthwise, residual add,
    pooling, dropout and a softmax classifier.

    Args:
        input_shape: (H, W, C) of one image (default digits' 8x8x1).
        num_classes: Classifier width (default 10).
        seed: Weight initialisation seed (default 0).
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x_in = keras.Input(input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(x_in)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="block_dw")(x)
    y = layers.BatchNormalization(momentum=0.9, name="block_dw_bn")(y)
    y = layers.ReLU(max_value=6.0, name="block_dw_relu6")(y)
    y = layers.Conv2D(16, 1, use_bias=False, name="block_pw")(y)
    y = layers.BatchNormalization(momentum=0.9, name="block_pw_bn")(y)
    x = layers.Add(name="block_add")([x, y])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="head_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(x_in, out, name="demo_cnn")


def _mobilenet_v2(alpha: float, size: int) -> Callable[[], Any]:
    def build() -> Any:
        import keras
        import numpy as np

        from tether.cloud.batchnorm import recalibrate_batchnorm

        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(alpha=alpha, input_shape=(size, size, 3),
                                               weights=None)
        images = np.random.default_rng(0).uniform(-1, 1, (16, size, size, 3))
        recalibrate_batchnorm(model, images.astype(np.float32), batch_size=16)
        return model
    return build


BUILTIN_MODELS: dict[str, Callable[[], Any]] = {
    "demo_cnn": demo_cnn,
    "mobilenet_v2_0.35_96": _mobilenet_v2(0.35, 96),
    "mobilenet_v2_1.0_224": _mobilenet_v2(1.0, 224),
}


def load_model(src: str) -> Any:
    """A built-in model by name, or a Keras model file (`.keras`, `.h5`).

    Raises:
        FileNotFoundError: `src` is neither a built-in name nor an existing file.
    """
    if src in BUILTIN_MODELS:
        return BUILTIN_MODELS[src]()
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(
            f"{src}: no such model file, and not a built-in model "
            f"({', '.join(sorted(BUILTIN_MODELS))})")
    import keras

    from tether.errors import TetherError

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types, some with misleading messages
        raise TetherError(f"{path}: not a loadable Keras model file ({type(exc).__name__}: "
                          f"{exc})") from exc
