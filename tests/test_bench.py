"""bench/run.py: helpers, and a quick end-to-end run on the bundled example (nncodec parts skip without its venv)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
from bench import run as bench_run  # noqa: E402
from bench.nncodec_env import read_marker  # noqa: E402

RUN = REPO / "bench" / "run.py"


def test_hevc_qstep_matches_the_hevc_formula():
    assert bench_run.hevc_qstep(4) == 1.0
    assert bench_run.hevc_qstep(22) == 8.0
    assert bench_run.hevc_qstep(28) == pytest.approx(16.0)


def test_bytes_change_at_equal_error():
    ref = [(e, 1000.0 / e) for e in (1.0, 2.0, 4.0, 8.0)]
    smaller = [(e, 0.9 * b) for e, b in ref]
    cmp = bench_run.bytes_change_at_equal_error(ref, smaller)
    assert cmp["bytes_change_pct"] == pytest.approx(-10.0)
    assert cmp["error_range"] == pytest.approx([1.0, 8.0])
    assert bench_run.bytes_change_at_equal_error(ref, [(100.0, 1.0), (200.0, 0.5)]) is None  # no overlap
    assert bench_run.bytes_change_at_equal_error(ref, [(2.0, 5.0)]) is None  # one point


def test_error_stats_in_int8_units():
    w = np.array([[0.0, 0.5, -1.0, 0.26]], dtype=np.float32)
    scale = np.float32(1.0 / 127)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    cs = bench_run.CodedSet(names=["w"], weights={"w": w}, q={"w": q}, scales={"w": np.array([scale])},
                            axis={"w": 0}, granularity={"w": "per-tensor"})
    exact = bench_run.error_stats(cs, {"w": q})
    assert exact["rmse_vs_int8"] == 0.0 and exact["max_vs_int8"] == 0.0
    assert 0.0 < exact["max_vs_float"] <= 0.5  # int8 rounding, in int8 units
    off = bench_run.error_stats(cs, {"w": q.astype(np.float64) + 2.0})
    assert off["rmse_vs_int8"] == pytest.approx(2.0) and off["max_vs_int8"] == pytest.approx(2.0)
    assert cs.scale_bytes == 4 and cs.numel == 4


def test_memory_probe_runs_in_a_child():
    mem = bench_run.measure_memory("zstd", {"a": np.arange(4096, dtype=np.int8)})
    if mem["peak_rss_mib"] is None:
        pytest.skip(mem["method"])
    assert mem["peak_rss_mib"] > 0 and mem["peak_delta_mib"] >= 0


def test_quick_run_on_digits(tmp_path):
    codecs = "weightcodec,zstd,int8"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--models", "digits-mlp", "--quick", "--codecs", codecs, "--no-memory",
         "--score", "none", "--no-plot", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "digits-mlp.json").read_text())
    result = doc["model_result"]
    assert doc["machine"]["logical_cores"] >= 1
    assert [c["name"] for c in result["coded_layers"]] == ["1.weight", "3.weight", "5.weight"]
    ids = [r["id"] for r in result["records"]]
    assert ids == ["float32", "int8", "weightcodec/lossless", "weightcodec/qp22", "weightcodec/qp28",
                   "weightcodec/qp34", "zstd/19"]
    rec = {r["id"]: r for r in result["records"]}
    n = result["coded_weights"]
    assert rec["int8"]["coded_bytes"] == n + result["scale_bytes"]
    for lossless in ("int8", "weightcodec/lossless", "zstd/19"):
        assert rec[lossless]["error_int8_units"]["max_vs_int8"] == 0
        assert rec[lossless]["error_int8_units"]["rmse_vs_float"] == pytest.approx(
            rec["int8"]["error_int8_units"]["rmse_vs_float"])
    assert rec["zstd/19"]["coded_bytes"] < rec["int8"]["coded_bytes"]
    assert rec["zstd/19"]["model_bytes"] == result["rest_bytes"] + rec["zstd/19"]["coded_bytes"]
    assert rec["weightcodec/lossless"]["model_bytes"] == result["rest_bytes"] + rec["weightcodec/lossless"]["coded_bytes"]
    sizes = [rec[f"weightcodec/qp{q}"]["coded_bytes"] for q in (22, 28, 34)]
    errors = [rec[f"weightcodec/qp{q}"]["error_int8_units"]["rmse_vs_int8"] for q in (22, 28, 34)]
    assert sizes == sorted(sizes, reverse=True) and errors == sorted(errors)
    assert all(math.isfinite(rec[i]["timing"]["encode_mb_per_s"]) for i in ("weightcodec/qp22", "zstd/19"))
    summary = (tmp_path / "summary.md").read_text()
    assert "| weightcodec QP 22 |" in summary and "| zstd -19 (int8) |" in summary


def test_bad_model_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--models", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode != 0 and "unknown model" in proc.stderr


@pytest.mark.skipif(read_marker() is None, reason="nncodec venv absent (bench/nncodec_env.py builds it)")
def test_nncodec_matched_step_on_int8_values():
    from bench.nncodec_client import nncodec_qp_for_step, run_nncodec

    rng = np.random.default_rng(0)
    q = np.clip(np.rint(rng.normal(0, 20, (64, 96))), -127, 127).astype(np.int8)
    lossless = run_nncodec({"w": q}, kind="int", qp=None, install=False)
    assert np.array_equal(lossless["arrays"]["w"], q.astype(np.int32))
    nqp = nncodec_qp_for_step(bench_run.hevc_qstep(22))  # step 8 int8 units
    lossy = run_nncodec({"w": q}, kind="int", qp=nqp, use_dq=False, install=False)
    err = lossy["arrays"]["w"] - q
    assert 0 < np.sqrt(np.mean(err**2)) < 8 / math.sqrt(12) * 1.3
    assert lossy["compressed_bytes"] < lossless["compressed_bytes"]
