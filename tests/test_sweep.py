"""tools.sweep on the bundled example: rows, invariants, and a JSON stable enough to diff."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO


def run_sweep(out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.sweep", *args, "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def without_timing(result: dict) -> dict:
    result = json.loads(json.dumps(result))
    result.pop("machine")
    for row in result["rows"]:
        row.pop("timing")
    return result


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    outs = []
    for run in range(2):
        out = tmp_path_factory.mktemp(f"sweep{run}")
        proc = run_sweep(out, "--model", "digits-mlp", "--qp", "40,22,30", "--lossless", "--no-plot")
        assert proc.returncode == 0, proc.stderr
        outs.append(out)
    return outs


def test_rows_in_paper_order_with_expected_invariants(digits_sweep):
    result = json.loads((digits_sweep[0] / "sweep.json").read_text())
    assert result["schema"] == "weightcodec-sweep/1"
    assert [r["row"] for r in result["rows"]] == ["float32", "int8", "int8+zstd", "lossless",
                                                  "QP 22", "QP 30", "QP 40"]
    rows = {r["row"]: r for r in result["rows"]}
    assert result["coded_layers"] == ["1.weight", "3.weight", "5.weight"]
    assert rows["float32"]["n"] == 360 and rows["float32"]["top1"] == pytest.approx(98.06, abs=0.01)
    # exact rows: int8 error zero, accuracy within a point of float
    for name in ("int8", "int8+zstd", "lossless"):
        assert rows[name]["int8_rmse"] == 0 and rows[name]["int8_max_error"] == 0
        assert abs(rows[name]["top1"] - rows["float32"]["top1"]) <= 1.0
    # the paper's int8 row is raw int8: a quarter of float32 for the coded layers
    float_coded = sum(result["float_layer_bytes"].values())
    assert rows["int8"]["coded_bytes"] == pytest.approx(float_coded / 4, rel=0.01)
    assert rows["int8+zstd"]["model_bytes"] < rows["int8"]["model_bytes"]
    # size falls and error grows with QP
    qp_rows = [rows["QP 22"], rows["QP 30"], rows["QP 40"]]
    assert [r["model_bytes"] for r in qp_rows] == sorted((r["model_bytes"] for r in qp_rows), reverse=True)
    assert [r["int8_rmse"] for r in qp_rows] == sorted(r["int8_rmse"] for r in qp_rows)
    assert rows["QP 22"]["top1"] >= rows["float32"]["top1"] - 1.0
    assert rows["QP 22"]["ratio_vs_int8"] > 2.0
    for row in qp_rows:
        assert row["coded_bytes"] == sum(row["layers"][n]["bytes"] for n in result["coded_layers"])
        assert row["ratio_vs_float32"] == pytest.approx(rows["float32"]["model_bytes"] / row["model_bytes"],
                                                        rel=1e-3)
        assert row["settings"]["qp"] == int(row["row"].split()[1])
        assert row["timing"]["encode_s"] > 0 and row["timing"]["decode_s"] > 0


def test_json_is_identical_between_runs_apart_from_timing(digits_sweep):
    first, second = (json.loads((out / "sweep.json").read_text()) for out in digits_sweep)
    assert without_timing(first) == without_timing(second)


def test_markdown_table_has_a_line_per_row(digits_sweep):
    table = (digits_sweep[0] / "sweep.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 7  # header + rows
    assert lines[0].split("|")[2].strip() == "top-1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "digits-mlp", "--qp", "22,60"], "0 to 51"),
        (["--model", "no-such-net"], "no-such-net"),
        (["--model", "pickle", "--weights", "data/digits_mlp.pt"], "trust"),
        (["--model", "resnet18", "--weights", "does/not/exist.pth"], "not found"),
    ],
)
def test_user_mistakes_give_one_clear_line(tmp_path, args, message):
    proc = run_sweep(tmp_path, *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
