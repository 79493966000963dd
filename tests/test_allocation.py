"""Whole-model allocation (weightcodec.allocation): options, frontier, budgets, bad input, CLI.

Tiny seeded models only (seconds each); the real curves are bench/allocation.py's.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from weightcodec import api
from weightcodec.allocation import (
    AccuracyBudget,
    DataFreeSensitivity,
    FisherSensitivity,
    SearchSpace,
    SizeBudget,
    analyze,
    encode_to_budget,
    frontier,
    lower_hull,
)
from weightcodec.allocation.budget import paired_se, split_score
from weightcodec.allocation.candidates import Option, TensorOptions
from weightcodec.cli import main
from weightcodec.config import build_encode_config
from weightcodec.errors import BudgetError, ConfigError, DatasetError
from weightcodec.layouts import ROWS, MatrixLayout, candidate_layouts
from weightcodec.plan import TensorPlan
from weightcodec.quant import quantize_affine

FAST = SearchSpace(qps=(22, 34, 46))


# --- pieces ---------------------------------------------------------------------------------
def test_mosaic_layout_round_trips_and_excludes_the_ambiguous_width():
    x = np.arange(6 * 4 * 3 * 3, dtype=np.int8).reshape(6, 4, 3, 3)
    for layout in candidate_layouts(x.shape):
        matrix = layout.to_matrix(x)
        assert matrix.shape == layout.matrix_shape(x.shape)
        assert np.array_equal(layout.from_matrix(matrix, x.shape), x)
    grid = MatrixLayout("mosaic", 4)  # one output channel per block row
    assert grid.matrix_shape(x.shape) == (18, 12)
    assert np.array_equal(grid.to_matrix(x)[3:6, 3:6], x[1, 1])  # kernel (1, 1) at block (1, 1)
    assert MatrixLayout("mosaic", 12).check(x.shape) is not None  # c = in * kh: would look like rows
    assert MatrixLayout("mosaic", 5).check(x.shape) is not None  # does not divide 24 kernels
    assert candidate_layouts((10, 20)) == [ROWS]


def test_affine_int8_is_exact_at_zero_and_within_half_a_step():
    rng = np.random.default_rng(0)
    w = (rng.random((8, 50)) * 0.7 - 0.1).astype(np.float32)  # asymmetric: mostly positive
    w[0, 0] = 0.0
    q = quantize_affine(w, "per-channel")
    back = q.dequantize()
    assert back[0, 0] == 0.0
    assert np.all(np.abs(back - w) <= q.scales[:, None] * 0.5 + 1e-7)
    assert q.values.min() >= -127 and q.values.max() <= 127
    # the affine step is finer than the symmetric one for one-sided weights
    assert np.all(q.scales < np.abs(w).max(axis=1) / 127)


def _option(bytes_: int, loss: float) -> Option:
    return Option(TensorPlan("t", "raw", "float32", (1,)), bytes_, loss, loss)


def test_lower_hull_drops_dominated_and_non_convex_options():
    options = [_option(10, 5.0), _option(20, 4.9), _option(30, 1.0), _option(25, 6.0), _option(60, 0.5),
               _option(40, 0.9)]
    hull = lower_hull(options)
    assert [(o.bytes, o.loss) for o in hull] == [(10, 5.0), (30, 1.0), (60, 0.5)]  # (40, 0.9) lies above the chord


def test_frontier_walks_from_cheapest_to_most_accurate_monotonically():
    table = {}
    for name, (a, b) in {"x": (1.0, 0.3), "y": (2.0, 0.05)}.items():
        entry = TensorOptions(name, 10, 40)
        entry.options = [_option(n, a * np.exp(-b * n)) for n in (10, 20, 40, 80)]
        table[name] = entry
    front = frontier(table)
    bytes_ = [p.bytes for p in front.points]
    losses = [p.loss for p in front.points]
    assert bytes_ == sorted(bytes_) and losses == sorted(losses, reverse=True)
    assert front.points[0].bytes == 20 and front.points[-1].bytes == 160
    assert front.index_for_bytes(19) is None and front.index_for_bytes(10**6) == len(front.points) - 1


def test_hevc_is_tried_with_per_channel_scales_where_they_help_or_when_asked():
    from weightcodec.allocation.candidates import hevc_quantizers

    def int8(granularity, loss):
        return Option(TensorPlan("w", "int8", "float32", (4, 4), granularity=granularity), 10, loss, loss)

    close = [int8("per-tensor", 1.0), int8("per-channel", 0.9)]
    assert [p.granularity for p in hevc_quantizers(close, 2)] == ["per-tensor"]
    assert sorted(p.granularity for p in hevc_quantizers(close, 2, per_channel=True)) == ["per-channel",
                                                                                        "per-tensor"]
    far = [int8("per-tensor", 1.0), int8("per-channel", 0.1)]
    assert [p.granularity for p in hevc_quantizers(far, 2)] == ["per-channel", "per-tensor"]
    assert [p.granularity for p in hevc_quantizers(far, 1)] == ["per-channel"]


# --- a tiny trained classifier --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    """A 2-layer MLP trained for a moment on a seeded 8-class problem, with its data."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(600, 48)
    teacher = torch.randn(48, 8)
    y = (x @ teacher).argmax(1)
    model = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.ReLU(), torch.nn.Linear(96, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:400]), y[:400]).backward()
        opt.step()
    model.eval()
    held_x, held_y = x[400:], y[400:]

    def samples(state_dict) -> torch.Tensor:  # 100 per correct sample, 0 per wrong one
        probe = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.ReLU(), torch.nn.Linear(96, 8))
        probe.load_state_dict({k: v.float() for k, v in state_dict.items()})
        with torch.no_grad():
            return 100.0 * (probe(held_x).argmax(1) == held_y).double()

    def score(state_dict) -> float:
        return float(samples(state_dict).mean())

    score.samples = samples

    state = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    fisher = FisherSensitivity.from_model(model, [(x[:200], y[:200])], max_samples=200)
    return state, score, fisher


def test_encode_to_budget_meets_the_measured_drop_and_stores_the_plan(tiny, tmp_path):
    state, score, fisher = tiny
    reference = score(state)
    assert reference > 60  # 8 classes: chance is 12.5 %
    out = tmp_path / "m.wcodec"
    answer = encode_to_budget(state, out, budget=AccuracyBudget(max_drop=1.0, score=score), sensitivity=fisher,
                              space=FAST)
    assert answer.met and answer.record.met
    decoded = api.decode(out, as_state_dict=True)  # plain decode: nothing new needed
    measured = score(decoded.state_dict)
    assert reference - measured <= 1.0 + 1e-9
    assert answer.record.score == pytest.approx(measured, abs=1e-4)
    plan = decoded.header.plan
    assert plan.objective == "max-drop" and plan.budget == 1.0 and plan.method == "fisher"
    assert plan.reference_score == pytest.approx(reference, abs=1e-4)
    # cheaper than every weight at int8 + zstd
    int8_only = api.encode(state, config=build_encode_config(int8_only=True)).report.total_bytes
    assert out.stat().st_size < int8_only
    assert all(e.score is not None for e in answer.evaluations)


def test_shorthand_score_keyword(tiny):
    state, score, fisher = tiny
    answer = encode_to_budget(state, max_drop=2.0, score=score, sensitivity=fisher, space=FAST)
    assert answer.met and answer.record.drop <= 2.0 and answer.record.budget == 2.0
    with pytest.raises(ConfigError, match="give a budget"):
        encode_to_budget(state, score=score, space=FAST)
    with pytest.raises(ConfigError, match="not both"):
        encode_to_budget(state, budget=AccuracyBudget(max_drop=1.0), max_drop=1.0, space=FAST)


def test_a_looser_budget_never_costs_more(tiny):
    state, score, fisher = tiny
    analysis = analyze(state, sensitivity=fisher, space=FAST)
    sizes = [encode_to_budget(state, budget=AccuracyBudget(max_drop=d, score=score), analysis=analysis)
             .result.report.total_bytes for d in (0.0, 2.0, 10.0)]
    assert sizes[0] >= sizes[1] >= sizes[2]
    assert sizes[0] > sizes[2]


def test_unmeetable_budget_writes_nothing_unless_best_effort(tiny, tmp_path):
    state, _, fisher = tiny
    harsh = lambda sd: 50.0 if any(not torch.equal(sd[k], v) for k, v in state.items()) else 90.0  # noqa: E731
    out = tmp_path / "never.wcodec"
    with pytest.raises(BudgetError, match="cannot be met.*nothing was written"):
        encode_to_budget(state, out, budget=AccuracyBudget(max_drop=1.0, score=harsh), sensitivity=fisher,
                         space=FAST)
    assert not out.exists()
    answer = encode_to_budget(state, out, budget=AccuracyBudget(max_drop=1.0, score=harsh), sensitivity=fisher,
                              space=FAST, best_effort=True)
    assert out.exists() and not answer.met
    assert api.read_header(out).plan.met is False
    assert any(n.level == "warning" and "best effort" in n.message for n in answer.notices)


def test_split_score_and_paired_standard_error():
    assert split_score(87.5) == (87.5, None)
    mean, samples = split_score(torch.tensor([100.0, 0.0, 100.0, 100.0]))
    assert mean == 75.0 and samples.dtype == np.float64 and samples.shape == (4,)
    for bad in ([], [[1.0, 2.0]], [1.0, float("nan")], float("inf"), "high"):
        with pytest.raises(ConfigError):
            split_score(bad)
    reference = np.array([100.0, 100.0, 0.0, 100.0, 0.0, 100.0])
    other = np.array([100.0, 0.0, 0.0, 100.0, 100.0, 0.0])
    differences = reference - other  # 0, 100, 0, 0, -100, 100
    assert paired_se(reference, other) == pytest.approx(differences.std(ddof=1) / np.sqrt(6))
    assert paired_se(reference, reference) == 0.0
    assert paired_se(None, other) is None and paired_se(reference, None) is None
    with pytest.raises(ConfigError, match="same samples"):
        paired_se(reference, other[:5])


def test_confidence_margin_keeps_more_bytes_and_is_recorded(tiny, tmp_path):
    state, score, fisher = tiny
    analysis = analyze(state, sensitivity=fisher, space=FAST)
    plain = encode_to_budget(state, budget=AccuracyBudget(max_drop=2.0, score=score.samples, confidence=0.5),
                             analysis=analysis)
    out = tmp_path / "safe.wcodec"
    safe = encode_to_budget(state, out, budget=AccuracyBudget(max_drop=2.0, score=score.samples, confidence=0.95),
                            analysis=analysis)
    assert safe.met and plain.met
    assert safe.result.report.total_bytes >= plain.result.report.total_bytes
    z = AccuracyBudget(max_drop=2.0, confidence=0.95).z
    assert z == pytest.approx(1.6449, abs=1e-3) and AccuracyBudget(max_drop=1, confidence=0.5).z == 0.0
    # the answer is the cheapest scored point whose drop + z * se is within the budget; every cheaper
    # scored point failed that test (not necessarily drop <= budget)
    chosen = min((e for e in safe.evaluations if e.bound(z) <= 2.0), key=lambda e: e.bytes)
    assert chosen.se is not None and chosen.score == pytest.approx(safe.record.score, abs=1e-4)
    assert all(e.bound(z) > 2.0 for e in safe.evaluations if e.bytes < chosen.bytes)
    plan = api.read_header(out).plan
    assert plan.confidence == 0.95 and plan.drop_se == pytest.approx(chosen.se, rel=1e-4)
    # the mean of the per-sample values is the score
    assert safe.record.score == pytest.approx(score(api.decode(out, as_state_dict=True).state_dict), abs=1e-4)
    # a single-number score has no known noise: no margin, nothing recorded
    single = encode_to_budget(state, budget=AccuracyBudget(max_drop=2.0, score=score, confidence=0.95),
                              analysis=analysis)
    assert single.record.drop_se is None and single.record.confidence is None
    describe = lambda answer: {n: o.plan.describe() for n, o in answer.chosen.items()}  # noqa: E731
    assert describe(single) == describe(plain)  # the same plan as confidence 0.5 (only the header differs)


def test_data_free_mode_warns_and_size_budget_fits(tiny):
    state, score, _ = tiny
    answer = encode_to_budget(state, budget=AccuracyBudget(max_drop=1.0), space=FAST)
    assert answer.record.method == "data-free" and answer.record.score is None
    assert any(n.level == "warning" and "data-free" in n.message for n in answer.notices)
    analysis = analyze(state, sensitivity=DataFreeSensitivity(), space=FAST)
    smallest = encode_to_budget(state, budget=SizeBudget(target_bytes=10**9), analysis=analysis)
    target = smallest.result.report.total_bytes * 2 // 3
    fitted = encode_to_budget(state, budget=SizeBudget(target_bytes=target, score=score), analysis=analysis)
    assert fitted.result.report.total_bytes <= target
    assert fitted.record.objective == "target-size" and fitted.record.score is not None
    with pytest.raises(BudgetError, match="below the smallest file"):
        encode_to_budget(state, budget=SizeBudget(target_bytes=100), analysis=analysis)


def test_bad_budgets_and_settings_are_config_errors(tiny):
    state, _, _ = tiny
    with pytest.raises(ConfigError):
        AccuracyBudget(max_drop=-1)
    with pytest.raises(ConfigError):
        AccuracyBudget(max_drop=1, score="not callable")
    with pytest.raises(ConfigError):
        SizeBudget(target_bytes=0)
    for confidence in (0.4, 1.0, True, "0.9"):
        with pytest.raises(ConfigError, match="confidence"):
            AccuracyBudget(max_drop=1, confidence=confidence)
    with pytest.raises(ConfigError):
        SearchSpace(granularities=("per-row",))


# --- the CLI with the registry's digits-mlp and a calibration folder ------------------------
@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """The first 120 scikit-learn digits as 8x8 PNGs with a labels.csv, and the digits-mlp weights."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from weightcodec.evaluation.zoo import get_model_spec

    root = tmp_path_factory.mktemp("digits")
    data = load_digits()
    (root / "images").mkdir()
    lines = ["filename,label"]
    for i in range(120):
        pixels = np.rint(data.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels, "L").save(root / "images" / f"{i}.png")
        lines.append(f"{i}.png,{data.target[i]}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root, get_model_spec("digits-mlp").weights_path()


def test_cli_max_drop_with_calibration_and_info_shows_the_plan(digits_folder, tmp_path):
    folder, weights = digits_folder
    out = tmp_path / "d.wcodec"
    runner = CliRunner()
    result = runner.invoke(main, ["encode", str(weights), "-o", str(out), "--arch", "digits-mlp", "--calib-data",
                                  str(folder), "--max-drop", "2", "--int8-only", "-q"])
    assert result.exit_code == 0, result.output
    plan = api.read_header(out).plan
    assert plan.method == "fisher" and plan.met and plan.calibration_samples == 120
    assert plan.reference_score - plan.score <= 2.0
    # per-image scores: the drop's standard error is known and held to the budget at the default confidence
    assert plan.confidence == 0.8 and plan.drop_se is not None
    assert plan.reference_score - plan.score + 0.8416 * plan.drop_se <= 2.0 + 1e-3
    info = runner.invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "plan: lose at most 2 points (met)" in info.output
    assert "held to the budget at confidence 0.8" in " ".join(info.output.split())
    decoded = runner.invoke(main, ["decode", str(out), "-o", str(tmp_path / "d.pt"), "-q"])
    assert decoded.exit_code == 0, decoded.output


@pytest.mark.parametrize("args, message", [
    (["--qp", "28"], "--confidence only applies with --max-drop or --target-size"),
    (["--max-drop", "1"], "--confidence only applies with --max-drop and --calib-data"),
    (["--max-drop", "1", "--confidence", "1"], "Invalid value for '--confidence'"),
])
def test_cli_confidence_needs_a_measured_drop(digits_folder, tmp_path, args, message):
    _, weights = digits_folder
    out = tmp_path / "c.wcodec"
    result = CliRunner().invoke(main, ["encode", str(weights), "-o", str(out), "--confidence", "0.9", *args])
    assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not out.exists()


def test_cli_max_drop_without_data_warns_and_uses_the_data_free_proxy(digits_folder, tmp_path):
    _, weights = digits_folder
    out = tmp_path / "df.wcodec"
    result = CliRunner().invoke(main, ["encode", str(weights), "-o", str(out), "--max-drop", "1", "--int8-only"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "data-free" in result.output
    assert api.read_header(out).plan.method == "data-free"


@pytest.mark.parametrize("setup, args, message", [
    ("empty", ["--arch", "digits-mlp"], "no calibration images"),
    ("classes", ["--arch", "digits-mlp"], "has 3 class folders but model 'digits-mlp' has 10 classes"),
    ("size", ["--arch", "digits-mlp"], "is 9x9; the model takes 8x8 images"),
    ("label", ["--arch", "digits-mlp"], "label 12 .* is outside"),
    ("good", ["--arch", "mnist-mlp"], "is not a 'mnist-mlp'"),
    ("good", [], "--calib-data needs --arch"),
    ("missing", ["--arch", "digits-mlp"], "not found"),
])
def test_cli_calibration_data_that_does_not_fit_is_one_error_before_encoding(digits_folder, tmp_path, setup, args,
                                                                             message):
    from PIL import Image

    folder, weights = digits_folder
    calib = tmp_path / "calib"
    if setup == "good":
        calib = folder
    elif setup != "missing":
        calib.mkdir()
    if setup == "classes":
        for c in range(3):
            (calib / str(c)).mkdir()
            Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(calib / str(c) / "a.png")
    elif setup == "size":
        (calib / "0").mkdir()
        for c in range(10):
            (calib / str(c)).mkdir(exist_ok=True)
            Image.fromarray(np.zeros((9, 9), np.uint8), "L").save(calib / str(c) / "a.png")
    elif setup == "label":
        Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(calib / "a.png")
        (calib / "labels.csv").write_text("filename,label\na.png,12\n")
    out = tmp_path / "x.wcodec"
    result = CliRunner().invoke(main, ["encode", str(weights), "-o", str(out), "--calib-data", str(calib),
                                       "--max-drop", "1", *args])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    import re

    assert re.search(message, " ".join(result.output.split())), result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_unmeetable_budget_writes_nothing_unless_best_effort(digits_folder, tmp_path):
    folder, weights = digits_folder
    # the same function with hidden unit 0 scaled up 1000x (ReLU is positively homogeneous): per-tensor
    # int8 of the first layer then rounds every other unit's weights to zero
    state = torch.load(weights, weights_only=True)
    state["1.weight"][0] *= 1000
    state["1.bias"][0] *= 1000
    state["3.weight"][:, 0] /= 1000
    model = tmp_path / "outlier.pt"
    torch.save(state, model)
    out = tmp_path / "u.wcodec"
    base = ["encode", str(model), "-o", str(out), "--arch", "digits-mlp", "--calib-data", str(folder),
            "--int8-only", "--granularity", "per-tensor", "--max-drop", "1", "-q"]
    result = CliRunner().invoke(main, base)
    assert result.exit_code != 0 and "cannot be met" in result.output and not out.exists()
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, [*base, "--best-effort"])
    assert result.exit_code == 0, result.output
    assert out.exists() and api.read_header(out).plan.met is False


def test_calibration_needs_a_forward_that_fits():
    from weightcodec.evaluation.calibration import image_input

    with pytest.raises(DatasetError, match="no calibration images from a folder"):
        image_input("jane-austen", None)
