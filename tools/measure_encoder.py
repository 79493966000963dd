"""Measure what libx265's settings do to int8 weight matrices, to justify weightcodec's defaults.

Every variant is one change from the default (``WEIGHT_X265_PARAMS``, preset medium, yuv420p).
Each real matrix is coded as intra frames at each QP, decoded, and its size and int8 error are
recorded. Variants are then compared with the default at *equal int8 RMSE*, Bjontegaard style:
log(bits) is interpolated as a function of RMSE (piecewise-linear, and monotone cubic = PCHIP)
over the RMSE range both curves cover, and the mean log difference is reported as a % bit change
(negative = the variant needs fewer bits for the same error).

Besides the rate/error sweep it records:
  * the settings x265 actually applied (parsed from its own SEI text block, ``info=1``), so that a
    parameter x265 silently overrides or misparses is visible (e.g. ``deblock=0`` leaves the
    deblocking filter on, aq-mode is forced to 0 in constant-QP mode);
  * the HEVC profile / level each variant signals (``keyint=1``, ``gray``, ``lossless``);
  * the ipratio check: ``ipratio=1.4`` at QP N+3 decodes bit-identically to ``ipratio=1`` at QP N.

Reproduce (about 3.5 minutes on 2 cores):
    python -m tools.measure_encoder --out docs/data/encoder_settings.json --markdown docs/data/encoder_settings.md

Models come from the registry (:mod:`weightcodec.evaluation.zoo`); their weights from the shared
assets (``--assets`` or $WEIGHTCODEC_ASSETS, default ../shared/assets relative to the checkout).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from weightcodec.backends import get_backend
from weightcodec.backends.base import PictureSpec
from weightcodec.config import WEIGHT_X265_PARAMS, HevcSettings
from weightcodec.errors import WeightcodecError
from weightcodec.evaluation import get_model_spec, load_state_dict_file
from weightcodec.hevc import iter_nal_units, parse_stream_info
from weightcodec.measure import machine_info, rate_change_at_equal_error, tensor_error
from weightcodec.atomic import atomic_write
from weightcodec.quant import quantize
from weightcodec.tiling import frames_to_matrix, matrix_to_frames, plan_tiles

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QPS = (22, 26, 30, 34, 38)

# (name, what it changes, HevcSettings keyword overrides). "extra" goes to extra_x265_params.
VARIANTS: list[tuple[str, str, dict]] = [
    ("default", "WEIGHT_X265_PARAMS, preset medium, yuv420p (flat chroma 128)", {}),
    ("chroma-gray", "4:0:0 monochrome (RExt profile) instead of 4:2:0 with flat chroma", {"chroma": "gray"}),
    ("psy-aq-on", "x265's psycho-visual tools back on: aq-mode=2, psy-rd=2.0, psy-rdoq=1.0",
     {"extra": (("aq-mode", "2"), ("psy-rd", "2.0"), ("psy-rdoq", "1.0"))}),
    ("psy-rd-only", "psy-rd=2.0 only (x265's own default for every preset)", {"extra": (("psy-rd", "2.0"),)}),
    ("rdoq-0", "rdoq-level=0 (x265 medium's own value) instead of 2", {"extra": (("rdoq-level", "0"),)}),
    ("rd-6", "rd=6 (full RDO, veryslow's value) instead of medium's rd=3", {"extra": (("rd", "6"),)}),
    ("preset-fast", "preset fast", {"preset": "fast"}),
    ("preset-slow", "preset slow", {"preset": "slow"}),
    ("preset-veryslow", "preset veryslow", {"preset": "veryslow"}),
    ("deblock-off", "deblocking filter off (deblock=false; note deblock=0 leaves it ON)",
     {"extra": (("deblock", "false"),)}),
    ("sao-off", "sample adaptive offset off (sao=0)", {"extra": (("sao", "0"),)}),
    ("tskip-on", "transform skip allowed (tskip=1, 4x4 TUs)", {"extra": (("tskip", "1"),)}),
    ("info-on", "info=1: x265 writes its settings as an SEI text block", {"extra": (("info", "1"),)}),
    ("ipratio-1.4", "ipratio=1.4 (x265's default): intra pictures coded at QP-3", {"extra": (("ipratio", "1.4"),)}),
]

# Effective-setting keys to pull out of x265's SEI text (what x265 really used).
EFFECTIVE_KEYS = ("rd", "rdoq-level", "psy-rd", "psy-rdoq", "aq-mode", "cutree", "ipratio", "deblock", "sao",
                  "tskip", "tu-intra-depth", "rect", "amp", "fast-intra", "wpp", "frame-threads", "keyint",
                  "lossless", "qp")

# Spellings worth checking: what x265 makes of them (probe only, not swept).
PARAM_PROBES: list[tuple[str, tuple[tuple[str, str], ...]]] = [
    ("deblock=0", (("deblock", "0"),)),
    ("deblock=false", (("deblock", "false"),)),
    ("no-deblock=1", (("no-deblock", "1"),)),
    ("aq-mode=2", (("aq-mode", "2"),)),
    ("cutree=1", (("cutree", "1"),)),
    ("psy-rdoq=1.0", (("psy-rdoq", "1.0"),)),
    ("psy-rdoq=1.0:rdoq-level=0", (("psy-rdoq", "1.0"), ("rdoq-level", "0"))),
]


@dataclass
class Matrix:
    name: str  # "model:tensor"
    values: np.ndarray  # int8 (rows, cols)


#: The real matrices: (registry model name, tensors).
SOURCES = (("mnist-mlp", ("l1.weight", "l2.weight")),
           ("mobilenet_v2", ("classifier.1.weight", "features.18.0.weight")))


def load_matrices(assets_dir: Path | None) -> list[Matrix]:
    out = []
    for model, names in SOURCES:
        sd = load_state_dict_file(get_model_spec(model).weights_path(assets_dir=assets_dir))
        for name in names:
            w = sd[name].float().numpy()
            w = w.reshape(w.shape[0], -1)  # the 1x1 conv 1280x320x1x1 -> 1280x320
            out.append(Matrix(f"{model}:{name}", quantize(w, "per-tensor").values))
    return out


def make_settings(overrides: dict, qp: int) -> HevcSettings:
    kw = {k: v for k, v in overrides.items() if k != "extra"}
    return HevcSettings(qp=qp, extra_x265_params=tuple(overrides.get("extra", ())), **kw)


def code_once(backend, matrix: np.ndarray, settings: HevcSettings) -> dict:
    layout = plan_tiles(*matrix.shape, max_height=settings.max_tile_height, max_width=settings.max_tile_width)
    frames = matrix_to_frames(matrix, layout)
    t0 = time.perf_counter()
    stream = backend.encode(frames, settings)
    t1 = time.perf_counter()
    decoded = frames_to_matrix(backend.decode(stream, PictureSpec(*frames.shape, settings.chroma)), layout)
    t2 = time.perf_counter()
    error = tensor_error(decoded, matrix)
    return {
        "bytes": len(stream),
        "bits_per_weight": 8.0 * len(stream) / matrix.size,
        "rmse": error.rmse,
        "max_abs_error": int(error.max_abs),
        "encode_seconds": t1 - t0,
        "decode_seconds": t2 - t1,
        "_stream": stream,
        "_decoded": decoded,
    }


# --- Bjontegaard-style delta at equal RMSE ---------------------------------------------------------
#: Equally spaced RMSEs the curves are compared at (weightcodec.measure.rate_change_at_equal_error).
BD_SAMPLES = 2001


def bd_rate(base: list[dict], test: list[dict]) -> dict:
    """Average % bit change of ``test`` vs ``base`` at equal RMSE, over the overlapping RMSE range.

    Over the RMSE axis, piecewise-linear and PCHIP; and over log(RMSE) (the classic BD axis, PSNR in
    dB), which weighs every QP step alike where the RMSE axis gives most weight to the high-QP end
    (RMSE grows ~1.6x per 4 QP).
    """
    b, t = [(p["rmse"], p["bytes"]) for p in base], [(p["rmse"], p["bytes"]) for p in test]
    lin = rate_change_at_equal_error(b, t, error_axis="linear", samples=BD_SAMPLES)
    if lin is None:
        return {"linear_pct": None, "pchip_pct": None, "log_rmse_linear_pct": None, "rmse_range": None}
    log = rate_change_at_equal_error(b, t, error_axis="log", samples=BD_SAMPLES)
    cub = rate_change_at_equal_error(b, t, error_axis="linear", interpolation="pchip", samples=BD_SAMPLES)
    return {"linear_pct": lin.bytes_change_pct, "rmse_range": list(lin.error_range),
            "log_rmse_linear_pct": log.bytes_change_pct if log else None,
            "pchip_pct": cub.bytes_change_pct if cub else None}


def pooled(points_by_matrix: dict[str, list[dict]], sizes: dict[str, int]) -> list[dict]:
    """All matrices as one: total bytes vs RMSE over all weights, per QP."""
    qps = sorted(set.intersection(*(set(p["qp"] for p in pts) for pts in points_by_matrix.values())))
    out = []
    for qp in qps:
        total_bytes = sse = n = 0
        for name, pts in points_by_matrix.items():
            p = next(p for p in pts if p["qp"] == qp)
            total_bytes += p["bytes"]
            sse += p["rmse"] ** 2 * sizes[name]
            n += sizes[name]
        out.append({"qp": qp, "bytes": total_bytes, "rmse": math.sqrt(sse / n)})
    return out


# --- x265's own account of its settings -------------------------------------------------------------
def sei_text(stream: bytes) -> str | None:
    i = stream.find(b"x265 (build")
    if i < 0:
        return None
    end = stream.find(b"\x80", i)  # rbsp_trailing_bits after the NUL-terminated text
    return stream[i:end if end > 0 else None].split(b"\x00")[0].decode("latin1")


def effective_settings(text: str) -> dict:
    opts = text.split(" - options: ", 1)[-1].split()
    out = {}
    for tok in opts:
        key, _, value = tok.partition("=")
        if key.startswith("no-") and key[3:] in EFFECTIVE_KEYS and not value:
            out[key[3:]] = "off"
        elif key in EFFECTIVE_KEYS:
            out[key] = value or "on"
    return {k: out[k] for k in EFFECTIVE_KEYS if k in out}


def probe(backend, matrix: np.ndarray, settings: HevcSettings) -> dict:
    """Effective x265 settings (SEI text) and signalled profile/level for ``settings``."""
    crop = np.ascontiguousarray(matrix[:256, :256])
    with_info = HevcSettings(**{**settings.__dict__,
                                "extra_x265_params": tuple(settings.extra_x265_params) + (("info", "1"),)})
    stream = backend.encode(matrix_to_frames(crop, plan_tiles(*crop.shape, max_height=2160, max_width=4096)),
                            with_info)
    text = sei_text(stream) or ""
    info = parse_stream_info(stream)
    version = re.search(r"x265 \(build \d+\) - (\S+):", text)
    return {"effective": effective_settings(text), "profile": info.profile, "level": info.level,
            "chroma_format": info.chroma, "x265_version": version.group(1) if version else None}


# --- reporting ---------------------------------------------------------------------------------------
def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f}"


def markdown(result: dict) -> str:
    names = [m["name"] for m in result["matrices"]]
    short = {n: n.split(":", 1)[1].replace(".weight", "") for n in names}
    lines = []
    lines.append("Bits at equal int8 RMSE vs the default (BD-rate %, negative = fewer bits; piecewise-linear "
                 "log(bits) over RMSE, PCHIP in brackets; the same over log(RMSE); pooled = the 4 matrices as "
                 "one), and encode time of the whole sweep (single run, +-15 % run-to-run noise).")
    lines.append("")
    head = "| variant | x265 change | " + " | ".join(short[n] for n in names) + \
        " | mean of 4 | mean, log-RMSE axis | pooled | encode s | x default |"
    lines.append(head)
    lines.append("|" + "---|" * (head.count("|") - 1))
    base_s = result["variants"][0]["encode_seconds"]
    for v in result["variants"]:
        bd = v.get("bd_vs_default")
        if bd is None:
            cells = ["(baseline)"] * len(names) + ["", "", ""]
        else:
            cells = [f"{fmt_pct(bd['per_matrix'][n]['linear_pct'])} ({fmt_pct(bd['per_matrix'][n]['pchip_pct'])})"
                     for n in names]
            cells.append(f"**{fmt_pct(bd['mean_linear_pct'])}** ({fmt_pct(bd['mean_pchip_pct'])})")
            cells.append(fmt_pct(bd["mean_log_rmse_linear_pct"]))
            cells.append(fmt_pct(bd["pooled"]["linear_pct"]))
        change = v["change"] or "-"
        lines.append(f"| {v['name']} | `{change}` | " + " | ".join(cells) +
                     f" | {v['encode_seconds']:.1f} | {v['encode_seconds'] / base_s:.2f} |")
    lines.append("")
    lines.append("Default settings, per matrix and QP (bits per weight / int8 RMSE / max |error|):")
    lines.append("")
    qps = result["qps"]
    head = "| matrix | shape | " + " | ".join(f"QP {q}" for q in qps) + " |"
    lines.append(head)
    lines.append("|" + "---|" * (head.count("|") - 1))
    default = result["variants"][0]
    for m in result["matrices"]:
        pts = {p["qp"]: p for p in default["points"][m["name"]]}
        cells = [f"{pts[q]['bits_per_weight']:.2f} / {pts[q]['rmse']:.2f} / {pts[q]['max_abs_error']}"
                 if q in pts else "-" for q in qps]
        lines.append(f"| {m['name']} | {m['shape'][0]}x{m['shape'][1]} | " + " | ".join(cells) + " |")
    notes = result["notes"]
    lines.append("")
    g = notes.get("gray_vs_yuv420p")
    if g:
        lines.append(f"- gray (4:0:0) vs yuv420p at the same QP: bytes differ by {g['min_pct']:+.2f} % to "
                     f"{g['max_pct']:+.2f} % (mean {g['mean_pct']:+.2f} %), RMSE identical at "
                     f"{g['rmse_identical']} of {g['points']} points.")
    i = notes.get("info_sei")
    if i:
        lines.append(f"- info=1 adds {i['min_bytes']}-{i['max_bytes']} bytes per stream (its SEI NAL is "
                     f"{i['sei_nal_bytes']} bytes), i.e. {i['bpw_min']:.3f}-{i['bpw_max']:.3f} bits/weight on "
                     "these matrices; decoded values identical.")
    r = notes.get("ipratio")
    if r:
        lines.append(f"- ipratio=1.4 at QP N+3 decodes bit-identically to ipratio=1 at QP N at "
                     f"{r['identical']} of {r['checked']} (matrix, QP) pairs; stream sizes differ by at most "
                     f"{r['max_byte_diff']} bytes. At the same requested QP, ipratio=1.4 costs "
                     f"{r['same_qp_bytes_pct_min']:+.0f} to {r['same_qp_bytes_pct_max']:+.0f} % bytes and has "
                     f"{r['same_qp_rmse_ratio_min']:.2f}-{r['same_qp_rmse_ratio_max']:.2f}x lower RMSE: "
                     "x265 codes intra pictures at QP-3 unless ipratio=1.")
    return "\n".join(lines) + "\n"


def probes_markdown(result: dict) -> str:
    lines = ["| settings | profile @ level | effective x265 settings (from its SEI text) |", "|---|---|---|"]
    for p in result["probes"]:
        eff = " ".join(f"{k}={v}" for k, v in p["effective"].items()
                       if k in ("rd", "rdoq-level", "psy-rd", "psy-rdoq", "aq-mode", "cutree", "ipratio", "deblock",
                                "sao", "tskip", "tu-intra-depth", "keyint", "lossless"))
        lines.append(f"| {p['name']} | {p['profile']} @ L{p['level']} | {eff} |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--assets", "assets_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Shared assets folder (default $WEIGHTCODEC_ASSETS or ../shared/assets).")
@click.option("--qps", default=",".join(map(str, DEFAULT_QPS)), show_default=True, help="Comma-separated QPs.")
@click.option("--variants", default="all", show_default=True, help="Comma-separated variant names, or 'all'.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=ROOT / "docs" / "data" / "encoder_settings.json", show_default=True)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the markdown tables here.")
def main(assets_dir, qps, variants, out, markdown_path):
    """libx265 settings on real int8 weight matrices: bits at equal int8 RMSE against the defaults."""
    try:
        qps = [int(q) for q in qps.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {qps!r}", param_hint="--qps") from None
    variants = VARIANTS if variants == "all" else \
        [VARIANTS[0]] + [v for v in VARIANTS[1:] if v[0] in variants.split(",")]
    try:
        backend = get_backend("pyav")
        matrices = load_matrices(assets_dir)
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None
    sizes = {m.name: m.values.size for m in matrices}
    started = time.perf_counter()
    load_before = os.getloadavg()

    result: dict = {
        "tool": "tools.measure_encoder",
        "command": "python -m tools.measure_encoder " + " ".join(sys.argv[1:]),
        "environment": {},
        "qps": qps,
        "weight_x265_params": ":".join(f"{k}={v}" for k, v in WEIGHT_X265_PARAMS),
        "matrices": [{"name": m.name, "shape": list(m.values.shape), "weights": int(m.values.size)}
                     for m in matrices],
        "variants": [],
        "probes": [],
        "notes": {},
    }
    kept: dict[tuple[str, str, int], dict] = {}  # (variant, matrix, qp) -> stream/decoded for the notes
    for name, what, overrides in variants:
        t0 = time.perf_counter()
        points: dict[str, list[dict]] = {}
        for m in matrices:
            points[m.name] = []
            for qp in qps:
                settings = make_settings(overrides, qp)
                r = code_once(backend, m.values, settings)
                if name in ("default", "chroma-gray", "info-on", "ipratio-1.4"):
                    kept[(name, m.name, qp)] = {"stream": r["_stream"], "decoded": r["_decoded"]}
                points[m.name].append({"qp": qp, **{k: v for k, v in r.items() if not k.startswith("_")}})
        s0 = make_settings(overrides, qps[0])
        entry = {
            "name": name,
            "description": what,
            "change": ":".join(f"{k}={v}" for k, v in overrides.get("extra", ())) or
            " ".join(f"{k}={v}" for k, v in overrides.items() if k != "extra"),
            "preset": s0.preset,
            "chroma": s0.chroma,
            "x265_params": s0.x265_params().replace(f"qp={qps[0]}", "qp=<QP>"),
            "encode_seconds": sum(p["encode_seconds"] for pts in points.values() for p in pts),
            "decode_seconds": sum(p["decode_seconds"] for pts in points.values() for p in pts),
            "points": points,
        }
        result["variants"].append(entry)
        click.echo(f"{name:16s} {time.perf_counter() - t0:6.1f} s", err=True)

    # Bjontegaard deltas vs default.
    base = result["variants"][0]
    for v in result["variants"][1:]:
        per = {m: bd_rate(base["points"][m], v["points"][m]) for m in sizes}
        lin = [d["linear_pct"] for d in per.values() if d["linear_pct"] is not None]
        cub = [d["pchip_pct"] for d in per.values() if d["pchip_pct"] is not None]
        v["bd_vs_default"] = {
            "per_matrix": per,
            "mean_linear_pct": float(np.mean(lin)) if lin else None,
            "mean_pchip_pct": float(np.mean(cub)) if cub else None,
            "mean_log_rmse_linear_pct": float(np.mean([d["log_rmse_linear_pct"] for d in per.values()
                                                       if d["log_rmse_linear_pct"] is not None] or [np.nan])),
            "pooled": bd_rate(pooled(base["points"], sizes), pooled(v["points"], sizes)),
        }

    # Notes: gray vs yuv420p at equal QP, info SEI bytes, ipratio identity.
    names = {v["name"]: v for v in result["variants"]}
    if "chroma-gray" in names:
        pcts, same = [], 0
        for m in sizes:
            for pb, pg in zip(base["points"][m], names["chroma-gray"]["points"][m]):
                pcts.append(100.0 * (pg["bytes"] / pb["bytes"] - 1))
                same += int(np.array_equal(kept[("default", m, pb["qp"])]["decoded"],
                                           kept[("chroma-gray", m, pg["qp"])]["decoded"]))
        result["notes"]["gray_vs_yuv420p"] = {
            "bytes_pct": pcts, "min_pct": min(pcts), "max_pct": max(pcts), "mean_pct": float(np.mean(pcts)),
            "rmse_identical": same, "points": len(pcts)}
    if "info-on" in names:
        added, bpw, identical, sei = [], [], 0, 0
        for m in sizes:
            for qp in qps:
                d = len(kept[("info-on", m, qp)]["stream"]) - len(kept[("default", m, qp)]["stream"])
                added.append(d)
                bpw.append(8.0 * d / sizes[m])
                identical += int(np.array_equal(kept[("info-on", m, qp)]["decoded"],
                                                kept[("default", m, qp)]["decoded"]))
        sei = sum(len(nal) + 4 for nal in iter_nal_units(kept[("info-on", matrices[0].name, qps[0])]["stream"])
                  if len(nal) > 1 and (nal[0] >> 1) & 0x3F in (39, 40))  # prefix/suffix SEI, with start code
        result["notes"]["info_sei"] = {"added_bytes": added, "min_bytes": min(added), "max_bytes": max(added),
                                       "bpw_min": min(bpw), "bpw_max": max(bpw), "sei_nal_bytes": sei,
                                       "decoded_identical": identical, "points": len(added)}
    if "ipratio-1.4" in names:
        checked = identical = 0
        max_diff = 0
        byte_pcts, rmse_ratios = [], []
        for m in matrices:
            for qp in qps:
                hi = kept[("ipratio-1.4", m.name, qp)]
                lo = code_once(backend, m.values, make_settings({}, qp - 3)) if qp >= 3 else None
                if lo is not None:
                    checked += 1
                    identical += int(np.array_equal(lo["_decoded"], hi["decoded"]))
                    max_diff = max(max_diff, abs(lo["bytes"] - len(hi["stream"])))
                pb = next(p for p in base["points"][m.name] if p["qp"] == qp)
                ph = next(p for p in names["ipratio-1.4"]["points"][m.name] if p["qp"] == qp)
                byte_pcts.append(100.0 * (ph["bytes"] / pb["bytes"] - 1))
                rmse_ratios.append(pb["rmse"] / ph["rmse"] if ph["rmse"] else float("inf"))
        result["notes"]["ipratio"] = {
            "checked": checked, "identical": identical, "max_byte_diff": max_diff,
            "same_qp_bytes_pct_min": min(byte_pcts), "same_qp_bytes_pct_max": max(byte_pcts),
            "same_qp_rmse_ratio_min": min(rmse_ratios), "same_qp_rmse_ratio_max": max(rmse_ratios)}

    # What x265 really applied, and what profile each choice signals.
    probe_matrix = matrices[0].values
    probe_list = [(v[0], make_settings(v[2], 30)) for v in variants if v[0] not in ("info-on",)]
    probe_list += [(p, HevcSettings(qp=30, extra_x265_params=extra)) for p, extra in PARAM_PROBES]
    probe_list += [("keyint=1", HevcSettings(qp=30, extra_x265_params=(("keyint", "1"),))),
                   ("lossless", HevcSettings(lossless=True)),
                   ("lossless chroma gray", HevcSettings(lossless=True, chroma="gray"))]
    for pname, settings in probe_list:
        p = probe(backend, probe_matrix, settings)
        result["probes"].append({"name": pname, "x265_params": settings.x265_params(), "chroma": settings.chroma,
                                 "preset": settings.preset, **p})

    result["environment"] = {
        "machine": machine_info(), "x265": result["probes"][0]["x265_version"] if result["probes"] else None,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    table = markdown(result)
    probes_md = probes_markdown(result)
    click.echo(table)
    click.echo(probes_md)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, [(json.dumps(result, indent=1) + "\n").encode()])
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(markdown_path, [(table + "\n" + probes_md).encode()])
    click.echo(f"wrote {out}" + (f" and {markdown_path}" if markdown_path else ""), err=True)


if __name__ == "__main__":
    main()
