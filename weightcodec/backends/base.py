"""The small interface every frame codec implements, and a registry of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import numpy as np

from ..config import HevcSettings
from ..errors import BackendUnavailableError, ConfigError


class FrameCodec(ABC):
    """Encodes a stack of 8-bit luma frames to one HEVC Annex-B stream, and back.

    ``encode`` takes ``uint8`` frames shaped ``(n, height, width)`` and returns the Annex-B bytes.
    ``decode`` returns the luma planes of the decoded pictures, ``uint8`` ``(n, height, width)``,
    whatever chroma format the stream carries. Implementations must write and read the luma plane
    directly: no colour-range or format conversion may touch the values.
    """

    name: ClassVar[str]

    @abstractmethod
    def encode(self, frames: np.ndarray, settings: HevcSettings) -> bytes: ...

    @abstractmethod
    def decode(self, stream: bytes) -> np.ndarray: ...

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


def check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 (n, height, width), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame sides must be even, got {frames.shape[1:]}")


def require_module(module: str, backend: str, hint: str):
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(f"the {backend} backend needs {module!r}: {hint}") from exc
