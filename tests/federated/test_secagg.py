"""Secure aggregation core: exact sums under dropout, aborts, tamper detection, Shamir, masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tether.federated import secagg
from tether.federated.secagg import (
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SecAggTamper,
    aggregate_in_process,
)


def _expected(xs: list[np.ndarray], drop: set[int], f: int = 24, k: int = 48) -> np.ndarray:
    return sum(secagg.from_fixed(secagg.to_fixed(x, f, k), f, k) for i, x in enumerate(xs) if i not in drop)


@pytest.mark.parametrize("n,neighbours", [(10, None), (20, 8)])
def test_exact_sum_with_30_percent_dropping_after_key_sharing(n: int, neighbours: int | None) -> None:
    # Prepare
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(257) for _ in range(n)]
    drop = set(list(range(n))[1::3])  # 30% or more
    assert len(drop) / n >= 0.3
    t = n // 2 + 1 if neighbours is None else 3
    # Execute
    got = aggregate_in_process(xs, threshold=t, dropped=drop, neighbours=neighbours)
    # Assert: bit-exact fixed-point sum of the survivors
    assert np.array_equal(got, _expected(xs, drop))


def test_integer_inputs_sum_exactly_and_zero_dim() -> None:
    xs = [np.array(5), np.array(-7), np.array(11)]
    assert aggregate_in_process(xs, threshold=2).item() == 9
    assert aggregate_in_process(xs, threshold=2, dropped=[1]).item() == 16


@settings(max_examples=10, deadline=None)
@given(n=st.integers(3, 8), data=st.data())
def test_masks_cancel_for_any_surviving_set_above_threshold(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(2, n))
    survivors = data.draw(st.sets(st.integers(0, n - 1), min_size=t, max_size=n))
    xs = [np.arange(5, dtype=np.int64) * (u + 1) for u in range(n)]
    got = aggregate_in_process(xs, threshold=t, dropped=set(range(n)) - survivors)
    assert np.array_equal(got, sum(xs[u] for u in survivors))


def test_below_threshold_aborts_with_clear_error() -> None:
    xs = [np.ones(4) for _ in range(5)]
    with pytest.raises(SecAggAbort, match=r"masked-input: 2 clients left, fewer than threshold=3"):
        aggregate_in_process(xs, threshold=3, dropped=[0, 1, 2])


def _run_until_unmask(n: int = 5, t: int = 3):
    cfg = SecAggConfig(t)
    clients = {u: SecAggClient(u, cfg) for u in range(n)}
    server = SecAggServer(cfg, 3)
    keys = server.collect_keys({u: c.advertise() for u, c in clients.items()})
    inbox = server.route_shares({u: c.share_keys(keys) for u, c in clients.items()})
    return cfg, clients, server, inbox


def test_tampered_ciphertext_is_detected() -> None:
    _, clients, server, inbox = _run_until_unmask()
    ct = bytearray(inbox[2][0])
    ct[-1] ^= 1  # flip one bit of client 0's ciphertext to client 2
    inbox[2][0] = bytes(ct)
    masked = {u: clients[u].masked_input(np.zeros(3, np.uint64), inbox[u], server.u2) for u in clients}
    u3 = server.collect_masked(masked)
    with pytest.raises(SecAggTamper, match="ciphertext from client 0 failed AES-GCM authentication"):
        clients[2].unmask(u3)


def test_tampered_share_is_detected() -> None:
    _, clients, server, inbox = _run_until_unmask()
    masked = {u: clients[u].masked_input(np.full(3, u, np.uint64), inbox[u], server.u2)
              for u in clients if u != 4}  # client 4 drops
    u3 = server.collect_masked(masked)
    resp = {u: clients[u].unmask(u3) for u in u3}
    kind, y = resp[0][1]
    resp[0][1] = (kind, (y + 1) % secagg.PRIME)  # client 0 lies about its share of client 1's b
    with pytest.raises(SecAggTamper, match="client 1 does not match its commitment"):
        server.unmask(resp)
    resp[0][1] = (kind, y)
    kind4, y4 = resp[0][4]
    assert kind4 == "s"  # dropped client: the mask-key share is revealed, not the b share
    resp[0][4] = (kind4, y4 + 5)
    with pytest.raises(SecAggTamper, match="dropped client 4"):
        server.unmask(resp)
    resp[0][4] = (kind4, y4)
    assert server.unmask(resp).tolist() == [0 + 1 + 2 + 3] * 3


def test_server_cannot_get_both_shares_of_a_survivor() -> None:
    _, clients, server, inbox = _run_until_unmask()
    masked = {u: clients[u].masked_input(np.zeros(3, np.uint64), inbox[u], server.u2) for u in clients}
    server.collect_masked(masked)
    with pytest.raises(SecAggTamper, match="never shared keys"):
        clients[0].unmask([0, 1, 2, 99])


@settings(max_examples=25, deadline=None)
@given(secret=st.integers(0, 2**256 - 1), t=st.integers(2, 6), extra=st.integers(0, 3), data=st.data())
def test_shamir_any_t_shares_reconstruct(secret: int, t: int, extra: int, data: st.DataObject) -> None:
    xs = list(range(1, t + extra + 1))
    shares = secagg.shamir_split(secret, xs, t)
    pick = data.draw(st.permutations(xs))[:t]
    assert secagg.shamir_combine({x: shares[x] for x in pick}) == secret
    if t > 2:  # t-1 shares give (with overwhelming probability) something else
        assert secagg.shamir_combine({x: shares[x] for x in pick[: t - 1]}) != secret


def test_prg_is_deterministic_and_key_dependent() -> None:
    a = secagg.prg(b"a" * 32, 1000, 48)
    assert np.array_equal(a, secagg.prg(b"a" * 32, 1000, 48))
    assert not np.array_equal(a, secagg.prg(b"b" * 32, 1000, 48))
    assert a.max() < 2**48 and a.max() > 2**46  # uses the whole range


def test_sparse_graph_is_regular_and_symmetric() -> None:
    nb = secagg.neighbours_of(range(30), SecAggConfig(threshold=3, neighbours=6))
    assert all(len(v) == 6 for v in nb.values())
    assert all(u in nb[v] for u in nb for v in nb[u])


def test_config_validation_echoes_value() -> None:
    with pytest.raises(ValueError, match="threshold=1"):
        SecAggConfig(threshold=1)
    with pytest.raises(ValueError, match="neighbours=3"):
        SecAggConfig(threshold=2, neighbours=3)


@pytest.mark.parametrize("neighbours", [None, 6])
def test_weighted_mean_exact_on_the_grid_with_30_percent_dropping(neighbours: int | None) -> None:
    """Clients mask [n_u x_u, n_u]: the result is sum n_u x_u / sum n_u over survivors, where
    both sums are exact on the 2^-24 grid (only the final division rounds)."""
    rng = np.random.default_rng(5)
    n = 10
    frac = 24
    xs = [np.round(rng.standard_normal(7) * 2**frac) / 2**frac for _ in range(n)]  # on the grid
    weights = [int(w) for w in rng.integers(1, 500, n)]
    dropped = {1, 5, 8}
    got = aggregate_in_process(xs, threshold=3, dropped=dropped, weights=weights, frac_bits=frac,
                               modulus_bits=56, neighbours=neighbours)
    surv = [u for u in range(n) if u not in dropped]
    num = sum(weights[u] * (xs[u] * 2**frac).astype(np.int64) for u in surv)  # exact integers
    want = num / float(sum(weights[u] for u in surv)) / 2**frac
    assert np.array_equal(got, want)
    plain = np.mean([xs[u] for u in surv], axis=0)
    assert not np.allclose(got, plain)  # the weights matter


def test_weights_validated() -> None:
    with pytest.raises(ValueError, match="3 positive integers"):
        aggregate_in_process([np.zeros(2)] * 3, threshold=2, weights=[1, 0, 2])
