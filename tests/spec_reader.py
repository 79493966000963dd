"""An independent ``.wcodec`` reader written only from docs/FORMAT.md.

It does not import weightcodec (only struct, json, zlib, zstandard, numpy and a second HEVC
decoder run as a program), so that a test can check that the spec says everything a reader needs
and that the reference implementation does what the spec says. HEVC streams are decoded by
``libde265-dec265`` (Debian package ``libde265-examples``: a decoder independent of FFmpeg) or, when
it is absent, by an ``ffmpeg`` executable (``$WEIGHTCODEC_FFMPEG``, PATH, or imageio-ffmpeg's).

Where the spec was silent and this reader had to choose, the choice is marked ``GUESS``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"\x89WCODEC\n"
PREFIX_V1 = struct.Struct("<8sHHIIQ")  # section 8
PREFIX_V2 = struct.Struct("<8sHHIIIB3sQ")  # section 1
HEADER_CAP = 64 * 1024 * 1024  # section 2 step 4: the reference cap

#: section 3.1's dtype names -> numpy dtype of the restored values. bfloat16 has no numpy dtype:
#: it is returned as its uint16 bit patterns (section 5.1: "the upper 16 bits of the float32").
NUMPY_DTYPES = {
    "float64": np.dtype("<f8"), "float32": np.dtype("<f4"), "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"), "int64": np.dtype("<i8"), "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"), "int8": np.dtype("i1"), "uint8": np.dtype("u1"), "bool": np.dtype("?"),
    # version 2.1 (raw only): numpy has no float8 / float4: their one-byte bit patterns
    "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"), "uint64": np.dtype("<u8"), "complex64": np.dtype("<c8"),
    "float8_e4m3fn": np.dtype("u1"), "float8_e4m3fnuz": np.dtype("u1"), "float8_e5m2": np.dtype("u1"),
    "float8_e5m2fnuz": np.dtype("u1"), "float8_e8m0fnu": np.dtype("u1"), "float4_e2m1fn_x2": np.dtype("u1"),
}
QUANTIZABLE = ("float64", "float32", "float16", "bfloat16")  # section 3.1


class SpecError(Exception):
    """The file breaks one of the reader obligations of section 2 (``kind`` names which)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class Restored:
    name: str
    dtype: str
    array: np.ndarray  # bfloat16: uint16 bit patterns
    int8: np.ndarray | None = None  # quantized tensors: the int8 values
    scales: np.ndarray | None = None


# --- sections 1, 2 and 8 ---------------------------------------------------------------------
def read_layout(data: bytes) -> tuple[dict, memoryview, int, int]:
    """The header document and the payload, after the checks of section 2 (steps 1-7)."""
    if len(data) < 8 or data[:8] != MAGIC:
        raise SpecError("not a wcodec file", "magic")
    if len(data) < 12:
        raise SpecError("truncated", "prefix")
    major, minor = struct.unpack_from("<HH", data, 8)
    if major == 1:
        if len(data) < PREFIX_V1.size:
            raise SpecError("truncated", "prefix")
        _, _, _, length, crc, payload_length = PREFIX_V1.unpack_from(data)
        stored_length, compression, start = length, 0, PREFIX_V1.size
    elif major == 2:
        if len(data) < PREFIX_V2.size:
            raise SpecError("truncated", "prefix")
        _, _, _, stored_length, length, crc, compression, reserved, payload_length = PREFIX_V2.unpack_from(data)
        if compression not in (0, 1) or reserved != b"\0\0\0" or (compression == 0 and stored_length != length):
            raise SpecError("malformed header", "prefix fields")
        start = PREFIX_V2.size
    else:
        raise SpecError("unsupported version", f"{major}.{minor}")
    if length > HEADER_CAP or stored_length > HEADER_CAP:
        raise SpecError("header too large", str(length))
    end = start + stored_length
    if len(data) < end or len(data) < end + payload_length:
        raise SpecError("truncated", "header or payload")
    if len(data) > end + payload_length:
        raise SpecError("malformed", "trailing bytes")
    stored = data[start:end]
    if zlib.crc32(stored) != crc:
        raise SpecError("checksum mismatch", "header")
    if compression == 1:
        try:
            stored = zstd_frame(stored, length)
        except SpecError as exc:
            raise SpecError("malformed header", str(exc)) from exc
    try:
        doc = json.loads(stored.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SpecError("malformed header", str(exc)) from exc
    return doc, memoryview(data)[end:], major, minor


def read_segment(payload: memoryview, seg: dict, expected: int | None) -> bytes:
    offset, length = seg["offset"], seg["length"]
    if offset < 0 or length < 0 or offset + length > len(payload):
        raise SpecError("offset out of range", str(seg))
    raw = bytes(payload[offset:offset + length])
    if zlib.crc32(raw) != seg["crc32"]:
        raise SpecError("checksum mismatch", str(seg))
    compression = seg.get("compression", "none")
    if compression == "zstd":
        raw = zstd_frame(raw, expected)
    elif compression != "none":
        raise SpecError("unknown codec", compression)
    if expected is not None and len(raw) != expected:
        raise SpecError("corrupt stream", f"{len(raw)} bytes, expected {expected}")
    return raw


def zstd_frame(raw: bytes, expected: int | None) -> bytes:
    """Section 4: exactly one frame, nothing after it, declaring its content size (= ``expected``
    for a tensor, at most 64 MiB for a skeleton), decompressed into a buffer of that size."""
    import zstandard

    try:
        params = zstandard.get_frame_parameters(raw)
    except zstandard.ZstdError as exc:
        raise SpecError("corrupt stream", f"not a zstd frame: {exc}") from exc
    size = params.content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN or (expected is not None and size != expected) \
            or (expected is None and size > 64 * 1024 * 1024):
        raise SpecError("corrupt stream", f"zstd frame declares {size} bytes, expected {expected}")
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = decompressor.decompress(raw)
    except zstandard.ZstdError as exc:
        raise SpecError("corrupt stream", str(exc)) from exc
    if not decompressor.eof or decompressor.unused_data or len(out) != size:
        raise SpecError("corrupt stream", "not exactly one complete zstd frame of the declared size")
    return out


# --- sections 3 to 5 --------------------------------------------------------------------------
def read_file(data: bytes, *, decoder: "HevcDecoder | None" = None) -> list[Restored]:
    """Every tensor of the file, in header order."""
    doc, payload, _, _ = read_layout(data)
    out: list[Restored] = []
    for entry in doc["tensors"]:
        if entry["storage"] == "alias":  # section 5.4: the values of an earlier, non-alias tensor
            target = next((r for r in out if r.name == entry["alias_of"]), None)
            source = next((e for e in doc["tensors"] if e["name"] == entry["alias_of"]), None)
            if target is None or source is None or source["storage"] == "alias" \
                    or (source["dtype"], source["shape"]) != (entry["dtype"], entry["shape"]):
                raise SpecError("malformed header", f"alias {entry['name']!r}")
            out.append(Restored(entry["name"], entry["dtype"], target.array.copy(), target.int8, target.scales))
            continue
        out.append(restore(entry, payload, decoder))
    return out


def check_name(path: object) -> str:
    """Section 3.4's file-name rule (GUESS: "control character" read as U+0000-U+001F and U+007F)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path \
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise SpecError("malformed header", f"unsafe file name {path!r}")
    parts = path.split("/")
    if len(path.encode("utf-8")) > 1024 or len(parts) > 16 or any(p in ("", ".", "..") for p in parts) \
            or any(len(p.encode("utf-8")) > 255 for p in parts):
        raise SpecError("malformed header", f"unsafe file name {path!r}")
    return path


def read_folder(data: bytes) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """Section 3.4: the shards (file -> tensor names) and the carried files (path -> bytes) of a
    ``safetensors`` / ``hf-folder`` file, names checked, carried files decompressed."""
    doc, payload, _, _ = read_layout(data)
    model = doc["model"]
    if model["kind"] not in ("safetensors", "hf-folder"):
        return {}, {}
    shards = {check_name(s["file"]): list(s["tensors"]) for s in model["shards"]}
    files = {check_name(f["path"]): read_segment(payload, f["data"], f["size"]) for f in model.get("files", [])}
    names = list(shards) + list(files) if model["kind"] == "hf-folder" else list(files)
    folded = [n.casefold() for n in names]
    if len(set(folded)) != len(folded) or any(a.startswith(b + "/") for a in folded for b in folded):
        raise SpecError("malformed header", "colliding file names")
    listed = [n for names_ in shards.values() for n in names_]
    if sorted(listed) != sorted(t["name"] for t in doc["tensors"]):
        raise SpecError("malformed header", "shards do not list every tensor exactly once")
    return shards, files


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def restore(entry: dict, payload: memoryview, decoder: "HevcDecoder | None") -> Restored:
    name, dtype, shape, storage = entry["name"], entry["dtype"], list(entry["shape"]), entry["storage"]
    if dtype not in NUMPY_DTYPES:
        raise SpecError("unknown codec", dtype)
    numel = _numel(shape)
    if storage == "raw":
        np_dtype = NUMPY_DTYPES[dtype]
        stored = entry.get("stored_dtype")
        if stored is not None:  # section 5.1 (2.1): float16 elements widened exactly to float32/float64
            if stored != "float16" or dtype not in ("float32", "float64"):
                raise SpecError("unknown codec", f"{dtype} stored as {stored}")
            raw = read_segment(payload, entry["data"], numel * 2)
            return Restored(name, dtype, np.frombuffer(raw, "<f2").astype(np_dtype).reshape(shape))
        raw = read_segment(payload, entry["data"], numel * np_dtype.itemsize)
        if dtype == "bool":
            values = np.frombuffer(raw, np.uint8)
            if values.size and values.max() > 1:
                raise SpecError("corrupt stream", "bool byte other than 0/1")  # section 5.1: 0 or 1
        return Restored(name, dtype, np.frombuffer(raw, np_dtype).reshape(shape).copy())
    quant = entry["quant"]
    if quant["scheme"] not in ("symmetric-int8", "affine-int8"):
        raise SpecError("unknown codec", quant["scheme"])
    if dtype not in QUANTIZABLE:
        raise SpecError("malformed header", f"a quantized tensor of dtype {dtype}")
    granularity = quant["granularity"]
    if granularity not in ("per-tensor", "per-channel", "per-channel-2d"):
        raise SpecError("unknown codec", granularity)
    n_scales = 1 if granularity == "per-tensor" else shape[quant["axis"]]
    scales = np.frombuffer(read_segment(payload, quant["scales"], 4 * n_scales), "<f4")
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise SpecError("corrupt stream", "scales must be finite and > 0")  # section 3.2
    col_scales = None
    if granularity == "per-channel-2d":  # section 3.2, version 2.1
        if quant["axis"] != 0 or len(shape) < 2:
            raise SpecError("malformed header", "per-channel-2d needs axis 0 and 2 dimensions")
        col_scales = np.frombuffer(read_segment(payload, quant["col_scales"], 4 * (numel // shape[0] if shape[0] else 0)),
                                   "<f4")
        if not np.all(np.isfinite(col_scales) & (col_scales > 0)):
            raise SpecError("corrupt stream", "column scales must be finite and > 0")
    zero_points = None
    if quant["scheme"] == "affine-int8":  # section 3.2: n int8 zero points, each in [-127, 127]
        zero_points = np.frombuffer(read_segment(payload, quant["zero_points"], n_scales), np.int8)
        if zero_points.size and zero_points.min() == -128:
            raise SpecError("corrupt stream", "zero point -128")
    if storage == "int8":
        values = np.frombuffer(read_segment(payload, entry["data"], numel), np.int8).reshape(shape)
        if values.size and values.min() == -128:
            raise SpecError("corrupt stream", "int8 value -128")  # section 5.2
    elif storage == "hevc":
        values = hevc_values(entry, payload, shape, decoder)
    else:
        raise SpecError("unknown codec", storage)
    return Restored(name, dtype, dequantize(values, scales, quant, dtype, zero_points, col_scales), values,
                    scales.copy())


def dequantize(values: np.ndarray, scales: np.ndarray, quant: dict, dtype: str,
               zero_points: np.ndarray | None = None, col_scales: np.ndarray | None = None) -> np.ndarray:
    """Section 5.2: ``w = int8 x scale[c]`` (affine: ``(int8 - zero_point[c]) x scale[c]``, the
    difference exact in float32) in float32 (then ``x col_scale[k]`` for per-channel-2d), then cast
    to the dtype."""
    v = values.astype(np.float32)
    if quant["granularity"] == "per-tensor":
        if zero_points is not None:
            v = v - np.float32(zero_points[0])
        w = v * scales[0]
    else:
        axis = quant["axis"]
        view = [1] * values.ndim
        view[axis] = -1
        if zero_points is not None:
            v = v - zero_points.astype(np.float32).reshape(view)
        w = v * scales.reshape(view)
    if col_scales is not None:
        w = (w.reshape(w.shape[0], -1) * col_scales[None, :]).astype(np.float32).reshape(values.shape)
    return cast_float32(w.astype(np.float32), dtype)


def from_matrix(matrix: np.ndarray, shape: list[int], layout: dict | None) -> np.ndarray:
    """Section 5.3.1: the tensor from its coded matrix (``rows``: a reshape; ``mosaic``: kernel ``n``
    is the ``kh x kw`` block at block row ``n // c``, block column ``n % c``)."""
    if layout is None or layout.get("kind") == "rows":
        return matrix.reshape(shape)
    if layout.get("kind") != "mosaic":
        raise SpecError("unknown codec", str(layout.get("kind")))
    out, inp, kh, kw = shape
    c = layout["blocks_per_row"]
    tensor = np.empty(shape, matrix.dtype)
    for n in range(out * inp):
        r, col = divmod(n, c)
        tensor[n // inp, n % inp] = matrix[r * kh:(r + 1) * kh, col * kw:(col + 1) * kw]
    return tensor


def cast_float32(w: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> the tensor's dtype (section 5.2: round to nearest, ties to even; float64 exact).

    bfloat16 is rounded on the bit patterns (NaN cannot occur: scales are finite).
    GUESS: section 5.2 names only floating-point dtypes and no float32 -> integer or bool rule;
    we refuse the others (the reference does too since tests/test_fuzz.py's
    test_quantized_tensor_with_a_non_float_dtype_is_malformed; FORMAT.md should say so).
    """
    if dtype == "bfloat16":
        bits = w.astype("<f4").view("<u4").astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype(np.uint16)
    if dtype not in ("float64", "float32", "float16"):
        raise SpecError("malformed header", f"a quantized tensor of dtype {dtype}")
    return w.astype(NUMPY_DTYPES[dtype])


def hevc_values(entry: dict, payload: memoryview, shape: list[int], decoder: "HevcDecoder | None") -> np.ndarray:
    """Section 5.3: decode all pictures, take their luma planes, place tiles, crop, subtract 128."""
    h = entry["hevc"]
    if h["codec"] != "hevc":
        raise SpecError("unknown codec", h["codec"])
    if decoder is None:
        raise SpecError("unavailable", "no second HEVC decoder")
    rows, cols = h["matrix"]
    th, tw, gr, gc = h["tile_height"], h["tile_width"], h["grid_rows"], h["grid_cols"]
    # section 4: HEVC streams are never compressed
    if entry["data"].get("compression", "none") != "none":
        raise SpecError("malformed header", "a compressed HEVC stream")
    stream = read_segment(payload, entry["data"], None)
    pictures = decoder.luma_planes(stream, width=tw, height=th, chroma=h.get("chroma", "yuv420p"))
    if pictures.shape != (gr * gc, th, tw):
        raise SpecError("corrupt stream", f"{pictures.shape} pictures, expected {(gr * gc, th, tw)}")
    canvas = np.empty((gr * th, gc * tw), np.uint8)
    for k in range(gr * gc):
        r, c = divmod(k, gc)
        canvas[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = pictures[k]
    if h["value_offset"] != 128:
        raise SpecError("malformed header", "value_offset must be 128")  # section 5.3
    # section 5.3: sample 0 gives int8 -128, used as it is
    values = (canvas[:rows, :cols].astype(np.int16) - 128).astype(np.int8)
    # section 5.3: the values must have the CRC-32 the encoder's own decode gave, when recorded
    if "decoded_crc32" in h and zlib.crc32(values.tobytes()) != h["decoded_crc32"]:
        raise SpecError("corrupt stream", "decoded values differ from the encoder's (decoded_crc32)")
    return from_matrix(values, shape, h.get("layout"))


# --- second HEVC decoders ---------------------------------------------------------------------
class HevcDecoder:
    name = "?"

    def luma_planes(self, stream: bytes, *, width: int, height: int, chroma: str) -> np.ndarray:
        raise NotImplementedError


def _frames_from_raw(raw: bytes, width: int, height: int, chroma: str) -> np.ndarray:
    luma = width * height
    # 4:2:0 chroma planes are ceil(w/2) x ceil(h/2) each
    frame = luma if chroma == "gray" else luma + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    if not raw or len(raw) % frame:
        raise SpecError("corrupt stream", f"{len(raw)} bytes of output, not whole {width}x{height} {chroma} frames")
    frames = np.frombuffer(raw, np.uint8).reshape(-1, frame)[:, :luma]
    return frames.reshape(-1, height, width).copy()


class Libde265Decoder(HevcDecoder):
    """``libde265-dec265 -q -o out.yuv in.hevc``: planar 8-bit YUV of the cropped pictures (luma only for 4:0:0)."""

    name = "libde265"

    def __init__(self, executable: str):
        self.executable = executable

    def luma_planes(self, stream: bytes, *, width: int, height: int, chroma: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp, "in.hevc"), Path(tmp, "out.yuv")
            src.write_bytes(stream)
            done = subprocess.run([self.executable, "-q", "-t", "0", "-o", str(dst), str(src)],
                                  capture_output=True, timeout=120)
            if done.returncode != 0 or not dst.exists():
                raise SpecError("corrupt stream", f"dec265 failed: {done.stderr[-300:]!r}")
            return _frames_from_raw(dst.read_bytes(), width, height, chroma)


class FFmpegDecoder(HevcDecoder):
    """``ffmpeg -f hevc -i - -f rawvideo -pix_fmt <native> -``: no conversion, the decoder's own format."""

    name = "ffmpeg-cli"

    def __init__(self, executable: str):
        self.executable = executable

    def luma_planes(self, stream: bytes, *, width: int, height: int, chroma: str) -> np.ndarray:
        pix_fmt = "gray" if chroma == "gray" else "yuv420p"
        done = subprocess.run(
            [self.executable, "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "hevc", "-i", "pipe:",
             "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:"],
            input=stream, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise SpecError("corrupt stream", f"ffmpeg failed: {done.stderr[-300:]!r}")
        return _frames_from_raw(done.stdout, width, height, chroma)


def find_decoders() -> list[HevcDecoder]:
    """Second decoders present here, libde265 first."""
    found: list[HevcDecoder] = []
    for name in ("libde265-dec265", "dec265"):
        path = shutil.which(name)
        if path:
            found.append(Libde265Decoder(path))
            break
    ffmpeg = os.environ.get("WEIGHTCODEC_FFMPEG") or shutil.which("ffmpeg")
    if not ffmpeg:
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        except Exception:  # noqa: BLE001 - absent or broken: no ffmpeg decoder
            ffmpeg = None
    if ffmpeg:
        found.append(FFmpegDecoder(ffmpeg))
    return found
