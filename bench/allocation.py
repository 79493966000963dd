"""Whole-model allocation against the single-QP curve and nncodec, on images the encoder never saw.

One run, one model of the registry: the first ``--calib`` evaluation images calibrate (Fisher
sensitivities and the real score the search checks), the next ``--held`` images only score the
files. Rows (each a real file, decoded and scored on both halves):

- ``float32`` and ``int8`` (every quantized weight int8 + zstd, the guard's granularity);
- ``single-qp``: ``wcodec encode --qp Q`` (the default plan: matrices HEVC at one QP, the rest int8);
- ``allocation``: ``encode_to_budget`` with ``AccuracyBudget(max_drop=B)`` for every ``--budget``,
  from one :func:`weightcodec.allocation.analyze` (Fisher on the calibration half);
- ``allocation-data-free`` (``--data-free``): the same without data (data-free sensitivities, the
  drop not measured by the encoder; ``--data-free-budget``);
- ``nncodec`` (``--nncodec-qp``): nncodec (MPEG NNC) on every floating-point tensor of the model at
  one global qp, in its own venv (``bench/nncodec_client.py``); integer tensors stay raw.

Writes ``--out`` (JSON, schema ``weightcodec-allocation/1``) and a plot beside it (``.png``:
held-out top-1 against whole-file bytes). Timings are wall times on this machine, shared: the load
average is recorded with them.

Examples::

    nice -n 10 python -m bench.allocation --model mobilenet_v2 --calib 500 --held 500 \\
        --budget 0.5,1.0,1.5 --qp 24,28,32 --nncodec-qp=-38,-34,-30 --out bench/results/allocation_mobilenet_v2.json
    python -m bench.allocation --model digits-mlp --calib 180 --held 180 --budget 0.3 --out /tmp/d.json
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from weightcodec import api
from weightcodec.allocation import (
    AccuracyBudget,
    DataFreeSensitivity,
    FisherSensitivity,
    SearchSpace,
    analyze,
    encode_to_budget,
)
from weightcodec.allocation.budget import paired_se
from weightcodec.atomic import atomic_write
from weightcodec.config import DEFAULT_CONFIDENCE, build_encode_config
from weightcodec.evaluation import Evaluator
from weightcodec.evaluation.metrics import top1_hits
from weightcodec.evaluation.models import fit_state_dict
from weightcodec.measure import machine_info

SCHEMA = "weightcodec-allocation/1"


def _split(batches, calib: int, held: int, batch_size: int = 50):
    xs, ys = [], []
    for x, y in batches:
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    if len(x) < calib + held:
        raise click.ClickException(f"the data set has {len(x)} images, fewer than --calib + --held = {calib + held}")

    def cut(a, b):
        return [(x[i:min(i + batch_size, b)], y[i:min(i + batch_size, b)]) for i in range(a, b, batch_size)]

    return cut(0, calib), cut(calib, calib + held)


def binomial_se(p_percent: float, n: int) -> float:
    """Standard error (points) of a top-1 measured on ``n`` images at ``p_percent``."""
    p = p_percent / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / n)


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


@click.command()
@click.option("--model", "model_name", required=True, help="A registry name (mobilenet_v2, mnist-mlp, digits-mlp, "
                                                           "fmnist-resnet).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Weights file (default: the registry's).")
@click.option("--calib", type=click.IntRange(min=1), default=500, show_default=True, help="Calibration images.")
@click.option("--held", type=click.IntRange(min=1), default=500, show_default=True, help="Held-out images.")
@click.option("--fisher-samples", type=click.IntRange(min=1), default=None,
              help="Calibration images for the Fisher (default: all of them).")
@click.option("--budget", "budgets", default="0.5,1.0", show_default=True, help="max-drop budgets (points).")
@click.option("--confidence", "confidences", default=str(DEFAULT_CONFIDENCE), show_default=True,
              help="The search's confidence(s), e.g. 0.5,0.8 (0.5: no margin); every budget at each.")
@click.option("--data-free", is_flag=True, help="Also the data-free mode (a second analysis).")
@click.option("--data-free-budget", "data_free_budgets", default="0.5,1.0,2.0", show_default=True)
@click.option("--qp", "qps", default="24,28,32", show_default=True, help="Single-QP rows ('' for none).")
@click.option("--nncodec-qp", "nncodec_qps", default="", help="nncodec whole-model rows, e.g. -38,-34,-30.")
@click.option("--search-qps", default="", help="QPs the allocation may use (default: the library's).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch threads.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(model_name, weights, calib, held, fisher_samples, budgets, confidences, data_free, data_free_budgets, qps, nncodec_qps,
         search_qps, threads, out):
    """Trace the allocation's size-vs-top-1 next to the single-QP curve and nncodec (see the module docstring)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    log = lambda m: click.echo(f"[{time.perf_counter() - started:7.1f}s] {m}", err=True)  # noqa: E731
    ev = Evaluator.create(model_name, weights=weights, limit=calib + held)
    model = ev.model
    state = ev.reference_state_dict()
    calib_batches, held_batches = _split(ev.batches, calib, held)
    log(f"{model_name}: {calib} calibration + {held} held-out images")

    def score_samples(sd, batches=calib_batches) -> np.ndarray:  # 100 per correct image, 0 per wrong one
        return top1_hits(fit_state_dict(model, sd), batches).numpy().astype(np.float64) * 100.0

    def score(sd, batches=calib_batches) -> float:
        return float(score_samples(sd, batches).mean())

    ref_samples_c, ref_samples_h = score_samples(state), score_samples(state, held_batches)
    ref_c, ref_h = float(ref_samples_c.mean()), float(ref_samples_h.mean())
    rows: list[dict[str, Any]] = []
    timings: dict[str, Any] = {"load_before": _load()}
    fisher = None
    nncodec_info = None
    space = SearchSpace(qps=tuple(int(q) for q in search_qps.split(","))) if search_qps else SearchSpace()

    def save(final: bool = False) -> None:  # after every row: a cut-off run keeps what it measured
        doc = _document(model_name=model_name, ev=ev, calib=calib, held=held, fisher=fisher, ref_c=ref_c,
                        ref_h=ref_h, rows=rows, timings=timings, nncodec_info=nncodec_info, space=space,
                        threads=threads, final=final)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, [json.dumps(doc, indent=1, sort_keys=True, default=_json).encode()])
        _plot(doc, out.with_suffix(".png"))

    def row(kind: str, data: bytes, **extra) -> dict[str, Any]:
        decoded = api.decode(data, as_state_dict=True).state_dict
        samples_c, samples_h = score_samples(decoded), score_samples(decoded, held_batches)
        c, h = float(samples_c.mean()), float(samples_h.mean())
        r = {"kind": kind, "bytes": len(data), "top1_calib": round(c, 3), "top1_held": round(h, 3),
             "drop_calib": round(ref_c - c, 3), "drop_held": round(ref_h - h, 3),
             "drop_se_calib": round(paired_se(ref_samples_c, samples_c), 3),
             "drop_se_held": round(paired_se(ref_samples_h, samples_h), 3), **extra}
        rows.append(r)
        log(f"{kind} {extra}: {len(data):,} B  calib {c:.2f} held {h:.2f}")
        save()
        return r

    float_bytes = sum(t.numel() * t.element_size() for t in state.values())
    rows.append({"kind": "float32", "bytes": float_bytes, "top1_calib": ref_c, "top1_held": ref_h,
                 "drop_calib": 0.0, "drop_held": 0.0})

    t = time.perf_counter()
    fisher = FisherSensitivity.from_model(model, calib_batches, max_samples=fisher_samples)
    timings["fisher_s"] = round(time.perf_counter() - t, 1)
    log(f"Fisher on {fisher.samples} images: {timings['fisher_s']} s")
    t = time.perf_counter()
    analysis = analyze(state, sensitivity=fisher, space=space,
                       progress=_throttled(log, "analysis"))
    timings["analysis_s"] = round(time.perf_counter() - t, 1)
    timings["candidates"] = analysis.candidates
    timings["frontier_points"] = len(analysis.front.points)
    timings["load_after_analysis"] = _load()
    log(f"analysis: {analysis.candidates} options in {timings['analysis_s']} s, {len(analysis.front.points)} points")
    searches = []
    for budget, confidence in [(float(b), float(c)) for c in confidences.split(",") if c.strip()
                               for b in budgets.split(",") if b.strip()]:
        t = time.perf_counter()
        log(f"budget {budget} at confidence {confidence}")
        try:
            answer = encode_to_budget(state, budget=AccuracyBudget(max_drop=budget, score=score_samples,
                                                                   reference=ref_samples_c, confidence=confidence),
                                      analysis=analysis, log=lambda m: log("  " + m))
        except Exception as exc:  # noqa: BLE001 - a budget the search cannot meet is a result too
            rows.append({"kind": "allocation", "max_drop": budget, "confidence": confidence, "error": str(exc)})
            log(f"budget {budget}: {exc}")
            continue
        seconds = round(time.perf_counter() - t, 1)
        searches.append(seconds)
        chosen = answer.chosen
        mix: dict[str, int] = {}
        for option in chosen.values():
            key = option.plan.describe().split(" qp")[0] if option.plan.storage != "raw" else "raw"
            mix[key] = mix.get(key, 0) + 1
        row("allocation", answer.result.data, max_drop=budget, confidence=confidence, search_s=seconds,
            scored_points=len(answer.evaluations),
            met=answer.met, predicted_loss=answer.record.predicted_loss, storage_mix=mix,
            choices={n: o.plan.describe() for n, o in chosen.items() if o.plan.storage != "raw"},
            search_points=[{"bytes": e.bytes, "top1_calib": round(e.score, 3), "predicted_loss": e.loss,
                            "drop_se_calib": None if e.se is None else round(e.se, 3)}
                           for e in sorted(answer.evaluations, key=lambda e: e.bytes)])
    timings["search_s"] = searches
    timings["allocation_total_s_first_budget"] = round(timings["fisher_s"] + timings["analysis_s"]
                                                       + (searches[0] if searches else 0), 1)

    row("int8", api.encode(state, config=build_encode_config(int8_only=True)).data)
    for qp in [int(q) for q in qps.split(",") if q.strip()]:
        row("single-qp", api.encode(state, config=build_encode_config(qp=qp)).data, qp=qp)

    if data_free:
        t = time.perf_counter()
        free = analyze(state, sensitivity=DataFreeSensitivity(), space=space, progress=_throttled(log, "data-free"))
        timings["data_free_analysis_s"] = round(time.perf_counter() - t, 1)
        for budget in [float(b) for b in data_free_budgets.split(",") if b.strip()]:
            answer = encode_to_budget(state, budget=AccuracyBudget(max_drop=budget), analysis=free)
            row("allocation-data-free", answer.result.data, max_drop=budget,
                predicted_loss=answer.record.predicted_loss)

    for qp in [int(q) for q in nncodec_qps.split(",") if q.strip()]:
        try:
            nncodec_info = _nncodec_row(state, qp, score, held_batches, ref_c, ref_h, rows, log)
        except Exception as exc:  # noqa: BLE001 - the peer is optional
            rows.append({"kind": "nncodec", "qp": qp, "error": str(exc).splitlines()[0]})
            log(f"nncodec qp {qp}: {exc}")

    save(final=True)
    log(f"wrote {out}")
    click.echo(markdown(json.loads(out.read_text())))


def _document(*, model_name, ev, calib, held, fisher, ref_c, ref_h, rows, timings, nncodec_info, space, threads,
              final) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "model": model_name, "weights": str(ev.weights), "complete": final,
        "calibration": {"images": f"0..{calib - 1}", "samples": calib,
                        "fisher_samples": fisher.samples if fisher is not None else None},
        "held_out": {"images": f"{calib}..{calib + held - 1}", "samples": held,
                     "binomial_se_points": round(binomial_se(ref_h, held), 2)},
        "float": {"top1_calib": ref_c, "top1_held": ref_h},
        "rows": rows, "timings": timings, "nncodec": nncodec_info,
        "search_space": {"qps": list(space.qps), "granularities": list(space.granularities),
                         "schemes": list(space.schemes), "layouts": space.layouts},
        "machine": machine_info(), "torch_threads": threads,
        "command": "python -m bench.allocation " + " ".join(sys.argv[1:]),
    }


def markdown(doc: dict) -> str:
    """The rows of a result document as a markdown table (docs/RESULTS.md, docs/BENCHMARKS.md)."""
    float_bytes = next(r["bytes"] for r in doc["rows"] if r["kind"] == "float32")
    lines = ["| row | setting | file | x float32 | top-1 calib (drop +- SE) | top-1 held-out (drop +- SE) |",
             "|---|---|---|---|---|---|"]

    def confidence(r):
        return f" --confidence {r['confidence']}" if r.get("confidence") is not None else ""

    def drop(r, half):
        se = r.get(f"drop_se_{half}")
        return f"{r[f'drop_{half}']:+.2f}" + ("" if se is None else f" +- {se:.2f}")

    for r in doc["rows"]:
        if "bytes" not in r:
            lines.append(f"| {r['kind']} | --max-drop {r.get('max_drop', r.get('qp'))}{confidence(r)} | - | - | "
                         f"{r.get('error', '')} | |")
            continue
        setting = {"allocation": f"--max-drop {r.get('max_drop')}{confidence(r)}",
                   "allocation-data-free": f"--max-drop {r.get('max_drop')}, no data",
                   "single-qp": f"--qp {r.get('qp')}", "nncodec": f"qp {r.get('qp')}"}.get(r["kind"], "")
        lines.append(f"| {r['kind']} | {setting} | {r['bytes']:,} B | {float_bytes / r['bytes']:.1f} | "
                     f"{r['top1_calib']:.2f} ({drop(r, 'calib')}) | {r['top1_held']:.2f} ({drop(r, 'held')}) |")
    return "\n".join(lines)


def _throttled(log, what: str, every: float = 60.0):
    last = [time.perf_counter()]

    def progress(name, done, total):
        if time.perf_counter() - last[0] >= every:
            last[0] = time.perf_counter()
            log(f"{what}: {100 * done / max(total, 1):.0f}% ({name})")

    return progress


def _nncodec_row(state, qp, score, held_batches, ref_c, ref_h, rows, log):
    """nncodec on every floating-point tensor at one qp; integer tensors counted raw."""
    from bench.nncodec_client import run_nncodec

    floats = {k: v.detach().float().numpy() for k, v in state.items() if v.is_floating_point()}
    names = {f"t{i}": k for i, k in enumerate(floats)}
    result = run_nncodec({f"t{i}": a for i, a in enumerate(floats.values())}, kind="float", qp=qp)
    decoded = dict(state)
    for key, array in result["arrays"].items():
        name = names[key]
        decoded[name] = torch.from_numpy(np.asarray(array, np.float32)).to(state[name].dtype).reshape(state[name].shape)
    other = sum(v.numel() * v.element_size() for v in state.values() if not v.is_floating_point())
    size = int(result["compressed_bytes"]) + other
    c, h = score(decoded), score(decoded, held_batches)
    rows.append({"kind": "nncodec", "qp": qp, "bytes": size, "top1_calib": round(c, 3), "top1_held": round(h, 3),
                 "drop_calib": round(ref_c - c, 3), "drop_held": round(ref_h - h, 3),
                 "note": "nncodec bitstream of every float tensor (global qp, DQ) + raw integer tensors"})
    log(f"nncodec qp {qp}: {size:,} B calib {c:.2f} held {h:.2f}")
    return {"version": result.get("nncodec_version"), "compress_kwargs": result.get("compress_kwargs")}


def _json(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    return str(obj)


def _plot(doc: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"allocation": ("o-", "allocation (Fisher, calibrated)"), "allocation-data-free": ("s--", "allocation, data-free"),
              "single-qp": ("^-", "single QP (default plan)"), "nncodec": ("v-", "nncodec whole model"),
              "int8": ("D", "int8 + zstd")}
    for kind, (style, label) in styles.items():
        confidences = sorted({r.get("confidence") for r in doc["rows"] if r["kind"] == kind}, key=lambda c: c or 0)
        for i, conf in enumerate(confidences):
            pts = sorted((r["bytes"], r["top1_held"]) for r in doc["rows"]
                         if r["kind"] == kind and "bytes" in r and r.get("confidence") == conf)
            if pts:
                ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], style, alpha=1.0 if i == len(confidences) - 1
                        else 0.5, label=label if conf is None else f"{label}, confidence {conf}")
    ref = doc["float"]["top1_held"]
    se = doc["held_out"]["binomial_se_points"]
    ax.axhline(ref, color="k", lw=0.8, label=f"float32 ({ref:.1f})")
    ax.axhspan(ref - 1 - se, ref - 1 + se, color="grey", alpha=0.15, label=f"float - 1 point +- 1 SE ({se})")
    ax.set_xlabel("whole file (MB)")
    ax.set_ylabel(f"top-1 on {doc['held_out']['samples']} held-out images (%)")
    ax.set_title(f"{doc['model']}: allocation vs single QP vs nncodec")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
