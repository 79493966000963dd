"""The one table of tensor dtypes a ``.wcodec`` file can hold: name, bytes per element, torch dtype.

The names are the ones written in the header (docs/FORMAT.md section 3.1); every other module
looks dtypes up here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int
    torch: torch.dtype


_TABLE = (
    DType("float64", 8, torch.float64),
    DType("float32", 4, torch.float32),
    DType("float16", 2, torch.float16),
    DType("bfloat16", 2, torch.bfloat16),
    DType("int64", 8, torch.int64),
    DType("int32", 4, torch.int32),
    DType("int16", 2, torch.int16),
    DType("int8", 1, torch.int8),
    DType("uint8", 1, torch.uint8),
    DType("bool", 1, torch.bool),
)

#: header name -> DType
DTYPES: dict[str, DType] = {d.name: d for d in _TABLE}
_BY_TORCH: dict[torch.dtype, DType] = {d.torch: d for d in _TABLE}


def itemsize(name: str) -> int:
    return DTYPES[name].itemsize


def from_torch(dtype: torch.dtype) -> DType | None:
    """The entry of a torch dtype, or None if a ``.wcodec`` file cannot hold it."""
    return _BY_TORCH.get(dtype)


__all__ = ["DTYPES", "DType", "from_torch", "itemsize"]
