"""Split transfer learning (the chapter's device-cloud transfer learning): a cloud model cut
at a layer into a frozen part A and a trainable head B, on the device.

    result = transfer(cloud_model, "gap", x_device, y_device, epochs=20)
    result.model        # one .tmodel: part A then the trained head

Part A (the input up to the cut, float32 or int8) runs in the engine once per image and its
features are cached (in memory, or in a folder keyed by a hash of part A and the images);
part B (the layers after the cut, with a new output layer for the device's classes) trains
in the engine's trainer (`tether.device.Trainer`) on the cache, so an epoch costs the head
alone; then A and the trained B are joined into one `.tmodel` (`tether.converter.join`).
No image leaves the device and no TensorFlow runs there: Keras is used only to cut the cloud
model and convert its parts.

A device that can afford Keras fine-tunes more than the head (`fine_tune`): the staged
schedule trains the new head with everything before the cut frozen, then unfreezes the last
few weighted layers before the cut and trains them with the head at a lower learning rate;
`schedule="full"` trains every layer from the start. Batch normalization stays frozen in
both (its statistics from the cloud's data, not from a device's few images).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tether.errors import TetherError

__all__ = ["FeatureCache", "FineTuneResult", "SCHEDULES", "TransferError", "TransferResult",
           "engine_accuracy",
           "fine_tune", "split_keras", "transfer"]

SCHEDULES = ("head", "staged", "full")


class TransferError(TetherError, ValueError):
    """A cut or a setting that cannot work (the message names the layer or field)."""


def split_keras(model: Any, cut: str, classes: int, *, seed: int = 0,
                keep_head: bool = False) -> tuple[Any, Any]:
    """(part A, part B) of a Keras model cut after layer `cut`.

    A is the model's input up to `cut`'s output. B takes that output (an input named `cut`)
    through the layers after it, except the old output layer, which a new softmax dense
    layer of `classes` units replaces. The layers after the cut must form a chain.
    `keep_head` starts the new layer's first units from the old output layer's weights (its
    classes keep their ids; the classes after them start from the layer's initializer), so
    training it adds classes without first forgetting the old ones; it needs `classes` >=
    the old layer's units.
    """
    import keras

    names = [layer.name for layer in model.layers]
    if cut not in names:
        raise TransferError(f"cut: the model has no layer '{cut}' (layers: "
                            f"{', '.join(names[1:])})")
    if classes < 2:
        raise TransferError(f"classes must be >= 2. Received: {classes}")
    index = names.index(cut)
    after = model.layers[index + 1:]
    if not after:
        raise TransferError(f"cut: '{cut}' is the output layer; cut before the layers to train")
    previous = cut
    for layer in after:
        node = layer._inbound_nodes[0]  # noqa: SLF001 (the model's own call of the layer)
        inbound = [t._keras_history.operation.name for t in node.input_tensors]
        if inbound != [previous]:
            raise TransferError(f"cut: the layers after '{cut}' must form a chain; "
                                f"'{layer.name}' reads {inbound}")
        previous = layer.name
    part_a = keras.Model(model.inputs, model.get_layer(cut).output, name="part_a")
    keras.utils.set_random_seed(seed)
    x = keras.Input(tuple(part_a.output.shape[1:]), name=cut)
    h = x
    for layer in after[:-1]:
        h = layer(h)
    head = keras.layers.Dense(classes, activation="softmax", name="device_head")
    part_b = keras.Model(x, head(h), name="part_b")
    if keep_head:
        old = after[-1]
        weights = old.get_weights() if isinstance(old, keras.layers.Dense) else []
        if len(weights) != 2 or weights[0].shape[1] > classes:
            raise TransferError(f"keep_head: the output layer '{old.name}' is not a dense "
                                f"layer with a bias of at most {classes} units")
        kernel, bias = (np.array(w) for w in head.get_weights())
        kernel[:, :weights[0].shape[1]], bias[:weights[1].shape[0]] = weights
        head.set_weights([kernel, bias])
    return part_a, part_b


class FeatureCache:
    """Part A's outputs for a set of images, computed once by the engine.

    Args:
        part_a: part A's `.tmodel` bytes.
        folder: where computed features are kept across runs (a file per (part A, images)
            pair, named by their hash); None keeps them in memory only.
        threads: engine threads for part A.
    """

    def __init__(self, part_a: bytes, folder: str | Path | None = None, threads: int = 1):
        self.part_a = part_a
        self.folder = Path(folder) if folder is not None else None
        self.threads = threads
        self.computed = 0      # images run through part A
        self.hits = 0          # feature sets read back instead
        self._memory: dict[str, np.ndarray] = {}

    def key(self, x: np.ndarray) -> str:
        h = hashlib.sha256(self.part_a)
        h.update(str((x.shape, str(x.dtype))).encode())
        h.update(np.ascontiguousarray(x).tobytes())
        return h.hexdigest()[:24]

    def features(self, x: np.ndarray) -> np.ndarray:
        """Part A's output for every image of `x` (N, ...), float32."""
        x = np.ascontiguousarray(x, np.float32)
        key = self.key(x)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self.folder / f"features-{key}.npy" if self.folder is not None else None
        if path is not None and path.is_file():
            self.hits += 1
            feats = np.load(path)
        else:
            from tether.device import Engine

            with Engine(self.part_a, threads=self.threads) as engine:
                feats = np.asarray(engine.run(x), np.float32)
            self.computed += len(x)
            if path is not None:
                from tether._internal.files import atomic_write

                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as f:
                    np.save(f, feats)
        self._memory[key] = feats
        return feats


def engine_accuracy(tmodel: bytes, x_test: np.ndarray | None, y_test: np.ndarray | None,
                    threads: int = 1) -> float | None:
    """Top-1 accuracy of `tmodel` in the engine on the test images (None without them)."""
    from tether.device import Engine

    if x_test is None or y_test is None:
        return None
    with Engine(tmodel, threads=threads) as engine:
        probs = np.asarray(engine.run(np.asarray(x_test, np.float32)))
    return float(np.mean(probs.reshape(len(x_test), -1).argmax(1) ==
                         np.asarray(y_test).reshape(-1)))


@dataclass
class TransferResult:
    """What `transfer` made and measured.

    Attributes:
        model: the joined `.tmodel` (part A, then the trained head).
        part_a, part_b: the two parts' `.tmodel` bytes (part_b trained).
        history: mean training loss per epoch.
        accuracy: top-1 of the joined model on the test images (None without them).
        feature_seconds: part A over the training images, once.
        epoch_seconds: one epoch of head training on the cache (median).
        arena_bytes: the trainer's arena.
        curves: per `evaluate` set, the joined model's top-1 after each epoch (the engine's
            head on part A's cached features of the set).
    """

    model: bytes
    part_a: bytes
    part_b: bytes
    history: list[float] = field(default_factory=list)
    accuracy: float | None = None
    feature_seconds: float = 0.0
    epoch_seconds: float = 0.0
    arena_bytes: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)


def transfer(model: Any, cut: str, x: np.ndarray, y: np.ndarray, *,
             classes: int | None = None, epochs: int = 20, batch_size: int = 32,
             optimizer: str = "adam", learning_rate: float = 1e-3, train_layers: int = 1,
             l2: float = 0.0, dropout: float = 0.0, quantize_a: str | None = None,
             calibration: np.ndarray | None = None, cache: FeatureCache | None = None,
             x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
             seed: int = 0, on_epoch: Callable[[int, float], None] | None = None,
             evaluate: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
             keep_head: bool = False) -> TransferResult:
    """Adapts Keras `model` to the device's images `x` with labels `y` (0..classes-1).

    Args:
        cut: the layer whose output part A ends at (e.g. the global pooling).
        classes: the device's classes (default: max(y) + 1).
        train_layers: dense layers of the head that train, counted from the output (1 = only
            the new output layer; 0 = every dense layer after the cut).
        quantize_a: None (float32) or "int8" for part A (post-training, calibrated on
            `calibration`, default the device's images).
        cache: a `FeatureCache` of part A to reuse (e.g. one kept in a folder).
        optimizer, learning_rate, batch_size, l2, dropout: the engine trainer's settings.
        evaluate: name -> (images, labels) measured after every epoch (`curves`), e.g. the
            old and the new classes' test images apart.
        keep_head: start the new output layer from the old one (`split_keras`): the old
            classes keep their ids and what the model knew of them.
    """
    from tether.converter import convert, join
    from tether.device import Trainer

    y = np.asarray(y, np.int32).reshape(-1)
    n_classes = int(classes if classes is not None else y.max() + 1)
    if len(y) != len(x) or y.min() < 0 or y.max() >= n_classes:
        raise TransferError(f"labels must be one per image in [0, {n_classes}); got "
                            f"{len(y)} labels for {len(x)} images, range [{y.min()}, {y.max()}]")
    keras_a, keras_b = split_keras(model, cut, n_classes, seed=seed, keep_head=keep_head)
    if quantize_a not in (None, "int8"):
        raise TransferError(f"quantize_a must be None or 'int8'. Received: {quantize_a!r}")
    part_a = convert(keras_a, quantize=quantize_a,
                     calibration=(calibration if calibration is not None else x)
                     if quantize_a else None).to_bytes()
    part_b = convert(keras_b, sparse=None).to_bytes()
    cache = cache if cache is not None and cache.part_a == part_a else FeatureCache(part_a)
    t0 = time.perf_counter()
    feats = cache.features(np.asarray(x, np.float32))
    feature_seconds = time.perf_counter() - t0
    trainer = Trainer(part_b, batch_size=batch_size, optimizer=optimizer,
                      learning_rate=learning_rate, l2=l2, dropout=dropout,
                      train_layers=train_layers, seed=seed)
    history, seconds = [], []
    sets = {name: (cache.features(np.asarray(xs, np.float32)), np.asarray(ys).reshape(-1))
            for name, (xs, ys) in (evaluate or {}).items()}
    curves: dict[str, list[float]] = {name: [] for name in sets}
    for epoch in range(epochs):
        t0 = time.perf_counter()
        history += trainer.fit(feats, y, 1, seed=seed + epoch)
        seconds.append(time.perf_counter() - t0)
        for name, (fs, ys) in sets.items():
            curves[name].append(trainer.evaluate(fs, ys))
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
    trained_b = trainer.export()
    joined = join(part_a, trained_b).to_bytes()
    accuracy = engine_accuracy(joined, x_test, y_test)
    return TransferResult(joined, part_a, trained_b, history, accuracy, feature_seconds,
                          float(np.median(seconds)) if seconds else 0.0, trainer.arena_bytes,
                          curves)


@dataclass
class FineTuneResult:
    """What `fine_tune` made and measured.

    Attributes:
        keras_model: the fine-tuned Keras model (input to the device's classes).
        model: its `.tmodel` bytes.
        history: mean training loss per epoch, stage after stage.
        stages: per stage, (name, epochs, trainable layer names).
        accuracy: top-1 of the `.tmodel` in the engine on the test images (None without).
    """

    keras_model: Any
    model: bytes
    history: list[float] = field(default_factory=list)
    stages: list[tuple[str, int, list[str]]] = field(default_factory=list)
    accuracy: float | None = None


def _unfrozen(layers: list[Any], last: int) -> list[Any]:
    """The last `last` of `layers` that hold weights, batch normalization left out."""
    import keras

    weighted = [layer for layer in layers
                if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    return weighted[max(len(weighted) - last, 0):] if last > 0 else []


def fine_tune(model: Any, cut: str, x: np.ndarray, y: np.ndarray, *,
              classes: int | None = None, schedule: str = "staged", head_epochs: int = 10,
              epochs: int = 10, unfreeze: int = 2, batch_size: int = 32,
              learning_rate: float = 1e-3, tune_learning_rate: float | None = None,
              x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
              seed: int = 0, on_epoch: Callable[[str, int, float], None] | None = None
              ) -> FineTuneResult:
    """Fine-tunes a copy of Keras `model` (left as it is) to the device's images `x` and labels
    `y` in Keras: the layers after `cut` with a new output layer, by `schedule`:

    - "head": only the layers after the cut train (`head_epochs`), the rest frozen;
    - "staged": "head", then the last `unfreeze` weighted layers before the cut train with
      the head for `epochs` at `tune_learning_rate` (default learning_rate / 10);
    - "full": every layer trains for `epochs` at `learning_rate`.

    Batch normalization stays frozen. Returns the model, its `.tmodel` and, given test
    images, the `.tmodel`'s accuracy in the engine.
    """
    import keras

    from tether.converter import convert

    if schedule not in SCHEDULES:
        raise TransferError(f"schedule must be one of {', '.join(SCHEDULES)}. "
                            f"Received: {schedule!r}")
    if unfreeze < 0 or head_epochs < 0 or epochs < 0:
        raise TransferError("unfreeze, head_epochs and epochs must be >= 0")
    y = np.asarray(y, np.int32).reshape(-1)
    n_classes = int(classes if classes is not None else y.max() + 1)
    if len(y) != len(x) or y.min() < 0 or y.max() >= n_classes:
        raise TransferError(f"labels must be one per image in [0, {n_classes}); got "
                            f"{len(y)} labels for {len(x)} images, range [{y.min()}, {y.max()}]")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    _, part_b = split_keras(copy, cut, n_classes, seed=seed)
    h = copy.get_layer(cut).output
    for layer in part_b.layers[1:]:  # one flat graph: the copy up to the cut, then the head
        h = layer(h)
    full = keras.Model(copy.inputs, h, name=f"{model.name}_fine_tuned")
    before = copy.layers[:[layer.name for layer in copy.layers].index(cut) + 1]
    tuned = _unfrozen(before, len(before) if schedule == "full" else unfreeze)
    plan: list[tuple[str, int, float, list[Any]]] = []
    if schedule in ("head", "staged"):
        plan.append(("head", head_epochs, learning_rate, []))
    if schedule == "staged":
        plan.append(("staged", epochs, tune_learning_rate or learning_rate / 10.0, tuned))
    if schedule == "full":
        plan.append(("full", epochs, learning_rate, tuned))
    history: list[float] = []
    stages: list[tuple[str, int, list[str]]] = []
    x = np.asarray(x, np.float32)
    for name, n, lr, layers in plan:
        for layer in before:  # only this stage's layers before the cut train
            layer.trainable = layer in layers
        full.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
        stages.append((name, n, [layer.name for layer in layers] + ["(after the cut)"]))
        if n == 0:
            continue

        def epoch_end(epoch: int, logs: dict[str, float], stage: str = name) -> None:
            history.append(float(logs["loss"]))
            if on_epoch is not None:
                on_epoch(stage, epoch + 1, float(logs["loss"]))

        keras.utils.set_random_seed(seed + len(stages))
        full.fit(x, y, epochs=n, batch_size=batch_size, shuffle=True, verbose=0,
                 callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=epoch_end)])
    for layer in before:
        layer.trainable = True
    tmodel = convert(full).to_bytes()
    return FineTuneResult(full, tmodel, history, stages, engine_accuracy(tmodel, x_test, y_test))
