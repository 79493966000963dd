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

from .errors import (
    ChecksumMismatchError,
    CorruptStreamError,
    HeaderTooLargeError,
    MalformedHeaderError,
    NotAWcodecFileError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from .header import Header, Segment, fail

MAGIC = b"\x89WCODEC\n"
PREFIX = struct.Struct("<8sHHIIQ")
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024


# --- writing ----------------------------------------------------------------------------------
def maybe_compress(data: bytes, level: int | None) -> tuple[bytes, str]:
    """``(zstd frame, "zstd")`` if ``level`` is given and that is smaller, else ``(data, "none")``."""
    if level is not None and len(data) >= 64:
        import zstandard

        packed = zstandard.ZstdCompressor(level=level).compress(data)
        if len(packed) < len(data):
            return packed, "zstd"
    return data, "none"


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
        packed, compression = maybe_compress(data, level)
        return self.add(packed, compression=compression)

    @property
    def length(self) -> int:
        return self._length

    def chunks(self) -> list[bytes]:
        return self._parts


def serialize(header: Header, payload: PayloadBuilder) -> list[bytes]:
    """The file as a list of byte chunks (prefix, header, segments)."""
    header_bytes = json.dumps(header.to_json(), separators=(",", ":"), allow_nan=False).encode("utf-8")
    prefix = PREFIX.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(header_bytes), zlib.crc32(header_bytes), payload.length)
    return [prefix, header_bytes, *payload.chunks()]


# --- reading ----------------------------------------------------------------------------------
def parse_prefix(data: bytes, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> tuple[int, int, int, int, int]:
    """Steps 1-4 of the reader obligations: magic, prefix length, major version, header cap."""
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
    """Parse and validate everything but the payload's contents; return the header and payload start.

    The checks run in the order of docs/FORMAT.md section 2, so a file with several faults
    reports the first one the spec lists.
    """
    major, minor, header_length, header_crc, payload_length = parse_prefix(data, max_header_bytes=max_header_bytes)
    header_end = PREFIX.size + header_length
    if len(data) < header_end:
        raise TruncatedFileError(f"truncated file: the header needs {header_end} bytes, the file has {len(data)}")
    expected = header_end + payload_length
    if len(data) < expected:
        raise TruncatedFileError(f"truncated file: {len(data)} bytes of the {expected} the prefix declares")
    if len(data) > expected:
        raise MalformedHeaderError(f"{len(data) - expected} unexpected bytes after the payload")
    header_bytes = bytes(data[PREFIX.size:header_end])
    if zlib.crc32(header_bytes) != header_crc:
        raise ChecksumMismatchError("header checksum mismatch: the header is corrupted")
    header = parse_header_json(header_bytes)
    header.version = (major, minor)
    header.payload_length = payload_length
    header.file_length = expected
    header.validate(payload_length)
    return header, header_end


def parse_header_json(header_bytes: bytes) -> Header:
    """The header bytes as a validated :class:`~weightcodec.header.Header` (section 3 of the spec)."""
    return Header.from_json(load_json(header_bytes))


def read_segment(payload: memoryview | bytes, segment: Segment, *, what: str, expected_size: int | None = None,
                 max_size: int | None = None) -> bytes:
    """The segment's bytes, checksum-verified and decompressed.

    ``expected_size`` is the exact size the bytes must have after decompression (known from the
    tensor); where it is not known, ``max_size`` caps it. A zstd segment must be one frame that
    declares its content size, equal to ``expected_size`` (or at most ``max_size``): it is
    decompressed into a buffer of that size and never beyond, whatever the frame's blocks hold.
    """
    raw = bytes(payload[segment.offset: segment.offset + segment.length])
    if zlib.crc32(raw) != segment.crc32:
        raise ChecksumMismatchError(f"checksum mismatch in {what}: the payload is corrupted")
    if segment.compression == "zstd":
        raw = _unzstd(raw, what=what, expected_size=expected_size, max_size=max_size)
    if expected_size is not None and len(raw) != expected_size:
        raise CorruptStreamError(f"{what}: {len(raw)} bytes where {expected_size} were expected")
    if max_size is not None and len(raw) > max_size:
        raise CorruptStreamError(f"{what}: {len(raw)} bytes, more than the {max_size} allowed")
    return raw


def _unzstd(raw: bytes, *, what: str, expected_size: int | None, max_size: int | None) -> bytes:
    import zstandard

    try:
        declared = zstandard.frame_content_size(raw)
    except zstandard.ZstdError:
        raise CorruptStreamError(f"{what}: not a zstd frame") from None
    if declared < 0:
        raise CorruptStreamError(f"{what}: the zstd frame does not declare its content size")
    if expected_size is not None and declared != expected_size:
        raise CorruptStreamError(f"{what}: the zstd frame declares {declared} bytes where {expected_size} were expected")
    if max_size is not None and declared > max_size:
        raise CorruptStreamError(f"{what}: the zstd frame declares {declared} bytes, more than the {max_size} allowed")
    if declared == 0:
        return b""
    # zstd refuses to write past the declared content size ("destination buffer is too small"),
    # so the output is at most ``declared`` bytes however the blocks expand.
    reader = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = reader.decompress(raw)
    except zstandard.ZstdError as exc:
        raise CorruptStreamError(f"{what}: zstd data could not be decompressed: {exc}") from None
    if not reader.eof or reader.unused_data:
        raise CorruptStreamError(f"{what}: the segment is not exactly one complete zstd frame")
    if len(out) != declared:
        raise CorruptStreamError(f"{what}: the zstd frame decoded to {len(out)} bytes, it declares {declared}")
    return out


# --- JSON with limits -------------------------------------------------------------------------
#: Deepest nesting of arrays/objects a header may have (a valid header nests 5 deep).
MAX_JSON_DEPTH = 32
#: Most digits of a JSON integer (2**64 has 20).
MAX_JSON_INT_DIGITS = 20


def load_json(text: bytes) -> object:
    """Strict JSON for headers: UTF-8, nesting <= 32, integers of <= 20 digits, finite numbers,
    no NaN/Infinity, no duplicate keys. Anything else is a malformed header, never another error."""
    try:
        doc = json.loads(text.decode("utf-8"), parse_int=_parse_int, parse_float=_parse_float,
                         parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"not valid UTF-8 JSON ({exc})")
    except RecursionError:  # the C parser recurses per nesting level and stops at Python's limit
        fail(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    _check_depth(doc)
    return doc


def _check_depth(doc: object) -> None:
    containers, depth = [doc], 0
    while containers := [node for node in containers if isinstance(node, (list, dict))]:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            fail(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        containers = [child for node in containers for child in (node.values() if isinstance(node, dict) else node)]


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        fail(f"a JSON integer has more than {MAX_JSON_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        fail(f"the JSON number {text[:40]} is out of range")
    return value


def _reject_constant(text: str):
    fail(f"{text} is not allowed in a header (JSON has no NaN or infinity)")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        fail(f"duplicate key {duplicate!r} in a JSON object")
    return out
