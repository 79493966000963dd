"""Model file formats besides ``torch.save``: ``.safetensors`` files and Hugging Face model folders.

:mod:`.safetensors_file` reads and writes single files through the ``safetensors`` library;
:mod:`.hf_folder` reads a model folder (safetensors shards plus the files carried beside them) and
writes one back all or nothing. :mod:`weightcodec.modelio` dispatches to them; the container side
(shards, carried files) is specified in docs/FORMAT.md section 3.4.
"""

from .hf_folder import FolderFile, WeightsLayout, check_output_folder, read_hf_folder, write_folder
from .safetensors_file import looks_like_safetensors, read_safetensors, save_safetensors

__all__ = ["FolderFile", "WeightsLayout", "check_output_folder", "looks_like_safetensors", "read_hf_folder",
           "read_safetensors", "save_safetensors", "write_folder"]
