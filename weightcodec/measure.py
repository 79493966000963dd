"""The measurements every tool reports, written once: int8 error, rate at equal error, machine, sizes.

- :func:`tensor_error` / :func:`int8_error`: RMSE and maximum absolute error of decoded values
  against reference values, per tensor and pooled over tensors. Both are in the units of the
  values given: pass int8 values (or values divided by the int8 scale) to get *int8 units*.
- :func:`rate_change_at_equal_error`: Bjøntegaard-style comparison of two rate-error curves: the
  mean change of log(bytes) at equal error, as a percentage.
- :func:`machine_info`: the machine and package versions a measurement ran with.
- :func:`human_bytes`: ``123 B``, ``1.23 kB``, ``4.56 MB`` (decimal units).

Used by ``tools/`` and ``bench/`` (and by the library's ``verify``), so the same figure means the
same computation everywhere. Nothing here prints; bad input raises :class:`~weightcodec.errors.ConfigError`.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import ConfigError

#: Packages whose versions :func:`machine_info` records.
RECORDED_PACKAGES = ("weightcodec", "torch", "numpy", "av", "zstandard", "zipnn", "rich", "matplotlib")


# --- error of decoded values ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TensorError:
    """Error of one decoded tensor against its reference, in the units of the values given."""

    rmse: float
    max_abs: float
    count: int  # number of values
    sse: float  # sum of squared errors (what pooling adds up)


@dataclass(frozen=True, kw_only=True)
class Int8Error:
    """Errors of several tensors: each one, and pooled over all their values."""

    layers: dict[str, TensorError]  # in the order the tensors were given
    rmse: float  # sqrt(total squared error / total values)
    max_abs: float
    count: int


#: Values compared at a time by :func:`tensor_error`'s integer path (4 MiB of int16 differences).
_ERROR_CHUNK = 1 << 21


def tensor_error(decoded: ArrayLike, reference: ArrayLike) -> TensorError:
    """RMSE and max |decoded - reference| of one tensor, computed in float64.

    ``decoded`` is reshaped to ``reference``'s shape (it must hold as many values). Integer inputs
    give exact results (every intermediate value is an integer below 2**53).

    Raises:
        ConfigError: if the sizes differ or the tensor is empty.
    """
    ref, got = np.asarray(reference), np.asarray(decoded)
    if got.size != ref.size or ref.size == 0:
        raise ConfigError(f"cannot compare {got.size} decoded values with {ref.size} reference values")
    if ref.dtype.kind in "iu" and got.dtype.kind in "iu" and max(ref.itemsize, got.itemsize) == 1:
        # int8/uint8 (the codec's values): the same exact sums in int16/int64, ~15x faster than
        # float64, in chunks (no int16 copy of a whole tensor: exact sums do not depend on the order)
        got, ref = got.reshape(-1), ref.reshape(-1)
        sse, max_abs = 0, 0
        for start in range(0, ref.size, _ERROR_CHUNK):
            diff = np.subtract(got[start:start + _ERROR_CHUNK], ref[start:start + _ERROR_CHUNK], dtype=np.int16)
            sse += int(np.einsum("i,i->", diff, diff, dtype=np.int64))
            max_abs = max(max_abs, int(np.max(np.abs(diff))))
        return TensorError(rmse=math.sqrt(sse / ref.size), max_abs=float(max_abs), count=int(ref.size),
                           sse=float(sse))
    diff = np.asarray(got, dtype=np.float64).reshape(ref.shape) - np.asarray(ref, dtype=np.float64)
    sse = float(np.sum(diff**2))
    return TensorError(rmse=math.sqrt(sse / diff.size), max_abs=float(np.max(np.abs(diff))),
                       count=int(diff.size), sse=sse)


def int8_error(decoded: Mapping[str, ArrayLike], reference: Mapping[str, ArrayLike],
               names: Iterable[str] | None = None) -> Int8Error:
    """:func:`tensor_error` of each named tensor (default: every reference tensor), and pooled.

    Raises:
        ConfigError: if a named tensor is missing from either mapping, or no tensor is named.
    """
    names = list(reference if names is None else names)
    missing = [n for n in names if n not in decoded or n not in reference]
    if missing or not names:
        raise ConfigError(f"no decoded/reference pair for {missing or 'any tensor'}")
    layers = {n: tensor_error(decoded[n], reference[n]) for n in names}
    sse = 0.0
    for e in layers.values():  # in order, as a plain float: the pooled figure does not depend on numpy
        sse += e.sse
    count = sum(e.count for e in layers.values())
    return Int8Error(layers=layers, rmse=math.sqrt(sse / count), max_abs=max(e.max_abs for e in layers.values()),
                     count=count)


# --- rate at equal error ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RateChange:
    """Result of :func:`rate_change_at_equal_error`."""

    bytes_change_pct: float  # negative: ``other`` needs fewer bytes for the same error
    error_range: tuple[float, float]  # the errors both curves cover, over which the mean is taken


def _curve(points: Iterable[tuple[float, float]], log_error: bool) -> tuple[np.ndarray, np.ndarray] | None:
    pts = sorted((math.log(e) if log_error else float(e), math.log(b)) for e, b in points if e > 0 and b > 0)
    if len(pts) < 2:
        return None
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    keep = np.concatenate([[True], np.diff(x) > 1e-12])  # one point per error value
    return (x[keep], y[keep]) if keep.sum() >= 2 else None


def rate_change_at_equal_error(
    reference: Iterable[tuple[float, float]],
    other: Iterable[tuple[float, float]],
    *,
    error_axis: str = "log",
    interpolation: str = "linear",
    samples: int = 200,
) -> RateChange | None:
    """Mean change of log(bytes) of ``other`` against ``reference`` at equal error (Bjøntegaard style).

    Both curves are ``(error, bytes)`` points (points with a zero error or size are left out).
    log(bytes) is interpolated over the error axis (``"log"``: log(error), the classic BD axis that
    weighs every QP step alike; ``"linear"``: the error itself), piecewise-linearly or with a
    monotone cubic (``"pchip"``, needs three points per curve), and the difference is averaged
    over ``samples`` equally spaced errors of the range both curves cover. The result is
    ``100 * (exp(mean) - 1)`` percent. ``None`` when a curve has too few points or the ranges do
    not overlap.

    Raises:
        ConfigError: for an unknown ``error_axis`` or ``interpolation``, or ``samples < 2``.
    """
    if error_axis not in ("log", "linear") or interpolation not in ("linear", "pchip") or samples < 2:
        raise ConfigError(f"rate comparison: error_axis 'log'|'linear', interpolation 'linear'|'pchip', "
                          f"samples >= 2; got {error_axis!r}, {interpolation!r}, {samples!r}")
    a, b = _curve(reference, error_axis == "log"), _curve(other, error_axis == "log")
    if a is None or b is None:
        return None
    lo, hi = max(a[0][0], b[0][0]), min(a[0][-1], b[0][-1])
    if not hi > lo:
        return None
    xs = np.linspace(lo, hi, samples)
    if interpolation == "linear":
        ya, yb = np.interp(xs, *a), np.interp(xs, *b)
    else:
        if len(a[0]) < 3 or len(b[0]) < 3:
            return None
        from scipy.interpolate import PchipInterpolator

        ya, yb = PchipInterpolator(*a)(xs), PchipInterpolator(*b)(xs)
    lo_e, hi_e = (math.exp(lo), math.exp(hi)) if error_axis == "log" else (float(lo), float(hi))
    return RateChange(bytes_change_pct=100.0 * (math.exp(float(np.mean(yb - ya))) - 1.0), error_range=(lo_e, hi_e))


# --- the machine --------------------------------------------------------------------------------
def _first_line_value(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, memory, platform, Python, torch threads and package versions."""
    import importlib.metadata

    import torch

    mem = _first_line_value("/proc/meminfo", "MemTotal:")
    versions = {}
    for pkg in RECORDED_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu_model": _first_line_value("/proc/cpuinfo", "model name") or platform.processor() or None,
            "logical_cores": os.cpu_count(),
            "memory_gib": round(int(mem.split()[0]) / 2**20, 1) if mem else None,
            "platform": platform.platform(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "versions": versions}


# --- sizes ----------------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    """A byte count in decimal units: ``"123 B"``, ``"1.23 kB"``, ``"4.56 MB"``, ``"7.89 GB"``."""
    if abs(n) < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if abs(n) < 1000:
            return f"{n:.2f} {unit}"
    return f"{n / 1000:.2f} GB"


__all__ = ["Int8Error", "RateChange", "TensorError", "human_bytes", "int8_error", "machine_info",
           "rate_change_at_equal_error", "tensor_error"]
