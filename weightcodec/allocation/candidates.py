"""The options of every tensor, coded and decoded for real, with their bytes and predicted loss.

For each state_dict entry :func:`candidate_plans` lists what it could become (a
:class:`~weightcodec.plan.TensorPlan` each):

- quantizable weights (floating point, at least 2-D, named ``*weight``, at least
  ``min_quantized_elements``; the rule of :func:`weightcodec.plan.storage_kind` without the HEVC
  threshold): HEVC at every candidate QP for both granularities and every layout of
  :func:`weightcodec.layouts.candidate_layouts`, and int8 (+ zstd) at both granularities: int8 is
  the most accurate option (float16, when the weights fit it, only with ``float16_weights``);
- other floating-point tensors (biases, norm parameters, running statistics): exact, and float16
  when they fit it;
- everything else: exact.

:func:`measure_options` codes every option with the storage coders the final encode uses (so an
option's bytes are the bytes it will take in the file), decodes it, and prices its error with the
sensitivity model. Tensors are coded in a pool of worker processes (:func:`weightcodec.parallel.ordered_map`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..backends import get_backend
from ..config import EncodeConfig, HevcSettings
from ..dtypes import from_torch
from ..errors import ConfigError, ModelLoadError
from ..layouts import ROWS, candidate_layouts
from ..parallel import default_workers, ordered_map
from ..plan import TensorPlan
from ..quant import dequantize, dequantize_affine, guard_figure_db
from ..storage import CODERS, CodedTensor, EncodeContext
from ..storage.base import as_numpy, to_float32
from ..storage.hevc import decode_matrix
from .sensitivity import Sensitivity, float16_fits

#: QPs the search codes each layer at (every other QP from 10 to 46: steps of 1.26x in quantizer
#: step; on MobileNetV2 no layer's rate-distortion hull used a QP under 10: int8 + zstd is cheaper).
DEFAULT_QPS: tuple[int, ...] = tuple(range(10, 47, 2))
GRANULARITIES = ("per-tensor", "per-channel")
SCHEMES = ("symmetric-int8", "affine-int8")


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """What the search may choose from (the defaults are what ``wcodec encode --max-drop`` uses)."""

    qps: tuple[int, ...] = DEFAULT_QPS
    granularities: tuple[str, ...] = GRANULARITIES
    schemes: tuple[str, ...] = SCHEMES
    hevc_quantizers: int = 2  # HEVC is tried with at most this many of the int8 quantizers (see measure_options)
    hevc_per_channel: bool = False  # always also try HEVC with the best per-channel quantizer (slower search)
    layouts: bool = True  # try mosaic layouts for k x k convolutions
    hevc: bool = True
    int8: bool = True
    float16: bool = True  # float16 for float32/float64 tensors that are not quantized, when they fit it
    float16_weights: bool = False  # float16 also for quantizable weights (above int8: off by default)

    def __post_init__(self) -> None:
        if not self.qps and self.hevc:
            raise ConfigError("the search needs at least one QP (or hevc=False)")
        for qp in self.qps:
            HevcSettings(qp=qp)  # validates the range
        if not self.granularities or any(g not in GRANULARITIES for g in self.granularities):
            raise ConfigError(f"granularities must be a non-empty subset of {GRANULARITIES}")
        if not self.schemes or any(s not in SCHEMES for s in self.schemes):
            raise ConfigError(f"schemes must be a non-empty subset of {SCHEMES}")
        if not isinstance(self.hevc_quantizers, int) or self.hevc_quantizers < 1:
            raise ConfigError("hevc_quantizers must be a positive integer")


@dataclass(frozen=True)
class Option:
    """One tensor coded one way: its bytes in the file, its predicted loss and its error."""

    plan: TensorPlan
    bytes: int  # data + scales segments, as stored
    loss: float  # predicted loss increase (the sensitivity model's)
    error: float  # relative per-channel squared error (data-free, for reports)
    coded: CodedTensor | None = None  # kept for the options the solver may pick

    @property
    def exact(self) -> bool:
        return self.error == 0.0


@dataclass
class TensorOptions:
    """Every option of one tensor, cheapest first."""

    name: str
    numel: int
    original_bytes: int
    options: list[Option] = field(default_factory=list)


def quantizable(name: str, tensor: torch.Tensor, config: EncodeConfig) -> bool:
    return (tensor.is_floating_point() and tensor.ndim >= 2 and name.endswith("weight")
            and tensor.numel() >= config.min_quantized_elements)


def candidate_plans(name: str, tensor: torch.Tensor, config: EncodeConfig, space: SearchSpace,
                    sensitivity: Sensitivity) -> list[TensorPlan]:
    """The plans of the search's first round for one tensor: raw, float16 and int8 (every quantizer).
    HEVC plans follow from the int8 results (:func:`hevc_plans`)."""
    dtype = from_torch(tensor.dtype)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has dtype {tensor.dtype}, which weightcodec cannot store")
    shape = tuple(tensor.shape)
    exact = TensorPlan(name, "raw", dtype.name, shape)
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return [exact]
    quantized = quantizable(name, tensor, config) and sensitivity.covers(name)
    plans = [] if quantized else [exact]
    if (space.float16_weights if quantized else space.float16) and dtype.name in ("float32", "float64"):
        if float16_fits(tensor.detach().to("cpu", torch.float64).numpy()):
            plans.append(TensorPlan(name, "raw", dtype.name, shape, stored_dtype="float16"))
    if not quantized:
        return plans
    weights = tensor.detach().to("cpu", torch.float32).numpy()
    figure = guard_figure_db(weights)
    guard = figure if math.isfinite(figure) else None
    threshold = config.quant.matrix_guard_db if tensor.ndim == 2 else config.quant.guard_db
    for scheme in space.schemes:
        for granularity in space.granularities:
            plans.append(TensorPlan(name, "int8", dtype.name, shape, granularity=granularity, guard_db=guard,
                                    guard_threshold_db=threshold, scheme=scheme))
    return plans


def hevc_quantizers(int8_options: list["Option"], limit: int, *, per_channel: bool = False) -> list[TensorPlan]:
    """The int8 plans whose quantizer HEVC is tried with: the most accurate per-tensor one and, if its
    predicted loss is at most 0.8 of that, the most accurate per-channel one (per-channel scales cost
    bytes; where they barely help, HEVC's own error swamps the difference) -- at most ``limit``."""
    best: dict[str, Option] = {}
    for option in int8_options:
        current = best.get(option.plan.granularity)
        if current is None or (option.loss, option.bytes) < (current.loss, current.bytes):
            best[option.plan.granularity] = option
    chosen = []
    if "per-tensor" in best:
        chosen.append(best["per-tensor"])
    if "per-channel" in best and (per_channel or not chosen or best["per-channel"].loss <= 0.8 * chosen[0].loss):
        chosen.append(best["per-channel"])
    chosen.sort(key=lambda o: o.loss)
    return [o.plan for o in chosen[:limit]]


def hevc_plans(int8_plan: TensorPlan, config: EncodeConfig, space: SearchSpace) -> list[TensorPlan]:
    """HEVC at every QP and layout with the quantizer of ``int8_plan``."""
    layouts = candidate_layouts(int8_plan.shape) if space.layouts else [ROWS]
    return [replace(int8_plan, storage="hevc", hevc=replace(config.hevc, qp=qp, lossless=False), layout=layout)
            for layout in layouts for qp in space.qps]


def decoded_values(coded: CodedTensor, array: np.ndarray, backend) -> np.ndarray:
    """The float32 values a decoder restores from ``coded`` (``array`` is the original tensor)."""
    plan = coded.plan
    if plan.storage == "raw":
        values = to_float32(array, plan.dtype)
        if plan.stored_dtype is not None:
            values = np.asarray(array).astype(plan.stored_dtype).astype(np.float32)
        return values
    scales = np.frombuffer(coded.scales, dtype="<f4").astype(np.float32)
    zero_points = None if coded.zero_points is None else np.frombuffer(coded.zero_points, dtype=np.int8)
    if plan.storage == "int8":
        from ..storage.base import quantize_planned

        values = quantize_planned(array, plan).values
    else:
        matrix = decode_matrix(backend, coded.data, coded.hevc, plan.name)
        values = plan.layout.from_matrix(matrix, plan.shape)
    if zero_points is not None:
        return dequantize_affine(values, scales, zero_points, axis=coded.axis)
    return dequantize(values, scales, axis=coded.axis)


def _measure(plan: TensorPlan, context) -> Option:
    state_dict, ctx, sensitivity = context
    array = as_numpy(state_dict[plan.name])
    coded = CODERS[plan.storage].encode(array, plan, ctx)
    original = to_float32(array, plan.dtype)
    if plan.storage == "raw" and plan.stored_dtype is None:
        loss = error = 0.0
    else:
        decoded = decoded_values(coded, array, ctx.backend)
        error = _relative_error(original, decoded)
        loss = sensitivity.loss(plan.name, original, decoded) if sensitivity.covers(plan.name) else 0.0
    size = len(coded.data) + sum(len(b) for b in (coded.scales, coded.zero_points) if b is not None)
    return Option(plan, size, loss, error, coded)


def _relative_error(original: np.ndarray, decoded: np.ndarray) -> float:
    from .sensitivity import relative_channel_error

    return relative_channel_error(original, decoded)


Progress = Callable[[str, int, int], None]


def measure_options(
    state_dict: Mapping[str, torch.Tensor],
    config: EncodeConfig,
    space: SearchSpace,
    sensitivity: Sensitivity,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, TensorOptions]:
    """Code, decode and price every option of every tensor (see the module docstring).

    Two rounds: raw, float16 and int8 with every quantizer (scheme x granularity) first; then HEVC
    at every QP and layout with the quantizers :func:`hevc_quantizers` picks from the int8 results.
    """
    table: dict[str, TensorOptions] = {}
    first: list[TensorPlan] = []
    for name, tensor in state_dict.items():
        table[name] = TensorOptions(name, tensor.numel(), tensor.numel() * tensor.element_size())
        first.extend(candidate_plans(name, tensor, config, space, sensitivity))
    second_estimate = sum(p.numel * len(space.qps) * 2 for p in first if p.storage == "int8") if space.hevc else 0
    total = sum(p.numel for p in first) + second_estimate
    workers = default_workers() if workers is None else workers
    done = 0

    def run(jobs: list[TensorPlan], ctx: EncodeContext) -> list[Option]:
        nonlocal done
        # big jobs first keeps both cores busy to the end
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i].numel)
        results: list[Option | None] = [None] * len(jobs)
        measured = ordered_map(_measure, [jobs[i] for i in order], workers=workers, context=(state_dict, ctx, sensitivity),
                               describe=lambda p: f"tensor {p.name!r} ({p.describe()})")
        for k, option in enumerate(measured):  # run the generator to its end (the pool shuts down cleanly)
            results[order[k]] = option
            done += option.plan.numel
            if progress:
                progress(option.plan.name, done, max(total, done))
        return results

    zstd = config.zstd_level if config.compress_raw else None
    options = run(first, EncodeContext(backend=None, zstd_level=zstd))
    second: list[TensorPlan] = []
    if space.hevc:
        by_tensor: dict[str, list[Option]] = {}
        for option in options:
            if option.plan.storage == "int8":
                by_tensor.setdefault(option.plan.name, []).append(option)
        for name, int8_options in by_tensor.items():
            for plan in hevc_quantizers(int8_options, space.hevc_quantizers, per_channel=space.hevc_per_channel):
                second.extend(hevc_plans(plan, config, space))
        total = sum(p.numel for p in first) + sum(p.numel for p in second)
        if second:
            # verify: each stream records the CRC-32 of its own decode (as a plain encode does)
            threads = max(1, default_workers() // workers) if workers > 1 else None
            options += run(second, EncodeContext(backend=get_backend(config.backend), zstd_level=zstd, verify=True,
                                                 threads=threads))
    if not space.int8:
        options = [o for o in options if o.plan.storage != "int8"]
    for option in options:
        table[option.plan.name].options.append(option)
    for entry in table.values():
        entry.options.sort(key=lambda o: (o.bytes, o.loss))
    return table


__all__ = ["DEFAULT_QPS", "GRANULARITIES", "SCHEMES", "Option", "SearchSpace", "TensorOptions", "candidate_plans",
           "decoded_values", "hevc_plans", "hevc_quantizers", "measure_options", "quantizable"]
