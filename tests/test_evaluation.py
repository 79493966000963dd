"""Tests of weightcodec.evaluation: models, datasets, metrics, and the shipped example model.

Tests that need the read-only shared assets (``$WEIGHTCODEC_ASSETS`` or ``<repo>/../shared/assets``)
are skipped when that directory or the needed asset is absent.
"""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightcodec.evaluation import (
    ASSETS_ENV_VAR,
    DatasetChoice,
    build_architecture,
    build_model,
    default_assets_dir,
    default_dataset_for,
    default_loader,
    default_weights_for,
    digits,
    digits_arrays,
    digits_split_indices,
    evaluate,
    imagenet_folder,
    load_state_dict_file,
    load_state_dict_into,
    make_loader,
    mnist_idx,
)
from weightcodec.evaluation.models import digits_mlp

REPO_ROOT = Path(__file__).resolve().parents[1]
DIGITS_WEIGHTS = REPO_ROOT / "data" / "digits_mlp.pt"


@pytest.fixture(scope="module")
def shipped_digits_model() -> nn.Module:
    return build_model("digits-mlp", DIGITS_WEIGHTS)


def _require_asset(*parts: str) -> Path:
    """Return the asset path, or skip the test when the shared assets are not available."""
    path = default_assets_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared asset not available: {path}")
    return path


def _loader(inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 3) -> DataLoader:
    return DataLoader(TensorDataset(inputs, labels), batch_size=batch_size, shuffle=False)


# ---------------------------------------------------------------------------------------------
# digits dataset and the shipped example model
# ---------------------------------------------------------------------------------------------


def test_digits_split_is_deterministic_disjoint_and_complete() -> None:
    train_first, test_first = digits_split_indices()
    train_again, test_again = digits_split_indices()
    np.testing.assert_array_equal(train_first, train_again)
    np.testing.assert_array_equal(test_first, test_again)
    assert len(test_first) == 360 and len(train_first) == 1437
    assert not set(train_first.tolist()) & set(test_first.tolist())
    assert sorted([*train_first.tolist(), *test_first.tolist()]) == list(range(1797))


def test_digits_loader_order_scaling_and_limit() -> None:
    features, labels = digits_arrays("test")
    assert features.dtype == np.float32 and features.shape == (360, 64)
    assert features.min() >= 0.0 and features.max() <= 1.0 and features.max() > 0.9
    batches = list(digits(split="test", limit=100))
    inputs = torch.cat([x for x, _ in batches])
    targets = torch.cat([y for _, y in batches])
    assert inputs.shape == (100, 64)
    np.testing.assert_array_equal(inputs.numpy(), features[:100])
    np.testing.assert_array_equal(targets.numpy(), labels[:100])
    with pytest.raises(ValueError):
        digits_arrays("validation")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        digits(limit=0)


def test_shipped_digits_model_is_accurate(shipped_digits_model: nn.Module) -> None:
    assert DIGITS_WEIGHTS.stat().st_size < 3_000_000
    result = evaluate(shipped_digits_model, digits(split="test"))
    assert result["n"] == 360
    assert result["top1"] >= 90.0
    assert result["top5"] >= result["top1"]


def test_shipped_digits_model_has_large_fc_layers() -> None:
    state_dict = load_state_dict_file(DIGITS_WEIGHTS)
    assert all(t.dtype == torch.float32 for t in state_dict.values())
    assert any(t.ndim == 2 and min(t.shape) >= 512 for t in state_dict.values())


def test_wrong_models_score_low(shipped_digits_model: nn.Module) -> None:
    test_loader = digits(split="test")

    class AlwaysZero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 10)
            logits[:, 0] = 1.0
            return logits

    assert evaluate(AlwaysZero(), test_loader)["top1"] < 20.0

    # The shipped weights with the output classes rotated by one: every prediction is wrong.
    state_dict = shipped_digits_model.state_dict()
    rotated = dict(state_dict)
    rotated["5.weight"] = torch.roll(state_dict["5.weight"], shifts=1, dims=0)
    rotated["5.bias"] = torch.roll(state_dict["5.bias"], shifts=1, dims=0)
    assert evaluate(load_state_dict_into("digits-mlp", rotated), test_loader)["top1"] < 10.0

    untrained = build_model("digits-mlp", None)
    assert evaluate(untrained, test_loader)["top1"] < 50.0


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def test_evaluate_counts_top1_and_top5_exactly() -> None:
    # Identity "model": the inputs are the logits. Scores rank class 0 highest, then 1, 2, ...
    ranking = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0])
    logits = ranking.repeat(4, 1)
    labels = torch.tensor([0, 3, 4, 7])  # top-1 hit, top-5 hit, top-5 hit, miss
    progress_calls: list[tuple[int, int | None]] = []
    result = evaluate(nn.Identity(), _loader(logits, labels),
                      progress=lambda done, total: progress_calls.append((done, total)))
    assert result == {"top1": 25.0, "top5": 75.0, "n": 4}
    assert progress_calls == [(3, 4), (4, 4)]


def test_evaluate_with_fewer_than_five_classes_and_restores_mode() -> None:
    model = nn.Linear(3, 3)
    model.train()
    result = evaluate(model, _loader(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])))
    assert result["top5"] == 100.0 and result["n"] == 5
    assert model.training


def test_evaluate_rejects_empty_loader_and_bad_output() -> None:
    with pytest.raises(ValueError, match="no samples"):
        evaluate(nn.Identity(), _loader(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="output has shape"):
        evaluate(nn.Flatten(0), _loader(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)))


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


def test_unknown_spec_and_missing_weights_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model spec"):
        build_model("no-such-model", None)
    with pytest.raises(FileNotFoundError):
        build_model("digits-mlp", tmp_path / "missing.pt")
    with pytest.raises(ValueError):
        build_architecture("pickle")


def test_state_dict_round_trip_and_mismatch(shipped_digits_model: nn.Module) -> None:
    state_dict = shipped_digits_model.state_dict()
    rebuilt = load_state_dict_into("digits-mlp", state_dict)
    assert not rebuilt.training
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, state_dict[name])
    # Template module (how "pickle" models are reloaded): deep-copied, the template is untouched.
    template = digits_mlp()
    before = template.state_dict()["1.weight"].clone()
    from_template = load_state_dict_into(template, state_dict)
    assert torch.equal(from_template.state_dict()["1.weight"], state_dict["1.weight"])
    assert torch.equal(template.state_dict()["1.weight"], before)
    with pytest.raises(ValueError, match="does not fit"):
        load_state_dict_into("mnist-mlp", state_dict)


def test_torchvision_architecture_loads_local_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = build_architecture("squeezenet1_1")
    weights = tmp_path / "squeezenet.pth"
    torch.save(reference.state_dict(), weights)
    loaded = build_model("squeezenet1_1", weights)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    # DataParallel-style "module." prefixes and {"state_dict": ...} checkpoints are accepted.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped)
    assert set(load_state_dict_file(wrapped)) == set(reference.state_dict())


def test_pickle_spec_requires_trust(tmp_path: Path, shipped_digits_model: nn.Module) -> None:
    pickled = tmp_path / "whole_model.pt"
    torch.save(shipped_digits_model, pickled)
    with pytest.raises(ValueError, match="trust_pickle"):
        build_model("pickle", pickled)
    with pytest.raises(ValueError, match="pickled model"):
        build_model("digits-mlp", pickled)  # weights_only=True refuses a whole module
    model = build_model("pickle", pickled, trust_pickle=True)
    assert evaluate(model, digits(split="test", limit=50)) == evaluate(
        shipped_digits_model, digits(split="test", limit=50))
    state_dict_file = tmp_path / "state_dict.pt"
    torch.save(shipped_digits_model.state_dict(), state_dict_file)
    with pytest.raises(ValueError, match="nn.Module"):
        build_model("pickle", state_dict_file, trust_pickle=True)


def test_pickled_digits_model_loads_without_weightcodec(tmp_path: Path,
                                                         shipped_digits_model: nn.Module) -> None:
    pickled = tmp_path / "whole_model.pt"
    torch.save(shipped_digits_model, pickled)
    script = (
        "import sys, torch\n"
        "sys.modules['weightcodec'] = None  # any import of weightcodec now raises ImportError\n"
        f"m = torch.load({str(pickled)!r}, weights_only=False)\n"
        "print(type(m).__module__, tuple(m(torch.zeros(1, 64)).shape))\n"
    )
    completed = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["torch.nn.modules.container", "(1,", "10)"]


# ---------------------------------------------------------------------------------------------
# datasets (synthetic files, no shared assets needed)
# ---------------------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_reads_and_normalises(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1] = 255
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1]))
    inputs, labels = next(iter(mnist_idx(tmp_path)))
    assert inputs.shape == (3, 784) and labels.tolist() == [7, 2, 1]
    assert inputs[0, 0].item() == pytest.approx(-0.1307 / 0.3081)
    assert inputs[1, 0].item() == pytest.approx((1 - 0.1307) / 0.3081)
    assert len(mnist_idx(tmp_path, limit=2).dataset) == 2  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        mnist_idx(tmp_path / "nowhere")


def _write_png(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("preprocessing", ["torchvision", "tf-inception"])
def test_imagenet_labels_csv_layout(tmp_path: Path, preprocessing: str) -> None:
    (tmp_path / "images").mkdir()
    rows = [("b.png", 5), ("a.png", 999), ("c.png", 0)]
    for seed, (name, _) in enumerate(rows):
        _write_png(tmp_path / "images" / name, seed)
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label"])
        writer.writerows(rows)
    loader = imagenet_folder(tmp_path, preprocessing=preprocessing,  # type: ignore[arg-type]
                             limit=2, batch_size=2, num_workers=0)
    inputs, labels = next(iter(loader))
    assert inputs.shape == (2, 3, 224, 224) and inputs.dtype == torch.float32
    assert labels.tolist() == [5, 999]  # labels.csv order, not file-name order
    if preprocessing == "tf-inception":
        assert inputs.min() >= -1.0 and inputs.max() <= 127 / 128
    with pytest.raises(ValueError, match="preprocessing"):
        imagenet_folder(tmp_path, preprocessing="caffe")  # type: ignore[arg-type]
    (tmp_path / "images" / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        imagenet_folder(tmp_path)


def test_imagenet_class_folder_layout(tmp_path: Path) -> None:
    for index in range(1000):
        (tmp_path / f"n{index:08d}").mkdir()
    _write_png(tmp_path / "n00000003" / "x.JPEG", 0)
    _write_png(tmp_path / "n00000001" / "y.JPEG", 1)
    (tmp_path / "n00000001" / "notes.txt").write_text("not an image")
    loader = imagenet_folder(tmp_path, batch_size=4, num_workers=0)
    inputs, labels = next(iter(loader))
    assert labels.tolist() == [1, 3] and inputs.shape == (2, 3, 224, 224)
    (tmp_path / "n00000999").rmdir()
    with pytest.raises(ValueError, match="class folders"):
        imagenet_folder(tmp_path)


def test_dataset_registry_and_assets_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_dataset_for("digits-mlp") == DatasetChoice("digits")
    assert default_dataset_for("mnist-mlp") == DatasetChoice("mnist")
    assert default_dataset_for("mobilenet_v2") == DatasetChoice("imagenet", "tf-inception")
    assert default_dataset_for("resnet18") == DatasetChoice("imagenet", "torchvision")
    with pytest.raises(ValueError):
        default_dataset_for("pickle")
    with pytest.raises(ValueError):
        make_loader("cifar10")
    assert default_weights_for("digits-mlp") == DIGITS_WEIGHTS
    monkeypatch.setenv(ASSETS_ENV_VAR, str(tmp_path / "assets"))
    assert default_assets_dir() == tmp_path / "assets"
    with pytest.raises(FileNotFoundError, match=ASSETS_ENV_VAR):
        default_loader("mnist-mlp")
    with pytest.raises(FileNotFoundError):
        default_weights_for("mnist-mlp")


# ---------------------------------------------------------------------------------------------
# real models on the shared assets (skipped when the assets are absent)
# ---------------------------------------------------------------------------------------------


def test_mnist_mlp_asset_accuracy() -> None:
    _require_asset("mnist", "t10k-images-idx3-ubyte.gz")
    model = build_model("mnist-mlp", default_weights_for("mnist-mlp"))
    first_2000 = evaluate(model, default_loader("mnist-mlp", limit=2000))
    assert first_2000["n"] == 2000
    assert 94.0 <= first_2000["top1"] <= 98.5  # measured 95.70 on the first 2000 images
    full = evaluate(model, default_loader("mnist-mlp"))
    assert full["n"] == 10_000
    assert full["top1"] == pytest.approx(96.73, abs=0.2)  # asset README: 96.73 / 99.94
    assert full["top5"] >= full["top1"]


def test_mobilenet_v2_asset_accuracy() -> None:
    _require_asset("imagenet-val1000", "labels.csv")
    _require_asset("mobilenet_v2", "mobilenet_v2_imagenet.pth")
    model = build_model("mobilenet_v2", default_weights_for("mobilenet_v2"))
    result = evaluate(model, default_loader("mobilenet_v2", limit=100))
    assert result["n"] == 100
    assert result["top1"] >= 75.0  # measured 87.0 / 97.0 on these 100 images
    assert result["top5"] >= result["top1"]


def test_evaluator_caches_batches_and_scores_other_weights():
    from weightcodec.evaluation import Evaluator

    evaluator = Evaluator.create("digits-mlp")
    first = evaluator.score()
    assert evaluator.batches.cached is not None  # type: ignore[attr-defined]  # filled by the first pass
    assert evaluator.score() == first and first["n"] == 360
    zeroed = {k: torch.zeros_like(v) for k, v in evaluator.reference_state_dict().items()}
    broken = evaluator.score(zeroed)
    assert broken["top1"] < 20 and evaluator.score() == first  # the reference model is untouched
    with pytest.raises(ValueError, match="does not fit"):
        evaluator.score({"1.weight": torch.zeros(3, 3)})
