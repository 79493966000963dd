"""Raw int8 + float32 scales: the paper's "Quant" row (what every int8 codec starts from)."""

from __future__ import annotations

from typing import Any

from .base import Coded, Peer


class Int8(Peer):
    name = "int8"

    def _run_impl(self, comparison, setting: Any) -> Coded:
        from weightcodec import api
        from weightcodec.config import build_encode_config

        cs = comparison.cs
        quant = api.encode(comparison.state_dict, config=build_encode_config(int8_only=True, no_zstd=True))
        return Coded(id="int8", family="int8", label="int8 + scales (Quant)",
                     settings={"granularity": {n: cs.granularity[n] for n in cs.names}}, lossless=True,
                     coded_bytes=cs.numel + cs.scale_bytes, model_bytes=quant.report.total_bytes,
                     model_bytes_source="weightcodec container with code_matrices=False, compress_raw=False "
                                        "(every tensor stored uncompressed: int8 + scales, others float)",
                     recon=cs.q, score_priority="always")
