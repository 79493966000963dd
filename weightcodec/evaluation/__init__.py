"""Evaluation of (compressed and decompressed) models: which model, which data, which score.

- :mod:`.zoo`: the model registry. One name -> architecture, weights, data set, preprocessing and
  metric (:class:`ModelSpec`, :func:`get_model_spec`); every tool and test asks it.
- :mod:`.models`: the architectures the project owns, and fitting weights into an architecture.
- :mod:`.datasets`: deterministic evaluation ``DataLoader``s (ImageNet folder, MNIST, digits).
- :mod:`.metrics`: the metrics a model entry can name (top-1 / top-5 accuracy).
- :mod:`.runner`: :class:`Evaluator`, a model plus its cached evaluation set (sweep, studies, bench).
- :mod:`.assets`: where the read-only shared assets and the repository's data files are.

This package never prints and never exits. Its errors are in :mod:`weightcodec.errors`:
:class:`~weightcodec.errors.UnknownModelError`, :class:`~weightcodec.errors.AssetNotFoundError`,
:class:`~weightcodec.errors.DatasetError` (all :class:`~weightcodec.errors.EvaluationError`) and
:class:`~weightcodec.errors.ModelLoadError` for weights that do not fit, so a tool catches
:class:`~weightcodec.errors.WeightcodecError` once.
"""

from .assets import ASSETS_ENV_VAR, asset_path, default_assets_dir, locate, resolve_assets_dir
from .datasets import (
    DATASETS,
    PREPROCESSINGS,
    digits,
    digits_arrays,
    digits_split_indices,
    imagenet_folder,
    make_loader,
    mnist_idx,
)
from .metrics import METRICS, Accuracy, evaluate
from .models import PICKLE_SPEC, fit_state_dict, load_pickled_module, load_state_dict_file
from .runner import Evaluator
from .zoo import ModelSpec, available_models, build_model, get_model_spec, register, registered_models

__all__ = [
    "ASSETS_ENV_VAR",
    "DATASETS",
    "METRICS",
    "PICKLE_SPEC",
    "PREPROCESSINGS",
    "Accuracy",
    "Evaluator",
    "ModelSpec",
    "asset_path",
    "available_models",
    "build_model",
    "default_assets_dir",
    "digits",
    "digits_arrays",
    "digits_split_indices",
    "evaluate",
    "fit_state_dict",
    "get_model_spec",
    "imagenet_folder",
    "load_pickled_module",
    "load_state_dict_file",
    "locate",
    "make_loader",
    "mnist_idx",
    "register",
    "registered_models",
    "resolve_assets_dir",
]
