"""docs/FORMAT.md is enough to read a file: an independent reader (tests/spec_reader.py, no weightcodec
import, HEVC through a second decoder) restores every tensor bit-exactly as weightcodec.api.decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import spec_reader
from tools import fuzz
from weightcodec import api

DECODERS = spec_reader.find_decoders()


@pytest.fixture(scope="module")
def corpus() -> fuzz.Corpus:
    return fuzz.build_corpus(0, with_streams=False)


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    if tensor.element_size() == 1 and not tensor.dtype.is_complex and tensor.dtype not in (torch.int8, torch.uint8,
                                                                                          torch.bool):
        return tensor.view(torch.uint8).numpy()  # float8 / float4: bit patterns, as the spec reader returns them
    return tensor.numpy()


def test_spec_reader_imports_no_weightcodec():
    import ast

    tree = ast.parse(open(spec_reader.__file__, encoding="utf-8").read())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert modules <= {"__future__", "json", "os", "shutil", "struct", "subprocess", "tempfile", "zlib", "dataclasses",
                       "pathlib", "numpy", "zstandard", "imageio_ffmpeg"}, modules


@pytest.mark.skipif(not DECODERS, reason="no second HEVC decoder (libde265-dec265 or an ffmpeg executable)")
@pytest.mark.parametrize("decoder", DECODERS, ids=[d.name for d in DECODERS])
def test_spec_reader_matches_decode_bit_exactly(corpus, decoder):
    checked = set()
    for name, data in corpus.files.items():
        reference = api.decode(data, as_state_dict=True)
        restored = spec_reader.read_file(data, decoder=decoder)
        assert [r.name for r in restored] == list(reference.state_dict), name
        for r in restored:
            expected = as_numpy(reference.state_dict[r.name])
            assert r.array.dtype == expected.dtype and r.array.shape == expected.shape, (name, r.name)
            assert r.array.tobytes() == expected.tobytes(), (name, r.name)
            if r.int8 is not None:
                q = reference.quantized[r.name]
                assert np.array_equal(r.int8, q.values), (name, r.name)
                assert r.scales.tobytes() == np.asarray(q.scales, np.float32).tobytes(), (name, r.name)
            entry = next(t for t in reference.header.tensors if t.name == r.name)
            checked.add((entry.storage, r.dtype))
            if entry.quant is not None:
                checked.add((entry.storage, entry.quant.granularity, entry.quant.axis))
    # every storage kind, and the dtypes whose conversion rules matter, were compared
    assert {("hevc", "float32"), ("hevc", "float16"), ("hevc", "bfloat16"), ("int8", "float32"),
            ("int8", "bfloat16"), ("raw", "bfloat16"), ("raw", "bool")} <= checked
    # format 2.1: the mosaic layout, affine-int8 and float16-stored raw tensors were among them
    planned = {t.name: t for t in api.read_header(corpus.files["planned-2.1"]).tensors}
    assert planned["conv.weight"].hevc.matrix_layout.kind == "mosaic"
    assert planned["fc.weight"].quant.scheme == "affine-int8" and planned["bn.var"].stored_dtype == "float16"
    # format 2.1: aliases, per-channel-2d and axis-1 scales, the raw-only dtypes
    assert {("alias", "float32"), ("hevc", "per-channel-2d", 0), ("int8", "per-channel-2d", 0),
            ("hevc", "per-channel", 1), ("raw", "uint64"), ("raw", "float8_e4m3fn"), ("raw", "float4_e2m1fn_x2"),
            ("raw", "complex64")} <= checked


def test_spec_reader_reads_folders_as_decode_does(corpus):
    data = corpus.files["v2.1-hf-folder"]
    shards, files = spec_reader.read_folder(data)
    reference = api.decode(data)
    assert files == reference.files
    assert shards == {s.file: list(s.tensors) for s in reference.header.model.shards}
    header, payload = fuzz_unpack(data)
    header["model"]["files"][0]["path"] = "../escape"
    from weightcodec.container import pack_raw

    with pytest.raises(spec_reader.SpecError, match="unsafe file name"):
        spec_reader.read_folder(pack_raw(header, payload, minor=1))


def fuzz_unpack(data: bytes):
    from weightcodec.container import unpack_raw

    return unpack_raw(data)


@pytest.mark.skipif(not DECODERS, reason="no second HEVC decoder")
def test_spec_reader_rejects_what_the_spec_rejects(corpus):
    wf = corpus.parsed["raw-all-dtypes"].copy()
    t = fuzz.tensors_of(wf, "raw", "bool")[0]
    fuzz.set_segment_bytes(wf, t["data"], bytes([2] * t["shape"][0]))
    with pytest.raises(spec_reader.SpecError, match="corrupt stream"):
        spec_reader.read_file(fuzz.render(wf), decoder=DECODERS[0])
    data = bytearray(corpus.files["hevc-single"])
    data[40] ^= 1  # inside the stored header (after the 36-byte prefix)
    with pytest.raises(spec_reader.SpecError, match="checksum mismatch"):
        spec_reader.read_file(bytes(data), decoder=DECODERS[0])
