"""Supernet training under tf.distribute: a MirroredStrategy over two logical CPU devices,
from Python and from `tether supernet train --strategy` (each in a fresh process: logical
devices must be set before TensorFlow starts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tether.cloud.space import SearchSpace
from tether.cloud.supernet import Supernet
from tether.cloud.train import TrainConfig, train_supernet
from tether.data import digits

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
space = SearchSpace.load(sys.argv[1])
d = digits()
keras.utils.set_random_seed(0)
with strategy.scope():
    net = Supernet(space)
logs = train_supernet(net, d.x_train, d.y_train, d.x_test, d.y_test,
                      TrainConfig(epochs=(3, 1, 0, 0), lr=5e-3, monitor_images=200),
                      strategy=strategy)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "phases": [l.phase for l in logs],
                  "largest": logs[1].epochs[-1].largest_accuracy,
                  "loss": logs[1].epochs[-1].loss}))
"""


@pytest.mark.slow
def test_a_phase_runs_under_mirrored_strategy_on_two_cpus() -> None:
    space = Path(__file__).with_name("tiny_space.toml")
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(space)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["phases"] == ["full", "kernel", "depth", "expand"]
    assert out["largest"] > 0.5 and out["loss"] == out["loss"]  # learned, finite


@pytest.mark.slow
def test_the_cli_trains_under_mirrored_strategy(tmp_path) -> None:
    space = Path(__file__).with_name("tiny_space.toml")
    out = tmp_path / "s.keras"
    run = subprocess.run([sys.executable, "-m", "tether.cli.main", "supernet", "train", "-o",
                          str(out), "--space", str(space), "--data", "digits", "--epochs",
                          "2,1,0,0", "--strategy", "mirrored:2"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rep = json.loads(run.stdout.strip().splitlines()[-1])
    assert rep["replicas"] == 2 and out.is_file()
    assert rep["phases"][1]["epochs"][-1]["largest_accuracy"] > 0.5
