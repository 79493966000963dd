"""QP sweep: accuracy and size of a model against the HEVC QP of its coded layers.

For each QP the model is encoded with :func:`weightcodec.api.encode`, decoded with
:func:`weightcodec.api.decode` and scored with :class:`weightcodec.evaluation.Evaluator`; the
float32 and int8-only rows come first, as in the paper's tables. Writes, under ``--out``:

- ``sweep.json``: one record per row with the settings that made it (stable: fixed ordering,
  sorted keys, seeds fixed; only the ``timing`` fields change between runs);
- ``sweep.md``: the table in the paper's layout (QP | top-1 | top-5 | coded layers | model);
- ``top1_vs_bytes.png`` and ``top1_vs_qp.png`` (needs the ``plot`` extra: matplotlib).

Examples::

    python -m tools.sweep --model digits-mlp --qp 22,28,34,40 --out build/sweep/digits
    python -m tools.sweep --model mobilenet_v2 --qp 22,24,26,28,30,32,34,36 --out build/sweep/mnv2
    python -m tools.sweep --arch resnet18 --weights resnet18.pth --data /data/imagenet/val --limit 2000
    python -m tools.sweep --model pickle --weights net.pt --trust-pickle --dataset imagenet --data DIR

Model names, their weights and data sets: :mod:`weightcodec.evaluation.zoo`. Encode settings are
built by :func:`weightcodec.config.build_encode_config`, as ``wcodec encode`` builds them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import torch

from weightcodec import api
from weightcodec.config import DEFAULT_GUARD_SQNR_DB, DEFAULT_MATRIX_GUARD_SQNR_DB, EncodeConfig, build_encode_config
from weightcodec.plan import storage_kind
from weightcodec.errors import WeightcodecError
from weightcodec.evaluation import DATASETS, PREPROCESSINGS, Evaluator, registered_models
from weightcodec.measure import human_bytes, int8_error, machine_info
from weightcodec.atomic import atomic_write
from weightcodec.quant import QuantizedTensor

SCHEMA = "weightcodec-sweep/1"
PAPER_QPS = "22,24,26,28,30,32,34,36"


@dataclass(frozen=True, kw_only=True)
class SweepSettings:
    """What is varied and what is fixed across the rows."""

    qps: tuple[int, ...]
    lossless: bool
    granularity: str
    guard_db: float
    matrix_guard_db: float
    preset: str
    chroma: str
    backend: str
    code_conv: bool

    def config(self, *, qp: int = 28, lossless: bool = False, int8_only: bool = False,
               no_zstd: bool = False) -> EncodeConfig:
        """The encode config of one row, from ``wcodec encode``'s options."""
        return build_encode_config(qp=qp, lossless=lossless, granularity=self.granularity, guard_db=self.guard_db,
                                   matrix_guard_db=self.matrix_guard_db, chroma=self.chroma, preset=self.preset,
                                   code_conv=self.code_conv, int8_only=int8_only, no_zstd=no_zstd,
                                   backend=self.backend)


def _round(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def _int8_errors(decoded: api.DecodeResult, reference: dict[str, QuantizedTensor],
                 names: list[str]) -> tuple[dict[str, tuple[float, int]], float, int]:
    """Per-layer (RMSE, max |error|) in int8 steps against the uncoded int8 values, and the pooled RMSE."""
    for name in names:
        got, want = decoded.quantized[name], reference[name]
        if got.granularity != want.granularity or not np.array_equal(got.scales, want.scales):
            raise click.ClickException(f"{name}: scales differ from the int8-only row's, so int8 errors would "
                                       "not compare")
    if not names:
        return {}, 0.0, 0
    errors = int8_error({n: decoded.quantized[n].values for n in names}, {n: reference[n].values for n in names})
    per_layer = {n: (e.rmse, int(e.max_abs)) for n, e in errors.layers.items()}
    return per_layer, errors.rmse, int(errors.max_abs)


class Sweep:
    """Runs the rows; keeps the references every row is compared with."""

    def __init__(self, evaluator: Evaluator, settings: SweepSettings, progress) -> None:
        self.evaluator = evaluator
        self.settings = settings
        self.progress = progress
        self.source = evaluator.reference_state_dict()
        self.float_bytes = sum(t.numel() * t.element_size() for t in self.source.values())
        self.float_top1: float | None = None
        self.int8_bytes: int | None = None
        self.int8_reference: dict[str, QuantizedTensor] = {}
        coding = settings.config()
        self.coded_names = [n for n, t in self.source.items() if storage_kind(n, t, coding) == "hevc"]

    def _score(self, label: str, state_dict=None) -> dict:
        task = self.progress.add_task(f"evaluate {label}", total=self.evaluator.num_samples)
        accuracy = self.evaluator.score(
            state_dict, progress=lambda done, total: self.progress.update(task, completed=done))
        self.progress.remove_task(task)
        return {"top1": _round(accuracy["top1"]), "top5": _round(accuracy["top5"]), "n": accuracy["n"]}

    def _encode(self, label: str, config: EncodeConfig) -> tuple[api.EncodeResult, api.DecodeResult, dict]:
        task = self.progress.add_task(f"encode {label}", total=None)

        def update(name: str, done: int, total: int) -> None:
            self.progress.update(task, completed=done, total=total)

        started = time.perf_counter()
        encoded = api.encode(self.source, config=config, progress=update)
        encode_seconds = time.perf_counter() - started
        self.progress.remove_task(task)
        started = time.perf_counter()
        decoded = api.decode(encoded.data, backend=config.backend, as_state_dict=True)
        decode_seconds = time.perf_counter() - started
        return encoded, decoded, {"encode_s": _round(encode_seconds, 4), "decode_s": _round(decode_seconds, 4)}

    def float_row(self) -> dict:
        accuracy = self._score("float32")
        self.float_top1 = accuracy["top1"]
        return {"row": "float32", "settings": {"dtype": "float32"}, **accuracy,
                "model_bytes": self.float_bytes, "layers": {}, "timing": {}}

    def int8_rows(self) -> list[dict]:
        """The paper's "int8 only" row (raw int8 + scales), and the same with zstd on the int8 bytes."""
        rows = []
        for label, compress_raw in (("int8", False), ("int8+zstd", True)):
            config = self.settings.config(int8_only=True, no_zstd=not compress_raw)
            encoded, decoded, timing = self._encode(label, config)
            if not self.int8_reference:
                self.int8_reference = dict(decoded.quantized)
                self.int8_bytes = encoded.report.total_bytes
            rows.append(self._row(label, {"int8_only": True, "zstd": compress_raw,
                                          **self._quant_settings()}, encoded, decoded, timing))
        return rows

    def qp_row(self, qp: int | None) -> dict:
        label = "lossless" if qp is None else f"QP {qp}"
        config = self.settings.config(qp=qp if qp is not None else 0, lossless=qp is None)
        encoded, decoded, timing = self._encode(label, config)
        settings = {"qp": qp, "lossless": qp is None, "preset": self.settings.preset,
                    "chroma": self.settings.chroma, "backend": self.settings.backend,
                    "code_conv": self.settings.code_conv, **self._quant_settings()}
        return self._row(label, settings, encoded, decoded, timing)

    def _quant_settings(self) -> dict:
        return {"granularity": self.settings.granularity, "guard_db": self.settings.guard_db,
                "matrix_guard_db": self.settings.matrix_guard_db}

    def _row(self, label: str, settings: dict, encoded: api.EncodeResult, decoded: api.DecodeResult,
             timing: dict) -> dict:
        report = encoded.report
        coded = self.coded_names
        per_layer, rmse, worst = _int8_errors(decoded, self.int8_reference, coded)
        layers = {}
        for layer in report.layers:
            if layer.storage == "raw":
                continue
            entry = {"shape": list(layer.shape), "storage": layer.storage, "bytes": layer.stored_bytes,
                     "granularity": layer.granularity}
            if layer.name in per_layer:
                entry["int8_rmse"] = _round(per_layer[layer.name][0])
                entry["int8_max_error"] = per_layer[layer.name][1]
            layers[layer.name] = entry
        int8_mb = sum(q.values.size for q in decoded.quantized.values()) / 1e6
        timing["encode_mb_s"] = _round(int8_mb / timing["encode_s"], 4) if timing["encode_s"] else None
        timing["decode_mb_s"] = _round(int8_mb / timing["decode_s"], 4) if timing["decode_s"] else None
        accuracy = self._score(label, decoded.state_dict)
        row = {"row": label, "settings": settings, **accuracy, "model_bytes": report.total_bytes,
               "coded_bytes": sum(layers[n]["bytes"] for n in coded), "int8_rmse": _round(rmse),
               "int8_max_error": worst, "layers": layers, "timing": timing,
               "ratio_vs_float32": _round(self.float_bytes / report.total_bytes, 4),
               "ratio_vs_int8": _round(self.int8_bytes / report.total_bytes, 4) if self.int8_bytes else 1.0}
        return row


def markdown_table(result: dict) -> str:
    """The paper's layout: QP | top-1 | top-5 | coded layers | model, plus our extra columns."""
    rows = result["rows"]
    coded = result["coded_layers"]
    per_layer_columns = coded if len(coded) <= 4 else []
    head = ["", "top-1", "top-5", "Δ top-1"] + [f"`{n}`" for n in per_layer_columns]
    head += ["coded total", "model", "× float32", "× int8", "int8 RMSE", "max err", "enc s", "dec s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    float_top1 = rows[0]["top1"]
    float_layer_bytes = result["float_layer_bytes"]
    for row in rows:
        is_float = row["row"] == "float32"
        layer_bytes = [float_layer_bytes[n] if is_float else row["layers"][n]["bytes"] for n in coded]
        cells = [row["row"], f"{row['top1']:.2f}", f"{row['top5']:.2f}",
                 "" if is_float else f"{row['top1'] - float_top1:+.2f}"]
        cells += [human_bytes(layer_bytes[coded.index(n)]) for n in per_layer_columns]
        cells += [human_bytes(sum(layer_bytes)), human_bytes(row["model_bytes"]),
                  f"{row.get('ratio_vs_float32', 1.0):.2f}", f"{row.get('ratio_vs_int8', float('nan')):.2f}"
                  if not is_float else "",
                  "" if is_float else f"{row['int8_rmse']:.3f}",
                  "" if is_float else str(row["int8_max_error"]),
                  "" if is_float else f"{row['timing']['encode_s']:.2f}",
                  "" if is_float else f"{row['timing']['decode_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Model `{result['model']['spec']}` ({result['model']['weights']}), "
             f"{result['data']['dataset']} ({result['data']['n']} samples"
             f"{', ' + result['data']['preprocessing'] + ' preprocessing' if result['data']['preprocessing'] else ''}). "
             f"Coded layers (HEVC): {', '.join(f'`{n}`' for n in coded) or 'none'}. "
             "int8 RMSE / max err: coded layers against their uncoded int8 values, in int8 steps. "
             "× int8 is against the raw int8-only container (the paper's row)."]
    return "\n".join(lines) + "\n\n" + notes[0] + "\n"


def write_plots(result: dict, out: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError as exc:
        raise click.ClickException("plots need matplotlib: pip install 'weightcodec[plot]' "
                                   "(or pass --no-plot)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    qp_rows = [r for r in rows if r["settings"].get("qp") is not None]
    written = []
    title = f"{result['model']['spec']} on {result['data']['dataset']} (n={result['data']['n']})"

    def save(xlabel: str, name: str) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / name)
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["model_bytes"] / 1e6 for r in qp_rows], [r["top1"] for r in qp_rows], "o-", label="HEVC QP")
    for r in qp_rows:
        ax.annotate(str(r["settings"]["qp"]), (r["model_bytes"] / 1e6, r["top1"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    for r, marker in zip([r for r in rows if r["settings"].get("qp") is None], "s^Dv"):
        ax.plot([r["model_bytes"] / 1e6], [r["top1"]], marker, label=r["row"])
    ax.set_xscale("log")
    save("model size (MB, log)", "top1_vs_bytes.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["settings"]["qp"] for r in qp_rows], [r["top1"] for r in qp_rows], "o-", label="HEVC QP")
    for r, style in ((rows[0], "--"), (next((r for r in rows if r["row"] == "int8"), None), ":")):
        if r is not None:
            ax.axhline(r["top1"], linestyle=style, color="gray", label=r["row"])
    save("QP", "top1_vs_qp.png")
    return written


def _parse_qps(text: str) -> tuple[int, ...]:
    try:
        qps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not qps or any(not 0 <= qp <= 51 for qp in qps):
        raise click.BadParameter(f"QPs must be integers from 0 to 51, got {text!r}")
    return tuple(sorted(set(qps)))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--model", "--arch", "spec", required=True, metavar="NAME",
              help=f"A registered model ({', '.join(registered_models())}), a torchvision architecture "
                   "(resnet18, vgg16, ...), or 'pickle' for a pickled nn.Module.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="State_dict file (pickled module for 'pickle'). Default: the model's own "
                   "(data/digits_mlp.pt, or the shared assets).")
@click.option("--trust-pickle", is_flag=True,
              help="Allow unpickling --weights for --model pickle: this runs code from the file.")
@click.option("--dataset", type=click.Choice(DATASETS),
              help="Evaluation set. Default: the model's own (digits, mnist, or imagenet).")
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder: ImageNet-style (class sub-folders or labels.csv), or the MNIST "
                   "IDX folder. Default: ../shared/assets ($WEIGHTCODEC_ASSETS).")
@click.option("--preprocessing", type=click.Choice(PREPROCESSINGS),
              help="ImageNet preprocessing. Default: torchvision (resize 256, crop 224, normalise); "
                   "tf-inception for mobilenet_v2, whose weights came from TensorFlow.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N samples only.")
@click.option("--qp", "qp_text", default=PAPER_QPS, show_default=True,
              help="Comma-separated QPs (0-51), one row each.")
@click.option("--lossless/--no-lossless", default=False, show_default=True,
              help="Add a lossless HEVC row.")
@click.option("--granularity", type=click.Choice(["auto", "per-tensor", "per-channel"]), default="auto",
              show_default=True, help="int8 scales: auto = per-tensor unless the guard flags the layer. "
                                      "per-tensor everywhere is the paper's method.")
@click.option("--guard-db", type=click.FloatRange(0, 100), default=DEFAULT_GUARD_SQNR_DB,
              show_default=True, help="auto: conv weights whose guard figure is below this go per-channel.")
@click.option("--matrix-guard-db", type=click.FloatRange(0, 100), default=DEFAULT_MATRIX_GUARD_SQNR_DB,
              show_default=True, help="auto: the same for 2-D (Linear) weights.")
@click.option("--preset", default="medium", show_default=True, help="x265 preset.")
@click.option("--chroma", type=click.Choice(["yuv420p", "gray"]), default="yuv420p", show_default=True)
@click.option("--backend", type=click.Choice(["pyav", "ffmpeg"]), default="pyav", show_default=True)
@click.option("--code-conv", is_flag=True, help="Code conv weights with HEVC too (off in the paper).")
@click.option("--threads", type=click.IntRange(min=1), default=os.cpu_count(), show_default=True,
              help="torch threads for the evaluation.")
@click.option("--assets", "assets_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Shared assets folder (default $WEIGHTCODEC_ASSETS or ../shared/assets).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("build/sweep"),
              show_default=True, help="Output folder for sweep.json, sweep.md and the plots.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write the PNG plots.")
def main(spec, weights, trust_pickle, dataset, data_root, preprocessing, limit, qp_text, lossless,
         granularity, guard_db, matrix_guard_db, preset, chroma, backend, code_conv, threads, assets_dir, out, plot):
    """Encode, decode and evaluate a model at each QP; write a JSON record per row, a markdown
    table in the paper's layout and plots of top-1 against size and QP."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    qps = _parse_qps(qp_text)
    console = Console(stderr=True)
    try:
        settings = SweepSettings(qps=qps, lossless=lossless, granularity=granularity, guard_db=guard_db,
                                 matrix_guard_db=matrix_guard_db,
                                 preset=preset, chroma=chroma, backend=backend, code_conv=code_conv)
        settings.config()  # validate once, before loading anything
        evaluator = Evaluator.create(spec, weights=weights, trust_pickle=trust_pickle, dataset=dataset,
                                     data_root=data_root, preprocessing=preprocessing, limit=limit,
                                     assets_dir=assets_dir)
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    rows = []
    with Progress(*columns, console=console, transient=True) as progress:
        sweep = Sweep(evaluator, settings, progress)
        plan = ["float32", "int8"] + (["lossless"] if lossless else []) + [f"QP {qp}" for qp in qps]
        overall = progress.add_task("sweep", total=len(plan))
        try:
            rows.append(sweep.float_row())
            rows.extend(sweep.int8_rows())
            progress.advance(overall, 2)
            for qp in ([None] if lossless else []) + list(qps):
                rows.append(sweep.qp_row(qp))
                progress.advance(overall)
                r = rows[-1]
                console.print(f"{r['row']:>9}: top-1 {r['top1']:6.2f}  {human_bytes(r['model_bytes']):>9}  "
                              f"int8 RMSE {r['int8_rmse']:.2f}", highlight=False)
        except WeightcodecError as exc:
            raise click.ClickException(str(exc)) from None

    result = {
        "schema": SCHEMA,
        "model": {"spec": spec, "weights": str(evaluator.weights) if evaluator.weights else None},
        "data": {"dataset": evaluator.dataset, "root": str(data_root) if data_root else "shared assets",
                 "preprocessing": evaluator.preprocessing, "n": rows[0]["n"], "limit": limit},
        "settings": asdict(settings),
        "coded_layers": sweep.coded_names,
        "float_layer_bytes": {n: sweep.source[n].numel() * sweep.source[n].element_size()
                              for n in sweep.coded_names},
        "machine": machine_info(),
        "rows": rows,
    }
    atomic_write(out / "sweep.json", [(json.dumps(result, indent=1, sort_keys=True) + "\n").encode()])
    atomic_write(out / "sweep.md", [markdown_table(result).encode()])
    written = [out / "sweep.json", out / "sweep.md"]
    if plot:
        written += write_plots(result, out)
    click.echo(markdown_table(result))
    console.print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
