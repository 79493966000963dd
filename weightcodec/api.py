"""The library API: ``encode``, ``decode``, ``read_header``. The CLI and the tools call these.

An encode is three steps: load the model (:mod:`weightcodec.modelio`), plan what every tensor
becomes (:mod:`weightcodec.plan`), code each tensor with its storage kind
(:mod:`weightcodec.storage`) and place the segments in the container (:mod:`weightcodec.container`).
Nothing here prints or exits; failures raise :mod:`weightcodec.errors`. Long operations report
progress through an optional callback ``progress(name, done, total)`` counting weight elements.
"""

from __future__ import annotations

import difflib
import fnmatch
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .backends import get_backend
from .config import EncodeConfig
from .container import ContainerReader, ContainerWriter
from .dtypes import DTYPES
from .errors import ConfigError, ResourceLimitError, WeightcodecError
from .header import CarriedFile, Header, ModelInfo, QuantInfo, TensorInfo
from .atomic import atomic_write, resolve_output
from .modelio import LoadedModel, load_source, module_skeleton, rebuild_module
from .pages import release as release_pages
from .parallel import check_workers, default_workers, ordered_map, ordered_thread_map
from .plan import EncodePlan, TensorPlan, plan_encode
from .quant import QuantizedTensor
from .report import EncodeReport, EncodeResult, LayerReport, Notice
from .storage import CODERS, CodedTensor, DecodeContext, EncodeContext
from .storage.base import as_numpy

if TYPE_CHECKING:
    import numpy as np
    import torch

Progress = Callable[[str, int, int], None]


@dataclass
class DecodeResult:
    state_dict: "OrderedDict[str, torch.Tensor]"
    header: Header
    module: torch.nn.Module | None = None
    quantized: dict[str, QuantizedTensor] = field(default_factory=dict)
    seconds: float = 0.0
    files: dict[str, bytes] = field(default_factory=dict)  # "hf-folder": the carried files, by relative path

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
    verify: bool = True,
    metadata: Mapping[str, str] | None = None,
    workers: int | None = None,
    ray: str | None = None,
    progress: Progress | None = None,
) -> EncodeResult:
    """Encode a model (a path to ``torch.save`` output, a ``.safetensors`` file or a Hugging Face
    folder, a state_dict or an ``nn.Module``). A ``.safetensors`` file whose dtypes numpy has is read
    as numpy arrays and encoded without importing torch (the same file as through torch).

    Returns a per-layer report and, without ``output``, the container's bytes. With ``output``
    the file is written there, segment by segment as tensors are coded, and appears only once it
    is complete (no partial file on failure or interruption); ``result.data`` is then None.
    ``verify`` (default) decodes every HEVC stream right after encoding it, records the int8 RMSE
    and maximum error in the report, and stores the decoded values' CRC-32 in the header so that
    every decoder can tell a damaged stream it would otherwise conceal (docs/FORMAT.md 5.3); pass
    ``verify=False`` to skip that decode (about a fifth of the encode time at fast presets).
    ``workers`` processes code tensors in parallel (None: all cores when there is enough HEVC work
    to share, else 1); the file is the same byte for byte whatever the number. ``ray`` ("auto" or
    a cluster address) codes the tensors as tasks on a Ray cluster instead (:mod:`weightcodec.engines.ray_engine`); the file is the same byte for byte.
    """
    config = config or EncodeConfig()
    started = time.perf_counter()
    # a .safetensors file of numpy dtypes is read as numpy arrays: the encode then never imports torch
    loaded = load_source(source, trust_pickle=trust_pickle, prefer_numpy=True)
    # tensors read here from a path are seen by no one else: once planned, and again once coded,
    # their memory-mapped pages go back to the page cache (weightcodec.pages), so the encode's
    # resident memory follows the tensors in hand, not the part of the file read so far
    release_input = isinstance(source, (str, Path))
    plan = plan_encode(loaded.state_dict, config, heads=loaded.heads, after_read=release_pages if release_input else None)
    result = encode_planned(loaded, plan, output, config=config, verify=verify, metadata=metadata, workers=workers,
                            ray=ray, progress=progress, release_input=release_input)
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
    ray: str | None = None,
    progress: Progress | None = None,
    precoded: Mapping[str, CodedTensor] | None = None,
    release_input: bool = False,
) -> EncodeResult:
    """Code every tensor as ``plan`` says and write the container (to ``output``, or to memory).

    ``release_input``: ``loaded`` was read from a file by the caller and is seen by no one else, so
    a memory-mapped tensor's pages may be given back once it is coded (:func:`weightcodec.pages.release`).

    ``precoded`` maps tensor names to tensors already coded with exactly their plan (e.g. by the
    allocation's candidate search): those are placed as they are instead of being coded again
    (coding is deterministic, so the file is the same); an entry whose plan differs is ignored.
    """
    started = time.perf_counter()
    state_dict = loaded.state_dict
    backend = get_backend(config.backend) if plan.count("hevc") else None
    precoded = precoded or {}
    ready = {t.name: precoded[t.name] for t in plan.tensors if t.name in precoded and precoded[t.name].plan == t}
    todo = [t for t in plan.tensors if t.name not in ready and t.storage != "alias"]  # aliases store nothing
    workers = encode_workers(EncodePlan(todo), workers) if ray is None else None
    # x265's own threads where they help (no byte of the streams depends on them): all cores for one
    # process; for each worker of a pool its share of the cores but at least 2, so that the last,
    # often largest tensors (an LM head) do not run on one thread while the other cores idle
    # (measured on 2 cores: 100 M Llama shape 36.0 -> 31.5 s, the 4 x 2048^2 job 4.12 -> 4.20 s);
    # one per Ray task (a task holds one CPU)
    threads = 1 if ray is not None else (min(default_workers(), max(2, default_workers() // workers))
                                          if workers > 1 else None)
    ctx = EncodeContext(backend=backend, zstd_level=config.zstd_level if config.compress_raw else None,
                        verify=verify, threads=threads, verifier=verify_decoder(backend) if verify else None,
                        release_input=release_input)
    total = sum(t.numel for t in plan.tensors)
    done = 0
    entries: list[TensorInfo] = []
    layers: list[LayerReport] = []
    if progress:
        progress("", 0, total)
    with ContainerWriter(output) as writer:
        if ray is not None and todo:
            from .engines.ray_engine import RayEngine

            coded_todo = RayEngine(ray).map(_code_array, _array_jobs(todo, state_dict, release=release_input),
                                            context=ctx, describe=lambda job: f"tensor {job[0].name!r}")
        else:
            coded_todo = ordered_map(_code_tensor, todo, workers=workers,
                                     context=(state_dict, ctx), describe=lambda t: f"tensor {t.name!r}")
        coded_todo = iter(coded_todo)
        for tensor_plan in plan.tensors:
            if tensor_plan.storage == "alias":  # stored once, under the earlier name
                entries.append(TensorInfo(tensor_plan.name, tensor_plan.dtype, tensor_plan.shape, "alias", None,
                                          alias_of=tensor_plan.alias_of, tied=tensor_plan.tied))
                layers.append(LayerReport(tensor_plan.name, tensor_plan.shape, tensor_plan.dtype, "alias",
                                          tensor_plan.numel * DTYPES[tensor_plan.dtype].itemsize, 0))
                done += tensor_plan.numel
                continue
            coded = ready[tensor_plan.name] if tensor_plan.name in ready else next(coded_todo)
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
        elif loaded.layout is not None:
            files = tuple(CarriedFile(f.path, len(f.data), writer.add_compressible(f.data, level=19))
                          for f in loaded.layout.files)
            model = ModelInfo(loaded.kind, shards=loaded.layout.shards, files=files)
        header = Header(tensors=entries, model=model, producer=f"weightcodec {__version__}",
                        metadata=dict(metadata or {}), plan=plan.record)
        total_bytes, header_bytes, data = writer.finish(header)
    if progress:
        progress("", total, total)
    notices = list(loaded.layout.notices) if loaded.layout is not None else []
    report = EncodeReport(layers, total_bytes, header_bytes, sum(l.original_bytes for l in layers),
                          time.perf_counter() - started, notices + list(plan.notices))
    return EncodeResult(data, report, Path(output) if output is not None else None)


def verify_decoder(backend):
    """The decoder that verifies freshly coded streams: libavcodec in-process (PyAV) when it is
    available, whatever the encoding backend (the ffmpeg executable would cost a process and a pipe
    per stream: 0.3 s a 2048x2048 matrix against 0.13 s); HEVC decoders are bit-exact, so the
    checksum stored is the same."""
    if backend is None or backend.name == "pyav":
        return backend
    try:
        return get_backend("pyav")
    except WeightcodecError:  # pragma: no cover - PyAV without an HEVC decoder
        return backend


#: Below this many HEVC-coded weights a pool of workers costs more than it saves.
MIN_PARALLEL_CODED_ELEMENTS = 1_000_000


def encode_workers(plan: EncodePlan, workers: int | None) -> int:
    """The worker count for ``plan``: ``workers`` if given, else all cores when there is enough to share."""
    if workers is not None:
        return check_workers(workers)
    coded = [t for t in plan.tensors if t.storage == "hevc"]  # aliases are never coded
    if len(coded) < 2 or sum(t.numel for t in coded) < MIN_PARALLEL_CODED_ELEMENTS:
        return 1
    return min(default_workers(), len(coded))


def _code_tensor(plan: TensorPlan, context: tuple[Mapping[str, torch.Tensor], EncodeContext]) -> CodedTensor:
    state_dict, ctx = context
    tensor = state_dict[plan.name]
    coded = CODERS[plan.storage].encode(as_numpy(tensor), plan, ctx)
    if ctx.release_input:
        release_pages(tensor)
    return coded


def _array_jobs(todo: Sequence[TensorPlan], state_dict: Mapping[str, torch.Tensor], *, release: bool):
    """(plan, array) jobs for an engine that ships arrays (Ray); with ``release`` a tensor's mapped
    pages are given back once the engine has taken it (it asks for the next job after ``ray.put``)."""
    for plan in todo:
        tensor = state_dict[plan.name]
        yield plan, as_numpy(tensor)
        if release:
            release_pages(tensor)


def _code_array(job: tuple[TensorPlan, "np.ndarray"], ctx: EncodeContext) -> CodedTensor:
    """:func:`_code_tensor` for engines that ship each tensor with its job (Ray)."""
    plan, array = job
    return CODERS[plan.storage].encode(array, plan, ctx)


def _place(coded: CodedTensor, payload: ContainerWriter) -> TensorInfo:
    """Append a coded tensor's segments to the payload (scales first) and describe them."""
    plan = coded.plan
    quant = None
    if coded.scales is not None:
        scales = payload.add(coded.scales)
        col_scales = payload.add(coded.col_scales) if coded.col_scales is not None else None
        zero_points = payload.add(coded.zero_points) if coded.zero_points is not None else None
        granularity = "per-channel-2d" if col_scales is not None else plan.granularity
        quant = QuantInfo(granularity, coded.axis, scales, plan.guard_db, plan.scheme, zero_points=zero_points,
                          col_scales=col_scales)
    data = payload.add(coded.data, compression=coded.compression)
    return TensorInfo(plan.name, plan.dtype, plan.shape, plan.storage, data, quant, coded.hevc,
                      plan.stored_dtype if plan.storage == "raw" else None)


def _layer_report(coded: CodedTensor, entry: TensorInfo) -> LayerReport:
    plan = coded.plan
    common = {}
    if plan.storage != "raw":
        granularity = "per-channel-2d" if plan.col_scales else plan.granularity
        if granularity == "per-channel" and plan.axis:
            granularity += f" (axis {plan.axis})"
        common = dict(granularity=granularity, guard_db=plan.guard_db, guard_switched=plan.guard_switched,
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
    """Bytes of the tensors and carried files the header promises (what decoding the whole file materialises)."""
    return (sum(t.numel * DTYPES[t.dtype].itemsize for t in header.tensors)
            + sum(f.size for f in header.model.files))


def select_tensors(header: Header, only: str | Sequence[str] | None) -> list[TensorInfo]:
    """The header's tensors whose names match one of the ``only`` globs (all of them for None).

    Raises:
        ConfigError: a pattern matches no tensor (with the closest names as a hint).
    """
    if only is None:
        return list(header.tensors)
    patterns = [only] if isinstance(only, str) else list(only)
    names = [t.name for t in header.tensors]
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"tensor patterns must be non-empty strings, got {pattern!r}")
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
                f"; the file's tensors are named like {', '.join(map(repr, names[:3]))} (`wcodec info` lists them)"
            raise ConfigError(f"pattern {pattern!r} matches no tensor of the file{hint}")
    return [t for t in header.tensors if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)]


@dataclass(frozen=True)
class DecodedTensor:
    """One decoded tensor, as :func:`iter_decoded` hands it out."""

    name: str
    tensor: torch.Tensor
    quantized: QuantizedTensor | None
    entry: TensorInfo


def decode_workers(entries: Sequence[TensorInfo], workers: int | None) -> int:
    """Threads for decoding ``entries``: ``workers`` if given, else all cores when >= 2 streams."""
    if workers is not None:
        return check_workers(workers)
    streams = sum(1 for t in entries if t.storage == "hevc")
    return max(1, min(default_workers(), streams))


ARRAY_KINDS = ("torch", "numpy")


def numpy_can_hold(entries: Sequence[TensorInfo]) -> bool:
    """Whether numpy has the dtype of every one of ``entries`` (so they can decode to numpy arrays)."""
    return all(DTYPES[t.dtype].numpy for t in entries)


def _check_arrays(arrays: str, entries: Sequence[TensorInfo]) -> None:
    if arrays not in ARRAY_KINDS:
        raise ConfigError(f"arrays must be one of {ARRAY_KINDS}, got {arrays!r}")
    if arrays == "numpy" and not numpy_can_hold(entries):
        names = sorted({t.dtype for t in entries if not DTYPES[t.dtype].numpy})
        raise ConfigError(f"numpy has no {', '.join(names)} dtype: decode these tensors with arrays='torch'")


def iter_decoded(reader: ContainerReader, entries: Sequence[TensorInfo], *, backend: str = "pyav",
                 workers: int | None = None, progress: Progress | None = None,
                 arrays: str = "torch", keep_quantized: bool = True,
                 largest_first: bool = False) -> Iterator[DecodedTensor]:
    """Decode ``entries`` of an open file, yielding each tensor as soon as it and those before it
    are ready (file order). ``workers`` threads decode streams at once (None: all cores); each
    stream is decoded by one decoder thread, so the tensors are the same bits whatever the number.
    Reads only the segments of ``entries`` (and of the tensors their aliases name, FORMAT.md 5.4:
    an alias is the earlier tensor itself when tied, a copy of it otherwise). ``arrays="numpy"``
    gives numpy arrays (the same values; torch is not imported) instead of torch tensors;
    ``keep_quantized=False`` drops each tensor's int8 values as soon as it is dequantized
    (``DecodedTensor.quantized`` is then None).

    ``largest_first``: for a caller that keeps every tensor anyway (:func:`decode`), decode the
    largest tensors first and yield everything, still in file order, once all are decoded. Peak
    memory is every tensor held plus the working memory (int8 values, stream, pictures) of the
    one being decoded last; in file order that is often the largest (an LM head), this way the
    smallest (1 B Llama shape: about 100 MB less).
    """
    entries = list(entries)
    _check_arrays(arrays, entries)
    by_name = {t.name: t for t in reader.header.tensors}
    targets = {t.alias_of for t in entries if t.storage == "alias"}
    selected = {t.name for t in entries}
    # the tensors actually decoded: the selected non-aliases plus the alias targets not selected
    # (those are decoded for their aliases only and not yielded)
    coded = [t for t in reader.header.tensors
             if t.storage != "alias" and (t.name in selected or t.name in targets)]
    needs_hevc = any(t.storage == "hevc" for t in coded)
    ctx = DecodeContext(read=reader.read, backend=get_backend(backend) if needs_hevc else None,
                        numpy=arrays == "numpy")
    total = sum(t.numel for t in entries)
    done = 0
    if progress:
        progress("", 0, total)

    def one(entry: TensorInfo) -> DecodedTensor:
        try:
            tensor, q = CODERS[entry.storage].decode(entry, ctx)
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "allocate" not in str(exc):  # torch's allocator says so
                raise
            raise ResourceLimitError(f"not enough memory to decode tensor {entry.name!r} "
                                     f"({entry.numel * DTYPES[entry.dtype].itemsize:,} bytes)") from None
        return DecodedTensor(entry.name, tensor, q if keep_quantized else None, entry)

    kept: dict[str, DecodedTensor] = {}  # alias targets, until the file's end
    threads = decode_workers(coded, workers)
    if largest_first:
        finished: dict[str, DecodedTensor] = {}
        by_size = sorted(coded, key=lambda t: t.numel * DTYPES[t.dtype].itemsize, reverse=True)
        for decoded in ordered_thread_map(one, by_size, workers=threads):
            finished[decoded.name] = decoded
            if progress and decoded.name in selected:
                done += decoded.entry.numel
                progress(decoded.name, done, total)
        pending = iter([finished.pop(t.name) for t in coded])
        del finished
    else:
        pending = iter(ordered_thread_map(one, coded, workers=threads))
    for entry in entries:
        if entry.storage == "alias":  # validated: an earlier, non-alias tensor of the same dtype and shape
            while entry.alias_of not in kept:
                decoded = next(pending)
                if decoded.name in targets:
                    kept[decoded.name] = decoded
                if decoded.name in selected:
                    raise AssertionError("aliases follow their targets")  # pragma: no cover - header rule
            target = kept[entry.alias_of]
            tensor = target.tensor if entry.tied else target.tensor.copy() if ctx.numpy else target.tensor.clone()
            decoded = DecodedTensor(entry.name, tensor, target.quantized, by_name[entry.name])
        else:
            while True:
                decoded = next(pending)
                if decoded.name in targets:
                    kept[decoded.name] = decoded
                if decoded.name == entry.name:
                    break
        if not largest_first:
            done += decoded.entry.numel
            if progress:
                progress(decoded.name, done, total)
        yield decoded
    if largest_first and progress:
        progress("", total, total)  # aliases, which decode nothing


def _check_output_size(entries: Sequence[TensorInfo], max_output_bytes: int | None, *, extra: int = 0) -> None:
    declared = sum(t.numel * DTYPES[t.dtype].itemsize for t in entries) + extra
    if max_output_bytes is not None and declared > max_output_bytes:
        raise ResourceLimitError(f"the file's tensors{' and files' if extra else ''} need {declared:,} bytes, "
                                 f"more than the limit of "
                                 f"{max_output_bytes:,} bytes")


def iter_decode(
    source: str | Path | bytes,
    *,
    only: str | Sequence[str] | None = None,
    backend: str = "pyav",
    workers: int | None = None,
    max_output_bytes: int | None = None,
    progress: Progress | None = None,
    arrays: str = "torch",
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for the file's tensors in file order, each as soon as it is decoded.

    Streams are decoded by ``workers`` threads at once (None: all cores); the tensors are the
    same bits whatever the number. ``only`` (a glob or a list of globs over tensor names) decodes
    just the matching tensors and reads no other segment of the file. The file is read through a
    memory map and stays open while the iterator is alive; close the iterator (or run it to the
    end) to release it. ``arrays="numpy"``: numpy arrays instead of torch tensors. Errors as
    :func:`decode`.
    """
    with ContainerReader(source) as reader:
        entries = select_tensors(reader.header, only)
        _check_output_size(entries, max_output_bytes)
        for decoded in iter_decoded(reader, entries, backend=backend, workers=workers, progress=progress,
                                    arrays=arrays, keep_quantized=False):
            yield decoded.name, decoded.tensor


def decode(
    source: str | Path | bytes,
    *,
    backend: str = "pyav",
    trust_pickle: bool = False,
    as_state_dict: bool = False,
    max_output_bytes: int | None = None,
    only: str | Sequence[str] | None = None,
    workers: int | None = None,
    keep_quantized: bool = True,
    progress: Progress | None = None,
    arrays: str = "torch",
) -> DecodeResult:
    """Decode a ``.wcodec`` file (path or bytes) back to tensors, and to a module if it held one.

    Quantized tensors come back dequantized to their original dtype; their int8 values and scales
    are in ``result.quantized``. A file that holds a pickled module is rebuilt only with
    ``trust_pickle=True``; ``as_state_dict=True`` skips the module and returns the state_dict.
    ``only`` decodes just the tensors matching the glob(s) (a state_dict, never a module) and
    reads nothing else; ``workers`` threads decode streams in parallel (see :func:`iter_decode`).
    ``keep_quantized=False`` leaves ``result.quantized`` empty: the int8 values of every tensor
    are then not held beside the dequantized ones (half the model's weights count in bytes).
    Decoding is deterministic: the same file always gives bit-identical tensors.
    ``arrays="numpy"`` returns numpy arrays instead of torch tensors (the same values, and torch is
    never imported; a ConfigError if numpy lacks a dtype of the file, e.g. bfloat16, or if the file
    holds a module to rebuild).

    The file is untrusted: every failure is a :class:`~weightcodec.errors.FormatError` (or, for
    resources, :class:`~weightcodec.errors.ResourceLimitError`), and no more memory is used than
    the header declares for its tensors (see docs/SECURITY.md). ``max_output_bytes`` refuses,
    before decoding anything, a file whose tensors (those selected by ``only``) and carried files
    (none with ``only``) add up to more bytes than that.
    """
    started = time.perf_counter()
    with ContainerReader(source) as reader:
        header = reader.header
        entries = select_tensors(header, only)
        carried = header.model.files if only is None else ()  # --only: the selected tensors, nothing else
        _check_output_size(entries, max_output_bytes, extra=sum(f.size for f in carried))
        state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
        quantized: dict[str, QuantizedTensor] = {}
        rebuild = header.model.kind == "module" and not as_state_dict and only is None
        if arrays == "numpy" and rebuild:
            raise ConfigError("this file holds an nn.Module, which needs torch tensors: decode it with "
                              "arrays='torch', or pass as_state_dict=True")
        for decoded in iter_decoded(reader, entries, backend=backend, workers=workers, progress=progress,
                                    arrays=arrays, keep_quantized=keep_quantized, largest_first=True):
            state_dict[decoded.name] = decoded.tensor
            if decoded.quantized is not None:
                quantized[decoded.name] = decoded.quantized
        skeleton = reader.read(header.model.skeleton, "module skeleton", None, MAX_SKELETON_BYTES) if rebuild else None
        files = {f.path: reader.read(f.data, f"file {f.path!r}", f.size) for f in carried}
    module = rebuild_module(skeleton, state_dict, trust_pickle=trust_pickle) if skeleton is not None else None
    return DecodeResult(state_dict, header, module, quantized, time.perf_counter() - started, files)


@dataclass(frozen=True)
class DecodedFile:
    """What :func:`decode_to_safetensors` or :func:`decode_to_folder` wrote."""

    path: Path
    bytes: int
    tensors: int
    seconds: float
    files: int = 1  # a folder: the files written in it


def can_stream_to_safetensors(header: Header, only: str | Sequence[str] | None = None) -> bool:
    """Whether :func:`decode_to_safetensors` can write these tensors (every dtype has a safetensors
    name, and the installed safetensors can write a header from raw buffers)."""
    from .formats.safetensors_file import streaming_available

    return streaming_available() and all(DTYPES[t.dtype].safetensors for t in select_tensors(header, only))


def _require_streamable(header: Header, only: str | Sequence[str] | None) -> None:
    if not can_stream_to_safetensors(header, only):
        raise ConfigError("these tensors cannot be streamed to .safetensors (a dtype safetensors cannot hold, "
                          "or safetensors older than 0.8): decode() then save")


def _layout(entries: Sequence[TensorInfo]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}``: what :class:`~weightcodec.formats.SafetensorsStreamWriter` lays out."""
    return {t.name: (t.dtype, tuple(t.shape)) for t in entries}


def decode_to_safetensors(
    source: str | Path | bytes,
    output: str | Path,
    *,
    only: str | Sequence[str] | None = None,
    backend: str = "pyav",
    workers: int | None = None,
    max_output_bytes: int | None = None,
    overwrite: bool = True,
    progress: Progress | None = None,
) -> DecodedFile:
    """Decode a ``.wcodec`` file straight into one ``.safetensors`` file, a tensor at a time.

    The same file as ``decode`` then writing its state_dict with safetensors (the same bytes: the
    library lays it out), but no tensor is kept once written: peak memory is the tensors being
    decoded (``workers`` of them) and alias targets, not the whole model, and writing overlaps
    decoding. The input's ``__metadata__`` is kept (a single-file model). All or nothing: the
    output appears complete or not at all (see :class:`~weightcodec.formats.SafetensorsStreamWriter`).
    Errors as :func:`decode`, plus :class:`~weightcodec.errors.OutputError` for the destination.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .formats.safetensors_file import SafetensorsStreamWriter

    started = time.perf_counter()
    with ContainerReader(source) as reader:
        header = reader.header
        entries = select_tensors(header, only)
        _check_output_size(entries, max_output_bytes)
        _require_streamable(header, only)
        arrays = "numpy" if numpy_can_hold(entries) else "torch"
        resolve_output(output, overwrite=overwrite)  # a destination that cannot be written fails now
        # the library writes the file's header and (zero) data area in a thread of its own while the
        # first tensors decode (it releases the GIL): 67 MB took 0.12 s, 1/3 of the decode
        prepare = ThreadPoolExecutor(1, thread_name_prefix="weightcodec-writer")
        opened = prepare.submit(SafetensorsStreamWriter, output, _layout(entries), header.model.file_metadata,
                                overwrite=overwrite)
        try:
            for decoded in iter_decoded(reader, entries, backend=backend, workers=workers, progress=progress,
                                        arrays=arrays, keep_quantized=False):
                opened.result().write(decoded.name, decoded.tensor)
                del decoded
            size = opened.result().commit()
        finally:
            prepare.shutdown(wait=True)  # on an error: the writer is complete before it is removed
            if opened.exception() is None:
                opened.result().abort()  # after commit, nothing to do
    return DecodedFile(Path(output), size, len(entries), time.perf_counter() - started)


class _ShardDecoder:
    """A file's tensors a shard at a time (a :class:`~weightcodec.formats.hf_folder.ShardSource`):
    each shard's tensors decoded in file order, progress counted over the whole file."""

    def __init__(self, reader: ContainerReader, entries: list[TensorInfo], *, backend: str,
                 workers: int | None, progress: Progress | None) -> None:
        self.reader, self.entries, self.backend, self.workers, self.progress = reader, entries, backend, workers, progress
        self.place = {t.name: i for i, t in enumerate(entries)}
        self.arrays = "numpy" if numpy_can_hold(entries) else "torch"
        self.total = sum(t.numel for t in entries)
        self.done = 0
        if progress:
            progress("", 0, self.total)

    def _mine(self, shard) -> list[TensorInfo]:
        """The shard's entries, in file order."""
        return sorted((self.entries[self.place[name]] for name in shard.tensors), key=lambda t: self.place[t.name])

    def layout(self, shard) -> dict[str, tuple[str, tuple[int, ...]]]:
        return _layout(self._mine(shard))

    def tensors(self, shard) -> Iterator[tuple[str, object]]:
        mine = self._mine(shard)
        before = self.done
        step = (lambda name, done, _: self.progress(name, before + done, self.total)) if self.progress else None
        for decoded in iter_decoded(self.reader, mine, backend=self.backend, workers=self.workers, progress=step,
                                    arrays=self.arrays, keep_quantized=False):
            yield decoded.name, decoded.tensor
        self.done = before + sum(t.numel for t in mine)


def decode_to_folder(
    source: str | Path | bytes,
    output: str | Path,
    *,
    backend: str = "pyav",
    workers: int | None = None,
    max_output_bytes: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> DecodedFile:
    """Decode a file that holds a Hugging Face model folder straight into that folder: each shard
    is written a tensor at a time as in :func:`decode_to_safetensors` (the same files as ``decode``
    then writing them, never the whole model in memory), then the carried files. All or nothing
    (a temporary folder renamed into place). Errors as :func:`decode`; ConfigError if the file holds
    no folder or a dtype cannot be streamed (:func:`can_stream_to_safetensors`)."""
    from .formats.hf_folder import write_folder

    started = time.perf_counter()
    with ContainerReader(source) as reader:
        header = reader.header
        if header.model.kind != "hf-folder":
            raise ConfigError(f"this file holds a {header.model.kind}, not a Hugging Face model folder")
        _require_streamable(header, None)
        entries = list(header.tensors)
        carried = header.model.files
        _check_output_size(entries, max_output_bytes, extra=sum(f.size for f in carried))
        shards = _ShardDecoder(reader, entries, backend=backend, workers=workers, progress=progress)
        files = [(f.path, lambda f=f: reader.read(f.data, f"file {f.path!r}", f.size)) for f in carried]
        written = write_folder(output, header.model.shards, shards, files, overwrite=overwrite)
        size = sum(p.stat().st_size for p in Path(output).rglob("*") if p.is_file())
    return DecodedFile(Path(output), size, len(entries), time.perf_counter() - started, files=len(written))


__all__ = ["DecodeResult", "DecodedFile", "DecodedTensor", "EncodeReport", "EncodeResult", "LayerReport", "Notice",
           "can_stream_to_safetensors", "decode", "decode_to_folder", "decode_to_safetensors", "declared_output_bytes",
           "encode", "encode_planned", "iter_decode", "iter_decoded", "numpy_can_hold", "read_header", "select_tensors"]
