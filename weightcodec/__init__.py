"""weightcodec: neural-network weights as standard HEVC video bitstreams.

Weights are quantized to symmetric int8; fully-connected weight matrices are tiled into 8-bit
frames and coded with libx265 at a chosen QP; a ``.wcodec`` container (docs/FORMAT.md) holds the
streams, the raw int8 tensors, the quantization scales and everything else needed to rebuild the
model.
"""

__version__ = "0.1.0"

from .api import DecodeResult, EncodeReport, EncodeResult, LayerReport, decode, encode, read_header  # noqa: E402
from .config import EncodeConfig, HevcSettings, QuantSettings  # noqa: E402
from .errors import WeightcodecError  # noqa: E402

__all__ = [
    "DecodeResult", "EncodeConfig", "EncodeReport", "EncodeResult", "HevcSettings", "LayerReport",
    "QuantSettings", "WeightcodecError", "decode", "encode", "read_header", "__version__",
]
