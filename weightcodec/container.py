"""The ``.wcodec`` file format (normative description: docs/FORMAT.md).

    prefix   28 bytes  magic "\\x89WCODEC\\n", u16 major, u16 minor, u32 header_length,
                       u32 header_crc32, u64 payload_length   (all little-endian)
    header   header_length bytes of UTF-8 JSON
    payload  payload_length bytes: the segments, at the offsets the header gives

Every segment (a tensor's data, its scales, a module skeleton) is a byte range of the payload with
its own CRC-32; segments never overlap and must lie inside the payload. A reader validates the
prefix, the header's checksum and schema and every range before it touches the payload, and checks
each segment's CRC-32 when it reads it. Each error is a specific subclass of FormatError.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    ChecksumMismatchError,
    CorruptStreamError,
    HeaderTooLargeError,
    MalformedHeaderError,
    NotAWcodecFileError,
    OffsetOutOfRangeError,
    TruncatedFileError,
    UnknownCodecError,
    UnsupportedVersionError,
)

MAGIC = b"\x89WCODEC\n"
PREFIX = struct.Struct("<8sHHIIQ")
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024

DTYPE_SIZES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}
STORAGE_KINDS = ("raw", "int8", "hevc")
COMPRESSIONS = ("none", "zstd")
QUANT_SCHEMES = ("symmetric-int8",)
GRANULARITIES = ("per-tensor", "per-channel")
MODEL_KINDS = ("state_dict", "module")


@dataclass(frozen=True)
class Segment:
    """A byte range of the payload, with the CRC-32 of its stored bytes."""

    offset: int
    length: int
    crc32: int
    compression: str = "none"

    def to_json(self) -> dict:
        out = {"offset": self.offset, "length": self.length, "crc32": self.crc32}
        if self.compression != "none":
            out["compression"] = self.compression
        return out


@dataclass(frozen=True)
class QuantInfo:
    granularity: str
    axis: int
    scales: Segment
    guard_db: float | None  # the guard's figure in dB (None when per-tensor int8 is exact)
    scheme: str = "symmetric-int8"

    @property
    def n_scales(self) -> int:
        return self.scales.length // 4 if self.scales.compression == "none" else -1


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    storage: str
    data: Segment
    quant: QuantInfo | None = None
    hevc: dict | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "name": self.name, "dtype": self.dtype, "shape": list(self.shape),
            "storage": self.storage, "data": self.data.to_json(),
        }
        if self.quant is not None:
            out["quant"] = {
                "scheme": self.quant.scheme, "granularity": self.quant.granularity, "axis": self.quant.axis,
                "guard_db": self.quant.guard_db, "scales": self.quant.scales.to_json(),
            }
        if self.hevc is not None:
            out["hevc"] = self.hevc
        return out


@dataclass
class Header:
    tensors: list[TensorEntry]
    model: dict = field(default_factory=lambda: {"kind": "state_dict"})
    producer: str = ""
    metadata: dict = field(default_factory=dict)
    version: tuple[int, int] = (FORMAT_MAJOR, FORMAT_MINOR)
    payload_length: int = 0
    file_length: int = 0

    def to_json(self) -> dict:
        return {
            "producer": self.producer, "model": self.model,
            "tensors": [t.to_json() for t in self.tensors], "metadata": self.metadata,
        }

    def segments(self) -> list[tuple[str, Segment]]:
        found = []
        skeleton = self.model.get("skeleton")
        if isinstance(skeleton, Segment):
            found.append(("module skeleton", skeleton))
        for t in self.tensors:
            found.append((f"{t.name} data", t.data))
            if t.quant is not None:
                found.append((f"{t.name} scales", t.quant.scales))
        return found


# --- writing ----------------------------------------------------------------------------------
class PayloadBuilder:
    """Collects segments in order and hands out their Segment descriptors."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._length = 0

    def add(self, data: bytes, *, compression: str = "none") -> Segment:
        seg = Segment(self._length, len(data), zlib.crc32(data), compression)
        self._parts.append(bytes(data))
        self._length += len(data)
        return seg

    def add_compressible(self, data: bytes, *, level: int | None) -> Segment:
        """Store zstd-compressed if ``level`` is given and that is smaller, else as is."""
        if level is not None and len(data) >= 64:
            import zstandard

            packed = zstandard.ZstdCompressor(level=level).compress(data)
            if len(packed) < len(data):
                return self.add(packed, compression="zstd")
        return self.add(data)

    @property
    def length(self) -> int:
        return self._length

    def chunks(self) -> list[bytes]:
        return self._parts


def serialize(header: Header, payload: PayloadBuilder) -> list[bytes]:
    """The file as a list of byte chunks (prefix, header, segments)."""
    model = dict(header.model)
    if isinstance(model.get("skeleton"), Segment):
        model["skeleton"] = model["skeleton"].to_json()
    doc = header.to_json()
    doc["model"] = model
    header_bytes = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    prefix = PREFIX.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(header_bytes), zlib.crc32(header_bytes), payload.length)
    return [prefix, header_bytes, *payload.chunks()]


# --- reading ----------------------------------------------------------------------------------
def parse_prefix(data: bytes, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> tuple[int, int, int, int, int]:
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NotAWcodecFileError("not a wcodec file (the magic bytes at the start are missing)")
    if len(data) < PREFIX.size:
        raise TruncatedFileError(f"truncated file: {len(data)} bytes, shorter than the {PREFIX.size}-byte prefix")
    _, major, minor, header_length, header_crc, payload_length = PREFIX.unpack_from(data)
    if major != FORMAT_MAJOR:
        raise UnsupportedVersionError(
            f"unsupported wcodec format version {major}.{minor}; this reader implements {FORMAT_MAJOR}.x"
        )
    if header_length > max_header_bytes:
        raise HeaderTooLargeError(f"header of {header_length} bytes exceeds the cap of {max_header_bytes} bytes")
    return major, minor, header_length, header_crc, payload_length


def read_header_bytes(data: bytes, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> tuple[Header, int]:
    """Parse and validate everything but the payload's contents; return the header and payload start."""
    major, minor, header_length, header_crc, payload_length = parse_prefix(data, max_header_bytes=max_header_bytes)
    header_end = PREFIX.size + header_length
    if len(data) < header_end:
        raise TruncatedFileError(f"truncated file: the header needs {header_end} bytes, the file has {len(data)}")
    header_bytes = bytes(data[PREFIX.size:header_end])
    if zlib.crc32(header_bytes) != header_crc:
        raise ChecksumMismatchError("header checksum mismatch: the header is corrupted")
    expected = header_end + payload_length
    if len(data) < expected:
        raise TruncatedFileError(f"truncated file: {len(data)} bytes of the {expected} the prefix declares")
    if len(data) > expected:
        raise MalformedHeaderError(f"{len(data) - expected} unexpected bytes after the payload")
    header = _parse_header_json(header_bytes)
    header.version = (major, minor)
    header.payload_length = payload_length
    header.file_length = expected
    _check_ranges(header, payload_length)
    return header, header_end


def read_segment(payload: memoryview | bytes, segment: Segment, *, what: str, expected_size: int | None = None) -> bytes:
    """The segment's bytes, checksum-verified and decompressed."""
    raw = bytes(payload[segment.offset: segment.offset + segment.length])
    if zlib.crc32(raw) != segment.crc32:
        raise ChecksumMismatchError(f"checksum mismatch in {what}: the payload is corrupted")
    if segment.compression == "zstd":
        import zstandard

        try:
            raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=expected_size or 0)
        except zstandard.ZstdError as exc:
            raise CorruptStreamError(f"{what}: zstd data could not be decompressed: {exc}") from exc
    if expected_size is not None and len(raw) != expected_size:
        raise CorruptStreamError(f"{what}: {len(raw)} bytes where {expected_size} were expected")
    return raw


def _check_ranges(header: Header, payload_length: int) -> None:
    spans = sorted(((seg.offset, seg.offset + seg.length, what) for what, seg in header.segments()))
    previous_end, previous_what = 0, None
    for start, end, what in spans:
        if end > payload_length:
            raise OffsetOutOfRangeError(
                f"{what} spans bytes {start}..{end} but the payload has only {payload_length} bytes"
            )
        if start < previous_end:
            raise OffsetOutOfRangeError(f"{what} overlaps {previous_what}")
        previous_end, previous_what = end, what


# --- schema validation ------------------------------------------------------------------------
def _fail(message: str):
    raise MalformedHeaderError(f"malformed header: {message}")


def _get(obj: dict, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj:
        _fail(f"{where} has no {key!r}")
    value = obj[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        _fail(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _segment(obj: Any, where: str) -> Segment:
    if not isinstance(obj, dict):
        _fail(f"{where} is not an object")
    offset, length, crc = (_get(obj, k, int, where) for k in ("offset", "length", "crc32"))
    if offset < 0 or length < 0 or not 0 <= crc < 2**32:
        _fail(f"{where} has a negative offset/length or an invalid crc32")
    compression = obj.get("compression", "none")
    if compression not in COMPRESSIONS:
        raise UnknownCodecError(f"unknown compression {compression!r} in {where}")
    return Segment(offset, length, crc, compression)


def _parse_header_json(header_bytes: bytes) -> Header:
    try:
        doc = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"not valid UTF-8 JSON ({exc})")
    if not isinstance(doc, dict):
        _fail("the top level is not an object")
    model = _get(doc, "model", dict, "header")
    kind = _get(model, "kind", str, "model")
    if kind not in MODEL_KINDS:
        _fail(f"model.kind {kind!r} is not one of {MODEL_KINDS}")
    model = dict(model)
    if kind == "module":
        model["skeleton"] = _segment(model.get("skeleton"), "model.skeleton")
    tensors, names = [], set()
    for i, item in enumerate(_get(doc, "tensors", list, "header")):
        entry = _parse_tensor(item, f"tensors[{i}]")
        if entry.name in names:
            _fail(f"duplicate tensor name {entry.name!r}")
        names.add(entry.name)
        tensors.append(entry)
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        _fail("metadata is not an object")
    producer = doc.get("producer", "")
    return Header(tensors=tensors, model=model, producer=str(producer), metadata=metadata)


def _parse_tensor(item: Any, where: str) -> TensorEntry:
    name = _get(item, "name", str, where)
    where = f"tensor {name!r}"
    dtype = _get(item, "dtype", str, where)
    if dtype not in DTYPE_SIZES:
        raise UnknownCodecError(f"{where} has unsupported dtype {dtype!r}")
    shape = _get(item, "shape", list, where)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape) or len(shape) > 8:
        _fail(f"{where}.shape must be a list of at most 8 non-negative integers")
    numel = math.prod(shape)
    storage = _get(item, "storage", str, where)
    if storage not in STORAGE_KINDS:
        raise UnknownCodecError(f"{where} uses unknown storage kind {storage!r}")
    data = _segment(item.get("data"), f"{where}.data")
    quant = None
    if storage in ("int8", "hevc"):
        q = _get(item, "quant", dict, where)
        scheme = _get(q, "scheme", str, f"{where}.quant")
        if scheme not in QUANT_SCHEMES:
            raise UnknownCodecError(f"{where} uses unknown quantization scheme {scheme!r}")
        granularity = _get(q, "granularity", str, f"{where}.quant")
        if granularity not in GRANULARITIES:
            raise UnknownCodecError(f"{where} uses unknown granularity {granularity!r}")
        axis = _get(q, "axis", int, f"{where}.quant")
        if not 0 <= axis < max(len(shape), 1):
            _fail(f"{where}.quant.axis {axis} is out of range for shape {shape}")
        sqnr = q.get("guard_db")
        if sqnr is not None and not isinstance(sqnr, (int, float)):
            _fail(f"{where}.quant.guard_db must be a number or null")
        scales = _segment(q.get("scales"), f"{where}.quant.scales")
        n_scales = 1 if granularity == "per-tensor" else shape[axis]
        if scales.compression != "none" or scales.length != 4 * n_scales:
            _fail(f"{where}.quant.scales must hold {n_scales} uncompressed float32 values")
        quant = QuantInfo(granularity, axis, scales, sqnr, scheme)
    if storage in ("raw", "int8") and data.compression == "none":
        size = numel * (1 if storage == "int8" else DTYPE_SIZES[dtype])
        if data.length != size:
            _fail(f"{where}.data holds {data.length} bytes, its shape and dtype need {size}")
    hevc = None
    if storage == "hevc":
        hevc = _get(item, "hevc", dict, where)
        codec = hevc.get("codec")
        if codec != "hevc":
            raise UnknownCodecError(f"{where} uses unknown codec {codec!r}")
        matrix = _get(hevc, "matrix", list, f"{where}.hevc")
        if len(matrix) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in matrix):
            _fail(f"{where}.hevc.matrix must be [rows, cols] of positive integers")
        rows, cols = matrix
        for key in ("tile_height", "tile_width", "grid_rows", "grid_cols", "value_offset"):
            value = _get(hevc, key, int, f"{where}.hevc")
            if value < 0 or (key != "value_offset" and value == 0):
                _fail(f"{where}.hevc.{key} must be positive")
        if rows * cols != numel:
            _fail(f"{where}.hevc.matrix {rows}x{cols} does not hold the {numel} elements of shape {shape}")
        if hevc["grid_rows"] * hevc["tile_height"] < rows or hevc["grid_cols"] * hevc["tile_width"] < cols:
            _fail(f"{where}.hevc tiles do not cover the {rows}x{cols} matrix")
        if hevc["grid_rows"] * hevc["grid_cols"] > 1_000_000:
            _fail(f"{where}.hevc has an unreasonable number of tiles")
    return TensorEntry(name, dtype, tuple(shape), storage, data, quant, hevc)


def read_file_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()
