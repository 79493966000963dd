"""zstd level 19 of each coded layer's int8 bytes (lossless; what the container does for int8 tensors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import BytesPeer

LEVEL = 19


class Zstd(BytesPeer):
    name = "zstd"
    id = "zstd/19"
    family = "zstd -19"
    label = "zstd -19 (int8)"

    @classmethod
    def memory_imports(cls) -> None:
        import zstandard  # noqa: F401

    @classmethod
    def make_compressor(cls) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
        import zstandard

        return (lambda b: zstandard.ZstdCompressor(level=LEVEL).compress(b),
                lambda c: zstandard.ZstdDecompressor().decompress(c))

    def coded_settings(self) -> dict[str, Any]:
        import zstandard

        return {"level": LEVEL, "per_layer": True, "zstandard": zstandard.__version__}

    def timing_note(self) -> str:
        return "compress/decompress of each layer's int8 bytes, one thread"
