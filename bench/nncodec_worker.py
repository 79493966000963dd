#!/usr/bin/env python3
"""Run one nncodec (MPEG NNC / DeepCABAC) encode+decode job.

This script runs under the *nncodec venv's* python (numpy 1.x, see
``bench/nncodec_env.py``), never in the project venv, and imports nothing from
the project; that is also why it parses its arguments with the standard
library's argparse rather than the project's click (the venv has neither click
nor weightcodec).  It is driven by ``bench/nncodec_client.py``::

    python nncodec_worker.py --job job.json --arrays in.npz \\
        --out out.npz --result result.json [--bitstream out.nnc]

``in.npz`` holds the named tensors (order is kept: nncodec codes them in dict
order).  ``job.json`` is an object with these keys (all optional but ``kind``):

``kind`` (``"float"`` | ``"int"``)
    ``float``: arrays are cast to float32 and quantised+coded by nncodec's
    uniform (``use_dq=false``) or dependent/trellis-coded (``use_dq=true``)
    quantiser at ``qp``.
    ``int``: arrays must be integer; they are cast to int32.  With ``qp`` null
    nncodec codes them losslessly (its ``"skip"`` approximation: int32 tensors
    bypass quantisation) and the worker checks that decoding round-trips
    exactly.  With ``qp`` set, the integers are cast to float32 and coded
    lossily at that qp; nncodec has no lossy mode for int32 input, so this is
    the way to get one (with ``qp_density=2``, ``qp=0`` is step 1.0 in integer
    units, ``qp=4`` step 2.0, ``qp=8`` step 4.0, ...).
``qp`` (int or null)
    nncodec's quantisation parameter for weight tensors (ndim > 1).  The step
    is ``(k + (qp & (k-1))) * 2**((qp >> qp_density) - qp_density)`` with
    ``k = 2**qp_density``; e.g. qp=-32 -> 2**-8, qp=-38 -> 1.5 * 2**-10.
    Default for float jobs: nncodec's default, -38.
``use_dq`` (bool, default true)
    dependent (trellis-coded) quantisation; false = uniform scalar rounding.
``qp_density`` (int, default 2)
``nonweight_qp`` (int; default -75, nncodec's default, for float jobs and
    ``qp`` itself for lossy int jobs)
    qp for 1-D tensors (biases: nncodec types every ndim <= 1 tensor as
    ``unspecified`` and codes it at this step instead of ``qp``'s).
``qp_per_tensor`` ({name: qp})
    per-tensor qp overrides (passed through to ``nnc.compress``).
``step_per_tensor`` ({name: step})
    per-tensor quantiser *step sizes*; converted to qps with nncodec's own
    ``get_qp_from_stepsize`` (rounded to the nearest qp, i.e. within a factor
    ``2**(1/(2*2**qp_density))`` of the request) and merged into
    ``qp_per_tensor``.  Use it to match another quantiser, e.g. the int8
    per-tensor step ``max|W|/127``.
``bitdepth`` (int or null)
    nncodec's ``int_quant_bw``: integer-aligned quantisation, the step of each
    tensor is chosen so its levels fit ``bitdepth`` bits (``qp`` is ignored).
``lambda_scale`` (float, default 0.0): rate-distortion weight of the quantiser.
``param_opt`` (bool, default true), ``row_skipping`` (bool, default true),
``cabac_unary_length_minus1`` (int, default 10): entropy-coder options.

Outputs: ``out.npz`` with the decoded tensors (float32 for lossy jobs, int32
for lossless int jobs), ``result.json`` with ``ok``, ``compressed_bytes``,
``encode_seconds``, ``decode_seconds``, ``peak_rss_bytes`` (VmHWM of the
worker; ``ru_maxrss_bytes`` is also given but on Linux it includes the
spawning parent's peak),
``nncodec_version``, the exact ``compress_kwargs`` and error statistics.  On
failure ``result.json`` has ``ok: false`` and ``error``, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import resource
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

import numpy as np


def _install_framework_stub() -> bool:
    """Stub ``nncodec.framework`` if torch is absent; return whether it was stubbed.

    ``nncodec.nnc.compression`` does ``from nncodec.framework import
    tensorflow_model, pytorch_model, use_case_init`` at import time, which pulls
    in torch, torchvision and h5py, but ``compress``/``decompress`` on a dict
    of numpy arrays never touch those modules (only ``compress_model`` and
    ``decompress_model`` do).
    """
    if importlib.util.find_spec("torch") is not None:
        return False
    import nncodec

    pkg = types.ModuleType("nncodec.framework")
    pkg.__path__ = []  # a package with no importable submodules
    for sub in ("tensorflow_model", "pytorch_model", "use_case_init"):
        mod = types.ModuleType(f"nncodec.framework.{sub}")
        setattr(pkg, sub, mod)
        sys.modules[mod.__name__] = mod
    sys.modules["nncodec.framework"] = pkg
    nncodec.framework = pkg  # type: ignore[attr-defined]
    return True


def _ru_maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process's own address space.

    On Linux ``ru_maxrss`` survives ``fork``/``vfork`` + ``execve``: a worker
    spawned by a parent that had torch loaded (~0.5 GiB) reports the
    *parent's* peak.  ``VmHWM`` in ``/proc/self/status`` belongs to the
    post-exec address space only, so it is preferred; ``ru_maxrss`` is the
    fallback elsewhere.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _ru_maxrss_bytes()


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: np.ascontiguousarray(npz[name]) for name in npz.files}


def _prepare(job: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """Cast the inputs as nncodec expects; return them and whether the job is lossless."""
    kind = job.get("kind")
    if kind == "float":
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, False
    if kind == "int":
        bad = [k for k, v in arrays.items() if not np.issubdtype(v.dtype, np.integer)]
        if bad:
            raise ValueError(f"int job needs integer arrays; not integer: {bad}")
        for k, v in arrays.items():
            if v.size and (v.min() < np.iinfo(np.int32).min or v.max() > np.iinfo(np.int32).max):
                raise ValueError(f"{k}: values do not fit int32")
        if job.get("qp") is None:
            return {k: np.ascontiguousarray(v, dtype=np.int32) for k, v in arrays.items()}, True
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, False
    raise ValueError(f"job kind must be 'float' or 'int', got {kind!r}")


def _compress_kwargs(job: dict[str, Any], lossless: bool) -> dict[str, Any]:
    """Translate the job description into ``nnc.compress`` keyword arguments."""
    from nncodec.nnc_core.common import get_qp_from_stepsize

    qp_density = int(job.get("qp_density", 2))
    qp = job.get("qp")
    if qp is None:
        qp = -38  # nncodec's default; unused by lossless int32 tensors
    qp_per_tensor = {k: int(v) for k, v in (job.get("qp_per_tensor") or {}).items()}
    for name, step in (job.get("step_per_tensor") or {}).items():
        if not step > 0:
            raise ValueError(f"step_per_tensor[{name!r}] must be > 0, got {step!r}")
        qp_per_tensor[name] = int(np.round(get_qp_from_stepsize(float(step), qp_density)))
    bitdepth = job.get("bitdepth")
    nonweight_qp = job.get("nonweight_qp")
    if nonweight_qp is None:
        # Finer than the integer grid is pointless for integer inputs.
        nonweight_qp = qp if job.get("kind") == "int" else -75
    return {
        "bitstream_path": None,  # default "./bitstream.nnc" would litter the cwd
        "qp": int(qp),
        "qp_density": qp_density,
        "nonweight_qp": int(nonweight_qp),
        "qp_per_tensor": qp_per_tensor or None,
        "use_dq": bool(job.get("use_dq", True)) and not lossless,
        "lambda_scale": float(job.get("lambda_scale", 0.0)),
        "param_opt": bool(job.get("param_opt", True)),
        "row_skipping": bool(job.get("row_skipping", True)),
        "cabac_unary_length_minus1": int(job.get("cabac_unary_length_minus1", 10)),
        "int_quant_bw": int(bitdepth) if bitdepth else False,
        "return_bitstream": True,
        "verbose": False,
    }


def _error_stats(
    original: dict[str, np.ndarray], decoded: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    stats = {}
    for name, ref in original.items():
        diff = decoded[name].astype(np.float64) - ref.astype(np.float64)
        stats[name] = {
            "numel": int(ref.size),
            "rmse": float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0,
            "max_abs_error": float(np.max(np.abs(diff))) if diff.size else 0.0,
        }
    return stats


def run_job(job: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray], bytes]:
    """Encode and decode ``arrays`` as ``job`` says; return (result, decoded arrays, bitstream)."""
    stubbed = _install_framework_stub()
    from nncodec import nnc

    inputs, lossless = _prepare(job, arrays)
    kwargs = _compress_kwargs(job, lossless)

    t0 = time.perf_counter()
    bitstream = nnc.compress(dict(inputs), **kwargs)
    t1 = time.perf_counter()
    # decompress() treats anything that is not a bytearray as a file path.
    decoded_raw = nnc.decompress(bytearray(bitstream))
    t2 = time.perf_counter()

    missing = set(inputs) - set(decoded_raw)
    if missing:
        raise RuntimeError(f"decoder returned no tensor for {sorted(missing)}")
    decoded = {k: np.asarray(decoded_raw[k]).reshape(inputs[k].shape) for k in inputs}
    if lossless:
        mismatched = [k for k in inputs if not np.array_equal(decoded[k], inputs[k])]
        if mismatched:
            raise RuntimeError(f"lossless int job did not round-trip exactly: {mismatched}")

    per_tensor = _error_stats(inputs, decoded)
    numel = sum(v["numel"] for v in per_tensor.values())
    sq = sum(v["rmse"] ** 2 * v["numel"] for v in per_tensor.values())
    result = {
        "ok": True,
        "kind": job["kind"],
        "lossless": lossless,
        "exact": all(v["max_abs_error"] == 0.0 for v in per_tensor.values()),
        "compressed_bytes": len(bitstream),
        "numel": numel,
        "bits_per_value": 8.0 * len(bitstream) / numel if numel else float("nan"),
        "rmse": float(np.sqrt(sq / numel)) if numel else 0.0,
        "encode_seconds": t1 - t0,
        "decode_seconds": t2 - t1,
        "peak_rss_bytes": _peak_rss_bytes(),
        "ru_maxrss_bytes": _ru_maxrss_bytes(),
        "nncodec_version": importlib.metadata.version("nncodec"),
        "numpy_version": np.__version__,
        "framework_stubbed": stubbed,
        "compress_kwargs": {k: v for k, v in kwargs.items() if k != "bitstream_path"},
        "tensors": {
            k: {**per_tensor[k], "dtype_in": str(arrays[k].dtype), "dtype_out": str(decoded[k].dtype)}
            for k in inputs
        },
    }
    return result, decoded, bytes(bitstream)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, required=True, help="JSON job description")
    parser.add_argument("--arrays", type=Path, required=True, help="input .npz of named arrays")
    parser.add_argument("--out", type=Path, required=True, help="output .npz of decoded arrays")
    parser.add_argument("--result", type=Path, required=True, help="output result JSON")
    parser.add_argument("--bitstream", type=Path, default=None, help="optionally save the NNC bitstream")
    args = parser.parse_args(argv)

    try:
        job = json.loads(args.job.read_text())
        if not isinstance(job, dict):
            raise ValueError("job JSON must be an object")
        result, decoded, bitstream = run_job(job, _load_arrays(args.arrays))
        np.savez(args.out, **decoded)
        if args.bitstream is not None:
            args.bitstream.write_bytes(bitstream)
    except BaseException as exc:  # nncodec reports bad input with SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        args.result.write_text(
            json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": tb}, indent=2)
        )
        return 1
    args.result.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
