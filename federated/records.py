"""What travels in Flower's records between tether's client mods and server strategies.

Updates: a codec-compressed update is one uint8 Array of per-layer frames
(`encode_record` / `decode_record`; `wire_bytes` counts a message's payload bytes).

Secure aggregation (Bonawitz et al.) over Flower messages, composed with stochastic
quantization. One training round is four exchanges, all plain Flower messages:

=========================  =====================================================  ==========
message type               server -> client                                       reply
=========================  =====================================================  ==========
``query.secagg_keys``      t, k, neighbours, graph seed                            c_pk, s_pk
``query.secagg_share``     everyone's public keys (U1)                             ciphertexts
``train``                  weights, config, the client's ciphertexts, U2           y_u (k-bit)
``query.secagg_unmask``    U3 (clients whose masked input arrived)                 shares
=========================  =====================================================  ==========

The client side is `mods.SecAggMod`, the server side `strategy.SecAggFedAvg` (with distributed
DP). The record fields are read with the typed readers below, which name the field at fault.
"""

from __future__ import annotations

import struct

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from tether.federated import codecs
from tether.federated.secagg import SecAggError

__all__ = [
    "CODEC_KEY",
    "PACKED_KEY",
    "QUERY_ACTIONS",
    "bytes_field",
    "bytes_list_field",
    "decode_record",
    "encode_record",
    "float_field",
    "int_field",
    "number_field",
    "record_arrays",
    "record_payloads",
    "stochastic_grid",
    "str_list_field",
    "wire_bytes",
]

CODEC_KEY = "codec"
"""ConfigRecord key (in the reply) describing how the ArrayRecord is encoded."""

QUERY_ACTIONS = ("secagg_keys", "secagg_share", "secagg_unmask")


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


def number_field(rec: MetricRecord | ConfigRecord, key: str) -> float:
    """rec[key] as a float; a missing or non-numeric field raises naming the key."""
    v = rec.get(key)
    if isinstance(v, (bool, int, float)):
        return float(v)
    raise ValueError(f"reply record field {key!r} must be a number. Received: {v!r} "
                     f"(fields: {sorted(rec)})")


def record_arrays(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: arr.numpy() for k, arr in rec.items()}

def field(rec: ConfigRecord | MetricRecord, key: str) -> object:
    if key not in rec:
        raise SecAggError(f"secure aggregation message: record has no field {key!r} "
                          f"(fields: {sorted(rec)}); client and server versions differ?")
    return rec[key]


def int_field(rec: ConfigRecord | MetricRecord, key: str) -> int:
    v = field(rec, key)
    if isinstance(v, (bool, int, float, str)):
        return int(v)
    raise SecAggError(f"secure aggregation message: field {key!r} must be a number. Received: {type(v).__name__}")


def float_field(rec: ConfigRecord, key: str, default: float | None = None) -> float:
    if default is not None and key not in rec:
        return default
    v = field(rec, key)
    if isinstance(v, (bool, int, float, str)):
        return float(v)
    raise SecAggError(f"secure aggregation message: field {key!r} must be a number. Received: {type(v).__name__}")


def bytes_field(rec: ConfigRecord, key: str) -> bytes:
    v = field(rec, key)
    if isinstance(v, bytes):
        return v
    raise SecAggError(f"secure aggregation message: field {key!r} must be bytes. Received: {type(v).__name__}")


def str_list_field(rec: ConfigRecord, key: str) -> list[str]:
    v = field(rec, key)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return [str(x) for x in v]
    raise SecAggError(f"secure aggregation message: field {key!r} must be a list of str")


def bytes_list_field(rec: ConfigRecord, key: str) -> list[bytes]:
    v = field(rec, key)
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
