"""Calibration data for budgeted encodes: a model of the registry plus a folder of labelled images.

``wcodec encode model.pth --arch NAME --calib-data DIR --max-drop POINTS`` builds a
:class:`Calibration` with :func:`load_calibration`: the architecture ``NAME`` (:mod:`.zoo`) with the
weights being encoded, and the images of ``DIR`` preprocessed as that model expects. It scores any
state_dict of the model (top-1 in percent on the calibration images) and estimates the model's
Fisher information on them (:class:`weightcodec.allocation.FisherSensitivity`).

``DIR`` is either

- a folder with a ``labels.csv`` of ``filename,label`` (the layout of the shared
  ``imagenet-val1000`` asset; files are looked up in ``DIR/images/`` and then in ``DIR``), labels
  being the model's class indices; or
- a folder of class sub-folders, one per class of the model, whose sorted order gives the class
  index (so there must be exactly as many sub-folders as the model has classes).

Everything is checked before anything is encoded, each failure one :class:`~weightcodec.errors.DatasetError`
(or :class:`~weightcodec.errors.AssetNotFoundError`) that says what to fix: a missing or empty
folder, a label outside the model's classes, a wrong number of class folders, images of the wrong
size for a model with a fixed input size (28x28 for the MNIST models), unreadable images, or inputs
the model cannot run on.

Inputs per data set of the registry entry: ``imagenet`` the entry's preprocessing (any image size:
resized and cropped); ``mnist`` 28x28 grayscale normalised as the MNIST loader does; ``digits`` 8x8
grayscale scaled to [0, 1] (the digits features are counts 0-16 scaled by 1/16; an 8-bit image of
them scales by 1/255).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import AssetNotFoundError, DatasetError, ModelLoadError
from .datasets import IMAGE_EXTENSIONS, MNIST_MEAN, MNIST_STD, imagenet_transform
from .metrics import evaluate, top1_hits
from .models import fit_state_dict
from .zoo import get_model_spec

#: Images decoded per batch.
DEFAULT_BATCH_SIZE = 50


@dataclass(frozen=True)
class ImageInput:
    """How one image file becomes the model's input tensor."""

    mode: str  # PIL mode the image is converted to ("RGB", "L")
    size: tuple[int, int] | None  # required (width, height); None: any size (the transform resizes)
    transform: Callable  # PIL image -> tensor

    def load(self, path: Path) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                if self.size is not None and image.size != self.size:
                    raise DatasetError(f"calibration image {path} is {image.size[0]}x{image.size[1]}; the model "
                                       f"takes {self.size[0]}x{self.size[1]} images")
                return self.transform(image.convert(self.mode))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"calibration image {path} cannot be read ({exc})") from None


def _gray(size: int, mean: float, std: float, *, flatten: bool) -> ImageInput:
    def transform(image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        x = (x - mean) / std
        return x.reshape(-1) if flatten else x.unsqueeze(0)

    return ImageInput("L", (size, size), transform)


def image_input(dataset: str, preprocessing: str | None) -> ImageInput:
    """The input a registry data set's models take from an image file.

    Raises:
        DatasetError: for a data set whose models do not take images from a folder.
    """
    if dataset == "imagenet":
        return ImageInput("RGB", None, imagenet_transform(preprocessing or "torchvision"))
    if dataset == "mnist":
        return _gray(28, MNIST_MEAN, MNIST_STD, flatten=True)
    if dataset == "digits":
        return _gray(8, 0.0, 1.0, flatten=True)
    if dataset == "fashion-mnist":
        from .imagesets import FASHION_MNIST_MEAN, FASHION_MNIST_STD

        return _gray(28, FASHION_MNIST_MEAN, FASHION_MNIST_STD, flatten=False)
    raise DatasetError(f"models evaluated on {dataset!r} take no calibration images from a folder")


def calibration_samples(root: str | os.PathLike[str]) -> tuple[list[tuple[Path, int]], int | None]:
    """``(image path, label)`` pairs of a calibration folder, in a fixed order, and the number of
    class sub-folders (None for a ``labels.csv`` folder).

    Raises:
        AssetNotFoundError: the folder, or an image a ``labels.csv`` lists, is missing.
        DatasetError: a malformed ``labels.csv``, or no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise AssetNotFoundError(f"calibration data folder not found: {root}")
    labels_csv = root / "labels.csv"
    if labels_csv.is_file():
        samples = []
        with labels_csv.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
                raise DatasetError(f"{labels_csv} must have a header line 'filename,label'")
            for line, row in enumerate(reader, start=2):
                try:
                    label = int(row["label"])
                except (TypeError, ValueError):
                    raise DatasetError(f"{labels_csv}:{line}: label {row['label']!r} is not an integer") from None
                name = row["filename"] or ""
                path = root / "images" / name
                if not path.is_file():
                    path = root / name
                if not name or not path.is_file():
                    raise AssetNotFoundError(f"{labels_csv}:{line}: image {name!r} is neither in {root / 'images'} "
                                             f"nor in {root}")
                samples.append((path, label))
        if not samples:
            raise DatasetError(f"{labels_csv} lists no images")
        return samples, None
    classes = sorted(entry for entry in root.iterdir() if entry.is_dir())
    samples = [(path, label) for label, folder in enumerate(classes) for path in sorted(folder.iterdir())
               if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS]
    if not samples:
        raise DatasetError(f"no calibration images in {root}: expected a labels.csv (filename,label) or one "
                           "sub-folder of images per class")
    return samples, len(classes)


@dataclass
class Calibration:
    """A model of the registry with the weights being encoded, and its calibration batches."""

    arch: str
    model: nn.Module
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    samples: int
    description: str
    num_classes: int

    def score(self, state_dict: Mapping[str, torch.Tensor]) -> float:
        """Top-1 accuracy (percent) of the model with ``state_dict`` on the calibration images."""
        return evaluate(fit_state_dict(self.model, state_dict), self.batches)["top1"]

    def score_samples(self, state_dict: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Per-image top-1 (100 for a hit, 0 for a miss) on the calibration images: their mean is
        :meth:`score`, and a budget search uses them for the paired standard error of a drop."""
        hits = top1_hits(fit_state_dict(self.model, state_dict), self.batches)
        return hits.numpy().astype(np.float64) * 100.0

    def fisher(self, *, max_samples: int | None = None, seed: int = 0, progress=None):
        """The model's diagonal Fisher information on (at most ``max_samples`` of) the images."""
        from ..allocation.sensitivity import FisherSensitivity

        return FisherSensitivity.from_model(self.model, self.batches, max_samples=max_samples, seed=seed,
                                            progress=progress)

    def budget(self, max_drop: float, **options):
        """An :class:`~weightcodec.allocation.AccuracyBudget` of ``max_drop`` top-1 points on these images
        (scored per image, so the search knows the noise of each drop; ``options``: e.g. ``confidence``)."""
        from ..allocation import AccuracyBudget

        return AccuracyBudget(max_drop=max_drop, score=self.score_samples, description=self.description,
                              samples=self.samples, **options)


def load_calibration(
    arch: str,
    data: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    *,
    limit: int | None = None,
    start: int = 0,
    preprocessing: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Check and load calibration data for model ``arch`` (see the module docstring).

    ``start`` and ``limit`` take images ``start .. start + limit - 1`` of the folder's fixed order
    (``labels.csv`` order, or class folders then file names).

    Raises:
        UnknownModelError, AssetNotFoundError, DatasetError, ModelLoadError: see the module docstring.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"--calib-limit must be a positive integer, got {limit!r}")
    spec = get_model_spec(arch)
    pipeline = image_input(spec.dataset, preprocessing or spec.preprocessing)
    try:
        model = fit_state_dict(spec.build(), state_dict, description=f"--arch {arch}")
    except ModelLoadError as exc:
        raise ModelLoadError(f"the model being encoded is not a {arch!r}: {exc}") from None
    samples, folders = calibration_samples(data)
    chosen = samples[start:start + limit if limit is not None else None]
    if not chosen:
        raise DatasetError(f"no calibration images left in {data} after skipping {start} of {len(samples)}")
    first = pipeline.load(chosen[0][0]).unsqueeze(0)
    try:
        with torch.no_grad():
            out = model.eval()(first)
    except Exception as exc:  # noqa: BLE001 - any failure of the forward pass means the inputs do not fit
        raise DatasetError(f"the calibration images of {data} do not fit model {arch!r}: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if out.ndim != 2 or out.shape[0] != 1:
        raise DatasetError(f"model {arch!r} returns {tuple(out.shape)} for one image: calibration needs (1, classes) "
                           "logits")
    num_classes = out.shape[1]
    if folders is not None and folders != num_classes:
        raise DatasetError(f"{data} has {folders} class folders but model {arch!r} has {num_classes} classes: the "
                           "folder order would not give its class indices (use a labels.csv of filename,label)")
    bad = [(path, label) for path, label in chosen if not 0 <= label < num_classes]
    if bad:
        raise DatasetError(f"calibration label {bad[0][1]} (for {bad[0][0].name}) is outside model {arch!r}'s "
                           f"{num_classes} classes 0..{num_classes - 1}")
    images = _load_images(pipeline, [p for p, _ in chosen], progress)
    labels = torch.tensor([label for _, label in chosen], dtype=torch.int64)
    batches = [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(chosen), batch_size)]
    where = f"{Path(data).name} images {start}..{start + len(chosen) - 1}"
    description = f"{where} of {len(samples)} ({arch}, {spec.preprocessing or spec.dataset} inputs, top-1 %)"
    return Calibration(arch, model, batches, len(chosen), description, num_classes)


def _load_images(pipeline: ImageInput, paths: list[Path], progress) -> torch.Tensor:
    """Decode and preprocess every image (two worker processes for large sets)."""
    if len(paths) >= 64 and (os.cpu_count() or 1) > 1:
        from ..parallel import ordered_map

        tensors = []
        for i, tensor in enumerate(ordered_map(_load_one, paths, workers=2, context=pipeline,
                                               describe=lambda p: f"image {p}")):
            tensors.append(tensor)
            if progress:
                progress(i + 1, len(paths))
    else:
        tensors = [pipeline.load(path) for path in paths]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise DatasetError(f"the calibration images give inputs of different shapes {sorted(shapes)}")
    return torch.stack(tensors)


def _load_one(path: Path, pipeline: ImageInput) -> torch.Tensor:
    return pipeline.load(path)


__all__ = ["Calibration", "ImageInput", "calibration_samples", "image_input", "load_calibration"]
