"""Drive nncodec from the project venv (numpy 2) through a subprocess.

nncodec needs numpy<2 and therefore lives in its own venv (see
:mod:`bench.nncodec_env`).  :func:`run_nncodec` writes the arrays and a job
description to a temporary directory, runs ``bench/nncodec_worker.py`` with
the nncodec venv's python, and reads back the decoded arrays and metrics.
Nothing here imports nncodec.

Example::

    from bench.nncodec_client import run_nncodec
    res = run_nncodec({"fc.weight": w}, kind="float", qp=-32)
    res["compressed_bytes"], res["arrays"]["fc.weight"]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .nncodec_env import (
    NNCodecEnvError,
    NNCodecError,
    ensure_nncodec_venv,
    resolve_venv_path,
    venv_python,
)

WORKER = Path(__file__).resolve().with_name("nncodec_worker.py")
"""The worker script run inside the nncodec venv."""

_JOB_OPTIONS = frozenset(
    {
        "qp_density",
        "nonweight_qp",
        "qp_per_tensor",
        "step_per_tensor",
        "bitdepth",
        "lambda_scale",
        "param_opt",
        "row_skipping",
        "cabac_unary_length_minus1",
    }
)


class NNCodecJobError(NNCodecError):
    """An nncodec worker job failed, timed out or produced unusable output."""


def nncodec_qp_for_step(step: float, qp_density: int = 2) -> int:
    """Nearest nncodec qp whose quantiser step is closest (in log scale) to ``step``.

    Mirrors ``nncodec.nnc_core.common.get_qp_from_stepsize`` followed by
    rounding, which is what the worker does for ``step_per_tensor``.
    """
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step!r}")
    k = 1 << qp_density
    base = np.floor(np.log2(step)) * k
    return int(np.round(base + (step * k) / 2 ** (base / k) - k))


def nncodec_step_for_qp(qp: int, qp_density: int = 2) -> float:
    """Quantiser step size of nncodec's ``qp`` (as in DeepCABAC's ``quantLayer``)."""
    k = 1 << qp_density
    return float((k + (qp & (k - 1))) * 2.0 ** ((qp >> qp_density) - qp_density))


def run_nncodec(
    arrays: Mapping[str, np.ndarray],
    *,
    kind: str,
    qp: int | None,
    use_dq: bool = True,
    timeout_s: float = 1800.0,
    options: Mapping[str, Any] | None = None,
    python: Path | None = None,
    install: bool = True,
    keep_bitstream: bool = False,
) -> dict[str, Any]:
    """Encode and decode ``arrays`` with nncodec in its own venv; return arrays and metrics.

    Args:
        arrays: named tensors, coded in this order.  ``kind="float"``: any
            real dtype (cast to float32).  ``kind="int"``: integer dtypes
            (e.g. int8 quantised weights; cast to int32 by the worker).
        kind: ``"float"`` or ``"int"``.
        qp: nncodec quantisation parameter for tensors with ndim > 1 (step
            ``2**(qp/4)`` at the default ``qp_density=2``, e.g. -32 -> 2**-8).
            ``None`` means nncodec's default -38 for float jobs and lossless
            coding for int jobs; an int job with a qp is coded lossily (the
            integers as float32 at that qp: 0 -> step 1, 4 -> 2, 8 -> 4).
        use_dq: dependent (trellis-coded) quantisation; ignored when lossless.
        timeout_s: wall-clock limit of the worker process.
        options: further job keys, see ``bench/nncodec_worker.py``:
            ``qp_density``, ``nonweight_qp``, ``qp_per_tensor``,
            ``step_per_tensor``, ``bitdepth``, ``lambda_scale``,
            ``param_opt``, ``row_skipping``, ``cabac_unary_length_minus1``.
        python: nncodec venv interpreter; default: the one returned by
            :func:`bench.nncodec_env.ensure_nncodec_venv`.
        install: when ``python`` is None, allow creating the venv if it is
            missing (takes about 2-3 minutes); if False a missing venv raises.
        keep_bitstream: also return the raw NNC bitstream under ``"bitstream"``.

    Returns:
        The worker's result (``compressed_bytes``, ``bits_per_value``,
        ``rmse``, ``exact``, ``encode_seconds``, ``decode_seconds``,
        ``peak_rss_bytes``, ``nncodec_version``, ``compress_kwargs``,
        per-tensor ``tensors`` stats, ...) plus ``"arrays"``: the decoded
        tensors (float32, or int32 for lossless int jobs), with
        ``"wall_seconds"`` for the whole subprocess.

    Raises:
        NNCodecEnvError: the venv is missing (``install=False``) or could not
            be installed.
        NNCodecJobError: the job failed or timed out.
        ValueError: bad arguments.
    """
    if kind not in ("float", "int"):
        raise ValueError(f"kind must be 'float' or 'int', got {kind!r}")
    if not arrays:
        raise ValueError("arrays is empty")
    reserved = {"file", "allow_pickle"} & set(arrays)  # np.savez's own parameter names
    if reserved:
        raise ValueError(f"tensor names not usable in an .npz: {sorted(reserved)}")
    unknown = set(options or {}) - _JOB_OPTIONS
    if unknown:
        raise ValueError(f"unknown nncodec job options: {sorted(unknown)}")
    if kind == "int":
        not_int = [k for k, v in arrays.items() if not np.issubdtype(np.asarray(v).dtype, np.integer)]
        if not_int:
            raise ValueError(f"kind='int' needs integer arrays; not integer: {not_int}")

    if python is None:
        if install:
            python = ensure_nncodec_venv()
        else:
            venv = resolve_venv_path()
            python = venv_python(venv)
            if not python.exists():
                raise NNCodecEnvError(f"no nncodec venv at {venv}; call ensure_nncodec_venv()")

    job: dict[str, Any] = {"kind": kind, "qp": None if qp is None else int(qp), "use_dq": bool(use_dq)}
    job.update(options or {})

    with tempfile.TemporaryDirectory(prefix="nncodec-job-") as tmp:
        tmpdir = Path(tmp)
        paths = {name: tmpdir / name for name in ("job.json", "in.npz", "out.npz", "result.json", "out.nnc")}
        paths["job.json"].write_text(json.dumps(job, default=_json_default))
        np.savez(paths["in.npz"], **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        cmd = [
            str(python), "-I", str(WORKER),
            "--job", str(paths["job.json"]),
            "--arrays", str(paths["in.npz"]),
            "--out", str(paths["out.npz"]),
            "--result", str(paths["result.json"]),
        ]
        if keep_bitstream:
            cmd += ["--bitstream", str(paths["out.nnc"])]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmpdir, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise NNCodecJobError(f"nncodec {kind} job (qp={qp}) timed out after {timeout_s:.0f} s") from exc
        except OSError as exc:
            raise NNCodecJobError(f"could not start the nncodec worker with {python}: {exc}") from exc
        wall = time.perf_counter() - start

        result: dict[str, Any] | None = None
        if paths["result.json"].exists():
            result = json.loads(paths["result.json"].read_text())
        if proc.returncode != 0 or not result or not result.get("ok"):
            reason = (result or {}).get("error") or f"exit code {proc.returncode}"
            tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
            raise NNCodecJobError(f"nncodec {kind} job (qp={qp}) failed: {reason}\n{tail}".rstrip())

        with np.load(paths["out.npz"], allow_pickle=False) as npz:
            result["arrays"] = {name: npz[name] for name in npz.files}
        if keep_bitstream:
            result["bitstream"] = paths["out.nnc"].read_bytes()
    result["wall_seconds"] = wall
    result["worker_stdout"] = proc.stdout
    return result


def _json_default(obj: Any) -> Any:
    """Make numpy scalars in ``options`` JSON-serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


if __name__ == "__main__":  # pragma: no cover - manual smoke test
    rng = np.random.default_rng(0)
    demo = {"w": rng.normal(0.0, 0.05, (256, 512)).astype(np.float32)}
    out = run_nncodec(demo, kind="float", qp=-32)
    sys.stdout.write(
        f"{out['compressed_bytes']} bytes, {out['bits_per_value']:.3f} bit/value, rmse {out['rmse']:.3g}\n"
    )
