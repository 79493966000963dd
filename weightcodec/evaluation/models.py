"""Building the models that weightcodec evaluates, from a short *model spec* string.

Model specs:

``"digits-mlp"``
    The repository's example model (``data/digits_mlp.pt``): a plain ``torch.nn.Sequential``
    classifier for scikit-learn's 8x8 handwritten digits (64 -> 512 -> 512 -> 10, ReLU).
``"mnist-mlp"``
    The MNIST MLP of the shared assets (``mnist/mlp_784_500_250_10.pth``): state_dict keys
    ``l1``/``l2``/``l3``, forward ``relu(l1) -> relu(l2) -> l3`` on the flattened 784-pixel image.
any torchvision classification architecture name (``"resnet18"``, ``"mobilenet_v2"``, ``"vgg16"``, ...)
    Built with ``torchvision.models.get_model(name, weights=None)`` (nothing is downloaded), then a
    local state_dict is loaded.
``"pickle"``
    A whole pickled ``nn.Module`` (``torch.save(model)``). Unpickling can run arbitrary code, so it
    is only done when the caller passes ``trust_pickle=True``.

State_dict files are always read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from .assets import asset_path, default_digits_weights

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


#: Architectures defined by this package, by spec name. Torchvision names are resolved separately.
CUSTOM_MODELS: dict[str, Callable[[], nn.Module]] = {
    "digits-mlp": digits_mlp,
    "mnist-mlp": MnistMLP,
}


#: Known weights of the model specs, relative to the shared assets directory.
ASSET_WEIGHTS: dict[str, tuple[str, ...]] = {
    "mnist-mlp": ("mnist", "mlp_784_500_250_10.pth"),
    "mobilenet_v2": ("mobilenet_v2", "mobilenet_v2_imagenet.pth"),
}


def default_weights_for(
    spec: str, *, assets_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Return the known weights file of a model spec.

    ``"digits-mlp"`` -> the repository's ``data/digits_mlp.pt``; ``"mnist-mlp"`` and
    ``"mobilenet_v2"`` -> their files in the shared assets directory (``assets_dir``, default
    ``$WEIGHTCODEC_ASSETS`` or ``<repo>/../shared/assets``).

    Raises:
        ValueError: if no weights are known for ``spec``.
        FileNotFoundError: if the known file is missing.
    """
    if spec == "digits-mlp":
        path = default_digits_weights()
        if not path.is_file():
            raise FileNotFoundError(
                f"example model not found: {path} (retrain it with "
                "`python tools/train_example.py --out data/digits_mlp.pt`)"
            )
        return path
    if spec in ASSET_WEIGHTS:
        return asset_path(*ASSET_WEIGHTS[spec], assets_dir=assets_dir)
    raise ValueError(
        f"no known weights for model spec {spec!r}: pass a weights file "
        f"(known: {['digits-mlp', *ASSET_WEIGHTS]})"
    )


def torchvision_classification_models() -> list[str]:
    """Return the names of torchvision's ImageNet classification architectures."""
    import torchvision.models

    return list(torchvision.models.list_models(module=torchvision.models))


def available_models() -> list[str]:
    """Return every accepted model spec (custom ones, ``"pickle"``, then torchvision names)."""
    return [*CUSTOM_MODELS, PICKLE_SPEC, *torchvision_classification_models()]


def build_architecture(spec: str) -> nn.Module:
    """Return the untrained architecture named by ``spec`` (no weights loaded, nothing downloaded).

    Raises:
        ValueError: for ``"pickle"`` (it has no architecture of its own) or an unknown spec.
    """
    if spec in CUSTOM_MODELS:
        return CUSTOM_MODELS[spec]()
    if spec == PICKLE_SPEC:
        raise ValueError(
            "model spec 'pickle' has no architecture of its own: the architecture is inside the "
            "pickled file (pass the loaded module itself as a template instead)"
        )
    torchvision_names = torchvision_classification_models()
    if spec in torchvision_names:
        import torchvision.models

        return torchvision.models.get_model(spec, weights=None)
    raise ValueError(
        f"unknown model spec {spec!r}: expected one of {sorted(CUSTOM_MODELS)}, {PICKLE_SPEC!r}, "
        f"or a torchvision classification model name such as 'resnet18' or 'mobilenet_v2'"
    )


def _unwrap_state_dict(loaded: object, source: str) -> dict[str, torch.Tensor]:
    """Return a flat ``{name: tensor}`` state_dict from what ``torch.load`` returned.

    Accepts a plain state_dict, a checkpoint dict holding one under ``"state_dict"`` or
    ``"model"``, and strips a ``"module."`` prefix left by ``nn.DataParallel``.
    """
    if isinstance(loaded, nn.Module):
        raise ValueError(
            f"{source} holds a whole pickled model, not a state_dict: use model spec 'pickle' "
            "with trust_pickle=True if you trust the file"
        )
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{source} does not hold a state_dict (got {type(loaded).__name__})")
    for wrapper_key in ("state_dict", "model"):
        inner = loaded.get(wrapper_key)
        if isinstance(inner, Mapping):
            loaded = inner
            break
    state_dict: dict[str, torch.Tensor] = {}
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{source} is not a state_dict: entry {name!r} is a {type(value).__name__}, "
                "not a tensor"
            )
        state_dict[name] = value
    if state_dict and all(name.startswith("module.") for name in state_dict):
        state_dict = {name[len("module.") :]: value for name, value in state_dict.items()}
    return state_dict


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state_dict file safely (``weights_only=True``, tensors mapped to CPU).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a state_dict (e.g. a whole pickled model).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} cannot be read as a plain state_dict with weights_only=True (it probably "
            "holds a whole pickled model: use model spec 'pickle' with trust_pickle=True if you "
            f"trust the file): {error}"
        ) from error
    return _unwrap_state_dict(loaded, str(path))


def _load_into(model: nn.Module, state_dict: StateDict, description: str) -> nn.Module:
    """Load ``state_dict`` strictly into ``model``, turning mismatches into a clear ValueError."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"state_dict does not fit model {description}: {error}") from error
    return model.eval()


def load_state_dict_into(model_spec: str | nn.Module, state_dict: StateDict) -> nn.Module:
    """Return a model of architecture ``model_spec`` holding the weights of ``state_dict``.

    This is how decoded (compressed, then decompressed) weights are evaluated. ``model_spec`` is
    a spec string (the architecture is built fresh, without weights), or an ``nn.Module`` used as
    a template: it is deep-copied and left unchanged, which is what ``"pickle"`` models need.
    Loading is strict (same keys and shapes); values are cast to the model's dtypes.
    The returned model is in eval mode.

    Raises:
        ValueError: for an unknown spec, ``"pickle"`` given as a string, or a mismatched state_dict.
    """
    if isinstance(model_spec, nn.Module):
        return _load_into(copy.deepcopy(model_spec), state_dict, type(model_spec).__name__)
    return _load_into(build_architecture(model_spec), state_dict, repr(model_spec))


def build_model(
    spec: str,
    weights: str | os.PathLike[str] | None,
    *,
    trust_pickle: bool = False,
) -> nn.Module:
    """Build the model named by ``spec`` and load ``weights`` into it; returns it in eval mode.

    Args:
        spec: a model spec (see the module docstring): ``"digits-mlp"``, ``"mnist-mlp"``, a
            torchvision classification architecture name, or ``"pickle"``.
        weights: path of a state_dict file (for ``"pickle"``: of a pickled ``nn.Module``).
            ``None`` returns the architecture with its random initial weights.
        trust_pickle: required to be True for ``"pickle"``, because unpickling a file can execute
            arbitrary code.

    Raises:
        ValueError: unknown spec, ``"pickle"`` without ``trust_pickle`` or without weights, a file
            that is not what the spec expects, or weights that do not fit the architecture.
        FileNotFoundError: if ``weights`` does not exist.
    """
    if spec == PICKLE_SPEC:
        if not trust_pickle:
            raise ValueError(
                "model spec 'pickle' unpickles the file, which can execute arbitrary code: pass "
                "trust_pickle=True only for files you trust, or save a state_dict instead"
            )
        if weights is None:
            raise ValueError("model spec 'pickle' needs a weights file (the pickled model)")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"pickled model file not found: {path}")
        loaded = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(loaded, nn.Module):
            raise ValueError(
                f"{path} does not hold a pickled nn.Module (got {type(loaded).__name__}); for a "
                "state_dict use the architecture's spec instead of 'pickle'"
            )
        return loaded.eval()

    model = build_architecture(spec)
    if weights is None:
        return model.eval()
    return _load_into(model, load_state_dict_file(weights), f"{spec!r} from {weights}")
