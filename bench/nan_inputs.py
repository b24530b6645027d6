"""NaN and infinities in: what tether, LiteRT, ONNX Runtime and Keras give back, in one
process on one model. Prints one JSON line per engine and input kind.

    .venv/bin/python bench/nan_inputs.py

The model (seed 0) holds the ops whose handling differs between engines when an input is not
finite: conv + fused ReLU6, max pooling, depthwise conv + ReLU, dense, softmax. For each input
kind (one NaN pixel, one +inf pixel, an all-NaN image) the line gives the share of NaN outputs
and the engines whose NaN positions it shares. Nothing here asserts;
tests/device/test_nan_propagation.py does, op by op.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from tether.bench import run_metadata


def main() -> None:
    import keras
    from tether.peers import make_runner

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu6"),
        keras.layers.MaxPooling2D(2),
        keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    x = np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    inputs = {"one_nan_pixel": x.copy(), "one_inf_pixel": x.copy(),
              "all_nan": np.full_like(x, np.nan)}
    inputs["one_nan_pixel"][0, 5, 7, 1] = np.nan
    inputs["one_inf_pixel"][0, 5, 7, 1] = np.inf
    runners = {name: make_runner(name, model) for name in ("keras", "tether", "litert",
                                                            "onnxruntime")}
    for kind, xi in inputs.items():
        ys = {name: np.asarray(r.run(xi), np.float64) for name, r in runners.items()}
        for name, y in ys.items():
            same = [o for o, z in ys.items() if o != name
                    and np.array_equal(np.isnan(y), np.isnan(z))]
            print(json.dumps({"name": "nan_inputs", "input": kind, "engine": name,
                              "nan_share": float(np.isnan(y).mean()),
                              "same_nan_positions_as": same,
                              "outputs": [None if not np.isfinite(v) else round(float(v), 4)
                                          for v in y.reshape(-1)[:4]],
                              **run_metadata()}), flush=True)


if __name__ == "__main__":
    main()
