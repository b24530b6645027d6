import os

import pytest

from tether._internal.files import atomic_path, atomic_write, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "out.bin"
    atomic_write_text(p, "first")
    atomic_write_text(p, "second")
    assert p.read_text() == "second"
    assert os.stat(p).st_mode & 0o444  # readable like any normal file
    assert [f.name for f in tmp_path.iterdir()] == ["out.bin"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "out.bin"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_keeps_the_suffix_and_cleans_up(tmp_path):
    p = tmp_path / "model.keras"
    with atomic_path(p) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_bytes(b"whole")
    assert p.read_bytes() == b"whole"
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert p.read_bytes() == b"whole"
    assert [f.name for f in tmp_path.iterdir()] == ["model.keras"]
