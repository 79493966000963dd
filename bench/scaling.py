#!/usr/bin/env python
"""The scaling curve: encode and decode of random-initialised LLM-shaped checkpoints, made on the fly.

Sizes (Llama-style decoder, fp16, N(0, 0.02) weights, norms at 1; nothing is stored in the repo):

* ``10m``:  hidden 256, MLP 688, 8 layers, vocab 8000            (~10.4 M weights)
* ``100m``: hidden 768, MLP 2048, 12 layers, vocab 16000         (~110 M weights)
* ``1b``:   TinyLlama-1.1B's config: hidden 2048, MLP 5632, 22 layers, 32 heads / 4 KV heads,
            vocab 32000, untied lm_head                           (~1.1 B weights, 2.2 GB in fp16)

Each (size, engine) runs ``wcodec encode`` and ``wcodec decode`` as child processes, timed end to
end, with the kernel's VmHWM of the process and the peak summed PSS of its process tree (pool
workers included, shared pages counted once). Engines: ``single`` (``--workers 1``), ``pool``
(``--workers`` = all cores) and ``ray`` (a local Ray cluster on 127.0.0.1 with all cores, started
and stopped here). The memory target of the issue is checked per run: model bytes + 2x the
largest tensor + the interpreter's baseline (VmHWM of ``python -c "import weightcodec.cli"``).

    python -m bench.scaling --sizes 10m,100m --engines single,pool,ray --out bench/results/scaling.json
    python -m bench.scaling --sizes 1b --engines pool --out bench/results/scaling_1b.json
    python -m bench.scaling --plot bench/results/scaling.json bench/results/scaling_1b.json --png docs/scaling.png

Before each timed run it waits (up to ``--wait`` s) for a quiet machine and records the load.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

import click
import torch

from bench.common import REPO, LocalRay, loadavg, python_baseline_mb, python_command, run_measured, wait_for_quiet
from weightcodec.parallel import default_workers

CONFIGS = {
    "10m": dict(hidden=256, mlp=688, layers=8, heads=8, kv_heads=8, vocab=8000),
    "100m": dict(hidden=768, mlp=2048, layers=12, heads=12, kv_heads=12, vocab=16000),
    "1b": dict(hidden=2048, mlp=5632, layers=22, heads=32, kv_heads=4, vocab=32000),
}


def llama_shapes(hidden: int, mlp: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict:
    kv = hidden // heads * kv_heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
                       p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (mlp, hidden), p + "mlp.up_proj.weight": (mlp, hidden),
                       p + "mlp.down_proj.weight": (hidden, mlp), p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,)})
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def make_checkpoint(path: Path, size: str, seed: int = 0) -> dict:
    """Write a random fp16 checkpoint of ``size``'s shapes (``torch.save``, or a ``.safetensors``
    file by the path's suffix); returns its facts (weights, bytes, largest tensor)."""
    shapes = llama_shapes(**CONFIGS[size])
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            sd[name] = torch.ones(shape, dtype=torch.float16)
        else:
            sd[name] = (torch.randn(shape, generator=g, dtype=torch.float32) * 0.02).to(torch.float16)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    numels = [math.prod(s) for s in shapes.values()]
    facts = {"size": size, "config": CONFIGS[size], "tensors": len(shapes), "weights": sum(numels),
             "model_bytes": 2 * sum(numels), "largest_tensor_bytes": 2 * max(numels), "file_bytes": path.stat().st_size}
    del sd
    return facts


def libavcodec_seconds(wcodec: Path, workdir: Path, threads: int) -> dict:
    """The codec alone on the file's own HEVC streams: ``ffmpeg -threads N -i streams.hevc -f null -``
    (libavcodec, the decoder PyAV wraps; the streams concatenated, the decoder re-initialised where
    the picture size changes), timed from start to exit as the ``wcodec decode`` rows are."""
    import subprocess
    import time

    from weightcodec.backends.ffmpeg_cli import find_ffmpeg
    from weightcodec.container import ContainerReader

    streams = workdir / "streams.hevc"
    with ContainerReader(wcodec) as reader, open(streams, "wb") as out:
        for entry in reader.header.tensors:
            if entry.storage == "hevc":
                out.write(reader.read(entry.data, "stream"))
    started = time.perf_counter()
    subprocess.run([find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads),
                    "-i", str(streams), "-f", "null", "-"], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    size = streams.stat().st_size
    streams.unlink()
    return {"wall_seconds": round(seconds, 3), "stream_bytes": size, "threads": threads}


def run(sizes: list[str], engines: list[str], wait: float, workdir: Path, qp: int, verify: bool = True,
        input_format: str = "pt") -> dict:
    cores = default_workers()
    baseline = python_baseline_mb()
    result = {"benchmark": "bench/scaling.py", "cores": cores, "qp": qp, "verify": verify,
              "interpreter_baseline_mb": baseline, "input_format": input_format, "runs": []}
    wcli = python_command("weightcodec.cli")  # `python -m weightcodec.cli`, reporting its exact VmHWM at exit
    ray = LocalRay(cores) if "ray" in engines else None
    try:
        for size in sizes:
            model = workdir / f"{size}.{input_format}"
            decoded = workdir / f"decoded.{input_format}"
            facts = make_checkpoint(model, size)
            target_mb = (facts["model_bytes"] + 2 * facts["largest_tensor_bytes"]) / 2**20 + baseline
            for engine in engines:
                option = {"single": ["--workers", "1"], "pool": ["--workers", str(cores)],
                          "ray": ["--ray", ray.address if ray else ""]}[engine]
                env = ray.env if engine == "ray" else {**os.environ, "PYTHONPATH": str(REPO)}
                out = workdir / f"{size}.wcodec"
                quiet = wait_for_quiet(timeout=wait)
                enc = run_measured([*wcli, "encode", str(model), "-o", str(out), "-f", "-q", "--qp", str(qp),
                                    *([] if verify else ["--no-verify"]), *option], env=env, cwd=REPO)
                load_mid = loadavg()
                dec = run_measured([*wcli, "decode", str(out), "-o", str(decoded), "-f", "-q",
                                    "--workers", str(cores)], env=env, cwd=REPO)
                row = {**facts, "engine": engine, "machine": {**quiet, "load_between": load_mid,
                                                               "load_after": loadavg()},
                       "wcodec_bytes": out.stat().st_size, "bits_per_weight": 8 * out.stat().st_size / facts["weights"],
                       "memory_target_mb": round(target_mb, 1)}
                if engine == engines[0]:  # the file is the same bytes for every engine
                    row["libavcodec_decode"] = libavcodec_seconds(out, workdir, cores)
                    row["libavcodec_decode"]["wcodec_decode_ratio"] = round(
                        dec["wall_seconds"] / row["libavcodec_decode"]["wall_seconds"], 3)
                for key, r in (("encode", enc), ("decode", dec)):
                    row[key] = {k: v for k, v in r.items() if k not in ("stdout", "stderr")}
                    row[key]["mb_per_s"] = round(facts["weights"] / r["wall_seconds"] / 1e6, 3)
                    row[key]["within_memory_target"] = r["tree_peak_pss_mb"] <= target_mb
                result["runs"].append(row)
                print(f"{size:5s} {engine:6s} encode {enc['wall_seconds']:8.1f} s "
                      f"{row['encode']['mb_per_s']:6.2f} MB/s "
                      f"pss {enc['tree_peak_pss_mb']:8.0f} MB | decode {dec['wall_seconds']:7.1f} s "
                      f"pss {dec['tree_peak_pss_mb']:8.0f} MB | target {target_mb:8.0f} MB | load {loadavg()[0]}",
                      file=sys.stderr, flush=True)
                out.unlink()
                decoded.unlink(missing_ok=True)
            model.unlink()
    finally:
        if ray:
            ray.stop()
    return result


def plot(paths: list[Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for p in paths for r in json.loads(p.read_text())["runs"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {"single": "tab:blue", "pool": "tab:orange", "ray": "tab:green"}
    for engine, marker in (("single", "o"), ("pool", "s"), ("ray", "^")):
        rows = sorted((r for r in runs if r["engine"] == engine), key=lambda r: r["weights"])
        if not rows:
            continue
        w = [r["weights"] for r in rows]
        axes[0].loglog(w, [r["encode"]["wall_seconds"] for r in rows], marker=marker, label=f"encode, {engine}",
                       color=colours[engine])
        axes[0].loglog(w, [r["decode"]["wall_seconds"] for r in rows], marker=marker, ls="--",
                       label=f"decode, {engine}", color=colours[engine])
        axes[1].semilogx(w, [r["encode"]["mb_per_s"] for r in rows], marker=marker, label=f"encode, {engine}",
                         color=colours[engine])
        axes[2].loglog(w, [r["encode"]["vmhwm_mb"] for r in rows], marker=marker, label=f"encode, {engine}",
                       color=colours[engine])
        axes[2].loglog(w, [r["decode"]["vmhwm_mb"] for r in rows], marker=marker, ls="--",
                       label=f"decode, {engine}", color=colours[engine])
    rows = sorted({r["weights"]: r for r in runs}.values(), key=lambda r: r["weights"])
    axes[2].loglog([r["weights"] for r in rows], [r["memory_target_mb"] for r in rows], "k:", label="target")
    for ax, title in zip(axes, ("wall seconds", "encode MB/s (1e6 weights/s)", "peak memory, MB (VmHWM of wcodec)")):
        ax.set_xlabel("weights")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    results = [json.loads(p.read_text()) for p in paths]
    loaded = sum(not r["machine"]["quiet"] for r in runs)
    machine = ("every run started on a quiet machine (1-min load < 0.5)" if not loaded else
               f"{loaded} of {len(runs)} runs started under load: their wall times are pessimistic")
    verify = {d.get("verify", False) for d in results}
    fig.suptitle(f"random-init LLM-shaped fp16 checkpoints, QP {'/'.join(sorted({str(d['qp']) for d in results}))}, "
                 f"{'verified' if verify == {True} else 'unverified' if verify == {False} else 'mixed'} encode, "
                 f"{'/'.join(sorted({str(d['cores']) for d in results}))} cores; {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--sizes", default="10m,100m", show_default=True, help="comma-separated: 10m, 100m, 1b")
@click.option("--engines", default="single,pool,ray", show_default=True, help="comma-separated: single, pool, ray")
@click.option("--qp", type=int, default=28, show_default=True)
@click.option("--wait", type=float, default=600.0, show_default=True,
              help="seconds to wait for a quiet machine before each run")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="where the checkpoints go (default: a temp dir)")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results" / "scaling.json",
              show_default=True)
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="encode as wcodec does by default (decode each stream back and record its error and CRC) "
                   "or with --no-verify")
@click.option("--input-format", type=click.Choice(["pt", "safetensors"]), default="pt", show_default=True,
              help="the checkpoint's file: torch.save (read with mmap) or .safetensors (decoded to the same form)")
@click.option("--plot", "plot_only", is_flag=True, help="only plot the result files given as arguments")
@click.option("--png", type=click.Path(path_type=Path), default=REPO / "docs" / "scaling.png", show_default=True)
@click.argument("results", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(sizes: str, engines: str, qp: int, wait: float, workdir: Path | None, out: Path, verify: bool,
         input_format: str, plot_only: bool, png: Path, results: tuple[Path, ...]) -> None:
    if plot_only:
        if not results:
            raise click.UsageError("--plot needs the result files to plot")
        plot(list(results), png)
        return

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        result = run(sizes.split(","), engines.split(","), wait, Path(tmp), qp, verify, input_format)
    from weightcodec.measure import machine_info

    result["command"] = "python -m bench.scaling " + " ".join(sys.argv[1:])
    result["environment"] = machine_info()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
