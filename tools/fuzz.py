"""Fuzz the ``.wcodec`` reader: mutated real files through ``read_header`` and ``decode``.

    python -m tools.fuzz header --seed 1 --count 1000000 --report build/fuzz/header.json
    python -m tools.fuzz decode --backend pyav --backend ffmpeg --seed 2 --count 100000   # both, compared
    python -m tools.fuzz decode --backend pyav --count 100000 --report build/fuzz/pyav.json
    python -m tools.fuzz soak --backend pyav --iterations 1000 --report build/fuzz/soak.json
    python -m tools.fuzz replay build/fuzz/<target>/<signature>/<seed>-<index>.wcodec --backend pyav

The corpus is real files of every storage kind, encoded in-process with ``weightcodec.api.encode``
from seeded tensors (raw of every dtype, scalars and empty tensors; int8 per tensor and per
channel; zstd segments; HEVC single- and multi-tile, 4:2:0 and 4:0:0; a pickled module). Input
``i`` of a run is a pure function of ``(seed, i)`` and the corpus, so any input can be rebuilt.

Mutators (see :data:`MUTATORS`): byte-level ones anywhere in the file with the CRCs left wrong (or
recomputed, so that the flipped bytes reach the JSON parser and the codecs), and structure-aware
ones that edit the header JSON (every member: interesting values, deep nesting, 5000-digit
integers, NaN/Infinity literals, duplicate keys and names ...), replace segments (zstd bombs, RLE
bombs built with ``zstandard``, random bytes, bool bytes other than 0/1, special scales) or
substitute HEVC streams (other sizes, 10-bit, 4:0:0 / 4:4:4, more or fewer pictures, a picture
size change mid-stream, a 4096x2160 picture repeated 200 times, truncated and flipped streams,
SPS fields rewritten), then recompute the header CRC, the segment CRCs and the prefix lengths.

Targets. ``header``: ``weightcodec.api.read_header`` in this process (fast; millions of inputs).
``decode``: ``weightcodec.api.decode`` in long-lived CHILD processes, one per backend, each input
under a time limit and a memory cap. An **escape** is: any exception that is not a
``WeightcodecError``; a crash or signal; a timeout; decoded tensors that disagree with the header
(names, dtypes, shapes) or a ``torch.bool`` holding bytes other than 0/1; a peak RSS above the
cap; and, when several backends run, results that differ (both must accept with identical tensors,
or both reject with the same error class). Escapes are minimised (JSON members and tensors that do
not matter are dropped) and saved under ``--out``; a summary by (target, outcome) is printed and
written with ``--report``.

Memory: the worker measures each decode's peak resident set from ``VmHWM`` after resetting it
(``/proc/self/clear_refs``), against ``4 x declared output bytes + input bytes + allowance`` above
the RSS it had before the call (its baseline: interpreter, torch, libav). A hard ``RLIMIT_AS`` set
once at start (the worker's address space at start + ``--as-cap-mb``) protects the shared machine:
an allocation past it fails (a MemoryError or allocator error, counted as an escape) instead of
swapping. ``RLIMIT_AS`` cannot express the per-input cap itself: torch and glibc reserve far more
address space than they touch, and the limit is inherited by the ``ffmpeg`` child.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import resource
import select
import struct
import subprocess
import sys
import time
import traceback
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import click

MAGIC = b"\x89WCODEC\n"
PREFIX = struct.Struct("<8sHHIIQ")  # version 1: magic, major, minor, header_length, header_crc32, payload_length
PREFIX_V2 = struct.Struct("<8sHHIIIB3sQ")  # version 2: ..., stored length, length, crc32, compression, reserved, payload
MIB = 1024 * 1024

# ----------------------------------------------------------------------------------------------
# JSON with raw tokens: values json.dumps cannot (or must not) write
# ----------------------------------------------------------------------------------------------


class Raw:
    """A JSON token written verbatim (deep nesting, 5000-digit integers, NaN, duplicate keys ...)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


def dump(obj: Any) -> str:
    """Compact JSON of ``obj``; :class:`Raw` tokens are written as they are."""
    raws: list[str] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(node, dict):
            return {str(k): swap(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(obj), separators=(",", ":"))
    if raws:
        text = re.sub(r'"@@raw(\d+)@@"', lambda m: raws[int(m.group(1))], text)
    return text


def deep_list(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


def deep_dict(depth: int) -> Raw:
    return Raw('{"a":' * depth + "1" + "}" * depth)


# ----------------------------------------------------------------------------------------------
# The file as parts: prefix fields, header document, payload
# ----------------------------------------------------------------------------------------------


@dataclass
class WFile:
    """A file as parts. ``major`` 1: 28-byte prefix, JSON header; 2: 36-byte prefix, the header
    zstd-compressed when ``header_compression`` is 1 (docs/FORMAT.md sections 1 and 8)."""

    doc: Any
    payload: bytearray
    major: int = 2
    minor: int = 0
    header_compression: int = 1

    def copy(self) -> "WFile":
        return WFile(_deepcopy(self.doc), bytearray(self.payload), self.major, self.minor, self.header_compression)


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def split_file(data: bytes) -> tuple[int, int, int, bytes, bytes] | None:
    """``(major, minor, header_compression, stored header, rest)`` of a file whose prefix parses."""
    if len(data) < 12 or data[:8] != MAGIC:
        return None
    major = struct.unpack_from("<H", data, 8)[0]
    if major == 1 and len(data) >= PREFIX.size:
        _, _, minor, hlen, _, _ = PREFIX.unpack_from(data)
        return 1, minor, 0, data[PREFIX.size:PREFIX.size + hlen], data[PREFIX.size + hlen:]
    if len(data) >= PREFIX_V2.size:
        _, _, minor, stored, _, _, comp, _, _ = PREFIX_V2.unpack_from(data)
        return major, minor, comp, data[PREFIX_V2.size:PREFIX_V2.size + stored], data[PREFIX_V2.size + stored:]
    return None


def parse_file(data: bytes) -> WFile:
    """Split a valid file into parts (the corpus files are valid)."""
    major, minor, comp, stored, rest = split_file(data)
    text = stored
    if comp == 1:
        import zstandard

        text = zstandard.ZstdDecompressor().decompress(stored)
    return WFile(json.loads(text), bytearray(rest), major, minor, comp)


def compress_header(text: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(text)


def build_file(wf: WFile, *, fix_segments: bool = True, header_bytes: bytes | None = None,
               prefix_edit: Callable[[list], None] | None = None, stored_header: bytes | None = None) -> bytes:
    """Serialise with the header CRC and the prefix lengths recomputed (and the segment CRCs).

    ``header_bytes`` replaces the JSON text; ``stored_header`` the stored (compressed) bytes too.
    ``prefix_edit`` may change the prefix fields (a list, in the order of the version's struct).
    """
    if fix_segments:
        fix_segment_crcs(wf.doc, wf.payload)
    if header_bytes is None:
        header_bytes = dump(wf.doc).encode("utf-8", "surrogatepass")
    if wf.major == 1:
        stored = header_bytes if stored_header is None else stored_header
        fields = [MAGIC, wf.major, wf.minor, len(stored), zlib.crc32(stored), len(wf.payload)]
        masks = (0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 2**64 - 1)
        struct_ = PREFIX
    else:
        if stored_header is not None:
            stored = stored_header
        else:
            stored = compress_header(header_bytes) if wf.header_compression == 1 else header_bytes
        fields = [MAGIC, wf.major, wf.minor, len(stored), len(header_bytes), zlib.crc32(stored),
                  wf.header_compression, b"\0\0\0", len(wf.payload)]
        masks = (0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFF, None, 2**64 - 1)
        struct_ = PREFIX_V2
    if prefix_edit is not None:
        try:
            prefix_edit(fields)
        except (IndexError, TypeError):
            pass  # an edit chosen for the other version's prefix
    fields[1:] = [v if mask is None else int(v) & mask for v, mask in zip(fields[1:], masks)]
    return struct_.pack(*fields) + stored + bytes(wf.payload)


def iter_segments(doc: Any):
    """Every segment object of the document (dicts with offset/length), wherever it is."""
    if not isinstance(doc, dict):
        return
    model = doc.get("model")
    if isinstance(model, dict) and isinstance(model.get("skeleton"), dict):
        yield "skeleton", None, model["skeleton"]
    if isinstance(model, dict) and isinstance(model.get("files"), list):  # format 2.1: carried files
        for f in model["files"]:
            if isinstance(f, dict) and isinstance(f.get("data"), dict):
                yield "file", None, f["data"]
    tensors = doc.get("tensors")
    if isinstance(tensors, list):
        for t in tensors:
            if not isinstance(t, dict):
                continue
            if isinstance(t.get("data"), dict):
                yield "data", t, t["data"]
            quant = t.get("quant")
            if isinstance(quant, dict) and isinstance(quant.get("scales"), dict):
                yield "scales", t, quant["scales"]
            if isinstance(quant, dict) and isinstance(quant.get("col_scales"), dict):
                yield "col_scales", t, quant["col_scales"]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def fix_segment_crcs(doc: Any, payload: bytes) -> None:
    for _, _, seg in iter_segments(doc):
        off, length = seg.get("offset"), seg.get("length")
        if _int(off) and _int(length) and 0 <= off and 0 <= length and off + length <= len(payload):
            seg["crc32"] = zlib.crc32(payload[off:off + length])


def set_segment_bytes(wf: WFile, seg: dict, data: bytes) -> None:
    """Point ``seg`` at ``data`` appended to the payload (the old bytes stay as a hole)."""
    seg["offset"] = len(wf.payload)
    seg["length"] = len(data)
    wf.payload += data


def segment_bytes(wf: WFile, seg: dict) -> bytes:
    off, length = seg.get("offset"), seg.get("length")
    if _int(off) and _int(length) and 0 <= off <= off + length <= len(wf.payload):
        return bytes(wf.payload[off:off + length])
    return b""


def tensors_of(wf: WFile, storage: str | None = None, dtype: str | None = None) -> list[dict]:
    tensors = wf.doc.get("tensors") if isinstance(wf.doc, dict) else None
    if not isinstance(tensors, list):
        return []
    return [t for t in tensors if isinstance(t, dict) and (storage is None or t.get("storage") == storage)
            and (dtype is None or t.get("dtype") == dtype)]


# ----------------------------------------------------------------------------------------------
# HEVC streams (encoded once per corpus) and a small SPS rewriter
# ----------------------------------------------------------------------------------------------

X265_PARAMS = "log-level=error:info=0:qp=30:bframes=0:scenecut=0"


def encode_stream(width: int, height: int, frames: int, pix_fmt: str, seed: int) -> bytes:
    """``frames`` intra pictures of seeded noise in ``pix_fmt`` (8- or 10-bit) coded by libx265 (PyAV)."""
    from fractions import Fraction

    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"preset": "ultrafast", "x265-params": X265_PARAMS, "forced-idr": "1"}
    out = bytearray()
    high = 1024 if "10" in pix_fmt else 256
    for index in range(frames):
        frame = av.VideoFrame(width, height, pix_fmt)
        for plane in frame.planes:
            itemsize = 2 if "10" in pix_fmt else 1
            base = rng.integers(0, high, size=1)[0]
            values = (base + rng.integers(-8, 9, size=(plane.height, plane.line_size // itemsize))) % high
            values = values.astype("<u2" if itemsize == 2 else "u1")
            plane.update(values.tobytes()[: plane.buffer_size])
        frame.pts = index
        frame.pict_type = av.video.frame.PictureType.I
        for packet in ctx.encode(frame):
            out += bytes(packet)
    for packet in ctx.encode(None):
        out += bytes(packet)
    return bytes(out)


def flat_stream(width: int, height: int) -> bytes:
    """One flat 8-bit picture (a few hundred bytes even at 4096x2160)."""
    from fractions import Fraction

    import av
    import numpy as np

    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"preset": "ultrafast", "x265-params": X265_PARAMS, "forced-idr": "1"}
    frame = av.VideoFrame.from_ndarray(np.full((height * 3 // 2, width), 128, np.uint8), format="yuv420p")
    frame.pts = 0
    out = bytearray()
    for packet in list(ctx.encode(frame)) + list(ctx.encode(None)):
        out += bytes(packet)
    return bytes(out)


class _BitReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3] if self.pos >> 3 < len(self.data) else 0
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0 and zeros < 32:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)


class _BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def u(self, n: int, v: int) -> None:
        self.bits.extend((v >> (n - 1 - i)) & 1 for i in range(n))

    def ue(self, v: int) -> None:
        v += 1
        n = v.bit_length()
        self.u(n - 1, 0)
        self.u(n, v)

    def tobytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert HEVC emulation-prevention bytes (00 00 0x -> 00 00 03 0x for x <= 3)."""
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def rewrite_sps(stream: bytes, **changes: int) -> bytes:
    """The stream with fields of every SPS rewritten: ``chroma_format_idc``, ``width``, ``height``,
    ``bit_depth_luma`` (minus 8), ``conf_win`` (a (left, right, top, bottom) tuple or None)."""
    parts = stream.split(b"\x00\x00\x01")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) > 2 and (part[0] >> 1) & 0x3F == 33:
            try:
                part = part[:2] + escape_rbsp(_rewrite_sps_rbsp(_unescape(part[2:]), changes))
            except (IndexError, ValueError):
                pass
        out.append(part)
    return b"\x00\x00\x01".join(out)


def _rewrite_sps_rbsp(rbsp: bytes, changes: dict) -> bytes:
    r, w = _BitReader(rbsp), _BitWriter()
    w.u(4, r.u(4))
    sub = r.u(3)
    w.u(3, sub)
    w.u(1, r.u(1))
    for n in (2, 1, 5, 32, 4, 43, 1, 8):  # profile_tier_level general part
        w.u(n, r.u(n))
    flags = []
    for _ in range(sub):
        p, l = r.u(1), r.u(1)
        flags.append((p, l))
        w.u(1, p)
        w.u(1, l)
    if sub > 0:
        for _ in range(sub, 8):
            w.u(2, r.u(2))
    for p, l in flags:
        if p:
            w.u(88, r.u(88))
        if l:
            w.u(8, r.u(8))
    w.ue(r.ue())  # sps id
    chroma = r.ue()
    chroma = changes.get("chroma_format_idc", chroma)
    w.ue(chroma)
    if chroma == 3:
        w.u(1, r.u(1) if r.data else 0)
    width, height = r.ue(), r.ue()
    w.ue(changes.get("width", width))
    w.ue(changes.get("height", height))
    window = None
    if r.u(1):
        window = tuple(r.ue() for _ in range(4))
    window = changes.get("conf_win", window)
    w.u(1, 1 if window else 0)
    if window:
        for v in window:
            w.ue(v)
    luma, chroma_depth = r.ue(), r.ue()
    w.ue(changes.get("bit_depth_luma", luma))
    w.ue(changes.get("bit_depth_chroma", chroma_depth))
    while r.pos < 8 * len(r.data):
        w.bits.append(r.u(1))
    return w.tobytes()


# ----------------------------------------------------------------------------------------------
# Corpus: real files of every storage kind
# ----------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    files: "OrderedDict[str, bytes]"
    parsed: dict[str, WFile]
    streams: dict[str, bytes]  # substitute HEVC streams by description
    bombs: dict[str, bytes]  # zstd frames

    def describe(self) -> list[dict]:
        return [{"name": k, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()[:16]}
                for k, v in self.files.items()]


def _corpus_models(seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    raw_all = OrderedDict([
        ("f64", randn(3, 4).double()), ("f32", randn(5)), ("f16", randn(2, 3).half()),
        ("bf16", randn(4, 4).bfloat16()), ("i64.scalar", torch.tensor(-7, dtype=torch.int64)),
        ("i32", torch.arange(-3, 3, dtype=torch.int32)), ("i16", torch.tensor([[1, -2], [300, -400]], dtype=torch.int16)),
        ("i8", torch.tensor([-128, -1, 0, 127], dtype=torch.int8)), ("u8", torch.arange(250, 256, dtype=torch.uint8)),
        ("mask", torch.tensor([True, False, True, True, False, False, True])), ("empty", torch.empty(0)),
        ("empty2d", torch.empty(3, 0)), ("f32.scalar", torch.tensor(1.5)),
    ])
    raw_zstd = OrderedDict([
        ("zeros", torch.zeros(256)), ("ramp", torch.arange(100, dtype=torch.int64)),
        ("flags", torch.arange(300) % 3 == 0), ("noise", randn(8)),
    ])
    sparse = randn(16, 32)
    sparse[sparse.abs() < 0.1] = 0
    int8_tensor = OrderedDict([("conv.weight", randn(8, 4, 3, 3)), ("fc.weight", randn(16, 32)),
                               ("fc.bias", randn(16))])
    int8_channel = OrderedDict([("conv.weight", randn(8, 4, 3, 3) * torch.linspace(0.1, 3, 8).view(8, 1, 1, 1)),
                                ("sparse.weight", sparse), ("half.weight", randn(12, 24).half()),
                                ("bf.weight", randn(24, 12).bfloat16())])
    hevc_single = OrderedDict([("fc.weight", randn(32, 48)), ("fc.bias", randn(32))])
    hevc_multi = OrderedDict([("fc.weight", randn(40, 72) * torch.linspace(0.2, 2, 40).view(40, 1)),
                              ("half.weight", randn(34, 36).half())])
    hevc_gray = OrderedDict([("fc.weight", randn(36, 40))])
    module = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(randn(*p.shape))
    mixed = OrderedDict([*hevc_multi.items(), *int8_channel.items(), *raw_all.items()])
    return raw_all, raw_zstd, int8_tensor, int8_channel, hevc_single, hevc_multi, hevc_gray, module, mixed


def _corpus_v21(seed: int):
    """Format 2.1 seeds: a Transformer-like state_dict (per-channel-2d and axis-1 scales, an alias
    of each kind, the raw-only dtypes) and a Hugging Face folder (shards and carried files)."""
    import torch

    from weightcodec.formats.hf_folder import FolderFile, WeightsLayout
    from weightcodec.header import ShardInfo
    from weightcodec.modelio import LoadedModel

    g = torch.Generator().manual_seed(seed + 21)

    def randn(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    embedding = randn(40, 24)
    transformer = OrderedDict([
        ("model.embed_tokens.weight", embedding),  # embedding role: per-channel along axis 1, hevc
        ("model.layers.0.self_attn.q_proj.weight", randn(24, 24) * torch.linspace(0.2, 3, 24)),  # per-channel-2d
        ("model.layers.0.mlp.up_proj.weight", randn(8, 24).bfloat16()),  # small: int8 per-channel-2d
        ("model.layers.0.input_layernorm.weight", torch.ones(24)),
        ("lm_head.weight", embedding),  # tied: alias, shared storage
        ("copy.weight", embedding.clone()),  # equal bytes: alias, a copy
        ("u16", torch.arange(0, 60000, 997, dtype=torch.int32).to(torch.uint16)),
        ("u32", torch.arange(7, dtype=torch.int64).to(torch.uint32) * 600_000_000),
        ("u64", torch.tensor([0, 1, 2**62], dtype=torch.int64).to(torch.uint64)),
        ("f8e4m3", randn(6).to(torch.float8_e4m3fn)),
        ("f8e5m2", randn(6).to(torch.float8_e5m2)),
        ("f8e8m0", (randn(5).abs() + 0.5).to(torch.float8_e8m0fnu)),
        ("f4x2", torch.tensor([0x12, 0xF7, 0x80], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)),
        ("c64", torch.complex(randn(3), randn(3))),
    ])
    folder_tensors = OrderedDict([("h.0.attn.c_attn.weight", randn(24, 48)), ("h.0.ln_1.weight", torch.ones(24)),
                                  ("wte.weight", randn(40, 24))])
    layout = WeightsLayout("hf-folder", (
        ShardInfo("model-00001-of-00002.safetensors", ("h.0.attn.c_attn.weight", "h.0.ln_1.weight"), {"format": "pt"}),
        ShardInfo("model-00002-of-00002.safetensors", ("wte.weight",), {"format": "pt"}),
    ), (FolderFile("config.json", b'{"model_type": "gpt2"}'), FolderFile("tokenizer.json", b'{"v": 1}' * 40),
        FolderFile("model.safetensors.index.json", b"{}"), FolderFile("1_Pooling/config.json", b"")))
    return transformer, LoadedModel("hf-folder", folder_tensors, layout=layout)

def _planned_file(seed: int, config) -> bytes:
    """A format 2.1 file as a budgeted encode writes one: an HEVC mosaic of 3x3 kernels with affine
    per-channel int8, affine per-tensor int8, float16-stored raw tensors and the plan record."""
    import torch

    from weightcodec import api
    from weightcodec.header import PlanRecord
    from weightcodec.layouts import MatrixLayout
    from weightcodec.modelio import load_source
    from weightcodec.plan import EncodePlan, TensorPlan

    g = torch.Generator().manual_seed(seed + 21)
    conv = torch.randn(16, 4, 3, 3, generator=g) * 0.1 + 0.02
    fc = torch.rand(24, 20, generator=g) * 0.3 - 0.05
    bias = torch.randn(24, generator=g)
    var = torch.rand(16, generator=g).double() + 0.5
    state = OrderedDict([("conv.weight", conv), ("fc.weight", fc), ("fc.bias", bias), ("bn.var", var)])
    plans = [
        TensorPlan("conv.weight", "hevc", "float32", (16, 4, 3, 3), granularity="per-channel", hevc=config.hevc,
                   layout=MatrixLayout("mosaic", 8), scheme="affine-int8"),
        TensorPlan("fc.weight", "int8", "float32", (24, 20), granularity="per-tensor", scheme="affine-int8"),
        TensorPlan("fc.bias", "raw", "float32", (24,), stored_dtype="float16"),
        TensorPlan("bn.var", "raw", "float64", (16,), stored_dtype="float16"),
    ]
    record = PlanRecord(method="fisher", objective="max-drop", budget=1.0, met=True, calibration="corpus",
                        calibration_samples=10, reference_score=90.0, score=89.5, predicted_loss=0.01,
                        candidates=40, seconds=1.5, layers={"conv.weight": 0.008, "fc.weight": 0.002})
    return api.encode_planned(load_source(state), EncodePlan(plans, [], record), None, config=config,
                              verify=True, workers=1).data


def build_corpus(seed: int = 0, *, with_streams: bool = True) -> Corpus:
    """The seed files (each valid, each decoding) and the substitute streams and zstd bombs."""
    import torch

    from weightcodec import api
    from weightcodec.config import EncodeConfig, HevcSettings, QuantSettings

    torch.set_num_threads(1)
    raw_all, raw_zstd, int8_t, int8_c, hevc_single, hevc_multi, hevc_gray, module, mixed = _corpus_models(seed)

    def cfg(*, tile=4096, chroma="yuv420p", lossless=False, granularity="auto", compress=True, matrices=True):
        return EncodeConfig(
            hevc=HevcSettings(preset="ultrafast", max_tile_width=tile, max_tile_height=min(tile, 2160),
                              chroma=chroma, lossless=lossless),
            quant=QuantSettings(granularity=granularity), min_quantized_elements=64, min_coded_elements=256,
            compress_raw=compress, code_matrices=matrices)

    files = OrderedDict()
    files["raw-all-dtypes"] = api.encode(raw_all, config=cfg(compress=False)).data
    files["raw-zstd"] = api.encode(raw_zstd, config=cfg()).data
    files["int8-per-tensor"] = api.encode(int8_t, config=cfg(granularity="per-tensor", compress=False, matrices=False)).data
    files["int8-per-channel-zstd"] = api.encode(int8_c, config=cfg(granularity="per-channel", matrices=False)).data
    files["hevc-single"] = api.encode(hevc_single, config=cfg(granularity="per-tensor")).data
    files["hevc-multi"] = api.encode(hevc_multi, config=cfg(tile=32, granularity="per-channel")).data
    files["hevc-gray-lossless"] = api.encode(hevc_gray, config=cfg(tile=32, chroma="gray", lossless=True)).data
    files["module"] = api.encode(module, config=cfg()).data
    files["mixed"] = api.encode(mixed, config=cfg(tile=32)).data
    # format 2.1: per-channel-2d and axis-1 scales, aliases, raw-only dtypes; a Hugging Face folder
    transformer, folder = _corpus_v21(seed)
    files["v2.1-transformer"] = api.encode(transformer, config=replace(cfg(tile=32), policy="transformer")).data
    files["v2.1-hf-folder"] = api.encode(folder, config=replace(cfg(tile=32), policy="transformer")).data
    files["planned-2.1"] = _planned_file(seed, cfg(tile=32))
    # the other prefixes a reader must read: version 1 (section 8), version 2 with the header stored as is
    for name, major, compression in (("mixed", 1, 0), ("hevc-multi", 1, 0), ("int8-per-channel-zstd", 2, 0)):
        wf = parse_file(files[name])
        wf.major, wf.header_compression = major, compression
        files[f"{name} v{major}{'' if compression else ' plain'}"] = build_file(wf)
    parsed = {k: parse_file(v) for k, v in files.items()}
    streams = build_streams(parsed, seed) if with_streams else {}
    return Corpus(files, parsed, streams, build_bombs())


def build_streams(parsed: dict[str, WFile], seed: int) -> dict[str, bytes]:
    """Substitute streams for the layouts of the corpus: other formats, counts and sizes."""
    layouts = set()
    for wf in parsed.values():
        for t in tensors_of(wf, "hevc"):
            h = t["hevc"]
            layouts.add((h["tile_width"], h["tile_height"], h["frames"]))
    streams: dict[str, bytes] = {}
    for n, (w, h, frames) in enumerate(sorted(layouts)):
        s = seed * 1000 + n * 10
        key = f"{w}x{h}x{frames}"
        for fmt in ("yuv420p", "gray", "yuv444p", "yuv420p10le", "gray10le"):
            streams[f"{key} {fmt}"] = encode_stream(w, h, frames, fmt, s)
        streams[f"{key}+1 yuv420p"] = encode_stream(w, h, frames + 1, "yuv420p", s + 1)
        if frames > 1:
            streams[f"{key}-1 yuv420p"] = encode_stream(w, h, frames - 1, "yuv420p", s + 2)
        streams[f"{w + 16}x{h}x{frames} yuv420p"] = encode_stream(w + 16, h, frames, "yuv420p", s + 3)
        streams[f"{w}x{h + 16}x{frames} gray"] = encode_stream(w, h + 16, frames, "gray", s + 4)
        # size change mid-stream: the first picture has the header's size, the others do not
        first = encode_stream(w, h, 1, "yuv420p", s + 5)
        streams[f"{key} size-change"] = first + encode_stream(w + 16, h + 16, max(frames - 1, 1), "yuv420p", s + 6)
        streams[f"{key} depth-change"] = first + encode_stream(w, h, max(frames - 1, 1), "yuv420p10le", s + 7)
        streams[f"{key} chroma-change"] = first + encode_stream(w, h, max(frames - 1, 1), "gray", s + 8)
    big = flat_stream(4096, 2160)
    streams["4096x2160 x200 bomb"] = big * 200
    streams["4096x2160 x1"] = big
    streams["256x256 x2000 bomb"] = flat_stream(256, 256) * 2000
    streams["16x16 x20000 bomb"] = flat_stream(16, 16) * 20000
    return streams


def build_bombs() -> dict[str, bytes]:
    """zstd frames that expand far past what any tensor of the corpus needs."""
    import zstandard

    bombs = {}
    # frame header declaring 1 TiB (single segment, 8-byte content size) and one tiny RLE block
    fcs = 1 << 40
    bombs["declares 1 TiB"] = (b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", fcs)
                               + (((16 << 3) | (1 << 1) | 1).to_bytes(3, "little")) + b"\x00")
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1, write_content_size=False).stream_writer(out, closefd=False) as writer:
        chunk = bytes(16 * MIB)
        for _ in range(128):
            writer.write(chunk)
    bombs["RLE 2 GiB, no size"] = out.getvalue()
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False, size=256 * MIB) as writer:
        chunk = bytes(16 * MIB)
        for _ in range(16):
            writer.write(chunk)
    bombs["RLE 256 MiB, sized"] = out.getvalue()
    bombs["small no size"] = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64))
    bombs["skippable"] = b"\x50\x2a\x4d\x18" + struct.pack("<I", 4) + b"abcd"
    bombs["two frames"] = zstandard.ZstdCompressor().compress(bytes(32)) * 2
    bombs["truncated"] = zstandard.ZstdCompressor().compress(bytes(1000))[:-3]
    bombs["empty frame"] = zstandard.ZstdCompressor().compress(b"")
    return bombs


# ----------------------------------------------------------------------------------------------
# Mutators
# ----------------------------------------------------------------------------------------------

BIG_INTS = [2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 16, 10**30, -2**63]
SMALL_INTS = [-1, 0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 127, 128, 129, 255, 256, 4096, 65535, 65536]
RAW_TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E+999999999", "9" * 5000, "-" + "9" * 4301,
    "1" + "0" * 4300, "0." + "0" * 5000 + "1", "1e-400", '"\\ud800"', '"\\u0000"', "-0", "0e0",
]
STRINGS = ["", "a", "\u00e9", "\U0001f600" * 3, "x" * 100_000, "\u202e", "tensor\u0000name", "..", "/"]
FIELD_VALUES: dict[str, list] = {
    "dtype": ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
              "float8", "complex64", "Float32", "uint16", "qint8"],
    "storage": ["raw", "int8", "hevc", "zstd", "HEVC", "int4", "module"],
    "compression": ["none", "zstd", "lz4", "gzip", None, "", "ZSTD"],
    "chroma": ["yuv420p", "gray", "rgb24", "yuv444p", "yuv422p", "yuv420p10le", "nv12", "gray10le", None],
    "granularity": ["per-tensor", "per-channel", "auto", "per-row", None],
    "scheme": ["symmetric-int8", "asymmetric-int8", "int4", None],
    "codec": ["hevc", "h264", "av1", "HEVC", None],
    "kind": ["state_dict", "module", "tensor", None],
    "value_offset": [128, 0, 127, 129, 256, -128, 255, 1],
    "lossless": [True, False, 1, "yes"],
}
NUMERIC_KEYS = {"offset", "length", "crc32", "tile_height", "tile_width", "grid_rows", "grid_cols", "frames",
                "value_offset", "axis", "qp", "guard_db"}


def interesting(rng: random.Random, key: Any, current: Any) -> Any:
    """A value worth trying for ``key`` (whose current value is ``current``)."""
    roll = rng.random()
    if key in FIELD_VALUES and roll < 0.5:
        return rng.choice(FIELD_VALUES[key])
    if _int(current) and roll < 0.75:
        return rng.choice([current + 1, current - 1, current * 2, current // 2, -current, 0, current + 2**32,
                           current + 2**63, current * 1000, current + rng.randint(-16, 16)])
    if key in ("shape", "matrix") and isinstance(current, list) and roll < 0.85:
        return mutate_dims(rng, current)
    choice = rng.random()
    if choice < 0.3:
        return rng.choice(SMALL_INTS + BIG_INTS)
    if choice < 0.5:
        return Raw(rng.choice(RAW_TOKENS))
    if choice < 0.6:
        return rng.choice([deep_list(rng.choice([100, 1000, 5000, 100_000])),
                           deep_dict(rng.choice([100, 1000, 5000, 50_000]))])
    if choice < 0.75:
        return rng.choice(STRINGS)
    return rng.choice([True, False, None, 0.5, -0.0, 1e308, 5e-324, [], {}, [1], [[]], {"a": 1},
                       [1.5, 2], ["1", "2"], [True, 2]])


def mutate_dims(rng: random.Random, dims: list) -> list:
    dims = list(dims)
    op = rng.randrange(12)
    if op == 0 and dims:
        dims[rng.randrange(len(dims))] = rng.choice(BIG_INTS + [0, -1, 1])
    elif op == 1:
        dims.append(rng.choice([1, 2, 0, 2**63]))
    elif op == 2 and dims:
        dims.pop(rng.randrange(len(dims)))
    elif op == 3:
        dims = dims[::-1]
    elif op == 4:
        dims = [2**32, 2**32] + dims
    elif op == 5:
        dims = [1] * rng.choice([9, 20, 64]) + dims
    elif op == 6 and dims:
        dims[rng.randrange(len(dims))] = rng.choice([1.5, True, "3", None, [2], -0.0, 2.0])
    elif op == 7 and dims:
        dims[rng.randrange(len(dims))] = Raw(rng.choice(["9" * 5000, "1e400", "NaN", "2.0", "-0"]))
    elif op == 8:
        dims = [2**21] * 3
    elif op == 9 and dims:
        i = rng.randrange(len(dims))
        dims[i] = dims[i] * 2 if _int(dims[i]) else 2
    elif op == 10:
        dims = [] if dims else [1]
    elif dims:
        i = rng.randrange(len(dims))
        if _int(dims[i]):
            dims[i] += rng.choice([-1, 1, 16, -16])
    return dims


def _walk(obj: Any, out: list) -> None:
    """Every (container, key) pair of the document, iteratively."""
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                out.append((node, k))
                stack.append(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out.append((node, i))
                stack.append(v)


def m_json_set(rng, wf, corpus):
    nodes: list = []
    _walk(wf.doc, nodes)
    if not nodes:
        return "json-set: empty"
    container, key = rng.choice(nodes)
    container[key] = interesting(rng, key if isinstance(key, str) else _parent_key(wf.doc, container), container[key])
    return f"json-set {key!r}"


def _parent_key(doc: Any, target: Any) -> Any:
    nodes: list = []
    _walk(doc, nodes)
    for container, key in nodes:
        if container[key] is target:
            return key
    return None


def m_json_delete(rng, wf, corpus):
    nodes: list = []
    _walk(wf.doc, nodes)
    if not nodes:
        return "json-delete: empty"
    container, key = rng.choice(nodes)
    del container[key]
    return f"json-delete {key!r}"


def m_json_add(rng, wf, corpus):
    nodes = [n for n in _all_dicts(wf.doc)]
    target = rng.choice(nodes) if nodes else wf.doc
    key = rng.choice(["quant", "hevc", "compression", "data", "skeleton", "extra", "scales", "shape", "\u00e9", ""])
    if not isinstance(target, dict):
        return "json-add: no dict"
    donor = None
    for t in tensors_of(wf):
        if key in t:
            donor = t[key]
    target[key] = _deepcopy(donor) if donor is not None and rng.random() < 0.6 else interesting(rng, key, None)
    return f"json-add {key!r}"


def _all_dicts(doc: Any) -> list[dict]:
    out, stack = [], [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def m_tensor_field(rng, wf, corpus):
    """Edit one member of one tensor entry (the schema's fields, weighted to the deep ones)."""
    tensors = tensors_of(wf)
    if not tensors:
        return "tensor-field: none"
    t = rng.choice(tensors)
    candidates = [(t, k) for k in ("name", "dtype", "shape", "storage")]
    for sub in ("data", "quant", "hevc"):
        if isinstance(t.get(sub), dict):
            candidates += [(t[sub], k) for k in t[sub]]
    quant = t.get("quant")
    if isinstance(quant, dict) and isinstance(quant.get("scales"), dict):
        candidates += [(quant["scales"], k) for k in quant["scales"]]
    container, key = rng.choice(candidates)
    container[key] = interesting(rng, key, container.get(key))
    return f"tensor-field {t.get('storage')}.{key}"


def m_hevc_layout(rng, wf, corpus):
    """Change an HEVC tensor's layout consistently (so it passes the header checks and reaches the codec)."""
    tensors = tensors_of(wf, "hevc")
    if not tensors:
        return m_tensor_field(rng, wf, corpus)
    h = rng.choice(tensors)["hevc"]
    op = rng.randrange(6)
    if op == 0:
        h["tile_height"], h["tile_width"] = h["tile_width"], h["tile_height"]
    elif op == 1:
        h["grid_rows"] += 1
        h["frames"] = h["grid_rows"] * h["grid_cols"]
    elif op == 2:
        h["tile_width"] += 16
    elif op == 3:
        h["frames"] = rng.choice([h["frames"] + 1, max(h["frames"] - 1, 0), 2**31])
    elif op == 4:
        h["grid_rows"], h["grid_cols"] = h["grid_cols"], h["grid_rows"]
    else:
        h["tile_height"], h["tile_width"], h["grid_rows"], h["grid_cols"] = 2160, 4096, 1, 1
        h["frames"] = 1
    return f"hevc-layout op{op}"


def m_reshape(rng, wf, corpus):
    """Give a tensor another shape (same or other element count), keeping matrix/lengths in step or not."""
    tensors = tensors_of(wf)
    if not tensors:
        return "reshape: none"
    t = rng.choice(tensors)
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(_int(d) for d in shape):
        return "reshape: bad shape"
    numel = 1
    for d in shape:
        numel *= d
    op = rng.randrange(5)
    if op == 0 and numel:
        t["shape"] = [numel]
    elif op == 1:
        t["shape"] = shape[::-1]
    elif op == 2:
        t["shape"] = [1, *shape, 1]
    elif op == 3:
        t["shape"] = [d * 2 for d in shape] or [2]
    else:
        t["shape"] = [0, *shape[1:]]
    if isinstance(t.get("hevc"), dict) and rng.random() < 0.7 and t["shape"]:
        rows = t["shape"][0]
        cols = 1
        for d in t["shape"][1:]:
            cols *= d
        t["hevc"]["matrix"] = [rows, cols]
    return f"reshape op{op} {t.get('storage')}"


def m_segment_range(rng, wf, corpus):
    segs = [s for _, _, s in iter_segments(wf.doc)]
    if not segs:
        return "segment-range: none"
    seg = rng.choice(segs)
    other = rng.choice(segs)
    op = rng.randrange(6)
    if op == 0:
        seg["offset"] = other.get("offset")
    elif op == 1:
        seg["length"] = (seg.get("length") or 0) + rng.choice([-1, 1, 4096, 2**32])
    elif op == 2:
        seg["offset"] = len(wf.payload) - rng.randrange(0, 3)
    elif op == 3:
        seg["offset"], seg["length"] = 0, len(wf.payload)
    elif op == 4:
        seg["compression"] = rng.choice(["zstd", "none", "lz4"])
    else:
        seg["length"] = 0
    return f"segment-range op{op}"


def m_duplicate_tensor(rng, wf, corpus):
    tensors = wf.doc.get("tensors") if isinstance(wf.doc, dict) else None
    if not isinstance(tensors, list) or not tensors:
        return "duplicate: none"
    t = _deepcopy(rng.choice(tensors))
    if rng.random() < 0.5 and isinstance(t, dict):
        t["name"] = f"{t.get('name')}.copy"
    tensors.insert(rng.randrange(len(tensors) + 1), t)
    return "duplicate-tensor"


def m_swap_tensor_parts(rng, wf, corpus):
    tensors = tensors_of(wf)
    if len(tensors) < 2:
        return m_tensor_field(rng, wf, corpus)
    a, b = rng.sample(tensors, 2)
    key = rng.choice(["shape", "dtype", "storage", "data", "quant", "hevc"])
    a[key], b[key] = b.get(key), a.get(key)
    return f"swap {key}"


def m_header_text(rng, wf, corpus):
    """Byte edits inside the header text, with the CRC recomputed (reaches the JSON parser)."""
    text = bytearray(dump(wf.doc).encode("utf-8", "surrogatepass"))
    for _ in range(rng.randint(1, 4)):
        if not text:
            break
        i = rng.randrange(len(text))
        op = rng.randrange(5)
        if op == 0:
            text[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            text[i] = rng.choice(b'{}[]",:0-9eE.\\ \xff\xc3\x80')
        elif op == 2:
            del text[i: i + rng.randint(1, 8)]
        elif op == 3:
            text[i:i] = rng.choice([b"[", b"{", b'"', b",", b"\\u", b"\xed\xa0\x80", b"1e999", b"-"])
        else:
            j = rng.randrange(len(text))
            text[i:i] = text[j: j + rng.randint(1, 40)]
    wf.header_override = bytes(text)  # type: ignore[attr-defined]
    return "header-text"


def m_dup_keys(rng, wf, corpus):
    """A tensor object written with one of its keys twice (the later value differs)."""
    tensors = tensors_of(wf)
    if not tensors:
        return "dup-keys: none"
    t = rng.choice(tensors)
    key = rng.choice(list(t))
    body = dump(t)[:-1] + "," + json.dumps(key) + ":" + dump(interesting(rng, key, t[key])) + "}"
    tensors_list = wf.doc["tensors"]
    tensors_list[tensors_list.index(t)] = Raw(body)
    return f"dup-key {key!r}"


def m_deep(rng, wf, corpus):
    depth = rng.choice([200, 1000, 10_000, 100_000, 1_000_000])
    where = rng.randrange(4)
    token = deep_list(depth) if rng.random() < 0.5 else deep_dict(min(depth, 100_000))
    if where == 0:
        wf.doc["metadata"] = {"x": token}
    elif where == 1:
        wf.doc["tensors"] = token
    elif where == 2 and tensors_of(wf):
        rng.choice(tensors_of(wf))["shape"] = token
    else:
        wf.doc = Raw(token.text)
    return f"deep {depth}"


def m_top_level(rng, wf, corpus):
    op = rng.randrange(8)
    if op == 0:
        wf.doc = rng.choice([[], 1, "x", None, Raw("NaN")])
    elif op == 1:
        wf.doc["tensors"] = []
    elif op == 2:
        wf.doc["model"] = {"kind": "module", "skeleton": {"offset": 0, "length": len(wf.payload), "crc32": 0}}
    elif op == 3:
        wf.major = rng.choice([0, 2, 65535])
    elif op == 4:
        wf.minor = rng.choice([1, 65535])
        wf.doc["future"] = {"member": [1, 2]}
    elif op == 5:
        wf.doc["metadata"] = rng.choice([[], "x", {"k": {"n": [1] * 1000}}, None])
    elif op == 6:
        wf.doc["tensors"] = (wf.doc.get("tensors") or []) * rng.choice([2, 50])
    else:
        wf.doc.pop(rng.choice(["model", "tensors", "producer", "metadata"]), None)
    return f"top-level op{op}"


def m_payload_flip(rng, wf, corpus):
    """Flip bits inside one segment (its CRC is recomputed later, so the flips reach the decoders)."""
    segs = [(k, s) for k, _, s in iter_segments(wf.doc) if segment_bytes(wf, s)]
    if not segs:
        return "payload-flip: none"
    kind, seg = rng.choice(segs)
    off, length = seg["offset"], seg["length"]
    n = rng.choice([1, 1, 2, 4, 16])
    for _ in range(n):
        i = off + rng.randrange(length)
        if rng.random() < 0.7:
            wf.payload[i] ^= 1 << rng.randrange(8)
        else:
            wf.payload[i] = rng.randrange(256)
    return f"payload-flip {kind} x{n}"


def m_segment_replace(rng, wf, corpus):
    segs = [(k, t, s) for k, t, s in iter_segments(wf.doc)]
    if not segs:
        return "segment-replace: none"
    kind, t, seg = rng.choice(segs)
    old = segment_bytes(wf, seg)
    op = rng.randrange(5)
    if op == 0:
        data = rng.randbytes(rng.choice([0, 1, 4, len(old), len(old) + 1, 1000]))
    elif op == 1:
        data = old[: rng.randrange(len(old) + 1)]
    elif op == 2:
        data = old + rng.randbytes(rng.randint(1, 64))
    elif op == 3:
        import zstandard

        data = zstandard.ZstdCompressor().compress(old + rng.choice([b"", b"\x00", old]))
        seg["compression"] = "zstd"
    else:
        data = old * 2
    set_segment_bytes(wf, seg, data)
    return f"segment-replace {kind} op{op}"


def m_zstd_bomb(rng, wf, corpus):
    segs = [(k, t, s) for k, t, s in iter_segments(wf.doc)]
    if not segs:
        return "zstd-bomb: none"
    weighted = [x for x in segs if x[0] == "data"] or segs
    kind, t, seg = rng.choice(weighted)
    name = rng.choice(list(corpus.bombs))
    set_segment_bytes(wf, seg, corpus.bombs[name])
    seg["compression"] = "zstd"
    return f"zstd-bomb {name} in {kind} of {t.get('storage') if t else 'model'}"


def m_bool_bytes(rng, wf, corpus):
    tensors = [t for t in tensors_of(wf, "raw", "bool")]
    if not tensors:
        tensors = tensors_of(wf, "raw")
        if not tensors:
            return "bool-bytes: none"
        t = rng.choice(tensors)
        t["dtype"] = "bool"
    else:
        t = rng.choice(tensors)
    n = 1
    for d in t.get("shape") or []:
        n *= d if _int(d) else 1
    n = min(max(n, 0), 4096)  # a shape made huge by an earlier mutation: keep the input small
    fill = [0, 1, 2, 255, 128, rng.randrange(256)]
    values = bytes(rng.choice(fill) for _ in range(n))
    t["data"] = {"offset": 0, "length": 0, "crc32": 0}
    set_segment_bytes(wf, t["data"], values)
    return "bool-bytes"


def m_scales(rng, wf, corpus):
    tensors = [t for t in tensors_of(wf) if isinstance(t.get("quant"), dict) and isinstance(t["quant"].get("scales"), dict)]
    if not tensors:
        return "scales: none"
    t = rng.choice(tensors)
    seg = t["quant"]["scales"]
    count = min(max(seg.get("length", 4) // 4, 1), 4096) if _int(seg.get("length")) else 1
    special = rng.choice([float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 3.4e38, 1e-45, -0.0, 1e30])
    values = [special if rng.random() < 0.5 else 0.01 for _ in range(count)]
    set_segment_bytes(wf, seg, struct.pack(f"<{count}f", *values))
    return f"scales {special}"


def m_hevc_substitute(rng, wf, corpus):
    tensors = tensors_of(wf, "hevc")
    if not tensors or not corpus.streams:
        return m_payload_flip(rng, wf, corpus)
    t = rng.choice(tensors)
    h = t["hevc"]
    key = f"{h.get('tile_width')}x{h.get('tile_height')}x{h.get('frames')}"
    own = [k for k in corpus.streams if k.startswith(key + " ") or k.startswith(key + "+") or k.startswith(key + "-")]
    roll = rng.random()
    if roll < 0.04:
        name = rng.choice([k for k in corpus.streams if "bomb" in k])
    elif roll < 0.7 and own:
        name = rng.choice(own)
    else:
        name = rng.choice([k for k in corpus.streams if "bomb" not in k])
    stream = corpus.streams[name]
    extra = ""
    if rng.random() < 0.15:
        stream = stream[: rng.randrange(1, len(stream))]
        extra = " truncated"
    elif rng.random() < 0.15:
        s = bytearray(stream)
        for _ in range(rng.randint(1, 8)):
            s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
        stream = bytes(s)
        extra = " flipped"
    set_segment_bytes(wf, t["data"], stream)
    return f"hevc-substitute {name}{extra}"


def m_sps_edit(rng, wf, corpus):
    """Rewrite SPS fields of an HEVC stream (width/height 0 or huge, chroma format, bit depth, window)."""
    tensors = tensors_of(wf, "hevc")
    if not tensors:
        return m_payload_flip(rng, wf, corpus)
    t = rng.choice(tensors)
    stream = segment_bytes(wf, t["data"])
    field_name = rng.choice(["width", "height", "chroma_format_idc", "bit_depth_luma", "conf_win"])
    value: Any = {
        "width": rng.choice([0, 8, 16, 17, 65535, 2**16 + 8, 2**31]),
        "height": rng.choice([0, 8, 16, 17, 65535, 2**16 + 8]),
        "chroma_format_idc": rng.choice([0, 1, 2, 3, 4, 7]),
        "bit_depth_luma": rng.choice([0, 1, 2, 6, 8]),
        "conf_win": rng.choice([None, (0, 0, 0, 0), (4, 4, 4, 4), (1000, 0, 0, 0), (0, 0, 0, 2**20)]),
    }[field_name]
    set_segment_bytes(wf, t["data"], rewrite_sps(stream, **{field_name: value}))
    return f"sps-edit {field_name}={value}"


def m_prefix(rng, wf, corpus):
    """Prefix fields: lengths off by one or huge, other versions, a flipped CRC (v2: also the
    header compression byte, the reserved bytes, a stored length != length)."""
    if wf.major == 1:
        op = rng.randrange(5)
        edits = {
            0: lambda f: f.__setitem__(3, f[3] + rng.choice([-1, 1, 2**31, -f[3]])),
            1: lambda f: f.__setitem__(5, f[5] + rng.choice([-1, 1, 2**63, 2**40])),
            2: lambda f: f.__setitem__(3, 2**32 - 1),
            3: lambda f: f.__setitem__(1, rng.choice([0, 2, 3, 255])),
            4: lambda f: f.__setitem__(4, f[4] ^ 1),
        }
    else:
        op = rng.randrange(9)
        edits = {
            0: lambda f: f.__setitem__(3, f[3] + rng.choice([-1, 1, 2**31, -f[3]])),
            1: lambda f: f.__setitem__(4, f[4] + rng.choice([-1, 1, 2**31, 2**26 + 1, -f[4]])),
            2: lambda f: f.__setitem__(8, f[8] + rng.choice([-1, 1, 2**63, 2**40])),
            3: lambda f: f.__setitem__(1, rng.choice([0, 1, 3, 255])),
            4: lambda f: f.__setitem__(5, f[5] ^ 1),
            5: lambda f: f.__setitem__(6, rng.choice([0, 1, 2, 255])),
            6: lambda f: f.__setitem__(7, rng.choice([b"\0\0\1", b"\xff\xff\xff", b"\0\x80\0"])),
            7: lambda f: f.__setitem__(4, 2**32 - 1),
            8: lambda f: f.__setitem__(3, 2**32 - 1),
        }
    wf.prefix_edit = edits[op]  # type: ignore[attr-defined]
    return f"prefix v{wf.major} op{op}"


def m_header_frame(rng, wf, corpus):
    """Version 2: the stored header replaced by a zstd frame that lies (bombs, wrong sizes, no size,
    two frames, trailing bytes), or the version/compression changed while keeping the bytes."""
    import zstandard

    text = dump(wf.doc).encode("utf-8", "surrogatepass")
    op = rng.randrange(9)
    if op == 0:
        name = rng.choice(list(corpus.bombs))
        wf.stored_header = corpus.bombs[name]  # type: ignore[attr-defined]
        what = name
    elif op == 1:
        wf.stored_header = zstandard.ZstdCompressor(write_content_size=False).compress(text)  # type: ignore
        what = "no content size"
    elif op == 2:
        wf.stored_header = compress_header(text + rng.choice([b" ", b"x", b"\0" * 100]))  # type: ignore
        what = "declares more"
    elif op == 3:
        wf.stored_header = compress_header(text) * 2  # type: ignore[attr-defined]
        what = "two frames"
    elif op == 4:
        wf.stored_header = compress_header(text) + rng.randbytes(rng.randint(1, 16))  # type: ignore
        what = "trailing bytes"
    elif op == 5:
        wf.stored_header = compress_header(text)[: -rng.randint(1, 8)]  # type: ignore[attr-defined]
        what = "truncated frame"
    elif op == 6:
        wf.header_compression = 0
        what = "stored as is"
    elif op == 7:
        wf.major = 1
        what = "written as version 1"
    else:
        wf.major, wf.header_compression = 2, 1
        frame = bytearray(compress_header(text))
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        wf.stored_header = bytes(frame)  # type: ignore[attr-defined]
        what = "flipped frame"
    return f"header-frame {what}"


#: name -> (function, weight in the header target, weight in the decode target)
MUTATORS: dict[str, tuple[Callable, float, float]] = {
    "json-set": (m_json_set, 10, 4),
    "json-delete": (m_json_delete, 4, 1),
    "json-add": (m_json_add, 3, 1),
    "tensor-field": (m_tensor_field, 12, 8),
    "hevc-layout": (m_hevc_layout, 3, 6),
    "reshape": (m_reshape, 4, 4),
    "segment-range": (m_segment_range, 4, 3),
    "duplicate-tensor": (m_duplicate_tensor, 2, 1),
    "swap": (m_swap_tensor_parts, 3, 3),
    "header-text": (m_header_text, 8, 1),
    "dup-keys": (m_dup_keys, 2, 1),
    "deep": (m_deep, 2, 0.3),
    "top-level": (m_top_level, 3, 1),
    "payload-flip": (m_payload_flip, 1, 12),
    "segment-replace": (m_segment_replace, 1, 6),
    "zstd-bomb": (m_zstd_bomb, 0.5, 3),
    "bool-bytes": (m_bool_bytes, 0.5, 3),
    "scales": (m_scales, 0.5, 3),
    "hevc-substitute": (m_hevc_substitute, 0.5, 10),
    "sps-edit": (m_sps_edit, 0.2, 4),
    "prefix": (m_prefix, 3, 1),
    "header-frame": (m_header_frame, 3, 1),
}


def byte_mutation(rng: random.Random, data: bytes, corpus: Corpus) -> tuple[bytes, str]:
    """Bit flips, byte sets, truncation, insertion, deletion, splicing: anywhere, CRCs left wrong."""
    buf = bytearray(data)
    ops = []
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(buf) + 1) if buf else 0
        # aim at the prefix and header half the time
        if rng.random() < 0.5 and buf:
            i = rng.randrange(min(len(buf), PREFIX_V2.size + 64))
        if op == 0 and buf:
            buf[min(i, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(i, len(buf) - 1)] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        elif op == 2:
            del buf[i:]
        elif op == 3:
            buf[i:i] = rng.randbytes(rng.choice([1, 4, 8, 100]))
        elif op == 4:
            del buf[i: i + rng.randint(1, 16)]
        elif op == 5:
            other = rng.choice(list(corpus.files.values()))
            j = rng.randrange(len(other))
            buf[i:] = other[j:]
        else:
            j = rng.randrange(len(buf) + 1)
            buf[i:i] = buf[j: j + rng.randint(1, 64)]
        ops.append(str(op))
    return bytes(buf), "bytes " + "".join(ops)


def refix_crcs(data: bytes) -> bytes:
    """Recompute the header CRC (and the segment CRCs when the header still parses) of a mutated file."""
    parts = split_file(data)
    if parts is None:
        return data
    major, minor, comp, stored, rest = parts
    if major == 1 and comp == 0:
        try:
            doc = json.loads(stored)
            _, _, _, _, _, plen = PREFIX.unpack_from(data)
            payload = bytearray(rest[:plen])
            fix_segment_crcs(doc, payload)
            stored = dump(doc).encode("utf-8", "surrogatepass")
            rest = bytes(payload) + rest[plen:]
        except (ValueError, RecursionError, TypeError, UnicodeError, struct.error):
            pass
        _, _, _, _, _, plen = PREFIX.unpack_from(data)
        return PREFIX.pack(MAGIC, major, minor, len(stored), zlib.crc32(stored), plen) + stored + rest
    fields = list(PREFIX_V2.unpack_from(data))
    fields[5] = zlib.crc32(stored)
    return PREFIX_V2.pack(*fields) + stored + rest


@dataclass
class Mutant:
    index: int
    source: str
    data: bytes
    mutations: list[str]
    wf: WFile | None = None  # the structure, when structure-aware (for minimisation)
    fix_segments: bool = True


def _weights(target: str) -> tuple[list[str], list[float]]:
    names = list(MUTATORS)
    column = 1 if target == "header" else 2
    return names, [MUTATORS[n][column] for n in names]


def make_mutant(corpus: Corpus, seed: int, index: int, target: str) -> Mutant:
    """Input ``index`` of a run: a pure function of ``(seed, index, target)`` and the corpus."""
    rng = random.Random(f"{seed}:{target}:{index}")
    source = rng.choice(list(corpus.files))
    if rng.random() < (0.12 if target == "header" else 0.08):
        data, what = byte_mutation(rng, corpus.files[source], corpus)
        mutations = [what]
        if rng.random() < 0.5:
            data = refix_crcs(data)
            mutations.append("crc-fixed")
        return Mutant(index, source, data, mutations)
    wf = corpus.parsed[source].copy()
    names, weights = _weights(target)
    mutations = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        name = rng.choices(names, weights)[0]
        try:
            mutations.append(MUTATORS[name][0](rng, wf, corpus))
        except (TypeError, KeyError, AttributeError, ValueError, IndexError):
            # the document was already bent out of the shape this mutator expects
            mutations.append(f"{name}: not applicable")
    fix = rng.random() < 0.93
    return Mutant(index, source, render(wf, fix_segments=fix), mutations, wf, fix)


def render(wf: WFile, *, fix_segments: bool = True) -> bytes:
    return build_file(wf, fix_segments=fix_segments, header_bytes=getattr(wf, "header_override", None),
                      prefix_edit=getattr(wf, "prefix_edit", None), stored_header=getattr(wf, "stored_header", None))


# ----------------------------------------------------------------------------------------------
# Outcomes
# ----------------------------------------------------------------------------------------------


def classify_exception(exc: BaseException) -> tuple[str, bool]:
    """``(outcome, escaped)``: ``rejected:Class`` for the hierarchy, ``exception:Class`` otherwise."""
    from weightcodec.errors import WeightcodecError

    name = type(exc).__name__
    if isinstance(exc, WeightcodecError):
        return f"rejected:{name}", False
    return f"exception:{name}", True


def short_traceback(exc: BaseException, limit: int = 12) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-limit))[-4000:]


def exception_site(exc: BaseException) -> str:
    """``file:line`` of the innermost frame (for grouping escapes)."""
    tb = exc.__traceback__
    site = "?"
    while tb is not None:
        site = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return site


def declared_output_bytes(data: bytes) -> int:
    """Sum of ``numel x itemsize`` over the header's tensors (0 when the header is rejected)."""
    from weightcodec.api import read_header
    from weightcodec.dtypes import DTYPES

    try:
        header = read_header(data)
    except Exception:  # noqa: BLE001 - any rejection: nothing declared
        return 0
    return sum(t.numel * DTYPES[t.dtype].itemsize for t in header.tensors)


def result_digest(result, header_check: bool = True) -> tuple[str, str | None]:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors; and a problem found, if any."""
    import torch

    h = hashlib.sha256()
    problem = None
    entries = {t.name: t for t in result.header.tensors}
    from weightcodec.dtypes import DTYPES

    if list(result.state_dict) != [t.name for t in result.header.tensors]:
        problem = "names differ from the header"
    for name, tensor in result.state_dict.items():
        h.update(name.encode("utf-8", "surrogatepass"))
        h.update(str(tensor.dtype).encode())
        h.update(str(tuple(tensor.shape)).encode())
        flat = tensor.detach().contiguous().reshape(-1)
        raw = flat.view(torch.uint8) if flat.numel() else flat
        if tensor.dtype == torch.bool and flat.numel() and int(raw.max()) > 1:
            problem = problem or f"tensor {name!r}: torch.bool holding bytes other than 0/1"
        h.update(raw.numpy().tobytes() if flat.numel() else b"")
        entry = entries.get(name)
        if entry is not None and (tuple(tensor.shape) != tuple(entry.shape) or tensor.dtype != DTYPES[entry.dtype].torch):
            problem = problem or f"tensor {name!r}: {tensor.dtype} {tuple(tensor.shape)} but the header says " \
                                 f"{entry.dtype} {list(entry.shape)}"
    return h.hexdigest()[:16], problem


# ----------------------------------------------------------------------------------------------
# The decode worker (a child process)
# ----------------------------------------------------------------------------------------------


def _status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM", "VmSize")):
                values[line.split(":")[0]] = int(line.split()[1]) * 1024
    return values


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker_main(backend: str, as_cap_mb: int) -> None:
    """Read ``u32 length + file`` from stdin, decode it, answer one JSON line per input."""
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the protocol
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import av
    import torch

    from weightcodec import api

    torch.set_num_threads(1)
    av.logging.set_level(av.logging.PANIC)
    if as_cap_mb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = _status()["VmSize"] + as_cap_mb * MIB
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        (length,) = struct.unpack("<I", head)
        data = stdin.read(length)
        out.write((json.dumps(decode_one(api, data, backend)) + "\n").encode())


class ChildPeak:
    """Samples the peak RSS (``VmHWM``) of this process's exec'd children every few milliseconds.

    ``VmHWM`` is a high-water mark that restarts at ``exec``, so the last sample before a child
    exits is its peak up to the sampling interval. Children still running the interpreter image
    (between ``fork`` and ``exec``) are skipped: their RSS is the parent's shared pages.
    ``getrusage(RUSAGE_CHILDREN)`` cannot be used: it counts that pre-exec image (~500 MB here).
    """

    def __init__(self, interval: float = 0.002):
        import threading

        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        with open("/proc/self/comm") as f:
            self._own = f.read().strip()

    def __enter__(self) -> "ChildPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        pid = os.getpid()
        while True:
            stopping = self._stop.is_set()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                tids = []
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        children = f.read().split()
                except OSError:
                    continue
                for child in children:
                    try:
                        with open(f"/proc/{child}/status") as f:
                            status = f.read()
                    except OSError:
                        continue
                    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                    if fields.get("Name", "").strip() == self._own or "VmHWM" not in fields:
                        continue
                    self.peak = max(self.peak, int(fields["VmHWM"].split()[0]) * 1024)
            if stopping:
                return
            self._stop.wait(self.interval)


def decode_one(api, data: bytes, backend: str) -> dict:
    declared = declared_output_bytes(data)
    sampler = ChildPeak() if backend == "ffmpeg" else None
    rss_before = _status()["VmRSS"]
    hwm_ok = _reset_hwm()
    started = time.perf_counter()
    answer: dict[str, Any] = {"declared": declared}
    try:
        if sampler is not None:
            with sampler:
                result = api.decode(data, backend=backend, as_state_dict=True)
        else:
            result = api.decode(data, backend=backend, as_state_dict=True)
    except BaseException as exc:  # noqa: BLE001 - classifying everything is the point
        if isinstance(exc, KeyboardInterrupt):
            raise
        outcome, escaped = classify_exception(exc)
        answer.update(outcome=outcome, escaped=escaped, message=str(exc)[:300])
        if escaped:
            answer.update(traceback=short_traceback(exc), site=exception_site(exc))
        result = None
    peak = _status()["VmHWM"] if hwm_ok else 0
    answer["seconds"] = round(time.perf_counter() - started, 4)
    if result is not None:
        digest, problem = result_digest(result)
        answer.update(outcome="ok", escaped=False, digest=digest)
        if problem:
            answer.update(outcome="escape:bad-result", escaped=True, message=problem)
        del result
    answer.update(rss_before=rss_before, peak_delta=max(peak - rss_before, 0) if hwm_ok else None,
                  child_peak=sampler.peak if sampler is not None and sampler.peak else None)
    return answer


class Worker:
    """A long-lived decode child; restarted after a crash or a timeout."""

    def __init__(self, backend: str, *, as_cap_mb: int, log: Path | None):
        self.backend, self.as_cap_mb, self.log = backend, as_cap_mb, log
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.child_baseline = 0  # largest ffmpeg child RSS on the valid corpus (set by warm_up)
        self._buffer = b""

    def start(self) -> None:
        stderr = open(self.log, "ab") if self.log else subprocess.DEVNULL
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.fuzz", "_worker", "--backend", self.backend,
             "--as-cap-mb", str(self.as_cap_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
            cwd=str(Path(__file__).resolve().parents[1]))
        self._buffer = b""

    def stop(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        self.restarts += 1

    def run(self, data: bytes, timeout: float) -> dict:
        failed = self.send(data)
        return failed if failed is not None else self.receive(timeout)

    def send(self, data: bytes) -> dict | None:
        """Hand one input to the child; a crash answer if it is already gone."""
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._crashed()
        return None

    def receive(self, timeout: float) -> dict:
        """The child's answer to the input sent last (a timeout kills it)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                return {"outcome": "timeout", "escaped": True, "message": f"no answer within {timeout:g} s"}
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return self._crashed()
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _crashed(self) -> dict:
        code = self.proc.wait() if self.proc is not None else None
        self.proc = None
        self.restarts += 1
        what = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return {"outcome": f"crash:{what}", "escaped": True, "message": f"the worker died ({what})"}


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


@dataclass
class Caps:
    timeout: float = 30.0
    as_cap_mb: int = 3072
    rss_factor: float = 4.0
    rss_allowance_mb: float = 64.0

    def rss_limit(self, declared: int, input_bytes: int) -> int:
        return int(self.rss_factor * declared + input_bytes + self.rss_allowance_mb * MIB)


@dataclass
class Tally:
    by_outcome: Counter = field(default_factory=Counter)
    by_mutator: dict = field(default_factory=dict)
    escapes: list = field(default_factory=list)
    saved: Counter = field(default_factory=Counter)
    inputs: int = 0
    max_rss_ratio: float = 0.0
    max_peak_delta: int = 0
    max_child_peak: int = 0
    slowest: float = 0.0

    def add(self, target: str, outcome: str, mutations: list[str]) -> None:
        self.by_outcome[(target, outcome)] += 1
        for m in mutations:
            key = m.split()[0].rstrip(":")
            self.by_mutator.setdefault(key, Counter())[outcome.split(":")[0]] += 1


class EscapeSaver:
    def __init__(self, out: Path | None, per_signature: int = 3):
        self.out, self.per_signature = out, per_signature
        self.seen: Counter = Counter()

    def save(self, target: str, signature: str, data: bytes, record: dict) -> str | None:
        self.seen[(target, signature)] += 1
        if self.out is None or self.seen[(target, signature)] > self.per_signature:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in signature)[:80]
        folder = self.out / target / safe
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"{record.get('seed')}-{record.get('index')}"
        stem.with_suffix(".wcodec").write_bytes(data)
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))
        return str(stem.with_suffix(".wcodec"))


def minimise(mutant: Mutant, still_fails: Callable[[bytes], bool], budget: int) -> bytes:
    """Drop tensors and JSON members that the failure does not need (greedy, bounded)."""
    if mutant.wf is None:
        return mutant.data
    wf = mutant.wf.copy()
    for attr in ("header_override", "prefix_edit", "stored_header"):
        if hasattr(mutant.wf, attr):
            setattr(wf, attr, getattr(mutant.wf, attr))
    best = mutant.data
    tries = 0

    def attempt(candidate: WFile) -> bool:
        nonlocal tries, best
        tries += 1
        data = render(candidate, fix_segments=mutant.fix_segments)
        if len(data) <= len(best) and still_fails(data):
            best = data
            return True
        return False

    if getattr(wf, "header_override", None) is not None or getattr(wf, "stored_header", None) is not None:
        return best
    tensors = wf.doc.get("tensors") if isinstance(wf.doc, dict) else None
    if isinstance(tensors, list):
        i = 0
        while i < len(tensors) and tries < budget and len(tensors) > 1:
            trial = wf.copy()
            trial.prefix_edit = getattr(wf, "prefix_edit", None)  # type: ignore[attr-defined]
            del trial.doc["tensors"][i]
            if attempt(trial):
                wf, tensors = trial, trial.doc["tensors"]
            else:
                i += 1
    for key in ("metadata", "producer"):
        if tries < budget and isinstance(wf.doc, dict) and key in wf.doc:
            trial = wf.copy()
            trial.prefix_edit = getattr(wf, "prefix_edit", None)  # type: ignore[attr-defined]
            del trial.doc[key]
            if attempt(trial):
                wf = trial
    # informative HEVC members
    for t in tensors_of(wf, "hevc"):
        for key in ("qp", "lossless", "preset", "x265_params", "encoder", "stream"):
            if tries >= budget or not isinstance(t.get("hevc"), dict) or key not in t["hevc"]:
                continue
            saved = t["hevc"].pop(key)
            if not attempt(wf):
                t["hevc"][key] = saved
    return best


def run_header(corpus: Corpus, seed: int, count: int, start: int, saver: EscapeSaver, tally: Tally,
               slow_seconds: float, progress: Callable[[int], None]) -> None:
    from weightcodec.api import read_header

    for index in range(start, start + count):
        mutant = make_mutant(corpus, seed, index, "header")
        t0 = time.perf_counter()
        try:
            read_header(mutant.data)
            outcome, escaped, exc = "ok", False, None
        except BaseException as error:  # noqa: BLE001
            if isinstance(error, KeyboardInterrupt):
                raise
            outcome, escaped = classify_exception(error)
            exc = error
        elapsed = time.perf_counter() - t0
        tally.slowest = max(tally.slowest, elapsed)
        if not escaped and elapsed > slow_seconds:
            outcome, escaped = "timeout", True
        tally.inputs += 1
        tally.add("read_header", outcome, mutant.mutations)
        if escaped:
            site = exception_site(exc) if exc is not None else "-"
            signature = f"{outcome}@{site}"

            def still(data: bytes, _sig=signature) -> bool:
                try:
                    read_header(data)
                except BaseException as e:  # noqa: BLE001
                    return f"{classify_exception(e)[0]}@{exception_site(e)}" == _sig
                return False

            record = {"target": "read_header", "seed": seed, "index": index, "source": mutant.source,
                      "mutations": mutant.mutations, "outcome": outcome, "site": site,
                      "message": str(exc)[:300] if exc else "", "seconds": elapsed,
                      "traceback": short_traceback(exc) if exc else ""}
            data = mutant.data
            if saver.seen[("read_header", signature)] < saver.per_signature:
                data = minimise(mutant, still, budget=200)
            path = saver.save("read_header", signature, data, record)
            if len(tally.escapes) < 2000:
                tally.escapes.append({k: record[k] for k in ("index", "source", "mutations", "outcome", "site",
                                                             "message")} | {"saved": path})
        if (index - start) % 1000 == 999:
            progress(1000)


def run_decode(corpus: Corpus, seed: int, count: int, start: int, backends: list[str], caps: Caps,
               saver: EscapeSaver, tally: Tally, progress: Callable[[int], None], log: Path | None) -> dict:
    workers = {b: Worker(b, as_cap_mb=caps.as_cap_mb, log=log) for b in backends}
    try:
        for worker in workers.values():
            warm_up(worker, corpus, caps)
        for index in range(start, start + count):
            mutant = make_mutant(corpus, seed, index, "decode")
            for worker in workers.values():
                if worker.proc is None:  # restarted after a crash or a timeout: warm up again
                    warm_up(worker, corpus, caps)
            answers = {}
            # every backend decodes the input at the same time (each in its own child)
            sent = {backend: worker.send(mutant.data) for backend, worker in workers.items()}
            for backend, worker in workers.items():
                raw = sent[backend] if sent[backend] is not None else worker.receive(caps.timeout)
                answer = judge(raw, len(mutant.data), caps, tally, worker.child_baseline)
                answers[backend] = answer
                target = f"decode:{backend}"
                tally.inputs += 1 if backend == backends[0] else 0
                tally.add(target, answer["outcome"], mutant.mutations)
                if answer["escaped"]:
                    _record_decode_escape(target, mutant, answer, seed, index, worker, caps, saver, tally)
            if len(answers) > 1:
                signatures = {b: _decode_signature(a) for b, a in answers.items()}
                if len(set(signatures.values())) > 1 and not any(a["escaped"] for a in answers.values()):
                    outcome = "mismatch:" + " vs ".join(f"{b}={s}" for b, s in signatures.items())
                    tally.add("decode:compare", "mismatch", mutant.mutations)
                    record = {"target": "decode:compare", "seed": seed, "index": index, "source": mutant.source,
                              "mutations": mutant.mutations, "outcome": outcome, "answers": answers}
                    path = saver.save("decode-compare", outcome.replace(" ", "")[:80], mutant.data, record)
                    if len(tally.escapes) < 2000:
                        tally.escapes.append({"target": "decode:compare", "index": index, "source": mutant.source,
                                              "mutations": mutant.mutations, "outcome": outcome, "saved": path})
                else:
                    tally.add("decode:compare", "agree" if len(set(signatures.values())) == 1 else "skipped",
                              mutant.mutations)
            progress(1)
    finally:
        for worker in workers.values():
            worker.stop()
    return {b: w.restarts for b, w in workers.items()}


def _decode_signature(answer: dict) -> str:
    if answer["outcome"] == "ok":
        return f"ok:{answer.get('digest')}"
    return answer["outcome"]


def judge(answer: dict, input_bytes: int, caps: Caps, tally: Tally, child_baseline: int = 0) -> dict:
    """Add the RSS verdict to a worker's answer.

    ``peak_delta``: the worker's own peak above its RSS before the call. ``child_peak``: the
    largest RSS an ffmpeg child reached during the call (sampled, see :class:`ChildPeak`); judged
    above ``child_baseline`` (the largest an ffmpeg child reached on the valid corpus).
    """
    declared = answer.get("declared", 0) or 0
    limit = caps.rss_limit(declared, input_bytes)
    peak = answer.get("peak_delta") or 0
    child = max((answer.get("child_peak") or 0) - child_baseline, 0)
    tally.max_peak_delta = max(tally.max_peak_delta, peak)
    tally.max_child_peak = max(tally.max_child_peak, answer.get("child_peak") or 0)
    tally.max_rss_ratio = max(tally.max_rss_ratio, peak / limit, child / limit)
    for value, who in ((peak, "the decoding process"), (child, "the ffmpeg child")):
        if value > limit and not answer.get("escaped"):
            answer.update(outcome="rss", escaped=True,
                          message=f"peak RSS of {who} grew {value / MIB:.1f} MiB above its baseline, cap "
                                  f"{limit / MIB:.1f} MiB (declared output {declared} bytes) after {answer['outcome']}")
    tally.slowest = max(tally.slowest, answer.get("seconds", 0) or 0)
    return answer


def warm_up(worker: Worker, corpus: Corpus, caps: Caps) -> None:
    """Decode every corpus file once (first-touch costs out of the measurements); they must decode."""
    for _ in range(2):
        for name, data in corpus.files.items():
            answer = worker.run(data, caps.timeout * 4)
            if answer.get("outcome") != "ok":
                raise click.ClickException(f"corpus file {name} does not decode with {worker.backend}: {answer}")
            worker.child_baseline = max(worker.child_baseline, answer.get("child_peak") or 0)


def _record_decode_escape(target, mutant, answer, seed, index, worker, caps, saver, tally) -> None:
    signature = f"{answer['outcome']}@{answer.get('site', '-')}"
    record = {"target": target, "seed": seed, "index": index, "source": mutant.source,
              "mutations": mutant.mutations, **answer}
    data = mutant.data
    if saver.seen[(target, signature)] < saver.per_signature and answer["outcome"] not in ("timeout",) \
            and not answer["outcome"].startswith("crash"):
        def still(candidate: bytes) -> bool:
            again = judge(worker.run(candidate, caps.timeout), len(candidate), caps, Tally(), worker.child_baseline)
            return f"{again['outcome']}@{again.get('site', '-')}" == signature

        data = minimise(mutant, still, budget=40)
    path = saver.save(target.replace(":", "-"), signature, data, record)
    if len(tally.escapes) < 2000:
        tally.escapes.append({"target": target, "index": index, "source": mutant.source,
                              "mutations": mutant.mutations, "outcome": answer["outcome"],
                              "site": answer.get("site"), "message": answer.get("message"), "saved": path})


def summary_table(tally: Tally, title: str):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("target")
    table.add_column("outcome")
    table.add_column("inputs", justify="right")
    for (target, outcome), n in sorted(tally.by_outcome.items()):
        style = "red" if outcome.split(":")[0] in ("exception", "crash", "timeout", "rss", "escape", "mismatch") \
            else None
        table.add_row(target, outcome, str(n), style=style)
    return table


def escape_count(tally: Tally) -> int:
    return sum(n for (target, outcome), n in tally.by_outcome.items()
               if outcome.split(":")[0] in ("exception", "crash", "timeout", "rss", "escape", "mismatch"))


def write_report(path: Path | None, report: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(path)


def _tally_json(tally: Tally) -> dict:
    by_target: dict[str, dict[str, int]] = {}
    for (target, outcome), n in sorted(tally.by_outcome.items()):
        by_target.setdefault(target, {})[outcome] = n
    return {"inputs": tally.inputs, "escapes": escape_count(tally), "by_outcome": by_target,
            "by_mutator": {k: dict(v) for k, v in sorted(tally.by_mutator.items())},
            "max_rss_ratio_to_cap": round(tally.max_rss_ratio, 4), "max_peak_delta_bytes": tally.max_peak_delta,
            "max_ffmpeg_child_peak_bytes": tally.max_child_peak, "slowest_seconds": round(tally.slowest, 4),
            "escape_samples": tally.escapes[:500]}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


@click.group()
def main() -> None:
    """Fuzz the .wcodec reader (read_header in-process, decode in child processes)."""


def _common(f):
    f = click.option("--seed", type=int, default=0, show_default=True)(f)
    f = click.option("--count", type=int, default=1000, show_default=True, help="inputs to try")(f)
    f = click.option("--start", type=int, default=0, show_default=True, help="index of the first input")(f)
    f = click.option("--out", type=click.Path(path_type=Path), default=Path("build/fuzz"), show_default=True,
                     help="folder for escaping inputs (minimised) and their records")(f)
    f = click.option("--report", type=click.Path(path_type=Path), default=None, help="write a JSON report here")(f)
    f = click.option("--per-signature", type=int, default=3, show_default=True,
                     help="escaping inputs saved per (target, outcome, site)")(f)
    return f


def _environment() -> dict:
    import platform

    import av

    import weightcodec

    return {"python": platform.python_version(), "weightcodec": weightcodec.__version__, "pyav": av.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "git": _git_head()}


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@main.command()
@_common
@click.option("--slow-seconds", type=float, default=2.0, show_default=True,
              help="an input read_header takes longer than this on counts as a timeout")
@click.option("--as-cap-mb", type=int, default=3072, show_default=True,
              help="RLIMIT_AS above this process's address space at start (0: none)")
def header(seed, count, start, out, report, per_signature, slow_seconds, as_cap_mb) -> None:
    """Mutated files through weightcodec.api.read_header, in this process."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    started = time.perf_counter()
    corpus = build_corpus(seed, with_streams=False)
    if as_cap_mb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (_status()["VmSize"] + as_cap_mb * MIB, hard))
    tally, saver = Tally(), EscapeSaver(out, per_signature)
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("read_header", total=count)
        run_header(corpus, seed, count, start, saver, tally, slow_seconds, lambda n: bar.advance(task, n))
    elapsed = time.perf_counter() - t0
    console.print(summary_table(tally, f"read_header: {count} inputs, seed {seed}, {elapsed:.0f} s"))
    result = {"target": "read_header", "seed": seed, "start": start, "count": count, "seconds": round(elapsed, 1),
              "inputs_per_second": round(count / elapsed, 1), "corpus": corpus.describe(),
              "caps": {"slow_seconds": slow_seconds, "as_cap_mb": as_cap_mb}, "environment": _environment(),
              "total_seconds": round(time.perf_counter() - started, 1), **_tally_json(tally)}
    write_report(report, result)
    console.print(f"{escape_count(tally)} escapes; saved under {out}" if escape_count(tally) else "0 escapes")
    sys.exit(1 if escape_count(tally) else 0)


@main.command()
@_common
@click.option("--backend", "backends", multiple=True, default=("pyav",), show_default=True,
              help="repeat to run every input through several backends and compare them")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds per input")
@click.option("--as-cap-mb", type=int, default=3072, show_default=True,
              help="RLIMIT_AS of each worker: its address space at start + this (0: none)")
@click.option("--rss-factor", type=float, default=4.0, show_default=True)
@click.option("--rss-allowance-mb", type=float, default=64.0, show_default=True,
              help="fixed allowance above the baseline (decoder contexts, allocator slack)")
@click.option("--worker-log", type=click.Path(path_type=Path), default=None, help="append the workers' stderr here")
def decode(seed, count, start, out, report, per_signature, backends, timeout, as_cap_mb, rss_factor,
           rss_allowance_mb, worker_log) -> None:
    """Mutated files through weightcodec.api.decode in child processes (time limit, RSS cap)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    corpus = build_corpus(seed)
    caps = Caps(timeout=timeout, as_cap_mb=as_cap_mb, rss_factor=rss_factor, rss_allowance_mb=rss_allowance_mb)
    tally, saver = Tally(), EscapeSaver(out, per_signature)
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("decode " + "+".join(backends), total=count)
        restarts = run_decode(corpus, seed, count, start, list(backends), caps, saver, tally,
                              lambda n: bar.advance(task, n), worker_log)
    elapsed = time.perf_counter() - t0
    console.print(summary_table(tally, f"decode ({', '.join(backends)}): {count} inputs, seed {seed}, {elapsed:.0f} s"))
    result = {"target": "decode", "backends": list(backends), "seed": seed, "start": start, "count": count,
              "seconds": round(elapsed, 1), "inputs_per_second": round(count / elapsed, 2),
              "worker_restarts": restarts, "corpus": corpus.describe(), "streams": sorted(corpus.streams),
              "caps": {"timeout_seconds": timeout, "rlimit_as_mb_above_start": as_cap_mb,
                       "rss": f"peak RSS - baseline <= {rss_factor} x declared output bytes + input bytes + "
                              f"{rss_allowance_mb} MiB"},
              "environment": _environment(), **_tally_json(tally)}
    write_report(report, result)
    console.print(f"{escape_count(tally)} escapes; saved under {out}" if escape_count(tally) else "0 escapes")
    sys.exit(1 if escape_count(tally) else 0)


@main.command()
@click.option("--backend", default="pyav", show_default=True)
@click.option("--iterations", type=int, default=1000, show_default=True)
@click.option("--every", type=int, default=50, show_default=True, help="record RSS every this many decodes")
@click.option("--tolerance-mb", type=float, default=8.0, show_default=True,
              help="allowed RSS growth from the first record after warm-up to the last")
@click.option("--file", "file_", type=click.Path(exists=True, path_type=Path), default=None,
              help="a .wcodec file (default: the corpus's 'mixed' file, every storage kind)")
@click.option("--report", type=click.Path(path_type=Path), default=None)
def soak(backend, iterations, every, tolerance_mb, file_, report) -> None:
    """Decode one valid file many times in this process; RSS must stay flat."""
    import gc

    import torch

    from weightcodec import api

    torch.set_num_threads(1)
    data = file_.read_bytes() if file_ else build_corpus(0, with_streams=False).files["mixed"]
    records = []
    t0 = time.perf_counter()
    reference = None
    for i in range(1, iterations + 1):
        result = api.decode(data, backend=backend, as_state_dict=True)
        digest, problem = result_digest(result)
        if problem:
            raise click.ClickException(problem)
        reference = reference or digest
        if digest != reference:
            raise click.ClickException(f"decode {i} differs from the first (non-deterministic)")
        del result
        if i % every == 0:
            records.append({"iteration": i, "rss_bytes": _status()["VmRSS"]})
    gc.collect()
    final = _status()["VmRSS"]
    first = records[0]["rss_bytes"]
    growth = max(r["rss_bytes"] for r in records) - first
    n = len(records)
    xs = [r["iteration"] for r in records]
    ys = [r["rss_bytes"] / MIB for r in records]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs) or 1
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var * 1000
    flat = growth <= tolerance_mb * MIB
    result = {"mode": "soak", "backend": backend, "iterations": iterations, "file_bytes": len(data),
              "seconds": round(time.perf_counter() - t0, 1), "records": records,
              "growth_after_first_record_mb": round(growth / MIB, 2), "final_rss_mb_after_gc": round(final / MIB, 1),
              "slope_mb_per_1000": round(slope, 3), "tolerance_mb": tolerance_mb, "flat": flat,
              "environment": _environment()}
    write_report(report, result)
    click.echo(f"{backend}: {iterations} decodes in {result['seconds']} s; RSS {first / MIB:.1f} -> "
               f"{records[-1]['rss_bytes'] / MIB:.1f} MiB (max growth {growth / MIB:.2f} MiB, "
               f"slope {slope:.3f} MiB/1000): {'flat' if flat else 'GROWING'}")
    sys.exit(0 if flat else 1)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--backend", default="pyav", show_default=True)
def replay(path, backend) -> None:
    """Run one saved input through read_header and decode here, printing what happens."""
    from weightcodec import api

    data = path.read_bytes()
    for what, call in (("read_header", lambda: api.read_header(data)),
                       (f"decode ({backend})", lambda: api.decode(data, backend=backend, as_state_dict=True))):
        try:
            call()
            click.echo(f"{what}: ok")
        except Exception as exc:  # noqa: BLE001
            outcome, escaped = classify_exception(exc)
            click.echo(f"{what}: {outcome}: {str(exc)[:300]}")
            if escaped:
                click.echo(short_traceback(exc))


@main.command("corpus")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def corpus_cmd(seed, out) -> None:
    """Write the seed files and the substitute HEVC streams to a folder."""
    corpus = build_corpus(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in corpus.files.items():
        (out / f"{name}.wcodec").write_bytes(data)
    for name, data in corpus.streams.items():
        if len(data) < 4 * MIB:
            (out / (name.replace(" ", "_") + ".hevc")).write_bytes(data)
    click.echo(json.dumps(corpus.describe(), indent=1))


@main.command("_worker", hidden=True)
@click.option("--backend", required=True)
@click.option("--as-cap-mb", type=int, default=3072)
def worker_cmd(backend, as_cap_mb) -> None:
    worker_main(backend, as_cap_mb)


if __name__ == "__main__":
    main()
