"""FedConfig and the ClientApp's train handler: the per-round learning-rate schedule, the model choices."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from tether.federated import model
from tether.federated.apps import (
    MODELS,
    FedConfig,
    _train_handler,
    client_lr,
    init_model,
    load_partition,
)

pytestmark = pytest.mark.usefixtures("task_identity")  # see conftest.py


def test_client_trains_round_t_with_lr_times_decay_to_the_t_minus_1() -> None:
    # Prepare: round 3 of a schedule eta_0 = 0.2, gamma = 0.5 -> eta_3 = 0.05
    cfg = FedConfig(dataset="digits", clients=5, partition="iid", epochs=1, batch_size=10, lr=0.2,
                    lr_decay=0.5, model="mlp", hidden=8, seed=1)
    x, y = load_partition(cfg, 2)
    init = model.init_params(x.shape[1], 10, 8, seed=0)
    msg = Message(RecordDict({"arrays": ArrayRecord({str(i): Array(a) for i, a in enumerate(init)}),
                              "config": ConfigRecord({"server-round": 3})}), dst_node_id=3, message_type="train")
    ctx = Context(run_id=1, node_id=3, node_config={"partition-id": 2, "num-partitions": 5}, state=RecordDict(),
                  run_config={})
    # Execute
    reply = _train_handler(cfg)(msg, ctx)
    got = [reply.content["arrays"][str(i)].numpy() for i in range(len(init))]
    # Assert: the same seeded local SGD at 0.05, and not at the undecayed 0.2
    seed = cfg.seed * 1000003 + 3 * 1009 + 2
    want, _ = model.train(init, x, y, 1, 10, 0.05, seed=seed)
    undecayed, _ = model.train(init, x, y, 1, 10, 0.2, seed=seed)
    assert all(np.allclose(g, w, rtol=0, atol=1e-6) for g, w in zip(got, want))
    assert not np.allclose(got[0], undecayed[0], rtol=0, atol=1e-6)
    assert client_lr(cfg, 1) == 0.2


def test_lr_decay_validated_and_carried_by_the_run_config() -> None:
    with pytest.raises(ValueError, match=r"lr_decay must be in \(0, 1\]. Received: lr_decay=1.5"):
        FedConfig(lr_decay=1.5)
    assert FedConfig.from_run_config(FedConfig(lr_decay=0.97).to_run_config()).lr_decay == 0.97


@pytest.mark.parametrize(("name", "n_params"), [("cnn", 105_194), ("cnn-mcmahan", 1_663_370)])
def test_cnn_choices_on_mnist_shapes(name: str, n_params: int) -> None:
    """McMahan et al.'s CNN: conv5x5(32)-pool-conv5x5(64)-pool-dense(512)-dense(10)."""
    params = init_model(FedConfig(model=name), np.zeros((1, 784), np.float32), 10)
    (c1, c2), hidden = MODELS[name]  # type: ignore[misc]
    assert [p.shape for p in params] == [(5, 5, 1, c1), (c1,), (5, 5, c1, c2), (c2,), (7 * 7 * c2, hidden),
                                         (hidden,), (hidden, 10), (10,)]
    assert sum(p.size for p in params) == n_params
