"""Second backend: an ``ffmpeg`` executable driven through ffmpeg-python.

The executable is ``$WEIGHTCODEC_FFMPEG`` if set, else ``ffmpeg`` on PATH, else the one the
``imageio-ffmpeg`` package ships. It must have libx265 to encode; any FFmpeg decodes.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from ..config import HevcSettings
from ..errors import BackendError, BackendUnavailableError, CorruptStreamError
from ..hevc import parse_stream_info
from .base import FrameCodec, check_frames, register, require_module, yuv420_from_luma


def find_ffmpeg() -> str:
    candidate = os.environ.get("WEIGHTCODEC_FFMPEG") or shutil.which("ffmpeg")
    if candidate:
        return candidate
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # noqa: BLE001 - any failure means "no executable"
        raise BackendUnavailableError(
            "the ffmpeg backend needs an ffmpeg executable: put one on PATH, set WEIGHTCODEC_FFMPEG, "
            "or pip install imageio-ffmpeg"
        ) from exc


@register("ffmpeg")
class FFmpegCLICodec(FrameCodec):
    name = "ffmpeg"

    def __init__(self) -> None:
        self.executable = find_ffmpeg()

    @classmethod
    def check_available(cls) -> None:
        require_module("ffmpeg", "ffmpeg", "pip install ffmpeg-python")
        find_ffmpeg()

    def _run(self, stream_spec, data: bytes, what: str) -> bytes:
        import ffmpeg

        try:
            out, _ = (
                stream_spec.global_args("-hide_banner", "-nostdin", "-loglevel", "error")
                .run(cmd=self.executable, input=data, capture_stdout=True, capture_stderr=True)
            )
        except ffmpeg.Error as exc:
            message = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            raise BackendError(f"ffmpeg failed to {what}: {message[-1] if message else exc}") from exc
        except OSError as exc:
            raise BackendUnavailableError(f"cannot run {self.executable}: {exc}") from exc
        return out

    def encode(self, frames: np.ndarray, settings: HevcSettings) -> bytes:
        import ffmpeg

        check_frames(frames)
        _, height, width = frames.shape
        if settings.chroma == "yuv420p":
            raw = b"".join(yuv420_from_luma(f).tobytes() for f in frames)
        else:
            raw = np.ascontiguousarray(frames).tobytes()
        spec = ffmpeg.input("pipe:", format="rawvideo", pix_fmt=settings.chroma, s=f"{width}x{height}", framerate=25)
        spec = spec.output("pipe:", format="hevc", vcodec="libx265", preset=settings.preset,
                           force_key_frames="expr:1",
                           **{"x265-params": settings.x265_params(), "forced-idr": 1})
        return self._run(spec, raw, f"encode a {width}x{height} frame with libx265")

    def decode(self, stream: bytes) -> np.ndarray:
        import ffmpeg

        info = parse_stream_info(stream)
        pix_fmt = {0: "gray", 1: "yuv420p"}.get(info.chroma_format_idc)
        if pix_fmt is None:
            raise CorruptStreamError(f"unsupported chroma format {info.chroma} in stream")
        spec = ffmpeg.input("pipe:", format="hevc").output("pipe:", format="rawvideo", pix_fmt=pix_fmt)
        raw = self._run(spec, stream, "decode the HEVC stream")
        luma_size = info.width * info.height
        frame_size = luma_size * 3 // 2 if pix_fmt == "yuv420p" else luma_size
        if not raw or len(raw) % frame_size:
            raise CorruptStreamError(f"ffmpeg returned {len(raw)} bytes, not whole {info.width}x{info.height} frames")
        frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, frame_size)[:, :luma_size]
        return frames.reshape(-1, info.height, info.width).copy()
