"""One model and its evaluation set, loaded once, scoring any state_dict of that model.

The sweep (``tools.sweep``), the studies and the benchmark (``bench.run``) all score models through
:class:`Evaluator`, so there is one scorer in the project; what a model name means (architecture,
weights, data set, metric) comes from the registry, :mod:`.zoo`. The evaluation batches are decoded
and preprocessed once and kept in memory when they fit a budget (ImageNet-val1000 at 224x224 is
about 600 MB), so scoring ten QPs costs ten forward passes, not ten rounds of PNG decoding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import DatasetError
from .datasets import DATASETS, make_loader
from .metrics import METRICS, Accuracy
from .models import PICKLE_SPEC, fit_state_dict
from .text import TEXT_METRICS, fit_text_model, load_text_model, make_text_data
from .zoo import build_model, get_model_spec

#: Evaluation batches are cached in memory up to this many bytes; larger sets are streamed.
DEFAULT_CACHE_BYTES = 4 * 1024**3

ProgressCallback = Callable[[int, int | None], None]


@dataclass
class Evaluator:
    """A reference (float) model plus its evaluation data; see :meth:`create`."""

    spec: str
    weights: Path | None
    model: nn.Module
    dataset: str
    preprocessing: str | None
    data_root: Path | None
    batches: object  # a list of cached batches, or the DataLoader itself
    num_samples: int
    metric: str = "top1"
    _reference: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        spec: str,
        *,
        weights: str | os.PathLike[str] | None = None,
        trust_pickle: bool = False,
        dataset: str | None = None,
        data_root: str | os.PathLike[str] | None = None,
        preprocessing: str | None = None,
        limit: int | None = None,
        assets_dir: str | os.PathLike[str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> "Evaluator":
        """Build the model named ``spec`` with ``weights`` and the loader of its evaluation set.

        Args:
            spec: a model name (see :mod:`.zoo`), or ``"pickle"`` for a pickled module in ``weights``.
            weights: weights file; default: the registry entry's.
            trust_pickle: required for ``spec == "pickle"``.
            dataset: ``"imagenet"``, ``"mnist"`` or ``"digits"``; default: the spec's own.
            data_root: dataset folder (an ImageNet-style folder, or the MNIST IDX folder);
                default: the shared assets.
            preprocessing: ImageNet preprocessing (``"torchvision"`` or ``"tf-inception"``).
            limit: evaluate on the first ``limit`` samples only.
            cache_bytes: keep the preprocessed batches in memory when they fit in this many bytes.

        Raises:
            EvaluationError: (its subclasses) unknown model, missing weights or data, bad data set;
            ModelLoadError: weights that are not a state_dict of the model.
        """
        entry = None if spec == PICKLE_SPEC else get_model_spec(spec)
        if entry is not None and entry.metric in TEXT_METRICS:
            return cls._create_text(entry, weights=weights, limit=limit)
        if weights is None and entry is not None:
            weights = entry.weights_path(assets_dir=assets_dir)
        model = build_model(spec, weights, trust_pickle=trust_pickle)
        if dataset is None:
            if entry is None:
                raise DatasetError(f"a pickled model has no default evaluation dataset: choose one of {DATASETS}")
            dataset = entry.dataset
            preprocessing = preprocessing or entry.preprocessing
        elif dataset == "imagenet" and preprocessing is None:
            preprocessing = "torchvision"
        loader = make_loader(dataset, root=data_root, assets_dir=assets_dir,
                             preprocessing=preprocessing, limit=limit)
        num_samples = len(loader.dataset)  # type: ignore[arg-type]
        batches: object = loader
        if num_samples:
            sample = loader.dataset[0][0]  # type: ignore[index]
            if sample.numel() * sample.element_size() * num_samples <= cache_bytes:
                batches = _CachingBatches(loader)
        return cls(spec=spec, weights=Path(weights) if weights is not None else None, model=model,
                   dataset=dataset, preprocessing=preprocessing,
                   data_root=Path(data_root) if data_root is not None else None,
                   batches=batches, num_samples=num_samples, metric="top1" if entry is None else entry.metric)

    @classmethod
    def _create_text(cls, entry, *, weights, limit) -> "Evaluator":
        """A text model (metric ``perplexity`` or ``cosine``): the model and tokenizer from its folder,
        the data from :mod:`.text` (``limit``: tokens for perplexity, sentences for cosine)."""
        folder = Path(weights) if weights is not None else entry.weights_path()
        model, tokenizer = load_text_model(entry.name, folder)
        data = make_text_data(entry.dataset, model, tokenizer, limit=limit)
        samples = len(data.sentences) if data.sentences is not None else int(data.token_ids.numel())
        return cls(spec=entry.name, weights=folder, model=model, dataset=entry.dataset, preprocessing=None,
                   data_root=None, batches=data, num_samples=samples, metric=entry.metric)

    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        """The float state_dict of the reference model (what gets encoded)."""
        if not self._reference:
            self._reference = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return self._reference

    def score(
        self,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Accuracy:
        """The model's metric (top-1/top-5 for classifiers) of the reference model, or of its
        architecture with ``state_dict`` loaded.

        Raises:
            ModelLoadError: if ``state_dict`` does not fit the model.
        """
        if state_dict is None:
            model = self.model
        elif self.metric in TEXT_METRICS:  # Hugging Face models: tied weights may be omitted
            model = fit_text_model(self.model, state_dict, description=self.spec)
        else:
            model = fit_state_dict(self.model, state_dict)
        return METRICS[self.metric](model, self.batches, progress=progress)  # type: ignore[arg-type]


class _CachingBatches:
    """Iterates a DataLoader once, keeping its batches; later passes replay them from memory."""

    def __init__(self, loader: object) -> None:
        self.loader = loader
        self.dataset = loader.dataset  # type: ignore[attr-defined]  # for progress totals
        self.cached: list | None = None

    def __iter__(self):
        if self.cached is not None:
            yield from self.cached
            return
        kept = []
        for batch in self.loader:  # type: ignore[attr-defined]
            kept.append(batch)
            yield batch
        self.cached = kept


__all__ = ["DEFAULT_CACHE_BYTES", "Evaluator"]
