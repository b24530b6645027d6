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
``q = stochastic_round(clip(Delta, -c, c) * L / c)`` (unbiased for the clipped update), masks
the integer vector ``[n_k * q, n_k]`` in Z_{2^k} (n_k = the reply's ``num-examples``, at most
``max_weight`` = W; k = bits of 2*L*m*W + 1 plus one, m = sampled clients) and bit-packs it to
k bits per element. Its state between messages lives in the node's ``context.state``, so any
Ray actor or SuperNode process can serve any stage.

Server side, :class:`SecAggFedAvg` runs the key stages inside ``configure_train`` and the unmask
stage inside ``aggregate_train`` and applies

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
from tether.federated.dp import DPConfig, RdpAccountant, clip_update
from tether.federated.secagg import (
    SecAggAbort,
    SecAggError,
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


def _field(rec: ConfigRecord | MetricRecord, key: str) -> object:
    if key not in rec:
        raise SecAggError(f"secure aggregation message: record has no field {key!r} "
                          f"(fields: {sorted(rec)}); client and server versions differ?")
    return rec[key]


def _i(rec: ConfigRecord | MetricRecord, key: str) -> int:
    v = _field(rec, key)
    if isinstance(v, (bool, int, float, str)):
        return int(v)
    raise SecAggError(f"secure aggregation message: field {key!r} must be a number. Received: {type(v).__name__}")


def _f(rec: ConfigRecord, key: str, default: float | None = None) -> float:
    if default is not None and key not in rec:
        return default
    v = _field(rec, key)
    if isinstance(v, (bool, int, float, str)):
        return float(v)
    raise SecAggError(f"secure aggregation message: field {key!r} must be a number. Received: {type(v).__name__}")


def _b(rec: ConfigRecord, key: str) -> bytes:
    v = _field(rec, key)
    if isinstance(v, bytes):
        return v
    raise SecAggError(f"secure aggregation message: field {key!r} must be bytes. Received: {type(v).__name__}")


def _ls(rec: ConfigRecord, key: str) -> list[str]:
    v = _field(rec, key)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return [str(x) for x in v]
    raise SecAggError(f"secure aggregation message: field {key!r} must be a list of str")


def _lb(rec: ConfigRecord, key: str) -> list[bytes]:
    v = _field(rec, key)
    if isinstance(v, list) and all(isinstance(x, bytes) for x in v):
        return [bytes(x) for x in v if isinstance(x, bytes)]
    raise SecAggError(f"secure aggregation message: field {key!r} must be a list of bytes")


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
    cfg = SecAggConfig(_i(s, "t"), _i(s, "k"), _i(s, "nb") or None, _i(s, "gs"))
    c = SecAggClient(_i(s, "cid"), cfg, X25519PrivateKey.from_private_bytes(_b(s, "c_sk")),
                     X25519PrivateKey.from_private_bytes(_b(s, "s_sk")), _b(s, "b"))
    c._keys = {int(i): (a, b) for i, a, b in zip(_ls(s, "ids"), _lb(s, "c_pk"), _lb(s, "s_pk")) if i}
    if c._keys:
        c._nbrs = neighbours_of(c._keys, cfg)[c.cid]
    c._inbox = {int(i): ct for i, ct in zip(_ls(s, "in_ids"), _lb(s, "in_ct")) if i}
    c._u2 = frozenset(int(i) for i in _ls(s, "u2") if i)
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
            cfg = SecAggConfig(_i(p, "t"), _i(p, "k"), _i(p, "nb") or None, _i(p, "gs"))
            c = SecAggClient(cid, cfg)
            _save(ctxt, c)
            c_pk, s_pk = c.advertise()
            return _reply(msg, ConfigRecord({"c_pk": c_pk, "s_pk": s_pk}))
        if mtype == "query.secagg_share":
            p = msg.content.config_records["secagg"]
            c = _load(ctxt)
            keys = {int(i): (a, b) for i, a, b in zip(_ls(p, "ids"), _lb(p, "c_pk"), _lb(p, "s_pk"))}
            cts, commit = c.share_keys(keys)
            _save(ctxt, c)
            return _reply(msg, ConfigRecord({"ids": [str(v) for v in cts], "ct": list(cts.values()),
                                             "commit": commit}))
        if mtype == "query.secagg_unmask":
            p = msg.content.config_records["secagg"]
            c = _load(ctxt)
            out = c.unmask(int(i) for i in _ls(p, "u3"))
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
        conf = msg.content.config_records["config"]
        rnd = _i(conf, "server-round") if "server-round" in conf else 0
        rng = np.random.default_rng([_i(p, "seed"), rnd, msg.metadata.dst_node_id % (2**32)])
        if rng.random() < _f(p, "dropout"):
            return Message(Error(code=0, reason=f"simulated dropout after key sharing (round {rnd})"),
                           reply_to=msg)
        c = _load(ctxt)
        weighted = "weighted" in p and bool(_i(p, "weighted"))
        dp_clip, dp_std = _f(p, "dp_clip", 0.0), _f(p, "dp_std", 0.0)
        akey = next(iter(msg.content.array_records))
        base = {k: a.numpy() for k, a in msg.content.array_records[akey].items()}
        inbox = {int(i): ct for i, ct in zip(_ls(p, "in_ids"), _lb(p, "in_ct")) if i}
        u2 = [int(i) for i in _ls(p, "u2")]
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        new = next(iter(reply.content.array_records.values()))
        metrics = next(iter(reply.content.metric_records.values()))
        parts = [(new[k].numpy().astype(np.float64) - base[k]).reshape(-1) for k in base]
        if dp_clip > 0:  # distributed DP: clip, then this client's share of the noise
            parts = clip_update(parts, dp_clip)
        delta = np.concatenate(parts)
        if dp_std > 0:
            delta = delta + rng.normal(0.0, dp_std, delta.shape)
        q = stochastic_grid(delta, _i(p, "levels"), _f(p, "clip"), rng)
        weight = 1
        if weighted:
            weight = _i(metrics, "num-examples")
            if not 1 <= weight <= _i(p, "max_weight"):
                raise ValueError(f"secure aggregation: num-examples={weight} of node {c.cid} is outside "
                                 f"[1, max_weight={_i(p, 'max_weight')}]; raise SecAggFedAvg max_weight")
        vec = np.concatenate([q * weight, [weight]]).astype(np.int64).view(np.uint64) & c.config.mask
        y = c.masked_input(vec, inbox, u2)
        _save(ctxt, c)
        k = c.config.modulus_bits
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
        keys = server.collect_keys({n: (_b(r, "c_pk"), _b(r, "s_pk")) for n, r in got.items()})
        ids = sorted(keys)
        pk = ConfigRecord({"ids": [str(i) for i in ids], "c_pk": [keys[i][0] for i in ids],
                           "s_pk": [keys[i][1] for i in ids]})
        got = self._exchange(grid, ids, "query.secagg_share", lambda n: pk)
        inbox = server.route_shares({n: ({int(v): ct for v, ct in zip(_ls(r, "ids"), _lb(r, "ct"))},
                                         _b(r, "commit")) for n, r in got.items()})
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
                                   for v, kd, sh in zip(_ls(r, "ids"), _ls(r, "kind"), _lb(r, "share")) if v}
                               for n, r in got.items()})
        s = _signed(total, k)
        count = int(s[-1])
        expect = sum(_i(next(iter(m.content.metric_records.values())), "num-examples") for m in valid) \
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


def register_secagg(app: ClientApp, mod: SecAggMod | None = None) -> SecAggMod:
    """Register the ``query.secagg_*`` functions on ``app`` (Flower routes a message to a
    registered function before it runs mods); add the returned mod to the app's mods too, so
    TRAIN replies are masked."""
    m = mod or SecAggMod()
    for action in QUERY_ACTIONS:
        app.query(action)(m.handle)
    return m
