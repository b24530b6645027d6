"""FedAvg strategy + codec mod on Flower Messages (no Ray): closed-form aggregation, pass-through."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from tether.federated import codecs
from tether.federated.dp import RdpAccountant, clip_update
from tether.federated.partition import iid, noniid_shards
from tether.federated.mods import CodecMod
from tether.federated.records import wire_bytes
from tether.federated.strategy import TetherFedAvg, aggregate_updates

pytestmark = pytest.mark.usefixtures("task_identity")  # see conftest.py


def _ctx() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


def _train_msg(arrays: dict[str, np.ndarray], config: dict) -> Message:
    return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                               "config": ConfigRecord(config)}), dst_node_id=7, message_type="train")


def _reply(msg: Message, arrays: dict[str, np.ndarray], n: int) -> Message:
    return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                               "metrics": MetricRecord({"num-examples": n})}), reply_to=msg)


def test_aggregate_updates_closed_form_including_0d() -> None:
    w0 = [np.array(3.0, np.float32), np.array([1.0, 4.0], np.float32)]
    w1 = [np.array(6.0, np.float32), np.array([2.0, 1.0], np.float32)]
    out = aggregate_updates([w0, w1], [1, 2])
    assert out[0].shape == () and out[0].dtype == np.float32
    assert out[0].item() == pytest.approx((3 * 1 + 6 * 2) / 3)
    assert np.allclose(out[1], [(1 + 2 * 2) / 3, (4 + 1 * 2) / 3])


def test_codec_mod_passes_non_train_messages_untouched() -> None:
    msg = Message(RecordDict({"config": ConfigRecord({"codec": "qsgd:4"})}), dst_node_id=7,
                  message_type="evaluate")
    seen = []

    def call_next(m: Message, c: Context) -> Message:
        seen.append(m)
        return Message(RecordDict({"metrics": MetricRecord({"x": 1.0})}), reply_to=m)

    reply = CodecMod("qsgd:4")(msg, _ctx(), call_next)
    assert seen == [msg] and list(reply.content.metric_records) == ["metrics"]


def _round(strategy: TetherFedAvg, glob: dict[str, np.ndarray], clients: list[tuple[dict, int]],
           spec: str) -> dict[str, np.ndarray]:
    strategy._global = glob
    replies = []
    for new, n in clients:
        msg = _train_msg(glob, {"codec": spec, "server-round": 1})
        replies.append(CodecMod()(msg, _ctx(), lambda m, c, new=new, n=n: _reply(m, new, n)))
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None and metrics["uplink-bytes"] > 0
    return {k: a.numpy() for k, a in arrays.items()}


@pytest.mark.parametrize("spec", ["none", "topk:1"])
def test_fedavg_weights_by_num_examples_closed_form(spec: str) -> None:
    # Prepare: global w, two clients with weights w0 (n=1) and w1 (n=2)
    glob = {"0": np.array(0.5, np.float32), "1": np.zeros((2, 2), np.float32)}
    w0 = {"0": np.array(1.0, np.float32), "1": np.full((2, 2), 3.0, np.float32)}
    w1 = {"0": np.array(2.0, np.float32), "1": np.full((2, 2), 6.0, np.float32)}
    # Execute
    out = _round(TetherFedAvg(codec=spec), glob, [(w0, 1), (w1, 2)], spec)
    # Assert: (w0*1 + w1*2)/3
    assert out["0"].shape == () and out["0"].item() == pytest.approx((1 * 1 + 2 * 2) / 3)
    assert np.allclose(out["1"], (3 * 1 + 6 * 2) / 3)


def test_signsgd_majority_vote_strategy() -> None:
    glob = {"0": np.zeros(3, np.float32)}
    ws = [({"0": np.array([1.0, -1.0, 1.0], np.float32)}, 1), ({"0": np.array([1.0, 1.0, -1.0], np.float32)}, 1),
          ({"0": np.array([-1.0, -1.0, -1.0], np.float32)}, 1)]
    out = _round(TetherFedAvg(codec="signsgd", majority_vote=True), glob, ws, "signsgd")
    assert np.allclose(out["0"], [1.0, -1.0, -1.0])


def test_compressed_reply_is_smaller_on_the_wire() -> None:
    rng = np.random.default_rng(0)
    glob = {"0": rng.standard_normal((784, 200)).astype(np.float32), "1": np.zeros(200, np.float32)}
    new = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in glob.items()}
    sizes = {}
    for spec in ["none", "qsgd:4", "terngrad"]:
        msg = _train_msg(glob, {"codec": spec})
        sizes[spec] = wire_bytes(CodecMod()(msg, _ctx(), lambda m, c: _reply(m, new, 10)))
    assert sizes["none"] / sizes["qsgd:4"] >= 7
    assert sizes["none"] / sizes["terngrad"] >= 14


def test_error_feedback_state_lives_in_context() -> None:
    ctx = _ctx()
    glob = {"0": np.zeros(4, np.float32)}
    new = {"0": np.array([4.0, 3.0, 2.0, 1.0], np.float32)}
    msg = _train_msg(glob, {"codec": "topk:0.25+ef"})
    CodecMod()(msg, ctx, lambda m, c: _reply(m, new, 1))
    assert np.allclose(ctx.state["codec-ef"]["0"].numpy(), [0, 3, 2, 1])


def test_downlink_is_decoded_before_training() -> None:
    glob = {"0": np.array([1.0, -2.0], np.float32)}
    from tether.federated.records import encode_record

    msg = Message(RecordDict({"arrays": encode_record(glob, codecs.make("none")),
                              "config": ConfigRecord({"codec": "none", "codec-down": "none"})}),
                  dst_node_id=7, message_type="train")
    got = []
    CodecMod()(msg, _ctx(), lambda m, c: (got.append(m.content["arrays"]["0"].numpy()), _reply(m, glob, 1))[1])
    assert np.array_equal(got[0], glob["0"])


def test_partitions() -> None:
    labels = np.repeat(np.arange(10), 40)
    parts = noniid_shards(labels, 20, 2, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(400))
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    parts = iid(400, 7, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(400))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dp_clip_and_accountant() -> None:
    out = clip_update([np.array([3.0]), np.array([4.0])], 1.0)
    assert np.isclose(np.sqrt(out[0] ** 2 + out[1] ** 2), 1.0).all()
    acc = RdpAccountant(noise_multiplier=1.0, sampling_rate=1.0)
    acc.step()
    # full participation: eps = min_a a/2 + log(1/d)/(a-1)
    a = np.arange(2, 257)
    assert acc.epsilon(1e-5) == pytest.approx(float(np.min(a / 2 + np.log(1e5) / (a - 1))))
    sub = RdpAccountant(noise_multiplier=1.0, sampling_rate=0.1)
    sub.step(10)
    acc.step(9)
    assert sub.epsilon(1e-5) < acc.epsilon(1e-5)  # subsampling amplifies privacy


def test_dp_strategy_clips_each_update_and_reports_epsilon() -> None:
    from tether.federated.dp import DPConfig

    glob = {"0": np.zeros(2, np.float32)}
    ws = [({"0": np.array([3.0, 4.0], np.float32)}, 1), ({"0": np.array([0.3, 0.4], np.float32)}, 5)]
    # Prepare: no noise -> closed form: mean of clipped updates, uniform weights
    s = TetherFedAvg(dp=DPConfig(clip=1.0, noise_multiplier=0.0))
    s._n_nodes = 2
    out = _round(s, glob, ws, "none")
    assert np.allclose(out["0"], ([0.6, 0.8] + np.array([0.3, 0.4])) / 2)
    assert s.history[-1]["epsilon"] == float("inf")
    # With noise: epsilon reported per round from the accountant (q = 2 sampled of 20)
    s = TetherFedAvg(dp=DPConfig(clip=1.0, noise_multiplier=1.0, delta=1e-5), seed=3)
    s._n_nodes = 20
    _round(s, glob, ws, "none")
    _round(s, glob, ws, "none")
    acc = RdpAccountant(1.0, 0.1)
    acc.step(2)
    assert s.history[-1]["epsilon"] == pytest.approx(acc.epsilon(1e-5))
    assert s.history[0]["epsilon"] < s.history[1]["epsilon"]
