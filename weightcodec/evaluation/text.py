"""Scoring Transformers: perplexity of a causal LM and sentence-embedding cosine of an encoder.

The registry (:mod:`.zoo`) names two such models, ``gpt2-tiny`` (metric ``"perplexity"``, on the
Jane Austen test split) and ``all-minilm-l6-v2`` (metric ``"cosine"``, on 200 fixed test-split
sentences); :class:`~weightcodec.evaluation.runner.Evaluator` dispatches on the metric and keeps
the :class:`TextData` built here. The corpus, tokenisation, perplexity and pooling are
:mod:`.lm`'s; this module adapts them to the Evaluator's ``METRICS[metric](model, batches)``
convention and fits a (decoded) state_dict into a Hugging Face model whose tied weights (an LM
head that is the token embedding) the safetensors file does not repeat.

Nothing is downloaded: models load with ``local_files_only=True``. Needs the ``transformers``
extra (``pip install 'weightcodec[transformers,data,minilm]'``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import nn

from ..errors import ModelLoadError

#: Data sets of text models (the Evaluator builds them from the model's own tokenizer).
TEXT_DATASETS = ("austen-test", "austen-sentences")
TEXT_METRICS = ("perplexity", "cosine")


class Perplexity(TypedDict):
    perplexity: float
    tokens: int


class Cosine(TypedDict):
    cosine: float  # mean over the sentences
    worst: float
    n: int


@dataclass
class TextData:
    """What a text metric scores on: token ids (perplexity) or sentences and reference embeddings."""

    tokenizer: Any
    token_ids: torch.Tensor | None = None
    sentences: list[str] | None = None
    reference: torch.Tensor | None = None
    limit_tokens: int | None = None

    @property
    def dataset(self) -> list:  # for progress totals, as a DataLoader's
        return list(self.sentences) if self.sentences is not None else [None] * int(self.token_ids.numel())


def load_text_model(name: str, folder: str | Path | None = None) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a registered text model, offline, float32, eval mode."""
    from . import lm

    if name == "gpt2-tiny":
        return lm.load_gpt2_tiny(folder)
    if name == "all-minilm-l6-v2":
        return lm.load_minilm(folder)
    raise ModelLoadError(f"no text model named {name!r}")


def text_model_folder(name: str) -> Path:
    """The folder (config.json + model.safetensors ...) the registered text model loads from."""
    from . import lm

    if name == "gpt2-tiny":
        return lm.default_gpt2_tiny_dir()
    return lm.find_minilm()


def make_text_data(dataset: str, model: nn.Module, tokenizer: Any, *, limit: int | None = None) -> TextData:
    """Build the data of ``dataset`` for ``model`` (``limit``: tokens for perplexity, sentences for cosine)."""
    from . import lm

    if dataset == "austen-test":
        return TextData(tokenizer, token_ids=lm.split_token_ids(tokenizer, "test"), limit_tokens=limit)
    sentences = lm.reference_sentences()
    if limit is not None:
        sentences = sentences[:limit]
    return TextData(tokenizer, sentences=sentences, reference=lm.sentence_embeddings(model, tokenizer, sentences))


def perplexity_metric(model: nn.Module, data: TextData, *, progress=None) -> Perplexity:  # noqa: ARG001
    """Perplexity on the token ids (disjoint 256-token windows, :func:`.lm.causal_lm_nll`)."""
    from . import lm

    result = lm.causal_lm_nll(model, data.token_ids, limit_tokens=data.limit_tokens)
    return Perplexity(perplexity=result.perplexity, tokens=result.tokens)


def cosine_metric(model: nn.Module, data: TextData, *, progress=None) -> Cosine:  # noqa: ARG001
    """Mean and worst cosine of the model's sentence embeddings to the reference embeddings."""
    from . import lm

    result = lm.cosine_to_reference(model, data.tokenizer, data.reference, data.sentences)
    return Cosine(cosine=result["mean"], worst=result["worst"], n=result["n"])


def complete_tied(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` plus the model's tied entries it omits (``lm_head.weight`` when it is the
    token embedding): a key missing from ``state_dict`` is filled from a present key whose
    parameter in ``model`` is the same tensor."""
    own = model.state_dict(keep_vars=True)
    out = dict(state_dict)
    by_storage: dict[int, str] = {}
    for key, tensor in own.items():
        if key in out and tensor.numel():
            by_storage.setdefault(tensor.data_ptr(), key)
    for key, tensor in own.items():
        if key not in out and tensor.numel() and tensor.data_ptr() in by_storage:
            out[key] = out[by_storage[tensor.data_ptr()]]
    return out


def fit_text_model(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, description: str) -> nn.Module:
    """A copy of ``model`` with ``state_dict`` loaded (tied entries completed), in eval mode.

    Raises:
        ModelLoadError: keys or shapes do not match.
    """
    fitted = copy.deepcopy(model)
    state = complete_tied(fitted, state_dict)
    # buffers the model keeps out of its state_dict (e.g. BERT's position_ids in recent transformers)
    # may still be in an older checkpoint: they are recomputed by the model, not loaded
    own = fitted.state_dict()
    state = {k: v for k, v in state.items() if k in own or k not in dict(fitted.named_buffers())}
    try:
        fitted.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(f"state_dict does not fit model {description}: {str(error).strip()[:300]}") from error
    return fitted.eval()


__all__ = ["TEXT_DATASETS", "TEXT_METRICS", "Cosine", "Perplexity", "TextData", "complete_tied", "cosine_metric",
           "fit_text_model", "load_text_model", "make_text_data", "perplexity_metric", "text_model_folder"]
