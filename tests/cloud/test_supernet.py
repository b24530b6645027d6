"""The elastic supernet: extraction equals the supernet's forward pass, counts are exact,
the result converts and runs in the engine, and the .keras file round-trips."""

from __future__ import annotations

import random

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tether.cloud.batchnorm import recalibrate_batchnorm
from tether.cloud.space import SearchSpace
from tether.cloud.supernet import Supernet, extract, resize_images
from tether.compression import count_macs


def _net(space: SearchSpace, transform: bool = True) -> Supernet:
    keras.utils.set_random_seed(0)
    net = Supernet(space, kernel_transform=transform)
    rng = np.random.default_rng(0)
    # non-trivial kernel transforms and statistics, so that nothing is compared at zero
    for row in net.blocks:
        for block in row:
            for t in block.transforms:
                t.assign(np.eye(t.shape[0]) + rng.normal(0, 0.2, t.shape))
    r = max(space.resolutions)
    x = rng.uniform(0, 1, (16, r, r, space.input_channels)).astype(np.float32)
    recalibrate_batchnorm(net, x)
    return net


def _archs(space: SearchSpace) -> list:
    rng = random.Random(1)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(3)]


@pytest.mark.parametrize("transform", [True, False], ids=["transform", "centre_crop"])
def test_extracted_subnet_equals_the_supernet(transform) -> None:
    space = SearchSpace.default()
    net = _net(space, transform)
    x = np.random.default_rng(2).uniform(0, 1, (4, 28, 28, 1)).astype(np.float32)
    for arch in _archs(space):
        net.set_arch(arch)
        xr = resize_images(x, arch.resolution)
        want = np.asarray(net(xr, training=False))
        assert np.abs(want).max() > 0.1 and want.std(axis=0).mean() > 1e-3
        sub = extract(net, arch, softmax=False)
        got = np.asarray(sub(xr, training=False))
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), arch.key()
        assert sub.count_params() == arch.params(space)
        assert count_macs(sub) == arch.macs(space)
        assert tuple(sub.input_shape[1:]) == (arch.resolution, arch.resolution, 1)


def test_sorting_channels_keeps_the_function() -> None:
    space = SearchSpace.default()
    net = _net(space)
    x = np.random.default_rng(3).uniform(0, 1, (4, 28, 28, 1)).astype(np.float32)
    net.set_arch(space.largest())
    before = np.asarray(net(x, training=False))
    net.sort_channels()
    np.testing.assert_allclose(np.asarray(net(x, training=False)), before, rtol=1e-5,
                               atol=1e-5)
    block = net.blocks[0][0]
    l1 = np.abs(block.project_kernel.numpy()[0, 0]).sum(axis=1)
    assert np.all(np.diff(l1) <= 0)  # most important hidden channels first


def test_supernet_saves_and_loads_as_keras(tmp_path) -> None:
    space = SearchSpace.default()
    net = _net(space)
    arch = _archs(space)[2]
    net.set_arch(arch)
    x = resize_images(np.random.default_rng(4).uniform(0, 1, (2, 28, 28, 1)), arch.resolution)
    net.save(tmp_path / "supernet.keras")
    back = keras.models.load_model(tmp_path / "supernet.keras")
    assert isinstance(back, Supernet) and back.space == space
    back.set_arch(arch)
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(net(x)))


def test_extracted_subnet_converts_and_runs_in_the_engine() -> None:
    from tether.converter import convert
    from tether.device import Engine

    space = SearchSpace.default()
    net = _net(space)
    arch = _archs(space)[3]
    sub = extract(net, arch)
    tm = convert(sub, samples=2)
    assert tm.report.parity.compared == "logits" and tm.report.parity.max_rel_error < 1e-4
    assert "BATCH_NORM" not in tm.report.ops_after
    x = np.random.default_rng(5).uniform(0, 1, (1, arch.resolution, arch.resolution, 1))
    y = Engine(tm.to_bytes()).run(x.astype(np.float32))
    np.testing.assert_allclose(y, np.asarray(sub(x)), atol=1e-5)


@pytest.mark.slow
def test_the_seed_space_at_full_size() -> None:
    # The chapter's space built whole (weights=None style: random init), one subnet sampled,
    # extracted, converted and run in the engine against Keras.
    from tether.converter import convert
    from tether.device import Engine

    space = SearchSpace.seed()
    keras.utils.set_random_seed(0)
    net = Supernet(space)
    assert net.count_params() > space.largest().params(space)  # transforms and controls
    arch = space.sample(random.Random(7))
    sub = extract(net, arch)
    assert sub.count_params() == arch.params(space)
    r = arch.resolution
    rng = np.random.default_rng(0)
    recalibrate_batchnorm(sub, rng.uniform(-1, 1, (8, r, r, 3)).astype(np.float32))
    tm = convert(sub, samples=1)
    assert tm.report.parity.max_rel_error < 1e-3, tm.report.parity
    x = rng.uniform(-1, 1, (1, r, r, 3)).astype(np.float32)
    assert int(np.argmax(Engine(tm.to_bytes()).run(x))) == int(np.argmax(sub(x)))
