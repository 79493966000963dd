"""Side-by-side benchmark: weightcodec against nncodec (MPEG NNC), zstd, zipnn and plain int8.

Every codec codes **the same tensors** of each model (see :mod:`bench.comparison`); each codec is
a class in :mod:`bench.peers`, and every row's bytes, errors (int8 units), timing medians and peak
memory are computed the same way (:mod:`bench.peers.base`). Rows per model, in this order:
float32, int8 + scales, weightcodec (HEVC lossless and QP 22..36), zstd -19, zipnn, nncodec (int8
lossless, int8 uniform/DQ at the step of each HEVC QP, float uniform at the int8 step, float DQ).
Definitions: ``docs/BENCHMARKS.md``.

Usage::

    python -m bench.run [--models digits-mlp,mnist-mlp,mobilenet_v2] [--repeats 3] [--quick]
                        [--out bench/results] [--codecs int8,weightcodec,zstd,zipnn,nncodec]
                        [--score auto|all|sparse|none] [--no-memory] [--no-plot] [--from-json]

Writes ``<out>/<model>.json`` (:mod:`bench.records`), ``<out>/<model>.png`` and ``<out>/summary.md``
(:mod:`bench.report`). The JSON files are written once, when every model has run.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from . import BenchError
from .peers import ALWAYS, SELECTABLE, Peer, PeerUnavailable, RunOptions, peer_class
from .records import rate_comparisons, read_documents, write_document
from .report import write_report

ROOT = Path(__file__).resolve().parents[1]


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


def bench_model(model: str, peers: list[Peer], score: str, console, progress) -> dict[str, Any] | None:
    """Every peer on one model: its ``model_result`` (None if the model cannot be benchmarked here)."""
    from .comparison import Comparison

    def log(msg: str) -> None:
        console.log(f"[bold]{model}[/]: {msg}")

    task = progress.add_task(f"{model}: loading", total=None)
    started = time.perf_counter()
    comparison = Comparison.load(model, log)
    if comparison is None:
        progress.remove_task(task)
        return None
    active, skipped = [], []
    for peer in peers:
        try:
            peer.setup(comparison, log)
            active.append(peer)
        except PeerUnavailable as exc:
            skipped.append(str(exc))
            log(f"[yellow]skipping {peer.name}: {exc}[/]")
    progress.update(task, total=sum(len(p.settings()) for p in active), completed=0)
    records = []
    for peer in active:
        for setting in peer.settings():
            progress.update(task, description=f"{model}: {peer.describe(setting)}", advance=1)
            records.append(peer.run(comparison, setting))

    mode = comparison.score_mode(score)
    done = next(t.completed for t in progress.tasks if t.id == task)
    progress.update(task, total=done + len(records))

    bars: list = []

    def step(label: str):  # one evaluation: advance the model's bar, show one for the evaluation
        progress.update(task, description=f"{model}: score {label}", advance=1)
        while bars:
            progress.remove_task(bars.pop())
        bars.append(progress.add_task(f"  top-1 {label}", total=None))
        return lambda n, total, bar=bars[-1]: progress.update(bar, completed=n, total=total)

    scoring = comparison.score(records, mode, step)
    while bars:
        progress.remove_task(bars.pop())
    progress.update(task, completed=done + len(records), description=f"{model}: done")
    ev = comparison.evaluator
    result = {
        "model": model,
        "weights": comparison.weights_path,
        "evaluation": None if ev is None else {
            "dataset": ev.dataset, "samples": ev.num_samples, "preprocessing": ev.preprocessing,
            "score_mode": mode, "scores_run": scoring["scores_run"],
            "score_seconds": round(scoring["score_seconds"], 1)},
        "evaluation_note": comparison.eval_note,
        "coded_layers": comparison.coded_layers,
        "coded_weights": comparison.cs.numel,
        "scale_bytes": comparison.cs.scale_bytes,
        "rest_bytes": comparison.rest_bytes,
        "float32_model_bytes": comparison.float_model_bytes,
        "weightcodec_quant_config": dataclasses.asdict(comparison.lossless_config.quant),
        "weightcodec_git": _git_state(),
        "skipped": skipped,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "records": [r.to_json() for r in records],
    }
    result["rate_at_equal_error"] = rate_comparisons(result["records"])
    return result


def run(models: list[str], codecs: list[str], options: RunOptions, score: str, out: Path, plots: bool,
        command: str) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from weightcodec.measure import machine_info

    console = Console(stderr=True)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "tool": "bench.run", "command": command, "repeats": options.repeats, "quick": options.quick,
        "codecs": codecs, "machine": machine_info(), "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "nncodec_version": None,
    }
    peers = [peer_class(name)(options) for name in (*ALWAYS, *(n for n in SELECTABLE if n in codecs))]
    results = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        for model in models:
            result = bench_model(model, peers, score, console, progress)
            if result is not None:
                results.append(result)
                console.log(f"[green]{model}[/]: done ({result['wall_seconds']:.0f} s)")
    if not results:
        console.print("[red]error:[/] no model could be benchmarked (see the skip messages above)")
        return 1
    for peer in peers:
        meta.update(peer.run_info())
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    documents = [{**meta, "model_result": r} for r in results]
    for doc in documents:
        write_document(out / f"{doc['model_result']['model']}.json", doc)
    summary = write_report(out, documents, plots=plots)
    console.log(f"wrote {', '.join(str(out / (r['model'] + '.json')) for r in results)} and {summary}")
    return 0


def _names(text: str, known: tuple[str, ...] | None, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known)) if known is not None else []
    if unknown or not names:
        raise click.BadParameter(f"unknown {what}(s) {unknown}; choose from {', '.join(known or ())}")
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--models", default="digits-mlp,mnist-mlp,mobilenet_v2", show_default=True,
              help="Comma-separated model names (see weightcodec.evaluation.zoo).")
@click.option("--repeats", type=click.IntRange(min=1), help="Timing runs per setting; the median is reported "
              "[default: 3, 1 with --quick].")
@click.option("--quick", is_flag=True, help="QPs 22,28,34 only, 3 nncodec float points, 1 repeat.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "bench" / "results",
              show_default=True)
@click.option("--codecs", default=",".join(SELECTABLE), show_default=True, help="Which peers run (float32 always).")
@click.option("--score", type=click.Choice(["auto", "all", "sparse", "none"]), default="auto", show_default=True,
              help="Which rows get top-1/top-5: auto = sparse on ImageNet, all otherwise.")
@click.option("--memory/--no-memory", default=True, show_default=True, help="Run the peak-RSS probe processes.")
@click.option("--plot/--no-plot", default=True, show_default=True)
@click.option("--from-json", is_flag=True, help="Measure nothing: rebuild summary.md and the plots from --out.")
def main(models, repeats, quick, out, codecs, score, memory, plot, from_json):
    """Benchmark weightcodec against its peers on the same int8 tensors (JSON, markdown, plots)."""
    command = "python -m bench.run " + " ".join(sys.argv[1:])
    models = _names(models, None, "model")
    codecs = _names(codecs, SELECTABLE, "codec")
    options = RunOptions(repeats=repeats or (1 if quick else 3), quick=quick, memory=memory)
    try:
        if from_json:
            documents = read_documents(out, models)
            if not documents:
                raise BenchError(f"no <model>.json in {out} for {', '.join(models)}")
            click.echo(f"wrote {write_report(out, documents, plots=plot)} from {len(documents)} JSON file(s)", err=True)
            code = 0
        else:
            from weightcodec.evaluation import get_model_spec

            for model in models:
                get_model_spec(model)  # unknown names fail before anything runs
            code = run(models, codecs, options, score, out, plot, command)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # one clear line, non-zero exit
        from weightcodec.errors import WeightcodecError

        if os.environ.get("BENCH_TRACEBACK"):
            raise
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        known = isinstance(exc, (BenchError, WeightcodecError))
        click.echo(f"error: {line}" if known else f"error: {type(exc).__name__}: {line}", err=True)
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
