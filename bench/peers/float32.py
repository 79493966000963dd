"""The reference row: the float32 weights themselves (4 bytes per weight)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Coded, Peer


class Float32(Peer):
    name = "float32"

    def _run_impl(self, comparison, setting: Any) -> Coded:
        cs = comparison.cs
        return Coded(id="float32", family="float32", label="float32 (reference)", settings={}, lossless=True,
                     coded_bytes=4 * cs.numel, model_bytes=comparison.float_model_bytes,
                     model_bytes_source="sum of the state_dict's tensor bytes",
                     recon={n: cs.weights[n].astype(np.float64) for n in cs.names}, recon_kind="float",
                     score_priority="always")
