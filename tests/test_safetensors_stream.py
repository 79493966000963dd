"""Decoding straight into a .safetensors file, one tensor at a time (api.decode_to_safetensors and
`wcodec decode -o x.safetensors`): the same bytes as decoding the whole model and saving it with
safetensors, never the whole model in memory, and all or nothing."""

import os
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy_file

from tests.helpers import interrupt_decoding_of, smooth_matrix
from weightcodec import EncodeConfig, HevcSettings, api, decode, encode
from weightcodec.cli import main
from weightcodec.container import ContainerReader
from weightcodec.errors import FormatError, OutputError
from weightcodec.formats.safetensors_file import SafetensorsStreamWriter, save_safetensors

CONFIG = EncodeConfig(hevc=HevcSettings(qp=30))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A .safetensors model of many dtypes (bfloat16 and float8 too), a tied alias, __metadata__."""
    folder = tmp_path_factory.mktemp("stream")
    sd = OrderedDict()
    for i, dtype in enumerate([torch.float32, torch.float16, torch.bfloat16]):
        sd[f"layers.{i}.weight"] = torch.from_numpy(smooth_matrix(96 + 32 * i, 160, seed=i)).to(dtype)
        sd[f"layers.{i}.bias"] = torch.randn(96 + 32 * i, generator=torch.Generator().manual_seed(i))
    sd["steps"] = torch.tensor(7)
    sd["mask"] = torch.tensor([[True, False], [False, True]])
    sd["scale8"] = torch.linspace(-2, 2, 12).to(torch.float8_e4m3fn)
    sd["empty"] = torch.zeros(0, 4)
    sd["head.weight"] = sd["layers.0.weight"].clone()  # the same bytes: stored once, as an alias
    from safetensors.torch import save_file

    source = folder / "model.safetensors"
    # one key: safetensors writes __metadata__ from a hash map, so two keys may come out in either order
    save_file(sd, str(source), metadata={"format": "pt"})
    coded = folder / "model.wcodec"
    encode(source, coded, config=CONFIG, workers=1)
    return source, coded


def _saved_the_old_way(coded, path, **kwargs):
    result = decode(coded, keep_quantized=False, as_state_dict=True, **kwargs)
    save_safetensors(path, result.state_dict, result.header.model.file_metadata)
    return path.read_bytes()


@pytest.mark.parametrize("workers", [1, 3])
def test_the_same_bytes_as_decoding_whole_and_saving(mixed, tmp_path, workers):
    _, coded = mixed
    done = api.decode_to_safetensors(coded, tmp_path / "s.safetensors", workers=workers)
    expected = _saved_the_old_way(coded, tmp_path / "w.safetensors")
    assert (tmp_path / "s.safetensors").read_bytes() == expected
    assert done.bytes == len(expected) and done.tensors == 11 and done.seconds > 0
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        assert torch.equal(handle.get_tensor("head.weight"), handle.get_tensor("layers.0.weight"))
    assert sorted(os.listdir(tmp_path)) == ["s.safetensors", "w.safetensors"]  # no temporaries left


def test_only_streams_just_the_matching_tensors(mixed, tmp_path):
    _, coded = mixed
    done = api.decode_to_safetensors(coded, tmp_path / "s.safetensors", only=["layers.2.*", "mask"])
    assert done.tensors == 3
    expected = _saved_the_old_way(coded, tmp_path / "w.safetensors", only=["layers.2.*", "mask"])
    assert (tmp_path / "s.safetensors").read_bytes() == expected


def test_the_cli_streams_and_keeps_its_messages(mixed, tmp_path):
    _, coded = mixed
    out = tmp_path / "out.safetensors"
    run = CliRunner().invoke(main, ["decode", str(coded), "-o", str(out), "-q"])
    assert run.exit_code == 0, run.output
    assert "safetensors file with 11 tensors" in run.output
    assert out.read_bytes() == _saved_the_old_way(coded, tmp_path / "w.safetensors")
    run = CliRunner().invoke(main, ["decode", str(coded), "-o", str(out)])
    assert run.exit_code == 1 and "exists" in run.output  # not overwritten without -f


def test_memory_is_the_tensors_in_hand_not_the_model(tmp_path):
    """Eight 2 MB tensors: decoding whole holds all of them at once; streaming with one worker holds
    one tensor's working memory (its int8 values, pictures, float values: about 3.4 of them here),
    whatever the number of tensors (numpy's allocations, traced)."""
    sd = {f"l{i}.weight": (np.random.default_rng(i).standard_normal((1024, 512)) * 0.02).astype(np.float32)
          for i in range(8)}
    source = tmp_path / "m.safetensors"
    save_numpy_file(sd, str(source))
    coded = tmp_path / "m.wcodec"
    encode(source, coded, config=CONFIG, workers=1)
    tensor_bytes = 1024 * 512 * 4

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole = peak(lambda: decode(coded, workers=1, arrays="numpy", keep_quantized=False))
    streamed = peak(lambda: api.decode_to_safetensors(coded, tmp_path / "s.safetensors", workers=1))
    assert whole >= 8 * tensor_bytes
    assert streamed <= 4 * tensor_bytes and whole - streamed >= 5 * tensor_bytes, (streamed, whole)


def test_a_failure_part_way_leaves_nothing_and_the_old_file_as_it_was(mixed, tmp_path, monkeypatch):
    _, coded = mixed
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"the user's old file")
    interrupt_decoding_of(monkeypatch, "layers.1.weight")
    run = CliRunner().invoke(main, ["decode", str(coded), "-o", str(out), "-f", "--workers", "2"])
    assert run.exit_code == 130 and "nothing was written" in run.output
    assert os.listdir(tmp_path) == ["out.safetensors"] and out.read_bytes() == b"the user's old file"


def test_a_damaged_stream_is_one_error_and_writes_nothing(mixed, tmp_path):
    _, coded = mixed
    data = bytearray(coded.read_bytes())
    with ContainerReader(bytes(data)) as reader:
        entry = next(t for t in reader.header.tensors if t.storage == "hevc")
        data[reader.payload_offset + entry.data.offset + entry.data.length // 2] ^= 0x40
    damaged = tmp_path / "damaged.wcodec"
    damaged.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=entry.name):
        api.decode_to_safetensors(damaged, tmp_path / "s.safetensors")
    assert os.listdir(tmp_path) == ["damaged.wcodec"]


def test_the_writer_refuses_what_its_layout_does_not_say(tmp_path):
    layout = {"a": ("float32", (3, 4)), "b": ("int64", ())}
    with SafetensorsStreamWriter(tmp_path / "x.safetensors", layout) as writer:
        with pytest.raises(OutputError, match="no tensor 'c'"):
            writer.write("c", np.zeros(2, np.float32))
    assert os.listdir(tmp_path) == []  # a failed write removes the temporary
    with SafetensorsStreamWriter(tmp_path / "x.safetensors", layout) as writer:
        with pytest.raises(OutputError, match=r"float64 \(3, 4\), its layout says float32"):
            writer.write("a", np.zeros((3, 4)))
    with SafetensorsStreamWriter(tmp_path / "x.safetensors", layout) as writer:
        writer.write("a", np.ones((3, 4), np.float32))
        with pytest.raises(OutputError, match="1 tensors never written .first 'b'"):
            writer.commit()
    assert os.listdir(tmp_path) == []
    (tmp_path / "x.safetensors").write_bytes(b"keep")
    with pytest.raises(OutputError, match="exists"):
        SafetensorsStreamWriter(tmp_path / "x.safetensors", layout, overwrite=False)
    assert os.listdir(tmp_path) == ["x.safetensors"]


def test_an_output_larger_than_the_free_space_fails_before_writing(tmp_path, monkeypatch):
    """The zero-filled data area is written before anything is decoded: a file that declares more
    bytes than the disk has free (a hostile header, or a full disk) is refused up front."""
    import collections

    statvfs = collections.namedtuple("statvfs", "f_bavail f_frsize")
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs(f_bavail=10, f_frsize=4096))
    with pytest.raises(OutputError, match=r"need 1,048,576 bytes and .* has 40,960 free"):
        SafetensorsStreamWriter(tmp_path / "x.safetensors", {"w": ("float32", (512, 512))})
    assert os.listdir(tmp_path) == []
    small = SafetensorsStreamWriter(tmp_path / "y.safetensors", {"w": ("float32", (16, 16))})
    small.write("w", np.ones((16, 16), np.float32))
    assert small.commit() > 1024


def test_without_streaming_support_the_cli_writes_the_same_file_the_old_way(mixed, tmp_path, monkeypatch):
    """safetensors < 0.8 has no TensorSpec: `wcodec decode -o x.safetensors` then decodes the whole
    model and saves it, and the file is the same."""
    from weightcodec.formats import safetensors_file

    _, coded = mixed
    streamed = tmp_path / "streamed.safetensors"
    assert CliRunner().invoke(main, ["decode", str(coded), "-o", str(streamed), "-q"]).exit_code == 0
    monkeypatch.setattr(safetensors_file, "streaming_available", lambda: False)
    assert not api.can_stream_to_safetensors(api.read_header(coded))
    called = []
    original = api.decode
    monkeypatch.setattr("weightcodec.cli.decode", lambda *a, **k: called.append(1) or original(*a, **k))
    whole = tmp_path / "whole.safetensors"
    run = CliRunner().invoke(main, ["decode", str(coded), "-o", str(whole), "-q"])
    assert run.exit_code == 0, run.output
    assert called and whole.read_bytes() == streamed.read_bytes()
