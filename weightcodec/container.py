"""The ``.wcodec`` file format (normative description: docs/FORMAT.md).

Version 2 (written)::

    prefix   36 bytes  magic "\\x89WCODEC\\n", u16 major = 2, u16 minor, u32 header_stored_length,
                       u32 header_length, u32 header_crc32, u8 header_compression, 3 zero bytes,
                       u64 payload_length   (all little-endian)
    header   header_stored_length bytes: UTF-8 JSON, zstd-compressed when header_compression = 1
    payload  payload_length bytes: the segments, at the offsets the header gives

Version 1 (read): a 28-byte prefix (magic, u16 major = 1, u16 minor, u32 header_length,
u32 header_crc32, u64 payload_length) and an uncompressed header; the same JSON and payload.

Every segment (a tensor's data, its scales, a module skeleton) is a byte range of the payload with
its own CRC-32; segments never overlap and must lie inside the payload. A reader validates the
prefix, the header's checksum and schema and every range before it touches the payload, and checks
each segment's CRC-32 when it reads it. Each error is a specific subclass of FormatError.

:class:`ContainerWriter` streams segments to a temporary file as they are produced and writes the
file (atomically) once the header is known; :class:`ContainerReader` reads the header and then
only the segments asked for, from a memory map of the file.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import (
    ChecksumMismatchError,
    CorruptStreamError,
    HeaderTooLargeError,
    MalformedHeaderError,
    NotAWcodecFileError,
    TruncatedFileError,
    UnsupportedVersionError,
    WeightcodecError,
)
from .header import Header, Segment, fail

MAGIC = b"\x89WCODEC\n"
PREFIX_V1 = struct.Struct("<8sHHIIQ")
PREFIX_V2 = struct.Struct("<8sHHIIIB3sQ")
PREFIX = PREFIX_V2
FORMAT_MAJOR = 2
#: The highest minor version written: 2.1 adds aliases, column scales, more dtypes, safetensors /
#: hf-folder models, and the ``layout``, ``stored_dtype`` and ``plan`` members. A file is written
#: with the lowest minor version that describes it (:meth:`Header.minor_version`).
FORMAT_MINOR = 1
LATEST_MINOR = FORMAT_MINOR
READABLE_MAJORS = (1, 2)
HEADER_NONE, HEADER_ZSTD = 0, 1
DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024
HEADER_ZSTD_LEVEL = 19
_CHUNK = 1 << 20
#: Segments smaller than this are not worth a madvise call.
_DROP_MIN = 1 << 20


# --- writing ----------------------------------------------------------------------------------
def maybe_compress(data: bytes, level: int | None) -> tuple[bytes, str]:
    """``(zstd frame, "zstd")`` if ``level`` is given and that is smaller, else ``(data, "none")``."""
    if level is not None and len(data) >= 64:
        import zstandard

        packed = zstandard.ZstdCompressor(level=level).compress(data)
        if len(packed) < len(data):
            return packed, "zstd"
    return data, "none"


def header_bytes(header: Header) -> bytes:
    """The header's JSON as written (compact, UTF-8)."""
    return json.dumps(header.to_json(), separators=(",", ":"), allow_nan=False).encode("utf-8")


def pack_prefix_and_header(raw_header: bytes, payload_length: int, *, compress: bool = True,
                           minor: int = 0) -> list[bytes]:
    """The version-2 prefix and stored header for ``raw_header`` (JSON bytes) and a payload length."""
    stored, compression = maybe_compress(raw_header, HEADER_ZSTD_LEVEL if compress else None)
    flag = HEADER_ZSTD if compression == "zstd" else HEADER_NONE
    prefix = PREFIX_V2.pack(MAGIC, FORMAT_MAJOR, minor, len(stored), len(raw_header), zlib.crc32(stored),
                            flag, b"\0\0\0", payload_length)
    return [prefix, stored]


class ContainerWriter:
    """Collects segments in order and writes the container once the header is known.

    With a ``path``, segments go to an unnamed temporary file beside it as they are added (memory
    stays bounded by the largest segment), and :meth:`finish` writes prefix, header and payload to
    ``path`` all or nothing. Without one, everything stays in memory and :meth:`finish` returns
    the file's bytes.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._length = 0
        self._parts: list[bytes] = []
        self._spool = None
        if self.path is not None:
            from .atomic import resolve_output

            folder = resolve_output(self.path).parent
            try:
                self._spool = tempfile.TemporaryFile(dir=folder)
            except OSError as exc:
                from .errors import OutputError

                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def add(self, data: bytes, *, compression: str = "none") -> Segment:
        seg = Segment(self._length, len(data), zlib.crc32(data), compression)
        if self._spool is not None:
            self._spool.write(data)
        else:
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

    def finish(self, header: Header) -> tuple[int, int, bytes | None]:
        """Write the file; returns ``(file bytes, stored header bytes, the file's bytes or None)``."""
        # 2.0 unless the header uses what 2.1 added (then older 2.0 readers fail clearly on it)
        head = pack_prefix_and_header(header_bytes(header), self._length, minor=header.minor_version())
        total = sum(map(len, head)) + self._length
        if self._spool is None:
            return total, len(head[1]), b"".join([*head, *self._parts])
        from .atomic import atomic_write

        try:
            atomic_write(self.path, self._chunks(head))
        finally:
            self.close()
        return total, len(head[1]), None

    def _chunks(self, head: list[bytes]) -> Iterator[bytes]:
        yield from head
        self._spool.flush()
        self._spool.seek(0)
        while chunk := self._spool.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pack_raw(header: dict, payload: bytes, *, major: int = FORMAT_MAJOR, minor: int = 0,
             compress: bool = False, crc: int | None = None) -> bytes:
    """A file from a header *dict* and payload bytes, for tools and tests that build files by hand
    (the fuzzer, the spec tests): version 1 or 2 layout, the header CRC computed unless given."""
    raw = json.dumps(header).encode("utf-8")
    if major == 1:
        return PREFIX_V1.pack(MAGIC, major, minor, len(raw), zlib.crc32(raw) if crc is None else crc,
                              len(payload)) + raw + payload
    prefix, stored = pack_prefix_and_header(raw, len(payload), compress=compress)
    fields = list(PREFIX_V2.unpack(prefix))
    fields[1], fields[2] = major, minor
    if crc is not None:
        fields[5] = crc
    return PREFIX_V2.pack(*fields) + stored + payload


def unpack_raw(data: bytes) -> tuple[dict, bytes]:
    """Inverse of :func:`pack_raw` for a valid file: the header as a dict, and the payload bytes."""
    prefix = parse_prefix(data[:PREFIX_V2.size])
    stored = data[prefix.size:prefix.payload_offset]
    if prefix.header_compression == HEADER_ZSTD:
        stored = _unzstd(stored, what="header", expected_size=prefix.header_length, max_size=None)
    return json.loads(stored), bytes(data[prefix.payload_offset:prefix.file_length])


# --- reading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prefix:
    major: int
    minor: int
    size: int  # bytes of the prefix: where the stored header starts
    header_stored_length: int
    header_length: int
    header_crc32: int
    header_compression: int
    payload_length: int

    @property
    def payload_offset(self) -> int:
        return self.size + self.header_stored_length

    @property
    def file_length(self) -> int:
        return self.payload_offset + self.payload_length


def parse_prefix(data: bytes, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> Prefix:
    """Steps 1-4 of the reader obligations: magic, prefix length, major version, header cap.

    ``data`` is the start of the file (at least the prefix, if the file has one).
    """
    if len(data) < len(MAGIC) or bytes(data[: len(MAGIC)]) != MAGIC:
        raise NotAWcodecFileError("not a wcodec file (the magic bytes at the start are missing)")
    if len(data) < 12:
        raise TruncatedFileError(f"truncated file: {len(data)} bytes, shorter than the prefix")
    major, minor = struct.unpack_from("<HH", data, 8)
    if major not in READABLE_MAJORS:
        raise UnsupportedVersionError(
            f"unsupported wcodec format version {major}.{minor}; this reader implements versions 1.x and 2.x"
        )
    layout = PREFIX_V1 if major == 1 else PREFIX_V2
    if len(data) < layout.size:
        raise TruncatedFileError(f"truncated file: {len(data)} bytes, shorter than the {layout.size}-byte prefix")
    if major == 1:
        _, _, _, length, crc, payload_length = PREFIX_V1.unpack_from(data)
        prefix = Prefix(1, minor, PREFIX_V1.size, length, length, crc, HEADER_NONE, payload_length)
    else:
        _, _, _, stored, length, crc, compression, reserved, payload_length = PREFIX_V2.unpack_from(data)
        if compression not in (HEADER_NONE, HEADER_ZSTD) or reserved != b"\0\0\0":
            fail(f"unknown header compression {compression} or non-zero reserved prefix bytes")
        if compression == HEADER_NONE and stored != length:
            fail(f"an uncompressed header of {length} bytes is stored in {stored}")
        prefix = Prefix(2, minor, PREFIX_V2.size, stored, length, crc, compression, payload_length)
    if prefix.header_length > max_header_bytes or prefix.header_stored_length > max_header_bytes:
        raise HeaderTooLargeError(f"header of {prefix.header_length} bytes exceeds the cap of {max_header_bytes} bytes")
    return prefix


class ContainerReader:
    """A validated ``.wcodec`` file: its :class:`Header`, and its segments on demand.

    ``source`` is a path (read through a memory map: only the prefix, the header and the segments
    asked for are touched) or the file's bytes. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, source: str | Path | bytes | bytearray | memoryview, *,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        self._file = self._map = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data = memoryview(source)
        else:
            self._data = self._open(Path(source))
        try:
            self.header, self.payload_offset = _parse(self._data, max_header_bytes=max_header_bytes)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path) -> memoryview:
        try:
            self._file = open(path, "rb")
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                return memoryview(b"")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise WeightcodecError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise WeightcodecError(f"{path} is a directory, not a .wcodec file") from None
        except OSError as exc:
            self.close()
            raise WeightcodecError(f"cannot read {path}: {exc.strerror or exc}") from None
        return memoryview(self._map)

    def read(self, segment: Segment, what: str, expected_size: int | None = None,
             max_size: int | None = None) -> bytes:
        """The segment's bytes, checksum-verified and decompressed (see :func:`read_segment`)."""
        payload = self._data[self.payload_offset:]
        try:
            return read_segment(payload, segment, what=what, expected_size=expected_size, max_size=max_size)
        finally:
            payload.release()
            self._drop(segment)

    def _drop(self, segment: Segment) -> None:
        """Let the kernel drop the mapped pages of a segment once its bytes are copied out, so that
        reading a big file segment by segment keeps only what is being decoded resident."""
        if self._map is None or not hasattr(mmap, "MADV_DONTNEED") or segment.length < _DROP_MIN:
            return
        start = self.payload_offset + segment.offset
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the segment only
        last = (start + segment.length) // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            try:
                self._map.madvise(mmap.MADV_DONTNEED, first, last - first)
            except (OSError, ValueError):  # pragma: no cover - advice only
                pass

    def close(self) -> None:
        data = getattr(self, "_data", None)
        if data is not None:
            data.release()
            self._data = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view of it is still referenced (e.g. by a traceback): the GC closes it
                pass
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "ContainerReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse(data: memoryview, *, max_header_bytes: int) -> tuple[Header, int]:
    prefix = parse_prefix(bytes(data[:PREFIX_V2.size]), max_header_bytes=max_header_bytes)
    if len(data) < prefix.payload_offset:
        raise TruncatedFileError(
            f"truncated file: the header needs {prefix.payload_offset} bytes, the file has {len(data)}")
    if len(data) < prefix.file_length:
        raise TruncatedFileError(f"truncated file: {len(data)} bytes of the {prefix.file_length} the prefix declares")
    if len(data) > prefix.file_length:
        raise MalformedHeaderError(f"{len(data) - prefix.file_length} unexpected bytes after the payload")
    stored = bytes(data[prefix.size:prefix.payload_offset])
    if zlib.crc32(stored) != prefix.header_crc32:
        raise ChecksumMismatchError("header checksum mismatch: the header is corrupted")
    if prefix.header_compression == HEADER_ZSTD:
        try:
            stored = _unzstd(stored, what="header", expected_size=prefix.header_length, max_size=None)
        except CorruptStreamError as exc:
            fail(str(exc))
    header = parse_header_json(stored)
    header.version = (prefix.major, prefix.minor)
    header.payload_length = prefix.payload_length
    header.file_length = prefix.file_length
    header.validate(prefix.payload_length)
    return header, prefix.payload_offset


def read_header_bytes(data: bytes, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> tuple[Header, int]:
    """Parse and validate everything but the payload's contents; return the header and payload start.

    The checks run in the order of docs/FORMAT.md section 2, so a file with several faults
    reports the first one the spec lists.
    """
    return _parse(memoryview(data), max_header_bytes=max_header_bytes)


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
    view = memoryview(payload)[segment.offset: segment.offset + segment.length]
    try:
        if zlib.crc32(view) != segment.crc32:
            raise ChecksumMismatchError(f"checksum mismatch in {what}: the payload is corrupted")
        raw = bytes(view) if segment.compression != "zstd" else \
            _unzstd(view, what=what, expected_size=expected_size, max_size=max_size)
    finally:
        view.release()
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
