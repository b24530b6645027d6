"""Progressive shrinking: phases in order, distillation after `full`, checkpoints that let an
interrupted run resume after its last finished phase."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tether.cloud.space import SearchSpace, Stage
from tether.cloud.supernet import Supernet
from tether.cloud.train import PHASES, TrainConfig, TrainError, train_supernet
from tether.data import digits

TINY = SearchSpace(stages=(Stage(8, 2, 2), Stage(16, 2, 1)), depths=(1, 2), expand_ratios=(2, 3),
                   kernel_sizes=(3, 5), resolutions=(6, 8), input_channels=1, stem_channels=8,
                   stem_stride=1, head_channels=16)
CONFIG = TrainConfig(epochs=(2, 1, 1, 1), batch_size=64, lr=5e-3, monitor_images=200)


@pytest.fixture(scope="module")
def data():
    d = digits()
    return d.x_train, d.y_train, d.x_test, d.y_test


class Stop(Exception):
    pass


def test_interrupted_training_resumes_after_the_last_finished_phase(data, tmp_path) -> None:
    keras.utils.set_random_seed(0)
    seen: list[str] = []

    def stop_in_depth(phase: str, step: int, steps: int) -> None:
        seen.append(phase)
        if phase == "depth" and step == 3:
            raise Stop

    net = Supernet(TINY)
    with pytest.raises(Stop):
        train_supernet(net, *data, CONFIG, tmp_path, on_step=stop_in_depth)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["finished"] == ["full", "kernel"]
    assert not (tmp_path / "depth.weights.h5").exists()

    again = Supernet(TINY)
    logs = train_supernet(again, *data, CONFIG, tmp_path)
    assert [log.phase for log in logs] == ["depth", "expand"]
    assert json.loads((tmp_path / "progress.json").read_text())["finished"] == list(PHASES)
    last = logs[-1].epochs[-1]
    assert last.largest_accuracy > 0.5 and last.smallest_accuracy > 0.3, last

    with pytest.raises(TrainError, match="another space or training config"):
        train_supernet(Supernet(TINY), *data, TrainConfig(epochs=(1, 1, 1, 1)), tmp_path)


def test_sandwich_rule_and_config_checks(data) -> None:
    keras.utils.set_random_seed(1)
    net = Supernet(TINY)
    cfg = TrainConfig(epochs=(1, 0, 0, 1), sandwich=True, subnets_per_step=3, monitor_images=100)
    logs = train_supernet(net, *data, cfg)
    assert [log.phase for log in logs] == list(PHASES)
    assert [len(log.epochs) for log in logs] == [1, 0, 0, 1]
    with pytest.raises(TrainError, match="full phase needs at least 1 epoch"):
        TrainConfig(epochs=(0, 1, 1, 1))
    with pytest.raises(TrainError, match="alpha"):
        TrainConfig(alpha=2.0)
    assert np.isfinite(logs[-1].epochs[-1].loss)


def test_step_archs_follow_the_schedule() -> None:
    import random

    from tether.cloud.space import SearchSpace
    from tether.cloud.train import TrainConfig, step_archs

    space = SearchSpace.default()
    rng = random.Random(0)
    full = step_archs(space, "full", TrainConfig(), rng)
    assert len(full) == 1 and full[0].stages == space.largest().stages
    plain = step_archs(space, "kernel", TrainConfig(subnets_per_step=4, step_resolution=False),
                       rng)
    assert plain[0] == space.largest() and plain[1] == space.smallest() and len(plain) == 4
    assert all(len(s) == len(t) for a in plain[2:]  # kernel phase: full depth
               for s, t in zip(a.stages, space.largest().stages))
    seen = set()
    for _ in range(30):
        step = step_archs(space, "expand", TrainConfig(step_resolution=True), rng)
        assert len({a.resolution for a in step}) == 1  # one resolution for the whole step
        assert step[0].stages == space.largest().stages
        assert step[1].stages == space.smallest().stages
        seen.add(step[0].resolution)
    assert seen == set(space.resolutions)
