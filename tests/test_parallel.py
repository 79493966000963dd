"""Parallel encoding: the same bytes whatever the worker count; failures are one clear error."""

import os
import signal

import pytest
import torch

from weightcodec import EncodeConfig, HevcSettings, decode, encode
from weightcodec.errors import BackendError, ConfigError
from weightcodec.parallel import ordered_map
from weightcodec.storage import hevc


def _matrix(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    return 0.05 * (torch.randn(rows, cols, generator=g) + 0.5 * torch.randn(rows, 1, generator=g))


def _times(job, ctx):
    return job * ctx


def _identity(job, ctx):
    return job


def _fail_on_7(job, ctx):
    if job == 7:
        raise BackendError("job 7 failed")
    return job


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    sd = {f"l{i}.weight": _matrix(96 + 16 * i, 128, seed=i) for i in range(5)}
    sd["l2.bias"] = torch.randn(128)
    sd["emb.weight"] = (torch.randn(300, 64) * 0.02).to(torch.bfloat16)
    return sd


def test_files_are_byte_identical_whatever_the_worker_count(model):
    config = EncodeConfig(hevc=HevcSettings(qp=30))
    one = encode(model, config=config, workers=1).data
    assert encode(model, config=config, workers=2).data == one
    assert encode(model, config=config, workers=3).data == one
    decoded = decode(one).state_dict
    assert decoded["emb.weight"].dtype == torch.bfloat16 and list(decoded) == list(model)


def test_results_come_back_in_job_order_and_errors_pass_through():
    assert list(ordered_map(_times, range(20), workers=2, context=3, window=3)) == [3 * i for i in range(20)]
    with pytest.raises(ConfigError, match="workers"):
        list(ordered_map(_identity, [1], workers=0))
    with pytest.raises(BackendError, match="job 7 failed"):
        list(ordered_map(_fail_on_7, range(20), workers=2))


def test_a_killed_worker_is_one_clear_error_and_writes_nothing(model, tmp_path, monkeypatch):
    original = hevc.encode

    def die_on_l3(array, plan, ctx):
        if plan.name == "l3.weight":
            os.kill(os.getpid(), signal.SIGKILL)
        return original(array, plan, ctx)

    monkeypatch.setattr(hevc, "encode", die_on_l3)
    out = tmp_path / "model.wcodec"
    with pytest.raises(BackendError, match=r"worker process died \(killed, or out of memory\) with tensor 'l[0-3].weight'.*nothing was written"):
        encode(model, out, workers=2)
    assert os.listdir(tmp_path) == []


_TORCH_AFTER_FORK = """
import torch
from weightcodec.parallel import ordered_map
torch.set_num_threads(2)
x = torch.randn(512, 512)
(x @ x).sum()  # the parent's OpenMP pool is now running
torch.nn.functional.conv2d(torch.randn(8, 3, 64, 64), torch.randn(16, 3, 3, 3))

def work(i, context):
    y = torch.nn.functional.interpolate(torch.rand(1, 3, 300, 300), size=(224, 224), mode="bilinear")
    return round(float(y.sum() + torch.randn(256, 256).matmul(torch.randn(256, 256)).sum()) * 0, 3) + i

print(sum(ordered_map(work, range(32), workers=2)))
"""


def test_pool_workers_run_torch_after_the_parent_used_its_thread_pool():
    # regression: forked workers inherited a busy OpenMP pool and hung in their first parallel op
    # (wcodec encode --calib-data loading 500 images after the model had run)
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _TORCH_AFTER_FORK], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == sum(range(32))
