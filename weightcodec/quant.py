"""int8 quantization, per tensor (the paper's) or per output channel; symmetric or affine.

Symmetric (``symmetric-int8``, the default): ``scale = max|W| / 127``, zero point 0,
``q = round(W / scale)`` clipped to [-127, 127]; the error of every element is at most ``scale / 2``
of its own channel (or tensor). A tensor (or channel) that is all zeros gets scale 1.0 so that
nothing divides by zero; its values are 0.

Affine (``affine-int8``, chosen by the allocation where it pays): the range ``[lo, hi] = [min(W, 0),
max(W, 0)]`` is cut into 254 steps, ``scale = (hi - lo) / 254``, zero point
``z = round(-lo / scale) - 127`` in [-127, 127] (so 0 is exact), ``q = round(W / scale) + z`` clipped to
[-127, 127], restored as ``(q - z) * scale``. It uses all 255 levels whatever the asymmetry of the
weights, and a model that was itself quantized to 255 levels ("narrow-range" uint8, as TensorFlow
Lite's weights are) is restored exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

QMAX = 127


@dataclass(frozen=True)
class QuantizedTensor:
    """int8 values plus their float32 scales (one, or one per index along ``axis``)."""

    values: np.ndarray  # int8, the tensor's shape
    scales: np.ndarray  # float32, shape (1,) per tensor or (shape[axis],) per channel
    granularity: str  # "per-tensor" | "per-channel"
    axis: int = 0
    zero_points: np.ndarray | None = None  # int8, as ``scales``: affine-int8 only
    col_scales: np.ndarray | None = None  # float32, one per matrix column (see weightcodec.colscales)

    @property
    def scheme(self) -> str:
        return "symmetric-int8" if self.zero_points is None else "affine-int8"

    def dequantize(self) -> np.ndarray:
        if self.zero_points is not None:
            return dequantize_affine(self.values, self.scales, self.zero_points, axis=self.axis)
        out = dequantize(self.values, self.scales, axis=self.axis)
        if self.col_scales is not None:
            from .colscales import apply_col_scales

            out = apply_col_scales(out, self.col_scales)
        return out


def _broadcast_shape(ndim: int, axis: int, n: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = n
    return tuple(shape)


#: Elements per chunk of the chunked passes: their float32/float64 temporaries stay at a few MB
#: whatever the tensor's size (no full float32 copy of an fp16 or bf16 tensor).
CHUNK_ELEMENTS = 1 << 20

#: ``rows(i, j)``: rows i..j of the tensor viewed as a matrix (shape[0], -1), as float32.
RowReader = Callable[[int, int], np.ndarray]


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return shape[0], (math.prod(shape[1:]) if len(shape) > 1 else 1)


def row_reader(weights) -> RowReader:
    """A :data:`RowReader` over a numpy array or a torch tensor (any floating dtype, bf16 included)."""
    if isinstance(weights, np.ndarray):
        rows, _ = _matrix_shape(weights.shape)
        matrix = weights.reshape(rows, -1)
        return lambda i, j: np.asarray(matrix[i:j], dtype=np.float32)
    import torch

    if isinstance(weights, torch.Tensor):
        rows, _ = _matrix_shape(tuple(weights.shape))
        matrix = weights.detach().reshape(rows, -1)
        return lambda i, j: matrix[i:j].to("cpu", torch.float32).numpy()
    return row_reader(np.asarray(weights, dtype=np.float32))


def row_chunks(shape: tuple[int, ...], chunk_elements: int | None = None):
    """``(i, j)`` row ranges of the tensor viewed as (shape[0], -1), about ``chunk_elements``
    (default :data:`CHUNK_ELEMENTS`, read at each call) each."""
    rows, cols = _matrix_shape(shape)
    step = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(cols, 1))
    return [(i, min(i + step, rows)) for i in range(0, rows, step)]


def compute_scales(weights, granularity: str, *, axis: int = 0, rows: RowReader | None = None,
                   shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The float32 scale(s) of ``weights`` (one pass over row chunks when ``axis`` is 0)."""
    shape = tuple(shape if shape is not None else np.shape(weights))
    if granularity not in ("per-tensor", "per-channel"):
        raise ConfigError(f"granularity must be 'per-tensor' or 'per-channel', got {granularity!r}")
    if granularity == "per-channel" and len(shape) < 2:
        raise ConfigError(f"per-channel quantization needs a tensor with >= 2 dims, got shape {shape}")
    if axis == 1 and granularity == "per-channel" and len(shape) == 2 and math.prod(shape):
        # one scale per column of a matrix: the running maximum over row chunks (max is exact in any order)
        rows = rows or row_reader(weights)
        peak = np.zeros(shape[1], dtype=np.float32)
        for i, j in row_chunks(shape):
            np.maximum(peak, np.abs(rows(i, j)).max(axis=0), out=peak)
    elif axis != 0 and granularity == "per-channel":
        w = np.asarray(weights, dtype=np.float32)
        moved = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
        peak = moved.max(axis=1).astype(np.float32)
    else:
        rows = rows or row_reader(weights)
        size = math.prod(shape)
        peaks = [np.abs(rows(i, j)).max(axis=1 if granularity == "per-channel" else None)
                 for i, j in row_chunks(shape)] if size else []
        if granularity == "per-channel":
            peak = np.concatenate(peaks).astype(np.float32) if peaks else np.zeros(shape[0], np.float32)
        else:
            peak = np.array([np.max(peaks)] if peaks else [0.0], dtype=np.float32)
    if not np.all(np.isfinite(peak)):
        raise ConfigError("cannot quantize a tensor that contains NaN or infinity")
    scales = (peak / np.float32(QMAX)).astype(np.float32)
    scales[scales == 0] = 1.0
    return scales


def quantize(weights, granularity: str = "per-tensor", *, axis: int = 0, rows: RowReader | None = None,
             shape: tuple[int, ...] | None = None) -> QuantizedTensor:
    """Quantize ``weights`` (numpy array or torch tensor, any floating dtype) to symmetric int8.

    Works in row chunks (a pass for the scales, then the int8 values chunk by chunk): the result is
    the same bit for bit as quantizing the whole float32 tensor at once, without its float32 copy.
    ``rows``/``shape`` give the rows of a tensor numpy cannot hold (bf16 bits; see
    :func:`weightcodec.storage.base.quantize_planned`).
    """
    shape = tuple(shape if shape is not None else np.shape(weights))
    if axis == 1 and len(shape) == 2 and granularity == "per-channel":
        # a matrix with one scale per column, in row chunks (the same values as the whole-tensor path)
        rows = rows or row_reader(weights)
        scales = compute_scales(weights, granularity, axis=1, rows=rows, shape=shape)
        out = np.empty(shape, dtype=np.int8)
        for i, j in row_chunks(shape):
            out[i:j] = np.clip(np.rint(rows(i, j) / scales[None, :]), -QMAX, QMAX)
        return QuantizedTensor(values=out, scales=scales, granularity=granularity, axis=axis)
    if axis != 0:
        w = np.asarray(weights, dtype=np.float32)
        scales = compute_scales(w, granularity, axis=axis)
        s = scales.reshape(_broadcast_shape(w.ndim, axis, scales.size)) if granularity == "per-channel" else scales[0]
        q = np.clip(np.rint(w / s), -QMAX, QMAX).astype(np.int8)
        return QuantizedTensor(values=q, scales=scales, granularity=granularity, axis=axis)
    rows = rows or row_reader(weights)
    scales = compute_scales(weights, granularity, rows=rows, shape=shape)
    n_rows, cols = _matrix_shape(shape)
    out = np.empty((n_rows, cols), dtype=np.int8)
    for i, j in row_chunks(shape):
        s = scales[i:j, None] if granularity == "per-channel" else scales[0]
        out[i:j] = np.clip(np.rint(rows(i, j) / s), -QMAX, QMAX)
    return QuantizedTensor(values=out.reshape(shape), scales=scales, granularity=granularity, axis=axis)


def dequantize(values: np.ndarray, scales: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """float32 reconstruction ``values * scale``."""
    v = np.asarray(values).astype(np.float32)
    s = np.asarray(scales, dtype=np.float32)
    v *= s.reshape(()) if s.size == 1 else s.reshape(_broadcast_shape(v.ndim, axis, s.size))
    return v


def dequantize_to(values: np.ndarray, scales: np.ndarray, dtype, *, axis: int = 0,
                  col_scales: np.ndarray | None = None):
    """``values * scale`` (then ``* column scale`` with ``col_scales``, axis 0 only) as a tensor of
    ``dtype``, computed in float32 row chunks: a numpy array for a numpy dtype, else a torch tensor.

    Bit-identical to ``torch.from_numpy(dequantize(values, scales, axis=axis)).to(dtype)`` (with
    the column scales applied as :func:`weightcodec.colscales.apply_col_scales` does: the same two
    float32 multiplications per element, in the same order), without the full float32 copy (for an
    fp16 tensor that copy is twice the output, and converting it whole is ~2.5x slower than in
    chunks). numpy and torch round float32 to float16 alike (to nearest, ties to even), so both
    kinds of output hold the same bits.
    """
    values = np.asarray(values)
    s = np.asarray(scales, dtype=np.float32)
    cols = None
    if col_scales is not None:
        if axis != 0:
            raise ValueError("column scales go with row scales on axis 0")
        cols = np.asarray(col_scales, dtype=np.float32)
    if isinstance(dtype, np.dtype):
        out = np.empty(values.shape, dtype=dtype)
        target = np.moveaxis(out, axis, 0) if values.ndim else out.reshape(1)
        convert = _identity
    else:
        import torch

        out = torch.empty(values.shape, dtype=dtype)
        target = torch.movedim(out, axis, 0) if values.ndim else out.reshape(1)
        convert = torch.from_numpy
    if values.size == 0:
        return out
    moved = np.moveaxis(values, axis, 0) if values.ndim else values.reshape(1)
    per_channel = s.size > 1
    step = max(1, CHUNK_ELEMENTS // max(1, values.size // moved.shape[0]))
    for i in range(0, moved.shape[0], step):
        chunk = moved[i:i + step].astype(np.float32)
        chunk *= s[i:i + step].reshape(_broadcast_shape(chunk.ndim, 0, chunk.shape[0])) if per_channel \
            else s.reshape(())
        if cols is not None:
            rows_of_chunk = chunk.reshape(chunk.shape[0], -1)  # a view: chunk is a fresh float32 array
            rows_of_chunk *= cols[None, :]
        target[i:i + step] = convert(chunk)
    return out


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (``inf`` when exact)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(approximation, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def per_tensor_sqnr_db(weights: np.ndarray) -> float:
    """SQNR of the whole tensor under per-tensor quantization (dominated by its largest channels)."""
    w = np.asarray(weights, dtype=np.float32)
    return sqnr_db(w, quantize(w, "per-tensor").dequantize())


def guard_figure_db(weights, *, rows: RowReader | None = None, shape: tuple[int, ...] | None = None) -> float:
    """The guard's figure: the SQNR (dB) of the *median output channel* under per-tensor int8.

    One scale for the whole tensor is set by its largest channel; a channel whose range is 30x
    smaller gets only a few of the 255 levels. The whole-tensor SQNR hides this (large channels
    dominate its energy), the median channel's SQNR does not. All-zero channels are ignored; a
    tensor with fewer than two dimensions gets its whole-tensor SQNR. ``inf`` when exact.

    ``weights`` is a numpy array or a torch tensor of any floating dtype; it is read in row chunks
    (float64 temporaries of a chunk, never of the whole tensor).
    """
    shape = tuple(shape if shape is not None else np.shape(weights))
    rows = rows or row_reader(weights)
    if len(shape) < 2:
        return per_tensor_sqnr_db(rows(0, _matrix_shape(shape)[0]).reshape(shape))
    scale = compute_scales(weights, "per-tensor", rows=rows, shape=shape)
    signal, noise = [], []
    for i, j in row_chunks(shape):
        w = rows(i, j)
        approx = np.clip(np.rint(w / scale[0]), -QMAX, QMAX).astype(np.int8).astype(np.float32)
        approx *= scale.reshape(())
        exact = w.astype(np.float64)
        signal.append(np.sum(exact**2, axis=1))
        noise.append(np.sum((exact - approx) ** 2, axis=1))
    signal, noise = np.concatenate(signal), np.concatenate(noise)
    live = signal > 0
    if not np.any(live):
        return float("inf")
    with np.errstate(divide="ignore"):
        per_channel = 10.0 * np.log10(signal[live] / noise[live])
    return float(np.median(per_channel))


def choose_granularity(weights: np.ndarray, requested: str, *, threshold_db: float) -> tuple[str, float]:
    """Resolve ``auto``: per-tensor unless the guard figure is below ``threshold_db``.

    Returns the granularity and the guard figure (see :func:`guard_figure_db`). Tensors with
    fewer than two dimensions are always per-tensor.
    """
    figure = guard_figure_db(weights)
    if requested == "auto":
        chosen = "per-channel" if (np.ndim(weights) >= 2 and figure < threshold_db) else "per-tensor"
    else:
        chosen = requested
    if chosen == "per-channel" and np.ndim(weights) < 2:
        chosen = "per-tensor"
    return chosen, figure


# --- affine int8 ------------------------------------------------------------------------------
SCHEMES = ("symmetric-int8", "affine-int8")
#: Steps of the affine range: 255 levels, -127..127, like the symmetric scheme's.
AFFINE_STEPS = 2 * QMAX


def compute_affine(weights: np.ndarray, granularity: str, *, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The float32 scale(s) and int8 zero point(s) of the affine scheme (see the module docstring)."""
    w = np.asarray(weights, dtype=np.float32)
    if granularity == "per-tensor":
        flat = w.reshape(1, -1)
    elif granularity == "per-channel":
        if w.ndim < 2:
            raise ConfigError(f"per-channel quantization needs a tensor with >= 2 dims, got shape {w.shape}")
        flat = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    else:
        raise ConfigError(f"granularity must be 'per-tensor' or 'per-channel', got {granularity!r}")
    if flat.size == 0:
        return np.ones(flat.shape[0], np.float32), np.zeros(flat.shape[0], np.int8)
    if not np.all(np.isfinite(flat)):
        raise ConfigError("cannot quantize a tensor that contains NaN or infinity")
    lo = np.minimum(flat.min(axis=1).astype(np.float64), 0.0)
    hi = np.maximum(flat.max(axis=1).astype(np.float64), 0.0)
    scales = ((hi - lo) / AFFINE_STEPS).astype(np.float32)
    scales[scales == 0] = 1.0
    zero_points = np.clip(np.rint(-lo / scales.astype(np.float64)) - QMAX, -QMAX, QMAX).astype(np.int8)
    return scales, zero_points


def quantize_affine(weights: np.ndarray, granularity: str = "per-tensor", *, axis: int = 0) -> QuantizedTensor:
    """Quantize ``weights`` to affine int8 (values and zero points in [-127, 127])."""
    w = np.asarray(weights, dtype=np.float32)
    scales, zero_points = compute_affine(w, granularity, axis=axis)
    if granularity == "per-channel":
        view = _broadcast_shape(w.ndim, axis, scales.size)
        s, z = scales.reshape(view), zero_points.reshape(view).astype(np.float32)
    else:
        s, z = scales[0], np.float32(zero_points[0])
    q = np.clip(np.rint(w / s) + z, -QMAX, QMAX).astype(np.int8)
    return QuantizedTensor(values=q, scales=scales, granularity=granularity, axis=axis, zero_points=zero_points)


def dequantize_affine(values: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """float32 reconstruction ``(values - zero_point) * scale`` (the difference is exact in float32)."""
    v = np.asarray(values).astype(np.float32)
    s = np.asarray(scales, dtype=np.float32)
    z = np.asarray(zero_points).astype(np.float32)
    if s.size == 1:
        v -= z.reshape(())
        v *= s.reshape(())
    else:
        view = _broadcast_shape(v.ndim, axis, s.size)
        v -= z.reshape(view)
        v *= s.reshape(view)
    return v


def quantize_scheme(weights: np.ndarray, granularity: str, scheme: str = "symmetric-int8", *,
                    axis: int = 0) -> QuantizedTensor:
    """Quantize with ``scheme`` (``symmetric-int8`` or ``affine-int8``)."""
    if scheme == "affine-int8":
        return quantize_affine(weights, granularity, axis=axis)
    if scheme != "symmetric-int8":
        raise ConfigError(f"quantization scheme must be one of {SCHEMES}, got {scheme!r}")
    return quantize(weights, granularity, axis=axis)
