"""Hugging Face model folders in and out: weights from safetensors shards, every other file carried.

Reading a folder (:func:`read_hf_folder`):

- the weights are the shards named by the folder's ``*.safetensors.index.json`` (``weight_map``:
  tensor name -> file), else every ``*.safetensors`` file at the top of the folder (usually the one
  ``model.safetensors``); tensor names must be unique across shards;
- every other regular file, in any sub-folder, is *carried*: stored byte for byte (zstd) in the
  container and written back on decode (``config.json``, tokenizer files, the index, a README...).
  Folders whose name starts with ``.`` (``.git``, ``.cache``) are skipped, and so are weights in
  other formats (``pytorch_model.bin``, ``*.h5``, ``*.msgpack``, ``*.onnx``, ``*.gguf``...), with a
  note. Symlinks to files are followed (Hugging Face cache snapshots are symlinks).

Writing a folder (:func:`write_folder`) is all or nothing: everything goes into a new sibling
folder ``.<name>.<pid>.<random>.wcodec-tmp``, which is renamed to the destination once complete.
An existing non-empty destination is replaced only with ``overwrite`` (its old contents are removed
after the new folder is in place); on failure the temporary folder is removed and the destination
is left as it was. File names come from the header and were validated there
(:func:`weightcodec.header.check_relative_path`); files are created with ``O_EXCL | O_NOFOLLOW``
inside the new folder, so nothing is written outside it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import FormatError, ModelLoadError, OutputError
from ..header import MAX_CARRIED_FILE_BYTES, MAX_FILES, MAX_SHARDS, ShardInfo, check_file_set, check_relative_path
from ..report import Notice
from .safetensors_file import SUFFIX, SafetensorsStreamWriter, read_safetensors, write_safetensors_to

if TYPE_CHECKING:
    import torch

INDEX_SUFFIX = ".safetensors.index.json"
#: Weights in formats other than safetensors: never carried (they would be stored uncompressed).
OTHER_WEIGHT_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.onnx_data",
                         "*.gguf", "*.tflite", "*.ot", "*.mlmodel", "*.pb")
TEMP_SUFFIX = ".wcodec-tmp"


@dataclass(frozen=True)
class FolderFile:
    """A carried file: its path relative to the folder (``/``-separated) and its bytes."""

    path: str
    data: bytes


@dataclass(frozen=True)
class WeightsLayout:
    """How the tensors of a ``safetensors`` / ``hf-folder`` model are split into files."""

    kind: str  # "safetensors" | "hf-folder"
    shards: tuple[ShardInfo, ...]
    files: tuple[FolderFile, ...] = ()
    notices: tuple[Notice, ...] = field(default=())


def is_model_folder(path: Path) -> bool:
    return path.is_dir()


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def read_hf_folder(folder: str | os.PathLike[str]) -> tuple["OrderedDict[str, torch.Tensor]", WeightsLayout]:
    """Every tensor of the folder's safetensors shards, and the layout (shards, carried files).

    Raises:
        ModelLoadError: no safetensors weights, a bad index, a bad shard, clashing tensor names,
            unsafe file names, too many or too large files.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ModelLoadError(f"{root} is not a folder")
    shard_files, index_file = _find_shards(root)
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    shards = []
    expected = _index_map(root, index_file) if index_file else None
    for rel in shard_files:
        tensors, metadata = read_safetensors(root / rel)
        if expected is not None:
            wanted = {name for name, shard in expected.items() if shard == rel}
            if set(tensors) != wanted:
                extra = sorted(set(tensors) - wanted)[:3] or sorted(wanted - set(tensors))[:3]
                raise ModelLoadError(f"{root / index_file}: the index does not match {rel} (e.g. {', '.join(extra)})")
        for name, tensor in tensors.items():
            if name in state_dict:
                raise ModelLoadError(f"{root}: tensor {name!r} is in more than one safetensors file "
                                     f"({rel} and an earlier one)")
            state_dict[name] = tensor
        shards.append(ShardInfo(rel, tuple(tensors), metadata))
    files, skipped = _carried_files(root, set(shard_files))
    notices = []
    if skipped:
        notices.append(Notice("note", f"not carried into the container (weights in another format, or not "
                                      f"regular files): {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"))
    return state_dict, WeightsLayout("hf-folder", tuple(shards), tuple(files), tuple(notices))


def _find_shards(root: Path) -> tuple[list[str], str | None]:
    indexes = sorted(p.name for p in root.iterdir() if p.name.endswith(INDEX_SUFFIX) and p.is_file())
    if len(indexes) > 1:
        raise ModelLoadError(f"{root} has several safetensors indexes ({', '.join(indexes)}): "
                             "encode one model folder at a time")
    if indexes:
        mapping = _index_map(root, indexes[0])
        files = sorted(set(mapping.values()))
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise ModelLoadError(f"{root / indexes[0]} names {missing[0]}, which is not in the folder")
        return files, indexes[0]
    files = sorted(p.name for p in root.iterdir() if p.name.endswith(SUFFIX) and p.is_file())
    if not files:
        others = sorted(p.name for p in root.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in OTHER_WEIGHT_PATTERNS))
        hint = ""
        if others:
            hint = (f"; it has {', '.join(others[:3])}: encode a torch.save file by passing the file itself, or save "
                    "the model as safetensors first (transformers: save_pretrained(folder, safe_serialization=True))")
        raise ModelLoadError(f"{root} holds no model weights: expected model.safetensors, or shards "
                             f"model-0000x-of-0000y.safetensors with model.safetensors.index.json{hint}")
    if len(files) > MAX_SHARDS:
        raise ModelLoadError(f"{root} has more than {MAX_SHARDS} safetensors files")
    return files, None


def _index_map(root: Path, index_file: str) -> dict[str, str]:
    path = root / index_file
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not a readable JSON index ({exc})") from None
    mapping = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(mapping, dict) or not mapping or not all(isinstance(v, str) for v in mapping.values()):
        raise ModelLoadError(f"{path} has no weight_map of tensor name -> file")
    for shard in set(mapping.values()):
        try:
            check_relative_path(shard, f"{path.name}")
        except FormatError as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
        if not shard.endswith(SUFFIX):
            raise ModelLoadError(f"{path} names {shard!r}, which is not a .safetensors file")
    if len(set(mapping.values())) > MAX_SHARDS:
        raise ModelLoadError(f"{path} names more than {MAX_SHARDS} shards")
    return mapping


def _carried_files(root: Path, shards: set[str]) -> tuple[list[FolderFile], list[str]]:
    files: list[FolderFile] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked folders are not followed: say so
        skipped.extend(_relative(Path(dirpath) / d, root) + "/" for d in sorted(dirnames)
                       if os.path.islink(os.path.join(dirpath, d)) and not d.startswith("."))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = _relative(path, root)
            if rel in shards:
                continue
            if any(fnmatch.fnmatch(name, pattern) for pattern in OTHER_WEIGHT_PATTERNS) or not path.is_file():
                skipped.append(rel)
                continue
            try:
                check_relative_path(rel, "the folder")
            except FormatError as exc:
                raise ModelLoadError(f"{root}: cannot carry {rel!r}: {exc}") from None
            size = path.stat().st_size
            if size > MAX_CARRIED_FILE_BYTES:
                raise ModelLoadError(f"{path} is larger than the {MAX_CARRIED_FILE_BYTES:,} bytes a carried file may have")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
            files.append(FolderFile(rel, data))
            if len(files) > MAX_FILES:
                raise ModelLoadError(f"{root} has more than {MAX_FILES} files to carry")
    try:
        check_file_set(sorted(shards) + [f.path for f in files])
    except FormatError as exc:
        raise ModelLoadError(f"{root}: {exc}") from None
    return files, skipped


# --- writing ---------------------------------------------------------------------------------------
def check_output_folder(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """``path`` as a folder output: it may not exist, or be an empty folder, or (``overwrite``) a folder.

    Raises:
        OutputError: it is a file, a non-empty folder without ``overwrite``, or its parent is missing.
    """
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path} is a symlink; refusing to replace it with a folder: choose another output path")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path} exists and is not a folder: choose another output path")
        if any(path.iterdir()) and not overwrite:
            raise OutputError(f"{path} is a folder that is not empty; pass --force to replace it")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.absolute().parent} does not exist")
    return path


def _write_new_file(folder: Path, rel: str, data: bytes) -> None:
    target = folder.joinpath(*rel.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardSource(Protocol):
    """Tensors handed over a shard at a time (:func:`write_folder` without the whole model)."""

    def layout(self, shard: ShardInfo) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{name: (dtype, shape)}`` of the shard's tensors."""

    def tensors(self, shard: ShardInfo) -> Iterable[tuple[str, object]]:
        """``(name, tensor)`` for each of the shard's tensors, in any order."""


def write_folder(
    path: str | os.PathLike[str],
    shards: Iterable[ShardInfo],
    tensors: Mapping[str, torch.Tensor] | ShardSource,
    files: Iterable[tuple[str, Callable[[], bytes]]],
    *,
    overwrite: bool = False,
) -> list[str]:
    """Write the shards and the carried files into folder ``path``, all or nothing.

    ``tensors``: every tensor by name (each shard written with ``save_file``), or a
    :class:`ShardSource`, whose tensors are written into their shard one at a time as they come
    (:class:`~weightcodec.formats.safetensors_file.SafetensorsStreamWriter`: the same file, and
    no shard is ever held whole). ``files`` are ``(relative path, function returning its bytes)``.
    Returns the relative paths written.

    Raises:
        OutputError: the destination cannot be written (see :func:`check_output_folder`).
    """
    dest = check_output_folder(path, overwrite=overwrite)
    parent = dest.absolute().parent
    temp = parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    written: list[str] = []
    try:
        temp.mkdir()
        for shard in shards:
            target = temp.joinpath(*shard.file.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(tensors, Mapping):
                write_safetensors_to(target, {name: tensors[name] for name in shard.tensors}, shard.metadata)
            else:
                with SafetensorsStreamWriter(target, tensors.layout(shard), shard.metadata) as writer:
                    for name, tensor in tensors.tensors(shard):
                        writer.write(name, tensor)
                    writer.commit()
            written.append(shard.file)
        for rel, read in files:
            _write_new_file(temp, rel, read())
            written.append(rel)
        _replace_folder(temp, dest)
        temp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return written


def _replace_folder(new: Path, dest: Path) -> None:
    """Rename the finished folder ``new`` to ``dest`` (replacing an empty or, once renamed aside, a full one)."""
    if not dest.exists() or not any(dest.iterdir()):
        os.replace(new, dest)  # rename(2) replaces an empty folder
        return
    old = dest.absolute().parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.wcodec-old"
    os.rename(dest, old)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["FolderFile", "INDEX_SUFFIX", "OTHER_WEIGHT_PATTERNS", "ShardSource", "WeightsLayout", "check_output_folder",
           "read_hf_folder", "write_folder"]
