"""``wcodec encode --ray``: a local Ray cluster on 127.0.0.1 with 2 worker CPUs codes the layers.

The file must be byte-identical to a single-process encode, and a Ray worker killed mid-encode
must give one clear error and leave nothing behind. The cluster is started by this module
(``ray start --head --block``, loopback only) and stopped by its own process group.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray")

from bench.common import LocalRay, cmdline, process_tree
from weightcodec import EncodeConfig, HevcSettings, encode

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    try:
        ray = LocalRay(cpus=2, timeout=120)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield ray
    finally:
        ray.stop()


def _model(path: Path, layers: int, rows: int = 256, cols: int = 512) -> dict:
    torch.manual_seed(0)
    sd = {f"l{i}.weight": torch.randn(rows, cols) * 0.05 for i in range(layers)}
    sd["l0.bias"] = torch.randn(rows)
    sd["emb.weight"] = (torch.randn(300, 64) * 0.02).to(torch.float16)
    torch.save(sd, path)
    return sd


def _encode_cli(cluster, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "weightcodec.cli", "encode", str(model), "-o", str(out), "-q",
                             "--qp", "30", "--ray", cluster.address, *extra],
                            env=cluster.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
        busy = [pid for pid in process_tree(cluster.pid)[1:] if cmdline(pid).startswith("ray::_run")]
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
