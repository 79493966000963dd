"""Run nncodec on real weights and print a markdown summary (run in the project venv).

    python -m bench.nncodec_demo [--json bench/results/nncodec_demo.json]

For the MNIST MLP state_dict (all six tensors) and MobileNetV2's
``classifier.1.weight`` it measures:

* nncodec float mode at several qps, with dependent quantisation (DQ);
* nncodec float mode at the *int8-matched* step (per tensor
  ``max|W|/127``, via ``step_per_tensor``), uniform and DQ;
* nncodec's own 8-bit integer-aligned mode (``bitdepth=8``);
* the int8 codes ``round(W / (max|W|/127))`` (per tensor) coded losslessly by
  nncodec (int32 input), checked to round-trip exactly, and as a lossy int job
  at ``qp=0``/no DQ (step 1 on the integer grid: must also be exact);
* zstd level 19 of the concatenated int8 bytes, as a reference.

Bits per value count every coded value (biases included) and no side
information for zstd (the per-tensor float scales are not counted for either).
RMSE is against the original float32 weights, over all values.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from weightcodec.measure import int8_error

from .nncodec_client import run_nncodec
from .nncodec_env import ensure_nncodec_venv, read_marker

FLOAT_QPS = (-38, -32, -26, -20)
#: (row label, registry model name, tensors or None for all of them)
MODELS = (("MNIST MLP (all 6 tensors)", "mnist-mlp", None),
          ("MobileNetV2 classifier.1.weight", "mobilenet_v2", ["classifier.1.weight"]))


def load_tensors(model: str, keys: list[str] | None = None) -> dict[str, np.ndarray]:
    """The registry model's weights (project venv) as float32 numpy arrays."""
    from weightcodec.evaluation import get_model_spec, load_state_dict_file

    sd = load_state_dict_file(get_model_spec(model).weights_path())
    names = keys if keys is not None else list(sd)
    return {k: sd[k].detach().float().numpy().copy() for k in names}


def int8_quantize(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Symmetric per-tensor int8: ``q = round(W / s)``, ``s = max|W| / 127``."""
    scale = float(np.max(np.abs(w))) / 127.0
    if scale == 0.0:
        return np.zeros(w.shape, np.int8), 1.0
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def rmse(ref: dict[str, np.ndarray], rec: dict[str, np.ndarray]) -> float:
    """RMSE over all values of all tensors."""
    return int8_error(rec, ref).rmse


def _row(label: str, nbytes: int, numel: int, err: float, exact: str, enc: float | None, dec: float | None,
         rss: int | None) -> dict[str, Any]:
    return {
        "mode": label,
        "bytes": nbytes,
        "bits_per_value": 8.0 * nbytes / numel,
        "rmse_vs_float": err,
        "exact": exact,
        "encode_s": enc,
        "decode_s": dec,
        "peak_rss_mib": None if rss is None else rss / 2**20,
    }


def bench_model(name: str, weights: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Run every mode on one set of tensors; return one row per mode."""
    import zstandard

    numel = sum(v.size for v in weights.values())
    rows: list[dict[str, Any]] = []

    def nnc_row(label: str, res: dict[str, Any], rec: dict[str, np.ndarray], exact: str) -> None:
        rows.append(_row(label, res["compressed_bytes"], numel, rmse(weights, rec), exact,
                         res["encode_seconds"], res["decode_seconds"], res["peak_rss_bytes"]))

    for qp in FLOAT_QPS:
        res = run_nncodec(weights, kind="float", qp=qp, use_dq=True)
        nnc_row(f"nncodec float qp={qp} DQ", res, res["arrays"], "-")

    q8 = {k: int8_quantize(v) for k, v in weights.items()}
    codes = {k: q for k, (q, _) in q8.items()}
    scales = {k: s for k, (_, s) in q8.items()}
    deq = {k: codes[k].astype(np.float32) * scales[k] for k in weights}
    int8_err = rmse(weights, deq)

    for use_dq in (False, True):
        res = run_nncodec(weights, kind="float", qp=None, use_dq=use_dq,
                          options={"step_per_tensor": scales, "nonweight_qp": -75})
        qps = sorted({v for v in res["compress_kwargs"]["qp_per_tensor"].values()})
        nnc_row(f"nncodec float int8-matched step {'DQ' if use_dq else 'uniform'} (qps {qps})",
                res, res["arrays"], "-")

    res = run_nncodec(weights, kind="float", qp=None, use_dq=False, options={"bitdepth": 8})
    nnc_row("nncodec float bitdepth=8 (int_quant_bw) uniform", res, res["arrays"], "-")

    res = run_nncodec(codes, kind="int", qp=None)
    exact = all(np.array_equal(res["arrays"][k], codes[k].astype(np.int32)) for k in codes)
    nnc_row("nncodec int8 lossless (int32 input)", res, deq, "yes" if exact and res["exact"] else "NO")

    res = run_nncodec(codes, kind="int", qp=0, use_dq=False)
    rec = {k: res["arrays"][k] * scales[k] for k in codes}
    exact = all(np.array_equal(res["arrays"][k], codes[k].astype(np.float32)) for k in codes)
    nnc_row("nncodec int8 as float, qp=0 uniform", res, rec, "yes" if exact else "NO")

    blob = b"".join(codes[k].tobytes() for k in codes)
    t0 = time.perf_counter()
    comp = zstandard.ZstdCompressor(level=19).compress(blob)
    t1 = time.perf_counter()
    back = zstandard.ZstdDecompressor().decompress(comp)
    t2 = time.perf_counter()
    rows.append(_row("zstd -19 of int8 bytes", len(comp), numel, int8_err,
                     "yes" if back == blob else "NO", t1 - t0, t2 - t1, None))
    rows.append(_row("raw int8 (reference)", len(blob), numel, int8_err, "yes", None, None, None))
    for row in rows:
        row["model"] = name
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """Render rows as a markdown table."""
    head = "| model | mode | bytes | bits/value | RMSE vs float | exact int8 | enc s | dec s | peak RSS MiB |"
    out = [head, "|" + "---|" * 9]

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for r in rows:
        out.append(
            f"| {r['model']} | {r['mode']} | {r['bytes']} | {r['bits_per_value']:.3f} | {r['rmse_vs_float']:.3e} "
            f"| {r['exact']} | {f(r['encode_s'], '.3f')} | {f(r['decode_s'], '.3f')} | {f(r['peak_rss_mib'], '.0f')} |"
        )
    return "\n".join(out)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the rows as JSON here.")
def main(json_path):
    """nncodec demo on real weights (the registry's mnist-mlp and mobilenet_v2)."""
    from weightcodec.errors import WeightcodecError

    ensure_nncodec_venv()
    try:
        models = {label: load_tensors(model, keys) for label, model, keys in MODELS}
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None
    rows: list[dict[str, Any]] = []
    for name, weights in models.items():
        rows += bench_model(name, weights)
    sys.stdout.write(to_markdown(rows) + "\n")
    sys.stdout.write(f"\nnncodec venv: {json.dumps(read_marker())}\n")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"venv": read_marker(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
