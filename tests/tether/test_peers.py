"""The peers' runners, and LiteRT's arena read back beside tether's planned arena."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")


def _chain_model() -> "keras.Model":
    # Sizes chosen so the best plan is known: at the second conv, x (32x32x3), a (32x32x16)
    # and b (32x32x16) are live; the output (10 floats) comes after both 16-channel maps die.
    inp = keras.Input((32, 32, 3))
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    b = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(a)
    c = keras.layers.GlobalAveragePooling2D()(b)
    return keras.Model(inp, keras.layers.Dense(10)(c))


def test_litert_arena_is_read_back_and_tether_plans_no_more() -> None:
    from tether.peers import keras_to_tflite, litert_arena_bytes, make_runner

    model = _chain_model()
    litert = litert_arena_bytes(keras_to_tflite(model), (1, 32, 32, 3))
    floor = 4 * 32 * 32 * (3 + 16 + 16)  # x, a and b are all live at the second conv
    assert litert >= floor
    tether = make_runner("tether", model)
    assert tether.arena_bytes is not None and floor <= tether.arena_bytes <= litert
    peer = make_runner("litert", model)
    assert peer.arena_bytes == litert
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(tether.run(x), peer.run(x), rtol=1e-4, atol=1e-4)
