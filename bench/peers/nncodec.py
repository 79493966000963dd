"""nncodec (MPEG NNC, DeepCABAC), run in its own numpy<2 venv through :mod:`bench.nncodec_client`.

Rows: the int8 values coded losslessly (int32 input); the int8 values coded lossily at the
quantizer step of each HEVC QP (``2**((QP-4)/6)`` int8 units), uniform rounding and dependent
(trellis-coded) quantization; the float32 weights, uniform at each tensor's int8 step; and the
float32 weights with DQ at one global qp, from step ~ s/2 to ~ 32 s (s = the int8 scale).

The venv and the worker's idle peak (the memory baseline) are set up once per run and kept on the
peer object. Timings and peak memory come from the worker itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import BenchError
from .base import MIB, Coded, Peer, PeerUnavailable
from .weightcodec import QPS, QUICK_QPS, hevc_qstep

#: float DQ rows: global qp = qp(step of the geometric-mean int8 scale) + offset (4 = one octave of step).
FLOAT_OFFSETS = (-4, 0, 4, 8, 12, 16, 20)
QUICK_FLOAT_OFFSETS = (0, 8, 16)
#: Rows scored in ``--score sparse`` mode.
SPARSE_FLOAT_OFFSETS = {0, 8, 16}
SPARSE_INT_QPS = {32}

SRC_INT = "rest of weightcodec's container + nncodec bitstream of the coded layers + float32 scales"
SRC_FLOAT = "rest of weightcodec's container + nncodec bitstream of the coded layers (no scales needed)"
TIMING_NOTE = "nnc.compress / nnc.decompress inside the worker (excludes process start, npz I/O); MB/s per int8 weight"


class NNCodec(Peer):
    name = "nncodec"

    def __init__(self, options) -> None:
        super().__init__(options)
        self.python = None  # the nncodec venv's interpreter, once set up
        self.error: str | None = None  # why it cannot run, once known
        self.baseline: dict[str, Any] | None = None  # worker peak on a tiny tensor, per kind; version

    def setup(self, comparison, log) -> None:
        from ..nncodec_client import run_nncodec
        from ..nncodec_env import NNCodecError, ensure_nncodec_venv

        if self.python is None and self.error is None:
            try:
                log("nncodec venv (built on first use: ~2.5 min)")
                self.python = ensure_nncodec_venv()
            except NNCodecError as exc:
                self.error = str(exc).splitlines()[0]
        if self.error is not None:
            raise PeerUnavailable(f"nncodec unavailable: {self.error}")
        if self.baseline is None:
            tiny = np.arange(-2048, 2048, dtype=np.int32).reshape(64, 64) % 100
            b_int = run_nncodec({"w": tiny}, kind="int", qp=None, python=self.python)
            b_flt = run_nncodec({"w": tiny.astype(np.float32) / 100}, kind="float", qp=-32, python=self.python)
            self.baseline = {"int": b_int["peak_rss_bytes"], "float": b_flt["peak_rss_bytes"],
                             "version": b_int["nncodec_version"]}

    def run_info(self) -> dict[str, Any]:
        return {"nncodec_version": self.baseline["version"]} if self.baseline else {}

    def settings(self) -> list[Any]:
        qps = QUICK_QPS if self.options.quick else QPS
        offsets = QUICK_FLOAT_OFFSETS if self.options.quick else FLOAT_OFFSETS
        return ([("int8-lossless", None)] + [(f"int8-{mode}", qp) for mode in ("uniform", "dq") for qp in qps]
                + [("float-uniform", None)] + [("float-dq", off) for off in offsets])

    def describe(self, setting: Any) -> str:
        kind, value = setting
        return {"int8-lossless": "nncodec int8 lossless", "float-uniform": "nncodec float uniform, int8 step",
                "float-dq": f"nncodec float DQ offset {value}"}.get(kind, f"nncodec {kind} step~QP{value}")

    def _run_impl(self, comparison, setting: Any) -> Coded:
        from ..nncodec_env import NNCodecError

        try:
            return self._code(comparison, *setting)
        except NNCodecError as exc:
            raise BenchError(f"{comparison.model}: {str(exc).splitlines()[0]}") from exc

    def _code(self, comparison, kind: str, value: int | None) -> Coded:
        from ..nncodec_client import nncodec_qp_for_step, nncodec_step_for_qp

        cs = comparison.cs
        if kind == "int8-lossless":  # DeepCABAC without quantization
            res, e, d, peak = self._repeat(comparison, cs.int8_arrays(), kind="int", qp=None, use_dq=False)
            return self._coded(res, e, d, peak, "int", id="nncodec/int8-lossless", family="nncodec int8 lossless",
                               label="nncodec int8 lossless", settings={"kind": "int", "qp": None},
                               recon={n: res["arrays"][n].astype(np.int64) for n in cs.names}, recon_kind="int8",
                               coded_bytes=res["compressed_bytes"] + cs.scale_bytes, priority="always", src=SRC_INT)
        if kind in ("int8-uniform", "int8-dq"):  # the int8 values, lossy at the step of an HEVC QP
            use_dq = kind == "int8-dq"
            mode = "DQ" if use_dq else "uniform"
            step = hevc_qstep(value)
            nqp = nncodec_qp_for_step(step)
            res, e, d, peak = self._repeat(comparison, cs.int8_arrays(), kind="int", qp=nqp, use_dq=use_dq)
            return self._coded(
                res, e, d, peak, "int", id=f"nncodec/{kind}/qp{value}", family=f"nncodec int8 {mode}",
                label=f"nncodec int8 {mode}, step of QP {value}",
                settings={"kind": "int", "use_dq": use_dq, "matched_hevc_qp": value, "hevc_qstep": step,
                          "nncodec_qp": nqp, "nncodec_step_int8_units": nncodec_step_for_qp(nqp)},
                recon={n: res["arrays"][n].astype(np.float64) for n in cs.names}, recon_kind="int8",
                coded_bytes=res["compressed_bytes"] + cs.scale_bytes,
                priority="sparse" if (not use_dq and value in SPARSE_INT_QPS) else "all", src=SRC_INT)
        if kind == "float-uniform":  # the float weights, uniform at each tensor's int8 step
            steps = {n: cs.tensor_step(n) for n in cs.names}
            res, e, d, peak = self._repeat(comparison, cs.float_arrays(), kind="float", qp=None, use_dq=False,
                                           options={"step_per_tensor": steps})
            return self._coded(res, e, d, peak, "float", id="nncodec/float-uniform/int8-step",
                               family="nncodec float uniform (int8 step)", label="nncodec float uniform, int8 step",
                               settings={"kind": "float", "use_dq": False, "step_per_tensor": steps},
                               recon={n: res["arrays"][n].astype(np.float64) for n in cs.names}, recon_kind="float",
                               coded_bytes=res["compressed_bytes"], priority="all", src=SRC_FLOAT)
        # float-dq: the float weights, DQ, one global qp (nncodec's own usage), around the int8 step
        s_med = float(np.exp(np.mean([np.log(cs.tensor_step(n)) for n in cs.names])))
        nqp = nncodec_qp_for_step(s_med) + value
        res, e, d, peak = self._repeat(comparison, cs.float_arrays(), kind="float", qp=nqp, use_dq=True)
        return self._coded(res, e, d, peak, "float", id=f"nncodec/float-dq/qp{nqp}", family="nncodec float DQ",
                           label=f"nncodec float DQ qp {nqp}",
                           settings={"kind": "float", "use_dq": True, "qp": nqp, "qp_offset_vs_int8_step": value,
                                     "step": nncodec_step_for_qp(nqp),
                                     "step_over_int8_scale": nncodec_step_for_qp(nqp) / s_med},
                           recon={n: res["arrays"][n].astype(np.float64) for n in cs.names}, recon_kind="float",
                           coded_bytes=res["compressed_bytes"],
                           priority="sparse" if value in SPARSE_FLOAT_OFFSETS else "all", src=SRC_FLOAT)

    def _repeat(self, comparison, arrays, *, kind, qp, use_dq, options=None):
        """``repeats`` worker runs: the first result, encode/decode seconds, and the max peak RSS."""
        from ..nncodec_client import run_nncodec

        first, enc_s, dec_s, peak = None, [], [], 0
        for _ in range(self.options.repeats):
            res = run_nncodec(arrays, kind=kind, qp=qp, use_dq=use_dq, options=options, install=False,
                              python=self.python)
            enc_s.append(res["encode_seconds"])
            dec_s.append(res["decode_seconds"])
            peak = max(peak, res["peak_rss_bytes"])
            if first is None:
                first = res
            elif res["compressed_bytes"] != first["compressed_bytes"]:
                raise BenchError(f"{comparison.model}: nncodec is not deterministic ({kind} qp={qp})")
        return first, enc_s, dec_s, peak

    def _coded(self, res, enc_s, dec_s, peak, kind, *, id, family, label, settings, recon, recon_kind, coded_bytes,
               priority, src) -> Coded:
        base = self.baseline.get(kind)
        memory = {"method": "VmHWM of the nncodec worker process (max over repeats); delta = minus the "
                            "VmHWM of the same worker on a 64x64 tensor",
                  "peak_rss_mib": round(peak / MIB, 1),
                  "peak_delta_mib": None if base is None else round((peak - base) / MIB, 1)}
        return Coded(id=id, family=family, label=label,
                     settings={"nncodec": self.baseline["version"], **settings,
                               "compress_kwargs": res["compress_kwargs"]},
                     lossless=bool(res["lossless"]), coded_bytes=coded_bytes, model_bytes_source=src,
                     recon=recon, recon_kind=recon_kind, encode_s=enc_s, decode_s=dec_s, timing_note=TIMING_NOTE,
                     memory=memory, score_priority=priority, extra={"bitstream_bytes": res["compressed_bytes"]})
