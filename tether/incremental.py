"""Class-incremental learning on the device without catastrophic forgetting.

A head (a `.tmodel` part B whose output already has a unit for every class it will learn)
trains task after task in the engine's trainer on cached features, one of four ways:

- `naive`: each task's data alone (the baseline that forgets);
- `ewc`: elastic weight consolidation: after each task the Fisher diagonal of the head's
  weights on that task's data (`Trainer.fisher_diagonal`) anchors them for the next
  (Kirkpatrick et al. 2017), accumulated over tasks;
- `replay`: a small stored sample of earlier classes' features (`ReplayMemory`, at most
  `per_class` per class, e.g. sent by the cloud with the model) mixed into every batch;
- `joint`: all tasks' data at once (the offline upper bound).

`learn_tasks` reports accuracy on every class seen so far and on each task's own classes
after each task; `task_incremental_accuracy` scores the same head with the prediction
restricted to a task's own classes (the task-incremental setting, where EWC is known to work,
unlike the class-incremental one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tether.errors import TetherError

__all__ = ["METHODS", "ReplayMemory", "TaskLog", "learn_tasks", "task_incremental_accuracy"]

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
    """After task `task`: accuracy over every class seen so far, and per task."""

    task: int
    seen_accuracy: float
    per_task: list[float] = field(default_factory=list)


def _accuracy(trainer: object, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(trainer.predict(x).argmax(1) == y))  # type: ignore[attr-defined]


def learn_tasks(head: bytes, train: Sequence[tuple[np.ndarray, np.ndarray]],
                test: Sequence[tuple[np.ndarray, np.ndarray]], method: str, *,
                epochs: int = 20, batch_size: int = 32, learning_rate: float = 1e-3,
                ewc_lambda: float = 100.0, replay_per_class: int = 100, seed: int = 0
                ) -> tuple[list[TaskLog], object]:
    """Trains `head` (.tmodel bytes) on the tasks in order by `method`; `train[t]` and
    `test[t]` are task t's (features, labels). Returns the log per task and the trainer."""
    from tether.device import Trainer

    if method not in METHODS:
        raise TetherError(f"method must be one of {', '.join(METHODS)}. Received: {method!r}")
    trainer = Trainer(head, batch_size=batch_size, learning_rate=learning_rate,
                      ewc_lambda=ewc_lambda if method == "ewc" else 0.0, seed=seed)
    memory = ReplayMemory(replay_per_class, seed)
    fisher: dict[str, np.ndarray] = {}
    logs: list[TaskLog] = []
    stages = [list(range(len(train)))] if method == "joint" else [[t] for t in range(len(train))]
    for stage in stages:
        x = np.concatenate([train[t][0] for t in stage])
        y = np.concatenate([train[t][1] for t in stage])
        if method == "replay" and len(memory):
            mx, my = memory.arrays()
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
        last = stage[-1]
        seen_x = np.concatenate([test[t][0] for t in range(last + 1)])
        seen_y = np.concatenate([test[t][1] for t in range(last + 1)])
        logs.append(TaskLog(last, _accuracy(trainer, seen_x, seen_y),
                            [_accuracy(trainer, *test[t]) for t in range(last + 1)]))
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
