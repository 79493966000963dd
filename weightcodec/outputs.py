"""Writing a decoded model in the form it came in, or the one the output path asks for.

=================  ==============================  ==========================================
file holds         ``-o`` without a known suffix   ``-o x.pt`` / ``x.pth``    ``-o x.safetensors``
=================  ==============================  ==========================================
state_dict         ``torch.save`` state_dict       state_dict                 safetensors file
module             ``torch.save`` module [#]_      module [#]_                safetensors file
safetensors        safetensors file                state_dict                 safetensors file
hf-folder          model folder (shards + files)   state_dict (all shards)    one safetensors file
=================  ==============================  ==========================================

.. [#] needs ``trust_pickle``; with ``as_state_dict`` the state_dict.

Every output is all or nothing (:func:`weightcodec.atomic.atomic_write`, a renamed temporary
folder for model folders). safetensors files keep the input's ``__metadata__``; tensors stored once
as aliases are written under each of their names (safetensors has no shared tensors).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import resolve_output
from .errors import OutputError
from .formats.hf_folder import check_output_folder, write_folder
from .formats.safetensors_file import save_safetensors
from .header import Header
from .modelio import save_torch

TORCH_SUFFIXES = (".pt", ".pth")
FORMS = ("torch", "safetensors", "folder")


@dataclass(frozen=True)
class Written:
    """What :func:`save_decoded` wrote."""

    path: Path
    form: str  # "torch" | "safetensors" | "folder"
    what: str  # "state_dict", "nn.Module", "safetensors file", "Hugging Face model folder"
    bytes: int
    files: int = 1

    def describe(self, tensors: int) -> str:
        if self.form == "folder":
            return f"{self.what} ({tensors} tensors, {self.files} files)"
        return f"{self.what} with {tensors} tensors"


def output_form(header: Header, output: str | os.PathLike[str], *, partial: bool = False) -> str:
    """``"torch"``, ``"safetensors"`` or ``"folder"``: what decoding ``header``'s file to ``output``
    writes. ``partial`` (some tensors only, ``decode --only``): a state_dict file, never a folder."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix == ".safetensors":
        return "safetensors"
    if header.model.kind == "hf-folder" and not partial:
        return "folder"
    if header.model.kind == "safetensors" and not partial:
        return "safetensors"
    if str(output).endswith(os.sep) or output.is_dir():
        raise OutputError(f"{output} is a folder: this file holds a {header.model.kind}, which is written as one "
                          "file (e.g. -o model.pt or -o model.safetensors)")
    return "torch"


def check_output(header: Header, output: str | os.PathLike[str], *, overwrite: bool, partial: bool = False) -> str:
    """Fail before decoding when ``output`` cannot be written; returns the form it will get."""
    form = output_form(header, output, partial=partial)
    if form == "folder":
        check_output_folder(output, overwrite=overwrite)
    else:
        resolve_output(output, overwrite=overwrite)
    return form


def save_decoded(result, output: str | os.PathLike[str], *, overwrite: bool = True, partial: bool = False) -> Written:
    """Write ``result`` (a :class:`weightcodec.api.DecodeResult`) to ``output`` (see the module doc;
    ``partial``: ``result`` holds some tensors only, written as a state_dict file)."""
    output = Path(output)
    header = result.header
    form = output_form(header, output, partial=partial)
    if form == "folder":
        files = [(f.path, lambda path=f.path: result.files[path]) for f in header.model.files]
        written = write_folder(output, header.model.shards, result.state_dict, files, overwrite=overwrite)
        size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
        return Written(output, form, "Hugging Face model folder", size, len(written))
    if form == "safetensors":
        size = save_safetensors(output, result.state_dict, header.model.file_metadata, overwrite=overwrite)
        return Written(output, form, "safetensors file", size)
    size = save_torch(result.model, output, overwrite=overwrite)
    return Written(output, form, "nn.Module" if result.module is not None else "state_dict", size)


__all__ = ["FORMS", "Written", "check_output", "output_form", "save_decoded"]
