"""Secure aggregation over Flower messages (Message API), composed with stochastic quantization.

One training round is four exchanges, all plain Flower messages:

=========================  =====================================================  ==========
message type               server -> client                                       reply
=========================  =====================================================  ==========
``query.secagg_keys``      t, k, neighbours, graph seed                            c_pk, s_pk
``query.secagg_share``     everyone's public keys (U1)                             ciphertexts
``train``                  weights, config, the client's ciphertexts, U2           y_u (k-bit)
``query.secagg_unmask``    U3 (clients whose masked input arrived)                 shares
=========================  =====================================================  ==========

Client side, :class:`SecAggMod` answers the ``query.secagg_*`` messages itself and wraps TRAIN:
after the ClientApp has trained, it quantizes the update onto the shared grid
``q = stochastic_round(clip(Delta, -c, c) * L / c)`` (unbiased for the clipped update), appends a
count of 1, masks the integer vector in Z_{2^k} (k = bits of 2*L*m + 1 plus one, m = sampled
clients) and bit-packs it to k bits per element. Its state between messages lives in the
node's ``context.state``, so any Ray actor or SuperNode process can serve any stage.

Server side, :class:`SecAggFedAvg` runs the key stages inside ``configure_train`` and the unmask
stage inside ``aggregate_train`` and applies w <- w + (c / L) * sum_u q_u / |U3|: the mean
over surviving clients (FedAvg's n_k/n weights when partitions are equal-sized).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from tether.federated.codecs import _pack_bits, _unpack_bits
from tether.federated.secagg import (
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    _signed,
)
from tether.federated.strategy import TetherFedAvg, wire_bytes

__all__ = ["SecAggFedAvg", "SecAggMod", "register_secagg", "stochastic_grid"]

QUERY_ACTIONS = ("secagg_keys", "secagg_share", "secagg_unmask")

logger = logging.getLogger(__name__)

_STATE = "secagg-client"


def stochastic_grid(x: np.ndarray, levels: int, clip: float, rng: np.random.Generator) -> np.ndarray:
    """Integers q in [-L, L] with E[q] * c / L = clip(x, -c, c) (stochastic rounding).

    >>> q = stochastic_grid(np.full(20000, 0.3), 1, 1.0, np.random.default_rng(0))
    >>> bool(abs(q.mean() - 0.3) < 0.02)
    True
    """
    r = np.clip(np.asarray(x, np.float64), -clip, clip) * (levels / clip)
    low = np.floor(r)
    return (low + (rng.random(r.shape) < (r - low))).astype(np.int64)


def _save(ctxt: Context, c: SecAggClient) -> None:
    ids = sorted(c._keys)
    ctxt.state[_STATE] = ConfigRecord({
        "cid": str(c.cid), "t": c.config.threshold, "k": c.config.modulus_bits,
        "nb": c.config.neighbours or 0, "gs": c.config.graph_seed,
        "c_sk": c._c_sk.private_bytes_raw(), "s_sk": c._s_sk.private_bytes_raw(), "b": c._b,
        "ids": [str(i) for i in ids] or [""], "c_pk": [c._keys[i][0] for i in ids] or [b""],
        "s_pk": [c._keys[i][1] for i in ids] or [b""],
        "in_ids": [str(i) for i in c._inbox] or [""], "in_ct": list(c._inbox.values()) or [b""],
        "u2": [str(i) for i in sorted(c._u2)] or [""],
    })


def _load(ctxt: Context) -> SecAggClient:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from tether.federated.secagg import neighbours_of

    s = ctxt.state.config_records[_STATE]
    cfg = SecAggConfig(int(s["t"]), int(s["k"]), int(s["nb"]) or None, int(s["gs"]))
    c = SecAggClient(int(str(s["cid"])), cfg, X25519PrivateKey.from_private_bytes(bytes(s["c_sk"])),
                     X25519PrivateKey.from_private_bytes(bytes(s["s_sk"])), bytes(s["b"]))
    c._keys = {int(i): (bytes(a), bytes(b)) for i, a, b in zip(s["ids"], s["c_pk"], s["s_pk"]) if i}
    if c._keys:
        c._nbrs = neighbours_of(c._keys, cfg)[c.cid]
    c._inbox = {int(i): bytes(ct) for i, ct in zip(s["in_ids"], s["in_ct"]) if i}
    c._u2 = frozenset(int(i) for i in s["u2"] if i)
    return c


def _reply(msg: Message, rec: ConfigRecord) -> Message:
    return Message(content=RecordDict({"secagg": rec}), reply_to=msg)


class SecAggMod:
    """Flower client mod: the client side of secure aggregation (see module docstring).

    Messages that are neither ``query.secagg_*`` nor TRAIN messages carrying a ``secagg``
    ConfigRecord pass through untouched.
    """

    def __call__(self, msg: Message, ctxt: Context,
                 call_next: Callable[[Message, Context], Message]) -> Message:
        mtype = msg.metadata.message_type
        cid = msg.metadata.dst_node_id
        if mtype == "query.secagg_keys":
            p = msg.content.config_records["secagg"]
            cfg = SecAggConfig(int(p["t"]), int(p["k"]), int(p["nb"]) or None, int(p["gs"]))
            c = SecAggClient(cid, cfg)
            _save(ctxt, c)
            c_pk, s_pk = c.advertise()
            return _reply(msg, ConfigRecord({"c_pk": c_pk, "s_pk": s_pk}))
        if mtype == "query.secagg_share":
            p = msg.content.config_records["secagg"]
            c = _load(ctxt)
            keys = {int(i): (bytes(a), bytes(b)) for i, a, b in zip(p["ids"], p["c_pk"], p["s_pk"])}
            cts, commit = c.share_keys(keys)
            _save(ctxt, c)
            return _reply(msg, ConfigRecord({"ids": [str(v) for v in cts], "ct": list(cts.values()),
                                             "commit": commit}))
        if mtype == "query.secagg_unmask":
            p = msg.content.config_records["secagg"]
            c = _load(ctxt)
            out = c.unmask(int(i) for i in p["u3"])
            return _reply(msg, ConfigRecord({"ids": [str(v) for v in out] or [""],
                                             "kind": [k for k, _ in out.values()] or [""],
                                             "share": [y.to_bytes(66, "little") for _, y in out.values()] or [b""]}))
        if mtype != MessageType.TRAIN or "secagg" not in msg.content.config_records:
            return call_next(msg, ctxt)
        return self._train(msg, ctxt, call_next)

    def handle(self, msg: Message, ctxt: Context) -> Message:
        """Answer a ``query.secagg_*`` message (usable as a ClientApp query function)."""

        def no_next(m: Message, c: Context) -> Message:
            raise ValueError(f"SecAggMod.handle got {m.metadata.message_type!r}; expected query.secagg_*")

        return self(msg, ctxt, no_next)

    def _train(self, msg: Message, ctxt: Context,
               call_next: Callable[[Message, Context], Message]) -> Message:
        p = msg.content.config_records["secagg"]
        rnd = int(msg.content.config_records["config"].get("server-round", 0))
        rng = np.random.default_rng([int(p["seed"]), rnd, msg.metadata.dst_node_id % (2**32)])
        if rng.random() < float(p["dropout"]):
            return Message(Error(code=0, reason=f"simulated dropout after key sharing (round {rnd})"),
                           reply_to=msg)
        c = _load(ctxt)
        akey = next(iter(msg.content.array_records))
        base = {k: a.numpy() for k, a in msg.content[akey].items()}
        inbox = {int(i): bytes(ct) for i, ct in zip(p["in_ids"], p["in_ct"]) if i}
        u2 = [int(i) for i in p["u2"]]
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        new = next(iter(reply.content.array_records.values()))
        delta = np.concatenate([(new[k].numpy().astype(np.float64) - base[k]).reshape(-1) for k in base])
        q = stochastic_grid(delta, int(p["levels"]), float(p["clip"]), rng)
        vec = np.concatenate([q, [1]]).astype(np.int64).view(np.uint64) & c.config.mask
        y = c.masked_input(vec, inbox, u2)
        _save(ctxt, c)
        k = c.config.modulus_bits
        metrics = next(iter(reply.content.metric_records.values()))
        return Message(content=RecordDict({
            "secagg-y": ArrayRecord({"y": Array(np.frombuffer(_pack_bits(y, k), np.uint8).copy())}),
            "metrics": metrics}), reply_to=msg)


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
        **kwargs: Passed to FedAvg.
    """

    def __init__(self, *, threshold: float = 0.5, levels: int = 7, clip: float = 0.05,
                 neighbours: int | None = None, dropout: float = 0.0, seed: int = 0,
                 timeout: float = 600, **kwargs: object) -> None:
        super().__init__(seed=seed, **kwargs)
        if not 0 < threshold <= 1:
            raise ValueError(f"SecAggFedAvg threshold must be in (0, 1]. Received: {threshold}")
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
        k = max(8, (2 * self.levels * len(nodes) + 1).bit_length() + 1)
        cfg = SecAggConfig(t, k, self.neighbours, self.seed + server_round)
        length = sum(a.size for a in self._global.values()) + 1
        self._server = server = SecAggServer(cfg, length)
        base = {"t": t, "k": k, "nb": self.neighbours or 0, "gs": cfg.graph_seed}
        got = self._exchange(grid, nodes, "query.secagg_keys", lambda n: ConfigRecord(base))
        keys = server.collect_keys({n: (bytes(r["c_pk"]), bytes(r["s_pk"])) for n, r in got.items()})
        ids = sorted(keys)
        pk = ConfigRecord({"ids": [str(i) for i in ids], "c_pk": [keys[i][0] for i in ids],
                           "s_pk": [keys[i][1] for i in ids]})
        got = self._exchange(grid, ids, "query.secagg_share", lambda n: pk)
        inbox = server.route_shares({n: ({int(v): bytes(ct) for v, ct in zip(r["ids"], r["ct"])},
                                         bytes(r["commit"])) for n, r in got.items()})
        config["server-round"] = server_round
        config["codec"] = "none"
        u2 = [str(i) for i in sorted(server.u2)]
        msgs = []
        for n in sorted(server.u2):
            box = inbox[n]
            sec = ConfigRecord({"in_ids": [str(v) for v in box] or [""], "in_ct": list(box.values()) or [b""],
                                "u2": u2, "levels": self.levels, "clip": self.clip,
                                "dropout": self.dropout, "seed": self.seed})
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
        masked = {m.metadata.src_node_id: _unpack_bits(m.content["secagg-y"]["y"].numpy().tobytes(), k,
                                                       server.length).astype(np.uint64)
                  for m in valid}
        u3 = server.collect_masked(masked)
        got = self._exchange(self._grid, sorted(u3), "query.secagg_unmask",
                             lambda n: ConfigRecord({"u3": [str(i) for i in sorted(u3)]}))
        total = server.unmask({n: {int(v): (str(kd), int.from_bytes(bytes(sh), "little"))
                                   for v, kd, sh in zip(r["ids"], r["kind"], r["share"]) if v}
                               for n, r in got.items()})
        s = _signed(total, k).astype(np.float64)
        count = s[-1]
        if count != len(u3):
            raise SecAggAbort(f"secure aggregation round {server_round}: unmasked count {count} "
                              f"!= {len(u3)} surviving clients")
        avg = s[:-1] * (self.clip / self.levels) / count
        new, off = {}, 0
        for key, g in self._global.items():
            new[key] = np.asarray(g.astype(np.float64) + self.server_lr
                                  * avg[off : off + g.size].reshape(g.shape)).astype(g.dtype)
            off += g.size
        up = sum(wire_bytes(m) for m in valid)
        metrics = MetricRecord({"uplink-bytes": up, "secagg-overhead-bytes": self._overhead,
                                "survivors": len(u3), "dropped": len(server.u2) - len(u3)})
        self.history.append({"round": server_round, "uplink_bytes": up, "downlink_bytes": self._down_bytes,
                             "secagg_overhead_bytes": self._overhead, "clients": len(u3),
                             "dropped": len(server.u2) - len(u3), "modulus_bits": k})
        return ArrayRecord({kk: Array(v) for kk, v in new.items()}), metrics


def register_secagg(app: ClientApp, mod: SecAggMod | None = None) -> SecAggMod:
    """Register the ``query.secagg_*`` functions on ``app`` (Flower routes a message to a
    registered function before it runs mods); add the returned mod to the app's mods too, so
    TRAIN replies are masked."""
    m = mod or SecAggMod()
    for action in QUERY_ACTIONS:
        app.query(action)(m.handle)
    return m
