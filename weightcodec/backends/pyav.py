"""Default backend: libx265 and FFmpeg's HEVC decoder in-process, through PyAV's wheels."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..config import HevcSettings
from ..errors import BackendError, BackendUnavailableError, CorruptStreamError
from .base import FrameCodec, check_frames, register, require_module, yuv420_from_luma


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

    def encode(self, frames: np.ndarray, settings: HevcSettings) -> bytes:
        import av

        check_frames(frames)
        _, height, width = frames.shape
        try:
            ctx = av.CodecContext.create("libx265", "w")
            ctx.width, ctx.height = width, height
            ctx.pix_fmt = settings.chroma
            ctx.time_base = Fraction(1, 25)
            ctx.options = {"preset": settings.preset, "x265-params": settings.x265_params(), "forced-idr": "1"}
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
        return bytes(out)

    def decode(self, stream: bytes) -> np.ndarray:
        import av

        try:
            ctx = av.CodecContext.create("hevc", "r")
            ctx.thread_count = 1  # frame threading adds latency and no speed on intra streams
            planes = []
            packets = list(ctx.parse(stream)) + list(ctx.parse(None))
            for packet in packets + [None]:
                for frame in ctx.decode(packet):
                    planes.append(_luma(frame))
        except av.FFmpegError as exc:
            raise CorruptStreamError(f"the HEVC decoder rejected the stream: {exc}") from exc
        if not planes:
            raise CorruptStreamError("the HEVC stream decoded to no pictures")
        return np.stack(planes)


def _luma(frame) -> np.ndarray:
    if frame.format.name not in ("yuv420p", "gray", "yuvj420p"):
        raise CorruptStreamError(f"unexpected decoded pixel format {frame.format.name}")
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width].copy()
