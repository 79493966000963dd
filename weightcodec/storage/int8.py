"""Storage kind ``int8``: symmetric int8 values (zstd when smaller) plus float32 scales (FORMAT.md 5.2)."""

from __future__ import annotations

import time

import numpy as np

from ..container import maybe_compress
from ..dtypes import DTYPES
from ..header import TensorInfo
from ..plan import TensorPlan
from ..errors import CorruptStreamError
from ..quant import QMAX, QuantizedTensor, dequantize_affine, dequantize_to
from .base import (CodedTensor, DecodeContext, EncodeContext, col_scales_bytes, quantize_planned, read_scales,
                   read_zero_points, scales_bytes, zero_points_bytes)

NAME = "int8"


def encode(array: np.ndarray, plan: TensorPlan, ctx: EncodeContext) -> CodedTensor:
    started = time.perf_counter()
    q = quantize_planned(array, plan)
    data, compression = maybe_compress(q.values.tobytes(), ctx.zstd_level)
    return CodedTensor(plan, data, compression, scales=scales_bytes(q), zero_points=zero_points_bytes(q), axis=q.axis,
                       col_scales=col_scales_bytes(q),
                       seconds=time.perf_counter() - started)


def restore(entry: TensorInfo, values: np.ndarray, scales: np.ndarray,
            zero_points: np.ndarray | None = None,
            col_scales: np.ndarray | None = None, *, numpy: bool = False):
    """Dequantize int8 ``values`` (already in the tensor's shape) to the entry's dtype: a torch
    tensor, or with ``numpy`` a numpy array (the same values)."""
    q = QuantizedTensor(values, scales, entry.quant.granularity, entry.quant.axis, zero_points, col_scales=col_scales)
    if zero_points is not None:
        # affine: (q - zero point) x scale, in float32 (FORMAT.md 5.2)
        weights = dequantize_affine(values, q.scales, zero_points, axis=q.axis)
        if numpy:
            return weights.astype(np.dtype(entry.dtype), copy=False), q
        import torch

        return torch.from_numpy(weights).to(DTYPES[entry.dtype].torch), q
    # column scales: row scale then column scale, in float32 (FORMAT.md 5.2), a row chunk at a time
    dtype = np.dtype(entry.dtype) if numpy else DTYPES[entry.dtype].torch
    return dequantize_to(values, q.scales, dtype, axis=q.axis, col_scales=col_scales), q


def decode(entry: TensorInfo, ctx: DecodeContext):
    scales = read_scales(entry, ctx)
    zero_points = read_zero_points(entry, ctx)
    col_scales = read_scales(entry, ctx, columns=True)
    raw = ctx.read(entry.data, f"tensor {entry.name!r}", entry.numel)
    values = np.frombuffer(raw, dtype=np.int8).reshape(entry.shape)
    if values.size and values.min() < -QMAX:
        raise CorruptStreamError(f"tensor {entry.name!r} holds int8 value -128, outside the range [-127, 127]")
    return restore(entry, values, scales, zero_points, col_scales, numpy=ctx.numpy)
