"""The library API end to end: what goes in comes back, within the bounds each storage promises."""

import os

import numpy as np
import pytest
import torch

from weightcodec import EncodeConfig, HevcSettings, QuantSettings, decode, encode, read_header
from weightcodec.plan import storage_kind
from weightcodec.backends.pyav import PyAVCodec
from weightcodec.errors import BackendError, ConfigError, ModelLoadError, OutputError, UntrustedPickleError
from weightcodec.quant import quantize


def test_round_trip_of_every_storage_kind(small_state_dict):
    result = encode(small_state_dict, config=EncodeConfig(hevc=HevcSettings(qp=24)), verify=True)
    storage = {layer.name: layer.storage for layer in result.report.layers}
    assert storage == {"fc1.weight": "hevc", "fc1.bias": "raw", "conv.weight": "int8", "bn.running_mean": "raw",
                       "bn.num_batches_tracked": "raw", "head.weight": "int8", "half.weight": "hevc", "mask": "raw"}
    decoded = decode(result.data)
    assert list(decoded.state_dict) == list(small_state_dict)
    for name, original in small_state_dict.items():
        restored = decoded.state_dict[name]
        assert restored.dtype == original.dtype and restored.shape == original.shape
        if storage[name] == "raw":
            assert torch.equal(restored, original)
    # int8 storage: error <= scale / 2
    q = quantize(small_state_dict["conv.weight"].numpy(), "per-tensor")
    assert torch.equal(decoded.state_dict["conv.weight"], torch.from_numpy(q.dequantize()))
    # HEVC storage at QP 24: small int8-domain error, reported by verify
    fc1 = next(layer for layer in result.report.layers if layer.name == "fc1.weight")
    values = decoded.quantized["fc1.weight"].values.astype(float)
    reference = quantize(small_state_dict["fc1.weight"].numpy()).values.astype(float)
    rmse = np.sqrt(np.mean((values - reference) ** 2))
    assert rmse == pytest.approx(fc1.int8_rmse) and 0 < rmse < 4


def test_lossless_round_trips_int8_exactly(small_state_dict):
    decoded = decode(encode(small_state_dict, config=EncodeConfig(hevc=HevcSettings(lossless=True))).data)
    for name in ("fc1.weight", "half.weight"):
        expected = quantize(small_state_dict[name].float().numpy()).values
        assert np.array_equal(decoded.quantized[name].values, expected)


def test_size_falls_as_qp_rises(small_state_dict):
    sizes = [encode(small_state_dict, config=EncodeConfig(hevc=HevcSettings(qp=qp))).report.total_bytes
             for qp in (20, 30, 40)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_layer_qp_overrides_and_int8_only_and_code_conv(small_state_dict):
    config = EncodeConfig(hevc=HevcSettings(qp=30), layer_qp=(("fc1.*", 40),))
    layers = {l.name: l for l in encode(small_state_dict, config=config).report.layers}
    assert layers["fc1.weight"].qp == 40 and layers["half.weight"].qp == 30
    only = {l.name: l.storage for l in encode(small_state_dict, config=EncodeConfig(code_matrices=False)).report.layers}
    assert "hevc" not in only.values()
    conv = EncodeConfig(code_conv=True, min_coded_elements=1000)
    assert storage_kind("conv.weight", small_state_dict["conv.weight"], conv) == "hevc"
    decoded = decode(encode(small_state_dict, config=conv).data)
    assert decoded.state_dict["conv.weight"].shape == (16, 8, 3, 3)


def test_guard_switches_badly_conditioned_layer_in_auto_mode():
    rng = np.random.default_rng(0)
    ranges = np.geomspace(0.01, 1.0, 64).astype(np.float32)
    dw = torch.from_numpy((rng.uniform(-1, 1, (64, 1, 3, 3)) * ranges[:, None, None, None]).astype(np.float32))
    fc = torch.from_numpy(rng.normal(0, 0.05, (128, 256)).astype(np.float32))
    sd = {"dw.weight": dw, "fc.weight": fc}
    layers = {l.name: l for l in encode(sd).report.layers}
    assert layers["dw.weight"].granularity == "per-channel" and layers["dw.weight"].guard_switched
    assert layers["fc.weight"].granularity == "per-tensor" and not layers["fc.weight"].guard_switched
    forced = {l.name: l for l in encode(sd, config=EncodeConfig(quant=QuantSettings(granularity="per-tensor"))).report.layers}
    assert forced["dw.weight"].granularity == "per-tensor" and forced["dw.weight"].guard_db < 30
    assert read_header(encode(sd).data).tensors[0].quant.granularity == "per-channel"


def test_guard_threshold_is_lower_for_2d_matrices_than_for_convs():
    from weightcodec.quant import guard_figure_db

    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.05, (64, 288)).astype(np.float32)
    weights[0] *= 2.5  # one large channel: the others get fewer levels
    figure = guard_figure_db(weights)
    defaults = QuantSettings()
    assert defaults.matrix_guard_db < figure < defaults.guard_db  # between the two thresholds
    sd = {"fc.weight": torch.from_numpy(weights), "conv.weight": torch.from_numpy(weights.reshape(64, 32, 3, 3))}
    layers = {l.name: l for l in encode(sd).report.layers}
    assert layers["fc.weight"].storage == "hevc" and layers["fc.weight"].granularity == "per-tensor"
    assert layers["fc.weight"].guard_threshold_db == defaults.matrix_guard_db
    assert layers["conv.weight"].storage == "int8" and layers["conv.weight"].granularity == "per-channel"
    assert layers["conv.weight"].guard_db == pytest.approx(figure, abs=1e-6)
    # the threshold follows the tensor's shape, not its storage: int8-only keeps the matrix per-tensor
    int8_only = {l.name: l for l in encode(sd, config=EncodeConfig(code_matrices=False)).report.layers}
    assert int8_only["fc.weight"].storage == "int8" and int8_only["fc.weight"].granularity == "per-tensor"
    strict = EncodeConfig(quant=QuantSettings(matrix_guard_db=defaults.guard_db))
    assert {l.name: l for l in encode(sd, config=strict).report.layers}["fc.weight"].granularity == "per-channel"


def test_module_round_trip_needs_trust_and_gives_a_runnable_module(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                torch.nn.BatchNorm1d(64)).eval()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(UntrustedPickleError, match="--trust-pickle"):
        encode(path)
    data = encode(path, trust_pickle=True).data
    assert read_header(data).model.kind == "module"
    with pytest.raises(UntrustedPickleError):
        decode(data)
    assert decode(data, as_state_dict=True).module is None
    restored = decode(data, trust_pickle=True).module
    x = torch.randn(5, 32)
    reference = encode(model.state_dict()).data  # same weights through the codec, as a state_dict
    expected_sd = decode(reference).state_dict
    model.load_state_dict(expected_sd)
    assert isinstance(restored, torch.nn.Sequential)
    assert torch.allclose(restored(x), model(x), atol=1e-6)


def test_bad_inputs_raise_specific_errors(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("just some text")
    with pytest.raises(ModelLoadError, match="not a PyTorch model"):
        encode(text)
    with pytest.raises(ModelLoadError, match="no such file"):
        encode(tmp_path / "missing.pt")
    lst = tmp_path / "list.pt"
    torch.save([1, 2, 3], lst)
    with pytest.raises(ModelLoadError, match="not a model"):
        encode(lst)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, ckpt)
    with pytest.raises(ModelLoadError, match="checkpoint"):
        encode(ckpt)
    for bad in (-1, 52, 28.5, True):
        with pytest.raises(ConfigError, match="qp"):
            HevcSettings(qp=bad)
    with pytest.raises(ConfigError):
        EncodeConfig(backend="nope", layer_qp=(("x", 99),))
    with pytest.raises(OutputError, match="does not exist"):
        encode({"w": torch.zeros(3)}, tmp_path / "no" / "dir" / "out.wcodec")


def test_failed_encode_leaves_no_partial_output(small_state_dict, tmp_path, monkeypatch):
    out = tmp_path / "model.wcodec"
    out.write_bytes(b"previous content")

    def explode(self, frames, settings):
        raise BackendError("simulated encoder crash")

    monkeypatch.setattr(PyAVCodec, "encode", explode)
    with pytest.raises(BackendError, match="simulated"):
        encode(small_state_dict, out)
    assert out.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["model.wcodec"]


def test_interrupted_write_leaves_no_partial_output(tmp_path, monkeypatch):
    from weightcodec import atomic

    out = tmp_path / "x.wcodec"

    def chunks():
        yield b"part one"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(out, chunks())
    assert os.listdir(tmp_path) == []


def test_decode_is_deterministic(small_state_dict):
    data = encode(small_state_dict, config=EncodeConfig(hevc=HevcSettings(qp=34))).data
    first = decode(data).state_dict
    for _ in range(2):
        again = decode(data).state_dict
        assert all(torch.equal(first[k], again[k]) for k in first)


def test_encode_accepts_module_objects_and_reports_sizes():
    model = torch.nn.Linear(256, 64)
    report = encode(model).report
    assert report.total_bytes < report.original_bytes / 2
    assert sum(l.original_bytes for l in report.layers) == (256 * 64 + 64) * 4
