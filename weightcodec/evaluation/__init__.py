"""Accuracy evaluation of (compressed and decompressed) PyTorch classifiers.

- :mod:`.models`: build a model from a spec string and a weights file, or from a decoded state_dict.
- :mod:`.datasets`: deterministic evaluation ``DataLoader``s (ImageNet folder, MNIST, digits).
- :mod:`.metrics`: top-1 / top-5 accuracy.
- :mod:`.runner`: :class:`Evaluator`, a model plus its cached evaluation set (sweep and bench).
- :mod:`.assets`: where the read-only shared assets live.

This package never prints and never exits; errors are raised as ``ValueError`` or
``FileNotFoundError``.
"""

from .assets import ASSETS_ENV_VAR, asset_path, default_assets_dir, resolve_assets_dir
from .datasets import (
    DatasetChoice,
    default_dataset_for,
    default_loader,
    digits,
    digits_arrays,
    digits_split_indices,
    imagenet_folder,
    make_loader,
    mnist_idx,
)
from .metrics import Accuracy, evaluate
from .runner import Evaluator
from .models import (
    available_models,
    build_architecture,
    build_model,
    default_weights_for,
    load_state_dict_file,
    load_state_dict_into,
)

__all__ = [
    "ASSETS_ENV_VAR",
    "Accuracy",
    "DatasetChoice",
    "Evaluator",
    "asset_path",
    "available_models",
    "build_architecture",
    "build_model",
    "default_assets_dir",
    "default_dataset_for",
    "default_loader",
    "default_weights_for",
    "digits",
    "digits_arrays",
    "digits_split_indices",
    "evaluate",
    "imagenet_folder",
    "load_state_dict_file",
    "load_state_dict_into",
    "make_loader",
    "mnist_idx",
    "resolve_assets_dir",
]
