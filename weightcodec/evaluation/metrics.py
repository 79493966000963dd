"""Scoring a model over an evaluation ``DataLoader``: the metrics a model entry can name.

:data:`METRICS` maps a :class:`~weightcodec.evaluation.zoo.ModelSpec`'s ``metric`` to the function
that computes it; ``"top1"`` (classifiers: top-1 and top-5 accuracy) is :func:`evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypedDict

import torch
from torch import nn

from ..errors import DatasetError

#: ``progress(done, total)``: samples evaluated so far, and the total (None if unknown).
ProgressCallback = Callable[[int, "int | None"], None]


class Accuracy(TypedDict):
    """Result of :func:`evaluate`: top-1 and top-5 accuracy in percent, and the sample count."""

    top1: float
    top5: float
    n: int


def _dataset_size(loader: Iterable) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    progress: ProgressCallback | None = None,
) -> Accuracy:
    """Return top-1 / top-5 accuracy (percent) of ``model`` over every batch of ``loader``.

    The model runs in eval mode under ``torch.no_grad()`` (its previous training mode is restored
    afterwards); inputs are moved to the device of its parameters. With fewer than 5 classes,
    "top-5" counts all classes (and is therefore 100 %). Thread count is left to the caller
    (``torch.set_num_threads``).

    Args:
        model: classifier returning logits of shape ``(batch, num_classes)``.
        loader: iterable of ``(inputs, labels)`` batches, e.g. from :mod:`.datasets`.
        progress: optional callback ``progress(done, total)`` called after each batch.

    Raises:
        DatasetError: if the loader yields no samples or the model output is not ``(batch, classes)``.
    """
    hits_top1, hits_top5 = _hits(model, loader, progress)
    done = int(hits_top1.numel())
    return Accuracy(top1=100.0 * int(hits_top1.sum()) / done, top5=100.0 * int(hits_top5.sum()) / done, n=done)


def top1_hits(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
              progress: ProgressCallback | None = None) -> torch.Tensor:
    """Per-sample top-1 hits (a bool tensor in the loader's order): what :func:`evaluate` averages.

    A budget search uses them to compare two models image by image (the paired standard error of
    an accuracy drop, :mod:`weightcodec.allocation.budget`). Raises as :func:`evaluate` does.
    """
    return _hits(model, loader, progress)[0]


def _hits(model: nn.Module, loader, progress) -> tuple[torch.Tensor, torch.Tensor]:
    total = _dataset_size(loader)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    top1: list[torch.Tensor] = []
    top5: list[torch.Tensor] = []
    done = 0
    try:
        with torch.no_grad():
            for inputs, labels in loader:
                logits = model(inputs.to(device))
                labels = torch.as_tensor(labels).to(logits.device)
                if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
                    raise DatasetError(
                        f"model output has shape {tuple(logits.shape)}; expected "
                        f"({labels.shape[0]}, num_classes) logits"
                    )
                k = min(5, logits.shape[1])
                top_classes = logits.topk(k, dim=1).indices
                hits = top_classes == labels.unsqueeze(1)
                top1.append(hits[:, 0].cpu())
                top5.append(hits.any(dim=1).cpu())
                done += labels.shape[0]
                if progress is not None:
                    progress(done, total)
    finally:
        model.train(was_training)
    if done == 0:
        raise DatasetError("the evaluation loader yielded no samples")
    return torch.cat(top1), torch.cat(top5)


def _perplexity(model, data, *, progress=None):
    from .text import perplexity_metric

    return perplexity_metric(model, data, progress=progress)


def _cosine(model, data, *, progress=None):
    from .text import cosine_metric

    return cosine_metric(model, data, progress=progress)


#: ``metric name -> function(model, loader, *, progress) -> result dict``, dispatched on by the Evaluator.
#: ``"perplexity"`` (lower is better) and ``"cosine"`` (sentence embeddings) score text models on a
#: :class:`~weightcodec.evaluation.text.TextData` instead of a loader (:mod:`.text`).
METRICS: dict[str, Callable[..., dict]] = {"top1": evaluate, "perplexity": _perplexity, "cosine": _cosine}
