"""Model-kind-aware defaults: how a Transformer's tensors are quantized and at which QP, without data.

One QP and per-tensor int8 for every matrix (the paper's method, still the default for CNNs and
MLPs) breaks Transformers: their matrices have outlier rows and columns, and their roles differ in
sensitivity by an order of magnitude (docs/RESULTS.md, Transformer section). When a model looks
like a Transformer (:func:`looks_like_transformer`: attention projections among its tensor names),
the default plan instead gives every 2-D weight a *role* from its name and shape
(:func:`tensor_role`) and, per role:

``embedding`` (token embeddings: one row per vocabulary entry) and ``head`` (output heads:
``lm_head.weight``..., and a token embedding that the head is tied to, seen as an alias or, in a
Hugging Face folder that does not store the tied head, from ``config.json``)
    one scale per column (per-channel along axis 1: one per hidden dimension);
``position`` (learned position embeddings) and ``layer`` (attention and MLP projections, poolers...)
    one scale per row and one per column (:mod:`weightcodec.colscales`).

The QP of each HEVC-coded matrix comes from a *fidelity target*: the predicted signal-to-noise
ratio of its int8 values after HEVC, ``P - N(QP)``, where ``P`` is the power of the int8 values
(measured on the tensor) and ``N(QP)`` the power of the HEVC error, which depends on the QP alone
(:data:`HEVC_NOISE_DB`, measured once for these encoder settings on Gaussian, Laplacian and
Student-t matrices: within 1 dB of each other from QP 12 to 33). The QP is the largest whose
predicted SNR meets the role's target, so a heavy-tailed matrix (small ``P``) gets a lower QP than
a Gaussian one. Tensors that are not 2-D weights (norms, biases, buffers) stay exact, as always.

Nothing here needs data; the targets were chosen on all-MiniLM-L6-v2 and the trained gpt2-tiny
(``python -m tools.transformer_study``; docs/RESULTS.md): layers 27 dB, the lowest target that keeps
MiniLM's mean embedding cosine >= 0.99 (its projections are the sensitive part); input embeddings
19 dB (MiniLM's word embeddings, half its weights, lose little); output heads 30 dB (gpt2-tiny's
tied embedding is most of its perplexity loss, and more so the better it is trained: on the
converged checkpoint, with layers at 27 dB and the head laid out per row (one scale per token), a
head at 24 / 28 / 30 dB gives +1.66 / +0.40 / +0.20 % perplexity; raising every target by 4 dB
instead costs 12 % more bytes for less: docs/RESULTS.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

POLICIES = ("auto", "classic", "transformer")
ROLES = ("embedding", "head", "position", "layer")

#: Attention projections, as named by transformers / timm / fairseq / GPT-2 / Llama / BERT / ViT...
ATTENTION_NAME = re.compile(
    r"(^|\.)(attn|attention|self_attn|self_attention|cross_attn|encoder_attn)\.|"
    r"(^|\.)(q_proj|k_proj|v_proj|o_proj|qkv_proj|query|key|value|qkv|c_attn|Wqkv|in_proj|out_proj)(\.|_weight$)"
)
POSITION_NAME = re.compile(r"(wpe|position_embeddings?|pos_embed(ding)?s?|embed_positions|positional_embedding)")
EMBEDDING_NAME = re.compile(r"(wte|word_embeddings|embed_tokens|tok_embeddings|token_embedding|embeddings?\.weight$"
                            r"|(^|\.)shared\.weight$)")
#: Output heads: the matrix that turns the last hidden state into logits (one row per token).
HEAD_NAME = re.compile(r"(^|\.)(lm_head|embed_out)\.weight$|^output\.weight$")

#: Power (dB, int8 units squared) of the error libx265 adds to int8 samples at each QP with the
#: weight settings (docs/ENCODER.md): measured on 384x1536 Gaussian / Laplacian / Student-t(3)
#: matrices quantized per row (``tools.transformer_study --noise-table``), mean of the three.
#: Linearly interpolated between the measured QPs.
HEVC_NOISE_DB = {
    0: -29.1, 3: -18.2, 6: -9.8, 9: -5.9, 12: -3.2, 15: 0.0, 18: 2.9, 21: 6.2, 24: 9.2, 27: 12.3, 30: 15.5,
    33: 18.8, 36: 21.7, 39: 25.0, 42: 28.6, 45: 31.5, 48: 34.5, 51: 37.5,
}


def hevc_noise_db(qp: int) -> float:
    """:data:`HEVC_NOISE_DB` at ``qp`` (linear between the measured points)."""
    points = sorted(HEVC_NOISE_DB)
    return float(np.interp(qp, points, [HEVC_NOISE_DB[p] for p in points]))


@dataclass(frozen=True, kw_only=True)
class TransformerPolicy:
    """The Transformer defaults (see the module doc). ``qp`` fixes one QP for every coded matrix
    instead of the fidelity targets (``wcodec encode --qp N`` on a Transformer)."""

    layer_target_db: float = 27.0
    position_target_db: float = 24.0
    embedding_target_db: float = 19.0
    head_target_db: float = 30.0
    qp_range: tuple[int, int] = (4, 40)
    qp: int | None = None

    def __post_init__(self) -> None:
        for name in ("layer_target_db", "position_target_db", "embedding_target_db", "head_target_db"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 60):
                raise ConfigError(f"{name} must be a number of dB from 0 to 60, got {value!r}")
        low, high = self.qp_range
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= 51):
            raise ConfigError(f"qp_range must be two QPs from 0 to 51 in order, got {self.qp_range!r}")
        if self.qp is not None and not (isinstance(self.qp, int) and not isinstance(self.qp, bool)
                                        and 0 <= self.qp <= 51):
            raise ConfigError(f"qp must be None or an integer from 0 to 51, got {self.qp!r}")

    def target_db(self, role: str) -> float:
        return {"embedding": self.embedding_target_db, "head": self.head_target_db,
                "position": self.position_target_db}.get(role, self.layer_target_db)

    def shifted(self, db: float) -> "TransformerPolicy":
        """Every target ``db`` dB higher (finer, larger) or lower (coarser, smaller)."""
        return TransformerPolicy(layer_target_db=self.layer_target_db + db, position_target_db=self.position_target_db + db,
                                 embedding_target_db=self.embedding_target_db + db,
                                 head_target_db=self.head_target_db + db, qp_range=self.qp_range, qp=self.qp)


def looks_like_transformer(names: Iterable[str]) -> bool:
    """True when some tensor name is an attention projection (``...attn.c_attn.weight``,
    ``...self_attn.q_proj.weight``, ``...attention.self.query.weight``...)."""
    return any(ATTENTION_NAME.search(name) for name in names if name.endswith("weight"))


def tensor_role(name: str, shape: tuple[int, ...], *, head: bool = False) -> str:
    """``"embedding"``, ``"head"``, ``"position"`` or ``"layer"`` for a 2-D weight of a Transformer.

    ``head``: the tensor is also the model's output head (a token embedding an LM head is tied to,
    found by :func:`weightcodec.plan.plan_encode` from the aliases), so its error reaches the logits
    directly, not through the layers."""
    if POSITION_NAME.search(name):
        return "position"
    if len(shape) == 2 and (HEAD_NAME.search(name) or (head and EMBEDDING_NAME.search(name))):
        return "head"
    if EMBEDDING_NAME.search(name) and len(shape) == 2:
        return "embedding"
    return "layer"


#: ``config.json`` architectures that end in a language-modelling head (logits over the vocabulary).
LM_HEAD_ARCHITECTURE = re.compile(r"(LMHead|ForCausalLM|ForMaskedLM|ForConditionalGeneration|ForPreTraining)")


def config_heads(config: object, names: Iterable[str]) -> set[str]:
    """Token embeddings that a Hugging Face ``config.json`` (parsed) says are the output head too:
    an architecture with a language-modelling head, ``tie_word_embeddings`` not false, and no head
    tensor among ``names`` (``save_pretrained`` drops a tied head). Anything unexpected: none."""
    if not isinstance(config, Mapping):
        return set()
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not any(isinstance(a, str) and LM_HEAD_ARCHITECTURE.search(a)
                                                      for a in architectures):
        return set()
    names = list(names)
    if config.get("tie_word_embeddings", True) is False or any(HEAD_NAME.search(n) for n in names):
        return set()
    return {n for n in names if EMBEDDING_NAME.search(n) and not POSITION_NAME.search(n)}


def head_targets(aliases: Mapping[str, tuple[str, bool]]) -> set[str]:
    """Tensors that an output head (``lm_head.weight``...) is stored as an alias of: tied embeddings."""
    return {target for name, (target, _) in aliases.items() if HEAD_NAME.search(name)}


@dataclass(frozen=True)
class Layout:
    """How one matrix is quantized: per-channel along ``axis``, with or without column scales."""

    axis: int
    col_scales: bool


def role_layout(role: str) -> Layout:
    """Input embeddings: one scale per column (a feature's range is shared by every token); an output
    head (or the token embedding it is tied to): one scale per row, i.e. per token, whose logit it
    computes (on the converged gpt2-tiny, per-column scales there cost +0.55 % perplexity and
    per-row +0.20 % at the same 30 dB target and bytes); projections: one per row and one per column."""
    if role == "embedding":
        return Layout(axis=1, col_scales=False)
    if role == "head":
        return Layout(axis=0, col_scales=False)
    return Layout(axis=0, col_scales=True)


def signal_db(values: np.ndarray) -> float:
    """Power of int8 values in dB (int8 units squared); -inf for all zeros.

    int8 values: their squares summed exactly in int64, a million at a time (the float64 mean
    of the whole tensor gives the same number, since every partial sum is an integer below 2**53,
    but costs 16 bytes per value)."""
    v = np.asarray(values)
    if v.dtype == np.int8:
        flat = v.reshape(-1)
        total = 0
        for i in range(0, flat.size, 1 << 20):
            chunk = flat[i:i + (1 << 20)].astype(np.int32)
            total += int(np.dot(chunk, chunk))  # <= 2**20 * 127**2 < 2**31
        power = total / flat.size if flat.size else 0.0
    else:
        v = np.asarray(v, dtype=np.float64)
        power = float(np.mean(v * v)) if v.size else 0.0
    return 10.0 * math.log10(power) if power > 0 else float("-inf")


def qp_for_target(signal: float, target_db: float, qp_range: tuple[int, int]) -> int:
    """The largest QP in ``qp_range`` whose predicted SNR ``signal - hevc_noise_db(QP)`` is at least
    ``target_db`` (the smallest QP of the range if none is)."""
    low, high = qp_range
    if not math.isfinite(signal):
        return high
    best = low
    for qp in range(low, high + 1):
        if signal - hevc_noise_db(qp) >= target_db:
            best = qp
    return best


__all__ = ["HEAD_NAME", "HEVC_NOISE_DB", "POLICIES", "ROLES", "Layout", "TransformerPolicy", "config_heads", "head_targets",
           "hevc_noise_db", "looks_like_transformer", "qp_for_target", "role_layout", "signal_db", "tensor_role"]
