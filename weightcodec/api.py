"""The library API: ``encode``, ``decode``, ``read_header``. The CLI and the tools call these.

Nothing here prints or exits; failures raise :mod:`weightcodec.errors`. Long operations report
progress through an optional callback ``progress(name, done, total)`` counting weight elements.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .backends import get_backend
from .backends.base import PictureSpec
from .config import EncodeConfig
from .container import (
    DTYPE_SIZES,
    Header,
    PayloadBuilder,
    QuantInfo,
    TensorEntry,
    read_header_bytes,
    read_segment,
    serialize,
)
from .errors import CorruptStreamError, ModelLoadError, WeightcodecError
from .hevc import parse_stream_info
from .modelio import LoadedModel, atomic_write, load_source, module_skeleton, rebuild_module
from .quant import QuantizedTensor, choose_granularity, dequantize, quantize
from .tiling import VALUE_OFFSET, TileLayout, frames_to_matrix, matrix_to_frames, plan_tiles

Progress = Callable[[str, int, int], None]

TORCH_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}


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


@dataclass(frozen=True)
class EncodeReport:
    layers: list[LayerReport]
    total_bytes: int  # the whole .wcodec file
    header_bytes: int
    original_bytes: int  # sum of the tensors as they came in
    seconds: float

    @property
    def ratio(self) -> float:
        return self.original_bytes / max(self.total_bytes, 1)

    def bytes_by_storage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.storage] = out.get(layer.storage, 0) + layer.stored_bytes
        return out


@dataclass(frozen=True)
class EncodeResult:
    data: bytes
    report: EncodeReport
    path: Path | None = None


@dataclass
class DecodeResult:
    state_dict: "OrderedDict[str, torch.Tensor]"
    header: Header
    module: torch.nn.Module | None = None
    quantized: dict[str, QuantizedTensor] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def model(self) -> object:
        """The decoded model in the form it was encoded in (module or state_dict)."""
        return self.module if self.module is not None else self.state_dict


# --- which tensors are quantized and coded ----------------------------------------------------
def classify(name: str, tensor: torch.Tensor, config: EncodeConfig) -> str:
    """``"hevc"``, ``"int8"`` or ``"raw"`` for one state_dict entry (the rule in docs/QUANTIZATION.md).

    Quantized: floating-point tensors named ``*weight`` with at least two dimensions (the weights
    of Linear, Conv, Embedding and attention projections) and at least ``min_quantized_elements``
    elements. Biases, norm parameters, buffers and small tensors stay raw. Of the quantized, 2-D
    ones with at least ``min_coded_elements`` elements are HEVC-coded (conv weights too, reshaped
    to ``(out, in*k*k)``, with ``code_conv``); the rest are stored as int8.
    """
    if not (tensor.is_floating_point() and tensor.ndim >= 2 and name.endswith("weight")):
        return "raw"
    if tensor.numel() < config.min_quantized_elements:
        return "raw"
    codable = tensor.ndim == 2 or config.code_conv
    if config.code_matrices and codable and tensor.numel() >= config.min_coded_elements:
        return "hevc"
    return "int8"


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _as_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0], math.prod(shape[1:])


def encode(
    source: str | Path | Mapping[str, torch.Tensor] | torch.nn.Module | LoadedModel,
    output: str | Path | None = None,
    *,
    config: EncodeConfig | None = None,
    trust_pickle: bool = False,
    verify: bool = False,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> EncodeResult:
    """Encode a model (a path to ``torch.save`` output, a state_dict or an ``nn.Module``).

    Returns the container bytes and a per-layer report; with ``output``, also writes them there
    atomically (no partial file on failure). ``verify`` decodes every HEVC stream right after
    encoding it and records the int8 RMSE and maximum error in the report.
    """
    config = config or EncodeConfig()
    started = time.perf_counter()
    loaded = load_source(source, trust_pickle=trust_pickle)
    state_dict = loaded.state_dict
    kinds = {name: classify(name, t, config) for name, t in state_dict.items()}
    backend = get_backend(config.backend) if "hevc" in kinds.values() else None
    total = sum(t.numel() for t in state_dict.values())
    done = 0

    payload = PayloadBuilder()
    entries: list[TensorEntry] = []
    layers: list[LayerReport] = []
    zstd_level = config.zstd_level if config.compress_raw else None
    for name, tensor in state_dict.items():
        if progress:
            progress(name, done, total)
        t0 = time.perf_counter()
        dtype = DTYPE_NAMES.get(tensor.dtype)
        if dtype is None:
            raise ModelLoadError(f"tensor {name!r} has dtype {tensor.dtype}, which weightcodec cannot store")
        shape = tuple(tensor.shape)
        kind = kinds[name]
        original = tensor.numel() * DTYPE_SIZES[dtype]
        if kind == "raw":
            seg = payload.add_compressible(_tensor_bytes(tensor), level=zstd_level)
            entries.append(TensorEntry(name, dtype, shape, "raw", seg))
            layers.append(LayerReport(name, shape, dtype, "raw", original, seg.length,
                                      encode_seconds=time.perf_counter() - t0))
        else:
            weights = tensor.detach().to("cpu", torch.float32).numpy()
            requested = config.granularity_for(name)
            threshold = config.quant.matrix_guard_db if tensor.ndim == 2 else config.quant.guard_db
            granularity, figure = choose_granularity(weights, requested, threshold_db=threshold)
            q = quantize(weights, granularity)
            scales_seg = payload.add(q.scales.astype("<f4").tobytes())
            sqnr = figure if math.isfinite(figure) else None
            quant = QuantInfo(granularity, 0, scales_seg, sqnr)
            common = dict(granularity=granularity, guard_db=sqnr, guard_threshold_db=threshold,
                          guard_switched=requested == "auto" and granularity == "per-channel")
            if kind == "int8":
                seg = payload.add_compressible(q.values.tobytes(), level=zstd_level)
                entries.append(TensorEntry(name, dtype, shape, "int8", seg, quant))
                layers.append(LayerReport(name, shape, dtype, "int8", original, seg.length + scales_seg.length,
                                          encode_seconds=time.perf_counter() - t0, **common))
            else:
                settings = config.hevc_for(name)
                rows, cols = _as_matrix_shape(shape)
                layout = plan_tiles(rows, cols, max_height=settings.max_tile_height, max_width=settings.max_tile_width)
                matrix = q.values.reshape(rows, cols)
                stream = backend.encode(matrix_to_frames(matrix, layout), settings)
                info = parse_stream_info(stream)
                seg = payload.add(stream)
                hevc = {
                    "codec": "hevc", "matrix": [rows, cols], "value_offset": VALUE_OFFSET,
                    **layout.to_json(), "frames": layout.frames, "chroma": settings.chroma,
                    "qp": None if settings.lossless else settings.qp, "lossless": settings.lossless,
                    "preset": settings.preset, "x265_params": settings.x265_params(),
                    "encoder": f"libx265 ({backend.name} backend)", "stream": info.to_json(),
                }
                rmse = max_err = None
                if verify:
                    decoded = _decode_matrix(backend, stream, layout, name, settings.chroma)
                    diff = decoded.astype(np.int16) - matrix.astype(np.int16)
                    rmse = float(np.sqrt(np.mean(diff.astype(np.float64) ** 2)))
                    max_err = int(np.max(np.abs(diff)))
                entries.append(TensorEntry(name, dtype, shape, "hevc", seg, quant, hevc))
                layers.append(LayerReport(
                    name, shape, dtype, "hevc", original, seg.length + scales_seg.length,
                    qp=hevc["qp"], lossless=settings.lossless, profile=info.profile, level=info.level,
                    frames=layout.frames, int8_rmse=rmse, int8_max_error=max_err,
                    encode_seconds=time.perf_counter() - t0, **common,
                ))
        done += tensor.numel()

    model_info: dict = {"kind": loaded.kind}
    if loaded.kind == "module":
        model_info["class"] = f"{type(loaded.module).__module__}.{type(loaded.module).__qualname__}"
        model_info["skeleton"] = payload.add_compressible(
            module_skeleton(loaded.module, state_dict.keys()), level=zstd_level)
    header = Header(tensors=entries, model=model_info, producer=f"weightcodec {__version__}",
                    metadata=dict(metadata or {}))
    chunks = serialize(header, payload)
    data = b"".join(chunks)
    if progress:
        progress("", total, total)
    report = EncodeReport(layers, len(data), len(chunks[1]), sum(l.original_bytes for l in layers),
                          time.perf_counter() - started)
    if output is not None:
        atomic_write(output, [data])
    return EncodeResult(data, report, Path(output) if output is not None else None)


def _decode_matrix(backend, stream: bytes, layout: TileLayout, name: str, chroma: str) -> np.ndarray:
    try:
        frames = backend.decode(stream, PictureSpec(layout.frames, layout.tile_height, layout.tile_width, chroma))
    except CorruptStreamError as exc:
        raise CorruptStreamError(f"tensor {name!r}: {exc}") from exc
    expected = (layout.frames, layout.tile_height, layout.tile_width)
    if frames.shape != expected:
        raise CorruptStreamError(
            f"tensor {name!r}: the HEVC stream decoded to {frames.shape[0]} frames of "
            f"{frames.shape[2]}x{frames.shape[1]}, the header says {expected[0]} of {expected[2]}x{expected[1]}"
        )
    return frames_to_matrix(frames, layout)


def _read_bytes(source: str | Path | bytes | bytearray | memoryview) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise WeightcodecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WeightcodecError(f"{path} is a directory, not a .wcodec file") from None
    except OSError as exc:
        raise WeightcodecError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_header(source: str | Path | bytes) -> Header:
    """The validated header (tensor index, settings, byte ranges) without decoding any payload."""
    data = _read_bytes(source)
    header, _ = read_header_bytes(data)
    return header


def decode(
    source: str | Path | bytes,
    *,
    backend: str = "pyav",
    trust_pickle: bool = False,
    as_state_dict: bool = False,
    progress: Progress | None = None,
) -> DecodeResult:
    """Decode a ``.wcodec`` file (path or bytes) back to tensors, and to a module if it held one.

    Quantized tensors come back dequantized to their original dtype; their int8 values and scales
    are in ``result.quantized``. A file that holds a pickled module is rebuilt only with
    ``trust_pickle=True``; ``as_state_dict=True`` skips the module and returns the state_dict.
    Decoding is deterministic: the same file always gives bit-identical tensors.
    """
    started = time.perf_counter()
    data = _read_bytes(source)
    header, payload_start = read_header_bytes(data)
    payload = memoryview(data)[payload_start:]
    needs_hevc = any(t.storage == "hevc" for t in header.tensors)
    codec = get_backend(backend) if needs_hevc else None
    total = sum(t.numel for t in header.tensors)
    done = 0
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    quantized: dict[str, QuantizedTensor] = {}
    for entry in header.tensors:
        if progress:
            progress(entry.name, done, total)
        what = f"tensor {entry.name!r}"
        if entry.storage == "raw":
            raw = read_segment(payload, entry.data, what=what, expected_size=entry.numel * DTYPE_SIZES[entry.dtype])
            tensor = torch.frombuffer(bytearray(raw), dtype=TORCH_DTYPES[entry.dtype]).reshape(entry.shape) \
                if raw else torch.empty(entry.shape, dtype=TORCH_DTYPES[entry.dtype])
        else:
            n_scales = entry.quant.scales.length // 4
            scales = np.frombuffer(read_segment(payload, entry.quant.scales, what=f"{what} scales"), dtype="<f4")
            if not np.all(np.isfinite(scales)):
                raise CorruptStreamError(f"{what} has non-finite quantization scales")
            if entry.storage == "int8":
                raw = read_segment(payload, entry.data, what=what, expected_size=entry.numel)
                values = np.frombuffer(raw, dtype=np.int8).reshape(entry.shape)
            else:
                h = entry.hevc
                layout = TileLayout(h["matrix"][0], h["matrix"][1], h["tile_height"], h["tile_width"],
                                    h["grid_rows"], h["grid_cols"])
                stream = read_segment(payload, entry.data, what=what)
                values = _decode_matrix(codec, stream, layout, entry.name, h.get("chroma")).reshape(entry.shape)
            assert n_scales == scales.size
            q = QuantizedTensor(values, scales.astype(np.float32), entry.quant.granularity, entry.quant.axis)
            quantized[entry.name] = q
            weights = dequantize(values, q.scales, axis=q.axis)
            tensor = torch.from_numpy(weights).to(TORCH_DTYPES[entry.dtype])
        state_dict[entry.name] = tensor
        done += entry.numel
    module = None
    if header.model.get("kind") == "module" and not as_state_dict:
        skeleton = read_segment(payload, header.model["skeleton"], what="module skeleton")
        module = rebuild_module(skeleton, state_dict, trust_pickle=trust_pickle)
    if progress:
        progress("", total, total)
    return DecodeResult(state_dict, header, module, quantized, time.perf_counter() - started)
