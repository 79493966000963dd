"""Evaluation datasets: deterministic ``DataLoader``s of ``(input_tensor, label)`` batches.

Three datasets are supported, each with a fixed sample order (never shuffled) and an optional
``limit`` that keeps only the first ``limit`` samples of that order:

``"imagenet"`` (:func:`imagenet_folder`)
    The shared ``imagenet-val1000`` asset (``labels.csv`` + ``images/*.png``), or any ImageNet-style
    class-folder tree. Two preprocessings: ``"torchvision"`` (resize 256, centre crop 224, ImageNet
    mean/std) and ``"tf-inception"`` (the MobileNetV2 asset's TensorFlow-style input).
``"mnist"`` (:func:`mnist_idx`)
    The official MNIST test set in gzipped IDX format (the shared ``mnist`` asset).
``"digits"`` (:func:`digits`)
    scikit-learn's bundled 8x8 handwritten digits with a fixed train/test split (no download).

Which data set evaluates which model is the model registry's business (:mod:`.zoo`). Errors are
:class:`~weightcodec.errors.DatasetError` (malformed data, bad argument) and
:class:`~weightcodec.errors.AssetNotFoundError` (missing folder or file).
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import AssetNotFoundError, DatasetError
from .assets import resolve_assets_dir

Preprocessing = Literal["torchvision", "tf-inception"]
PREPROCESSINGS: tuple[str, ...] = ("torchvision", "tf-inception")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

#: Fraction of the image kept by the TensorFlow "inception" centre crop.
TF_INCEPTION_CENTRAL_FRACTION = 0.875
#: Side of the square network input for ImageNet models.
IMAGENET_INPUT_SIZE = 224

#: Seed and test fraction of the fixed scikit-learn digits split.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
#: Divisor that scales the digits features (integers 0..16) to [0, 1].
DIGITS_FEATURE_SCALE = 16.0

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
IMAGENET_NUM_CLASSES = 1000


def default_num_workers() -> int:
    """Return the number of image-decoding worker processes to use (at most 2)."""
    return min(2, os.cpu_count() or 1)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}")


# --------------------------------------------------------------------------------------------
# ImageNet
# --------------------------------------------------------------------------------------------


class TfInceptionPreprocess:
    """TensorFlow "inception" preprocessing used by the MobileNetV2 asset.

    Centre crop keeping 87.5 % of each side (``int(side * 0.875)`` pixels, torchvision's
    centring), bilinear resize to ``size x size`` (PIL, as ``torchvision.transforms.Resize``
    does for PIL images), then ``(pixel - 128) / 128`` per RGB channel. On the 299x299
    imagenet-val1000 images this is ``CenterCrop(261)`` then ``Resize((224, 224))``, which
    reproduces the asset README's 87.10 % top-1.
    """

    def __init__(self, size: int = IMAGENET_INPUT_SIZE,
                 central_fraction: float = TF_INCEPTION_CENTRAL_FRACTION) -> None:
        self.size = size
        self.central_fraction = central_fraction

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Return a float32 tensor of shape ``(3, size, size)`` with values in about [-1, 1]."""
        import torchvision.transforms.functional as TF

        width, height = image.size
        crop_size = (int(height * self.central_fraction), int(width * self.central_fraction))
        image = TF.center_crop(image, list(crop_size))
        image = TF.resize(image, [self.size, self.size],
                          interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        pixels = TF.pil_to_tensor(image).to(torch.float32)
        return (pixels - 128.0) / 128.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, central_fraction={self.central_fraction})"


def imagenet_transform(preprocessing: Preprocessing = "torchvision") -> Callable[[Image.Image], torch.Tensor]:
    """Return the image -> tensor transform for an ImageNet ``preprocessing`` name.

    Raises:
        DatasetError: for an unknown preprocessing name.
    """
    if preprocessing == "torchvision":
        import torchvision.transforms as T

        return T.Compose([
            T.Resize(256, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(IMAGENET_INPUT_SIZE),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    if preprocessing == "tf-inception":
        return TfInceptionPreprocess()
    raise DatasetError(f"unknown preprocessing {preprocessing!r}: expected one of {PREPROCESSINGS}")


class ImageFileDataset(Dataset):
    """A list of ``(image_path, label)`` pairs, decoded to RGB and transformed on access."""

    def __init__(self, samples: Sequence[tuple[Path, int]],
                 transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            tensor = self.transform(image.convert("RGB"))
        return tensor, label


def _samples_from_labels_csv(root: Path) -> list[tuple[Path, int]]:
    """Read ``root/labels.csv`` (``filename,label``; images under ``root/images/``), in file order."""
    labels_csv = root / "labels.csv"
    images_dir = root / "images"
    samples: list[tuple[Path, int]] = []
    with labels_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{labels_csv} must have a header with columns 'filename,label'")
        for line_number, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{labels_csv}:{line_number}: label {row['label']!r} is not an integer"
                ) from None
            if label < 0:
                raise DatasetError(f"{labels_csv}:{line_number}: negative label {label}")
            samples.append((images_dir / row["filename"], label))
    if not samples:
        raise DatasetError(f"{labels_csv} lists no images")
    missing = [str(path) for path, _ in samples if not path.is_file()]
    if missing:
        raise AssetNotFoundError(
            f"{len(missing)} image(s) listed in {labels_csv} are missing, e.g. {missing[0]}"
        )
    return samples


def _samples_from_class_folders(root: Path) -> list[tuple[Path, int]]:
    """Read an ImageNet class-folder tree: ``root/<wnid>/*.JPEG``, label = index of sorted wnid."""
    class_dirs = sorted(entry for entry in root.iterdir() if entry.is_dir())
    if len(class_dirs) != IMAGENET_NUM_CLASSES:
        raise DatasetError(
            f"{root} has no labels.csv and {len(class_dirs)} class folders instead of "
            f"{IMAGENET_NUM_CLASSES}: the sorted-synset class indices would not match the model "
            "(add a labels.csv with filename,label and an images/ folder instead)"
        )
    samples: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((path, label))
    if not samples:
        raise DatasetError(f"no images found in the class folders of {root}")
    return samples


def imagenet_samples(root: str | os.PathLike[str]) -> list[tuple[Path, int]]:
    """Return the ``(image_path, label)`` list of an ImageNet evaluation folder, in fixed order.

    ``root/labels.csv`` (``filename,label``, images in ``root/images/``) is used when present
    (its row order is kept); otherwise ``root`` must be a class-folder tree with 1000 synset
    folders, whose sorted order gives the torchvision class index (files sorted by name).

    Raises:
        AssetNotFoundError: if ``root`` or a listed image is missing.
        DatasetError: if the folder is neither layout or ``labels.csv`` is malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise AssetNotFoundError(f"ImageNet evaluation folder not found: {root}")
    if (root / "labels.csv").is_file():
        return _samples_from_labels_csv(root)
    return _samples_from_class_folders(root)


def imagenet_folder(
    root: str | os.PathLike[str],
    *,
    preprocessing: Preprocessing = "torchvision",
    limit: int | None = None,
    batch_size: int = 50,
    num_workers: int | None = None,
) -> DataLoader:
    """Return a deterministic ``DataLoader`` over an ImageNet evaluation folder.

    Args:
        root: folder with ``labels.csv`` + ``images/`` (the imagenet-val1000 asset) or an
            ImageNet class-folder tree (see :func:`imagenet_samples`).
        preprocessing: ``"torchvision"`` (resize 256, centre crop 224, ImageNet mean/std) or
            ``"tf-inception"`` (see :class:`TfInceptionPreprocess`).
        limit: keep only the first ``limit`` images of the fixed order.
        batch_size: images per batch.
        num_workers: decoding worker processes (default :func:`default_num_workers`); the batch
            order does not depend on it.
    """
    _check_limit(limit)
    transform = imagenet_transform(preprocessing)
    samples = imagenet_samples(root)
    if limit is not None:
        samples = samples[:limit]
    workers = default_num_workers() if num_workers is None else num_workers
    workers = min(workers, max(1, -(-len(samples) // batch_size))) if workers else 0
    return DataLoader(ImageFileDataset(samples, transform), batch_size=batch_size,
                      shuffle=False, num_workers=workers)


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------

MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
MNIST_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


def _find_idx_file(root: Path, name: str) -> Path:
    """Return ``root/name`` or its non-gzipped twin."""
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise AssetNotFoundError(f"MNIST file not found: {root / name}")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``) holding unsigned bytes.

    Raises:
        DatasetError: if the header is not an unsigned-byte IDX header or the size does not match.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file")
    num_dims = data[3]
    header_size = 4 + 4 * num_dims
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(num_dims))
    expected = int(np.prod(shape)) if shape else 0
    payload = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    if payload.size != expected:
        raise DatasetError(f"{path}: header says {shape} ({expected} bytes), file has {payload.size}")
    return payload.reshape(shape)


def mnist_arrays(root: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return the MNIST test set as ``(images uint8 (N, 28, 28), labels uint8 (N,))``."""
    root = Path(root)
    if not root.is_dir():
        raise AssetNotFoundError(f"MNIST folder not found: {root}")
    images = read_idx(_find_idx_file(root, MNIST_TEST_IMAGES))
    labels = read_idx(_find_idx_file(root, MNIST_TEST_LABELS))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"MNIST files in {root} disagree: images {images.shape}, labels {labels.shape}")
    return images, labels


def mnist_idx(
    root: str | os.PathLike[str],
    *,
    limit: int | None = None,
    batch_size: int = 500,
) -> DataLoader:
    """Return a deterministic ``DataLoader`` over the MNIST test set (file order).

    Inputs are flattened to 784 values, scaled to [0, 1] and normalised with mean 0.1307 and
    std 0.3081 (what the mnist-mlp asset expects). Labels are int64.
    """
    _check_limit(limit)
    images, labels = mnist_arrays(root)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    inputs = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    inputs = (inputs - MNIST_MEAN) / MNIST_STD
    targets = torch.from_numpy(labels.astype(np.int64))
    return DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=False)


# --------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------

DigitsSplit = Literal["train", "test"]


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Return the fixed ``(train_indices, test_indices)`` of scikit-learn's 1797 digits, sorted.

    A ``numpy.random.RandomState(0)`` permutation (a stream numpy keeps frozen across versions);
    its first ``ceil(20 %)`` = 360 indices are the test split, the other 1437 the train split.
    """
    from sklearn.datasets import load_digits

    num_samples = len(load_digits().target)
    permutation = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(num_samples)
    num_test = int(np.ceil(DIGITS_TEST_FRACTION * num_samples))
    return np.sort(permutation[num_test:]), np.sort(permutation[:num_test])


def digits_arrays(split: DigitsSplit = "test") -> tuple[np.ndarray, np.ndarray]:
    """Return one split of the digits as ``(features float32 (N, 64) in [0, 1], labels int64)``.

    Features are the 8x8 pixel counts (0..16) divided by 16.0, the same scaling the training
    script ``python -m tools.train_example`` uses.
    """
    if split not in ("train", "test"):
        raise DatasetError(f"digits split must be 'train' or 'test', got {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train_indices, test_indices = digits_split_indices()
    indices = train_indices if split == "train" else test_indices
    features = (bunch.data[indices] / DIGITS_FEATURE_SCALE).astype(np.float32)
    return features, bunch.target[indices].astype(np.int64)


def digits(
    *,
    split: DigitsSplit = "test",
    limit: int | None = None,
    batch_size: int = 512,
) -> DataLoader:
    """Return a deterministic ``DataLoader`` over one split of scikit-learn's digits.

    See :func:`digits_split_indices` for the split and :func:`digits_arrays` for the scaling.
    """
    _check_limit(limit)
    features, labels = digits_arrays(split)
    if limit is not None:
        features, labels = features[:limit], labels[:limit]
    dataset = TensorDataset(torch.from_numpy(features), torch.from_numpy(labels))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


# --------------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------------

DATASETS: tuple[str, ...] = ("imagenet", "mnist", "digits", "fashion-mnist")

#: Folder of each dataset inside the shared assets directory (digits ships with scikit-learn).
DATASET_ASSET_DIRS: dict[str, str | None] = {
    "imagenet": "imagenet-val1000",
    "mnist": "mnist",
    "digits": None,
    "fashion-mnist": None,  # the Debian package dataset-fashion-mnist (weightcodec.evaluation.imagesets)
}


def make_loader(
    dataset: str,
    *,
    root: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    preprocessing: str | None = None,
    limit: int | None = None,
    num_workers: int | None = None,
) -> DataLoader:
    """Return the evaluation ``DataLoader`` of a dataset named ``"imagenet"``, ``"mnist"`` or ``"digits"``.

    Args:
        dataset: dataset name.
        root: the dataset folder; default ``<assets_dir>/imagenet-val1000`` or ``<assets_dir>/mnist``.
        assets_dir: shared assets directory (default: ``$WEIGHTCODEC_ASSETS`` or
            ``<repo>/../shared/assets``); only used when ``root`` is not given.
        preprocessing: ImageNet preprocessing (default ``"torchvision"``); must be None for the others.
        limit: keep only the first ``limit`` samples.
        num_workers: ImageNet decoding workers (default :func:`default_num_workers`).

    Raises:
        DatasetError: unknown dataset, or a preprocessing given for a dataset that has none.
        AssetNotFoundError: missing dataset folder or files.
    """
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}: expected one of {DATASETS}")
    if dataset != "imagenet" and preprocessing is not None:
        raise DatasetError(f"dataset {dataset!r} has a fixed preprocessing; got {preprocessing!r}")
    if dataset == "digits":
        if root is not None:
            raise DatasetError("the digits dataset ships with scikit-learn and takes no root folder")
        return digits(split="test", limit=limit)
    if dataset == "fashion-mnist":  # the test split of the Debian package (or ``root``)
        from .imagesets import fashion_mnist

        return fashion_mnist("test", limit=limit, root=root)
    if root is None:
        asset_dir = DATASET_ASSET_DIRS[dataset]
        assert asset_dir is not None
        root = resolve_assets_dir(assets_dir) / asset_dir
    if dataset == "mnist":
        return mnist_idx(root, limit=limit)
    return imagenet_folder(root, preprocessing=preprocessing or "torchvision",  # type: ignore[arg-type]
                           limit=limit, num_workers=num_workers)
