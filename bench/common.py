"""Helpers the speed, memory and scaling benchmarks share: a quiet machine, peak memory, runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(max_load: float = 0.5, timeout: float = 1800.0, poll: float = 15.0) -> dict:
    """Poll /proc/loadavg until the 1-minute load is below ``max_load`` (up to ``timeout`` s).

    Returns what happened, for the JSON: the load seen, seconds waited, and whether the machine
    was quiet (numbers taken while it was not are pessimistic and marked so)."""
    started = time.monotonic()
    while True:
        load = loadavg()
        if load[0] < max_load:
            return {"quiet": True, "load_before": load, "waited_seconds": round(time.monotonic() - started)}
        if time.monotonic() - started >= timeout:
            return {"quiet": False, "load_before": load, "waited_seconds": round(time.monotonic() - started),
                    "note": f"the 1-minute load stayed >= {max_load} for {timeout:.0f} s: numbers taken under load "
                            "(shared machine) are pessimistic"}
        print(f"waiting for a quiet machine (load {load[0]})", file=sys.stderr, flush=True)
        time.sleep(poll)


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, by parent ids read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


#: Ray resolves 127.0.0.1 to the machine's outward address unless told this is a one-machine
#: cluster; with it every Ray server listens on the loopback address only.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


class LocalRay:
    """A local Ray cluster on 127.0.0.1 only (``ray start --head --block``) whose workers import
    this checkout; :meth:`stop` ends it by its own process ids (the tree below ``ray start`` and
    its process group), never by name. Used by bench/scaling.py and tests/test_ray_engine.py."""

    def __init__(self, cpus: int, *, timeout: float = 180.0) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.temp = tempfile.mkdtemp(prefix="/tmp/wcray")  # short: Ray's socket paths must fit 107 bytes
        self.env = {**os.environ, **LOOPBACK_ENV, "PYTHONPATH": str(REPO)}
        self.log = open(Path(self.temp) / "start.log", "w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={self.port}", f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={self.temp}"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.pid = self.proc.pid
        self.address = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in (self.log.seek(0) or self.log.read()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read()[-2000:]
                self.stop()
                raise RuntimeError(f"the local Ray cluster did not start: {tail!r}")
            time.sleep(0.5)

    def stop(self) -> None:
        pids = process_tree(self.pid)
        self.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:  # whatever is left of this cluster, by its own ids
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


#: Environment variable naming the file a :func:`python_command` child writes its final VmHWM (kB) to.
VMHWM_FILE_ENV = "WEIGHTCODEC_BENCH_VMHWM_FILE"
_REPORT_VMHWM = (
    "import atexit, os\n"
    "def _report_vmhwm():\n"
    "    path = os.environ.get('" + VMHWM_FILE_ENV + "')\n"
    "    if path:\n"
    "        with open('/proc/self/status') as f:\n"
    "            kb = next((l.split()[1] for l in f if l.startswith('VmHWM:')), '0')\n"
    "        with open(path, 'w') as out:\n"
    "            out.write(kb)\n"
    "atexit.register(_report_vmhwm)\n"
)


def python_command(module: str | None = None, *args: str, code: str | None = None) -> list[str]:
    """A python child that runs ``module`` as ``python -m module args`` would (or the statements
    ``code``) and, at exit, writes its own VmHWM where :func:`run_measured` reads it: the exact
    peak, even when it falls after the last sample (forked pool workers end with os._exit and do
    not write it)."""
    if code is None:
        code = (f"import runpy, sys\nsys.argv = [{module!r}, *sys.argv[1:]]\n"
                f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", _REPORT_VMHWM + code, *args]


def run_measured(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None, sample: float = 0.5) -> dict:
    """Run ``cmd``; wall seconds, its VmHWM (peak RSS of the main process, kernel-measured), and
    the peak of the summed PSS of its process tree (workers included, shared pages counted once),
    sampled every ``sample`` s (walking /proc costs CPU: at 0.05 s it took more than the coding itself
    on a loaded 2-core machine). A :func:`python_command` child reports its final VmHWM itself
    (``vmhwm_source``: "exit"); otherwise VmHWM is the last sampled value ("sampled", which misses
    a peak in the last ``sample`` s). Raises CalledProcessError on failure."""
    started = time.perf_counter()
    report = tempfile.NamedTemporaryFile(prefix="vmhwm-", delete=False)
    report.close()
    os.unlink(report.name)  # the child creates it only if it reports
    env = {**(env if env is not None else os.environ), VMHWM_FILE_ENV: report.name}
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = {"hwm_kb": 0, "tree_pss_kb": 0, "tree_rss_kb": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            pids = process_tree(proc.pid)
            peak["hwm_kb"] = max(peak["hwm_kb"], _status_kb(proc.pid, "VmHWM"))
            peak["tree_pss_kb"] = max(peak["tree_pss_kb"], sum(_pss_kb(p) for p in pids))
            peak["tree_rss_kb"] = max(peak["tree_rss_kb"], sum(_status_kb(p, "VmRSS") for p in pids))
            done.wait(sample)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    thread.join()
    source = "sampled"
    try:
        with open(report.name) as f:
            peak["hwm_kb"], source = max(peak["hwm_kb"], int(f.read() or 0)), "exit"
        os.unlink(report.name)
    except (OSError, ValueError):
        pass
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, out, err)
    return {"wall_seconds": round(wall, 3), "vmhwm_mb": round(peak["hwm_kb"] / 1024, 1), "vmhwm_source": source,
            "tree_peak_pss_mb": round(peak["tree_pss_kb"] / 1024, 1),
            "tree_peak_rss_mb": round(peak["tree_rss_kb"] / 1024, 1), "stdout": out.decode(errors="replace")[-4000:],
            "stderr": err.decode(errors="replace")[-2000:]}


def python_baseline_mb() -> float:
    """VmHWM of an interpreter that imports weightcodec (torch, numpy, PyAV) and does nothing."""
    r = run_measured(python_command(code="import weightcodec.cli, av, torch"), cwd=REPO)
    return r["vmhwm_mb"]
