"""The .wcodec container: round trips, and one specific error for every kind of bad input."""

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightcodec import EncodeConfig, HevcSettings, QuantSettings, decode, encode, read_header
from weightcodec.container import MAGIC, PREFIX, pack_raw, read_header_bytes, unpack_raw
from weightcodec.errors import (
    ChecksumMismatchError,
    FormatError,
    HeaderTooLargeError,
    MalformedHeaderError,
    NotAWcodecFileError,
    OffsetOutOfRangeError,
    TruncatedFileError,
    UnknownCodecError,
    UnsupportedVersionError,
    WeightcodecError,
)


@pytest.fixture(scope="module")
def wcodec_bytes() -> bytes:
    torch.manual_seed(0)
    sd = {"fc.weight": torch.randn(64, 96) * 0.1, "fc.bias": torch.randn(64), "conv.weight": torch.randn(8, 4, 3, 3)}
    return encode(sd, config=EncodeConfig(hevc=HevcSettings(qp=30))).data


def split(data: bytes):
    return unpack_raw(data)


def rebuild(header: dict, payload: bytes, *, major: int = 2, minor: int = 0, crc: int | None = None) -> bytes:
    return pack_raw(header, payload, major=major, minor=minor, crc=crc)


def test_prefix_layout(wcodec_bytes):
    magic, major, minor, stored, hlen, hcrc, compression, reserved, plen = PREFIX.unpack_from(wcodec_bytes)
    assert magic == b"\x89WCODEC\n" and (major, minor) == (2, 0) and reserved == b"\0\0\0"
    assert compression == 1 and stored < hlen  # the header is zstd-compressed
    assert PREFIX.size == 36 and len(wcodec_bytes) == 36 + stored + plen


def test_version_1_files_stay_readable(wcodec_bytes):
    header, payload = split(wcodec_bytes)
    v1 = rebuild(header, payload, major=1)
    assert v1[8:10] == b"\x01\x00" and len(v1) == 28 + len(json.dumps(header)) + len(payload)
    assert read_header(v1).version == (1, 0)
    old, new = decode(v1).state_dict, decode(wcodec_bytes).state_dict
    assert all(torch.equal(old[k], new[k]) for k in new)
    with pytest.raises(ChecksumMismatchError):
        read_header(rebuild(header, payload, major=1, crc=1))


def test_header_round_trips_and_describes_every_tensor(wcodec_bytes):
    header = read_header(wcodec_bytes)
    by_name = {t.name: t for t in header.tensors}
    assert [t.name for t in header.tensors] == ["fc.weight", "fc.bias", "conv.weight"]
    assert by_name["fc.weight"].storage == "hevc" and by_name["fc.weight"].hevc.qp == 30
    assert by_name["fc.weight"].hevc.stream["profile"] == "Main"
    assert by_name["conv.weight"].storage == "int8" and by_name["fc.bias"].storage == "raw"
    assert by_name["fc.weight"].quant.granularity == "per-tensor"


def test_per_channel_scales_round_trip_exactly():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(48, 200)) * np.geomspace(1e-3, 1.0, 48)[:, None]).astype(np.float32)
    result = encode({"m.weight": torch.from_numpy(w)},
                    config=EncodeConfig(quant=QuantSettings(granularity="per-channel"), code_matrices=False))
    decoded = decode(result.data)
    q = decoded.quantized["m.weight"]
    expected = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    assert q.granularity == "per-channel" and q.scales.dtype == np.float32
    assert np.array_equal(q.scales, expected)  # bit-exact float32
    assert np.all(np.abs(decoded.state_dict["m.weight"].numpy() - w) <= expected[:, None] / 2 * (1 + 1e-6))


def test_not_a_wcodec_file():
    with pytest.raises(NotAWcodecFileError, match="not a wcodec file"):
        read_header(b"PK\x03\x04 this is a zip, not ours" * 4)
    with pytest.raises(NotAWcodecFileError):
        read_header(b"")


def test_unsupported_version(wcodec_bytes):
    header, payload = split(wcodec_bytes)
    with pytest.raises(UnsupportedVersionError, match="version 3.0"):
        read_header(rebuild(header, payload, major=3))
    # a newer minor version of the same major is readable
    assert read_header(rebuild(header, payload, minor=7)).version == (2, 7)


@pytest.mark.parametrize("cut", [10, 27, 40, -1, -100])
def test_truncated(wcodec_bytes, cut):
    with pytest.raises(TruncatedFileError, match="truncated"):
        read_header(wcodec_bytes[:cut])


def test_header_checksum_mismatch(wcodec_bytes):
    header, payload = split(wcodec_bytes)
    with pytest.raises(ChecksumMismatchError, match="header"):
        read_header(rebuild(header, payload, crc=12345))


def test_payload_checksum_mismatch_names_the_tensor(wcodec_bytes):
    header, payload = split(wcodec_bytes)
    seg = next(t for t in header["tensors"] if t["name"] == "fc.bias")["data"]
    corrupted = bytearray(payload)
    corrupted[seg["offset"]] ^= 0xFF
    data = rebuild(header, bytes(corrupted))
    read_header(data)  # the header is still fine
    with pytest.raises(ChecksumMismatchError, match="fc.bias"):
        decode(data)


def test_header_too_large(wcodec_bytes):
    data = bytearray(wcodec_bytes)
    struct.pack_into("<I", data, 16, 2**31)
    with pytest.raises(HeaderTooLargeError):
        read_header(bytes(data))
    with pytest.raises(HeaderTooLargeError):
        read_header_bytes(wcodec_bytes, max_header_bytes=100)


def test_offsets_out_of_range_and_overlaps(wcodec_bytes):
    header, payload = split(wcodec_bytes)
    header["tensors"][1]["data"]["offset"] = len(payload) + 10
    with pytest.raises(OffsetOutOfRangeError, match="fc.bias"):
        read_header(rebuild(header, payload))
    header, payload = split(wcodec_bytes)
    header["tensors"][1]["data"]["offset"] = header["tensors"][0]["data"]["offset"]
    with pytest.raises(OffsetOutOfRangeError, match="overlaps"):
        read_header(rebuild(header, payload))


@pytest.mark.parametrize(
    "path, value",
    [(("storage",), "jpeg-xl"), (("hevc", "codec"), "vvc"), (("data", "compression"), "brotli"),
     (("quant", "scheme"), "asymmetric-int4")],
)
def test_unknown_codec(wcodec_bytes, path, value):
    header, payload = split(wcodec_bytes)
    node = header["tensors"][0]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(UnknownCodecError, match=value):
        read_header(rebuild(header, payload))


def test_malformed_headers(wcodec_bytes):
    header, payload = split(wcodec_bytes)
    raw = b"{not json"
    bad = PREFIX.pack(MAGIC, 2, 0, len(raw), len(raw), zlib.crc32(raw), 0, bytes(3), len(payload)) + raw + payload
    with pytest.raises(MalformedHeaderError, match="JSON"):
        read_header(bad)
    broken = json.loads(json.dumps(header))
    broken["tensors"][0]["shape"] = [64, -96]
    with pytest.raises(MalformedHeaderError, match="shape"):
        read_header(rebuild(broken, payload))
    broken = json.loads(json.dumps(header))
    broken["tensors"][1]["shape"] = [65]  # raw size no longer matches
    with pytest.raises(MalformedHeaderError, match="bytes"):
        read_header(rebuild(broken, payload))
    with pytest.raises(MalformedHeaderError, match="after the payload"):
        read_header(wcodec_bytes + b"extra")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_fail_only_with_format_errors(wcodec_bytes, data):
    """Random byte flips, truncations and insertions: never a crash, never a wrong silent decode."""
    blob = bytearray(wcodec_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        pos = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if action == "flip" and blob:
            blob[pos] ^= data.draw(st.integers(1, 255))
        elif action == "truncate":
            del blob[pos:]
        else:
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        result = decode(bytes(blob))
    except WeightcodecError as exc:
        assert isinstance(exc, FormatError) and str(exc)
    else:  # if it decodes, it must be the original (e.g. a flip inside an ignored field)
        original = decode(wcodec_bytes)
        for name, tensor in original.state_dict.items():
            assert torch.equal(result.state_dict[name], tensor)


def _set(header: dict, name: str, path: tuple, value):
    node = next(t for t in header["tensors"] if t["name"] == name)
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize(
    "path, value, error, message",
    [
        (("hevc", "value_offset"), 0, MalformedHeaderError, "value_offset must be 128"),
        (("hevc", "frames"), 2, MalformedHeaderError, "frames 2 is not grid_rows x grid_cols"),
        (("hevc", "chroma"), "rgb24", UnknownCodecError, "chroma format 'rgb24'"),
        (("hevc", "matrix"), [6144], MalformedHeaderError, "matrix must be"),
        (("hevc", "grid_rows"), 2, MalformedHeaderError, "padding only"),
        (("hevc", "tile_width"), 4096, MalformedHeaderError, "tile_width 4096 must be"),
        (("hevc", "tile_height"), 15, MalformedHeaderError, "tile_height 15 must be even"),
        (("hevc", "qp"), 99, MalformedHeaderError, "qp must be null"),
        (("shape",), [2**63, 1], MalformedHeaderError, "shape must be"),
        (("shape",), [2**30, 2**30, 64], MalformedHeaderError, "more than the 2\\*\\*40"),
    ],
)
def test_header_fields_are_validated(wcodec_bytes, path, value, error, message):
    header, payload = split(wcodec_bytes)
    _set(header, "fc.weight", path, value)
    with pytest.raises(error, match=message):
        read_header(rebuild(header, payload))


@pytest.mark.parametrize(
    "raw, message",
    [(b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32"), (b'{"a": ' + b"7" * 5000 + b"}", "digits"),
     (b'{"a": NaN}', "NaN"), (b'{"tensors": [], "tensors": [], "model": {"kind": "state_dict"}}', "duplicate key")],
)
def test_hostile_json_is_a_malformed_header(wcodec_bytes, raw, message):
    _, payload = split(wcodec_bytes)
    data = PREFIX.pack(MAGIC, 2, 0, len(raw), len(raw), zlib.crc32(raw), 0, bytes(3), len(payload)) + raw + payload
    with pytest.raises(MalformedHeaderError, match=message):
        read_header(data)


def _with_segment(data: bytes, name: str, new_bytes: bytes, **fields) -> bytes:
    """Replace one tensor's data segment (appended at the end of the payload, CRCs recomputed)."""
    header, payload = split(data)
    seg = next(t for t in header["tensors"] if t["name"] == name)["data"]
    seg.update(offset=len(payload), length=len(new_bytes), crc32=zlib.crc32(new_bytes), **fields)
    return rebuild(header, payload + new_bytes)


def test_payload_values_are_validated(wcodec_bytes):
    import zstandard

    from weightcodec.errors import CorruptStreamError

    conv_int8 = split(wcodec_bytes)[0]["tensors"][2]
    n = 8 * 4 * 3 * 3
    assert conv_int8["storage"] == "int8"
    with pytest.raises(CorruptStreamError, match="-128"):
        decode(_with_segment(wcodec_bytes, "conv.weight", b"\x80" * n, compression="none"))
    # a zstd frame whose declared size is not the tensor's, and one that declares 1 TiB
    small = zstandard.ZstdCompressor().compress(b"\x01" * (n - 1))
    with pytest.raises(CorruptStreamError, match="declares"):
        decode(_with_segment(wcodec_bytes, "conv.weight", small, compression="zstd"))
    bomb = bytearray(zstandard.ZstdCompressor().compress(bytes(64)))
    with pytest.raises(CorruptStreamError):
        decode(_with_segment(wcodec_bytes, "conv.weight", bytes(bomb) + b"\x00" * 64, compression="zstd"))
    # bool tensors hold 0 or 1 only
    sd = {"mask": torch.tensor([True, False, True])}
    data = encode(sd, config=EncodeConfig(compress_raw=False)).data
    with pytest.raises(CorruptStreamError, match="bool"):
        decode(_with_segment(data, "mask", b"\x01\x02\x00"))
    assert decode(_with_segment(data, "mask", b"\x01\x00\x00")).state_dict["mask"].tolist() == [True, False, False]


def test_max_output_bytes_refuses_before_decoding(wcodec_bytes):
    from weightcodec.api import declared_output_bytes
    from weightcodec.errors import ResourceLimitError

    declared = declared_output_bytes(read_header(wcodec_bytes))
    assert declared == 4 * (64 * 96 + 64 + 8 * 4 * 3 * 3)
    with pytest.raises(ResourceLimitError, match="more than the limit"):
        decode(wcodec_bytes, max_output_bytes=declared - 1)
    assert len(decode(wcodec_bytes, max_output_bytes=declared).state_dict) == 3
