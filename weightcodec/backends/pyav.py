"""Default backend: libx265 and FFmpeg's HEVC decoder in-process, through PyAV's wheels.

Decoding runs after the shared pre-check (``check_stream``), with one decoder thread and the
same decoder options as the ffmpeg backend, packet by packet, writing each picture's luma
straight into the result (an array, or a sink such as the matrix being decoded).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..config import HevcSettings
from ..errors import BackendError, BackendUnavailableError, CorruptStreamError
from ..heap import release_free_memory
from .base import (
    DECODER_OPTIONS, FrameCodec, PictureSpec, check_frames, check_stream, output_buffer, register, require_module,
    store_picture, x265_params_for_run, yuv420_from_luma,
)


@register("pyav")
class PyAVCodec(FrameCodec):
    name = "pyav"

    @classmethod
    def check_available(cls) -> None:
        av = require_module("av", "pyav", "pip install av")
        if "libx265" not in av.codecs_available or "hevc" not in av.codecs_available:
            raise BackendUnavailableError(
                "this PyAV build has no libx265 encoder or HEVC decoder: pip install a PyAV wheel that bundles "
                "them (the default), or use --backend ffmpeg"
            )

    def encode(self, frames: np.ndarray, settings: HevcSettings, *, threads: int | None = None) -> bytes:
        import av

        check_frames(frames)
        _, height, width = frames.shape
        try:
            ctx = av.CodecContext.create("libx265", "w")
            ctx.width, ctx.height = width, height
            ctx.pix_fmt = settings.chroma
            ctx.time_base = Fraction(1, 25)
            ctx.options = {"preset": settings.preset, "x265-params": x265_params_for_run(settings, threads),
                           "forced-idr": "1"}
            out = bytearray()
            for index, luma in enumerate(frames):
                if settings.chroma == "yuv420p":
                    frame = av.VideoFrame.from_ndarray(yuv420_from_luma(luma), format="yuv420p")
                else:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(luma), format="gray")
                frame.pts = index
                frame.pict_type = av.video.frame.PictureType.I
                for packet in ctx.encode(frame):
                    out += bytes(packet)
            for packet in ctx.encode(None):
                out += bytes(packet)
        except av.FFmpegError as exc:
            raise BackendError(f"libx265 failed to encode a {width}x{height} frame: {exc}") from exc
        # close x265 and give its pictures' memory back before the stream is copied out, so the copy
        # does not add to the encoder's peak (a 32000x2048 matrix at QP 16: ~220 MB of x265, 46 MB stream)
        del ctx
        release_free_memory()
        return bytes(out)

    def decode(self, stream: bytes, expected: PictureSpec, *, out=None):
        import av

        check_stream(stream, expected)
        out = output_buffer(expected, out)
        count = 0
        try:
            ctx = av.CodecContext.create("hevc", "r")
            ctx.thread_count = 1  # frame threading adds latency and no speed on intra streams
            ctx.options = dict(DECODER_OPTIONS)
            for frame in _decoded_frames(ctx, stream):
                if count == expected.frames:
                    raise CorruptStreamError(
                        f"the HEVC stream decoded to more than the {expected.frames} picture(s) the header promises")
                store_picture(out, count, _luma(frame, expected))
                count += 1
        except av.FFmpegError as exc:
            raise CorruptStreamError(f"the HEVC decoder rejected the stream: {exc}") from exc
        if count != expected.frames:
            raise CorruptStreamError(
                f"the HEVC stream decoded to {count} picture(s), the header promises {expected.frames}")
        return out


def _decoded_frames(ctx, stream: bytes):
    """The decoded pictures of ``stream``, one at a time, in output order (parse, decode, flush).

    Unlike the ffmpeg executable, no demuxer probes the stream first (that would decode the first
    picture twice); the parameter sets it would copy into the decoder's extradata make no
    difference because ``check_stream`` requires each to be defined in-band before its use.
    """
    view = memoryview(stream)
    for start in range(0, len(view), _PARSE_BYTES):  # a slice at a time: no packet copy of the whole stream
        for packet in ctx.parse(bytes(view[start:start + _PARSE_BYTES])):
            yield from ctx.decode(packet)
    for packet in ctx.parse(None):
        yield from ctx.decode(packet)
    yield from ctx.decode(None)


#: Bytes of the stream handed to libavcodec's parser at a time.
_PARSE_BYTES = 1 << 20


def _luma(frame, expected: PictureSpec) -> np.ndarray:
    """One decoded picture's luma plane (a view of the frame's buffer) after checking its size and format."""
    if frame.format.name != expected.chroma:
        raise CorruptStreamError(
            f"the HEVC stream decoded to a {frame.format.name} picture, the header promises {expected.chroma}")
    if (frame.width, frame.height) != (expected.width, expected.height):
        raise CorruptStreamError(
            f"the HEVC stream decoded to a {frame.width}x{frame.height} picture, the header promises "
            f"{expected.width}x{expected.height}")
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8, count=plane.line_size * frame.height)
    return rows.reshape(frame.height, plane.line_size)[:, : frame.width]
