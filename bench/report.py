"""Markdown and plots of benchmark results, from the JSON documents of :mod:`bench.records` only.

:func:`write_report` makes ``summary.md`` and one ``<model>.png`` per document; a run calls it
with the documents it has just written, ``python -m bench.run --from-json`` with the documents of
an earlier run read back from disk, so both go through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def write_report(out: Path, documents: list[dict[str, Any]], *, plots: bool = True) -> Path:
    """Write ``out/summary.md`` (and the plots) from the documents of one or more runs; returns its path.

    Documents made by different commands (models measured in separate runs) are listed as runs.
    """
    if plots:
        for doc in documents:
            plot(doc["model_result"], out / f"{doc['model_result']['model']}.png")
    metas = [{k: v for k, v in d.items() if k != "model_result"} for d in documents]
    meta = dict(metas[0])
    distinct = []
    for m in metas:
        if not any(m.get("command") == d.get("command") for d in distinct):
            distinct.append(m)
    if len(distinct) > 1:
        meta["runs"] = distinct
    path = out / "summary.md"
    path.write_text(summary_markdown([d["model_result"] for d in documents], meta))
    return path
