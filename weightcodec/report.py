"""What an encode did: per-layer reports, notices (warnings) and totals. Plain data, no printing."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Notice:
    """Something the user should know about an encode (the CLI prints it; ``--json`` includes it)."""

    level: str  # "note" | "warning"
    message: str
    layers: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"level": self.level, "message": self.message, "layers": list(self.layers)}


@dataclass(frozen=True)
class LayerReport:
    """What happened to one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    storage: str  # "hevc" | "int8" | "raw"
    original_bytes: int
    stored_bytes: int  # data + scales segments
    granularity: str | None = None
    guard_db: float | None = None  # the guard's figure: median per-channel SQNR under per-tensor int8
    guard_switched: bool = False  # auto mode moved this layer to per-channel
    guard_threshold_db: float | None = None  # the threshold the guard applied to this layer
    qp: int | None = None
    lossless: bool | None = None
    profile: str | None = None
    level: str | None = None
    frames: int | None = None
    int8_rmse: float | None = None  # HEVC error in int8 units (with verify=True)
    int8_max_error: int | None = None
    encode_seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.original_bytes / max(self.stored_bytes, 1)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.stored_bytes / max(math.prod(self.shape), 1)

    def to_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


@dataclass(frozen=True)
class EncodeReport:
    layers: list[LayerReport]
    total_bytes: int  # the whole .wcodec file
    header_bytes: int
    original_bytes: int  # sum of the tensors as they came in
    seconds: float
    notices: list[Notice] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.original_bytes / max(self.total_bytes, 1)

    def bytes_by_storage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.storage] = out.get(layer.storage, 0) + layer.stored_bytes
        return out

    def to_json(self, output: str | Path | None = None) -> dict:
        return {
            "output": None if output is None else str(output), "total_bytes": self.total_bytes,
            "original_bytes": self.original_bytes, "header_bytes": self.header_bytes, "ratio": self.ratio,
            "seconds": self.seconds, "notices": [n.to_json() for n in self.notices],
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True)
class EncodeResult:
    data: bytes | None  # the container's bytes (None when it was written to ``path``)
    report: EncodeReport
    path: Path | None = None


__all__ = ["EncodeReport", "EncodeResult", "LayerReport", "Notice"]
