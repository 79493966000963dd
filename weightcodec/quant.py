"""Symmetric int8 quantization, per tensor (the paper's) or per output channel.

``scale = max|W| / 127``, zero point 0, ``q = round(W / scale)`` clipped to [-127, 127]; the
error of every element is at most ``scale / 2`` of its own channel (or tensor). A tensor (or
channel) that is all zeros gets scale 1.0 so that nothing divides by zero; its values are 0.
"""

from __future__ import annotations

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

    def dequantize(self) -> np.ndarray:
        return dequantize(self.values, self.scales, axis=self.axis)


def _broadcast_shape(ndim: int, axis: int, n: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = n
    return tuple(shape)


def compute_scales(weights: np.ndarray, granularity: str, *, axis: int = 0) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float32)
    if granularity == "per-tensor":
        peak = np.array([np.max(np.abs(w))] if w.size else [0.0], dtype=np.float32)
    elif granularity == "per-channel":
        if w.ndim < 2:
            raise ConfigError(f"per-channel quantization needs a tensor with >= 2 dims, got shape {w.shape}")
        moved = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
        peak = moved.max(axis=1).astype(np.float32)
    else:
        raise ConfigError(f"granularity must be 'per-tensor' or 'per-channel', got {granularity!r}")
    if not np.all(np.isfinite(peak)):
        raise ConfigError("cannot quantize a tensor that contains NaN or infinity")
    scales = (peak / np.float32(QMAX)).astype(np.float32)
    scales[scales == 0] = 1.0
    return scales


def quantize(weights: np.ndarray, granularity: str = "per-tensor", *, axis: int = 0) -> QuantizedTensor:
    """Quantize ``weights`` to symmetric int8."""
    w = np.asarray(weights, dtype=np.float32)
    scales = compute_scales(w, granularity, axis=axis)
    s = scales.reshape(_broadcast_shape(w.ndim, axis, scales.size)) if granularity == "per-channel" else scales[0]
    q = np.clip(np.rint(w / s), -QMAX, QMAX).astype(np.int8)
    return QuantizedTensor(values=q, scales=scales, granularity=granularity, axis=axis)


def dequantize(values: np.ndarray, scales: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """float32 reconstruction ``values * scale``."""
    v = np.asarray(values).astype(np.float32)
    s = np.asarray(scales, dtype=np.float32)
    v *= s.reshape(()) if s.size == 1 else s.reshape(_broadcast_shape(v.ndim, axis, s.size))
    return v


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


def guard_figure_db(weights: np.ndarray) -> float:
    """The guard's figure: the SQNR (dB) of the *median output channel* under per-tensor int8.

    One scale for the whole tensor is set by its largest channel; a channel whose range is 30x
    smaller gets only a few of the 255 levels. The whole-tensor SQNR hides this (large channels
    dominate its energy), the median channel's SQNR does not. All-zero channels are ignored; a
    tensor with fewer than two dimensions gets its whole-tensor SQNR. ``inf`` when exact.
    """
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim < 2:
        return per_tensor_sqnr_db(w)
    approx = quantize(w, "per-tensor").dequantize()
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    signal = np.sum(rows**2, axis=1)
    noise = np.sum((rows - approx.reshape(rows.shape)) ** 2, axis=1)
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
