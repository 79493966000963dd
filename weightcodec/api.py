"""The library API: ``encode``, ``decode``, ``read_header``. The CLI and the tools call these.

An encode is three steps: load the model (:mod:`weightcodec.modelio`), plan what every tensor
becomes (:mod:`weightcodec.plan`), code each tensor with its storage kind
(:mod:`weightcodec.storage`) and place the segments in the container (:mod:`weightcodec.container`).
Nothing here prints or exits; failures raise :mod:`weightcodec.errors`. Long operations report
progress through an optional callback ``progress(name, done, total)`` counting weight elements.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .backends import get_backend
from .config import EncodeConfig
from .container import PayloadBuilder, read_header_bytes, read_segment, serialize
from .dtypes import DTYPES
from .errors import ResourceLimitError, WeightcodecError
from .header import Header, ModelInfo, QuantInfo, Segment, TensorInfo
from .atomic import atomic_write
from .modelio import LoadedModel, load_source, module_skeleton, rebuild_module
from .plan import EncodePlan, plan_encode
from .quant import QuantizedTensor
from .report import EncodeReport, EncodeResult, LayerReport, Notice
from .storage import CODERS, CodedTensor, DecodeContext, EncodeContext

Progress = Callable[[str, int, int], None]


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
    plan = plan_encode(loaded.state_dict, config)
    data, report = encode_planned(loaded, plan, config=config, verify=verify, metadata=metadata, progress=progress)
    report = EncodeReport(report.layers, report.total_bytes, report.header_bytes, report.original_bytes,
                          time.perf_counter() - started, report.notices)
    if output is not None:
        atomic_write(output, [data])
    return EncodeResult(data, report, Path(output) if output is not None else None)


def encode_planned(
    loaded: LoadedModel,
    plan: EncodePlan,
    *,
    config: EncodeConfig,
    verify: bool = False,
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> tuple[bytes, EncodeReport]:
    """Code every tensor as ``plan`` says and assemble the container; returns its bytes and report."""
    started = time.perf_counter()
    state_dict = loaded.state_dict
    backend = get_backend(config.backend) if plan.count("hevc") else None
    ctx = EncodeContext(backend=backend, zstd_level=config.zstd_level if config.compress_raw else None,
                        verify=verify)
    total = sum(t.numel for t in plan.tensors)
    done = 0
    payload = PayloadBuilder()
    entries: list[TensorInfo] = []
    layers: list[LayerReport] = []
    for tensor_plan in plan.tensors:
        if progress:
            progress(tensor_plan.name, done, total)
        coded = CODERS[tensor_plan.storage].encode(state_dict[tensor_plan.name], tensor_plan, ctx)
        entry = _place(coded, payload)
        entries.append(entry)
        layers.append(_layer_report(coded, entry))
        done += tensor_plan.numel

    zstd_level = ctx.zstd_level
    model = ModelInfo(loaded.kind)
    if loaded.kind == "module":
        module = loaded.module
        model = ModelInfo("module", f"{type(module).__module__}.{type(module).__qualname__}",
                          payload.add_compressible(module_skeleton(module, state_dict.keys()), level=zstd_level))
    header = Header(tensors=entries, model=model, producer=f"weightcodec {__version__}",
                    metadata=dict(metadata or {}))
    chunks = serialize(header, payload)
    data = b"".join(chunks)
    if progress:
        progress("", total, total)
    report = EncodeReport(layers, len(data), len(chunks[1]), sum(l.original_bytes for l in layers),
                          time.perf_counter() - started, list(plan.notices))
    return data, report


def _place(coded: CodedTensor, payload: PayloadBuilder) -> TensorInfo:
    """Append a coded tensor's segments to the payload (scales first) and describe them."""
    plan = coded.plan
    quant = None
    if coded.scales is not None:
        scales = payload.add(coded.scales)
        quant = QuantInfo(plan.granularity, coded.axis, scales, plan.guard_db)
    data = payload.add(coded.data, compression=coded.compression)
    return TensorInfo(plan.name, plan.dtype, plan.shape, plan.storage, data, quant, coded.hevc)


def _layer_report(coded: CodedTensor, entry: TensorInfo) -> LayerReport:
    plan = coded.plan
    common = {}
    if plan.storage != "raw":
        common = dict(granularity=plan.granularity, guard_db=plan.guard_db, guard_switched=plan.guard_switched,
                      guard_threshold_db=plan.guard_threshold_db)
    if coded.hevc is not None:
        stream = coded.hevc.stream
        common.update(qp=coded.hevc.qp, lossless=coded.hevc.lossless, profile=stream.get("profile"),
                      level=stream.get("level"), frames=coded.hevc.frames, int8_rmse=coded.int8_rmse,
                      int8_max_error=coded.int8_max_error)
    return LayerReport(plan.name, plan.shape, plan.dtype, plan.storage, plan.numel * DTYPES[plan.dtype].itemsize,
                       entry.stored_bytes, encode_seconds=coded.seconds, **common)


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


#: Cap on the decompressed size of a pickled module skeleton (it holds no tensors: kilobytes).
MAX_SKELETON_BYTES = 64 * 1024 * 1024


def declared_output_bytes(header: Header) -> int:
    """Bytes of the tensors the header promises (what decoding the whole file materialises)."""
    return sum(t.numel * DTYPES[t.dtype].itemsize for t in header.tensors)


def decode(
    source: str | Path | bytes,
    *,
    backend: str = "pyav",
    trust_pickle: bool = False,
    as_state_dict: bool = False,
    max_output_bytes: int | None = None,
    progress: Progress | None = None,
) -> DecodeResult:
    """Decode a ``.wcodec`` file (path or bytes) back to tensors, and to a module if it held one.

    Quantized tensors come back dequantized to their original dtype; their int8 values and scales
    are in ``result.quantized``. A file that holds a pickled module is rebuilt only with
    ``trust_pickle=True``; ``as_state_dict=True`` skips the module and returns the state_dict.
    Decoding is deterministic: the same file always gives bit-identical tensors.

    The file is untrusted: every failure is a :class:`~weightcodec.errors.FormatError` (or, for
    resources, :class:`~weightcodec.errors.ResourceLimitError`), and no more memory is used than
    the header declares for its tensors (see docs/SECURITY.md). ``max_output_bytes`` refuses,
    before decoding anything, a file whose tensors add up to more bytes than that.
    """
    started = time.perf_counter()
    data = _read_bytes(source)
    header, payload_start = read_header_bytes(data)
    declared = declared_output_bytes(header)
    if max_output_bytes is not None and declared > max_output_bytes:
        raise ResourceLimitError(f"the file's tensors need {declared:,} bytes, more than the limit of "
                                 f"{max_output_bytes:,} bytes")
    payload = memoryview(data)[payload_start:]

    def read(segment: Segment, what: str, expected_size: int | None, max_size: int | None = None) -> bytes:
        return read_segment(payload, segment, what=what, expected_size=expected_size, max_size=max_size)

    needs_hevc = any(t.storage == "hevc" for t in header.tensors)
    ctx = DecodeContext(read=read, backend=get_backend(backend) if needs_hevc else None)
    total = sum(t.numel for t in header.tensors)
    done = 0
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    quantized: dict[str, QuantizedTensor] = {}
    for entry in header.tensors:
        if progress:
            progress(entry.name, done, total)
        try:
            tensor, q = CODERS[entry.storage].decode(entry, ctx)
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "allocate" not in str(exc):  # torch's allocator says so
                raise
            raise ResourceLimitError(f"not enough memory to decode tensor {entry.name!r} "
                                     f"({entry.numel * DTYPES[entry.dtype].itemsize:,} bytes)") from None
        state_dict[entry.name] = tensor
        if q is not None:
            quantized[entry.name] = q
        done += entry.numel
    module = None
    if header.model.kind == "module" and not as_state_dict:
        skeleton = read(header.model.skeleton, "module skeleton", None, MAX_SKELETON_BYTES)
        module = rebuild_module(skeleton, state_dict, trust_pickle=trust_pickle)
    if progress:
        progress("", total, total)
    return DecodeResult(state_dict, header, module, quantized, time.perf_counter() - started)


__all__ = ["DecodeResult", "EncodeReport", "EncodeResult", "LayerReport", "Notice", "decode", "declared_output_bytes",
           "encode", "encode_planned", "read_header"]
