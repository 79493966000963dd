"""Storage kind ``raw``: the tensor's bytes exactly, zstd-compressed when that is smaller (FORMAT.md 5.1)."""

from __future__ import annotations

import time

import numpy as np

from ..container import maybe_compress
from ..dtypes import DTYPES
from ..errors import CorruptStreamError
from ..header import TensorInfo
from ..plan import TensorPlan
from .base import CodedTensor, DecodeContext, EncodeContext

NAME = "raw"


def encode(array: np.ndarray, plan: TensorPlan, ctx: EncodeContext) -> CodedTensor:
    started = time.perf_counter()
    if plan.stored_dtype is not None:  # float32/float64 stored as float16: round to nearest, ties to even
        array = np.asarray(array).astype(np.dtype(plan.stored_dtype).newbyteorder("<"))
    data, compression = maybe_compress(np.ascontiguousarray(array).tobytes(), ctx.zstd_level)
    return CodedTensor(plan, data, compression, seconds=time.perf_counter() - started)


def decode(entry: TensorInfo, ctx: DecodeContext) -> tuple[object, None]:
    dtype = DTYPES[entry.dtype]
    stored = DTYPES[entry.stored_dtype] if entry.stored_dtype else dtype
    raw = ctx.read(entry.data, f"tensor {entry.name!r}", entry.numel * stored.itemsize)
    if dtype.name == "bool" and raw.translate(None, b"\x00\x01"):
        raise CorruptStreamError(f"tensor {entry.name!r} is bool but holds bytes other than 0 and 1")
    if ctx.numpy:  # numpy has the dtype (the caller checked): little-endian bytes, as FORMAT.md 5.1 stores them
        if stored is not dtype:  # float16 widened exactly to float32/float64
            return np.frombuffer(raw, dtype="<f2").reshape(entry.shape).astype(np.dtype(dtype.name)), None
        return np.frombuffer(raw, dtype=np.dtype(dtype.name).newbyteorder("<")).reshape(entry.shape).copy(), None
    import torch

    if not raw:
        return torch.empty(entry.shape, dtype=dtype.torch), None
    if stored is not dtype:  # float16 widened exactly to float32/float64
        return torch.frombuffer(bytearray(raw), dtype=stored.torch).reshape(entry.shape).to(dtype.torch), None
    # read as bytes, then reinterpret: works for every dtype of the table (float8, uint64, ...)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype.torch).reshape(entry.shape), None
