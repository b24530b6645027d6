"""Secure aggregation (Bonawitz et al., CCS 2017), with the sparse-graph variant (Bell et al. 2020).

The server learns only ``sum_u x_u`` over the clients that sent a masked input; clients that
drop after sharing keys are recovered from Shamir shares held by the others.

Protocol, one round (U1 ⊇ U2 ⊇ U3 ⊇ U4 are the clients still answering)::

    0 advertise    client: two X25519 key pairs (c: encryption, s: masking) -> server (c_pk, s_pk)
    1 share keys   client: self-mask seed b_u (32 bytes); Shamir t-of-n shares of s_sk and b_u
                   for every neighbour v in N(u) ∪ {u}; each pair of shares AES-256-GCM
                   encrypted under HKDF-SHA256(X25519(c_sk_u, c_pk_v)), with (u, v) bound as
                   associated data; plus the commitment SHA-256(b_u) -> server routes them
    2 masked input y_u = x_u + PRG(b_u) + sum_{v in U2∩N(u), u<v} PRG(s_uv)
                                        - sum_{v in U2∩N(u), u>v} PRG(s_uv)   (mod 2^k)
                   s_uv = HKDF-SHA256(X25519(s_sk_u, s_pk_v)); PRG = AES-256-CTR keystream
    3 unmask       client u gets U3, decrypts its shares, reveals the b-share of each v in U3
                   and the s_sk-share of each v in U2 \\ U3 (never both for the same v)
    server         reconstructs b_u (checked against its commitment) for u in U3 and s_sk_v
                   (checked against s_pk_v) for dropped v, strips the self masks and the
                   dropped clients' pairwise masks: sum = z - sum PRG(b_u) -+ PRG(s_uv)

Any stage with fewer than ``threshold`` clients aborts with :class:`SecAggAbort`; a ciphertext
that fails authentication or a share that reconstructs a secret not matching its commitment
raises :class:`SecAggTamper`.  With ``neighbours=k`` each client masks with and shares to only
``k`` neighbours on a Harary graph over a seeded permutation (threshold applies per
neighbourhood of size k+1).

Inputs are integer vectors in Z_{2^k}; :func:`to_fixed` / :func:`from_fixed` map floats to a
two's-complement fixed-point grid.

>>> import numpy as np
>>> xs = [np.array([1.5, -2.0]), np.array([0.25, 1.0]), np.array([3.0, 0.0])]
>>> aggregate_in_process(xs, threshold=2).tolist()
[4.75, -1.0]
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tether.errors import TetherError

__all__ = [
    "PRIME",
    "SecAggAbort",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "SecAggTamper",
    "aggregate_in_process",
    "from_fixed",
    "neighbours_of",
    "prg",
    "shamir_combine",
    "shamir_split",
    "to_fixed",
]

PRIME = 2**521 - 1
"""Shamir field: the Mersenne prime 2^521 - 1 (any 32-byte secret fits)."""
_SHARE_BYTES = 66


class SecAggError(TetherError):
    """Secure aggregation failed."""


class SecAggAbort(SecAggError):
    """Too few clients remain at some stage to finish the round safely."""


class SecAggTamper(SecAggError):
    """A ciphertext failed authentication or a reconstructed secret misses its commitment."""


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters every party agrees on before a round.

    Args:
        threshold: Shares needed to reconstruct a secret (t); also the least number of
            clients at every stage. Must be >= 2.
        modulus_bits: Inputs and masks live in Z_{2^k}, k in [8, 64] (default 48).
        neighbours: None (default) masks with every other client (complete graph); an even
            k >= 2 masks with and shares to k neighbours only (SecAgg+ style sparse graph).
        graph_seed: Public seed of the neighbour graph (default 0).
    """

    threshold: int
    modulus_bits: int = 48
    neighbours: int | None = None
    graph_seed: int = 0

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError(f"SecAggConfig.threshold must be >= 2. Received: threshold={self.threshold}")
        if not 8 <= self.modulus_bits <= 64:
            raise ValueError(
                f"SecAggConfig.modulus_bits must be in [8, 64]. Received: modulus_bits={self.modulus_bits}"
            )
        if self.neighbours is not None and (self.neighbours < 2 or self.neighbours % 2):
            raise ValueError(
                f"SecAggConfig.neighbours must be an even number >= 2 or None. "
                f"Received: neighbours={self.neighbours}"
            )
        if self.neighbours is not None and self.threshold > self.neighbours + 1:
            raise ValueError(
                f"SecAggConfig.threshold={self.threshold} exceeds the neighbourhood size "
                f"neighbours+1={self.neighbours + 1}; lower the threshold or raise neighbours"
            )

    @property
    def mask(self) -> np.uint64:
        return np.uint64((1 << self.modulus_bits) - 1) if self.modulus_bits < 64 else np.uint64(2**64 - 1)


# ----------------------------------------------------------------------------- maths


def shamir_split(secret: int, n_points: Sequence[int], threshold: int,
                 rng: secrets.SystemRandom | None = None) -> dict[int, int]:
    """Shares f(x) for x in ``n_points`` of a random degree-(t-1) f with f(0) = secret (mod PRIME).

    >>> sh = shamir_split(42, [1, 2, 3], 2)
    >>> shamir_combine({1: sh[1], 3: sh[3]})
    42
    """
    r = rng or secrets.SystemRandom()
    coeffs = [secret % PRIME] + [r.randrange(PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in n_points:
        if x % PRIME == 0:
            raise SecAggError(f"Shamir x-coordinate must be non-zero mod p. Received: x={x}")
        acc = 0
        for c in reversed(coeffs):
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


def shamir_combine(shares: Mapping[int, int]) -> int:
    """Lagrange interpolation at 0 of the points ``{x: y}`` (mod PRIME)."""
    xs = list(shares)
    total = 0
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + shares[xi] * num * pow(den, -1, PRIME)) % PRIME
    return total


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def prg(seed: bytes, n: int, modulus_bits: int) -> np.ndarray:
    """n uint64 words of the AES-256-CTR keystream under HKDF(seed), reduced mod 2^k.

    >>> prg(b"k" * 32, 3, 8).dtype
    dtype('uint64')
    """
    key = _hkdf(seed, b"tether-secagg-prg")
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    words = np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64)
    if modulus_bits < 64:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


def to_fixed(x: np.ndarray, frac_bits: int, modulus_bits: int) -> np.ndarray:
    """round(x * 2^f) as two's complement in Z_{2^k} (uint64).

    >>> from_fixed(to_fixed(np.array([-1.5, 2.25]), 8, 32), 8, 32).tolist()
    [-1.5, 2.25]
    """
    q = np.rint(np.asarray(x, np.float64) * float(2**frac_bits))
    lim = 2.0 ** (modulus_bits - 1)
    if q.size and (q.max() >= lim or q.min() < -lim):
        raise SecAggError(
            f"value {float(np.abs(x).max())} overflows fixed point with frac_bits={frac_bits}, "
            f"modulus_bits={modulus_bits}; clip the input or lower frac_bits"
        )
    v = q.astype(np.int64).view(np.uint64)
    if modulus_bits < 64:
        v = v & np.uint64((1 << modulus_bits) - 1)
    return v


def from_fixed(v: np.ndarray, frac_bits: int, modulus_bits: int) -> np.ndarray:
    """Inverse of :func:`to_fixed`: read Z_{2^k} as signed, divide by 2^f."""
    return _signed(v, modulus_bits).astype(np.float64) / float(2**frac_bits)


def _signed(v: np.ndarray, modulus_bits: int) -> np.ndarray:
    v = np.asarray(v, np.uint64)
    if modulus_bits == 64:
        return v.view(np.int64)
    s = v.astype(np.int64)
    return np.where(s >= (1 << (modulus_bits - 1)), s - (1 << modulus_bits), s)


def neighbours_of(ids: Iterable[int], cfg: SecAggConfig) -> dict[int, frozenset[int]]:
    """Neighbour sets: everyone else (complete graph) or a Harary graph H(k, n) over a permutation.

    >>> cfg = SecAggConfig(threshold=2, neighbours=2)
    >>> sorted(len(v) for v in neighbours_of(range(6), cfg).values())
    [2, 2, 2, 2, 2, 2]
    """
    order = sorted(set(ids))
    n = len(order)
    if cfg.neighbours is None or cfg.neighbours >= n - 1:
        return {u: frozenset(order) - {u} for u in order}
    perm = [order[i] for i in np.random.default_rng(cfg.graph_seed).permutation(n)]
    half = cfg.neighbours // 2
    out: dict[int, set[int]] = {u: set() for u in order}
    for i, u in enumerate(perm):
        for d in range(1, half + 1):
            out[u].add(perm[(i + d) % n])
            out[u].add(perm[(i - d) % n])
    return {u: frozenset(v) for u, v in out.items()}


def _pub(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _priv(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _agree(sk: X25519PrivateKey, pk_bytes: bytes, info: bytes) -> bytes:
    return _hkdf(sk.exchange(X25519PublicKey.from_public_bytes(pk_bytes)), info)


def _ad(u: int, v: int) -> bytes:
    return struct.pack("<QQ", u, v)


# ---------------------------------------------------------------------------- parties


@dataclass
class SecAggClient:
    """One client's side of the protocol. ``cid`` is a non-negative int (Flower node id).

    Call :meth:`advertise`, :meth:`share_keys`, :meth:`masked_input`, :meth:`unmask` in turn.
    """

    cid: int
    config: SecAggConfig
    _c_sk: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _s_sk: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _b: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    _keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)
    _nbrs: frozenset[int] = field(default_factory=frozenset, repr=False)
    _inbox: dict[int, bytes] = field(default_factory=dict, repr=False)
    _u2: frozenset[int] = field(default_factory=frozenset, repr=False)

    def advertise(self) -> tuple[bytes, bytes]:
        """Stage 0: the public keys (c_pk, s_pk), 32 bytes each."""
        return _pub(self._c_sk.public_key()), _pub(self._s_sk.public_key())

    def share_keys(self, public_keys: Mapping[int, tuple[bytes, bytes]]) -> tuple[dict[int, bytes], bytes]:
        """Stage 1: encrypted shares for each v in N(u) ∪ {u}, and the commitment SHA-256(b_u)."""
        if len(public_keys) < self.config.threshold:
            raise SecAggAbort(
                f"client {self.cid}: {len(public_keys)} clients advertised keys, fewer than "
                f"threshold={self.config.threshold}; round aborted"
            )
        own = self.advertise()
        if public_keys.get(self.cid) != own:
            raise SecAggTamper(f"client {self.cid}: server relayed a wrong public key for this client")
        self._keys = dict(public_keys)
        self._nbrs = neighbours_of(public_keys, self.config)[self.cid]
        holders = sorted(self._nbrs | {self.cid})
        xs = [v + 1 for v in holders]
        s_sh = shamir_split(int.from_bytes(_priv(self._s_sk), "little"), xs, self.config.threshold)
        b_sh = shamir_split(int.from_bytes(self._b, "little"), xs, self.config.threshold)
        out = {}
        for v in holders:
            plain = _ad(self.cid, v) + s_sh[v + 1].to_bytes(_SHARE_BYTES, "little") \
                + b_sh[v + 1].to_bytes(_SHARE_BYTES, "little")
            key = _agree(self._c_sk, self._keys[v][0], b"tether-secagg-enc")
            nonce = os.urandom(12)
            out[v] = nonce + AESGCM(key).encrypt(nonce, plain, _ad(self.cid, v))
        return out, hashlib.sha256(self._b).digest()

    def masked_input(self, x: np.ndarray, ciphertexts: Mapping[int, bytes],
                     u2: Iterable[int] | None = None) -> np.ndarray:
        """Stage 2: y_u (uint64 in Z_{2^k}) from x_u (uint64 in Z_{2^k}).

        ``ciphertexts`` are the shares addressed to this client; ``u2`` is the server's list of
        clients that shared keys (default: the senders of ``ciphertexts``, right for the
        complete graph).
        """
        u2 = frozenset(ciphertexts) if u2 is None else frozenset(u2)
        if not frozenset(ciphertexts) <= u2:
            raise SecAggTamper(f"client {self.cid}: shares from clients outside U2")
        if len(u2) < self.config.threshold:
            raise SecAggAbort(
                f"client {self.cid}: shares from {len(u2)} clients, fewer than "
                f"threshold={self.config.threshold}; round aborted"
            )
        self._inbox, self._u2 = dict(ciphertexts), u2
        x = np.asarray(x, np.uint64)
        k = self.config.modulus_bits
        y = x + prg(self._b, x.size, k)
        for v in sorted(self._nbrs & u2):
            m = prg(_agree(self._s_sk, self._keys[v][1], b"tether-secagg-mask"), x.size, k)
            y = y + m if self.cid < v else y - m
        return y & self.config.mask

    def unmask(self, u3: Iterable[int]) -> dict[int, tuple[str, int]]:
        """Stage 3: for v in U3 the b-share, for v in U2 \\ U3 the s_sk-share, as ('b'|'s', y)."""
        u3 = frozenset(u3)
        if len(u3) < self.config.threshold:
            raise SecAggAbort(
                f"client {self.cid}: only {len(u3)} masked inputs, fewer than "
                f"threshold={self.config.threshold}; round aborted"
            )
        if not u3 <= self._u2:
            raise SecAggTamper(f"client {self.cid}: server listed survivors {sorted(u3 - self._u2)} "
                               "that never shared keys")
        out: dict[int, tuple[str, int]] = {}
        for v, ct in self._inbox.items():
            key = _agree(self._c_sk, self._keys[v][0], b"tether-secagg-enc")
            try:
                plain = AESGCM(key).decrypt(ct[:12], ct[12:], _ad(v, self.cid))
            except InvalidTag as exc:
                raise SecAggTamper(
                    f"client {self.cid}: ciphertext from client {v} failed AES-GCM authentication"
                ) from exc
            if plain[:16] != _ad(v, self.cid):
                raise SecAggTamper(f"client {self.cid}: ciphertext from {v} names the wrong pair")
            s_share = int.from_bytes(plain[16 : 16 + _SHARE_BYTES], "little")
            b_share = int.from_bytes(plain[16 + _SHARE_BYTES :], "little")
            out[v] = ("b", b_share) if v in u3 else ("s", s_share)
        return out


@dataclass
class SecAggServer:
    """The server's side: routes ciphertexts, sums masked inputs, unmasks the sum."""

    config: SecAggConfig
    length: int
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    commitments: dict[int, bytes] = field(default_factory=dict)
    u2: frozenset[int] = field(default_factory=frozenset)
    u3: frozenset[int] = field(default_factory=frozenset)
    _z: np.ndarray | None = field(default=None, repr=False)

    def _check(self, stage: str, n: int) -> None:
        if n < self.config.threshold:
            raise SecAggAbort(
                f"secure aggregation {stage}: {n} clients left, fewer than threshold="
                f"{self.config.threshold}; round aborted (lower the threshold or sample more clients)"
            )

    def collect_keys(self, keys: Mapping[int, tuple[bytes, bytes]]) -> dict[int, tuple[bytes, bytes]]:
        """Stage 0 -> 1: U1 and the key list broadcast to every client."""
        self._check("advertise", len(keys))
        self.public_keys = dict(keys)
        return dict(keys)

    def route_shares(self, replies: Mapping[int, tuple[Mapping[int, bytes], bytes]]) -> dict[int, dict[int, bytes]]:
        """Stage 1 -> 2: ciphertexts regrouped by recipient (only senders in U2)."""
        self._check("share-keys", len(replies))
        self.u2 = frozenset(replies)
        inbox: dict[int, dict[int, bytes]] = {v: {} for v in self.u2}
        for u, (cts, commit) in replies.items():
            self.commitments[u] = commit
            for v, ct in cts.items():
                if v in inbox:
                    inbox[v][u] = ct
        return inbox

    def collect_masked(self, masked: Mapping[int, np.ndarray]) -> frozenset[int]:
        """Stage 2 -> 3: sum the masked inputs; returns U3 to broadcast."""
        self._check("masked-input", len(masked))
        self.u3 = frozenset(masked) & self.u2
        z = np.zeros(self.length, np.uint64)
        for u in self.u3:
            z = z + np.asarray(masked[u], np.uint64)
        self._z = z & self.config.mask
        return self.u3

    def unmask(self, responses: Mapping[int, Mapping[int, tuple[str, int]]]) -> np.ndarray:
        """Stage 3 -> result: sum over U3 of x_u in Z_{2^k} (uint64)."""
        if self._z is None:
            raise SecAggError("SecAggServer.unmask called before collect_masked")
        self._check("unmask", len(responses))
        t, k = self.config.threshold, self.config.modulus_bits
        nbrs = neighbours_of(self.public_keys, self.config)
        shares: dict[tuple[str, int], dict[int, int]] = {}
        for holder, revealed in responses.items():
            for v, (kind, y) in revealed.items():
                want = "b" if v in self.u3 else "s"
                if kind != want:
                    raise SecAggTamper(f"client {holder} revealed a '{kind}' share of client {v}; "
                                       f"expected '{want}'")
                shares.setdefault((kind, v), {})[holder + 1] = y
        z = self._z.copy()
        for u in sorted(self.u3):
            b = self._reconstruct(shares.get(("b", u), {}), t, f"self-mask seed of client {u}")
            b_bytes = b.to_bytes(32, "little") if b < 2**256 else b"\0" * 33
            if hashlib.sha256(b_bytes).digest() != self.commitments.get(u):
                raise SecAggTamper(f"self-mask seed of client {u} does not match its commitment; "
                                   "a share was tampered with")
            z = z - prg(b_bytes, self.length, k)
        for v in sorted(self.u2 - self.u3):
            s = self._reconstruct(shares.get(("s", v), {}), t, f"mask key of dropped client {v}")
            if s >= 2**256:
                raise SecAggTamper(f"mask key of dropped client {v} is out of range; share tampered")
            sk = X25519PrivateKey.from_private_bytes(s.to_bytes(32, "little"))
            if _pub(sk.public_key()) != self.public_keys[v][1]:
                raise SecAggTamper(f"mask key of dropped client {v} does not match its public key; "
                                   "a share was tampered with")
            for u in sorted(nbrs[v] & self.u3):
                m = prg(_agree(sk, self.public_keys[u][1], b"tether-secagg-mask"), self.length, k)
                z = z - m if u < v else z + m  # u added +m when u < v
        return z & self.config.mask

    @staticmethod
    def _reconstruct(points: Mapping[int, int], t: int, what: str) -> int:
        if len(points) < t:
            raise SecAggAbort(f"secure aggregation unmask: {len(points)} shares of the {what}, "
                              f"fewer than threshold={t}; round aborted")
        use = dict(sorted(points.items())[:t])
        return shamir_combine(use)


def aggregate_in_process(inputs: Sequence[np.ndarray], threshold: int,
                         dropped: Iterable[int] = (), *, frac_bits: int = 24,
                         modulus_bits: int = 48, neighbours: int | None = None,
                         graph_seed: int = 0, weights: Sequence[int] | None = None) -> np.ndarray:
    """sum_{u not dropped} inputs[u], computed by running the whole protocol in one process.

    Float inputs are put on the fixed-point grid 2^-frac_bits first and the result is the
    exact sum of those grid values; integer inputs are summed exactly mod 2^modulus_bits
    (returned as signed int64).

    With ``weights`` (FedAvg's n_u), client u masks the vector [n_u * x_u, n_u] (x_u on the
    grid, so n_u * x_u is an exact integer) and the server returns the weighted mean
    sum_u n_u x_u / sum_u n_u over the survivors: both sums are exact, only the final
    division rounds (float64).

    >>> aggregate_in_process([np.array([1.0]), np.array([4.0]), np.array([7.0])], 2,
    ...                      weights=[1, 2, 3], dropped=[2]).tolist()
    [3.0]

    Args:
        inputs: One 1-D (or any shape, flattened) array per client; client ids are 0..n-1.
        threshold: t of n.
        dropped: Indices of clients that drop after sharing keys (they send no masked input
            and are recovered from shares).
        frac_bits: Fractional bits of the fixed-point grid for float inputs (default 24).
        modulus_bits: k of Z_{2^k} (default 48).
        neighbours: None for the complete graph; an even k for the sparse graph.
        graph_seed: Seed of the sparse graph.
        weights: Positive integer weights n_u, one per input (default None: plain sum).
            The caller picks ``modulus_bits`` large enough for sum_u n_u |x_u| 2^frac_bits.

    Raises:
        SecAggAbort: fewer than ``threshold`` clients survive a stage.
        ValueError: ``weights`` has the wrong length or a non-positive entry.
    """
    cfg = SecAggConfig(threshold, modulus_bits, neighbours, graph_seed)
    if not inputs:
        raise SecAggAbort("aggregate_in_process: no inputs")
    shape = np.asarray(inputs[0]).shape
    is_int = np.issubdtype(np.asarray(inputs[0]).dtype, np.integer)
    enc = [
        (np.asarray(x, np.int64).reshape(-1).view(np.uint64) & cfg.mask) if is_int
        else to_fixed(np.asarray(x).reshape(-1), frac_bits, modulus_bits)
        for x in inputs
    ]
    if weights is not None:
        if len(weights) != len(inputs) or any(int(w) < 1 for w in weights):
            raise ValueError(f"aggregate_in_process: weights must be {len(inputs)} positive integers. "
                             f"Received: {list(weights)}")
        # n_u * x_u and n_u in Z_{2^k}: multiplication mod 2^k is exact for two's complement
        enc = [np.concatenate([(e * np.uint64(int(w))) & cfg.mask, [np.uint64(int(w))]])
               for e, w in zip(enc, weights)]
    n = len(inputs)
    drop = set(dropped)
    clients = {u: SecAggClient(u, cfg) for u in range(n)}
    server = SecAggServer(cfg, enc[0].size)
    keys = server.collect_keys({u: c.advertise() for u, c in clients.items()})
    inbox = server.route_shares({u: c.share_keys(keys) for u, c in clients.items()})
    masked = {u: clients[u].masked_input(enc[u], inbox[u], server.u2)
              for u in clients if u not in drop}
    u3 = server.collect_masked(masked)
    total = server.unmask({u: clients[u].unmask(u3) for u in u3})
    if weights is not None:
        sums = _signed(total, modulus_bits)
        num = sums[:-1].astype(np.float64) if is_int else from_fixed(total[:-1], frac_bits, modulus_bits)
        return (num / float(sums[-1])).reshape(shape)
    if is_int:
        return _signed(total, modulus_bits).reshape(shape)
    return from_fixed(total, frac_bits, modulus_bits).reshape(shape)
