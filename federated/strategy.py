"""tether's Flower server strategies.

:class:`TetherFedAvg` subclasses ``flwr.serverapp.strategy.FedAvg``. It tells clients which
codec to use (``config["codec"]``), decodes their payloads in ``aggregate_train`` and applies
w <- w + eta * sum_k (n_k / n) * Delta_k  (Algorithm 12.1 with updates instead of weights;
eta = 1 gives exactly the weighted average of the client weights); downlink compression and
client-level DP are options.

:class:`SecAggFedAvg` runs secure aggregation's key stages inside ``configure_train`` and the
unmask stage inside ``aggregate_train`` (the exchanges: `records`), and applies
    w <- w + (c / L) * sum_u n_u q_u / sum_u n_u        (u in U3, the survivors)

FedAvg's n_k/n weighting (Algorithm 12.1) over the survivors, where both sums are exact
integers; the server only ever sees the two sums. It checks the secure sum of n_u against
the num-examples the survivors reported, so masks that failed to cancel abort the round.
``weighted=False`` sends n_k = 1 (survivors weighted equally, k smaller by log2(W) bits).

Distributed DP (``dp=DPConfig(C, z)``): each client clips its update to L2 norm C and adds
N(0, (z C)^2 / t) to every coordinate before quantizing, t = the secure-aggregation
threshold (the fewest survivors a round accepts), with n_k = 1. The sum over |U3| >= t
survivors thus carries noise of std z C sqrt(|U3| / t) >= z C, the std central DP adds, and
the server (who sees only the sum) never holds an un-noised update. The price: (1) noise is
drawn for t clients but |U3| usually exceed t, so the sum carries up to sqrt(m / t) times more
noise than central DP for the same epsilon; (2) the grid clip c must cover the noise
(c of about 3 z C / sqrt(t) or more), so coarse grids (small L) add quantization error;
(3) epsilon is accounted for the Gaussian mechanism on the sum, with the sampling rate m/N;
stochastic rounding and coordinate clipping after the noise are not part of that analysis
(the distributed discrete Gaussian of Kairouz et al. 2021 would be), so the reported
epsilon describes the continuous mechanism.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from tether.federated import codecs
from tether.federated.codecs import _unpack_bits
from tether.federated.dp import DPConfig, RdpAccountant, add_gaussian_noise, clip_update
from tether.federated.records import (
    CODEC_KEY,
    bytes_field,
    bytes_list_field,
    decode_record,
    encode_record,
    int_field,
    number_field,
    record_arrays,
    record_payloads,
    str_list_field,
    wire_bytes,
)
from tether.federated.secagg import SecAggAbort, SecAggConfig, SecAggServer, _signed

__all__ = ["SecAggFedAvg", "TetherFedAvg", "aggregate_updates"]

logger = logging.getLogger(__name__)


def aggregate_updates(updates: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """sum_k w_k * u_k / sum_k w_k, layer by layer (float64 accumulation, input dtype out).

    >>> aggregate_updates([[np.array(1.0)], [np.array(2.0)]], [1, 2])[0].item() == (1 * 1 + 2 * 2) / 3
    True
    """
    if not updates:
        raise ValueError("aggregate_updates needs at least one update")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"aggregate_updates: weights must sum to > 0. Received: {list(weights)}")
    out = []
    for layer in zip(*updates):
        acc = sum(np.asarray(a, np.float64) * float(w) for a, w in zip(layer, weights))
        out.append(np.asarray(acc / total).astype(np.asarray(layer[0]).dtype))
    return out


class TetherFedAvg(FedAvg):
    """FedAvg (Algorithm 12.1) that decodes codec payloads and optionally adds client-level DP.

    Args:
        codec: Uplink codec spec sent to clients (default "none"; ``+ef`` for error feedback).
        downlink: Codec spec for the server -> client weights (default None: uncompressed).
        server_lr: eta in w <- w + eta * avg(Delta) (default 1.0).
        majority_vote: With ``signsgd``, aggregate by sign(sum of signs) * median scale
            (default False: weighted mean of decoded updates).
        dp: Client-level DP (clip each Delta to C, add N(0, (z C / m)^2) to the mean of m
            updates, uniform weights); None (default) disables it.
        seed: Seed of the DP noise (default 0).
        **kwargs: Passed to ``FedAvg`` (fraction_train, min_train_nodes, ...).

    Attributes:
        history: One dict per round: uplink/downlink bytes measured on the messages, epsilon.
    """

    def __init__(self, *, codec: str = "none", downlink: str | None = None,
                 server_lr: float = 1.0, majority_vote: bool = False,
                 dp: DPConfig | None = None, seed: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        codecs.uplink_spec(codec)
        if downlink is not None:
            codecs.make(downlink)
        self.codec, self.downlink, self.server_lr = codec, downlink, server_lr
        self.majority_vote, self.dp = majority_vote, dp
        self._rng = np.random.default_rng(seed)
        self._global: dict[str, np.ndarray] = {}
        self._accountant: RdpAccountant | None = None
        self.history: list[dict[str, float]] = []
        self._down_bytes = 0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = record_arrays(arrays)
        config[CODEC_KEY] = self.codec
        send = arrays
        if self.downlink is not None:
            config["codec-down"] = self.downlink
            send = encode_record(self._global, codecs.make(self.downlink))
        msgs = list(super().configure_train(server_round, send, config, grid))
        self._down_bytes = sum(wire_bytes(m) for m in msgs)
        self._n_nodes = len(list(grid.get_node_ids()))
        return msgs

    def _decode_reply(self, content: RecordDict) -> dict[str, np.ndarray]:
        rec = next(iter(content.array_records.values()))
        if CODEC_KEY in content.config_records:
            return decode_record(rec)
        new = record_arrays(rec)  # a plain client: raw weights
        return {k: np.asarray(new[k].astype(np.float64) - self._global[k]).astype(new[k].dtype)
                for k in new}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        valid = [m for m in replies if not m.has_error()]
        for m in replies:
            if m.has_error():
                logger.info("round %s: node %s failed: %s", server_round, m.metadata.src_node_id,
                            m.error.reason)
        if not valid:
            return None, None
        up = sum(wire_bytes(m) for m in valid)
        contents = [m.content for m in valid]
        weights = [number_field(next(iter(c.metric_records.values())), self.weighted_by_key) for c in contents]
        keys = list(self._global)
        if self.majority_vote and self.codec.startswith("signsgd"):
            frames = [record_payloads(next(iter(c.array_records.values()))) for c in contents]
            avg = [codecs.majority_vote([f[k] for f in frames]) for k in keys]
        else:
            deltas = [[d[k] for k in keys] for d in (self._decode_reply(c) for c in contents)]
            if self.dp is not None:
                deltas = [clip_update(d, self.dp.clip) for d in deltas]
                avg = aggregate_updates(deltas, [1.0] * len(deltas))
                std = self.dp.noise_multiplier * self.dp.clip / len(deltas)
                if std > 0:
                    avg = add_gaussian_noise(avg, std, self._rng)
            else:
                avg = aggregate_updates(deltas, weights)
        new = {k: np.asarray(self._global[k].astype(np.float64) + self.server_lr * a
                             ).astype(self._global[k].dtype) for k, a in zip(keys, avg)}
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics["uplink-bytes"] = up
        metrics["downlink-bytes"] = self._down_bytes
        row: dict[str, float] = {"round": server_round, "uplink_bytes": up,
                                 "downlink_bytes": self._down_bytes, "clients": len(valid)}
        if self.dp is not None:
            if self._accountant is None:
                q = min(1.0, len(replies) / max(1, self._n_nodes))
                self._accountant = RdpAccountant(self.dp.noise_multiplier, q)
            self._accountant.step()
            eps = self._accountant.epsilon(self.dp.delta) if self.dp.noise_multiplier > 0 else float("inf")
            metrics["epsilon"] = eps
            row["epsilon"] = eps
        self.history.append(row)
        return ArrayRecord({k: Array(v) for k, v in new.items()}), metrics


class SecAggFedAvg(TetherFedAvg):
    """FedAvg whose clients' updates are only ever seen summed (Bonawitz secure aggregation).

    Args:
        threshold: t as a fraction of the sampled clients (default 0.5; t >= 2).
        levels: L of the shared grid (default 7, i.e. 15 values = a 4-bit grid).
        clip: Grid range c (default 0.05); coordinates of an update beyond +-c are clipped.
        neighbours: None for the complete graph, an even k for the sparse graph.
        dropout: Probability with which each client is told to simulate a drop after sharing
            keys (default 0; for tests and benchmarks).
        seed: Seed of the simulated dropouts and quantization (default 0).
        weighted: Weight survivors by their num-examples n_k (default True); False weights
            them equally. Ignored (equal weights) under ``dp``.
        max_weight: W, the largest n_k a client may send (default 1024); sets the modulus,
            each doubling costs one bit per coordinate on the wire.
        dp: Distributed DP (see module docstring); None (default) disables it. The
            accountant's epsilon is in ``history`` per round.
        timeout: Seconds each exchange waits for replies (default 600).
        **kwargs: Passed to FedAvg.
    """

    def __init__(self, *, threshold: float = 0.5, levels: int = 7, clip: float = 0.05,
                 neighbours: int | None = None, dropout: float = 0.0, seed: int = 0,
                 weighted: bool = True, max_weight: int = 1024, dp: DPConfig | None = None,
                 timeout: float = 600, **kwargs: object) -> None:
        super().__init__(seed=seed, **kwargs)  # type: ignore[arg-type]
        if not 0 < threshold <= 1:
            raise ValueError(f"SecAggFedAvg threshold must be in (0, 1]. Received: {threshold}")
        if max_weight < 1:
            raise ValueError(f"SecAggFedAvg max_weight must be >= 1. Received: {max_weight}")
        self.weighted, self.max_weight, self.secagg_dp = weighted and dp is None, max_weight, dp
        self._sa_accountant: RdpAccountant | None = None
        self.threshold, self.levels, self.clip = threshold, levels, clip
        self.neighbours, self.dropout, self.seed, self.timeout = neighbours, dropout, seed, timeout
        self._server: SecAggServer | None = None
        self._grid: Grid | None = None
        self._overhead = 0

    def _exchange(self, grid: Grid, nodes: Iterable[int], mtype: str,
                  rec_for: Callable[[int], ConfigRecord]) -> dict[int, ConfigRecord]:
        msgs = [Message(RecordDict({"secagg": rec_for(n)}), dst_node_id=n, message_type=mtype)
                for n in nodes]
        self._overhead += sum(wire_bytes(m) for m in msgs)
        out = {}
        for r in grid.send_and_receive(msgs, timeout=self.timeout):
            if r.has_error():
                logger.info("%s: node %s failed: %s", mtype, r.metadata.src_node_id, r.error.reason)
                continue
            self._overhead += wire_bytes(r)
            out[r.metadata.src_node_id] = r.content.config_records["secagg"]
        return out

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = {k: a.numpy() for k, a in arrays.items()}
        self._grid, self._overhead = grid, 0
        self._n_nodes = len(list(grid.get_node_ids()))
        size = max(int(self._n_nodes * self.fraction_train), self.min_train_nodes)
        nodes, _ = sample_nodes(grid, self.min_available_nodes, size)
        t = max(2, math.ceil(self.threshold * len(nodes)))
        w_max = self.max_weight if self.weighted else 1
        k = max(8, (2 * self.levels * len(nodes) * w_max + 1).bit_length() + 1)
        if k > 64:
            raise SecAggAbort(f"secure aggregation: 2*levels*clients*max_weight = "
                              f"{2 * self.levels * len(nodes) * w_max} needs {k} > 64 modulus bits; "
                              "lower levels or max_weight")
        self._t, self._m = t, len(nodes)
        cfg = SecAggConfig(t, k, self.neighbours, self.seed + server_round)
        length = sum(a.size for a in self._global.values()) + 1
        self._server = server = SecAggServer(cfg, length)
        base = {"t": t, "k": k, "nb": self.neighbours or 0, "gs": cfg.graph_seed}
        got = self._exchange(grid, nodes, "query.secagg_keys", lambda n: ConfigRecord(base))
        keys = server.collect_keys({n: (bytes_field(r, "c_pk"), bytes_field(r, "s_pk")) for n, r in got.items()})
        ids = sorted(keys)
        pk = ConfigRecord({"ids": [str(i) for i in ids], "c_pk": [keys[i][0] for i in ids],
                           "s_pk": [keys[i][1] for i in ids]})
        got = self._exchange(grid, ids, "query.secagg_share", lambda n: pk)
        inbox = server.route_shares({n: ({int(v): ct for v, ct in zip(str_list_field(r, "ids"), bytes_list_field(r, "ct"))},
                                         bytes_field(r, "commit")) for n, r in got.items()})
        config["server-round"] = server_round
        config["codec"] = "none"
        u2 = [str(i) for i in sorted(server.u2)]
        msgs = []
        for n in sorted(server.u2):
            box = inbox[n]
            dp = self.secagg_dp
            sec = ConfigRecord({"in_ids": [str(v) for v in box] or [""], "in_ct": list(box.values()) or [b""],
                                "u2": u2, "levels": self.levels, "clip": self.clip,
                                "dropout": self.dropout, "seed": self.seed, "weighted": self.weighted,
                                "max_weight": self.max_weight,
                                "dp_clip": dp.clip if dp is not None else 0.0,
                                "dp_std": dp.noise_multiplier * dp.clip / math.sqrt(t) if dp is not None else 0.0})
            msgs.append(Message(RecordDict({"arrays": arrays, "config": config, "secagg": sec}),
                                dst_node_id=n, message_type=MessageType.TRAIN))
        self._down_bytes = sum(wire_bytes(m) for m in msgs)
        return msgs

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert self._server is not None and self._grid is not None
        server = self._server
        replies = list(replies)
        valid = [m for m in replies if not m.has_error() and "secagg-y" in m.content.array_records]
        for m in replies:
            if m.has_error():
                logger.info("round %s: node %s dropped: %s", server_round, m.metadata.src_node_id,
                            m.error.reason)
        k = server.config.modulus_bits
        masked = {m.metadata.src_node_id: _unpack_bits(m.content.array_records["secagg-y"]["y"].numpy().tobytes(), k,
                                                       server.length).astype(np.uint64)
                  for m in valid}
        u3 = server.collect_masked(masked)
        got = self._exchange(self._grid, sorted(u3), "query.secagg_unmask",
                             lambda n: ConfigRecord({"u3": [str(i) for i in sorted(u3)]}))
        total = server.unmask({n: {int(v): (kd, int.from_bytes(sh, "little"))
                                   for v, kd, sh in zip(str_list_field(r, "ids"), str_list_field(r, "kind"), bytes_list_field(r, "share")) if v}
                               for n, r in got.items()})
        s = _signed(total, k)
        count = int(s[-1])
        expect = sum(int_field(next(iter(m.content.metric_records.values())), "num-examples") for m in valid) \
            if self.weighted else len(u3)
        if count != expect:
            raise SecAggAbort(f"secure aggregation round {server_round}: unmasked weight sum {count} "
                              f"!= {expect} reported by the {len(u3)} surviving clients (masks did not cancel)")
        avg = s[:-1].astype(np.float64) * (self.clip / self.levels) / count
        new, off = {}, 0
        for key, g in self._global.items():
            new[key] = np.asarray(g.astype(np.float64) + self.server_lr
                                  * avg[off : off + g.size].reshape(g.shape)).astype(g.dtype)
            off += g.size
        up = sum(wire_bytes(m) for m in valid)
        metrics = MetricRecord({"uplink-bytes": up, "secagg-overhead-bytes": self._overhead,
                                "survivors": len(u3), "dropped": len(server.u2) - len(u3)})
        row: dict[str, float] = {"round": server_round, "uplink_bytes": up, "downlink_bytes": self._down_bytes,
                                 "secagg_overhead_bytes": self._overhead, "clients": len(u3),
                                 "dropped": len(server.u2) - len(u3), "modulus_bits": k,
                                 "weight_sum": count}
        if self.secagg_dp is not None:
            dp = self.secagg_dp
            if self._sa_accountant is None:
                self._sa_accountant = RdpAccountant(dp.noise_multiplier, min(1.0, self._m / max(1, self._n_nodes)))
            self._sa_accountant.step()
            eps = self._sa_accountant.epsilon(dp.delta) if dp.noise_multiplier > 0 else float("inf")
            metrics["epsilon"] = eps
            row["epsilon"] = eps
            row["noise_std_on_sum"] = dp.noise_multiplier * dp.clip * math.sqrt(len(u3) / self._t)
        self.history.append(row)
        return ArrayRecord({kk: Array(v) for kk, v in new.items()}), metrics
