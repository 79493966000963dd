"""One model's comparison set: the tensors every peer codes, and the scoring of their reconstructions.

Every codec codes **the same tensors**: the layers weightcodec codes with HEVC under its default
settings (2-D ``*weight`` matrices with at least 4096 elements), quantized to int8 exactly as
weightcodec does (the int8 values and scales are taken from a lossless weightcodec round trip).
The model comes from the registry (:mod:`weightcodec.evaluation.zoo`) and is scored by its
:class:`~weightcodec.evaluation.Evaluator`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from weightcodec import api
from weightcodec.config import EncodeConfig, build_encode_config
from weightcodec.errors import AssetNotFoundError
from weightcodec.evaluation import Evaluator, get_model_spec, load_state_dict_file
from weightcodec.measure import int8_error

from .records import Record

#: Which rows each ``--score`` mode scores (float32 and int8 are "always").
SCORED = {"all": {"always", "sparse", "all"}, "sparse": {"always", "sparse"}, "none": set()}


@dataclass
class CodedSet:
    """The tensors weightcodec codes with HEVC, as float32 and as weightcodec's int8."""

    names: list[str]
    weights: dict[str, np.ndarray]  # float32
    q: dict[str, np.ndarray]  # int8, weightcodec's values
    scales: dict[str, np.ndarray]  # float32, (1,) or (channels,)
    axis: dict[str, int]
    granularity: dict[str, str]
    _float_units: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def numel(self) -> int:
        return int(sum(self.q[n].size for n in self.names))

    @property
    def scale_bytes(self) -> int:
        return int(sum(4 * self.scales[n].size for n in self.names))

    def scale_like(self, name: str) -> np.ndarray:
        s = self.scales[name].astype(np.float64)
        if s.size == 1:
            return s.reshape(())
        shape = [1] * self.q[name].ndim
        shape[self.axis[name]] = s.size
        return s.reshape(shape)

    def tensor_step(self, name: str) -> float:
        """One quantizer step per tensor (the median channel scale if per-channel)."""
        return float(np.median(self.scales[name]))

    def float_arrays(self) -> dict[str, np.ndarray]:
        return {n: self.weights[n] for n in self.names}

    def int8_arrays(self) -> dict[str, np.ndarray]:
        return {n: self.q[n] for n in self.names}

    def float_in_int8_units(self) -> dict[str, np.ndarray]:
        """The float weights divided by their int8 scale (what 'error vs float' is measured against)."""
        if not self._float_units:
            self._float_units = {n: self.weights[n].astype(np.float64) / self.scale_like(n) for n in self.names}
        return self._float_units

    def errors(self, recon_int8_units: dict[str, np.ndarray]) -> dict[str, Any]:
        """Errors in int8 units: vs weightcodec's int8 values, and vs the float weights / scale."""
        vs_q = int8_error(recon_int8_units, self.q, self.names)
        vs_f = int8_error(recon_int8_units, self.float_in_int8_units(), self.names)
        layers = [{"name": n, "rmse_vs_int8": vs_q.layers[n].rmse, "max_vs_int8": vs_q.layers[n].max_abs,
                   "rmse_vs_float": vs_f.layers[n].rmse, "max_vs_float": vs_f.layers[n].max_abs} for n in self.names]
        return {"rmse_vs_int8": vs_q.rmse, "max_vs_int8": vs_q.max_abs,
                "rmse_vs_float": vs_f.rmse, "max_vs_float": vs_f.max_abs, "layers": layers}

    def weights_of(self, record: Record) -> dict[str, np.ndarray]:
        """A record's reconstruction of each coded layer, as weights (float64)."""
        return {n: record.recon[n] if record.recon_kind == "float"
                else record.recon[n].astype(np.float64) * self.scale_like(n) for n in self.names}


@dataclass
class Comparison:
    """A model, its comparison set and what every peer needs from weightcodec's lossless round trip."""

    model: str
    weights_path: str
    state_dict: OrderedDict
    float_model_bytes: int
    cs: CodedSet
    coded_layers: list[dict[str, Any]]
    lossless_config: EncodeConfig
    lossless_encode: api.EncodeResult
    base_state_dict: OrderedDict  # weightcodec's default decoding of every other tensor
    rest_bytes: int  # the lossless container minus its coded layers
    evaluator: Evaluator | None
    eval_note: str | None

    @classmethod
    def load(cls, model: str, log: Callable[[str], None]) -> Comparison | None:
        """Load ``model`` and make its comparison set; None (with a log line) if it cannot be benchmarked.

        Raises:
            UnknownModelError: for a name the registry does not know.
        """
        spec = get_model_spec(model)
        evaluator, eval_note = None, None
        try:
            evaluator = Evaluator.create(model, limit=None)
            sd = evaluator.reference_state_dict()
            weights_path = str(evaluator.weights)
        except AssetNotFoundError as exc:
            try:
                path = spec.weights_path()
                sd = load_state_dict_file(path)
            except AssetNotFoundError:
                log(f"[yellow]skipping {model}: {exc}[/]")
                return None
            weights_path = str(path)
            eval_note = f"no evaluation set ({exc}); accuracy not measured"
            log(f"[yellow]{eval_note}[/]")
        state_dict = OrderedDict((k, v.detach().cpu()) for k, v in sd.items())

        log("weightcodec lossless round trip (defines the int8 tensors every codec codes)")
        config = build_encode_config(lossless=True)
        enc = api.encode(state_dict, config=config)
        dec = api.decode(enc.data, as_state_dict=True)
        coded = [layer for layer in enc.report.layers if layer.storage == "hevc"]
        if not coded:
            log(f"[yellow]skipping {model}: weightcodec codes no layer with HEVC[/]")
            return None
        names = [layer.name for layer in coded]
        cs = CodedSet(
            names=names,
            weights={n: state_dict[n].float().numpy().copy() for n in names},
            q={n: np.asarray(dec.quantized[n].values, dtype=np.int8) for n in names},
            scales={n: np.asarray(dec.quantized[n].scales, dtype=np.float32) for n in names},
            axis={n: int(dec.quantized[n].axis) for n in names},
            granularity={n: dec.quantized[n].granularity for n in names},
        )
        rest_bytes = enc.report.total_bytes - sum(layer.stored_bytes for layer in coded)
        log(f"coded layers: {', '.join(f'{l.name} {tuple(l.shape)}' for l in coded)} "
            f"({cs.numel:,} weights); rest of the container {rest_bytes:,} bytes")
        return cls(
            model=model, weights_path=weights_path, state_dict=state_dict,
            float_model_bytes=int(sum(t.numel() * t.element_size() for t in state_dict.values())), cs=cs,
            coded_layers=[{"name": l.name, "shape": list(l.shape), "numel": int(math.prod(l.shape)),
                           "granularity": l.granularity, "scales": int(cs.scales[l.name].size)} for l in coded],
            lossless_config=config, lossless_encode=enc, base_state_dict=dec.state_dict, rest_bytes=rest_bytes,
            evaluator=evaluator, eval_note=eval_note)

    def score_mode(self, requested: str) -> str:
        """``auto``: ``none`` without an evaluator, ``sparse`` on ImageNet (slow to score), else ``all``."""
        if requested != "auto":
            return requested
        if self.evaluator is None:
            return "none"
        return "sparse" if self.evaluator.dataset == "imagenet" else "all"

    def score(self, records: list[Record], mode: str, step: Callable[[str], Callable | None]) -> dict[str, Any]:
        """Top-1/top-5 of the records ``mode`` selects; identical reconstructions are scored once.

        ``step(label)`` is called before each evaluation and returns a ``progress(done, total)``
        callback (or None). Returns ``{"scores_run", "score_seconds"}``.
        """
        if self.evaluator is None:
            for r in records:
                r.accuracy_note = self.eval_note
            return {"scores_run": 0, "score_seconds": 0.0}
        cache: dict[str, dict] = {}
        for r in records:
            if r.score_priority not in SCORED[mode]:
                r.accuracy_note = f"not scored (--score {mode})"
                continue
            weights = None if r.codec == "float32" else self.cs.weights_of(r)
            key = "float32" if weights is None else self._key(weights)
            if key not in cache:
                progress = step(r.label)
                t0 = time.perf_counter()
                if weights is None:
                    acc = self.evaluator.score(None, progress=progress)
                else:
                    sd = OrderedDict(self.base_state_dict)
                    for n in self.cs.names:
                        sd[n] = torch.from_numpy(np.asarray(weights[n], dtype=np.float32)).to(self.state_dict[n].dtype)
                    acc = self.evaluator.score(sd, progress=progress)
                cache[key] = {"top1": float(acc["top1"]), "top5": float(acc["top5"]), "n": int(acc["n"]),
                              "seconds": round(time.perf_counter() - t0, 1), "scored_as": r.id}
            a = cache[key]
            r.accuracy = {k: a[k] for k in ("top1", "top5", "n")}
            if a["scored_as"] != r.id:
                r.accuracy_note = f"identical reconstruction to {a['scored_as']}: same score"
        return {"scores_run": len(cache), "score_seconds": sum(v["seconds"] for v in cache.values())}

    def _key(self, weights: dict[str, np.ndarray]) -> str:
        h = hashlib.sha256()
        for n in self.cs.names:
            h.update(np.ascontiguousarray(weights[n], dtype=np.float32).tobytes())
        return h.hexdigest()
