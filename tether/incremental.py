"""Class-incremental learning on the device without catastrophic forgetting.

A head (a `.tmodel` part B whose output already has a unit for every class it will learn)
trains task after task in the engine's trainer on cached features, or a Keras model (any
depth, on a device that runs Keras) trains with `model.fit`, one of four ways:

- `naive`: each task's data alone (the baseline that forgets);
- `ewc`: elastic weight consolidation: after each task the Fisher diagonal of the head's
  weights on that task's data (`Trainer.fisher_diagonal`; for Keras, per-example gradients)
  anchors them for the next (Kirkpatrick et al. 2017), accumulated over tasks: the loss gains
  lambda/2 * sum F (w - w*)^2 (in Keras, a regularizer on every trainable variable);
- `replay`: a small stored sample of earlier classes' features (`ReplayMemory`, at most
  `per_class` per class, e.g. sent by the cloud with the model) mixed into every epoch,
  each stored class repeated to as many rows as a new class has (class-balanced rehearsal:
  with the plain mix, `replay_balance=False`, a new class outnumbers an old one by its data
  over the memory's and the head leans to the new classes);
- `joint`: all tasks' data at once (the offline upper bound).

`learn_tasks` reports accuracy on every class seen so far and on each task's own classes
after each task; `task_incremental_accuracy` scores the same head with the prediction
restricted to a task's own classes (the task-incremental setting, where EWC is known to work,
unlike the class-incremental one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tether.errors import TetherError

__all__ = ["METHODS", "KerasLearner", "ReplayMemory", "TaskLog", "learn_tasks",
           "task_incremental_accuracy"]

METHODS = ("naive", "ewc", "replay", "joint")


class ReplayMemory:
    """At most `per_class` stored features per class (a seeded random choice of those
    offered), to mix into later training."""

    def __init__(self, per_class: int = 100, seed: int = 0) -> None:
        if per_class < 1:
            raise TetherError(f"ReplayMemory per_class must be >= 1. Received: {per_class}")
        self.per_class = per_class
        self._rng = np.random.default_rng(seed)
        self._x: dict[int, np.ndarray] = {}

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        for c in np.unique(y):
            have = self._x.get(int(c))
            rows = x[y == c]
            pool = rows if have is None else np.concatenate([have, rows])
            if len(pool) > self.per_class:
                pool = pool[self._rng.choice(len(pool), self.per_class, replace=False)]
            self._x[int(c)] = pool

    def __len__(self) -> int:
        return sum(len(v) for v in self._x.values())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._x:
            return np.empty((0,)), np.empty((0,), np.int32)
        xs = [self._x[c] for c in sorted(self._x)]
        ys = [np.full(len(self._x[c]), c, np.int32) for c in sorted(self._x)]
        return np.concatenate(xs), np.concatenate(ys)


@dataclass
class TaskLog:
    """After task `task`: accuracy over every class seen so far, over the classes of the
    earlier tasks (None for the first; compare with the previous log's `seen_accuracy` for
    what this increment cost them), and per task."""

    task: int
    seen_accuracy: float
    per_task: list[float] = field(default_factory=list)
    old_accuracy: float | None = None


def _balanced(x: np.ndarray, y: np.ndarray, mx: np.ndarray, my: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) with the memory's rows added, each stored class drawn (cycling through its rows
    in a seeded order) to the mean row count of the classes in y."""
    target = int(round(len(y) / max(len(np.unique(y)), 1)))
    xs, ys = [x], [y]
    for c in np.unique(my):
        rows = np.flatnonzero(my == c)
        take = np.resize(rng.permutation(rows), max(target, len(rows)))
        xs.append(mx[take])
        ys.append(my[take])
    return np.concatenate(xs), np.concatenate(ys)


def _accuracy(trainer: object, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(trainer.predict(x).argmax(1) == y))  # type: ignore[attr-defined]


class KerasLearner:
    """The Keras side of `learn_tasks`: a copy of `model` (its weights kept) trained with
    `model.fit` under Adam and sparse cross-entropy, with the interface of the engine's
    `Trainer` that `learn_tasks` uses (fit, predict, fisher_diagonal, set_penalty)."""

    def __init__(self, model: Any, *, batch_size: int = 32, learning_rate: float = 1e-3,
                 ewc_lambda: float = 0.0, seed: int = 0) -> None:
        import keras

        if ewc_lambda < 0 or not np.isfinite(ewc_lambda):
            raise TetherError(f"ewc_lambda must be finite and >= 0. Received: {ewc_lambda}")
        keras.utils.set_random_seed(seed)
        self.model = keras.models.clone_model(model)
        self.model.set_weights(model.get_weights())
        self.model.compile(keras.optimizers.Adam(learning_rate),
                           "sparse_categorical_crossentropy")
        self.batch_size, self.ewc_lambda = batch_size, float(ewc_lambda)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, *, seed: int = 0) -> list[float]:
        import keras

        keras.utils.set_random_seed(seed)
        history = self.model.fit(x, np.asarray(y, np.int32), epochs=epochs,
                                 batch_size=self.batch_size, shuffle=True, verbose=0)
        return [float(v) for v in history.history["loss"]]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x, batch_size=256, verbose=0))

    def fisher_diagonal(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """The empirical Fisher diagonal of every trainable variable (by path): the mean of
        each per-example gradient of the cross-entropy, squared."""
        import tensorflow as tf

        variables = self.model.trainable_variables
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()

        @tf.function
        def squared(xb: Any, yb: Any) -> list[Any]:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, self.model(xb, training=False))
            return [tf.square(g) for g in tape.gradient(loss, variables)]

        total = [np.zeros(v.shape, np.float64) for v in variables]
        for i in range(len(x)):
            for acc, g in zip(total, squared(x[i:i + 1], np.asarray(y[i:i + 1], np.int32))):
                acc += g.numpy()
        return {v.path: (acc / max(len(x), 1)).astype(np.float32)
                for v, acc in zip(variables, total)}

    def set_penalty(self, fisher: dict[str, np.ndarray]) -> None:
        """EWC anchored at the current weights: lambda/2 * sum F (w - w_now)^2 per variable
        named in `fisher` (a weight regularizer the next `fit` adds to the loss)."""
        by_path = {v.path: v for v in self.model.trainable_variables}
        unknown = sorted(set(fisher) - set(by_path))
        if unknown:
            raise TetherError(f"no trainable variable {unknown} (trainable: {sorted(by_path)})")
        for path, f in fisher.items():
            v = by_path[path]
            if tuple(np.shape(f)) != tuple(v.shape):
                raise TetherError(f"'{path}' has shape {tuple(v.shape)}; got Fisher "
                                  f"{tuple(np.shape(f))}")
            v.regularizer = _EWCPenalty(self.ewc_lambda, np.asarray(f, np.float32),
                                        np.asarray(v.numpy(), np.float32))
        # the compiled train step traced the old regularizers; trace it again
        self.model.compile(self.model.optimizer, "sparse_categorical_crossentropy")


class _EWCPenalty:
    """lambda/2 * sum F (w - anchor)^2, as a Keras weight regularizer."""

    def __init__(self, lam: float, fisher: np.ndarray, anchor: np.ndarray) -> None:
        self.lam, self.fisher, self.anchor = lam, fisher, anchor

    def __call__(self, w: Any) -> Any:
        from keras import ops

        return 0.5 * self.lam * ops.sum(self.fisher * ops.square(w - self.anchor))


def learn_tasks(head: Any, train: Sequence[tuple[np.ndarray, np.ndarray]],
                test: Sequence[tuple[np.ndarray, np.ndarray]], method: str, *,
                epochs: int = 20, batch_size: int = 32, learning_rate: float = 1e-3,
                ewc_lambda: float = 100.0, replay_per_class: int = 100,
                replay_balance: bool = True, seed: int = 0,
                on_task: Callable[[TaskLog], None] | None = None
                ) -> tuple[list[TaskLog], object]:
    """Trains `head` on the tasks in order by `method`: `.tmodel` bytes train in the engine's
    trainer, a Keras model in a `KerasLearner` (the model itself is left as it is).
    `train[t]` and `test[t]` are task t's (inputs, labels); `on_task` sees each task's log
    as it is made. Returns the log per task and the trainer."""
    from tether.device import Trainer

    if method not in METHODS:
        raise TetherError(f"method must be one of {', '.join(METHODS)}. Received: {method!r}")
    lam = ewc_lambda if method == "ewc" else 0.0
    trainer: Any
    if isinstance(head, (bytes, bytearray, memoryview)):
        trainer = Trainer(bytes(head), batch_size=batch_size, learning_rate=learning_rate,
                          ewc_lambda=lam, seed=seed)
    else:
        trainer = KerasLearner(head, batch_size=batch_size, learning_rate=learning_rate,
                               ewc_lambda=lam, seed=seed)
    memory = ReplayMemory(replay_per_class, seed)
    fisher: dict[str, np.ndarray] = {}
    logs: list[TaskLog] = []
    stages = [list(range(len(train)))] if method == "joint" else [[t] for t in range(len(train))]
    for stage in stages:
        x = np.concatenate([train[t][0] for t in stage])
        y = np.concatenate([train[t][1] for t in stage])
        if method == "replay" and len(memory):
            mx, my = memory.arrays()
            if replay_balance:
                x, y = _balanced(x, y, mx, my, np.random.default_rng(seed + stage[0]))
            else:
                x, y = np.concatenate([x, mx]), np.concatenate([y, my])
        trainer.fit(x, y, epochs, seed=seed + stage[0])
        if method == "replay":
            memory.add(*[np.concatenate([train[t][i] for t in stage]) for i in (0, 1)])
        if method == "ewc":
            task_x = np.concatenate([train[t][0] for t in stage])
            task_y = np.concatenate([train[t][1] for t in stage])
            for name, f in trainer.fisher_diagonal(task_x, task_y).items():
                fisher[name] = fisher.get(name, 0.0) + f
            trainer.set_penalty(fisher)  # anchored at the weights learnt so far
        last, first = stage[-1], stage[0]
        per_task = [_accuracy(trainer, *test[t]) for t in range(last + 1)]
        sizes = [len(test[t][1]) for t in range(last + 1)]
        old = (float(np.average(per_task[:first], weights=sizes[:first])) if first else None)
        logs.append(TaskLog(last, float(np.average(per_task, weights=sizes)), per_task, old))
        if on_task is not None:
            on_task(logs[-1])
    return logs, trainer


def task_incremental_accuracy(trainer: object, test: Sequence[tuple[np.ndarray, np.ndarray]]
                              ) -> list[float]:
    """Per task: accuracy when the prediction is restricted to that task's own classes."""
    out = []
    for x, y in test:
        classes = np.unique(y)
        probs = trainer.predict(x)[:, classes]  # type: ignore[attr-defined]
        out.append(float(np.mean(classes[probs.argmax(1)] == y)))
    return out
