"""FedAvg / FedSGD on Flower's Message API with update codecs, downlink compression and client-level DP.

Server side: :class:`TetherFedAvg` subclasses ``flwr.serverapp.strategy.FedAvg``. It tells
clients which codec to use (``config["codec"]``), decodes their payloads in
``aggregate_train`` and applies  w <- w + eta * sum_k (n_k / n) * Delta_k  (Algorithm 12.1 with
updates instead of weights; eta = 1 gives exactly the weighted average of the client weights).

Client side: :class:`CodecMod` is a Flower mod. On a TRAIN message it decodes a compressed
downlink, lets the ClientApp train, and replaces the reply's ArrayRecord by one uint8 Array
with one frame per layer holding ``codec.encode(w_new - w_global)`` (see
:func:`encode_record`). Other messages pass through untouched, so it works in any Flower app whose train function replies with an ArrayRecord.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from tether.federated import codecs
from tether.federated.dp import DPConfig, RdpAccountant, add_gaussian_noise, clip_update

__all__ = [
    "CodecMod",
    "TetherFedAvg",
    "aggregate_updates",
    "decode_record",
    "encode_record",
    "record_payloads",
    "wire_bytes",
]

logger = logging.getLogger(__name__)

CODEC_KEY = "codec"
"""ConfigRecord key (in the reply) describing how the ArrayRecord is encoded."""


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


def wire_bytes(msg: Message) -> int:
    """Bytes Flower pushes for ``msg``: every object of its inflatable tree, deflated."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


PACKED_KEY = "tether-codec-frames"
"""The one Array of an encoded ArrayRecord: frames ``u16 len(key) | key | u32 len(p) | p``."""


def encode_record(arrays: dict[str, np.ndarray], codec: codecs.Codec,
                  ef: codecs.ErrorFeedback | None = None) -> ArrayRecord:
    """One uint8 Array holding, per key in order, a frame (key, codec payload of that array).

    One Array rather than one per layer: each Array is its own object in a Flower message
    (about 420 bytes of header and id each), which for small models is more than a
    compressed layer.

    >>> rec = encode_record({"w": np.array([1.0, -2.0], np.float32)}, codecs.make("none"))
    >>> list(rec), decode_record(rec)["w"].tolist()
    (['tether-codec-frames'], [1.0, -2.0])
    """
    frames = []
    for k, a in arrays.items():
        payload = ef.encode(a, k) if ef is not None else codec.encode(a)
        key = k.encode()
        frames += [struct.pack("<H", len(key)), key, struct.pack("<I", len(payload)), payload]
    return ArrayRecord({PACKED_KEY: Array(np.frombuffer(b"".join(frames), np.uint8).copy())})


def record_payloads(rec: ArrayRecord) -> dict[str, bytes]:
    """The codec payload per key of an :func:`encode_record` record."""
    if PACKED_KEY not in rec:
        raise codecs.CodecError(f"encoded ArrayRecord has no {PACKED_KEY!r} Array. Received keys: "
                                f"{sorted(rec)}; was it encoded by tether's CodecMod?")
    buf = rec[PACKED_KEY].numpy().tobytes()
    out, off = {}, 0
    while off < len(buf):
        if off + 2 > len(buf):
            raise codecs.CodecError(f"{PACKED_KEY}: frame header truncated at byte {off}")
        (nk,) = struct.unpack_from("<H", buf, off)
        key = buf[off + 2 : off + 2 + nk].decode()
        off += 2 + nk
        if off + 4 > len(buf):
            raise codecs.CodecError(f"{PACKED_KEY}: frame of {key!r} truncated at byte {off}")
        (n,) = struct.unpack_from("<I", buf, off)
        if off + 4 + n > len(buf):
            raise codecs.CodecError(f"{PACKED_KEY}: payload of {key!r} needs {n} bytes, "
                                    f"{len(buf) - off - 4} left")
        out[key] = buf[off + 4 : off + 4 + n]
        off += 4 + n
    return out


def decode_record(rec: ArrayRecord) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_record`."""
    return {k: codecs.decode(p) for k, p in record_payloads(rec).items()}


def _num(rec: MetricRecord | ConfigRecord, key: str) -> float:
    """rec[key] as a float; a missing or non-numeric field raises naming the key."""
    v = rec.get(key)
    if isinstance(v, (bool, int, float)):
        return float(v)
    raise ValueError(f"reply record field {key!r} must be a number. Received: {v!r} "
                     f"(fields: {sorted(rec)})")


def _arrays(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: arr.numpy() for k, arr in rec.items()}


class CodecMod:
    """Flower client mod compressing TRAIN replies as ``codec.encode(w_new - w_global)``.

    Args:
        spec: Codec spec used when the server's config has no ``codec`` key (default "none").
            A ``+ef`` suffix (e.g. ``topk:0.01+ef``) keeps an error-feedback residual in the
            node's ``context.state``.
        seed: Seed of the codec's random generator (default None: OS entropy).
    """

    def __init__(self, spec: str = "none", seed: int | None = None) -> None:
        codecs.make(spec.replace("+ef", ""))  # validate early
        self.spec, self.seed = spec, seed

    def __call__(self, msg: Message, ctxt: Context,
                 call_next: Callable[[Message, Context], Message]) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        conf = msg.content.config_records.get("config", ConfigRecord())
        spec = str(conf.get(CODEC_KEY, self.spec))
        akey = next(iter(msg.content.array_records))
        if "codec-down" in conf:  # compressed downlink: decode before training
            down = decode_record(msg.content.array_records[akey])
            msg.content[akey] = ArrayRecord({k: Array(v) for k, v in down.items()})
        base = _arrays(msg.content.array_records[akey])
        reply = call_next(msg, ctxt)
        if reply.has_error() or spec == "none":
            return reply
        rkey = next(iter(reply.content.array_records))
        new = _arrays(reply.content.array_records[rkey])
        delta = {k: np.asarray(new[k].astype(np.float64) - base[k]).astype(new[k].dtype) for k in new}
        use_ef = spec.endswith("+ef")
        codec = codecs.make(spec.replace("+ef", ""), seed=self.seed)
        ef = None
        if use_ef:
            prev = ctxt.state.array_records.get("codec-ef")
            ef = codecs.ErrorFeedback(codec, {k: a.astype(np.float64) for k, a in _arrays(prev).items()}
                                      if prev is not None else {})
        reply.content[rkey] = encode_record(delta, codec, ef)
        reply.content[CODEC_KEY] = ConfigRecord({"spec": spec, "update": "delta"})
        if ef is not None:
            ctxt.state["codec-ef"] = ArrayRecord({k: Array(v) for k, v in ef.state.items()})
        return reply


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
        codecs.make(codec.replace("+ef", ""))
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
        self._global = _arrays(arrays)
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
        new = _arrays(rec)  # a plain client: raw weights
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
        weights = [_num(next(iter(c.metric_records.values())), self.weighted_by_key) for c in contents]
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

