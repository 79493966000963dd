"""The one table of tensor dtypes a ``.wcodec`` file can hold: name, bytes per element, torch dtype.

The names are the ones written in the header (docs/FORMAT.md section 3.1); every other module
looks dtypes up here. ``quantizable`` marks the dtypes the codec may quantize (IEEE and bfloat16
floats); every other dtype (integers, bool, complex, the float8/float4 formats of quantized
checkpoints) is only ever stored exactly (storage ``raw``), never converted. ``safetensors`` is the
dtype's name in a safetensors header, for reading and writing ``.safetensors`` files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int  # bytes per element of the torch tensor (float4_e2m1fn_x2: one byte holds two values)
    torch: torch.dtype
    safetensors: str | None = None  # the safetensors header name; None: safetensors cannot hold it
    quantizable: bool = False  # may be quantized to int8 / HEVC-coded (else stored exactly)


_TABLE = (
    DType("float64", 8, torch.float64, "F64", True),
    DType("float32", 4, torch.float32, "F32", True),
    DType("float16", 2, torch.float16, "F16", True),
    DType("bfloat16", 2, torch.bfloat16, "BF16", True),
    DType("int64", 8, torch.int64, "I64"),
    DType("int32", 4, torch.int32, "I32"),
    DType("int16", 2, torch.int16, "I16"),
    DType("int8", 1, torch.int8, "I8"),
    DType("uint8", 1, torch.uint8, "U8"),
    DType("bool", 1, torch.bool, "BOOL"),
    # added in format 2.1: stored exactly (raw) only
    DType("uint16", 2, torch.uint16, "U16"),
    DType("uint32", 4, torch.uint32, "U32"),
    DType("uint64", 8, torch.uint64, "U64"),
    DType("float8_e4m3fn", 1, torch.float8_e4m3fn, "F8_E4M3"),
    DType("float8_e4m3fnuz", 1, torch.float8_e4m3fnuz, "F8_E4M3FNUZ"),
    DType("float8_e5m2", 1, torch.float8_e5m2, "F8_E5M2"),
    DType("float8_e5m2fnuz", 1, torch.float8_e5m2fnuz, "F8_E5M2FNUZ"),
    DType("float8_e8m0fnu", 1, torch.float8_e8m0fnu, "F8_E8M0"),
    DType("float4_e2m1fn_x2", 1, torch.float4_e2m1fn_x2, "F4"),
    DType("complex64", 8, torch.complex64, "C64"),
)

#: header name -> DType
DTYPES: dict[str, DType] = {d.name: d for d in _TABLE}
_BY_TORCH: dict[torch.dtype, DType] = {d.torch: d for d in _TABLE}
#: The dtypes of format 2.0; a file holding any other needs a 2.1 reader.
FORMAT_2_0_DTYPES = frozenset(d.name for d in _TABLE[:10])


def itemsize(name: str) -> int:
    return DTYPES[name].itemsize


def from_torch(dtype: torch.dtype) -> DType | None:
    """The entry of a torch dtype, or None if a ``.wcodec`` file cannot hold it."""
    return _BY_TORCH.get(dtype)


def is_quantizable(name: str) -> bool:
    """True for the dtypes the codec may quantize (float64/32/16, bfloat16)."""
    return DTYPES[name].quantizable


__all__ = ["DTYPES", "DType", "FORMAT_2_0_DTYPES", "from_torch", "is_quantizable", "itemsize"]
