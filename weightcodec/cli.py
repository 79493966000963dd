"""``wcodec``: the command line. Click commands and presentation only; the work is in api.py."""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .api import (EncodeReport, can_stream_to_safetensors, decode, decode_to_folder, decode_to_safetensors, encode,
                  numpy_can_hold, read_header, select_tensors)
from .backends import available_backends
from .policy import POLICIES
from .config import (
    DEFAULT_CONFIDENCE,
    CHROMA_FORMATS,
    DEFAULT_MATRIX_GUARD_SQNR_DB,
    DEFAULT_EFFORT,
    DEFAULT_GUARD_SQNR_DB,
    EFFORTS,
    GRANULARITIES,
    X265_PRESETS,
    EncodeConfig,
    build_encode_config,
)
from .atomic import resolve_output
from .errors import NotAWcodecFileError, WeightcodecError
from .measure import human_bytes
from .modelio import check_model_path
from .outputs import Written, check_output as check_decode_output, save_decoded

# Wide tables when piped (rich assumes 80 columns without a terminal).
class _LazyConsole:
    """A rich Console made on first use: a command that prints one line does not pay rich's import."""

    def __init__(self, **options) -> None:
        self._options = options
        self._console = None

    def get(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.get(), name)


console = _LazyConsole(stderr=True, width=None if sys.stderr.isatty() else 160)
out = _LazyConsole(width=None if sys.stdout.isatty() else 160)


class UserError(click.ClickException):
    """One clear line on stderr, exit status 1."""

    def show(self, file=None) -> None:  # noqa: ARG002 - click's signature
        console.print(f"[bold red]error:[/] {self.message}", highlight=False)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except NotAWcodecFileError as exc:
        raise UserError(str(exc) + _sniff_hint(args[0] if args else None)) from None
    except WeightcodecError as exc:
        raise UserError(str(exc)) from None


def _sniff_hint(source: object) -> str:
    """For a file that is not a .wcodec: say what it looks like and what to run instead."""
    if not isinstance(source, (str, Path)):
        return ""
    try:
        with open(source, "rb") as handle:
            start = handle.read(8)
    except OSError:
        return ""
    if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":
        return f"; it looks like a PyTorch file: compress it with `wcodec encode {source}`"
    return ""


class _Group(click.Group):
    """Ctrl-C (and SIGTERM, see :func:`run`) end a command with one line and exit status 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            written = ctx.meta.get(WRITTEN)
            console.print(f"[red]interrupted[/]: {f'{written} was written completely' if written else 'nothing was written'}",
                          highlight=False)
            ctx.exit(130)


#: ``ctx.meta`` key of the output file once it is complete (so an interrupt can say so).
WRITTEN = "wcodec.written"


def _parse_size(text: str | None) -> int | None:
    if text is None:
        return None
    units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in units or float(match.group(1)) * units[match.group(2).lower()] < 1:
        raise click.BadParameter(f"expected a size such as 100k, 2.5M or 123456, got {text!r}")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def _progress(quiet: bool, description: str):
    """A progress bar showing the weights done, the layers done and MB/s (1 MB = 1e6 weights,
    i.e. int8 megabytes, as the benchmarks count), and the callback the API drives it with."""
    if quiet:
        return None, None
    import time

    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[layers]} layers  {task.fields[rate]}"),
                   TextColumn("{task.fields[layer]}"), TimeElapsedColumn(), console=console.get(), transient=True)
    task = bar.add_task(description, total=None, layer="", layers=0, rate="")
    state = {"started": time.perf_counter(), "layers": 0}

    def update(name: str, done: int, total: int) -> None:
        if name:
            state["layers"] += 1
        elapsed = time.perf_counter() - state["started"]
        rate = f"{done / elapsed / 1e6:.2f} MB/s" if elapsed > 0 and done else ""
        bar.update(task, completed=done, total=total, layer=name, layers=state["layers"], rate=rate)

    return bar, update


def _check_output(path: Path, force: bool) -> None:
    """Fail before any work when the output cannot be written (exists without --force, not a file...)."""
    _run(resolve_output, path, overwrite=force)


def _mark_written(path: Path) -> None:
    click.get_current_context().meta[WRITTEN] = path


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wcodec")
def main() -> None:
    """Shrink PyTorch models by coding their weight matrices as HEVC video.

    \b
    wcodec encode model.pt --qp 28        # -> model.wcodec
    wcodec info model.wcodec              # per-layer contents, without decoding
    wcodec decode model.wcodec -o out.pt  # a state_dict (or module) again

    Weights of Linear/Conv/Embedding layers are quantized to symmetric int8; 2-D weight
    matrices are tiled into 8-bit frames and coded with libx265 (HEVC Main profile, decodable by
    phone hardware decoders); everything else is stored exactly. See docs/ for the format and
    the measurements behind the defaults.
    """


@main.command("encode")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file [default: MODEL with .wcodec suffix].")
@click.option("--qp", type=click.IntRange(0, 51), default=None,
              help="HEVC quantization parameter, 0-51, for every coded matrix: higher is smaller and lossier. It is "
                   "the QP written in the stream (x265's I-frame offset is cancelled). Default: 28, except for "
                   "Transformers (see --policy), which get a QP per matrix from fidelity targets.")
@click.option("--policy", type=click.Choice(POLICIES), default="auto", show_default=True,
              help="How matrices are quantized and which QP each gets. classic: the paper's method, one QP, "
                   "per-tensor scales unless the guard objects. transformer: embeddings get one scale per "
                   "column, projections one per row and one per column, each matrix the QP that meets its "
                   "role's fidelity target (data-free; docs/RESULTS.md, Transformer section). auto: transformer "
                   "when the tensor names include attention projections (safetensors / Hugging Face folders "
                   "of BERT, GPT-2, Llama...), else classic.")
@click.option("--lossless", is_flag=True, help="Code matrices with HEVC lossless mode: int8 round-trips exactly. Lossless streams "
                   "signal level 8.5, which phone hardware decoders may refuse, and are larger than "
                   "--int8-only (zstd); prefer --int8-only for exact weights.")
@click.option("--layer-qp", "layer_qp", multiple=True, metavar="PATTERN=QP",
              help="Per-layer QP for tensors whose name matches the glob, e.g. 'classifier.*=24'. Repeatable.")
@click.option("--granularity", type=click.Choice(GRANULARITIES), default="auto", show_default=True,
              help="int8 scales: one per tensor (the paper's), one per output channel, or auto: per tensor "
                   "unless the guard finds that breaks the layer.")
@click.option("--layer-granularity", multiple=True, metavar="PATTERN=G", help="Per-layer granularity. Repeatable.")
@click.option("--guard-db", type=click.FloatRange(0, 100), default=DEFAULT_GUARD_SQNR_DB, show_default=True,
              help="Guard threshold for convolution weights: a layer whose median channel gets "
                   "less than this SQNR (dB) under per-tensor int8 is flagged (and switched to per-channel in "
                   "auto mode). See docs/QUANTIZATION.md.")
@click.option("--matrix-guard-db", type=click.FloatRange(0, 100), default=DEFAULT_MATRIX_GUARD_SQNR_DB,
              show_default=True, help="Guard threshold for 2-D weights (Linear, embeddings): lower, because "
                                      "per-channel scales cost them bits and HEVC's error dominates.")
@click.option("--chroma", type=click.Choice(CHROMA_FORMATS), default="yuv420p", show_default=True,
              help="yuv420p: HEVC Main profile with flat chroma (phone decoders); gray: 4:0:0, a range-"
                   "extensions profile most phone hardware cannot decode.")
@click.option("--effort", type=click.Choice(tuple(EFFORTS)), default=DEFAULT_EFFORT, show_default=True,
              help="Encoder speed against size, measured per CPU core against the old default (x265 medium; "
                   "docs/ENCODER.md section 9). default: 3x faster for about 1 % more bytes at equal int8 "
                   "error (16x16 blocks, small matrices keep 8x8). fast: 5.6x faster, about 2.3 % more bytes. "
                   "max: x265 veryslow, the smallest files (0.2 % fewer bytes), 1.5x slower than the old default.")
@click.option("--preset", type=click.Choice(X265_PRESETS), default=None,
              help="Override the effort's x265 preset (its weight-tuned parameters stay).")
@click.option("--max-tile", default="4096x2160", show_default=True, metavar="WxH",
              help="Largest frame; bigger matrices are split into tiles.")
@click.option("--max-drop", type=click.FloatRange(min=0), metavar="POINTS",
              help="Spend the fewest bytes that lose at most POINTS of top-1 (measured on --calib-data): every "
                   "layer's storage, QP, granularity and layout is chosen by its measured sensitivity. Without "
                   "--calib-data a data-free proxy decides (with a warning). Replaces --qp; slower.")
@click.option("--target-size", metavar="SIZE", callback=lambda ctx, param, value: _parse_size(value),
              help="Fit the file into SIZE (e.g. 100k, 2.5M, 123456 bytes) with the least predicted loss, by the "
                   "same per-layer search as --max-drop (sensitivities from --calib-data, else data-free).")
@click.option("--arch", metavar="NAME",
              help="The model's architecture: a name the registry knows (mobilenet_v2, mnist-mlp, digits-mlp, "
                   "a torchvision classifier such as resnet18 ...), with its preprocessing; needed by --calib-data.")
@click.option("--calib-data", type=click.Path(path_type=Path), metavar="DIR",
              help="Calibration images for --max-drop/--target-size: a folder with a labels.csv (filename,label) "
                   "or one sub-folder per class. Checked before anything is encoded.")
@click.option("--calib-limit", type=click.IntRange(min=1), metavar="N",
              help="Use the first N calibration images (default: all).")
@click.option("--fisher-samples", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
              help="Calibration images used to measure layer sensitivities (the Fisher information); all of "
                   "them score the candidates.")
@click.option("--confidence", type=click.FloatRange(min=0.5, max=1, max_open=True), default=DEFAULT_CONFIDENCE,
              show_default=True, metavar="P",
              help="--max-drop with --calib-data: a drop measured on N images is noisy, so a plan passes only if "
                   "its drop plus a margin of standard errors is within POINTS, the budget then holding with this "
                   "one-sided confidence on unseen images like them. 0.5: no margin (bytes for luck).")
@click.option("--best-effort", is_flag=True,
              help="If the budget cannot be met, write the closest file anyway (marked as missing its budget).")
@click.option("--code-conv", is_flag=True, help="Also HEVC-code conv weights (costs accuracy; see docs).")
@click.option("--int8-only", is_flag=True, help="No HEVC: store every quantized weight as int8.")
@click.option("--no-zstd", is_flag=True, help="Store raw and int8 tensors uncompressed.")
@click.option("--backend", type=click.Choice(available_backends()), default="pyav", show_default=True,
              help="pyav: in-process libx265 from PyAV's wheels; ffmpeg: an ffmpeg executable.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow loading a pickled nn.Module. Unpickling runs code from the file: only for files you trust.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Decode each stream after coding it: report its int8 error and store a checksum of the decoded "
                   "values, so that any decoder detects a damaged stream instead of concealing it.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes coding layers at once [default: all cores, when there is enough to share]; "
                   "1: everything in this process. The file is the same bytes whatever the number.")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS", default=None,
              help="Code the layers as tasks on a Ray cluster: 'auto' (the cluster `ray start` made here, or "
                   "$RAY_ADDRESS) or the head's host:port. This machine reads the model and writes the file, "
                   "byte-identical to a local encode. Needs weightcodec[distributed] on every node.")
@click.option("-f", "--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no table.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-layer report as JSON on stdout.")
def encode_command(model, output, qp, policy, lossless, layer_qp, granularity, layer_granularity, guard_db, matrix_guard_db,
                   chroma, effort, preset, max_tile, max_drop, target_size, arch, calib_data, calib_limit, fisher_samples,
                   confidence, best_effort, code_conv, int8_only, no_zstd, backend, trust_pickle, verify, workers, ray_address, force,
                   quiet, as_json):
    """Compress MODEL: a torch.save'd state_dict (or a pickled nn.Module with --trust-pickle), a
    .safetensors file, or a Hugging Face model folder (config.json + model.safetensors, or sharded
    model-0000x-of-0000y.safetensors with their index); the folder's other files (config,
    tokenizer...) travel inside the .wcodec file.

    \b
    wcodec encode model.pth --qp 28                    # one QP for every coded layer
    wcodec encode my-hf-model/                         # a Hugging Face folder -> my-hf-model.wcodec
    wcodec encode model.pth --arch mobilenet_v2 --calib-data DIR --max-drop 1.0
    wcodec encode model.pth --target-size 2M           # per-layer choices that fit 2 MB
    """
    _run(check_model_path, model)
    output = output or default_output(model)
    _check_output(output, force)
    config = _run(build_encode_config, qp=qp, policy=policy, lossless=lossless, layer_qp=layer_qp, granularity=granularity,
                  layer_granularity=layer_granularity, guard_db=guard_db, matrix_guard_db=matrix_guard_db, chroma=chroma,
                  effort=effort, preset=preset,
                  max_tile=max_tile, code_conv=code_conv, int8_only=int8_only, no_zstd=no_zstd, backend=backend)
    budgeted = max_drop is not None or target_size is not None
    if not budgeted:
        for option, value in (("--arch", arch), ("--calib-data", calib_data), ("--calib-limit", calib_limit),
                              ("--best-effort", best_effort or None),
                              ("--confidence", None if confidence == DEFAULT_CONFIDENCE else confidence)):
            if value is not None:
                raise UserError(f"{option} only applies with --max-drop or --target-size")
    if budgeted:
        if ray_address is not None:
            raise UserError("--ray does not combine with --max-drop or --target-size (the search runs on this machine)")
        result = _encode_budgeted(model, output, config, quiet=quiet or as_json, max_drop=max_drop,
                                  target_size=target_size, arch=arch, calib_data=calib_data, calib_limit=calib_limit,
                                  fisher_samples=fisher_samples, confidence=confidence, best_effort=best_effort,
                                  trust_pickle=trust_pickle,
                                  granularity=granularity, int8_only=int8_only, workers=workers)
    else:
        bar, update = _progress(quiet or as_json, "encoding")
        if bar:
            bar.start()
        try:
            result = _run(encode, model, output, config=config, trust_pickle=trust_pickle, verify=verify,
                          workers=workers, ray=ray_address, progress=update)
        finally:
            if bar:
                bar.stop()
    _mark_written(output)
    report = result.report
    if as_json:
        out.print_json(json.dumps(report.to_json(output)))
        return
    if not quiet:
        _print_report(report)
    _print_notices(report)
    console.print(f"wrote [bold]{output}[/]: {human_bytes(report.total_bytes)} from {human_bytes(report.original_bytes)} "
                  f"({report.ratio:.1f}x) in {report.seconds:.1f} s", highlight=False)


def default_output(model: Path) -> Path:
    """MODEL with the .wcodec suffix; for a folder, FOLDER.wcodec beside it."""
    if model.is_dir():
        model = model.resolve()
        return model.parent / f"{model.name}.wcodec"
    return model.with_suffix(".wcodec")


def _encode_budgeted(model, output, config, *, quiet, max_drop, target_size, arch, calib_data, calib_limit,
                     fisher_samples, best_effort, trust_pickle, granularity, int8_only, workers=None,
                     confidence=DEFAULT_CONFIDENCE):
    """``--max-drop`` / ``--target-size``: check the calibration data, measure sensitivities, search, write."""
    from .allocation import AccuracyBudget, DataFreeSensitivity, SearchSpace, SizeBudget, encode_to_budget
    from .modelio import load_source

    if max_drop is not None and target_size is not None:
        raise UserError("give either --max-drop or --target-size, not both")
    source = click.get_current_context().get_parameter_source
    for name, option in (("qp", "--qp"), ("code_conv", "--code-conv")):
        if source(name) == click.core.ParameterSource.COMMANDLINE:
            raise UserError(f"{option} does not apply with a budget: the search chooses every layer's QP and storage")
    if calib_data is not None and arch is None:
        raise UserError("--calib-data needs --arch NAME: the architecture that runs the calibration images "
                        "(a name the registry knows, e.g. mobilenet_v2)")
    if calib_limit is not None and calib_data is None:
        raise UserError("--calib-limit needs --calib-data")
    space = SearchSpace(hevc=not int8_only,
                        granularities=("per-tensor", "per-channel") if granularity == "auto" else (granularity,))
    loaded = _run(load_source, model, trust_pickle=trust_pickle)
    if calib_data is not None:
        from .evaluation.calibration import load_calibration

        with console.status("checking and loading the calibration data"):
            calibration = _run(load_calibration, arch, calib_data, loaded.state_dict, limit=calib_limit)
        console.print(f"calibration: {calibration.description}", highlight=False)
        bar, update = _progress(quiet, "measuring sensitivities")
        if bar:
            bar.start()
        try:
            sensitivity = _run(calibration.fisher, max_samples=fisher_samples,
                               progress=(lambda done, total: update("", done, total or done)) if update else None)
        finally:
            if bar:
                bar.stop()
        with console.status("scoring the float model"):
            reference = _run(calibration.score_samples, loaded.state_dict)
        common = dict(score=calibration.score_samples, reference=reference, description=calibration.description,
                      samples=calibration.samples)
    else:
        if arch is not None:
            console.print(f"[bold yellow]warning:[/] --arch {arch} without --calib-data: nothing to measure with",
                          highlight=False)
        sensitivity, common = DataFreeSensitivity(), {}
    if confidence != DEFAULT_CONFIDENCE and (max_drop is None or calib_data is None):
        raise UserError("--confidence only applies with --max-drop and --calib-data (a measured drop)")
    budget = _run(AccuracyBudget, max_drop=max_drop, confidence=confidence, **common) if max_drop is not None else \
        _run(SizeBudget, target_bytes=target_size, **common)
    bar, update = _progress(quiet, "coding every option of every layer")
    if bar:
        bar.start()
    try:
        answer = _run(encode_to_budget, loaded, output, budget=budget, sensitivity=sensitivity, config=config,
                      space=space, best_effort=best_effort, workers=workers, progress=update,
                      log=None if quiet else (lambda line: console.print(f"  {line}", highlight=False)))
    finally:
        if bar:
            bar.stop()
    if not quiet:
        console.print(_plan_summary(answer.record), highlight=False)
    return answer.result


def _plan_summary(plan) -> str:
    """One paragraph on how a budgeted file was planned (``wcodec encode`` and ``wcodec info``)."""
    if plan.objective == "max-drop":
        goal = f"lose at most {plan.budget:g} points"
    elif plan.objective == "target-size":
        goal = f"fit {human_bytes(int(plan.budget))}"
    else:
        goal = f"{plan.objective} {plan.budget:g}"
    text = f"plan: {goal} ({'met' if plan.met else '[bold red]NOT met[/]: best effort'}); sensitivities: {plan.method}"
    if plan.calibration:
        text += f"; calibration: {plan.calibration}"
    if plan.score is not None and plan.reference_score is not None:
        noise = "" if plan.drop_se is None else f" +- {plan.drop_se:.2g}"
        margin = "" if plan.confidence is None else f", held to the budget at confidence {plan.confidence:g}"
        text += f"; score {plan.score:.4g} against {plan.reference_score:.4g} for the float model " \
                f"(drop {plan.drop:+.3g}{noise}, measured{margin})"
    elif plan.objective == "max-drop":
        text += "; drop not measured (no calibration data)"
    if plan.predicted_loss is not None:
        text += f"; predicted loss {plan.predicted_loss:.4g}"
    if plan.candidates is not None:
        text += f"; {plan.candidates:,} options measured"
    if plan.seconds is not None:
        text += f" in {plan.seconds:.0f} s"
    return text


def _print_report(report: EncodeReport) -> None:
    from rich.table import Table

    table = Table(title="per-layer summary", show_lines=False, title_style="bold")
    for col, justify in [("layer", "left"), ("shape", "left"), ("storage", "left"), ("granularity", "left"),
                         ("guard dB", "right"), ("QP", "right"), ("bytes", "right"), ("ratio", "right"),
                         ("bits/w", "right"), ("int8 RMSE", "right")]:
        table.add_column(col, justify=justify)
    for layer in report.layers:
        table.add_row(layer.name, "x".join(map(str, layer.shape)) or "scalar", layer.storage,
                      (layer.granularity or "-") + (" (guard)" if layer.guard_switched else ""),
                      _fmt(layer.guard_db), "lossless" if layer.lossless else _fmt(layer.qp, "d"),
                      f"{layer.stored_bytes:,}", f"{layer.ratio:.1f}x", f"{layer.bits_per_weight:.2f}",
                      _fmt(layer.int8_rmse, ".2f"))
    by_storage = report.bytes_by_storage()
    table.caption = ("  ".join(f"{k}: {human_bytes(v)}" for k, v in sorted(by_storage.items()))
                     + f"  header: {human_bytes(report.header_bytes)}  total: {human_bytes(report.total_bytes)} "
                       f"({report.ratio:.1f}x smaller than the input tensors)")
    console.print(table)


def _print_notices(report: EncodeReport) -> None:
    for notice in report.notices:
        style = "[yellow]note:[/]" if notice.level == "note" else "[bold yellow]warning:[/]"
        console.print(f"{style} {notice.message}", highlight=False)


@main.command("decode")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Where to write: a .pt file, a .safetensors file, or (for a Hugging Face folder) a folder.")
@click.option("--state-dict", "as_state_dict", is_flag=True,
              help="Write a plain state_dict even if the file holds a module (needs no --trust-pickle).")
@click.option("--trust-pickle", is_flag=True,
              help="Allow rebuilding a pickled nn.Module stored in the file (unpickling runs code from it).")
@click.option("--backend", type=click.Choice(available_backends()), default="pyav", show_default=True)
@click.option("--max-output-size", metavar="SIZE", callback=lambda ctx, param, value: _parse_size(value),
              help="Refuse files whose tensors add up to more than SIZE (e.g. 500M) before decoding anything. "
                   "Decoding never uses more memory than the file declares; this caps what it may declare.")
@click.option("--only", "only", multiple=True, metavar="PATTERN",
              help="Decode only the tensors whose name matches this glob (e.g. 'model.layers.0.*'); the "
                   "other segments of FILE are not even read. Repeatable. Writes a state_dict (.pt, or "
                   ".safetensors with -o x.safetensors), never a module or a folder.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Threads decoding streams at once [default: all cores]. The output is the same bits "
                   "whatever the number.")
@click.option("-f", "--force", is_flag=True, help="Overwrite the output file (or replace the output folder) if it exists.")
@click.option("-q", "--quiet", is_flag=True)
def decode_command(file, output, as_state_dict, trust_pickle, backend, max_output_size, only, workers, force, quiet):
    """Restore FILE in the form it was encoded from, or the one OUTPUT's suffix asks for.

    \b
    state_dict / module .pt  -> the same .pt (a module needs --trust-pickle)
    .safetensors file        -> a .safetensors file (dtypes and __metadata__ kept)
    Hugging Face folder      -> a folder (shards + config/tokenizer files, byte-identical),
                                loadable offline with transformers' from_pretrained
    -o x.pt / -o x.safetensors always write a state_dict in that format instead.

    Quantized weights come back dequantized (int8 x scale) in their original dtype; weights stored
    exactly (norms, biases, integer and float8 tensors) come back bit for bit. A .safetensors file
    or a folder is written tensor by tensor as they are decoded (memory: the tensors in hand, not
    the model); a .pt file is written whole by torch.save.
    """
    header = _run(read_header, file) if Path(file).is_file() else None
    form = _run(check_decode_output, header, output, overwrite=force, partial=bool(only)) if header is not None else None
    # a .safetensors file or a folder is written one tensor at a time: the model is never held whole
    streamed = form in ("safetensors", "folder") and _run(can_stream_to_safetensors, header, only or None)
    # a safetensors file of dtypes numpy has is written from numpy arrays: torch is never imported
    arrays = "numpy" if form == "safetensors" and header.model.kind != "module" and \
        numpy_can_hold(_run(select_tensors, header, only or None)) else "torch"
    bar, update = _progress(quiet, "decoding")
    if bar:
        bar.start()
    try:
        if streamed:
            options = dict(backend=backend, workers=workers, max_output_bytes=max_output_size, overwrite=force,
                           progress=update)
            if form == "folder":
                done = _run(decode_to_folder, file, output, **options)
            else:
                done = _run(decode_to_safetensors, file, output, only=only or None, **options)
            what = "Hugging Face model folder" if form == "folder" else "safetensors file"
            written, tensors, seconds = Written(output, form, what, done.bytes, done.files), done.tensors, done.seconds
        else:
            result = _run(decode, file, backend=backend, trust_pickle=trust_pickle, as_state_dict=as_state_dict,
                          max_output_bytes=max_output_size, only=only or None, workers=workers, keep_quantized=False,
                          progress=update, arrays=arrays)
            written = _run(save_decoded, result, output, overwrite=force, partial=bool(only))
            tensors, seconds = len(result.state_dict), result.seconds
        _mark_written(output)
    finally:
        if bar:
            bar.stop()
    console.print(f"wrote [bold]{output}[/]: {written.describe(tensors)}, "
                  f"{human_bytes(written.bytes)}, in {seconds:.2f} s", highlight=False)


@main.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole header as JSON.")
def info_command(file, as_json):
    """Show what FILE holds, per layer, from its header alone (nothing is decoded)."""
    header = _run(read_header, file)
    if as_json:
        doc = header.to_json()
        doc["format_version"] = list(header.version)
        out.print_json(json.dumps(doc))
        return
    out.print(f"[bold]{file}[/]: wcodec format {header.version[0]}.{header.version[1]}, {header.producer}, "
              f"{human_bytes(header.file_length)}, holds a {header.model.kind.replace('_', ' ')}"
              + (f" ({header.model.class_name})" if header.model.class_name else "")
              + _layout_summary(header), highlight=False)
    if header.plan is not None:
        out.print(_plan_summary(header.plan), highlight=False)
    from rich.table import Table

    table = Table(show_lines=False)
    for col, justify in [("layer", "left"), ("dtype", "left"), ("shape", "left"), ("storage", "left"),
                         ("granularity", "left"), ("guard dB", "right"), ("QP", "right"), ("tiles", "left"),
                         ("profile @ level", "left"), ("bytes", "right"), ("bits/w", "right")]:
        table.add_column(col, justify=justify)
    for t in header.tensors:
        stored = t.stored_bytes
        h = t.hevc
        tiles = profile = qp = "-"
        if h is not None:
            layout, stream = h.layout, h.stream
            tiles = f"{layout.grid_rows}x{layout.grid_cols} of {layout.tile_width}x{layout.tile_height}"
            if not h.matrix_layout.is_default:
                tiles += f", {h.matrix_layout.describe()}"
            profile = f"{stream.get('profile', '?')} @ L{stream.get('level', '?')}, {stream.get('chroma_format', '')}"
            qp = "lossless" if h.lossless else str(h.qp)
        storage = t.storage + (f" {t.stored_dtype}" if t.stored_dtype else "") + \
            ("+zstd" if t.data is not None and t.data.compression == "zstd" else "")
        if t.storage == "alias":
            storage = f"alias of {t.alias_of}" + (" (tied)" if t.tied else "")
        granularity = "-" if not t.quant else \
            _granularity(t.quant) + (" affine" if t.quant.scheme == "affine-int8" else "")
        table.add_row(t.name, t.dtype, "x".join(map(str, t.shape)) or "scalar", storage,
                      granularity, _fmt(t.quant.guard_db if t.quant else None),
                      qp, tiles, profile, f"{stored:,}", f"{8 * stored / max(t.numel, 1):.2f}")
    out.print(table)


def _granularity(quant) -> str:
    if quant is None:
        return "-"
    return quant.granularity + (f" (axis {quant.axis})" if quant.granularity == "per-channel" and quant.axis else "")


def _layout_summary(header) -> str:
    model = header.model
    if model.kind not in ("safetensors", "hf-folder"):
        return ""
    text = f" in {len(model.shards)} safetensors file(s)"
    if model.files:
        carried = sum(f.size for f in model.files)
        text += f", with {len(model.files)} carried file(s) ({human_bytes(carried)}: " + \
            ", ".join(f.path for f in model.files[:4]) + (" ..." if len(model.files) > 4 else "") + ")"
    return text


def run() -> None:
    """The ``wcodec`` executable: :func:`main` with SIGTERM handled like Ctrl-C (clean up, exit 130)."""

    def terminate(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
