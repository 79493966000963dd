"""The architectures weightcodec evaluates, and fitting weights into them.

Which name means which architecture, weights file and data set is :mod:`.zoo`'s business; this
module only defines the architectures the project owns and the loading rules:

- state_dict files are read with :func:`weightcodec.modelio.load_model` (``weights_only=True``
  unless the caller trusts the file), the loader every weightcodec tool uses;
- a whole pickled ``nn.Module`` (model name ``"pickle"``) is only unpickled with ``trust_pickle=True``;
- a state_dict is fitted strictly (same keys and shapes), after dropping a ``module.`` prefix left by
  ``nn.DataParallel`` when the architecture has none.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import AssetNotFoundError, ModelLoadError, UntrustedPickleError
from ..modelio import TRUST_HINT, load_model

#: Model name for a whole pickled ``nn.Module`` given as the weights file (no registry entry).
PICKLE_SPEC = "pickle"

StateDict = Mapping[str, torch.Tensor]


class MnistMLP(nn.Module):
    """The MNIST MLP of the shared assets: 784 -> 500 -> 250 -> 10 with ReLU.

    Input: images of any shape ``(N, ...)`` with 784 values per sample (flattened internally).
    """

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(784, 500)
        self.l2 = nn.Linear(500, 250)
        self.l3 = nn.Linear(250, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape ``(N, 10)``."""
        x = torch.flatten(x, start_dim=1)
        x = torch.relu(self.l1(x))
        x = torch.relu(self.l2(x))
        return self.l3(x)


def digits_mlp() -> nn.Sequential:
    """Return a freshly initialised digits MLP (64 -> 512 -> 512 -> 10).

    Only plain ``torch.nn`` layers are used, so a pickled copy loads without this package.
    State_dict keys: ``1.weight``/``1.bias`` (512x64), ``3.*`` (512x512), ``5.*`` (10x512).
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )


def torchvision_classification_models() -> list[str]:
    """Return the names of torchvision's ImageNet classification architectures."""
    import torchvision.models

    return list(torchvision.models.list_models(module=torchvision.models))


def torchvision_architecture(name: str) -> nn.Module:
    """Return torchvision's ``name`` architecture with random weights (nothing is downloaded)."""
    import torchvision.models

    return torchvision.models.get_model(name, weights=None)


def load_state_dict_file(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state_dict file with :func:`weightcodec.modelio.load_model` (tensors on the CPU).

    Raises:
        AssetNotFoundError: if the file does not exist.
        ModelLoadError: if it is not a state_dict (e.g. a training checkpoint: the message says
            which entry to save on its own), or a pickled module without ``trust_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise AssetNotFoundError(f"weights file not found: {path}")
    return dict(load_model(path, trust_pickle=trust_pickle).state_dict)


def load_pickled_module(path: str | os.PathLike[str] | None, *, trust_pickle: bool) -> nn.Module:
    """Unpickle a whole ``nn.Module`` (model name ``"pickle"``); returns it in eval mode.

    Raises:
        UntrustedPickleError: without ``trust_pickle`` (unpickling can run arbitrary code).
        AssetNotFoundError: no file given, or it does not exist.
        ModelLoadError: the file holds a state_dict or something else, not a module.
    """
    if not trust_pickle:
        raise UntrustedPickleError(f"model {PICKLE_SPEC!r} unpickles the weights file: {TRUST_HINT}, or save "
                                   "a state_dict and name its architecture instead")
    if path is None:
        raise AssetNotFoundError(f"model {PICKLE_SPEC!r} needs a weights file (the pickled model)")
    path = Path(path)
    if not path.is_file():
        raise AssetNotFoundError(f"pickled model file not found: {path}")
    loaded = load_model(path, trust_pickle=True)
    if loaded.module is None:
        raise ModelLoadError(f"{path} holds a state_dict, not a pickled nn.Module: name its architecture "
                             f"instead of {PICKLE_SPEC!r}")
    return loaded.module.eval()


def fit_state_dict(model: nn.Module, state_dict: StateDict, *, description: str | None = None,
                   copy_model: bool = True) -> nn.Module:
    """Load ``state_dict`` strictly into a deep copy of ``model``; returns the copy in eval mode.

    ``model`` itself is left unchanged (it is the template, e.g. an :class:`Evaluator`'s reference);
    ``copy_model=False`` loads into ``model`` itself (for a model just built). Values are cast to the model's dtypes. A ``module.`` prefix on every key is dropped when the
    model's own keys have none.

    Raises:
        ModelLoadError: if the keys or shapes do not match.
    """
    own = model.state_dict()
    if state_dict and all(k.startswith("module.") for k in state_dict) and not any(k.startswith("module.") for k in own):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    fitted = copy.deepcopy(model) if copy_model else model
    try:
        fitted.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        what = description or type(model).__name__
        raise ModelLoadError(f"state_dict does not fit model {what}: {str(error).strip()}") from error
    return fitted.eval()


__all__ = ["PICKLE_SPEC", "MnistMLP", "digits_mlp", "fit_state_dict", "load_pickled_module", "load_state_dict_file",
           "torchvision_architecture", "torchvision_classification_models"]
