"""The one table of tensor dtypes a ``.wcodec`` file can hold: name, bytes per element, torch dtype.

The names are the ones written in the header (docs/FORMAT.md section 3.1); every other module
looks dtypes up here. ``quantizable`` marks the dtypes the codec may quantize (IEEE and bfloat16
floats); every other dtype (integers, bool, complex, the float8/float4 formats of quantized
checkpoints) is only ever stored exactly (storage ``raw``), never converted. ``safetensors`` is the
dtype's name in a safetensors header, for reading and writing ``.safetensors`` files.

Importing this module does not import torch (``DType.torch`` does, on first use), so that the
paths that never meet a torch tensor (a ``.safetensors`` file in, a ``.safetensors`` file out)
start without it. A torch dtype and a numpy dtype have the same name as their entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int  # bytes per element of the torch tensor (float4_e2m1fn_x2: one byte holds two values)
    safetensors: str | None = None  # the safetensors header name; None: safetensors cannot hold it
    quantizable: bool = False  # may be quantized to int8 / HEVC-coded (else stored exactly)
    numpy: bool = False  # numpy has this dtype (under the same name)

    @property
    def torch(self) -> torch.dtype:
        """The torch dtype (``torch.<name>``); imports torch."""
        import torch

        return getattr(torch, self.name)


_TABLE = (
    DType("float64", 8, "F64", True, numpy=True),
    DType("float32", 4, "F32", True, numpy=True),
    DType("float16", 2, "F16", True, numpy=True),
    DType("bfloat16", 2, "BF16", True),
    DType("int64", 8, "I64", numpy=True),
    DType("int32", 4, "I32", numpy=True),
    DType("int16", 2, "I16", numpy=True),
    DType("int8", 1, "I8", numpy=True),
    DType("uint8", 1, "U8", numpy=True),
    DType("bool", 1, "BOOL", numpy=True),
    # added in format 2.1: stored exactly (raw) only
    DType("uint16", 2, "U16", numpy=True),
    DType("uint32", 4, "U32", numpy=True),
    DType("uint64", 8, "U64", numpy=True),
    DType("float8_e4m3fn", 1, "F8_E4M3"),
    DType("float8_e4m3fnuz", 1, "F8_E4M3FNUZ"),
    DType("float8_e5m2", 1, "F8_E5M2"),
    DType("float8_e5m2fnuz", 1, "F8_E5M2FNUZ"),
    DType("float8_e8m0fnu", 1, "F8_E8M0"),
    DType("float4_e2m1fn_x2", 1, "F4"),
    DType("complex64", 8, "C64", numpy=True),
)

#: header name -> DType
DTYPES: dict[str, DType] = {d.name: d for d in _TABLE}
#: The dtypes of format 2.0; a file holding any other needs a 2.1 reader.
FORMAT_2_0_DTYPES = frozenset(d.name for d in _TABLE[:10])


def itemsize(name: str) -> int:
    return DTYPES[name].itemsize


def from_torch(dtype: torch.dtype) -> DType | None:
    """The entry of a torch dtype, or None if a ``.wcodec`` file cannot hold it."""
    name = str(dtype)
    return DTYPES.get(name[6:]) if name.startswith("torch.") else None


def from_numpy(dtype: Any) -> DType | None:
    """The entry of a numpy dtype (native or little-endian byte order), or None if a ``.wcodec``
    file cannot hold it."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not np.little_endian):
        return None
    entry = DTYPES.get(dtype.name)
    return entry if entry is not None and entry.numpy else None


def dtype_of(tensor: Any) -> DType | None:
    """The entry of a torch tensor's or numpy array's dtype (None: a ``.wcodec`` file cannot hold it)."""
    import numpy as np

    if isinstance(tensor, np.ndarray):
        return from_numpy(tensor.dtype)
    return from_torch(tensor.dtype)


def is_quantizable(name: str) -> bool:
    """True for the dtypes the codec may quantize (float64/32/16, bfloat16)."""
    return DTYPES[name].quantizable


__all__ = ["DTYPES", "FORMAT_2_0_DTYPES", "DType", "dtype_of", "from_numpy", "from_torch", "is_quantizable", "itemsize"]
