"""Chunked quantization and dequantization give the same bits as the whole-tensor formulas."""

import math

import numpy as np
import pytest
import torch

from weightcodec import quant
from weightcodec.plan import TensorPlan
from weightcodec.storage.base import as_numpy, quantize_planned


def _reference_quantize(w: np.ndarray, granularity: str):
    """The whole-tensor formulas (float32 copy of everything), as before chunking."""
    w = np.asarray(w, dtype=np.float32)
    if granularity == "per-tensor":
        peak = np.array([np.max(np.abs(w))], dtype=np.float32)
    else:
        peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1).astype(np.float32)
    scales = (peak / np.float32(127)).astype(np.float32)
    scales[scales == 0] = 1.0
    s = scales.reshape((-1,) + (1,) * (w.ndim - 1)) if granularity == "per-channel" else scales[0]
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8), scales


def _reference_guard(w: np.ndarray) -> float:
    w = np.asarray(w, dtype=np.float32)
    values, scales = _reference_quantize(w, "per-tensor")
    approx = values.astype(np.float32)
    approx *= scales.reshape(())
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    signal = np.sum(rows**2, axis=1)
    noise = np.sum((rows - approx.reshape(rows.shape)) ** 2, axis=1)
    live = signal > 0
    with np.errstate(divide="ignore"):
        return float(np.median(10 * np.log10(signal[live] / noise[live])))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(quant, "CHUNK_ELEMENTS", 1000)  # many chunks, uneven last one


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
@pytest.mark.parametrize("shape", [(37, 91), (8, 3, 5, 5), (1, 4000), (3001, 2)])
def test_chunked_quantization_is_bit_identical(dtype, granularity, shape):
    g = torch.Generator().manual_seed(hash((str(dtype), granularity, shape)) % 2**31)
    t = (torch.randn(*shape, generator=g) * torch.rand(shape[0], *[1] * (len(shape) - 1), generator=g)).to(dtype)
    if shape[0] > 1:
        t[0].zero_()  # an all-zero channel: scale 1.0
    values, scales = _reference_quantize(t.float().numpy(), granularity)
    plan = TensorPlan("w", "int8", str(dtype).removeprefix("torch."), shape, granularity=granularity)
    for q in (quant.quantize(t, granularity), quantize_planned(as_numpy(t), plan)):
        assert q.values.shape == shape and q.values.dtype == np.int8
        assert np.array_equal(q.values, values) and np.array_equal(q.scales, scales)
    assert quant.guard_figure_db(t) == _reference_guard(t.float().numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("per_channel", [False, True])
def test_chunked_dequantization_is_bit_identical(dtype, per_channel):
    rng = np.random.default_rng(3)
    values = rng.integers(-127, 128, size=(53, 7, 3), dtype=np.int8)
    scales = rng.uniform(1e-4, 1.0, size=53 if per_channel else 1).astype(np.float32)
    expected = torch.from_numpy(quant.dequantize(values, scales)).to(dtype)
    got = quant.dequantize_to(values, scales, dtype)
    assert got.dtype == dtype and torch.equal(got, expected)
    # another axis, and a scalar
    along = quant.dequantize_to(values, scales[:3] if per_channel else scales, dtype, axis=2)
    assert torch.equal(along, torch.from_numpy(quant.dequantize(values, scales[:3] if per_channel else scales,
                                                                axis=2)).to(dtype))
    scalar = np.array(5, dtype=np.int8)
    assert torch.equal(quant.dequantize_to(scalar, scales[:1], dtype), torch.tensor(5 * scales[0]).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, np.dtype("float16"),
                                   np.dtype("float32")], ids=str)
@pytest.mark.parametrize("shape", [(300, 5000), (70, 4, 3)])  # several row chunks; a 3-D tensor's flattened columns
def test_row_and_column_scales_dequantize_in_chunks_bit_identically(dtype, shape, monkeypatch):
    """The row-and-column-scale decode (the Transformer policy's matrices) in row chunks gives the
    bits of the whole-tensor float32 reconstruction it replaced (row scale, then column scale)."""
    from weightcodec.colscales import apply_col_scales

    monkeypatch.setattr(quant, "CHUNK_ELEMENTS", 1 << 16)  # many chunks even for these small tensors
    rng = np.random.default_rng(5)
    values = rng.integers(-127, 128, size=shape, dtype=np.int8)
    rows = rng.uniform(1e-4, 1.0, size=shape[0]).astype(np.float32)
    cols = rng.uniform(0.05, 20.0, size=math.prod(shape[1:])).astype(np.float32)
    whole = apply_col_scales(quant.dequantize(values, rows), cols)
    got = quant.dequantize_to(values, rows, dtype, col_scales=cols)
    if isinstance(dtype, np.dtype):
        assert got.dtype == dtype and got.tobytes() == whole.astype(dtype).tobytes()
    else:
        expected = torch.from_numpy(whole).to(dtype)
        assert got.dtype == dtype and torch.equal(got.view(torch.uint8) if dtype == torch.bfloat16 else got,
                                                  expected.view(torch.uint8) if dtype == torch.bfloat16 else expected)
    with pytest.raises(ValueError, match="axis 0"):
        quant.dequantize_to(values, rows[:2], dtype, axis=1, col_scales=cols)


def test_nan_and_inf_are_refused_chunk_by_chunk():
    t = torch.zeros(3000, 2)
    t[2999, 1] = float("nan")
    with pytest.raises(quant.ConfigError, match="NaN"):
        quant.quantize(t)
    t[2999, 1] = float("inf")
    with pytest.raises(quant.ConfigError, match="NaN or infinity"):
        quant.quantize(t, "per-channel")


def _reference_col_scales(w: np.ndarray):
    """Column scales and row-scaled int8 values as first written (whole float32/float64 copies)."""
    m = np.asarray(w, dtype=np.float32).reshape(w.shape[0], -1)
    rms = np.sqrt(np.mean(np.square(m, dtype=np.float64), axis=0))
    live = rms > 0
    cols = np.ones(m.shape[1], dtype=np.float64)
    if np.any(live):
        logs = np.log(rms[live])
        cols[live] = np.exp(logs - logs.mean())
    cols = np.clip(cols, 2.0**-64, 2.0**64).astype(np.float32)
    values, scales = _reference_quantize((m / cols[None, :]).astype(np.float32), "per-channel")
    return values, scales, cols


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(37, 91), (3001, 2), (5, 700)])
def test_chunked_column_and_row_column_scales_are_bit_identical(dtype, shape):
    from weightcodec.colscales import quantize_with_col_scales
    from weightcodec.policy import signal_db

    g = torch.Generator().manual_seed(7)
    t = (torch.randn(*shape, generator=g) * torch.rand(1, shape[1], generator=g) * 3).to(dtype)
    t[:, 0] = 0  # an all-zero column
    w = t.float().numpy()
    values, scales, cols = _reference_col_scales(w)
    name = str(dtype).removeprefix("torch.")
    both = TensorPlan("w", "hevc", name, shape, granularity="per-channel", col_scales=True)
    for q in (quantize_with_col_scales(t), quantize_planned(as_numpy(t), both)):
        assert np.array_equal(q.values, values) and np.array_equal(q.scales, scales)
        assert np.array_equal(q.col_scales, cols)
    # one scale per column (axis 1): the running maximum over row chunks
    s = (np.abs(w).max(axis=0) / np.float32(127)).astype(np.float32)
    s[s == 0] = 1.0
    expected = np.clip(np.rint(w / s[None, :]), -127, 127).astype(np.int8)
    per_column = TensorPlan("w", "hevc", name, shape, granularity="per-channel", axis=1)
    for q in (quant.quantize(t, "per-channel", axis=1), quantize_planned(as_numpy(t), per_column)):
        assert np.array_equal(q.values, expected) and np.array_equal(q.scales, s) and q.axis == 1
    # the signal power of int8 values: exact integer sums, the float64 mean's number
    v = expected.astype(np.float64)
    assert signal_db(expected) == 10 * math.log10(float(np.mean(v * v)))  # the formula before
