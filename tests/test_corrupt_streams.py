"""Hostile HEVC streams: both backends reject them the same way, bounded, without a dead child.

Every stream here is built from real libx265 output: seeded mutations, concatenations (more
pictures, a size change mid-stream), SPS rewrites (width 0, huge, a big coded size behind a small
crop), a 10-bit and a 4:4:4 stream, gray where 4:2:0 is promised, and video bombs.
"""

from __future__ import annotations

import shutil
from fractions import Fraction

import numpy as np
import pytest

from tools.fuzz import escape_rbsp
from tools.fuzz_decode import MUTATION_KINDS, dec265, mutate
from weightcodec.backends import PictureSpec, check_stream, ffmpeg_cli, get_backend, pyav
from weightcodec.config import HevcSettings
from weightcodec.errors import BackendError, BackendUnavailableError, ConfigError, CorruptStreamError, WeightcodecError
from weightcodec.hevc import NAL_SPS, _Bits, _rbsp, iter_nal_units, nal_type, parse_sps, parse_stream_info

BACKENDS = ("pyav", "ffmpeg")
SHAPE = (2, 64, 96)  # frames, height, width
SPEC = PictureSpec(*SHAPE)


# --- building hostile streams ------------------------------------------------------------------
def random_frames(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(128, 24, shape).clip(0, 255).astype(np.uint8)


def x265(planes: list[np.ndarray], pix_fmt: str, width: int, height: int) -> bytes:
    """libx265 through PyAV for pixel formats the backends do not encode (10-bit, 4:4:4)."""
    import av

    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, pix_fmt, Fraction(1, 25)
    ctx.options = {"preset": "ultrafast", "x265-params": "log-level=error:info=0:qp=30", "forced-idr": "1"}
    out = bytearray()
    for index, plane in enumerate(planes):
        frame = av.VideoFrame.from_ndarray(plane, format=pix_fmt)
        frame.pts = index
        out += b"".join(bytes(p) for p in ctx.encode(frame))
    out += b"".join(bytes(p) for p in ctx.encode(None))
    return bytes(out)


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def rewrite_sps(stream: bytes, **fields) -> bytes:
    """Every SPS of ``stream`` with some of its leading ue fields replaced (emulation prevention re-inserted).

    Fields: chroma_format_idc, width, height, crop (left, right, top, bottom) or None, bit_depth_luma_minus8,
    bit_depth_chroma_minus8. Only for single-sub-layer SPSs (what libx265 writes for intra streams).
    """
    out = bytearray()
    for nal in iter_nal_units(stream):
        if nal_type(nal) == NAL_SPS:
            bits = _Bits(_rbsp(nal[2:]))
            bits.u(4)
            assert bits.u(3) == 0, "rewrite_sps handles single-sub-layer SPSs only"
            bits.u(1 + 96)  # temporal nesting + profile_tier_level
            head = bits.pos
            sps_id, chroma = bits.ue("id"), bits.ue("chroma")
            separate = bits.u(1) if chroma == 3 else None
            width, height = bits.ue("w"), bits.ue("h")
            crop = tuple(bits.ue("crop") for _ in range(4)) if bits.u(1) else None
            depth_luma, depth_chroma = bits.ue("bd"), bits.ue("bd")
            tail = bits.pos
            values = dict(chroma_format_idc=chroma, width=width, height=height, crop=crop,
                          bit_depth_luma_minus8=depth_luma, bit_depth_chroma_minus8=depth_chroma)
            values.update(fields)
            middle = _ue(sps_id) + _ue(values["chroma_format_idc"])
            if values["chroma_format_idc"] == 3:
                middle += str(separate or 0)
            middle += _ue(values["width"]) + _ue(values["height"])
            middle += "0" if values["crop"] is None else "1" + "".join(_ue(v) for v in values["crop"])
            middle += _ue(values["bit_depth_luma_minus8"]) + _ue(values["bit_depth_chroma_minus8"])
            all_bits = "".join(f"{b:08b}" for b in bits.data)
            new = (all_bits[:head] + middle + all_bits[tail:]).rstrip("0")  # keep the rbsp stop bit, re-align
            new += "0" * (-len(new) % 8)
            rbsp = int(new, 2).to_bytes(len(new) // 8, "big")
            nal = nal[:2] + escape_rbsp(rbsp)
        out += b"\x00\x00\x00\x01" + nal
    return bytes(out)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return random_frames(SHAPE, seed=1)


@pytest.fixture(scope="module")
def stream(frames) -> bytes:
    return get_backend("pyav").encode(frames, HevcSettings(qp=30, preset="fast"))


@pytest.fixture(scope="module")
def gray_stream(frames) -> bytes:
    return get_backend("pyav").encode(frames, HevcSettings(qp=30, chroma="gray", preset="fast"))


@pytest.fixture(scope="module")
def clean(stream) -> np.ndarray:
    return get_backend("pyav").decode(stream, SPEC)


def outcome(backend: str, data: bytes, spec: PictureSpec):
    """The decoded array, or the class of the weightcodec error (anything else fails the test)."""
    try:
        return get_backend(backend).decode(data, spec)
    except WeightcodecError as exc:
        assert "\n" not in str(exc), f"{backend}: a multi-line error: {exc}"
        return type(exc)


def same_outcome(data: bytes, spec: PictureSpec):
    """Decode with both backends, assert they agree, return the common outcome."""
    a, b = (outcome(backend, data, spec) for backend in BACKENDS)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        assert a.shape == spec.shape and a.dtype == np.uint8
        assert np.array_equal(a, b), "both backends accepted the stream but decoded different pictures"
    else:
        assert a is b, f"pyav gives {a}, ffmpeg gives {b}"
    return a


def rejected(data: bytes, spec: PictureSpec, match: str) -> None:
    for backend in BACKENDS:
        with pytest.raises(CorruptStreamError, match=match):
            get_backend(backend).decode(data, spec)


# --- valid streams -----------------------------------------------------------------------------
def test_the_valid_stream_decodes_the_same_in_both_backends(stream, clean, frames):
    assert same_outcome(stream, SPEC).shape == SHAPE
    assert np.abs(clean.astype(int) - frames).mean() < 6  # qp 30: close to the input, not equal
    assert check_stream(stream, SPEC).width == SHAPE[2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_writes_into_the_callers_buffer(backend, stream, clean):
    out = np.zeros(SHAPE, np.uint8)
    assert get_backend(backend).decode(stream, SPEC, out=out) is out
    assert np.array_equal(out, clean)
    wrong_shape, wrong_dtype = np.zeros((3, 64, 96), np.uint8), np.zeros(SHAPE, np.int16)
    not_contiguous = np.zeros((2, 96, 64), np.uint8).transpose(0, 2, 1)
    for bad in (wrong_shape, wrong_dtype, not_contiguous):
        with pytest.raises(ValueError, match="out must be"):
            get_backend(backend).decode(stream, SPEC, out=bad)


@pytest.mark.skipif(shutil.which("libde265-dec265") is None, reason="libde265-dec265 (apt libde265-examples) absent")
def test_libde265_as_a_third_opinion_on_valid_streams(stream, gray_stream, clean):
    assert np.array_equal(dec265(stream, dict(frames=2, height=64, width=96, chroma="yuv420p")), clean)
    gray = get_backend("ffmpeg").decode(gray_stream, PictureSpec(*SHAPE, chroma="gray"))
    assert np.array_equal(dec265(gray_stream, dict(frames=2, height=64, width=96, chroma="gray")), gray)


def test_two_streams_concatenated_are_one_longer_valid_stream(stream, clean):
    twice = same_outcome(stream + stream, PictureSpec(4, 64, 96))
    assert np.array_equal(twice, np.concatenate([clean, clean]))


def test_picture_spec_rejects_what_no_stream_can_satisfy():
    for bad in (dict(frames=0), dict(height=0), dict(width=16385), dict(chroma="yuv444p"), dict(bit_depth=10),
                dict(frames=1.5)):
        with pytest.raises(ConfigError):
            PictureSpec(**{"frames": 1, "height": 16, "width": 16, **bad})


# --- what the header promises is not what the stream holds -------------------------------------
def test_more_pictures_than_promised(stream):
    rejected(stream + stream, SPEC, r"more than the 2 picture")
    rejected(stream, PictureSpec(1, 64, 96), r"more than the 1 picture")


def test_fewer_pictures_than_promised(stream):
    rejected(stream, PictureSpec(3, 64, 96), r"holds 2 picture\(s\), the header promises 3")


def test_picture_size_changes_mid_stream(stream):
    other = get_backend("pyav").encode(random_frames((2, 48, 80)), HevcSettings(qp=30))
    rejected(stream + other, PictureSpec(4, 64, 96), r"declares 80x48 pictures, the header promises 96x64")
    rejected(other + stream, PictureSpec(4, 48, 80), r"declares 96x64 pictures, the header promises 80x48")


def test_another_size_than_promised(stream):
    rejected(stream, PictureSpec(2, 64, 98), r"declares 96x64 pictures, the header promises 98x64")


def test_ten_bit_stream_is_rejected_by_both():
    ten = x265([np.full((96, 96), 512, np.uint16)] * 2, "yuv420p10le", 96, 64)
    assert parse_stream_info(ten).bit_depth_luma == 10
    rejected(ten, SPEC, r"declares 10-bit luma and 10-bit chroma, the header promises 8-bit")


def test_444_stream_where_420_is_promised():
    full = x265([np.full((3, 64, 96), 128, np.uint8)] * 2, "yuv444p", 96, 64)
    rejected(full, SPEC, r"chroma format 4:4:4, the header promises 4:2:0")


def test_gray_and_420_are_not_interchangeable(stream, gray_stream):
    rejected(gray_stream, SPEC, r"chroma format 4:0:0, the header promises 4:2:0")
    rejected(stream, PictureSpec(*SHAPE, chroma="gray"), r"chroma format 4:2:0, the header promises 4:0:0")
    assert same_outcome(gray_stream, PictureSpec(*SHAPE, chroma="gray")).shape == SHAPE


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x01", bytes(1000), b"\x00\x00\x01\x40\x01"])
def test_empty_streams_are_rejected(data):
    rejected(data, SPEC, r"no sequence parameter set|video parameter set ends early")


def nal_units(stream: bytes, drop=()) -> list[bytes]:
    return [nal for n, nal in enumerate(iter_nal_units(stream)) if n not in drop]


def annexb(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def test_stream_without_sps(stream):
    no_sps = annexb([n for n in nal_units(stream) if nal_type(n) != NAL_SPS])
    rejected(no_sps, SPEC, r"a PPS refers to SPS 0 before any")
    rejected(annexb(nal_units(stream)[:1]), SPEC, r"no sequence parameter set")


def test_parameter_sets_must_come_before_their_use(stream):
    """Found by tools/fuzz_decode.py: without its first VPS and SPS the ffmpeg CLI decoded the first
    picture with the later SPS it had probed into its extradata, while libavcodec in-process rejected it."""
    kinds = [nal_type(n) for n in nal_units(stream)]
    assert kinds[:4] == [32, 33, 34, 20]
    rejected(annexb(nal_units(stream, drop=(0, 1))), SPEC, r"a PPS refers to SPS 0 before any SPS 0")
    rejected(annexb(nal_units(stream, drop=(0,))), SPEC, r"an SPS refers to VPS 0 before any VPS 0")
    rejected(annexb(nal_units(stream, drop=(2,))), SPEC, r"a slice refers to PPS 0 before any PPS 0")
    # A VPS whose header has nuh_temporal_id_plus1 = 0 is skipped by decoders, so it defines nothing.
    nals = nal_units(stream)
    nals[0] = nals[0][:1] + bytes([nals[0][1] & 0xF8]) + nals[0][2:]
    rejected(annexb(nals), SPEC, r"an SPS refers to VPS 0 before any VPS 0")
    reused = annexb(nal_units(stream, drop=(4, 5, 6)))  # the second picture reuses the first's parameter sets
    assert np.array_equal(same_outcome(reused, SPEC), get_backend("pyav").decode(stream, SPEC))


# --- forged sequence parameter sets ------------------------------------------------------------
def test_rewrite_sps_is_faithful(stream, clean):
    """The forging helper itself: rewriting nothing, or the same values, changes no picture."""
    same = rewrite_sps(stream, width=96, height=64)
    assert np.array_equal(same_outcome(same, SPEC), clean)
    assert parse_stream_info(rewrite_sps(stream, width=160)).width == 160


@pytest.mark.parametrize("width", [0, 16385, 2**31, 2**32 - 2])
def test_sps_width_zero_or_huge(stream, width):
    forged = rewrite_sps(stream, width=width)
    with pytest.raises(CorruptStreamError, match=rf"declares {width}x64 pictures \(sides must be 1..16384\)"):
        parse_stream_info(forged)
    rejected(forged, SPEC, r"sides must be 1..16384")


def test_sps_declaring_a_big_picture_is_rejected_before_decoding(stream):
    rejected(rewrite_sps(stream, width=4096, height=2160), SPEC, r"declares 4096x2160 pictures")


def test_big_coded_picture_behind_a_small_crop(stream):
    """A 16384x16384 coded picture cropped to the promised 96x64 would still make the decoder allocate it."""
    forged = rewrite_sps(stream, width=16384, height=16384, crop=(0, (16384 - 96) // 2, 0, (16384 - 64) // 2))
    assert (parse_stream_info(forged).width, parse_stream_info(forged).height) == (96, 64)
    rejected(forged, SPEC, r"codes 16384x16384 pictures for 96x64 ones")


def test_sps_crop_to_nothing_and_bad_bit_depth(stream):
    rejected(rewrite_sps(stream, crop=(0, 48, 0, 0)), SPEC, r"crops its 96x64 pictures to nothing")
    rejected(rewrite_sps(stream, bit_depth_luma_minus8=9), SPEC, r"bit_depth_luma_minus8 = 9")
    rejected(rewrite_sps(stream, bit_depth_chroma_minus8=2), SPEC, r"8-bit luma and 10-bit chroma")
    rejected(rewrite_sps(stream, chroma_format_idc=7), SPEC, r"chroma_format_idc = 7")


def test_sps_parser_takes_arbitrary_bytes():
    """Random SPS bodies: a StreamInfo with bounded values, or CorruptStreamError, never anything else."""
    rng = np.random.default_rng(7)
    parsed = 0
    for n in range(3000):
        body = rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
        if n % 3 == 0:  # mostly zero bits: long Exp-Golomb prefixes
            body = bytes(b & int(rng.integers(0, 256)) & 0x0F for b in body)
        try:
            info = parse_sps(b"\x42\x01" + body)
        except CorruptStreamError:
            continue
        parsed += 1
        assert 1 <= info.width <= info.coded_width <= 16384 and 1 <= info.height <= info.coded_height <= 16384
        assert 0 <= info.chroma_format_idc <= 3 and 8 <= info.bit_depth_luma <= 16
    assert parsed > 0  # the loop did reach the far end of the parser


def test_exp_golomb_values_are_bounded(stream):
    nal = next(n for n in iter_nal_units(stream) if nal_type(n) == NAL_SPS)
    rbsp = _rbsp(nal[2:])  # 1 byte of ids, 12 of profile_tier_level, then sps_seq_parameter_set_id
    with pytest.raises(CorruptStreamError, match="bad Exp-Golomb code for sps_seq_parameter_set_id"):
        parse_sps(nal[:2] + escape_rbsp(rbsp[:13] + bytes(20) + b"\xff"))


# --- corrupted data: the two backends agree ----------------------------------------------------
@pytest.mark.parametrize("kind", MUTATION_KINDS)
def test_seeded_mutations_get_the_same_outcome_from_both_backends(stream, clean, kind):
    outcomes = []
    for seed in range(12):
        _, mutant = mutate(stream, np.random.default_rng([99, seed]), kind)
        result = same_outcome(mutant, SPEC)
        outcomes.append("ok" if isinstance(result, np.ndarray) else result.__name__)
    assert set(outcomes) <= {"ok", "CorruptStreamError"}, outcomes


def test_truncated_streams(stream, clean):
    last_slice = stream.rindex(b"\x00\x00\x01\x28")  # the second picture's slice segment (CRA_NUT)
    for cut in (1, 10, len(stream) // 3, last_slice, last_slice + 5):
        result = same_outcome(stream[:cut], SPEC)
        assert result is CorruptStreamError, f"a stream cut at {cut} of {len(stream)} bytes was accepted"
    # Cut inside the last slice's data: libavcodec's CABAC does not notice a missing tail, so the
    # cut may decode to altered pictures (the container's CRC-32 is what catches that) - identically.
    for cut in (len(stream) - 40, len(stream) - 1):
        result = same_outcome(stream[:cut], SPEC)
        assert result is CorruptStreamError or not np.array_equal(result, clean) or cut == len(stream) - 1


def test_both_backends_report_the_errors_libavcodec_would_conceal(stream, monkeypatch):
    """err_detect=explode is applied in both: some corruption is rejected with it, concealed without it."""
    mutants = [mutate(stream, np.random.default_rng([5, i]), kind)[1]
               for kind in ("startcode", "insert", "zero", "delete") for i in range(60)]

    def rejects(backend, data):
        return outcome(backend, data, SPEC) is CorruptStreamError

    strict = [rejects("pyav", m) for m in mutants]
    for module in (pyav, ffmpeg_cli):
        monkeypatch.setattr(module, "DECODER_OPTIONS", {})
    lenient = [rejects("pyav", m) for m in mutants]
    concealed = [m for m, a, b in zip(mutants, strict, lenient) if a and not b]
    assert len(concealed) >= 2 and sum(strict) == sum(lenient) + len(concealed)
    assert not any(rejects("ffmpeg", m) for m in concealed)  # the ffmpeg CLI conceals them too without it
    monkeypatch.undo()
    assert all(rejects("ffmpeg", m) for m in concealed)  # and rejects them with it, like pyav


# --- video bombs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_bomb() -> bytes:
    """The fuzz campaign's case: one 4096x2160 picture repeated 200 times (447 KB) behind a 1-tile header."""
    big = get_backend("pyav").encode(np.full((1, 2160, 4096), 128, np.uint8), HevcSettings(qp=40, preset="ultrafast"))
    return big * 200


def count_decoded_pictures(monkeypatch) -> list[int]:
    counter = [0]
    original = pyav._decoded_frames

    def counting(ctx, data):
        for frame in original(ctx, data):
            counter[0] += 1
            yield frame
    monkeypatch.setattr(pyav, "_decoded_frames", counting)
    return counter


def count_ffmpeg_bytes(monkeypatch) -> list[int]:
    counter = [0]
    original = ffmpeg_cli._read_exact

    def counting(pipe, view):
        ok = original(pipe, view)
        counter[0] += len(view) if ok else 0
        return ok
    monkeypatch.setattr(ffmpeg_cli, "_read_exact", counting)
    return counter


def no_precheck(monkeypatch):
    """Take the shared pre-check away, to show each backend's own bound during decoding."""
    for module in (pyav, ffmpeg_cli):
        monkeypatch.setattr(module, "check_stream", lambda stream, expected: None)


def test_bomb_of_repeated_pictures_is_rejected_before_decoding(stream, monkeypatch):
    decoded, read = count_decoded_pictures(monkeypatch), count_ffmpeg_bytes(monkeypatch)
    rejected(stream * 200, PictureSpec(1, 64, 96), r"more than the 1 picture")
    assert decoded == [0] and read == [0]


def test_bomb_is_bounded_by_the_decoders_too(stream, monkeypatch):
    """Without the pre-check, pyav stops at the first picture too many and ffmpeg is killed."""
    no_precheck(monkeypatch)
    decoded, read = count_decoded_pictures(monkeypatch), count_ffmpeg_bytes(monkeypatch)
    rejected(stream * 200, PictureSpec(1, 64, 96), r"decoded to more than the 1 picture")
    assert decoded == [2]  # expected + 1
    assert read[0] == 64 * 96 * 3 // 2  # one 4:2:0 picture; the next byte got the child killed


def test_big_picture_bomb_is_rejected(big_bomb, monkeypatch):
    decoded, read = count_decoded_pictures(monkeypatch), count_ffmpeg_bytes(monkeypatch)
    rejected(big_bomb, PictureSpec(1, 64, 96), r"declares 4096x2160 pictures, the header promises 96x64")
    assert decoded == [0] and read == [0]
    no_precheck(monkeypatch)
    rejected(big_bomb, PictureSpec(1, 64, 96), r"4096x2160|more than the 1 picture")
    assert decoded == [1]  # pyav: the first big picture, rejected for its size
    assert read[0] == 64 * 96 * 3 // 2  # ffmpeg: one expected picture's worth of bytes, then killed


# --- the ffmpeg executable itself --------------------------------------------------------------
def test_an_unusable_ffmpeg_is_a_backend_error_not_a_corrupt_stream(stream, monkeypatch):
    monkeypatch.setenv("WEIGHTCODEC_FFMPEG", "/bin/false")
    with pytest.raises(BackendError, match="cannot decode a known-good HEVC stream") as info:
        get_backend("ffmpeg").decode(stream, SPEC)
    assert not isinstance(info.value, CorruptStreamError)
    monkeypatch.setenv("WEIGHTCODEC_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(BackendUnavailableError):
        get_backend("ffmpeg").decode(stream, SPEC)


def test_a_killed_child_is_a_corrupt_stream_and_leaves_no_process(stream, monkeypatch):
    """A child that dies from a signal (as a crashing decoder would) is reported, never returned as a result."""
    codec = get_backend("ffmpeg")
    codec._check_executable()  # the real executable is known good (cached), so the failure is the stream's
    original = codec._decode_args
    monkeypatch.setattr(codec, "_decode_args", lambda expected: ["sh", "-c", "kill -SEGV $$"])
    with pytest.raises(CorruptStreamError, match="died from signal 11"):
        codec.decode(stream, SPEC)
    monkeypatch.setattr(codec, "_decode_args", original)
    assert np.array_equal(codec.decode(stream, SPEC), get_backend("pyav").decode(stream, SPEC))


def test_a_malformed_pps_is_rejected_before_decoding():
    """Every PPS is parsed in full (H.265 7.3.2.3.1): bad ranges and bad trailing bits are corrupt."""
    from weightcodec.hevc import NAL_PPS, pps_ids

    stream = get_backend("pyav").encode(random_frames((1, 64, 96)), HevcSettings(qp=30))
    pps = next(n for n in iter_nal_units(stream) if nal_type(n) == NAL_PPS)
    assert pps_ids(pps) == (0, 0)
    for bad in (pps + b"\x80", pps[:-1], pps[:2] + b"\xff" * 6):
        with pytest.raises(CorruptStreamError, match="picture parameter set"):
            pps_ids(bad)
        with pytest.raises(CorruptStreamError):
            check_stream(stream.replace(pps, bad, 1), PictureSpec(1, 64, 96))
