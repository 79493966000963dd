"""weightcodec.measure: the measurements every tool shares, on values whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightcodec.errors import ConfigError
from weightcodec.measure import (
    human_bytes,
    int8_error,
    machine_info,
    rate_change_at_equal_error,
    tensor_error,
)


def test_tensor_error_known_values():
    ref = np.array([[0, 10, -20, 127]], dtype=np.int8)
    got = np.array([0, 13, -24, 127], dtype=np.int16)  # another shape and dtype: compared by value
    e = tensor_error(got, ref)
    assert e.max_abs == 4.0 and e.count == 4 and e.sse == 25.0
    assert e.rmse == pytest.approx(math.sqrt(25 / 4))
    assert tensor_error(ref, ref).rmse == 0.0
    with pytest.raises(ConfigError):
        tensor_error(np.zeros(3), ref)


def test_int8_error_pools_over_all_values_not_over_layer_rmses():
    reference = {"a": np.zeros(100, np.int8), "b": np.zeros(4, np.int8)}
    decoded = {"a": np.ones(100), "b": np.full(4, 5.0)}
    e = int8_error(decoded, reference)
    assert list(e.layers) == ["a", "b"]
    assert e.layers["a"].rmse == 1.0 and e.layers["b"].rmse == 5.0
    assert e.rmse == pytest.approx(math.sqrt((100 * 1 + 4 * 25) / 104))  # not the mean of 1 and 5
    assert e.max_abs == 5.0 and e.count == 104
    assert int8_error(decoded, reference, ["b"]).rmse == 5.0
    with pytest.raises(ConfigError):
        int8_error(decoded, reference, ["c"])


def test_rate_change_at_equal_error():
    ref = [(e, 1000.0 / e) for e in (1.0, 2.0, 4.0, 8.0)]
    smaller = [(e, 0.9 * b) for e, b in ref]
    cmp = rate_change_at_equal_error(ref, smaller)
    assert cmp.bytes_change_pct == pytest.approx(-10.0)
    assert cmp.error_range == pytest.approx((1.0, 8.0))
    for axis, interpolation in (("linear", "linear"), ("linear", "pchip"), ("log", "pchip")):
        other = rate_change_at_equal_error(ref, smaller, error_axis=axis, interpolation=interpolation, samples=2001)
        assert other.bytes_change_pct == pytest.approx(-10.0)  # a constant factor on every axis
    # a peer twice as large on half of the range: between 0 % and +100 %, and symmetric when swapped
    bigger = [(1.0, 2000.0), (2.0, 500.0), (4.0, 250.0), (8.0, 125.0)]
    up = rate_change_at_equal_error(ref, bigger).bytes_change_pct
    down = rate_change_at_equal_error(bigger, ref).bytes_change_pct
    assert 0 < up < 100 and (1 + up / 100) * (1 + down / 100) == pytest.approx(1.0)
    assert rate_change_at_equal_error(ref, [(100.0, 1.0), (200.0, 0.5)]) is None  # no overlap
    assert rate_change_at_equal_error(ref, [(2.0, 5.0)]) is None  # one point
    assert rate_change_at_equal_error(ref, smaller[:2], interpolation="pchip") is None  # pchip needs three
    with pytest.raises(ConfigError):
        rate_change_at_equal_error(ref, smaller, error_axis="psnr")


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.00 kB"), (1234, "1.23 kB"),
                                          (4_560_000, "4.56 MB"), (7_890_000_000, "7.89 GB"),
                                          (12_000_000_000_000, "12000.00 GB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


def test_machine_info_records_the_versions_the_numbers_depend_on():
    info = machine_info()
    assert info["logical_cores"] >= 1 and info["torch_threads"] >= 1
    assert {"weightcodec", "torch", "numpy", "av", "zstandard"} <= set(info["versions"])
    assert info["versions"]["numpy"] == np.__version__


@pytest.mark.parametrize("chunk", [None, 7, 1000])
def test_tensor_error_integer_fast_path_matches_float64(chunk, monkeypatch):
    """Exact whatever the chunks the integer path compares at a time (the last one partial)."""
    if chunk:
        monkeypatch.setattr("weightcodec.measure._ERROR_CHUNK", chunk)
    rng = np.random.default_rng(0)
    ref = rng.integers(-127, 128, (300, 200)).astype(np.int8)
    got = np.clip(ref.astype(np.int16) + rng.integers(-9, 10, ref.shape), -127, 127).astype(np.int8)
    fast = tensor_error(got, ref)
    slow = tensor_error(got.astype(np.float64), ref.astype(np.float64))
    assert fast == slow and fast.max_abs == 9 and fast.sse == float(((got.astype(np.int64) - ref) ** 2).sum())
    extreme = tensor_error(np.full(4, 127, np.int8), np.full(4, -127, np.int8))  # no int8 overflow
    assert extreme.max_abs == 254 and extreme.rmse == 254.0
