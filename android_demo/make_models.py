"""The demo app's models: a digit classifier trained on mnist5k and converted by tether.

    python android_demo/make_models.py [--out android_demo/build/assets] [--epochs 15]

Writes, each whole or not at all:
  digits_fp32.tmodel      the classifier (1x28x28x1 float32 in [0, 1] -> 10 probabilities)
  digits_int8.tmodel      the same, post-training int8 (calibrated on 500 training images;
                          float32 input and output)
  digits_features.tmodel  the network up to the head (its output is the head's input)
  models.json             {"head_input": <the classifier's tensor where the head starts>,
                           "classes": 10, "input": [28, 28, 1], "test_accuracy": {...}}
  test_inputs.npy         20 test images (float32, 20x28x28x1), for the bridge's tests

The head (global average pooling's output -> dense 32 ReLU -> dense 10 softmax) is what
the app's fine-tuning screen trains on the phone. Training is seeded; a folder that already
holds every file is left as it is (delete it to retrain), so two APK builds pack the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

FILES = ("digits_fp32.tmodel", "digits_int8.tmodel", "digits_features.tmodel", "models.json",
         "test_inputs.npy")
CUT = "features"


def build(seed: int = 0):
    """The classifier: two conv blocks, global average pooling ("features"), the head."""
    import keras

    keras.utils.set_random_seed(seed)
    x = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D(name=CUT)(h)
    h = keras.layers.Dense(32, activation="relu", name="hidden")(h)
    y = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    return keras.Model(x, y, name="digits")


def head_input(tmodel: bytes, features: bytes) -> str:
    """The classifier's tensor where the head starts: the input of its first dense layer,
    which must have the shape of the features model's output."""
    from tether.converter import load

    graph, wanted = load(tmodel).graph, tuple(load(features).outputs[0].shape)
    for node in graph.nodes:
        if getattr(node.op, "name", "") == "FULLY_CONNECTED":
            name = node.inputs[0]
            if tuple(graph.tensors[name].shape) != wanted:
                raise SystemExit(f"the head's input '{name}' has shape "
                                 f"{graph.tensors[name].shape}; the features model gives {wanted}")
            return name
    raise SystemExit("the classifier has no dense layer to train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "build" / "assets"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if all((out / f).is_file() for f in FILES):
        print(f"{out}: models present")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from tether.converter import convert

    from tether._internal.files import atomic_write_bytes
    from tether.data import mnist5k

    ds = mnist5k()
    model = build(args.seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=args.epochs, batch_size=64, verbose=0,
              shuffle=True)
    features = keras.Model(model.input, model.get_layer(CUT).output, name="features")
    fp32 = convert(model).to_bytes()
    int8 = convert(model, quantize="int8", calibration=ds.x_train[:500]).to_bytes()
    part = convert(features).to_bytes()

    from tether.device import Engine

    def accuracy(tm: bytes) -> float:
        with Engine(tm) as engine:
            p = np.asarray(engine.run(ds.x_test.astype(np.float32)))
        return float(np.mean(p.reshape(len(ds.x_test), -1).argmax(1) == ds.y_test))

    meta = {"head_input": head_input(fp32, part), "classes": 10, "input": [28, 28, 1],
            "test_accuracy": {"fp32": accuracy(fp32), "int8": accuracy(int8)},
            "dataset": "mnist5k", "seed": args.seed, "epochs": args.epochs}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "digits_fp32.tmodel", fp32)
    atomic_write_bytes(out / "digits_int8.tmodel", int8)
    atomic_write_bytes(out / "digits_features.tmodel", part)
    buf = __import__("io").BytesIO()
    np.save(buf, ds.x_test[:20].astype(np.float32))
    atomic_write_bytes(out / "test_inputs.npy", buf.getvalue())
    atomic_write_bytes(out / "models.json", (json.dumps(meta, indent=2) + "\n").encode())
    print(f"{out}: fp32 {meta['test_accuracy']['fp32']:.3f}, int8 "
          f"{meta['test_accuracy']['int8']:.3f} test accuracy; head input "
          f"'{meta['head_input']}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
