"""The planning step of an encode: what each tensor becomes, decided before anything is coded.

For every state_dict entry a :class:`TensorPlan` says its storage kind (``raw``, ``int8`` or
``hevc``; the rule is :func:`storage_kind`, documented in docs/QUANTIZATION.md), its int8
granularity after the data-free guard, and the HEVC settings of a coded matrix. The coding step
(:mod:`weightcodec.storage`) only carries plans out, so a plan can also come from elsewhere (a
size or accuracy budget) and what the user should know about it (:class:`~weightcodec.report.Notice`)
is known before the first frame is coded.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .config import EncodeConfig, HevcSettings
from .dtypes import from_torch
from .errors import ConfigError, ModelLoadError
from .header import PlanRecord
from .layouts import ROWS, MatrixLayout
from .quant import choose_granularity
from .report import Notice

STORAGE_KINDS = ("raw", "int8", "hevc")


@dataclass(frozen=True)
class TensorPlan:
    """What one tensor becomes."""

    name: str
    storage: str  # "raw" | "int8" | "hevc"
    dtype: str
    shape: tuple[int, ...]
    granularity: str | None = None  # resolved ("per-tensor" | "per-channel") for int8 and hevc
    guard_db: float | None = None  # the guard's figure (None when per-tensor int8 is exact)
    guard_threshold_db: float | None = None
    guard_switched: bool = False  # auto mode moved this tensor to per-channel
    hevc: HevcSettings | None = None  # for hevc
    layout: MatrixLayout = ROWS  # for hevc: how the tensor becomes the coded matrix (weightcodec.layouts)
    stored_dtype: str | None = None  # for raw: store the elements in this dtype (float16), restore to ``dtype``
    scheme: str = "symmetric-int8"  # for int8 and hevc: "symmetric-int8" | "affine-int8" (weightcodec.quant)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def describe(self) -> str:
        """A short label: ``hevc qp 28 per-channel mosaic/8``, ``int8 per-tensor``, ``raw float16``."""
        if self.storage == "raw":
            return f"raw {self.stored_dtype or self.dtype}"
        text = f"{self.storage}"
        if self.storage == "hevc":
            text += " lossless" if self.hevc.lossless else f" qp {self.hevc.qp}"
        text += f" {self.granularity}"
        if self.scheme != "symmetric-int8":
            text += " affine"
        if self.storage == "hevc" and not self.layout.is_default:
            text += f" {self.layout.describe()}"
        return text


@dataclass(frozen=True)
class EncodePlan:
    tensors: list[TensorPlan]
    notices: list[Notice] = field(default_factory=list)
    record: PlanRecord | None = None  # how the plan was chosen (budgeted encodes), written into the header

    def count(self, storage: str) -> int:
        return sum(1 for t in self.tensors if t.storage == storage)


def storage_kind(name: str, tensor: torch.Tensor, config: EncodeConfig) -> str:
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


def plan_tensor(name: str, tensor: torch.Tensor, config: EncodeConfig) -> TensorPlan:
    """The plan of one tensor under ``config`` (runs the granularity guard for quantized tensors)."""
    dtype = from_torch(tensor.dtype)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has dtype {tensor.dtype}, which weightcodec cannot store")
    shape = tuple(tensor.shape)
    kind = storage_kind(name, tensor, config)
    if kind == "raw":
        return TensorPlan(name, "raw", dtype.name, shape)
    requested = config.granularity_for(name)
    threshold = config.quant.matrix_guard_db if tensor.ndim == 2 else config.quant.guard_db
    # the tensor itself: the guard reads it in row chunks (no float32 copy of the whole tensor)
    granularity, figure = choose_granularity(tensor.detach(), requested, threshold_db=threshold)
    return TensorPlan(
        name, kind, dtype.name, shape, granularity=granularity,
        guard_db=figure if math.isfinite(figure) else None, guard_threshold_db=threshold,
        guard_switched=requested == "auto" and granularity == "per-channel",
        hevc=config.hevc_for(name) if kind == "hevc" else None,
    )


def plan_encode(state_dict: Mapping[str, torch.Tensor], config: EncodeConfig) -> EncodePlan:
    """Plan every tensor of ``state_dict`` and collect what the user should be told about the plan.

    Raises:
        ConfigError: a per-layer pattern (``layer_qp``, ``layer_granularity``) matches no tensor.
    """
    check_patterns(list(state_dict), config)
    tensors = [plan_tensor(name, tensor, config) for name, tensor in state_dict.items()]
    notices = guard_notices(tensors)
    coded = {t.name for t in tensors if t.storage == "hevc"}
    idle = [pattern for pattern, _ in config.layer_qp if not any(fnmatch.fnmatchcase(n, pattern) for n in coded)]
    if idle:
        notices.append(Notice("warning", f"--layer-qp pattern(s) {', '.join(map(repr, idle))} match no HEVC-coded "
                                         "tensor: a QP only applies to coded tensors (see `wcodec info` after encoding)"))
    quantized = {t.name for t in tensors if t.storage != "raw"}
    idle = [p for p, _ in config.layer_granularity if not any(fnmatch.fnmatchcase(n, p) for n in quantized)]
    if idle:
        notices.append(Notice("warning", f"--layer-granularity pattern(s) {', '.join(map(repr, idle))} match no "
                                         "quantized tensor: biases, norms and small tensors are stored exactly"))
    return EncodePlan(tensors, notices)


def check_patterns(names: list[str], config: EncodeConfig) -> None:
    """Every per-layer pattern must match at least one tensor name (a typo should not pass silently)."""
    for option, pairs in (("--layer-qp", config.layer_qp), ("--layer-granularity", config.layer_granularity)):
        for pattern, _ in pairs:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
                    f"; tensor names look like {', '.join(map(repr, names[:3]))} (`wcodec info` lists them after an encode)"
                raise ConfigError(f"{option} pattern {pattern!r} matches no tensor of the model{hint}")


def guard_notices(tensors: list[TensorPlan]) -> list[Notice]:
    """A note for layers the guard moved to per-channel, a warning for per-tensor layers it distrusts."""
    notices = []
    switched = [t for t in tensors if t.guard_switched]
    if switched:
        first = min(switched, key=lambda t: t.guard_db)
        notices.append(Notice(
            "note",
            f"{len(switched)} layer(s) switched to per-channel int8 because per-tensor int8 left the median "
            f"channel under the guard threshold (e.g. {first.name}: {first.guard_db:.1f} dB < "
            f"{first.guard_threshold_db:g} dB)",
            tuple(t.name for t in switched)))
    risky = [t for t in tensors if t.granularity == "per-tensor" and t.guard_db is not None
             and t.guard_db < t.guard_threshold_db]
    risky.sort(key=lambda t: t.guard_db)  # worst first
    if risky:
        names = ", ".join(f"{t.name} ({t.guard_db:.1f} dB)" for t in risky[:5])
        more = f" and {len(risky) - 5} more" if len(risky) > 5 else ""
        notices.append(Notice(
            "warning",
            f"per-tensor int8 is poor for {len(risky)} layer(s): {names}{more}. The model may lose much "
            "accuracy; re-run with --granularity auto (or per-channel, or --layer-granularity "
            "'NAME=per-channel').",
            tuple(t.name for t in risky)))
    return notices


__all__ = ["EncodePlan", "PlanRecord", "STORAGE_KINDS", "TensorPlan", "check_patterns", "guard_notices", "plan_encode", "plan_tensor",
           "storage_kind"]
