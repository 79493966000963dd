"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``: fixed splits, deterministic loaders.

Fashion-MNIST (Zalando, MIT/Expat licence) has 60 000 training and 10 000 test 28x28 grayscale
images of 10 clothing classes; it is harder than MNIST (a small CNN reaches ~93 %, not ~99.5 %).
The Debian package ``dataset-fashion-mnist`` (0.0~git20200523.55506a9-1, Debian 12) ships the four
official gzipped IDX files in ``/usr/share/datasets/fashion-mnist/`` (no download at run time):
``apt-get install dataset-fashion-mnist``, or set ``$WEIGHTCODEC_FASHION_MNIST`` to a folder that
holds them.

Splits (fixed):

``test``
    The official 10 000 test images, in file order. Used only for reporting.
``train`` / ``validation``
    The official 60 000 training images split by ``numpy.random.RandomState(0).permutation(60000)``:
    the first 5 000 indices are ``validation``, the other 55 000 ``train`` (each kept in ascending
    index order). The model is trained on ``train`` and early-stopped on ``validation``.
``calibration``
    The first 1 000 images of ``validation``: disjoint from ``test`` and from the training images,
    for calibrating a compressed model (activation statistics, allocation) without touching test.

Inputs are ``(pixel / 255 - 0.2860) / 0.3530`` as float32 ``(N, 1, 28, 28)``; labels int64.
:func:`augment` is the training augmentation (random crop of the padded image, horizontal flip).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import AssetNotFoundError, DatasetError
from .datasets import read_idx

FASHION_MNIST_ENV_VAR = "WEIGHTCODEC_FASHION_MNIST"
FASHION_MNIST_DEBIAN_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DEBIAN_VERSION = "0.0~git20200523.55506a9-1"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: sha256 of the four files as shipped by dataset-fashion-mnist 0.0~git20200523.55506a9-1.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
SPLIT_SEED = 0
VALIDATION_SIZE = 5000
CALIBRATION_SIZE = 1000

ImageSplit = Literal["train", "validation", "calibration", "test"]
IMAGE_SPLITS: tuple[str, ...] = ("train", "validation", "calibration", "test")


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder holding the four Fashion-MNIST IDX files.

    Looks at ``root``, else ``$WEIGHTCODEC_FASHION_MNIST``, else the Debian location.

    Raises:
        AssetNotFoundError: if a file is missing.
    """
    if root is not None:
        folder = Path(root).expanduser()
    elif os.environ.get(FASHION_MNIST_ENV_VAR):
        folder = Path(os.environ[FASHION_MNIST_ENV_VAR]).expanduser()
    else:
        folder = FASHION_MNIST_SYSTEM_DIR
    for base in (folder, folder / "usr/share/datasets/fashion-mnist"):  # also a `dpkg -x` root
        if all((base / name).is_file() for name in FASHION_MNIST_SHA256):
            return base
    raise AssetNotFoundError(
        f"Fashion-MNIST is not at {folder}: install the Debian package {FASHION_MNIST_DEBIAN_PACKAGE} "
        f"or set ${FASHION_MNIST_ENV_VAR}"
    )


_CACHE: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _raw(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    key = str(folder.resolve())
    if key not in _CACHE:
        arrays = tuple(read_idx(folder / name) for name in FASHION_MNIST_SHA256)
        train_x, train_y, test_x, test_y = arrays
        if train_x.shape != (60000, 28, 28) or train_y.shape != (60000,) or \
                test_x.shape != (10000, 28, 28) or test_y.shape != (10000,):
            raise DatasetError(f"{folder}: unexpected Fashion-MNIST shapes")
        _CACHE[key] = (train_x, train_y, test_x, test_y)
    return _CACHE[key]


def split_indices() -> dict[str, np.ndarray]:
    """Indices into the official training set of ``train``, ``validation`` and ``calibration``."""
    perm = np.random.RandomState(SPLIT_SEED).permutation(60000)
    validation = np.sort(perm[:VALIDATION_SIZE])
    return {"train": np.sort(perm[VALIDATION_SIZE:]), "validation": validation,
            "calibration": validation[:CALIBRATION_SIZE]}


def fashion_mnist_arrays(split: ImageSplit = "test",
                         root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 (N, 28, 28), labels uint8 (N,))`` of one split, in fixed order."""
    if split not in IMAGE_SPLITS:
        raise DatasetError(f"unknown Fashion-MNIST split {split!r}; choose one of {', '.join(IMAGE_SPLITS)}")
    train_x, train_y, test_x, test_y = _raw(find_fashion_mnist(root))
    if split == "test":
        return test_x, test_y
    idx = split_indices()[split]
    return train_x[idx], train_y[idx]


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` -> normalised float32 ``(N, 1, 28, 28)``."""
    if isinstance(images, torch.Tensor):
        images = images.numpy()
    x = torch.from_numpy(np.array(images, dtype=np.float32)).unsqueeze(1) / 255.0
    return (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD


def fashion_mnist_tensors(split: ImageSplit = "test", *, limit: int | None = None,
                          root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised inputs ``(N, 1, 28, 28)`` float32 and labels ``(N,)`` int64 of the first ``limit`` images."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}")
    images, labels = fashion_mnist_arrays(split, root)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return normalize(images), torch.as_tensor(labels.astype(np.int64))


def fashion_mnist(split: ImageSplit = "test", *, limit: int | None = None, batch_size: int = 256,
                  root: str | os.PathLike[str] | None = None) -> DataLoader:
    """Deterministic ``DataLoader`` of ``(inputs (B, 1, 28, 28) float32, labels (B,) int64)``, unshuffled."""
    inputs, labels = fashion_mnist_tensors(split, limit=limit, root=root)
    return DataLoader(TensorDataset(inputs, labels), batch_size=batch_size, shuffle=False)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Training augmentation of normalised ``(N, 1, H, W)`` images, drawn from ``gen``.

    A random ``H x W`` crop of the image padded by ``pad`` black pixels on each side, and a
    horizontal flip with probability 0.5 (what ``tools/train_cnn.py`` trains with).
    """
    n, c, h, w = x.shape
    if c != 1:
        raise DatasetError(f"augment expects 1-channel images, got {c} channels")
    background = -FASHION_MNIST_MEAN / FASHION_MNIST_STD  # a black pixel, normalised
    padded = torch.full((n, c, h + 2 * pad, w + 2 * pad), background, dtype=x.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
    out = padded[torch.arange(n)[:, None, None], 0, rows, cols]  # (n, h, w), c == 1
    return out.unsqueeze(1)
