"""Peak resident memory of one codec job, measured in a fresh process.

:func:`measure_memory` saves the arrays, then runs ``python -m bench.memory JOB`` in a new
interpreter. That child imports the peer's codec modules (:meth:`Peer.memory_imports`), resets its
peak (``/proc/self/clear_refs`` = 5, Linux >= 4.0), loads the arrays, encodes and decodes them
(:meth:`Peer.memory_job`) and prints its ``VmHWM``. ``peak_delta`` is the peak above the idle
footprint, input and output arrays included (as in the nncodec worker, whose input is loaded
in-process too). ``ru_maxrss`` is not used: on Linux it survives fork+exec, so a child of this
torch-loaded process would report the parent's peak.

The child imports only numpy, this module and the one peer's module, so a codec that does not
need torch (zstd) is measured without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import BenchError

ROOT = Path(__file__).resolve().parents[1]
METHOD = "VmHWM of a fresh process running only this job, peak reset after imports"


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure_memory(peer: str, arrays: dict[str, np.ndarray], **params: Any) -> dict[str, Any]:
    """Run ``peer``'s memory job on ``arrays`` in a fresh python; return the peak RSS figures (MiB)."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        npz = Path(tmp) / "in.npz"
        np.savez(npz, **arrays)
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"peer": peer, "arrays": str(npz), "params": params}))
        proc = subprocess.run([sys.executable, "-m", "bench.memory", str(job)],
                              capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"memory probe for {peer} failed: {tail}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["reset"] or out["peak_kib"] is None:
        return {"method": "unavailable (no /proc/self/clear_refs)", "peak_rss_mib": None, "peak_delta_mib": None}
    return {
        "method": METHOD,
        "peak_rss_mib": round(out["peak_kib"] / 1024, 1),
        "peak_delta_mib": round((out["peak_kib"] - out["rss0_kib"]) / 1024, 1),
    }


def _child(job_path: Path) -> None:
    """The probe process: imports, reset, load, encode+decode, print the peak as JSON."""
    from .peers import peer_class

    job = json.loads(job_path.read_text())
    peer = peer_class(job["peer"])
    peer.memory_imports()
    reset = _reset_peak_rss()
    rss0 = _proc_status_kib("VmRSS")
    with np.load(job["arrays"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    peer.memory_job(arrays, job["params"])
    print(json.dumps({"reset": reset, "rss0_kib": rss0, "peak_kib": _proc_status_kib("VmHWM")}))


if __name__ == "__main__":  # the probe child: python -m bench.memory JOB.json
    _child(Path(sys.argv[1]))
