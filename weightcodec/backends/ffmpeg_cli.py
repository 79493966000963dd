"""Second backend: an ``ffmpeg`` executable driven through ffmpeg-python.

The executable is ``$WEIGHTCODEC_FFMPEG`` if set, else ``ffmpeg`` on PATH, else the one the
``imageio-ffmpeg`` package ships. It must have libx265 to encode; any FFmpeg >= 5.1 decodes.

Decoding runs the executable on the stream after the shared pre-check (``check_stream``) and
reads its raw output picture by picture straight into the result; a failing run is the stream's
fault (CorruptStreamError) once the executable has shown it decodes a known-good stream.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading

import numpy as np

from ..config import HevcSettings
from ..errors import BackendError, BackendUnavailableError, CorruptStreamError
from .base import (
    DECODER_OPTIONS, FrameCodec, PictureSpec, check_frames, check_stream, output_buffer, register, require_module,
    store_picture, x265_params_for_run, yuv420_from_luma,
)


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

    def encode(self, frames: np.ndarray, settings: HevcSettings, *, threads: int | None = None) -> bytes:
        import ffmpeg

        check_frames(frames)
        _, height, width = frames.shape
        to_bytes = (lambda f: yuv420_from_luma(f).tobytes()) if settings.chroma == "yuv420p" else np.ndarray.tobytes
        raw = b"".join(to_bytes(np.ascontiguousarray(f)) for f in frames)
        spec = ffmpeg.input("pipe:", format="rawvideo", pix_fmt=settings.chroma, s=f"{width}x{height}", framerate=25)
        spec = spec.output("pipe:", format="hevc", vcodec="libx265", preset=settings.preset,
                           force_key_frames="expr:1",
                           **{"x265-params": x265_params_for_run(settings, threads), "forced-idr": 1})
        return self._run(spec, raw, f"encode a {width}x{height} frame with libx265")

    def decode(self, stream: bytes, expected: PictureSpec, *, out=None):
        check_stream(stream, expected)  # before any output size or pix_fmt is taken for granted
        out = output_buffer(expected, out)
        failure = self._decode_into(bytes(stream), expected, out)
        if failure is None:
            return out
        self._check_executable()  # a failure is the stream's fault only if ffmpeg decodes a good one
        raise CorruptStreamError(f"ffmpeg could not decode the HEVC stream: {failure}")

    def _decode_args(self, expected: PictureSpec) -> list[str]:
        import ffmpeg

        # The decoder as strict as the pyav backend's (same options, one thread; -xerror makes a
        # decoding error fail the run); no scaling, no frame dropping or duplication, and the
        # pix_fmt the pre-check proved the stream decodes to, so nothing converts a picture.
        spec = (
            ffmpeg.input("pipe:", format="hevc", threads=1, **DECODER_OPTIONS)
            .output("pipe:", format="rawvideo", pix_fmt=expected.chroma, fps_mode="passthrough", noautoscale=None)
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-xerror")
        )
        return spec.compile(cmd=self.executable)

    def _decode_into(self, stream: bytes, expected: PictureSpec, out) -> str | None:
        """Decode with the executable, reading each picture's luma straight into ``out[k]`` (into a
        one-picture buffer handed to the sink's ``store`` when ``out`` is a sink).

        Returns None on success, else why it failed. The child is killed as soon as a byte more
        than ``expected`` pictures arrives; it is always reaped before this returns.
        """
        chroma = memoryview(bytearray(expected.height * expected.width // 2 if expected.chroma == "yuv420p" else 0))
        try:
            proc = subprocess.Popen(self._decode_args(expected), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise BackendUnavailableError(f"cannot run {self.executable}: {exc}") from exc
        stderr = _Tail(proc.stderr)
        writer = threading.Thread(target=_feed, args=(proc.stdin, stream), daemon=True)
        writer.start()
        pictures, excess = 0, False
        scratch = None if isinstance(out, np.ndarray) else np.empty(expected.shape[1:], dtype=np.uint8)
        try:
            while pictures < expected.frames:
                luma = out[pictures] if scratch is None else scratch
                if not _read_exact(proc.stdout, memoryview(luma).cast("B")) or not _read_exact(proc.stdout, chroma):
                    break
                if scratch is not None:
                    store_picture(out, pictures, scratch)
                pictures += 1
            else:
                excess = bool(proc.stdout.read(1))
        except BaseException:
            proc.kill()
            _reap(proc, writer, stderr)
            raise
        if excess:
            proc.kill()
        returncode = _reap(proc, writer, stderr)
        if excess:
            return f"it decoded to more than the {expected.frames} picture(s) the header promises"
        if returncode < 0:
            return f"ffmpeg died from signal {-returncode}{stderr.last_line()}"
        if returncode > 0:
            return f"exit status {returncode}{stderr.last_line()}"
        if pictures < expected.frames:
            return f"it decoded to {pictures} whole picture(s), the header promises {expected.frames}"
        return None

    def _check_executable(self) -> None:
        """BackendError unless this executable decodes a known-good stream with the options we pass (cached)."""
        if self.executable in _VERIFIED:
            return
        expected = PictureSpec(1, 16, 16)
        failure = self._decode_into(SELF_TEST_STREAM, expected, np.empty(expected.shape, np.uint8))
        if failure is not None:
            raise BackendError(
                f"{self.executable} cannot decode a known-good HEVC stream with the options weightcodec passes "
                f"(it needs FFmpeg >= 5.1 with the hevc decoder): {failure}")
        _VERIFIED.add(self.executable)


#: A 16x16 Main-profile picture from libx265 (qp 51): the self-test that tells an unusable ffmpeg
#: from a corrupt stream.
SELF_TEST_STREAM = base64.b64decode(
    "AAAAAUABDAH//wFgAAADAJAAAAMAAAMAHroCQAAAAAFCAQEBYAAAAwCQAAADAAADAB6giEWW6W8LmgIAAAMAAgAAAwAyEAAAAAFEAcBxgRIAAAEo"
    "AawZYCh2asU=")
_VERIFIED: set[str] = set()


def _feed(pipe, data: bytes) -> None:
    """Write the stream to the child's stdin (in a thread: the main thread reads stdout meanwhile)."""
    try:
        pipe.write(data)
    except (OSError, ValueError):  # the child stopped reading (broken pipe): its exit status says why
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _read_exact(pipe, view: memoryview) -> bool:
    """Fill ``view`` from an unbuffered pipe; False if it ends first."""
    filled = 0
    while filled < len(view):
        n = pipe.readinto(view[filled:])
        if not n:
            return False
        filled += n
    return True


def _reap(proc: subprocess.Popen, writer: threading.Thread, stderr: "_Tail") -> int:
    """Close our end of stdout, wait for the child (killing it if it lingers), join the helper threads."""
    proc.stdout.close()  # a child still writing gets EPIPE / SIGPIPE and ends
    try:
        returncode = proc.wait(timeout=_REAP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        returncode = proc.wait()
    writer.join()
    stderr.join()
    return returncode


_REAP_SECONDS = 60.0


class _Tail:
    """Drains a pipe in a thread, keeping its last few KB (ffmpeg's error message)."""

    def __init__(self, pipe, keep: int = 4096):
        self.pipe, self.keep, self.data = pipe, keep, b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.pipe:
            for chunk in iter(lambda: self.pipe.read(65536), b""):
                self.data = (self.data + chunk)[-self.keep:]

    def join(self) -> None:
        self.thread.join()

    def last_line(self) -> str:
        lines = [line.strip() for line in self.data.decode(errors="replace").splitlines() if line.strip()]
        return f": {lines[-1]}" if lines else ""
