"""The one JSON result shape of the benchmark: records, a model's result, the run's document.

A run writes one document per model, ``<out>/<model>.json``, once, at the end of the run::

    {<run fields: tool, command, repeats, quick, codecs, machine, loadavg_before, loadavg_after,
      wall_seconds, nncodec_version>, "model_result": {model, weights, evaluation, coded_layers,
      ..., "records": [<Record.to_json()>...], "rate_at_equal_error": [...]}}

:mod:`bench.report` reads nothing else (``--from-json`` rebuilds the summary from these files).
Keys are sorted and the record order is fixed (the order of :data:`bench.peers.PEERS`), so two runs
differ only in timing, memory and machine fields.

Only the standard library and numpy are imported at module level: the memory probe's child
process imports this module (through the peer classes) and must stay free of torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Family of the curve every lossy peer is compared with at equal error.
REFERENCE_FAMILY = "weightcodec HEVC"


@dataclass(kw_only=True)
class Record:
    """One codec setting on one model: what was coded, how big, how wrong, how fast."""

    id: str
    codec: str
    family: str  # one curve / marker in the plot
    label: str
    settings: dict[str, Any]
    lossless: bool
    coded_bytes: int
    coded_bits_per_weight: float
    model_bytes: int
    model_bytes_source: str
    ratio_vs_float32: float
    errors: dict[str, Any]  # int8 units: rmse/max vs int8 and vs float, and "layers"
    timing: dict[str, Any]
    memory: dict[str, Any] | None = None
    recon: dict[str, np.ndarray] | None = None  # int8 units or float (see recon_kind); not serialised
    recon_kind: str = "int8"  # "int8": recon * scale is the weight; "float": recon is the weight
    score_priority: str = "all"  # "always" | "sparse" | "all"
    accuracy: dict[str, Any] | None = None
    accuracy_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "codec": self.codec, "family": self.family, "label": self.label,
            "settings": self.settings, "lossless": self.lossless,
            "coded_bytes": self.coded_bytes, "coded_bits_per_weight": self.coded_bits_per_weight,
            "model_bytes": self.model_bytes, "model_bytes_source": self.model_bytes_source,
            "ratio_vs_float32": self.ratio_vs_float32,
            "error_int8_units": {k: v for k, v in self.errors.items() if k != "layers"},
            "error_int8_units_per_layer": self.errors["layers"],
            "accuracy": self.accuracy, "accuracy_note": self.accuracy_note,
            "timing": self.timing, "memory": self.memory,
            **({"extra": self.extra} if self.extra else {}),
        }


def rate_comparisons(records: list[dict[str, Any]], metric: str = "rmse_vs_float") -> list[dict[str, Any]]:
    """Each lossy peer curve against the weightcodec HEVC curve: bytes change at equal ``metric``."""
    from weightcodec.measure import rate_change_at_equal_error

    curves: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r["lossless"] or r["codec"] in ("float32", "int8"):
            continue
        curves.setdefault(r["family"], []).append((r["error_int8_units"][metric], r["coded_bytes"]))
    ref = curves.get(REFERENCE_FAMILY)
    out = []
    if not ref:
        return out
    for fam, pts in curves.items():
        if fam == REFERENCE_FAMILY or len(pts) < 2:
            continue
        cmp = rate_change_at_equal_error(ref, pts)
        out.append({"family": fam, "vs": REFERENCE_FAMILY, "metric": metric, "points": len(pts),
                    **({"bytes_change_pct": cmp.bytes_change_pct, "error_range": list(cmp.error_range)} if cmp
                       else {"bytes_change_pct": None, "error_range": None})})
    return out


def write_document(path: Path, document: dict[str, Any]) -> None:
    """Write one model's document (sorted keys, one-space indent), atomically."""
    from weightcodec.atomic import atomic_write

    atomic_write(path, [(json.dumps(document, indent=1, sort_keys=True) + "\n").encode()])


def read_documents(out: Path, models: list[str]) -> list[dict[str, Any]]:
    """The documents of ``models`` found in ``out`` (missing ones are left out), in that order."""
    return [json.loads((out / f"{m}.json").read_text()) for m in models if (out / f"{m}.json").is_file()]
