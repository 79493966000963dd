"""The small interface every frame codec implements, and a registry of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol

import numpy as np

from ..config import CHROMA_FORMATS, HevcSettings
from ..errors import BackendUnavailableError, ConfigError, CorruptStreamError
from ..hevc import (
    CHROMA_NAMES, MAX_SIDE, NAL_PPS, NAL_SPS, NAL_VPS, SLICE_SEGMENT_TYPES, StreamInfo, iter_nal_units, nal_layer_id,
    nal_header_valid, nal_type, parse_sps, pps_ids, slice_pps_id, starts_picture, vps_id,
)

#: chroma_format_idc of each supported ``PictureSpec.chroma``.
CHROMA_FORMAT_IDC = {"yuv420p": 1, "gray": 0}
#: A coded picture may exceed its cropped size by at most this much per side (x265 pads to its
#: minimum coding-block size, 8; a CTB is at most 64): a larger SPS would make the decoder
#: allocate big pictures behind a small conformance window.
MAX_CROP = 64
#: libavcodec HEVC decoder options both backends pass: fail on every error the decoder detects
#: instead of concealing it. Measured with ``python -m tools.fuzz_decode`` (2000 seeded mutants
#: of real streams, seed 0): after the pre-check the decoder rejects 69 with it, 31 without; the
#: two backends (one decoder thread each) agree on acceptance either way, and without the
#: pre-check only with it (0 disagreements in 600 mutants, 2-3 without).
DECODER_OPTIONS = {"err_detect": "explode"}


@dataclass(frozen=True)
class PictureSpec:
    """What the container header promises about one HEVC stream."""

    frames: int
    height: int
    width: int
    chroma: str = "yuv420p"  # "yuv420p" (chroma_format_idc 1) or "gray" (0)
    bit_depth: int = 8

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width", "bit_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"PictureSpec.{name} must be an integer, got {value!r}")
        if self.frames < 1:
            raise ConfigError(f"PictureSpec.frames must be at least 1, got {self.frames}")
        if not (1 <= self.height <= MAX_SIDE and 1 <= self.width <= MAX_SIDE):
            raise ConfigError(f"PictureSpec picture size {self.width}x{self.height} is outside 1..{MAX_SIDE}")
        if self.chroma not in CHROMA_FORMATS:
            raise ConfigError(f"PictureSpec.chroma must be one of {CHROMA_FORMATS}, got {self.chroma!r}")
        if self.bit_depth != 8:
            raise ConfigError(f"only 8-bit HEVC streams are supported, not {self.bit_depth}-bit")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)


class FrameCodec(ABC):
    """Encodes a stack of 8-bit luma frames to one HEVC Annex-B stream, and back.

    ``encode`` takes ``uint8`` frames shaped ``(n, height, width)`` and returns the Annex-B bytes.
    The frames are an array, or a :class:`~weightcodec.tiling.TiledFrames` that makes each frame
    as it is read (codecs iterate over the frames and use ``shape``, nothing else).
    ``decode`` returns the luma planes of the decoded pictures, ``uint8`` ``expected.shape`` (in
    ``out`` when given: a C-contiguous writeable ``uint8`` array of exactly that shape, whose
    contents are unspecified if decoding fails). ``out`` may instead be a :class:`FrameSink`
    (e.g. :class:`~weightcodec.tiling.MatrixAssembler`): each picture is then handed to its
    ``store`` as it is decoded, and the sink is returned. Implementations must write and read the
    luma plane directly: no colour-range or format conversion may touch the values.

    ``threads`` caps x265's thread pool (``pools``; None: x265's default, all cores). It never
    changes a byte of the stream (measured by ``tools/measure_speed.py`` for every preset tried)
    and is not part of ``settings``, so the header records the same settings whatever it is.

    ``decode`` raises :class:`CorruptStreamError` (one line saying what differed) whenever the
    stream is not exactly what ``expected`` promises: another number, size, chroma format or bit
    depth of pictures, undecodable data, no SPS. It checks the stream with :func:`check_stream`
    before decoding anything, then every decoded picture, and never holds more than
    ``expected.frames`` decoded pictures. ``BackendError`` is for failures that are not the
    stream's fault (encoder crash, an unusable executable).
    """

    name: ClassVar[str]

    @abstractmethod
    def encode(self, frames: np.ndarray, settings: HevcSettings, *, threads: int | None = None) -> bytes: ...

    @abstractmethod
    def decode(self, stream: bytes, expected: PictureSpec, *,
               out: np.ndarray | FrameSink | None = None) -> np.ndarray | FrameSink: ...

    @classmethod
    def check_available(cls) -> None:
        """Raise BackendUnavailableError if this backend cannot run here."""


_REGISTRY: dict[str, Callable[[], FrameCodec]] = {}


def register(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory
    return wrap


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> FrameCodec:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; choose one of {available_backends()}")
    factory = _REGISTRY[name]
    factory.check_available()
    return factory()


def yuv420_from_luma(frame: np.ndarray) -> np.ndarray:
    """Planar yuv420p buffer (height * 3/2, width) with the given luma and flat 128 chroma."""
    height, width = frame.shape
    out = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    out[:height] = frame
    return out


#: x265 parameters that save time or memory and never change a byte of the stream, so they are
#: passed at run time and not recorded in the header's settings. ``rc-lookahead=0``: with intra
#: pictures at a constant QP (no cutree, no adaptive quantization) the lookahead decides nothing,
#: but by default x265 holds up to 20 (medium) or 40 (veryslow) pictures in it: 421 MB more peak
#: memory for a 15-tile 32000x2048 matrix, 217 MB with it (measured; tests/test_threads.py checks
#: that the streams are identical).
RUNTIME_X265_PARAMS = (("rc-lookahead", "0"),)


def x265_params_for_run(settings: HevcSettings, threads: int | None) -> str:
    """The ``x265-params`` string to pass: the run-time parameters (and the thread-pool size if
    capped) first, then the settings' own, which win where they set the same key."""
    params = [f"{k}={v}" for k, v in RUNTIME_X265_PARAMS]
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        params.append(f"pools={threads}")
    return ":".join([*params, settings.x265_params()])


def check_frames(frames: np.ndarray) -> None:
    """``frames`` (an array or a TiledFrames) is a non-empty uint8 stack of frames with even sides."""
    if frames.dtype != np.uint8 or frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 (n, height, width), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame sides must be even, got {frames.shape[1:]}")


def require_module(module: str, backend: str, hint: str):
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(f"the {backend} backend needs {module!r}: {hint}") from exc


def check_stream(stream: bytes, expected: PictureSpec) -> StreamInfo:
    """The decoders' shared pre-check: CorruptStreamError unless the stream can only decode to ``expected``.

    Walks the Annex-B NAL units without decoding anything: every SPS must declare the expected
    cropped size (and a coded size at most ``MAX_CROP`` larger), chroma format and 8-bit luma
    and chroma; every SPS, PPS and slice may refer only to parameter sets defined before it in
    the stream (a NAL unit with an invalid header, or another layer's, defines nothing: decoders
    skip it), so that what decodes does not depend on the parameter sets libavformat probes
    ahead into the ffmpeg executable's extradata; the stream must hold exactly
    ``expected.frames`` pictures (slice segments with ``first_slice_segment_in_pic_flag``), and
    the walk stops at the first picture too many. Returns the first SPS.
    """
    if not isinstance(stream, (bytes, bytearray, memoryview)):
        raise TypeError(f"stream must be bytes, got {type(stream).__name__}")
    first: StreamInfo | None = None
    vps_seen: set[int] = set()
    sps_seen: set[int] = set()
    pps_seen: set[int] = set()
    pictures = 0
    for nal in iter_nal_units(stream):
        if len(nal) < 2:
            continue
        kind = nal_type(nal)
        usable = nal_header_valid(nal) and nal_layer_id(nal) == 0  # what a base-layer decoder does not skip
        if kind == NAL_VPS:
            if usable:
                vps_seen.add(vps_id(nal))
        elif kind == NAL_SPS:
            info = parse_sps(nal)
            _check_sps(info, expected)
            _require(info.vps_id, vps_seen, "an SPS", "VPS")
            if usable:
                sps_seen.add(info.sps_id)
            first = first or info
        elif kind == NAL_PPS and usable:
            pps, sps = pps_ids(nal)
            _require(sps, sps_seen, "a PPS", "SPS")
            pps_seen.add(pps)
        elif kind in SLICE_SEGMENT_TYPES:
            if nal_layer_id(nal) != 0:
                raise CorruptStreamError(f"slice for layer {nal_layer_id(nal)}: multi-layer streams are not supported")
            if starts_picture(nal):
                pictures += 1
                if pictures > expected.frames:
                    raise CorruptStreamError(
                        f"the HEVC stream holds more than the {expected.frames} picture(s) the header promises")
            if usable and len(nal) > 2:
                _require(slice_pps_id(nal), pps_seen, "a slice", "PPS")
    if first is None:
        raise CorruptStreamError("no sequence parameter set in the HEVC stream")
    if pictures != expected.frames:
        raise CorruptStreamError(
            f"the HEVC stream holds {pictures} picture(s), the header promises {expected.frames}")
    return first


def _require(ident: int, seen: set[int], what: str, kind: str) -> None:
    if ident not in seen:
        raise CorruptStreamError(f"in the HEVC stream {what} refers to {kind} {ident} before any {kind} {ident}")


def _check_sps(info: StreamInfo, expected: PictureSpec) -> None:
    if (info.width, info.height) != (expected.width, expected.height):
        raise CorruptStreamError(
            f"the HEVC stream declares {info.width}x{info.height} pictures, the header promises "
            f"{expected.width}x{expected.height}")
    if info.coded_width - info.width >= MAX_CROP or info.coded_height - info.height >= MAX_CROP:
        raise CorruptStreamError(
            f"the HEVC stream codes {info.coded_width}x{info.coded_height} pictures for "
            f"{info.width}x{info.height} ones (at most {MAX_CROP - 1} samples of padding a side)")
    want = CHROMA_FORMAT_IDC[expected.chroma]
    if info.chroma_format_idc != want or info.separate_colour_planes:
        got = "4:4:4 (separate planes)" if info.separate_colour_planes else info.chroma
        raise CorruptStreamError(
            f"the HEVC stream declares chroma format {got}, the header promises {CHROMA_NAMES[want]} "
            f"({expected.chroma})")
    if (info.bit_depth_luma, info.bit_depth_chroma) != (expected.bit_depth, expected.bit_depth):
        raise CorruptStreamError(
            f"the HEVC stream declares {info.bit_depth_luma}-bit luma and {info.bit_depth_chroma}-bit chroma, "
            f"the header promises {expected.bit_depth}-bit")


class FrameSink(Protocol):
    """Where a decoder may put pictures instead of an array: ``store(index, luma)`` takes picture
    ``index``'s luma plane (``uint8`` ``shape[1:]``, any strides, valid only during the call)."""

    shape: tuple[int, int, int]

    def store(self, index: int, luma: np.ndarray) -> None: ...


def store_picture(out: np.ndarray | FrameSink, index: int, luma: np.ndarray) -> None:
    """Put one decoded picture's luma into ``out`` (an array from :func:`output_buffer`, or a sink)."""
    if isinstance(out, np.ndarray):
        out[index] = luma
    else:
        out.store(index, luma)


def output_buffer(expected: PictureSpec, out: np.ndarray | FrameSink | None) -> np.ndarray | FrameSink:
    """``out`` checked against ``expected`` (C-contiguous writeable uint8 of its shape, or a sink
    for pictures of that shape), or a new array."""
    if out is None:
        return np.empty(expected.shape, dtype=np.uint8)
    if not isinstance(out, np.ndarray) and callable(getattr(out, "store", None)):
        if tuple(out.shape) != expected.shape:
            raise ValueError(f"the frame sink takes {tuple(out.shape)} pictures, the stream holds {expected.shape}")
        return out
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != expected.shape \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(
            f"out must be a writeable C-contiguous uint8 array of shape {expected.shape}, got "
            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    return out
