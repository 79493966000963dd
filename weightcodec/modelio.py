"""Loading ``model.pt`` safely, rebuilding a runnable model, saving one.

``torch.load`` of an untrusted pickle can run arbitrary code, so models are loaded with
``weights_only=True``. A pickled ``nn.Module`` needs full unpickling: that happens only when the
caller passes ``trust_pickle=True`` (``--trust-pickle`` on the command line).
"""

from __future__ import annotations

import copy
import io
import json
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_write_with
from .container import MAGIC as WCODEC_MAGIC
from .errors import ModelLoadError, UntrustedPickleError
from .formats.hf_folder import WeightsLayout, read_hf_folder
from .formats.safetensors_file import SUFFIX as SAFETENSORS_SUFFIX, looks_like_safetensors, read_safetensors
from .header import ShardInfo

if TYPE_CHECKING:
    import torch

TRUST_HINT = (
    "loading it runs code stored in the file; if you trust its source, pass --trust-pickle "
    "(trust_pickle=True)"
)


@dataclass
class LoadedModel:
    """What was read from a model file: always a state_dict, plus the module when there is one, or
    the layout of a ``.safetensors`` file / Hugging Face folder (shards, carried files, notes)."""

    kind: str  # "state_dict" | "module" | "safetensors" | "hf-folder"
    state_dict: "OrderedDict[str, torch.Tensor]"
    module: torch.nn.Module | None = None
    layout: WeightsLayout | None = None  # "safetensors" and "hf-folder"

    @property
    def heads(self) -> set[str]:
        """Token embeddings that the folder's ``config.json`` says are also the (tied, not stored)
        output head (:func:`weightcodec.policy.config_heads`); empty for other inputs."""
        if self.layout is None:
            return set()
        from .policy import config_heads

        config = next((f.data for f in self.layout.files if f.path == "config.json"), None)
        if config is None:
            return set()
        try:
            parsed = json.loads(config)
        except (ValueError, UnicodeDecodeError):
            return set()
        return config_heads(parsed, self.state_dict)


def from_object(obj: object, *, source: str = "the input") -> LoadedModel:
    import torch

    if isinstance(obj, torch.nn.Module):
        return LoadedModel("module", OrderedDict(obj.state_dict()), obj)
    if isinstance(obj, Mapping):
        bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if not bad and obj:
            return LoadedModel("state_dict", OrderedDict(obj))
        hint = ""
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), (Mapping, torch.nn.Module)):
                hint = f"; it looks like a training checkpoint: save its {key!r} entry on its own"
        what = "is empty" if not obj else f"has non-tensor entries such as {bad[0]!r}"
        raise ModelLoadError(f"{source} is a dict that {what}, not a state_dict{hint}")
    raise ModelLoadError(
        f"{source} holds a {type(obj).__name__}, not a model: expected a state_dict "
        "(a dict of name -> tensor) or a torch.nn.Module"
    )


def check_model_path(path: str | Path) -> Path:
    """``path`` as a Path if it can be a model (a file, or a folder); a clear error if it is missing or a .wcodec."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if _starts_with(path, WCODEC_MAGIC):
        raise ModelLoadError(f"{path} is already a .wcodec file: `wcodec info {path}` shows what it holds, "
                             f"`wcodec decode {path} -o out.pt` restores the model")
    return path


def load_model(path: str | Path, *, trust_pickle: bool = False, prefer_numpy: bool = False) -> LoadedModel:
    """Read a model: a ``torch.save`` file holding a state_dict or a pickled ``nn.Module``, a
    ``.safetensors`` file, or a Hugging Face model folder (safetensors weights plus other files).

    ``prefer_numpy``: a ``.safetensors`` file whose dtypes numpy has is read as numpy arrays,
    without importing torch (the encoder takes either; a second off a small job's start)."""
    path = check_model_path(path)
    if path.is_dir():
        state_dict, layout = read_hf_folder(path)
        return LoadedModel("hf-folder", state_dict, layout=layout)
    if path.suffix == SAFETENSORS_SUFFIX or (not _is_torch_file(path) and looks_like_safetensors(path)):
        state_dict, metadata = read_safetensors(path, prefer_numpy=prefer_numpy)
        if not state_dict:
            raise ModelLoadError(f"{path} holds no tensors")
        shard = ShardInfo(path.name, tuple(state_dict), metadata)
        return LoadedModel("safetensors", state_dict, layout=WeightsLayout("safetensors", (shard,)))
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise ModelLoadError(f"{path} is not a PyTorch model file ({_first_line(exc)})") from exc
        if not trust_pickle:
            raise UntrustedPickleError(f"{path} is a pickled Python object (e.g. a whole nn.Module): {TRUST_HINT}") from exc
        obj = _load_trusted(path)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelLoadError(f"{path} is not a PyTorch model file ({_first_line(exc)})") from exc
    return from_object(obj, source=str(path))


def _is_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (or, legacy, a pickle starting with 0x80)."""
    return _starts_with(path, b"PK\x03\x04") or _starts_with(path, b"\x80")


def _torch_load(path: Path) -> object:
    """``torch.load`` (weights only), memory-mapped when the file is a zip archive (torch >= 1.6's
    format): tensors are then read from the page cache as they are used, not copied up front."""
    import torch

    if _starts_with(path, b"PK\x03\x04"):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def load_source(source: object, *, trust_pickle: bool = False, prefer_numpy: bool = False) -> LoadedModel:
    """A path (read with :func:`load_model`), a state_dict or module, or an already loaded model."""
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, (str, Path)):
        return load_model(source, trust_pickle=trust_pickle, prefer_numpy=prefer_numpy)
    return from_object(source)


def _load_trusted(path: Path) -> object:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path} could not be unpickled ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# --- module skeletons -------------------------------------------------------------------------
def module_skeleton(module: torch.nn.Module, names: Iterable[str]) -> bytes:
    """``torch.save`` bytes of the module with the named tensors replaced by meta tensors.

    The skeleton keeps the architecture (and anything not in the state_dict, such as
    non-persistent buffers) but none of the weights, which live in the container's segments.
    """
    import torch

    skeleton = copy.deepcopy(module)
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = skeleton.get_submodule(owner_name) if owner_name else skeleton
        current = getattr(owner, attr)
        empty = torch.empty(current.shape, dtype=current.dtype, device="meta")
        if isinstance(current, torch.nn.Parameter):
            setattr(owner, attr, torch.nn.Parameter(empty, requires_grad=current.requires_grad))
        else:
            owner._buffers[attr] = empty  # noqa: SLF001 - buffers have no public setter
    buffer = io.BytesIO()
    torch.save(skeleton, buffer)
    return buffer.getvalue()


def rebuild_module(skeleton: bytes, state_dict: Mapping[str, torch.Tensor], *, trust_pickle: bool) -> torch.nn.Module:
    if not trust_pickle:
        raise UntrustedPickleError(f"this file holds a pickled nn.Module: {TRUST_HINT}, or decode it as a state_dict")
    import torch

    try:
        module = torch.load(io.BytesIO(skeleton), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"the module skeleton could not be unpickled ({_first_line(exc)}); "
                             "is the code that defines its classes importable here?") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError("the module skeleton is not an nn.Module")
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module


def save_torch(obj: object, path: str | Path, *, overwrite: bool = True) -> int:
    """``torch.save`` of ``obj`` to ``path``, all or nothing (:func:`weightcodec.atomic.atomic_write`)."""
    import torch

    # torch.save streams each tensor's storage to the (temporary) file: no in-memory copy of the output
    return atomic_write_with(path, lambda handle: torch.save(obj, handle), overwrite=overwrite)
