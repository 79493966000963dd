"""Per-layer QPs under a size budget (weightcodec.allocate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import smooth_matrix
from weightcodec import EncodeConfig, HevcSettings, decode, encode
from weightcodec.allocate import allocate_qps, choose_qps, encode_to_size, QpOption
from weightcodec.errors import ConfigError

QPS = (22, 28, 34, 40)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(3)
    return {
        "smooth.weight": torch.from_numpy(smooth_matrix(128, 256, seed=1)),
        "noisy.weight": torch.from_numpy(rng.normal(0, 0.02, (96, 192)).astype(np.float32)),
        "noisy.bias": torch.zeros(96),
    }


@pytest.fixture(scope="module")
def allocation(model):
    uniform = encode(model, config=EncodeConfig(hevc=HevcSettings(qp=28)))
    return uniform, allocate_qps(model, target_bytes=uniform.report.total_bytes, candidate_qps=QPS)


def test_options_cover_every_coded_layer_and_fall_in_size_as_qp_rises(allocation):
    _, result = allocation
    assert set(result.options) == {"smooth.weight", "noisy.weight"}
    for options in result.options.values():
        assert [o.qp for o in options] == list(QPS)
        sizes = [o.bytes for o in options]
        errors = [o.distortion for o in options]
        assert sizes == sorted(sizes, reverse=True) and errors == sorted(errors)
        assert 0 < errors[0] < errors[-1] < 1


def test_budget_is_met_and_beats_or_equals_the_uniform_qp_at_the_same_size(model, allocation):
    uniform, result = allocation
    assert result.total_bytes <= uniform.report.total_bytes
    assert set(result.layer_qp.values()) <= set(QPS)
    chosen = sum(next(o.distortion for o in result.options[n] if o.qp == qp) for n, qp in result.layer_qp.items())
    at_28 = sum(next(o.distortion for o in opts if o.qp == 28) for opts in result.options.values())
    assert chosen <= at_28 + 1e-12
    encoded = encode(model, config=result.config(EncodeConfig()))
    assert {l.name: l.qp for l in encoded.report.layers if l.storage == "hevc"} == result.layer_qp
    assert abs(encoded.report.total_bytes - result.total_bytes) <= 64  # header wiggle only


def test_encode_to_size_writes_a_file_that_fits(model, tmp_path):
    uniform = encode(model, config=EncodeConfig(hevc=HevcSettings(qp=34)))
    target = uniform.report.total_bytes + 500
    out = tmp_path / "m.wcodec"
    result, allocation = encode_to_size(model, out, target_bytes=target, candidate_qps=QPS)
    assert out.stat().st_size == result.report.total_bytes <= target
    restored = decode(out, as_state_dict=True).state_dict
    assert restored["smooth.weight"].shape == model["smooth.weight"].shape


def test_generous_budget_takes_the_lowest_qp_and_tiny_budget_is_a_clear_error(model):
    generous = allocate_qps(model, target_bytes=10**9, candidate_qps=QPS)
    assert set(generous.layer_qp.values()) == {QPS[0]}
    with pytest.raises(ConfigError, match="below the smallest reachable"):
        allocate_qps(model, target_bytes=100, candidate_qps=QPS)
    with pytest.raises(ConfigError, match="--layer-qp"):
        allocate_qps(model, target_bytes=10**6, config=EncodeConfig(layer_qp=(("smooth.*", 30),)))
    with pytest.raises(ConfigError, match="no HEVC-coded layer"):
        allocate_qps({"b": torch.zeros(10)}, target_bytes=10**6)


def test_choose_qps_spends_on_the_layer_where_bytes_cut_most_error():
    options = {
        "a": [QpOption(22, 1000, 0.010), QpOption(28, 600, 0.011), QpOption(34, 300, 0.050)],
        "b": [QpOption(22, 1000, 0.010), QpOption(28, 600, 0.040), QpOption(34, 300, 0.090)],
    }
    layer_qp, used = choose_qps(options, 1600)
    assert layer_qp == {"a": 28, "b": 22} and used == 1600  # "a" loses almost nothing by going up
    layer_qp, used = choose_qps(options, 900)
    assert layer_qp == {"a": 34, "b": 28} and used == 900


def test_cli_target_size(tmp_path):
    from click.testing import CliRunner

    from weightcodec.cli import main

    model = tmp_path / "m.pt"
    torch.save({"fc.weight": torch.from_numpy(smooth_matrix(128, 256))}, model)
    runner = CliRunner()
    result = runner.invoke(main, ["encode", str(model), "--target-size", "9k", "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.wcodec").stat().st_size <= 9000
    bad = runner.invoke(main, ["encode", str(model), "--target-size", "lots", "--force"])
    assert bad.exit_code != 0 and "expected a size" in bad.output
