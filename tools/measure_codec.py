#!/usr/bin/env python
"""Measurement table for real trained models, end to end through weightcodec's public API.

For each model and QP: bits per weight of the HEVC-coded layers (stream + scale), int8 RMSE and
maximum error of the decoded int8 values against per-tensor symmetric int8 of the original
weights, encode and decode speed in MB/s of int8 weights (encode/decode of the coded layers alone
through ``encode``/``decode``, median of 3 runs), and the size of the whole ``.wcodec`` container.
Reference rows per model: the same coded layers stored as raw int8, as int8 + zstd -19 (the
``zstandard`` module, each layer compressed on its own as the container does) and their order-0
entropy; and the whole model with no HEVC at all (``code_matrices=False``: int8 + zstd).

Reproduce (about 2 minutes on 2 cores; speeds depend on the machine and its load):
    python tools/measure_codec.py --out docs/data/codec_table.json --markdown docs/data/codec_table.md

Assets: ``--assets`` or $WEIGHTCODEC_ASSETS, default ../shared/assets relative to the checkout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

try:
    import weightcodec  # noqa: F401
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import zstandard

from weightcodec import EncodeConfig, HevcSettings, decode, encode
from weightcodec.quant import quantize

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QPS = "lossless,22,26,28,30,34,38"
MODELS = (
    ("mnist_mlp", "mnist/mlp_784_500_250_10.pth"),
    ("mobilenet_v2", "mobilenet_v2/mobilenet_v2_imagenet.pth"),
)


def default_assets() -> Path:
    env = os.environ.get("WEIGHTCODEC_ASSETS")
    return Path(env) if env else (ROOT.parent / "shared" / "assets")


def entropy_bits(values: np.ndarray) -> float:
    counts = np.bincount((values.astype(np.int16) + 128).ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def hevc_settings(qp: str) -> HevcSettings:
    return HevcSettings(lossless=True) if qp == "lossless" else HevcSettings(qp=int(qp))


def timed_runs(sub: OrderedDict, config: EncodeConfig, runs: int) -> tuple[list[float], list[float], int]:
    enc, dec = [], []
    size = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        r = encode(sub, config=config, verify=False)
        t1 = time.perf_counter()
        decode(r.data)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        size = len(r.data)
    return enc, dec, size


def measure_model(label: str, path: Path, qps: list[str], runs: int) -> dict:
    sd = torch.load(path, weights_only=True)
    float_bytes = sum(t.numel() * t.element_size() for t in sd.values())
    plain = encode(sd, config=EncodeConfig(code_matrices=False), verify=False)
    out: dict = {"model": label, "path": str(path), "tensors": len(sd),
                 "parameters": int(sum(t.numel() for t in sd.values())),
                 "float_bytes": int(float_bytes), "int8_zstd_container_bytes": len(plain.data), "rows": []}
    coded_names: list[str] | None = None
    refs: dict[str, np.ndarray] = {}
    for qp in qps:
        config = EncodeConfig(hevc=hevc_settings(qp))
        r = encode(sd, config=config, verify=False)
        d = decode(r.data)
        coded = [layer for layer in r.report.layers if layer.storage == "hevc"]
        names = [layer.name for layer in coded]
        if coded_names is None:
            coded_names = names
            for layer in coded:
                w = sd[layer.name].detach().float().numpy()
                refs[layer.name] = quantize(w, layer.granularity or "per-tensor").values
            out["coded_layers"] = [{"name": layer.name, "shape": list(layer.shape),
                                    "granularity": layer.granularity} for layer in coded]
            weights = sum(refs[n].size for n in names)
            zc = zstandard.ZstdCompressor(level=19)
            zstd_bytes = sum(len(zc.compress(refs[n].tobytes())) for n in names)
            all_q = np.concatenate([refs[n].ravel() for n in names])
            out["reference"] = {
                "coded_weights": int(weights),
                "int8_bits_per_weight": 8.0,
                "zstd19_bytes": int(zstd_bytes),
                "zstd19_bits_per_weight": 8.0 * zstd_bytes / weights,
                "order0_entropy_bits_per_weight": entropy_bits(all_q),
            }
        assert names == coded_names, (names, coded_names)
        sse, n, max_err, per_layer = 0.0, 0, 0, []
        for layer in coded:
            got = d.quantized[layer.name].values.astype(np.int16)
            diff = (got - refs[layer.name].astype(np.int16)).astype(np.float64)
            layer_sse = float(np.sum(diff**2))
            layer_max = int(np.max(np.abs(diff)))
            sse += layer_sse
            n += diff.size
            max_err = max(max_err, layer_max)
            per_layer.append({"name": layer.name, "stored_bytes": layer.stored_bytes,
                              "bits_per_weight": layer.bits_per_weight,
                              "int8_rmse": math.sqrt(layer_sse / diff.size), "int8_max_error": layer_max,
                              "profile": layer.profile, "level": layer.level})
        stored = sum(layer.stored_bytes for layer in coded)
        sub = OrderedDict((name, sd[name]) for name in names)
        enc_s, dec_s, sub_bytes = timed_runs(sub, config, runs)
        mb = n / 1e6  # int8 weights: one byte each
        row = {
            "qp": qp,
            "x265_params": config.hevc.x265_params(),
            "coded_weights": n,
            "coded_stored_bytes": stored,
            "bits_per_weight": 8.0 * stored / n,
            "int8_rmse": math.sqrt(sse / n),
            "int8_max_error": max_err,
            "encode_seconds": enc_s,
            "decode_seconds": dec_s,
            "encode_mb_per_s": mb / statistics.median(enc_s),
            "decode_mb_per_s": mb / statistics.median(dec_s),
            "container_bytes": len(r.data),
            "ratio_vs_float32": float_bytes / len(r.data),
            "whole_model_encode_seconds": r.report.seconds,
            "whole_model_decode_seconds": d.seconds,
            "layers": per_layer,
        }
        out["rows"].append(row)
        print(f"{label} qp={qp}: {row['bits_per_weight']:.3f} b/w rmse {row['int8_rmse']:.3f} "
              f"max {max_err} enc {row['encode_mb_per_s']:.2f} MB/s dec {row['decode_mb_per_s']:.1f} MB/s",
              file=sys.stderr, flush=True)
    return out


def markdown(result: dict) -> str:
    lines = [
        "| model (coded layers) | QP | bits/weight | int8 RMSE | max abs error | encode MB/s | decode MB/s "
        "| container bytes | x smaller than float32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in result["models"]:
        coded = ", ".join(f"{c['name']} {'x'.join(map(str, c['shape']))}" for c in m["coded_layers"])
        label = f"{m['model']} ({coded})"
        for row in m["rows"]:
            lines.append(
                f"| {label} | {row['qp']} | {row['bits_per_weight']:.3f} | {row['int8_rmse']:.3f} | "
                f"{row['int8_max_error']} | {row['encode_mb_per_s']:.2f} | {row['decode_mb_per_s']:.1f} | "
                f"{row['container_bytes']:,} | {row['ratio_vs_float32']:.1f} |")
            label = ""
    lines.append("")
    lines.append("Reference for the same coded layers and models:")
    lines.append("")
    lines.append("| model | coded weights | int8 | order-0 entropy | int8 + zstd -19 | HEVC lossless "
                 "| float32 bytes | container without HEVC (int8 + zstd) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for m in result["models"]:
        ref = m["reference"]
        lossless = next((r for r in m["rows"] if r["qp"] == "lossless"), None)
        ll = f"{lossless['bits_per_weight']:.3f} b/w" if lossless else "-"
        lines.append(
            f"| {m['model']} | {ref['coded_weights']:,} | 8 b/w | {ref['order0_entropy_bits_per_weight']:.3f} b/w | "
            f"{ref['zstd19_bits_per_weight']:.3f} b/w | {ll} | {m['float_bytes']:,} | "
            f"{m['int8_zstd_container_bytes']:,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, default=default_assets(), help="shared assets dir (default: %(default)s)")
    ap.add_argument("--qps", default=DEFAULT_QPS, help="QPs, 'lossless' for HEVC lossless (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=3, help="timing runs, the median is reported (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "data" / "codec_table.json")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    qps = [q.strip() for q in args.qps.split(",") if q.strip()]
    for q in qps:
        hevc_settings(q)  # validate early
    started = time.perf_counter()
    load_before = os.getloadavg()
    models = []
    for label, rel in MODELS:
        path = args.assets / rel
        if not path.is_file():
            print(f"skipping {label}: {path} not found (set --assets or WEIGHTCODEC_ASSETS)", file=sys.stderr)
            continue
        models.append(measure_model(label, path, qps, args.runs))
    if not models:
        return 1
    import av
    result = {
        "tool": "tools/measure_codec.py",
        "command": "python tools/measure_codec.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": {
            "python": platform.python_version(), "pyav": av.__version__, "torch": torch.__version__,
            "zstandard": zstandard.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
        "notes": [
            "bits/weight = 8 * (HEVC stream + float32 scale bytes) / weights of the HEVC-coded layers",
            "int8 RMSE / max error: decoded int8 vs quantize(w, 'per-tensor').values of the original weights",
            "MB/s: int8 weights (1 byte each) of the coded layers / median seconds of encode() (resp. decode()) "
            "of a state_dict holding only those layers, through the public API",
            "container bytes: the whole .wcodec file of the whole model (other tensors int8/raw + zstd -19)",
        ],
        "models": models,
    }
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(f"wrote {args.out}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
