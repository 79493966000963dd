"""bench/: the peers' uniform metrics, the report from a JSON document, the memory probe, and a quick
end-to-end ``python -m bench.run`` on the bundled example (nncodec parts skip without its venv)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bench import BenchError
from bench.comparison import CodedSet, Comparison
from bench.memory import measure_memory
from bench.nncodec_env import read_marker
from bench.peers import PEERS, SELECTABLE, Coded, Peer, RunOptions, peer_class
from bench.peers.weightcodec import hevc_qstep
from bench.records import rate_comparisons
from bench.report import write_report
from tests.helpers import REPO


def test_hevc_qstep_matches_the_hevc_formula():
    assert hevc_qstep(4) == 1.0
    assert hevc_qstep(22) == 8.0
    assert hevc_qstep(28) == pytest.approx(16.0)


def test_every_registered_peer_resolves_to_a_named_class():
    for name in PEERS:
        cls = peer_class(name)
        assert issubclass(cls, Peer) and cls.name == name
    assert "float32" not in SELECTABLE and set(SELECTABLE) == set(PEERS) - {"float32"}
    with pytest.raises(BenchError, match="unknown codec"):
        peer_class("gzip")


def coded_set() -> CodedSet:
    w = np.array([[0.0, 0.5, -1.0, 0.26]], dtype=np.float32)
    scale = np.float32(1.0 / 127)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return CodedSet(names=["w"], weights={"w": w}, q={"w": q}, scales={"w": np.array([scale])},
                    axis={"w": 0}, granularity={"w": "per-tensor"})


def test_error_stats_in_int8_units():
    cs = coded_set()
    exact = cs.errors({"w": cs.q["w"]})
    assert exact["rmse_vs_int8"] == 0.0 and exact["max_vs_int8"] == 0.0
    assert 0.0 < exact["max_vs_float"] <= 0.5  # int8 rounding, in int8 units
    off = cs.errors({"w": cs.q["w"].astype(np.float64) + 2.0})
    assert off["rmse_vs_int8"] == pytest.approx(2.0) and off["max_vs_int8"] == pytest.approx(2.0)
    assert [layer["name"] for layer in off["layers"]] == ["w"]
    assert cs.scale_bytes == 4 and cs.numel == 4


class _Halver(Peer):
    """A fake lossy peer: every int8 value halved (so the error is known), 1 byte per 2 weights."""

    name = "halver"

    def _run_impl(self, comparison, setting) -> Coded:
        cs = comparison.cs
        recon = {n: np.trunc(cs.q[n] / 2.0) * 2.0 for n in cs.names}
        return Coded(id="halver", family="halver", label="halver", settings={}, lossless=False,
                     coded_bytes=cs.numel // 2, recon=recon, encode_s=[2.0, 1.0, 4.0], decode_s=[0.5])


def test_the_base_class_computes_every_peers_metrics_alike():
    cs = coded_set()  # q = [0, 64, -127, 33]
    comparison = Comparison(model="m", weights_path="", state_dict=None, float_model_bytes=16, cs=cs, coded_layers=[],
                            lossless_config=None, lossless_encode=None, base_state_dict=None, rest_bytes=100,
                            evaluator=None, eval_note="no data")
    record = _Halver(RunOptions(repeats=3, memory=False)).run(comparison, None)
    assert record.codec == "halver" and record.coded_bytes == 2
    assert record.coded_bits_per_weight == 4.0  # 8 * 2 bytes / 4 weights
    assert record.model_bytes == 102  # rest of the container + the peer's bytes
    assert record.ratio_vs_float32 == pytest.approx(16 / 102)
    assert record.errors["max_vs_int8"] == 1.0  # -127 -> -126, 33 -> 32
    assert record.errors["rmse_vs_int8"] == pytest.approx(math.sqrt(2 / 4))
    timing = record.timing
    assert timing["encode_median_s"] == 2.0 and timing["decode_median_s"] == 0.5
    assert timing["encode_mb_per_s"] == pytest.approx(4e-6 / 2.0)
    assert record.memory is None  # --no-memory
    doc = record.to_json()
    assert doc["error_int8_units"]["max_vs_int8"] == 1.0 and "layers" not in doc["error_int8_units"]
    assert doc["error_int8_units_per_layer"][0]["name"] == "w"


def test_rate_comparison_of_records_against_weightcodec_hevc():
    def rec(family, rmse, nbytes, codec="x"):
        return {"family": family, "codec": codec, "lossless": False, "coded_bytes": nbytes,
                "error_int8_units": {"rmse_vs_float": rmse}}

    hevc = [rec("weightcodec HEVC", e, 1000 / e, "weightcodec") for e in (1.0, 2.0, 4.0, 8.0)]
    peer = [rec("peer", e, 900 / e) for e in (1.0, 2.0, 4.0, 8.0)]
    out = rate_comparisons(hevc + peer + [rec("int8", 0.3, 5000, "int8"), rec("lonely", 2.0, 10)])
    assert [c["family"] for c in out] == ["peer"]  # int8 is not a curve, one point is not a curve
    assert out[0]["bytes_change_pct"] == pytest.approx(-10.0) and out[0]["error_range"] == pytest.approx([1.0, 8.0])


def test_report_from_a_json_document(tmp_path):
    record = {
        "id": "zstd/19", "codec": "zstd", "family": "zstd -19", "label": "zstd -19 (int8)", "lossless": True,
        "coded_bytes": 1234, "coded_bits_per_weight": 6.25, "model_bytes": 5678,
        "error_int8_units": {"rmse_vs_int8": 0.0, "max_vs_int8": 0.0, "rmse_vs_float": 0.289, "max_vs_float": 0.5},
        "accuracy": {"top1": 97.5, "top5": 99.0, "n": 360},
        "timing": {"encode_mb_per_s": 12.5, "decode_mb_per_s": None},
        "memory": {"peak_rss_mib": 41.7, "peak_delta_mib": 6.4},
    }
    doc = {"command": "python -m bench.run --quick", "repeats": 1, "nncodec_version": None,
           "machine": {"cpu_model": "cpu", "logical_cores": 2, "memory_gib": 8.0, "platform": "linux", "python": "3.11",
                       "torch_threads": 2, "versions": {"torch": "t", "av": "a", "zstandard": "z", "zipnn": None}},
           "model_result": {"model": "m", "coded_layers": [{"name": "w", "shape": [2, 3]}], "coded_weights": 1579,
                            "float32_model_bytes": 9999, "skipped": [], "evaluation_note": None,
                            "evaluation": {"samples": 360, "dataset": "digits", "score_mode": "all"},
                            "records": [record],
                            "rate_at_equal_error": [{"family": "nncodec float DQ", "bytes_change_pct": -6.9,
                                                     "error_range": [2.4, 12.0], "points": 7}]}}
    summary = write_report(tmp_path, [doc], plots=False).read_text()
    assert "Command: `python -m bench.run --quick`" in summary
    row = "| zstd -19 (int8) | 1,234 | 6.250 | 5,678 | 0.000 | 0.00 | 0.289 | 97.50 | 99.00 | 12.50 | - | 42 (+6) |"
    assert row in summary
    assert "- nncodec float DQ: **-6.9 %** (RMSE 2.40-12.00 int8 units, 7 points)" in summary
    assert not list(tmp_path.glob("*.png"))


def test_memory_probe_runs_in_a_child():
    mem = measure_memory("zstd", {"a": np.arange(4096, dtype=np.int8)})
    if mem["peak_rss_mib"] is None:
        pytest.skip(mem["method"])
    assert mem["peak_rss_mib"] > 0 and mem["peak_delta_mib"] >= 0
    assert mem["peak_rss_mib"] < 200  # the zstd probe does not import torch (~500 MiB)


def test_quick_run_on_digits(tmp_path):
    codecs = "weightcodec,zstd,int8"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--models", "digits-mlp", "--quick", "--codecs", codecs, "--no-memory",
         "--score", "none", "--no-plot", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "digits-mlp.json").read_text())
    result = doc["model_result"]
    assert doc["machine"]["logical_cores"] >= 1 and doc["wall_seconds"] > 0 and doc["loadavg_after"]
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

    rebuilt = subprocess.run([sys.executable, "-m", "bench.run", "--from-json", "--models", "digits-mlp", "--no-plot",
                              "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert (tmp_path / "summary.md").read_text() == summary


@pytest.mark.parametrize(("args", "message"), [(["--models", "nope"], "unknown model"),
                                                (["--codecs", "gzip"], "unknown codec")])
def test_bad_names_are_one_line_errors(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "bench.run", *args, "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(read_marker() is None, reason="nncodec venv absent (bench/nncodec_env.py builds it)")
def test_nncodec_matched_step_on_int8_values():
    from bench.nncodec_client import nncodec_qp_for_step, run_nncodec

    rng = np.random.default_rng(0)
    q = np.clip(np.rint(rng.normal(0, 20, (64, 96))), -127, 127).astype(np.int8)
    lossless = run_nncodec({"w": q}, kind="int", qp=None, install=False)
    assert np.array_equal(lossless["arrays"]["w"], q.astype(np.int32))
    nqp = nncodec_qp_for_step(hevc_qstep(22))  # step 8 int8 units
    lossy = run_nncodec({"w": q}, kind="int", qp=nqp, use_dq=False, install=False)
    err = lossy["arrays"]["w"] - q
    assert 0 < np.sqrt(np.mean(err**2)) < 8 / math.sqrt(12) * 1.3
    assert lossy["compressed_bytes"] < lossless["compressed_bytes"]
