"""``.safetensors`` files in and out, through the ``safetensors`` library (never a parser of our own).

Reading uses :func:`safetensors.safe_open` (memory-mapped; the library validates the header: its
length against the file, JSON, dtypes, shapes against byte ranges, ranges in bounds, contiguous and
not overlapping, the whole data area covered). Every error it raises becomes one
:class:`~weightcodec.errors.ModelLoadError` line naming the file. Writing uses
:func:`safetensors.torch.save_file` into a temporary file beside the destination that is renamed
over it once complete (all or nothing, as :func:`weightcodec.atomic.atomic_write`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import _fsync_dir, resolve_output, sweep_leftovers, temp_name
from ..dtypes import DTYPES, dtype_of
from ..errors import ModelLoadError, OutputError

if TYPE_CHECKING:
    import torch

SUFFIX = ".safetensors"


#: safetensors dtype names numpy can hold (a file of only these can be read without torch)
NUMPY_SAFETENSORS_DTYPES = frozenset(d.safetensors for d in DTYPES.values() if d.numpy and d.safetensors)


def _library():
    try:
        import safetensors
    except ImportError as exc:  # pragma: no cover - safetensors is a dependency of weightcodec
        raise ModelLoadError("reading or writing .safetensors needs the 'safetensors' package "
                             "(pip install safetensors)") from exc
    return safetensors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[0].replace("Error while deserializing header: ", "")
    return line if len(line) <= 120 else line[:117] + "..."


def looks_like_safetensors(path: str | os.PathLike[str]) -> bool:
    """A cheap sniff for files without the suffix: a little-endian u64 header length then ``{``."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(9)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    if len(start) < 9 or start[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(start[:8], "little") <= size - 8


def read_safetensors(path: str | os.PathLike[str], *,
                     prefer_numpy: bool = False) -> tuple["OrderedDict[str, torch.Tensor]", dict[str, str] | None]:
    """The tensors of a ``.safetensors`` file (in file order) and its ``__metadata__``.

    ``prefer_numpy``: numpy arrays instead of torch tensors when numpy has every dtype of the file
    (not bfloat16 or the float8 formats), so that torch need not be imported at all.

    Raises:
        ModelLoadError: the file is missing, not a safetensors file, its header lies (offsets out of
            range or overlapping, a header length larger than the file, unknown dtype...), or it
            holds a dtype this codec has no name for.
    """
    library = _library()
    path = Path(path)
    tensors: OrderedDict[str, torch.Tensor] = OrderedDict()
    try:
        handle = library.safe_open(str(path), framework="numpy" if prefer_numpy else "pt")
        if prefer_numpy and not all(handle.get_slice(n).get_dtype() in NUMPY_SAFETENSORS_DTYPES for n in handle.keys()):
            handle = library.safe_open(str(path), framework="pt")  # bfloat16, float8...: torch tensors
        with handle:
            metadata = handle.metadata()
            names = list(handle.offset_keys()) if hasattr(handle, "offset_keys") else list(handle.keys())
            for name in names:
                tensors[name] = handle.get_tensor(name)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except (library.SafetensorError, OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"{path} is not a valid safetensors file ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - the Rust bindings raise other types for other lies
        raise ModelLoadError(f"{path} is not a valid safetensors file ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from None
    for name, tensor in tensors.items():
        if dtype_of(tensor) is None:
            raise ModelLoadError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, which weightcodec cannot store")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelLoadError(f"{path}: __metadata__ must map strings to strings")
    return tensors, metadata


def _all_numpy(tensors: Mapping[str, object]) -> bool:
    """Numpy arrays only (a torch-free decode), written through ``safetensors.numpy``."""
    return bool(tensors) and all(isinstance(t, np.ndarray) for t in tensors.values())


def unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors with every storage used once (safetensors refuses shared or overlapping tensors):
    later tensors that share storage with an earlier one are copied."""
    if _all_numpy(tensors):
        return {name: np.ascontiguousarray(array) for name, array in tensors.items()}
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        key = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if key is not None and key in seen:
            tensor = tensor.clone()
        elif key is not None:
            seen.add(key)
        out[name] = tensor.contiguous()
    return out


def write_safetensors_to(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                         metadata: Mapping[str, str] | None = None) -> int:
    """``save_file`` straight to ``path`` (for files inside a folder being built); returns its size.
    ``tensors`` are all torch tensors, or all numpy arrays (written without importing torch)."""
    _library()
    if _all_numpy(tensors):
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file

    try:
        save_file(unshared(tensors), str(path), metadata=dict(metadata) if metadata else None)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - the library's own errors
        raise OutputError(f"cannot write {path} as safetensors ({_first_line(exc)})") from None
    return os.path.getsize(path)


def save_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                     metadata: Mapping[str, str] | None = None, *, overwrite: bool = True) -> int:
    """Write a ``.safetensors`` file all or nothing; returns its size in bytes.

    Raises:
        OutputError: the destination cannot be written (exists without ``overwrite``, is a folder...).
    """
    target = resolve_output(path, overwrite=overwrite)
    sweep_leftovers(target)
    temp = temp_name(target)
    try:
        size = write_safetensors_to(temp, tensors, metadata)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
        temp = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass
    return size


__all__ = ["SUFFIX", "looks_like_safetensors", "read_safetensors", "save_safetensors", "unshared",
           "write_safetensors_to"]
