"""zipnn on each coded layer's int8 bytes (lossless).

zipnn 0.5.4 has no integer dtype (integer input raises "Support only uint32 with NumPy format").
A byte buffer typed float8_e4m3fn takes its one-byte path: the sign bit is rotated (a bijection on
byte values) and each 128 KiB chunk is Huffman-coded (FSE huf0).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from .base import BytesPeer, PeerUnavailable


def _zipnn_module():
    with warnings.catch_warnings():  # zipnn imports torch.jit.script (deprecated)
        warnings.simplefilter("ignore")
        import zipnn
    return zipnn


class ZipNN(BytesPeer):
    name = "zipnn"
    id = "zipnn"
    family = "zipnn"
    label = "zipnn (int8)"

    def setup(self, comparison, log) -> None:
        try:
            _zipnn_module()
        except ImportError as exc:
            raise PeerUnavailable(f"zipnn not installed ({exc}); pip install zipnn (or the 'bench' extra)") from None

    @classmethod
    def memory_imports(cls) -> None:
        _zipnn_module()

    @staticmethod
    def codec():
        return _zipnn_module().ZipNN(input_format="byte", bytearray_dtype="float8_e4m3fn", threads=0)

    @classmethod
    def make_compressor(cls) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
        z = cls.codec()
        return z.compress, lambda c: bytes(z.decompress(c))

    def coded_settings(self) -> dict[str, Any]:
        import importlib.metadata

        return {"zipnn": importlib.metadata.version("zipnn"), "input_format": "byte",
                "bytearray_dtype": "float8_e4m3fn (one-byte path; zipnn has no int8 dtype)",
                "method": "AUTO (Huffman, 128 KiB chunks)", "threads": self.codec().threads, "per_layer": True}

    def timing_note(self) -> str:
        return f"ZipNN.compress/decompress of each layer's int8 bytes, threads={self.codec().threads}"
