#!/usr/bin/env python
"""The issue's speed job: 4 matrices 2048x2048 (16.8 M weights), QP 28, default settings.

wcodec against the codec alone on the same frames, same machine, same minute:

* encode: ``wcodec encode`` (the CLI, end to end: Python start, load, quantize, code, write) with
  ``--workers N`` for each N asked, and ``ffmpeg -c:v libx265`` with the file's own preset and x265
  parameters on the same int8 frames (raw yuv420p, each matrix one picture as wcodec codes it),
  threads left to x265 (all cores);
* decode: ``wcodec decode`` (the CLI) and ``api.decode`` in-process (without the interpreter's
  start), against ``ffmpeg -threads N -i streams.hevc -f null -`` on the file's own streams
  (libavcodec, the decoder PyAV wraps).

Targets (the issue): encode wall <= 1.25x ffmpeg's, decode wall <= 1.25x libavcodec's. Absolute
MB/s (1 MB = 1e6 weights) and bits/weight beside them. Before timing it waits for a quiet machine
(1-minute load < 0.5, up to ``--wait`` s) and records the load before and after; numbers taken
under load are marked so.

    python -m bench.speed --out bench/results/speed.json [--workers 1,2] [--repeats 3] [--wait 1800]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from bench.common import REPO, loadavg, run_measured, wait_for_quiet
from weightcodec.backends.base import yuv420_from_luma
from weightcodec.backends.ffmpeg_cli import find_ffmpeg
from weightcodec.container import ContainerReader
from weightcodec.parallel import default_workers
from weightcodec.tiling import matrix_to_frames


def make_model(path: Path, count: int, side: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {f"layers.{i}.weight": torch.randn(side, side, generator=g) * 0.02 for i in range(count)}
    torch.save(sd, path)
    return sd


def frames_and_streams(wcodec: Path, sd: dict) -> tuple[bytes, bytes, dict]:
    """Raw yuv420p frames of the file's int8 matrices, its streams concatenated, and its settings."""
    raw, streams, info = [], [], None
    with ContainerReader(wcodec) as reader:
        for entry in reader.header.tensors:
            if entry.storage != "hevc":
                continue
            from weightcodec.quant import quantize

            q = quantize(sd[entry.name], entry.quant.granularity)
            assert np.allclose(np.frombuffer(reader.read(entry.quant.scales, "scales"), "<f4"), q.scales)
            for frame in matrix_to_frames(q.values.reshape(entry.hevc.layout.rows, -1), entry.hevc.layout):
                raw.append(yuv420_from_luma(frame).tobytes())
            streams.append(reader.read(entry.data, "stream"))
            info = entry.hevc
    return b"".join(raw), b"".join(streams), {"preset": info.preset, "x265_params": info.x265_params,
                                               "width": info.layout.tile_width, "height": info.layout.tile_height}


def decoder_threads(wcodec: Path, repeats: int, cores: int) -> dict:
    """libavcodec's own threads (slice threads over x265's WPP rows, frame threads over pictures)
    against decoding several streams at once in threads (``api.decode(workers=)``), in-process.
    Every variant's pictures are compared with the one-thread decode (they must be the same bits)."""
    import av

    from weightcodec import api

    with ContainerReader(wcodec) as reader:
        streams = [(reader.read(t.data, "s"), t.hevc.layout) for t in reader.header.tensors if t.storage == "hevc"]

    def decode_all(thread_type: str, count: int) -> list[np.ndarray]:
        planes = []
        for stream, layout in streams:
            ctx = av.CodecContext.create("hevc", "r")
            ctx.thread_type, ctx.thread_count = thread_type, count
            ctx.options = {"err_detect": "explode"}
            for packet in [*ctx.parse(stream), *ctx.parse(None)]:
                planes += [f.to_ndarray()[: layout.tile_height].copy() for f in ctx.decode(packet)]
            planes += [f.to_ndarray()[: layout.tile_height].copy() for f in ctx.decode(None)]
        return planes

    reference = decode_all("SLICE", 1)
    out = {}
    for thread_type, count in (("SLICE", 1), ("SLICE", cores), ("FRAME", cores), ("AUTO", cores)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            planes = decode_all(thread_type, count)
            times.append(time.perf_counter() - t)
        out[f"libavcodec_{thread_type.lower()}_threads_{count}"] = {
            "median_seconds": round(statistics.median(times), 3),
            "bit_exact": len(planes) == len(reference) and all(np.array_equal(a, b) for a, b in zip(planes, reference))}
    for workers in sorted({1, cores}):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            api.decode(wcodec, workers=workers)
            times.append(time.perf_counter() - t)
        out[f"api_decode_workers_{workers}"] = {"median_seconds": round(statistics.median(times), 3)}
    return out


def timed(cmd: list[str], *, stdin: bytes | None = None, env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, input=stdin, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--count", type=int, default=4, show_default=True, help="matrices in the job")
@click.option("--side", type=int, default=2048, show_default=True, help="each matrix is side x side")
@click.option("--qp", type=int, default=28, show_default=True)
@click.option("--workers", default=f"1,{default_workers()}", show_default=True, help="wcodec --workers values to time")
@click.option("--repeats", type=int, default=3, show_default=True, help="runs of each timing (the median is reported)")
@click.option("--wait", type=float, default=1800.0, show_default=True, help="seconds to wait for a quiet machine")
@click.option("--extra", default="", help="extra wcodec encode options, e.g. '--preset medium'")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results" / "speed.json",
              show_default=True)
def main(count: int, side: int, qp: int, workers: str, repeats: int, wait: float, extra: str, out: Path) -> None:
    ffmpeg = find_ffmpeg()
    cores = default_workers()
    weights = count * side * side
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        tmp = Path(tmp)
        sd = make_model(tmp / "model.pt", count, side)
        wcli = [sys.executable, "-m", "weightcodec.cli"]
        extra_options = extra.split()
        # one untimed encode: the file whose frames and settings ffmpeg gets
        subprocess.run([*wcli, "encode", str(tmp / "model.pt"), "-o", str(tmp / "ref.wcodec"), "--qp", str(qp),
                        "-q", *extra_options], check=True, env=env, cwd=REPO)
        raw, streams, settings = frames_and_streams(tmp / "ref.wcodec", sd)
        (tmp / "streams.hevc").write_bytes(streams)
        file_bytes = (tmp / "ref.wcodec").stat().st_size
        quiet = wait_for_quiet(timeout=wait)
        result: dict = {"benchmark": "bench/speed.py", "command": "python -m bench.speed " + " ".join(
            argv if argv is not None else sys.argv[1:]), "machine": quiet, "cores": cores, "weights": weights,
            "job": f"{count} matrices {side}x{side}, N(0, 0.02) float32, QP {qp}",
            "settings": settings, "ffmpeg": ffmpeg, "repeats": repeats, "file_bytes": file_bytes,
            "bits_per_weight": round(8 * file_bytes / weights, 4), "encode": {}, "decode": {}}
        ff_encode = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
                     "-s", f"{settings['width']}x{settings['height']}", "-r", "25", "-i", "pipe:", "-c:v", "libx265",
                     "-preset", settings["preset"], "-x265-params", settings["x265_params"], "-forced-idr", "1",
                     "-force_key_frames", "expr:1", "-f", "hevc", "-y", str(tmp / "ffmpeg.hevc")]
        ff_decode = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(cores), "-i",
                     str(tmp / "streams.hevc"), "-f", "null", "-"]
        runs: dict[str, list[float]] = {"ffmpeg_libx265": [], "libavcodec_decode": [], "wcodec_decode_cli": [],
                                        "wcodec_decode_api": [], "wcodec_encode_api_in_process": []}
        for n_workers in workers.split(","):
            runs[f"wcodec_encode_cli_workers_{n_workers}"] = []
        for _ in range(repeats):  # interleaved, so that a change of load hits every row alike
            runs["ffmpeg_libx265"].append(timed(ff_encode, stdin=raw))
            for n_workers in workers.split(","):
                runs[f"wcodec_encode_cli_workers_{n_workers}"].append(timed(
                    [*wcli, "encode", str(tmp / "model.pt"), "-o", str(tmp / "w.wcodec"), "--qp", str(qp), "-q",
                     "--no-verify", "-f", "--workers", n_workers, *extra_options], env=env))
                assert (tmp / "w.wcodec").read_bytes() == (tmp / "ref.wcodec").read_bytes()
            code = ("import time,sys; from weightcodec.api import encode; t=time.perf_counter(); "
                    f"encode({str(tmp / 'model.pt')!r}, {str(tmp / 'a.wcodec')!r}, workers={cores}); "
                    "print(time.perf_counter()-t)")
            out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, capture_output=True)
            runs["wcodec_encode_api_in_process"].append(float(out.stdout.split()[-1]))
            runs["libavcodec_decode"].append(timed(ff_decode))
            runs["wcodec_decode_cli"].append(timed([*wcli, "decode", str(tmp / "ref.wcodec"), "-o", str(tmp / "d.pt"),
                                                    "-q", "-f"], env=env))
            code = ("import time,sys; from weightcodec.api import decode; t=time.perf_counter(); "
                    f"decode({str(tmp / 'ref.wcodec')!r}); print(time.perf_counter()-t)")
            out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, capture_output=True)
            runs["wcodec_decode_api"].append(float(out.stdout.split()[-1]))
        result["decode_threads"] = decoder_threads(tmp / "ref.wcodec", repeats, cores)
        result["machine"]["load_after"] = loadavg()
        med = {k: statistics.median(v) for k, v in runs.items()}
        for key, values in runs.items():
            row = {"median_seconds": round(med[key], 3), "runs": [round(v, 3) for v in values],
                   "mb_per_s": round(weights / med[key] / 1e6, 2)}
            (result["decode"] if "decode" in key else result["encode"])[key] = row
        ff_bytes = (tmp / "ffmpeg.hevc").stat().st_size
        result["ffmpeg_stream_bytes"] = ff_bytes
        result["wcodec_stream_bytes"] = len(streams)
        best = min((k for k in runs if k.startswith("wcodec_encode_cli")), key=lambda k: med[k])
        result["targets"] = {
            "encode_vs_ffmpeg": round(med[best] / med["ffmpeg_libx265"], 3), "encode_row": best,
            "encode_target": 1.25,
            "encode_api_vs_ffmpeg": round(med["wcodec_encode_api_in_process"] / med["ffmpeg_libx265"], 3),
            "decode_cli_vs_libavcodec": round(med["wcodec_decode_cli"] / med["libavcodec_decode"], 3),
            "decode_api_vs_libavcodec": round(med["wcodec_decode_api"] / med["libavcodec_decode"], 3),
            "decode_target": 1.25}
    import av

    from weightcodec.measure import machine_info

    result["environment"] = {**machine_info(), "pyav": av.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("machine", "bits_per_weight", "targets")}, indent=1))
    for section in ("encode", "decode"):
        for key, row in result[section].items():
            print(f"{key:40s} {row['median_seconds']:8.2f} s {row['mb_per_s']:8.2f} MB/s")


if __name__ == "__main__":
    main()
