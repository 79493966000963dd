"""``.safetensors`` files in and out, through the ``safetensors`` library (never a parser of our own).

Reading uses :func:`safetensors.safe_open` (memory-mapped; the library validates the header: its
length against the file, JSON, dtypes, shapes against byte ranges, ranges in bounds, contiguous and
not overlapping, the whole data area covered). Every error it raises becomes one
:class:`~weightcodec.errors.ModelLoadError` line naming the file. The tensors stay in the file's
memory map (torch's, or one numpy map of the data area: see :func:`_mapped_arrays`), so a
checkpoint is read as it is used, not copied whole into memory. Writing uses
:func:`safetensors.torch.save_file` into a temporary file beside the destination that is renamed
over it once complete (all or nothing, as :func:`weightcodec.atomic.atomic_write`).
"""

from __future__ import annotations

import math
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
_NUMPY_DTYPE_OF = {d.safetensors: d.name for d in DTYPES.values() if d.numpy and d.safetensors}


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
        as_numpy = prefer_numpy and all(handle.get_slice(n).get_dtype() in NUMPY_SAFETENSORS_DTYPES for n in handle.keys())
        if prefer_numpy and not as_numpy:
            handle = library.safe_open(str(path), framework="pt")  # bfloat16, float8...: torch tensors
        with handle:
            metadata = handle.metadata()
            names = list(handle.offset_keys()) if hasattr(handle, "offset_keys") else list(handle.keys())
            # the views need the tensors in file order, which only offset_keys() gives
            mapped = _mapped_arrays(path, handle, names) if as_numpy and hasattr(handle, "offset_keys") else None
            for name in names:
                tensors[name] = mapped[name] if mapped is not None else handle.get_tensor(name)
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


def _mapped_arrays(path: Path, handle, names: list[str]) -> "OrderedDict[str, np.ndarray] | None":
    """The tensors of a file the library has validated, as read-only views of one memory map of its
    data area instead of copies (``get_tensor`` copies with framework="numpy"; torch's maps): their
    pages are read when used and can be given back (:mod:`weightcodec.pages`), so a checkpoint
    larger than memory can be encoded. Nothing of the header is parsed here: the library has checked
    that the tensors lie back to back in file order and cover the data area to the end of the file,
    so each one's place follows from the dtypes and shapes it reports. The first and last elements
    of every view are checked against the library's own reads; None (the caller copies as before)
    on any mismatch, e.g. a file changed since it was validated."""
    layout, offset = [], 0
    for name in names:
        view = handle.get_slice(name)
        dtype = np.dtype(_NUMPY_DTYPE_OF[view.get_dtype()]).newbyteorder("<")
        shape = tuple(view.get_shape())
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        layout.append((name, dtype, shape, offset, nbytes))
        offset += nbytes
    try:
        start = os.path.getsize(path) - offset
        if offset == 0 or start < 8:
            return None
        data = np.asarray(np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(offset,)))
    except (OSError, ValueError):
        return None
    arrays: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, dtype, shape, begin, nbytes in layout:
        array = data[begin:begin + nbytes].view(dtype).reshape(shape)
        if array.size and not _library_reads(handle, name, array):
            return None
        arrays[name] = array
    return arrays


def _library_reads(handle, name: str, tensor) -> bool:
    """The library reads ``tensor``'s bytes from the file at its first and last rows (a scalar:
    itself), i.e. ``tensor`` is where the library says tensor ``name`` is."""
    if tensor.ndim == 0:
        return _raw_bytes(tensor).tobytes() == _raw_bytes(handle.get_tensor(name)).tobytes()
    view = handle.get_slice(name)
    return all(_raw_bytes(tensor[index]).tobytes() == _raw_bytes(view[index]).tobytes()
               for index in (slice(0, 1), slice(tensor.shape[0] - 1, tensor.shape[0])))


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


#: tensors at least this big are sent on to disk as soon as they are written (see ``write``)
WRITEBACK_BYTES = 16 << 20


def streaming_available() -> bool:
    """Whether this safetensors can write a file's header from raw buffers (``TensorSpec``, 0.8+),
    which :class:`SafetensorsStreamWriter` needs."""
    return hasattr(_library(), "TensorSpec") and hasattr(_library(), "serialize_file")


class SafetensorsStreamWriter:
    """A ``.safetensors`` file written one tensor at a time, all or nothing, so that a model need not
    be held whole to be saved.

    The library writes the file (header and all) into a temporary beside the destination from the
    tensors' names, dtypes and shapes, with every tensor's data read from untouched anonymous
    memory (zero pages: nothing resident). The library then opens that file as any other (its
    header validated); each tensor's place follows from that as in :func:`_mapped_arrays`, and
    :meth:`write` puts a tensor's bytes there with ``pwrite`` (the page cache, not this process's
    memory) and checks its first and last rows through the library. :meth:`commit` refuses a file
    with a tensor never written, then syncs it and renames it over the destination; on any error
    (or :meth:`abort`) the temporary is removed and the destination is left as it was.

    ``layout`` maps each name to ``(dtype, shape)`` (weightcodec dtype names). Raises
    :class:`~weightcodec.errors.OutputError` when the destination cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], layout: Mapping[str, tuple[str, tuple[int, ...]]],
                 metadata: Mapping[str, str] | None = None, *, overwrite: bool = True) -> None:
        import mmap

        library = _library()
        self.path = Path(path)
        self.target = resolve_output(self.path, overwrite=overwrite)
        sweep_leftovers(self.target)
        self._temp: str | None = temp_name(self.target)
        self._fd: int | None = None
        self._handle = None
        try:
            sizes = {name: math.prod(shape) * DTYPES[dtype].itemsize for name, (dtype, shape) in layout.items()}
            _check_free_space(self.target, sum(sizes.values()), path)
            zeros = mmap.mmap(-1, max([*sizes.values(), 1]))  # anonymous: reads as zeros, never resident
            try:
                address = np.frombuffer(zeros, np.uint8).ctypes.data
                specs = {name: library.TensorSpec(dtype=dtype, shape=list(shape), data_ptr=address,
                                                  data_len=sizes[name])
                         for name, (dtype, shape) in layout.items()}
                library.serialize_file(specs, self._temp, metadata=dict(metadata) if metadata else None)
            finally:
                zeros.close()  # the specs hold its address only, no buffer export: it closes
            numpy_only = all(DTYPES[dtype].numpy for dtype, _ in layout.values())
            self._handle = library.safe_open(self._temp, framework="numpy" if numpy_only else "pt")
            names = list(self._handle.offset_keys())
            if set(names) != set(layout):  # pragma: no cover - the library wrote what it was given
                raise OutputError(f"cannot write {path}: the library laid out other tensors than asked")
            start = os.path.getsize(self._temp) - sum(sizes.values())
            self._places: dict[str, tuple[int, int]] = {}
            for name in names:
                self._places[name] = (start, sizes[name])
                start += sizes[name]
            self._fd = os.open(self._temp, os.O_WRONLY)
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        except OutputError:
            self.abort()
            raise
        except Exception as exc:  # noqa: BLE001 - the library's own errors (an unknown dtype...)
            self.abort()
            raise OutputError(f"cannot write {path} as safetensors ({_first_line(exc)})") from None
        self._written: set[str] = set()
        self.layout = dict(layout)

    def write(self, name: str, tensor) -> None:
        """Put ``tensor`` (a numpy array or torch tensor of its layout's dtype and shape) in place."""
        if name not in self._places or self._fd is None:
            raise OutputError(f"cannot write {self.path}: no tensor {name!r} in its layout")
        dtype, shape = self.layout[name]
        if tuple(tensor.shape) != tuple(shape) or str(tensor.dtype).removeprefix("torch.") != dtype:
            raise OutputError(f"cannot write {self.path}: tensor {name!r} is {tensor.dtype} "
                              f"{tuple(tensor.shape)}, its layout says {dtype} {tuple(shape)}")
        data = _raw_bytes(tensor)
        start, nbytes = self._places[name]
        offset = start
        assert data.nbytes == nbytes  # dtype and shape checked above
        try:
            view = memoryview(data).cast("B")
            while view:
                done = os.pwrite(self._fd, view, offset)
                view, offset = view[done:], offset + done
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if data.size and not self._landed(name, tensor):
            self.abort()  # pragma: no cover - the layout is the library's
            raise OutputError(f"cannot write {self.path}: tensor {name!r} did not land where the library reads it")
        if nbytes >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            # start writing a big tensor to disk now (Linux starts writeback of dirty pages on
            # DONTNEED), so that the sync at the end has little left: 1 B Llama shape, 2.2 GB
            # out, that sync 1.24 -> 0.54 s and the whole decode 26.6 -> 24.6 s
            os.posix_fadvise(self._fd, start, nbytes, os.POSIX_FADV_DONTNEED)
        self._written.add(name)

    def _landed(self, name: str, tensor) -> bool:
        try:
            return _library_reads(self._handle, name, tensor)
        except Exception:  # noqa: BLE001 - a dtype the library cannot slice: nothing to compare with
            return True

    def commit(self) -> int:
        """Sync the complete file and rename it over the destination; returns its size."""
        missing = [name for name in self._places if name not in self._written]
        if missing:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {len(missing)} tensors never written "
                              f"(first {missing[0]!r})")
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            size = os.path.getsize(self._temp)
            os.replace(self._temp, self.target)
            self._temp = None
            _fsync_dir(self.target.parent)
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._handle = None
        return size

    def abort(self) -> None:
        """Remove the temporary file (the destination is untouched)."""
        self._handle = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._temp is not None:
            try:
                os.unlink(self._temp)
            except OSError:
                pass
            self._temp = None

    def __enter__(self) -> "SafetensorsStreamWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.abort()  # not committed (an error, or no commit): nothing is left; after commit a no-op


def _check_free_space(target: Path, needed: int, path) -> None:
    """The file system of ``target`` has room for ``needed`` bytes (the data area is written whole
    before any tensor is decoded: a file that declares more than the disk holds fails here, not
    part way)."""
    try:
        stats = os.statvfs(target.parent)
    except (OSError, AttributeError):  # no statvfs (Windows) or no answer: writing will tell
        return
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise OutputError(f"cannot write {path}: its tensors need {needed:,} bytes and {target.parent} "
                          f"has {free:,} free")


def _raw_bytes(tensor) -> np.ndarray:
    """A tensor's bytes as a flat uint8 numpy array (a view where it can be: no copy of a
    contiguous tensor)."""
    if isinstance(tensor, np.ndarray):
        return np.ascontiguousarray(tensor).reshape(-1).view(np.uint8)
    import torch

    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()


__all__ = ["SUFFIX", "SafetensorsStreamWriter", "looks_like_safetensors", "read_safetensors", "save_safetensors",
           "streaming_available", "unshared", "write_safetensors_to"]
