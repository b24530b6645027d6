"""Update codecs: ``encode(array) -> bytes`` and ``decode(bytes) -> array`` with exact wire formats.

Every payload starts with the same header, little-endian throughout::

    offset size  field
    0      2     magic  b"TC"
    2      1     version (1)
    3      1     codec id (table below)
    4      1     dtype code (0 float32, 1 float64, 2 float16)
    5      1     ndim
    6      4*nd  shape, uint32 each
    ...          body (codec specific)

Bits are packed least-significant bit first (``numpy.packbits(..., bitorder="little")``).

====  =========  ======================================================================
id    spec       body
====  =========  ======================================================================
0     none       the array's raw little-endian bytes in its own dtype
1     qsgd:b     u8 bits b, u8 mode, u32 bucket size, f32 norm per bucket, then
                 mode 0 (dense): one (b)-bit field per element holding level+s, where
                 s = 2**(b-1)-1 and level in [-s, s];
                 mode 1 (sparse): Elias-gamma stream of (gap+1, |level|) pairs and a
                 sign bit per non-zero element (QSGD's "Elias code").  The encoder picks
                 whichever mode is shorter.
2     terngrad   f32 scale s = max|clip(g)|, then 2 bits per element: 0 -> 0, 1 -> +s, 2 -> -s
3     signsgd    f32 scale (mean |g|), then 1 bit per element: 1 -> +, 0 -> -
4     topk:f     u32 k, k u32 indices (ascending), k f32 values
5     mask:p     u64 seed, f32 p, then f32 values at the kept positions (in index order)
6     lowrank:r  u64 seed, u16 rank r, u8 mode; mode 0: f32 B (r x n), A (m x r) from the seed;
                 mode 1 (vectors, or r >= min(m, n)): the raw f32 array
====  =========  ======================================================================

Stochastic codecs (qsgd, terngrad without clipping, mask, lowrank) are unbiased:
``E[decode(encode(g))] = g``.  TernGrad with clipping at ``c*sigma`` is unbiased for the
clipped gradient.  ``none`` round-trips exactly; ``signsgd`` and ``topk`` are biased and meant
to be used with error feedback (:class:`ErrorFeedback`) or majority vote
(:func:`majority_vote`).

>>> c = make("qsgd:4", seed=0)
>>> x = np.zeros((3, 2), np.float32)
>>> decode(c.encode(x)).tolist()
[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import numpy as np

from tether.errors import TetherError

__all__ = [
    "CODEC_IDS",
    "QSGD",
    "Codec",
    "CodecError",
    "ErrorFeedback",
    "LowRank",
    "NoneCodec",
    "RandomMask",
    "SignSGD",
    "TernGrad",
    "TopK",
    "decode",
    "decodes",
    "majority_vote",
    "make",
    "register",
    "uplink_spec",
]

MAGIC = b"TC"
VERSION = 1
_DTYPES: dict[int, np.dtype[Any]] = {0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2")}
_DTYPE_CODES: dict[np.dtype[Any], int] = {v.newbyteorder("="): k for k, v in _DTYPES.items()}


class CodecError(TetherError, ValueError):
    """A codec spec is invalid or a payload is damaged."""


# --------------------------------------------------------------------------- header


def _header(codec_id: int, x: np.ndarray) -> bytes:
    dt = np.dtype(x.dtype).newbyteorder("=")
    if dt not in _DTYPE_CODES:
        raise CodecError(
            f"codec input must be float16/32/64. Received: dtype={x.dtype}; cast with "
            "x.astype(np.float32)"
        )
    return struct.pack(f"<2sBBBB{x.ndim}I", MAGIC, VERSION, codec_id, _DTYPE_CODES[dt],
                       x.ndim, *x.shape)


def _parse_header(buf: bytes) -> tuple[int, np.dtype[Any], tuple[int, ...], int]:
    if len(buf) < 6 or buf[:2] != MAGIC:
        raise CodecError(f"payload does not start with magic b'TC'. Received: {bytes(buf[:2])!r}")
    _, ver, cid, dcode, nd = struct.unpack_from("<2sBBBB", buf, 0)
    if ver != VERSION:
        raise CodecError(f"payload version {ver} unsupported; this tether reads version {VERSION}")
    if dcode not in _DTYPES:
        raise CodecError(f"payload dtype code {dcode} unknown")
    if len(buf) < 6 + 4 * nd:
        raise CodecError("payload truncated inside the shape field")
    shape = struct.unpack_from(f"<{nd}I", buf, 6)
    return int(cid), _DTYPES[dcode], tuple(int(s) for s in shape), 6 + 4 * int(nd)


def _need(buf: bytes, end: int, what: str) -> None:
    if len(buf) < end:
        raise CodecError(f"payload truncated in {what}: need {end} bytes, have {len(buf)}")


def _pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers < 2**bits into a little-endian bit stream.

    >>> _unpack_bits(_pack_bits(np.array([1, 2, 3]), 2), 2, 3).tolist()
    [1, 2, 3]
    """
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if bits == 8:
        return v.astype(np.uint8).tobytes()
    shifts = np.arange(bits, dtype=np.uint64)
    b = ((v[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8)
    return np.packbits(b.reshape(-1), bitorder="little").tobytes()


def _unpack_bits(buf: bytes, bits: int, n: int) -> np.ndarray:
    raw = np.frombuffer(buf, dtype=np.uint8)
    if bits == 8:
        return raw[:n].astype(np.int64)
    b = np.unpackbits(raw, bitorder="little")[: n * bits].reshape(n, bits).astype(np.int64)
    return (b << np.arange(bits, dtype=np.int64)[None, :]).sum(axis=1)


def _packed_len(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


# ----------------------------------------------------------------------- Elias gamma


def _elias_gamma_bits(values: np.ndarray) -> np.ndarray:
    """Bits (uint8 0/1) of the Elias-gamma codes of positive integers, concatenated.

    Code of n >= 1: floor(log2 n) zeros, then n in binary, most significant bit first.
    """
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return np.zeros(0, np.uint8)
    nbits = np.floor(np.log2(v)).astype(np.int64) + 1  # exact for v < 2**52
    total = 2 * nbits - 1
    ends = np.cumsum(total)
    starts = ends - total
    out = np.zeros(int(ends[-1]), np.uint8)
    # binary part occupies positions starts+nbits-1 .. ends-1, MSB first
    pos_rep = np.repeat(starts + nbits - 1, nbits)
    within = np.arange(int(nbits.sum())) - np.repeat(np.cumsum(nbits) - nbits, nbits)
    shift = np.repeat(nbits - 1, nbits) - within
    out[pos_rep + within] = ((np.repeat(v, nbits) >> shift) & 1).astype(np.uint8)
    return out


def _elias_gamma_decode(bits: np.ndarray, count: int) -> tuple[list[int], int]:
    """Decode ``count`` Elias-gamma integers from a 0/1 array; returns values and bits used."""
    out: list[int] = []
    ones = np.flatnonzero(bits)
    i = 0
    for _ in range(count):
        k = int(np.searchsorted(ones, i, side="left"))
        if k >= len(ones):
            raise CodecError("Elias-gamma stream truncated")
        p = int(ones[k])
        z = p - i
        if p + z + 1 > len(bits):
            raise CodecError("Elias-gamma stream truncated")
        val = 0
        for b in bits[p : p + z + 1].tolist():
            val = (val << 1) | b
        out.append(val)
        i = p + z + 1
    return out, i


# ---------------------------------------------------------------------------- codecs


class Codec:
    """Base class: ``encode(array) -> bytes``; :func:`decode` reads any codec's payload.

    Attributes:
        spec: The spec string that :func:`make` accepts to rebuild this codec.
        stochastic: Whether ``decode(encode(x))`` is random (and unbiased).
    """

    spec: str = "none"
    stochastic: bool = False
    codec_id: int  # set by @register

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def encode(self, x: np.ndarray) -> bytes:
        """Encode one array (any shape, float16/32/64) into a self-describing payload."""
        x = np.asarray(x)
        return _header(self.codec_id, x) + self._body(x)

    def decode(self, payload: bytes) -> np.ndarray:
        """Same as the module-level :func:`decode`."""
        return decode(payload)

    def _body(self, x: np.ndarray) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


# ---------------------------------------------------------------------------- the registry

Decoder = Callable[[bytes, int, "np.dtype[Any]", tuple[int, ...]], np.ndarray]
_C = TypeVar("_C", bound="type[Codec]")


class _Entry(NamedTuple):
    cls: type[Codec]
    codec_id: int
    arg: Callable[[str], Any] | None  # parses the spec's ":ARG" into the first parameter
    example: str                       # the spec the error help shows
    decoder: Decoder | None


_REGISTRY: dict[str, _Entry] = {}
_NAME_OF_ID: dict[int, str] = {}
_IDS: dict[str, int] = {}
# Wire id of each codec name (the payload header's codec byte), as registered.
CODEC_IDS: Mapping[str, int] = MappingProxyType(_IDS)


def register(name: str, codec_id: int, *, arg: Callable[[str], Any] | None = None,
             example: str | None = None) -> Callable[[_C], _C]:
    """Class decorator: codec `name` (its `make` spec prefix) with wire id `codec_id`.

    `arg` parses the spec's argument ("qsgd:8" -> int("8")) into the constructor's first
    parameter; without it the argument is ignored. Its payload decoder is registered with
    :func:`decodes`. Names and ids are unique.
    """
    def add(cls: _C) -> _C:
        if name in _REGISTRY or codec_id in _NAME_OF_ID or not 0 <= codec_id <= 255:
            raise ValueError(f"codec {name!r} / id {codec_id}: taken or out of range [0, 255]")
        cls.codec_id = codec_id
        _REGISTRY[name] = _Entry(cls, codec_id, arg, example or name, None)
        _NAME_OF_ID[codec_id] = name
        _IDS[name] = codec_id
        return cls

    return add


def decodes(cls: type[Codec]) -> Callable[[Decoder], Decoder]:
    """Decorator: the payload decoder (buffer, body offset, dtype, shape) of codec `cls`."""
    def add(fn: Decoder) -> Decoder:
        name = _NAME_OF_ID[cls.codec_id]
        _REGISTRY[name] = _REGISTRY[name]._replace(decoder=fn)
        return fn

    return add


@register("none", 0)
class NoneCodec(Codec):
    """Identity: the raw bytes. Round-trips exactly."""

    def _body(self, x: np.ndarray) -> bytes:
        return np.ascontiguousarray(x, dtype=np.dtype(x.dtype).newbyteorder("<")).tobytes()


@decodes(NoneCodec)
def _decode_none(buf: bytes, off: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    _need(buf, off + n * dt.itemsize, "raw body")
    return np.frombuffer(buf, dtype=dt, count=n, offset=off).reshape(shape).copy()


@register("qsgd", 1, arg=int, example="qsgd:4")
class QSGD(Codec):
    """QSGD (Alistarh et al. 2017): q(g_i) = ||g||_2 * sign(g_i) * xi_i(g, s) per bucket.

    ``xi_i = l/s`` or ``(l+1)/s`` with probability ``|g_i|/||g|| * s - l`` (stochastic
    rounding), so ``E[q(g)] = g``.

    Args:
        bits: Bits per element in the dense mode (default 4); levels ``s = 2**(bits-1) - 1``.
            Must be in [2, 8].
        bucket: Elements per bucket sharing one f32 norm (default 512).
        seed: Seed of the rounding generator (default None: OS entropy).
    """

    stochastic = True

    def __init__(self, bits: int = 4, bucket: int = 512, seed: int | None = None) -> None:
        super().__init__(seed)
        if not 2 <= bits <= 8:
            raise CodecError(f"QSGD bits must be in [2, 8]. Received: bits={bits}")
        if bucket < 1:
            raise CodecError(f"QSGD bucket must be >= 1. Received: bucket={bucket}")
        self.bits, self.bucket, self.s = bits, bucket, 2 ** (bits - 1) - 1
        self.spec = f"qsgd:{bits}"

    def quantize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (norms f32 per bucket, signed integer levels in [-s, s]) for flat x."""
        flat = np.asarray(x, dtype=np.float64).reshape(-1)
        n, bsz = flat.size, self.bucket
        nb = max(1, -(-n // bsz))
        padded = np.zeros(nb * bsz)
        padded[:n] = flat
        buckets = padded.reshape(nb, bsz)
        norms = np.linalg.norm(buckets, axis=1).astype(np.float32)
        safe = np.where(norms > 0, norms.astype(np.float64), 1.0)
        r = np.abs(buckets) / safe[:, None] * self.s
        r = np.minimum(r, self.s)
        low = np.floor(r)
        lv = low + (self.rng.random(r.shape) < (r - low))
        lv = (np.sign(buckets) * lv).astype(np.int64).reshape(-1)[:n]
        return norms, lv

    def _body(self, x: np.ndarray) -> bytes:
        norms, lv = self.quantize(x)
        n = lv.size
        dense = _pack_bits(lv + self.s, self.bits)
        nz = np.flatnonzero(lv)
        sparse = b""
        if nz.size * 12 < n * self.bits:  # only try Elias when it can win
            gaps = np.diff(np.concatenate([[-1], nz])) if nz.size else np.zeros(0, np.int64)
            pairs = np.empty(2 * nz.size, np.int64)
            pairs[0::2], pairs[1::2] = gaps, np.abs(lv[nz])
            stream = np.concatenate([_elias_gamma_bits(pairs), (lv[nz] > 0).astype(np.uint8)])
            sparse = struct.pack("<I", nz.size) + np.packbits(stream, bitorder="little").tobytes()
        mode, payload = (1, sparse) if sparse and len(sparse) < len(dense) else (0, dense)
        return struct.pack("<BBI", self.bits, mode, self.bucket) + norms.astype("<f4").tobytes() \
            + payload


@decodes(QSGD)
def _decode_qsgd(buf: bytes, off: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    _need(buf, off + 6, "qsgd fields")
    bits, mode, bucket = struct.unpack_from("<BBI", buf, off)
    off += 6
    if not 2 <= bits <= 8 or bucket < 1:
        raise CodecError(f"qsgd payload has bits={bits}, bucket={bucket}")
    s = 2 ** (bits - 1) - 1
    n = int(np.prod(shape, dtype=np.int64))
    nb = max(1, -(-n // bucket))
    _need(buf, off + 4 * nb, "qsgd norms")
    norms = np.frombuffer(buf, "<f4", nb, off).astype(np.float64)
    off += 4 * nb
    if mode == 0:
        _need(buf, off + _packed_len(n, bits), "qsgd levels")
        lv = _unpack_bits(buf[off:], bits, n) - s
    elif mode == 1:
        _need(buf, off + 4, "qsgd sparse count")
        (nnz,) = struct.unpack_from("<I", buf, off)
        stream = np.unpackbits(np.frombuffer(buf, np.uint8, offset=off + 4), bitorder="little")
        vals, used = _elias_gamma_decode(stream, 2 * nnz)
        if used + nnz > len(stream):
            raise CodecError("qsgd sparse sign bits truncated")
        signs = np.where(stream[used : used + nnz] == 1, 1, -1)
        idx = np.cumsum(np.asarray(vals[0::2], np.int64)) - 1
        lv = np.zeros(n, np.int64)
        if nnz and (idx[-1] >= n):
            raise CodecError("qsgd sparse index out of range")
        lv[idx] = signs * np.asarray(vals[1::2], np.int64)
    else:
        raise CodecError(f"qsgd mode {mode} unknown")
    scale = np.repeat(norms, bucket)[:n] / s
    return (lv * scale).astype(dt).reshape(shape)


@register("terngrad", 2, arg=float)
class TernGrad(Codec):
    """TernGrad (Wen et al. 2017): q(g) = s * sign(g) * b, b ~ Bernoulli(|g|/s), s = max|g|.

    Args:
        clip: Clip g to [-c*sigma, c*sigma] first (default 2.5); 0 disables clipping, which
            makes the codec unbiased for g itself.
        seed: Seed of the Bernoulli generator (default None).
    """

    stochastic = True

    def __init__(self, clip: float = 2.5, seed: int | None = None) -> None:
        super().__init__(seed)
        if clip < 0:
            raise CodecError(f"TernGrad clip must be >= 0. Received: clip={clip}")
        self.clip = clip
        self.spec = "terngrad" if clip == 2.5 else f"terngrad:{clip:g}"

    def clipped(self, x: np.ndarray) -> np.ndarray:
        """The input after clipping at c*std (the quantity TernGrad is unbiased for)."""
        g = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.clip > 0 and g.size:
            c = self.clip * float(np.std(g))
            g = np.clip(g, -c, c)
        return g

    def _body(self, x: np.ndarray) -> bytes:
        g = self.clipped(x)
        s = float(np.max(np.abs(g))) if g.size else 0.0
        s32 = np.float32(s)
        if s32 == 0:
            codes = np.zeros(g.size, np.int64)
        else:
            p = np.minimum(np.abs(g) / float(s32), 1.0)
            b = self.rng.random(g.size) < p
            codes = np.where(b, np.where(g > 0, 1, 2), 0)
        return struct.pack("<f", s32) + _pack_bits(codes, 2)


@decodes(TernGrad)
def _decode_terngrad(buf: bytes, off: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    _need(buf, off + 4 + _packed_len(n, 2), "terngrad body")
    (s,) = struct.unpack_from("<f", buf, off)
    codes = _unpack_bits(buf[off + 4 :], 2, n)
    if np.any(codes == 3):
        raise CodecError("terngrad payload holds the unused code 3")
    vals = np.where(codes == 1, s, np.where(codes == 2, -s, 0.0))
    return vals.astype(dt).reshape(shape)


@register("signsgd", 3)
class SignSGD(Codec):
    """signSGD (Bernstein et al. 2018): q(g) = mean|g| * sign(g), 1 bit per element.

    Zeros encode as '-' with scale 0 when the whole input is zero, so zero decodes to zero.
    Deterministic; biased. Use with :class:`ErrorFeedback` (EF-signSGD) or
    :func:`majority_vote`.
    """

    spec = "signsgd"

    def _body(self, x: np.ndarray) -> bytes:
        g = np.asarray(x, dtype=np.float64).reshape(-1)
        scale = np.float32(np.mean(np.abs(g))) if g.size else np.float32(0)
        return struct.pack("<f", scale) + _pack_bits((g > 0).astype(np.int64), 1)


@decodes(SignSGD)
def _decode_signsgd(buf: bytes, off: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    _need(buf, off + 4 + _packed_len(n, 1), "signsgd body")
    (s,) = struct.unpack_from("<f", buf, off)
    bits = _unpack_bits(buf[off + 4 :], 1, n)
    return (np.where(bits == 1, s, -s)).astype(dt).reshape(shape)


def signs_of(payload: bytes) -> np.ndarray:
    """The +-1 vector of a signsgd payload (for majority vote)."""
    cid, _, shape, off = _parse_header(payload)
    if cid != SignSGD.codec_id:
        raise CodecError(f"signs_of needs a signsgd payload (id {SignSGD.codec_id}). "
                         f"Received: id={cid}")
    n = int(np.prod(shape, dtype=np.int64))
    _need(payload, off + 4 + _packed_len(n, 1), "signsgd body")
    return (2 * _unpack_bits(payload[off + 4 :], 1, n) - 1).reshape(shape)


def majority_vote(payloads: Sequence[bytes]) -> np.ndarray:
    """sign(sum_k sign_k) * median scale over signsgd payloads (ties vote 0).

    >>> c = SignSGD()
    >>> ps = [c.encode(np.array([1., -1.])), c.encode(np.array([1., 1.])), c.encode(np.array([-2., -2.]))]
    >>> majority_vote(ps).tolist()
    [1.0, -1.0]
    """
    if not payloads:
        raise CodecError("majority_vote needs at least one payload")
    votes = sum(signs_of(p).astype(np.int64) for p in payloads)
    scales = [struct.unpack_from("<f", p, _parse_header(p)[3])[0] for p in payloads]
    dt = _parse_header(payloads[0])[1]
    return (np.sign(votes) * float(np.median(scales))).astype(dt)


@register("topk", 4, arg=float, example="topk:0.01")
class TopK(Codec):
    """Top-k sparsification: keep the k = max(1, ceil(f*n)) largest |g_i|, exact values.

    Biased; use with :class:`ErrorFeedback`. Zero entries among the top k are dropped.
    """


    def __init__(self, fraction: float = 0.01, seed: int | None = None) -> None:
        super().__init__(seed)
        if not 0 < fraction <= 1:
            raise CodecError(f"TopK fraction must be in (0, 1]. Received: fraction={fraction}")
        self.fraction = fraction
        self.spec = f"topk:{fraction:g}"

    def _body(self, x: np.ndarray) -> bytes:
        g = np.asarray(x, dtype=np.float32).reshape(-1)
        k = min(g.size, max(1, math.ceil(self.fraction * g.size))) if g.size else 0
        idx = np.argpartition(-np.abs(g), k - 1)[:k] if k else np.zeros(0, np.int64)
        idx = np.sort(idx[g[idx] != 0])
        return struct.pack("<I", idx.size) + idx.astype("<u4").tobytes() + g[idx].astype("<f4").tobytes()


@decodes(TopK)
def _decode_topk(buf: bytes, off: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    _need(buf, off + 4, "topk count")
    (k,) = struct.unpack_from("<I", buf, off)
    _need(buf, off + 4 + 8 * k, "topk entries")
    idx = np.frombuffer(buf, "<u4", k, off + 4).astype(np.int64)
    vals = np.frombuffer(buf, "<f4", k, off + 4 + 4 * k)
    if k and idx.max() >= n:
        raise CodecError(f"topk index {idx.max()} out of range for {n} elements")
    out = np.zeros(n, dt)
    out[idx] = vals
    return out.reshape(shape)


def _mask_positions(seed: int, p: float, n: int) -> np.ndarray:
    return np.flatnonzero(np.random.default_rng(seed).random(n) < p)


@register("mask", 5, arg=float, example="mask:0.1")
class RandomMask(Codec):
    """Random-mask structured update (Konecny et al. 2016): keep each entry with prob. p.

    The mask comes from a u64 seed sent with the payload; kept values are scaled by 1/p on
    decode, so the codec is unbiased over the seed.
    """

    stochastic = True

    def __init__(self, p: float = 0.1, seed: int | None = None) -> None:
        super().__init__(seed)
        if not 0 < p <= 1:
            raise CodecError(f"mask probability must be in (0, 1]. Received: p={p}")
        self.p = float(np.float32(p))
        self.spec = f"mask:{p:g}"

    def _body(self, x: np.ndarray) -> bytes:
        g = np.asarray(x, dtype=np.float32).reshape(-1)
        seed = int(self.rng.integers(0, 2**63))
        pos = _mask_positions(seed, self.p, g.size)
        return struct.pack("<Qf", seed, self.p) + g[pos].astype("<f4").tobytes()


@decodes(RandomMask)
def _decode_mask(buf: bytes, off: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    _need(buf, off + 12, "mask fields")
    seed, p = struct.unpack_from("<Qf", buf, off)
    if not 0 < p <= 1:
        raise CodecError(f"mask payload has p={p}")
    pos = _mask_positions(seed, p, n)
    _need(buf, off + 12 + 4 * pos.size, "mask values")
    out = np.zeros(n, np.float64)
    out[pos] = np.frombuffer(buf, "<f4", pos.size, off + 12) / np.float64(p)
    return out.astype(dt).reshape(shape)


def _lowrank_a(seed: int, m: int, r: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, r)) / math.sqrt(r)


@register("lowrank", 6, arg=int, example="lowrank:4")
class LowRank(Codec):
    """Low-rank structured update H ~ A.B (Konecny et al. 2016), A (m x r) from a seed.

    H is viewed as (shape[0], rest). A has i.i.d. N(0, 1/r) entries, so E[A A^T] = I and
    sending B = A^T H makes decode(A B) unbiased. Vectors and arrays with r >= min(m, n) are
    sent raw (mode 1).
    """

    stochastic = True

    def __init__(self, rank: int = 4, seed: int | None = None) -> None:
        super().__init__(seed)
        if rank < 1:
            raise CodecError(f"lowrank rank must be >= 1. Received: rank={rank}")
        self.rank = rank
        self.spec = f"lowrank:{rank}"

    def _body(self, x: np.ndarray) -> bytes:
        seed = int(self.rng.integers(0, 2**63))
        if x.ndim < 2 or self.rank >= min(x.shape[0], x.size // max(1, x.shape[0])):
            return struct.pack("<QHB", seed, self.rank, 1) + np.asarray(x, "<f4").tobytes()
        h = np.asarray(x, np.float64).reshape(x.shape[0], -1)
        b = _lowrank_a(seed, h.shape[0], self.rank).T @ h
        return struct.pack("<QHB", seed, self.rank, 0) + b.astype("<f4").tobytes()


@decodes(LowRank)
def _decode_lowrank(buf: bytes, off: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    _need(buf, off + 11, "lowrank fields")
    seed, r, mode = struct.unpack_from("<QHB", buf, off)
    off += 11
    n = int(np.prod(shape, dtype=np.int64))
    if mode == 1:
        _need(buf, off + 4 * n, "lowrank raw body")
        return np.frombuffer(buf, "<f4", n, off).astype(dt).reshape(shape)
    if mode != 0 or len(shape) < 2:
        raise CodecError(f"lowrank mode {mode} invalid for shape {shape}")
    m, cols = shape[0], n // shape[0]
    _need(buf, off + 4 * r * cols, "lowrank B")
    b = np.frombuffer(buf, "<f4", r * cols, off).astype(np.float64).reshape(r, cols)
    return (_lowrank_a(seed, m, r) @ b).astype(dt).reshape(shape)


def decode(payload: bytes) -> np.ndarray:
    """Decode any codec payload back to an array of the original shape and dtype.

    Raises:
        CodecError: bad magic, unknown version/codec/dtype, or truncated body.
    """
    buf = bytes(payload)
    cid, dt, shape, off = _parse_header(buf)
    name = _NAME_OF_ID.get(cid)
    decoder = _REGISTRY[name].decoder if name is not None else None
    if decoder is None:
        raise CodecError(f"codec id {cid} unknown; known ids: {sorted(_NAME_OF_ID)}")
    return decoder(buf, off, dt, shape)


def uplink_spec(spec: str) -> tuple[str, bool]:
    """(codec spec, error feedback?) of an uplink spec, whose ``+ef`` suffix asks for an
    :class:`ErrorFeedback` residual; the codec spec is checked as :func:`make` does.

    >>> uplink_spec("topk:0.01+ef")
    ('topk:0.01', True)
    """
    base = spec.removesuffix("+ef")
    make(base)  # raises CodecError naming the spec
    return base, base != spec


@dataclass
class ErrorFeedback:
    """Error feedback (Seide et al. 2014; Karimireddy et al. 2019): e = g + r; r <- e - D(C(e)).

    Keeps one residual per key (e.g. layer index). ``state`` can be saved between rounds.
    """

    codec: Codec
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return self.codec.spec + "+ef"

    def encode(self, x: np.ndarray, key: str = "0") -> bytes:
        """Encode x plus the stored residual of ``key``; update that residual."""
        x = np.asarray(x)
        r = self.state.get(key)
        e = x.astype(np.float64) + (r if r is not None and r.shape == x.shape else 0.0)
        payload = self.codec.encode(e.astype(x.dtype))
        self.state[key] = e - decode(payload).astype(np.float64)
        return payload


def make(spec: str, seed: int | None = None) -> Codec:
    """Build a codec from a spec string.

    Specs: ``none``, ``qsgd:B`` (B bits, default 4), ``terngrad`` / ``terngrad:C`` (clip C,
    0 = off), ``signsgd``, ``topk:F`` (fraction, default 0.01), ``mask:P`` (keep prob.,
    default 0.1), ``lowrank:R`` (rank, default 4).

    >>> make("topk:0.05").spec
    'topk:0.05'
    """
    name, _, arg = spec.strip().lower().partition(":")
    entry = _REGISTRY.get(name)
    if entry is None:
        raise CodecError(f"unknown codec spec {spec!r}; use one of "
                         f"{', '.join(e.example for e in _REGISTRY.values())}")
    build: Callable[..., Codec] = entry.cls
    try:
        if arg and entry.arg is not None:
            return build(entry.arg(arg), seed=seed)
        return build(seed=seed)
    except ValueError as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"codec spec {spec!r}: bad argument {arg!r} ({exc})") from exc
