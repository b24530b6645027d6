"""Client data partitions: IID and the pathological non-IID shard split (McMahan et al. 2017).

>>> parts = noniid_shards(np.repeat(np.arange(10), 20), n_clients=10, seed=0)
>>> sorted(len(p) for p in parts) == [20] * 10
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["iid", "noniid_shards", "partition"]


def iid(n_examples: int, n_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle 0..n-1 and cut it into ``n_clients`` near-equal parts (sizes differ by <= 1)."""
    if n_clients < 1 or n_clients > n_examples:
        raise ValueError(f"iid: n_clients must be in [1, {n_examples}]. Received: n_clients={n_clients}")
    perm = np.random.default_rng(seed).permutation(n_examples)
    return [np.sort(p) for p in np.array_split(perm, n_clients)]


def noniid_shards(labels: np.ndarray, n_clients: int, shards_per_client: int = 2,
                  seed: int = 0) -> list[np.ndarray]:
    """Sort by label, cut into ``n_clients * shards_per_client`` equal shards, deal each client
    ``shards_per_client`` random shards (the "pathological non-IID" split).

    Examples left over when the shard count does not divide n are dropped (fewer than one
    shard's worth).
    """
    labels = np.asarray(labels)
    n_shards = n_clients * shards_per_client
    if n_clients < 1 or n_shards > len(labels):
        raise ValueError(
            f"noniid_shards: need n_clients*shards_per_client <= {len(labels)} examples. "
            f"Received: n_clients={n_clients}, shards_per_client={shards_per_client}"
        )
    rng = np.random.default_rng(seed)
    # stable sort by label, ties broken by a random order so shards are not index-ordered
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    size = len(labels) // n_shards
    shards = order[: size * n_shards].reshape(n_shards, size)
    deal = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.sort(shards[d].reshape(-1)) for d in deal]


def partition(kind: str, labels: np.ndarray, n_clients: int, seed: int = 0) -> list[np.ndarray]:
    """``iid`` or ``noniid`` (2 shards per client) index lists, one per client."""
    if kind == "iid":
        return iid(len(labels), n_clients, seed)
    if kind == "noniid":
        return noniid_shards(labels, n_clients, 2, seed)
    raise ValueError(f"partition kind must be 'iid' or 'noniid'. Received: {kind!r}")
