#!/usr/bin/env python
"""The issue's speed job: 4 matrices 2048x2048 (16.8 M weights), QP 28, default settings.

wcodec against the codec alone on the same frames, same machine, same minute. Every row is a
whole process, timed from its start to its exit (interpreter and imports included), so rows compare
like with like:

* encode, the codec alone: ``ffmpeg -c:v libx265`` (the ffmpeg executable wcodec's ``ffmpeg``
  backend uses) with the file's own preset and x265 parameters on the same int8 frames (raw
  yuv420p, each matrix one picture as wcodec codes it), threads left to x265 (all cores); and the
  same with the libx265 that PyAV's wheel bundles (wcodec's default backend), driven by a few
  lines of Python (``python -c``: numpy, av, one encoder with all cores' threads). The two
  libx265 builds make the same bytes at different speeds (x265 4.3 in the ffmpeg build, 4.2 in
  PyAV's at the time of writing), so each wcodec backend is also set beside its own build.
* encode, wcodec: ``wcodec encode model.safetensors`` at default settings (PyAV, verify on) for
  each ``--workers``; ``--backend ffmpeg``; ``--no-verify``; and ``model.pt`` (a torch file needs
  torch to read: its import, ~1.3 s here, is in that row).
* decode: ``ffmpeg -threads N -i streams.hevc -f null -`` on the file's own streams (libavcodec,
  the decoder PyAV wraps) against ``wcodec decode -o x.safetensors`` and ``-o x.pt``, and
  ``api.decode`` in-process (without the interpreter's start).

Targets (the issue): encode wall <= 1.25x ffmpeg's, decode wall <= 1.25x libavcodec's. Absolute
MB/s (1 MB = 1e6 weights) and bits/weight beside them. Before timing it waits for a quiet machine
(1-minute load < 0.5, up to ``--wait`` s) and records the load before and after; numbers taken
under load are marked so.

    python -m bench.speed --out bench/results/speed.json [--workers 1,2] [--repeats 3] [--wait 1800]
"""

from __future__ import annotations

import compileall
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

from bench.common import REPO, loadavg, wait_for_quiet
from weightcodec.backends.base import RUNTIME_X265_PARAMS, yuv420_from_luma
from weightcodec.backends.ffmpeg_cli import find_ffmpeg
from weightcodec.container import ContainerReader
from weightcodec.parallel import default_workers
from weightcodec.quant import quantize
from weightcodec.tiling import matrix_to_frames


def make_model(folder: Path, count: int, side: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The job's matrices, N(0, 0.02) float32, as model.safetensors and model.pt (the same tensors)."""
    import torch
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    sd = {f"layers.{i}.weight": (rng.standard_normal((side, side), dtype=np.float32) * np.float32(0.02))
          for i in range(count)}
    save_file(sd, str(folder / "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, folder / "model.pt")
    return sd


def frames_and_streams(wcodec: Path, sd: dict) -> tuple[bytes, bytes, dict]:
    """Raw yuv420p frames of the file's int8 matrices, its streams concatenated, and its settings."""
    raw, streams, info = [], [], None
    with ContainerReader(wcodec) as reader:
        for entry in reader.header.tensors:
            if entry.storage != "hevc":
                continue
            q = quantize(sd[entry.name], entry.quant.granularity)
            assert np.allclose(np.frombuffer(reader.read(entry.quant.scales, "scales"), "<f4"), q.scales)
            for frame in matrix_to_frames(q.values.reshape(entry.hevc.layout.rows, -1), entry.hevc.layout):
                raw.append(yuv420_from_luma(frame).tobytes())
            streams.append(reader.read(entry.data, "stream"))
            info = entry.hevc
    return b"".join(raw), b"".join(streams), {"preset": info.preset, "x265_params": info.x265_params,
                                               "width": info.layout.tile_width, "height": info.layout.tile_height}


#: libx265 as PyAV's wheel bundles it, alone: read the raw frames, one encoder, all cores' threads.
PYAV_ENCODE = """
import sys
from fractions import Fraction
import av, numpy as np
raw, out, width, height, preset, params = sys.argv[1:]
width, height = int(width), int(height)
frames = np.fromfile(raw, np.uint8).reshape(-1, height * 3 // 2, width)
ctx = av.CodecContext.create("libx265", "w")
ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, "yuv420p", Fraction(1, 25)
ctx.options = {"preset": preset, "x265-params": params, "forced-idr": "1"}
with open(out, "wb") as handle:
    for index, picture in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts, frame.pict_type = index, av.video.frame.PictureType.I
        for packet in ctx.encode(frame):
            handle.write(bytes(packet))
    for packet in ctx.encode(None):
        handle.write(bytes(packet))
"""


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


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--count", type=int, default=4, show_default=True, help="matrices in the job")
@click.option("--side", type=int, default=2048, show_default=True, help="each matrix is side x side")
@click.option("--qp", type=int, default=28, show_default=True)
@click.option("--workers", default=f"1,{default_workers()}", show_default=True, help="wcodec --workers values to time")
@click.option("--repeats", type=int, default=3, show_default=True, help="runs of each timing (the median is reported)")
@click.option("--wait", type=float, default=1800.0, show_default=True, help="seconds to wait for a quiet machine")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results" / "speed.json",
              show_default=True)
def main(count: int, side: int, qp: int, workers: str, repeats: int, wait: float, out: Path) -> None:
    ffmpeg = find_ffmpeg()
    cores = default_workers()
    weights = count * side * side
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker_counts = workers.split(",")
    # byte-compile the package as `pip install` does (an editable install under PYTHONDONTWRITEBYTECODE
    # would otherwise compile every module from source at each start: ~50 ms a run)
    compileall.compile_dir(str(REPO / "weightcodec"), quiet=1)
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        tmp = Path(tmp)
        sd = make_model(tmp, count, side)
        # the `wcodec` console script, as users run it (``python -m`` would also compile cli.py at each start)
        script = Path(sys.executable).with_name("wcodec")
        wcli = [str(script)] if script.exists() else [sys.executable, "-m", "weightcodec.cli"]
        result_cli = " ".join(wcli)
        st, pt = str(tmp / "model.safetensors"), str(tmp / "model.pt")
        # one untimed encode at default settings: the file whose frames, settings and bytes every row gets
        subprocess.run([*wcli, "encode", st, "-o", str(tmp / "ref.wcodec"), "--qp", str(qp), "-q"],
                       check=True, env=env, cwd=REPO)
        raw, streams, settings = frames_and_streams(tmp / "ref.wcodec", sd)
        (tmp / "frames.yuv").write_bytes(raw)
        (tmp / "streams.hevc").write_bytes(streams)
        file_bytes = (tmp / "ref.wcodec").stat().st_size
        quiet = wait_for_quiet(timeout=wait)
        result: dict = {"benchmark": "bench/speed.py", "command": "python -m bench.speed " + " ".join(sys.argv[1:]),
                        "machine": quiet, "cores": cores, "weights": weights, "cli": result_cli,
                        "job": f"{count} matrices {side}x{side}, N(0, 0.02) float32, QP {qp}",
                        "settings": settings, "ffmpeg": ffmpeg, "repeats": repeats, "file_bytes": file_bytes,
                        "bits_per_weight": round(8 * file_bytes / weights, 4), "encode": {}, "decode": {}}
        ff_encode = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
                     "-s", f"{settings['width']}x{settings['height']}", "-r", "25", "-i", "pipe:", "-c:v", "libx265",
                     "-preset", settings["preset"], "-x265-params", settings["x265_params"], "-forced-idr", "1",
                     "-force_key_frames", "expr:1", "-f", "hevc", "-y", str(tmp / "ffmpeg.hevc")]
        # with the run-time parameters wcodec passes too (rc-lookahead=0: the same bytes, less memory)
        run_params = ":".join([*(f"{k}={v}" for k, v in RUNTIME_X265_PARAMS), settings["x265_params"]])
        pyav_encode = [sys.executable, "-c", PYAV_ENCODE, str(tmp / "frames.yuv"), str(tmp / "pyav.hevc"),
                       str(settings["width"]), str(settings["height"]), settings["preset"], run_params]
        ff_decode = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(cores), "-i",
                     str(tmp / "streams.hevc"), "-f", "null", "-"]
        encode_rows = {f"wcodec_encode_cli_workers_{n}": [st, "--workers", n] for n in worker_counts}
        encode_rows |= {"wcodec_encode_cli_backend_ffmpeg": [st, "--backend", "ffmpeg"],
                        "wcodec_encode_cli_no_verify": [st, "--no-verify"],
                        "wcodec_encode_cli_torch_file": [pt]}
        runs: dict[str, list[float]] = {"ffmpeg_libx265": [], "pyav_libx265_alone": [],
                                        **{key: [] for key in encode_rows}, "wcodec_encode_api_in_process": [],
                                        "libavcodec_decode": [], "wcodec_decode_cli_safetensors": [],
                                        "wcodec_decode_cli_torch_file": [], "wcodec_decode_api": []}
        for _ in range(repeats):  # interleaved, so that a change of load hits every row alike
            runs["ffmpeg_libx265"].append(timed(ff_encode, stdin=raw))
            runs["pyav_libx265_alone"].append(timed(pyav_encode, env=env))
            for key, args in encode_rows.items():
                runs[key].append(timed([*wcli, "encode", *args, "-o", str(tmp / "w.wcodec"), "--qp", str(qp), "-q",
                                        "-f"], env=env))
                if key.startswith("wcodec_encode_cli_workers"):  # the same bytes whatever the parallelism
                    assert (tmp / "w.wcodec").read_bytes() == (tmp / "ref.wcodec").read_bytes(), key
            code = ("import time,sys; from weightcodec.api import encode; t=time.perf_counter(); "
                    f"encode({st!r}, {str(tmp / 'a.wcodec')!r}); print(time.perf_counter()-t)")
            done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, capture_output=True)
            runs["wcodec_encode_api_in_process"].append(float(done.stdout.split()[-1]))
            runs["libavcodec_decode"].append(timed(ff_decode))
            for key, name in (("wcodec_decode_cli_safetensors", "d.safetensors"), ("wcodec_decode_cli_torch_file", "d.pt")):
                runs[key].append(timed([*wcli, "decode", str(tmp / "ref.wcodec"), "-o", str(tmp / name), "-q", "-f"],
                                       env=env))
            code = ("import time,sys,torch; from weightcodec.api import decode; t=time.perf_counter(); "
                    f"decode({str(tmp / 'ref.wcodec')!r}); print(time.perf_counter()-t)")
            done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, capture_output=True)
            runs["wcodec_decode_api"].append(float(done.stdout.split()[-1]))
        assert (tmp / "pyav.hevc").read_bytes() == (tmp / "ffmpeg.hevc").read_bytes(), \
            "the two libx265 builds must make the same stream"
        result["decode_threads"] = decoder_threads(tmp / "ref.wcodec", repeats, cores)
        result["machine"]["load_after"] = loadavg()
        med = {k: statistics.median(v) for k, v in runs.items()}
        for key, values in runs.items():
            row = {"median_seconds": round(med[key], 3), "runs": [round(v, 3) for v in values],
                   "mb_per_s": round(weights / med[key] / 1e6, 2)}
            (result["decode"] if "decode" in key else result["encode"])[key] = row
        result["libx265_builds_identical"] = True  # asserted above: ffmpeg's and PyAV's libx265, the same bytes
        result["ffmpeg_stream_bytes"] = (tmp / "ffmpeg.hevc").stat().st_size  # one stream of all pictures
        result["wcodec_stream_bytes"] = len(streams)  # one stream per matrix
        best = min((k for k in runs if k.startswith("wcodec_encode_cli_workers")), key=lambda k: med[k])
        result["targets"] = {
            "encode_target": 1.25, "decode_target": 1.25, "encode_row": best,
            "encode_default_vs_ffmpeg": ratio(med[best], med["ffmpeg_libx265"]),
            "encode_default_vs_its_own_libx265": ratio(med[best], med["pyav_libx265_alone"]),
            "encode_backend_ffmpeg_vs_ffmpeg": ratio(med["wcodec_encode_cli_backend_ffmpeg"], med["ffmpeg_libx265"]),
            "encode_no_verify_vs_its_own_libx265": ratio(med["wcodec_encode_cli_no_verify"], med["pyav_libx265_alone"]),
            "encode_torch_file_vs_ffmpeg": ratio(med["wcodec_encode_cli_torch_file"], med["ffmpeg_libx265"]),
            "encode_api_vs_ffmpeg": ratio(med["wcodec_encode_api_in_process"], med["ffmpeg_libx265"]),
            "pyav_libx265_vs_ffmpeg_libx265": ratio(med["pyav_libx265_alone"], med["ffmpeg_libx265"]),
            "decode_cli_safetensors_vs_libavcodec": ratio(med["wcodec_decode_cli_safetensors"],
                                                          med["libavcodec_decode"]),
            "decode_cli_torch_file_vs_libavcodec": ratio(med["wcodec_decode_cli_torch_file"],
                                                         med["libavcodec_decode"]),
            "decode_api_vs_libavcodec": ratio(med["wcodec_decode_api"], med["libavcodec_decode"])}
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
