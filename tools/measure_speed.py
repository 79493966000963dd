#!/usr/bin/env python
"""Encode speed against bits at equal int8 error, per x265 preset and parameter variant.

Every variant is a preset plus x265 parameters on top of ``WEIGHT_X265_PARAMS``. Each matrix
(real ones from the shared assets, and random-initialised LLM-shaped ones made on the fly) is
quantized per tensor to int8, tiled as ``wcodec encode`` tiles it, coded as intra pictures at each
QP, decoded, and compared with its int8 input. Recorded per (variant, matrix, QP): stream bytes,
int8 RMSE, max error, and the **CPU seconds** of the encode and of the decode.

Why CPU seconds: the machine is shared, and wall time under load measures the neighbours. Each
job runs alone in a worker process with x265's thread pool limited to one thread (``pools=1``,
which does not change a byte of the stream: checked here for every variant), so the process's own
CPU time (user + system, all threads) is the work the encode costs; ``MB/s per core`` is int8
weights per CPU second. End-to-end wall times on a quiet machine are in ``bench/speed.py``.

Variants are compared with the baseline (``--baseline``, default: the old default, preset medium)
at equal int8 RMSE, Bjontegaard style (``tools.measure_encoder.bd_rate``: piecewise-linear
log(bits) over RMSE, PCHIP beside it), per matrix, as the mean over matrices, and pooled.

Reproduce (about 15 CPU-minutes; runs on all cores):
    python -m tools.measure_speed --out docs/data/encoder_speed.json --markdown docs/data/encoder_speed.md

Assets: ``--assets`` or $WEIGHTCODEC_ASSETS (default ../shared/assets); the real matrices are
skipped with a note when absent.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from weightcodec.backends import get_backend
from weightcodec.backends.base import PictureSpec
from weightcodec.config import WEIGHT_X265_PARAMS, HevcSettings
from weightcodec.errors import WeightcodecError
from weightcodec.parallel import default_workers, ordered_map
from weightcodec.quant import quantize
from weightcodec.tiling import frames_to_matrix, matrix_to_frames, plan_tiles

from tools.measure_encoder import bd_rate, load_matrices, pooled

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QPS = (24, 28, 32, 36)

#: (name, preset, extra x265 params as "k=v,k=v", what it is)
VARIANTS: list[tuple[str, str, str, str]] = [
    ("medium", "medium", "", "the old default: preset medium + WEIGHT_X265_PARAMS"),
    ("medium-rdoq0", "medium", "rdoq-level=0", "medium without RDOQ (x265 medium's own rdoq-level)"),
    ("medium-rd2", "medium", "rd=2", "medium with rd=2 (fast mode decision)"),
    ("medium-cu16", "medium", "min-cu-size=16", "medium, smallest CU 16x16 (no 8x8 CUs, no 4x4 intra PUs)"),
    ("medium-cu16-rd2", "medium", "min-cu-size=16,rd=2", "min-cu-size=16 and rd=2"),
    ("medium-cu16-tu2", "medium", "min-cu-size=16,tu-intra-depth=2",
     "min-cu-size=16, TUs split twice (8x8 and 4x4 TUs back)"),
    ("medium-cu32", "medium", "min-cu-size=32", "medium, smallest CU 32x32"),
    ("fast", "fast", "", "preset fast"),
    ("superfast", "superfast", "", "preset superfast"),
    ("ultrafast", "ultrafast", "", "preset ultrafast (ctu 32, min-cu 16, rd 2, no SAO, fast-intra) + weight params"),
    ("ultrafast-cu8", "ultrafast", "min-cu-size=8", "ultrafast with 8x8 CUs back"),
    ("veryslow", "veryslow", "", "preset veryslow (the smallest setting measured in docs/ENCODER.md)"),
]

#: The QP at which every (variant, matrix) is coded again with x265's default threads to check
#: that the thread settings change no byte.
CHECK_THREADS_QP = 28
#: Thread settings that must not change the stream (checked on every variant).
ONE_THREAD = (("pools", "1"),)


@dataclass
class Matrix:
    name: str
    values: np.ndarray  # int8 (rows, cols)
    origin: str


def parse_params(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(kv.split("=", 1)) for kv in text.split(",") if kv)  # type: ignore[misc]


def llm_matrices(seed: int, crop_rows: int) -> list[Matrix]:
    """Random-initialised matrices of TinyLlama-1.1B's shapes (hidden 2048, MLP 5632, vocab 32000),
    N(0, 0.02) in fp16 as a checkpoint holds them, then per-tensor int8. The 5632x2048 MLP and the
    32000x2048 embedding are cropped to their first ``crop_rows`` rows (one tile each: ``wcodec``
    tiles them into 3 and 15 pictures of this kind, statistically the same; a crop keeps the sweep
    short)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in (("q_proj", (2048, 2048)), ("gate_proj", (min(crop_rows, 5632), 2048)),
                        ("embed_tokens", (min(crop_rows, 32000), 2048))):
        w = (torch.randn(*shape, generator=g) * 0.02).to(torch.float16).float().numpy()
        full = {"gate_proj": "5632x2048", "embed_tokens": "32000x2048"}.get(name)
        origin = "random N(0, 0.02) fp16, TinyLlama-1.1B shape" + (
            f" (rows 0..{shape[0]} of {full})" if full else "")
        out.append(Matrix(f"llm:{name}", quantize(w, "per-tensor").values, origin))
    return out


def real_matrices(assets_dir: Path | None) -> list[Matrix]:
    """MNIST MLP l1/l2 and MobileNetV2 classifier.1/features.18.0 (as tools.measure_encoder), or
    none with a note when the shared assets are absent."""
    try:
        return [Matrix(m.name, m.values, "shared assets") for m in load_matrices(assets_dir)]
    except WeightcodecError as exc:
        print(f"note: the real matrices are skipped ({exc})", file=sys.stderr)
        return []


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_job(job: tuple[str, str, str, int], context) -> dict:
    """Code one matrix at one QP with one variant; CPU seconds of this process for encode and decode."""
    variant, matrix_name, params, qp = job
    matrices, presets, check_threads = context
    matrix = matrices[matrix_name]
    backend = get_backend("pyav")
    # effort "max" adds no parameters of its own: the variant is exactly its preset + WEIGHT_X265_PARAMS
    # + its params (the effort levels are themselves variants of this table)
    settings = HevcSettings(qp=qp, effort="max", preset=presets[variant],
                            extra_x265_params=parse_params(params) + ONE_THREAD)
    layout = plan_tiles(*matrix.shape, max_height=settings.max_tile_height, max_width=settings.max_tile_width)
    frames = matrix_to_frames(matrix, layout)
    c0, w0 = _cpu(), time.perf_counter()
    stream = backend.encode(frames, settings)
    c1, w1 = _cpu(), time.perf_counter()
    decoded = frames_to_matrix(backend.decode(stream, PictureSpec(*frames.shape, settings.chroma)), layout)
    c2, w2 = _cpu(), time.perf_counter()
    diff = decoded.astype(np.int16) - matrix.astype(np.int16)
    out = {"variant": variant, "matrix": matrix_name, "qp": qp, "bytes": len(stream),
           "bits_per_weight": 8.0 * len(stream) / matrix.size,
           "rmse": float(np.sqrt(np.mean(diff.astype(np.float64) ** 2))), "max_abs_error": int(np.max(np.abs(diff))),
           "encode_cpu_seconds": c1 - c0, "decode_cpu_seconds": c2 - c1,
           "encode_wall_seconds": w1 - w0, "decode_wall_seconds": w2 - w1}
    if check_threads and qp == CHECK_THREADS_QP:  # the same stream with x265's default thread pool
        free = HevcSettings(qp=qp, effort="max", preset=presets[variant], extra_x265_params=parse_params(params))
        out["same_bytes_with_default_threads"] = backend.encode(frames, free) == stream
    return out


def summarise(result: dict, baseline: str) -> None:
    names = [m["name"] for m in result["matrices"]]
    sizes = {m["name"]: m["weights"] for m in result["matrices"]}
    by_variant = {v["name"]: v for v in result["variants"]}
    base = by_variant[baseline]
    for v in result["variants"]:
        pts = v["points"]
        cpu = sum(p["encode_cpu_seconds"] for m in names for p in pts[m])
        dcpu = sum(p["decode_cpu_seconds"] for m in names for p in pts[m])
        weights = sum(sizes[m] * len(pts[m]) for m in names)
        v["encode_mb_per_cpu_second"] = weights / cpu / 1e6
        v["decode_mb_per_cpu_second"] = weights / dcpu / 1e6
        v["per_matrix_encode_mb_per_cpu_second"] = {
            m: sizes[m] * len(pts[m]) / sum(p["encode_cpu_seconds"] for p in pts[m]) / 1e6 for m in names}
        v["speedup_vs_baseline"] = None
        if v is not base:
            per = {m: bd_rate(base["points"][m], pts[m]) for m in names}
            lin = [d["linear_pct"] for d in per.values() if d["linear_pct"] is not None]
            cub = [d["pchip_pct"] for d in per.values() if d["pchip_pct"] is not None]
            v["bd_vs_baseline"] = {
                "per_matrix": per, "mean_linear_pct": float(np.mean(lin)) if lin else None,
                "mean_pchip_pct": float(np.mean(cub)) if cub else None,
                "max_linear_pct": float(np.max(lin)) if lin else None,
                "pooled": bd_rate(pooled(base["points"], sizes), pooled(pts, sizes))}
    for v in result["variants"]:
        v["speedup_vs_baseline"] = v["encode_mb_per_cpu_second"] / base["encode_mb_per_cpu_second"]


def fmt(v: float | None, spec: str = "+.1f") -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    names = [m["name"] for m in result["matrices"]]
    short = {n: n.split(":", 1)[1].replace(".weight", "") for n in names}
    lines = [f"Encode speed (int8 MB per CPU second, one x265 thread) and bits at equal int8 RMSE vs "
             f"`{result['baseline']}` (BD-rate %, piecewise-linear over RMSE; negative = fewer bits), QPs "
             f"{', '.join(map(str, result['qps']))}. Pooled = all matrices as one.", ""]
    head = ("| variant | preset | x265 change | enc MB/cpu-s | x baseline | dec MB/cpu-s | "
            + " | ".join(short[n] for n in names) + " | mean | worst | pooled |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for v in result["variants"]:
        bd = v.get("bd_vs_baseline")
        cells = ["(baseline)"] * len(names) + ["", "", ""] if bd is None else \
            [fmt(bd["per_matrix"][n]["linear_pct"]) for n in names] + \
            [f"**{fmt(bd['mean_linear_pct'])}**", fmt(bd["max_linear_pct"]), fmt(bd["pooled"]["linear_pct"])]
        lines.append(f"| {v['name']} | {v['preset']} | `{v['params'] or '-'}` | {v['encode_mb_per_cpu_second']:.2f} | "
                     f"{v['speedup_vs_baseline']:.2f} | {v['decode_mb_per_cpu_second']:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "Encode MB per CPU second per matrix:", ""]
    head = "| variant | " + " | ".join(f"{short[n]} ({'x'.join(map(str, m['shape']))})"
                                      for n, m in zip(names, result["matrices"])) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for v in result["variants"]:
        lines.append(f"| {v['name']} | " + " | ".join(f"{v['per_matrix_encode_mb_per_cpu_second'][n]:.2f}"
                                                    for n in names) + " |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--assets", "assets_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Shared assets folder [default: $WEIGHTCODEC_ASSETS or ../shared/assets].")
@click.option("--qps", default=",".join(map(str, DEFAULT_QPS)), show_default=True, help="Comma-separated QPs.")
@click.option("--variants", default="all", show_default=True,
              help="Comma-separated variant names, or 'all' (the baseline always runs).")
@click.option("--baseline", default="medium", show_default=True)
@click.option("--crop-rows", type=int, default=1878, show_default=True,
              help="Rows of the 5632x2048 and 32000x2048 matrices to code (1878: one of gate_proj's tiles).")
@click.option("--no-llm", is_flag=True, help="Only the real matrices.")
@click.option("--workers", type=click.IntRange(min=1), default=default_workers(), show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=ROOT / "docs" / "data" / "encoder_speed.json", show_default=True)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path))
def main(assets_dir, qps, variants, baseline, crop_rows, no_llm, workers, out, markdown_path):
    """Encode speed (MB per CPU second) against bits at equal int8 RMSE, per x265 preset and parameters."""
    argv = sys.argv[1:]
    args = SimpleNamespace(qps=qps, variants=variants, baseline=baseline, crop_rows=crop_rows, no_llm=no_llm,
                         workers=workers, out=out, markdown=markdown_path, assets=assets_dir)
    qps = [int(q) for q in args.qps.split(",")]
    chosen = [v for v in VARIANTS if args.variants == "all" or v[0] in args.variants.split(",") or v[0] == args.baseline]
    matrices = real_matrices(args.assets) + ([] if args.no_llm else llm_matrices(0, args.crop_rows))
    if not matrices:
        raise click.ClickException("no matrices: no assets and --no-llm")
    by_name = {m.name: m.values for m in matrices}
    presets = {v[0]: v[1] for v in chosen}
    # biggest jobs first so that the pool's tail is short; the order of results does not matter
    jobs = [(v[0], m.name, v[2], qp) for m in sorted(matrices, key=lambda m: -m.values.size) for v in chosen
            for qp in qps]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = 0
    records = []
    for record in ordered_map(run_job, jobs, workers=args.workers, context=(by_name, presets, True)):
        records.append(record)
        done += 1
        print(f"\r{done}/{len(jobs)} jobs, {time.perf_counter() - started:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    import av

    from weightcodec.measure import machine_info

    result = {
        "tool": "tools/measure_speed.py",
        "command": "python -m tools.measure_speed " + " ".join(argv),
        "environment": {**machine_info(), "pyav": av.__version__, "workers": args.workers,
                        "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                        "wall_seconds": round(time.perf_counter() - started, 1)},
        "metric_note": "CPU seconds (user+system) of a worker process coding one matrix with pools=1; "
                       "MB = 1e6 int8 weights",
        "qps": qps, "baseline": args.baseline,
        "weight_x265_params": ":".join(f"{k}={v}" for k, v in WEIGHT_X265_PARAMS),
        "matrices": [{"name": m.name, "shape": list(m.values.shape), "weights": int(m.values.size), "origin": m.origin}
                     for m in matrices],
        "thread_settings_change_no_byte": all(r["same_bytes_with_default_threads"] for r in records
                                              if "same_bytes_with_default_threads" in r),
        "variants": [],
    }
    for name, preset, params, what in chosen:
        points = {m.name: sorted(({k: v for k, v in r.items() if k not in ("variant", "matrix")}
                                  for r in records if r["variant"] == name and r["matrix"] == m.name),
                                 key=lambda p: p["qp"]) for m in matrices}
        result["variants"].append({"name": name, "preset": preset, "params": params, "description": what,
                                   "points": points})
    summarise(result, args.baseline)
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    print(f"wrote {args.out}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
