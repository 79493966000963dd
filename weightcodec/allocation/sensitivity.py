"""How much a layer's coding error costs: the sensitivity models the allocation weighs options with.

Every model maps one tensor's real decoded error ``dW = W' - W`` (the option is coded and decoded,
nothing is modelled about the codec) to a predicted loss increase; predictions add over tensors.

:class:`FisherSensitivity` (calibration data and a model)
    The diagonal of the Fisher information of the model's own predictive distribution, estimated
    on calibration inputs with labels sampled from the model (``y ~ p(y|x)``; so no labels are
    needed and the estimate is unbiased for any micro-batch size, the score's mean being zero).
    The predicted increase of the KL divergence between the float and the coded model's outputs
    is ``0.5 * sum_i F_i dW_i**2`` (the second-order term; HAWQ and Fisher-weighted quantization
    use the same quantity). Buffers (BatchNorm running statistics) have no gradient: they get
    only options that the float16 guard admits (relative error < 2**-10 per element) and are
    predicted to cost nothing.
:class:`DataFreeSensitivity` (nothing but the weights)
    The mean over output channels of the relative squared error ``||dW_c||**2 / ||W_c||**2``: a
    channel's output error relative to its signal, assuming uncorrelated inputs, with every layer
    counted equally (relative errors of the layers of a deep network add up roughly equally to
    the output's). A stand-in when there is no data: its budget is a fixed table of relative
    error per point of accuracy (see :mod:`weightcodec.allocation.budget`), not a measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DatasetError

#: Largest relative error per element that the float16 guard accepts (half an ulp of float16 is
#: 2**-11 relative; anything larger means the value fell into float16's subnormal range).
FLOAT16_MAX_RELATIVE_ERROR = 2.0**-10


def float16_fits(values: np.ndarray) -> bool:
    """True when every element survives a float16 round trip to within 2**-10 relative error
    (no overflow to infinity, no underflow into subnormals or to zero)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return True
    if not np.all(np.isfinite(v)):
        return False
    with np.errstate(over="ignore"):
        back = v.astype(np.float16).astype(np.float64)
    if not np.all(np.isfinite(back)):
        return False
    magnitude = np.abs(v)
    nonzero = magnitude > 0
    return bool(np.all(np.abs(back - v)[nonzero] <= FLOAT16_MAX_RELATIVE_ERROR * magnitude[nonzero]))


class Sensitivity:
    """Base class: ``loss(name, original, decoded)`` is the predicted loss increase of one tensor."""

    method: str = "?"
    #: what the predicted loss is, for reports
    unit: str = ""

    def covers(self, name: str) -> bool:
        """Whether the model can price errors of ``name`` (otherwise only near-exact options are offered)."""
        return True

    def loss(self, name: str, original: np.ndarray, decoded: np.ndarray) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        return self.method


def relative_channel_error(original: np.ndarray, decoded: np.ndarray) -> float:
    """Mean over output channels (axis 0) of ``||dW_c||**2 / ||W_c||**2`` (whole tensor for 0-D/1-D)."""
    w = np.asarray(original, dtype=np.float64)
    d = np.asarray(decoded, dtype=np.float64) - w
    if w.ndim < 2:
        energy = float(np.sum(w * w))
        return float(np.sum(d * d)) / energy if energy > 0 else 0.0
    rows_w = w.reshape(w.shape[0], -1)
    rows_d = d.reshape(d.shape[0], -1)
    energy = np.sum(rows_w * rows_w, axis=1)
    error = np.sum(rows_d * rows_d, axis=1)
    live = energy > 0
    if not np.any(live):
        return 0.0
    return float(np.mean(error[live] / energy[live]))


@dataclass
class DataFreeSensitivity(Sensitivity):
    """Relative per-channel squared error, every layer weighted alike (see the module docstring)."""

    method: str = "data-free"
    unit: str = "relative squared error"

    def loss(self, name: str, original: np.ndarray, decoded: np.ndarray) -> float:
        return relative_channel_error(original, decoded)

    def describe(self) -> str:
        return "data-free: relative per-channel squared weight error, every layer alike"


@dataclass
class FisherSensitivity(Sensitivity):
    """Diagonal Fisher information per parameter (see the module docstring)."""

    fisher: dict[str, np.ndarray] = field(default_factory=dict)
    samples: int = 0
    method: str = "fisher"
    unit: str = "nats (predicted KL divergence)"

    def covers(self, name: str) -> bool:
        return name in self.fisher

    def loss(self, name: str, original: np.ndarray, decoded: np.ndarray) -> float:
        f = self.fisher.get(name)
        if f is None:
            return 0.0
        d = np.asarray(decoded, dtype=np.float32) - np.asarray(original, dtype=np.float32)
        return 0.5 * float(np.dot(f.reshape(-1).astype(np.float64), (d.reshape(-1).astype(np.float64)) ** 2))

    def describe(self) -> str:
        return f"fisher: diagonal Fisher information on {self.samples} calibration samples"

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        batches: Iterable,
        *,
        max_samples: int | None = None,
        micro_batch: int = 16,
        seed: int = 0,
        forward: Callable[[torch.nn.Module, object], torch.Tensor] | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> "FisherSensitivity":
        """Estimate the diagonal Fisher of ``model`` (in eval mode) on the inputs of ``batches``.

        ``batches`` yields ``(inputs, labels)`` or bare inputs; labels are not used (they are
        sampled from the model). ``forward(model, inputs)`` returns logits ``(N, classes)``
        (default: ``model(inputs)``). At most ``max_samples`` inputs are used.

        Raises:
            DatasetError: no inputs, or the model's output is not ``(N, classes)`` logits.
        """
        forward = forward or (lambda m, x: m(x))
        params = dict(model.named_parameters())
        names = {id(p): n for n, p in params.items()}
        state_names = {}
        for name, tensor in model.state_dict(keep_vars=True).items():  # state_dict names (shared weights: first)
            if id(tensor) in names and id(tensor) not in state_names:
                state_names[id(tensor)] = name
        was_training = model.training
        model.eval()
        requires = {n: p.requires_grad for n, p in params.items()}
        for p in params.values():
            p.requires_grad_(True)
        sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        generator = torch.Generator().manual_seed(seed)
        seen = 0
        try:
            for batch in batches:
                inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                for start in range(0, len(inputs), micro_batch):
                    if max_samples is not None and seen >= max_samples:
                        break
                    chunk = inputs[start:start + micro_batch]
                    if max_samples is not None:
                        chunk = chunk[:max_samples - seen]
                    logits = forward(model, chunk)
                    if logits.ndim != 2 or logits.shape[0] != len(chunk):
                        raise DatasetError(f"the model's output has shape {tuple(logits.shape)}; the Fisher "
                                           "sensitivity needs (batch, classes) logits")
                    log_p = torch.log_softmax(logits.float(), dim=1)
                    sampled = torch.multinomial(log_p.detach().exp(), 1, generator=generator)
                    model.zero_grad(set_to_none=True)
                    (-log_p.gather(1, sampled).sum()).backward()
                    for n, p in params.items():
                        if p.grad is not None:
                            sums[n] += p.grad.detach().float() ** 2
                    seen += len(chunk)
                    if progress:
                        progress(seen, max_samples)
                if max_samples is not None and seen >= max_samples:
                    break
        finally:
            model.zero_grad(set_to_none=True)
            for n, p in params.items():
                p.requires_grad_(requires[n])
            model.train(was_training)
        if seen == 0:
            raise DatasetError("no calibration inputs to estimate the Fisher information on")
        # E[g_B g_B] = B * F for a micro-batch gradient g_B of B samples with zero-mean scores:
        # the sum over micro-batches of g_B**2 is (samples) * F
        fisher = {state_names.get(id(p), n): (sums[n] / seen).numpy() for n, p in params.items()}
        return cls(fisher=fisher, samples=seen)


def fisher_from_arrays(fisher: Mapping[str, np.ndarray], samples: int) -> FisherSensitivity:
    """A :class:`FisherSensitivity` from precomputed diagonals (name -> array of the tensor's shape)."""
    return FisherSensitivity(fisher={k: np.asarray(v, dtype=np.float32) for k, v in fisher.items()}, samples=samples)


__all__ = ["DataFreeSensitivity", "FLOAT16_MAX_RELATIVE_ERROR", "FisherSensitivity", "Sensitivity",
           "fisher_from_arrays", "float16_fits", "relative_channel_error"]
