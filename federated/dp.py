"""Client-level differential privacy: clip each update to L2 norm C, add N(0, (z*C)^2) to the sum.

Accounting follows the Renyi-DP analysis of the sampled Gaussian mechanism (Mironov, Talwar,
Zhang 2019): for integer order a and sampling rate q,

    A_a = sum_{k=0}^{a} C(a, k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 z^2)),  RDP(a) = log(A_a)/(a-1)

composed additively over rounds; epsilon = min_a RDP_total(a) + log(1/delta)/(a-1).
(Flower's own ``RdpAccountant`` needs the optional ``dp-accounting`` package, which this
environment does not ship; with q = 1 both give a/(2 z^2) per round.)

>>> acc = RdpAccountant(noise_multiplier=1.0, sampling_rate=1.0)
>>> acc.step(); round(acc.epsilon(1e-5), 2)
5.3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ORDERS", "DPConfig", "RdpAccountant", "add_gaussian_noise", "clip_update"]

ORDERS = tuple(range(2, 257))


@dataclass(frozen=True)
class DPConfig:
    """Client-level DP settings.

    Args:
        clip: L2 bound C on each client's update (default 1.0, > 0).
        noise_multiplier: z; the noise on the sum has std z*C (default 1.0, >= 0; 0 = no noise,
            epsilon reported as inf).
        delta: delta of the reported (epsilon, delta) (default 1e-5).
    """

    clip: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise ValueError(f"DPConfig.clip must be > 0. Received: clip={self.clip}")
        if self.noise_multiplier < 0:
            raise ValueError(f"DPConfig.noise_multiplier must be >= 0. Received: "
                             f"noise_multiplier={self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"DPConfig.delta must be in (0, 1). Received: delta={self.delta}")


def clip_update(update: Sequence[np.ndarray], clip: float) -> list[np.ndarray]:
    """u * min(1, C / ||u||_2), the norm taken over all arrays together.

    >>> [np.round(a, 6).tolist() for a in clip_update([np.array([3.0]), np.array([4.0])], 1.0)]
    [[0.6], [0.8]]
    """
    norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in update))
    f = min(1.0, clip / norm) if norm > 0 else 1.0
    return [np.asarray(np.asarray(a, np.float64) * f).astype(np.asarray(a).dtype) for a in update]


def add_gaussian_noise(total: Sequence[np.ndarray], std: float,
                       rng: np.random.Generator) -> list[np.ndarray]:
    """total + N(0, std^2) elementwise."""
    return [(np.asarray(a, np.float64) + rng.normal(0.0, std, np.shape(a))).astype(np.asarray(a).dtype)
            for a in total]


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def _rdp_sampled_gaussian(q: float, z: float, order: int) -> float:
    if z == 0:
        return math.inf
    if q >= 1.0:
        return order / (2 * z * z)
    log_a = -math.inf
    for k in range(order + 1):
        log_coef = (math.lgamma(order + 1) - math.lgamma(k + 1) - math.lgamma(order - k + 1))
        term = log_coef + k * math.log(q) + (order - k) * math.log1p(-q) + (k * k - k) / (2 * z * z)
        log_a = _log_add(log_a, term)
    return log_a / (order - 1)


@dataclass
class RdpAccountant:
    """Accumulates RDP of the sampled Gaussian mechanism over rounds and reports epsilon."""

    noise_multiplier: float
    sampling_rate: float
    orders: tuple[int, ...] = ORDERS
    rounds: int = 0
    _rdp: np.ndarray | None = field(default=None, repr=False)

    def step(self, count: int = 1) -> None:
        """Compose ``count`` more rounds."""
        per = np.array([_rdp_sampled_gaussian(self.sampling_rate, self.noise_multiplier, a)
                        for a in self.orders])
        self._rdp = per * count if self._rdp is None else self._rdp + per * count
        self.rounds += count

    def epsilon(self, delta: float) -> float:
        """min over orders of RDP_total(a) + log(1/delta)/(a-1); 0 before any round."""
        if self._rdp is None:
            return 0.0
        a = np.asarray(self.orders, np.float64)
        eps = self._rdp + math.log(1 / delta) / (a - 1)
        return float(np.min(eps))
