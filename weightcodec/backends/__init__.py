"""Frame codecs behind one small interface; ``get_backend(name)`` returns one."""

from . import ffmpeg_cli, pyav  # noqa: F401  (register the backends)
from .base import FrameCodec, PictureSpec, available_backends, check_stream, get_backend

__all__ = ["FrameCodec", "PictureSpec", "available_backends", "check_stream", "get_backend"]
