"""tether's Flower client mods.

:class:`CodecMod`: on a TRAIN message it decodes a compressed downlink, lets the ClientApp
train, and replaces the reply's ArrayRecord by one uint8 Array with one frame per layer
holding ``codec.encode(w_new - w_global)`` (`records.encode_record`). Other messages pass
through untouched, so it works in any Flower app whose train function replies with an
ArrayRecord.

:class:`SecAggMod`: the client side of secure aggregation (`records` describes the four
exchanges). It answers the ``query.secagg_*`` messages itself (`register_secagg` routes them)
and wraps TRAIN: after the ClientApp has trained, it quantizes the update onto the shared grid
``q = stochastic_round(clip(Delta, -c, c) * L / c)`` (unbiased for the clipped update), masks
the integer vector ``[n_k * q, n_k]`` in Z_{2^k} (n_k = the reply's ``num-examples``, at most
``max_weight`` = W; k = bits of 2*L*m*W + 1 plus one, m = sampled clients) and bit-packs it to
k bits per element. Its state between messages lives in the node's ``context.state``, so any
Ray actor or SuperNode process can serve any stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    RecordDict,
)
from flwr.clientapp import ClientApp
from tether.federated import codecs
from tether.federated.codecs import _pack_bits
from tether.federated.dp import clip_update
from tether.federated.records import (
    CODEC_KEY,
    QUERY_ACTIONS,
    bytes_field,
    bytes_list_field,
    decode_record,
    encode_record,
    float_field,
    int_field,
    record_arrays,
    stochastic_grid,
    str_list_field,
)
from tether.federated.secagg import SecAggClient, SecAggConfig

__all__ = ["CodecMod", "SecAggMod", "register_secagg"]

logger = logging.getLogger(__name__)


class CodecMod:
    """Flower client mod compressing TRAIN replies as ``codec.encode(w_new - w_global)``.

    Args:
        spec: Codec spec used when the server's config has no ``codec`` key (default "none").
            A ``+ef`` suffix (e.g. ``topk:0.01+ef``) keeps an error-feedback residual in the
            node's ``context.state``.
        seed: Seed of the codec's random generator (default None: OS entropy).
    """

    def __init__(self, spec: str = "none", seed: int | None = None) -> None:
        codecs.uplink_spec(spec)  # validate early
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
        base = record_arrays(msg.content.array_records[akey])
        reply = call_next(msg, ctxt)
        if reply.has_error() or spec == "none":
            return reply
        rkey = next(iter(reply.content.array_records))
        new = record_arrays(reply.content.array_records[rkey])
        delta = {k: np.asarray(new[k].astype(np.float64) - base[k]).astype(new[k].dtype) for k in new}
        base_spec, use_ef = codecs.uplink_spec(spec)
        codec = codecs.make(base_spec, seed=self.seed)
        ef = None
        if use_ef:
            prev = ctxt.state.array_records.get("codec-ef")
            ef = codecs.ErrorFeedback(codec, {k: a.astype(np.float64) for k, a in record_arrays(prev).items()}
                                      if prev is not None else {})
        reply.content[rkey] = encode_record(delta, codec, ef)
        reply.content[CODEC_KEY] = ConfigRecord({"spec": spec, "update": "delta"})
        if ef is not None:
            ctxt.state["codec-ef"] = ArrayRecord({k: Array(v) for k, v in ef.state.items()})
        return reply


_STATE = "secagg-client"


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
    cfg = SecAggConfig(int_field(s, "t"), int_field(s, "k"), int_field(s, "nb") or None, int_field(s, "gs"))
    c = SecAggClient(int_field(s, "cid"), cfg, X25519PrivateKey.from_private_bytes(bytes_field(s, "c_sk")),
                     X25519PrivateKey.from_private_bytes(bytes_field(s, "s_sk")), bytes_field(s, "b"))
    c._keys = {int(i): (a, b) for i, a, b in zip(str_list_field(s, "ids"), bytes_list_field(s, "c_pk"), bytes_list_field(s, "s_pk")) if i}
    if c._keys:
        c._nbrs = neighbours_of(c._keys, cfg)[c.cid]
    c._inbox = {int(i): ct for i, ct in zip(str_list_field(s, "in_ids"), bytes_list_field(s, "in_ct")) if i}
    c._u2 = frozenset(int(i) for i in str_list_field(s, "u2") if i)
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
            cfg = SecAggConfig(int_field(p, "t"), int_field(p, "k"), int_field(p, "nb") or None, int_field(p, "gs"))
            c = SecAggClient(cid, cfg)
            _save(ctxt, c)
            c_pk, s_pk = c.advertise()
            return _reply(msg, ConfigRecord({"c_pk": c_pk, "s_pk": s_pk}))
        if mtype == "query.secagg_share":
            p = msg.content.config_records["secagg"]
            c = _load(ctxt)
            keys = {int(i): (a, b) for i, a, b in zip(str_list_field(p, "ids"), bytes_list_field(p, "c_pk"), bytes_list_field(p, "s_pk"))}
            cts, commit = c.share_keys(keys)
            _save(ctxt, c)
            return _reply(msg, ConfigRecord({"ids": [str(v) for v in cts], "ct": list(cts.values()),
                                             "commit": commit}))
        if mtype == "query.secagg_unmask":
            p = msg.content.config_records["secagg"]
            c = _load(ctxt)
            out = c.unmask(int(i) for i in str_list_field(p, "u3"))
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
        rnd = int_field(conf, "server-round") if "server-round" in conf else 0
        rng = np.random.default_rng([int_field(p, "seed"), rnd, msg.metadata.dst_node_id % (2**32)])
        if rng.random() < float_field(p, "dropout"):
            return Message(Error(code=0, reason=f"simulated dropout after key sharing (round {rnd})"),
                           reply_to=msg)
        c = _load(ctxt)
        weighted = "weighted" in p and bool(int_field(p, "weighted"))
        dp_clip, dp_std = float_field(p, "dp_clip", 0.0), float_field(p, "dp_std", 0.0)
        akey = next(iter(msg.content.array_records))
        base = {k: a.numpy() for k, a in msg.content.array_records[akey].items()}
        inbox = {int(i): ct for i, ct in zip(str_list_field(p, "in_ids"), bytes_list_field(p, "in_ct")) if i}
        u2 = [int(i) for i in str_list_field(p, "u2")]
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
        q = stochastic_grid(delta, int_field(p, "levels"), float_field(p, "clip"), rng)
        weight = 1
        if weighted:
            weight = int_field(metrics, "num-examples")
            if not 1 <= weight <= int_field(p, "max_weight"):
                raise ValueError(f"secure aggregation: num-examples={weight} of node {c.cid} is outside "
                                 f"[1, max_weight={int_field(p, 'max_weight')}]; raise SecAggFedAvg max_weight")
        vec = np.concatenate([q * weight, [weight]]).astype(np.int64).view(np.uint64) & c.config.mask
        y = c.masked_input(vec, inbox, u2)
        _save(ctxt, c)
        k = c.config.modulus_bits
        return Message(content=RecordDict({
            "secagg-y": ArrayRecord({"y": Array(np.frombuffer(_pack_bits(y, k), np.uint8).copy())}),
            "metrics": metrics}), reply_to=msg)


def register_secagg(app: ClientApp, mod: SecAggMod | None = None) -> SecAggMod:
    """Register the ``query.secagg_*`` functions on ``app`` (Flower routes a message to a
    registered function before it runs mods); add the returned mod to the app's mods too, so
    TRAIN replies are masked."""
    m = mod or SecAggMod()
    for action in QUERY_ACTIONS:
        app.query(action)(m.handle)
    return m
