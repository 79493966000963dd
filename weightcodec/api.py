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
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import __version__
from .backends import get_backend
from .config import EncodeConfig
from .container import ContainerReader, ContainerWriter
from .dtypes import DTYPES
from .errors import ResourceLimitError
from .header import Header, ModelInfo, QuantInfo, TensorInfo
from .atomic import atomic_write
from .modelio import LoadedModel, load_source, module_skeleton, rebuild_module
from .parallel import check_workers, default_workers, ordered_map
from .plan import EncodePlan, TensorPlan, plan_encode
from .quant import QuantizedTensor
from .report import EncodeReport, EncodeResult, LayerReport, Notice
from .storage import CODERS, CodedTensor, DecodeContext, EncodeContext
from .storage.base import as_numpy

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
    workers: int | None = None,
    progress: Progress | None = None,
) -> EncodeResult:
    """Encode a model (a path to ``torch.save`` output, a state_dict or an ``nn.Module``).

    Returns a per-layer report and, without ``output``, the container's bytes. With ``output``
    the file is written there, segment by segment as tensors are coded, and appears only once it
    is complete (no partial file on failure or interruption); ``result.data`` is then None.
    ``verify`` decodes every HEVC stream right after encoding it and records the int8 RMSE and
    maximum error in the report. ``workers`` processes code tensors in parallel (None: all cores
    when there is enough HEVC work to share, else 1); the file is the same byte for byte whatever
    the number.
    """
    config = config or EncodeConfig()
    started = time.perf_counter()
    loaded = load_source(source, trust_pickle=trust_pickle)
    plan = plan_encode(loaded.state_dict, config)
    result = encode_planned(loaded, plan, output, config=config, verify=verify, metadata=metadata, workers=workers,
                            progress=progress)
    return replace(result, report=replace(result.report, seconds=time.perf_counter() - started))


def encode_planned(
    loaded: LoadedModel,
    plan: EncodePlan,
    output: str | Path | None = None,
    *,
    config: EncodeConfig,
    verify: bool = False,
    metadata: Mapping[str, str] | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    precoded: Mapping[str, CodedTensor] | None = None,
) -> EncodeResult:
    """Code every tensor as ``plan`` says and write the container (to ``output``, or to memory).

    ``precoded`` maps tensor names to tensors already coded with exactly their plan (e.g. by the
    allocation's candidate search): those are placed as they are instead of being coded again
    (coding is deterministic, so the file is the same); an entry whose plan differs is ignored.
    """
    started = time.perf_counter()
    state_dict = loaded.state_dict
    backend = get_backend(config.backend) if plan.count("hevc") else None
    ctx = EncodeContext(backend=backend, zstd_level=config.zstd_level if config.compress_raw else None,
                        verify=verify)
    total = sum(t.numel for t in plan.tensors)
    done = 0
    entries: list[TensorInfo] = []
    layers: list[LayerReport] = []
    if progress:
        progress("", 0, total)
    with ContainerWriter(output) as writer:
        precoded = precoded or {}
        ready = {t.name: precoded[t.name] for t in plan.tensors if t.name in precoded and precoded[t.name].plan == t}
        todo = EncodePlan([t for t in plan.tensors if t.name not in ready])
        coded_todo = ordered_map(_code_tensor, todo.tensors, workers=encode_workers(todo, workers),
                                 context=(state_dict, ctx), describe=lambda t: f"tensor {t.name!r}")
        coded_tensors = (ready[t.name] if t.name in ready else next(coded_todo) for t in plan.tensors)
        for coded in coded_tensors:
            entry = _place(coded, writer)
            entries.append(entry)
            layers.append(_layer_report(coded, entry))
            done += coded.plan.numel
            if progress:
                progress(coded.plan.name, done, total)
        model = ModelInfo(loaded.kind)
        if loaded.kind == "module":
            module = loaded.module
            model = ModelInfo("module", f"{type(module).__module__}.{type(module).__qualname__}",
                              writer.add_compressible(module_skeleton(module, state_dict.keys()), level=ctx.zstd_level))
        header = Header(tensors=entries, model=model, producer=f"weightcodec {__version__}",
                        metadata=dict(metadata or {}), plan=plan.record)
        total_bytes, header_bytes, data = writer.finish(header)
    if progress:
        progress("", total, total)
    report = EncodeReport(layers, total_bytes, header_bytes, sum(l.original_bytes for l in layers),
                          time.perf_counter() - started, list(plan.notices))
    return EncodeResult(data, report, Path(output) if output is not None else None)


#: Below this many HEVC-coded weights a pool of workers costs more than it saves.
MIN_PARALLEL_CODED_ELEMENTS = 1_000_000


def encode_workers(plan: EncodePlan, workers: int | None) -> int:
    """The worker count for ``plan``: ``workers`` if given, else all cores when there is enough to share."""
    if workers is not None:
        return check_workers(workers)
    coded = [t for t in plan.tensors if t.storage == "hevc"]
    if len(coded) < 2 or sum(t.numel for t in coded) < MIN_PARALLEL_CODED_ELEMENTS:
        return 1
    return min(default_workers(), len(coded))


def _code_tensor(plan: TensorPlan, context: tuple[Mapping[str, torch.Tensor], EncodeContext]) -> CodedTensor:
    state_dict, ctx = context
    return CODERS[plan.storage].encode(as_numpy(state_dict[plan.name]), plan, ctx)


def _place(coded: CodedTensor, payload: ContainerWriter) -> TensorInfo:
    """Append a coded tensor's segments to the payload (scales first) and describe them."""
    plan = coded.plan
    quant = None
    if coded.scales is not None:
        scales = payload.add(coded.scales)
        zero_points = payload.add(coded.zero_points) if coded.zero_points is not None else None
        quant = QuantInfo(plan.granularity, coded.axis, scales, plan.guard_db, plan.scheme, zero_points)
    data = payload.add(coded.data, compression=coded.compression)
    return TensorInfo(plan.name, plan.dtype, plan.shape, plan.storage, data, quant, coded.hevc,
                      plan.stored_dtype if plan.storage == "raw" else None)


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


def read_header(source: str | Path | bytes) -> Header:
    """The validated header (tensor index, settings, byte ranges) without decoding any payload.

    For a path only the prefix and the header are read, whatever the file's size.
    """
    with ContainerReader(source) as reader:
        return reader.header


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
    with ContainerReader(source) as reader:
        header = reader.header
        declared = declared_output_bytes(header)
        if max_output_bytes is not None and declared > max_output_bytes:
            raise ResourceLimitError(f"the file's tensors need {declared:,} bytes, more than the limit of "
                                     f"{max_output_bytes:,} bytes")
        needs_hevc = any(t.storage == "hevc" for t in header.tensors)
        ctx = DecodeContext(read=reader.read, backend=get_backend(backend) if needs_hevc else None)
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
        skeleton = None
        if header.model.kind == "module" and not as_state_dict:
            skeleton = reader.read(header.model.skeleton, "module skeleton", None, MAX_SKELETON_BYTES)
    module = rebuild_module(skeleton, state_dict, trust_pickle=trust_pickle) if skeleton is not None else None
    if progress:
        progress("", total, total)
    return DecodeResult(state_dict, header, module, quantized, time.perf_counter() - started)


__all__ = ["DecodeResult", "EncodeReport", "EncodeResult", "LayerReport", "Notice", "decode", "declared_output_bytes",
           "encode", "encode_planned", "read_header"]
