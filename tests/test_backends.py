"""HEVC frame codecs: exactness, monotonicity, cross-decoder agreement, stream legality."""

import numpy as np
import pytest
import torch

from tests.helpers import require_asset, smooth_matrix
from weightcodec.backends import PictureSpec, check_stream, get_backend
from weightcodec.config import HevcSettings
from weightcodec.errors import CorruptStreamError
from weightcodec.hevc import parse_stream_info
from weightcodec.quant import quantize
from weightcodec.tiling import MatrixAssembler, TiledFrames, frames_to_matrix, matrix_to_frames, plan_tiles


@pytest.fixture(scope="module")
def int8_matrix() -> np.ndarray:
    return quantize(smooth_matrix(120, 256, seed=3)).values


def frames_of(matrix, max_side=4096):
    layout = plan_tiles(*matrix.shape, max_height=max_side, max_width=max_side)
    return layout, matrix_to_frames(matrix, layout)


def spec(frames: np.ndarray, chroma: str = "yuv420p") -> PictureSpec:
    return PictureSpec(*frames.shape, chroma=chroma)


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
@pytest.mark.parametrize("chroma", ["yuv420p", "gray"])
def test_lossless_round_trip_is_exact(int8_matrix, backend, chroma):
    codec = get_backend(backend)
    layout, frames = frames_of(int8_matrix, max_side=64)  # several tiles
    stream = codec.encode(frames, HevcSettings(lossless=True, chroma=chroma))
    assert np.array_equal(frames_to_matrix(codec.decode(stream, spec(frames, chroma)), layout), int8_matrix)


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
@pytest.mark.parametrize("chroma", ["yuv420p", "gray"])
def test_frames_made_on_demand_and_decoded_into_the_matrix_change_nothing(int8_matrix, backend, chroma):
    """The codec path of the encoder (TiledFrames in, a MatrixAssembler out) against whole frame stacks."""
    codec = get_backend(backend)
    layout, frames = frames_of(int8_matrix, max_side=64)
    settings = HevcSettings(qp=30, chroma=chroma)
    stream = codec.encode(frames, settings)
    assert codec.encode(TiledFrames(int8_matrix, layout), settings) == stream
    assembler = MatrixAssembler(layout)
    assert codec.decode(stream, spec(frames, chroma), out=assembler) is assembler
    assert np.array_equal(assembler.matrix, frames_to_matrix(codec.decode(stream, spec(frames, chroma)), layout))
    other = MatrixAssembler(plan_tiles(*int8_matrix.shape, max_height=32, max_width=32))  # other pictures
    with pytest.raises(ValueError, match="frame sink"):
        codec.decode(stream, spec(frames, chroma), out=other)


def test_error_grows_and_size_falls_as_qp_rises(int8_matrix):
    codec = get_backend("pyav")
    layout, frames = frames_of(int8_matrix)
    sizes, errors = [], []
    for qp in (10, 22, 28, 34, 40, 46):
        stream = codec.encode(frames, HevcSettings(qp=qp))
        decoded = frames_to_matrix(codec.decode(stream, spec(frames)), layout)
        sizes.append(len(stream))
        errors.append(np.sqrt(np.mean((decoded.astype(float) - int8_matrix) ** 2)))
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] < 1.0 and errors[-1] > 5.0


def test_both_decoders_give_identical_int8_for_the_same_stream(int8_matrix):
    pyav, ffmpeg = get_backend("pyav"), get_backend("ffmpeg")
    layout, frames = frames_of(int8_matrix, max_side=128)
    for encoder in (pyav, ffmpeg):
        stream = encoder.encode(frames, HevcSettings(qp=30))
        a = frames_to_matrix(pyav.decode(stream, spec(frames)), layout)
        b = frames_to_matrix(ffmpeg.decode(stream, spec(frames)), layout)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, int8_matrix)  # lossy, so the agreement is not trivial


def test_decoding_is_deterministic(int8_matrix):
    codec = get_backend("pyav")
    _, frames = frames_of(int8_matrix)
    stream = codec.encode(frames, HevcSettings(qp=32))
    assert all(np.array_equal(codec.decode(stream, spec(frames)), codec.decode(stream, spec(frames))) for _ in range(3))


def test_default_stream_is_main_profile_420_and_gray_is_rext_monochrome(int8_matrix):
    codec = get_backend("pyav")
    _, frames = frames_of(int8_matrix)
    main = parse_stream_info(codec.encode(frames, HevcSettings(qp=28)))
    assert (main.profile_idc, main.profile, main.chroma) == (1, "Main", "4:2:0")
    assert (main.width, main.height) == (frames.shape[2], frames.shape[1])
    assert main.level_idc <= 123  # level 4.1 or lower for this size
    gray = parse_stream_info(codec.encode(frames, HevcSettings(qp=28, chroma="gray")))
    assert gray.profile_idc == 4 and gray.chroma == "4:0:0" and gray.monochrome_constraint


def test_qp_number_is_the_coded_qp_not_x265s_offset_one(int8_matrix):
    """With ipratio=1 an intra stream at qp N codes like x265's default at N+3 does not: check sizes bracket."""
    codec = get_backend("pyav")
    _, frames = frames_of(int8_matrix)
    ours = len(codec.encode(frames, HevcSettings(qp=30)))
    offset = len(codec.encode(frames, HevcSettings(qp=30, extra_x265_params=(("ipratio", "1.4"),))))
    assert offset > ours * 1.1  # x265's default I-frame offset would have coded at QP 27


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_garbage_stream_raises_a_clear_error(backend):
    with pytest.raises(CorruptStreamError, match="a slice refers to PPS 31 before any PPS 31"):
        get_backend(backend).decode(b"\x00\x00\x01" + bytes(range(256)) * 4, PictureSpec(1, 16, 16))
    with pytest.raises(CorruptStreamError):
        parse_stream_info(b"not a stream")


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_streams_are_deterministic_8bit_and_what_the_precheck_expects(int8_matrix, backend):
    codec = get_backend(backend)
    _, frames = frames_of(int8_matrix, max_side=128)
    stream = codec.encode(frames, HevcSettings(qp=30))
    assert stream == codec.encode(frames, HevcSettings(qp=30))
    info = check_stream(stream, spec(frames))
    assert (info.bit_depth_luma, info.bit_depth_chroma) == (8, 8)
    # coded sizes are whole minimum CUs: 16x16 with the default effort (min-cu-size=16), 8x8 in x265's presets
    assert (info.coded_width, info.coded_height, info.width, info.height) == (128, 128, 128, 120)
    info = check_stream(codec.encode(frames, HevcSettings(qp=30, effort="max")), spec(frames))
    assert (info.coded_width, info.coded_height) == (128, 120)


@pytest.mark.assets
def test_real_mnist_layer_codes_below_two_bits_per_weight_at_qp28():
    sd = torch.load(require_asset("mnist", "mlp_784_500_250_10.pth"), weights_only=True)
    matrix = quantize(sd["l1.weight"].numpy()).values
    codec = get_backend("pyav")
    layout, frames = frames_of(matrix)
    stream = codec.encode(frames, HevcSettings(qp=28))
    decoded = frames_to_matrix(codec.decode(stream, spec(frames)), layout)
    rmse = np.sqrt(np.mean((decoded.astype(float) - matrix) ** 2))
    assert 8 * len(stream) / matrix.size < 2.0
    assert 2.0 < rmse < 8.0


def test_freed_heap_memory_can_be_handed_back_where_glibc_allocates():
    import platform

    from weightcodec.heap import release_free_memory

    assert release_free_memory() is (platform.libc_ver()[0] == "glibc")
