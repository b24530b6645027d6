import numpy as np
import pytest

from tether import data
from tether.errors import DataError


def test_digits_split_is_fixed_and_stratified():
    a, b = data.digits(), data.digits()
    assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert a.num_classes == 10 and a.input_shape == (8, 8, 1)


def test_mnist5k_shapes():
    ds = data.mnist5k()
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [100] * 10
    assert ds.x_train.max() <= 1.0


def test_load_npz_xy_and_presplit(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 6, 6)).astype(np.uint8)
    y = np.arange(50) % 5
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y)
    ds = data.load_npz(p)
    assert ds.x_train.shape[1:] == (6, 6, 1) and len(ds.x_train) + len(ds.x_test) == 50
    assert ds.x_train.max() <= 1.0
    q = tmp_path / "s.npz"
    np.savez(q, x_train=x[:40], y_train=np.eye(5)[y[:40]], x_test=x[40:], y_test=y[40:])
    ds2 = data.load_npz(q)
    np.testing.assert_array_equal(ds2.y_train, y[:40])


@pytest.mark.parametrize("arrays, message", [
    ({"a": np.zeros(3)}, "expected arrays 'x' and 'y'"),
    ({"x": np.zeros((4, 5)), "y": np.arange(4)}, "must be images"),
    ({"x": np.zeros((4, 5, 5)), "y": np.arange(3)}, "labels of shape (4,)"),
    ({"x": np.zeros((4, 5, 5)), "y": np.zeros(4, int)}, "single class"),
])
def test_load_npz_errors_name_the_file_and_field(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError) as err:
        data.load_npz(p)
    assert str(p) in str(err.value) and message in str(err.value)


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.load_npz(tmp_path / "nope.npz")


def _write_images(root, classes, size=(5, 4), n=4):
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
                root / c / f"{i}.png")


def test_load_image_folder(tmp_path):
    _write_images(tmp_path, ["cat", "dog", "eel"])
    ds = data.load_image_folder(tmp_path)
    assert ds.class_names == ("cat", "dog", "eel")
    assert ds.x_train.shape[1:] == (5, 4, 3) and len(ds.x_train) + len(ds.x_test) == 12
    g = data.load_image_folder(tmp_path, image_size=(3, 3), grayscale=True)
    assert g.x_test.shape[1:] == (3, 3, 1)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        data.load_image_folder(tmp_path / "none")
    _write_images(tmp_path / "one", ["only"])
    with pytest.raises(DataError, match="at least 2"):
        data.load_image_folder(tmp_path / "one")
    _write_images(tmp_path / "mixed", ["a"], size=(5, 4))
    _write_images(tmp_path / "mixed", ["b"], size=(6, 6))
    with pytest.raises(DataError, match=r"image_size=\(H, W\)"):
        data.load_image_folder(tmp_path / "mixed")
    (tmp_path / "mixed" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        data.load_image_folder(tmp_path / "mixed", image_size=(4, 4))
