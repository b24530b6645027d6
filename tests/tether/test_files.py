import os

import pytest

from tether._internal.files import atomic_write, atomic_write_text


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
