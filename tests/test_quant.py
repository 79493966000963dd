import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from weightcodec.config import QuantSettings
from weightcodec.errors import ConfigError
from weightcodec.quant import choose_granularity, dequantize, per_tensor_sqnr_db, quantize

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 40)), elements=finite))
def test_per_tensor_error_at_most_half_scale(w):
    q = quantize(w, "per-tensor")
    assert q.values.dtype == np.int8 and q.scales.shape == (1,)
    assert np.abs(q.values).max() <= 127
    err = np.abs(q.dequantize() - w)
    assert np.all(err <= q.scales[0] / 2 * (1 + 1e-5) + 1e-30)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 10), st.integers(1, 6), st.integers(1, 3)), elements=finite))
def test_per_channel_error_at_most_each_channels_half_scale(w):
    q = quantize(w, "per-channel")
    assert q.scales.shape == (w.shape[0],)
    err = np.abs(q.dequantize() - w)
    bound = (q.scales / 2 * (1 + 1e-5)).reshape(-1, 1, 1)
    assert np.all(err <= bound + 1e-30)


def test_scale_is_max_abs_over_127_and_extremes_map_to_127():
    w = np.array([[0.5, -1.27], [0.0, 0.3]], dtype=np.float32)
    q = quantize(w)
    assert q.scales[0] == pytest.approx(1.27 / 127)
    assert q.values[0, 1] == -127


def test_zero_tensor_and_zero_channel_do_not_divide_by_zero():
    w = np.zeros((3, 4), np.float32)
    w[1] = 2.0
    for granularity in ("per-tensor", "per-channel"):
        q = quantize(w, granularity)
        assert np.all(np.isfinite(q.scales)) and np.array_equal(q.dequantize(), w)


def test_non_finite_weights_are_rejected():
    with pytest.raises(ConfigError, match="NaN"):
        quantize(np.array([[1.0, np.nan]], np.float32))


def test_dequantize_matches_manual_formula():
    values = np.array([[1, -2], [3, 4]], np.int8)
    scales = np.array([0.5, 2.0], np.float32)
    assert np.array_equal(dequantize(values, scales), [[0.5, -1.0], [6.0, 8.0]])


def test_guard_flags_a_layer_with_100x_channel_spread():
    rng = np.random.default_rng(0)
    ranges = np.geomspace(0.01, 1.0, 64).astype(np.float32)  # 100x spread of channel ranges
    w = (rng.uniform(-1, 1, (64, 1, 3, 3)) * ranges.reshape(-1, 1, 1, 1)).astype(np.float32)
    defaults = QuantSettings()
    for threshold in (defaults.guard_db, defaults.matrix_guard_db):  # as a conv, and as a 2-D matrix
        chosen, figure = choose_granularity(w, "auto", threshold_db=threshold)
        assert chosen == "per-channel" and figure < threshold
        chosen, _ = choose_granularity(w.reshape(64, 9), "auto", threshold_db=threshold)
        assert chosen == "per-channel"
    # per-channel really is much better for it
    per_channel = quantize(w, "per-channel").dequantize()
    assert 10 * np.log10(np.sum(w**2) / np.sum((w - per_channel) ** 2)) > figure + 6


def test_guard_leaves_a_well_conditioned_layer_alone():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.05, (256, 512)).astype(np.float32)
    defaults = QuantSettings()
    for weights, threshold in ((w, defaults.matrix_guard_db), (w.reshape(256, 512, 1, 1), defaults.guard_db)):
        chosen, figure = choose_granularity(weights, "auto", threshold_db=threshold)
        assert chosen == "per-tensor" and figure > threshold


def test_explicit_granularity_is_kept_and_1d_is_always_per_tensor():
    w = np.random.default_rng(2).normal(size=(8, 8)).astype(np.float32)
    assert choose_granularity(w, "per-channel", threshold_db=30.0)[0] == "per-channel"
    assert choose_granularity(w[0], "per-channel", threshold_db=30.0)[0] == "per-tensor"
    assert per_tensor_sqnr_db(np.zeros(4, np.float32)) == float("inf")
