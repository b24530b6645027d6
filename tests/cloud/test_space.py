"""The search space: presets, validation, sampling, encoding and its TOML/JSON form."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cloud.space import Arch, Block, SearchSpace, SpaceError, Stage


def test_the_seed_space_is_expressible() -> None:
    s = SearchSpace.seed()
    assert len(s.stages) == 5 and all(st.blocks == 4 for st in s.stages)
    assert s.depths == (2, 3, 4) and s.expand_ratios == (3, 4, 6) and s.kernel_sizes == (3, 5, 7)
    assert s.resolutions == tuple(range(128, 225, 4))
    # (3 x 3)^2 + ^3 + ^4 per stage, to the fifth, times 25 resolutions
    assert s.size() == 25 * (9 ** 2 + 9 ** 3 + 9 ** 4) ** 5


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_round_trip_through_a_file(tmp_path, suffix) -> None:
    for space in (SearchSpace.default(), SearchSpace.seed()):
        path = tmp_path / f"space{suffix}"
        space.save(path)
        assert SearchSpace.load(path) == space


def test_a_bad_space_names_the_field(tmp_path) -> None:
    with pytest.raises(SpaceError, match="kernel_sizes must be odd"):
        SearchSpace((Stage(8, 2),), (1,), (2,), (4,), (16,))
    with pytest.raises(SpaceError, match=r"stages\[0\]"):
        SearchSpace((Stage(8, 2, stride=3),), (1,), (2,), (3,), (16,))
    (tmp_path / "s.toml").write_text("depths = [1]\ncolour = 'red'\n")
    with pytest.raises(SpaceError, match="unknown field.*colour"):
        SearchSpace.load(tmp_path / "s.toml")
    (tmp_path / "t.toml").write_text("depths = [1\n")
    with pytest.raises(SpaceError, match="not valid TOML"):
        SearchSpace.load(tmp_path / "t.toml")


def test_validate_names_the_choice() -> None:
    s = SearchSpace.default()
    bad = Arch(28, ((Block(4, 5),), (Block(4, 7),), (Block(4, 5),)))
    with pytest.raises(SpaceError, match="stage 1 block 0: kernel 7"):
        s.validate(bad)
    with pytest.raises(SpaceError, match="resolution 30"):
        s.validate(Arch(30, s.largest().stages))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_samples_are_valid_and_encode_to_one_length(seed) -> None:
    s = SearchSpace.default()
    a = s.sample(random.Random(seed))
    s.validate(a)
    assert len(a.encode(s)) == len(s.largest().encode(s))
    assert Arch.from_dict(a.to_dict()) == a
    # the counts grow with every dimension
    assert s.smallest().params(s) <= a.params(s) <= s.largest().params(s)
    assert s.smallest().macs(s) <= a.macs(s) <= s.largest().macs(s)


def test_closed_dimensions_stay_largest() -> None:
    s = SearchSpace.default()
    rng = random.Random(0)
    for _ in range(20):
        a = s.sample(rng, kernel=True, depth=False, expand=False, resolution=False)
        assert a.depths == s.largest().depths and a.resolution == 28
        assert {b.expand for st_ in a.stages for b in st_} == {4}
