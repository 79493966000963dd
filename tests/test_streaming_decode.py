"""Streaming and parallel decode: the same bits whatever the thread count, tensors in file order,
``only`` reads nothing else, an interrupted decode writes nothing."""

import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from weightcodec import EncodeConfig, HevcSettings, api, decode, encode
from weightcodec.cli import main
from weightcodec.container import ContainerReader
from weightcodec.errors import ConfigError, FormatError

from tests.helpers import interrupt_decoding_of, smooth_matrix


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    sd = OrderedDict()
    for i in range(4):
        sd[f"layers.{i}.weight"] = torch.from_numpy(smooth_matrix(64 + 32 * i, 160, seed=i)).to(
            [torch.float32, torch.float16, torch.bfloat16, torch.float16][i])
        sd[f"layers.{i}.bias"] = torch.randn(64 + 32 * i)
    sd["head.weight"] = torch.from_numpy(smooth_matrix(40, 48, seed=9))  # int8 storage (small)
    return sd


@pytest.fixture(scope="module")
def wcodec_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "model.wcodec"
    encode(model, path, config=EncodeConfig(hevc=HevcSettings(qp=30)), workers=1)
    return path


def test_decode_is_bit_exact_whatever_the_thread_count(wcodec_file, model):
    one = decode(wcodec_file, workers=1)
    assert list(one.state_dict) == list(model)
    for workers in (2, 3, 8):
        other = decode(wcodec_file, workers=workers)
        assert list(other.state_dict) == list(one.state_dict)
        for name, tensor in one.state_dict.items():
            assert other.state_dict[name].dtype == tensor.dtype == model[name].dtype
            assert torch.equal(other.state_dict[name].view(torch.uint8) if tensor.dtype == torch.bfloat16
                               else other.state_dict[name], tensor.view(torch.uint8)
                               if tensor.dtype == torch.bfloat16 else tensor), name
        for name, q in one.quantized.items():
            assert np.array_equal(other.quantized[name].values, q.values)


def test_iter_decode_yields_in_file_order_as_tensors_are_ready(wcodec_file):
    whole = decode(wcodec_file, workers=1).state_dict
    seen = []
    for name, tensor in api.iter_decode(wcodec_file, workers=2):
        seen.append(name)
        assert torch.equal(tensor, whole[name])
    assert seen == list(whole)
    # stopping early closes the file and the thread pool
    stream = api.iter_decode(wcodec_file, workers=2)
    assert next(stream)[0] == "layers.0.weight"
    stream.close()


def test_decode_works_largest_first_and_returns_file_order(wcodec_file, monkeypatch):
    """decode() keeps every tensor: it decodes the largest first (its peak is then the whole model
    plus the smallest tensor's working memory), and returns them in file order, the same bits."""
    streamed = dict(api.iter_decode(wcodec_file, workers=1))
    order, steps = [], []
    original = {kind: coder.decode for kind, coder in api.CODERS.items()}
    for kind, coder in api.CODERS.items():
        monkeypatch.setattr(coder, "decode", lambda entry, ctx, _k=kind: order.append(entry.name) or original[_k](entry, ctx))
    result = decode(wcodec_file, workers=1, progress=lambda name, done, total: steps.append((done, total)))
    sizes = {t.name: t.numel * api.DTYPES[t.dtype].itemsize for t in result.header.tensors}
    assert [sizes[n] for n in order] == sorted(sizes.values(), reverse=True)
    assert list(result.state_dict) == [t.name for t in result.header.tensors]
    for name, tensor in result.state_dict.items():
        assert torch.equal(tensor.view(torch.uint8), streamed[name].view(torch.uint8)), name
    total = sum(t.numel for t in result.header.tensors)
    assert [d for d, _ in steps] == sorted(d for d, _ in steps) and steps[-1] == (total, total)


def test_only_decodes_and_reads_just_the_matching_tensors(wcodec_file, monkeypatch):
    read = []
    original = ContainerReader.read

    def spy(self, segment, what, *args, **kwargs):
        read.append((segment.offset, segment.length))
        return original(self, segment, what, *args, **kwargs)

    monkeypatch.setattr(ContainerReader, "read", spy)
    result = decode(wcodec_file, only=["layers.1.*", "head.weight"], workers=2)
    assert list(result.state_dict) == ["layers.1.weight", "layers.1.bias", "head.weight"]
    header = result.header
    wanted = {(s.offset, s.length) for t in header.tensors if t.name in result.state_dict
              for s in ([t.data] + ([t.quant.scales] if t.quant else []))}
    assert set(read) == wanted and len(read) == len(wanted)  # each wanted segment once, nothing else
    full = decode(wcodec_file, workers=1).state_dict
    assert all(torch.equal(result.state_dict[n], full[n]) for n in result.state_dict)
    with pytest.raises(ConfigError, match=r"pattern 'layer.1.\*' matches no tensor.*did you mean"):
        decode(wcodec_file, only="layer.1.*")


def test_a_damaged_segment_fails_the_same_with_threads(wcodec_file):
    data = bytearray(wcodec_file.read_bytes())
    with ContainerReader(bytes(data)) as reader:
        entry, start = reader.header.tensors[4], reader.payload_offset
    assert entry.name == "layers.2.weight" and entry.storage == "hevc"
    data[start + entry.data.offset + entry.data.length // 2] ^= 0x40
    messages = set()
    for workers in (1, 2, 4):
        with pytest.raises(FormatError) as info:
            decode(bytes(data), workers=workers)
        messages.add((type(info.value), str(info.value)))
    assert len(messages) == 1 and "layers.2.weight" in messages.pop()[1]


def test_cli_decode_only_and_workers(wcodec_file, tmp_path):
    out = tmp_path / "part.pt"
    run = CliRunner().invoke(main, ["decode", str(wcodec_file), "-o", str(out), "--only", "layers.3.*",
                                    "--workers", "2", "-q"])
    assert run.exit_code == 0, run.output
    sd = torch.load(out, weights_only=True)
    assert list(sd) == ["layers.3.weight", "layers.3.bias"] and sd["layers.3.weight"].dtype == torch.float16
    run = CliRunner().invoke(main, ["decode", str(wcodec_file), "-o", str(tmp_path / "x.pt"), "--only", "nope"])
    assert run.exit_code == 1 and "matches no tensor" in run.output and not (tmp_path / "x.pt").exists()


def test_an_interrupted_decode_writes_nothing(wcodec_file, tmp_path, monkeypatch):
    interrupt_decoding_of(monkeypatch, "layers.2.weight")
    out = tmp_path / "out.pt"
    run = CliRunner().invoke(main, ["decode", str(wcodec_file), "-o", str(out), "--workers", "2"])
    assert run.exit_code == 130 and "nothing was written" in run.output
    assert os.listdir(tmp_path) == []
