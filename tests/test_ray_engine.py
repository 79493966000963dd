"""``wcodec encode --ray``: a local Ray cluster on 127.0.0.1 with 2 worker CPUs codes the layers.

The file must be byte-identical to a single-process encode, and a Ray worker killed mid-encode
must give one clear error and leave nothing behind. The cluster is started by this module
(``ray start --head --block``, loopback only) and stopped by its own process group.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from weightcodec import EncodeConfig, HevcSettings, encode

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: Ray resolves 127.0.0.1 to the machine's outward address unless told this is a one-machine
#: cluster; with it every Ray server listens on the loopback address only.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def cluster():
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/wcray")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, **LOOPBACK_ENV, "PYTHONPATH": str(REPO)}  # workers import this checkout
    log = open(Path(temp) / "start.log", "w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in (log.seek(0) or log.read()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local Ray cluster did not start: {log.read()[-2000:]!r}")
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", "env": env, "pid": proc.pid}
    finally:
        pids = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        for pid in [proc.pid, *pids]:  # whatever is left of this cluster, by its own ids
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _model(path: Path, layers: int, rows: int = 256, cols: int = 512) -> dict:
    torch.manual_seed(0)
    sd = {f"l{i}.weight": torch.randn(rows, cols) * 0.05 for i in range(layers)}
    sd["l0.bias"] = torch.randn(rows)
    sd["emb.weight"] = (torch.randn(300, 64) * 0.02).to(torch.float16)
    torch.save(sd, path)
    return sd


def _encode_cli(cluster, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "weightcodec.cli", "encode", str(model), "-o", str(out), "-q",
                             "--qp", "30", "--ray", cluster["address"], *extra],
                            env=cluster["env"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_ray_encode_is_byte_identical_to_a_local_one(cluster, tmp_path):
    model = tmp_path / "model.pt"
    sd = _model(model, layers=4)
    proc = _encode_cli(cluster, model, tmp_path / "ray.wcodec")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    local = encode(sd, config=EncodeConfig(hevc=HevcSettings(qp=30)), workers=1, verify=True).data
    assert (tmp_path / "ray.wcodec").read_bytes() == local


def test_a_killed_ray_worker_is_one_clear_error_and_writes_nothing(cluster, tmp_path):
    model = tmp_path / "model.pt"
    _model(model, layers=12, rows=512, cols=1024)
    before = set(os.listdir(tmp_path))
    proc = _encode_cli(cluster, model, tmp_path / "out.wcodec", "--no-verify")
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        busy = [pid for pid in _descendants(cluster["pid"]) if _cmdline(pid).startswith("ray::_run")]
        if busy:
            victim = busy[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert victim is not None, "no Ray worker was seen coding a layer"
    assert proc.returncode == 1, err
    assert "a Ray worker died" in err and "nothing was written" in err and "Traceback" not in err
    assert err.count("error:") == 1
    assert set(os.listdir(tmp_path)) == before
