"""The ``.wcodec`` header, typed: one class per JSON object of docs/FORMAT.md section 3.

Each class has ``to_json()`` (what the writer emits, member order included) and
``from_json(obj, where)`` (what the reader accepts: it validates the object and raises the
specific :class:`~weightcodec.errors.FormatError` of the spec's reader obligations). Byte ranges
are checked by :meth:`Header.validate` against the payload length. The binary layout around the
header (prefix, payload, checksums) is in :mod:`weightcodec.container`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .dtypes import DTYPES, FORMAT_2_0_DTYPES
from .errors import MalformedHeaderError, OffsetOutOfRangeError, UnknownCodecError, UnsafePathError
from .layouts import LAYOUT_KINDS, ROWS, MatrixLayout
from .tiling import VALUE_OFFSET, TileLayout

STORAGE_KINDS = ("raw", "int8", "hevc", "alias")
#: dtypes an ``int8`` or ``hevc`` tensor may be restored to (the float32 result is rounded to them)
QUANTIZABLE_DTYPES = ("float64", "float32", "float16", "bfloat16")
COMPRESSIONS = ("none", "zstd")
QUANT_SCHEMES = ("symmetric-int8", "affine-int8")
#: Granularities a file can hold (``auto`` is an encoder setting, resolved before writing).
STORED_GRANULARITIES = ("per-tensor", "per-channel", "per-channel-2d")
MODEL_KINDS = ("state_dict", "module", "safetensors", "hf-folder")
#: What needs a format 2.1 reader (anything else is plain 2.0).
MODEL_KINDS_2_1 = ("safetensors", "hf-folder")
CHROMA_FORMATS = ("yuv420p", "gray")

# --- limits a reader enforces (docs/FORMAT.md section 3.3) -----------------------------------------
MAX_DIMS = 8
#: Largest element count of one tensor (and so of any one dimension): 2**40, ~1.1e12.
MAX_ELEMENTS = 2**40
#: Largest offset or length of a segment.
MAX_SEGMENT_BYTES = 2**62
#: Most bytes one byte of a zstd frame can expand to: an RLE block (3-byte block header + 1 byte)
#: holds at most 128 KiB, so no zstd frame exceeds this ratio.
MAX_ZSTD_RATIO = 32768
#: Most luma samples per byte of an HEVC stream. libx265 needs about one byte per 64x64 CTU of
#: a flat picture at QP 51 (4094 samples per byte, measured on 4096x2160); 16x that is allowed.
MAX_HEVC_SAMPLES_PER_BYTE = 65536
TILE_SIDE_RANGE = (16, 16384)
#: File names (carried files, safetensors shards): bytes of the UTF-8 path, of one component, components.
MAX_PATH_BYTES = 1024
MAX_PATH_COMPONENT_BYTES = 255
MAX_PATH_DEPTH = 16
#: Carried files and safetensors shards per file.
MAX_FILES = 10_000
MAX_SHARDS = 10_000
#: Largest carried file (decompressed): 2**34 bytes, 16 GiB.
MAX_CARRIED_FILE_BYTES = 2**34
#: ``stored_dtype`` conversions a ``raw`` tensor may use (section 5.1): stored -> restored dtypes.
STORED_DTYPES = {"float16": ("float32", "float64")}
#: Longest string of the informative ``plan`` record (section 3.5).
MAX_PLAN_TEXT = 4096


def fail(message: str):
    raise MalformedHeaderError(f"malformed header: {message}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def get(obj: Any, key: str, kind, where: str):
    """``obj[key]`` checked to be of ``kind`` (``int`` excludes bool; ``float`` accepts ints)."""
    if not isinstance(obj, dict) or key not in obj:
        fail(f"{where} has no {key!r}")
    value = obj[key]
    if kind is int:
        ok = _is_int(value)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        fail(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


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

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Segment":
        if not isinstance(obj, dict):
            fail(f"{where} is not an object")
        offset, length, crc = (get(obj, k, int, where) for k in ("offset", "length", "crc32"))
        if not (0 <= offset <= MAX_SEGMENT_BYTES and 0 <= length <= MAX_SEGMENT_BYTES and 0 <= crc < 2**32):
            fail(f"{where} has an offset/length outside 0..2**62 or an invalid crc32")
        compression = obj.get("compression", "none")
        if compression not in COMPRESSIONS:
            raise UnknownCodecError(f"unknown compression {compression!r} in {where}")
        return cls(offset, length, crc, compression)


@dataclass(frozen=True)
class QuantInfo:
    """How an ``int8`` or ``hevc`` tensor was quantized (section 3.2)."""

    granularity: str
    axis: int
    scales: Segment
    guard_db: float | None  # the guard's figure in dB (None when per-tensor int8 is exact)
    scheme: str = "symmetric-int8"
    zero_points: Segment | None = None  # affine-int8: one int8 per scale
    col_scales: Segment | None = None  # "per-channel-2d" (version 2.1): one float32 per matrix column

    def n_scales(self, shape: tuple[int, ...]) -> int:
        return 1 if self.granularity == "per-tensor" else shape[self.axis]

    @staticmethod
    def n_col_scales(shape: tuple[int, ...]) -> int:
        return math.prod(shape[1:])

    def to_json(self) -> dict:
        out = {"scheme": self.scheme, "granularity": self.granularity, "axis": self.axis,
               "guard_db": self.guard_db, "scales": self.scales.to_json()}
        if self.zero_points is not None:
            out["zero_points"] = self.zero_points.to_json()
        if self.col_scales is not None:
            out["col_scales"] = self.col_scales.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str, shape: tuple[int, ...]) -> "QuantInfo":
        scheme = get(obj, "scheme", str, where)
        if scheme not in QUANT_SCHEMES:
            raise UnknownCodecError(f"{where} uses unknown quantization scheme {scheme!r}")
        granularity = get(obj, "granularity", str, where)
        if granularity not in STORED_GRANULARITIES:
            raise UnknownCodecError(f"{where} uses unknown granularity {granularity!r}")
        axis = get(obj, "axis", int, where)
        if not 0 <= axis < max(len(shape), 1):
            fail(f"{where}.axis {axis} is out of range for shape {list(shape)}")
        if granularity == "per-channel" and not shape:
            fail(f"{where}: a scalar has no channel axis, per-channel quantization is impossible")
        guard = obj.get("guard_db")
        if guard is not None and not isinstance(guard, (int, float)):
            fail(f"{where}.guard_db must be a number or null")
        scales = Segment.from_json(obj.get("scales"), f"{where}.scales")
        col_scales = None
        if granularity == "per-channel-2d":
            if axis != 0 or len(shape) < 2:
                fail(f"{where}: per-channel-2d scales need axis 0 and a tensor of 2 or more dimensions")
            col_scales = Segment.from_json(obj.get("col_scales"), f"{where}.col_scales")
            n_cols = cls.n_col_scales(shape)
            if col_scales.compression != "none" or col_scales.length != 4 * n_cols:
                fail(f"{where}.col_scales must hold {n_cols} uncompressed float32 values")
        elif "col_scales" in obj:
            fail(f"{where}: only per-channel-2d scales have col_scales")
        zero_points = None
        if scheme == "affine-int8":
            if col_scales is not None:
                fail(f"{where}: per-channel-2d scales are symmetric-int8 only")
            zero_points = Segment.from_json(obj.get("zero_points"), f"{where}.zero_points")
        elif "zero_points" in obj:
            fail(f"{where}: only the affine-int8 scheme has zero_points")
        info = cls(granularity, axis, scales, guard, scheme, zero_points=zero_points, col_scales=col_scales)
        n_scales = info.n_scales(shape)
        if scales.compression != "none" or scales.length != 4 * n_scales:
            fail(f"{where}.scales must hold {n_scales} uncompressed float32 values")
        if zero_points is not None and (zero_points.compression != "none" or zero_points.length != n_scales):
            fail(f"{where}.zero_points must hold {n_scales} uncompressed int8 values")
        return info


@dataclass(frozen=True)
class HevcInfo:
    """How an ``hevc`` tensor's stream is laid out and was made (section 5.3)."""

    layout: TileLayout
    chroma: str
    value_offset: int = VALUE_OFFSET
    matrix_layout: MatrixLayout = ROWS  # how the tensor became the matrix (written only if not rows)
    # informative: how the stream was made
    qp: int | None = None
    lossless: bool = False
    preset: str | None = None
    x265_params: str | None = None
    encoder: str | None = None
    stream: dict = field(default_factory=dict)  # profile, level, chroma format read from the SPS
    #: CRC-32 of the int8 matrix the encoder's own decode of the stream gave (rows x cols, C order);
    #: a decoder that gets other values has a corrupt stream (HEVC decoding is bit-exact by spec).
    decoded_crc32: int | None = None

    @property
    def frames(self) -> int:
        return self.layout.frames

    def to_json(self) -> dict:
        out = {"codec": "hevc", "matrix": [self.layout.rows, self.layout.cols]}
        if not self.matrix_layout.is_default:
            out["layout"] = self.matrix_layout.to_json()
        out.update({
            "value_offset": self.value_offset, **self.layout.to_json(), "frames": self.layout.frames,
            "chroma": self.chroma, "qp": self.qp, "lossless": self.lossless, "preset": self.preset,
            "x265_params": self.x265_params, "encoder": self.encoder, "stream": self.stream,
            **({"decoded_crc32": self.decoded_crc32} if self.decoded_crc32 is not None else {}),
        })
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str, numel: int, shape: tuple[int, ...], stream_bytes: int) -> "HevcInfo":
        codec = obj.get("codec") if isinstance(obj, dict) else None
        if codec != "hevc":
            raise UnknownCodecError(f"{where} uses unknown codec {codec!r}")
        matrix = get(obj, "matrix", list, where)
        if len(matrix) != 2 or not all(_is_int(v) and 0 < v <= MAX_ELEMENTS for v in matrix):
            fail(f"{where}.matrix must be [rows, cols] of positive integers")
        rows, cols = matrix
        matrix_layout = matrix_layout_from_json(obj.get("layout"), f"{where}.layout", shape)
        if (rows, cols) != matrix_layout.matrix_shape(shape):
            if matrix_layout.is_default:
                fail(f"{where}.matrix {rows}x{cols} is not the {list(shape)} tensor viewed as [shape[0], rest]")
            fail(f"{where}.matrix {rows}x{cols} is not the {matrix_layout.describe()} layout of the {list(shape)} "
                 "tensor")
        values = {key: get(obj, key, int, where) for key in ("tile_height", "tile_width", "grid_rows", "grid_cols")}
        low, high = TILE_SIDE_RANGE
        for key, length in (("tile_height", rows), ("tile_width", cols)):
            side = values[key]
            # a tile is never larger than the (even-rounded) matrix side, or than 16 for small ones
            if not (low <= side <= high and side % 2 == 0 and side <= max(low, length + length % 2)):
                fail(f"{where}.{key} {side} must be even, {low}..{high}, and at most max({low}, {key[5:]} of the "
                     f"matrix rounded up to even)")
        for key, side_key, length in (("grid_rows", "tile_height", rows), ("grid_cols", "tile_width", cols)):
            grid, side = values[key], values[side_key]
            # the tiles cover the matrix and none is only padding
            if not (_is_int(grid) and grid >= 1 and (grid - 1) * side < length <= grid * side):
                fail(f"{where}.{key} {grid} tiles of {side} do not cover {length} exactly "
                     "(too few, or a tile of padding only)")
        layout = TileLayout.from_json(rows, cols, values)
        frames = get(obj, "frames", int, where)
        if frames != layout.frames:
            fail(f"{where}.frames {frames} is not grid_rows x grid_cols = {layout.frames}")
        if layout.frames * layout.tile_height * layout.tile_width > MAX_HEVC_SAMPLES_PER_BYTE * stream_bytes:
            fail(f"{where} promises {layout.frames} pictures of {layout.tile_width}x{layout.tile_height} from a "
                 f"{stream_bytes}-byte stream, more than an HEVC stream can hold")
        if get(obj, "value_offset", int, where) != VALUE_OFFSET:
            fail(f"{where}.value_offset must be {VALUE_OFFSET}")
        chroma = get(obj, "chroma", str, where)
        if chroma not in CHROMA_FORMATS:
            raise UnknownCodecError(f"{where} uses unknown chroma format {chroma!r}")
        qp = obj.get("qp")
        if qp is not None and not (_is_int(qp) and 0 <= qp <= 51):
            fail(f"{where}.qp must be null or an integer from 0 to 51")
        lossless = obj.get("lossless", False)
        if not isinstance(lossless, bool):
            fail(f"{where}.lossless must be true or false")
        text = {}
        for key in ("preset", "x265_params", "encoder"):
            text[key] = obj.get(key)
            if text[key] is not None and not isinstance(text[key], str):
                fail(f"{where}.{key} must be a string or null")
        stream = obj.get("stream", {})
        if not isinstance(stream, dict):
            fail(f"{where}.stream must be an object")
        decoded_crc32 = obj.get("decoded_crc32")
        if decoded_crc32 is not None and not (_is_int(decoded_crc32) and 0 <= decoded_crc32 < 2**32):
            fail(f"{where}.decoded_crc32 must be an unsigned 32-bit integer")
        return cls(layout=layout, chroma=chroma, value_offset=VALUE_OFFSET, matrix_layout=matrix_layout, qp=qp,
                   lossless=lossless, stream=stream, decoded_crc32=decoded_crc32, **text)


def matrix_layout_from_json(obj: Any, where: str, shape: tuple[int, ...]) -> MatrixLayout:
    """The ``layout`` member of an ``hevc`` object (section 5.3.1); absent means ``rows``."""
    if obj is None:
        return ROWS
    if not isinstance(obj, dict):
        fail(f"{where} must be an object")
    kind = get(obj, "kind", str, where)
    if kind not in LAYOUT_KINDS:
        raise UnknownCodecError(f"{where} uses unknown layout {kind!r}")
    if kind == "rows":
        return ROWS
    blocks = get(obj, "blocks_per_row", int, where)
    if not 1 <= blocks <= MAX_ELEMENTS:
        fail(f"{where}.blocks_per_row must be an integer from 1 to 2**40")
    layout = MatrixLayout("mosaic", blocks)
    problem = layout.check(shape)
    if problem:
        fail(f"{where}: {problem}")
    return layout


@dataclass(frozen=True)
class TensorInfo:
    """One state_dict entry (section 3.1), as safetensors' ``TensorInfo`` plus how it is stored."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    storage: str  # "raw" | "int8" | "hevc" | "alias"
    data: Segment | None  # None for "alias" only
    quant: QuantInfo | None = None
    hevc: HevcInfo | None = None
    stored_dtype: str | None = None  # raw only: the dtype of the stored elements when not ``dtype``
    alias_of: str | None = None  # "alias": the earlier tensor whose values this one has
    tied: bool = False  # "alias": the source shared one storage (decode shares it too); else a copy

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def stored_bytes(self) -> int:
        """Bytes this tensor takes in the payload (data, scales, column scales and zero points; 0 for an alias)."""
        return sum(segment.length for _, segment in self.segments())

    def segments(self) -> list[tuple[str, Segment]]:
        found = [(f"{self.name} data", self.data)] if self.data is not None else []
        if self.quant is not None:
            found.append((f"{self.name} scales", self.quant.scales))
            if self.quant.col_scales is not None:
                found.append((f"{self.name} column scales", self.quant.col_scales))
            if self.quant.zero_points is not None:
                found.append((f"{self.name} zero points", self.quant.zero_points))
        return found

    def to_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "storage": self.storage}
        if self.storage == "alias":
            out.update({"alias_of": self.alias_of, "tied": self.tied})
            return out
        out["data"] = self.data.to_json()
        if self.stored_dtype is not None:
            out["stored_dtype"] = self.stored_dtype
        if self.quant is not None:
            out["quant"] = self.quant.to_json()
        if self.hevc is not None:
            out["hevc"] = self.hevc.to_json()
        return out

    @classmethod
    def from_json(cls, item: Any, where: str) -> "TensorInfo":
        name = get(item, "name", str, where)
        where = f"tensor {name!r}"
        dtype = get(item, "dtype", str, where)
        if dtype not in DTYPES:
            raise UnknownCodecError(f"{where} has unsupported dtype {dtype!r}")
        shape = get(item, "shape", list, where)
        if len(shape) > MAX_DIMS or not all(_is_int(d) and 0 <= d <= MAX_ELEMENTS for d in shape):
            fail(f"{where}.shape must be a list of at most {MAX_DIMS} integers from 0 to 2**40")
        shape = tuple(shape)
        numel = math.prod(shape)
        if numel > MAX_ELEMENTS:
            fail(f"{where} has {numel} elements, more than the 2**40 a tensor may have")
        if math.prod(d for d in shape if d) > MAX_ELEMENTS:
            # an empty tensor too: torch.empty([2**32, 2**32, 0]) overflows computing its storage size
            fail(f"{where}.shape {list(shape)}: its non-zero dimensions multiply to more than 2**40")
        storage = get(item, "storage", str, where)
        if storage not in STORAGE_KINDS:
            raise UnknownCodecError(f"{where} uses unknown storage kind {storage!r}")
        if storage == "alias":
            if any(key in item for key in ("data", "quant", "hevc")):
                fail(f"{where}: an alias has no data, quant or hevc member")
            tied = item.get("tied", False)
            if not isinstance(tied, bool):
                fail(f"{where}.tied must be true or false")
            return cls(name, dtype, shape, storage, None, alias_of=get(item, "alias_of", str, where), tied=tied)
        data = Segment.from_json(item.get("data"), f"{where}.data")
        stored_dtype = item.get("stored_dtype")
        if stored_dtype is not None:
            if not isinstance(stored_dtype, str):
                fail(f"{where}.stored_dtype must be a string")
            if storage != "raw":
                fail(f"{where}: only raw tensors have a stored_dtype")
            if dtype not in STORED_DTYPES.get(stored_dtype, ()):
                raise UnknownCodecError(f"{where} stores {dtype} as {stored_dtype!r}, which is not a conversion of "
                                        "section 5.1")
        quant = None
        if storage in ("int8", "hevc"):
            if dtype not in QUANTIZABLE_DTYPES:
                # float32 -> integer conversion of out-of-range values differs between CPUs (x86
                # gives INT_MIN, ARM saturates), and the writer only quantizes floating-point tensors
                fail(f"{where}: a {storage} tensor must have a floating-point dtype, not {dtype!r}")
            quant = QuantInfo.from_json(get(item, "quant", dict, where), f"{where}.quant", shape)
        if storage in ("raw", "int8"):
            size = numel * (1 if storage == "int8" else DTYPES[stored_dtype or dtype].itemsize)
            if data.compression == "none" and data.length != size:
                fail(f"{where}.data holds {data.length} bytes, its shape and dtype need {size}")
            if data.compression == "zstd" and size > MAX_ZSTD_RATIO * data.length:
                fail(f"{where}.data: {data.length} zstd bytes cannot hold the {size} bytes its shape and dtype need")
        hevc = None
        if storage == "hevc":
            if data.compression != "none":
                fail(f"{where}.data: an HEVC stream is never compressed")
            if not shape:
                fail(f"{where}: a scalar cannot be HEVC-coded")
            hevc = HevcInfo.from_json(get(item, "hevc", dict, where), f"{where}.hevc", numel, shape, data.length)
        return cls(name, dtype, shape, storage, data, quant, hevc, stored_dtype)


def check_relative_path(path: Any, where: str) -> str:
    """``path`` if it is a safe relative file name (section 3.4), else :class:`UnsafePathError`.

    Safe: a non-empty string of ``/``-separated components, none empty, ``.`` or ``..``, at most
    :data:`MAX_PATH_DEPTH` components of at most 255 UTF-8 bytes each and 1024 bytes in all, with no
    backslash, no NUL and no other control character (U+0000-U+001F, U+007F). It cannot start with
    ``/`` (absolute) and cannot climb out of the folder it is written in.
    """
    if not isinstance(path, str):
        fail(f"{where} must be a string")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(f"unsafe file name in {where}: not valid UTF-8") from None
    parts = path.split("/")
    reason = None
    if not path:
        reason = "empty"
    elif path.startswith("/"):
        reason = "absolute"
    elif len(raw) > MAX_PATH_BYTES or len(parts) > MAX_PATH_DEPTH:
        reason = f"longer than {MAX_PATH_BYTES} bytes or {MAX_PATH_DEPTH} components"
    elif any(ord(c) < 0x20 or c in "\\\x7f" for c in path):
        reason = "has a backslash or a control character"
    elif any(part in ("", ".", "..") for part in parts):
        reason = "has an empty, '.' or '..' component"
    elif any(len(part.encode("utf-8")) > MAX_PATH_COMPONENT_BYTES for part in parts):
        reason = f"has a component longer than {MAX_PATH_COMPONENT_BYTES} bytes"
    if reason:
        raise UnsafePathError(f"unsafe file name {path[:200]!r} in {where}: {reason}")
    return path


def check_file_set(paths: list[str]) -> None:
    """No two paths equal (ignoring case: some file systems do) and no path inside another one
    (``a`` and ``a/b`` cannot both be files)."""
    seen: dict[str, str] = {}
    for path in paths:
        key = path.casefold()
        if key in seen:
            raise UnsafePathError(f"file name {path!r} collides with {seen[key]!r}")
        seen[key] = path
    for path in paths:
        parts = path.casefold().split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in seen:
                raise UnsafePathError(f"file name {path!r} needs {seen[prefix]!r} to be a folder, but it is a file")


def _string_map(obj: Any, where: str) -> dict[str, str] | None:
    if obj is None:
        return None
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        fail(f"{where} must be null or an object of strings")
    return obj


@dataclass(frozen=True)
class ShardInfo:
    """One safetensors file of a ``safetensors`` / ``hf-folder`` model (section 3.4)."""

    file: str  # relative path of the file in the folder (for "safetensors": the input's name, informative)
    tensors: tuple[str, ...]  # the tensor names it holds, in the header's order
    metadata: dict[str, str] | None = None  # its ``__metadata__``

    def to_json(self) -> dict:
        return {"file": self.file, "tensors": list(self.tensors), "metadata": self.metadata}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ShardInfo":
        file = check_relative_path(get(obj, "file", str, where), f"{where}.file")
        names = get(obj, "tensors", list, where)
        if not all(isinstance(n, str) for n in names):
            fail(f"{where}.tensors must be a list of tensor names")
        return cls(file, tuple(names), _string_map(obj.get("metadata"), f"{where}.metadata"))


@dataclass(frozen=True)
class CarriedFile:
    """A non-weight file of an ``hf-folder`` model (config, tokenizer...), restored byte for byte."""

    path: str
    size: int  # bytes once decompressed
    data: Segment

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "data": self.data.to_json()}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "CarriedFile":
        path = check_relative_path(get(obj, "path", str, where), f"{where}.path")
        size = get(obj, "size", int, where)
        if not 0 <= size <= MAX_CARRIED_FILE_BYTES:
            fail(f"{where}.size must be from 0 to 2**34")
        data = Segment.from_json(obj.get("data"), f"{where}.data")
        if data.compression == "none" and data.length != size:
            fail(f"{where}.data holds {data.length} bytes, not the file's {size}")
        if data.compression == "zstd" and size > MAX_ZSTD_RATIO * data.length:
            fail(f"{where}.data: {data.length} zstd bytes cannot hold {size} bytes")
        return cls(path, size, data)


@dataclass(frozen=True)
class ModelInfo:
    """What the tensors came from (section 3): a state_dict, a pickled ``nn.Module``, a
    ``.safetensors`` file or a Hugging Face model folder (section 3.4)."""

    kind: str = "state_dict"  # "state_dict" | "module" | "safetensors" | "hf-folder"
    class_name: str | None = None  # "module": the module's class, informative
    skeleton: Segment | None = None  # "module": the pickled module without its tensors
    shards: tuple[ShardInfo, ...] = ()  # "safetensors" (exactly one), "hf-folder" (one or more)
    files: tuple[CarriedFile, ...] = ()  # "hf-folder": the other files of the folder

    @property
    def file_metadata(self) -> dict[str, str] | None:
        """The ``__metadata__`` a single output file keeps: its one shard's (None for several, or none)."""
        return self.shards[0].metadata if len(self.shards) == 1 else None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind}
        if self.class_name is not None:
            out["class"] = self.class_name
        if self.skeleton is not None:
            out["skeleton"] = self.skeleton.to_json()
        if self.kind in MODEL_KINDS_2_1:
            out["shards"] = [shard.to_json() for shard in self.shards]
        if self.kind == "hf-folder":
            out["files"] = [f.to_json() for f in self.files]
        return out

    @classmethod
    def from_json(cls, obj: Any) -> "ModelInfo":
        kind = get(obj, "kind", str, "model")
        if kind not in MODEL_KINDS:
            fail(f"model.kind {kind!r} is not one of {MODEL_KINDS}")
        if kind == "state_dict":
            return cls(kind)
        if kind == "module":
            class_name = obj.get("class")
            if class_name is not None and not isinstance(class_name, str):
                fail("model.class must be a string")
            return cls(kind, class_name, Segment.from_json(obj.get("skeleton"), "model.skeleton"))
        items = get(obj, "shards", list, "model")
        if not 1 <= len(items) <= MAX_SHARDS or (kind == "safetensors" and len(items) != 1):
            fail(f"model.shards must list {'exactly one' if kind == 'safetensors' else f'1 to {MAX_SHARDS}'} "
                 "safetensors file(s)")
        shards = tuple(ShardInfo.from_json(item, f"model.shards[{i}]") for i, item in enumerate(items))
        files: tuple[CarriedFile, ...] = ()
        if kind == "hf-folder":
            items = get(obj, "files", list, "model")
            if len(items) > MAX_FILES:
                fail(f"model.files lists more than {MAX_FILES} files")
            files = tuple(CarriedFile.from_json(item, f"model.files[{i}]") for i, item in enumerate(items))
            check_file_set([s.file for s in shards] + [f.path for f in files])
        return cls(kind, shards=shards, files=files)

    def check_tensors(self, tensors: list["TensorInfo"]) -> None:
        """Every tensor in exactly one shard, every shard name a tensor (``safetensors`` / ``hf-folder``)."""
        if self.kind not in MODEL_KINDS_2_1:
            return
        names = {t.name for t in tensors}
        placed: set[str] = set()
        for shard in self.shards:
            for name in shard.tensors:
                if name not in names:
                    fail(f"model.shards: {shard.file!r} lists {name!r}, which is not a tensor of the file")
                if name in placed:
                    fail(f"model.shards: tensor {name!r} is listed twice")
                placed.add(name)
        if len(placed) != len(names):
            missing = next(t.name for t in tensors if t.name not in placed)
            fail(f"model.shards: tensor {missing!r} is in no shard")


def _plan_text(obj: dict, key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_PLAN_TEXT:
        fail(f"{where}.{key} must be a non-empty string of at most {MAX_PLAN_TEXT} characters")
    return value


def _plan_number(obj: dict, key: str, where: str, *, low: float | None = None) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or (low is not None and value < low):
        fail(f"{where}.{key} must be a finite number" + (f" >= {low:g}" if low is not None else "") + " or null")
    return value


@dataclass(frozen=True)
class PlanRecord:
    """How the encoder chose every tensor's storage (section 3.5; informative, written by budgeted encodes)."""

    method: str  # how layer sensitivity was measured: "fisher", "data-free", ...
    objective: str  # "max-drop" (an accuracy budget) or "target-size"
    budget: float  # score points (max-drop) or bytes (target-size)
    met: bool  # False: a best-effort file that misses the budget
    calibration: str | None = None  # what the calibration data was
    calibration_samples: int | None = None
    reference_score: float | None = None  # the float model's score on the calibration data
    score: float | None = None  # this file's score on the calibration data
    predicted_loss: float | None = None  # the sensitivity model's predicted loss of this plan
    candidates: int | None = None  # options coded and measured
    seconds: float | None = None
    layers: dict[str, float] = field(default_factory=dict)  # tensor name -> its predicted loss
    drop_se: float | None = None  # paired standard error of the measured drop (per-sample scores)
    confidence: float | None = None  # the search held drop + z(confidence) * drop_se to the budget

    @property
    def drop(self) -> float | None:
        if self.reference_score is None or self.score is None:
            return None
        return self.reference_score - self.score

    def to_json(self) -> dict:
        out: dict[str, Any] = {"method": self.method, "objective": self.objective, "budget": self.budget,
                               "met": self.met}
        if self.calibration is not None or self.calibration_samples is not None:
            out["calibration"] = {"description": self.calibration, "samples": self.calibration_samples}
        for key in ("reference_score", "score", "predicted_loss", "candidates", "seconds", "drop_se", "confidence"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.layers:
            out["layers"] = dict(self.layers)
        return out

    @classmethod
    def from_json(cls, obj: Any, names: set[str]) -> "PlanRecord":
        where = "plan"
        if not isinstance(obj, dict):
            fail("plan must be an object")
        method = _plan_text(obj, "method", where, required=True)
        objective = _plan_text(obj, "objective", where, required=True)
        budget = _plan_number(obj, "budget", where, low=0)
        if budget is None:
            fail("plan.budget must be a finite number >= 0")
        met = obj.get("met")
        if not isinstance(met, bool):
            fail("plan.met must be true or false")
        description = samples = None
        calibration = obj.get("calibration")
        if calibration is not None:
            if not isinstance(calibration, dict):
                fail("plan.calibration must be an object or null")
            description = _plan_text(calibration, "description", "plan.calibration")
            samples = calibration.get("samples")
            if samples is not None and not (_is_int(samples) and 0 <= samples <= MAX_ELEMENTS):
                fail("plan.calibration.samples must be an integer from 0 to 2**40 or null")
        numbers = {key: _plan_number(obj, key, where) for key in ("reference_score", "score", "predicted_loss")}
        seconds = _plan_number(obj, "seconds", where, low=0)
        candidates = obj.get("candidates")
        if candidates is not None and not (_is_int(candidates) and 0 <= candidates <= MAX_ELEMENTS):
            fail("plan.candidates must be an integer from 0 to 2**40 or null")
        layers = obj.get("layers", {})
        if not isinstance(layers, dict):
            fail("plan.layers must be an object")
        for name, value in layers.items():
            if name not in names:
                fail(f"plan.layers names {name!r}, which is not a tensor of the file")
            _plan_number(layers, name, "plan.layers", low=0)
        drop_se = _plan_number(obj, "drop_se", where, low=0)
        confidence = _plan_number(obj, "confidence", where, low=0)
        if confidence is not None and confidence >= 1:
            fail("plan.confidence must be a number from 0 to below 1")
        return cls(method, objective, budget, met, description, samples, candidates=candidates, seconds=seconds,
                   layers=dict(layers), drop_se=drop_se, confidence=confidence, **numbers)


@dataclass
class Header:
    """The whole header. ``version``, ``payload_length`` and ``file_length`` come from the prefix."""

    tensors: list[TensorInfo]
    model: ModelInfo = field(default_factory=ModelInfo)
    producer: str = ""
    metadata: dict = field(default_factory=dict)
    plan: PlanRecord | None = None
    version: tuple[int, int] = (1, 0)
    payload_length: int = 0
    file_length: int = 0

    def to_json(self) -> dict:
        out = {
            "producer": self.producer, "model": self.model.to_json(),
            "tensors": [t.to_json() for t in self.tensors], "metadata": self.metadata,
        }
        if self.plan is not None:
            out["plan"] = self.plan.to_json()
        return out

    def minor_version(self) -> int:
        """The lowest minor version of format 2 that describes this header: 1 if it uses a member
        of 2.1 (aliases, column scales, the dtypes added to the table, ``safetensors`` and
        ``hf-folder`` models; a non-``rows`` layout, ``stored_dtype``, the ``affine-int8`` scheme,
        ``plan``), else 0."""
        uses_21 = self.plan is not None or self.model.kind in MODEL_KINDS_2_1 or any(
            t.storage == "alias" or t.dtype not in FORMAT_2_0_DTYPES or t.stored_dtype is not None
            or (t.hevc is not None and not t.hevc.matrix_layout.is_default)
            or (t.quant is not None and (t.quant.scheme != "symmetric-int8" or t.quant.col_scales is not None))
            for t in self.tensors)
        return 1 if uses_21 else 0

    def required_minor(self) -> int:
        """:meth:`minor_version` (the minor version a reader needs for this header)."""
        return self.minor_version()

    @classmethod
    def from_json(cls, doc: Any) -> "Header":
        if not isinstance(doc, dict):
            fail("the top level is not an object")
        model = ModelInfo.from_json(get(doc, "model", dict, "header"))
        tensors, by_name = [], {}
        for i, item in enumerate(get(doc, "tensors", list, "header")):
            entry = TensorInfo.from_json(item, f"tensors[{i}]")
            if entry.name in by_name:
                fail(f"duplicate tensor name {entry.name!r}")
            if entry.storage == "alias":
                target = by_name.get(entry.alias_of)
                if target is None or target.storage == "alias":
                    fail(f"tensor {entry.name!r} is an alias of {entry.alias_of!r}, which is not an earlier "
                         "non-alias tensor")
                if (target.dtype, target.shape) != (entry.dtype, entry.shape):
                    fail(f"tensor {entry.name!r} is an alias of {entry.alias_of!r} but differs in dtype or shape")
            by_name[entry.name] = entry
            tensors.append(entry)
        model.check_tensors(tensors)
        metadata = doc.get("metadata", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            fail("metadata must be an object of strings")
        producer = doc.get("producer", "")
        if not isinstance(producer, str):
            fail("producer must be a string")
        plan = doc.get("plan")
        if plan is not None:
            plan = PlanRecord.from_json(plan, set(by_name))
        return cls(tensors=tensors, model=model, producer=producer, metadata=metadata, plan=plan)

    def segments(self) -> list[tuple[str, Segment]]:
        found = [("module skeleton", self.model.skeleton)] if self.model.skeleton is not None else []
        found.extend((f"file {f.path!r}", f.data) for f in self.model.files)
        for t in self.tensors:
            found.extend(t.segments())
        return found

    def validate(self, payload_length: int) -> None:
        """Every segment inside ``[0, payload_length)`` and no two overlapping (section 2, step 8)."""
        spans = sorted((seg.offset, seg.offset + seg.length, what) for what, seg in self.segments())
        previous_end, previous_what = 0, None
        for start, end, what in spans:
            if end > payload_length:
                raise OffsetOutOfRangeError(
                    f"{what} spans bytes {start}..{end} but the payload has only {payload_length} bytes"
                )
            if start < previous_end:
                raise OffsetOutOfRangeError(f"{what} overlaps {previous_what}")
            previous_end, previous_what = end, what


__all__ = ["CarriedFile", "Header", "HevcInfo", "ModelInfo", "PlanRecord", "QuantInfo", "Segment", "ShardInfo",
           "TensorInfo", "check_file_set", "check_relative_path", "matrix_layout_from_json"]
