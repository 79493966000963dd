"""weightcodec itself: HEVC lossless and a range of QPs, through ``api.encode`` / ``api.decode``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from .. import BenchError
from .base import Coded, Peer

QPS = (22, 24, 26, 28, 30, 32, 34, 36)
QUICK_QPS = (22, 28, 34)
#: QPs scored in ``--score sparse`` mode.
SPARSE_QPS = {24, 28, 32, 36}


def hevc_qstep(qp: int) -> float:
    """HEVC quantizer step for 8-bit samples, in int8 units."""
    return 2.0 ** ((qp - 4) / 6.0)


def _config(lossless: bool, qp: int | None):
    """As ``wcodec encode --lossless`` / ``--qp QP`` (every other option at its default)."""
    from weightcodec.config import build_encode_config

    return build_encode_config(lossless=True) if lossless else build_encode_config(qp=int(qp))


class Weightcodec(Peer):
    name = "weightcodec"

    def settings(self) -> list[Any]:
        return ["lossless", *(QUICK_QPS if self.options.quick else QPS)]

    def describe(self, setting: Any) -> str:
        return f"weightcodec {'lossless' if setting == 'lossless' else f'QP {setting}'}"

    @classmethod
    def memory_imports(cls) -> None:
        import torch  # noqa: F401

        from weightcodec import api  # noqa: F401

    @classmethod
    def memory_job(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
        import torch

        from weightcodec import api

        sub = OrderedDict((k, torch.from_numpy(v)) for k, v in arrays.items())
        api.decode(api.encode(sub, config=_config(params["lossless"], params["qp"])).data, as_state_dict=True)

    def memory_arrays(self, comparison) -> dict[str, np.ndarray]:
        return comparison.cs.float_arrays()

    def _run_impl(self, comparison, setting: Any) -> Coded:
        import torch

        from weightcodec import api

        cs = comparison.cs
        lossless = setting == "lossless"
        qp = None if lossless else int(setting)
        config = _config(lossless, qp)
        enc = comparison.lossless_encode if lossless else api.encode(comparison.state_dict, config=config)
        dec = api.decode(enc.data, as_state_dict=True)
        coded = {l.name: l for l in enc.report.layers if l.storage == "hevc"}
        if sorted(coded) != sorted(cs.names):
            raise BenchError(f"{comparison.model}: QP {qp} codes {sorted(coded)}, lossless codes {sorted(cs.names)}")
        sub = OrderedDict((n, torch.from_numpy(cs.weights[n])) for n in cs.names)
        _, enc_s, dec_s = self.timed(lambda: api.encode(sub, config=config),
                                     lambda r: api.decode(r.data, as_state_dict=True))
        settings = {"qp": qp, "lossless": lossless, "preset": config.hevc.preset, "chroma": config.hevc.chroma,
                    "x265_params": config.hevc.x265_params(), "backend": config.backend,
                    "granularity": config.quant.granularity}
        if not lossless:
            settings["qstep_int8_units"] = hevc_qstep(qp)
        label = f"weightcodec {'lossless' if lossless else f'QP {qp}'}"
        return Coded(
            id=f"weightcodec/{'lossless' if lossless else f'qp{qp}'}",
            family="weightcodec lossless" if lossless else "weightcodec HEVC", label=label,
            settings=settings, lossless=lossless, coded_bytes=sum(coded[n].stored_bytes for n in cs.names),
            model_bytes=enc.report.total_bytes, model_bytes_source="the whole .wcodec container",
            recon={n: np.asarray(dec.quantized[n].values) for n in cs.names}, exact=lossless,
            encode_s=enc_s, decode_s=dec_s,
            timing_note="api.encode / api.decode of a state_dict holding only the coded layers "
                        "(float32 in: includes quantization, container, HEVC via PyAV/libx265)",
            memory_params={"lossless": lossless, "qp": qp},
            extra={"layers": [{"name": n, "stored_bytes": coded[n].stored_bytes, "profile": coded[n].profile,
                               "level": coded[n].level} for n in cs.names]},
            score_priority="always" if lossless else ("sparse" if qp in SPARSE_QPS else "all"))
