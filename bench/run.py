#!/usr/bin/env python3
"""Side-by-side benchmark: weightcodec against nncodec (MPEG NNC), zstd, zipnn and plain int8.

Every codec codes the **same tensors**: the layers weightcodec codes with HEVC under its default
settings (2-D ``*weight`` matrices with at least 4096 elements), quantized to int8 exactly as
weightcodec does (the int8 values and scales are taken from a lossless weightcodec round trip).

Rows per model (one JSON record each, in this order):

* ``float32``: the reference weights (4 bytes per weight).
* ``int8``: raw int8 + float32 scales, the paper's "Quant" row.
* ``weightcodec``: HEVC lossless and QP 22, 24, ..., 36.
* ``zstd``: level 19 of each layer's int8 bytes (lossless).
* ``zipnn``: each layer's int8 bytes (lossless; see ``zipnn_int8_bytes``).
* ``nncodec int8 lossless``: the int8 values as int32, coded losslessly by DeepCABAC.
* ``nncodec int8 uniform / DQ``: the int8 values coded lossily by nncodec at the quantizer step of
  the matching HEVC QP (``Qstep = 2**((QP-4)/6)`` int8 units), uniform rounding or dependent
  (trellis-coded) quantization.
* ``nncodec float``: nncodec on the float32 weights: uniform at the int8 step, and DQ at a global
  qp from step ~ s/2 to ~ 32 s (s = the int8 scale).

Metrics: coded-layer bytes (+ float32 scales where the decoder needs them) and whole-model bytes,
error in int8 units against weightcodec's int8 values and against the float weights, top-1/top-5,
encode/decode MB/s of int8 weights (median of ``--repeats`` runs) and peak resident memory of a
process that runs only that codec (see ``docs/BENCHMARKS.md`` for the exact definitions).

Usage::

    python bench/run.py [--models digits-mlp,mnist-mlp,mobilenet_v2] [--repeats 3] [--quick]
                        [--out bench/results] [--codecs weightcodec,nncodec,zstd,zipnn,int8]
                        [--score auto|all|sparse|none]

Writes ``<out>/<model>.json``, ``<out>/<model>.png`` and ``<out>/summary.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/run.py`` puts bench/ first, not the repo root
    sys.path.insert(0, str(ROOT))

from weightcodec.evaluation.machine import machine_info  # noqa: E402

MODELS = ("digits-mlp", "mnist-mlp", "mobilenet_v2")
CODECS = ("weightcodec", "nncodec", "zstd", "zipnn", "int8")
WC_QPS = (22, 24, 26, 28, 30, 32, 34, 36)
QUICK_QPS = (22, 28, 34)
#: nncodec float DQ: global qp = qp(step of the median int8 scale) + offset (4 = one octave of step).
NNC_FLOAT_OFFSETS = (-4, 0, 4, 8, 12, 16, 20)
QUICK_NNC_FLOAT_OFFSETS = (0, 8, 16)
ZSTD_LEVEL = 19
#: Models whose evaluation is expensive score only a subset of rows by default (``--score auto``).
SPARSE_BY_DEFAULT = {"mobilenet_v2"}
#: Rows scored in ``sparse`` mode (besides float32 and int8, which are always scored).
SPARSE_WC_QPS = {24, 28, 32, 36}
SPARSE_NNC_FLOAT_OFFSETS = {0, 8, 16}
SPARSE_NNC_INT_QPS = {32}
MIB = 2**20


class BenchError(RuntimeError):
    """A failure that ends the run with a one-line message."""


# --------------------------------------------------------------------------------------------
# memory: peak RSS of a process that runs one codec job
# --------------------------------------------------------------------------------------------
def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _mem_job(job_path: Path) -> int:
    """Child process: run one codec's encode+decode on the arrays of a job; print peak RSS as JSON.

    The codec's modules are imported first, then the peak is reset, then the input is loaded and
    encoded and decoded: ``peak_delta`` is the peak RSS above the process's idle footprint, input
    and output arrays included (as in the nncodec worker, whose input is loaded in-process too).
    """
    job = json.loads(job_path.read_text())
    codec = job["codec"]
    if codec == "weightcodec":
        import torch

        from weightcodec import api
        from weightcodec.config import EncodeConfig, HevcSettings
    elif codec == "zstd":
        import zstandard
    elif codec == "zipnn":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import zipnn
    else:
        raise SystemExit(f"unknown codec {codec!r}")
    reset = _reset_peak_rss()
    rss0 = _proc_status_kib("VmRSS")
    with np.load(job["arrays"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if codec == "weightcodec":
        hevc = HevcSettings(lossless=True) if job["lossless"] else HevcSettings(qp=int(job["qp"]))
        sub = OrderedDict((k, torch.from_numpy(v)) for k, v in arrays.items())
        data = api.encode(sub, config=EncodeConfig(hevc=hevc)).data
        api.decode(data, as_state_dict=True)
    elif codec == "zstd":
        comp = [zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(v.tobytes()) for v in arrays.values()]
        [zstandard.ZstdDecompressor().decompress(c) for c in comp]
    else:
        z = _zipnn_codec(zipnn)
        comp = [z.compress(v.tobytes()) for v in arrays.values()]
        [z.decompress(c) for c in comp]
    peak = _proc_status_kib("VmHWM")
    print(json.dumps({"reset": reset, "rss0_kib": rss0, "peak_kib": peak}))
    return 0


def measure_memory(codec: str, arrays: dict[str, np.ndarray], **params: Any) -> dict[str, Any]:
    """Run ``_mem_job`` in a fresh python; return the peak RSS figures (MiB)."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        npz = Path(tmp) / "in.npz"
        np.savez(npz, **arrays)
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"codec": codec, "arrays": str(npz), **params}))
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_mem-job", str(job)],
                              capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"memory probe for {codec} failed: {tail}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["reset"] or out["peak_kib"] is None:
        return {"method": "unavailable (no /proc/self/clear_refs)", "peak_rss_mib": None, "peak_delta_mib": None}
    return {
        "method": "VmHWM of a fresh process running only this job, peak reset after imports",
        "peak_rss_mib": round(out["peak_kib"] / 1024, 1),
        "peak_delta_mib": round((out["peak_kib"] - out["rss0_kib"]) / 1024, 1),
    }


# --------------------------------------------------------------------------------------------
# the comparison set
# --------------------------------------------------------------------------------------------
@dataclass
class CodedSet:
    """The tensors weightcodec codes with HEVC, as float32 and as weightcodec's int8."""

    names: list[str]
    weights: dict[str, np.ndarray]  # float32
    q: dict[str, np.ndarray]  # int8, weightcodec's values
    scales: dict[str, np.ndarray]  # float32, (1,) or (channels,)
    axis: dict[str, int]
    granularity: dict[str, str]

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


def error_stats(cs: CodedSet, recon_int8_units: dict[str, np.ndarray]) -> dict[str, Any]:
    """Errors in int8 units: vs weightcodec's int8 values, and vs the float weights divided by the scale."""
    sse_q = sse_f = 0.0
    max_q = max_f = 0.0
    layers = []
    for n in cs.names:
        r = np.asarray(recon_int8_units[n], dtype=np.float64).reshape(cs.q[n].shape)
        dq = r - cs.q[n].astype(np.float64)
        df = r - cs.weights[n].astype(np.float64) / cs.scale_like(n)
        lq, lf = float(np.sum(dq**2)), float(np.sum(df**2))
        mq, mf = float(np.max(np.abs(dq))), float(np.max(np.abs(df)))
        sse_q, sse_f = sse_q + lq, sse_f + lf
        max_q, max_f = max(max_q, mq), max(max_f, mf)
        layers.append({"name": n, "rmse_vs_int8": math.sqrt(lq / r.size), "max_vs_int8": mq,
                       "rmse_vs_float": math.sqrt(lf / r.size), "max_vs_float": mf})
    n = cs.numel
    return {"rmse_vs_int8": math.sqrt(sse_q / n), "max_vs_int8": max_q,
            "rmse_vs_float": math.sqrt(sse_f / n), "max_vs_float": max_f, "layers": layers}


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass
class Record:
    id: str
    codec: str
    family: str  # one curve / marker in the plot
    label: str
    settings: dict[str, Any]
    lossless: bool
    coded_bytes: int
    model_bytes: int
    model_bytes_source: str
    errors: dict[str, Any]
    encode_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    timing_note: str = ""
    memory: dict[str, Any] | None = None
    recon: dict[str, np.ndarray] | None = None  # int8 units or float (see recon_kind); not serialised
    recon_kind: str = "int8"  # "int8": recon * scale is the weight; "float": recon is the weight
    score_priority: str = "all"  # "always" | "sparse" | "all"
    accuracy: dict[str, Any] | None = None
    accuracy_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, cs: CodedSet, float_model_bytes: int) -> dict[str, Any]:
        mb = cs.numel / 1e6
        enc = statistics.median(self.encode_s) if self.encode_s else None
        dec = statistics.median(self.decode_s) if self.decode_s else None
        return {
            "id": self.id, "codec": self.codec, "family": self.family, "label": self.label,
            "settings": self.settings, "lossless": self.lossless,
            "coded_bytes": self.coded_bytes,
            "coded_bits_per_weight": 8.0 * self.coded_bytes / cs.numel,
            "model_bytes": self.model_bytes, "model_bytes_source": self.model_bytes_source,
            "ratio_vs_float32": float_model_bytes / self.model_bytes,
            "error_int8_units": {k: v for k, v in self.errors.items() if k != "layers"},
            "error_int8_units_per_layer": self.errors["layers"],
            "accuracy": self.accuracy, "accuracy_note": self.accuracy_note,
            "timing": {
                "encode_seconds": self.encode_s, "decode_seconds": self.decode_s,
                "encode_median_s": enc, "decode_median_s": dec,
                "encode_mb_per_s": (mb / enc) if enc else None,
                "decode_mb_per_s": (mb / dec) if dec else None,
                "note": self.timing_note,
            },
            "memory": self.memory,
            **({"extra": self.extra} if self.extra else {}),
        }


def _median_or_none(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------------------------
# codecs
# --------------------------------------------------------------------------------------------
def hevc_qstep(qp: int) -> float:
    """HEVC quantizer step for 8-bit samples, in int8 units."""
    return 2.0 ** ((qp - 4) / 6.0)


def _zipnn_codec(zipnn_mod):
    # zipnn 0.5.4 has no integer dtype (integer input raises "Support only uint32 with NumPy
    # format"). A byte buffer typed float8_e4m3fn takes its one-byte path: the sign bit is
    # rotated (a bijection on byte values) and each 128 KiB chunk is Huffman-coded (FSE huf0).
    return zipnn_mod.ZipNN(input_format="byte", bytearray_dtype="float8_e4m3fn", threads=0)


class Bench:
    """Runs every codec on one model's comparison set."""

    def __init__(self, spec: str, args: argparse.Namespace, console, progress) -> None:
        self.spec = spec
        self.args = args
        self.console = console
        self.progress = progress
        self.records: list[Record] = []
        self.notes: list[str] = []
        self.skipped: list[str] = []

    def log(self, msg: str) -> None:
        self.console.log(f"[bold]{self.spec}[/]: {msg}")

    # ---- setup --------------------------------------------------------------------------
    def load(self) -> bool:
        import torch

        from weightcodec import api
        from weightcodec.config import EncodeConfig, HevcSettings
        from weightcodec.evaluation import Evaluator
        from weightcodec.evaluation.models import default_weights_for, load_state_dict_file

        self.evaluator = None
        self.eval_note = None
        try:
            self.evaluator = Evaluator.create(self.spec, limit=None)
            sd = self.evaluator.reference_state_dict()
            self.weights_path = str(self.evaluator.weights)
        except FileNotFoundError as exc:
            try:
                path = default_weights_for(self.spec)
                sd = load_state_dict_file(path)
            except (FileNotFoundError, ValueError):
                self.console.log(f"[yellow]skipping {self.spec}: {exc}[/]")
                return False
            self.weights_path = str(path)
            self.eval_note = f"no evaluation set ({exc}); accuracy not measured"
            self.log(f"[yellow]{self.eval_note}[/]")
        self.state_dict = OrderedDict((k, v.detach().cpu()) for k, v in sd.items())
        self.float_model_bytes = int(sum(t.numel() * t.element_size() for t in self.state_dict.values()))

        self.log("weightcodec lossless round trip (defines the int8 tensors every codec codes)")
        self.lossless_config = EncodeConfig(hevc=HevcSettings(lossless=True))
        enc = api.encode(self.state_dict, config=self.lossless_config)
        dec = api.decode(enc.data, as_state_dict=True)
        coded = [layer for layer in enc.report.layers if layer.storage == "hevc"]
        if not coded:
            self.console.log(f"[yellow]skipping {self.spec}: weightcodec codes no layer with HEVC[/]")
            return False
        names = [layer.name for layer in coded]
        self.cs = CodedSet(
            names=names,
            weights={n: self.state_dict[n].float().numpy().copy() for n in names},
            q={n: np.asarray(dec.quantized[n].values, dtype=np.int8) for n in names},
            scales={n: np.asarray(dec.quantized[n].scales, dtype=np.float32) for n in names},
            axis={n: int(dec.quantized[n].axis) for n in names},
            granularity={n: dec.quantized[n].granularity for n in names},
        )
        self.coded_layers = [{"name": l.name, "shape": list(l.shape), "numel": int(math.prod(l.shape)),
                              "granularity": l.granularity, "scales": int(self.cs.scales[l.name].size)}
                             for l in coded]
        self.lossless_encode = enc
        self.base_state_dict = dec.state_dict  # weightcodec's default decoding of every other tensor
        self.rest_bytes = enc.report.total_bytes - sum(l.stored_bytes for l in coded)
        self.log(f"coded layers: {', '.join(f'{l.name} {tuple(l.shape)}' for l in coded)} "
                 f"({self.cs.numel:,} weights); rest of the container {self.rest_bytes:,} bytes")
        return True

    def rest_plus(self, coded_bytes: int) -> int:
        return self.rest_bytes + coded_bytes

    # ---- helpers ------------------------------------------------------------------------
    def _sub_float(self) -> dict[str, np.ndarray]:
        return {n: self.cs.weights[n] for n in self.cs.names}

    def _sub_int8(self) -> dict[str, np.ndarray]:
        return {n: self.cs.q[n] for n in self.cs.names}

    def _memory(self, codec: str, arrays: dict[str, np.ndarray], **params) -> dict[str, Any] | None:
        if self.args.no_memory:
            return None
        return measure_memory(codec, arrays, **params)

    # ---- rows ---------------------------------------------------------------------------
    def add_reference_rows(self) -> None:
        from weightcodec import api
        from weightcodec.config import EncodeConfig

        cs = self.cs
        f32 = {n: cs.weights[n].astype(np.float64) for n in cs.names}
        self.records.append(Record(
            id="float32", codec="float32", family="float32", label="float32 (reference)",
            settings={}, lossless=True, coded_bytes=4 * cs.numel, model_bytes=self.float_model_bytes,
            model_bytes_source="sum of the state_dict's tensor bytes",
            errors=error_stats(cs, {n: f32[n] / cs.scale_like(n) for n in cs.names}),
            recon=f32, recon_kind="float", score_priority="always"))
        if "int8" in self.args.codecs:
            quant = api.encode(self.state_dict, config=EncodeConfig(code_matrices=False, compress_raw=False))
            self.records.append(Record(
                id="int8", codec="int8", family="int8", label="int8 + scales (Quant)",
                settings={"granularity": {n: cs.granularity[n] for n in cs.names}}, lossless=True,
                coded_bytes=cs.numel + cs.scale_bytes, model_bytes=quant.report.total_bytes,
                model_bytes_source="weightcodec container with code_matrices=False, compress_raw=False "
                                   "(every tensor stored uncompressed: int8 + scales, others float)",
                errors=error_stats(cs, cs.q), recon=cs.q, score_priority="always"))

    def add_weightcodec_rows(self, qps: tuple[int, ...]) -> None:
        import torch

        from weightcodec import api
        from weightcodec.config import EncodeConfig, HevcSettings

        cs = self.cs
        sub = OrderedDict((n, torch.from_numpy(cs.weights[n])) for n in cs.names)
        for qp in ("lossless", *qps):
            lossless = qp == "lossless"
            self.step(f"weightcodec {'lossless' if lossless else f'QP {qp}'}")
            config = EncodeConfig(hevc=HevcSettings(lossless=True) if lossless else HevcSettings(qp=int(qp)))
            enc = self.lossless_encode if lossless else api.encode(self.state_dict, config=config)
            dec = api.decode(enc.data, as_state_dict=True)
            coded = {l.name: l for l in enc.report.layers if l.storage == "hevc"}
            if sorted(coded) != sorted(cs.names):
                raise BenchError(f"{self.spec}: QP {qp} codes {sorted(coded)}, lossless codes {sorted(cs.names)}")
            recon = {n: np.asarray(dec.quantized[n].values) for n in cs.names}
            errors = error_stats(cs, recon)
            if lossless and errors["max_vs_int8"] != 0:
                raise BenchError(f"{self.spec}: weightcodec lossless did not round-trip the int8 values")
            enc_s, dec_s = [], []
            for _ in range(self.args.repeats):
                t0 = time.perf_counter()
                r = api.encode(sub, config=config)
                t1 = time.perf_counter()
                api.decode(r.data, as_state_dict=True)
                enc_s.append(t1 - t0)
                dec_s.append(time.perf_counter() - t1)
            settings = {"qp": None if lossless else int(qp), "lossless": lossless,
                        "preset": config.hevc.preset, "chroma": config.hevc.chroma,
                        "x265_params": config.hevc.x265_params(), "backend": config.backend,
                        "granularity": config.quant.granularity}
            if not lossless:
                settings["qstep_int8_units"] = hevc_qstep(int(qp))
            layers = [{"name": n, "stored_bytes": coded[n].stored_bytes, "profile": coded[n].profile,
                       "level": coded[n].level} for n in cs.names]
            self.records.append(Record(
                id=f"weightcodec/{'lossless' if lossless else f'qp{qp}'}", codec="weightcodec",
                family="weightcodec lossless" if lossless else "weightcodec HEVC",
                label=f"weightcodec {'lossless' if lossless else f'QP {qp}'}",
                settings=settings, lossless=lossless,
                coded_bytes=sum(coded[n].stored_bytes for n in cs.names),
                model_bytes=enc.report.total_bytes, model_bytes_source="the whole .wcodec container",
                errors=errors, encode_s=enc_s, decode_s=dec_s,
                timing_note="api.encode / api.decode of a state_dict holding only the coded layers "
                            "(float32 in: includes quantization, container, HEVC via PyAV/libx265)",
                memory=self._memory("weightcodec", self._sub_float(), lossless=lossless,
                                    qp=None if lossless else int(qp)),
                recon=recon, extra={"layers": layers},
                score_priority="always" if lossless else ("sparse" if qp in SPARSE_WC_QPS else "all")))

    def add_zstd_row(self) -> None:
        import zstandard

        cs = self.cs
        self.step("zstd -19")
        enc_s, dec_s, sizes = self._time_lossless_bytes_codec(
            "zstd", lambda b: zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(b),
            lambda c: zstandard.ZstdDecompressor().decompress(c))
        coded = sum(sizes) + cs.scale_bytes
        self.records.append(Record(
            id="zstd/19", codec="zstd", family="zstd -19", label="zstd -19 (int8)",
            settings={"level": ZSTD_LEVEL, "per_layer": True, "zstandard": zstandard.__version__},
            lossless=True, coded_bytes=coded, model_bytes=self.rest_plus(coded),
            model_bytes_source="rest of weightcodec's container + zstd bytes of the coded layers + scales",
            errors=error_stats(self.cs, cs.q), encode_s=enc_s, decode_s=dec_s,
            timing_note="compress/decompress of each layer's int8 bytes, one thread",
            memory=self._memory("zstd", self._sub_int8()), recon=cs.q, score_priority="always",
            extra={"layer_bytes": dict(zip(cs.names, sizes))}))

    def _time_lossless_bytes_codec(self, name: str, compress, decompress) -> tuple[list, list, list[int]]:
        """Encode/decode seconds per repeat and compressed sizes of each coded layer's int8 bytes."""
        cs = self.cs
        raw = [cs.q[n].tobytes() for n in cs.names]
        enc_s, dec_s, sizes = [], [], []
        for _ in range(self.args.repeats):
            t0 = time.perf_counter()
            comp = [compress(b) for b in raw]
            t1 = time.perf_counter()
            back = [decompress(c) for c in comp]
            dec_s.append(time.perf_counter() - t1)
            enc_s.append(t1 - t0)
            if back != raw:
                raise BenchError(f"{self.spec}: {name} round trip mismatch")
            sizes = [len(c) for c in comp]
        return enc_s, dec_s, sizes

    def add_zipnn_row(self) -> None:
        try:
            with warnings.catch_warnings():  # zipnn imports torch.jit.script (deprecated)
                warnings.simplefilter("ignore")
                import zipnn
        except ImportError as exc:
            msg = f"zipnn not installed ({exc}); pip install zipnn (or the 'bench' extra)"
            self.skipped.append(msg)
            self.log(f"[yellow]skipping zipnn: {msg}[/]")
            return
        import importlib.metadata

        cs = self.cs
        self.step("zipnn")
        z = _zipnn_codec(zipnn)
        enc_s, dec_s, sizes = self._time_lossless_bytes_codec(
            "zipnn", z.compress, lambda c: bytes(z.decompress(c)))
        coded = sum(sizes) + cs.scale_bytes
        self.records.append(Record(
            id="zipnn", codec="zipnn", family="zipnn", label="zipnn (int8)",
            settings={"zipnn": importlib.metadata.version("zipnn"), "input_format": "byte",
                      "bytearray_dtype": "float8_e4m3fn (one-byte path; zipnn has no int8 dtype)",
                      "method": "AUTO (Huffman, 128 KiB chunks)", "threads": z.threads, "per_layer": True},
            lossless=True, coded_bytes=coded, model_bytes=self.rest_plus(coded),
            model_bytes_source="rest of weightcodec's container + zipnn bytes of the coded layers + scales",
            errors=error_stats(self.cs, cs.q), encode_s=enc_s, decode_s=dec_s,
            timing_note=f"ZipNN.compress/decompress of each layer's int8 bytes, threads={z.threads}",
            memory=self._memory("zipnn", self._sub_int8()), recon=cs.q, score_priority="always",
            extra={"layer_bytes": dict(zip(cs.names, sizes))}))

    # ---- nncodec ------------------------------------------------------------------------
    def _nnc(self, arrays, *, kind, qp, use_dq, options=None) -> tuple[dict, list[float], list[float], float]:
        from bench.nncodec_client import run_nncodec

        first, enc_s, dec_s, peak = None, [], [], 0
        for i in range(self.args.repeats):
            res = run_nncodec(arrays, kind=kind, qp=qp, use_dq=use_dq, options=options, install=False,
                              python=self.nnc_python)
            enc_s.append(res["encode_seconds"])
            dec_s.append(res["decode_seconds"])
            peak = max(peak, res["peak_rss_bytes"])
            if first is None:
                first = res
            elif res["compressed_bytes"] != first["compressed_bytes"]:
                raise BenchError(f"{self.spec}: nncodec is not deterministic ({kind} qp={qp})")
        return first, enc_s, dec_s, peak

    def _nnc_memory(self, peak: int, kind: str) -> dict[str, Any]:
        base = self.nnc_baseline.get(kind)
        return {"method": "VmHWM of the nncodec worker process (max over repeats); delta = minus the "
                          "VmHWM of the same worker on a 64x64 tensor",
                "peak_rss_mib": round(peak / MIB, 1),
                "peak_delta_mib": None if base is None else round((peak - base) / MIB, 1)}

    def setup_nncodec(self) -> bool:
        from bench.nncodec_client import run_nncodec
        from bench.nncodec_env import NNCodecError, ensure_nncodec_venv, read_marker

        if getattr(self.args, "_nnc_python", None) is None:
            try:
                self.log("nncodec venv (built on first use: ~2.5 min)")
                self.args._nnc_python = ensure_nncodec_venv()
                self.args._nnc_marker = read_marker()
            except NNCodecError as exc:
                self.args._nnc_python = False
                self.args._nnc_error = str(exc).splitlines()[0]
        if not self.args._nnc_python:
            msg = f"nncodec unavailable: {self.args._nnc_error}"
            self.skipped.append(msg)
            self.log(f"[yellow]skipping nncodec: {msg}[/]")
            return False
        self.nnc_python = self.args._nnc_python
        if getattr(self.args, "_nnc_baseline", None) is None:
            tiny = np.arange(-2048, 2048, dtype=np.int32).reshape(64, 64) % 100
            b_int = run_nncodec({"w": tiny}, kind="int", qp=None, python=self.nnc_python)
            b_flt = run_nncodec({"w": tiny.astype(np.float32) / 100}, kind="float", qp=-32, python=self.nnc_python)
            self.args._nnc_baseline = {"int": b_int["peak_rss_bytes"], "float": b_flt["peak_rss_bytes"],
                                       "version": b_int["nncodec_version"]}
        self.nnc_baseline = self.args._nnc_baseline
        return True

    def add_nncodec_rows(self, qps: tuple[int, ...], float_offsets: tuple[int, ...]) -> None:
        from bench.nncodec_client import nncodec_qp_for_step, nncodec_step_for_qp
        from bench.nncodec_env import NNCodecError

        if not self.setup_nncodec():
            return
        cs = self.cs
        version = self.nnc_baseline["version"]
        ints = self._sub_int8()
        floats = self._sub_float()
        timing_note = ("nnc.compress / nnc.decompress inside the worker (excludes process start, npz I/O); "
                       "MB/s per int8 weight")

        def row(id_, family, label, settings, res, enc_s, dec_s, peak, kind, recon, recon_kind, coded,
                priority, src):
            recon_units = recon if recon_kind == "int8" else {n: recon[n] / cs.scale_like(n) for n in cs.names}
            self.records.append(Record(
                id=id_, codec="nncodec", family=family, label=label,
                settings={"nncodec": version, **settings, "compress_kwargs": res["compress_kwargs"]},
                lossless=bool(res["lossless"]), coded_bytes=coded, model_bytes=self.rest_plus(coded),
                model_bytes_source=src, errors=error_stats(cs, recon_units), encode_s=enc_s, decode_s=dec_s,
                timing_note=timing_note, memory=self._nnc_memory(peak, kind), recon=recon,
                recon_kind=recon_kind, score_priority=priority,
                extra={"bitstream_bytes": res["compressed_bytes"]}))

        src_int = "rest of weightcodec's container + nncodec bitstream of the coded layers + float32 scales"
        src_flt = "rest of weightcodec's container + nncodec bitstream of the coded layers (no scales needed)"
        try:
            # 1. int8 values, lossless (int32 input, DeepCABAC without quantization)
            self.step("nncodec int8 lossless")
            res, e, d, peak = self._nnc(ints, kind="int", qp=None, use_dq=False)
            recon = {n: res["arrays"][n].astype(np.int64) for n in cs.names}
            row("nncodec/int8-lossless", "nncodec int8 lossless", "nncodec int8 lossless",
                {"kind": "int", "qp": None}, res, e, d, peak, "int", recon, "int8",
                res["compressed_bytes"] + cs.scale_bytes, "always", src_int)

            # 2. int8 values, lossy at the step of each HEVC QP (uniform and DQ)
            for use_dq in (False, True):
                for qp in qps:
                    step = hevc_qstep(qp)
                    nqp = nncodec_qp_for_step(step)
                    mode = "DQ" if use_dq else "uniform"
                    self.step(f"nncodec int8 {mode} step~QP{qp}")
                    res, e, d, peak = self._nnc(ints, kind="int", qp=nqp, use_dq=use_dq)
                    recon = {n: res["arrays"][n].astype(np.float64) for n in cs.names}
                    priority = "sparse" if (not use_dq and qp in SPARSE_NNC_INT_QPS) else "all"
                    row(f"nncodec/int8-{mode.lower()}/qp{qp}", f"nncodec int8 {mode}",
                        f"nncodec int8 {mode}, step of QP {qp}",
                        {"kind": "int", "use_dq": use_dq, "matched_hevc_qp": qp, "hevc_qstep": step,
                         "nncodec_qp": nqp, "nncodec_step_int8_units": nncodec_step_for_qp(nqp)},
                        res, e, d, peak, "int", recon, "int8", res["compressed_bytes"] + cs.scale_bytes,
                        priority, src_int)

            # 3. float weights, uniform at the int8 step of each tensor
            self.step("nncodec float uniform, int8 step")
            steps = {n: cs.tensor_step(n) for n in cs.names}
            res, e, d, peak = self._nnc(floats, kind="float", qp=None, use_dq=False,
                                        options={"step_per_tensor": steps})
            recon = {n: res["arrays"][n].astype(np.float64) for n in cs.names}
            row("nncodec/float-uniform/int8-step", "nncodec float uniform (int8 step)",
                "nncodec float uniform, int8 step", {"kind": "float", "use_dq": False, "step_per_tensor": steps},
                res, e, d, peak, "float", recon, "float", res["compressed_bytes"], "all", src_flt)

            # 4. float weights, DQ, one global qp (nncodec's own usage), around the int8 step
            s_med = float(np.exp(np.mean([np.log(cs.tensor_step(n)) for n in cs.names])))
            base = nncodec_qp_for_step(s_med)
            for off in float_offsets:
                nqp = base + off
                self.step(f"nncodec float DQ qp {nqp}")
                res, e, d, peak = self._nnc(floats, kind="float", qp=nqp, use_dq=True)
                recon = {n: res["arrays"][n].astype(np.float64) for n in cs.names}
                row(f"nncodec/float-dq/qp{nqp}", "nncodec float DQ", f"nncodec float DQ qp {nqp}",
                    {"kind": "float", "use_dq": True, "qp": nqp, "qp_offset_vs_int8_step": off,
                     "step": nncodec_step_for_qp(nqp), "step_over_int8_scale": nncodec_step_for_qp(nqp) / s_med},
                    res, e, d, peak, "float", recon, "float", res["compressed_bytes"],
                    "sparse" if off in SPARSE_NNC_FLOAT_OFFSETS else "all", src_flt)
        except NNCodecError as exc:
            raise BenchError(f"{self.spec}: {str(exc).splitlines()[0]}") from exc

    # ---- accuracy -----------------------------------------------------------------------
    def score_rows(self, mode: str) -> None:
        import torch

        if self.evaluator is None:
            for r in self.records:
                r.accuracy_note = self.eval_note
            return
        cs = self.cs
        cache: dict[str, dict] = {}
        wanted = {"all": {"always", "sparse", "all"}, "sparse": {"always", "sparse"}, "none": set()}[mode]
        for r in self.records:
            if r.score_priority not in wanted:
                r.accuracy_note = f"not scored (--score {mode})"
                continue
            if r.codec == "float32":
                key = "float32"
            else:
                h = hashlib.sha256()
                for n in cs.names:
                    w = r.recon[n] if r.recon_kind == "float" else r.recon[n].astype(np.float64) * cs.scale_like(n)
                    h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
                key = h.hexdigest()
            if key not in cache:
                self.step(f"score {r.label}", scoring=True)
                task = self.progress.add_task(f"  top-1 {r.label}", total=None)

                def cb(done, total, task=task):
                    self.progress.update(task, completed=done, total=total)

                t0 = time.perf_counter()
                if r.codec == "float32":
                    acc = self.evaluator.score(None, progress=cb)
                else:
                    sd = OrderedDict(self.base_state_dict)
                    for n in cs.names:
                        w = r.recon[n] if r.recon_kind == "float" else r.recon[n].astype(np.float64) * cs.scale_like(n)
                        sd[n] = torch.from_numpy(np.asarray(w, dtype=np.float32)).to(self.state_dict[n].dtype)
                    acc = self.evaluator.score(sd, progress=cb)
                self.progress.remove_task(task)
                cache[key] = {"top1": float(acc["top1"]), "top5": float(acc["top5"]), "n": int(acc["n"]),
                              "seconds": round(time.perf_counter() - t0, 1), "scored_as": r.id}
            a = cache[key]
            r.accuracy = {k: a[k] for k in ("top1", "top5", "n")}
            if a["scored_as"] != r.id:
                r.accuracy_note = f"identical reconstruction to {a['scored_as']}: same score"
        self.score_seconds = sum(v["seconds"] for v in cache.values())
        self.scores_run = len(cache)

    # ---- driver -------------------------------------------------------------------------
    def step(self, what: str, scoring: bool = False) -> None:
        self.progress.update(self.task, description=f"{self.spec}: {what}", advance=1)

    def run(self) -> dict[str, Any] | None:
        args = self.args
        qps = QUICK_QPS if args.quick else WC_QPS
        offsets = QUICK_NNC_FLOAT_OFFSETS if args.quick else NNC_FLOAT_OFFSETS
        self.task = self.progress.add_task(f"{self.spec}: loading", total=None)
        started = time.perf_counter()
        if not self.load():
            self.progress.remove_task(self.task)
            return None
        mode = args.score
        if mode == "auto":
            mode = "none" if self.evaluator is None else ("sparse" if self.spec in SPARSE_BY_DEFAULT else "all")
        n_nnc = 1 + 2 * len(qps) + 1 + len(offsets)
        total = ((len(qps) + 1) if "weightcodec" in args.codecs else 0) + ("zstd" in args.codecs) + \
            ("zipnn" in args.codecs) + (n_nnc if "nncodec" in args.codecs else 0)
        self.progress.update(self.task, total=total, completed=0)

        self.add_reference_rows()
        if "weightcodec" in args.codecs:
            self.add_weightcodec_rows(qps)
        if "zstd" in args.codecs:
            self.add_zstd_row()
        if "zipnn" in args.codecs:
            self.add_zipnn_row()
        if "nncodec" in args.codecs:
            self.add_nncodec_rows(qps, offsets)
        self.score_seconds, self.scores_run = 0.0, 0
        done = next(t.completed for t in self.progress.tasks if t.id == self.task)
        self.progress.update(self.task, total=done + len(self.records))
        self.score_rows(mode)
        self.progress.update(self.task, completed=done + len(self.records), description=f"{self.spec}: done")
        result = {
            "model": self.spec,
            "weights": self.weights_path,
            "evaluation": None if self.evaluator is None else {
                "dataset": self.evaluator.dataset, "samples": self.evaluator.num_samples,
                "preprocessing": self.evaluator.preprocessing, "score_mode": mode,
                "scores_run": self.scores_run, "score_seconds": round(self.score_seconds, 1)},
            "evaluation_note": self.eval_note,
            "coded_layers": self.coded_layers,
            "coded_weights": self.cs.numel,
            "scale_bytes": self.cs.scale_bytes,
            "rest_bytes": self.rest_bytes,
            "float32_model_bytes": self.float_model_bytes,
            "weightcodec_quant_config": dataclasses.asdict(self.lossless_config.quant),
            "weightcodec_git": _git_state(),
            "skipped": self.skipped,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "records": [r.to_json(self.cs, self.float_model_bytes) for r in self.records],
        }
        result["rate_at_equal_error"] = rate_comparisons(result["records"])
        return result


# --------------------------------------------------------------------------------------------
# rate at equal error
# --------------------------------------------------------------------------------------------
def bytes_change_at_equal_error(ref: list[tuple[float, float]], other: list[tuple[float, float]],
                                samples: int = 200) -> dict[str, Any] | None:
    """Mean change of log(bytes) of ``other`` vs ``ref`` at equal error (Bjontegaard style).

    Both are lists of (error, bytes) points. log(bytes) is interpolated piecewise-linearly over
    log(error) on the error range both curves cover; the mean log difference is returned as a
    percentage (negative: ``other`` needs fewer bytes for the same error). ``None`` when the
    ranges do not overlap or a curve has fewer than two points.
    """
    def prep(pts):
        pts = sorted((math.log(e), math.log(b)) for e, b in pts if e > 0 and b > 0)
        return pts if len(pts) >= 2 else None

    a, b = prep(ref), prep(other)
    if a is None or b is None:
        return None
    lo, hi = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if not hi > lo:
        return None
    xs = np.linspace(lo, hi, samples)
    ya = np.interp(xs, [p[0] for p in a], [p[1] for p in a])
    yb = np.interp(xs, [p[0] for p in b], [p[1] for p in b])
    return {"bytes_change_pct": 100.0 * (math.exp(float(np.mean(yb - ya))) - 1.0),
            "error_range": [math.exp(lo), math.exp(hi)]}


def rate_comparisons(records: list[dict[str, Any]], metric: str = "rmse_vs_float") -> list[dict[str, Any]]:
    """Each lossy peer curve against the weightcodec HEVC curve, at equal ``metric``."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r["lossless"] or r["codec"] in ("float32", "int8"):
            continue
        curves.setdefault(r["family"], []).append((r["error_int8_units"][metric], r["coded_bytes"]))
    ref = curves.get("weightcodec HEVC")
    out = []
    if not ref:
        return out
    for fam, pts in curves.items():
        if fam == "weightcodec HEVC" or len(pts) < 2:
            continue
        cmp = bytes_change_at_equal_error(ref, pts)
        out.append({"family": fam, "vs": "weightcodec HEVC", "metric": metric, "points": len(pts),
                    **(cmp or {"bytes_change_pct": None, "error_range": None})})
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _git_state() -> dict[str, Any] | None:
    """The checkout the numbers come from: commit and whether weightcodec/ had local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "weightcodec"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.split("\n")
        return {"commit": head, "weightcodec_modified": sorted(l[3:] for l in dirty if l.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def fmt(x: float | None, spec: str, dash: str = "-") -> str:
    return dash if x is None else format(x, spec)


def markdown_table(result: dict[str, Any]) -> str:
    coded = ", ".join(f"`{c['name']}` {'x'.join(map(str, c['shape']))}" for c in result["coded_layers"])
    ev = result["evaluation"]
    head = (f"### {result['model']}\n\nCoded layers: {coded} ({result['coded_weights']:,} weights). "
            f"Float32 model: {result['float32_model_bytes']:,} bytes. ")
    head += (f"Accuracy on {ev['samples']} {ev['dataset']} images (`--score {ev['score_mode']}`)."
             if ev else (result["evaluation_note"] or "No accuracy."))
    if result["skipped"]:
        head += " Skipped: " + "; ".join(result["skipped"]) + "."
    lines = [head, "",
             "| codec / setting | coded bytes | bits/w | model bytes | RMSE vs int8 | max vs int8 | RMSE vs float "
             "| top-1 | top-5 | enc MB/s | dec MB/s | peak RSS MiB (+delta) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["records"]:
        e = r["error_int8_units"]
        acc = r["accuracy"]
        t = r["timing"]
        m = r["memory"]
        mem = "-" if not m or m.get("peak_rss_mib") is None else f"{m['peak_rss_mib']:.0f} (+{m['peak_delta_mib']:.0f})"
        lines.append(
            f"| {r['label']} | {r['coded_bytes']:,} | {r['coded_bits_per_weight']:.3f} | {r['model_bytes']:,} "
            f"| {e['rmse_vs_int8']:.3f} | {e['max_vs_int8']:.2f} | {e['rmse_vs_float']:.3f} "
            f"| {fmt(acc and acc['top1'], '.2f')} | {fmt(acc and acc['top5'], '.2f')} "
            f"| {fmt(t['encode_mb_per_s'], '.2f')} | {fmt(t['decode_mb_per_s'], '.1f')} | {mem} |")
    cmps = [c for c in result.get("rate_at_equal_error", []) if c["bytes_change_pct"] is not None]
    if cmps:
        lines += ["", "Bytes at equal RMSE vs float (piecewise-linear log(bytes) over log(RMSE), on the RMSE range "
                  "both curves cover), relative to weightcodec HEVC (negative = the peer is smaller):", ""]
        for c in cmps:
            lo, hi = c["error_range"]
            lines.append(f"- {c['family']}: **{c['bytes_change_pct']:+.1f} %** (RMSE {lo:.2f}-{hi:.2f} int8 units, "
                         f"{c['points']} points)")
    return "\n".join(lines) + "\n"


def summary_markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    runs = meta.get("runs") or [meta]
    cmd = (f"Command: `{meta['command']}`  " if len(runs) == 1 else
           "Commands (models measured in separate runs): " +
           "; ".join(f"`{r['command']}` (load {r.get('loadavg_before', '-')} -> {r.get('loadavg_after', '-')}, "
                     f"{fmt(r.get('wall_seconds'), '.0f', '?')} s)" for r in runs) + "  ")
    out = [
        "# Benchmark: weightcodec vs nncodec, zstd, zipnn, int8",
        "",
        cmd,
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB, "
        f"{m['platform']}, Python {m['python']}, torch {m['versions']['torch']} ({m['torch_threads']} threads), "
        f"PyAV {m['versions']['av']}, zstandard {m['versions']['zstandard']}, zipnn {m['versions']['zipnn']}, "
        f"nncodec {meta.get('nncodec_version') or '-'}." + ("" if len(runs) > 1 else
        f" Load average before/after: {meta.get('loadavg_before', '-')} / {meta.get('loadavg_after', '-')}. "
        f"Wall time {fmt(meta.get('wall_seconds'), '.0f', '?')} s."),
        "",
        "Columns: *coded bytes* = the layers weightcodec codes with HEVC (+ float32 scales where the decoder needs "
        "them); *model bytes* = the whole model (weightcodec rows: the real container; peer rows: weightcodec's "
        "container minus its coded layers, plus the peer's bytes). Errors are in **int8 units** (error / int8 "
        "scale of the tensor): *vs int8* against weightcodec's int8 values, *vs float* against the float32 "
        "weights. MB/s = int8 weights (1 byte each) per second, median of "
        f"{meta['repeats']} runs. Peak RSS: a fresh process running only that codec's encode+decode "
        "(absolute, and the rise above the process's idle footprint).",
        "",
    ]
    for r in results:
        out.append(markdown_table(r))
    return "\n".join(out)


FAMILY_STYLE = {
    "weightcodec HEVC": dict(color="C0", marker="o", ls="-"),
    "nncodec float DQ": dict(color="C3", marker="s", ls="-"),
    "nncodec int8 uniform": dict(color="C1", marker="^", ls="--"),
    "nncodec int8 DQ": dict(color="C5", marker="v", ls=":"),
}
POINT_STYLE = {
    "weightcodec lossless": dict(color="C0", marker="*", ms=12),
    "int8": dict(color="k", marker="x", ms=8),
    "zstd -19": dict(color="C2", marker="D", ms=7),
    "zipnn": dict(color="C4", marker="P", ms=8),
    "nncodec int8 lossless": dict(color="C3", marker="*", ms=11),
    "nncodec float uniform (int8 step)": dict(color="C3", marker="h", ms=8),
}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    recs = [r for r in result["records"] if r["codec"] != "float32"]
    has_acc = any(r["accuracy"] for r in recs)
    ncols = 2 if has_acc else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.6), squeeze=False)
    axes = axes[0]
    f32 = next(r for r in result["records"] if r["codec"] == "float32")

    def draw(ax, yfun, ylabel, logy=False):
        fams: dict[str, list] = {}
        for r in recs:
            y = yfun(r)
            if y is None:
                continue
            fams.setdefault(r["family"], []).append((r["coded_bytes"] / 1e3, y))
        for fam, pts in fams.items():
            pts.sort()
            xs, ys = zip(*pts)
            if fam in FAMILY_STYLE:
                ax.plot(xs, ys, label=fam, ms=5, **FAMILY_STYLE[fam])
            else:
                ax.plot(xs, ys, ls="none", label=fam, **POINT_STYLE.get(fam, dict(marker="o")))
        ax.set_xlabel("coded-layer bytes (kB, incl. scales)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
        if logy:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
        ax.grid(alpha=0.3, which="both")

    draw(axes[-1], lambda r: r["error_int8_units"]["rmse_vs_float"], "RMSE vs float weights (int8 units)", True)
    axes[-1].set_title("error")
    if has_acc:
        draw(axes[0], lambda r: r["accuracy"]["top1"] if r["accuracy"] else None, "top-1 (%)")
        if f32["accuracy"]:
            axes[0].axhline(f32["accuracy"]["top1"], color="grey", ls=":", lw=1, label="float32")
        axes[0].set_title(f"top-1 ({result['evaluation']['samples']} images)")
        axes[0].legend(fontsize=7, loc="lower right")
    else:
        axes[-1].legend(fontsize=7)
    fig.suptitle(f"{result['model']}: {', '.join(c['name'] for c in result['coded_layers'])}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timing runs per setting; the median is reported")
    ap.add_argument("--quick", action="store_true",
                    help=f"QPs {QUICK_QPS} only, nncodec float offsets {QUICK_NNC_FLOAT_OFFSETS}, 1 repeat")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--codecs", default=",".join(CODECS), help="subset of %(default)s")
    ap.add_argument("--score", choices=("auto", "all", "sparse", "none"), default="auto",
                    help="which rows get top-1/top-5: auto = sparse for mobilenet_v2, all otherwise")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS probe processes")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--from-json", action="store_true",
                    help="measure nothing: rebuild summary.md and the plots from the JSON files in --out")
    ap.add_argument("--_mem-job", dest="mem_job", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mem_job is not None:
        return args
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    args.codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    bad = sorted(set(args.codecs) - set(CODECS))
    if bad:
        ap.error(f"unknown codec(s) {bad}; choose from {', '.join(CODECS)}")
    if args.quick and args.repeats == 3:
        args.repeats = 1
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    meta: dict[str, Any] = {
        "tool": "bench/run.py",
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": args.repeats, "quick": args.quick, "codecs": args.codecs,
        "machine": machine_info(), "loadavg_before": load_before,
    }
    results = []
    args.out.mkdir(parents=True, exist_ok=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        for spec in args.models:
            bench = Bench(spec, args, console, progress)
            result = bench.run()
            if result is None:
                continue
            meta["nncodec_version"] = (getattr(args, "_nnc_baseline", None) or {}).get("version")
            doc = {**meta, "model_result": result}
            (args.out / f"{spec}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            if not args.no_plot:
                plot(result, args.out / f"{spec}.png")
            results.append(result)
            console.log(f"[green]{spec}[/]: wrote {args.out / (spec + '.json')} ({result['wall_seconds']:.0f} s)")
    if not results:
        console.print("[red]error:[/] no model could be benchmarked (see the skip messages above)")
        return 1
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    meta["wall_seconds"] = time.perf_counter() - started
    # Patch the run-level fields into every JSON file so they all describe the same run.
    for r in results:
        p = args.out / f"{r['model']}.json"
        doc = json.loads(p.read_text())
        doc.update({k: v for k, v in meta.items() if k in ("loadavg_after", "wall_seconds", "nncodec_version")})
        doc["wall_seconds"] = round(doc["wall_seconds"], 1)
        p.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    (args.out / "summary.md").write_text(summary_markdown(results, meta))
    console.log(f"wrote {args.out / 'summary.md'}")
    return 0


def rebuild(args: argparse.Namespace) -> int:
    """``--from-json``: summary.md and plots from the JSON files of an earlier run."""
    docs = []
    for spec in args.models:
        p = args.out / f"{spec}.json"
        if p.is_file():
            docs.append(json.loads(p.read_text()))
    if not docs:
        raise BenchError(f"no <model>.json in {args.out} for {', '.join(args.models)}")
    for doc in docs:
        if not args.no_plot:
            plot(doc["model_result"], args.out / f"{doc['model_result']['model']}.png")
    metas = [{k: v for k, v in d.items() if k != "model_result"} for d in docs]
    meta = dict(metas[0])
    distinct = []
    for m in metas:
        if not any(m.get("command") == d.get("command") for d in distinct):
            distinct.append(m)
    if len(distinct) > 1:
        meta["runs"] = distinct
    (args.out / "summary.md").write_text(summary_markdown([d["model_result"] for d in docs], meta))
    print(f"wrote {args.out / 'summary.md'} from {len(docs)} JSON file(s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mem_job is not None:
        return _mem_job(args.mem_job)
    try:
        return rebuild(args) if args.from_json else run(args, argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, non-zero exit
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {type(exc).__name__}: {line}" if not isinstance(exc, BenchError) else f"error: {line}",
              file=sys.stderr)
        if os.environ.get("BENCH_TRACEBACK"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
