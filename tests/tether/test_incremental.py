"""Class-incremental learning in the engine's trainer on digits features (5 tasks of 2
classes): naive fine-tuning forgets, replay keeps old classes, EWC anchors weights (it helps in
the task-incremental scoring), joint training bounds them all; EWC's pieces (Fisher diagonal,
penalty) against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from tether.converter import convert
from tether.device import Trainer
from tether.errors import EngineError, TetherError
from tether.incremental import ReplayMemory, learn_tasks, task_incremental_accuracy


@pytest.fixture(scope="module")
def tasks():
    import keras
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 64)
    y = d.target.astype(np.int32)
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    hidden = keras.layers.Dense(32, activation="relu")(inp)
    out = keras.layers.Dense(10, activation="softmax")(hidden)
    head = convert(keras.Model(inp, out), sparse=None).to_bytes()
    pairs = [(2 * t, 2 * t + 1) for t in range(5)]
    train = [(x[:1300][np.isin(y[:1300], p)], y[:1300][np.isin(y[:1300], p)]) for p in pairs]
    test = [(x[1300:][np.isin(y[1300:], p)], y[1300:][np.isin(y[1300:], p)]) for p in pairs]
    return head, train, test


def test_replay_remembers_and_naive_forgets(tasks) -> None:
    head, train, test = tasks
    runs = {m: learn_tasks(head, train, test, m, epochs=15, learning_rate=5e-3)
            for m in ("naive", "replay", "joint")}
    naive, replay, joint = (runs[m][0][-1] for m in ("naive", "replay", "joint"))
    assert naive.per_task[0] < 0.2 and naive.seen_accuracy < 0.4  # forgot tasks 0-3
    assert replay.seen_accuracy > 0.85 and min(replay.per_task) > 0.7
    assert joint.seen_accuracy >= replay.seen_accuracy - 0.02
    # replay's old classes stay near their accuracy right after being learnt
    first = runs["replay"][0][0].per_task[0]
    assert replay.per_task[0] >= first - 0.15


def test_ewc_works_task_incremental_and_fails_class_incremental(tasks) -> None:
    head, train, test = tasks
    _, naive = learn_tasks(head, train, test, "naive", epochs=15, learning_rate=5e-3)
    logs, ewc = learn_tasks(head, train, test, "ewc", epochs=15, learning_rate=5e-3,
                            ewc_lambda=1000.0)
    assert len(logs) == 5
    # task-incremental (each task's own classes): EWC keeps what naive fine-tuning loses
    assert np.mean(task_incremental_accuracy(ewc, test)) > np.mean(
        task_incremental_accuracy(naive, test)) + 0.2
    # class-incremental: EWC fails too (the known result), far below replay
    assert logs[-1].seen_accuracy < 0.5


def test_fisher_and_penalty_follow_their_definitions(tasks) -> None:
    head, train, _ = tasks
    x, y = train[0]
    t = Trainer(head, batch_size=8, ewc_lambda=2.0)
    fisher = t.fisher_diagonal(x[:20], y[:20])
    mean_sq = {}
    for i in range(20):  # the mean of per-example squared gradients
        t.gradients(x[i:i + 1], y[i:i + 1])
        for name, (_, g) in t.params().items():
            mean_sq[name] = mean_sq.get(name, 0.0) + g.astype(np.float64) ** 2 / 20
    for name in fisher:
        np.testing.assert_allclose(fisher[name], mean_sq[name], rtol=1e-5, atol=1e-12)
    base = t.gradients(x[:8], y[:8])
    anchor = {name: w - 0.1 for name, (w, _) in t.params().items()}
    t.set_penalty(fisher, anchor)
    penalized = t.gradients(x[:8], y[:8])
    extra = sum(float(np.sum(f.astype(np.float64) * 0.01)) for f in fisher.values())
    assert penalized == pytest.approx(base + 0.5 * 2.0 * extra, rel=1e-5)
    with pytest.raises(EngineError, match="no trained tensor"):
        t.set_penalty({"nope": np.ones(3)})
    with pytest.raises(EngineError, match="EWC is off"):
        Trainer(head).set_penalty(fisher)


def test_replay_memory_keeps_at_most_per_class() -> None:
    m = ReplayMemory(per_class=3, seed=0)
    m.add(np.arange(20, dtype=np.float32).reshape(10, 2), np.repeat([0, 1], 5))
    m.add(np.zeros((4, 2), np.float32), np.array([1, 1, 2, 2]))
    x, y = m.arrays()
    assert len(m) == 8 and sorted(np.bincount(y).tolist()) == [2, 3, 3]
    with pytest.raises(TetherError, match="per_class must be >= 1"):
        ReplayMemory(0)
