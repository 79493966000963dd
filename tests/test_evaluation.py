"""Tests of weightcodec.evaluation: the model registry, models, datasets, metrics, the shipped example.

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

from weightcodec.errors import (
    AssetNotFoundError,
    DatasetError,
    EvaluationError,
    ModelLoadError,
    UnknownModelError,
    UntrustedPickleError,
    WeightcodecError,
)
from weightcodec.evaluation import (
    ASSETS_ENV_VAR,
    Evaluator,
    ModelSpec,
    available_models,
    build_model,
    default_assets_dir,
    digits,
    digits_arrays,
    digits_split_indices,
    evaluate,
    fit_state_dict,
    get_model_spec,
    imagenet_folder,
    load_state_dict_file,
    make_loader,
    mnist_idx,
    register,
    registered_models,
    zoo,
)
from weightcodec.evaluation.models import digits_mlp
from tests.helpers import REPO, require_asset

DIGITS_WEIGHTS = REPO / "data" / "digits_mlp.pt"


@pytest.fixture(scope="module")
def shipped_digits_model() -> nn.Module:
    return build_model("digits-mlp", DIGITS_WEIGHTS)


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
    with pytest.raises(DatasetError):
        digits_arrays("validation")  # type: ignore[arg-type]
    with pytest.raises(DatasetError):
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
    assert evaluate(fit_state_dict(digits_mlp(), rotated), test_loader)["top1"] < 10.0

    untrained = get_model_spec("digits-mlp").build()
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
    from weightcodec.evaluation.metrics import top1_hits

    hits = top1_hits(nn.Identity(), _loader(logits, labels))  # per sample, in order: what top1 averages
    assert hits.dtype == torch.bool and hits.tolist() == [True, False, False, False]


def test_evaluate_with_fewer_than_five_classes_and_restores_mode() -> None:
    model = nn.Linear(3, 3)
    model.train()
    result = evaluate(model, _loader(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])))
    assert result["top5"] == 100.0 and result["n"] == 5
    assert model.training


def test_evaluate_rejects_empty_loader_and_bad_output() -> None:
    with pytest.raises(DatasetError, match="no samples"):
        evaluate(nn.Identity(), _loader(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(DatasetError, match="output has shape"):
        evaluate(nn.Flatten(0), _loader(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)))


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


def test_unknown_name_and_missing_weights_raise(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="digits-mlp, mnist-mlp, fmnist-resnet, gpt2-tiny, all-minilm-l6-v2, mobilenet_v2"):
        get_model_spec("no-such-model")  # the message lists the registered names
    with pytest.raises(UnknownModelError):
        build_model("no-such-model")
    with pytest.raises(AssetNotFoundError):
        build_model("digits-mlp", tmp_path / "missing.pt")
    with pytest.raises(UnknownModelError):
        get_model_spec("pickle")  # not a model: the architecture is inside the pickled file
    with pytest.raises(AssetNotFoundError, match="no known weights"):
        get_model_spec("resnet18").weights_path()


def test_state_dict_round_trip_and_mismatch(shipped_digits_model: nn.Module) -> None:
    state_dict = shipped_digits_model.state_dict()
    rebuilt = fit_state_dict(digits_mlp(), state_dict)
    assert not rebuilt.training
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, state_dict[name])
    # The template is deep-copied and left unchanged (how an Evaluator scores other weights).
    template = digits_mlp()
    before = template.state_dict()["1.weight"].clone()
    from_template = fit_state_dict(template, state_dict)
    assert torch.equal(from_template.state_dict()["1.weight"], state_dict["1.weight"])
    assert torch.equal(template.state_dict()["1.weight"], before)
    with pytest.raises(ModelLoadError, match="does not fit"):
        fit_state_dict(get_model_spec("mnist-mlp").build(), state_dict)


def test_torchvision_architecture_loads_local_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = get_model_spec("squeezenet1_1")  # made on the fly: ImageNet, torchvision preprocessing
    assert (spec.dataset, spec.preprocessing, spec.metric, spec.weights) == ("imagenet", "torchvision", "top1", None)
    reference = spec.build()
    weights = tmp_path / "squeezenet.pth"
    torch.save(reference.state_dict(), weights)
    loaded = build_model("squeezenet1_1", weights)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    # DataParallel-style "module." prefixes are dropped when fitted into the architecture ...
    prefixed = {f"module.{k}": v for k, v in reference.state_dict().items()}
    assert set(fit_state_dict(spec.build(), prefixed).state_dict()) == set(reference.state_dict())
    # ... and a training checkpoint is refused with the loader's hint, as `wcodec encode` does.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": prefixed, "epoch": 3}, wrapped)
    with pytest.raises(ModelLoadError, match="save its 'state_dict' entry on its own"):
        load_state_dict_file(wrapped)


def test_pickle_requires_trust(tmp_path: Path, shipped_digits_model: nn.Module) -> None:
    pickled = tmp_path / "whole_model.pt"
    torch.save(shipped_digits_model, pickled)
    with pytest.raises(UntrustedPickleError, match="trust"):
        build_model("pickle", pickled)
    with pytest.raises(UntrustedPickleError):
        build_model("digits-mlp", pickled)  # weights_only=True refuses a whole module
    model = build_model("pickle", pickled, trust_pickle=True)
    assert evaluate(model, digits(split="test", limit=50)) == evaluate(
        shipped_digits_model, digits(split="test", limit=50))
    state_dict_file = tmp_path / "state_dict.pt"
    torch.save(shipped_digits_model.state_dict(), state_dict_file)
    with pytest.raises(ModelLoadError, match="not a pickled nn.Module"):
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
    with pytest.raises(AssetNotFoundError):
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
    with pytest.raises(DatasetError, match="preprocessing"):
        imagenet_folder(tmp_path, preprocessing="caffe")  # type: ignore[arg-type]
    (tmp_path / "images" / "c.png").unlink()
    with pytest.raises(AssetNotFoundError, match="missing"):
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
    with pytest.raises(DatasetError, match="class folders"):
        imagenet_folder(tmp_path)


def test_assets_location_and_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError):
        make_loader("cifar10")
    with pytest.raises(DatasetError, match="fixed preprocessing"):
        make_loader("digits", preprocessing="tf-inception")
    assert get_model_spec("digits-mlp").weights_path() == DIGITS_WEIGHTS  # in the repository
    monkeypatch.setenv(ASSETS_ENV_VAR, str(tmp_path / "assets"))
    assert default_assets_dir() == tmp_path / "assets"
    with pytest.raises(AssetNotFoundError, match=ASSETS_ENV_VAR):
        make_loader("mnist")
    with pytest.raises(AssetNotFoundError):
        get_model_spec("mnist-mlp").weights_path()
    with pytest.raises(AssetNotFoundError):
        Evaluator.create("mnist-mlp")
    assert get_model_spec("digits-mlp").weights_path() == DIGITS_WEIGHTS  # the repo wins over the assets


# ---------------------------------------------------------------------------------------------
# the model registry
# ---------------------------------------------------------------------------------------------


def test_registered_models_and_their_data() -> None:
    assert registered_models() == ["digits-mlp", "mnist-mlp", "fmnist-resnet", "gpt2-tiny", "all-minilm-l6-v2",
                                   "mobilenet_v2"]
    assert available_models()[:6] == registered_models() and "resnet18" in available_models()
    assert [(get_model_spec(n).dataset, get_model_spec(n).preprocessing) for n in registered_models()] == [
        ("digits", None), ("mnist", None), ("fashion-mnist", None), ("austen-test", None), ("austen-sentences", None),
        ("imagenet", "tf-inception")]
    assert [get_model_spec(n).metric for n in registered_models()] == [
        "top1", "top1", "top1", "perplexity", "cosine", "top1"]


@pytest.mark.parametrize("name", ["digits-mlp", "mnist-mlp", "fmnist-resnet", "mobilenet_v2"])
def test_every_registered_entry_builds_and_its_weights_resolve_or_are_missing(name: str) -> None:
    spec = get_model_spec(name)
    model = spec.build()
    assert isinstance(model, nn.Module) and sum(p.numel() for p in model.parameters()) > 0
    try:
        path = spec.weights_path()
    except AssetNotFoundError:
        return  # shared assets absent here: the error says so, nothing else is raised
    assert path.is_file()
    state_dict = load_state_dict_file(path)
    assert set(state_dict) == set(model.state_dict())  # the weights fit the architecture


def test_a_new_model_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "_REGISTRY", dict(zoo._REGISTRY))  # undone after the test
    register(ModelSpec(name="digits-copy", build=digits_mlp, weights="data/digits_mlp.pt", dataset="digits",
                       description="the example again, under another name"))
    evaluator = Evaluator.create("digits-copy")
    assert evaluator.metric == "top1" and evaluator.score() == Evaluator.create("digits-mlp").score()
    with pytest.raises(EvaluationError, match="unknown metric"):
        register(ModelSpec(name="lm", build=digits_mlp, weights=None, dataset="digits", metric="bleu"))
    with pytest.raises(DatasetError, match="unknown data set"):
        register(ModelSpec(name="cifar", build=digits_mlp, weights=None, dataset="cifar10"))
    assert "lm" not in registered_models() and "cifar" not in registered_models()


def test_evaluation_errors_are_weightcodec_errors() -> None:
    for error in (UnknownModelError, AssetNotFoundError, DatasetError, ModelLoadError, UntrustedPickleError):
        assert issubclass(error, WeightcodecError)
    assert issubclass(AssetNotFoundError, FileNotFoundError) and issubclass(UnknownModelError, ValueError)


# ---------------------------------------------------------------------------------------------
# real models on the shared assets (skipped when the assets are absent)
# ---------------------------------------------------------------------------------------------


def test_mnist_mlp_asset_accuracy() -> None:
    require_asset("mnist", "t10k-images-idx3-ubyte.gz")
    require_asset("mnist", "mlp_784_500_250_10.pth")
    model = build_model("mnist-mlp")
    first_2000 = evaluate(model, make_loader("mnist", limit=2000))
    assert first_2000["n"] == 2000
    assert 94.0 <= first_2000["top1"] <= 98.5  # measured 95.70 on the first 2000 images
    full = evaluate(model, make_loader("mnist"))
    assert full["n"] == 10_000
    assert full["top1"] == pytest.approx(96.73, abs=0.2)  # asset README: 96.73 / 99.94
    assert full["top5"] >= full["top1"]


def test_mobilenet_v2_asset_accuracy() -> None:
    require_asset("imagenet-val1000", "labels.csv")
    require_asset("mobilenet_v2", "mobilenet_v2_imagenet.pth")
    model = build_model("mobilenet_v2")
    result = evaluate(model, make_loader("imagenet", preprocessing="tf-inception", limit=100))
    assert result["n"] == 100
    assert result["top1"] >= 75.0  # measured 87.0 / 97.0 on these 100 images
    assert result["top5"] >= result["top1"]


def test_evaluator_caches_batches_and_scores_other_weights():
    evaluator = Evaluator.create("digits-mlp")
    first = evaluator.score()
    assert evaluator.batches.cached is not None  # type: ignore[attr-defined]  # filled by the first pass
    assert evaluator.score() == first and first["n"] == 360
    zeroed = {k: torch.zeros_like(v) for k, v in evaluator.reference_state_dict().items()}
    broken = evaluator.score(zeroed)
    assert broken["top1"] < 20 and evaluator.score() == first  # the reference model is untouched
    with pytest.raises(ModelLoadError, match="does not fit"):
        evaluator.score({"1.weight": torch.zeros(3, 3)})
