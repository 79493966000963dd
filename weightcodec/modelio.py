"""Loading ``model.pt`` safely, rebuilding a runnable model, writing outputs atomically.

``torch.load`` of an untrusted pickle can run arbitrary code, so models are loaded with
``weights_only=True``. A pickled ``nn.Module`` needs full unpickling: that happens only when the
caller passes ``trust_pickle=True`` (``--trust-pickle`` on the command line).
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelLoadError, OutputError, UntrustedPickleError

TRUST_HINT = (
    "loading it runs code stored in the file; if you trust its source, pass --trust-pickle "
    "(trust_pickle=True)"
)


@dataclass
class LoadedModel:
    """What was read from a model file: always a state_dict, plus the module when there is one."""

    kind: str  # "state_dict" | "module"
    state_dict: "OrderedDict[str, torch.Tensor]"
    module: torch.nn.Module | None = None


def from_object(obj: object, *, source: str = "the input") -> LoadedModel:
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


def load_model(path: str | Path, *, trust_pickle: bool = False) -> LoadedModel:
    """Read a ``torch.save`` file holding a state_dict or a pickled ``nn.Module``."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise ModelLoadError(f"{path} is not a PyTorch model file ({_first_line(exc)})") from exc
        if not trust_pickle:
            raise UntrustedPickleError(f"{path} is a pickled Python object (e.g. a whole nn.Module): {TRUST_HINT}") from exc
        obj = _load_trusted(path)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelLoadError(f"{path} is not a PyTorch model file ({_first_line(exc)})") from exc
    return from_object(obj, source=str(path))


def load_source(source: object, *, trust_pickle: bool = False) -> LoadedModel:
    """A path (read with :func:`load_model`), a state_dict or module, or an already loaded model."""
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, (str, Path)):
        return load_model(source, trust_pickle=trust_pickle)
    return from_object(source)


def _load_trusted(path: Path) -> object:
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
    try:
        module = torch.load(io.BytesIO(skeleton), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"the module skeleton could not be unpickled ({_first_line(exc)}); "
                             "is the code that defines its classes importable here?") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError("the module skeleton is not an nn.Module")
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module


# --- atomic output ----------------------------------------------------------------------------
def atomic_write(path: str | Path, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``path`` all or nothing: a temporary file renamed into place.

    On any failure (including KeyboardInterrupt) the temporary file is removed and ``path`` is
    left as it was. Returns the number of bytes written.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    written = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return written


def save_torch(obj: object, path: str | Path) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, [buffer.getvalue()])
