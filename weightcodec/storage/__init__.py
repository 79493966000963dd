"""Storage kinds: how one tensor is coded into payload segments, and back. One module per kind.

``raw`` (exact bytes), ``int8`` (symmetric int8 + scales) and ``hevc`` (int8 tiled into HEVC
frames). Each module has ``encode(tensor, plan, ctx) -> CodedTensor`` and
``decode(entry, ctx) -> (tensor, QuantizedTensor | None)``; :data:`CODERS` maps the header's
``storage`` name to its module. A new storage kind is a new module here plus one line in
:data:`CODERS`, a name in ``header.STORAGE_KINDS`` and a section in docs/FORMAT.md.
"""

from . import hevc, int8, raw
from .base import CodedTensor, DecodeContext, EncodeContext

CODERS = {module.NAME: module for module in (raw, int8, hevc)}

__all__ = ["CODERS", "CodedTensor", "DecodeContext", "EncodeContext"]
