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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .config import EncodeConfig, HevcSettings, _last_match
from .dtypes import dtype_of
from .errors import ConfigError, ModelLoadError
from .header import PlanRecord
from .layouts import ROWS, MatrixLayout
from .policy import head_targets, hevc_noise_db, looks_like_transformer, qp_for_target, role_layout, signal_db, tensor_role
from .quant import choose_granularity, quantize
from .report import Notice

if TYPE_CHECKING:
    import torch

STORAGE_KINDS = ("raw", "int8", "hevc", "alias")
#: Tensors with equal contents (but their own storage) are stored once from this many bytes up;
#: tensors sharing one storage (tied weights) always are.
MIN_DEDUP_BYTES = 1024


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
    role: str | None = None  # Transformer policy: "embedding" | "head" | "position" | "layer" (weightcodec.policy)
    predicted_snr_db: float | None = None  # Transformer policy: predicted int8 SNR after HEVC at the chosen QP
    alias_of: str | None = None  # for alias: the earlier tensor holding the same values
    tied: bool = False  # for alias: the two shared one storage in the source (decoded as one tensor again)
    axis: int = 0  # the channel axis of per-channel scales
    col_scales: bool = False  # per-channel (axis 0) rows plus one scale per column (weightcodec.colscales)
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

    Quantized: float64/32/16 and bfloat16 tensors named ``*weight`` with at least two dimensions (the
    weights of Linear, Conv, Embedding and attention projections) and at least ``min_quantized_elements``
    elements; other dtypes (integers, float8 and float4 formats of already-quantized checkpoints) are
    always stored exactly. Biases, norm parameters, buffers and small tensors stay raw. Of the quantized, 2-D
    ones with at least ``min_coded_elements`` elements are HEVC-coded (conv weights too, reshaped
    to ``(out, in*k*k)``, with ``code_conv``); the rest are stored as int8.
    """
    dtype = dtype_of(tensor)
    if not (dtype is not None and dtype.quantizable and tensor.ndim >= 2 and name.endswith("weight")):
        return "raw"
    if numel(tensor) < config.min_quantized_elements:
        return "raw"
    codable = tensor.ndim == 2 or config.code_conv
    if config.code_matrices and codable and numel(tensor) >= config.min_coded_elements:
        return "hevc"
    return "int8"


def numel(tensor) -> int:
    """Elements of a torch tensor or numpy array."""
    return tensor.size if isinstance(tensor, np.ndarray) else tensor.numel()


def alias_plan(name: str, tensor: torch.Tensor, target: str, tied: bool) -> TensorPlan:
    dtype = dtype_of(tensor)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has dtype {tensor.dtype}, which weightcodec cannot store")
    return TensorPlan(name, "alias", dtype.name, tuple(tensor.shape), alias_of=target, tied=tied)


def plan_tensor(name: str, tensor: torch.Tensor, config: EncodeConfig) -> TensorPlan:
    """The plan of one tensor under ``config`` (runs the granularity guard for quantized tensors)."""
    dtype = dtype_of(tensor)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has dtype {tensor.dtype}, which weightcodec cannot store")
    shape = tuple(tensor.shape)
    kind = storage_kind(name, tensor, config)
    if kind == "raw":
        return TensorPlan(name, "raw", dtype.name, shape)
    requested = config.granularity_for(name)
    threshold = config.quant.matrix_guard_db if tensor.ndim == 2 else config.quant.guard_db
    # the tensor itself: the guard reads it in row chunks (no float32 copy of the whole tensor)
    granularity, figure = choose_granularity(tensor, requested, threshold_db=threshold)
    return TensorPlan(
        name, kind, dtype.name, shape, granularity=granularity,
        guard_db=figure if math.isfinite(figure) else None, guard_threshold_db=threshold,
        guard_switched=requested == "auto" and granularity == "per-channel",
        hevc=config.hevc_for(name) if kind == "hevc" else None,
    )


def find_aliases(state_dict: Mapping[str, torch.Tensor], *,
                 min_dedup_bytes: int = MIN_DEDUP_BYTES,
                 after_read: Callable[[object], object] | None = None) -> dict[str, tuple[str, bool]]:
    """Tensors to store once: ``{name: (earlier name, tied)}``; every target is a tensor that is not
    itself an alias. ``after_read(tensor)`` is called once each compared tensor has been hashed.

    ``tied``: the two are the same view of one storage (tied weights of a ``torch.save``'d
    state_dict, e.g. an LM head that is the token embedding). Otherwise their dtype, shape and bytes
    are equal (a safetensors file cannot share storage, so a tied head saved twice is found this
    way); only tensors of at least ``min_dedup_bytes`` bytes are compared, and a tensor others are
    tied to never becomes an alias itself (its sharing is kept).
    """
    import hashlib

    aliases: dict[str, tuple[str, bool]] = {}
    first_view: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        if numel(tensor) == 0 or _is_meta(tensor):
            continue
        view = _view_key(tensor)
        if view in first_view:
            aliases[name] = (first_view[view], True)
        else:
            first_view[view] = name
    tied_targets = {target for target, _ in aliases.values()}
    seen: dict[tuple, list[str]] = {}  # (dtype, shape, digest) -> earlier distinct tensors
    for name, tensor in state_dict.items():
        if name in aliases or numel(tensor) == 0 or _is_meta(tensor):
            continue
        dtype = dtype_of(tensor)
        if dtype is None or numel(tensor) * dtype.itemsize < min_dedup_bytes:
            continue
        flat = _bytes_of(tensor)
        digest = hashlib.blake2b(flat, digest_size=16).digest()
        if after_read is not None:
            after_read(tensor)
        earlier = seen.setdefault((dtype.name, tuple(tensor.shape), digest), [])
        match = None if name in tied_targets else next(
            (e for e in earlier if np.array_equal(_bytes_of(state_dict[e]), flat)), None)
        if match is None:
            earlier.append(name)
        else:
            aliases[name] = (match, False)
    return aliases


def _bytes_of(tensor) -> np.ndarray:
    """The tensor's bytes as a flat uint8 array (a view where the layout allows)."""
    from .storage.base import as_numpy

    data = as_numpy(tensor)
    return data.view("u1").reshape(-1) if data.dtype.kind != "c" else np.frombuffer(data.tobytes(), "u1")


def _is_meta(tensor) -> bool:
    return not isinstance(tensor, np.ndarray) and tensor.device.type == "meta"


def _view_key(tensor) -> tuple:
    """What makes two entries the same view of one storage (tied weights)."""
    if isinstance(tensor, np.ndarray):
        return ("numpy", tensor.__array_interface__["data"][0], tensor.strides, tensor.shape, tensor.dtype.str)
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.stride()),
            tuple(tensor.shape), tensor.dtype)


def uses_transformer_policy(names, config: EncodeConfig) -> bool:
    """Whether ``config`` plans these tensors with the Transformer policy (:mod:`weightcodec.policy`)."""
    return config.policy == "transformer" or (config.policy == "auto" and looks_like_transformer(names))


def plan_transformer_tensor(name: str, tensor: torch.Tensor, config: EncodeConfig, *, head: bool = False) -> TensorPlan:
    """The Transformer policy's plan of one tensor: role layout, and a QP from the role's fidelity
    target (or the fixed ``config.transformer.qp``, or a ``layer_qp`` pattern). Tensors that are
    not 2-D quantized weights, and those given a granularity explicitly, are planned as usual."""
    base = plan_tensor(name, tensor, config)
    if base.storage == "raw" or tensor.ndim != 2 or config.granularity_for(name) != "auto":
        return base
    policy = config.transformer
    role = tensor_role(name, tuple(tensor.shape), head=head)
    layout = role_layout(role)
    # read in row chunks: no float32 (or float64) copy of the whole tensor
    if layout.col_scales:
        from .colscales import quantize_with_col_scales

        values = quantize_with_col_scales(tensor).values
    else:
        values = quantize(tensor, "per-channel", axis=layout.axis).values
    hevc = None
    snr = None
    signal = signal_db(values)
    del values
    if base.storage == "hevc":
        explicit = _last_match(config.layer_qp, name, None)
        if explicit is not None:
            qp = explicit
        elif policy.qp is not None:
            qp = policy.qp
        else:
            qp = qp_for_target(signal, policy.target_db(role), policy.qp_range)
        hevc = HevcSettings(**{**config.hevc.__dict__, "qp": qp})
        snr = signal - hevc_noise_db(qp)
    return TensorPlan(name, base.storage, base.dtype, base.shape, granularity="per-channel", hevc=hevc,
                      axis=layout.axis, col_scales=layout.col_scales, role=role,
                      predicted_snr_db=None if hevc is None or hevc.lossless else round(snr, 2))


def plan_encode(state_dict: Mapping[str, torch.Tensor], config: EncodeConfig, *,
                heads: Iterable[str] = (), after_read: Callable[[object], object] | None = None) -> EncodePlan:
    """Plan every tensor of ``state_dict`` and collect what the user should be told about the plan.

    Tensors equal to an earlier one (tied weights; see :func:`find_aliases`) become ``alias``
    entries that store nothing. ``heads``: tensors known to be the model's output head too (a tied
    head not in ``state_dict``: :attr:`weightcodec.modelio.LoadedModel.heads`); a head stored as an
    alias is found here. ``after_read(tensor)`` is called once a tensor has been read for planning
    (:func:`weightcodec.pages.release` gives a memory-mapped input's pages back then).

    Raises:
        ConfigError: a per-layer pattern (``layer_qp``, ``layer_granularity``) matches no tensor.
    """
    check_patterns(list(state_dict), config)
    aliases = find_aliases(state_dict, after_read=after_read)
    transformer = uses_transformer_policy(state_dict, config)
    heads = (head_targets(aliases) | set(heads)) if transformer else set()

    def planner(name: str, tensor: torch.Tensor) -> TensorPlan:
        if transformer:
            planned = plan_transformer_tensor(name, tensor, config, head=name in heads)
        else:
            planned = plan_tensor(name, tensor, config)
        if after_read is not None:
            after_read(tensor)
        return planned

    tensors = [alias_plan(name, tensor, *aliases[name]) if name in aliases else planner(name, tensor)
               for name, tensor in state_dict.items()]
    notices = guard_notices(tensors)
    if transformer:
        notices.insert(0, transformer_notice(tensors, config))
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


def transformer_notice(tensors: list[TensorPlan], config: EncodeConfig) -> Notice:
    coded = [t for t in tensors if t.role is not None and t.hevc is not None]
    how = (f"every coded matrix at QP {config.transformer.qp}" if config.transformer.qp is not None else
           f"QPs from fidelity targets (layers {config.transformer.layer_target_db:g} dB, embeddings "
           f"{config.transformer.embedding_target_db:g} dB, output heads {config.transformer.head_target_db:g} dB)")
    qps = sorted({t.hevc.qp for t in coded})
    span = f": QP {qps[0]}-{qps[-1]}" if len(qps) > 1 else (f": QP {qps[0]}" if qps else "")
    why = "" if config.policy == "transformer" else " (attention weights found; --policy classic for one QP and per-tensor scales)"
    return Notice("note", f"Transformer policy{why}: per-row and per-column scales for projections, per-column "
                          f"for embeddings, {how}{span}", tuple(t.name for t in coded))


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


__all__ = ["EncodePlan", "PlanRecord", "STORAGE_KINDS", "TensorPlan", "alias_plan", "check_patterns", "find_aliases",
           "guard_notices", "plan_encode", "plan_tensor", "plan_transformer_tensor", "storage_kind",
           "uses_transformer_policy"]
