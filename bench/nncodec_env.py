"""Create and locate the isolated virtual environment that runs ``nncodec``.

``nncodec`` (Fraunhofer HHI's implementation of MPEG NNC, ISO/IEC 15938-17,
with the DeepCABAC entropy coder) pins ``numpy<2``, while the project venv uses
numpy 2.x, so the peer codec lives in its own venv and is driven one
subprocess per job (see :mod:`bench.nncodec_client` and
``bench/nncodec_worker.py``).

Installation strategy (minimal, torch-free)
-------------------------------------------
``nncodec==2.1.3`` is published only as an sdist whose declared dependencies
include ``torch>=2``, ``torchvision``, ``opencv-python``, ``scikit-learn``,
``pandas``, ``h5py``, ``torchmetrics`` and ``ptflops``.  None of them is needed
to code tensors: ``nncodec.nnc.compress``/``decompress`` only use
``nncodec.nnc_core`` (pure numpy) and the compiled ``deepCABAC`` extension.
Only the *import* of ``nncodec.nnc`` pulls in ``nncodec.framework`` (torch,
torchvision, h5py ...) for the whole-model helpers, and the worker replaces
that sub-package with an empty stub.  So the venv gets exactly:

* ``numpy==1.26.4`` (last numpy 1.x with cp311 wheels), and
* ``nncodec==2.1.3`` installed with ``--no-deps`` (built from the sdist; the
  build needs a C++17 compiler and the Python headers; pip's build isolation
  fetches ``setuptools``, ``wheel`` and ``pybind11``).

A marker file (``.weightcodec-nncodec.json``) is written after a successful
install and smoke test; its presence with matching pins makes later calls
cheap no-ops.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

NNCODEC_VERSION = "2.1.3"
"""Pinned nncodec release (verified to build and run here)."""

NUMPY_REQUIREMENT = "numpy==1.26.4"
"""numpy pin for the nncodec venv (nncodec requires ``numpy<2``)."""

ENV_VAR = "WEIGHTCODEC_NNCODEC_VENV"
"""Environment variable that overrides the default venv location."""

DEFAULT_VENV = Path.home() / ".cache" / "weightcodec" / "nncodec-venv"
"""Default venv location when neither an argument nor :data:`ENV_VAR` is given."""

MARKER_NAME = ".weightcodec-nncodec.json"
"""File written inside the venv once nncodec is installed and smoke-tested."""

# Imports the compiled DeepCABAC extension and the pure-numpy core without
# touching nncodec.framework (torch); prints the installed version.
_SMOKE_TEST = (
    "import importlib.metadata as m, numpy;"
    "import nncodec.extensions.deepCABAC, nncodec.nnc_core;"
    "assert numpy.__version__.startswith('1.'), numpy.__version__;"
    "print(m.version('nncodec'))"
)


class NNCodecError(RuntimeError):
    """Base class of the errors raised by the nncodec benchmark helpers."""


class NNCodecEnvError(NNCodecError):
    """The nncodec venv could not be created, installed or verified."""


def resolve_venv_path(path: Path | None = None) -> Path:
    """Return the venv directory: ``path``, else ``$WEIGHTCODEC_NNCODEC_VENV``, else the default."""
    if path is not None:
        return Path(path).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return DEFAULT_VENV


def venv_python(path: Path) -> Path:
    """Return the python executable inside the venv at ``path`` (it may not exist yet)."""
    return Path(path) / "bin" / "python"


def read_marker(path: Path | None = None) -> dict[str, Any] | None:
    """Return the install record of a ready venv (pins, install seconds), or ``None``."""
    marker = resolve_venv_path(path) / MARKER_NAME
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_ready(path: Path) -> bool:
    data = read_marker(path)
    return (
        data is not None
        and data.get("nncodec") == NNCODEC_VERSION
        and data.get("numpy_requirement") == NUMPY_REQUIREMENT
        and venv_python(path).exists()
    )


@contextlib.contextmanager
def _install_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent installers of the same venv with an advisory file lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.parent / f".{path.name}.lock"
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, timeout_s: float) -> str:
    """Run ``cmd``; return stdout, or raise :class:`NNCodecEnvError` with the output tail."""
    env = dict(os.environ)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NNCodecEnvError(f"{what} timed out after {timeout_s:.0f} s: {' '.join(cmd)}") from exc
    except OSError as exc:
        raise NNCodecEnvError(f"{what} could not start: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + "\n" + proc.stderr).strip().splitlines()[-40:])
        raise NNCodecEnvError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}"
        )
    return proc.stdout


def ensure_nncodec_venv(
    path: Path | None = None,
    *,
    base_python: str | None = None,
    timeout_s: float = 1800.0,
) -> Path:
    """Make sure an nncodec venv exists and return the path of its python.

    Creates the venv if missing, installs :data:`NUMPY_REQUIREMENT` and
    ``nncodec==NNCODEC_VERSION`` (``--no-deps``; see the module docstring),
    smoke-tests the import and records the install in a marker file.  A venv
    whose marker matches the current pins is returned without any work.  A
    half-built or outdated venv (no matching marker) is wiped and rebuilt; a
    non-empty directory that is not a venv is left alone (error).

    Args:
        path: venv directory; default ``$WEIGHTCODEC_NNCODEC_VENV`` or
            ``~/.cache/weightcodec/nncodec-venv``.
        base_python: interpreter used to create the venv (default: the
            current one, ``sys.executable``; must be CPython >= 3.8 with
            ``venv`` and headers for building the C++ extension).
        timeout_s: limit for each pip step.

    Returns:
        Path to ``<venv>/bin/python``.

    Raises:
        NNCodecEnvError: if any step fails; the message carries the tail of
            pip's output so a caller can log it and skip nncodec.
    """
    venv = resolve_venv_path(path)
    if _is_ready(venv):
        return venv_python(venv)
    with _install_lock(venv):
        if _is_ready(venv):  # another process finished while we waited
            return venv_python(venv)
        start = time.perf_counter()
        if venv.exists():
            if any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
                raise NNCodecEnvError(
                    f"{venv} exists and is not a virtual environment; refusing to replace it"
                )
            shutil.rmtree(venv)  # a half-built or outdated venv
        interpreter = base_python or sys.executable
        _run([interpreter, "-m", "venv", str(venv)], "creating the nncodec venv", timeout_s)
        py = str(venv_python(venv))
        pip = [py, "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        _run(pip + [NUMPY_REQUIREMENT], f"installing {NUMPY_REQUIREMENT}", timeout_s)
        _run(
            pip + ["--no-deps", f"nncodec=={NNCODEC_VERSION}"],
            f"installing nncodec=={NNCODEC_VERSION} (C++ build of DeepCABAC)",
            timeout_s,
        )
        version = _run([py, "-c", _SMOKE_TEST], "smoke-testing nncodec", 300.0).strip()
        if version != NNCODEC_VERSION:
            raise NNCodecEnvError(
                f"nncodec {version!r} installed but {NNCODEC_VERSION!r} was requested"
            )
        record = {
            "nncodec": NNCODEC_VERSION,
            "numpy_requirement": NUMPY_REQUIREMENT,
            "install_seconds": round(time.perf_counter() - start, 1),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base_python": interpreter,
        }
        (venv / MARKER_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return venv_python(venv)
