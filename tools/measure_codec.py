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
    python -m tools.measure_codec --out docs/data/codec_table.json --markdown docs/data/codec_table.md

Models come from the registry (:mod:`weightcodec.evaluation.zoo`); their weights from the shared
assets (``--assets`` or $WEIGHTCODEC_ASSETS, default ../shared/assets relative to the checkout).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import click
import numpy as np
import zstandard

from weightcodec import EncodeConfig, decode, encode
from weightcodec.config import build_encode_config
from weightcodec.errors import WeightcodecError
from weightcodec.evaluation import get_model_spec, load_state_dict_file
from weightcodec.measure import int8_error, machine_info
from weightcodec.atomic import atomic_write
from weightcodec.quant import quantize

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QPS = "lossless,22,26,28,30,34,38"
MODELS = ("mnist-mlp", "mobilenet_v2")


def entropy_bits(values: np.ndarray) -> float:
    counts = np.bincount((values.astype(np.int16) + 128).ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def encode_config(qp: str) -> EncodeConfig:
    """``"lossless"`` or a QP, as ``wcodec encode --lossless`` / ``--qp N``."""
    if qp == "lossless":
        return build_encode_config(lossless=True)
    try:
        return build_encode_config(qp=int(qp))
    except ValueError:
        raise click.BadParameter(f"QPs are integers 0-51 or 'lossless', got {qp!r}") from None


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
    sd = load_state_dict_file(path)
    float_bytes = sum(t.numel() * t.element_size() for t in sd.values())
    plain = encode(sd, config=build_encode_config(int8_only=True), verify=False)
    out: dict = {"model": label, "path": str(path), "tensors": len(sd),
                 "parameters": int(sum(t.numel() for t in sd.values())),
                 "float_bytes": int(float_bytes), "int8_zstd_container_bytes": len(plain.data), "rows": []}
    coded_names: list[str] | None = None
    refs: dict[str, np.ndarray] = {}
    for qp in qps:
        config = encode_config(qp)
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
        if names != coded_names:
            raise click.ClickException(f"{label}: QP {qp} codes {names}, the first QP coded {coded_names}")
        errors = int8_error({l.name: d.quantized[l.name].values for l in coded}, refs, names)
        n, max_err = errors.count, int(errors.max_abs)
        per_layer = [{"name": layer.name, "stored_bytes": layer.stored_bytes,
                      "bits_per_weight": layer.bits_per_weight, "int8_rmse": errors.layers[layer.name].rmse,
                      "int8_max_error": int(errors.layers[layer.name].max_abs),
                      "profile": layer.profile, "level": layer.level} for layer in coded]
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
            "int8_rmse": errors.rmse,
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
        click.echo(f"{label} qp={qp}: {row['bits_per_weight']:.3f} b/w rmse {row['int8_rmse']:.3f} "
                   f"max {max_err} enc {row['encode_mb_per_s']:.2f} MB/s dec {row['decode_mb_per_s']:.1f} MB/s",
                   err=True)
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


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--assets", "assets_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Shared assets folder (default $WEIGHTCODEC_ASSETS or ../shared/assets).")
@click.option("--qps", default=DEFAULT_QPS, show_default=True, help="QPs, 'lossless' for HEVC lossless.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timing runs; the median is reported.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=ROOT / "docs" / "data" / "codec_table.json", show_default=True)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the markdown table here.")
def main(assets_dir, qps, runs, out, markdown_path):
    """Bits per weight, int8 error and speed of the coded layers of real models, per QP."""
    qp_list = [q.strip() for q in qps.split(",") if q.strip()]
    for q in qp_list:
        encode_config(q)  # validate early
    started = time.perf_counter()
    load_before = os.getloadavg()
    models = []
    for name in MODELS:
        try:
            path = get_model_spec(name).weights_path(assets_dir=assets_dir)
        except WeightcodecError as exc:
            click.echo(f"skipping {name}: {exc}", err=True)
            continue
        models.append(measure_model(name, path, qp_list, runs))
    if not models:
        raise click.ClickException("no model could be measured (see the skip messages above)")
    result = {
        "tool": "tools.measure_codec",
        "command": "python -m tools.measure_codec " + " ".join(sys.argv[1:]),
        "environment": {
            "machine": machine_info(),
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
    click.echo(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, [(json.dumps(result, indent=1) + "\n").encode()])
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(markdown_path, [table.encode()])
    click.echo(f"wrote {out}" + (f" and {markdown_path}" if markdown_path else ""), err=True)


if __name__ == "__main__":
    main()
