"""What every storage kind shares: the coded form of a tensor and the contexts coders run in.

A coder's ``encode`` is a pure function of one tensor (as a numpy array, see
:func:`as_numpy`) and its plan: it returns a :class:`CodedTensor` (the bytes of its segments and the
header fields that describe them) and never touches the container or torch, so tensors can be
coded in any order or worker process and placed in the payload afterwards. Its ``decode`` gets the header entry and a ``read`` function that returns a
segment's checksum-verified, decompressed bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..backends import FrameCodec
from ..header import HevcInfo, Segment
from ..plan import TensorPlan
from ..quant import QuantizedTensor, quantize, quantize_scheme

#: ``read(segment, what, expected_size, max_size=None)``: the segment's verified, decompressed bytes.
SegmentReader = Callable[..., bytes]


@dataclass(frozen=True)
class EncodeContext:
    backend: FrameCodec | None  # None when nothing is HEVC-coded
    zstd_level: int | None  # None: never compress
    verify: bool = False
    threads: int | None = None  # x265 thread-pool size per encode (None: x265's default, all cores)
    verifier: FrameCodec | None = None  # decodes the streams for ``verify`` (None: ``backend``)
    release_input: bool = False  # give a memory-mapped input tensor's pages back once coded (weightcodec.pages)


@dataclass(frozen=True)
class DecodeContext:
    read: SegmentReader
    backend: FrameCodec | None
    numpy: bool = False  # decoders return numpy arrays (every dtype involved is one numpy has), not torch tensors


@dataclass(frozen=True)
class CodedTensor:
    """One tensor ready to be placed in the payload (scales first, then data, as the writer orders them)."""

    plan: TensorPlan
    data: bytes
    compression: str = "none"  # of ``data``
    scales: bytes | None = None  # float32 little-endian, quantized tensors only
    zero_points: bytes | None = None  # int8, affine-int8 tensors only
    axis: int = 0
    col_scales: bytes | None = None  # float32 little-endian, with plan.col_scales only
    hevc: HevcInfo | None = None
    # measured while coding, for the report
    int8_rmse: float | None = None
    int8_max_error: int | None = None
    seconds: float = 0.0


def as_numpy(tensor) -> np.ndarray:
    """The tensor's elements (a torch tensor or a numpy array) as a C-contiguous numpy array without
    changing a bit.

    numpy has no bfloat16, float8 or float4: such a tensor comes back as its bit patterns
    (bfloat16 as uint16, the one-byte formats as uint8; its dtype is known from the plan).
    Shares memory with ``tensor`` where torch allows. A numpy array is returned as it is when
    C-contiguous (torch is not imported for it).
    """
    if isinstance(tensor, np.ndarray):
        return np.ascontiguousarray(tensor)
    import torch

    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    if tensor.dtype.itemsize == 1 and tensor.dtype not in (torch.uint8, torch.int8, torch.bool):
        return tensor.view(torch.uint8).numpy()  # float8 / float4 formats: their bit patterns
    return tensor.numpy()


def to_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    """The values of an :func:`as_numpy` array as float32 (exact for every floating dtype but float64)."""
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(array, dtype=np.float32)


def quantize_planned(array: np.ndarray, plan: TensorPlan) -> QuantizedTensor:
    """The tensor's int8 values and scales at the plan's granularity, scheme and column scales
    (symmetric, with row, column or row-and-column scales: in row chunks, no float32 copy of the
    whole tensor; affine and the other axes of conv kernels: on the float32 tensor)."""
    if plan.scheme != "symmetric-int8":
        return quantize_scheme(to_float32(array, plan.dtype), plan.granularity, plan.scheme)
    shape = tuple(array.shape)
    matrix = array.reshape(shape[0] if shape else 1, -1)

    def rows(i: int, j: int) -> np.ndarray:
        return to_float32(matrix[i:j], plan.dtype)

    if plan.col_scales:
        from ..colscales import quantize_with_col_scales

        return quantize_with_col_scales(None, rows=rows, shape=shape)
    axis = plan.axis if plan.granularity == "per-channel" else 0
    if axis == 1 and len(shape) == 2:  # one scale per column of a matrix: row chunks too
        return quantize(None, plan.granularity, axis=1, shape=shape, rows=rows)
    if axis != 0:
        return quantize(to_float32(array, plan.dtype), plan.granularity, axis=axis)
    return quantize(array, plan.granularity, shape=shape, rows=rows)


def scales_bytes(q: QuantizedTensor) -> bytes:
    return q.scales.astype("<f4").tobytes()


def col_scales_bytes(q: QuantizedTensor) -> bytes | None:
    return None if q.col_scales is None else q.col_scales.astype("<f4").tobytes()


def zero_points_bytes(q: QuantizedTensor) -> bytes | None:
    return None if q.zero_points is None else q.zero_points.astype(np.int8).tobytes()


def read_zero_points(entry, ctx: DecodeContext) -> np.ndarray | None:
    """The int8 zero points of an affine-int8 tensor (None for symmetric-int8), each in [-127, 127]."""
    from ..errors import CorruptStreamError

    if entry.quant.zero_points is None:
        return None
    raw = ctx.read(entry.quant.zero_points, f"tensor {entry.name!r} zero points", None)
    zero_points = np.frombuffer(raw, dtype=np.int8)
    if zero_points.size and zero_points.min() < -127:
        raise CorruptStreamError(f"tensor {entry.name!r} has zero point -128, outside [-127, 127]")
    return zero_points.copy()


def read_scales(entry, ctx: DecodeContext, *, columns: bool = False) -> np.ndarray | None:
    """The entry's (row) scales, or with ``columns`` its column scales (None when it has none)."""
    from ..errors import CorruptStreamError

    what = f"tensor {entry.name!r}"
    segment = entry.quant.col_scales if columns else entry.quant.scales
    if segment is None:
        return None
    label = "column scales" if columns else "scales"
    scales = np.frombuffer(ctx.read(segment, f"{what} {label}", None), dtype="<f4")
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise CorruptStreamError(f"{what} has quantization {label} that are not finite positive numbers")
    return scales.astype(np.float32)


__all__ = ["CodedTensor", "DecodeContext", "EncodeContext", "SegmentReader", "as_numpy", "col_scales_bytes",
           "quantize_planned", "read_scales", "read_zero_points", "scales_bytes", "to_float32", "zero_points_bytes"]
